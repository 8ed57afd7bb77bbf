"""Tests for pcapclass.evidence.anomalies: each counter of what the payload stage drops or cannot
do, triggered on captures built with scapy (scripts/make_evidence_fixtures.py) whose count is
known by construction, and zero on the ordinary fixtures."""

from __future__ import annotations

import struct
import uuid
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
from test_evidence import EVIDENCE, EXPECTED, PAYLOADS, SERVERS, load_script

import pcapclass.evidence.binds as binds_module
import pcapclass.evidence.epm as epm_module
import pcapclass.evidence.following as following_module
import pcapclass.evidence.registrations as registrations_module
from pcapclass import notification_timing, payload_memo, schema
from pcapclass.accounting import CaptureCounts
from pcapclass.api import Classifier
from pcapclass.cli import main
from pcapclass.evidence.anomalies import EvidenceAnomalies, take

COUNTERS = [f.name for f in fields(EvidenceAnomalies)]
fx = load_script()
mf = fx.mf


def counted(path: Path, **options: object) -> dict[str, int]:
    """The payload stage's counters of ``path``'s capture row."""
    clf = Classifier(servers=SERVERS, **options)  # type: ignore[arg-type]
    counts = clf.read(path)
    return {name: getattr(counts, name) for name in COUNTERS}


def only(**expected: int) -> dict[str, int]:
    """Every counter zero but ``expected``."""
    return {name: expected.get(name, 0) for name in COUNTERS}


def capture(path: Path, convs: list, gap_ns: int = 1_000_000, starts: list[int] | None = None) -> Path:
    """The conversations, ``gap_ns`` apart (or at ``starts``, ns after T0), as an Ethernet pcap."""
    net = fx.Net(fx.SEED)
    build = {"tcp": mf.tcp_conversation, "udp": mf.udp_conversation}
    at = starts if starts is not None else [k * gap_ns for k in range(len(convs))]
    pkts = sorted((p for c, t in zip(convs, at) for p in build[c.transport](net, c, fx.T0 + t)), key=lambda p: p.ts_ns)
    path.write_bytes(mf.pcap_file(mf.records(pkts, mf.eth), mf.LINKTYPE_ETHERNET))
    return path


def cut(pdu: bytes, n: int) -> bytes:
    """The first ``n`` bytes of a little-endian PDU, its frag_length saying ``n``: a whole PDU
    whose content stops short."""
    return pdu[:8] + struct.pack("<H", n) + pdu[10:n]


def epm_conversation(k: int, msgs: list) -> object:
    return fx.Conversation(f"10.0.2.{10 + k}", 2000 + k, fx.BACKEND, 135, "tcp", msgs)


def epm_binds(k: int) -> list:
    return [fx.Msg("c", mf.dce_bind(1, fx.EPM, 3, 0)), fx.Msg("s", mf.dce_bind_ack(1, "135", 0x1234))]


@pytest.mark.parametrize("path", [EVIDENCE / name for name in sorted(EXPECTED)] + [PAYLOADS / "mapi.pcap", PAYLOADS / "zeek-aduser1.pcap"],
                         ids=lambda p: p.name)  # fmt: skip
def test_ordinary_captures_count_nothing(path: Path) -> None:
    assert counted(path) == only()


def test_binds_cut_short_are_counted_per_payload(tmp_path: Path) -> None:
    """Five connections to the store's port whose first payload is a bind cut inside its
    context list (three of them byte for byte the same: looked at once, counted three times),
    two whose bind is whole, and one endpoint-mapper connection (followed) whose later
    alter_context is cut short: six binds that do not parse."""
    short = [cut(mf.dce_bind(1 + (k if k >= 3 else 0), fx.EMSMDB, 0, 81), 40) for k in range(5)]
    assert len(set(short)) == 3
    convs = [fx.Conversation(f"10.0.2.{k}", 2100 + k, fx.BACKEND, 1032, "tcp", [fx.Msg("c", b)]) for k, b in enumerate(short)]
    convs += [fx.Conversation(f"10.0.2.{k}", 2100 + k, fx.BACKEND, 1032, "tcp", [fx.Msg("c", mf.dce_bind(k, fx.EMSMDB, 0, 81))])
              for k in (5, 6)]  # fmt: skip
    convs.append(epm_conversation(7, [*epm_binds(7), fx.Msg("c", cut(fx.alter_context(2, fx.EMSMDB, 0, 81), 44))]))
    path = capture(tmp_path / "short_binds.pcap", convs)
    assert counted(path) == only(dcerpc_pdus_unparsed=6)


def test_calls_of_followed_flows_too_short_for_their_header_do_not_parse(tmp_path: Path) -> None:
    """Two endpoint-mapper connections whose ept_map request and reply each say a fragment of
    20 bytes, short of the 24 a request or response header takes: four PDUs that do not parse."""
    convs = [epm_conversation(k, [*epm_binds(k), fx.Msg("c", cut(mf.ept_map_request(2, fx.EMSMDB, 0, 81), 20)),
                                  fx.Msg("s", cut(mf.ept_map_response(2, fx.EMSMDB, 0, 81, 1040, fx.BACKEND), 20))]) for k in range(2)]  # fmt: skip
    assert counted(capture(tmp_path / "short_calls.pcap", convs)) == only(dcerpc_pdus_unparsed=4)


def test_epm_replies_and_registrations_that_do_not_parse(tmp_path: Path) -> None:
    """Three ept_map replies whose stub stops inside the tower array, one whole; two push
    registrations whose stub stops before the callback address, one whole."""
    def epm(k: int, whole: bool) -> object:
        reply = mf.ept_map_response(2, fx.EMSMDB, 0, 81, 1040 + k, fx.BACKEND)
        return epm_conversation(k, [*epm_binds(k), fx.Msg("c", mf.ept_map_request(2, fx.EMSMDB, 0, 81)),
                                    fx.Msg("s", reply if whole else cut(reply, 24 + 8 + 20 + 16 + 6))])  # fmt: skip

    def registration(k: int, whole: bool) -> object:
        stub = fx.mf.register_push_stub(fx.NOTIFY_BLOB, "10.0.2.40", 1054 + k, handle=0x11)
        return fx.Conversation(f"10.0.2.{40 + k}", 2200 + k, fx.BACKEND, 1032, "tcp", [
            fx.Msg("c", mf.dce_bind(1, fx.EMSMDB, 0, 81)), fx.Msg("s", mf.dce_bind_ack(1, "1032", 0x77)),
            fx.Msg("c", mf.dce_request(3, 4, stub if whole else stub[:40]))])  # fmt: skip

    path = capture(tmp_path / "short_stubs.pcap", [epm(0, True), epm(1, False), epm(2, False), epm(3, False),
                                                   registration(0, True), registration(1, False), registration(2, False)])  # fmt: skip
    assert counted(path) == only(epm_replies_unparsed=3, registrations_unparsed=2)


def test_replies_to_other_endpoint_mapper_calls_are_not_unparsed_epm_replies(tmp_path: Path) -> None:
    """ept_lookup_handle_free (opnum 4) and its reply (the handle, the status) carry no towers:
    no reply that did not parse."""
    convs = [epm_conversation(k, [*epm_binds(k), fx.Msg("c", mf.dce_request(2, 4, bytes(20))), fx.Msg("s", mf.dce_response(2, bytes(24)))])
             for k in range(3)]  # fmt: skip
    assert counted(capture(tmp_path / "handle_free.pcap", convs)) == only()


def test_streams_that_stop_looking_like_dcerpc_are_given_up(tmp_path: Path) -> None:
    """Four followed connections whose second client segment is an ept_map request followed by
    bytes that are no PDU header: four streams given up; a fifth sends the request alone."""
    request = mf.ept_map_request(2, fx.EMSMDB, 0, 81)
    convs = [epm_conversation(k, [*epm_binds(k), fx.Msg("c", request + (b"GET / HTTP/1.1\r\n" if k < 4 else b""))]) for k in range(5)]
    assert counted(capture(tmp_path / "broken.pcap", convs)) == only(rpc_reassembly_abandoned=4)


def test_followed_flows_past_the_cap_are_evicted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five endpoint-mapper connections bind one after another, all followed at once: with room
    for two, three are let go."""
    path = capture(tmp_path / "binds.pcap", [epm_conversation(k, epm_binds(k)) for k in range(5)])
    assert counted(path) == only()
    monkeypatch.setattr(following_module, "MAX_TRACKED_FLOWS", 2)
    assert counted(path) == only(followed_flows_evicted=3)


def test_followed_flows_idle_past_the_timeout_expire(tmp_path: Path) -> None:
    """Four endpoint-mapper connections bind, then nothing of theirs comes; ten seconds later
    another host's payload: with a 5 s idle timeout the four expire, with 60 s none does."""
    later = fx.Conversation("10.0.2.60", 2300, fx.BACKEND, 25, "tcp", [fx.Msg("s", b"220 mail ESMTP ready\r\n")])
    path = capture(tmp_path / "idle.pcap", [*(epm_conversation(k, epm_binds(k)) for k in range(4)), later],
                   starts=[0, 1_000_000, 2_000_000, 3_000_000, 10_000_000_000])  # fmt: skip
    assert counted(path, idle_timeout=60.0) == only()
    assert counted(path, idle_timeout=5.0) == only(followed_flows_expired=4)


def test_learned_tables_past_their_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five ept_map replies naming five ports (the tower's address is the replying server: one
    entry each) and three registrations to three callback ports; with room for two entries and
    one callback, three entries and two registrations are pushed out."""
    convs = [epm_conversation(k, [*epm_binds(k), fx.Msg("c", mf.ept_map_request(2, fx.EMSMDB, 0, 81)),
                                  fx.Msg("s", mf.ept_map_response(2, fx.EMSMDB, 0, 81, 1040 + k, fx.BACKEND))]) for k in range(5)]  # fmt: skip
    convs += [fx.Conversation(f"10.0.2.{40 + k}", 2200 + k, fx.BACKEND, 1032, "tcp", [
        fx.Msg("c", mf.dce_bind(1, fx.EMSMDB, 0, 81)), fx.Msg("s", mf.dce_bind_ack(1, "1032", 0x77)),
        fx.Msg("c", mf.dce_request(3, 4, fx.mf.register_push_stub(fx.NOTIFY_BLOB, f"10.0.2.{40 + k}", 1054, handle=0x11)))]) for k in range(3)]  # fmt: skip
    path = capture(tmp_path / "tables.pcap", convs)
    assert counted(path) == only()
    monkeypatch.setattr(epm_module, "MAX_EPM_ENTRIES", 2)
    monkeypatch.setattr(registrations_module, "MAX_REGISTRATIONS", 1)
    assert counted(path) == only(epm_entries_evicted=3, registrations_evicted=2)


def test_remembered_payloads_forgotten_at_their_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten binds to ten different interfaces (ten distinct payloads looked at in Python): with
    room for four, the memo is emptied when the fifth and the ninth come, four payloads each;
    the binds' own cache likewise."""
    convs = [fx.Conversation(f"10.0.2.{k}", 2400 + k, fx.BACKEND, 1032, "tcp",
                             [fx.Msg("c", mf.dce_bind(1, str(uuid.UUID(int=0x1234_0000 + k)), 1, 0))]) for k in range(10)]  # fmt: skip
    path = capture(tmp_path / "distinct.pcap", convs)
    assert counted(path) == only()
    monkeypatch.setattr(payload_memo, "MAX_PAYLOADS", 4)
    assert counted(path) == only(payloads_forgotten=8)
    # the cache of parsed binds: emptied (of three) when it holds more than two, at the 4th, 7th and 10th
    monkeypatch.setattr(binds_module, "_CACHED_BINDS", 2)
    assert counted(path) == only(payloads_forgotten=8, binds_forgotten=9)


def test_waiting_datagrams_past_their_cap_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five 8-byte datagrams between high ports, no DCE/RPC request after any: with room for
    two waiting, three are dropped."""
    convs = [fx.Conversation(fx.BACKEND, 3100 + k, f"10.0.2.{k}", 1060 + k, "udp", [fx.Msg("c", fx.NOTIFY_BLOB)]) for k in range(5)]
    path = capture(tmp_path / "datagrams.pcap", convs)
    assert counted(path) == only()
    monkeypatch.setattr(notification_timing, "MAX_PENDING", 2)
    assert counted(path) == only(datagrams_dropped=3)


def test_counts_are_capture_csv_columns_per_capture(tmp_path: Path) -> None:
    """Each capture's row carries its own counts: the cut binds' capture its six, the ordinary
    one after it none (the collector's learned tables outlive a capture, its counts do not)."""
    short = [cut(mf.dce_bind(1 + k, fx.EMSMDB, 0, 81), 40) for k in range(3)]
    # a second before registration.pcap (which starts at T0): capture-time order puts it first
    # wherever the two files live (equal first times would go by path)
    path = capture(tmp_path / "short.pcap", [fx.Conversation(f"10.0.2.{k}", 2500 + k, fx.BACKEND, 1032, "tcp", [fx.Msg("c", b)])
                                             for k, b in enumerate(short)], starts=[-1_000_000_000 + k for k in range(3)])  # fmt: skip
    out = tmp_path / "out"
    assert main(["classify", str(path), str(EVIDENCE / "registration.pcap"), "-o", str(out), "-q"]) == 0
    rows = pd.read_csv(out / "capture.csv")
    assert list(rows.columns) == schema.names(schema.with_readable_times(schema.CAPTURE))
    assert rows[COUNTERS].to_dict("records") == [only(dcerpc_pdus_unparsed=3), only()]


def test_capture_counts_carry_every_counter() -> None:
    """Every counter is a column of capture.csv, and taking the counts starts them again from zero."""
    assert set(COUNTERS) <= set(schema.names(schema.CAPTURE))
    ev = EvidenceAnomalies(dcerpc_pdus_unparsed=2, payloads_forgotten=5)
    c = CaptureCounts(capture="x")
    c.add_evidence(take(ev))
    c.add_evidence(EvidenceAnomalies(dcerpc_pdus_unparsed=1))
    assert (c.dcerpc_pdus_unparsed, c.payloads_forgotten) == (3, 5)
    assert ev == EvidenceAnomalies()
