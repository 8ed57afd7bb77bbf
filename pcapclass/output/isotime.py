"""Epoch seconds as ISO 8601 UTC text to the microsecond, for the text formats' time columns.

A block's flows share far fewer seconds than they are many, so each distinct second is formatted
once and the fraction's digits are copied in as two 4-byte fields: the column goes to the CSV
writer as an Arrow string array, with no Python string per row. A time outside years 1970-9999 (a clock that
was wrong) takes numpy's formatting of every value, whose text may be wider.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

#: seconds from the epoch to the start of year 10000: below it a time's text is 27 characters
_YEAR_10000 = 253_402_300_800
_HEAD = len("2004-05-13T10:17:07")
_WIDTH = _HEAD + len(".311224Z")
#: a time's text as three fields written whole: the second ("2004-05-13T10:17:07"), the
#: milliseconds (".311") and the microseconds ("224Z")
_TEXT = np.dtype({"names": ["second", "milli", "micro"], "formats": [f"S{_HEAD}", "<u4", "<u4"],
                  "offsets": [0, _HEAD, _HEAD + 4], "itemsize": _WIDTH})  # fmt: skip
#: the milliseconds' and the microseconds' field of each number below 1000
_MILLI = np.frombuffer(b"".join(b".%03d" % i for i in range(1000)), dtype="<u4")
_MICRO = np.frombuffer(b"".join(b"%03dZ" % i for i in range(1000)), dtype="<u4")


def iso_text(ts: npt.NDArray[np.float64]) -> pa.LargeStringArray:
    """The ISO 8601 UTC text of each epoch ``ts`` (seconds), empty where it is missing.

    >>> iso_text(np.array([1084443427.311224, np.nan])).to_pylist()
    ['2004-05-13T10:17:07.311224Z', '']
    """
    us = np.round(ts * 1e6)
    missing = np.isnan(us)
    known = us[~missing]
    if len(known) and not (known.min() >= 0 and known.max() < _YEAR_10000 * 1e6):
        iso = np.datetime_as_string(np.where(missing, 0, us).astype("datetime64[us]"), unit="us", timezone="UTC")
        return pa.array(np.where(missing, "", iso.astype(object)), type=pa.string())
    whole, fraction = np.divmod(known.astype(np.int64), 1_000_000)
    seconds, which = np.unique(whole, return_inverse=True)
    heads = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").astype(f"S{_HEAD}")
    text = np.empty(len(known), dtype=_TEXT)
    text["second"] = heads[which]
    milli, micro = np.divmod(fraction, 1000)
    text["milli"], text["micro"] = _MILLI[milli], _MICRO[micro]
    offsets = np.zeros(len(us) + 1, dtype=np.int64)
    np.cumsum(np.where(missing, 0, _WIDTH), out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(us), pa.py_buffer(offsets), pa.py_buffer(text))
