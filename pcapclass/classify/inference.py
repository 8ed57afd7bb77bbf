"""The Exchange servers: given (``--server``), or inferred from the evidence of a run.

A host is an Exchange server when its flows show it doing what only Exchange does (the proof
of a verdict, attributed to the flow's server as the evidence itself says) or its endpoint
mapper handed out a port for an Exchange interface; ``pcapclass.servers.infer`` weighs the
kinds. ``oriented`` names each flow's Exchange side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..addresses import Network, RowSet, format_addresses, in_networks
from ..evidence import Evidence
from ..flows import NON_FLOW_BASE, FlowRows, Records
from ..protocols.proofs import EPM_ANSWER
from ..schema import SERVERS
from ..servers import infer, merged
from ..tables.server_evidence import ServerEvidenceRules
from ..tables.services import PortLookup
from .orientation import Oriented, Sides, sides
from .verdicts import VerdictArrays


def _no_evidence() -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in SERVERS})


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


def server_evidence(recs: Records, s: Sides, verdicts: VerdictArrays, rows: FlowRows | None) -> pd.DataFrame:
    """Per (host, kind): how many of these flows show that host doing what only Exchange does.

    The host is the flow's server as the evidence itself says: the sender of a payload only
    a server sends (a greeting, an EHLO reply), the receiver of one only a client sends (a
    bind, a request), else the side orientation named the server."""
    if rows is None or not rows.flow.size:
        return merged([])
    has = np.flatnonzero((verdicts.proof != "")[rows.vid])  # a minority of rows: taken by index
    if not has.size:
        return merged([])
    kinds, kind_of = np.unique(verdicts.proof, return_inverse=True)
    vid = rows.vid[has]
    f, from_a, sis, kind = rows.flow[has], rows.from_a[has], verdicts.server_is_sender[vid], kind_of.reshape(-1)[vid]
    a_is_server = np.where(sis == 1, from_a, np.where(sis == 0, ~from_a, ~s.client_is_a[f]))
    hi, lo = np.where(a_is_server, recs["a_hi"][f], recs["b_hi"][f]), np.where(a_is_server, recs["a_lo"][f], recs["b_lo"][f])
    # per (host, kind), its distinct flows; hosts and kinds in the order the rows first show
    # them, which is the order pd.factorize numbers them in: a hash per key, no sort of the rows
    lo_code, hi_code = pd.factorize(lo)[0], pd.factorize(hi)
    host = pd.factorize(lo_code * len(hi_code[1]) + hi_code[0])[0]
    group = pd.factorize(host * kinds.size + kind)[0]
    first_flow = _first_come(pd.factorize(group * recs["proto"].shape[0] + f)[0])
    at = np.flatnonzero(_first_come(group))
    flows = np.bincount(group[first_flow], minlength=at.size)
    return pd.DataFrame({"hi": hi[at], "lo": lo[at], "kind": kinds[kind[at]], "flows": flows.astype(np.int64)})


def _first_come(codes: npt.NDArray[np.intp]) -> npt.NDArray[np.bool_]:
    """Where each code first comes, for codes numbered in the order they first come."""
    top = np.maximum.accumulate(codes)
    first = np.ones(codes.size, dtype=bool)
    first[1:] = top[1:] > top[:-1]
    return first


def epm_evidence(evidence: Evidence | None) -> pd.DataFrame:
    """Hosts whose endpoint mapper handed out a port for an Exchange interface (one flow per answer learned)."""
    if evidence is None or evidence.epm.empty:
        return merged([])
    ex = evidence.epm[evidence.epm["exchange"].to_numpy(bool)]
    counts = ex.groupby(["server_hi", "server_lo"], as_index=False, sort=False).size()
    return pd.DataFrame({"hi": counts["server_hi"].to_numpy(np.uint64), "lo": counts["server_lo"].to_numpy(np.uint64),
                         "kind": EPM_ANSWER, "flows": counts["size"].to_numpy(np.int64)})  # fmt: skip


def infer_servers(shown: pd.DataFrame, rules: ServerEvidenceRules) -> tuple[RowSet, Servers]:
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
    return RowSet([hi, lo]), Servers(networks=(), addresses=addresses, inferred=True, evidence=table)


def rpc_sessions_among(pairs: Sequence[npt.NDArray[np.uint64]], servers: Sequence[Network],
                       known: RowSet | None) -> list[npt.NDArray[np.uint64]]:  # fmt: skip
    """The RPC sessions among candidate (client, server) pairs (``block_facts``): those whose
    server side is an Exchange server and whose client side is not, as ``oriented`` names
    the sides (``servers`` given, else ``known``)."""
    c_hi, c_lo, s_hi, s_lo = pairs
    if servers:
        client_ex, server_ex = in_networks(c_hi, c_lo, servers), in_networks(s_hi, s_lo, servers)
    else:
        assert known is not None
        client_ex, server_ex = known.contains([c_hi, c_lo]), known.contains([s_hi, s_lo])
    return [level[server_ex & ~client_ex] for level in pairs]


def oriented(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_], verdicts: VerdictArrays,
    rows: FlowRows | None, servers: Sequence[Network], known: RowSet | None, evidence: Evidence | None,
    rules: ServerEvidenceRules | None,
) -> tuple[Oriented, Servers | None]:  # fmt: skip
    """The sides of every flow and its Exchange side: the given ``servers``, else ``known``
    (inferred over a whole run), else the servers these flows show (then also returned)."""
    s = sides(recs, lookup, t, ported, verdicts.client_is_sender, rows)
    found = None
    if servers:
        client_ex, server_ex = in_networks(s.c_hi, s.c_lo, servers), in_networks(s.s_hi, s.s_lo, servers)
    else:
        if known is None:
            assert rules is not None
            known, found = infer_servers(merged([server_evidence(recs, s, verdicts, rows), epm_evidence(evidence)]), rules)
        client_ex, server_ex = known.contains([s.c_hi, s.c_lo]), known.contains([s.s_hi, s.s_lo])
    is_flow = recs["proto"] < NON_FLOW_BASE
    client_ex &= is_flow
    server_ex &= is_flow & ~client_ex
    return Oriented(**{f.name: getattr(s, f.name) for f in fields(Sides)}, client_ex=client_ex, server_ex=server_ex), found
