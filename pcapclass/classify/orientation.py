"""Orientation: which endpoint of each flow is the client, and the flow seen from both sides.

By the SYN's sender, else the side not on a rule port, else the higher port; a matched new-mail
notification turns its flow (the store sends it). Vectorized over all flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..flows import NO_SYN, FlowRows, Records
from ..tables.services import TRANSPORTS, PortLookup

IPPROTO_TCP, IPPROTO_UDP = 6, 17
_TRANSPORT_INDEX = {IPPROTO_TCP: TRANSPORTS.index("tcp"), IPPROTO_UDP: TRANSPORTS.index("udp")}


@dataclass(frozen=True, slots=True)
class Sides:
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
class Oriented(Sides):
    """The sides, and which of them is an Exchange server."""

    client_ex: npt.NDArray[np.bool_]
    server_ex: npt.NDArray[np.bool_]


def _client_is_a(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_],
    client_is_sender: npt.NDArray[np.int8], rows: FlowRows | None,
) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Orientation by SYN, rule port and port number, then the registrations' say."""
    client_is_a = orient(recs, lookup, t, ported)
    if rows is not None:
        # a matched new-mail notification: its sender (the store) is the client
        turn = client_is_sender[rows.vid] == 1
        client_is_a[rows.flow[turn]] = rows.from_a[turn]
    return client_is_a


def sides(
    recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_],
    client_is_sender: npt.NDArray[np.int8], rows: FlowRows | None,
) -> Sides:  # fmt: skip
    """Orient every flow (see ``_client_is_a``; ``client_is_sender``: the verdicts' column, by
    verdict id) and name its endpoints client and server."""
    client_is_a = _client_is_a(recs, lookup, t, ported, client_is_sender, rows)

    def pick(a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return client_side(client_is_a, a, b)

    return Sides(
        client_is_a,
        pick(recs["a_hi"], recs["b_hi"]), pick(recs["a_lo"], recs["b_lo"]), pick(recs["port_a"], recs["port_b"]),
        pick(recs["b_hi"], recs["a_hi"]), pick(recs["b_lo"], recs["a_lo"]), pick(recs["port_b"], recs["port_a"]),
        pick(recs["packets_ab"], recs["packets_ba"]), pick(recs["packets_ba"], recs["packets_ab"]),
    )  # fmt: skip


def client_side(client_is_a: npt.NDArray[np.bool_], a: npt.NDArray[Any], b: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Per flow, endpoint A's value ``a`` where A is the client, else B's ``b``."""
    return np.where(client_is_a, a, b)


def transport_index(proto: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Per flow, the port table's transport row (0 where none) and whether it has ports."""
    tidx = np.full(proto.shape[0], -1, dtype=np.int64)
    for number, index in _TRANSPORT_INDEX.items():
        tidx[proto == number] = index
    ported = tidx >= 0
    return np.where(ported, tidx, 0), ported


def orient(recs: Records, lookup: PortLookup, t: npt.NDArray[np.int64], ported: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """True where endpoint A is the client: SYN sender, else not on a rule port, else higher port."""
    syn_a, syn_b = recs["syn_a_ns"], recs["syn_b_ns"]
    pa, pb = recs["port_a"], recs["port_b"]
    rule_a = ported & lookup.rule_port[t, pa]
    rule_b = ported & lookup.rule_port[t, pb]
    by_ports = np.where(pa != pb, pa > pb, recs["first_from_a"])
    by_rules = np.where(rule_a != rule_b, rule_b, by_ports)
    has_syn = (syn_a != NO_SYN) | (syn_b != NO_SYN)
    return np.where(has_syn, syn_a <= syn_b, by_rules)
