"""DCE/RPC ports and sessions: flows to ports an endpoint-mapper reply or a bind elsewhere
named, the RPC sessions of a run, and the new-mail notifications they explain.

An endpoint-mapper answer (or a bind on another connection to the same dynamic port) names
the interface of the flows to that port within its expiry either side; a UDP datagram from an
Exchange server's high port to a host holding an RPC session with it is a new-mail
notification when nothing better decided it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..addresses import rows_in
from ..evidence import INTERFACE_ONLY
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
_EPM_ROWS = ["flow", "kind", "service", "detail", "rpc_interface", "rpc_interface_name"]


def bound_ports(recs: Records, o: Sides, verdicts: VerdictArrays, f: npt.NDArray[np.int64], vid: npt.NDArray[np.int64]) -> pd.DataFrame:
    """What binds said of their port, as endpoint-mapper answers say it: (server, tcp, port) ->
    the interface, over the bound flow's span, for dynamic ports (a bind inside RPC over HTTP
    names the service behind the proxy, not the proxy's port)."""
    bound = (verdicts.kind == "bind")[vid] & (o.s_port[f] >= HIGH_PORT) & ~np.isin(o.s_port[f], list(EXPECTED_PROTOCOLS))
    f, vid = f[bound], vid[bound]
    return pd.DataFrame({
        "server_hi": o.s_hi[f], "server_lo": o.s_lo[f], "transport": "tcp", "port": o.s_port[f].astype(np.int64),
        "first_ns": recs["first_ns"][f], "last_ns": recs["last_ns"][f], "service": verdicts.service[vid],
        "rpc_interface": verdicts.iface[vid], "rpc_interface_name": verdicts.name[vid], "exchange": False,
        "detail": BOUND_ELSEWHERE,
    })  # fmt: skip


def epm_rows(learned: pd.DataFrame, expiry_ns: int, proto: npt.NDArray[np.int64], o: Sides, first_ns: npt.NDArray[np.int64],
              among: npt.NDArray[np.bool_] | None = None) -> pd.DataFrame:  # fmt: skip
    """Flows (``among`` them) to a port an endpoint-mapper reply (or a bind elsewhere,
    ``bound_ports``) named, within the expiry of that answer, either side."""
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


def notification_heuristic(
    ev: npt.NDArray[np.int64], proto: npt.NDArray[np.int64], o: Oriented, sessions: pd.MultiIndex | None = None,
    timed: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.int64]:
    """UDP from an Exchange server's high port to a high port of a host holding an RPC session
    with that server (see ``rpc_sessions``; ``sessions``: those of every block, else this one's),
    or that the host's DCE/RPC request to it followed at once (``timed``, see
    ``notification_timing``): a new-mail notification (docs/exchange-wire-facts.md §6), when
    nothing better decided the flow. Returns those flows."""
    if sessions is None:
        sessions = rpc_sessions(proto, o, (ev == EV["bind"]) | (ev == EV["epm"]) | (ev == EV["dcerpc"]), o.server_ex)
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
    return cand[rows_in(pairs, sessions) | in_time]


def rpc_sessions(proto: npt.NDArray[np.int64], s: Sides, bound_or_mapped: npt.NDArray[np.bool_],
              server_ex: npt.NDArray[np.bool_] | None = None) -> pd.MultiIndex:  # fmt: skip
    """(client, server) of the RPC sessions: TCP flows that a bind or an endpoint-mapper reply
    decided (``bound_or_mapped``), or to TCP 135, whose server is an Exchange server
    (``server_ex``). Without ``server_ex``, the candidates: which have an Exchange server is
    settled once every block is in (``rpc_sessions_among``)."""
    rpc = (proto == IPPROTO_TCP) & (bound_or_mapped | (s.s_port == RPC_SESSION_PORT))
    if server_ex is not None:
        rpc &= server_ex
    return pd.MultiIndex.from_arrays([s.c_hi[rpc], s.c_lo[rpc], s.s_hi[rpc], s.s_lo[rpc]]).unique()
