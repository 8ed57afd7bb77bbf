#!/usr/bin/env python3
"""Write the golden outputs: flows.csv and breakdown.csv of a few fixtures, as classify writes
them, under tests/golden/<name>/. tests/test_golden.py compares a fresh run with them byte for
byte, so a change that moves a byte of output is seen, and reviewed with this script's diff.

    python3 scripts/golden.py          # rewrite them (then read `git diff tests/golden`)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden"
#: name -> the capture (relative to the repository: the capture column names it so) and options
CASES = {
    "exchange_services": ("tests/fixtures/pcaps/exchange_services.pcap", []),
    "exchange_services_given": ("tests/fixtures/pcaps/exchange_services.pcap", ["--server", "10.0.0.10", "--server", "10.0.0.20"]),
    "mapi": ("tests/fixtures/payloads/mapi.pcap", []),
    "aduser1": ("tests/fixtures/payloads/zeek-aduser1.pcap", []),
    "smtp_decrypted": ("tests/fixtures/payloads/arkime-smtp-decrypted.pcap", ["--by", "detail"]),
}
FILES = ("flows.csv", "breakdown.csv", "servers.csv")


def run(name: str, out: Path) -> None:
    """Classify one case into ``out`` as the tests do."""
    capture, options = CASES[name]
    subprocess.run([sys.executable, "-m", "pcapclass", "classify", capture, "-o", str(out), "-q", *options], cwd=REPO, check=True)


def main() -> int:
    for name in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            run(name, Path(tmp))
            dest = GOLDEN / name
            dest.mkdir(parents=True, exist_ok=True)
            for f in FILES:
                shutil.copyfile(Path(tmp) / f, dest / f)
    print(f"wrote {len(CASES)} cases under {GOLDEN.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
