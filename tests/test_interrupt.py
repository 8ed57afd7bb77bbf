"""SIGINT and SIGTERM on ``classify``: what was read is classified and written, marked partial,
with the shell's exit code for that signal, and no temporary file is left behind.

The child reads an endless capture from a pipe (a new flow every packet, the clock going on,
so that finished flows move to spill files), and gets the signal once it has spilled.
"""

from __future__ import annotations

import csv
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PACKETS_PER_BLOCK = 20_000


def _block(n: int) -> bytes:
    """Block ``n`` of the endless capture: 20,000 UDP packets 50 µs apart, each its own flow."""
    out = []
    for i in range(PACKETS_PER_BLOCK):
        k = n * PACKETS_PER_BLOCK + i
        udp = struct.pack(">HHHH", 1024 + k % 60000, 9, 12, 0) + b"stop"
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, struct.pack(">I", 0x0A000000 + k // 60000), b"\x0a\xff\0\2") + udp
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
        usec = k * 50
        out.append(struct.pack("<IIII", 1_700_000_000 + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)) + frame)
    return b"".join(out)


def _feed(pipe, sent: list[int]) -> None:
    """Write blocks until the reader goes away; ``sent[0]``: the packets it may have had."""
    try:
        pipe.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        n = 0
        while True:
            block = _block(n)
            n += 1
            sent[0] = n * PACKETS_PER_BLOCK  # before the write: the reader may take some of it before it returns
            pipe.write(block)
    except (BrokenPipeError, OSError, ValueError):
        pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_what_was_read_marked_partial_and_removes_temporaries(tmp_path: Path, sig: signal.Signals) -> None:
    spill = tmp_path / "spill"
    spill.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pcapclass", "classify", "-", "-o", "out", "-q", "--idle-timeout", "1"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(spill)})  # fmt: skip
    sent = [0]
    feeder = threading.Thread(target=_feed, args=(proc.stdin, sent), daemon=True)
    feeder.start()
    deadline = time.monotonic() + 120
    while not any(spill.rglob("*.npy")):  # flows finished and moved to disk: there is something to remove
        assert proc.poll() is None and time.monotonic() < deadline, "the child never spilled"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    feeder.join(timeout=10)
    lines = err.decode().splitlines()
    assert proc.returncode == 128 + sig, err.decode()[-2000:]
    assert len(lines) == 1 and f"interrupted by {sig.name}" in lines[0] and "Traceback" not in err.decode(), lines
    assert list(spill.iterdir()) == []
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["breakdown.csv", "capture.csv", "flows.csv", "servers.csv"]
    with (out / "capture.csv").open(newline="") as f:
        (row,) = csv.DictReader(f)
    packets = int(row["packets"])
    assert row["partial"] == "true" and f"interrupted by {sig.name}" in row["error"]
    assert PACKETS_PER_BLOCK <= packets <= sent[0]
    # every packet counted is in exactly one flow of flows.csv, one flow per packet as sent
    with (out / "flows.csv").open(newline="") as f:
        flows = list(csv.DictReader(f))
    assert len(flows) == int(row["flows"]) == packets
    assert sum(int(r["packets_c2s"]) + int(r["packets_s2c"]) for r in flows) == packets
