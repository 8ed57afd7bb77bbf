"""The output side (pcapclass.output): the files of a run appear together, follow the umask,
are written under one policy offline and live, and a directory that cannot be made, a full
disk or a full spill directory is one line and exit 7, never a traceback or a torn file.

A full disk is a real write failure: the child process runs with a file-size limit
(RLIMIT_FSIZE, with SIGXFSZ ignored), so that a write past it fails as a write to a full disk
fails, at whatever point the limit falls.
"""

from __future__ import annotations

import csv
import os
import resource
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_bad_input import assert_one_line_error, run_cli

from pcapclass import schema
from pcapclass.errors import OutputError
from pcapclass.live import capture as live_module
from pcapclass.output import writers
from pcapclass.sources import CaptureFile

EXIT_OUTPUT = 7
CAPTURE = FIXTURES / "exchange_services.pcap"
OUTPUTS = ["breakdown.csv", "capture.csv", "flows.csv", "servers.csv"]


def _limited(max_file_bytes: int):
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return limit


def _classify_in_child(args: list[str], cwd: Path, *, max_file_bytes: int, env: dict[str, str] | None = None):
    return subprocess.run([sys.executable, "-m", "pcapclass", "classify", *args, "-q"], capture_output=True, text=True,
                          timeout=300, check=False, cwd=cwd, preexec_fn=_limited(max_file_bytes),
                          env={**os.environ, **(env or {})})  # fmt: skip


def _old_outputs(out: Path) -> dict[str, bytes]:
    out.mkdir()
    for name in OUTPUTS:
        (out / name).write_text(f"an earlier run's {name}\n")
    return {p.name: p.read_bytes() for p in out.iterdir()}


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002], ids=oct)
def test_outputs_follow_the_umask(tmp_path, capsys, umask):
    before = os.umask(umask)
    try:
        rc, _, err = run_cli(["classify", str(CAPTURE), "-o", str(tmp_path / "out"), "-q"], capsys)
    finally:
        os.umask(before)
    assert rc == 0, err
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == dict.fromkeys(OUTPUTS, 0o666 & ~umask)


def test_a_set_that_cannot_be_finished_leaves_the_previous_set_whole(tmp_path, capsys, monkeypatch):
    """capture.csv, the last file, does not fit: flows.csv and breakdown.csv, complete by then,
    must not replace the previous run's either."""
    out = tmp_path / "out"
    old = _old_outputs(out)
    write = writers.CsvAppender.write

    def full_disk_for_capture_csv(self, df):
        if self._path.name == "capture.csv":
            raise OSError(28, "No space left on device")
        write(self, df)

    monkeypatch.setattr(writers.CsvAppender, "write", full_disk_for_capture_csv)
    rc, _, err = run_cli(["classify", str(CAPTURE), "-o", str(out), "-q"], capsys)
    assert rc == EXIT_OUTPUT
    assert_one_line_error(err, str(out), "No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_a_full_disk_mid_write_leaves_the_previous_set_and_no_temporary(tmp_path, fmt):
    out = tmp_path / "out"
    options = ["--format", fmt, "--interval", "1"]
    rc = _classify_in_child([str(CAPTURE), "-o", "fresh", *options], tmp_path, max_file_bytes=1 << 30).returncode
    assert rc == 0
    flows_size = (tmp_path / "fresh" / f"flows.{fmt}").stat().st_size
    old = _old_outputs(out)
    proc = _classify_in_child([str(CAPTURE), "-o", str(out), *options], tmp_path, max_file_bytes=flows_size // 2)
    assert proc.returncode == EXIT_OUTPUT, proc.stderr[-2000:]
    assert_one_line_error(proc.stderr, str(out), "File too large")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def _many_flows_pcap(flows: int) -> bytes:
    """One UDP packet per flow (a new source port each), 1 ms apart: with a 1 s idle timeout
    nearly all of them finish during the capture, which moves them to the spill files."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(flows):
        udp = struct.pack(">HHHH", 1024 + i % 60000, 9, 12, 0) + b"spil"
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes([10, 1, i >> 16 & 255, 1]), b"\x0a\0\0\2") + udp
        frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip
        out.append(struct.pack("<IIII", 1_700_000_000 + i // 1000, i % 1000 * 1000, len(frame), len(frame)) + frame)
    return b"".join(out)


def test_a_full_spill_directory_is_one_line_and_leaves_nothing(tmp_path):
    capture = tmp_path / "many.pcap"
    capture.write_bytes(_many_flows_pcap(100_000))
    spill = tmp_path / "spill"
    spill.mkdir()
    proc = _classify_in_child([str(capture), "-o", "out", "--idle-timeout", "1"], tmp_path, max_file_bytes=1 << 20,
                              env={"TMPDIR": str(spill)})  # fmt: skip
    assert proc.returncode == EXIT_OUTPUT, proc.stderr[-2000:]
    assert_one_line_error(proc.stderr, str(spill), "cannot spill")
    assert list(spill.iterdir()) == []
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_live_with_an_outdir_it_cannot_make_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    rc, _, err = run_cli(["live", "-i", "lo", "-o", str(blocker / "out"), "-q", "--count", "1"], capsys)
    assert rc == EXIT_OUTPUT
    assert_one_line_error(err, str(blocker), "cannot make the output directory")


def test_an_append_that_does_not_fit_leaves_the_file_as_it_was(tmp_path):
    """live's flows.csv and timeseries.csv grow by appends: half a row must never stay."""
    path = tmp_path / "flows.csv"
    path.write_text("a,b\n1,2\n")
    code = (
        "import sys\nfrom pathlib import Path\nfrom pcapclass.output import append_text\nfrom pcapclass.errors import OutputError\n"
        "try:\n    append_text(Path(sys.argv[1]), '3,4\\n' * 1000)\nexcept OutputError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          check=False, preexec_fn=_limited(1000))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path}: cannot append: File too large")
    assert path.read_text() == "a,b\n1,2\n"


def test_output_errors_are_the_projects_and_the_systems():
    assert issubclass(OutputError, OSError) and OutputError.exit_code == EXIT_OUTPUT


class _FixtureSource:
    """A live source that hands over a capture file's batches, then is finished."""

    format = "pcap"
    drops = 0

    def __init__(self, path: Path) -> None:
        self._batches = iter(list(CaptureFile(path, keep_chunks=4)))
        self.finished = False

    def poll(self, _timeout: float):
        batch = next(self._batches, None)
        self.finished = batch is None
        return batch

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_live_on_a_disk_that_fills_keeps_whole_rows_and_says_so(tmp_path, monkeypatch):
    """The flows.csv append at the end of the capture gets half its bytes onto the disk, then
    ENOSPC: the half row goes, the run ends with OutputError, capture.csv says partial."""
    monkeypatch.setattr(live_module, "open_live", lambda *a, **k: _FixtureSource(CAPTURE))
    real_append, real_write = writers.append_text, os.write

    def half_then_full(fd: int, data) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    def append_to_a_filling_disk(path: Path, text: str) -> None:
        if path.name == "flows.csv" and path.exists():  # rows, after the header
            monkeypatch.setattr(os, "write", half_then_full)
        try:
            real_append(path, text)
        finally:
            monkeypatch.setattr(os, "write", real_write)

    monkeypatch.setattr(writers, "append_text", append_to_a_filling_disk)
    cap = live_module.LiveCapture("fixture", outdir=tmp_path / "out", interval=3600)
    with pytest.raises(OutputError, match="No space left on device"):
        cap.run()
    flows = (tmp_path / "out" / "flows.csv").read_text()
    # the header, written at the start, quoted as in every CSV file (output.writers' policy)
    assert flows.splitlines() == [",".join(f'"{name}"' for name in schema.names(schema.with_readable_times(schema.FLOWS)))]
    with (tmp_path / "out" / "capture.csv").open(newline="") as f:
        (row,) = csv.DictReader(f)
    assert row["partial"] == "true" and "No space left on device" in row["error"]


def test_live_appends_write_what_the_offline_writer_writes(tmp_path):
    """One CSV policy: flows appended a few rows at a time (live) are the bytes the offline
    writer gives for the same frame (quoting, booleans, float digits, ISO twins)."""
    from pcapclass import classify_file
    from pcapclass.output import Outputs, append_rows

    flows = classify_file(CAPTURE).flows
    assert len(flows) > 3 and flows["fragment"].dtype == bool
    with Outputs(tmp_path / "offline") as out:
        out.write("flows.csv", flows)
    appended = tmp_path / "flows.csv"
    for part in (flows.iloc[:0], flows.iloc[:3], flows.iloc[3:]):
        append_rows(appended, part)
    assert appended.read_bytes() == (tmp_path / "offline" / "flows.csv").read_bytes()
