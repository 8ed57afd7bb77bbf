"""The HTML report, rendered by a real browser: headless Chromium loads the page, and its DOM
and a screenshot show that every chart drew and that the page holds what the tables say."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES

from pcapclass.cli import main

SAMPLE = FIXTURES / "exchange_services.pcap"
CHART_NAMES = ("bytes", "flows", "timeseries", "evidence")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path; missing Chromium fails (scripts/test.sh installs Debian's package)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("chromium is not installed (Debian: apt-get install -y chromium; scripts/test.sh does this)", pytrace=False)
    return path


def _browse(chromium: str, page: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip


def test_the_report_renders_every_chart_in_chromium(chromium: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["classify", str(SAMPLE), "-o", str(out), "-q", "--report"]) == 0
    page = out / "report.html"
    assert page.stat().st_size < 5_000_000
    for name in CHART_NAMES:  # the slide exports
        assert (out / "charts" / f"{name}.svg").stat().st_size > 1000 and (out / "charts" / f"{name}.png").stat().st_size > 1000

    dom = _browse(chromium, page, "--dump-dom")
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr, dom.stderr[-2000:]
    charts = dom.stdout.split('<div class="chart">')[1:]
    assert len(charts) == len(CHART_NAMES)
    assert all("<svg" in c and c.count("<path") >= 5 for c in charts)  # axes, bars or areas drawn in each
    # the page says what the tables say: every Exchange server, and the capture's packet count
    servers = pd.read_csv(out / "servers.csv")
    capture = pd.read_csv(out / "capture.csv")
    for addr in servers.loc[servers["exchange"], "server"]:
        assert addr in dom.stdout
    assert f"{int(capture['packets'].sum()):,} packets" in dom.stdout

    shot = tmp_path / "report.png"
    _browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,2400")
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1280
    assert len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 50  # charts in colour, not a blank page
    # the README's screenshot is this one: PCAPCLASS_SCREENSHOT=docs/report.png refreshes it
    if os.environ.get("PCAPCLASS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["PCAPCLASS_SCREENSHOT"])


def test_report_of_a_directory_without_outputs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 7
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "flows.csv is missing" in err
