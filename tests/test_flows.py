"""The flow table on hand-built packets: counts, ends of flows and the cap, computed by hand."""

from __future__ import annotations

import numpy as np

from pcapclass.decode import Packets, Status
from pcapclass.flows import CLOSED_GRACE_NS, FlowKeys, FlowTable, flow_keys

S = 1_000_000_000
CLIENT, SERVER = 0xFFFF_0A00_0001, 0xFFFF_0A00_0002  # ::ffff:10.0.0.1, ::ffff:10.0.0.2
SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def packets(rows: list[tuple[int, bool, int, int]], sport: int = 40000, dport: int = 25, proto: int = 6) -> Packets:
    """One TCP conversation: (time ns, from the client?, frame length, TCP flags) per packet."""
    n = len(rows)
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    c2s = np.array([r[1] for r in rows])
    z64 = np.zeros(n, dtype=np.uint64)
    return Packets(
        ts_ns=ts,
        wirelen=np.array([r[2] for r in rows], dtype=np.int64),
        status=np.full(n, Status.FLOW, dtype=np.uint8),
        proto=np.full(n, proto, dtype=np.int64),
        src_hi=z64,
        src_lo=np.where(c2s, CLIENT, SERVER).astype(np.uint64),
        dst_hi=z64,
        dst_lo=np.where(c2s, SERVER, CLIENT).astype(np.uint64),
        sport=np.where(c2s, sport, dport).astype(np.int64),
        dport=np.where(c2s, dport, sport).astype(np.int64),
        tcp_flags=np.array([r[3] for r in rows], dtype=np.int64),
        payload_off=np.zeros(n, dtype=np.int64),
        payload_len=np.zeros(n, dtype=np.int64),
    )


def finished(table: FlowTable) -> list[dict[str, int]]:
    recs = table.drain_all()
    order = np.argsort(recs["first_ns"], kind="stable")
    names = ("first_ns", "last_ns", "packets_ab", "bytes_ab", "packets_ba", "bytes_ba", "syn_a_ns", "syn_b_ns")
    return [{k: int(recs[k][i]) for k in names} for i in order]


def test_both_directions_meet_in_one_record_with_per_side_counts():
    table = FlowTable()
    table.update(packets([(1 * S, True, 60, SYN), (2 * S, False, 60, SYN | ACK), (3 * S, True, 100, ACK)]))
    (rec,) = finished(table)
    # endpoint A is the lower address: the client 10.0.0.1
    assert (rec["packets_ab"], rec["bytes_ab"], rec["packets_ba"], rec["bytes_ba"]) == (2, 160, 1, 60)
    assert (rec["first_ns"], rec["last_ns"], rec["syn_a_ns"]) == (1 * S, 3 * S, 1 * S)
    assert rec["syn_b_ns"] == np.iinfo(np.int64).max  # a SYN+ACK is not a pure SYN


def test_idle_gap_starts_a_new_record():
    table = FlowTable(idle_timeout_ns=10 * S)
    table.update(packets([(0, True, 60, ACK), (10 * S, False, 60, ACK), (21 * S, True, 60, ACK)]))
    assert [(r["first_ns"], r["last_ns"]) for r in finished(table)] == [(0, 10 * S), (21 * S, 21 * S)]


def test_closed_flow_ends_after_the_grace_time_not_before():
    grace = CLOSED_GRACE_NS
    table = FlowTable()
    conv = [(0, True, 60, SYN), (1, False, 60, SYN | ACK), (2, True, 60, FIN | ACK), (3, False, 60, FIN | ACK)]
    # a last ACK inside the grace time belongs to the flow; one after it starts a new record
    table.update(packets([*conv, (3 + grace, True, 60, ACK), (3 + 2 * grace + 1, True, 60, ACK)]))
    assert [(r["packets_ab"] + r["packets_ba"]) for r in finished(table)] == [5, 1]


def test_reset_flow_ends_too_and_udp_never_closes():
    table = FlowTable()
    table.update(packets([(0, True, 60, RST), (CLOSED_GRACE_NS + 1, True, 60, ACK)]))
    assert len(finished(table)) == 2
    table = FlowTable()
    table.update(packets([(0, True, 60, RST), (CLOSED_GRACE_NS + 1, True, 60, RST)], proto=17))
    assert len(finished(table)) == 1


def test_drain_all_hands_over_the_ended_flows_then_the_open_ones_once():
    table = FlowTable()
    # the reset flow ends when its key comes back after the grace time; the new one stays open
    table.update(packets([(0, True, 60, RST), (CLOSED_GRACE_NS + 1, True, 70, ACK)]))
    assert (table.finished, len(table)) == (1, 1)
    recs = table.drain_all()
    assert recs["first_ns"].tolist() == [0, CLOSED_GRACE_NS + 1]
    assert recs["bytes_ab"].tolist() == [60, 70]
    assert (table.finished, len(table), len(table.drain_all())) == (0, 0, 0)


def test_cap_pushes_out_the_least_recently_seen_and_counts_them():
    table = FlowTable(max_flows=3)
    for port in range(40000, 40010):  # ten flows, one packet each, later ports later
        table.update(packets([((port - 40000) * S, True, 60, ACK)], sport=port))
    assert len(table) <= 3
    assert table.stats.flows_exported_early == 10 - 3
    recs = finished(table)
    assert len(recs) == 10 and sum(r["packets_ab"] for r in recs) == 10


def test_a_clash_of_the_first_hash_alone_keeps_flows_apart_and_is_counted():
    pk = packets([(0, True, 60, ACK), (1, True, 70, ACK)])
    pk2 = packets([(2, True, 80, ACK)], sport=40001)
    k, k2 = flow_keys(pk), flow_keys(pk2)
    forged = FlowKeys(k.hash[:1], k2.check, k2.proto, k2.a_hi, k2.a_lo, k2.b_hi, k2.b_lo, k2.port_a, k2.port_b, k2.from_a)
    table = FlowTable()
    table.update(pk, k)
    table.update(pk2, forged)
    assert table.stats.hash_collisions == 1
    assert sorted(r["bytes_ab"] + r["bytes_ba"] for r in finished(table)) == [80, 130]
