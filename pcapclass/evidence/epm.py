"""The endpoint-mapper table: which (server, transport, port) serves which DCE/RPC interface.

Learnt from the towers of endpoint-mapper replies (``protocols.dcerpc``), each entry with the
interval it was seen in (``classify`` applies ``epm_expiry`` either side). Entries are merged per
(server, transport, port, interface) and capped, the least recently seen going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import pandas as pd

from ..protocols.epm import Tower
from ..tables.interfaces import Interface
from .anomalies import EvidenceAnomalies
from .learned import epm_frame

#: an entry's key: server (hi, lo), transport, port, interface UUID
EpmKey = tuple[int, int, str, int, str]
#: an entry as ``entries`` gives it: its key and the interval it was seen in
EpmEntry = tuple[EpmKey, int, int]
#: endpoint-mapper entries held at most
MAX_EPM_ENTRIES = 200_000


class EndpointMapperTable:
    """(server hi, lo, transport, port, interface) -> [first_ns, last_ns]."""

    def __init__(self, counts: EvidenceAnomalies) -> None:
        self._counts = counts
        self._spans: OrderedDict[EpmKey, list[int]] = OrderedDict()

    def learn_towers(self, server: tuple[int, int], towers: list[Tower], ts: int) -> None:
        """The towers of a reply ``server`` sent at ``ts``: each TCP, UDP or HTTP port for its
        interface, on the replying server and on the IPv4 address the tower names."""
        for t in towers:
            if t.port is None or t.protocol not in ("tcp", "udp", "http"):
                continue
            transport = "udp" if t.protocol == "udp" else "tcp"
            self._learn(server, transport, t.port, t.interface, ts)
            if t.address not in (None, "0.0.0.0"):
                a = int.from_bytes(bytes(int(x) for x in t.address.split(".")), "big") | 0xFFFF_0000_0000
                if (0, a) != server:
                    self._learn((0, a), transport, t.port, t.interface, ts)

    def _learn(self, server: tuple[int, int], transport: str, port: int, interface: str, ts: int) -> None:
        self._seen((server[0], server[1], transport, port, interface), ts, ts)

    def _seen(self, key: EpmKey, first: int, last: int) -> None:
        span = self._spans.get(key)
        if span is None:
            self._spans[key] = [first, last]
            while len(self._spans) > MAX_EPM_ENTRIES:
                self._spans.popitem(last=False)
                self._counts.epm_entries_evicted += 1
        else:
            span[0], span[1] = min(span[0], first), max(span[1], last)
            self._spans.move_to_end(key)

    def entries(self) -> list[EpmEntry]:
        """Every entry with its interval, the least recently seen first (for ``absorb``)."""
        return [(key, first, last) for key, (first, last) in self._spans.items()]

    def absorb(self, entries: list[EpmEntry]) -> None:
        """Take in the ``entries`` of a table that read the captures after this one's, as if
        this table had read them: each seen again, in their order."""
        for key, first, last in entries:
            self._seen(key, first, last)

    def frame(self, interfaces: Mapping[str, Interface]) -> pd.DataFrame:
        """The table as ``Evidence.epm``, each interface's service and name from ``interfaces``."""
        rows = []
        for (hi, lo, transport, port, uuid), (first, last) in self._spans.items():
            iface = interfaces.get(uuid)
            service = iface.service if iface is not None and iface.decisive else ""
            rows.append((hi, lo, transport, port, first, last, service, uuid, iface.name if iface else "", iface is not None and iface.exchange))
        return epm_frame(rows)
