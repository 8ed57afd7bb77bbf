"""New-mail notifications told by their timing: the store's datagram, then the client's call.

When the Exchange store has new mail for an Outlook client it sends a short UDP datagram to the
port the client registered, and the client answers it at once with a DCE/RPC request on its
MAPI connection to the same server (docs/exchange-wire-facts.md §6; zeek's mapi.pcap: an 8-byte
datagram 192.168.0.2:2571 -> 192.168.0.183:1054, the client's request 0.25 ms later). When the
registration was not captured (or the server is Exchange 5.5 or 2000, whose registration looks
otherwise), that pair in quick succession is what is left to see.

``NotificationTiming.feed`` keeps the short datagrams (16 bytes at most) between high ports of the last
``WINDOW_NS`` across batches and returns those a DCE/RPC request from their receiver to their
sender followed within it, as evidence rows: a batch, a live tick or a ring buffer's file may
end between the two. Classify still requires the sender to be an Exchange server.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .decode import Packets
from .flows import FlowKeys

#: how soon the client's request must follow (measured: 0.25 ms; a client busy elsewhere or a
#: slow network may take tens of milliseconds, and a wider window only admits coincidences)
WINDOW_NS = 50_000_000
#: a notification carries the context blob the client registered, which MS-OXCRPC caps at 16
#: bytes (cbContext of EcRRegisterPushNotification; 8 in every capture seen)
MAX_DATAGRAM = 16
#: ports below this are services', not the random ones a client registers
HIGH_PORT = 1024
#: a DCE/RPC request PDU starts version 5, minor 0, type 0 (C706 §12.6)
REQUEST_HEAD = bytes((5, 0, 0))
MIN_REQUEST = 24
#: datagrams held at most while they wait for a request (the oldest go first)
MAX_PENDING = 65536


class NotificationTiming:
    """Short datagrams waiting for their receiver's DCE/RPC request to their sender."""

    def __init__(self) -> None:
        # per waiting datagram: sender and receiver address halves, then its evidence row's
        # flow key (hash, check) and side, so that a request of a later batch can still tag it
        self._cols = np.zeros((7, 0), dtype=np.uint64)
        self._ts = np.zeros(0, dtype=np.int64)
        #: datagrams that stopped waiting because MAX_PENDING waited (``EvidenceAnomalies.datagrams_dropped``)
        self.dropped = 0

    def clear(self) -> None:
        """Forget the waiting datagrams (their flows ended with their capture)."""
        self._cols, self._ts = self._cols[:, :0], self._ts[:0]

    def feed(self, pk: Packets, keys: FlowKeys, dgram: npt.NDArray[np.intp], calls: npt.NDArray[np.intp],
             now: int) -> TimedRows:  # fmt: skip
        """The datagrams, of this batch or waiting from earlier ones, that a request of this
        batch followed within the window, as evidence rows (``dgram``: its datagrams of at most
        MAX_DATAGRAM bytes between ports of at least HIGH_PORT; ``calls``: its TCP payloads of
        at least MIN_REQUEST bytes that start REQUEST_HEAD, as ``_laterlooks.later_looks``
        finds both; ``now``: the time of its last payload packet)."""
        if not dgram.size and not self._ts.size:
            return _NONE  # nothing waits for a request
        cols, ts = self._cols, self._ts
        if dgram.size:
            fresh = np.vstack([pk.src_hi[dgram], pk.src_lo[dgram], pk.dst_hi[dgram], pk.dst_lo[dgram],
                               keys.hash[dgram].view(np.uint64), keys.check[dgram].view(np.uint64), keys.from_a[dgram]])  # fmt: skip
            cols = np.concatenate([cols, fresh.astype(np.uint64, copy=False)], axis=1)
            ts = np.concatenate([ts, pk.ts_ns[dgram]])
        # datagrams that may still be answered wait
        keep = ts >= now - WINDOW_NS
        found = _NONE
        if calls.size:
            # a request from the datagram's receiver to its sender, after it and within the window
            hit = np.zeros(ts.size, dtype=bool)
            for c in calls.tolist():
                hit |= ((cols[2] == pk.src_hi[c]) & (cols[3] == pk.src_lo[c]) & (cols[0] == pk.dst_hi[c]) & (cols[1] == pk.dst_lo[c])
                        & (pk.ts_ns[c] > ts) & (pk.ts_ns[c] - ts <= WINDOW_NS))  # fmt: skip
            if hit.any():
                found = TimedRows(cols[4, hit], cols[5, hit], ts[hit], cols[6, hit].astype(bool))
                keep &= ~hit
        kept = np.flatnonzero(keep)
        self.dropped += max(kept.size - MAX_PENDING, 0)
        kept = kept[-MAX_PENDING:]
        self._cols, self._ts = cols[:, kept], ts[kept]
        return found


class TimedRows(NamedTuple):
    """The evidence rows of datagrams a request followed: flow key, time, sender side."""

    hash: npt.NDArray[np.uint64]
    check: npt.NDArray[np.uint64]
    ts_ns: npt.NDArray[np.int64]
    from_a: npt.NDArray[np.bool_]


_NONE = TimedRows(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, bool))
