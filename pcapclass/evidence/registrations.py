"""Push-notification registrations: the callbacks EMSMDB clients registered, and the UDP
datagrams that match one.

A client's ``EcRRegisterPushNotification`` (seen in a followed flow) names a callback address
and port and a context blob; a UDP datagram to that callback carrying that blob is the store's
new-mail notification. Registrations are kept across captures and capped, the least recently
registered going first.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from ..decode import Packets
from .anomalies import EvidenceAnomalies

IPPROTO_UDP = 17
#: registrations held at most
MAX_REGISTRATIONS = 100_000
_U64 = (1 << 64) - 1
#: a callback: address (hi, lo, IPv4 mapped into IPv6) and port
Callback = tuple[int, int, int]
#: a registration as ``entries`` gives it: callback, blob, when it was registered
Registration = tuple[Callback, bytes, int]


class PushRegistrations:
    """(callback hi, lo, port) -> {blob: ts}, with the lengths and ports met (the prefilter)."""

    def __init__(self, counts: EvidenceAnomalies) -> None:
        self._counts = counts
        self._by_callback: OrderedDict[Callback, dict[bytes, int]] = OrderedDict()
        self._lengths: set[int] = set()
        self._ports: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self._by_callback)

    def register(self, callback: tuple[str, int], blob: bytes, ts: int) -> None:
        """A registration of ``blob`` for the callback (address text, port) at ``ts``."""
        addr = ipaddress.ip_address(callback[0])
        value = int(addr) | (0xFFFF_0000_0000 if addr.version == 4 else 0)
        self._add((value >> 64, value & _U64, callback[1]), blob, ts)

    def entries(self) -> list[Registration]:
        """Every registration, the least recently registered callback first (for ``absorb``)."""
        return [(key, blob, ts) for key, blobs in self._by_callback.items() for blob, ts in blobs.items()]

    def absorb(self, entries: list[Registration]) -> None:
        """Take in the registrations of captures read before this table's (``entries``), as if
        this table had read them."""
        for key, blob, ts in entries:
            self._add(key, blob, ts)

    def _add(self, key: Callback, blob: bytes, ts: int) -> None:
        self._by_callback.setdefault(key, {})[blob] = ts
        self._lengths.add(len(blob))
        self._ports.add(key[2])
        self._by_callback.move_to_end(key)
        while len(self._by_callback) > MAX_REGISTRATIONS:
            _, blobs = self._by_callback.popitem(last=False)
            self._counts.registrations_evicted += len(blobs)

    def notifications(self, data: npt.NDArray[np.uint8], pk: Packets, pay: npt.NDArray[np.intp]) -> list[int]:
        """The packets of ``pay`` (in order) that are UDP datagrams to a registered callback
        whose payload is the registered blob."""
        lengths = np.fromiter(self._lengths, dtype=np.int64)
        ports = np.fromiter(self._ports, dtype=np.int64)
        cand = pay[(pk.proto[pay] == IPPROTO_UDP) & np.isin(pk.payload_len[pay], lengths) & np.isin(pk.dport[pay], ports)]
        found = []
        for p in cand.tolist():
            blobs = self._by_callback.get((int(pk.dst_hi[p]), int(pk.dst_lo[p]), int(pk.dport[p])))
            if not blobs:
                continue
            o = int(pk.payload_off[p])
            if data[o : o + int(pk.payload_len[p])].tobytes() in blobs:
                found.append(p)
        return found
