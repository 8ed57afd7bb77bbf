"""The fixtures against tshark, and pcapclass's flows against tshark's conversations.

* the synthetic fixtures are reproducible and tshark reads them as intended;
* tests/oracle.py agrees with tshark's own ``-z conv`` tables;
* per flow, pcapclass's packets and bytes per side equal tshark's conversation sums on every
  fixture and every corpus copy (flows split by the idle timeout are summed first);
* exchange_services.pcap: every flow's orientation, service and direction equal the
  ground truth in exchange_services.expected.csv, with and without ``--server``.
"""

from __future__ import annotations

import csv
import importlib.util
import ipaddress
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    FIXTURES,
    GOOD_CAPTURES,
    REPO,
    SYNTHETIC_CAPTURES,
    bad_cases,
    capture_id,
)
from oracle import (
    endpoint_order,
    tshark_conv_table,
    tshark_conversations,
    tshark_packets,
)

EXCHANGE = FIXTURES / "exchange_services.pcap"
EXPECTED = FIXTURES / "exchange_services.expected.csv"
SERVERS = ("10.0.0.10", "10.0.0.20")
SIDES = ["packets_a2b", "bytes_a2b", "packets_b2a", "bytes_b2a"]
KEY = ["transport", "addr_a", "port_a", "addr_b", "port_b"]


def load_make_fixtures():
    path = REPO / "scripts" / "make_fixtures.py"
    spec = importlib.util.spec_from_file_location("make_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_fixtures"] = module
    spec.loader.exec_module(module)
    return module


def norm_addr(addr: object) -> str:
    return str(ipaddress.ip_address(str(addr)))


def flow_sides(flows: pd.DataFrame) -> pd.DataFrame:
    """pcapclass flows -> per TCP/UDP endpoint pair: what each endpoint sent, summed over flows.

    Endpoint A is the lower (version, address, port), as in oracle.tshark_conversations.
    """
    rows = []
    for r in flows[flows["transport"].isin(["tcp", "udp"])].itertuples(index=False):
        c = (norm_addr(r.client_addr), int(r.client_port))
        s = (norm_addr(r.server_addr), int(r.server_port))
        c2s = (int(r.packets_c2s), int(r.bytes_c2s))
        s2c = (int(r.packets_s2c), int(r.bytes_s2c))
        if endpoint_order(*c) <= endpoint_order(*s):
            a, b, a2b, b2a = c, s, c2s, s2c
        else:
            a, b, a2b, b2a = s, c, s2c, c2s
        rows.append([r.transport, a[0], a[1], b[0], b[1], *a2b, *b2a, 1])
    df = pd.DataFrame(rows, columns=KEY + SIDES + ["flows"])
    return df.groupby(KEY, as_index=False).sum()


def compare_with_oracle(flows: pd.DataFrame, path: Path) -> list[str]:
    """Human-readable differences between pcapclass flows and tshark conversations."""
    ours = flow_sides(flows)
    theirs = tshark_conversations(path)[KEY + SIDES]
    merged = ours.merge(theirs, on=KEY, how="outer", suffixes=("_pcapclass", "_tshark"), indicator="side")
    problems = []
    for r in merged.itertuples(index=False):
        d = r._asdict()
        key = f"{d['transport']} {d['addr_a']}:{d['port_a']} <-> {d['addr_b']}:{d['port_b']}"
        if d["side"] == "left_only":
            problems.append(f"{key}: pcapclass has it ({int(d['flows'])} flow(s)), tshark has no such conversation")
        elif d["side"] == "right_only":
            problems.append(
                f"{key}: missing from pcapclass flows (tshark: a->b {d['packets_a2b_tshark']} pkts/{d['bytes_a2b_tshark']} B, "
                f"b->a {d['packets_b2a_tshark']} pkts/{d['bytes_b2a_tshark']} B)"
            )
        else:
            diffs = [
                f"{s} pcapclass={int(d[s + '_pcapclass'])} tshark={int(d[s + '_tshark'])}"
                for s in SIDES
                if int(d[s + "_pcapclass"]) != int(d[s + "_tshark"])
            ]
            if diffs:
                problems.append(f"{key} ({int(d['flows'])} flow(s)): " + ", ".join(diffs))
    return problems


def classify(path: Path, **kw):
    import pcapclass

    return pcapclass.classify_file(path, **kw)


# -- the fixtures themselves ----------------------------------------------------------------


def test_fixtures_are_reproducible():
    """Rerunning scripts/make_fixtures.py gives the committed bytes (SOURCES.md included)."""
    mf = load_make_fixtures()
    out = mf.generate()
    stale = [name for name, data in out.files.items() if (FIXTURES / name).read_bytes() != data]
    assert not stale, f"committed fixtures differ from scripts/make_fixtures.py output: {stale}; rerun the script"
    sources = mf.sources_md(out, FIXTURES / "corpus")
    assert (FIXTURES / "SOURCES.md").read_bytes() == sources, "SOURCES.md is stale: rerun scripts/make_fixtures.py"


def test_every_file_is_documented():
    text = (FIXTURES / "SOURCES.md").read_text()
    undocumented = [
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.name != "SOURCES.md" and not p.name.startswith("LICENSE") and str(p.relative_to(FIXTURES)) not in text
    ]
    assert not undocumented, f"not described in SOURCES.md: {undocumented}"


def test_corpus_copies_are_small_and_licensed():
    corpus = FIXTURES / "corpus"
    total = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    assert total < 5_000_000, f"corpus copies total {total} bytes"
    for repo in (d for d in corpus.iterdir() if d.is_dir()):
        assert list(repo.glob("LICENSE*")), f"no license file beside the captures of {repo.name}"


@pytest.mark.parametrize("path", SYNTHETIC_CAPTURES, ids=capture_id)
def test_tshark_dissects_synthetic_fixture(tshark, path):
    """tshark reads every synthetic capture without error and finds IP + TCP/UDP in it."""
    pk = tshark_packets(path)
    assert len(pk) > 0
    assert pk["l3"].notna().all(), "a frame tshark could not decode to IP: " + repr(pk[pk["l3"].isna()]["protocols"].tolist())
    special = {"ipv4_fragments.pcap": 2, "icmp_and_tunnel.pcap": 6}
    n_other = int((pk["transport"] == "other").sum())
    assert n_other == special.get(path.name, 0), pk[pk["transport"] == "other"]["protocols"].tolist()


LINK_VARIANTS = {
    # file: (tshark protocol chain of the first frame, WTAP encapsulation)
    "linktype_vlan.pcap": ("eth:ethertype:vlan:ethertype:ip:tcp", 1),
    "linktype_qinq.pcap": ("eth:ethertype:ieee8021ad:ethertype:vlan:ethertype:ip:tcp", 1),
    "linktype_sll.pcap": ("sll:ethertype:ip:tcp", 25),
    "linktype_sll2.pcap": ("sll:ethertype:ip:tcp", 210),
    "linktype_raw_ipv4.pcap": ("raw:ip:tcp", 7),
    "linktype_raw_ipv6.pcap": ("raw:ipv6:tcp", 7),
    "linktype_null_ipv4.pcap": ("null:ip:tcp", 15),
    "linktype_null_ipv6.pcap": ("null:ipv6:tcp", 15),
    "ipv4_options.pcap": ("eth:ethertype:ip:tcp", 1),
    "ipv6_ext_headers.pcap": ("eth:ethertype:ipv6:ipv6.hopopts:ipv6.dstopts:tcp", 1),
}


@pytest.mark.parametrize("name", sorted(LINK_VARIANTS))
def test_link_variant_is_what_it_claims(tshark, name):
    chain, encap = LINK_VARIANTS[name]
    pk = tshark_packets(FIXTURES / name)
    assert pk["protocols"].iloc[0] == chain
    assert set(pk["encap"]) == {encap}


def test_link_variants_carry_the_same_packets(tshark):
    """Every IPv4 variant holds the same 18 packets: same addresses, ports, times and IP lengths."""
    base = tshark_packets(FIXTURES / "linktype_raw_ipv4.pcap")
    for name in ["linktype_vlan.pcap", "linktype_qinq.pcap", "linktype_sll.pcap", "linktype_sll2.pcap",
                 "linktype_null_ipv4.pcap", "pcap_be_usec.pcap"]:
        other = tshark_packets(FIXTURES / name)
        cols = ["ts_ns", "src", "dst", "sport", "dport", "transport"]
        assert other[cols].equals(base[cols]), name
    overhead = {"linktype_vlan.pcap": 18, "linktype_qinq.pcap": 22, "linktype_sll.pcap": 16, "linktype_sll2.pcap": 20, "linktype_null_ipv4.pcap": 4}
    for name, extra in overhead.items():
        assert (tshark_packets(FIXTURES / name)["wirelen"] - base["wirelen"] == extra).all(), name


def test_ipv4_fragments_fixture(tshark):
    pk = tshark_packets(FIXTURES / "ipv4_fragments.pcap")
    assert pk["protocols"].tolist() == [
        "eth:ethertype:ip:udp:dns",
        "eth:ethertype:ip:udp:dns",
        "eth:ethertype:ip:data",
        "eth:ethertype:ip:data",
    ]


def test_pcapng_fixture_structure(tshark):
    for name in ["pcapng_multi_if.pcapng", "pcapng_multi_if_be.pcapng", "pcapng_multi_if.pcapng.gz"]:
        pk = tshark_packets(FIXTURES / name)
        assert len(pk) == 34
        assert sorted(set(pk["interface"].dropna())) == [0, 1, 2]
        assert set(pk["encap"]) == {1, 7, 25}
        assert pk["ts_ns"].isna().sum() == 1  # the Simple Packet Block has no timestamp
        assert any(ts % 1000 for ts in pk[pk["interface"] == 1]["ts_ns"]), "interface 1 should carry ns digits"
    two = tshark_packets(FIXTURES / "pcapng_two_sections.pcapng")
    assert set(two["encap"]) == {1, 7} and set(two["interface"]) == {0}


@pytest.mark.parametrize("case", bad_cases(), ids=lambda c: c["file"])
def test_tshark_agrees_with_bad_expectations(tshark, case):
    """Where tshark also stops at the fault, it reads exactly expected_packets_before packets."""
    path = FIXTURES / "bad" / case["file"]
    n = len(tshark_packets(path, allow_errors=True)) if path.stat().st_size else 0
    tolerant = {"unknown_linktype.pcap": 3}  # tshark reads these files on
    assert n == tolerant.get(case["file"], int(case["expected_packets_before"]))


def test_expected_csv_matches_tshark(tshark):
    """The sidecar names exactly the conversations tshark finds in exchange_services.pcap."""
    conv = tshark_conversations(EXCHANGE)
    with EXPECTED.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = set()
    for r in rows:
        c, s = (r["client_addr"], int(r["client_port"])), (r["server_addr"], int(r["server_port"]))
        a, b = sorted([c, s], key=lambda e: endpoint_order(*e))
        keys.add((r["transport"], a[0], a[1], b[0], b[1]))
    assert keys == set(map(tuple, conv[KEY].itertuples(index=False, name=None)))
    assert len(rows) == len(keys) == 26


# -- the oracle against tshark's own conversation tables --------------------------------------

CROSS_CHECK = [
    "exchange_services.pcap",
    "idle_split.pcap",
    "icmp_and_tunnel.pcap",
    "corpus/zeek/mapi.pcap",
    "corpus/zeek/pop3.pcap",
    "corpus/nDPI/synscan.pcap",
]


@pytest.mark.parametrize("name", CROSS_CHECK)
def test_oracle_agrees_with_tshark_conv(tshark, name):
    path = FIXTURES / name
    ours = tshark_conversations(path)
    for transport in ("tcp", "udp"):
        table = tshark_conv_table(path, transport)
        mine = {tuple(r[:5]): r for r in ours[ours["transport"] == transport].itertuples(index=False, name=None)}
        theirs = {}
        for r in table.to_dict("records"):
            a, b = (r["addr_a"], r["port_a"]), (r["addr_b"], r["port_b"])
            if endpoint_order(*a) > endpoint_order(*b):  # orient like the oracle: A is the lower endpoint
                r = dict(r, addr_a=b[0], port_a=b[1], addr_b=a[0], port_b=a[1],
                         packets_a2b=r["packets_b2a"], packets_b2a=r["packets_a2b"],
                         bytes_a2b=r["bytes_b2a"], bytes_b2a=r["bytes_a2b"],
                         bytes_a2b_unit=r["bytes_b2a_unit"], bytes_b2a_unit=r["bytes_a2b_unit"])
            theirs[(transport, r["addr_a"], r["port_a"], r["addr_b"], r["port_b"])] = r
        only_conv = set(theirs) - set(mine)
        if name == "icmp_and_tunnel.pcap" and transport == "tcp":
            # -z conv,tcp counts the TCP inside IP-in-IP; the oracle (outermost header) does not
            assert only_conv == {("tcp", "10.0.0.10", 25, "10.0.1.22", 1151)}
        else:
            assert not only_conv
        assert not set(mine) - set(theirs)
        for key in set(mine) & set(theirs):
            m, t = mine[key], theirs[key]
            _, _, _, _, _, p_a2b, b_a2b, p_b2a, b_b2a, packets, nbytes, *_ = m
            assert (p_a2b, p_b2a, packets) == (t["packets_a2b"], t["packets_b2a"], t["packets"]), key
            for value, shown, unit in ((b_a2b, t["bytes_a2b"], t["bytes_a2b_unit"]), (b_b2a, t["bytes_b2a"], t["bytes_b2a_unit"]), (nbytes, t["bytes"], t["bytes_unit"])):
                assert abs(value - shown) <= (0 if unit == 1 else unit), (key, value, shown)


# -- pcapclass against the oracle ---------------------------------------------------------------


@pytest.mark.parametrize("path", GOOD_CAPTURES, ids=capture_id)
def test_flows_match_tshark_conversations(tshark, path):
    """(a) per TCP/UDP conversation, pcapclass's packets/bytes per side equal tshark's."""
    result = classify(path)
    assert result.error is None and not result.partial, f"{path.name}: {result.error}"
    problems = compare_with_oracle(result.flows, path)
    assert not problems, f"{len(problems)} conversation(s) differ:\n" + "\n".join(problems[:25])


@pytest.mark.parametrize("path", GOOD_CAPTURES, ids=capture_id)
def test_totals_match_tshark(tshark, path):
    result = classify(path)
    pk = tshark_packets(path)
    assert int(result.stats["packets"]) == len(pk)
    assert int(result.stats["bytes"]) == int(pk["wirelen"].sum())


def test_idle_timeout_splits_reused_tuples(tshark):
    """Split flows sum to tshark's conversation; a long timeout keeps one flow per tuple."""
    path = FIXTURES / "idle_split.pcap"
    split = classify(path)
    tcp_udp = split.flows[split.flows["transport"].isin(["tcp", "udp"])]
    assert sorted(tcp_udp.groupby("transport").size().items()) == [("tcp", 2), ("udp", 2)]
    assert not compare_with_oracle(split.flows, path)
    whole = classify(path, idle_timeout=1000.0)
    tcp_udp = whole.flows[whole.flows["transport"].isin(["tcp", "udp"])]
    assert sorted(tcp_udp.groupby("transport").size().items()) == [("tcp", 1), ("udp", 1)]
    assert not compare_with_oracle(whole.flows, path)


def expectation_problems(flows: pd.DataFrame) -> list[str]:
    """Rows of exchange_services.expected.csv that the flows do not reproduce."""
    with EXPECTED.open(newline="") as f:
        rows = list(csv.DictReader(f))
    flows = flows[flows["transport"].isin(["tcp", "udp"])]
    problems = []
    for r in rows:
        c, s = (r["client_addr"], int(r["client_port"])), (r["server_addr"], int(r["server_port"]))
        ends = {c, s}
        match = flows[
            (flows["transport"] == r["transport"])
            & flows.apply(
                lambda f, ends=ends: {(norm_addr(f.client_addr), int(f.client_port)), (norm_addr(f.server_addr), int(f.server_port))} == ends,
                axis=1,
            )
        ]
        label = f"{r['transport']} {c[0]}:{c[1]} -> {s[0]}:{s[1]}"
        if len(match) != 1:
            problems.append(f"{label}: {len(match)} flows (expected 1)")
            continue
        f = match.iloc[0]
        got = ((norm_addr(f.client_addr), int(f.client_port)), f.service, f.direction)
        want = (c, r["expected_service"], r["expected_direction"])
        if got != want:
            problems.append(
                f"{label}: got client={got[0][0]}:{got[0][1]} service={got[1]} direction={got[2]} "
                f"(evidence={f.get('evidence', '?')}); expected client={c[0]}:{c[1]} service={want[1]} direction={want[2]}"
            )
    extra = len(flows) - len(rows)
    if extra:
        problems.append(f"{extra} TCP/UDP flows beyond the {len(rows)} expected")
    return problems


def test_exchange_services_with_servers(tshark):
    """(c) with --server 10.0.0.10 --server 10.0.0.20 every flow has its expected service and direction."""
    result = classify(EXCHANGE, servers=SERVERS)
    problems = expectation_problems(result.flows)
    assert not problems, "\n".join(problems)


def test_exchange_services_inferred_servers(tshark):
    """(c) without --server: 10.0.0.10 and 10.0.0.20 answer on Exchange inbound ports, so inference
    must find them and give the same services and directions (the DC 10.0.0.5 also answers on TCP 379,
    but both of its flows are initiated by the back-end, so they are outbound either way)."""
    result = classify(EXCHANGE)
    problems = expectation_problems(result.flows)
    assert not problems, "\n".join(problems)


def test_exchange_services_through_cli(tshark, tmp_path):
    """The CLI writes the same flows to flows.csv (and the CSVs have the documented columns)."""
    from pcapclass.cli import main

    rc = main(["classify", str(EXCHANGE), "-o", str(tmp_path), "--server", SERVERS[0], "--server", SERVERS[1]])
    assert rc == 0
    flows = pd.read_csv(tmp_path / "flows.csv")
    required = ["first_ts", "last_ts", "transport", "client_addr", "client_port", "server_addr", "server_port", "service",
                "evidence", "direction", "packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c"]
    assert set(required) <= set(flows.columns), set(required) - set(flows.columns)
    breakdown = pd.read_csv(tmp_path / "breakdown.csv")
    assert {"service", "direction", "flows", "packets", "bytes", "packets_c2s", "bytes_c2s", "packets_s2c", "bytes_s2c",
            "first_ts", "last_ts"} <= set(breakdown.columns)
    assert (tmp_path / "capture.csv").exists()
    problems = expectation_problems(flows) + compare_with_oracle(flows, EXCHANGE)
    assert not problems, "\n".join(problems)
    assert int(breakdown["packets"].sum()) == int(flows["packets_c2s"].sum() + flows["packets_s2c"].sum())
