"""rules/exchange2003.toml against Microsoft's table, the lookup arrays, and --rules files.

The expected ports below are typed by hand from Microsoft's "Ports used in Exchange 2003"
(Exchange Server 2003 Technical Reference), row by row, plus the RPC-over-HTTP ports of
docs/exchange-wire-facts.md §4.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pcapclass.cli import main
from pcapclass.errors import RulesError
from pcapclass.tables.rules import load_rules
from pcapclass.tables.services import DEFAULT_RULES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pcaps" / "exchange_services.pcap"

# id: (inbound, outbound, rpc inbound/outbound), ports as "tcp/N" / "udp/N"
SEED = {
    "system-attendant": ({"tcp/6002", "tcp/6004"}, set(), (True, False)),
    "information-store": ({"tcp/6001"}, set(), (True, False)),
    "mta-stacks": ({"tcp/102"}, {"tcp/102"}, (True, True)),
    "smtp": ({"tcp/25"}, {"tcp/25"}, (False, False)),
    "routing-engine": ({"tcp/691"}, {"tcp/691"}, (False, False)),
    "www": ({"tcp/80", "tcp/443"}, {"tcp/80"}, (False, False)),
    "activesync": (set(), {"udp/2883"}, (False, False)),
    "pop3": ({"tcp/110", "tcp/995"}, {"tcp/110"}, (False, False)),
    "imap4": ({"tcp/143", "tcp/993"}, {"tcp/143"}, (False, False)),
    "nntp": ({"tcp/119", "tcp/563"}, set(), (False, False)),
    "site-replication": ({"tcp/379"}, set(), (True, True)),
    "ad-connector": (set(), {"tcp/379", "tcp/389"}, (False, False)),
    "event": (set(), set(), (False, False)),
    "management": ({"tcp/445"}, set(), (False, False)),
    "rpc-endpoint-mapper": ({"tcp/135", "tcp/593"}, {"tcp/135"}, (False, False)),
}


def ports(rules) -> set[str]:
    return {f"{r.transport}/{r.port}" for r in rules}


def test_every_seed_row_is_in_the_rules() -> None:
    rules = load_rules()
    by_id = {s.id: s for s in rules.services}
    assert set(by_id) == set(SEED)
    for sid, (inbound, outbound, rpc) in SEED.items():
        s = by_id[sid]
        assert (ports(s.inbound), ports(s.outbound), (s.rpc_inbound, s.rpc_outbound)) == (inbound, outbound, rpc), sid
    store = by_id["information-store"]
    assert [(d["direction"], d["transport"]) for d in store.dynamic] == [("outbound", "udp")]  # new-mail notifications


def test_lookup_arrays_follow_the_sides() -> None:
    lookup = load_rules().lookup()
    ids = lookup.ids
    tcp, udp = 0, 1
    assert ids[lookup.table[tcp, 0, 379]] == "site-replication"
    assert ids[lookup.table[tcp, 1, 379]] == "ad-connector"
    assert ids[lookup.table[tcp, 1, 389]] == "ad-connector"
    assert ids[lookup.table[tcp, 0, 389]] == "other"
    assert ids[lookup.table[udp, 1, 2883]] == "activesync"
    assert ids[lookup.table[tcp, 0, 2883]] == "other"
    assert lookup.rule_port[tcp, 6001] and not lookup.rule_port[tcp, 6003]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_override_replaces_and_adds(tmp_path: Path) -> None:
    extra = write(tmp_path, """
[[service]]
id = "pop3"
name = "POP3 on a custom port"
inbound = [{ transport = "tcp", ports = [1110] }]

[[service]]
id = "owa-proxy"
inbound = [{ transport = "tcp", port = 8443, note = "reverse proxy" }]
""")
    rules = load_rules([extra])
    by_id = {s.id: s for s in rules.services}
    assert ports(by_id["pop3"].inbound) == {"tcp/1110"} and ports(by_id["pop3"].outbound) == set()
    assert ports(by_id["owa-proxy"].inbound) == {"tcp/8443"}
    lookup = rules.lookup()
    assert lookup.ids[lookup.table[0, 0, 110]] == "other"
    assert lookup.ids[lookup.table[0, 0, 1110]] == "pop3"


def test_override_changes_classification(tmp_path: Path, capsys) -> None:
    """Without a rule for TCP 110 the two POP3 flows of the sample (10.0.1.15:1107 -> 10.0.0.20:110,
    and the front-end's 10.0.0.20:1208 -> 10.0.0.10:110) are decided by their greeting instead."""
    import pcapclass

    extra = write(tmp_path, '[[service]]\nid = "pop3"\ninbound = [{ transport = "tcp", port = 995 }]\n')
    by_port = pcapclass.classify_file(FIXTURE, rules=[extra], payload=False, servers=["10.0.0.10", "10.0.0.20"]).flows
    pop = by_port[(by_port["server_port"] == 110)]
    assert len(pop) == 2 and set(pop["service"]) == {"other"} and set(pop["evidence"]) == {"none"}
    with_payload = pcapclass.classify_file(FIXTURE, rules=[extra], servers=["10.0.0.10", "10.0.0.20"]).flows
    pop = with_payload[(with_payload["server_port"] == 110)]
    assert set(pop["service"]) == {"pop3"} and set(pop["evidence"]) == {"signature"}


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ('[[service]]\nid = "Bad Id"\n', "service[0].id", "lower-case"),
        ('[[service]]\nid = "x"\ninbound = [{ transport = "sctp", port = 1 }]\n', "service[0](x).inbound[0].transport", "transport"),
        ('[[service]]\nid = "x"\ninbound = [{ transport = "tcp", port = 70000 }]\n', "service[0](x).inbound[0].port", "65535"),
        ('[[service]]\nid = "x"\ncolour = "red"\n', "service[0].colour", "unknown key"),
        ('[[service]]\nid = "other"\n', "service[0].id", "reserved"),
        ('[[service]]\nid = "x"\ninbound = [{ transport = "tcp", port = 25 }]\n', "service(x).inbound[0]", "already claimed by 'smtp'"),
        ('[[service]]\nid = "x"\n[[service]]\nid = "x"\n', "service[1].id", "duplicate"),
    ],
)
def test_bad_rules_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules([path])
    err = info.value
    assert err.path == str(path) and err.key == key and reason in err.message, str(err)


def test_rules_command_prints_every_row(capsys) -> None:
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    for sid in SEED:
        assert sid in out
    assert "udp/2883" in out and "135 & other RPC" in out and "(no port)" in out and str(DEFAULT_RULES) in out


SITE_SERVICE = """
[[service]]
id = "site-archive"
name = "Site mail archive"
rpc = { inbound = true }

[[interface]]
uuid = "6bffd098-a112-3610-9833-46c3f87e345a"
version = "1.0"
name = "Site archive RPC"
service = "site-archive"

[[path]]
prefix = "/archive"
service = "site-archive"
detail = "archive-web"
"""


def test_one_rules_file_adds_a_service_with_its_interface_and_path(tmp_path: Path) -> None:
    """A site's service, the DCE/RPC interface that names it and the HTTP path that reaches it,
    all in one --rules file: a bind to the interface on a dynamic port and a request to the path
    on port 80 are both the new service; without the file they are not."""
    from test_evidence import _capture, decided, load_script

    import pcapclass

    fx = load_script()
    path = _capture(tmp_path / "site.pcap", [
        fx.Conversation("10.0.1.50", 1501, fx.BACKEND, 1090, "tcp", [
            fx.Msg("c", fx.mf.dce_bind(1, "6bffd098-a112-3610-9833-46c3f87e345a", 1, 0)),
            fx.Msg("s", fx.mf.dce_bind_ack(1, "1090", 0x77))]),
        fx.Conversation("10.0.1.51", 1502, fx.BACKEND, 80, "tcp", [
            fx.Msg("c", fx.http_request("GET", "/archive/2006/03", "Host: mail.example")),
            fx.Msg("s", fx.mf.crlf("HTTP/1.1 200 OK", "Content-Length: 0", ""))]),
    ])  # fmt: skip
    rules = write(tmp_path, SITE_SERVICE)
    loaded = load_rules([rules])
    assert "site-archive" in loaded.ids and loaded.interfaces["6bffd098-a112-3610-9833-46c3f87e345a"].service == "site-archive"
    assert [p.service for p in loaded.http_paths.paths if p.prefix == "/archive"] == ["site-archive"]

    flows = decided(pcapclass.classify_file(path, rules=[rules], servers=("10.0.0.10",)).flows)
    assert flows[("10.0.1.50", 1501, 1090)] == ("site-archive", "bind", "", "Site archive RPC")
    assert flows[("10.0.1.51", 1502, 80)] == ("site-archive", "http", "archive-web", "")
    without = decided(pcapclass.classify_file(path, servers=("10.0.0.10",)).flows)
    assert without[("10.0.1.50", 1501, 1090)][0] != "site-archive" and without[("10.0.1.51", 1502, 80)][0] == "www"


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ('[[interface]]\nuuid = "6bffd098-a112-3610-9833-46c3f87e345a"\nname = "x"\nservice = "nowhere"\n', "interface[0].service", "unknown service"),
        ('[[path]]\nprefix = "/x"\nservice = "nowhere"\ndetail = "x"\n', "path[0].service", "unknown service"),
        ('[colour]\nred = 1\n', "colour", "unknown table"),
    ],
)
def test_bad_interface_and_path_rows_name_file_and_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RulesError) as info:
        load_rules([path])
    err = info.value
    assert err.path == str(path) and err.key == key and reason in err.message, str(err)


def test_every_service_the_code_names_is_in_the_shipped_rules() -> None:
    """The services evidence names by itself (a text protocol's greeting, an Exchange EHLO, Direct
    Push, a new-mail notification) and those the shipped interface and path tables name are all
    services of rules/exchange2003.toml: a service is added or renamed there, in one place."""
    from pcapclass.evidence.verdicts import (
        DIRECT_PUSH,
        EXCHANGE_EHLO,
        NOTIFICATION,
        SIGNATURE_SERVICES,
    )
    from pcapclass.tables.services import SERVICE_IDS

    named = {*SIGNATURE_SERVICES.values(), DIRECT_PUSH.service, EXCHANGE_EHLO.service, NOTIFICATION.service}
    rules = load_rules()
    named |= {i.service for i in rules.interfaces.values()} | {p.service for p in rules.http_paths.paths}
    named |= {rules.http_paths.rpc_http.default_service, *rules.http_paths.rpc_http.ports.values()}
    assert named <= SERVICE_IDS and SERVICE_IDS == set(rules.ids)
