"""The Prometheus exporter: the monitoring core's samples as metric families, served over HTTP."""

from numatop_llm.exporter.service import (
    WILL_OOM_MIN_BYTES,
    Exporter,
    ListenError,
    PlannerBridge,
    build_families,
    is_loopback,
    parse_listen,
    serve,
)

__all__ = [
    "WILL_OOM_MIN_BYTES",
    "Exporter",
    "ListenError",
    "PlannerBridge",
    "build_families",
    "is_loopback",
    "parse_listen",
    "serve",
]
