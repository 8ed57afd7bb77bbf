"""Flow records → oriented, directed, service-tagged flows, vectorized over the whole table.

Orientation, the Exchange servers and the port lookup all need a flow's both sides (and,
for inference, every flow of the capture), so they run on finished flow records rather than
on packets; every step is a numpy expression over all flows at once.
"""

from __future__ import annotations

from collections.abc import Sequence
import ipaddress
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import schema
from .addresses import Network, format_addresses, in_networks, pair_index
from .decode import FRAGMENT_PROTO_BASE, Status
from .flows import NO_SYN, NON_FLOW_BASE, Records
from .rules import OTHER, TRANSPORTS, PortLookup

IPPROTO_TCP, IPPROTO_UDP = 6, 17
_TRANSPORT_INDEX = {IPPROTO_TCP: TRANSPORTS.index("tcp"), IPPROTO_UDP: TRANSPORTS.index("udp")}
_NON_FLOW_NAMES = {Status.NON_IP: "non-ip", Status.TRUNCATED: "truncated", Status.UNDECODED: "undecoded"}
_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) .. bit 7 (CWR), RFC 9293 / RFC 3168
FLAG_TEXT = np.array(
    ["".join(ch for bit, ch in enumerate(_FLAG_LETTERS) if v >> bit & 1) for v in range(256)], dtype=object
)


@dataclass(frozen=True, slots=True)
class Servers:
    """The Exchange servers direction is measured against, and where they came from."""

    networks: tuple[Network, ...]
    addresses: tuple[str, ...]
    inferred: bool

    def describe(self) -> str:
        """``'10.0.0.10 10.0.0.20'``: the networks given, or the addresses inferred."""
        return " ".join(self.addresses) if self.inferred else " ".join(str(n) for n in self.networks)


def classify(recs: Records, lookup: PortLookup, servers: Sequence[Network] = ()) -> tuple[pd.DataFrame, Servers]:
    """Orient, direct and tag every flow; returns the flows DataFrame (schema.FLOWS order)."""
    proto = recs["proto"]
    n = proto.shape[0]
    tidx = np.full(n, -1, dtype=np.int64)
    for number, index in _TRANSPORT_INDEX.items():
        tidx[proto == number] = index
    ported = tidx >= 0
    t = np.where(ported, tidx, 0)
    pa, pb = recs["port_a"], recs["port_b"]

    client_is_a = _orient(recs, lookup, t, ported)
    pick = lambda a, b: np.where(client_is_a, a, b)  # noqa: E731
    c_hi, c_lo = pick(recs["a_hi"], recs["b_hi"]), pick(recs["a_lo"], recs["b_lo"])
    s_hi, s_lo = pick(recs["b_hi"], recs["a_hi"]), pick(recs["b_lo"], recs["a_lo"])
    c_port, s_port = pick(pa, pb), pick(pb, pa)
    packets_c2s, packets_s2c = pick(recs["packets_ab"], recs["packets_ba"]), pick(recs["packets_ba"], recs["packets_ab"])
    bytes_c2s, bytes_s2c = pick(recs["bytes_ab"], recs["bytes_ba"]), pick(recs["bytes_ba"], recs["bytes_ab"])
    flags_c2s, flags_s2c = pick(recs["flags_a"], recs["flags_b"]), pick(recs["flags_b"], recs["flags_a"])

    inbound_code = np.where(ported, lookup.table[t, 0, s_port], 0)
    outbound_code = np.where(ported, lookup.table[t, 1, s_port], 0)
    answers = ported & (inbound_code > 0) & (packets_s2c > 0)
    if servers:
        client_ex = in_networks(c_hi, c_lo, servers)
        server_ex = in_networks(s_hi, s_lo, servers)
        chosen = Servers(networks=tuple(servers), addresses=tuple(str(n) for n in servers), inferred=False)
    else:
        # who answers on an Exchange inbound port is taken for an Exchange server
        known = pair_index(s_hi[answers], s_lo[answers]).unique()
        client_ex = np.asarray(pair_index(c_hi, c_lo).isin(known))
        server_ex = np.asarray(pair_index(s_hi, s_lo).isin(known))
        inferred = sorted(set(format_addresses(s_hi[answers], s_lo[answers])), key=_address_order)
        chosen = Servers(networks=(), addresses=tuple(inferred), inferred=True)
    is_flow = proto < NON_FLOW_BASE
    client_ex &= is_flow
    server_ex &= is_flow & ~client_ex
    direction = np.where(client_ex, "outbound", np.where(server_ex, "inbound", "other"))
    # the side that matches the direction first, the other side's table as a fallback
    code = np.where(client_ex, np.where(outbound_code > 0, outbound_code, inbound_code),
                    np.where(inbound_code > 0, inbound_code, outbound_code))  # fmt: skip
    ids = np.array(lookup.ids, dtype=object)

    transport = np.full(n, "other", dtype=object)
    transport[proto == IPPROTO_TCP] = "tcp"
    transport[proto == IPPROTO_UDP] = "udp"
    for status, name in _NON_FLOW_NAMES.items():
        transport[proto == NON_FLOW_BASE + status] = name
    fragment = (proto >= FRAGMENT_PROTO_BASE) & is_flow
    ip_proto = pd.array(np.where(fragment, proto - FRAGMENT_PROTO_BASE, proto), dtype="Int64")
    ip_proto[~is_flow] = pd.NA
    c_addr, s_addr = format_addresses(c_hi, c_lo), format_addresses(s_hi, s_lo)
    c_addr[~is_flow] = ""
    s_addr[~is_flow] = ""

    flows = pd.DataFrame(
        {
            "first_ts": recs["first_ns"] / 1e9,
            "last_ts": recs["last_ns"] / 1e9,
            "transport": transport,
            "ip_proto": ip_proto,
            "fragment": fragment,
            "client_addr": c_addr,
            "client_port": c_port,
            "server_addr": s_addr,
            "server_port": s_port,
            "service": ids[code],
            "evidence": np.where(code > 0, "port", "none"),
            "direction": direction,
            "packets_c2s": packets_c2s,
            "bytes_c2s": bytes_c2s,
            "packets_s2c": packets_s2c,
            "bytes_s2c": bytes_s2c,
            "tcp_flags_c2s": FLAG_TEXT[flags_c2s & 0xFF],
            "tcp_flags_s2c": FLAG_TEXT[flags_s2c & 0xFF],
        }
    )
    return flows, chosen


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


def _address_order(text: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)


def empty_flows() -> pd.DataFrame:
    """A flows DataFrame with no rows and the schema's columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in schema.FLOWS})
