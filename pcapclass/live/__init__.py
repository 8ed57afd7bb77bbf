"""Live capture: an interface's packets through the offline pipeline, with rolling outputs (``capture``) and a terminal view (``view``)."""

from ..sources.live import BACKENDS, DEFAULT_BACKEND, list_interfaces
from .capture import (
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_INTERVAL,
    LiveCapture,
    LiveResult,
    LiveStatus,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_ACTIVE_TIMEOUT",
    "DEFAULT_BACKEND",
    "DEFAULT_INTERVAL",
    "LiveCapture",
    "LiveResult",
    "LiveStatus",
    "list_interfaces",
]
