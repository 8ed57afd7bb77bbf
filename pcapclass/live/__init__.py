"""Live capture: an interface's packets through the offline pipeline, with rolling outputs (``capture``) and a terminal view (``view``)."""

from .capture import (
    DEFAULT_ACTIVE_TIMEOUT,
    DEFAULT_INTERVAL,
    LiveCapture,
    LiveResult,
    LiveStatus,
)

__all__ = ["DEFAULT_ACTIVE_TIMEOUT", "DEFAULT_INTERVAL", "LiveCapture", "LiveResult", "LiveStatus"]
