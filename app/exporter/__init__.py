"""The Prometheus exporter: the monitoring core's samples as metric families, served over HTTP."""

from numatop_llm.exporter.families import build_families
from numatop_llm.exporter.headroom import WILL_OOM_MIN_BYTES, RankHeadroom, fallback_headroom, headroom_from_plan
from numatop_llm.exporter.listen import ListenError, is_loopback, parse_listen, serve
from numatop_llm.exporter.service import Exporter

__all__ = [
    "WILL_OOM_MIN_BYTES",
    "Exporter",
    "ListenError",
    "RankHeadroom",
    "build_families",
    "fallback_headroom",
    "headroom_from_plan",
    "is_loopback",
    "parse_listen",
    "serve",
]
