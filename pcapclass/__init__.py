"""pcapclass: classify packet captures into Microsoft Exchange Server 2003 services.

Example::

    import pcapclass
    result = pcapclass.classify_file("capture.pcap")
    result.breakdown  # bytes and flows per service and direction
"""

from __future__ import annotations

from .api import Classifier
from .errors import (
    CaptureError,
    CaptureOpenError,
    ClusterError,
    InvalidCaptureError,
    LiveCaptureError,
    OutputError,
    PcapclassError,
    RulesError,
)
from .output import Format
from .pipeline import Result
from .session import classify_file
from .tables.rules import RuleSet, load_rules

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "CaptureOpenError",
    "Classifier",
    "ClusterError",
    "Format",
    "InvalidCaptureError",
    "LiveCaptureError",
    "OutputError",
    "PcapclassError",
    "Result",
    "RuleSet",
    "RulesError",
    "__version__",
    "classify_file",
    "load_rules",
]
