"""The realistic benchmark capture, checked flow by flow against what the generator says it
wrote: every flow whose first payloads are complete protocol starts gets the evidence those
starts prove (the generator's own table, written from the fact sheet), never ``port`` or
``port-mismatch``; and its starts differ from flow to flow as real traffic's do."""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from pathlib import Path

import pandas as pd
import pytest

import pcapclass

ROOT = Path(__file__).resolve().parents[2]
KEY = ["client_addr", "client_port", "server_addr", "server_port", "transport"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(name, module)
    spec.loader.exec_module(module)
    return module


gen = load("gen_bench_capture")
starts = gen.bench_starts


def keyed(df: pd.DataFrame, client: str, server: str) -> pd.DataFrame:
    """Rows by (client, client port, server, server port, transport); keys seen twice dropped
    (a generated 5-tuple used by two flows)."""
    def addr(col: str) -> list[str]:  # one spelling for v4 and v6
        return [str(ipaddress.ip_address(a)) for a in df[col]]

    df = df.assign(key=list(zip(addr(client), df["client_port"], addr(server), df["server_port"], df["transport"])))
    return df[~df["key"].duplicated(keep=False)].set_index("key")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """20,000 packets over 2,000 concurrent flows, and the ground truth."""
    out = tmp_path_factory.mktemp("truth")
    gen.generate(out / "bench.pcap", packets=20_000, flows=2_000, seed=11, truth=out / "truth.csv")
    return out / "bench.pcap", pd.read_csv(out / "truth.csv", keep_default_na=False)


def test_every_flow_of_complete_starts_gets_their_evidence(written: tuple[Path, pd.DataFrame]) -> None:
    path, truth = written
    flows = pcapclass.classify_file(path).flows.sort_values("first_ts")
    # a closed connection's last ACK is a record of its own: the connection is the first record
    flows = keyed(flows[~flows[KEY].duplicated()], "client_addr", "server_addr")
    truth = keyed(truth, "client", "server")
    tcp = truth[truth["transport"] == "tcp"]
    assert (tcp["start1"] != "").mean() > 0.9  # nearly all TCP flows start a protocol
    checked = truth[(truth["starts_written"] == 1) & (truth["evidence"] != "")]
    assert len(checked) > 1500
    got = flows["evidence"].reindex(checked.index).astype(str)
    wrong = [(key, row.profile, row.start1, row.start2, got[key]) for key, row in zip(checked.index, checked.itertuples())
             if got[key] not in row.evidence.split("|")]  # fmt: skip
    assert wrong == []


def test_every_tls_flow_names_its_servers_certificate(written: tuple[Path, pd.DataFrame]) -> None:
    """The subject of the certificate each TLS server sent (the generator's own text of the
    certificate it wrote), flow by flow; flows with none name none."""
    path, truth = written
    flows = pcapclass.classify_file(path).flows.sort_values("first_ts")
    flows = keyed(flows[~flows[KEY].duplicated()], "client_addr", "server_addr")
    truth = keyed(truth, "client", "server")
    checked = truth[truth["starts_written"] == 1]
    assert (checked["cert_subject"] != "").sum() > 100
    got = flows["cert_subject"].reindex(checked.index)
    # the new-mail datagrams' flows are keyed the other way round (the server sends first)
    found = got.notna()
    assert found[checked["cert_subject"] != ""].all()
    assert (got[found].astype(str) == checked["cert_subject"][found]).all()


def test_starts_differ_per_connection_unless_their_protocol_fixes_them() -> None:
    """Of the starts of 50 connections a second apart, nearly all differ (a few may meet: a
    small call id, a user name, a DNS id, as in real traffic); canned ones are all the same."""
    fixed = {"ncacn_http", "nntp_mode"}  # the same bytes in every real connection too
    for st in starts.STARTS:
        conns = [starts.Conn(n, n.to_bytes(16, "little"), 1_143_021_600_000_000 + 1_000_000 * n, f"ws{n}.corp.example.com",
                             "exch01.corp.example.com", 443) for n in range(50)]  # fmt: skip
        distinct = {st.build(c) for c in conns}
        assert len(distinct) == 1 if st.name in fixed else len(distinct) >= 45, st.name
        assert {st.build(starts.Conn.canned(443)) for _ in range(3)} == {st.build(starts.Conn.canned(443))}


def test_payload_bytes_after_the_starts_are_not_zero_unless_canned(tmp_path: Path) -> None:
    def zero_share(**kw: bool) -> float:
        path = tmp_path / "c.pcap"
        gen.generate(path, packets=3_000, flows=300, seed=3, **kw)
        data = path.read_bytes()
        return data.count(0) / len(data)

    assert zero_share() < 0.1
    assert zero_share(canned=True) > 0.5
