"""Flow records → oriented, directed, service-tagged flows, vectorized over the whole table.

Orientation, the Exchange servers and the port lookup all need a flow's both sides (and,
for inference, every flow of the capture), so they run on finished flow records rather than
on packets; every step is a numpy expression over all flows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import schema
from .addresses import Network, format_addresses, in_networks, pair_index, rows_in
from .decode import FRAGMENT_PROTO_BASE, Status
from .evidence import (
    DCERPC,
    DECISIVE,
    EVIDENCE_VALUES,
    INTERFACE_ONLY,
    MISMATCH,
    ONE_CALL,
    RANK,
    SERVER_NAME,
    SIGNATURE_SERVICES,
    TIMED_NOTIFICATION,
    Evidence,
)
from .flows import NO_SYN, NON_FLOW_BASE, FlowIndex, FlowRows, Records
from .protocols.proofs import EPM_ANSWER
from .protocols.signatures import EXPECTED_PROTOCOLS
from .servers import infer, merged
from .tables.server_evidence import ServerEvidenceRules, default_server_evidence
from .tables.services import TRANSPORTS, PortLookup

IPPROTO_TCP, IPPROTO_UDP = 6, 17
_TRANSPORT_INDEX = {IPPROTO_TCP: TRANSPORTS.index("tcp"), IPPROTO_UDP: TRANSPORTS.index("udp")}
_NON_FLOW_NAMES = {Status.NON_IP: "non-ip", Status.TRUNCATED: "truncated", Status.UNDECODED: "undecoded"}
#: the values of the transport and direction columns, in code order
TRANSPORT_NAMES = ("tcp", "udp", "other", "non-ip", "truncated", "undecoded")
DIRECTION_NAMES = ("inbound", "outbound", "other")
_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) .. bit 7 (CWR), RFC 9293 / RFC 3168
FLAG_TEXT = np.array(
    ["".join(ch for bit, ch in enumerate(_FLAG_LETTERS) if v >> bit & 1) for v in range(256)], dtype=object
)


def _no_evidence() -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in schema.SERVERS})


@dataclass(frozen=True, slots=True)
class Servers:
    """The Exchange servers direction is measured against, and where they came from."""

    networks: tuple[Network, ...]
    addresses: tuple[str, ...]
    inferred: bool
    #: every host that showed Exchange evidence (schema.SERVERS), strongest first
    evidence: pd.DataFrame = field(default_factory=_no_evidence)

    def describe(self) -> str:
        """``'10.0.0.10 10.0.0.20'``: the networks given, or the addresses inferred."""
        return " ".join(self.addresses) if self.inferred else " ".join(str(n) for n in self.networks)


@dataclass
class Shared:
    """What flows classified in separate blocks must share: the inferred Exchange servers and
    the RPC sessions (client, server) that make a UDP datagram a new-mail notification.

    Gathered over every block first (``block_facts``, ``infer_servers``, ``rpc_sessions_among``),
    they let ``classify`` decide each block as if all were one.
    """

    known: pd.MultiIndex | None = None
    #: ``known`` as listed in the outputs (formatted once)
    servers: Servers | None = None
    sessions: pd.MultiIndex | None = None
    #: what binds said of their ports, in every block (``_bound_ports``)
    bound: pd.DataFrame | None = None


class BlockFacts(NamedTuple):
    """What one block brings to ``Shared`` (see ``block_facts``)."""

    shown: pd.DataFrame | None
    candidates: pd.MultiIndex | None
    bound: pd.DataFrame


def block_facts(recs: Records, lookup: PortLookup, evidence: Evidence | None = None, rows: FlowRows | None = None, *,
                infer_servers: bool = True) -> BlockFacts:  # fmt: skip
    """What one block of a run brings to ``Shared``, in one look at its flows.

    * With ``infer_servers``: the Exchange server evidence its flows show (``server_evidence``:
      hi, lo, kind, flows); ``infer_servers`` adds the endpoint mapper's and scores them once
      every block is in. Else None.
    * With ``evidence``: (client hi, lo, server hi, lo) of the TCP flows that may be RPC
      sessions (a bind, an endpoint-mapper match, or TCP 135); which of those have an Exchange
      server on the server side is known only once every block is in (``rpc_sessions_among``).
      Else None.
    * What its binds said of their ports (``_bound_ports``), for the other blocks' connections.

    ``rows``: ``flow_rows(recs, evidence)`` when already joined.
    """
    proto = recs["proto"]
    t, ported = _transport_index(proto)
    verdicts = _Verdicts.of(evidence)
    rows = rows if rows is not None else flow_rows(recs, evidence)
    s = _sides(recs, lookup, t, ported, verdicts, rows)
    shown = server_evidence(recs, s, verdicts, rows) if infer_servers else None
    f, vid, _ = _agreeing(rows, verdicts, s)
    bound_ports = _bound_ports(recs, s, verdicts, f, vid)
    if evidence is None:
        return BlockFacts(shown, None, bound_ports)
    # a flow's evidence is bind or epm exactly when it has a bind row or an endpoint-mapper
    # match (nothing outranks those two), so the candidates need the join, not the decision
    bound = np.zeros(proto.shape[0], dtype=bool)
    if rows is not None:
        bound[rows.flow[np.isin(verdicts.kind[rows.vid], ("bind", "dcerpc", ONE_CALL))]] = True
    if not evidence.epm.empty:
        epm = _epm_rows(evidence.epm, evidence.epm_expiry_ns, proto, s, recs["first_ns"])
        if len(epm):
            bound[epm["flow"].to_numpy(np.int64)[epm["kind"].to_numpy() == "epm"]] = True
    return BlockFacts(shown, _sessions(proto, s, bound), bound_ports)


def server_evidence(recs: Records, s: _Sides, verdicts: _Verdicts, rows: FlowRows | None) -> pd.DataFrame:
    """Per (host, kind): how many of these flows show that host doing what only Exchange does.

    The host is the flow's server as the evidence itself says: the sender of a payload only
    a server sends (a greeting, an EHLO reply), the receiver of one only a client sends (a
    bind, a request), else the side orientation named the server."""
    if rows is None or not rows.flow.size:
        return merged([])
    kind = verdicts.proof[rows.vid]
    has = kind != ""
    if not has.any():
        return merged([])
    f, from_a, sis = rows.flow[has], rows.from_a[has], verdicts.server_is_sender[rows.vid[has]]
    a_is_server = np.where(sis == 1, from_a, np.where(sis == 0, ~from_a, ~s.client_is_a[f]))
    shown = pd.DataFrame({
        "hi": np.where(a_is_server, recs["a_hi"][f], recs["b_hi"][f]), "lo": np.where(a_is_server, recs["a_lo"][f], recs["b_lo"][f]),
        "kind": kind[has], "flow": f,
    }).drop_duplicates()  # fmt: skip
    return shown.groupby(["hi", "lo", "kind"], as_index=False, sort=False).size().rename(columns={"size": "flows"})


def epm_evidence(evidence: Evidence | None) -> pd.DataFrame:
    """Hosts whose endpoint mapper handed out a port for an Exchange interface (one flow per answer learned)."""
    if evidence is None or evidence.epm.empty:
        return merged([])
    ex = evidence.epm[evidence.epm["exchange"].to_numpy(bool)]
    counts = ex.groupby(["server_hi", "server_lo"], as_index=False, sort=False).size()
    return pd.DataFrame({"hi": counts["server_hi"].to_numpy(np.uint64), "lo": counts["server_lo"].to_numpy(np.uint64),
                         "kind": EPM_ANSWER, "flows": counts["size"].to_numpy(np.int64)})  # fmt: skip


def infer_servers(shown: pd.DataFrame, rules: ServerEvidenceRules) -> tuple[pd.MultiIndex, Servers]:
    """The Exchange servers the evidence of a run names: (hi, lo) of each, and as ``Servers``
    with every host that showed any evidence (``servers.infer``)."""
    hosts = infer(shown, rules)
    ex = hosts[hosts["exchange"].to_numpy(bool)]
    hi, lo = ex["hi"].to_numpy(np.uint64), ex["lo"].to_numpy(np.uint64)
    # IPv4 (stored ::ffff:a.b.c.d, high half 0) first, then IPv6, each in numeric order
    v6 = (hi != 0) | ((lo >> np.uint64(32)) != np.uint64(0xFFFF))
    order = np.lexsort((lo, hi, v6))
    table = pd.DataFrame({
        "server": format_addresses(hosts["hi"].to_numpy(np.uint64), hosts["lo"].to_numpy(np.uint64)),
        "kinds": hosts["kinds"].to_numpy(object), "flows": hosts["flows"].to_numpy(np.int64),
        "score": hosts["score"].to_numpy(np.int64), "exchange": hosts["exchange"].to_numpy(bool),
    })  # fmt: skip
    addresses = tuple(dict.fromkeys(format_addresses(hi[order], lo[order])))
    return pair_index(hi, lo), Servers(networks=(), addresses=addresses, inferred=True, evidence=table)


def rpc_sessions_among(pairs: pd.MultiIndex, servers: Sequence[Network], known: pd.MultiIndex | None) -> pd.MultiIndex:
    """The RPC sessions among candidate (client, server) pairs (``block_facts``): those whose
    server side is an Exchange server and whose client side is not, as ``_oriented`` names
    the sides (``servers`` given, else ``known``)."""
    c_hi, c_lo, s_hi, s_lo = (np.asarray(pairs.get_level_values(i), dtype=np.uint64) for i in range(4))
    if servers:
        client_ex, server_ex = in_networks(c_hi, c_lo, servers), in_networks(s_hi, s_lo, servers)
    else:
        assert known is not None
        client_ex, server_ex = rows_in([c_hi, c_lo], known), rows_in([s_hi, s_lo], known)
    return pairs[server_ex & ~client_ex]


def _client_is_a(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_], verdicts: _Verdicts, rows: FlowRows | None
) -> npt.NDArray[np.bool_]:
    """Orientation by SYN, rule port and port number, then the registrations' say."""
    client_is_a = _orient(recs, lookup, t, ported)
    if rows is not None:
        # a matched new-mail notification: its sender (the store) is the client
        turn = verdicts.client_is_sender[rows.vid] == 1
        client_is_a[rows.flow[turn]] = rows.from_a[turn]
    return client_is_a


@dataclass(frozen=True, slots=True)
class _Sides:
    """Flows seen from client and server: which endpoint is which."""

    client_is_a: npt.NDArray[np.bool_]
    c_hi: npt.NDArray[np.uint64]
    c_lo: npt.NDArray[np.uint64]
    c_port: npt.NDArray[np.int64]
    s_hi: npt.NDArray[np.uint64]
    s_lo: npt.NDArray[np.uint64]
    s_port: npt.NDArray[np.int64]
    packets_c2s: npt.NDArray[np.int64]
    packets_s2c: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _Oriented(_Sides):
    """The sides, and which of them is an Exchange server."""

    client_ex: npt.NDArray[np.bool_]
    server_ex: npt.NDArray[np.bool_]


def _sides(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_], verdicts: _Verdicts, rows: FlowRows | None
) -> _Sides:
    """Orient every flow (see ``_client_is_a``) and name its endpoints client and server."""
    client_is_a = _client_is_a(recs, lookup, t, ported, verdicts, rows)
    pick = lambda a, b: np.where(client_is_a, a, b)
    return _Sides(
        client_is_a,
        pick(recs["a_hi"], recs["b_hi"]), pick(recs["a_lo"], recs["b_lo"]), pick(recs["port_a"], recs["port_b"]),
        pick(recs["b_hi"], recs["a_hi"]), pick(recs["b_lo"], recs["a_lo"]), pick(recs["port_b"], recs["port_a"]),
        pick(recs["packets_ab"], recs["packets_ba"]), pick(recs["packets_ba"], recs["packets_ab"]),
    )  # fmt: skip


def _oriented(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_], verdicts: _Verdicts,
    rows: FlowRows | None, servers: Sequence[Network], known: pd.MultiIndex | None, evidence: Evidence | None,
    rules: ServerEvidenceRules | None,
) -> tuple[_Oriented, Servers | None]:  # fmt: skip
    """The sides of every flow and its Exchange side: the given ``servers``, else ``known``
    (inferred over a whole run), else the servers these flows show (then also returned)."""
    s = _sides(recs, lookup, t, ported, verdicts, rows)
    found = None
    if servers:
        client_ex, server_ex = in_networks(s.c_hi, s.c_lo, servers), in_networks(s.s_hi, s.s_lo, servers)
    else:
        if known is None:
            assert rules is not None
            known, found = infer_servers(merged([server_evidence(recs, s, verdicts, rows), epm_evidence(evidence)]), rules)
        client_ex, server_ex = rows_in([s.c_hi, s.c_lo], known), rows_in([s.s_hi, s.s_lo], known)
    is_flow = recs["proto"] < NON_FLOW_BASE
    client_ex &= is_flow
    server_ex &= is_flow & ~client_ex
    return _Oriented(*(getattr(s, f.name) for f in fields(_Sides)), client_ex, server_ex), found


def _transport_index(proto: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per flow, the port table's transport row (0 where none) and whether it has ports."""
    tidx = np.full(proto.shape[0], -1, dtype=np.int64)
    for number, index in _TRANSPORT_INDEX.items():
        tidx[proto == number] = index
    ported = tidx >= 0
    return np.where(ported, tidx, 0), ported


def classify(
    recs: Records,
    lookup: PortLookup,
    servers: Sequence[Network] = (),
    evidence: Evidence | None = None,
    shared: Shared | None = None,
    rows: FlowRows | None = None,
    server_rules: ServerEvidenceRules | None = None,
) -> tuple[pd.DataFrame, Servers]:
    """Orient, direct and tag every flow; returns the flows DataFrame (schema.FLOWS order).

    A flow is Exchange traffic when one end is an Exchange server (``servers``, else those
    its evidence names, weighed by ``server_rules``) or its own payload is Exchange's alone;
    any other flow's service is ``other``, whatever its port. ``evidence`` (from the payload
    stage) decides services before the port table does, in the order of
    ``evidence.EVIDENCE_VALUES``; without it every flow is decided by port. ``shared`` carries
    what separately classified blocks of one run have in common; ``rows`` is
    ``flow_rows(recs, evidence)`` when already joined.
    """
    proto = recs["proto"]
    n = proto.shape[0]
    t, ported = _transport_index(proto)

    verdicts = _Verdicts.of(evidence)
    rows = rows if rows is not None else flow_rows(recs, evidence)
    known = shared.known if shared is not None else None
    rules = server_rules or default_server_evidence()
    o, found = _oriented(recs, lookup, t, ported, verdicts, rows, servers, known, evidence, rules)
    pick = lambda a, b: np.where(o.client_is_a, a, b)
    bytes_c2s, bytes_s2c = pick(recs["bytes_ab"], recs["bytes_ba"]), pick(recs["bytes_ba"], recs["bytes_ab"])
    flags_c2s, flags_s2c = pick(recs["flags_a"], recs["flags_b"]), pick(recs["flags_b"], recs["flags_a"])
    c_hi, c_lo, c_port, s_hi, s_lo, s_port = o.c_hi, o.c_lo, o.c_port, o.s_hi, o.s_lo, o.s_port
    client_ex, server_ex = o.client_ex, o.server_ex

    inbound_code = np.where(ported, lookup.table[t, 0, s_port], 0)
    outbound_code = np.where(ported, lookup.table[t, 1, s_port], 0)
    if servers:
        chosen = Servers(networks=tuple(servers), addresses=tuple(str(n) for n in servers), inferred=False)
    elif shared is not None and shared.servers is not None:
        chosen = shared.servers
    else:
        assert found is not None
        chosen = found
    is_flow = proto < NON_FLOW_BASE
    # the side that matches the direction first, the other side's table as a fallback; a port
    # names a service only on a flow with an Exchange server at one end
    code = np.where(client_ex, np.where(outbound_code > 0, outbound_code, inbound_code),
                    np.where(server_ex, np.where(inbound_code > 0, inbound_code, outbound_code), 0))  # fmt: skip
    decided = _decide(rows, verdicts, evidence, code, lookup, recs, proto, o, rules.conclusive, shared)

    transport_code = np.full(n, TRANSPORT_NAMES.index("other"), dtype=np.int8)
    transport_code[proto == IPPROTO_TCP] = TRANSPORT_NAMES.index("tcp")
    transport_code[proto == IPPROTO_UDP] = TRANSPORT_NAMES.index("udp")
    for status, name in _NON_FLOW_NAMES.items():
        transport_code[proto == NON_FLOW_BASE + status] = TRANSPORT_NAMES.index(name)
    direction_code = np.where(client_ex, 1, np.where(server_ex, 0, 2)).astype(np.int8)
    fragment = (proto >= FRAGMENT_PROTO_BASE) & is_flow
    ip_proto = pd.array(np.where(fragment, proto - FRAGMENT_PROTO_BASE, proto), dtype="Int64")
    ip_proto[~is_flow] = pd.NA
    c_addr, s_addr = format_addresses(c_hi, c_lo, ~is_flow), format_addresses(s_hi, s_lo, ~is_flow)

    # labels with few distinct values are categoricals: an int8 code per flow, not a string
    flows = pd.DataFrame(
        {
            "first_ts": recs["first_ns"] / 1e9,
            "last_ts": recs["last_ns"] / 1e9,
            "transport": pd.Categorical.from_codes(transport_code, TRANSPORT_NAMES),
            "ip_proto": ip_proto,
            "fragment": fragment,
            "client_addr": c_addr,
            "client_port": c_port,
            "server_addr": s_addr,
            "server_port": s_port,
            **decided.columns(),
            "direction": pd.Categorical.from_codes(direction_code, DIRECTION_NAMES),
            "packets_c2s": o.packets_c2s,
            "bytes_c2s": bytes_c2s,
            "packets_s2c": o.packets_s2c,
            "bytes_s2c": bytes_s2c,
            "tcp_flags_c2s": pd.Categorical.from_codes(flags_c2s & 0xFF, FLAG_TEXT),
            "tcp_flags_s2c": pd.Categorical.from_codes(flags_s2c & 0xFF, FLAG_TEXT),
        }
    )
    return flows, chosen


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
    server_name_names: npt.NDArray[np.object_]

    def columns(self) -> dict[str, pd.Categorical]:
        """The flows' server name, protocol, service, evidence, detail and interface columns."""
        return {
            "server_name": _categorical(self.server_name, self.server_name_names),
            "protocol": _categorical(self.protocol, self.protocol_names),
            "service": _categorical(self.service, self.service_names),
            "evidence": _categorical(self.evidence, _EVIDENCE_NAMES),
            "detail": _categorical(self.detail, self.detail_names),
            "rpc_interface": _categorical(self.rpc_interface, self.rpc_interface_names),
            "rpc_interface_name": _categorical(self.rpc_interface, self.rpc_interface_name_names),
        }


def _categorical(codes: npt.NDArray[np.int64], names: npt.NDArray[np.object_]) -> pd.Categorical:
    """``names[codes]`` as a categorical whose categories are the names used, sorted (as
    ``pd.Categorical(values)`` would make them), without a string per flow on the way."""
    used = np.flatnonzero(np.bincount(codes, minlength=names.size))
    categories, inverse = np.unique(names[used].astype(str), return_inverse=True)
    remap = np.zeros(names.size, dtype=np.int64)
    remap[used] = inverse.reshape(-1)
    return pd.Categorical.from_codes(remap[codes], categories=categories)


#: services a text protocol's greeting names whatever the port
_TEXT_SERVICES = np.array(sorted(SIGNATURE_SERVICES.values()), dtype=object)
#: the evidence column's names, in code order
_EVIDENCE_NAMES = np.array(EVIDENCE_VALUES, dtype=object)
_EV = {name: code for code, name in enumerate(EVIDENCE_VALUES)}


#: services reached over DCE/RPC: a TCP flow with such a bind or endpoint-mapper evidence (or to
#: TCP 135) is an "RPC session" for the new-mail notification heuristic
RPC_SESSION_PORT = 135
_HIGH_PORT = 1024
_NOTIFICATION_SERVICE = "information-store"
_NOTIFICATION_DETAIL = "new-mail-notification"


@dataclass(frozen=True, slots=True)
class _Verdicts:
    """The evidence verdict table as arrays indexed by verdict id (decisions stay integer)."""

    kind: npt.NDArray[np.object_]
    service: npt.NDArray[np.object_]
    detail: npt.NDArray[np.object_]
    iface: npt.NDArray[np.object_]
    name: npt.NDArray[np.object_]
    server_is_sender: npt.NDArray[np.int8]
    client_is_sender: npt.NDArray[np.int8]
    protocol: npt.NDArray[np.object_]
    proof: npt.NDArray[np.object_]

    @staticmethod
    def of(evidence: Evidence | None) -> _Verdicts:
        table = evidence.verdicts if evidence is not None else pd.DataFrame(columns=["kind"])
        col = lambda c, t=object: table[c].to_numpy(dtype=t) if c in table else np.zeros(0, t)
        return _Verdicts(col("kind"), col("service"), col("detail"), col("rpc_interface"), col("rpc_interface_name"),
                         col("server_is_sender", np.int8), col("client_is_sender", np.int8), col("protocol"), col("proof"))  # fmt: skip

    def as_kind(self, vids: npt.NDArray[np.int64], kind: str) -> tuple[_Verdicts, npt.NDArray[np.int64]]:
        """Copies of verdicts ``vids`` with another kind: (table, the copies' ids)."""
        uniq, inverse = np.unique(vids, return_inverse=True)
        grown = _Verdicts(*(np.concatenate([a, a[uniq]]) for a in (self.kind, self.service, self.detail, self.iface, self.name,
                                                                  self.server_is_sender, self.client_is_sender, self.protocol, self.proof)))  # fmt: skip
        grown.kind[len(self.kind):] = kind
        return grown, len(self.kind) + inverse.reshape(-1)

    def extend(self, extra: pd.DataFrame) -> tuple[_Verdicts, npt.NDArray[np.int64]]:
        """Add the distinct (kind, service, interface, name, detail) of ``extra`` (DCE/RPC
        endpoint-mapper matches): (table, their ids)."""
        keys = pd.MultiIndex.from_arrays([extra[c].to_numpy(dtype=object) for c in ("kind", "service", "rpc_interface", "rpc_interface_name", "detail")])
        codes, uniq = keys.factorize()
        u = [np.asarray(uniq.get_level_values(i), dtype=object) for i in range(5)]
        blank = np.full(len(uniq), "", dtype=object)
        minus = np.full(len(uniq), -1, dtype=np.int8)
        table = _Verdicts(np.concatenate([self.kind, u[0]]), np.concatenate([self.service, u[1]]), np.concatenate([self.detail, u[4]]),
                          np.concatenate([self.iface, u[2]]), np.concatenate([self.name, u[3]]),
                          np.concatenate([self.server_is_sender, minus]), np.concatenate([self.client_is_sender, minus]),
                          np.concatenate([self.protocol, np.full(len(uniq), DCERPC, dtype=object)]), np.concatenate([self.proof, blank]))  # fmt: skip
        return table, codes.astype(np.int64) + len(self.kind)


def flow_rows(recs: Records, evidence: Evidence | None) -> FlowRows | None:
    """Evidence rows joined to their flow (``FlowIndex``: same key, time inside the flow's
    span), for flows whose rows were not taken with them (live capture, callers of classify)."""
    if evidence is None or evidence.rows.empty or not len(recs):
        return None
    rows = evidence.rows
    flow = FlowIndex(recs).flows(rows["hash"].to_numpy(np.uint64), rows["check"].to_numpy(np.uint64), rows["ts_ns"].to_numpy(np.int64))
    ok = flow >= 0
    return FlowRows(flow[ok], rows["vid"].to_numpy(np.int64)[ok], rows["from_a"].to_numpy(bool)[ok])


#: no row: larger than any row's strength
_NO_ROW = np.iinfo(np.int64).max


def _strongest(n: int, flow: npt.NDArray[np.int64], strength: npt.NDArray[np.int64],
               mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:  # fmt: skip
    """Per flow (of ``n``), its strongest row among those ``mask`` keeps: (flows, rows).

    ``strength`` orders rows (lower is stronger) and ends in the row number, so that it is
    unique; one unbuffered minimum per flow finds them, with no sort of the rows."""
    best = np.full(n, _NO_ROW, dtype=np.int64)
    np.minimum.at(best, flow[mask], strength[mask])
    w = np.flatnonzero(best != _NO_ROW)
    return w, best[w] & 0xFFFF_FFFF


def _decide(
    rows: FlowRows | None,
    verdicts: _Verdicts,
    evidence: Evidence | None,
    port_code: npt.NDArray[np.int64],
    lookup: PortLookup,
    recs: Records,
    proto: npt.NDArray[np.int64],
    o: _Oriented,
    conclusive: frozenset[str],
    shared: Shared | None = None,
) -> _Decided:
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
    n = port_code.shape[0]
    has_port = port_code > 0
    service_ids = lookup.ids
    exchange_end = o.client_ex | o.server_ex
    f, vid, from_a = _agreeing(rows, verdicts, o)
    verdicts, vid = _calls_both_ways(f, vid, from_a, verdicts, n)
    flows, vids = [f], [vid]
    if evidence is not None:
        bound = shared.bound if shared is not None and shared.bound is not None else _bound_ports(recs, o, verdicts, f, vid)
        # what a bind elsewhere said matters only to connections that did not bind themselves
        unbound = np.ones(n, dtype=bool)
        unbound[f[verdicts.kind[vid] == "bind"]] = False
        epm = pd.concat([_epm_rows(evidence.epm, evidence.epm_expiry_ns, proto, o, recs["first_ns"]),
                         _epm_rows(bound, evidence.epm_expiry_ns, proto, o, recs["first_ns"], among=unbound)], ignore_index=True)
        if len(epm):
            verdicts, epm_vids = verdicts.extend(epm)
            flows.append(epm["flow"].to_numpy(np.int64))
            vids.append(epm_vids)
    # code tables: rule ids then one service per verdict; "" then one detail / interface per verdict
    ids, v = len(service_ids), verdicts.kind.size
    blank = np.array([""], dtype=object)
    service_names = np.concatenate([np.array(service_ids, dtype=object), verdicts.service, [_NOTIFICATION_SERVICE]])
    detail_names = np.concatenate([blank, verdicts.detail, [_NOTIFICATION_DETAIL]])
    service = port_code.astype(np.int64)
    ev = np.where(has_port, _EV["port"], _EV["none"])
    detail, iface, protocol = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    server_name = np.zeros(n, dtype=np.int64)
    # the service a blank DCE/RPC verdict takes: its port's, else an unnamed interface's (Exchange ends only)
    rpc_code = np.where(has_port, port_code, np.where(exchange_end, lookup.unnamed_rpc, 0))
    if flows:
        f, vid = np.concatenate(flows), np.concatenate(vids)
        kinds = verdicts.kind
        kind_code = np.array([_EV.get(k, -1) for k in kinds], dtype=np.int64)
        rank_of = np.array([RANK.get(k, len(RANK)) for k in kinds], dtype=np.int64)
        # among equals, a signature that proves an Exchange server beats one naming the protocol
        proof_of = np.array([d != "exchange-smtp" for d in verdicts.detail], dtype=np.int64)
        mismatch_of = kinds == MISMATCH
        decisive_of = np.isin(kinds, DECISIVE)
        # a signature that only confirms a port gives the port's service (none without one)
        blank_of = verdicts.service == ""
        dcerpc_of = kinds == "dcerpc"
        # rank, then proof, then the order rows came in (rows number below 2**32 in a block)
        strength = (((rank_of[vid] << 1) | proof_of[vid]) << 32) | np.arange(f.size, dtype=np.int64)
        # the interface: the strongest row naming one
        w, r = _strongest(n, f, strength, verdicts.iface[vid] != "")
        iface[w] = vid[r] + 1
        no_service = blank_of[vid] & ~mismatch_of[vid]
        w, r = _strongest(n, f, strength, verdicts.protocol[vid] != "")
        protocol[w] = vid[r] + 1
        # the server name: the detail of the first server-name row (the client's first payload)
        w, r = _strongest(n, f, strength, (kinds == SERVER_NAME)[vid])
        server_name[w] = vid[r] + 1
        proven = np.isin(verdicts.proof[vid], list(conclusive))
        w, r = _strongest(n, f, strength, decisive_of[vid] & (~no_service | has_port[f] | (dcerpc_of[vid] & (rpc_code[f] > 0)))
                          & (exchange_end[f] | proven))  # fmt: skip
        # a greeting's service yields to the rules' service of its port unless the port's
        # protocol is contradicted: it confirms the protocol family (a site's SMTP relay port)
        mismatched = np.zeros(n, dtype=bool)
        mismatched[f[mismatch_of[vid]]] = True
        confirms = (kinds[vid[r]] == "signature") & np.isin(verdicts.service[vid[r]], _TEXT_SERVICES) & has_port[w] & ~mismatched[w]
        service[w] = np.where(blank_of[vid[r]] | confirms, np.where(dcerpc_of[vid[r]], rpc_code[w], port_code[w]), ids + vid[r])
        ev[w] = kind_code[vid[r]]
        detail[w] = vid[r] + 1
        w, r = _strongest(n, f, strength, mismatch_of[vid])
        keep = has_port[w] & (ev[w] == _EV["port"])
        ev[w[keep]] = _EV[MISMATCH]
        detail[w[keep]] = vid[r[keep]] + 1
    if evidence is not None:
        timed = np.zeros(n, dtype=bool)
        if flows:
            timed[f[verdicts.kind[vid] == TIMED_NOTIFICATION]] = True
        hit = _notification_heuristic(ev, proto, o, shared.sessions if shared is not None else None, timed)
        service[hit], ev[hit], detail[hit] = ids + v, _EV["heuristic"], v + 1
    return _Decided(service, service_names, ev, detail, detail_names, iface,
                    np.concatenate([blank, verdicts.iface]), np.concatenate([blank, verdicts.name]),
                    protocol, np.concatenate([blank, verdicts.protocol]), server_name, np.concatenate([blank, verdicts.detail]))  # fmt: skip


def _agreeing(rows: FlowRows | None, verdicts: _Verdicts, s: _Sides) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The rows (flow, verdict, sent by A) whose sender is the side the verdict expects."""
    if rows is None or not rows.flow.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    sis = verdicts.server_is_sender[rows.vid]
    sender_is_server = rows.from_a != s.client_is_a[rows.flow]
    ok = (sis == -1) | ((sis == 1) & sender_is_server) | ((sis == 0) & ~sender_is_server)
    return rows.flow[ok], rows.vid[ok], rows.from_a[ok]


def _calls_both_ways(f: npt.NDArray[np.int64], vid: npt.NDArray[np.int64], from_a: npt.NDArray[np.bool_], verdicts: _Verdicts,
                     n: int) -> tuple[_Verdicts, npt.NDArray[np.int64]]:  # fmt: skip
    """A lone call PDU first in each direction of one flow is a DCE/RPC connection seen
    mid-stream: those rows become ``dcerpc`` verdicts (the others stay as they are)."""
    one = verdicts.kind[vid] == ONE_CALL
    if not one.any():
        return verdicts, vid
    sides = np.zeros((n, 2), dtype=bool)
    sides[f[one], from_a[one].astype(np.int64)] = True
    both = one & sides[f].all(axis=1)
    if not both.any():
        return verdicts, vid
    verdicts, promoted = verdicts.as_kind(vid[both], "dcerpc")
    vid = vid.copy()
    vid[both] = promoted
    return verdicts, vid


#: the detail of an ``epm`` decision learned from a bind on another connection to the port
BOUND_ELSEWHERE = "bound-elsewhere"
_EPM_ROWS = ["flow", "kind", "service", "detail", "rpc_interface", "rpc_interface_name"]


def _bound_ports(recs: Records, o: _Sides, verdicts: _Verdicts, f: npt.NDArray[np.int64], vid: npt.NDArray[np.int64]) -> pd.DataFrame:
    """What binds said of their port, as endpoint-mapper answers say it: (server, tcp, port) ->
    the interface, over the bound flow's span, for dynamic ports (a bind inside RPC over HTTP
    names the service behind the proxy, not the proxy's port)."""
    bound = (verdicts.kind[vid] == "bind") & (o.s_port[f] >= _HIGH_PORT) & ~np.isin(o.s_port[f], list(EXPECTED_PROTOCOLS))
    f, vid = f[bound], vid[bound]
    return pd.DataFrame({
        "server_hi": o.s_hi[f], "server_lo": o.s_lo[f], "transport": "tcp", "port": o.s_port[f].astype(np.int64),
        "first_ns": recs["first_ns"][f], "last_ns": recs["last_ns"][f], "service": verdicts.service[vid],
        "rpc_interface": verdicts.iface[vid], "rpc_interface_name": verdicts.name[vid], "exchange": False,
        "detail": BOUND_ELSEWHERE,
    })  # fmt: skip


def _epm_rows(learned: pd.DataFrame, expiry_ns: int, proto: npt.NDArray[np.int64], o: _Sides, first_ns: npt.NDArray[np.int64],
              among: npt.NDArray[np.bool_] | None = None) -> pd.DataFrame:  # fmt: skip
    """Flows (``among`` them) to a port an endpoint-mapper reply (or a bind elsewhere,
    ``_bound_ports``) named, within the expiry of that answer, either side."""
    s_hi, s_lo, s_port = o.s_hi, o.s_lo, o.s_port
    if learned.empty:
        return pd.DataFrame(columns=_EPM_ROWS)
    # only flows to a port some answer handed out can match: the join runs on those alone
    candidates = ((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP)) & (among if among is not None else True)
    ported = np.flatnonzero(candidates & np.isin(s_port, learned["port"].to_numpy(np.int64)))
    if not ported.size:
        return pd.DataFrame(columns=_EPM_ROWS)
    flows = pd.DataFrame({
        "flow": ported, "server_hi": s_hi[ported], "server_lo": s_lo[ported], "port": s_port[ported].astype(np.int64),
        "transport": np.where(proto[ported] == IPPROTO_TCP, "tcp", "udp"), "flow_ns": first_ns[ported],
    })  # fmt: skip
    m = flows.merge(learned, on=["server_hi", "server_lo", "port", "transport"], how="inner")
    if m.empty:
        return pd.DataFrame(columns=_EPM_ROWS)
    return _nearest_epm(m, expiry_ns)


def _nearest_epm(m: pd.DataFrame, expiry_ns: int) -> pd.DataFrame:
    """Per flow, the learned mapping nearest in time, if within the expiry either side."""
    at, first, last = m["flow_ns"].to_numpy(), m["first_ns"].to_numpy(), m["last_ns"].to_numpy()
    gap = np.maximum(first - at, 0) + np.maximum(at - last, 0)
    m = m.assign(gap=gap)[gap <= expiry_ns].sort_values(["flow", "gap"], kind="stable").drop_duplicates("flow")
    return pd.DataFrame({
        "flow": m["flow"].to_numpy(), "kind": np.where(m["service"].to_numpy() != "", "epm", INTERFACE_ONLY).astype(object),
        "service": m["service"].to_numpy(dtype=object),
        "detail": m["detail"].fillna("").to_numpy(dtype=object) if "detail" in m else np.full(len(m), "", dtype=object),
        "rpc_interface": m["rpc_interface"].to_numpy(dtype=object), "rpc_interface_name": m["rpc_interface_name"].to_numpy(dtype=object),
    })  # fmt: skip


def _notification_heuristic(
    ev: npt.NDArray[np.int64], proto: npt.NDArray[np.int64], o: _Oriented, sessions: pd.MultiIndex | None = None,
    timed: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """UDP from an Exchange server's high port to a high port of a host holding an RPC session
    with that server (see ``_sessions``; ``sessions``: those of every block, else this one's),
    or that the host's DCE/RPC request to it followed at once (``timed``, see
    ``notification_timing``): a new-mail notification (docs/exchange-wire-facts.md §6), when
    nothing better decided the flow. Returns those flows."""
    if sessions is None:
        sessions = _sessions(proto, o, (ev == _EV["bind"]) | (ev == _EV["epm"]) | (ev == _EV["dcerpc"]), o.server_ex)
    c_hi, c_lo, c_port = o.c_hi, o.c_lo, o.c_port
    s_hi, s_lo, s_port = o.s_hi, o.s_lo, o.s_port
    client_ex, server_ex = o.client_ex, o.server_ex
    cand = np.flatnonzero((proto == IPPROTO_UDP) & (ev == _EV["none"]) & (c_port > _HIGH_PORT) & (s_port > _HIGH_PORT)
                          & np.where(client_ex, o.packets_c2s > 0, server_ex & (o.packets_s2c > 0)))  # fmt: skip
    in_time = timed[cand] if timed is not None else np.zeros(cand.size, dtype=bool)
    if not cand.size or not len(sessions):
        return cand[in_time]
    ex_c = client_ex[cand]
    pairs = [np.where(ex_c, s_hi[cand], c_hi[cand]), np.where(ex_c, s_lo[cand], c_lo[cand]),
             np.where(ex_c, c_hi[cand], s_hi[cand]), np.where(ex_c, c_lo[cand], s_lo[cand])]  # fmt: skip
    return cand[rows_in(pairs, sessions) | in_time]


def _sessions(proto: npt.NDArray[np.int64], s: _Sides, bound_or_mapped: npt.NDArray[np.bool_],
              server_ex: npt.NDArray[np.bool_] | None = None) -> pd.MultiIndex:  # fmt: skip
    """(client, server) of the RPC sessions: TCP flows that a bind or an endpoint-mapper reply
    decided (``bound_or_mapped``), or to TCP 135, whose server is an Exchange server
    (``server_ex``). Without ``server_ex``, the candidates: which have an Exchange server is
    settled once every block is in (``rpc_sessions_among``)."""
    rpc = (proto == IPPROTO_TCP) & (bound_or_mapped | (s.s_port == RPC_SESSION_PORT))
    if server_ex is not None:
        rpc &= server_ex
    return pd.MultiIndex.from_arrays([s.c_hi[rpc], s.c_lo[rpc], s.s_hi[rpc], s.s_lo[rpc]]).unique()


def _orient(recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """True where endpoint A is the client: SYN sender, else not on a rule port, else higher port."""
    syn_a, syn_b = recs["syn_a_ns"], recs["syn_b_ns"]
    pa, pb = recs["port_a"], recs["port_b"]
    rule_a = ported & lookup.rule_port[t, pa]
    rule_b = ported & lookup.rule_port[t, pb]
    by_ports = np.where(pa != pb, pa > pb, recs["first_from_a"])
    by_rules = np.where(rule_a != rule_b, rule_b, by_ports)
    has_syn = (syn_a != NO_SYN) | (syn_b != NO_SYN)
    return np.where(has_syn, syn_a <= syn_b, by_rules)


def empty_flows() -> pd.DataFrame:
    """A flows DataFrame with no rows and the schema's columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in schema.FLOWS})
