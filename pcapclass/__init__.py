"""pcapclass: classify packet captures into Microsoft Exchange Server 2003 services.

Example::

    import pcapclass
    result = pcapclass.classify_file("capture.pcap")
    result.breakdown  # bytes and flows per service and direction
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    CaptureError,
    CaptureOpenError,
    InvalidCaptureError,
    LiveCaptureError,
    OutputError,
    PcapclassError,
    RulesError,
)

if TYPE_CHECKING:
    from .api import Classifier, classify_file
    from .output import Format
    from .pipeline import Result
    from .tables.rules import RuleSet, load_rules

#: the public names that need numpy, pandas and pyarrow, imported when first used, so that
#: importing the package (as the ``pcapclass`` command does first) does not load them yet:
#: the command sets up the process (``cli``) before they start their thread pools
_LAZY = {
    "Classifier": ".api",
    "classify_file": ".api",
    "Format": ".output",
    "Result": ".pipeline",
    "RuleSet": ".tables.rules",
    "load_rules": ".tables.rules",
}

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "CaptureOpenError",
    "Classifier",
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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
