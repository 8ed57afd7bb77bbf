"""``pcapclass live`` on real traffic: two network namespaces joined by a veth pair, real
servers and clients, and tcpdump capturing the same interface as the reference."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from test_evidence import EVIDENCE, EXPECTED, SERVERS, decided

from pcapclass import schema
from pcapclass.cli import main
from pcapclass.live import LiveCapture
from pcapclass.sources import CaptureFile

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TRAFFIC = TESTS / "live_traffic.py"
SERVICE_PORTS = (25, 80, 110, 143, 2883)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and capture packets"
    for tool in ("ip", "tcpdump", "tshark", "dumpcap"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/test.sh installs it)"
    return None


needs_netns = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Pair:
    """A client and a server namespace; the capture runs on the client's end of the veth."""

    client_ns: str
    server_ns: str
    client_if: str
    client_addr: str
    server_addr: str

    def cmd(self, ns: str, *args: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *args]

    def pcapclass(self, *args: str) -> list[str]:
        return self.cmd(self.client_ns, sys.executable, "-m", "pcapclass", *args)


@pytest.fixture
def pair() -> Iterator[Pair]:
    """Fresh namespaces with unique names (so runs never collide), removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    p = Pair(f"pcc{tag}", f"pcs{tag}", f"pc{tag}c", "10.213.0.1", "10.213.0.2")
    server_if = f"pc{tag}s"
    try:
        _run("ip", "netns", "add", p.client_ns)
        _run("ip", "netns", "add", p.server_ns)
        _run("ip", "link", "add", p.client_if, "netns", p.client_ns, "type", "veth", "peer", "name", server_if, "netns", p.server_ns)
        for ns, dev, addr in ((p.client_ns, p.client_if, p.client_addr), (p.server_ns, server_if, p.server_addr)):
            # no IPv6: router solicitations would only add noise outside the conversations
            _run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        yield p
    finally:
        for ns in (p.client_ns, p.server_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)  # gone already is fine


@pytest.fixture
def servers(pair: Pair) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(pair.cmd(pair.server_ns, sys.executable, str(TRAFFIC), "serve", pair.server_addr),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _start_live(pair: Pair, outdir: Path, *args: str) -> subprocess.Popen[str]:
    """pcapclass live in the client namespace, returned once it captures (header of timeseries.csv)."""
    proc = subprocess.Popen(pair.pcapclass("live", "-i", pair.client_if, "-o", str(outdir), "-q", *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    deadline = time.monotonic() + 30
    while not (outdir / "timeseries.csv").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"pcapclass live did not start: {proc.communicate()}")
        time.sleep(0.05)
    return proc


def _start_tcpdump(pair: Pair, path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(pair.cmd(pair.client_ns, "tcpdump", "-i", pair.client_if, "-U", "-n", "-w", str(path)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on" in line, line
    return proc


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _talk(pair: Pair) -> None:
    subprocess.run(pair.cmd(pair.client_ns, sys.executable, str(TRAFFIC), "talk", pair.server_addr), check=True, timeout=60)


def _read(outdir: Path, name: str, columns: tuple[schema.Column, ...]) -> pd.DataFrame:
    df = pd.read_csv(outdir / name, keep_default_na=False)
    assert list(df.columns) == schema.names(schema.with_readable_times(columns))
    return df


def _per_service(breakdown: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r.service, r.direction): (int(r.packets), int(r.bytes)) for r in breakdown.itertuples()}


def _tshark_per_port(pcap: Path) -> dict[int, tuple[int, int]]:
    """tshark's packets and frame bytes per service port (either side), the independent oracle."""
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.len", "-e", "tcp.port", "-e", "udp.port"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    per: dict[int, list[int]] = {p: [0, 0] for p in SERVICE_PORTS}
    for line in out.splitlines():
        length, tcp, udp = (line.split("\t") + ["", ""])[:3]
        ports = {int(x) for x in (tcp or udp).split(",") if x}
        for port in ports & set(SERVICE_PORTS):
            per[port][0] += 1
            per[port][1] += int(length)
    return {p: (v[0], v[1]) for p, v in per.items()}


@needs_netns
@pytest.mark.parametrize("backend", ["dumpcap", "tcpdump", "scapy"])
def test_live_counts_equal_tcpdump(pair: Pair, servers: subprocess.Popen[str], tmp_path: Path, backend: str) -> None:
    """Every service's packets and bytes equal tcpdump's capture of the same interface."""
    out, ref = tmp_path / "live", tmp_path / "ref.pcap"
    saved = tmp_path / "saved.pcap"
    tcpdump = _start_tcpdump(pair, ref)
    live = _start_live(pair, out, "--backend", backend, "--interval", "0.5", "--server", pair.server_addr, "--write-pcap", str(saved))
    _talk(pair)
    time.sleep(1.5)  # let both capturers see the last packets
    rc, err = _stop(live)
    assert rc == 0, err
    assert _stop(tcpdump)[0] == 0

    got = _read(out, "breakdown.csv", schema.BREAKDOWN)
    assert main(["classify", str(ref), "-o", str(tmp_path / "ref"), "-q", "--server", pair.server_addr]) == 0
    want = pd.read_csv(tmp_path / "ref" / "breakdown.csv", keep_default_na=False)
    assert _per_service(got) == _per_service(want)
    assert {"smtp", "pop3", "imap4"} <= set(got["service"])

    # per port against tshark on tcpdump's file, from the flows pcapclass appended
    flows = _read(out, "flows.csv", schema.FLOWS)
    assert (flows[flows["server_port"].isin(SERVICE_PORTS)]["service"] != "other").all()
    tshark = _tshark_per_port(ref)
    for port in SERVICE_PORTS:
        mine = flows[flows["server_port"] == port]
        assert (int(mine["packets_c2s"].sum() + mine["packets_s2c"].sum()),
                int(mine["bytes_c2s"].sum() + mine["bytes_s2c"].sum())) == tshark[port], port  # fmt: skip

    # the intervals add up to the totals, and the saved pcap holds exactly what was counted
    series = _read(out, "timeseries.csv", schema.TIMESERIES)
    assert int(series["packets"].sum()) == int(got["packets"].sum())
    assert int(series["bytes"].sum()) == int(got["bytes"].sum())
    capture = _read(out, "capture.csv", schema.CAPTURE)
    assert int(capture["packets"].iloc[0]) == int(got["packets"].sum())
    assert int(capture["drops"].iloc[0]) == 0
    assert main(["classify", str(saved), "-o", str(tmp_path / "saved"), "-q", "--server", pair.server_addr]) == 0
    assert _per_service(pd.read_csv(tmp_path / "saved" / "breakdown.csv", keep_default_na=False)) == _per_service(got)


@needs_netns
def test_sigint_mid_capture_leaves_complete_csvs(pair: Pair, servers: subprocess.Popen[str], tmp_path: Path) -> None:
    """Ctrl-C while datagrams still flow: exit 0 and four whole, consistent CSV files."""
    out = tmp_path / "live"
    live = _start_live(pair, out, "--interval", "0.3")
    sender = subprocess.Popen(pair.cmd(pair.client_ns, sys.executable, str(TRAFFIC), "udp", pair.server_addr, "5000"))
    try:
        time.sleep(1.5)
        rc, err = _stop(live)
    finally:
        sender.kill()
        sender.wait()
    assert rc == 0, err
    totals = _read(out, "breakdown.csv", schema.BREAKDOWN)
    flows = _read(out, "flows.csv", schema.FLOWS)
    series = _read(out, "timeseries.csv", schema.TIMESERIES)
    capture = _read(out, "capture.csv", schema.CAPTURE)
    packets = int(capture["packets"].iloc[0])
    assert packets > 100
    assert int(totals["packets"].sum()) == packets == int(series["packets"].sum())
    assert int(flows["packets_c2s"].sum() + flows["packets_s2c"].sum()) == packets
    assert int(totals["flows"].sum()) == len(flows) == int(capture["flows"].iloc[0])
    assert (series["interval_end"] > series["interval_start"]).all()
    assert len(series["interval_start"].unique()) >= 2


@needs_netns
def test_count_and_flow_cap(pair: Pair, servers: subprocess.Popen[str], tmp_path: Path) -> None:
    """--count stops by itself at exactly N packets; a flow flood past --max-flows is exported early and counted."""
    out = tmp_path / "live"
    live = _start_live(pair, out, "--count", "300", "--max-flows", "10", "--interval", "0.2", "-f", "udp")
    flood = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for port in range(20000, 20400):\n"
        f"    s.sendto(b'x', ('{pair.server_addr}', port)); time.sleep(0.001)\n"
    )
    subprocess.run(pair.cmd(pair.client_ns, sys.executable, "-c", flood), check=True, timeout=60)
    _, err = live.communicate(timeout=60)
    assert live.returncode == 0, err
    capture = _read(out, "capture.csv", schema.CAPTURE)
    assert int(capture["packets"].iloc[0]) == 300
    assert int(capture["flows_exported_early"].iloc[0]) > 0
    assert int(_read(out, "breakdown.csv", schema.BREAKDOWN)["packets"].sum()) == 300


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (int(c) for c in (task / "children").read_text().split()):
            found += [child, *_descendants(child)]
    return found


@needs_netns
def test_capture_process_dying_is_reported(pair: Pair, servers: subprocess.Popen[str], tmp_path: Path) -> None:
    """dumpcap killed midway: one line on stderr, exit 6, what was counted is written."""
    out = tmp_path / "live"
    live = _start_live(pair, out, "--interval", "0.3")
    _talk(pair)
    time.sleep(1.0)
    dumpcaps = [c for c in _descendants(live.pid) if Path(f"/proc/{c}/comm").read_text().strip() == "dumpcap"]
    assert dumpcaps
    os.kill(dumpcaps[0], signal.SIGKILL)
    _, err = live.communicate(timeout=60)
    assert live.returncode == 6
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "dumpcap" in lines[0] and "Traceback" not in err, err
    capture = _read(out, "capture.csv", schema.CAPTURE)
    assert bool(capture["partial"].iloc[0]) and capture["error"].iloc[0]
    assert int(_read(out, "breakdown.csv", schema.BREAKDOWN)["packets"].sum()) == int(capture["packets"].iloc[0]) > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ticks_decide_as_offline_and_hand_evidence_rows_over(tmp_path: Path, name: str) -> None:
    """A capture fed as if live: the ticks give each flow the service and evidence the fact
    sheet says (test_evidence's hand-written table), and once its flows have ended the
    collector keeps none of their evidence rows (memory follows the open flows)."""
    live = LiveCapture("fixture", outdir=tmp_path, servers=SERVERS)
    counts = live.clf.begin("fixture", "pcap")
    for batch in CaptureFile(EVIDENCE / name):
        live.clf.feed(batch)
    live._tick(counts, 0.0, 1.0, final=False)  # the wall clock is years past the packets: every flow has ended
    assert live.clf.evidence is not None and live.clf.evidence.evidence().rows.empty
    live._tick(counts, 1.0, 2.0, final=True)
    assert decided(_read(tmp_path, "flows.csv", schema.FLOWS)) == EXPECTED[name]
