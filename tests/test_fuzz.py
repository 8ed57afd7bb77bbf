"""A short, bounded run of scripts/fuzz.py per target, each in a child process (a compiled
kernel that corrupts memory dies by a signal there instead of taking the test run down).

Longer campaigns: ``python scripts/fuzz.py TARGET --runs N`` (or ``--engine atheris``).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO

from pcapclass.errors import InvalidCaptureError

FUZZ = REPO / "scripts" / "fuzz.py"
RUNS = {"pcap": 300, "pcapng": 300, "gzip": 300, "packet": 300, "classify": 300, "dcerpc": 300, "http": 300, "signatures": 300,
        "certificate": 300}


@pytest.mark.parametrize("target", sorted(RUNS))
def test_fuzzed_inputs_raise_only_pcapclass_errors(target):
    proc = subprocess.run([sys.executable, str(FUZZ), target, "--runs", str(RUNS[target]), "--seed", "16"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert f"{target}: {RUNS[target]} inputs" in proc.stdout


def _fuzz_module():
    spec = importlib.util.spec_from_file_location("fuzz", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_harness_lets_pcapclass_errors_pass_and_nothing_else():
    fuzz = _fuzz_module()

    def invalid(_data: bytes) -> None:
        raise InvalidCaptureError("bad", path="fuzz")

    def broken(_data: bytes) -> None:
        raise IndexError("index 9 is out of bounds")

    class Swallowed:
        def __del__(self) -> None:
            raise IndexError("Out of bounds on buffer access (axis 0)")  # as a bounds-checked kernel reports it

    def swallowing(_data: bytes) -> None:
        Swallowed()  # dropped at once: its __del__ raises where nothing can catch it

    fuzz.check(invalid, b"", timeout=5)
    with pytest.raises(IndexError):
        fuzz.check(broken, b"", timeout=5)
    with pytest.raises(RuntimeError, match="swallowed: IndexError"):
        fuzz.check(swallowing, b"", timeout=5)
    with pytest.raises(fuzz.Hang):
        fuzz.check(lambda _data: __import__("time").sleep(3), b"", timeout=1)


def test_mutations_are_the_edits_asked_for():
    fuzz = _fuzz_module()
    data = bytes(range(8))
    assert fuzz.mutate(data, [(2, "overwrite", b"\xff\xff")], b"") == bytes([0, 1, 255, 255, 4, 5, 6, 7])
    assert fuzz.mutate(data, [(3, "truncate", b"")], b"") == bytes([0, 1, 2])
    assert fuzz.mutate(data, [(0, "u32be", bytes([fuzz.INTERESTING.index(12)]))], b"") == bytes([0, 0, 0, 12, 4, 5, 6, 7])
    assert fuzz.mutate(data, [(8, "splice", b"\x01")], b"abc") == data + b"bc"


def test_fuzzed_packets_against_bounds_checked_kernels():
    """The kernels built with bounds checks on: a read or write past an array is an exception
    there, not silent corruption (about 30 s, most of it the build)."""
    proc = subprocess.run([sys.executable, str(FUZZ), "packet", "--runs", "200", "--seed", "17", "--boundscheck"],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "packet: 200 inputs" in proc.stdout
