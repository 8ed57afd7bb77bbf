"""Followed DCE/RPC flows: the later packets of the few flows whose first payload may lead to more.

A flow is followed when its first payload leaves something to learn: binds to the endpoint
mapper or EMSMDB (an endpoint-mapper reply's towers, a push-notification registration may
follow), a PDU split over segments, an RPC over HTTP IN channel. Its streams are reassembled
per direction (``PduReassembler``); what they show becomes rows (binds), endpoint-mapper
entries and registrations, each kept by its own part. ``follow_scan`` (compiled) finds the
packets of followed flows in a batch and passes over what needs no Python look.

A flow whose first payload was binds only waits unparsed (``WaitingFlows``, with the verdict
set that names its contexts) until a packet needs a look; most never do. Followed flows are
let go after ``MAX_TRACKED_PACKETS``, when idle, or the least recently seen first past
``MAX_TRACKED_FLOWS``.
"""

from __future__ import annotations

import array
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .._firstlook import WaitingFlows, follow_scan
from ..decode import Packets
from ..flows import FlowKeys
from ..protocols.dcerpc import (
    AUTH_LEVEL_PKT_PRIVACY,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    PTYPE_ALTER_CONTEXT,
    PTYPE_BIND,
    PTYPE_MAX,
    PTYPE_REQUEST,
    PTYPE_RESPONSE,
    PduReassembler,
    parse_header,
    parse_request,
    parse_response,
)
from ..protocols.emsmdb import (
    EMSMDB_INTERFACE,
    EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION,
    parse_register_push_notification,
)
from ..protocols.epm import (
    EPM_INTERFACE,
    EPM_OPNUM_LOOKUP,
    EPM_OPNUM_MAP,
    Tower,
    epm_lookup_towers,
    epm_map_towers,
)
from ..protocols.http import parse_request_line
from ..protocols.rpch import NCACN_HTTP_GREETING
from .anomalies import EvidenceAnomalies
from .binds import Binds
from .epm import EndpointMapperTable
from .registrations import PushRegistrations
from .rows import RowLog
from .verdict_sets import VerdictSets
from .verdicts import VerdictTable

#: endpoint-mapper ports (TCP 135; 593 for ncacn_http)
EPM_PORTS = (135, 593)
#: packets a followed flow is looked at before it is let go
MAX_TRACKED_PACKETS = 48
#: followed flows held at most (the least recently seen go first)
MAX_TRACKED_FLOWS = 50_000
#: slots of the table that finds packets of followed flows without a Python loop (a count of
#: followed flows per slot of their hash's low bits, so a flow no longer followed leaves at once).
#: 128 KiB stays in a core's L2 cache, where every payload packet of a batch probes it; an
#: unrelated flow that shares a slot costs a probe of the followed flows themselves
_TRACK_SLOTS = 1 << 16
#: PDU types whose content following uses (bind, alter_context, request, response), by ptype
PTYPE_USED = np.zeros(PTYPE_MAX + 1, dtype=bool)
PTYPE_USED[[PTYPE_BIND, PTYPE_ALTER_CONTEXT, PTYPE_REQUEST, PTYPE_RESPONSE]] = True


@dataclass(slots=True)
class _Flow:
    """A followed flow: DCE/RPC streams per direction, bound contexts, calls waiting."""

    check: int
    last_ns: int
    server_port: int  # the port that was guessed the server's when following began
    streams: dict[bool, PduReassembler] = field(default_factory=dict)
    #: direction -> bytes of HTTP headers to skip before the stream carries PDUs
    http_body: dict[bool, bool] = field(default_factory=dict)
    contexts: dict[int, str] = field(default_factory=dict)
    calls: dict[int, tuple[int, int]] = field(default_factory=dict)
    packets: int = 0


class FollowedFlows:
    """The flows followed and waiting, and the table ``follow_scan`` finds their packets with."""

    def __init__(self, *, sets: VerdictSets, binds: Binds, verdicts: VerdictTable, rows: RowLog, epm: EndpointMapperTable,
                 registrations: PushRegistrations, idle_ns: int, counts: EvidenceAnomalies) -> None:  # fmt: skip
        #: the verdict sets of first payloads, whose presets name a waiting flow's contexts (read only)
        self._sets = sets
        self._binds, self._verdicts, self._rows = binds, verdicts, rows
        self._epm, self._registrations = epm, registrations
        self.idle_ns = idle_ns
        self._counts = counts
        self._flows: OrderedDict[int, _Flow] = OrderedDict()
        # counted from Python one flow at a time (array.array: no numpy scalar cost), read by
        # numpy a batch at a time through a view of the same memory
        self._track_count = array.array("H", bytes(2 * _TRACK_SLOTS))
        self._track_view = np.frombuffer(self._track_count, dtype=np.uint16)
        #: flows whose first payload was binds only (or an IN channel's headers), not yet looked
        #: at again, with the set that names their contexts. Most end with their next packet (no
        #: more PDUs, or PDUs of no interest), so they become a _Flow only when a packet needs a
        #: Python look
        self._waiting = WaitingFlows(self._track_view)
        #: followed flows with a stream waiting for the rest of a PDU (or of HTTP headers)
        self._cont: set[int] = set()
        #: this batch's newly followed flows: (hashes, index of the packet that started each)
        self._started: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp]]] = []

    def __bool__(self) -> bool:
        return bool(self._flows) or bool(len(self._waiting))

    def clear(self) -> None:
        """Forget every flow (a new capture starts: flows never span captures)."""
        self._flows.clear()
        self._waiting.clear()
        self._cont.clear()
        self._started.clear()
        self._track_view[:] = 0

    def start(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                         js: npt.NDArray[np.intp], server_port: npt.NDArray[np.int64], sid: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """Follow the flows of first payloads ``sel[js]`` (in packet order) not followed yet: a
        flow at a PDU boundary whose contexts are known waits unparsed, a batch at a time; the
        few others are parsed now."""
        ps = sel[js]
        h = keys.hash[ps].view(np.uint64)
        preset = self._sets.preset[sid[js]]
        if not preset.all():  # a flow follows from its first such packet (WaitingFlows keeps the first of its own)
            _, first_of = np.unique(h, return_index=True)
            if first_of.size < js.size:
                keep = np.sort(first_of)  # in packet order
                js, ps, h, preset = js[keep], ps[keep], h[keep], preset[keep]
        if self._flows:
            # a few flows a batch against the followed ones: dict lookups, not a numpy set operation
            flows = self._flows
            fresh = np.fromiter((x not in flows for x in h.tolist()), dtype=bool, count=h.size)
            js, ps, h, preset = js[fresh], ps[fresh], h[fresh], preset[fresh]
        w = np.flatnonzero(preset)
        if w.size:
            started = self._waiting.start(h[w], keys.check[ps[w]].view(np.uint64), pk.ts_ns[ps[w]], server_port[js[w]], sid[js[w]])
            self._started.append((h[w][started], ps[w][started]))
        parse = np.flatnonzero(~preset)
        if parse.size:
            mine = []
            # the per-flow loop takes Python ints made in one go, not one numpy scalar at a time
            for p, hsh, check, ts, port in zip(ps[parse].tolist(), h[parse].tolist(), keys.check[ps[parse]].view(np.uint64).tolist(),
                                               pk.ts_ns[ps[parse]].tolist(), server_port[js[parse]].tolist()):  # fmt: skip
                if hsh in self._waiting:
                    continue
                mine.append(p)
                st = self._track(hsh, check, ts, port)
                o = int(pk.payload_off[p])
                if not self._step(st, hsh, data[o : o + int(pk.payload_len[p])].tobytes(), bool(keys.from_a[p]), ts, pk, p, first=True):
                    self._untrack(hsh)
            mine_p = np.array(mine, dtype=np.intp)
            self._started.append((keys.hash[mine_p].view(np.uint64), mine_p))
        self._limit()

    def _track(self, hsh: int, check: int, ts: int, server_port: int) -> _Flow:
        st = self._flows[hsh] = _Flow(check=check, last_ns=ts, server_port=server_port)
        self._track_count[hsh & (_TRACK_SLOTS - 1)] += 1
        self._limit()
        return st

    def _limit(self) -> None:
        """At most MAX_TRACKED_FLOWS followed: waiting ones go first, then the least recent."""
        excess = len(self._flows) + len(self._waiting) - MAX_TRACKED_FLOWS
        if excess <= 0:
            return
        self._counts.followed_flows_evicted += excess
        excess -= self._waiting.drop_oldest(excess)
        for _ in range(excess):
            gone, _ = self._flows.popitem(last=False)
            self._cont.discard(gone)
            self._track_count[gone & (_TRACK_SLOTS - 1)] -= 1

    def _untrack(self, hsh: int) -> None:
        if self._flows.pop(hsh, None) is not None:
            self._cont.discard(hsh)
            self._track_count[hsh & (_TRACK_SLOTS - 1)] -= 1
        else:
            self._waiting.pop(hsh)

    def _flow(self, hsh: int) -> _Flow | None:
        """The followed flow of ``hsh``; a waiting one becomes a _Flow, its preset contexts bound."""
        st = self._flows.get(hsh)
        if st is None:
            waiting = self._waiting.pop(hsh)
            if waiting is not None:
                check, ts, port, preset = waiting
                st = self._flows[hsh] = _Flow(check=check, last_ns=ts, server_port=port, contexts=dict(self._sets.presets[preset] or ()),
                                              packets=1)  # fmt: skip
                self._track_count[hsh & (_TRACK_SLOTS - 1)] += 1
        return st

    def scan(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, pay: npt.NDArray[np.intp]) -> None:
        """The payload packets of followed flows, in capture order.

        ``follow_scan`` finds them and passes over what needs no Python look: a whole PDU of
        no interest, or the first packet that neither starts a DCE/RPC PDU nor continues one
        its stream is waiting for (which ends the following of its flow)."""
        started, self._started = self._started, []
        started_h = np.concatenate([h for h, _ in started]) if started else np.zeros(0, np.uint64)
        started_p = np.concatenate([p for _, p in started]).astype(np.int64) if started else np.zeros(0, np.int64)
        by_hash = np.argsort(started_h)
        look, ended = follow_scan(data, pay, keys.hash.view(np.uint64), pk.payload_off, pk.payload_len, self._track_view,
                                  self._waiting, np.sort(np.fromiter(self._flows, dtype=np.uint64, count=len(self._flows))),
                                  started_h[by_hash], started_p[by_hash],
                                  np.sort(np.fromiter(self._cont, dtype=np.uint64, count=len(self._cont))), PTYPE_USED.view(np.uint8))  # fmt: skip
        for hsh, p, check, ts in zip(keys.hash[look].view(np.uint64).tolist(), look.tolist(),
                                     keys.check[look].view(np.uint64).tolist(), pk.ts_ns[look].tolist()):  # fmt: skip
            st = self._flow(hsh)
            if st is None or st.check != check:
                continue
            if ts - st.last_ns > self.idle_ns:  # the key was reused after an idle gap
                self._counts.followed_flows_expired += 1
                self._untrack(hsh)
                continue
            st.last_ns = ts
            self._flows.move_to_end(hsh)
            off = int(pk.payload_off[p])
            if not self._step(st, hsh, data[off : off + int(pk.payload_len[p])].tobytes(), bool(keys.from_a[p]), ts, pk, p):
                self._untrack(hsh)
        waited = self._waiting.end(ended)
        if self._flows:
            for hsh in ended[~waited].tolist():
                self._untrack(hsh)
        # forget flows gone quiet (waiting ones are in the order they began)
        now = int(pk.ts_ns[pay[-1]])
        while self._flows:
            hsh, st = next(iter(self._flows.items()))
            if now - st.last_ns <= self.idle_ns:
                break
            self._counts.followed_flows_expired += 1
            self._untrack(hsh)
        self._counts.followed_flows_expired += self._waiting.expire(now - self.idle_ns)

    def _step(self, st: _Flow, hsh: int, payload: bytes, from_a: bool, ts: int, pk: Packets, p: int, *, first: bool = False) -> bool:
        """One payload of a followed flow; False when the flow is not worth following further.
        ``first``: its first payload, whose binds ``Inspector`` counted already if they did not parse."""
        st.packets += 1
        stream = st.streams.get(from_a)
        if stream is None:
            stream = st.streams[from_a] = PduReassembler(resync_segments=1)
            if payload.startswith(NCACN_HTTP_GREETING):
                payload = payload[len(NCACN_HTTP_GREETING):]
            elif payload[:1].isalpha():
                req = parse_request_line(payload)
                if req is not None:
                    st.http_body[from_a] = True
        if st.http_body.get(from_a):
            end = payload.find(b"\r\n\r\n")
            if end < 0:
                return st.packets < MAX_TRACKED_PACKETS
            st.http_body[from_a] = False
            payload = payload[end + 4 :]
        if payload:
            for pdu in stream.feed(payload):
                self._pdu(st, pdu, from_a, ts, pk, p, hsh, first)
            if stream.broken:  # given up with this payload: a broken stream takes no more
                self._counts.rpc_reassembly_abandoned += 1
        if stream.buffered or st.http_body.get(from_a):
            self._cont.add(hsh)
        else:
            self._cont.discard(hsh)
        return st.packets < MAX_TRACKED_PACKETS and not any(s.broken for s in st.streams.values())

    def _pdu(self, st: _Flow, pdu: bytes, from_a: bool, ts: int, pk: Packets, p: int, hsh: int, first: bool) -> None:
        header = parse_header(pdu)
        if header is None:
            self._counts.dcerpc_pdus_unparsed += 1
            return
        ptype = header.ptype
        if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
            contexts, whole = self._binds.parsed(pdu)
            self._counts.dcerpc_pdus_unparsed += not (whole or first)
            for context_id, interface in contexts:
                st.contexts[context_id] = interface
                self._rows.add_row(hsh, st.check, ts, from_a, self._verdicts.vid(self._binds.verdict(interface, "bind")))
        elif ptype == PTYPE_REQUEST:
            req = parse_request(pdu)
            if req is None:
                self._counts.dcerpc_pdus_unparsed += 1
                return
            st.calls[req.call_id] = (req.opnum, req.context_id)
            iface = st.contexts.get(req.context_id)
            whole = header.flags & (PFC_FIRST_FRAG | PFC_LAST_FRAG) == (PFC_FIRST_FRAG | PFC_LAST_FRAG)
            if (iface == EMSMDB_INTERFACE and req.opnum == EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION and whole
                    and req.auth_level != AUTH_LEVEL_PKT_PRIVACY):  # fmt: skip
                reg = parse_register_push_notification(req.stub, little_endian=header.little_endian)
                if reg is None:
                    self._counts.registrations_unparsed += 1
                elif reg.context:
                    self._registrations.register(reg.callback, reg.context, ts)
        elif ptype == PTYPE_RESPONSE:
            resp = parse_response(pdu)
            if resp is None:
                self._counts.dcerpc_pdus_unparsed += 1
                return
            opnum, ctx = st.calls.pop(resp.call_id, (-1, resp.context_id))
            iface = st.contexts.get(ctx)
            if iface != EPM_INTERFACE and not (iface is None and st.server_port in EPM_PORTS):
                return
            if not header.flags & PFC_FIRST_FRAG:
                return
            towers: list[Tower] = []
            parsed = False
            if opnum in (EPM_OPNUM_MAP, -1):
                towers, parsed = epm_map_towers(resp.stub, little_endian=header.little_endian)
            if opnum == EPM_OPNUM_LOOKUP or (opnum == -1 and not towers):
                towers, lookup_parsed = epm_lookup_towers(resp.stub, little_endian=header.little_endian)
                parsed |= lookup_parsed
            # a reply known to answer ept_map or ept_lookup whose stub did not parse (not a guess
            # at a reply whose request was not seen, which may answer another call)
            self._counts.epm_replies_unparsed += opnum in (EPM_OPNUM_MAP, EPM_OPNUM_LOOKUP) and not parsed
            self._epm.learn_towers((int(pk.src_hi[p]), int(pk.src_lo[p])), towers, ts)
