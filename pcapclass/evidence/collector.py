"""The per-batch driver of the payload stage: which payloads go to which part, in which order.

``EvidenceCollector.feed`` sees every decoded batch (with its flow keys) and hands on only what
vectorized prefilters point at: the first payload of each flow in each direction
(``first_payloads``), EHLO replies, the packets of the few flows followed further
(``following``), UDP datagrams to registered callbacks (``registrations``) and short datagrams
answered at once (``notification_timing``). What the parts learn is read back as ``Evidence``
(``evidence``) or, for finished flows, as their rows (``take``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from .._laterlooks import later_looks
from ..decode import Packets
from ..flows import FlowKeys, FlowRows, Records
from ..notification_timing import (
    HIGH_PORT,
    MAX_DATAGRAM,
    MIN_REQUEST,
    REQUEST_HEAD,
    NotificationTiming,
)
from ..protocols.http import HttpPathTable
from ..sources.batch import PacketBatch
from ..tables.http_paths import load_http_paths
from ..tables.interfaces import Interface, load_interfaces
from .anomalies import EvidenceAnomalies, take
from .binds import Binds
from .epm import EndpointMapperTable
from .first_payloads import EHLO_REPLY, MIN_EHLO_REPLY, FirstPayloads
from .following import FollowedFlows
from .inspection import Inspector
from .learned import DEFAULT_EPM_EXPIRY, Evidence, rows_frame, verdict_frame
from .names import Names
from .registrations import PushRegistrations
from .rows import RowLog
from .verdict_sets import VerdictSets
from .verdicts import NOTIFICATION, TIMED, VerdictTable

_U64 = (1 << 64) - 1


class EvidenceCollector:
    """Looks at candidate payloads of each batch and keeps what they prove (see module doc).

    Example::

        col = EvidenceCollector()
        for batch in CaptureFile(path):
            pk = decode(batch); keys = flow_keys(pk); col.feed(batch, pk, keys, table.update(pk, keys))
        ev = col.evidence()
    """

    def __init__(
        self,
        *,
        interfaces: Mapping[str, Interface] | None = None,
        http_paths: HttpPathTable | None = None,
        epm_expiry: float = DEFAULT_EPM_EXPIRY,
        idle_timeout: float = 120.0,
    ) -> None:
        self.interfaces = interfaces if interfaces is not None else load_interfaces()
        self.http_paths = http_paths if http_paths is not None else load_http_paths()
        self.epm_expiry_ns = int(epm_expiry * 1e9)
        #: what the parts dropped or could not do, added to as it happens (``take_anomalies``)
        self.anomalies = counts = EvidenceAnomalies()
        self.verdicts = VerdictTable()
        self.rows = RowLog()
        self.epm = EndpointMapperTable(counts)
        self.registrations = PushRegistrations(counts)
        binds = Binds(self.interfaces, counts)
        sets = VerdictSets(counts)
        self.following = FollowedFlows(sets=sets, binds=binds, verdicts=self.verdicts, rows=self.rows, epm=self.epm,
                                       registrations=self.registrations, idle_ns=int(idle_timeout * 1e9), counts=counts)  # fmt: skip
        self.first_payloads = FirstPayloads(inspector=Inspector(binds, self.http_paths), sets=sets, verdicts=self.verdicts,
                                            rows=self.rows, following=self.following, names=Names(self.verdicts, self.rows),
                                            counts=counts)  # fmt: skip
        self._timing = NotificationTiming()

    def new_capture(self) -> None:
        """An input that does not continue the one before starts: forget per-flow state (its
        flows start afresh) and the datagrams waiting for a request, keep what was learned
        (endpoint-mapper ports, registrations)."""
        self.following.clear()
        self._timing.clear()

    def feed(self, batch: PacketBatch, pk: Packets, keys: FlowKeys, first: npt.NDArray[np.intp]) -> None:
        """Inspect the candidate payloads of one decoded batch (``keys``: its flow keys;
        ``first``: its packets that carry their flow's first payload in their direction, as
        ``FlowTable.update`` returns them).

        The compiled first looks run here, on the caller's thread, not beside the flow table:
        this stage waits for the two ahead of it, while their work is the pipeline's pace."""
        pay = np.flatnonzero(pk.payload_len > 0)
        if not pay.size:
            return
        data = batch.data
        if first.size:
            self.first_payloads.look(data, pk, keys, first)
        replies, requests, datagrams = later_looks(data, pay, first, pk.payload_off, pk.payload_len, pk.proto, pk.sport, pk.dport,
                                                   EHLO_REPLY, MIN_EHLO_REPLY, REQUEST_HEAD, MIN_REQUEST, MAX_DATAGRAM, HIGH_PORT)  # fmt: skip
        self.first_payloads.ehlo_replies(data, pk, keys, replies)
        if self.following:
            self.following.scan(data, pk, keys, pay)
        if self.registrations:
            for p in self.registrations.notifications(data, pk, pay):
                self.rows.add_row(int(keys.hash[p]) & _U64, int(keys.check[p]) & _U64, int(pk.ts_ns[p]), bool(keys.from_a[p]),
                                  self.verdicts.vid(NOTIFICATION, client_is_sender=1))  # fmt: skip
        timed = self._timing.feed(pk, keys, datagrams, requests, int(pk.ts_ns[pay[-1]]))
        if timed.ts_ns.size:
            self.rows.add_part(*timed, np.full(timed.ts_ns.size, self.verdicts.vid(TIMED), dtype=np.int32))

    def take_anomalies(self) -> EvidenceAnomalies:
        """What the parts counted since the last call (a capture's share: the session takes it
        when the capture ends, into its ``capture.csv`` row)."""
        self.anomalies.datagrams_dropped += self._timing.dropped
        self._timing.dropped = 0
        return take(self.anomalies)

    def take(self, recs: Records) -> FlowRows:
        """The rows of these finished flows, handed over and forgotten here (``RowLog.take``)."""
        return self.rows.take(recs)

    def evidence(self, *, rows: bool = True) -> Evidence:
        """Everything learned so far, as tables for ``classify``; ``rows=False`` leaves the
        rows table empty, for callers that hand classify rows taken with their flows."""
        verdicts = self.verdicts.rows
        table = self.rows.frame(verdicts) if rows else rows_frame([])
        return Evidence(table, verdict_frame(verdicts), self.epm.frame(self.interfaces), self.epm_expiry_ns)
