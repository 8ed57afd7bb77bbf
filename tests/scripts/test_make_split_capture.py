"""The split capture is reproducible, and cut by ``editcap -c`` into 20 pieces it has, piece by
piece as tshark reads them, what the test that parallel runs agree with one process needs from its cuts."""

from __future__ import annotations

import importlib.util
import ipaddress
import itertools
import math
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPLIT = ROOT / "tests" / "fixtures" / "split"
CAPTURE = SPLIT / "split_boundaries.pcap"
PIECES = 20
IDLE_TIMEOUT_NS = 120 * 1_000_000_000  # pcapclass.flows.FlowTable's default idle timeout
FIELDS = ["frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "udp.srcport", "udp.dstport",
          "tcp.flags.syn", "tcp.flags.ack", "dcerpc.pkt_type", "dcerpc.opnum", "epm.proto.tcp_port", "epm.proto.ip",
          "_ws.col.Protocol", "tcp.payload", "udp.payload"]  # fmt: skip


def load_script():
    spec = importlib.util.spec_from_file_location("make_split_capture", ROOT / "scripts" / "make_split_capture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_split_capture", module)
    spec.loader.exec_module(module)
    return module


def test_capture_is_reproducible():
    capture, sources = load_script().generate()
    assert CAPTURE.read_bytes() == capture, "rerun scripts/make_split_capture.py"
    assert (SPLIT / "SOURCES.md").read_text() == sources


def frames(path: Path) -> list[dict[str, str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f"] + [a for f in FIELDS for a in ("-e", f)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [dict(zip(FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


def conversation(f: dict[str, str]) -> tuple:
    """tshark -z conv style: transport and the unordered pair of endpoints."""
    proto = "tcp" if f["tcp.srcport"] else "udp"
    return (proto, *sorted([(f["ip.src"], f[f"{proto}.srcport"]), (f["ip.dst"], f[f"{proto}.dstport"])]))


@pytest.fixture(scope="module")
def pieces(tmp_path_factory, tshark) -> list[list[dict[str, str]]]:
    """The pieces ``editcap -c N`` cuts, N the smallest count that makes 20, each read by tshark."""
    total = int(subprocess.run(["capinfos", "-c", "-M", "-r", "-T", str(CAPTURE)], capture_output=True, text=True, check=True).stdout.split()[-1])
    out = tmp_path_factory.mktemp("pieces")
    subprocess.run(["editcap", "-c", str(math.ceil(total / PIECES)), str(CAPTURE), str(out / "piece.pcap")], check=True)
    paths = sorted(out.iterdir())
    assert len(paths) == PIECES
    return [frames(p) for p in paths]


def where(pieces, match) -> list[tuple[int, dict[str, str]]]:
    """(piece index, frame) of every frame ``match`` accepts."""
    return [(k, f) for k, piece in enumerate(pieces) for f in piece if match(f)]


def test_flows_cross_every_cut(pieces):
    present = [{conversation(f) for f in piece} for piece in pieces]
    in_every = set.intersection(*present)
    assert in_every == {("tcp", ("10.0.0.10", "1032"), ("10.0.1.41", "1301")), ("tcp", ("10.0.0.5", "389"), ("10.0.1.41", "1302"))}


def test_endpoint_mapper_reply_and_its_connection_are_in_different_pieces(pieces):
    replies = where(pieces, lambda f: f["dcerpc.pkt_type"] == "2" and f["epm.proto.tcp_port"])
    assert len(replies) == 1
    k, reply = replies[0]
    server, port = reply["epm.proto.ip"], reply["epm.proto.tcp_port"]
    assert port not in ("135", "1032")
    syns = where(pieces, lambda f: f["ip.dst"] == server and f["tcp.dstport"] == port and f["tcp.flags.syn"] == "1" and f["tcp.flags.ack"] == "0")
    assert len(syns) == 1 and syns[0][0] > k
    assert not where(pieces[: k + 1], lambda f: port in (f["tcp.srcport"], f["tcp.dstport"]))


def test_registration_and_its_notification_are_in_different_pieces(pieces):
    registrations = where(pieces, lambda f: f["_ws.col.Protocol"] == "MAPI" and f["dcerpc.opnum"] == "4" and f["dcerpc.pkt_type"] == "0")
    assert len(registrations) == 1
    k, reg = registrations[0]
    payload = bytes.fromhex(reg["tcp.payload"].replace(":", ""))
    client = reg["ip.src"]
    datagrams = where(pieces, lambda f: f["ip.dst"] == client and f["udp.payload"] and f["ip.src"] == reg["ip.dst"])
    assert len(datagrams) == 1
    j, datagram = datagrams[0]
    blob = bytes.fromhex(datagram["udp.payload"].replace(":", ""))
    # MS-OXCRPC 3.1.4.5: the request carries the blob and a SOCKADDR (family 2, port big-endian, address)
    sockaddr = b"\x02\x00" + int(datagram["udp.dstport"]).to_bytes(2, "big") + ipaddress.IPv4Address(client).packed
    assert blob in payload and sockaddr in payload
    assert j > k


def test_idle_and_reused_flows_straddle_cuts(pieces):
    by_flow = defaultdict(list)
    for k, f in where(pieces, lambda f: "53" in (f["udp.srcport"], f["udp.dstport"]) or "143" in (f["tcp.srcport"], f["tcp.dstport"])):
        by_flow[conversation(f)].append((k, f))
    gaps = {}
    for flow, seen in by_flow.items():
        if flow[0] == "udp":
            times = [int(f["frame.time_epoch"].replace(".", "")) for _, f in seen]  # 9 fraction digits: ns
            gap = max(b - a for a, b in itertools.pairwise(times))
            gaps[flow] = (gap > IDLE_TIMEOUT_NS, seen[0][0] != seen[-1][0])
        else:
            syns = [k for k, f in seen if f["tcp.flags.syn"] == "1" and f["tcp.flags.ack"] == "0"]
            assert len(syns) == 2 and syns[0] < syns[1], "the IMAP 4-tuple opens again in a later piece"
    assert sorted(gaps.values()) == [(False, True), (True, True)]
