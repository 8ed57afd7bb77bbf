"""Why a flow got its label: the decision, the Exchange server evidence behind its direction,
and Wireshark's own dissection of the packets that decided it.

The dissection is tshark's, through pyshark: a second opinion from an independent set of
dissectors on the few packets that matter (each side's first payload), so that a reader can
check a label against what Wireshark makes of the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .addresses import Network
from .errors import PcapclassError
from .output import FLOWS_CSV

#: fields of a layer shown per dissected packet
SHOWN_FIELDS = 5


class ExplainError(PcapclassError, ValueError):
    """The flow asked for is not in the capture, or tshark cannot dissect it."""

    exit_code = 2


def find_flow(flows: pd.DataFrame, spec: Sequence[str]) -> int:
    """The position in ``flows`` of the flow ``spec`` names: a row number of flows.csv (1 is
    the first flow) or two endpoints ``ADDR:PORT`` (IPv6 as ``[ADDR]:PORT``), in either order."""
    if len(spec) == 1 and spec[0].isdigit():
        row = int(spec[0])
        if not 1 <= row <= len(flows):
            raise ExplainError(f"flow {row} is not in the capture (it has {len(flows)} flows)")
        return row - 1
    if len(spec) != 2:
        raise ExplainError(f"name a flow by its row number in {FLOWS_CSV}, or by its two endpoints ADDR:PORT ADDR:PORT")
    a, b = (_endpoint(s) for s in spec)
    client = list(zip(flows["client_addr"].astype(str), flows["client_port"].astype(int), strict=True))
    server = list(zip(flows["server_addr"].astype(str), flows["server_port"].astype(int), strict=True))
    hits = [i for i, (c, s) in enumerate(zip(client, server, strict=True)) if {c, s} == {a, b}]
    if not hits:
        raise ExplainError(f"no flow between {spec[0]} and {spec[1]}")
    return hits[0]


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ExplainError(f"{text!r} is not ADDR:PORT")
    return host.strip("[]"), int(port)


def explain(path: str | os.PathLike[str], spec: Sequence[str], *, servers: Sequence[str | Network] = (),
            rules: Sequence[str | os.PathLike[str]] = ()) -> list[str]:  # fmt: skip
    """The explanation of one flow of the capture at ``path``, as lines of text."""
    from .api import Classifier

    clf = Classifier(servers=servers, rules=rules)  # one capture, as named: no directory or glob
    clf.read(path)
    result = clf.result()
    flows = result.flows
    i = find_flow(flows, spec)
    f = flows.iloc[i]
    lines = [
        (f"flow {i + 1} of {os.fspath(path)}: {f.transport} {_ep(f.client_addr, f.client_port)} -> {_ep(f.server_addr, f.server_port)}, "
         f"{f.packets_c2s} packets / {f.bytes_c2s} bytes client->server, {f.packets_s2c} / {f.bytes_s2c} back"),
        f"  protocol   {f.protocol or '(no payload recognized)'}",
        f"  service    {f.service}, decided by {f.evidence}" + (f" ({f.detail})" if f.detail else ""),
    ]
    if f.rpc_interface:
        lines.append(f"  interface  {f.rpc_interface_name or 'unknown'} {f.rpc_interface}")
    lines.append(f"  direction  {f.direction}: {_why_direction(f, result.servers)}")
    lines.append("tshark's dissection of each side's first payload (pyshark):")
    lines += dissect(path, f)
    return lines


def _ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _why_direction(f: Any, servers: Any) -> str:
    table = servers.evidence
    kinds = dict(zip(table["server"], zip(table["kinds"], table["score"], strict=True), strict=True))
    for role, addr in (("server", f.server_addr), ("client", f.client_addr)):
        if addr in servers.addresses or (not servers.inferred and f.direction != "other"):
            if servers.inferred:
                k, score = kinds.get(addr, ("", 0))
                return f"the {role} {addr} is an Exchange server (inferred from {k.replace(' ', ', ')}; score {score})"
            return f"the {role} {addr} is an Exchange server (given with --server)"
    return "neither end is an Exchange server"


def dissect(path: str | os.PathLike[str], f: Any) -> list[str]:
    """tshark's reading of the flow's first payload in each direction."""
    try:
        import pyshark
        from pyshark.tshark.tshark import TSharkNotFoundException
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ExplainError(f"pyshark is not installed ({exc})") from None
    if f.transport not in ("tcp", "udp"):
        return ["  (no ports: nothing to dissect)"]
    t = str(f.transport)
    length = "tcp.len" if t == "tcp" else "udp.length > 8 && udp.length"
    display = (f"ip{'v6' if ':' in f.client_addr else ''}.addr == {f.client_addr} && ip{'v6' if ':' in f.server_addr else ''}.addr == {f.server_addr}"
               f" && {t}.port == {f.client_port} && {t}.port == {f.server_port} && {length} > 0"
               f" && frame.time_epoch >= {f.first_ts - 1e-6:.6f} && frame.time_epoch <= {f.last_ts + 1e-6:.6f}")  # fmt: skip
    lines: list[str] = []
    seen: set[str] = set()
    try:
        cap = pyshark.FileCapture(os.fspath(path), display_filter=display, keep_packets=False)
        try:
            for pkt in cap:
                sender = "client->server" if getattr(pkt[t], "srcport", None) == str(f.client_port) else "server->client"
                if sender in seen:
                    continue
                seen.add(sender)
                lines.append(f"  frame {pkt.number:>6}  {sender}  {pkt.highest_layer}: {'; '.join(_fields(pkt))}")
                if len(seen) == 2:
                    break
        finally:
            cap.close()
    except TSharkNotFoundException:
        raise ExplainError("tshark is not installed: install Wireshark's tshark (Debian: apt-get install tshark) to see its dissection") from None
    return lines or ["  (no payload in either direction)"]


#: field names that say what a payload is doing, shown before the others
TELLING = ("uuid", "opnum", "pkt_type", "request", "response", "command", "method", "uri", "host", "server_name", "handshake_type")


def _fields(pkt: Any) -> list[str]:
    """A few meaningful fields of the packet's top layer: the telling ones first (interface,
    operation, request or response line, host), flag bit lines left out."""
    layer = pkt.layers[-1]
    names = sorted(layer.field_names, key=lambda n: not any(t in n for t in TELLING))
    shown: list[str] = []
    for name in names:
        showname = getattr(layer.get_field(name), "showname", None)
        if showname and " = " not in showname and ":" in showname and showname.strip() not in shown:
            shown.append(showname.strip())
        if len(shown) == SHOWN_FIELDS:
            break
    return shown
