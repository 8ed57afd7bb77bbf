"""Tests for pcapclass.evidence and the evidence order in classify: conversations built with scapy
from the fact sheet (scripts/make_evidence_fixtures.py), read whole and in tiny chunks, and
interface UUIDs checked against tshark's own DCE/RPC dissection. Expected services are written
here by hand from docs/exchange-wire-facts.md, not taken from pcapclass's output."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import PAYLOADS

import pcapclass
import pcapclass.evidence.first_payloads as first_payloads_module
import pcapclass.evidence.following as following_module
from pcapclass import payload_memo
from pcapclass._firstlook import WaitingFlows, follow_scan
from pcapclass._laterlooks import later_looks
from pcapclass.api import Classifier
from pcapclass.classify import classify
from pcapclass.cli import main
from pcapclass.evidence.following import PTYPE_USED as _PTYPE_USED
from pcapclass.flows import COLUMNS, FlowIndex, FlowRows, Records
from pcapclass.sources import CaptureFile

TESTS = Path(__file__).parent
EVIDENCE = TESTS / "fixtures" / "evidence"
SERVERS = ("10.0.0.10", "10.0.0.20")

# file -> (client, client port, server port) -> (service, evidence, detail, rpc_interface_name)
EXPECTED = {
    "epm_then_connect.pcap": {
        ("10.0.1.31", 1301, 135): ("rpc-endpoint-mapper", "bind", "", "EPM (endpoint mapper)"),
        ("10.0.1.31", 1302, 1032): ("information-store", "epm", "", "EMSMDB (MAPI)"),
        ("10.0.1.32", 1303, 1032): ("information-store", "bind", "", "EMSMDB (MAPI)"),
        ("10.0.1.33", 1304, 1033): ("system-attendant", "bind", "", "NSPI address book (DSProxy)"),
    },
    "connect_then_epm.pcap": {
        ("10.0.1.34", 1311, 1040): ("information-store", "epm", "", "EMSMDB (MAPI)"),
        ("10.0.1.34", 1312, 135): ("rpc-endpoint-mapper", "bind", "", "EPM (endpoint mapper)"),
    },
    "rpc_over_http.pcap": {
        ("10.0.1.35", 1321, 80): ("information-store", "bind", "", "EMSMDB (MAPI)"),
        ("10.0.1.35", 1322, 80): ("system-attendant", "rpc-http", "rpc-http:6004", ""),
    },
    "owa_activesync.pcap": {
        ("10.0.1.36", 1331, 80): ("www", "http", "owa", ""),
        ("10.0.1.36", 1332, 80): ("activesync", "http", "direct-push", ""),
        ("10.0.1.36", 1333, 80): ("www", "http", "oma", ""),
        ("10.0.1.36", 1334, 80): ("www", "signature", "http", ""),
    },
    "registration.pcap": {
        ("10.0.1.31", 1341, 1032): ("information-store", "bind", "", "EMSMDB (MAPI)"),
        ("10.0.0.10", 3001, 1054): ("information-store", "registration", "new-mail-notification", ""),
        ("10.0.0.10", 3002, 1055): ("other", "none", "", ""),
    },
    "mismatch_and_notify.pcap": {
        ("10.0.1.37", 1351, 102): ("mta-stacks", "port-mismatch", "http on tcp/102", ""),
        ("10.0.0.20", 1352, 2883): ("activesync", "signature", "direct-push", ""),
    },
}


def load_script():
    spec = importlib.util.spec_from_file_location("make_evidence_fixtures", TESTS.parent / "scripts" / "make_evidence_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_evidence_fixtures"] = module
    spec.loader.exec_module(module)
    return module


def decided(flows: pd.DataFrame) -> dict[tuple[str, int, int], tuple[str, str, str, str]]:
    return {
        (r.client_addr, int(r.client_port), int(r.server_port)): (r.service, r.evidence, r.detail, r.rpc_interface_name)
        for r in flows.itertuples(index=False)
    }


def test_fixtures_are_reproducible() -> None:
    files = load_script().generate()
    assert sorted(files) == sorted(EXPECTED)
    stale = [name for name, data in files.items() if (EVIDENCE / name).read_bytes() != data]
    assert not stale, f"rerun scripts/make_evidence_fixtures.py: {stale}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_services_and_evidence(name: str) -> None:
    result = pcapclass.classify_file(EVIDENCE / name, servers=SERVERS)
    assert decided(result.flows) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("chunk_size", [64, 700])
def test_same_answer_in_small_chunks(name: str, chunk_size: int) -> None:
    """EPM reply and connection in different read chunks, PDUs split over batches: same verdicts."""
    clf = Classifier(servers=SERVERS)
    cap = CaptureFile(EVIDENCE / name, chunk_size=chunk_size)
    clf.begin(cap.path, cap.format)
    batches = 0
    for batch in cap:
        clf.feed(batch)
        batches += 1
    clf.end()
    assert batches > 1
    assert decided(clf.result().flows) == EXPECTED[name]


def test_epm_expiry() -> None:
    """The EPM reply vouches for its port only within --epm-expiry of the connection."""
    far = pcapclass.classify_file(EVIDENCE / "epm_then_connect.pcap", servers=SERVERS, epm_expiry=0.5)
    flows = decided(far.flows)
    assert flows[("10.0.1.31", 1302, 1032)][:2] == ("other", "none")
    assert flows[("10.0.1.32", 1303, 1032)][:2] == ("information-store", "bind")


def test_no_payload_is_ports_only() -> None:
    result = pcapclass.classify_file(EVIDENCE / "epm_then_connect.pcap", servers=SERVERS, payload=False)
    assert set(result.flows["evidence"]) == {"port", "none"}
    assert set(result.flows["rpc_interface"]) == {""}


def test_heuristic_notification_without_registration() -> None:
    """Without the registration, UDP from the store's high port to a high port of a host holding
    an RPC session with it is a notification by heuristic; a host without one stays other."""
    result = pcapclass.classify_file(EVIDENCE / "registration.pcap", servers=SERVERS)
    from pcapclass.evidence import Evidence

    clf = Classifier(servers=SERVERS)
    clf.read(EVIDENCE / "registration.pcap")
    clf.finish()
    ev = clf.evidence.evidence()

    (recs, _, rows), = clf.store.blocks()  # the flows, and the evidence rows taken with them
    drop = ev.verdicts["kind"].to_numpy()[rows.vid] == "registration"
    flows, _ = classify(recs, clf.lookup, clf.networks, ev, rows=FlowRows(rows.flow[~drop], rows.vid[~drop], rows.from_a[~drop]))
    got = decided(flows)
    assert got[("10.0.0.10", 3001, 1054)] == ("information-store", "heuristic", "new-mail-notification", "")
    assert got[("10.0.0.10", 3002, 1055)][:2] == ("other", "none")
    assert isinstance(ev, Evidence) and not result.flows.empty


def test_cli_breakdown_by_detail_and_mismatch_count(tmp_path: Path) -> None:
    rc = main(["classify", str(EVIDENCE / "owa_activesync.pcap"), str(EVIDENCE / "mismatch_and_notify.pcap"), "-o", str(tmp_path),
               "-q", "--by", "detail", "--server", SERVERS[0], "--server", SERVERS[1]])  # fmt: skip
    assert rc == 0
    b = pd.read_csv(tmp_path / "breakdown.csv", keep_default_na=False)
    rows = {(r.service, r.direction, r.detail): (r.flows, r.port_mismatch_flows) for r in b.itertuples(index=False)}
    assert rows[("activesync", "inbound", "direct-push")] == (1, 0)
    assert rows[("www", "inbound", "owa")] == (1, 0)
    assert rows[("mta-stacks", "inbound", "http on tcp/102")] == (1, 1)
    flows = pd.read_csv(tmp_path / "flows.csv", keep_default_na=False)
    assert {"detail", "rpc_interface", "rpc_interface_name"} <= set(flows.columns)


def test_exchange_smtp_markers_feed_server_inference() -> None:
    """The EHLO reply of exchange_services.pcap advertises X-EXPS / X-LINK2STATE / XEXCH50."""
    result = pcapclass.classify_file(TESTS / "fixtures" / "pcaps" / "exchange_services.pcap")
    smtp = result.flows[result.flows["server_port"] == 25].iloc[0]
    assert (smtp.service, smtp.evidence, smtp.detail) == ("smtp", "signature", "exchange-smtp")
    assert "10.0.0.10" in result.servers.addresses


# --- interface UUIDs against tshark's dissection ---------------------------------------------


def tshark_bind_uuids(path: Path, *decode_as: str) -> dict[tuple[str, int, int], set[str]]:
    """(client, client port, server port) -> interface UUIDs tshark binds on direct TCP (not SMB pipes)."""
    cmd = ["tshark", "-n", "-r", str(path), "-o", "tcp.desegment_tcp_streams:TRUE"]
    for d in decode_as:
        cmd += ["-d", d]
    cmd += ["-Y", "(dcerpc.pkt_type == 11 || dcerpc.pkt_type == 14) && !smb && !smb2", "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport", "-e", "tcp.dstport",
            "-e", "dcerpc.cn_bind_to_uuid"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    got: dict[tuple[str, int, int], set[str]] = {}
    for line in out.splitlines():
        src, sport, dport, uuids = line.split("\t")
        got.setdefault((src, int(sport), int(dport)), set()).update(u for u in uuids.split(",") if u)
    return got


@pytest.mark.parametrize(
    ("path", "decode_as"),
    [
        (EVIDENCE / "epm_then_connect.pcap", ("tcp.port==1032,dcerpc", "tcp.port==1033,dcerpc")),
        (EVIDENCE / "registration.pcap", ("tcp.port==1032,dcerpc",)),
        (PAYLOADS / "mapi.pcap", ()),
        (PAYLOADS / "cs_window7-join_stream092.pcap", ()),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else "",
)
def test_rpc_interface_is_one_tshark_binds(tshark: str, path: Path, decode_as: tuple[str, ...]) -> None:
    """Each flow's rpc_interface is one of the UUIDs tshark sees bound on that connection, and
    every connection tshark sees a bind on names an interface."""
    theirs = tshark_bind_uuids(path, *decode_as)
    assert theirs
    flows = pcapclass.classify_file(path).flows
    ours = {(r.client_addr, int(r.client_port), int(r.server_port)): r.rpc_interface for r in flows.itertuples(index=False)}
    for key, uuids in theirs.items():
        assert key in ours, key
        assert ours[key] in uuids, (key, ours[key], uuids)


def test_epm_port_is_tsharks_tower_port(tshark: str) -> None:
    """The port learned from mapi.pcap's ept_map reply is the one tshark reads in the tower,
    and the flows to it on the EPM's server are EMSMDB by evidence epm or bind."""
    out = subprocess.run(["tshark", "-n", "-r", str(PAYLOADS / "mapi.pcap"), "-Y", "epm.opnum == 3 && dcerpc.pkt_type == 2",
                          "-T", "fields", "-e", "ip.src", "-e", "epm.proto.tcp_port", "-e", "epm.uuid"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    towers = {(line.split("\t")[0], int(p)) for line in out.splitlines() for p in line.split("\t")[1].split(",") if p}
    assert ("192.168.0.2", 1032) in towers
    flows = pcapclass.classify_file(PAYLOADS / "mapi.pcap").flows
    to_port = flows[(flows["server_addr"] == "192.168.0.2") & (flows["server_port"] == 1032)]
    assert len(to_port) and set(to_port["service"]) == {"information-store"}
    assert set(to_port["evidence"]) <= {"epm", "bind"} and "epm" in set(to_port["evidence"])


def test_followed_flows_are_capped_oldest_waiting_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three endpoint-mapper connections bind one after another, then (a second later) each
    asks ept_map and gets its own port. With room for two followed flows, the first, the
    oldest waiting one, is let go when the third binds: only the last two ports are learned."""
    fx = load_script()
    mf = fx.mf
    convs = [
        fx.Conversation(f"10.0.1.{40 + k}", 1400 + k, mf.BACKEND, 135, "tcp", [
            fx.Msg("c", mf.dce_bind(1, fx.EPM, 3, 0)), fx.Msg("s", mf.dce_bind_ack(1, "135", 0x1234)),
            fx.Msg("c", mf.ept_map_request(2, fx.EMSMDB, 0, 81), think_us=1_000_000),
            fx.Msg("s", mf.ept_map_response(2, fx.EMSMDB, 0, 81, 1040 + k, mf.BACKEND)),
        ]) for k in range(3)
    ]  # fmt: skip
    net = fx.Net(fx.SEED)
    pkts = sorted((p for k, c in enumerate(convs) for p in mf.tcp_conversation(net, c, fx.T0 + k * 10_000_000)), key=lambda p: p.ts_ns)
    path = tmp_path / "three_binds.pcap"
    path.write_bytes(mf.pcap_file(mf.records(pkts, mf.eth), mf.LINKTYPE_ETHERNET))

    def learned() -> set[int]:
        clf = Classifier(servers=SERVERS)
        clf.read(path)
        assert clf.evidence is not None
        return set(clf.evidence.evidence().epm["port"].tolist())

    assert learned() == {1040, 1041, 1042}
    monkeypatch.setattr(following_module, "MAX_TRACKED_FLOWS", 2)
    assert learned() == {1041, 1042}


def test_follow_scan_passes_over_what_needs_no_python_look() -> None:
    """Hand-built payloads of one followed flow (hash 7) and one other (hash 23, which shares its
    slot of ``followed``): the packet that started following is passed over, a whole bind_ack is
    skipped, a request is looked at, the first payload that is no PDU ends the flow, and a
    request after that is not looked at; nor is the other flow's request, nor is it ended."""

    def pdu(ptype: int, length: int) -> bytes:  # DCE/RPC header, little-endian frag_length
        return bytes([5, 0, ptype, 3, 0x10, 0, 0, 0]) + length.to_bytes(2, "little") + bytes(length - 10)

    payloads = [pdu(11, 72), pdu(12, 60), pdu(0, 40), b"GET / HTTP/1.1\r\n", pdu(0, 40), pdu(0, 40), b"GET / HTTP/1.1\r\n"]
    hashes = np.array([7, 7, 7, 7, 7, 23, 23], dtype=np.uint64)
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    off = np.cumsum([0] + [len(p) for p in payloads[:-1]]).astype(np.int64)
    plen = np.array([len(p) for p in payloads], dtype=np.int64)
    followed = np.zeros(1 << 4, dtype=np.uint16)
    followed[7] = 1
    none_h = np.zeros(0, dtype=np.uint64)
    for unparsed, parsed_h in ((WaitingFlows(followed), np.array([7], dtype=np.uint64)), (WaitingFlows(followed.copy()), none_h)):
        if not parsed_h.size:  # the flow waits unparsed instead
            unparsed.start(hashes[:1], hashes[:1], np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64))
        look, ended = follow_scan(data, np.arange(7, dtype=np.int64), hashes, off, plen, followed, unparsed, parsed_h,
                                  np.array([7], dtype=np.uint64), np.array([0], dtype=np.int64), none_h,
                                  _PTYPE_USED.view(np.uint8))  # fmt: skip
        assert look.tolist() == [2]
        assert ended.tolist() == [7]
    none = np.zeros(0, dtype=np.int64)
    look, ended = follow_scan(np.zeros(0, dtype=np.uint8), none, hashes, none, none, followed, WaitingFlows(followed), none_h,
                              none_h, none, none_h, _PTYPE_USED.view(np.uint8))  # fmt: skip
    assert look.size == ended.size == 0


def test_later_looks_find_replies_requests_and_datagrams_by_their_first_bytes_and_ports() -> None:
    """Hand-built batch: only packet 3 is a later TCP payload of 8+ bytes starting "250-"
    (0 is a first payload, 1 is UDP, 2 is too short, 4 starts "250 ", 5 has no payload); 6
    and 7 (first) start a DCE/RPC request, 8 is too short for one; 9 is a short datagram
    between high ports, 10 is too long, 1 and 11 come from a low port."""
    request = bytes((5, 0, 0)) + bytes(21)
    payloads = [b"250-ex1\r\n", b"250-ex1\r\n", b"250-x\r\n", b"250-EXPS\r\n", b"250 OK\r\n", b"", request, request,
                request[:23], b"12345678", bytes(17), b"12345678"]  # fmt: skip
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    off = np.cumsum([0] + [len(p) for p in payloads[:-1]]).astype(np.int64)
    plen = np.array([len(p) for p in payloads], dtype=np.int64)
    proto = np.array([6, 17, 6, 6, 6, 6, 6, 6, 6, 17, 17, 17], dtype=np.int64)
    sport = np.array([1024, 53] + [1024] * 9 + [53], dtype=np.int64)
    dport = np.full(len(payloads), 50000, dtype=np.int64)
    pay = np.flatnonzero(plen > 0)
    args = (off, plen, proto, sport, dport, b"250-", 8, bytes((5, 0, 0)), 24, 16, 1024)
    replies, requests, datagrams = later_looks(data, pay, np.array([0, 7], dtype=np.int64), *args)
    assert (replies.tolist(), requests.tolist(), datagrams.tolist()) == ([3], [6, 7], [9])
    assert all(found.size == 0 for found in later_looks(data, pay[:0], pay[:0], *args))


def test_waiting_flows_behave_as_an_ordered_dict_and_keep_the_follow_counts() -> None:
    """Random batches of starts, ends, pops, expiries and drops, checked step by step against
    an OrderedDict (the structure the table replaces); hashes collide in their home slots and
    the table grows past its first size. The per-slot follow counts match the flows left."""
    rng = np.random.default_rng(7)
    followed = np.zeros(1 << 6, dtype=np.uint16)
    table, model, now, largest = WaitingFlows(followed), OrderedDict(), 0, 0
    for _ in range(3000):
        op, h = rng.random(), rng.integers(1, 20_000, size=rng.integers(1, 60)).astype(np.uint64)
        if op < 0.6:
            ts = np.arange(now, now + h.size, dtype=np.int64)
            now += h.size
            started = table.start(h, h * 3, ts, (h % 7).astype(np.int64), (h % 5).astype(np.int64))
            expected = []
            for x, t in zip(h.tolist(), ts.tolist()):
                expected.append(x not in model)
                model.setdefault(x, (x * 3, t, x % 7, x % 5))
            assert started.tolist() == expected
        elif op < 0.85:
            assert table.end(h).tolist() == [model.pop(x, None) is not None for x in h.tolist()]
        elif op < 0.9:
            assert table.pop(int(h[0])) == model.pop(int(h[0]), None)
        elif op < 0.95:
            cut, gone = now - int(rng.integers(2_000, 40_000)), 0
            while model and next(iter(model.values()))[1] < cut:
                model.popitem(last=False)
                gone += 1
            assert table.expire(cut) == gone
        else:
            n = int(rng.integers(0, 10))
            gone = min(n, len(model))
            for _ in range(gone):
                model.popitem(last=False)
            assert table.drop_oldest(n) == gone
        assert len(table) == len(model)
        largest = max(largest, len(table))
    assert largest > 4096  # the table grew (it starts with 4096 slots, at most half full)
    assert all(x in table for x in model) and 20_001 not in table
    assert followed.tolist() == np.bincount(np.array(list(model), dtype=np.int64) & 63, minlength=64).tolist()


def test_flow_index_joins_rows_to_the_flow_whose_key_and_span_fit() -> None:
    """Two flows share a key (reused after an idle gap), one has its own: each row goes to the
    flow of its key whose span holds it; rows between spans, of another check or of an unknown
    key go nowhere (worked out by hand)."""
    cols = np.zeros((len(COLUMNS), 3), dtype=np.int64)
    for name, values in (("hash", [1, 2, 1]), ("check", [10, 20, 10]), ("first_ns", [0, 0, 20]), ("last_ns", [10, 5, 30])):
        cols[COLUMNS.index(name)] = values
    index = FlowIndex(Records(cols))
    h = np.array([1, 1, 1, 2, 2, 3, 2], dtype=np.uint64)
    check = np.array([10, 10, 10, 20, 20, 30, 21], dtype=np.uint64)
    ts = np.array([5, 25, 15, 3, 9, 1, 3], dtype=np.int64)
    assert index.flows(h, check, ts).tolist() == [0, 2, -1, 1, -1, -1, -1]


def _first_payload_capture(path: Path, payloads: list[tuple[int, bytes]], sender: str = "s") -> Path:
    """One TCP connection per (server port, first payload of ``sender``: "s" server, "c"
    client), a millisecond apart, all in one read batch."""
    fx = load_script()
    convs = [fx.Conversation(f"10.0.1.{60 + k}", 1600 + k, fx.BACKEND, port, "tcp", [fx.Msg(sender, p)])
             for k, (port, p) in enumerate(payloads)]  # fmt: skip
    net = fx.Net(fx.SEED)
    pkts = sorted((p for k, c in enumerate(convs) for p in fx.mf.tcp_conversation(net, c, fx.T0 + k * 1_000_000)), key=lambda p: p.ts_ns)
    path.write_bytes(fx.mf.pcap_file(fx.mf.records(pkts, fx.mf.eth), fx.mf.LINKTYPE_ETHERNET))
    return path


def _old_digest_sum(payload: bytes) -> int:
    """The digest that first_looks kept before verdicts were checked against bytes (its weighted
    sum of the first 192 bytes' little-endian words; length, ports and the final shift were mixed
    in after, the same for two payloads of one length on one port)."""
    head = payload[:192].ljust(192, b"\0")
    return sum(int.from_bytes(head[8 * k : 8 * k + 8], "little") * (((k + 1) * 0x9E3779B97F4A7C15 & _U64) | 1)
               for k in range(24)) & _U64  # fmt: skip


_U64 = (1 << 64) - 1
POP3_GREETING = b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 (exch01.example.com) ready.\r\n"


def test_a_payload_colliding_with_another_under_the_old_digest_gets_its_own_verdict(tmp_path: Path) -> None:
    """The old digest is linear in the words of the first 192 bytes, so a collision is built by
    hand: a TPKT connection request in word 0, word 14 chosen to cancel the difference. On
    tcp/110 it is a port-mismatch; the POP3 greeting after it, same length, is POP3."""
    pop3 = POP3_GREETING.ljust(120, b"x")
    tpkt = bytearray(pop3)
    tpkt[:8] = bytes([3, 0, 0, 120, 115, 0xE0, 0, 0])  # TPKT v3, length 120; COTP LI 115, CR
    weight = [((k + 1) * 0x9E3779B97F4A7C15 & _U64) | 1 for k in range(24)]
    diff = (int.from_bytes(tpkt[:8], "little") - int.from_bytes(pop3[:8], "little")) * weight[0]
    word14 = (int.from_bytes(pop3[112:120], "little") - diff * pow(weight[14], -1, 1 << 64)) & _U64
    tpkt[112:120] = word14.to_bytes(8, "little")
    assert _old_digest_sum(bytes(tpkt)) == _old_digest_sum(pop3) and bytes(tpkt) != pop3
    path = _first_payload_capture(tmp_path / "collide.pcap", [(110, bytes(tpkt)), (110, pop3)])
    flows = decided(pcapclass.classify_file(path, servers=SERVERS).flows)
    assert flows[("10.0.1.60", 1600, 110)][1:3] == ("port-mismatch", "tpkt on tcp/110")
    assert flows[("10.0.1.61", 1601, 110)][1:3] == ("signature", "exchange-pop3")  # the greeting names Microsoft Exchange


def test_forgetting_remembered_payloads_inside_a_batch_gives_no_other_payload_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Three greetings in one batch with room for two remembered payloads: the memory is
    forgotten while the third is added, and each flow still keeps its own greeting's verdict.
    Greetings are decided by their compiled facts; HTTP requests, parsed in Python, are what
    is remembered, and they too keep their own verdicts."""
    monkeypatch.setattr(payload_memo, "MAX_PAYLOADS", 2)
    requests = [b"GET /exchange/jo/ HTTP/1.1\r\n\r\n", b"GET /public/x HTTP/1.1\r\n\r\n", b"GET /ExAdmin/ HTTP/1.1\r\n\r\n"]
    path = _first_payload_capture(tmp_path / "three_requests.pcap", [(80, r) for r in requests], sender="c")
    flows = decided(pcapclass.classify_file(path, servers=SERVERS).flows)
    assert [flows[(f"10.0.1.{60 + k}", 1600 + k, 80)][:3] for k in range(3)] == [
        ("www", "http", "owa"), ("www", "http", "public-folders"), ("www", "http", "admin"),
    ]  # fmt: skip
    path = _first_payload_capture(tmp_path / "three.pcap", [
        (110, b"+OK POP3 server ready\r\n"), (143, b"* OK IMAP4rev1 server ready\r\n"), (119, b"200 NNTP Service ready\r\n"),
    ])  # fmt: skip
    flows = decided(pcapclass.classify_file(path, servers=SERVERS).flows)
    assert [flows[(f"10.0.1.{60 + k}", 1600 + k, port)][:3] for k, port in enumerate((110, 143, 119))] == [
        ("pop3", "signature", "pop3"), ("imap4", "signature", "imap"), ("nntp", "signature", "nntp"),
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_digest_shared_by_every_payload_changes_no_verdict(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With deciding_bytes' digest forced to one value for every payload, verdicts are still
    those of each payload's own bytes: a digest only finds candidates, the bytes decide."""
    real = first_payloads_module.SIGNATURE_TABLES

    class Colliding:
        first_facts = real.first_facts

        def deciding_bytes(self, *args: object) -> tuple[np.ndarray, ...]:
            buf, off, length, group = real.deciding_bytes(*args)
            return buf, off, length, np.full_like(group, 12345)

    monkeypatch.setattr(first_payloads_module, "SIGNATURE_TABLES", Colliding())
    result = pcapclass.classify_file(EVIDENCE / name, servers=SERVERS)
    assert decided(result.flows) == EXPECTED[name]


def _capture(path: Path, convs: list) -> Path:
    """The conversations, one a millisecond after the other, as an Ethernet pcap."""
    fx = load_script()
    net = fx.Net(fx.SEED)
    build = {"tcp": fx.mf.tcp_conversation, "udp": fx.mf.udp_conversation}
    pkts = sorted((p for k, c in enumerate(convs) for p in build[c.transport](net, c, fx.T0 + k * 1_000_000)), key=lambda p: p.ts_ns)
    path.write_bytes(fx.mf.pcap_file(fx.mf.records(pkts, fx.mf.eth), fx.mf.LINKTYPE_ETHERNET))
    return path


def test_rpc_over_http_under_any_virtual_directory_over_ipv6(tmp_path: Path) -> None:
    """MS-RPCH requests over IPv6 to the proxy under /rpcwithcert/ (certificate authentication),
    under a reverse proxy's own directory, and to a path that is not the proxy's file: all RPC
    over HTTP; only the proxy's file carries the port, which names the service behind it."""
    fx = load_script()
    client, proxy = fx.mf.CLIENT6, fx.mf.BACKEND6

    def request(port: int, method: str, target: str) -> object:
        return fx.Conversation(client, port, proxy, 443 if port == 1403 else 80, "tcp", [
            fx.Msg("c", fx.http_request(method, target, "Accept: application/rpc", "User-Agent: MSRPC", "Content-Length: 76")),
            fx.Msg("s", fx.mf.crlf("HTTP/1.1 200 Success", "Content-Type: application/rpc", "")),
        ])  # fmt: skip

    path = _capture(tmp_path / "rpch6.pcap", [
        request(1401, "RPC_IN_DATA", "/rpcwithcert/rpcproxy.dll?exch01.corp.example:6001"),
        request(1402, "RPC_OUT_DATA", "/Outlook/RpcProxy.dll?[fd00:0:0:10::10]:6004"),
        request(1404, "RPC_IN_DATA", "/owa-gateway/session"),
    ])  # fmt: skip
    flows = decided(pcapclass.classify_file(path, servers=(proxy,)).flows)
    assert flows[(client, 1401, 80)] == ("information-store", "rpc-http", "rpc-http:6001", "")
    assert flows[(client, 1402, 80)] == ("system-attendant", "rpc-http", "rpc-http:6004", "")
    assert flows[(client, 1404, 80)] == ("www", "rpc-http", "rpc-http:unknown-port", "")


def _midstream(fx: object, client: str, cport: int, port: int) -> object:
    """Outlook's MAPI connection seen from the middle: EcDoRpc (opnum 2) requests and their
    responses, stubs encrypted (opaque bytes); its bind came before the capture."""
    opaque = bytes(range(0x80, 0x80 + 96))
    return fx.Conversation(client, cport, fx.BACKEND, port, "tcp", [  # type: ignore[attr-defined]
        fx.Msg("c", fx.mf.dce_request(41, 2, opaque)), fx.Msg("s", fx.mf.dce_response(41, opaque)),  # type: ignore[attr-defined]
        fx.Msg("c", fx.mf.dce_request(42, 2, opaque)), fx.Msg("s", fx.mf.dce_response(42, opaque)),  # type: ignore[attr-defined]
    ])  # fmt: skip


def test_a_mapi_connection_seen_mid_stream(tmp_path: Path) -> None:
    """Without a bind anywhere, the connection is DCE/RPC to an Exchange server's dynamic port:
    the rules' unnamed-RPC service (the store), no interface. With a bind to EMSMDB on an earlier
    connection to the same port, the bind names the port's interface for it (evidence epm,
    detail bound-elsewhere)."""
    fx = load_script()
    path = _capture(tmp_path / "midstream.pcap", [
        _midstream(fx, "10.0.1.40", 1401, 1050),
        fx.Conversation("10.0.1.41", 1402, fx.BACKEND, 1051, "tcp", [
            fx.Msg("c", fx.mf.dce_bind(1, fx.EMSMDB, 0, 81)), fx.Msg("s", fx.mf.dce_bind_ack(1, "1051", 0x55))]),
        _midstream(fx, "10.0.1.42", 1403, 1051),
    ])  # fmt: skip
    flows = decided(pcapclass.classify_file(path, servers=SERVERS).flows)
    assert flows[("10.0.1.40", 1401, 1050)] == ("information-store", "dcerpc", "request opnum 2", "")
    assert flows[("10.0.1.41", 1402, 1051)] == ("information-store", "bind", "", "EMSMDB (MAPI)")
    assert flows[("10.0.1.42", 1403, 1051)] == ("information-store", "epm", "bound-elsewhere", "EMSMDB (MAPI)")


def test_a_mid_stream_rpc_session_makes_the_store_s_datagram_a_notification(tmp_path: Path) -> None:
    """An 8-byte UDP datagram from the store's high port to a client holding a mid-stream MAPI
    connection with it is a new-mail notification; the same datagram to a host with no RPC
    session and no registration stays other."""
    fx = load_script()
    blob = bytes.fromhex("0102030405060708")
    path = _capture(tmp_path / "notify.pcap", [
        _midstream(fx, "10.0.1.43", 1404, 1052),
        fx.Conversation(fx.BACKEND, 3101, "10.0.1.43", 1061, "udp", [fx.Msg("c", blob)]),
        fx.Conversation(fx.BACKEND, 3102, "10.0.1.44", 1062, "udp", [fx.Msg("c", blob)]),
    ])  # fmt: skip
    flows = decided(pcapclass.classify_file(path, servers=SERVERS).flows)
    assert flows[(fx.BACKEND, 3101, 1061)] == ("information-store", "heuristic", "new-mail-notification", "")
    assert flows[(fx.BACKEND, 3102, 1062)] == ("other", "none", "", "")


def test_a_datagram_that_the_client_s_request_follows_at_once_is_a_notification(tmp_path: Path) -> None:
    """No registration and no RPC session seen: the store's 8-byte datagram to 10.0.1.45, then
    (1 ms later) that client's DCE/RPC request to the store, is a notification, whether the
    two are read in one batch or in two; the same datagram to 10.0.1.46, which sends nothing,
    and to 10.0.1.47, whose request came before it, stay other."""
    fx = load_script()
    blob = bytes.fromhex("d027270278010900")  # mapi.pcap frame 564's payload
    request = fx.mf.dce_request(7, 2, bytes(range(0x80, 0x80 + 64)))

    def call(client: str, cport: int) -> object:
        return fx.Conversation(client, cport, fx.BACKEND, 1053, "tcp", [fx.Msg("c", request)])

    # one conversation a millisecond; a call's request goes 1.8 ms after its start (handshake first)
    path = _capture(tmp_path / "timed.pcap", [
        call("10.0.1.47", 1407),
        fx.Conversation(fx.BACKEND, 3103, "10.0.1.45", 1063, "udp", [fx.Msg("c", blob)]),
        call("10.0.1.45", 1405),
        fx.Conversation(fx.BACKEND, 3104, "10.0.1.46", 1064, "udp", [fx.Msg("c", blob)]),
        fx.Conversation(fx.BACKEND, 3105, "10.0.1.47", 1065, "udp", [fx.Msg("c", blob)]),
    ])  # fmt: skip
    whole = pcapclass.classify_file(path, servers=SERVERS).flows
    # cut into files of one packet each (a ring buffer read as one capture): the datagram waits
    # for the request of a later batch, as at the end of a 4 MiB batch or of a live tick
    ring = tmp_path / "ring"
    ring.mkdir()
    subprocess.run(["editcap", "-c", "1", str(path), str(ring / "timed.pcap")], check=True)
    pieces = pcapclass.classify_file(ring, servers=SERVERS)
    assert len(pieces.captures) == len(list(ring.iterdir())) > 10  # one batch each
    for flows in (decided(whole), decided(pieces.flows)):
        assert flows[(fx.BACKEND, 3103, 1063)] == ("information-store", "heuristic", "new-mail-notification", "")
        assert flows[(fx.BACKEND, 3104, 1064)] == ("other", "none", "", "")
        assert flows[(fx.BACKEND, 3105, 1065)] == ("other", "none", "", "")
