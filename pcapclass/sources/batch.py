"""PacketBatch: the column batch every source yields and decode consumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """A run of consecutive packets as parallel numpy columns over one byte buffer.

    ``data`` holds the captured bytes; packet ``i`` is ``data[offset[i]:offset[i] + caplen[i]]``.
    Bytes outside a packet are unspecified: decode reads headers with clipped indices and
    masks every field by ``caplen``. A source may reuse ``data`` for its next batch, so
    consumers copy what they keep.
    """

    data: npt.NDArray[np.uint8]
    offset: npt.NDArray[np.int64]
    caplen: npt.NDArray[np.int64]
    wirelen: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    linktype: npt.NDArray[np.int64]
    #: 0-based number of this batch's first packet within its capture
    first_packet: int

    def __len__(self) -> int:
        return int(self.offset.shape[0])


def rows_at(data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], width: int) -> npt.NDArray[np.uint8]:
    """``width`` bytes from each offset of ``data``, one row each (zeros past its end).

    One row gather through a sliding-window view: several times faster than gathering
    ``width`` single bytes per offset, which is what makes header and payload prefixes cheap.
    Offsets in the last ``width`` bytes are served from a small zero-padded copy of the tail.
    """
    size = data.shape[0]
    limit = size - width
    if limit >= 0 and (not offsets.size or int(offsets.max()) <= limit):
        return np.lib.stride_tricks.sliding_window_view(data, width)[offsets]
    start = max(limit, 0)
    tail = np.zeros(size - start + width, dtype=np.uint8)
    tail[: size - start] = data[start:]
    near = offsets > limit
    out = np.empty((offsets.shape[0], width), dtype=np.uint8)
    if limit >= 0:
        out[~near] = np.lib.stride_tricks.sliding_window_view(data, width)[offsets[~near]]
    out[near] = np.lib.stride_tricks.sliding_window_view(tail, width)[offsets[near] - start]
    return out
