"""The Textual dashboard: the app, its screens, messages and stylesheet (renders monitor samples)."""
