"""The headless monitoring core that every front end drives (dashboard, exporter, ``diagnose``)."""
