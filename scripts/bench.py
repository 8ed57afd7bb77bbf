#!/usr/bin/env python3
"""Benchmark pcapclass against tshark, scapy and tcpdump on one generated capture.

    python scripts/bench.py [--packets 2000000] [--capture FILE] [--keep [PATH]] [--skip-live]

Generates (with scripts/gen_bench_capture.py) a capture of --packets packets over --flows
concurrent flows (its realistic form, whose first payloads differ per flow; --canned for the
few canned ones), or reuses --capture FILE, then times on that same file, each as a whole
subprocess whose peak RSS is taken from the kernel (os.wait4 rusage of the child):

* ``pcapclass classify FILE -o DIR --quiet`` (whole process, CSVs written), and again with
  ``--no-payload`` when ``pcapclass classify --help`` offers it (the two take turns, run by
  run, so that their ratio compares runs made at the same moment of the machine);
* ``tshark -n -r FILE -T fields -e ip.src -e ip.dst -e ip.proto -e tcp.dstport -e udp.dstport
  -e frame.len > /dev/null``;
* scapy's ``PcapReader`` loop (each packet decoded and its TCP/UDP port read) on the first
  --scapy-packets packets of the file, timed inside the child (imports excluded) and scaled;
* ``tcpdump -r FILE -w /dev/null``, the C floor;
* ``pcapclass classify`` on a file of twice the packets (same flow count), to show peak RSS
  stays flat when the file doubles;
* ``pcapclass classify`` on a directory of 200 files of 1,000 packets (the capture's first
  packets cut by ``editcap -c``, a ring buffer), whole process, under 5 s.

It prints a table (tool, packets, seconds, packets/s, peak RSS), the ratios and PASS/FAIL for
the speed bars (README, "Speed and memory"): >= 1,000,000 packets/s, >= 30x tshark, >= 150x scapy, within 4x
of tcpdump, peak RSS < 300 MB and within 15 % on the doubled file; and, with --no-payload, the
default run within 15 % of the no-payload run. Unless --skip-live, it then replays
a slice of the capture onto a veth pair with tcpreplay and reports, per live backend of
``pcapclass live`` and for tcpdump as a reference, the highest rate with zero loss.

Exit status: 0 all bars pass, 1 a bar fails, 2 the benchmark could not run.
Files live in --workdir (default: a new directory under /tmp), removed unless --keep.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEN = ROOT / "scripts" / "gen_bench_capture.py"
MB = 1024 * 1024

BAR_PPS = 1_000_000
BAR_X_TSHARK = 30.0
BAR_X_SCAPY = 150.0
BAR_X_TCPDUMP = 4.0
BAR_RSS_MB = 300.0
#: the flow-heavy run: 400k concurrent flows, and its peak RSS bar
HEAVY_FLOWS = 400_000
BAR_RSS_HEAVY_MB = 450.0
BAR_RSS_FLAT = 0.15
BAR_NO_PAYLOAD = 0.15
#: the many-files run: the capture's first packets as a ring buffer of small files (editcap -c),
#: classified as one directory, whole process
MANY_FILES, MANY_FILES_PACKETS, BAR_MANY_FILES_S = 200, 1_000, 5.0
#: the spread run: captures of mirror ports (each its own seed and share of the flows, all on one
#: clock, so none continues another), classified by one process (--jobs 1) and by Dask workers
#: (--jobs 2); its bar on their speed ratio, its goal on the merge's share of the wall time
SPREAD_FILES, SPREAD_PACKETS, BAR_SPREAD_X, GOAL_MERGE_SHARE = 8, 250_000, 1.3, 0.10

SPREAD_PHASES = r"""
import sys, time
t0 = time.perf_counter()
from pcapclass import session
from pcapclass.api import Classifier
from pcapclass.segments import plan, reach
from pcapclass.sources.inputs import resolve_captures
merge = 0.0
absorb = session.absorb
def timed_absorb(*args):
    global merge
    t = time.perf_counter(); absorb(*args); merge += time.perf_counter() - t
session.absorb = timed_absorb
if __name__ == "__main__":
    captures = resolve_captures([sys.argv[1]])
    segments = plan(captures, [reach(c) for c in captures])
    with session.dask_client(2) as client:
        t1 = time.perf_counter()
        clf = Classifier()
        session.read_on(session.Spread(client, segments), clf, captures)
        t2 = time.perf_counter()
        clf.write(sys.argv[2])
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    print(len(segments), t1 - t0, t2 - t1, merge, t3 - t2, t4 - t3, t4 - t0)
"""

SCAPY_LOOP = r"""
import sys, time
from scapy.utils import PcapReader
from scapy.layers.inet import TCP, UDP
t0 = time.perf_counter()
n = s = 0
with PcapReader(sys.argv[1]) as reader:
    for p in reader:
        n += 1
        if TCP in p:
            s += p[TCP].dport
        elif UDP in p:
            s += p[UDP].dport
print(n, time.perf_counter() - t0, s)
"""

#: how many first payloads the evidence stage looks at, and how many of them in Python (one
#: ``Inspector.inspect`` call each: DCE/RPC PDUs, HTTP requests, EHLO replies...; the others are decided
#: by the compiled first look), counted in a classify run of its own
INSPECT_COUNT = r"""
import sys
import pcapclass
from pcapclass.evidence.first_payloads import FirstPayloads
from pcapclass.evidence.inspection import Inspector
count = {"first": 0, "python": 0}
distinct, inspect = FirstPayloads.inspect_distinct, Inspector.inspect
def counted_distinct(self, data, pk, keys, sel, *rest):
    count["first"] += sel.size
    return distinct(self, data, pk, keys, sel, *rest)
def counted_inspect(self, *args):
    count["python"] += 1
    return inspect(self, *args)
FirstPayloads.inspect_distinct, Inspector.inspect = counted_distinct, counted_inspect
pcapclass.classify_file(sys.argv[1])
print(count["first"], count["python"])
"""


@dataclass
class Run:
    name: str
    cmd: list[str]
    packets: int = 0
    seconds: float = 0.0  # wall clock of the whole process (or the timed loop, for scapy)
    process_seconds: float = 0.0  # wall clock of the whole process
    cpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    rc: int | None = None
    error: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.error

    @property
    def pps(self) -> float:
        return self.packets / self.seconds if self.ok and self.seconds > 0 else 0.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# running and measuring
# ---------------------------------------------------------------------------------------------

TIME = "/usr/bin/time"  # GNU time: its own footprint is ~2 MB, unlike a fork of this process


def timed(name: str, cmd: list[str], *, packets: int, stdout_path: Path | None = None,
          timeout: float = 3600, env: dict | None = None, cwd: Path | None = None) -> Run:
    """Run ``cmd`` to completion: wall time, CPU time and peak RSS of the child.

    Peak RSS comes from GNU time (``%M``, the child's ru_maxrss) when /usr/bin/time exists.
    Otherwise from os.wait4 on the child itself; then it cannot be lower than this script's
    own RSS, because Linux carries the pre-exec high-water mark of a (v)forked child into it.
    """
    run = Run(name, cmd, packets)
    with contextlib.ExitStack() as stack:
        err = stack.enter_context(tempfile.TemporaryFile())
        out = stack.enter_context(open(stdout_path, "wb")) if stdout_path else subprocess.DEVNULL
        tdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-time-")) \
            if os.access(TIME, os.X_OK) else None
        tfile = Path(tdir) / "time.out" if tdir else None
        full = [TIME, "-f", "%M %U %S", "-o", str(tfile), *cmd] if tfile else cmd
        t0 = time.perf_counter()
        try:
            p = subprocess.Popen(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                 cwd=cwd, start_new_session=True)
        except OSError as e:
            run.error = f"cannot start: {e}"
            return run
        killer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
        killer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            killer.cancel()
        run.process_seconds = run.seconds = time.perf_counter() - t0
        p.returncode = run.rc = os.waitstatus_to_exitcode(status)
        run.cpu_seconds = ru.ru_utime + ru.ru_stime
        run.peak_rss_mb = ru.ru_maxrss * 1024 / MB  # KiB on Linux
        if tfile and tfile.exists():
            lines = tfile.read_text().strip().splitlines()
            m = re.fullmatch(r"(\d+) ([\d.]+) ([\d.]+)", lines[-1]) if lines else None
            if m:
                run.peak_rss_mb = int(m.group(1)) * 1024 / MB
                run.cpu_seconds = float(m.group(2)) + float(m.group(3))
            if lines and "terminated by signal" in lines[0]:
                run.rc = run.rc or -1
        if run.rc != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            what = "killed after timeout" if time.perf_counter() - t0 >= timeout \
                else f"exit {run.rc}"
            run.error = what + (": " + " | ".join(tail) if tail else "")
    return run


def warm(path: Path) -> None:
    """Read the file (every file of a directory) once so every tool starts with it in the page cache."""
    buf = bytearray(8 * MB)
    for one in sorted(path.iterdir()) if path.is_dir() else [path]:
        with open(one, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


# ---------------------------------------------------------------------------------------------
# capture files
# ---------------------------------------------------------------------------------------------

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}


def iter_records(path: Path):
    """Yield (global_header, None) then (record_header, data) of a classic pcap file."""
    with open(path, "rb") as fh:
        gh = fh.read(24)
        order = PCAP_MAGICS.get(gh[:4])
        if order is None or len(gh) < 24:
            raise ValueError(f"{path}: not a classic pcap file (pcapng is not supported here)")
        yield gh, order
        hdr = struct.Struct(order + "IIII")
        while True:
            rh = fh.read(16)
            if len(rh) < 16:
                return
            data = fh.read(hdr.unpack(rh)[2])
            yield rh, data


def write_slice(src: Path, dst: Path, n: int) -> int:
    """The first ``n`` packets of ``src`` as a new pcap; returns how many were written."""
    it = iter_records(src)
    gh, _ = next(it)
    k = 0
    with open(dst, "wb") as out:
        out.write(gh)
        for rh, data in it:
            if k == n:
                break
            out.write(rh)
            out.write(data)
            k += 1
    return k


def count_packets(path: Path) -> int:
    it = iter_records(path)
    next(it)
    return sum(1 for _ in it)


def write_doubled(src: Path, dst: Path) -> int:
    """``src`` followed by itself, the copy shifted one hour past the end (so the idle
    timeout splits reused 5-tuples); returns the packet count."""
    it = iter_records(src)
    gh, order = next(it)
    hdr = struct.Struct(order + "IIII")
    first = last = None
    n = 0
    with open(dst, "wb") as out:
        out.write(gh)
        for rh, data in it:
            sec = hdr.unpack(rh)[0]
            first = sec if first is None else first
            last = sec
            out.write(rh)
            out.write(data)
            n += 1
        shift = (last - first if n else 0) + 3600
        it = iter_records(src)
        next(it)
        for rh, data in it:
            sec, frac, incl, orig = hdr.unpack(rh)
            out.write(hdr.pack(sec + shift, frac, incl, orig))
            out.write(data)
    return 2 * n


def generate_many(directory: Path, files: int, packets: int, flows: int, seed: int, canned: bool, start: int = 0) -> None:
    """``files`` captures into ``directory``, generated side by side, each with its own seed."""
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*gen_command(directory / f"port{start + i:03d}.pcap", packets, flows, seed + i, canned), "-q"])
             for i in range(files)]  # fmt: skip
    codes = [p.wait() for p in procs]  # every one waited for, whichever fails
    if any(codes):
        raise SystemExit("generating the captures failed")
    log(f"  generated {files} captures of {packets:,} packets in {time.perf_counter() - t0:.1f} s")


def gen_command(out: Path, packets: int, flows: int, seed: int, canned: bool) -> list[str]:
    """The generator's command line for one capture."""
    return [sys.executable, str(GEN), str(out), "--packets", str(packets), "--flows", str(flows), "--seed", str(seed),
            *(["--canned"] if canned else [])]  # fmt: skip


def generate(out: Path, packets: int, flows: int, seed: int, canned: bool) -> None:
    t0 = time.perf_counter()
    subprocess.run(gen_command(out, packets, flows, seed, canned), check=True)
    log(f"  generated {out.name} in {time.perf_counter() - t0:.1f} s")


# ---------------------------------------------------------------------------------------------
# pcapclass
# ---------------------------------------------------------------------------------------------

def pcapclass_command(spec: str | None) -> tuple[list[str], dict]:
    """How to run pcapclass: --pcapclass, else the console script, else python -m pcapclass
    with the repository on PYTHONPATH."""
    env = dict(os.environ)
    # Byte-compiled modules, as ``pip install`` leaves a package: with PYTHONDONTWRITEBYTECODE
    # set (as on this machine) an editable checkout would otherwise recompile all of
    # pcapclass's source at every start, ~0.3 s that no installed copy pays.
    compileall.compile_dir(str(ROOT / "pcapclass"), quiet=1)
    if spec:
        return shlex.split(spec), env
    exe = shutil.which("pcapclass")
    if exe:
        return [exe], env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return [sys.executable, "-m", "pcapclass"], env


def help_text(cmd: list[str], env: dict) -> tuple[bool, str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    text = r.stdout + r.stderr
    return r.returncode == 0, text


def check_outputs(run: Run, outdir: Path, expected_packets: int) -> None:
    """pcapclass must have written its CSVs and counted every packet."""
    missing = [n for n in ("flows.csv", "breakdown.csv") if not (outdir / n).is_file()]
    if missing:
        run.note = "missing " + ", ".join(missing)
        return
    try:
        with open(outdir / "breakdown.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        with open(outdir / "flows.csv", "rb") as fh:
            run.extra["flows_rows"] = sum(1 for _ in fh) - 1
        run.extra["breakdown_rows"] = len(rows)
        if rows and "packets" in rows[0]:
            counted = sum(int(float(r["packets"])) for r in rows)
            run.extra["packets_counted"] = counted
            if counted != expected_packets:
                run.note = f"breakdown counts {counted:,} packets, file has {expected_packets:,}"
    except (OSError, ValueError, KeyError) as e:  # a benchmark reports, it does not crash
        run.note = f"breakdown.csv unreadable: {e}"


def best_of(repeat: int, *once) -> list[Run]:
    """Run each of ``once`` up to ``repeat`` times, taking turns (a drift of the machine's
    speed then touches each alike, which a ratio of two of them needs): per callable, its
    fastest run, with the highest peak RSS seen. A failed run ends that callable's turns."""
    runs: list[list[Run]] = [[] for _ in once]
    for _ in range(max(repeat, 1)):
        for fn, done in zip(once, runs):
            if not done or done[-1].ok:
                done.append(fn())
    best = []
    for done in runs:
        if not done[-1].ok:
            best.append(done[-1])
            continue
        b = min(done, key=lambda r: r.seconds)
        b.peak_rss_mb = max(r.peak_rss_mb for r in done)
        if len(done) > 1:
            b.extra["all_seconds"] = [round(r.seconds, 3) for r in done]
        best.append(b)
    return best


def run_pcapclass(name: str, pc: list[str], env: dict, capture: Path, packets: int,
                  workdir: Path, extra_args: list[str], timeout: float) -> Run:
    outdir = workdir / f"out-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}"
    shutil.rmtree(outdir, ignore_errors=True)
    warm(capture)
    cmd = pc + ["classify", str(capture), "-o", str(outdir), "--quiet", *extra_args]
    log(f"  running {shlex.join(cmd)}")
    run = timed(name, cmd, packets=packets, env=env, timeout=timeout,
                stdout_path=workdir / "pcapclass.stdout")
    if run.rc == 0:
        check_outputs(run, outdir, packets)
    shutil.rmtree(outdir, ignore_errors=True)
    return run


# ---------------------------------------------------------------------------------------------
# live: tcpreplay onto a veth pair
# ---------------------------------------------------------------------------------------------

VETH_TX, VETH_RX = "pcbench0", "pcbench1"
LIVE_RATES = (25_000, 50_000, 100_000, 150_000, 200_000, 300_000, 400_000, 600_000, 800_000)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def veth_up() -> None:
    _ip("link", "del", VETH_TX, check=False)
    _ip("link", "add", VETH_TX, "type", "veth", "peer", "name", VETH_RX)
    for dev in (VETH_TX, VETH_RX):
        # no IPv6 (router solicitations etc.) so the receiving side sees only replayed frames
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=False,
                       capture_output=True)
        _ip("link", "set", "dev", dev, "mtu", "9000", "up")


def veth_down() -> None:
    _ip("link", "del", VETH_TX, check=False)


def tcpreplay(slice_path: Path, rate: int) -> tuple[int, float, str]:
    """Replay at ``rate`` packets/s; (packets sent, achieved pps, message)."""
    r = subprocess.run(["tcpreplay", "-q", "-i", VETH_TX, "--pps", str(rate), str(slice_path)],
                       capture_output=True, text=True, check=False)
    text = r.stdout + r.stderr
    sent = re.search(r"Successful packets:\s+(\d+)", text)
    rated = re.search(r"Rated:.*?([\d.]+) pps", text)
    return (int(sent.group(1)) if sent else 0, float(rated.group(1)) if rated else 0.0,
            "" if r.returncode == 0 else text.strip().splitlines()[-1:][0] if text.strip() else "failed")


def live_trial_tcpdump(slice_path: Path, n: int, rate: int) -> tuple[int, int, float]:
    """(packets captured, dropped, achieved replay pps) for tcpdump capturing to /dev/null."""
    p = subprocess.Popen(["tcpdump", "-n", "-i", VETH_RX, "-B", "65536", "-w", "/dev/null"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    _, achieved, _ = tcpreplay(slice_path, rate)
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    got = re.search(r"(\d+) packets? captured", err)
    dropped = re.search(r"(\d+) packets? dropped by kernel", err)
    return (int(got.group(1)) if got else 0, int(dropped.group(1)) if dropped else -1, achieved)


def live_trial_pcapclass(pc: list[str], env: dict, backend: str | None, slice_path: Path, n: int,
                         rate: int, workdir: Path) -> tuple[int, int, float, str]:
    """(packets counted, drops reported (-1 unknown), achieved replay pps, error)."""
    outdir = workdir / "live-out"
    shutil.rmtree(outdir, ignore_errors=True)
    cmd = pc + ["live", "-i", VETH_RX, "--count", str(n), "-o", str(outdir), "--quiet"]
    if backend:
        cmd += ["--backend", backend]
    with tempfile.TemporaryFile() as errf:
        result = _live_pcapclass_run(cmd, env, errf, slice_path, rate, outdir)
    shutil.rmtree(outdir, ignore_errors=True)
    return result


def _live_pcapclass_run(cmd: list[str], env: dict, errf, slice_path: Path, rate: int,
                        outdir: Path) -> tuple[int, int, float, str]:
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, env=env)
    # pcapclass writes the headers of its rolling CSVs once its capture process is up: replay
    # only then (a fixed wait lost the first packets whenever start-up was slow), plus a margin
    ready_by = time.monotonic() + 30.0
    while not (outdir / "timeseries.csv").exists() and p.poll() is None and time.monotonic() < ready_by:
        time.sleep(0.05)
    time.sleep(1.0)
    if p.poll() is not None:
        errf.seek(0)
        return 0, -1, 0.0, f"exited early ({p.returncode}): {errf.read().decode(errors='replace')[-200:]}"
    _, achieved, _ = tcpreplay(slice_path, rate)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:  # fewer packets than --count arrived: stop it
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    counted, drops, error = 0, -1, ""
    try:
        with open(outdir / "breakdown.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        counted = sum(int(float(r["packets"])) for r in rows)
        with open(outdir / "capture.csv", newline="") as fh:
            drops = sum(int(float(r["drops"] or 0)) for r in csv.DictReader(fh))
    except (OSError, ValueError, KeyError) as e:
        error = f"no readable breakdown.csv ({e})"
    if drops < 0:
        errf.seek(0)
        m = re.search(r"(\d[\d,]*)\s+(?:packets\s+)?dropped", errf.read().decode(errors="replace"))
        if m:
            drops = int(m.group(1).replace(",", ""))
    return counted, drops, achieved, error


def live_bench(capture: Path, workdir: Path, pc: list[str], env: dict, n: int,
               pc_ok: bool) -> list[dict]:
    """Highest zero-loss replay rate per capturer; a list of result rows."""
    if os.geteuid() != 0:
        log("live: skipped (needs root for veth and packet capture)")
        return []
    for tool in ("ip", "tcpreplay", "tcpdump"):
        if not shutil.which(tool):
            log(f"live: skipped ({tool} not found)")
            return []
    capturers: list[tuple[str, str | None]] = [("tcpdump", None)]
    ok, text = help_text(pc + ["live", "--help"], env) if pc_ok else (False, "")
    if ok:
        m = re.search(r"--backend\s+\{([^}]+)\}", text)
        backends = [b.strip() for b in m.group(1).split(",")] if m else [None]
        capturers += [("pcapclass", b) for b in backends]
    else:
        log("live: `pcapclass live --help` does not work yet; measuring the tcpdump reference only")
    slice_path = workdir / f"live-{n}.pcap"
    n = write_slice(capture, slice_path, n)
    rows = []
    try:
        veth_up()
        for kind, backend in capturers:
            label = "tcpdump -i (reference)" if kind == "tcpdump" else \
                "pcapclass live" + (f" --backend {backend}" if backend else "")
            best, best_achieved, last, limited = 0, 0.0, "", False
            for rate in LIVE_RATES:
                if kind == "tcpdump":
                    got, dropped, achieved = live_trial_tcpdump(slice_path, n, rate)
                    err = ""
                else:
                    got, dropped, achieved, err = live_trial_pcapclass(
                        pc, env, backend, slice_path, n, rate, workdir)
                lossless = got == n and dropped <= 0 and not err
                last = (f"{rate:,} pps: {got:,}/{n:,} packets, drops "
                        f"{'?' if dropped < 0 else f'{dropped:,}'}, replay reached {achieved:,.0f} pps"
                        + (f", {err}" if err else ""))
                log(f"  live {label}: {last}")
                if not lossless:
                    break
                best_achieved = achieved
                if achieved < 0.9 * rate:  # tcpreplay itself cannot go faster
                    best = max(best, int(achieved))
                    limited = True
                    last += " (tcpreplay's limit)"
                    break
                best = rate
            rows.append({"capturer": label, "packets": n, "best_lossless_pps": best,
                         "replay_achieved_pps": best_achieved, "replay_limited": limited,
                         "last_trial": last})
    finally:
        veth_down()
        slice_path.unlink(missing_ok=True)
    return rows


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def fmt_row(r: Run) -> str:
    if not r.ok:
        return f"{r.name:<38} {r.packets:>11,}   {'FAILED: ' + r.error}"
    return (f"{r.name:<38} {r.packets:>11,} {r.seconds:>9.2f} {r.pps:>13,.0f} "
            f"{r.peak_rss_mb:>11.1f} {r.cpu_seconds:>9.2f}")


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("PASS" if ok else "FAIL")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--packets", type=int, default=2_000_000,
                    help="packets in the generated capture (2,000,000); the doubled file has 2x")
    ap.add_argument("--flows", type=int, default=50_000, help="concurrent flows (50,000)")
    ap.add_argument("--flow-heavy", action="store_true",
                    help=f"the flow-heavy run: {HEAVY_FLOWS:,} concurrent flows, peak RSS bar {BAR_RSS_HEAVY_MB:.0f} MB")
    ap.add_argument("--canned", action="store_true",
                    help="generate the canned capture (a few distinct first payloads, zeros after them) "
                         "instead of the realistic one (per-flow fields, as real traffic)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--capture", type=Path,
                    help="benchmark this classic pcap instead of generating one (its doubled "
                         "twin is the file followed by itself, shifted in time)")
    ap.add_argument("--workdir", type=Path, help="where generated files go (default: new /tmp dir)")
    ap.add_argument("--keep", nargs="?", const="", default=None, metavar="PATH",
                    help="keep the work directory; with PATH, also move the generated capture "
                         "there (reuse it later with --capture PATH)")
    ap.add_argument("--pcapclass", metavar="CMD",
                    help="how to run pcapclass (default: `pcapclass` on PATH, else "
                         "`python -m pcapclass` from this repository)")
    ap.add_argument("--scapy-packets", type=int, default=20_000,
                    help="size of the slice scapy reads (20,000)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=["tshark", "scapy", "tcpdump", "double", "no-payload", "looks", "many-files", "spread"],
                    help="leave out one measurement (repeatable)")
    ap.add_argument("--skip-live", action="store_true",
                    help="skip the live replay benchmark (tcpreplay onto a veth pair)")
    ap.add_argument("--live-packets", type=int, default=500_000,
                    help="packets replayed per live trial (500,000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each pcapclass and tcpdump measurement; the fastest counts, "
                         "peak RSS is the highest seen (3; tshark and scapy run once)")
    ap.add_argument("--timeout", type=float, default=3600, help="per-run timeout in seconds")
    ap.add_argument("--spread-gb", type=float, default=0, metavar="GB",
                    help="also classify a set of this many GB of mirror-port captures with --jobs 2, once, for its peak RSS")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    a = ap.parse_args(argv)
    if a.flow_heavy:
        a.flows = HEAVY_FLOWS

    own_workdir = a.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="pcapclass-bench-", dir="/tmp")) if own_workdir \
        else a.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    generated: list[Path] = []
    try:
        return _bench(a, workdir, generated)
    except (OSError, ValueError, subprocess.CalledProcessError) as e:
        log(f"bench: {e}")
        return 2
    finally:
        if a.keep is not None:
            main_capture = workdir / f"bench-{a.packets}.pcap"
            if a.keep and not a.capture and main_capture.exists():
                dest = Path(a.keep)
                shutil.move(str(main_capture), dest)
                log(f"kept the capture as {dest}")
            log(f"kept {workdir}")
        elif own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            for p in generated:
                p.unlink(missing_ok=True)


def _bench(a: argparse.Namespace, workdir: Path, generated: list[Path]) -> int:
    log(f"workdir {workdir}")
    if a.capture:
        capture = a.capture.resolve()
        log(f"counting packets of {capture}")
        n = count_packets(capture)
    else:
        n = a.packets
        capture = workdir / f"bench-{n}.pcap"
        generated.append(capture)
        generate(capture, n, a.flows, a.seed, a.canned)
    size = capture.stat().st_size

    pc, env = pcapclass_command(a.pcapclass)
    pc_ok, pc_help = help_text(pc + ["classify", "--help"], env)
    runs: dict[str, Run] = {}
    if not pc_ok:
        log(f"pcapclass is not runnable yet ({shlex.join(pc)} classify --help failed): "
            + (pc_help.strip().splitlines() or ["?"])[-1])
    has_no_payload = pc_ok and "--no-payload" in pc_help

    if pc_ok:
        generated.append(workdir / "pcapclass.stdout")
        def mode(*extra: str):
            name = " ".join(["pcapclass classify", *extra])
            return lambda: run_pcapclass(name, pc, env, capture, n, workdir, list(extra), a.timeout)

        if has_no_payload and "no-payload" not in a.skip:
            # in turns, so that the ratio of the two compares runs of the same moment
            runs["pc"], runs["pc_np"] = best_of(a.repeat, mode(), mode("--no-payload"))
        else:
            runs["pc"], = best_of(a.repeat, mode())
    looks = None
    if pc_ok and "looks" not in a.skip:
        log("  counting the evidence stage's looks at first payloads (a classify run of its own)")
        r = subprocess.run([sys.executable, "-c", INSPECT_COUNT, str(capture)], capture_output=True, text=True, env=env,
                           timeout=a.timeout, check=False)
        looks = tuple(map(int, r.stdout.split())) if r.returncode == 0 else None
        if looks is None:
            log(f"  counting looks failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    if "tshark" not in a.skip:
        warm(capture)
        cmd = ["tshark", "-n", "-r", str(capture), "-T", "fields", "-e", "ip.src", "-e", "ip.dst",
               "-e", "ip.proto", "-e", "tcp.dstport", "-e", "udp.dstport", "-e", "frame.len"]
        log(f"  running {shlex.join(cmd)} > /dev/null  (about a minute per 2 M packets)")
        runs["tshark"] = timed("tshark -T fields", cmd, packets=n, timeout=a.timeout)
    if "scapy" not in a.skip:
        sl = workdir / f"scapy-slice-{a.scapy_packets}.pcap"
        k = write_slice(capture, sl, a.scapy_packets)
        cmd = [sys.executable, "-c", SCAPY_LOOP, str(sl)]
        log(f"  running scapy PcapReader loop on {k:,} packets")
        r = timed(f"scapy PcapReader ({k:,}-pkt slice)", cmd, packets=k, timeout=a.timeout,
                  stdout_path=workdir / "scapy.out")
        if r.ok:
            got, loop_s, _ = (workdir / "scapy.out").read_text().split()
            r.seconds = float(loop_s)
            if int(got) != k:
                r.note = f"scapy read {got} of {k} packets"
        runs["scapy"] = r
        generated += [sl, workdir / "scapy.out"]
    if "tcpdump" not in a.skip:
        cmd = ["tcpdump", "-r", str(capture), "-w", "/dev/null"]
        log(f"  running {shlex.join(cmd)}")

        def tcpdump_once() -> Run:
            warm(capture)
            return timed("tcpdump -r FILE -w /dev/null", cmd, packets=n, timeout=a.timeout)
        runs["tcpdump"], = best_of(a.repeat, tcpdump_once)
    if pc_ok and "double" not in a.skip:
        double = workdir / f"bench-{2 * n}.pcap"
        generated.append(double)
        if a.capture:
            n2 = write_doubled(capture, double)
        else:
            n2 = 2 * n
            generate(double, n2, a.flows, a.seed, a.canned)
        runs["pc2"], = best_of(a.repeat, lambda: run_pcapclass(
            "pcapclass classify (2x file)", pc, env, double, n2, workdir, [], a.timeout))
        if a.keep is None:
            double.unlink(missing_ok=True)

    if pc_ok and "many-files" not in a.skip:
        ring = workdir / "ring"
        ring.mkdir(exist_ok=True)
        whole = workdir / "ring-slice.pcap"
        k = write_slice(capture, whole, MANY_FILES * MANY_FILES_PACKETS)
        subprocess.run(["editcap", "-F", "pcap", "-c", str(MANY_FILES_PACKETS), str(whole), str(ring / "piece.pcap")], check=True)
        files = len(list(ring.iterdir()))
        log(f"  {files} files of {MANY_FILES_PACKETS:,} packets (editcap -c) in {ring}")
        runs["pc_many"], = best_of(a.repeat, lambda: run_pcapclass(
            f"pcapclass classify ({files} files)", pc, env, ring, k, workdir, [], a.timeout))
        if a.keep is None:
            shutil.rmtree(ring, ignore_errors=True)
            whole.unlink(missing_ok=True)

    spread_phases = None
    if pc_ok and "spread" not in a.skip and "--jobs" in pc_help:
        spread = workdir / "spread"
        spread.mkdir(exist_ok=True)
        generate_many(spread, SPREAD_FILES, SPREAD_PACKETS, max(1, a.flows // SPREAD_FILES), a.seed, a.canned)
        k = SPREAD_FILES * SPREAD_PACKETS
        runs["pc_j1"], runs["pc_j2"] = best_of(a.repeat, *(
            (lambda j=j: run_pcapclass(f"pcapclass classify ({SPREAD_FILES} ports, -j {j})", pc, env, spread, k, workdir,
                                       ["--jobs", str(j)], a.timeout)) for j in (1, 2)))  # fmt: skip
        r = subprocess.run([sys.executable, "-c", SPREAD_PHASES, str(spread), str(workdir / "out-spread-phases")], capture_output=True,
                           text=True, env=env, timeout=a.timeout, check=False)  # fmt: skip
        spread_phases = [float(x) for x in r.stdout.split()] if r.returncode == 0 else None
        shutil.rmtree(workdir / "out-spread-phases", ignore_errors=True)
        if a.keep is None:
            shutil.rmtree(spread, ignore_errors=True)
    if pc_ok and a.spread_gb:
        big = workdir / "spread-big"
        big.mkdir(exist_ok=True)
        files = 0
        while sum(p.stat().st_size for p in big.iterdir()) < a.spread_gb * 1e9:
            generate_many(big, 2, SPREAD_PACKETS, max(1, a.flows // SPREAD_FILES), a.seed + 100 + files, a.canned, start=files)
            files += 2
        k = files * SPREAD_PACKETS
        size_gb = sum(p.stat().st_size for p in big.iterdir()) / 1e9
        runs["pc_big"], = best_of(1, lambda: run_pcapclass(f"pcapclass classify ({files} ports, {size_gb:.1f} GB, -j 2)", pc, env,
                                                            big, k, workdir, ["--jobs", "2"], a.timeout))  # fmt: skip
        shutil.rmtree(big, ignore_errors=True)

    # --- report ---------------------------------------------------------------------------
    print()
    print(f"pcapclass benchmark: {n:,} packets, {size / 1e6:,.0f} MB "
          f"(mean frame {(size - 24 - 16 * n) / max(n, 1):.0f} B), "
          f"{'' if a.capture else f'{a.flows:,} concurrent flows, '}{os.cpu_count()} CPUs, "
          f"file {'given' if a.capture else 'generated'}: {capture.name}")
    print(f"{'tool':<38} {'packets':>11} {'seconds':>9} {'packets/s':>13} {'peak RSS MB':>11} "
          f"{'CPU s':>9}")
    order = ["pc", "pc_np", "tshark", "scapy", "tcpdump", "pc2", "pc_many", "pc_j1", "pc_j2", "pc_big"]
    for key in order:
        if key in runs:
            print(fmt_row(runs[key]))
    if not pc_ok:
        print(f"{'pcapclass classify':<38} {'':>11}   NOT RUNNABLE YET ({shlex.join(pc)})")
    notes = [f"  note: {r.name}: {r.note}" for r in runs.values() if r.note]
    if a.repeat > 1:
        notes.append(f"  note: pcapclass and tcpdump rows are the fastest of {a.repeat} runs "
                     f"(peak RSS: the highest; default and --no-payload in turns); tshark and scapy ran once")
    if "scapy" in runs and runs["scapy"].ok:
        s = runs["scapy"]
        notes.append(f"  note: scapy seconds = the read loop only (whole process "
                     f"{s.process_seconds:.2f} s incl. imports); packets/s is scaled from the slice")
    for k in ("pc", "pc2"):
        if k in runs and "packets_counted" in runs[k].extra:
            x = runs[k].extra
            notes.append(f"  check: {runs[k].name}: breakdown.csv counts "
                         f"{x['packets_counted']:,} packets in {x.get('breakdown_rows', 0)} rows, "
                         f"flows.csv has {x.get('flows_rows', 0):,} flows")
    if spread_phases is not None:
        segs, start, read, merge, write, stop, total = spread_phases
        notes.append(f"  spread: {int(segs)} segments on 2 workers: {start:.2f} s imports and cluster start, {read:.2f} s reading "
                     f"(of which {merge:.2f} s absorbing on the client), {write:.2f} s classifying and writing, {stop:.2f} s stopping")
        notes.append("  spread: peak RSS of a -j 2 row is its largest process's (the client or a worker)")
    if looks is not None:
        notes.append(f"  looks: {looks[0]:,} first payloads looked at, {looks[1]:,} of them in Python "
                     f"(EvidenceCollector._inspect calls; the others decided by the compiled first look)")
    print("\n".join(notes))

    def rate(k: str) -> float | None:
        return runs[k].pps if k in runs and runs[k].ok and runs[k].pps > 0 else None

    pcr, tsr, scr, tdr = rate("pc"), rate("tshark"), rate("scapy"), rate("tcpdump")
    checks: list[tuple[str, str, str, bool | None]] = []

    def ratio_line(label: str, value: float | None, bar: str, ok: bool | None) -> None:
        checks.append((label, "n/a" if value is None else f"{value:,.1f}x", bar, ok))

    checks.append(("pcapclass packets/s", "n/a" if pcr is None else f"{pcr:,.0f}",
                   f">= {BAR_PPS:,}", None if pcr is None else pcr >= BAR_PPS))
    x = pcr / tsr if pcr and tsr else None
    ratio_line("pcapclass / tshark", x, f">= {BAR_X_TSHARK:.0f}x", None if x is None else x >= BAR_X_TSHARK)
    x = pcr / scr if pcr and scr else None
    ratio_line("pcapclass / scapy", x, f">= {BAR_X_SCAPY:.0f}x", None if x is None else x >= BAR_X_SCAPY)
    x = tdr / pcr if pcr and tdr else None
    ratio_line("tcpdump / pcapclass (x slower than tcpdump)", x, f"<= {BAR_X_TCPDUMP:.0f}x",
               None if x is None else x <= BAR_X_TCPDUMP)
    pc_runs = [runs[k] for k in ("pc", "pc_np", "pc2") if k in runs and runs[k].ok]
    rss = max((r.peak_rss_mb for r in pc_runs), default=None)
    bar_rss = BAR_RSS_HEAVY_MB if a.flow_heavy else BAR_RSS_MB
    checks.append(("pcapclass peak RSS (max of its runs)", "n/a" if rss is None else f"{rss:.1f} MB",
                   f"< {bar_rss:.0f} MB", None if rss is None else rss < bar_rss))
    if "pc" in runs and "pc2" in runs and runs["pc"].ok and runs["pc2"].ok:
        g = runs["pc2"].peak_rss_mb / runs["pc"].peak_rss_mb
        checks.append(("peak RSS 2x file / 1x file", f"{g:.2f}", f"<= {1 + BAR_RSS_FLAT:.2f}",
                       g <= 1 + BAR_RSS_FLAT))
    else:
        checks.append(("peak RSS 2x file / 1x file", "n/a", f"<= {1 + BAR_RSS_FLAT:.2f}", None))
    if "pc_many" in runs:
        many = runs["pc_many"]
        checks.append((f"{many.name}, whole process", f"{many.seconds:.2f} s" if many.ok else "n/a",
                       f"< {BAR_MANY_FILES_S:.0f} s", many.seconds < BAR_MANY_FILES_S if many.ok else None))
    j1, j2 = rate("pc_j1"), rate("pc_j2")
    if j1 is not None and j2 is not None:
        ratio_line("--jobs 2 / --jobs 1 speed (spread run)", j2 / j1, f">= {BAR_SPREAD_X:.1f}x", j2 / j1 >= BAR_SPREAD_X)
    if spread_phases is not None:
        segs, start, read, merge, write, stop, total = spread_phases
        share = (merge + write) / total
        checks.append(("merge share of the spread run's wall time", f"{share:.0%}", f"<= {GOAL_MERGE_SHARE:.0%} (goal)",
                       share <= GOAL_MERGE_SHARE))
    npr = rate("pc_np")
    if npr is not None and pcr is not None:
        g = pcr / npr
        checks.append(("default / --no-payload speed", f"{g:.2f}", f">= {1 - BAR_NO_PAYLOAD:.2f}",
                       g >= 1 - BAR_NO_PAYLOAD))
    elif pc_ok and not has_no_payload:
        checks.append(("default / --no-payload speed", "n/a (no --no-payload flag yet)",
                       f">= {1 - BAR_NO_PAYLOAD:.2f}", None))
    print()
    print(f"{'ratio / bar':<45} {'value':>14}  {'bar':<12} result")
    for label, value, bar, ok in checks:
        print(f"{label:<45} {value:>14}  {bar:<12} {verdict(ok)}")

    live_rows: list[dict] = []
    if not a.skip_live:
        print(flush=True)
        log("live replay benchmark (--skip-live to leave out)")
        live_rows = live_bench(capture, workdir, pc, env, min(a.live_packets, n), pc_ok)
        if live_rows:
            print(f"{'live capturer (tcpreplay onto veth)':<38} {'packets':>9} "
                  f"{'best lossless pps':>18} {'replay reached':>15}")
            for row in live_rows:
                print(f"{row['capturer']:<38} {row['packets']:>9,} {row['best_lossless_pps']:>18,} "
                      f"{row['replay_achieved_pps']:>15,.0f}"
                      + ("  (no loss at tcpreplay's top speed)" if row["replay_limited"] else ""))
                print(f"    last trial: {row['last_trial']}")

    if a.json:
        a.json.write_text(json.dumps({
            "packets": n, "file_bytes": size, "capture": str(capture),
            "runs": {k: {**asdict(r), "pps": r.pps} for k, r in runs.items()},
            "checks": [dict(zip(("check", "value", "bar", "pass"), c)) for c in checks],
            "live": live_rows,
        }, indent=2))
    results = [ok for *_, ok in checks]
    if not pc_ok or any(r.error for r in runs.values()):
        return 2
    return 1 if any(ok is False for ok in results) else 0


if __name__ == "__main__":
    sys.exit(main())
