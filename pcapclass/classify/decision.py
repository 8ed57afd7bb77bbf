"""The evidence decision: per flow, its service, the evidence that decided it, its detail,
RPC interface, protocol and server name.

Decisions run on verdict ids; per flow, the strongest candidate row (by rank, proof, then
order) of each kind of interest is taken, and names are attached only at the end, as
categoricals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..evidence import (
    CERT_SUBJECT,
    DECISIVE,
    MISMATCH,
    NOTIFICATION,
    RANK,
    SERVER_NAME,
    SIGNATURE_SERVICES,
    TIMED_NOTIFICATION,
    Evidence,
)
from ..flows import FlowRows, Records
from ..tables.services import PortLookup
from .blocks import Shared
from .orientation import Oriented
from .rpc_ports import Answers, bound_ports, epm_rows, notification_heuristic
from .verdicts import EV, EVIDENCE_NAMES, VerdictArrays, agreeing, calls_both_ways


@dataclass(frozen=True, slots=True)
class _Decided:
    """Per flow: service, the evidence that decided it, its detail and RPC interface.

    Each column is integer codes into its own table of names: decisions move codes, and the
    names become categoricals once, at the end.
    """

    service: npt.NDArray[np.int64]
    service_names: npt.NDArray[np.object_]
    evidence: npt.NDArray[np.int64]
    detail: npt.NDArray[np.int64]
    detail_names: npt.NDArray[np.object_]
    rpc_interface: npt.NDArray[np.int64]
    rpc_interface_names: npt.NDArray[np.object_]
    rpc_interface_name_names: npt.NDArray[np.object_]
    protocol: npt.NDArray[np.int64]
    protocol_names: npt.NDArray[np.object_]
    server_name: npt.NDArray[np.int64]
    cert_subject: npt.NDArray[np.int64]
    #: the names ``server_name`` and ``cert_subject`` point into
    name_names: npt.NDArray[np.object_]

    def columns(self) -> dict[str, pd.Categorical]:
        """The flows' names, protocol, service, evidence, detail and interface columns."""
        return {
            "server_name": _categorical(self.server_name, self.name_names),
            "cert_subject": _categorical(self.cert_subject, self.name_names),
            "protocol": _categorical(self.protocol, self.protocol_names),
            "service": _categorical(self.service, self.service_names),
            "evidence": _categorical(self.evidence, EVIDENCE_NAMES),
            "detail": _categorical(self.detail, self.detail_names),
            "rpc_interface": _categorical(self.rpc_interface, self.rpc_interface_names),
            "rpc_interface_name": _categorical(self.rpc_interface, self.rpc_interface_name_names),
        }


def from_codes(codes: npt.NDArray[np.signedinteger[Any]], categories: Sequence[str] | npt.NDArray[Any]) -> pd.Categorical:
    """``pd.Categorical.from_codes`` with the categories as pandas takes them and the flows have
    always had them (a tuple or an array; pandas-stubs asks for an Index)."""
    return pd.Categorical.from_codes(codes, categories)  # type: ignore[call-overload,no-any-return]


def _categorical(codes: npt.NDArray[np.int64], names: npt.NDArray[np.object_]) -> pd.Categorical:
    """``names[codes]`` as a categorical whose categories are the names used, sorted (as
    ``pd.Categorical(values)`` would make them), without a string per flow on the way."""
    used = np.flatnonzero(np.bincount(codes, minlength=names.size))
    categories, inverse = np.unique(names[used].astype(str), return_inverse=True)
    remap = np.zeros(names.size, dtype=np.int64)
    remap[used] = inverse.reshape(-1)
    return from_codes(remap[codes], categories)



#: services a text protocol's greeting names whatever the port
_TEXT_SERVICES = np.array(sorted(SIGNATURE_SERVICES.values()), dtype=object)
#: what the new-mail notification heuristic names: what a matched registration does
_NOTIFICATION_SERVICE, _NOTIFICATION_DETAIL = NOTIFICATION.service, NOTIFICATION.detail


#: no row: larger than any row's strength
_NO_ROW = np.iinfo(np.int64).max


def _strongest(n: int, flow: npt.NDArray[np.int64], strength: npt.NDArray[np.int64],
               mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:  # fmt: skip
    """Per flow (of ``n``), its strongest row among those ``mask`` keeps: (flows, rows).

    ``strength`` orders rows (lower is stronger) and ends in the row number, so that it is
    unique; one unbuffered minimum per flow finds them, with no sort of the rows. The rows are
    taken by position: a boolean mask that keeps rows here and there copies several times slower."""
    best = np.full(n, _NO_ROW, dtype=np.int64)
    rows = np.flatnonzero(mask)
    np.minimum.at(best, flow[rows], strength[rows])
    w = np.flatnonzero(best != _NO_ROW)
    return w, best[w] & 0xFFFF_FFFF


@dataclass(frozen=True, slots=True)
class DecisionInput:
    """What deciding a block's flows weighs: the flows (oriented), their rows and verdicts, the
    services their ports name, the payload stage's tables and what the run's blocks share."""

    recs: Records
    oriented: Oriented
    rows: FlowRows | None
    verdicts: VerdictArrays
    #: per flow, the rule service code its port names on its Exchange side (0: none)
    port_code: npt.NDArray[np.int64]
    lookup: PortLookup
    evidence: Evidence | None
    #: the kinds of proof that make a flow Exchange traffic whoever its ends are
    conclusive: frozenset[str]
    shared: Shared | None = None


def decide(b: DecisionInput) -> _Decided:
    """The evidence order: bind, epm, rpc-http, http, signature, registration beat the port;
    the port beats the heuristic; a contradicted port keeps its service as ``port-mismatch``.
    Between two hosts neither of which is an Exchange server, only evidence that is Exchange's
    alone (a ``conclusive`` kind of proof: an Exchange interface, an OWA path ...) names a
    service. A connection seen only mid-stream (``dcerpc``: whole call PDUs, or one in each
    direction) to an Exchange server takes the service of its port, else the rules' service for
    an unnamed RPC interface. Every flow's protocol is the one its strongest row names.

    Decisions run on verdict ids: per flow, the strongest candidate row (by rank, proof, then
    order) of each kind of interest is taken; names are attached only at the end.
    """
    recs, o, rows, verdicts, port_code, lookup = b.recs, b.oriented, b.rows, b.verdicts, b.port_code, b.lookup
    evidence, conclusive, shared = b.evidence, b.conclusive, b.shared
    proto = recs["proto"]
    n = port_code.shape[0]
    has_port = port_code > 0
    service_ids = lookup.ids
    exchange_end = o.client_ex | o.server_ex
    f, vid, from_a = agreeing(rows, verdicts, o)
    verdicts, vid = calls_both_ways(f, vid, from_a, verdicts, n)
    flows, vids = [f], [vid]
    if evidence is not None:
        answers = shared.answers if shared is not None and shared.answers is not None else Answers.of(evidence.epm)
        bound = shared.bound if shared is not None and shared.bound is not None else bound_ports(recs, o, verdicts, f, vid)
        # what a bind elsewhere said matters only to connections that did not bind themselves
        unbound = np.ones(n, dtype=bool)
        unbound[f[np.flatnonzero((verdicts.kind == "bind")[vid])]] = False
        for learned, among in ((answers, None), (bound, unbound)):
            matched, row = epm_rows(learned, evidence.epm_expiry_ns, proto, o, recs["first_ns"], among)
            if matched.size:
                verdicts, first = verdicts.concat(learned.named)
                flows.append(matched)
                vids.append(first + learned.vid[row])
    # code tables: rule ids then one service per verdict; "" then one detail / interface per verdict
    ids, v = len(service_ids), verdicts.kind.size
    blank = np.array([""], dtype=object)
    service_names = np.concatenate([np.array(service_ids, dtype=object), verdicts.service, [_NOTIFICATION_SERVICE]])
    detail_names = np.concatenate([blank, verdicts.detail, [_NOTIFICATION_DETAIL]])
    service = port_code.astype(np.int64)
    ev = np.where(has_port, EV["port"], EV["none"])
    detail, iface, protocol = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    server_name, cert_subject = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    # the service a blank DCE/RPC verdict takes: its port's, else an unnamed interface's (Exchange ends only)
    rpc_code = np.where(has_port, port_code, np.where(exchange_end, lookup.unnamed_rpc, 0))
    if flows:
        f, vid = np.concatenate(flows), np.concatenate(vids)
        kinds = verdicts.kind
        kind_code = np.array([EV.get(k, -1) for k in kinds], dtype=np.int64)
        rank_of = np.array([RANK.get(k, len(RANK)) for k in kinds], dtype=np.int64)
        # among equals, a signature that proves an Exchange server beats one naming the protocol
        proof_of = np.array([d != "exchange-smtp" for d in verdicts.detail], dtype=np.int64)
        mismatch_of = kinds == MISMATCH
        decisive_of = np.isin(kinds, DECISIVE)
        # a signature that only confirms a port gives the port's service (none without one)
        blank_of = verdicts.service == ""
        dcerpc_of = kinds == "dcerpc"
        # rank, then proof, then the order rows came in (rows number below 2**32 in a block)
        strength = (((rank_of << 1) | proof_of) << 32)[vid] | np.arange(f.size, dtype=np.int64)
        # the interface: the strongest row naming one
        w, r = _strongest(n, f, strength, (verdicts.iface != "")[vid])
        iface[w] = vid[r] + 1
        no_service = blank_of[vid] & ~mismatch_of[vid]
        w, r = _strongest(n, f, strength, (verdicts.protocol != "")[vid])
        protocol[w] = vid[r] + 1
        # the server name: the detail of the first server-name row (the client's first payload)
        w, r = _strongest(n, f, strength, (kinds == SERVER_NAME)[vid])
        server_name[w] = vid[r] + 1
        w, r = _strongest(n, f, strength, (kinds == CERT_SUBJECT)[vid])
        cert_subject[w] = vid[r] + 1
        proven = np.isin(verdicts.proof, list(conclusive))[vid]
        w, r = _strongest(n, f, strength, decisive_of[vid] & (~no_service | has_port[f] | (dcerpc_of[vid] & (rpc_code[f] > 0)))
                          & (exchange_end[f] | proven))  # fmt: skip
        # a greeting's service yields to the rules' service of its port unless the port's
        # protocol is contradicted: it confirms the protocol family (a site's SMTP relay port)
        mismatched = np.zeros(n, dtype=bool)
        mismatched[f[mismatch_of[vid]]] = True
        deciding = vid[r]
        confirms = ((kinds == "signature") & np.isin(verdicts.service, _TEXT_SERVICES))[deciding] & has_port[w] & ~mismatched[w]
        service[w] = np.where(blank_of[deciding] | confirms, np.where(dcerpc_of[deciding], rpc_code[w], port_code[w]), ids + deciding)
        ev[w] = kind_code[deciding]
        detail[w] = deciding + 1
        w, r = _strongest(n, f, strength, mismatch_of[vid])
        keep = has_port[w] & (ev[w] == EV["port"])
        ev[w[keep]] = EV[MISMATCH]
        detail[w[keep]] = vid[r[keep]] + 1
    if evidence is not None:
        timed = np.zeros(n, dtype=bool)
        if flows:
            timed[f[(verdicts.kind == TIMED_NOTIFICATION)[vid]]] = True
        hit = notification_heuristic(ev, proto, o, shared.sessions if shared is not None else None, timed)
        service[hit], ev[hit], detail[hit] = ids + v, EV["heuristic"], v + 1
    return _Decided(service, service_names, ev, detail, detail_names, iface,
                    np.concatenate([blank, verdicts.iface]), np.concatenate([blank, verdicts.name]),
                    protocol, np.concatenate([blank, verdicts.protocol]), server_name, cert_subject,
                    np.concatenate([blank, verdicts.detail]))  # fmt: skip
