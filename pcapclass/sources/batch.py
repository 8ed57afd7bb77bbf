"""PacketBatch: the column batch every source yields and decode consumes; ReadAnomalies: what
the readers count instead of refusing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._records import length_anomalies

#: libpcap's MAXIMUM_SNAPLEN: no record may claim more captured bytes than this, and no frame of a
#: link pcapclass decodes is longer on the wire
MAX_CAPLEN = 262144

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



@dataclass(slots=True)
class ReadAnomalies:
    """Records read although something in them is off, counted the way Zeek counts weirds
    (each is a ``capture.csv`` column of the same name, see ``schema.CAPTURE``)."""

    caplen_over_snaplen: int = 0
    ts_fraction_invalid: int = 0
    ts_out_of_range: int = 0
    wirelen_below_caplen: int = 0
    wirelen_implausible: int = 0
    gzip_trailing_bytes: int = 0

    def count_lengths(self, caplen: npt.NDArray[np.int64], wirelen: npt.NDArray[np.int64], snaplen: int = 0) -> None:
        """Count a batch's records captured longer than ``snaplen`` (0: not counted here), and
        those whose original length is below the captured one, or above MAX_CAPLEN."""
        over, below, implausible = length_anomalies(caplen, wirelen, snaplen, MAX_CAPLEN)
        self.caplen_over_snaplen += over
        self.wirelen_below_caplen += below
        self.wirelen_implausible += implausible
