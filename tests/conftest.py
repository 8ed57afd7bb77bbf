"""Shared test setup: fixture paths, the tshark oracle requirement and capture lists."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # so that test modules in sub-directories can `import oracle`
    sys.path.insert(0, str(TESTS))

from oracle import capture_files

REPO = TESTS.parent
FIXTURES = TESTS / "fixtures" / "pcaps"
BAD = FIXTURES / "bad"
CORPUS = FIXTURES / "corpus"
#: single payloads (binds, requests, replies) cut from real captures, with their sources
PAYLOADS = TESTS / "fixtures" / "payloads"

#: every readable capture: the synthetic fixtures and the corpus copies (not bad/)
GOOD_CAPTURES: list[Path] = [p for p in capture_files(FIXTURES) if BAD not in p.parents]
SYNTHETIC_CAPTURES: list[Path] = [p for p in GOOD_CAPTURES if CORPUS not in p.parents]
CORPUS_CAPTURES: list[Path] = [p for p in GOOD_CAPTURES if CORPUS in p.parents]


def capture_id(path: Path) -> str:
    return str(path.relative_to(FIXTURES))


def bad_cases() -> list[dict[str, str]]:
    with (BAD / "EXPECTED.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def tshark() -> str:
    """tshark's path (``tshark_path``)."""
    return tshark_path()


def tshark_path() -> str:
    """tshark's path. Missing tshark is a failure, never a skip: it is the tests' oracle."""
    path = shutil.which("tshark")
    if path is None:
        pytest.fail(
            "tshark is not installed. These tests check pcapclass against tshark (Wireshark 4.x) as an "
            "independent oracle and do not skip without it: install it (Debian/Ubuntu: "
            "`apt-get install -y tshark`; .ci/run does this) and rerun.",
            pytrace=False,
        )
    return path
