"""DCE/RPC ports and sessions: flows to ports an endpoint-mapper reply or a bind elsewhere
named, the RPC sessions of a run, and the new-mail notifications they explain.

An endpoint-mapper answer (or a bind on another connection to the same dynamic port) names
the interface of the flows to that port within its expiry either side; a UDP datagram from an
Exchange server's high port to a host holding an RPC session with it is a new-mail
notification when nothing better decided it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..addresses import RowSet, distinct_rows
from ..flows import Records
from ..protocols.signatures import EXPECTED_PROTOCOLS
from .orientation import IPPROTO_TCP, IPPROTO_UDP, Oriented, Sides
from .verdicts import EV, VerdictArrays

#: services reached over DCE/RPC: a TCP flow with such a bind or endpoint-mapper evidence (or to
#: TCP 135) is an "RPC session" for the new-mail notification heuristic
RPC_SESSION_PORT = 135
HIGH_PORT = 1024


#: the detail of an ``epm`` decision learned from a bind on another connection to the port
BOUND_ELSEWHERE = "bound-elsewhere"


class Answers:
    """What endpoint-mapper replies (or binds elsewhere, ``bound_ports``) said: (server,
    transport, port) -> interface over a span, made ready once for the flows of many blocks to
    be joined to them (``epm_rows``). What each answer names is a verdict of ``named`` (``vid``):
    a block that matches answers adds those few verdicts, not one per match.

    The join runs on a hash of (server, port, transport), sorted at first use (a block's own
    answers are only gathered, ``concat``); each pair it finds is then compared field by field,
    so a collision joins nothing."""

    def __init__(self, hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], port: npt.NDArray[np.int64],
                 udp: npt.NDArray[np.bool_], ip: npt.NDArray[np.bool_], first_ns: npt.NDArray[np.int64],
                 last_ns: npt.NDArray[np.int64], named: VerdictArrays, vid: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """``ip``: a transport flows have (an answer for another never joins)."""
        self.hi, self.lo, self.port, self.udp, self.ip = hi, lo, port, udp, ip
        self.first_ns, self.last_ns, self.named, self.vid = first_ns, last_ns, named, vid

    @cached_property
    def by_endpoint(self) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
        """(which ports some answer handed out, the answers in order of their endpoint hash, those hashes)."""
        handed_out = np.zeros(65536, dtype=bool)
        handed_out[self.port] = True
        key = _endpoint_key(self.hi, self.lo, self.port, self.udp)
        by_key = np.argsort(key, kind="stable")
        return handed_out, by_key, key[by_key]

    @staticmethod
    def of(learned: pd.DataFrame) -> Answers:
        """The endpoint-mapper table (``Evidence.epm``), each distinct interface named once."""
        said = [learned[c].to_numpy(dtype=object) for c in ("service", "rpc_interface", "rpc_interface_name")]
        # each column's codes, then their combinations, numbered in the order they first come
        levels = [pd.factorize(c, use_na_sentinel=False) for c in said]
        vid = np.zeros(len(learned), dtype=np.int64)
        for level_codes, level_names in levels:
            vid = pd.factorize(vid * len(level_names) + level_codes)[0].astype(np.int64)
        first = np.unique(vid, return_index=True)[1]
        service, iface, name = (c[first] for c in said)
        named = VerdictArrays.answered(service, iface, name, np.full(first.size, "", dtype=object))
        transport = learned["transport"].to_numpy(dtype=object)
        udp = transport == "udp"
        return Answers(learned["server_hi"].to_numpy(np.uint64), learned["server_lo"].to_numpy(np.uint64),
                       learned["port"].to_numpy(np.int64), udp, udp | (transport == "tcp"), learned["first_ns"].to_numpy(np.int64),
                       learned["last_ns"].to_numpy(np.int64), named, vid)  # fmt: skip

    @staticmethod
    def concat(parts: Sequence[Answers]) -> Answers:
        """The answers of ``parts``, in their order."""
        def joined(field: str) -> npt.NDArray[Any]:
            return np.concatenate([getattr(p, field) for p in parts])

        named, vids = parts[0].named, [parts[0].vid]
        for p in parts[1:]:
            named, first = named.concat(p.named)
            vids.append(first + p.vid)
        return Answers(joined("hi"), joined("lo"), joined("port"), joined("udp"), joined("ip"), joined("first_ns"), joined("last_ns"),
                       named, np.concatenate(vids))  # fmt: skip

    def __len__(self) -> int:
        return int(self.port.size)


def bound_ports(recs: Records, o: Sides, verdicts: VerdictArrays, f: npt.NDArray[np.int64], vid: npt.NDArray[np.int64]) -> Answers:
    """What binds said of their port, as endpoint-mapper answers say it: (server, tcp, port) ->
    the interface, over the bound flow's span, for dynamic ports (a bind inside RPC over HTTP
    names the service behind the proxy, not the proxy's port)."""
    bind_rows = np.flatnonzero((verdicts.kind == "bind")[vid])  # few rows: only their ports are looked at
    f, vid = f[bind_rows], vid[bind_rows]
    port = o.s_port[f]
    bound = (port >= HIGH_PORT) & ~np.isin(port, list(EXPECTED_PROTOCOLS))
    f, vid = f[bound], vid[bound]
    binds, answer = np.unique(vid, return_inverse=True)
    named = VerdictArrays.answered(verdicts.service[binds], verdicts.iface[binds], verdicts.name[binds],
                                   np.full(binds.size, BOUND_ELSEWHERE, dtype=object))  # fmt: skip
    tcp = np.ones(f.size, dtype=bool)
    return Answers(o.s_hi[f], o.s_lo[f], o.s_port[f].astype(np.int64), ~tcp, tcp, recs["first_ns"][f], recs["last_ns"][f],
                   named, answer.reshape(-1).astype(np.int64))  # fmt: skip


def epm_rows(learned: Answers, expiry_ns: int, proto: npt.NDArray[np.int64], o: Sides, first_ns: npt.NDArray[np.int64],
              among: npt.NDArray[np.bool_] | None = None) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:  # fmt: skip
    """Flows (``among`` them) to a port an endpoint-mapper reply (or a bind elsewhere) named,
    within the expiry of that answer, either side: (flows, per flow the answer nearest in time,
    the first learned among equals), in flow order."""
    none = np.zeros(0, np.int64)
    if not len(learned):
        return none, none
    handed_out, by_key, sorted_key = learned.by_endpoint
    # only flows to a port some answer handed out can match: the join runs on those alone
    flows = np.flatnonzero(((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP)) & (among if among is not None else True)
                           & handed_out[o.s_port])  # fmt: skip
    hi, lo, port, udp = o.s_hi[flows], o.s_lo[flows], o.s_port[flows].astype(np.int64), proto[flows] == IPPROTO_UDP
    key = _endpoint_key(hi, lo, port, udp)
    # the answers of each key, searched for with the keys in order (in flow order, each binary
    # search would start cold: four times the cost)
    in_order = np.argsort(key)
    first, count = np.empty_like(in_order), np.empty_like(in_order)
    first[in_order] = np.searchsorted(sorted_key, key[in_order], side="left")
    count[in_order] = np.searchsorted(sorted_key, key[in_order], side="right") - first[in_order]
    # every (flow, learned row) pair with the same key, in flow order, each flow's learned rows
    # in their order (the sort by key is stable)
    pf = np.repeat(np.arange(flows.size), count)
    pl = by_key[np.repeat(first - np.cumsum(count) + count, count) + np.arange(pf.size)]
    same = (learned.hi[pl] == hi[pf]) & (learned.lo[pl] == lo[pf]) & (learned.port[pl] == port[pf]) & (learned.udp[pl] == udp[pf]) & learned.ip[pl]
    pf, pl = pf[same], pl[same]
    at = first_ns[flows[pf]]
    gap = np.maximum(learned.first_ns[pl] - at, 0) + np.maximum(at - learned.last_ns[pl], 0)
    near = gap <= expiry_ns
    pf, pl, gap = pf[near], pl[near], gap[near]
    if not pf.size:
        return none, none
    # per flow, its first pair of the least gap: no sort, the pairs are in order already
    start = np.flatnonzero(np.r_[True, pf[1:] != pf[:-1]])
    least = np.flatnonzero(gap == np.repeat(np.minimum.reduceat(gap, start), np.diff(np.r_[start, pf.size])))
    nearest = least[np.r_[True, pf[least][1:] != pf[least][:-1]]]
    return flows[pf[nearest]], pl[nearest]


def _endpoint_key(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], port: npt.NDArray[np.int64],
                  udp: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint64]:  # fmt: skip
    """A 64-bit hash of each (address, port, transport): equal endpoints, equal keys."""
    with np.errstate(over="ignore"):
        key: npt.NDArray[np.uint64] = (hi.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ lo.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
                ^ ((port.astype(np.uint64) << np.uint64(1)) | udp.astype(np.uint64)) * np.uint64(0x165667B19E3779F9))  # fmt: skip
    return key


def notification_heuristic(
    ev: npt.NDArray[np.int64], proto: npt.NDArray[np.int64], o: Oriented, sessions: RowSet | None = None,
    timed: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """UDP from an Exchange server's high port to a high port of a host holding an RPC session
    with that server (see ``rpc_sessions``; ``sessions``: those of every block, else this one's),
    or that the host's DCE/RPC request to it followed at once (``timed``, see
    ``notification_timing``): a new-mail notification (docs/exchange-wire-facts.md §6), when
    nothing better decided the flow. Returns those flows."""
    if sessions is None:
        sessions = RowSet(rpc_sessions(proto, o, (ev == EV["bind"]) | (ev == EV["epm"]) | (ev == EV["dcerpc"]), o.server_ex))
    c_hi, c_lo, c_port = o.c_hi, o.c_lo, o.c_port
    s_hi, s_lo, s_port = o.s_hi, o.s_lo, o.s_port
    client_ex, server_ex = o.client_ex, o.server_ex
    cand = np.flatnonzero((proto == IPPROTO_UDP) & (ev == EV["none"]) & (c_port > HIGH_PORT) & (s_port > HIGH_PORT)
                          & np.where(client_ex, o.packets_c2s > 0, server_ex & (o.packets_s2c > 0)))  # fmt: skip
    in_time = timed[cand] if timed is not None else np.zeros(cand.size, dtype=bool)
    if not cand.size or not len(sessions):
        return cand[in_time]
    ex_c = client_ex[cand]
    pairs = [np.where(ex_c, s_hi[cand], c_hi[cand]), np.where(ex_c, s_lo[cand], c_lo[cand]),
             np.where(ex_c, c_hi[cand], s_hi[cand]), np.where(ex_c, c_lo[cand], s_lo[cand])]  # fmt: skip
    return cand[sessions.contains(pairs) | in_time]


def rpc_sessions(proto: npt.NDArray[np.int64], s: Sides, bound_or_mapped: npt.NDArray[np.bool_],
              server_ex: npt.NDArray[np.bool_] | None = None) -> list[npt.NDArray[np.uint64]]:  # fmt: skip
    """(client, server) of the RPC sessions: TCP flows that a bind or an endpoint-mapper reply
    decided (``bound_or_mapped``), or to TCP 135, whose server is an Exchange server
    (``server_ex``). Without ``server_ex``, the candidates: which have an Exchange server is
    settled once every block is in (``rpc_sessions_among``). Distinct (client hi, lo, server
    hi, lo), as columns."""
    rpc = (proto == IPPROTO_TCP) & (bound_or_mapped | (s.s_port == RPC_SESSION_PORT))
    if server_ex is not None:
        rpc &= server_ex
    return distinct_rows([s.c_hi[rpc], s.c_lo[rpc], s.s_hi[rpc], s.s_lo[rpc]])
