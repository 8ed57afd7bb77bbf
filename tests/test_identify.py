"""Tests for pcapclass._identify: the compiled first look says what ``signatures.identify`` and
its helpers say, on every payload of the fixtures and on bytes near each signature, and reads
nothing past a payload's end; the deciding bytes of a payload get the verdicts of the payload."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle import capture_files

from pcapclass import _identify as ki
from pcapclass.decode import decode
from pcapclass.evidence import EvidenceCollector
from pcapclass.evidence.first_payloads import (
    DIRECT_PUSH_NOTIFY,
    MICROSOFT_SMTP_BANNER,
    SIGNATURE_TABLES,
)
from pcapclass.protocols.dcerpc import PTYPE_ALTER_CONTEXT, PTYPE_BIND, PduReassembler
from pcapclass.protocols.http import parse_request_line
from pcapclass.protocols.signatures import (
    LABELS,
    MIN_DECISIVE_PAYLOAD,
    SMTP_SERVER_PREFIXES,
    exchange_greeting,
    exchange_smtp_markers,
    greeting_line,
    identify,
    shared_prefix,
)
from pcapclass.sources import CaptureFile

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def plain_pdus(payload: bytes) -> bool:
    pdus = PduReassembler(resync_segments=0).feed(payload)
    return sum(map(len, pdus)) == len(payload) and not any(pdu[2] in (PTYPE_BIND, PTYPE_ALTER_CONTEXT) for pdu in pdus)


def reference(payload: bytes) -> int:
    """The facts of ``payload`` as the Python reference functions give them."""
    facts = ki.LABEL_NAMES.index(identify(payload, from_server=True)) << ki.AS_SERVER_SHIFT
    facts |= ki.LABEL_NAMES.index(identify(payload, from_server=False)) << ki.AS_CLIENT_SHIFT
    facts |= ki.SHARED_NAMES.index(shared_prefix(payload)) << ki.SHARED_SHIFT
    flags = {
        ki.LONG: len(payload) >= MIN_DECISIVE_PAYLOAD,
        ki.EXCHANGE_GREETING: exchange_greeting(payload),
        ki.SMTP_BANNER: payload.startswith(SMTP_SERVER_PREFIXES) and MICROSOFT_SMTP_BANNER in greeting_line(payload),
        ki.EHLO_MARKERS: payload.startswith(b"250") and bool(exchange_smtp_markers(payload)),
        ki.REQUEST_LINE: parse_request_line(payload) is not None,
        ki.DCERPC_PLAIN: identify(payload, from_server=True) == "dcerpc" and plain_pdus(payload),
        ki.NOTIFY: payload.startswith(DIRECT_PUSH_NOTIFY),
    }
    return facts | sum(bit for bit, on in flags.items() if on)


def compiled(payloads: list[bytes]) -> list[int]:
    length = np.array([len(p) for p in payloads], dtype=np.int64)
    data = np.frombuffer(b"".join(payloads) or b"\0", dtype=np.uint8)
    return SIGNATURE_TABLES.facts(data, np.cumsum(length) - length, length).tolist()  # type: ignore[no-any-return]


def explain(facts: int) -> tuple[object, ...]:
    return (ki.LABEL_NAMES[facts >> ki.AS_SERVER_SHIFT & ki.LABEL_MASK], ki.LABEL_NAMES[facts >> ki.AS_CLIENT_SHIFT & ki.LABEL_MASK],
            ki.SHARED_NAMES[facts >> ki.SHARED_SHIFT & ki.SHARED_MASK], facts >> 10)  # fmt: skip


def assert_agree(payloads: list[bytes]) -> None:
    for payload, got in zip(payloads, compiled(payloads)):
        want = reference(payload)
        assert got == want, (payload[:80], explain(got), explain(want))


def test_every_label_has_a_code() -> None:
    assert set(ki.LABEL_NAMES[1:]) == LABELS and ki.LABEL_NAMES[0] is None


def fixture_payloads() -> list[bytes]:
    """Every distinct TCP/UDP payload of the fixture captures (first payloads and the rest)."""
    seen: set[bytes] = set()
    for path in capture_files(FIXTURES):
        if "bad" in path.parts:
            continue
        for batch in CaptureFile(path):
            pk = decode(batch)
            data = batch.data.tobytes()
            for o, n in zip(pk.payload_off.tolist(), pk.payload_len.tolist()):
                if n > 0:
                    seen.add(data[o : o + n])
    return sorted(seen)


def test_agrees_with_identify_on_every_fixture_payload() -> None:
    payloads = fixture_payloads()
    assert len(payloads) > 1000
    facts = compiled(payloads)
    labels = {ki.LABEL_NAMES[f & ki.LABEL_MASK] for f in facts} | {ki.LABEL_NAMES[f >> 4 & ki.LABEL_MASK] for f in facts}
    assert labels >= {"smtp", "pop3", "imap", "nntp", "ldap", "smb", "dcerpc", "http", "tls", "tpkt", "ncacn_http"}
    assert_agree(payloads)


#: starts of each signature (and of near misses) that the property test mutates
SEEDS = [
    b"220 mail.example.com Microsoft ESMTP MAIL Service, Version: 6.0.3790.3959 ready\r\n",
    b"220-ftp.example.com FTP server ready\r\n",
    b"220 news.example.com NNTP ready\r\n",
    b"200 news.example.com InterNetNews NNRP server ready (posting ok)\r\n",
    b"554 no SMTP service here\r\n",
    b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 ready.\r\n",
    b"+OK\r\n",
    b"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 ready.\r\n",
    b"* PREAUTH ready\r\n",
    b"250-mail Hello [10.0.0.1]\r\n250-X-EXPS GSSAPI NTLM\r\n250-X-LINK2STATE\r\n250-XEXCH50\r\n250 OK\r\n",
    b"250 XEXCH50=1\r\n",
    b"EHLO client.example.com\r\n",
    b"helo x\r\n",
    b"GET /exchange/jo/Inbox/ HTTP/1.1\r\nHost: mail\r\n\r\n",
    b"RPC_IN_DATA /rpc/rpcproxy.dll?mail:6001 HTTP/1.1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"ncacn_http/1.0",
    b"SSH-2.0-OpenSSH_9.6\r\n",
    b"*1\r\n$4\r\nPING\r\n",
    bytes.fromhex("160301004a0100004603015f"),
    bytes.fromhex("160301004a0200004603015f"),
    bytes.fromhex("802e0103010015000000100100800300800700c0"),
    bytes.fromhex("0300002b26e00000000000436f6f6b69653a206d737473686173683d6a6f0d0a0100080003000000"),
    bytes.fromhex("030000130ed00000123400020f080001000000"),
    bytes.fromhex("0300001611e00000000100c1020100c2020102c0010a"),
    bytes.fromhex("300c020101600702010304008000"),
    bytes.fromhex("30840000000c020400000001420000"),
    bytes.fromhex("00000054ff534d4272000000001853c8"),
    bytes.fromhex("000000a4fe534d4240000000000000000000"),
    bytes.fromhex("81000044204546454246434543414341434143414341"),
    bytes.fromhex("82000000"),
    bytes.fromhex("05000b0310000000480000000100000000"),
    bytes.fromhex("05000b0300000010004800000000000100"),
    bytes.fromhex("05001400100000001c000000ffffffff"),
    bytes.fromhex("05000c0310000000400000000100000000") + bytes(48),
    bytes.fromhex("05000c0310000000200000000100000000") + bytes(16) + bytes.fromhex("05000203100000001800000002000000") + bytes(8),
    b"NOTIFY 2.0.0.0:0 HTTP/1.1\r\n",
]


@st.composite
def near_signatures(draw: st.DrawFn) -> bytes:
    """A seed, cut somewhere, with a few bytes changed and some bytes after it."""
    seed = draw(st.sampled_from(SEEDS))
    payload = bytearray(seed[: draw(st.integers(0, len(seed)))])
    for at, value in draw(st.lists(st.tuples(st.integers(0, 63), st.sampled_from([0, 1, 2, 3, 5, 8, 0x0A, 0x0D, 0x20, 0x24, 0x2F, 0x30, 0x31, 0x3D,
                                                                                  0x41, 0x61, 0x7F, 0x80, 0xFF])), max_size=4)):  # fmt: skip
        if at < len(payload):
            payload[at] = value
    return bytes(payload) + draw(st.binary(max_size=24))


@settings(max_examples=600, deadline=None)
@given(st.lists(near_signatures(), min_size=1, max_size=8))
def test_agrees_with_identify_near_each_signature(payloads: list[bytes]) -> None:
    assert_agree(payloads)


@pytest.mark.parametrize("seed", SEEDS)
def test_reads_nothing_past_a_payload(seed: bytes) -> None:
    """Each cut of a payload, followed in the buffer by the rest of it (the next record) or cut
    by the buffer's end, has the facts of the cut bytes alone."""
    data = np.frombuffer(seed, dtype=np.uint8)
    cuts = np.arange(len(seed) + 1, dtype=np.int64)
    followed = SIGNATURE_TABLES.facts(data, np.zeros_like(cuts), cuts).tolist()
    past_end = SIGNATURE_TABLES.facts(data[: len(seed) // 2].copy(), np.zeros_like(cuts), cuts).tolist()
    assert followed == [reference(seed[:n]) for n in cuts.tolist()]
    assert past_end == [reference(seed[: min(n, len(seed) // 2)]) for n in cuts.tolist()]


# --- deciding bytes -------------------------------------------------------------------------------

EMSMDB = bytes.fromhex("00dbf1a447ca6710b31f00dd010662da")
OTHER = bytes.fromhex("083afce1f4051fd0b1a60000000000dd")  # some other interface
NDR = bytes.fromhex("045d888aeb1cc9119fe808002b10486002000000")
COLLECTOR = EvidenceCollector()


def deciding(*payloads: bytes) -> list[bytes]:
    length = np.array([len(p) for p in payloads], dtype=np.int64)
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    buf, off, cut, _ = SIGNATURE_TABLES.deciding_bytes(data, np.cumsum(length) - length, length, np.zeros(len(payloads), np.int64),
                                                       COLLECTOR.first_payloads.path_rules)  # fmt: skip
    return [buf[o : o + n].tobytes() for o, n in zip(off.tolist(), cut.tolist())]


def bind(call_id: int, assoc: int, interface: bytes, token: bytes = b"") -> bytes:
    """A little-endian bind (C706 12.6.4.3) with one context, and an auth verifier when ``token``."""
    body = struct.pack("<HHIB3x", 5840, 5840, assoc, 1) + struct.pack("<HBx", 0, 1) + interface + struct.pack("<I", 0x510000) + NDR
    auth = struct.pack("<BBBBI", 10, 2, 0, 0, 0) + token if token else b""
    return struct.pack("<BBBB4sHHI", 5, 0, 11, 3, b"\x10\x00\x00\x00", 16 + len(body) + len(auth), len(token), call_id) + body + auth


def test_binds_that_differ_only_by_call_id_association_or_token_are_the_same() -> None:
    a, b, other = deciding(bind(1, 0x1234, EMSMDB, b"A" * 40), bind(7, 0x9999, EMSMDB, b"B" * 40), bind(1, 0x1234, OTHER, b"A" * 40))
    assert a == b and a != other
    assert a[32:48] == EMSMDB  # the context list is kept (after the 16-byte header, 12 bytes of bind fields, 4 of context item)


def test_requests_that_differ_only_by_what_no_rule_reads_are_the_same() -> None:
    got = deciding(
        b"POST /Microsoft-Server-ActiveSync?User=jo&DeviceId=A1&Cmd=Ping HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /microsoft-server-activesync/x?Cmd=PING&User=al HTTP/1.1\r\nHost: b\r\nCookie: c\r\n\r\n",
        b"RPC_IN_DATA /rpc/rpcproxy.dll?mail01.example.com:6001 HTTP/1.1\r\n\r\n",
        b"RPC_IN_DATA /rpc/RpcProxy.dll?mail02:6001 HTTP/1.1\r\n\r\n",
        b"GET /exchange/jo/Inbox/?Cmd=contents HTTP/1.1\r\nHost: a\r\n",
        b"GET /somewhere/else HTTP/1.1\r\n",
    )
    assert got[:2] == [b"POST /microsoft-server-activesync?cmd=ping HTTP/1.1\r\n\r\n"] * 2
    # RPC over HTTP: the proxy's file under any directory, and the port its query names
    assert got[2:4] == [b"RPC_IN_DATA /rpcproxy.dll?h:6001 HTTP/1.1\r\n\r\n"] * 2
    assert got[4] == b"GET /exchange HTTP/1.1"
    assert got[5] == b"GET / HTTP/1.1"


def verdicts(payloads: list[bytes], server_port: int, server_is_src: bool) -> None:
    """Each payload and its deciding bytes get the same verdicts (with its own facts)."""
    facts = compiled(payloads)
    for payload, kept, fact in zip(payloads, deciding(*payloads), facts):
        inspect = COLLECTOR.first_payloads.inspector.inspect  # (verdicts, follow, preset)
        want = inspect(payload, server_port, server_is_src, fact)
        assert inspect(kept, server_port, server_is_src, fact) == want, (payload, kept)


@pytest.mark.parametrize(("server_port", "server_is_src"), [(135, False), (135, True), (6001, False), (80, False), (-1, False)])
def test_a_fixture_payload_and_its_deciding_bytes_get_the_same_verdicts(server_port: int, server_is_src: bool) -> None:
    payloads = [p for p in fixture_payloads() if p[0] == 5 or parse_request_line(p) is not None]
    payloads += [bind(3, 77, EMSMDB, b"T" * 24), bind(3, 77, EMSMDB) + bind(4, 77, OTHER)[:30]]
    assert len(payloads) > 300
    verdicts(payloads, server_port, server_is_src)


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """Request lines near the rules of rules/http_paths.toml: their paths in any case, absolute
    forms, queries with and without the parameters and ports they read, escapes."""
    method = draw(st.sampled_from(["GET", "POST", "RPC_IN_DATA", "rpc_out_data", "PROPFIND", "OPTIONS"]))
    scheme = draw(st.sampled_from(["", "http://mail.example.com", "https://h:443", "http://h?x=1&"]))
    path = draw(st.sampled_from(["/Microsoft-Server-ActiveSync", "/rpc/rpcproxy.dll", "/exchange", "/Exchange/jo/", "/public;x",
                                 "/exchweb/bin", "/ExAdmin", "/oma", "/exchangefoo", "/", "/rpc/rpcproxy.dll/x", "",
                                 "/rpcwithcert/RpcProxy.dll", "/outlook/anywhere/rpcproxy.dll", "/rpcproxy.dllx"]))  # fmt: skip
    path = "".join(c.upper() if draw(st.booleans()) else c for c in path)
    items = draw(st.lists(st.sampled_from(["Cmd=Ping", "cmd=PING", "Cmd=Sync", "User=jo", "Cmd", "=", "mail:6001", "h:6002", "h:0",
                                           "h:99999", ":6001", "h:60a1", "h%3A6001", "a+b=c", "Cmd=Pi%6eg", ""]), max_size=4))  # fmt: skip
    query = ("?" + "&".join(items) if items or draw(st.booleans()) else "") + draw(st.sampled_from(["", "#frag", "#?Cmd=Ping"]))
    tail = draw(st.sampled_from(["", "\r\n", "\r\n\r\n", "\r\nHost: a\r\n\r\n", "\r\nHost: a\r\n", "\n\n"]))
    return f"{method} {scheme}{path or '/'}{query} HTTP/1.1{tail}".encode()


@settings(max_examples=500, deadline=None)
@given(st.lists(requests(), min_size=1, max_size=6), st.sampled_from([(80, False), (6001, True), (-1, False)]))
def test_a_request_and_its_deciding_bytes_get_the_same_verdicts(payloads: list[bytes], side: tuple[int, bool]) -> None:
    verdicts(payloads, *side)
