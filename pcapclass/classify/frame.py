"""Flow records → oriented, directed, service-tagged flows, vectorized over the whole table.

Orientation, the Exchange servers and the port lookup all need a flow's both sides (and,
for inference, every flow of the capture), so they run on finished flow records rather than
on packets; every step is a numpy expression over all flows at once. ``classify`` runs them
in order (``orientation``, ``inference``, ``decision``) and builds the flows frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..addresses import Network, format_addresses
from ..decode import FRAGMENT_PROTO_BASE, Status
from ..evidence import Evidence
from ..flows import NON_FLOW_BASE, FlowRows, Records
from ..schema import FLOWS
from ..tables.server_evidence import ServerEvidenceRules, default_server_evidence
from ..tables.services import PortLookup
from .blocks import Shared
from .decision import DecisionInput, decide, from_codes
from .inference import Servers, oriented
from .orientation import IPPROTO_TCP, IPPROTO_UDP, client_side, transport_index
from .verdicts import VerdictArrays, flow_rows

_NON_FLOW_NAMES = {Status.NON_IP: "non-ip", Status.TRUNCATED: "truncated", Status.UNDECODED: "undecoded"}
#: the values of the transport and direction columns, in code order
TRANSPORT_NAMES = ("tcp", "udp", "other", "non-ip", "truncated", "undecoded")
DIRECTION_NAMES = ("inbound", "outbound", "other")
_FLAG_LETTERS = "FSRPAUEC"  # bit 0 (FIN) .. bit 7 (CWR), RFC 9293 / RFC 3168
FLAG_TEXT = np.array(
    ["".join(ch for bit, ch in enumerate(_FLAG_LETTERS) if v >> bit & 1) for v in range(256)], dtype=object
)


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
    t, ported = transport_index(proto)

    verdicts = shared.verdicts if shared is not None and shared.verdicts is not None else VerdictArrays.of(evidence)
    rows = rows if rows is not None else flow_rows(recs, evidence)
    known = shared.known if shared is not None else None
    rules = server_rules or default_server_evidence()
    o, found = oriented(recs, lookup, t, ported, verdicts, rows, servers, known, evidence, rules)
    bytes_c2s, bytes_s2c = client_side(o.client_is_a, recs["bytes_ab"], recs["bytes_ba"]), client_side(o.client_is_a, recs["bytes_ba"], recs["bytes_ab"])
    flags_c2s, flags_s2c = client_side(o.client_is_a, recs["flags_a"], recs["flags_b"]), client_side(o.client_is_a, recs["flags_b"], recs["flags_a"])
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
    decided = decide(DecisionInput(recs, o, rows, verdicts, code, lookup, evidence, rules.conclusive, shared))

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
            "transport": from_codes(transport_code, TRANSPORT_NAMES),
            "ip_proto": ip_proto,
            "fragment": fragment,
            "client_addr": c_addr,
            "client_port": c_port,
            "server_addr": s_addr,
            "server_port": s_port,
            **decided.columns(),
            "direction": from_codes(direction_code, DIRECTION_NAMES),
            "packets_c2s": o.packets_c2s,
            "bytes_c2s": bytes_c2s,
            "packets_s2c": o.packets_s2c,
            "bytes_s2c": bytes_s2c,
            "tcp_flags_c2s": from_codes(flags_c2s & 0xFF, FLAG_TEXT),
            "tcp_flags_s2c": from_codes(flags_s2c & 0xFF, FLAG_TEXT),
        }
    )
    return flows, chosen


def empty_flows() -> pd.DataFrame:
    """A flows DataFrame with no rows and the schema's columns and dtypes."""
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in FLOWS})
