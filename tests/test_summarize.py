"""Breakdowns grouped by any flow labels, against groupings counted by hand from flows.csv's
rows (plain dicts, not pandas): the command's own flows, summed another way."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_bad_input import run_cli

import pcapclass
from pcapclass.cli import main

CAPTURES = [FIXTURES / "exchange_services.pcap", FIXTURES / "corpus" / "zeek" / "mapi.pcap"]
COUNTED = ("flows", "packets", "bytes", "bytes_c2s", "bytes_s2c")


def by_hand(flows_csv: Path, keys: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, int]]:
    """flows.csv's rows summed per ``keys``: a dict loop."""
    groups: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTED, 0))
    with flows_csv.open(newline="") as f:
        for row in csv.DictReader(f):
            g = groups[tuple(row[k] for k in keys)]
            g["flows"] += 1
            g["packets"] += int(row["packets_c2s"]) + int(row["packets_s2c"])
            g["bytes"] += int(row["bytes_c2s"]) + int(row["bytes_s2c"])
            g["bytes_c2s"] += int(row["bytes_c2s"])
            g["bytes_s2c"] += int(row["bytes_s2c"])
    return dict(groups)


def read_groups(breakdown_csv: Path, keys: tuple[str, ...]) -> dict[tuple[str, ...], dict[str, int]]:
    with breakdown_csv.open(newline="") as f:
        return {tuple(r[k] for k in keys): {c: int(r[c]) for c in COUNTED} for r in csv.DictReader(f)}


def test_by_server_addr_and_service_is_the_hand_grouping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run_cli(["classify", *map(str, CAPTURES), "-o", str(tmp_path), "--by", "server_addr,service"], capsys)
    assert rc == 0
    keys = ("service", "direction", "server_addr")
    expected = by_hand(tmp_path / "flows.csv", keys)
    assert read_groups(tmp_path / "breakdown.csv", keys) == expected
    assert len(expected) > 10
    header = out.splitlines()[0].split()
    assert header[:3] == list(keys), "the table shows the grouping asked for"


def test_repeated_by_and_a_label_that_is_no_string(tmp_path: Path) -> None:
    """--by repeated and comma-separated; server_port is an integer, fragment a boolean."""
    rc = main(["classify", *map(str, CAPTURES), "-o", str(tmp_path), "-q", "--by", "server_port", "--by", "fragment,detail"])
    assert rc == 0
    keys = ("service", "direction", "server_port", "fragment", "detail")
    assert read_groups(tmp_path / "breakdown.csv", keys) == by_hand(tmp_path / "flows.csv", keys)


def test_top_keeps_the_largest_groups_of_each_service_and_sums_the_rest(tmp_path: Path) -> None:
    rc = main(["classify", *map(str, CAPTURES), "-o", str(tmp_path), "-q", "--by", "client_addr,server_port", "--top", "1"])
    assert rc == 0
    full = by_hand(tmp_path / "flows.csv", ("service", "direction", "client_addr", "server_port"))
    expected: dict[tuple[str, ...], dict[str, int]] = {}
    for service in dict.fromkeys(k[0] for k in full):
        mine = sorted(((g, c) for g, c in full.items() if g[0] == service), key=lambda gc: -gc[1]["bytes"])
        expected[mine[0][0]] = mine[0][1]
        if len(mine) > 1:
            expected[(service, "(other)", "(other)", "(other)")] = {c: sum(x[c] for _, x in mine[1:]) for c in COUNTED}
    got = read_groups(tmp_path / "breakdown.csv", ("service", "direction", "client_addr", "server_port"))
    assert got == expected
    assert any(k[1] == "(other)" for k in got)


def test_api_groups_without_direction() -> None:
    result = pcapclass.classify_file(CAPTURES[1], by=["protocol", "service"])
    assert list(result.breakdown.columns[:2]) == ["service", "protocol"]
    expected: dict[tuple[str, str], int] = defaultdict(int)
    for f in result.flows.to_dict("records"):
        expected[(f["service"], f["protocol"])] += f["bytes_c2s"] + f["bytes_s2c"]
    got = {(r["service"], r["protocol"]): r["bytes"] for r in result.breakdown.to_dict("records")}
    assert got == expected and len(got) > 1


def test_api_refuses_a_column_that_is_no_label() -> None:
    with pytest.raises(ValueError, match="'bytes_c2s'"):
        pcapclass.classify_file(CAPTURES[0], by=["service", "bytes_c2s"])


@pytest.mark.parametrize("by", ["bytes_c2s", "nosuch", ","])
def test_a_bad_by_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str) -> None:
    rc, _, err = run_cli(["classify", str(CAPTURES[0]), "-o", str(tmp_path), "--by", by], capsys)
    assert rc == 2
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("pcapclass classify: error: argument --by: ")
