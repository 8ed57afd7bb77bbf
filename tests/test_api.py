"""The library API: the streaming writer gives what the in-memory result gives."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pcapclass.api import Classifier

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RUNS = {
    "sample": [FIXTURES / "pcaps" / "exchange_services.pcap"],
    # registrations, heuristic notifications and endpoint-mapper ports need flows of other blocks
    "evidence": sorted((FIXTURES / "evidence").glob("*.pcap")),
    "several": [FIXTURES / "pcaps" / "exchange_services.pcap", FIXTURES / "pcaps" / "idle_split.pcap",
                FIXTURES / "pcaps" / "corpus" / "zeek" / "mapi.pcap"],
}


def written(tmp_path: Path, captures: list[Path], spill_flows: int | None, servers: tuple[str, ...],
            by: tuple[str, ...] = ("service", "direction", "detail"), top_groups: int | None = None) -> dict[str, pd.DataFrame]:
    clf = Classifier(servers=servers)
    if spill_flows is not None:
        clf.store.spill_flows = spill_flows
    for path in captures:
        clf.read(path)
    clf.finish()
    assert clf.store.one_block == (spill_flows is None)
    if spill_flows is not None:
        assert len(list(clf.store.blocks())) > 2
    out = tmp_path / f"out-{spill_flows}-{len(servers)}"
    clf.write(out, by=by, top_groups=top_groups)
    clf.close()
    frames = {}
    for name in ("flows", "breakdown", "capture"):
        df = pd.read_csv(out / f"{name}.csv", keep_default_na=False)
        frames[name] = df.sort_values(list(df.columns)).reset_index(drop=True)
    return frames


@pytest.mark.parametrize("servers", [(), ("10.0.0.10", "10.0.0.20")], ids=["inferred", "given"])
@pytest.mark.parametrize("run", sorted(RUNS))
def test_spilled_blocks_write_the_same_outputs(tmp_path: Path, run: str, servers: tuple[str, ...]) -> None:
    whole = written(tmp_path, RUNS[run], None, servers)
    blocks = written(tmp_path, RUNS[run], 3, servers)  # a block every 3 flows
    for name in whole:
        pd.testing.assert_frame_equal(whole[name], blocks[name], check_exact=True, obj=f"{run} {name}.csv")
    assert len(whole["flows"]) > 6


@pytest.mark.parametrize(("by", "top_groups"), [(("server_addr", "service", "protocol"), None), (("service", "client_addr", "server_port"), 2)])
def test_spilled_blocks_write_the_same_grouping_by_several_columns(tmp_path: Path, by: tuple[str, ...], top_groups: int | None) -> None:
    whole = written(tmp_path, RUNS["several"], None, (), by, top_groups)
    blocks = written(tmp_path, RUNS["several"], 3, (), by, top_groups)
    pd.testing.assert_frame_equal(whole["breakdown"], blocks["breakdown"], check_exact=True)
    assert list(whole["breakdown"].columns[: len(by)]) == ["service", *[k for k in by if k != "service"]]
    assert whole["breakdown"]["bytes"].sum() == whole["capture"]["bytes"].sum()
