"""Tests for pcapclass.protocols.http and pcapclass.tables.http_paths: request lines (any method), the Exchange path table, RPC over HTTP
v2 channels, and tshark's HTTP dissector as an oracle for the request lines we parse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PAYLOADS, tshark_path

from pcapclass.errors import RulesError
from pcapclass.protocols.dcerpc import PduReassembler, parse_bind
from pcapclass.protocols.http import (
    HttpRequest,
    HttpVerdict,
    classify_request,
    parse_request_line,
    parse_rpc_proxy_target,
)
from pcapclass.protocols.rpch import parse_rts
from pcapclass.tables.http_paths import load_http_paths

EMSMDB = "a4f1db00-ca47-1067-b31f-00dd010662da"
#: the shipped path table (rules/http_paths.toml)
PATHS = load_http_paths()


def h(text: str) -> bytes:
    """Hex with comments: everything after '#' on a line is ignored."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in text.splitlines()))


# --- RPC over HTTP v2 (MS-RPCH 2.1.2.1, 2.2.4; impacket rpch.py headers) -----------------------

IN_CHANNEL_HEAD = (
    b"RPC_IN_DATA /rpc/rpcproxy.dll?EXCH1.corp.example.com:6001 HTTP/1.1\r\n"
    b"Accept: application/rpc\r\n"
    b"User-Agent: MSRPC\r\n"
    b"Host: mail.example.com\r\n"
    b"Content-Length: 1073741824\r\n"
    b"Connection: Keep-Alive\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Pragma: no-cache\r\n"
    b"Authorization: Basic ZG9tYWluXGpvOnNlY3JldA==\r\n"
    b"\r\n"
)

OUT_CHANNEL_HEAD = IN_CHANNEL_HEAD.replace(b"RPC_IN_DATA", b"RPC_OUT_DATA").replace(
    b"Content-Length: 1073741824", b"Content-Length: 76"
)

CONN_A1 = h(
    """
    05 00 14 03  10 00 00 00  4c 00 00 00  00 00 00 00   # RTS, frag_length 76, call_id 0
    00 00  04 00                                        # flags none, 4 commands
    06 00 00 00  01 00 00 00                            # Version 1
    03 00 00 00  11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11   # Cookie: virtual connection
    03 00 00 00  44 44 44 44 44 44 44 44 44 44 44 44 44 44 44 44   # Cookie: OUT channel
    00 00 00 00  00 00 01 00                            # ReceiveWindowSize 65536
    """
)

CONN_B1 = h(
    """
    05 00 14 03  10 00 00 00  68 00 00 00  00 00 00 00   # RTS, frag_length 104, call_id 0
    00 00  06 00                                        # flags none, 6 commands
    06 00 00 00  01 00 00 00                            # Version 1
    03 00 00 00  11 11 11 11 11 11 11 11 11 11 11 11 11 11 11 11   # Cookie: virtual connection
    03 00 00 00  22 22 22 22 22 22 22 22 22 22 22 22 22 22 22 22   # Cookie: IN channel
    04 00 00 00  00 00 00 40                            # ChannelLifetime 1073741824
    05 00 00 00  e0 93 04 00                            # ClientKeepalive 300000
    0c 00 00 00  33 33 33 33 33 33 33 33 33 33 33 33 33 33 33 33   # AssociationGroupId
    """
)

EMSMDB_BIND = h(
    """
    05 00 0b 03  10 00 00 00  48 00 00 00  01 00 00 00   # bind, frag_length 72, call_id 1
    b8 10 b8 10  00 00 00 00  01 00 00 00               # max_xmit, max_recv, assoc_group, 1 context
    00 00 01 00                                         # context id 0, 1 transfer syntax
    00 db f1 a4 47 ca 67 10 b3 1f 00 dd 01 06 62 da  00 00 51 00   # EMSMDB 0.81
    04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60  02 00 00 00   # NDR 2
    """
)


def test_rpc_over_http_in_channel_names_the_store_and_carries_a_readable_bind() -> None:
    payload = IN_CHANNEL_HEAD + CONN_B1 + EMSMDB_BIND
    req = parse_request_line(payload)
    assert req == HttpRequest("RPC_IN_DATA", "/rpc/rpcproxy.dll?EXCH1.corp.example.com:6001", "HTTP/1.1")
    assert classify_request(req, table=PATHS) == HttpVerdict("information-store", "rpc-http:6001", "rpc-http", "rpc-over-http")
    assert parse_rpc_proxy_target(req) == ("EXCH1.corp.example.com", 6001)
    # after the headers, the IN channel is a PDU stream: CONN/B1, then ordinary binds
    body = payload[payload.index(b"\r\n\r\n") + 4 :]
    r = PduReassembler()
    pdus = r.feed(body[:50]) + r.feed(body[50:])
    assert [p[2] for p in pdus] == [20, 11]
    rts = parse_rts(pdus[0])
    assert rts is not None and [c.command for c in rts.commands] == [6, 3, 3, 4, 5, 12]
    assert [c.interface for c in parse_bind(pdus[1])] == [EMSMDB]


def test_rpc_over_http_out_channel() -> None:
    payload = OUT_CHANNEL_HEAD + CONN_A1
    req = parse_request_line(payload)
    assert req is not None and req.method == "RPC_OUT_DATA"
    assert classify_request(req, table=PATHS) == HttpVerdict("information-store", "rpc-http:6001", "rpc-http", "rpc-over-http")
    body = payload[payload.index(b"\r\n\r\n") + 4 :]
    (pdu,) = PduReassembler().feed(body)
    rts = parse_rts(pdu)
    assert rts is not None and [c.command for c in rts.commands] == [6, 3, 3, 0]


# --- Request lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"GET /exchange/ HTTP/1.1\r\nHost: m\r\n\r\n", ("GET", "/exchange/", "HTTP/1.1")),
        (b"PROPFIND /exchange/jo/Inbox/ HTTP/1.1\r\n", ("PROPFIND", "/exchange/jo/Inbox/", "HTTP/1.1")),
        (
            b"X-MS-ENUMATTS /exchange/jo/Inbox/a.EML HTTP/1.1\r\n",
            ("X-MS-ENUMATTS", "/exchange/jo/Inbox/a.EML", "HTTP/1.1"),
        ),
        (b"SEARCH /public/ HTTP/1.1\n", ("SEARCH", "/public/", "HTTP/1.1")),  # bare LF
        (
            b"RPC_OUT_DATA /rpc/rpcproxy.dll?ex:6004 HTTP/1.1\r\n",
            ("RPC_OUT_DATA", "/rpc/rpcproxy.dll?ex:6004", "HTTP/1.1"),
        ),
        (
            b"GET http://mail/exchange/ HTTP/1.0\r\n",
            ("GET", "http://mail/exchange/", "HTTP/1.0"),
        ),  # proxy form
        (
            b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1",
            ("OPTIONS", "/Microsoft-Server-ActiveSync", "HTTP/1.1"),
        ),  # no CRLF yet
    ],
)
def test_parse_request_line(payload: bytes, expected: tuple[str, str, str]) -> None:
    assert parse_request_line(payload) == HttpRequest(*expected)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",  # a response
        b"220 mail ESMTP\r\n",
        b"GET /exchange/\r\n",  # HTTP/0.9: no version
        b"GET  /exchange/ HTTP/1.1\r\n",  # two spaces
        b"GET /exchange/ HTTP/1.1 extra\r\n",
        b"GET /a b HTTP/1.1\r\n",
        b"G(T / HTTP/1.1\r\n",  # not a token
        b"GET / http/1.1\r\n",
        b"GET /\x00 HTTP/1.1\r\n",
        b"\x05\x00\x0b\x03\x10\x00\x00\x00",
        b"A" * 40 + b" / HTTP/1.1\r\n",  # method longer than 32
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n",  # line longer than 8 KiB
    ],
)
def test_parse_request_line_refuses(payload: bytes) -> None:
    assert parse_request_line(payload) is None


# --- Classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("GET /exchange HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("GET /Exchange/jo/Inbox/?Cmd=contents HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("PROPFIND /EXCHANGE/jo/ HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("X-MS-ENUMATTS /exchange/jo/Inbox/m.EML HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("GET /public/ HTTP/1.1", ("www", "public-folders", "http", "public-folders-http")),
        ("GET /public HTTP/1.1", ("www", "public-folders", "http", "public-folders-http")),
        ("POST /exchweb/bin/auth/owaauth.dll HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("GET /exchweb/img/logon.gif HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        ("GET /ExAdmin/Admin/example.com/public%20folders/ HTTP/1.1", ("www", "admin", "http", "exchange-http")),
        ("GET /exadmin HTTP/1.1", ("www", "admin", "http", "exchange-http")),
        (
            "POST /Microsoft-Server-ActiveSync?User=jo&DeviceId=ABC&DeviceType=PPC&Cmd=Sync HTTP/1.1",
            ("activesync", "activesync", "http", "exchange-http"),
        ),
        (
            "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=jo&DeviceId=ABC&DeviceType=PPC HTTP/1.1",
            ("activesync", "direct-push", "http", "exchange-http"),
        ),
        ("POST /microsoft-server-activesync?cmd=ping HTTP/1.1", ("activesync", "direct-push", "http", "exchange-http")),
        ("OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1", ("activesync", "activesync", "http", "exchange-http")),
        ("GET /oma HTTP/1.1", ("www", "oma", "http", "exchange-http")),
        ("GET /oma/default.aspx HTTP/1.1", ("www", "oma", "http", "exchange-http")),
        ("GET http://mail.example.com/exchange/jo/ HTTP/1.1", ("www", "owa", "http", "exchange-http")),
        (
            "RPC_IN_DATA /rpc/rpcproxy.dll?ex1:6001 HTTP/1.1",
            ("information-store", "rpc-http:6001", "rpc-http", "rpc-over-http"),
        ),
        (
            "RPC_OUT_DATA /rpc/rpcproxy.dll?ex1:6002 HTTP/1.1",
            ("system-attendant", "rpc-http:6002", "rpc-http", "rpc-over-http"),
        ),
        (
            "RPC_IN_DATA /RPC/RpcProxy.dll?ex1.example.com:6004 HTTP/1.1",
            ("system-attendant", "rpc-http:6004", "rpc-http", "rpc-over-http"),
        ),
        (
            "RPC_IN_DATA /rpc/rpcproxy.dll?ex1:593 HTTP/1.1",
            ("rpc-endpoint-mapper", "rpc-http:593", "rpc-http", ""),
        ),
        ("RPC_IN_DATA /rpc/rpcproxy.dll?ex1:1032 HTTP/1.1", ("other", "rpc-http:1032", "rpc-http", "")),
        ("RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1", ("", "rpc-http:unknown-port", "rpc-http", "")),
        # any virtual directory: certificate authentication, a reverse proxy's own
        ("RPC_IN_DATA /rpcwithcert/rpcproxy.dll?ex1:6001 HTTP/1.1", ("information-store", "rpc-http:6001", "rpc-http", "rpc-over-http")),
        ("RPC_OUT_DATA /Outlook/Anywhere/RpcProxy.DLL?ex1.example.com:6004 HTTP/1.1",
         ("system-attendant", "rpc-http:6004", "rpc-http", "rpc-over-http")),
        ("RPC_IN_DATA /rpc/rpcproxy.dll?[fd00::10]:6002 HTTP/1.1", ("system-attendant", "rpc-http:6002", "rpc-http", "rpc-over-http")),
        # the method alone with another path: RPC over HTTP, port unknown
        ("RPC_IN_DATA /exchange/ HTTP/1.1", ("", "rpc-http:unknown-port", "rpc-http", "")),
        ("RPC_OUT_DATA /mail/gateway?ex1:6001 HTTP/1.1", ("", "rpc-http:unknown-port", "rpc-http", "")),
    ],
)
def test_classify_request(line: str, expected: tuple[str, str, str, str]) -> None:
    req = parse_request_line(line.encode() + b"\r\n")
    assert req is not None
    assert classify_request(req, table=PATHS) == HttpVerdict(*expected)


@pytest.mark.parametrize(
    "line",
    [
        "GET / HTTP/1.1",
        "GET /exchangefoo HTTP/1.1",  # not a whole segment
        "GET /publicity/ HTTP/1.1",
        "GET /omaha HTTP/1.1",
        "GET /owa/ HTTP/1.1",  # Exchange 2007+
        "GET /rpc/rpcproxy.dll?ex1:6001 HTTP/1.1",  # not an RPC over HTTP method
        "GET /index.html?x=/exchange HTTP/1.1",
    ],
)
def test_classify_request_not_exchange(line: str) -> None:
    req = parse_request_line(line.encode() + b"\r\n")
    assert req is not None
    assert classify_request(req, table=PATHS) is None


def test_longest_prefix_wins(tmp_path: Path) -> None:
    path = tmp_path / "paths.toml"
    path.write_text(
        RPC_SECTION
        + '[[path]]\nprefix = "/exchweb"\nservice = "www"\ndetail = "owa"\n'
        + '[[path]]\nprefix = "/exchweb/bin/auth"\nservice = "www"\ndetail = "owa-logon"\n'
    )
    table = load_http_paths(path)
    req = parse_request_line(b"POST /exchweb/bin/auth/owaauth.dll HTTP/1.1\r\n")
    assert req is not None
    assert classify_request(req, table=table) == HttpVerdict("www", "owa-logon", "http")


# --- Loader ----------------------------------------------------------------------------------

RPC_SECTION = '[rpc_http]\nproxy = "rpcproxy.dll"\nmethods = ["RPC_IN_DATA"]\ndefault_service = "other"\n'


def test_default_table_loads() -> None:
    table = load_http_paths()
    assert table.rpc_http.ports == {
        6001: "information-store",
        6002: "system-attendant",
        6004: "system-attendant",
        593: "rpc-endpoint-mapper",
    }
    assert {r.prefix for r in table.paths} == {
        "/exchange",
        "/public",
        "/exchweb",
        "/exadmin",
        "/microsoft-server-activesync",
        "/oma",
    }


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("[rpc_http\n", None, "not valid TOML"),
        ("", "rpc_http", "missing [rpc_http]"),
        (RPC_SECTION.replace('"other"', '"nope"'), "rpc_http.default_service", "unknown service 'nope'"),
        (
            RPC_SECTION.replace('["RPC_IN_DATA"]', '"RPC_IN_DATA"'),
            "rpc_http.methods",
            "list of method tokens",
        ),
        (
            RPC_SECTION + '[rpc_http.ports]\n70000 = "information-store"\n',
            "rpc_http.ports.70000",
            "invalid port",
        ),
        (
            RPC_SECTION + '[rpc_http.ports]\n6001 = "store"\n',
            "rpc_http.ports.6001",
            "unknown service 'store'",
        ),
        (
            RPC_SECTION + '[[path]]\nprefix = "exchange"\nservice = "www"\ndetail = "owa"\n',
            "path[0].prefix",
            "invalid prefix",
        ),
        (RPC_SECTION + '[[path]]\nprefix = "/exchange"\nservice = "www"\n', "path[0].detail", "missing"),
        (
            RPC_SECTION + '[[path]]\nprefix = "/exchange"\nservice = "owa"\ndetail = "owa"\n',
            "path[0].service",
            "unknown service 'owa'",
        ),
        (
            RPC_SECTION
            + '[[path]]\nprefix = "/x"\nservice = "www"\ndetail = "a"\n'
            + '[[path]]\nprefix = "/X/"\nservice = "www"\ndetail = "b"\n',
            "path[1].prefix",
            "duplicate prefix",
        ),
        (
            RPC_SECTION + '[[path]]\nprefix = "/x"\nservice = "www"\ndetail = "a"\nextra = 1\n',
            "path[0].extra",
            "unknown key",
        ),
        (
            RPC_SECTION
            + '[[path]]\nprefix = "/x"\nservice = "www"\ndetail = "a"\n'
            + '[[path.query]]\nparam = "Cmd"\ndetail = "p"\n',
            "path[0].query[0].value",
            "missing",
        ),
        (RPC_SECTION + "[paths]\n", "paths", "unknown key"),
    ],
)
def test_load_http_paths_rejects(tmp_path: Path, text: str, key: str | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_http_paths(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert message in info.value.message


# --- tshark as an oracle ----------------------------------------------------------------------

ORACLE_REQUESTS = [
    IN_CHANNEL_HEAD,
    OUT_CHANNEL_HEAD + CONN_A1,  # with its 76-byte body, or tshark waits for it
    b"PROPFIND /exchange/jo/Inbox/ HTTP/1.1\r\nHost: mail\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n",
    # (X-MS-ENUMATTS is left out: tshark 4.0's HTTP dissector does not know that method)
    b"POST /exchweb/bin/auth/owaauth.dll HTTP/1.1\r\nHost: mail\r\nContent-Length: 0\r\n\r\n",
    (b"POST /Microsoft-Server-ActiveSync?User=jo&DeviceId=ABC&DeviceType=PocketPC&Cmd=Ping HTTP/1.1\r\n"
     b"Host: mail\r\nContent-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: 0\r\n\r\n"),
    b"GET /oma/ HTTP/1.1\r\nHost: mail\r\n\r\n",
]


def test_request_lines_match_tshark(tmp_path: Path) -> None:
    from scapy.all import IP, TCP, Ether, wrpcap

    pkts = []
    for i, payload in enumerate(ORACLE_REQUESTS):
        sport = 3000 + i
        pkts += [
            Ether() / IP(src="10.0.0.9", dst="10.0.0.1") / TCP(sport=sport, dport=80, flags="S", seq=99),
            Ether()
            / IP(src="10.0.0.1", dst="10.0.0.9")
            / TCP(sport=80, dport=sport, flags="SA", seq=499, ack=100),
            Ether()
            / IP(src="10.0.0.9", dst="10.0.0.1")
            / TCP(sport=sport, dport=80, flags="PA", seq=100, ack=500)
            / payload,
        ]
    path = tmp_path / "http.pcap"
    wrpcap(str(path), pkts)
    out = subprocess.run(
        [
            tshark_path(),
            "-n",
            "-r",
            str(path),
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
            "-e",
            "http.request.version",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [tuple(line.split("\t")) for line in out.splitlines()]
    ours = [tuple(parse_request_line(p) or ()) for p in ORACLE_REQUESTS]
    assert rows == ours
    assert len(rows) == len(ORACLE_REQUESTS)


def test_mapi_pcap_http_requests_match_tshark_and_are_not_exchange() -> None:
    """mapi.pcap's background web traffic: same request lines as tshark, none an Exchange path."""
    from scapy.all import TCP, PcapReader

    path = PAYLOADS / "mapi.pcap"
    out = subprocess.run(
        [
            tshark_path(),
            "-n",
            "-r",
            str(path),
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "http.request.method",
            "-e",
            "http.request.uri",
            "-e",
            "http.request.version",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = [tuple(line.split("\t")) for line in out.splitlines()]
    ours = []
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            if TCP in pkt and pkt[TCP].dport == 80:
                req = parse_request_line(bytes(pkt[TCP].payload))
                if req is not None:
                    ours.append(req)
    assert [tuple(r) for r in ours] == expected
    assert len(ours) == 3
    assert all(classify_request(r, table=PATHS) is None for r in ours)
