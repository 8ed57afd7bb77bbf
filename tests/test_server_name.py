"""Tests for the flows' ``server_name`` (TLS SNI, else HTTP ``Host``): the compiled
``server_names`` against a pure-Python reference parser on hand-built payloads, and whole
captures against tshark's ``tls.handshake.extensions_server_name`` and ``http.host``."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, PAYLOADS
from hypothesis import given, settings
from hypothesis import strategies as st

import pcapclass
from pcapclass._name_memo import NameMemo
from pcapclass._server_names import MAX_SERVER_NAME, same_names, server_names


def kernel(data: bytes, plen: int | None = None) -> bytes | None:
    """``server_names`` on one payload, the first ``plen`` bytes of ``data``: the name or None."""
    buf = np.frombuffer(data or b"\0", dtype=np.uint8)
    start, length, digest = server_names(buf, np.array([0]), np.array([len(data) if plen is None else plen]))
    if not length[0]:
        assert digest[0] == 0
        return None
    return data[int(start[0]) : int(start[0] + length[0])]


# --- a reference parser: RFC 8446 4.1.2 / RFC 5246 7.4.1.2 ClientHello, RFC 6066 3 server_name ---


def _printable(name: bytes) -> bool:
    return 1 <= len(name) <= MAX_SERVER_NAME and all(0x21 <= b <= 0x7E for b in name)


def reference_sni(p: bytes) -> bytes | None:
    if len(p) < 9 or p[0] != 0x16 or p[1] != 3 or p[5] != 1:
        return None
    p = p[: min(5 + int.from_bytes(p[3:5], "big"), 9 + int.from_bytes(p[6:9], "big"))]
    pos = 9 + 2 + 32
    for width in (1, 2, 1):  # session id, cipher suites, compression methods
        if pos + width > len(p):
            return None
        pos += width + int.from_bytes(p[pos : pos + width], "big")
    if pos + 2 > len(p):
        return None
    exts = p[pos + 2 : pos + 2 + int.from_bytes(p[pos : pos + 2], "big")]
    while len(exts) >= 4:
        kind, size = int.from_bytes(exts[:2], "big"), int.from_bytes(exts[2:4], "big")
        body, exts = exts[4 : 4 + size], exts[4 + size :]
        if len(body) < size:
            return None
        if kind == 0:
            if len(body) < 2:
                return None
            names = body[2 : 2 + int.from_bytes(body[:2], "big")]
            while len(names) >= 3:
                m = int.from_bytes(names[1:3], "big")
                if len(names) < 3 + m:
                    return None
                if names[0] == 0:
                    return names[3 : 3 + m] if _printable(names[3 : 3 + m]) else None
                names = names[3 + m :]
            return None
    return None


def reference(p: bytes) -> bytes | None:
    """The SNI of a handshake record, else the ``Host`` value of a request's headers."""
    if p[:1] == b"\x16":
        return reference_sni(p)
    lines = p.split(b"\n")
    for line in lines[1:-1]:  # the last piece has no line end: cut short
        line = line.removesuffix(b"\r")
        if not line:
            return None
        if line[:5].lower() == b"host:":
            value = line[5:].strip(b" \t")
            value = value[: value.index(b"]") + 1] if value.startswith(b"[") and b"]" in value else value
            if value.startswith(b"[") and not value.endswith(b"]"):
                return None
            if not value.startswith(b"["):
                value = value.split(b":")[0]
            return value if _printable(value) else None
    return None


# --- hand-built ClientHellos --------------------------------------------------------------------


def ext(kind: int, body: bytes) -> bytes:
    return kind.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


def sni_ext(*entries: tuple[int, bytes]) -> bytes:
    names = b"".join(bytes([t]) + len(n).to_bytes(2, "big") + n for t, n in entries)
    return ext(0, len(names).to_bytes(2, "big") + names)


def client_hello(extensions: bytes, *, sid: bytes = b"", suites: bytes = b"\x13\x01\x13\x02", version: bytes = b"\x03\x01") -> bytes:
    body = (b"\x03\x03" + bytes(range(32)) + bytes([len(sid)]) + sid + len(suites).to_bytes(2, "big") + suites + b"\x01\x00"
            + len(extensions).to_bytes(2, "big") + extensions)  # fmt: skip
    hs = b"\x01" + len(body).to_bytes(3, "big") + body  # handshake type 1: client_hello, uint24 length
    return b"\x16" + version + len(hs).to_bytes(2, "big") + hs  # record: handshake, version, length


HELLO = client_hello(ext(0x000B, b"\x01\x00") + sni_ext((0, b"Mail.Example.COM")) + ext(0x0010, b"\x00\x03\x02h2"))


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        (HELLO, b"Mail.Example.COM"),
        (client_hello(sni_ext((1, b"not-a-host"), (0, b"owa.corp.example"))), b"owa.corp.example"),  # the first host_name entry
        (client_hello(ext(0x0017, b"")), None),  # no server_name extension
        (client_hello(b""), None),  # extensions present but empty
        (client_hello(sni_ext((0, b"a b.example"))), None),  # a space
        (client_hello(sni_ext((0, b"caf\xc3\xa9.example"))), None),  # not ASCII
        (client_hello(sni_ext((0, b"x" * 255))), b"x" * 255),
        (client_hello(sni_ext((0, b"x" * 256))), None),  # longer than a DNS name
        (HELLO[:5] + b"\x02" + HELLO[6:], None),  # a ServerHello
        (HELLO[: HELLO.index(b"COM") + 2], None),  # the name cut short
        (HELLO[:-1], b"Mail.Example.COM"),  # an extension after the name's cut short
        (b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n", b"www.example.com"),
        (b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhOsT:\t Exch01.Corp.Example:8080 \r\n\r\n", b"Exch01.Corp.Example"),
        (b"GET / HTTP/1.0\nHost: [2001:db8::1]:443\n\n", b"[2001:db8::1]"),
        (b"GET / HTTP/1.1\r\nHost: [2001:db8::1\r\n\r\n", None),  # an IP literal with no "]"
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\nHost: body.example\r\n", None),  # after the headers
        (b"GET / HTTP/1.1\r\nHost: cut.exam", None),  # the line does not end in the payload
        (b"GET / HTTP/1.1\r\nHost: \r\n\r\n", None),  # empty
        (b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", None),  # a control byte
        (b"GET / HTTP/1.1\r\nX-Host: other.example\r\nHost: h.example\r\n\r\n", b"h.example"),
        (b"GET / HTTP/1.1\r\nHostname: no.example\r\n\r\n", None),
        (b"", None),
    ],
)
def test_names_of_hand_built_payloads(payload: bytes, name: bytes | None) -> None:
    assert kernel(payload) == name
    assert reference(payload) == name


names_st = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", min_size=1, max_size=40).map(str.encode),
    st.binary(min_size=0, max_size=300),
)
ext_st = st.tuples(st.integers(1, 0xFFFF), st.binary(max_size=40)).map(lambda t: ext(*t))


@st.composite
def hellos(draw: st.DrawFn) -> bytes:
    before = b"".join(draw(st.lists(ext_st, max_size=3)))
    after = b"".join(draw(st.lists(ext_st, max_size=2)))
    entries = draw(st.lists(st.tuples(st.integers(0, 2), names_st), min_size=0, max_size=3))
    sni = sni_ext(*entries) if draw(st.booleans()) else b""
    return client_hello(before + sni + after, sid=draw(st.binary(max_size=32)), suites=draw(st.binary(max_size=20)))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    headers = draw(st.lists(st.sampled_from([b"Accept: */*", b"Host: a.example", b"host:\tB.Example:81", b"Host: [::1]:8",
                                             b"Host: \x7fbad", b"", b"X: y"]), max_size=4))  # fmt: skip
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return eol.join([b"GET /owa HTTP/1.1", *headers, b""]) + draw(st.binary(max_size=8))


@settings(max_examples=400, deadline=None)
@given(payload=st.one_of(hellos(), requests(), st.binary(max_size=64)), cut=st.integers(0, 400), tail=st.binary(max_size=64))
def test_the_kernel_agrees_with_the_reference_and_reads_only_the_payload(payload: bytes, cut: int, tail: bytes) -> None:
    p = payload[:cut] if cut < len(payload) else payload
    assert kernel(p) == reference(p) if p else kernel(p) is None
    # the payload followed by other bytes (the rest of the hello, then anything) says the same
    assert kernel(payload + tail, len(p)) == kernel(p)


def test_digests_ignore_case_and_same_names_confirms() -> None:
    payloads = [b"GET / HTTP/1.1\r\nHost: OWA.example\r\n\r\n", b"GET / HTTP/1.1\r\nHost: owa.EXAMPLE\r\n\r\n", HELLO,
                b"GET / HTTP/1.1\r\nHost: owa.example2\r\n\r\n"]  # fmt: skip
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    plen = np.array([len(p) for p in payloads])
    start, length, digest = server_names(data, np.cumsum(plen) - plen, plen)
    assert digest[0] == digest[1] and len(set(digest.tolist())) == 3
    assert same_names(data, start, length, start[[1, 0, 0, 0]], length[[1, 0, 0, 0]]).tolist() == [True, True, False, False]


# --- whole captures against tshark --------------------------------------------------------------

CAPTURES = [
    PAYLOADS / "ndpi-sites.pcapng",
    PAYLOADS / "ndpi-pops.pcapng",
    PAYLOADS / "mapi.pcap",
    PAYLOADS / "zeek-http-proxy.pcap",
    PAYLOADS / "zeek-var-services-std-ports.pcap",
    PAYLOADS / "ndpi-windowsupdate_over_http.pcap",
    FIXTURES / "exchange_services.pcap",
]


def tshark_names(tshark: str, capture: Path) -> dict[tuple[str, int, str, int], list[str]]:
    """Per (client, client port, server, server port), the names of its TCP streams: the
    first ClientHello's SNI, else the first request's ``Host`` without its port, lower-cased."""
    fields = ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport",
              "tls.handshake.extensions_server_name", "http.host"]  # fmt: skip
    out = subprocess.run([tshark, "-n", "-r", str(capture), "-Y", "tcp && (tls.handshake.type == 1 || http.request)", "-T", "fields",
                          "-E", "occurrence=f", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    first: dict[str, tuple[tuple[str, int, str, int], str]] = {}
    for line in out.splitlines():
        stream, s4, s6, sport, d4, d6, dport, sni, host = line.split("\t")
        if stream in first:
            continue
        if host and not sni:
            host = host[: host.index("]") + 1] if host.startswith("[") else host.split(":")[0]
        first[stream] = ((s4 or s6, int(sport), d4 or d6, int(dport)), (sni or host).lower())
    names: dict[tuple[str, int, str, int], list[str]] = defaultdict(list)
    for key, name in first.values():
        if name:
            names[key].append(name)
    return names


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_server_names_are_tsharks(tshark: str, capture: Path) -> None:
    expected = tshark_names(tshark, capture)
    assert expected, "the capture must hold names for this test to mean something"
    flows = pcapclass.classify_file(capture).flows
    got: dict[tuple[str, int, str, int], list[str]] = defaultdict(list)
    for c, cp, s, sp, name in zip(flows.client_addr, flows.client_port, flows.server_addr, flows.server_port, flows.server_name):
        if name:
            got[(c, int(cp), s, int(sp))].append(name)
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}


def test_a_server_name_decides_nothing_else() -> None:
    """The name rides on an evidence row of its own kind, ranked after every other: the flow's
    protocol, service and evidence are those of its other rows."""
    flows = pcapclass.classify_file(PAYLOADS / "ndpi-pops.pcapng").flows
    row = flows[flows.server_name != ""].iloc[0]
    assert (row.server_name, row.protocol, row.server_port) == ("pop.secureserver.net", "tls", 995)
    assert row.evidence in ("signature", "port", "none")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.binary(max_size=12)), min_size=1, max_size=80))
def test_name_memo_finds_a_name_only_by_its_digest_and_its_bytes(names: list[tuple[int, bytes]]) -> None:
    """Names added with a digest (a few digests, so that names share them, and enough names to
    grow the table) are found again with that digest and their bytes, each by the value of the
    first added under its digest; a name whose digest another took, or with another digest, is not."""
    memo = NameMemo()
    first: dict[int, tuple[bytes, int]] = {}
    for value, (digest, raw) in enumerate(names):
        memo.add(digest * 0x9E3779B97F4A7C15 % (1 << 64), raw, value)
        first.setdefault(digest, (raw, value))
    data = np.frombuffer(b"".join(raw for _, raw in names) or b"\0", dtype=np.uint8)
    start = np.cumsum([0] + [len(raw) for _, raw in names[:-1]]).astype(np.int64)
    length = np.array([len(raw) for _, raw in names], dtype=np.int64)
    digest = np.array([d * 0x9E3779B97F4A7C15 % (1 << 64) for d, _ in names], dtype=np.uint64)
    want = [first[d][1] if first[d][0] == raw else -1 for d, raw in names]
    assert memo.find(data, start, length, digest).tolist() == want
    assert memo.find(data, start, length, digest + np.uint64(1)).tolist() == [-1] * len(names)
    assert len(memo) == len(first)
    memo.clear()
    assert len(memo) == 0 and memo.find(data, start, length, digest).tolist() == [-1] * len(names)


def test_name_memo_keeps_every_name_as_it_grows() -> None:
    """Thousands of names (past the first table and byte store) are all found again."""
    names = [f"host{i}.example.org".encode() * (1 + i % 3) for i in range(3000)]
    memo = NameMemo()
    for i, raw in enumerate(names):
        memo.add(i, raw, i)
    data = np.frombuffer(b"".join(names), dtype=np.uint8)
    start = np.cumsum([0] + [len(raw) for raw in names[:-1]]).astype(np.int64)
    length = np.array([len(raw) for raw in names], dtype=np.int64)
    assert memo.find(data, start, length, np.arange(3000, dtype=np.uint64)).tolist() == list(range(3000))
