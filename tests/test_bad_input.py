"""(d) Bad input: one precise error, the documented exit code, and nothing read before it lost.

Each malformed file under fixtures/pcaps/bad/ has its fault offset and the number of good packets
before it in bad/EXPECTED.csv (computed by scripts/make_fixtures.py from the pieces it builds the
file from). Open errors (missing file, directory, unreadable file, read error) and a bad rules
file are covered too. The CLI is run in-process through ``pcapclass.cli.main``, except the one
case that needs another process (dropping root's capabilities to make a file unreadable).
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BAD, FIXTURES, REPO, bad_cases

EXIT_UNREADABLE = 3
EXIT_PARTIAL = 4
EXIT_BAD_RULES = 5
EXIT_OUTPUT = 7

CASES = bad_cases()


def classify_outcome(path: Path):
    """(error, packets counted, result or None) whether classify_file raises or returns the error."""
    import pcapclass
    from pcapclass.errors import CaptureError

    try:
        result = pcapclass.classify_file(path)
    except CaptureError as exc:
        return exc, 0, None
    return result.error, int(result.stats["packets"]), result


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pcapclass.cli import main

    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, path: str, *needles: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert "Traceback" not in err
    assert path in line, f"stderr does not name the file {path!r}: {line!r}"
    for needle in needles:
        assert needle in line, f"{needle!r} missing from {line!r}"
    return line


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_bad_file_api(case):
    from pcapclass.errors import InvalidCaptureError

    path = BAD / case["file"]
    offset, before = int(case["expected_error_offset"]), int(case["expected_packets_before"])
    err, packets, result = classify_outcome(path)
    assert err is not None, f"{case['file']}: no error reported ({case['fault']})"
    assert isinstance(err, InvalidCaptureError), type(err)
    assert str(path) in str(err) and os.fspath(err.path) == str(path), f"error does not name the file: {err}"
    assert err.offset == offset, f"{case['file']}: error offset {err.offset}, expected {offset} ({case['fault']})"
    if err.packet is not None:
        assert err.packet == before + 1, f"packet number {err.packet}, expected {before + 1} (1-based)"
    assert packets == before, f"{packets} packets counted before the fault, expected {before}"
    if before:
        assert result is not None, "a mid-file fault must return the partial result, not raise"
        assert result.partial is True
        flows = result.flows
        assert int(flows["packets_c2s"].sum() + flows["packets_s2c"].sum()) == before, "the good packets are in the flows"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["file"])
def test_bad_file_cli(case, tmp_path, capsys):
    path = BAD / case["file"]
    offset, before = int(case["expected_error_offset"]), int(case["expected_packets_before"])
    rc, _out, err = run_cli(["classify", str(path), "-o", str(tmp_path / "out")], capsys)
    assert rc == (EXIT_PARTIAL if before else EXIT_UNREADABLE), f"exit code {rc}; stderr: {err}"
    line = assert_one_line_error(err, str(path))
    assert str(offset) in line or f"packet {before + 1}" in line, f"neither byte offset {offset} nor packet {before + 1} in {line!r}"
    if before:
        out = tmp_path / "out"
        for name in ("flows.csv", "breakdown.csv", "capture.csv"):
            assert (out / name).exists(), f"{name} not written for a partial read"
        with (out / "capture.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        cols = [c for c in (rows[0] if rows else {}) if "partial" in c.lower()]
        assert cols, f"capture.csv has no partial column: {list(rows[0]) if rows else rows}"
        assert any(str(r[cols[0]]).strip().lower() in ("true", "1", "yes") for r in rows), f"partial not marked: {rows}"


# -- files that cannot be opened or read ------------------------------------------------------


def _sysfs_write_only() -> str | None:
    """A sysfs attribute without read permission: open(O_RDONLY) fails with EACCES even for root."""
    for pattern in ("/sys/bus/pci/rescan", "/sys/devices/pci*/*/rescan", "/sys/class/zram-control/hot_remove"):
        for p in sorted(glob.glob(pattern)):
            try:
                with open(p, "rb"):
                    pass
            except PermissionError:
                return p
            except OSError:
                continue
    return None


OPEN_CASES = ["missing", "directory", "permission", "read-error"]


def _open_case(kind: str, tmp_path: Path) -> str:
    if kind == "missing":
        return str(tmp_path / "no-such-capture.pcap")
    if kind == "directory":
        return str(tmp_path)
    if kind == "permission":
        if os.geteuid() != 0:
            p = tmp_path / "locked.pcap"
            shutil.copyfile(FIXTURES / "exchange_services.pcap", p)
            p.chmod(0)
            return str(p)
        p = _sysfs_write_only()
        if p is None:
            pytest.skip("running as root and no write-only sysfs attribute exists to stand for an unreadable file")
        return p
    # opens fine, but reading fails with EIO: nothing is mapped at address 0 of this process
    return "/proc/self/mem"


@pytest.mark.parametrize("kind", OPEN_CASES)
def test_unopenable_api(kind, tmp_path):
    from pcapclass.errors import CaptureOpenError

    path = _open_case(kind, tmp_path)
    err, packets, _ = classify_outcome(Path(path))
    assert isinstance(err, CaptureOpenError), f"{kind}: {type(err).__name__}: {err}"
    assert isinstance(err, OSError)
    assert os.fspath(err.path) == path and path in str(err)
    assert packets == 0


@pytest.mark.parametrize("kind", OPEN_CASES)
def test_unopenable_cli(kind, tmp_path, capsys):
    path = _open_case(kind, tmp_path)
    rc, _out, err = run_cli(["classify", path, "-o", str(tmp_path / "out")], capsys)
    assert rc == EXIT_UNREADABLE, f"exit code {rc}; stderr: {err}"
    assert_one_line_error(err, path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="root + setpriv needed (non-root is covered in-process)")
def test_chmod_000_file_as_root_without_capabilities(tmp_path):
    """A real chmod-000 file: root bypasses permissions, so run the CLI with all capabilities dropped."""
    locked = tmp_path / "locked.pcap"
    shutil.copyfile(FIXTURES / "exchange_services.pcap", locked)
    locked.chmod(0)
    proc = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "pcapclass",
         "classify", str(locked), "-o", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False,
    )
    assert proc.returncode == EXIT_UNREADABLE, proc.stderr
    assert_one_line_error(proc.stderr, str(locked))


def test_python_dash_m_reports_missing_file(tmp_path):
    """``python -m pcapclass`` is the same program: one line, exit 3, no traceback."""
    missing = str(tmp_path / "absent.pcap")
    proc = subprocess.run(
        [sys.executable, "-m", "pcapclass", "classify", missing, "-o", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), check=False,
    )
    assert proc.returncode == EXIT_UNREADABLE, proc.stderr
    assert_one_line_error(proc.stderr, missing)


def test_bad_rules_file(tmp_path, capsys):
    rules = tmp_path / "broken.toml"
    rules.write_text('[[service]]\nid = "x"\ninbound = [{ transport = "tcp", port = "not a number" }]\n')
    rc, _out, err = run_cli(["classify", str(FIXTURES / "exchange_services.pcap"), "-o", str(tmp_path / "out"),
                             "--rules", str(rules)], capsys)
    assert rc == EXIT_BAD_RULES, f"exit code {rc}; stderr: {err}"
    assert_one_line_error(err, str(rules))
    rules.write_text("this is = = not toml\n")
    rc, _out, err = run_cli(["classify", str(FIXTURES / "exchange_services.pcap"), "-o", str(tmp_path / "out2"),
                             "--rules", str(rules)], capsys)
    assert rc == EXIT_BAD_RULES, f"exit code {rc}; stderr: {err}"
    assert_one_line_error(err, str(rules))


def test_unwritable_output_directory(tmp_path, capsys):
    """An output directory that cannot be made (a file is in the way): one line, exit 7, no file left."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    rc, _out, err = run_cli(["classify", str(FIXTURES / "exchange_services.pcap"), "-o", str(blocker / "out"), "--quiet"], capsys)
    assert rc == EXIT_OUTPUT, f"exit code {rc}; stderr: {err}"
    assert_one_line_error(err, str(blocker))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
