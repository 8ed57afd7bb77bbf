"""Trust on mixed networks: who is an Exchange server, what is Exchange traffic, what the bytes are.

Real captures, no --server. The oracle is tshark 4.0's dissection of the same files:
* on captures of protocols that look like Exchange's (FTP's 220, Redis's +OK, S7comm and MMS on
  TPKT 102, a domain controller's LDAP and SMB, plain web browsing), no host may be taken for an
  Exchange server, no flow may carry an Exchange service, and each flow's ``protocol`` must be
  one tshark dissects on that TCP stream;
* on captures with Exchange servers, each kind of server evidence must name exactly the hosts
  a tshark display filter for that evidence names.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
from conftest import PAYLOADS

import pcapclass

#: our protocol label -> the tshark protocols (frame.protocols) that show it
TSHARK_NAMES = {
    "ftp": {"ftp"}, "smtp": {"smtp"}, "pop3": {"pop"}, "imap": {"imap"}, "nntp": {"nntp"}, "http": {"http"},
    "tls": {"tls", "ssl"}, "ssh": {"ssh"}, "dcerpc": {"dcerpc"}, "ldap": {"ldap"}, "smb": {"smb", "smb2", "nbss"},
    "tpkt": {"tpkt"}, "rdp": {"rdp"}, "redis": {"resp"},
}  # fmt: skip

#: look-alike captures and the protocol each must be recognized as somewhere in it
LOOK_ALIKES = {
    "zeek-var-services-std-ports.pcap": "ftp",
    "zeek-redis-50-pings.pcap": "redis",
    "ndpi-s7comm.pcap": "tpkt",
    "ndpi-s7comm-plus.pcap": "tpkt",
    "ndpi-iso9506-1-mms.pcap": "tpkt",
    "zeek-aduser1.pcap": "ldap",
    "ndpi-windowsupdate_over_http.pcap": "http",
}


def _tshark(tshark: str, path: Path, fields: list[str], display: str) -> list[list[str]]:
    args = [tshark, "-n", "-r", str(path), "-Y", display, "-T", "fields", *(a for f in fields for a in ("-e", f))]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def _stream_protocols(tshark: str, path: Path) -> dict[tuple[str, int, str, int], set[str]]:
    """Per TCP connection (either way round), every protocol tshark dissects in its payloads."""
    found: dict[tuple[str, int, str, int], set[str]] = defaultdict(set)
    for src, sport, dst, dport, protos in _tshark(tshark, path, ["ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", "frame.protocols"],
                                                  "tcp.len > 0"):  # fmt: skip
        for key in ((src, int(sport), dst, int(dport)), (dst, int(dport), src, int(sport))):
            found[key].update(protos.split(":"))
    return found


@pytest.mark.parametrize("name", sorted(LOOK_ALIKES))
def test_look_alikes_are_not_exchange(tshark: str, name: str) -> None:
    path = PAYLOADS / name
    result = pcapclass.classify_file(path)
    flows = result.flows
    assert result.servers.addresses == (), f"{name}: taken for Exchange servers: {result.servers.addresses}"
    assert set(flows["service"].astype(str)) == {"other"}, flows[flows["service"] != "other"][["server_port", "service", "evidence"]]
    assert set(flows["direction"].astype(str)) == {"other"}
    streams = _stream_protocols(tshark, path)
    named = flows[flows["protocol"].astype(str) != ""]
    for f in named.itertuples(index=False):
        theirs = streams.get((f.client_addr, f.client_port, f.server_addr, f.server_port), set())
        assert TSHARK_NAMES[f.protocol] & theirs, f"{name}: {f.client_addr}:{f.client_port} -> {f.server_port} is {f.protocol}, tshark: {theirs}"
    assert LOOK_ALIKES[name] in set(named["protocol"].astype(str)), f"{name}: no flow recognized as {LOOK_ALIKES[name]}"


def test_no_server_found_is_said_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from pcapclass.cli import main

    assert main(["classify", str(PAYLOADS / "zeek-aduser1.pcap"), "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "Exchange" in line]
    assert len(lines) == 1 and "--server" in lines[0], out
    servers = pd.read_csv(tmp_path / "servers.csv")
    assert list(servers.columns) == ["server", "kinds", "flows", "score", "exchange"] and servers.empty


#: per capture, per kind of server evidence, the tshark display filter and field that name its hosts
EVIDENCE_ORACLE = {
    "mapi.pcap": {
        # the host bound to EMSMDB (an Exchange-only interface)
        "rpc-interface": ("dcerpc.cn_bind_to_uuid == a4f1db00-ca47-1067-b31f-00dd010662da", "ip.dst"),
        # the endpoint mapper that answered with an EMSMDB tower
        "epm-answer": ("dcerpc.pkt_type == 2 && epm.uuid == a4f1db00-ca47-1067-b31f-00dd010662da", "ip.src"),
    },
    "zeek-smtp-multi-addr.pcap": {
        "exchange-smtp": ('smtp.rsp.parameter contains "X-EXPS"', "ip.src"),
        "microsoft-smtp-greeting": ('smtp.response.code == 220 && smtp.rsp.parameter contains "Microsoft ESMTP MAIL Service"', "ip.src"),
    },
    "suricata-smtp-file-data-01.pcap": {
        "exchange-smtp": ('smtp.rsp.parameter contains "X-LINK2STATE"', "ip.src"),
        "microsoft-smtp-greeting": ('smtp.response.code == 220 && smtp.rsp.parameter contains "Microsoft ESMTP MAIL Service"', "ip.src"),
    },
    # the synthetic sample (scripts/make_fixtures.py): its POP3/IMAP4 greetings, OWA requests and RPC over HTTP
    "../pcaps/exchange_services.pcap": {
        "exchange-greeting": ('(pop || imap) && frame contains "Microsoft Exchange"', "ip.src"),
        "exchange-http": ('http.request.uri matches "(?i)^/(exchange|exchweb|exadmin|oma|microsoft-server-activesync)([/?]|$)"', "ip.dst"),
        # the proxy asked for port 6001/6002/6004 (the back-ends' ncacn_http/1.0 greetings are added below)
        "rpc-over-http": ('(http.request.method == "RPC_IN_DATA" || http.request.method == "RPC_OUT_DATA") && http.request.uri matches ":600[124]$"',
                          "ip.dst"),
    },
}


@pytest.mark.parametrize("name", sorted(EVIDENCE_ORACLE))
def test_each_kind_of_server_evidence_names_the_hosts_tshark_shows(tshark: str, name: str) -> None:
    path = (PAYLOADS / name).resolve()
    result = pcapclass.classify_file(path)
    table = result.servers.evidence
    ours = {kind: set(table.loc[table["kinds"].str.split().apply(lambda k, kind=kind: kind in k), "server"]) for kind in EVIDENCE_ORACLE[name]}
    for kind, (display, field) in EVIDENCE_ORACLE[name].items():
        theirs = {row[0] for row in _tshark(tshark, path, [field], display)}
        if kind == "rpc-over-http":
            theirs |= {row[0] for row in _tshark(tshark, path, ["ip.src"], 'tcp.srcport in {6001,6002,6004} && frame contains "ncacn_http/1.0"')}
        assert theirs, f"{name}: the oracle found no {kind}"
        assert ours[kind] == theirs, f"{name}: {kind}: ours {ours[kind]}, tshark {theirs}"
    exchange = set(table.loc[table["exchange"], "server"])
    assert set(result.servers.addresses) == exchange


def test_mapi_keeps_its_exchange_results_and_drops_the_web_sites() -> None:
    """zeek's mapi.pcap (Outlook 2003 and Exchange 2003, 2003-06-30): 192.168.0.2 is the Exchange
    server; 64.12.137.56 and 165.254.12.103 are public web sites the clients browsed."""
    result = pcapclass.classify_file(PAYLOADS / "mapi.pcap")
    assert result.servers.addresses == ("192.168.0.2",)
    f = result.flows
    web = f[f["server_addr"].isin(["64.12.137.56", "165.254.12.103"])]
    assert len(web) and set(web["service"].astype(str)) == {"other"} and set(web["direction"].astype(str)) == {"other"}
    exchange = f[f["server_addr"] == "192.168.0.2"]
    by_port = exchange.groupby("server_port")["service"].agg(lambda s: set(s.astype(str)))
    assert by_port[135] == {"rpc-endpoint-mapper"} and by_port[1032] == {"information-store"} and by_port[4997] == {"system-attendant"}
    note = f[(f["transport"] == "udp") & (f["client_addr"] == "192.168.0.2")]
    assert note[["service", "detail"]].astype(str).values.tolist() == [["information-store", "new-mail-notification"]]


def test_a_site_port_rule_is_not_overridden_by_a_signature_of_its_family(tmp_path: Path) -> None:
    """arkime's smtp-decrypted.pcap: an Exchange server (X-EXPS in its EHLO replies) speaks SMTP
    on 25 and 2525. A site rule naming TCP 2525 `smtp-relay` keeps that service: the SMTP
    greeting there only confirms the port's protocol family; 25 stays `smtp`."""
    rules = tmp_path / "site.toml"
    rules.write_text('[[service]]\nid = "smtp-relay"\nname = "Site relay"\ndepends_on = []\n'
                     'inbound = [{ transport = "tcp", port = 2525 }]\noutbound = []\n')  # fmt: skip
    path = PAYLOADS / "arkime-smtp-decrypted.pcap"
    for given, relay_service in (([], "smtp"), ([rules], "smtp-relay")):
        f = pcapclass.classify_file(path, rules=given).flows
        assert set(f.loc[f["server_port"] == 2525, "service"].astype(str)) == {relay_service}
        assert set(f.loc[f["server_port"] == 25, "service"].astype(str)) == {"smtp"}
        assert set(f.loc[f["server_port"] == 2525, "protocol"].astype(str)) == {"smtp"}
