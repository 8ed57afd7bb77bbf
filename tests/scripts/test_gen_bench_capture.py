"""The benchmark capture generator writes what tshark (the oracle) reads as we claim."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_bench_capture.py"
N = 2000

@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory, tshark: str) -> Path:
    """2,000 packets over 200 flows (``tshark``: conftest fails, never skips, without it)."""
    out = tmp_path_factory.mktemp("bench") / "bench.pcap"
    subprocess.run([sys.executable, str(SCRIPT), str(out), "--packets", str(N), "--flows", "200",
                    "--seed", "7", "--quiet"], check=True, timeout=120)
    return out


def _tshark_fields(path: Path, *fields: str) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=/t"]
    for f in fields:
        cmd += ["-e", f]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    return [line.split("\t") for line in res.stdout.splitlines()]


def test_file_header_is_classic_le_microsecond_ethernet(capture: Path) -> None:
    magic, major, minor, _, _, snaplen, linktype = struct.unpack(
        "<IHHiIII", capture.read_bytes()[:24])
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    assert snaplen >= 65535


def test_tshark_reads_every_packet_as_tcp_or_udp(capture: Path) -> None:
    rows = _tshark_fields(capture, "frame.number", "frame.protocols", "frame.len", "frame.cap_len",
                          "ip.len", "ip.hdr_len", "ipv6.plen", "tcp.len", "udp.length",
                          "frame.time_epoch", "ip.checksum.status")
    assert len(rows) == N
    t_prev = 0.0
    kinds = {"tcp": 0, "udp": 0, "ipv6": 0, "vlan": 0}
    for (num, protos, flen, caplen, ip_len, ip_hl, v6_plen, tcp_len, udp_len, ts, _) in rows:
        layers = protos.split(":")
        assert layers[0] == "eth", (num, protos)
        assert ("tcp" in layers) != ("udp" in layers), (num, protos)
        assert flen == caplen and 60 <= int(flen) <= 1518, (num, flen)
        # IPv4 header length and total length agree with the frame (frames < 60 are padded)
        l2 = 18 if "vlan" in layers else 14
        if ip_len:
            assert ip_hl == "20"
            l4 = 20 + int(tcp_len) if tcp_len else int(udp_len)
            assert int(ip_len) == 20 + l4, num
            assert int(flen) == max(60, l2 + int(ip_len)), num
        else:
            assert "ipv6" in layers and v6_plen, (num, protos)
            assert int(flen) == max(60, l2 + 40 + int(v6_plen)), num
        t = float(ts)
        assert t > t_prev, num  # strictly increasing timestamps
        t_prev = t
        for k in kinds:
            kinds[k] += k in layers
    # the mix the benchmark promises (loose bounds: 2,000 packets is a small sample)
    assert kinds["tcp"] + kinds["udp"] == N
    assert 0.03 * N < kinds["udp"] < 0.25 * N
    assert 0.03 * N < kinds["ipv6"] < 0.25 * N
    assert 0.03 * N < kinds["vlan"] < 0.25 * N


def test_ipv4_header_checksums_are_valid(capture: Path) -> None:
    res = subprocess.run(["tshark", "-n", "-r", str(capture), "-o", "ip.check_checksum:TRUE",
                          "-Y", "ip && ip.checksum.status != 1", "-T", "fields", "-e", "frame.number"],
                         check=True, capture_output=True, text=True, timeout=300)
    assert res.stdout.split() == []  # status 1 = good (0 bad, 2 unverified)


def test_tcp_flows_start_with_handshake_and_sequence_numbers_are_consistent(capture: Path) -> None:
    rows = _tshark_fields(capture, "tcp.stream", "tcp.flags", "tcp.analysis.lost_segment",
                          "tcp.analysis.ack_lost_segment", "tcp.analysis.out_of_order",
                          "tcp.analysis.retransmission", "ip.src", "ipv6.src", "udp.dstport")
    first_flags: dict[str, str] = {}
    for stream, flags, lost, ack_lost, ooo, retrans, *_ in rows:
        if stream == "":
            continue
        first_flags.setdefault(stream, flags)
        assert not (lost or ack_lost or ooo or retrans), (stream, flags)
    assert first_flags and all(int(f, 16) == 0x02 for f in first_flags.values())
    assert len(first_flags) >= 200  # at least one TCP flow per slot, most slots TCP


def test_exchange_port_mix_and_signatures(capture: Path) -> None:
    rows = _tshark_fields(capture, "tcp.dstport", "udp.dstport", "tcp.flags", "dcerpc.cn_bind_to_uuid")
    syn_ports = {int(p) for p, _, fl, _ in rows if p and int(fl, 16) == 0x02}
    assert {135, 25, 80, 443} <= syn_ports
    assert len(syn_ports & {102, 691, 110, 995, 143, 993, 119, 563, 379, 389, 445,
                            6001, 6002, 6004, 593}) >= 8
    assert any(1025 <= p <= 5000 for p in syn_ports)
    udp_ports = {int(u) for _, u, _, _ in rows if u}
    assert 53 in udp_ports
    binds = {b for *_, b in rows if b}
    assert binds  # DCE/RPC binds are dissected as such


def test_same_seed_same_bytes(tmp_path: Path, capture: Path) -> None:
    again = tmp_path / "again.pcap"
    subprocess.run([sys.executable, str(SCRIPT), str(again), "--packets", str(N), "--flows", "200",
                    "--seed", "7", "--quiet"], check=True, timeout=120)
    assert again.read_bytes() == capture.read_bytes()
