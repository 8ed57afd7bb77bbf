#!/usr/bin/env python3
"""Build the synthetic test captures under tests/fixtures/pcaps/ (rerunning gives identical bytes).

Usage::

    python scripts/make_fixtures.py                 # (re)write tests/fixtures/pcaps/
    python scripts/make_fixtures.py --out DIR       # write somewhere else (the reproducibility test)
    python scripts/make_fixtures.py --copy-corpus CORPUS_DIR   # also refresh corpus/ copies from a checkout of the public test corpora

Every timestamp, TCP sequence number, IP id and payload byte comes from the constants below or
from ``random.Random(SEED)`` consumed in a fixed order; packets are encoded with scapy and the
capture files (pcap, pcapng, gzip) are written with ``struct`` by the writers in this file, so
the output depends on nothing but this script and scapy's header encoding. ``SOURCES.md`` is
written by this script too ("do not edit").

Ground truth written beside the captures:

* ``exchange_services.expected.csv`` -- per flow of ``exchange_services.pcap``: the client and
  server endpoint, transport, the service id the port table gives and the direction relative to
  the Exchange servers 10.0.0.10 (back-end) and 10.0.0.20 (front-end).
* ``bad/EXPECTED.csv`` -- per malformed file: the byte offset of the fault and how many good
  packets precede it. Offsets are computed from the lengths of the pieces each file is built
  from (see ``build_bad``); convention: the start of the record or block that cannot be read,
  or, for a bad value in the pcap file header, the offset of that field.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import logging
import random
import shutil
import socket
import struct
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import (
    ICMP,
    IP,
    TCP,
    UDP,
    IPOption_Router_Alert,
    IPOption_RR,
    fragment,
)
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    PadN,
    RouterAlert,
)
from scapy.packet import Raw

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "pcaps"

SEED = 20060502
#: 2006-05-02 09:00:00 UTC -- Exchange 2003 SP2 days. All fixture times count from here.
T0_NS = 1_146_560_400 * 1_000_000_000

# -- addresses of the fixture network -------------------------------------------------------
BACKEND = "10.0.0.10"  # Exchange 2003 back-end (mailbox) server
FRONTEND = "10.0.0.20"  # Exchange 2003 front-end server (also the RPC proxy)
DC = "10.0.0.5"  # domain controller / global catalog
DNS_SERVER = "10.0.0.53"  # a DNS server that serves no Exchange port
EXCHANGE_SERVERS = (BACKEND, FRONTEND)
# IPv6 twins used by the IPv6 link-type variants
BACKEND6 = "fd00:0:0:10::10"
CLIENT6 = "fd00:0:0:1::15"
DNS6 = "fd00:0:0:10::53"

# -- spec constants ------------------------------------------------------------------------
# draft-ietf-opsawg-pcap §4: file header magics
PCAP_MAGIC_USEC = 0xA1B2C3D4
PCAP_MAGIC_NSEC = 0xA1B23C4D
PCAP_VERSION = (2, 4)
# tcpdump.org link types
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_USER0 = 147
LINKTYPE_LINUX_SLL2 = 276
# draft-ietf-opsawg-pcapng: block types (§4, §11.1) and options
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_IDB = 0x00000001
PCAPNG_SPB = 0x00000003
PCAPNG_NRB = 0x00000004
PCAPNG_ISB = 0x00000005
PCAPNG_EPB = 0x00000006
PCAPNG_CUSTOM = 0x00000BAD  # Custom Block (copiable); PEN follows the header
PCAPNG_UNKNOWN = 0x00001234  # not assigned by the spec: readers must skip it by its length
PCAPNG_BOM = 0x1A2B3C4D
OPT_ENDOFOPT, OPT_COMMENT = 0, 1
SHB_USERAPPL = 4
IF_NAME, IF_DESCRIPTION, IF_TSRESOL = 2, 3, 9
EPB_FLAGS = 2
ISB_IFRECV, ISB_IFDROP = 4, 5
NRB_IPV4, NRB_END = 1, 0
PEN_DOCUMENTATION = 32473  # RFC 5612 example enterprise number
# Ethernet / family numbers
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
ARPHRD_ETHER = 1
AF_INET_BSD, AF_INET6_DARWIN = 2, 30
# DCE/RPC (C706 ch. 12)
DCERPC_REQUEST, DCERPC_RESPONSE, DCERPC_BIND, DCERPC_BIND_ACK = 0, 2, 11, 12
PFC_FIRST_LAST = 0x03
NDR_UUID = "8a885d04-1ceb-11c9-9fe8-08002b104860"
EPM_UUID = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
EMSMDB_UUID = "a4f1db00-ca47-1067-b31f-00dd010662da"
NSPI_UUID = "f5cc5a18-4264-101a-8c59-08002b2f8426"
RFR_UUID = "1544f5e0-613c-11d1-93df-00c04fd7bd09"


# ==========================================================================================
# conversations: L3 packets with timestamps
# ==========================================================================================


@dataclass(frozen=True)
class Pkt:
    """One IP packet of a fixture: when, the bytes from the IP header on, and who sent it."""

    ts_ns: int
    l3: bytes
    src: str
    dst: str
    family: int  # 4 or 6


@dataclass
class Msg:
    """An application message: who sends it ('c' client, 's' server) and its bytes."""

    sender: str
    payload: bytes
    think_us: int = 0  # extra idle time before this message


@dataclass
class Conversation:
    client: str
    cport: int
    server: str
    sport: int
    transport: str  # 'tcp' or 'udp'
    msgs: list[Msg]
    service: str = "other"  # expected service id (by port table)
    direction: str = "other"  # expected direction
    note: str = ""


class Net:
    """Shared state of one generated network: the RNG and each host's IP id counter."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self._ip_id: dict[str, int] = {}

    def ip_id(self, host: str) -> int:
        if host not in self._ip_id:
            self._ip_id[host] = self.rng.randint(0x0400, 0x7000)
        self._ip_id[host] = (self._ip_id[host] + 1) & 0xFFFF
        return self._ip_id[host]

    def us(self, lo: int, hi: int) -> int:
        """A random delay in whole microseconds, as nanoseconds."""
        return self.rng.randint(lo, hi) * 1000


def _ip(net: Net, src: str, dst: str, l4, *, ip_options=None, ext_headers: bool = False, ttl: int = 128) -> tuple[bytes, int]:
    if ":" in src:
        hdr = IPv6(src=src, dst=dst, hlim=ttl, fl=0)
        if ext_headers:
            # RFC 8200 §4.1 order: Hop-by-Hop first, then Destination Options, then TCP/UDP
            hdr = hdr / IPv6ExtHdrHopByHop(options=[RouterAlert(value=0), PadN(optdata=b"")]) / IPv6ExtHdrDestOpt(
                options=[PadN(optdata=b"\x00\x00\x00\x00")]
            )
        return bytes(hdr / l4), 6
    hdr = IP(src=src, dst=dst, id=net.ip_id(src), ttl=ttl, flags="DF", options=ip_options or [])
    return bytes(hdr / l4), 4


SYN_OPTIONS = [("MSS", 1460), ("NOP", None), ("NOP", None), ("SAckOK", b"")]


def tcp_conversation(
    net: Net,
    conv: Conversation,
    start_ns: int,
    *,
    mss: int = 1460,
    ip_options=None,
    ext_headers: bool = False,
) -> list[Pkt]:
    """Handshake, the messages (segmented at ``mss``, ACKed as Windows does), FIN teardown."""
    rng = net.rng
    rtt = net.us(250, 900)
    isn = {"c": rng.getrandbits(32), "s": rng.getrandbits(32)}
    nxt = dict(isn)  # next sequence number each side sends
    addr = {"c": (conv.client, conv.cport), "s": (conv.server, conv.sport)}
    window = {"c": 64240, "s": 65535}
    t = start_ns
    out: list[Pkt] = []

    def other(side: str) -> str:
        return "s" if side == "c" else "c"

    def emit(side: str, flags: str, payload: bytes = b"", delay: int = 0, options=None) -> None:
        nonlocal t
        t += delay
        (src, sport), (dst, dport) = addr[side], addr[other(side)]
        ack = nxt[other(side)] if "A" in flags else 0
        seg = TCP(sport=sport, dport=dport, seq=nxt[side], ack=ack, flags=flags, window=window[side], options=options or [])
        if payload:
            seg = seg / Raw(payload)
        raw, fam = _ip(net, src, dst, seg, ip_options=ip_options, ext_headers=ext_headers)
        out.append(Pkt(t, raw, src, dst, fam))
        nxt[side] = (nxt[side] + len(payload) + ("S" in flags) + ("F" in flags)) & 0xFFFFFFFF

    emit("c", "S", options=SYN_OPTIONS)
    emit("s", "SA", delay=rtt, options=SYN_OPTIONS)
    emit("c", "A", delay=net.us(20, 90))
    for i, m in enumerate(conv.msgs):
        chunks = [m.payload[k : k + mss] for k in range(0, len(m.payload), mss)] or [b""]
        for j, chunk in enumerate(chunks):
            last = j == len(chunks) - 1
            delay = m.think_us * 1000 + net.us(150, 2500) if j == 0 else net.us(8, 120)
            emit(m.sender, "PA" if last else "A", chunk, delay=delay)
            if j % 2 == 1 and not last:  # delayed ACK: one per two full segments
                emit(other(m.sender), "A", delay=net.us(15, 200))
        following = conv.msgs[i + 1].sender if i + 1 < len(conv.msgs) else None
        if following != other(m.sender):  # no reply to carry the ACK: send a bare one
            emit(other(m.sender), "A", delay=rtt // 2 + net.us(10, 200))
    emit("c", "FA", delay=net.us(300, 3000))
    emit("s", "FA", delay=rtt)
    emit("c", "A", delay=net.us(20, 90))
    return out


def udp_conversation(net: Net, conv: Conversation, start_ns: int) -> list[Pkt]:
    """One datagram per message."""
    out: list[Pkt] = []
    t = start_ns
    for k, m in enumerate(conv.msgs):
        if k:
            t += m.think_us * 1000 + net.us(200, 1500)
        src, sport, dst, dport = (
            (conv.client, conv.cport, conv.server, conv.sport) if m.sender == "c" else (conv.server, conv.sport, conv.client, conv.cport)
        )
        raw, fam = _ip(net, src, dst, UDP(sport=sport, dport=dport) / Raw(m.payload), ttl=128)
        out.append(Pkt(t, raw, src, dst, fam))
    return out


def build(net: Net, conv: Conversation, start_ns: int, **kw) -> list[Pkt]:
    if conv.transport == "tcp":
        return tcp_conversation(net, conv, start_ns, **kw)
    return udp_conversation(net, conv, start_ns)


# ==========================================================================================
# application payloads (realistic first bytes; bodies pseudo-random where content is opaque)
# ==========================================================================================


def crlf(*lines: str) -> bytes:
    return "".join(line + "\r\n" for line in lines).encode("ascii")


def uuid_le(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def dce_pdu(ptype: int, body: bytes, call_id: int) -> bytes:
    # 16-byte common header: vers 5.0, ptype, flags first+last, drep little-endian/ASCII/IEEE
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, PFC_FIRST_LAST, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id) + body


def dce_bind(call_id: int, iface: str, major: int, minor: int) -> bytes:
    body = struct.pack("<HHIB3x", 5840, 5840, 0, 1)  # max_xmit, max_recv, assoc_group, n_contexts
    body += struct.pack("<HBx", 0, 1)  # context id 0, one transfer syntax
    body += uuid_le(iface) + struct.pack("<HH", major, minor)
    body += uuid_le(NDR_UUID) + struct.pack("<I", 2)
    return dce_pdu(DCERPC_BIND, body, call_id)


def dce_bind_ack(call_id: int, secondary_address: str, assoc_group: int) -> bytes:
    sec = secondary_address.encode("ascii") + b"\x00"
    body = struct.pack("<HHI", 5840, 5840, assoc_group) + struct.pack("<H", len(sec)) + sec
    body += b"\x00" * (-(16 + len(body)) % 4)
    body += struct.pack("<B3x", 1) + struct.pack("<HH", 0, 0) + uuid_le(NDR_UUID) + struct.pack("<I", 2)
    return dce_pdu(DCERPC_BIND_ACK, body, call_id)


def dce_request(call_id: int, opnum: int, stub: bytes) -> bytes:
    return dce_pdu(DCERPC_REQUEST, struct.pack("<IHH", len(stub), 0, opnum) + stub, call_id)


def dce_response(call_id: int, stub: bytes) -> bytes:
    return dce_pdu(DCERPC_RESPONSE, struct.pack("<IHBx", len(stub), 0, 0) + stub, call_id)


def epm_tower(iface: str, major: int, minor: int, port: int, ip: str) -> bytes:
    floors = [
        (b"\x0d" + uuid_le(iface) + struct.pack("<H", major), struct.pack("<H", minor)),
        (b"\x0d" + uuid_le(NDR_UUID) + struct.pack("<H", 2), struct.pack("<H", 0)),
        (b"\x0b", b"\x00\x00"),  # connection-oriented RPC
        (b"\x07", struct.pack(">H", port)),  # TCP, port big-endian
        (b"\x09", socket.inet_aton(ip)),  # IP
    ]
    out = struct.pack("<H", len(floors))
    for lhs, rhs in floors:
        out += struct.pack("<H", len(lhs)) + lhs + struct.pack("<H", len(rhs)) + rhs
    return out


def pad4(b: bytes) -> bytes:
    return b + b"\x00" * (-len(b) % 4)


def register_push_stub(blob: bytes, address: str, port: int, handle: int) -> bytes:
    """EcRRegisterPushNotification (EMSMDB opnum 4) request stub, MS-OXCRPC 3.1.4.5, on the
    context handle whose GUID is 16 ``handle`` bytes."""
    stub = b"\x00" * 4 + bytes([handle]) * 16  # context handle: attributes u32 + GUID
    stub += struct.pack("<I", 0)  # iRpc
    stub += struct.pack("<I", len(blob)) + blob  # rgbContext (conformant array)
    stub += b"\x00" * (-len(stub) % 2) + struct.pack("<H", len(blob))  # cbContext
    stub += b"\x00" * (-len(stub) % 4) + struct.pack("<I", 0xFFFFFFFF)  # grbitAdviseBits
    sockaddr = struct.pack("<H", 2) + struct.pack(">H", port) + socket.inet_aton(address) + b"\x00" * 8
    stub += struct.pack("<I", len(sockaddr)) + sockaddr  # rgbCallbackAddress
    stub += b"\x00" * (-len(stub) % 2) + struct.pack("<H", len(sockaddr))  # cbCallbackAddress
    return stub


def ept_map_request(call_id: int, iface: str, major: int, minor: int) -> bytes:
    tower = epm_tower(iface, major, minor, 0, "0.0.0.0")
    stub = struct.pack("<I", 1) + b"\x00" * 16  # object: referent 1, nil UUID
    stub += struct.pack("<III", 2, len(tower), len(tower)) + pad4(tower)
    stub += b"\x00" * 20 + struct.pack("<I", 4)  # entry handle, max towers
    return dce_request(call_id, 3, stub)  # opnum 3: ept_map


def ept_map_response(call_id: int, iface: str, major: int, minor: int, port: int, ip: str) -> bytes:
    tower = epm_tower(iface, major, minor, port, ip)
    stub = b"\x00" * 20 + struct.pack("<I", 1)  # entry handle, num_towers
    stub += struct.pack("<IIII", 4, 0, 1, 3)  # conformant varying array of 1 pointer
    stub += struct.pack("<II", len(tower), len(tower)) + pad4(tower)
    stub += struct.pack("<I", 0)  # status: ok
    return dce_response(call_id, stub)


def tpkt(cotp: bytes) -> bytes:
    """RFC 1006 TPKT around an ISO 8073 COTP TPDU."""
    return struct.pack(">BBH", 3, 0, 4 + len(cotp)) + cotp


def tls_record(ctype: int, body: bytes) -> bytes:
    return struct.pack(">BHH", ctype, 0x0301, len(body)) + body


def tls_handshake(htype: int, body: bytes) -> bytes:
    return struct.pack(">B", htype) + len(body).to_bytes(3, "big") + body


def tls_session(rng: random.Random, request_len: int, response_len: int) -> list[Msg]:
    """A TLS 1.0 session: hellos, certificate, key exchange, one request and one response."""
    suites = bytes.fromhex("0004000500 0a00090064006200030006".replace(" ", ""))
    hello = struct.pack(">H", 0x0301) + rng.randbytes(32) + b"\x00" + struct.pack(">H", len(suites)) + suites + b"\x01\x00"
    srv_hello = struct.pack(">H", 0x0301) + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x00\x04\x00"
    cert = rng.randbytes(1100)
    certs = (len(cert) + 3).to_bytes(3, "big") + len(cert).to_bytes(3, "big") + cert
    return [
        Msg("c", tls_record(22, tls_handshake(1, hello))),
        Msg("s", tls_record(22, tls_handshake(2, srv_hello) + tls_handshake(11, certs) + tls_handshake(14, b""))),
        Msg(
            "c",
            tls_record(22, tls_handshake(16, b"\x00\x80" + rng.randbytes(128)))
            + tls_record(20, b"\x01")
            + tls_record(22, rng.randbytes(32)),
        ),
        Msg("s", tls_record(20, b"\x01") + tls_record(22, rng.randbytes(32))),
        Msg("c", tls_record(23, rng.randbytes(request_len))),
        Msg("s", tls_record(23, rng.randbytes(response_len))),
        Msg("c", tls_record(21, rng.randbytes(22))),  # close_notify (encrypted)
    ]


def ber(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def ber_int(tag: int, value: int) -> bytes:
    return ber(tag, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def ldap_msg(msgid: int, op: bytes) -> bytes:
    return ber(0x30, ber_int(0x02, msgid) + op)


def ldap_session(rng: random.Random, bind_dn: str, base: str, attrs: list[str], n_entries: int) -> list[Msg]:
    """Simple bind, one subtree search for objectClass=* returning entries, unbind (RFC 4511)."""
    bind = ber(0x60, ber_int(0x02, 3) + ber(0x04, bind_dn.encode()) + ber(0x80, b"Secret2006"))
    ok = ber(0x0A, b"\x00") + ber(0x04, b"") + ber(0x04, b"")
    search = ber(
        0x63,
        ber(0x04, base.encode())
        + ber(0x0A, b"\x02")
        + ber(0x0A, b"\x00")
        + ber_int(0x02, 0)
        + ber_int(0x02, 0)
        + ber(0x01, b"\x00")
        + ber(0x87, b"objectClass")
        + ber(0x30, b"".join(ber(0x04, a.encode()) for a in attrs)),
    )
    entries = b""
    for k in range(n_entries):
        dn = f"cn=obj{k:03d},{base}"
        values = b"".join(ber(0x30, ber(0x04, a.encode()) + ber(0x31, ber(0x04, rng.randbytes(12).hex().encode()))) for a in attrs)
        entries += ldap_msg(2, ber(0x64, ber(0x04, dn.encode()) + ber(0x30, values)))
    return [
        Msg("c", ldap_msg(1, bind)),
        Msg("s", ldap_msg(1, ber(0x61, ok))),
        Msg("c", ldap_msg(2, search)),
        Msg("s", entries + ldap_msg(2, ber(0x65, ok))),
        Msg("c", ldap_msg(3, ber(0x42, b""))),  # unbind
    ]


def smb_negotiate(rng: random.Random) -> list[Msg]:
    """SMB1 over direct TCP 445: NEGOTIATE request/response (MS-CIFS 2.2.4.52)."""

    def smb(cmd: int, flags: int, words: bytes, data: bytes, mid: int) -> bytes:
        hdr = b"\xffSMB" + struct.pack("<BIBH12sHHHH", cmd, 0, flags, 0xC853, b"\x00" * 12, 0, 0xFEFF, 0, mid)
        body = struct.pack("<B", len(words) // 2) + words + struct.pack("<H", len(data)) + data
        msg = hdr + body
        return struct.pack(">I", len(msg)) + msg  # NBSS session message, 24-bit length

    dialects = b"".join(b"\x02" + d + b"\x00" for d in (b"PC NETWORK PROGRAM 1.0", b"LANMAN1.0", b"LM1.2X002", b"LANMAN2.1", b"NT LM 0.12"))
    words = struct.pack("<HBHHIIIIqhB", 4, 0x03, 50, 1, 16644, 65536, 0, 0x0000E3FD, 127_900_000_000_000_000, 0, 8)
    data = rng.randbytes(8) + "CORP\x00".encode("utf-16-le")
    return [
        Msg("c", smb(0x72, 0x18, b"", dialects, 1)),
        Msg("s", smb(0x72, 0x98, words, data, 1)),
        Msg("c", struct.pack(">I", 140) + rng.randbytes(140)),  # session setup (opaque here)
        Msg("s", struct.pack(">I", 210) + rng.randbytes(210)),
    ]


def http_exchange(host: str, path: str, server_banner: str, body_len: int, rng: random.Random, extra: tuple[str, ...] = ()) -> list[Msg]:
    body = (b"<html><head><title>Microsoft Outlook Web Access</title></head><body>" + rng.randbytes(body_len).hex().encode())[:body_len]
    request = crlf(
        f"GET {path} HTTP/1.1",
        "Accept: image/gif, image/jpeg, */*",
        "Accept-Language: en-us",
        "User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)",
        f"Host: {host}",
        "Connection: Keep-Alive",
        "Authorization: Basic Q09SUFxhbGljZTpTZWNyZXQyMDA2",
        *extra,
        "",
    )
    response = crlf(
        "HTTP/1.1 200 OK",
        f"Server: {server_banner}",
        "X-Powered-By: ASP.NET",
        "Content-Type: text/html",
        f"Content-Length: {len(body)}",
        "",
    ) + body
    return [Msg("c", request), Msg("s", response)]


def pop3_session(host: str) -> list[Msg]:
    return [
        Msg("s", crlf(f"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 ({host}) ready.")),
        Msg("c", crlf("USER alice")),
        Msg("s", crlf("+OK")),
        Msg("c", crlf("PASS Secret2006")),
        Msg("s", crlf("+OK User successfully logged on.")),
        Msg("c", crlf("STAT")),
        Msg("s", crlf("+OK 2 4096")),
        Msg("c", crlf("QUIT")),
        Msg("s", crlf("+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 signing off.")),
    ]


def imap_session(host: str) -> list[Msg]:
    return [
        Msg("s", crlf(f"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 ({host}) ready.")),
        Msg("c", crlf("a001 LOGIN alice Secret2006")),
        Msg("s", crlf("a001 OK LOGIN completed.")),
        Msg("c", crlf("a002 SELECT INBOX")),
        Msg(
            "s",
            crlf(
                "* 2 EXISTS",
                "* 0 RECENT",
                "* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)",
                "* OK [PERMANENTFLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)] Permanent flags",
                "* OK [UIDVALIDITY 2351] UIDVALIDITY value",
                "a002 OK [READ-WRITE] SELECT completed.",
            ),
        ),
        Msg("c", crlf("a003 LOGOUT")),
        Msg("s", crlf("* BYE Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 signing off.", "a003 OK LOGOUT completed.")),
    ]


# ==========================================================================================
# the Exchange services capture: one conversation per seed-table row
# ==========================================================================================


def exchange_conversations(net: Net) -> list[Conversation]:
    """The flows of exchange_services.pcap, in time order, each with its ground truth."""
    rng = net.rng
    be_name, fe_name = "exch01.corp.example", "mail.corp.example"
    smtp_body = crlf(
        "From: bob@partner.example",
        "To: alice@corp.example",
        "Subject: quarterly figures",
        "Date: Tue, 2 May 2006 09:00:05 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ) + b"".join(crlf(rng.randbytes(36).hex()) for _ in range(30)) + crlf(".")
    convs = [
        Conversation(
            "10.0.1.11", 1101, BACKEND, 135, "tcp",
            [
                Msg("c", dce_bind(1, EPM_UUID, 3, 0)),
                Msg("s", dce_bind_ack(1, "135", 0x0001_53F0)),
                Msg("c", ept_map_request(2, EMSMDB_UUID, 0, 81)),
                Msg("s", ept_map_response(2, EMSMDB_UUID, 0, 81, 1032, BACKEND)),
            ],
            "rpc-endpoint-mapper", "inbound",
            "Outlook asks the endpoint mapper (TCP 135) where EMSMDB listens: bind to EPM "
            "e1af8308 v3, ept_map request, response with a tower naming 10.0.0.10 TCP 1032 (no flow to 1032 in the file).",
        ),
        Conversation(
            "10.0.1.12", 1102, BACKEND, 102, "tcp",
            [
                Msg("c", tpkt(bytes([17, 0xE0, 0, 0, 0, 1, 0, 0xC1, 2, 0, 1, 0xC2, 2, 0, 1, 0xC0, 1, 0x0A]))),
                Msg("s", tpkt(bytes([17, 0xD0, 0, 1, 0, 2, 0, 0xC1, 2, 0, 1, 0xC2, 2, 0, 1, 0xC0, 1, 0x0A]))),
                Msg("c", tpkt(b"\x02\xf0\x80" + b"\x0d\xff" + rng.randbytes(380))),
                Msg("s", tpkt(b"\x02\xf0\x80" + b"\x0e\xff" + rng.randbytes(120))),
                Msg("c", tpkt(bytes([6, 0x80, 0, 2, 0, 1, 0]))),
            ],
            "mta-stacks", "inbound",
            "An Exchange 5.5 MTA (10.0.1.12) opens X.400 over TCP 102 to the back-end: TPKT "
            "(03 00 len) with COTP CR/CC, two DT TPDUs of P1 data, DR.",
        ),
        Conversation(
            "10.0.1.13", 1103, BACKEND, 25, "tcp",
            [
                Msg("s", crlf(f"220 {be_name} Microsoft ESMTP MAIL Service, Version: 6.0.3790.3959 ready at  Tue, 2 May 2006 09:00:05 +0000 ")),
                Msg("c", crlf("EHLO partner.example")),
                Msg(
                    "s",
                    crlf(
                        f"250-{be_name} Hello [10.0.1.13]",
                        "250-TURN", "250-SIZE", "250-ETRN", "250-PIPELINING", "250-DSN",
                        "250-ENHANCEDSTATUSCODES", "250-8bitmime", "250-BINARYMIME", "250-CHUNKING",
                        "250-VRFY", "250-X-EXPS GSSAPI NTLM LOGIN", "250-X-EXPS=LOGIN",
                        "250-AUTH GSSAPI NTLM LOGIN", "250-AUTH=LOGIN", "250-X-LINK2STATE",
                        "250-XEXCH50", "250 OK",
                    ),
                ),
                Msg("c", crlf("MAIL FROM:<bob@partner.example>")),
                Msg("s", crlf("250 2.1.0 bob@partner.example....Sender OK")),
                Msg("c", crlf("RCPT TO:<alice@corp.example>")),
                Msg("s", crlf("250 2.1.5 alice@corp.example ")),
                Msg("c", crlf("DATA")),
                Msg("s", crlf("354 Start mail input; end with <CRLF>.<CRLF>")),
                Msg("c", smtp_body),
                Msg("s", crlf(f"250 2.6.0 <0001@{be_name}> Queued mail for delivery")),
                Msg("c", crlf("QUIT")),
                Msg("s", crlf(f"221 2.0.0 {be_name} Service closing transmission channel")),
            ],
            "smtp", "inbound",
            "Inbound SMTP on TCP 25: Exchange 2003 banner, EHLO answer advertising X-EXPS, "
            "X-LINK2STATE and XEXCH50, one ~2.3 kB message (two segments), QUIT.",
        ),
        Conversation(
            "10.0.1.12", 1104, BACKEND, 691, "tcp",
            [Msg("c", rng.randbytes(600)), Msg("s", rng.randbytes(180)), Msg("c", rng.randbytes(90))],
            "routing-engine", "inbound",
            "Link-state traffic to the Routing Engine on TCP 691. The wire format is unconfirmed "
            "(docs/exchange-wire-facts.md §7), so the payload is opaque pseudo-random bytes.",
        ),
        Conversation(
            "10.0.1.14", 1105, FRONTEND, 80, "tcp",
            http_exchange(fe_name, "/exchange/alice/Inbox/?Cmd=contents", "Microsoft-IIS/6.0", 3000, rng),
            "www", "inbound",
            "Outlook Web Access over HTTP: GET /exchange/alice/Inbox/ to the front-end, 3 kB HTML answer (three segments).",
        ),
        Conversation(
            "10.0.1.14", 1106, FRONTEND, 443, "tcp", tls_session(rng, 420, 2600), "www", "inbound",
            "OWA over HTTPS (TCP 443): a TLS 1.0 handshake and one encrypted request/response.",
        ),
        Conversation(
            "10.0.1.15", 1107, FRONTEND, 110, "tcp", pop3_session(fe_name), "pop3", "inbound",
            "POP3 (TCP 110) to the front-end: Exchange 2003 banner, USER/PASS, STAT, QUIT.",
        ),
        Conversation(
            "10.0.1.15", 1108, FRONTEND, 995, "tcp", tls_session(rng, 60, 900), "pop3", "inbound",
            "POP3 over SSL (TCP 995): TLS handshake and application data.",
        ),
        Conversation(
            "10.0.1.16", 1109, FRONTEND, 143, "tcp", imap_session(fe_name), "imap4", "inbound",
            "IMAP4 (TCP 143) to the front-end: banner, LOGIN, SELECT INBOX, LOGOUT.",
        ),
        Conversation(
            "10.0.1.16", 1110, FRONTEND, 993, "tcp", tls_session(rng, 80, 700), "imap4", "inbound",
            "IMAP4 over SSL (TCP 993): TLS handshake and application data.",
        ),
        Conversation(
            "10.0.1.17", 1111, BACKEND, 119, "tcp",
            [
                Msg("s", crlf("200 NNTP Service 6.0.3790.3959 Version: 6.0.3790.3959 Posting Allowed ")),
                Msg("c", crlf("MODE READER")),
                Msg("s", crlf("200 NNTP Service 6.0.3790.3959 Version: 6.0.3790.3959 Posting Allowed ")),
                Msg("c", crlf("LIST")),
                Msg("s", crlf("215 list of newsgroups follows", "control 0 1 y", "control.cancel 0 1 n", "corp.announce 12 1 y", ".")),
                Msg("c", crlf("QUIT")),
                Msg("s", crlf("205 closing connection - goodbye!")),
            ],
            "nntp", "inbound",
            "NNTP (TCP 119) to the back-end: IIS NNTP banner, MODE READER, LIST, QUIT.",
        ),
        Conversation(
            "10.0.1.17", 1112, BACKEND, 563, "tcp", tls_session(rng, 40, 300), "nntp", "inbound",
            "NNTP over SSL (TCP 563): TLS handshake and application data.",
        ),
        Conversation(
            "10.0.1.18", 1113, BACKEND, 379, "tcp",
            ldap_session(rng, "cn=adc,cn=Users,dc=corp,dc=example", "o=CORP,ou=Site1", ["cn", "objectGUID"], 3),
            "site-replication", "inbound",
            "LDAP to the Site Replication Service on TCP 379 of the back-end (an ADC/5.5 host "
            "reading the SRS directory): bind, subtree search with 3 entries, unbind.",
        ),
        Conversation(
            BACKEND, 1201, DC, 389, "tcp",
            ldap_session(rng, "cn=exch01$,cn=Computers,dc=corp,dc=example", "dc=corp,dc=example", ["cn", "mail", "legacyExchangeDN"], 4),
            "ad-connector", "outbound",
            "The Active Directory Connector on the back-end connects out to LDAP TCP 389 on the DC.",
        ),
        Conversation(
            BACKEND, 1202, DC, 379, "tcp",
            ldap_session(rng, "cn=exch01$,cn=Computers,dc=corp,dc=example", "o=CORP", ["cn", "objectGUID"], 2),
            "ad-connector", "outbound",
            "The ADC connects out to TCP 379 (SRS-style LDAP) on 10.0.0.5: outbound 379 is the ADC, not site replication.",
        ),
        Conversation(
            "10.0.1.19", 1114, BACKEND, 445, "tcp", smb_negotiate(rng), "management", "inbound",
            "SMB over TCP 445 to the back-end (message tracking / management): NEGOTIATE NT LM 0.12 and an opaque session setup.",
        ),
        Conversation(
            FRONTEND, 1203, BACKEND, 6001, "tcp",
            [
                Msg("s", b"ncacn_http/1.0"),
                Msg("c", dce_bind(1, EMSMDB_UUID, 0, 81)),
                Msg("s", dce_bind_ack(1, "6001", 0x0002_1A40)),
                Msg("c", dce_request(2, 10, rng.randbytes(220))),  # EcDoConnectEx
                Msg("s", dce_response(2, rng.randbytes(160))),
            ],
            "information-store", "outbound",
            "RPC over HTTP, proxy (front-end) -> back-end leg on TCP 6001: the store sends "
            "'ncacn_http/1.0', then a bind to EMSMDB a4f1db00 v0.81 and EcDoConnectEx (opnum 10). "
            "The client is an Exchange server, so the direction is outbound.",
        ),
        Conversation(
            FRONTEND, 1204, BACKEND, 6002, "tcp",
            [
                Msg("s", b"ncacn_http/1.0"),
                Msg("c", dce_bind(1, RFR_UUID, 1, 0)),
                Msg("s", dce_bind_ack(1, "6002", 0x0002_1A41)),
                Msg("c", dce_request(2, 1, rng.randbytes(96))),  # RfrGetFQDNFromLegacyDN
                Msg("s", dce_response(2, rng.randbytes(64))),
            ],
            "system-attendant", "outbound",
            "RPC over HTTP proxy -> back-end on TCP 6002 (DS referral): 'ncacn_http/1.0', bind to RFR 1544f5e0 v1.0, opnum 1.",
        ),
        Conversation(
            FRONTEND, 1205, BACKEND, 6004, "tcp",
            [
                Msg("s", b"ncacn_http/1.0"),
                Msg("c", dce_bind(1, NSPI_UUID, 56, 0)),
                Msg("s", dce_bind_ack(1, "6004", 0x0002_1A42)),
                Msg("c", dce_request(2, 0, rng.randbytes(120))),  # NspiBind
                Msg("s", dce_response(2, rng.randbytes(40))),
            ],
            "system-attendant", "outbound",
            "RPC over HTTP proxy -> back-end on TCP 6004 (DSProxy/NSPI): 'ncacn_http/1.0', bind to NSPI f5cc5a18 v56.0, NspiBind.",
        ),
        Conversation(
            FRONTEND, 1206, BACKEND, 593, "tcp",
            [
                Msg("s", b"ncacn_http/1.0"),
                Msg("c", dce_bind(1, EPM_UUID, 3, 0)),
                Msg("s", dce_bind_ack(1, "593", 0x0002_1A43)),
                Msg("c", ept_map_request(2, EMSMDB_UUID, 0, 81)),
                Msg("s", ept_map_response(2, EMSMDB_UUID, 0, 81, 6001, BACKEND)),
            ],
            "rpc-endpoint-mapper", "outbound",
            "The RPC-over-HTTP endpoint mapper on TCP 593: 'ncacn_http/1.0', EPM bind and ept_map for EMSMDB.",
        ),
        Conversation(
            FRONTEND, 1207, BACKEND, 80, "tcp",
            http_exchange(be_name, "/exchange/alice/Inbox/?Cmd=contents", "Microsoft-IIS/6.0", 2900, rng,
                          extra=("X-FE-ClientIP: 10.0.1.14",)),
            "www", "outbound",
            "The front-end proxies OWA to the back-end over clear-text TCP 80 ('80 on the front-end server', outbound column).",
        ),
        Conversation(
            FRONTEND, 1208, BACKEND, 110, "tcp", pop3_session(be_name), "pop3", "outbound",
            "The front-end proxies POP3 to the back-end on TCP 110 (outbound column).",
        ),
        Conversation(
            FRONTEND, 1209, BACKEND, 143, "tcp", imap_session(be_name), "imap4", "outbound",
            "The front-end proxies IMAP4 to the back-end on TCP 143 (outbound column).",
        ),
        Conversation(
            FRONTEND, 1210, BACKEND, 2883, "udp",
            [Msg("c", rng.randbytes(64)), Msg("c", rng.randbytes(64), think_us=400_000), Msg("s", rng.randbytes(24))],
            "activesync", "outbound",
            "UDP 2883 from the front-end ('UDP 2883 on the front-end server', ActiveSync Direct Push). "
            "Sender and payload are unconfirmed (docs/exchange-wire-facts.md §6): opaque bytes, two datagrams out, one back.",
        ),
        Conversation(
            BACKEND, 2571, "10.0.1.17", 1054, "udp",
            [Msg("c", bytes.fromhex("0f1e2d3c4b5a6978"))],
            "other", "outbound",
            "A new-mail notification: one 8-byte UDP datagram (the client's rgbContext blob) from the "
            "store's high port to the client's registered high port. No port rule can match it, so "
            "the port table says other; the Exchange server is the sender (client) -> outbound.",
        ),
        Conversation(
            "10.0.1.20", 1115, DNS_SERVER, 53, "udp",
            [
                Msg("c", bytes(DNS(id=0x1A2B, rd=1, qd=DNSQR(qname=fe_name)))),
                Msg("s", bytes(DNS(id=0x1A2B, qr=1, aa=1, rd=1, ra=1, qd=DNSQR(qname=fe_name),
                                   an=DNSRR(rrname=fe_name, type="A", ttl=3600, rdata=FRONTEND)))),
            ],
            "other", "other",
            "Control: a DNS query/answer between two hosts that are not Exchange servers.",
        ),
    ]
    return convs


# ==========================================================================================
# link layers
# ==========================================================================================


def mac(ip: str) -> bytes:
    """A stable locally-administered MAC per address (00:0c:29 + the address's last 3 bytes)."""
    raw = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    return b"\x00\x0c\x29" + raw[-3:]


def ethertype(p: Pkt) -> int:
    return ETH_P_IPV6 if p.family == 6 else ETH_P_IP


def eth(p: Pkt, *, vlan: int | None = None, outer_vlan: int | None = None) -> bytes:
    hdr = mac(p.dst) + mac(p.src)
    if outer_vlan is not None:
        hdr += struct.pack(">HH", ETH_P_8021AD, outer_vlan)  # IEEE 802.1ad S-tag
    if vlan is not None:
        hdr += struct.pack(">HH", ETH_P_8021Q, (3 << 13) | vlan)  # C-tag, PCP 3
    return hdr + struct.pack(">H", ethertype(p)) + p.l3


def sll(p: Pkt, capture_host: str) -> bytes:
    # LINKTYPE_LINUX_SLL: packet type, ARPHRD, address length, 8-byte address, protocol
    pkttype = 4 if p.src == capture_host else 0  # 4 = sent by us, 0 = to us
    return struct.pack(">HHH8sH", pkttype, ARPHRD_ETHER, 6, mac(p.src) + b"\x00\x00", ethertype(p)) + p.l3


def sll2(p: Pkt, capture_host: str) -> bytes:
    # LINKTYPE_LINUX_SLL2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, address
    pkttype = 4 if p.src == capture_host else 0
    return struct.pack(">HHIHBB8s", ethertype(p), 0, 2, ARPHRD_ETHER, pkttype, 6, mac(p.src) + b"\x00\x00") + p.l3


def null(p: Pkt) -> bytes:
    # LINKTYPE_NULL: the family in the writing host's byte order (little-endian here)
    return struct.pack("<I", AF_INET6_DARWIN if p.family == 6 else AF_INET_BSD) + p.l3


def raw(p: Pkt) -> bytes:
    return p.l3


# ==========================================================================================
# file writers
# ==========================================================================================


@dataclass(frozen=True)
class Rec:
    """One capture record: time, captured bytes and the original (wire) length."""

    ts_ns: int
    data: bytes
    wirelen: int


def records(pkts: list[Pkt], wrap, *, snaplen: int | None = None) -> list[Rec]:
    out = []
    for p in pkts:
        frame = wrap(p)
        data = frame if snaplen is None else frame[:snaplen]
        out.append(Rec(p.ts_ns, data, len(frame)))
    return out


def pcap_header(linktype: int, *, snaplen: int = 65535, nsec: bool = False, big_endian: bool = False) -> bytes:
    e = ">" if big_endian else "<"
    magic = PCAP_MAGIC_NSEC if nsec else PCAP_MAGIC_USEC
    return struct.pack(e + "IHHiIII", magic, *PCAP_VERSION, 0, 0, snaplen, linktype)


def pcap_record(r: Rec, *, nsec: bool = False, big_endian: bool = False, caplen: int | None = None) -> bytes:
    e = ">" if big_endian else "<"
    sec, frac = divmod(r.ts_ns, 1_000_000_000)
    if not nsec:
        frac //= 1000
    n = len(r.data) if caplen is None else caplen
    return struct.pack(e + "IIII", sec, frac, n, r.wirelen) + r.data


def pcap_file(recs: list[Rec], linktype: int, *, snaplen: int = 65535, nsec: bool = False, big_endian: bool = False) -> bytes:
    return pcap_header(linktype, snaplen=snaplen, nsec=nsec, big_endian=big_endian) + b"".join(
        pcap_record(r, nsec=nsec, big_endian=big_endian) for r in recs
    )


class Pcapng:
    """A pcapng writer for one byte order; methods return whole blocks (draft-ietf-opsawg-pcapng)."""

    def __init__(self, big_endian: bool = False) -> None:
        self.e = ">" if big_endian else "<"

    def block(self, btype: int, body: bytes) -> bytes:
        body = pad4(body)
        total = 12 + len(body)
        return struct.pack(self.e + "II", btype, total) + body + struct.pack(self.e + "I", total)

    def options(self, opts: list[tuple[int, bytes]]) -> bytes:
        if not opts:
            return b""
        out = b""
        for code, value in opts:
            out += struct.pack(self.e + "HH", code, len(value)) + pad4(value)
        return out + struct.pack(self.e + "HH", OPT_ENDOFOPT, 0)

    def shb(self, opts: list[tuple[int, bytes]] = ()) -> bytes:
        body = struct.pack(self.e + "IHHq", PCAPNG_BOM, 1, 0, -1) + self.options(list(opts))
        return self.block(PCAPNG_SHB, body)

    def idb(self, linktype: int, snaplen: int, opts: list[tuple[int, bytes]] = ()) -> bytes:
        return self.block(PCAPNG_IDB, struct.pack(self.e + "HHI", linktype, 0, snaplen) + self.options(list(opts)))

    def epb(self, iface: int, ticks: int, r: Rec, opts: list[tuple[int, bytes]] = ()) -> bytes:
        body = struct.pack(self.e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(r.data), r.wirelen)
        return self.block(PCAPNG_EPB, body + pad4(r.data) + self.options(list(opts)))

    def spb(self, r: Rec) -> bytes:
        return self.block(PCAPNG_SPB, struct.pack(self.e + "I", r.wirelen) + r.data)

    def nrb(self, entries: list[tuple[str, str]]) -> bytes:
        body = b""
        for ip, name in entries:
            value = socket.inet_aton(ip) + name.encode() + b"\x00"
            body += struct.pack(self.e + "HH", NRB_IPV4, len(value)) + pad4(value)
        body += struct.pack(self.e + "HH", NRB_END, 0)
        return self.block(PCAPNG_NRB, body)

    def isb(self, iface: int, ticks: int, received: int, dropped: int) -> bytes:
        opts = [(ISB_IFRECV, struct.pack(self.e + "Q", received)), (ISB_IFDROP, struct.pack(self.e + "Q", dropped))]
        return self.block(PCAPNG_ISB, struct.pack(self.e + "III", iface, ticks >> 32, ticks & 0xFFFFFFFF) + self.options(opts))

    def custom(self, payload: bytes) -> bytes:
        return self.block(PCAPNG_CUSTOM, struct.pack(self.e + "I", PEN_DOCUMENTATION) + payload)

    def unknown(self, payload: bytes) -> bytes:
        return self.block(PCAPNG_UNKNOWN, payload)

    def u8(self, v: int) -> bytes:
        return bytes([v])

    def u32(self, v: int) -> bytes:
        return struct.pack(self.e + "I", v)


def gzip_bytes(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name, so the bytes depend only on ``data``."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


# ==========================================================================================
# the fixtures
# ==========================================================================================


@dataclass
class Output:
    files: dict[str, bytes] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, data: bytes, note: str) -> None:
        assert name not in self.files, name
        self.files[name] = data
        self.notes[name] = note


def small_conversation(net: Net, start_ns: int, *, family: int = 4) -> list[Pkt]:
    """The small conversation shared by the link-type and format variants: POP3 over TCP, then DNS over UDP."""
    if family == 4:
        client, server, dns_server = "10.0.1.15", BACKEND, DNS_SERVER
    else:
        client, server, dns_server = CLIENT6, BACKEND6, DNS6
    pop = Conversation(client, 1120, server, 110, "tcp", pop3_session("exch01.corp.example"))
    pkts = tcp_conversation(net, pop, start_ns)
    dns = Conversation(
        client, 1121, dns_server, 53, "udp",
        [
            Msg("c", bytes(DNS(id=0x2B3C, rd=1, qd=DNSQR(qname="exch01.corp.example")))),
            Msg("s", bytes(DNS(id=0x2B3C, qr=1, aa=1, rd=1, ra=1, qd=DNSQR(qname="exch01.corp.example"),
                               an=DNSRR(rrname="exch01.corp.example", type="A", ttl=3600, rdata=BACKEND)))),
        ],
    )
    return pkts + udp_conversation(net, dns, pkts[-1].ts_ns + 50_000_000)


def with_sub_us(pkts: list[Pkt]) -> list[Pkt]:
    """Give each timestamp nanosecond digits (so nanosecond formats are tested as such)."""
    return [Pkt(p.ts_ns + (137 * (i + 1)) % 1000, p.l3, p.src, p.dst, p.family) for i, p in enumerate(pkts)]


def build_exchange(net: Net, out: Output) -> None:
    convs = exchange_conversations(net)
    pkts: list[Pkt] = []
    for k, conv in enumerate(convs):
        pkts += build(net, conv, T0_NS + k * 2_000_000_000 + net.us(0, 400_000))
    pkts.sort(key=lambda p: p.ts_ns)
    data = pcap_file(records(pkts, eth), LINKTYPE_ETHERNET)
    out.add(
        "exchange_services.pcap",
        data,
        f"{len(convs)} flows, {len(pkts)} packets, Ethernet, microsecond pcap (little-endian). One conversation "
        "per row of the Exchange 2003 ports table (full handshake, payload both ways, FIN teardown; UDP "
        "flows as datagrams); ground truth per flow in exchange_services.expected.csv.",
    )
    out.add(
        "exchange_services.pcap.gz",
        gzip_bytes(data),
        "exchange_services.pcap compressed with gzip (level 9, mtime 0, no name): same packets.",
    )
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["client_addr", "client_port", "server_addr", "server_port", "transport", "expected_service", "expected_direction", "note"])
    for c in convs:
        w.writerow([c.client, c.cport, c.server, c.sport, c.transport, c.service, c.direction, c.note])
    out.add(
        "exchange_services.expected.csv",
        buf.getvalue().encode(),
        "Ground truth for exchange_services.pcap (do not edit; regenerate): one row per flow, the service id the "
        "port table gives and the direction relative to the Exchange servers 10.0.0.10 and 10.0.0.20.",
    )


def build_idle_split(net: Net, out: Output) -> None:
    """Reused 5-tuples with long silences: the idle timeout must split them, the sums must not change."""
    t = T0_NS + 3_600_000_000_000
    q = bytes(DNS(id=0x3C4D, rd=1, qd=DNSQR(qname="exch01.corp.example")))
    a = bytes(DNS(id=0x3C4D, qr=1, rd=1, ra=1, qd=DNSQR(qname="exch01.corp.example"),
                  an=DNSRR(rrname="exch01.corp.example", type="A", ttl=60, rdata=BACKEND)))
    dns = Conversation("10.0.1.30", 1130, DNS_SERVER, 53, "udp", [Msg("c", q), Msg("s", a), Msg("c", q, think_us=300_000_000), Msg("s", a)])
    pop = Conversation("10.0.1.30", 1131, BACKEND, 110, "tcp", pop3_session("exch01.corp.example"))
    pop.msgs[5].think_us = 200_000_000  # 200 s of silence before STAT: longer than the 120 s default idle timeout
    pkts = udp_conversation(net, dns, t) + tcp_conversation(net, pop, t + 1_000_000_000)
    pkts.sort(key=lambda p: p.ts_ns)
    out.add(
        "idle_split.pcap",
        pcap_file(records(pkts, eth), LINKTYPE_ETHERNET),
        "A DNS 5-tuple used twice 300 s apart and a POP3 connection silent for 200 s before STAT: "
        "with the default 120 s idle timeout each splits into two flows whose sums equal tshark's one conversation.",
    )


def build_linktypes(net: Net, out: Output) -> None:
    t = T0_NS + 7_200_000_000_000
    v4 = small_conversation(net, t)
    v6 = small_conversation(net, t, family=6)
    host4 = BACKEND
    common = "the small POP3-over-TCP conversation (10.0.1.15:1120 <-> 10.0.0.10:110) plus a DNS query/answer over UDP"
    common6 = "the same POP3 and DNS exchange over IPv6 (fd00:0:0:1::15 <-> fd00:0:0:10::10 / ::53)"
    out.add("linktype_vlan.pcap", pcap_file(records(v4, lambda p: eth(p, vlan=100)), LINKTYPE_ETHERNET),
            f"Ethernet with an 802.1Q tag (VLAN 100, PCP 3) on every frame: {common}.")
    out.add("linktype_qinq.pcap", pcap_file(records(v4, lambda p: eth(p, vlan=100, outer_vlan=200)), LINKTYPE_ETHERNET),
            f"QinQ: 802.1ad S-tag 0x88a8 (VLAN 200) outside an 802.1Q C-tag (VLAN 100): {common}.")
    out.add("linktype_sll.pcap", pcap_file(records(v4, lambda p: sll(p, host4)), LINKTYPE_LINUX_SLL),
            f"Linux cooked capture v1 (LINKTYPE_LINUX_SLL 113, 16-byte header) as captured on 10.0.0.10: {common}.")
    out.add("linktype_sll2.pcap", pcap_file(records(v4, lambda p: sll2(p, host4)), LINKTYPE_LINUX_SLL2),
            f"Linux cooked capture v2 (LINKTYPE_LINUX_SLL2 276, 20-byte header): {common}.")
    out.add("linktype_raw_ipv4.pcap", pcap_file(records(v4, raw), LINKTYPE_RAW),
            f"LINKTYPE_RAW (101), IPv4 packets with no link header: {common}.")
    out.add("linktype_raw_ipv6.pcap", pcap_file(records(v6, raw), LINKTYPE_RAW),
            f"LINKTYPE_RAW (101) carrying IPv6 packets: {common6}.")
    out.add("linktype_null_ipv4.pcap", pcap_file(records(v4, null), LINKTYPE_NULL),
            f"BSD loopback (LINKTYPE_NULL 0): 4-byte family 2 (AF_INET) in little-endian host order: {common}.")
    out.add("linktype_null_ipv6.pcap", pcap_file(records(v6, null), LINKTYPE_NULL),
            f"BSD loopback (LINKTYPE_NULL 0) with family 30 (Darwin AF_INET6), little-endian: {common6}.")
    opts4 = tcp_conversation(
        net, Conversation("10.0.1.15", 1122, BACKEND, 110, "tcp", pop3_session("exch01.corp.example")), t + 60_000_000_000,
        ip_options=[IPOption_RR(routers=["10.0.0.1", "10.0.1.1"]), IPOption_Router_Alert()],
    )
    out.add("ipv4_options.pcap", pcap_file(records(opts4, eth), LINKTYPE_ETHERNET),
            "Ethernet/IPv4 where every packet carries IP options (Record Route with 2 slots filled + Router Alert: "
            "IHL 9, 36-byte IP header) around the POP3 conversation 10.0.1.15:1122 <-> 10.0.0.10:110.")
    ext6 = tcp_conversation(
        net, Conversation(CLIENT6, 1123, BACKEND6, 110, "tcp", pop3_session("exch01.corp.example")), t + 70_000_000_000,
        ext_headers=True,
    )
    out.add("ipv6_ext_headers.pcap", pcap_file(records(ext6, eth), LINKTYPE_ETHERNET),
            "Ethernet/IPv6 where every packet has a Hop-by-Hop header (Router Alert) and a Destination Options "
            "header before TCP: POP3 fd00:0:0:1::15:1123 <-> fd00:0:0:10::10:110.")
    # A 3000-byte UDP datagram in three IPv4 fragments (1480 + 1480 + 48 bytes of IP payload).
    q = Conversation("10.0.1.15", 1124, DNS_SERVER, 53, "udp", [Msg("c", bytes(DNS(id=0x4D5E, rd=1, qd=DNSQR(qname="big.corp.example", qtype="TXT"))))])
    qp = udp_conversation(net, q, t + 80_000_000_000)
    big = IP(src=DNS_SERVER, dst="10.0.1.15", id=0x5EED, ttl=128) / UDP(sport=53, dport=1124) / Raw(net.rng.randbytes(2992))
    frags = fragment(big, fragsize=1480)
    assert len(frags) == 3
    fp = [Pkt(qp[0].ts_ns + 700_000 + 40_000 * k, bytes(f), DNS_SERVER, "10.0.1.15", 4) for k, f in enumerate(frags)]
    out.add("ipv4_fragments.pcap", pcap_file(records(qp + fp, eth), LINKTYPE_ETHERNET),
            "Ethernet/IPv4: a UDP query 10.0.1.15:1124 -> 10.0.0.53:53, then a 3000-byte UDP answer split into three "
            "fragments (IP id 0x5eed; offsets 0, 1480, 2960). Only the first fragment carries the UDP ports.")
    snap = small_conversation(net, t + 90_000_000_000)
    out.add("snaplen64.pcap", pcap_file(records(snap, eth, snaplen=64), LINKTYPE_ETHERNET, snaplen=64),
            f"Captured with snaplen 64: every record longer than 64 bytes is cut (caplen 64 < wire length), headers intact: {common}.")

    # classic pcap byte-order / precision variants of the same packets
    ns4 = with_sub_us(v4)
    out.add("pcap_be_usec.pcap", pcap_file(records(v4, eth), LINKTYPE_ETHERNET, big_endian=True),
            f"Classic pcap written big-endian (magic a1b2c3d4 as bytes a1 b2 c3 d4), microseconds, Ethernet: {common}.")
    out.add("pcap_le_nsec.pcap", pcap_file(records(ns4, eth), LINKTYPE_ETHERNET, nsec=True),
            f"Nanosecond pcap (magic a1b23c4d), little-endian; timestamps have non-zero nanosecond digits: {common}.")
    out.add("pcap_be_nsec.pcap", pcap_file(records(ns4, eth), LINKTYPE_ETHERNET, nsec=True, big_endian=True),
            f"Nanosecond pcap, big-endian: {common}.")


def build_pcapng(net: Net, out: Output) -> None:
    t = T0_NS + 10_800_000_000_000
    eth_pkts = small_conversation(net, t)  # POP3 + DNS on interface 0 (Ethernet, microseconds)
    raw_conv = Conversation(
        "10.0.1.16", 1140, BACKEND, 143, "tcp", imap_session("exch01.corp.example")
    )
    raw_pkts = with_sub_us(tcp_conversation(net, raw_conv, t + 5_000_000))  # interface 1 (raw IP, ns)
    sll_conv = Conversation("10.0.1.17", 1141, DNS_SERVER, 53, "udp", [
        Msg("c", bytes(DNS(id=0x6F70, rd=1, qd=DNSQR(qname="mail.corp.example")))),
        Msg("s", bytes(DNS(id=0x6F70, qr=1, rd=1, ra=1, qd=DNSQR(qname="mail.corp.example"),
                           an=DNSRR(rrname="mail.corp.example", type="A", ttl=60, rdata=FRONTEND)))),
    ])
    sll_pkts = udp_conversation(net, sll_conv, t + 9_000_000)  # interface 2 (Linux SLL, microseconds)
    spb_index = 3  # the 4th eth0 packet (the POP3 banner) goes out as a Simple Packet Block

    def write(big_endian: bool) -> bytes:
        w = Pcapng(big_endian)
        blocks = [
            w.shb([(SHB_USERAPPL, b"pcapclass scripts/make_fixtures.py"), (OPT_COMMENT, b"multi-interface fixture")]),
            w.idb(LINKTYPE_ETHERNET, 65535, [(IF_NAME, b"eth0")]),  # no if_tsresol: microseconds
            w.idb(LINKTYPE_RAW, 65535, [(IF_NAME, b"tun0"), (IF_DESCRIPTION, b"raw IP tunnel"), (IF_TSRESOL, w.u8(9))]),
            w.idb(LINKTYPE_LINUX_SLL, 65535, [(IF_NAME, b"any"), (IF_TSRESOL, w.u8(6))]),
        ]
        events = []
        for i, r in enumerate(records(eth_pkts, eth)):
            events.append((r.ts_ns, 0, i, r))
        for i, r in enumerate(records(raw_pkts, raw)):
            events.append((r.ts_ns, 1, i, r))
        for i, r in enumerate(records(sll_pkts, lambda p: sll(p, DNS_SERVER))):
            events.append((r.ts_ns, 2, i, r))
        events.sort(key=lambda e: (e[0], e[1]))
        for n, (ts, iface, i, r) in enumerate(events):
            if iface == 0 and i == spb_index:
                blocks.append(w.spb(r))
                continue
            ticks = ts if iface == 1 else ts // 1000
            opts = []
            if iface == 0 and i == 0:
                opts = [(OPT_COMMENT, b"first packet"), (EPB_FLAGS, w.u32(0x00000001))]  # inbound
            blocks.append(w.epb(iface, ticks, r, opts))
            if n == 5:
                blocks.append(w.nrb([(BACKEND, "exch01.corp.example"), (FRONTEND, "mail.corp.example")]))
            if n == 9:
                blocks.append(w.custom(b"pcapclass custom block: readers skip me"))
            if n == 13:
                blocks.append(w.unknown(b"\x01\x02\x03\x04 an unassigned block type"))
        last = events[-1][0]
        blocks.append(w.isb(0, last // 1000, received=len(eth_pkts), dropped=0))
        return b"".join(blocks)

    desc = (
        "pcapng, one section, three interfaces: IDB0 Ethernet (default microsecond resolution), IDB1 raw IP "
        "(LINKTYPE_RAW, if_tsresol=9: nanoseconds), IDB2 Linux SLL. EPBs from all three interleaved in time "
        "(POP3+DNS on eth0, IMAP on tun0 with nanosecond digits, DNS on SLL); the 4th eth0 packet is a Simple "
        "Packet Block (no timestamp); an EPB with opt_comment and epb_flags; a Name Resolution Block, a Custom "
        "Block (0x00000BAD, PEN 32473), a block of unassigned type 0x00001234 and a closing Interface Statistics "
        "Block, all of which readers must skip."
    )
    out.add("pcapng_multi_if.pcapng", write(False), desc + " Little-endian.")
    out.add("pcapng_multi_if_be.pcapng", write(True), desc + " Big-endian (same blocks).")
    out.add("pcapng_multi_if.pcapng.gz", gzip_bytes(write(False)), "pcapng_multi_if.pcapng compressed with gzip (mtime 0).")

    # Two sections: interface numbering restarts in the second one, whose byte order differs.
    first = records(small_conversation(net, t + 60_000_000_000), eth)
    second = records(
        tcp_conversation(net, Conversation("10.0.1.18", 1142, FRONTEND, 110, "tcp", pop3_session("mail.corp.example")), t + 70_000_000_000),
        raw,
    )
    le, be = Pcapng(False), Pcapng(True)
    data = le.shb() + le.idb(LINKTYPE_ETHERNET, 65535) + b"".join(le.epb(0, r.ts_ns // 1000, r) for r in first)
    data += be.shb() + be.idb(LINKTYPE_RAW, 65535, [(IF_TSRESOL, be.u8(9))]) + b"".join(be.epb(0, r.ts_ns, r) for r in second)
    out.add(
        "pcapng_two_sections.pcapng",
        data,
        "pcapng with two sections: section 1 little-endian, IDB0 Ethernet, POP3+DNS; section 2 big-endian, "
        "IDB0 (numbering restarts) raw IP with nanosecond resolution, a POP3 conversation 10.0.1.18 -> 10.0.0.20.",
    )

    # Non-decimal and coarse timestamp resolutions: 2^-20 s and 10^-3 s.
    res_pkts = small_conversation(net, t + 80_000_000_000)
    w = Pcapng(False)
    data = w.shb() + w.idb(LINKTYPE_ETHERNET, 65535, [(IF_TSRESOL, w.u8(0x80 | 20))]) + w.idb(LINKTYPE_ETHERNET, 65535, [(IF_TSRESOL, w.u8(3))])
    for i, r in enumerate(records(res_pkts, eth)):
        if i % 2 == 0:
            data += w.epb(0, (r.ts_ns << 20) // 1_000_000_000, r)
        else:
            data += w.epb(1, r.ts_ns // 1_000_000, r)
    out.add(
        "pcapng_tsresol.pcapng",
        data,
        "pcapng with two Ethernet interfaces whose if_tsresol are 0x94 (2^-20 s, binary) and 3 (milliseconds); "
        "packets alternate between them (the POP3+DNS conversation).",
    )


def build_bad(net: Net, out: Output) -> None:
    """Malformed inputs; each EXPECTED.csv offset is computed from the pieces the file is built from."""
    rows: list[tuple[str, int, int, str]] = []
    good = records(small_conversation(net, T0_NS + 14_400_000_000_000), eth)
    hdr = pcap_header(LINKTYPE_ETHERNET)
    recs = [pcap_record(r) for r in good]

    def bad(name: str, data: bytes, offset: int, before: int, fault: str) -> None:
        out.add(f"bad/{name}", data, fault)
        rows.append((name, offset, before, fault))

    bad("not_a_capture.txt", b"This is a text file, not a packet capture.\nLine two.\n", 0, 0,
        "Plain text: no pcap/pcapng magic at byte 0.")
    bad("empty.pcap", b"", 0, 0, "Zero bytes.")
    bad("truncated_global_header.pcap", hdr[:10], 0, 0,
        "Only the first 10 of the 24 bytes of a pcap file header: the header at 0 is incomplete.")
    # 5 good records, then the 6th cut 20 bytes into its data
    cut = len(hdr) + sum(map(len, recs[:5]))
    bad("truncated_last_record.pcap", hdr + b"".join(recs[:5]) + recs[5][: 16 + 20], cut, 5,
        "Five good records, then a record whose header is complete but whose data stops after 20 bytes: fault at that record's start.")
    bad("truncated_record_header.pcap", hdr + b"".join(recs[:4]) + recs[4][:9], len(hdr) + sum(map(len, recs[:4])), 4,
        "Four good records, then only 9 bytes of the next 16-byte record header.")
    # snaplen 96; three records within it, then one claiming (and holding) 1500 bytes, then a good one
    h96 = pcap_header(LINKTYPE_ETHERNET, snaplen=96)
    small = [pcap_record(Rec(r.ts_ns, r.data[:96], r.wirelen)) for r in good[:3]]
    big = Rec(good[3].ts_ns + 1000, good[8].data + bytes(1500 - len(good[8].data)), 1500)
    after = pcap_record(Rec(good[4].ts_ns + 2000, good[4].data[:96], good[4].wirelen))
    # libpcap and tshark read such a record whole; so does pcapclass (it counts it): not a fault
    out.add("caplen_over_snaplen.pcap", h96 + b"".join(small) + pcap_record(big) + after,
            "File header snaplen 96; three records within it; the 4th record's caplen is 1500 (> snaplen; its 1500 bytes "
            "are present); one more good record follows. Read whole, as libpcap/tshark do (zeek's smb2_krb.pcap is a real "
            "capture like it); capture.csv counts it in caplen_over_snaplen.")
    h256 = pcap_header(LINKTYPE_ETHERNET, snaplen=262144)
    two = [pcap_record(r) for r in good[:2]]
    huge = struct.pack("<IIII", good[2].ts_ns // 1_000_000_000, 0, 300_000, 300_000) + good[2].data
    bad("caplen_over_256k.pcap", h256 + b"".join(two) + huge, len(h256) + sum(map(len, two)), 2,
        "Two good records, then a record header claiming caplen 300000 (> 262144, libpcap's maximum) followed by only a few bytes.")
    bad("unknown_linktype.pcap", pcap_header(LINKTYPE_USER0) + b"".join(recs[:3]), 20, 0,
        "pcap file header with link type 147 (LINKTYPE_USER0, nothing standard to decode); the fault is the network field at byte 20.")
    w = Pcapng(False)
    head = w.shb() + w.idb(LINKTYPE_ETHERNET, 65535) + w.epb(0, good[0].ts_ns // 1000, good[0]) + w.epb(0, good[1].ts_ns // 1000, good[1])
    bad("pcapng_block_len_short.pcapng", head + struct.pack("<II", 0x00000006, 8) + b"\x00" * 24, len(head), 2,
        "pcapng: SHB, IDB, two good EPBs, then a block whose total length field says 8 (< 12): fault at that block's start.")
    bad("pcapng_block_len_unaligned.pcapng", head + struct.pack("<II", 0x00000006, 30) + b"\x00" * 24, len(head), 2,
        "pcapng: SHB, IDB, two good EPBs, then a block whose total length is 30 (not a multiple of 4): fault at that block's start.")
    third = w.epb(0, good[2].ts_ns // 1000, good[2])
    bad("pcapng_truncated_block.pcapng", head + third[: len(third) // 2], len(head), 2,
        "pcapng: SHB, IDB, two good EPBs, then an EPB cut in half by the end of the file.")

    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(["file", "expected_error_offset", "expected_packets_before", "fault"])
    wr.writerows(rows)
    out.add("bad/EXPECTED.csv", buf.getvalue().encode(),
            "Per malformed file (do not edit; regenerate): the byte offset of the fault and the number of good packets before it.")


def build_icmp_tunnel(net: Net, out: Output) -> None:
    """Packets that carry a TCP/UDP header that is not theirs: ICMP errors quoting one, IP-in-IP."""
    t = T0_NS + 18_000_000_000_000
    pkts: list[Pkt] = []

    def add(dt_us: int, l3, src: str, dst: str, fam: int = 4) -> None:
        ts = (pkts[-1].ts_ns if pkts else t) + dt_us * 1000
        pkts.append(Pkt(ts, bytes(l3), src, dst, fam))

    probe = IP(src="10.0.1.21", dst=BACKEND, id=0x1111, ttl=128) / UDP(sport=1150, dport=161) / Raw(b"\x30\x26\x02\x01\x00" + bytes(35))
    add(0, probe, "10.0.1.21", BACKEND)
    add(300, IP(src=BACKEND, dst="10.0.1.21", id=0x2222, ttl=128) / ICMP(type=3, code=3) / bytes(probe)[:28], BACKEND, "10.0.1.21")
    add(1000, IP(src="10.0.1.21", dst=BACKEND, id=0x1112) / ICMP(type=8, id=1, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"), "10.0.1.21", BACKEND)
    add(250, IP(src=BACKEND, dst="10.0.1.21", id=0x2223) / ICMP(type=0, id=1, seq=1) / Raw(b"abcdefghijklmnopqrstuvwabcdefghi"), BACKEND, "10.0.1.21")
    probe6 = IPv6(src=CLIENT6, dst=BACKEND6, hlim=128) / UDP(sport=1152, dport=161) / Raw(bytes(20))
    add(1000, probe6, CLIENT6, BACKEND6, 6)
    add(300, IPv6(src=BACKEND6, dst=CLIENT6, hlim=64) / ICMPv6DestUnreach(code=4) / bytes(probe6), BACKEND6, CLIENT6, 6)
    inner = IP(src="10.0.1.22", dst=BACKEND, id=0x3333) / TCP(sport=1151, dport=25, seq=1000, flags="S", window=64240, options=SYN_OPTIONS)
    add(1000, IP(src="192.0.2.1", dst="192.0.2.2", id=0x4444, proto=4) / inner, "192.0.2.1", "192.0.2.2")
    add(500, IP(src="192.0.2.2", dst="192.0.2.1", id=0x4445, proto=4) / (IP(src=BACKEND, dst="10.0.1.22", id=0x5555) / TCP(sport=25, dport=1151, seq=5000, ack=1001, flags="SA", window=65535, options=SYN_OPTIONS)), "192.0.2.2", "192.0.2.1")
    out.add(
        "icmp_and_tunnel.pcap",
        pcap_file(records(pkts, eth), LINKTYPE_ETHERNET),
        "Ethernet: a UDP probe 10.0.1.21:1150 -> 10.0.0.10:161 answered by ICMP port unreachable quoting its "
        "IP+UDP header; an ICMP echo request/reply; the same over IPv6 (ICMPv6 unreachable quoting UDP); a TCP SYN "
        "and SYN-ACK (10.0.1.22:1151 <-> 10.0.0.10:25) carried inside IP-in-IP (protocol 4) between 192.0.2.1 and "
        "192.0.2.2. Only the UDP probes are TCP/UDP flows at the outermost layer; the rest is transport other.",
    )


# ==========================================================================================
# corpus copies
# ==========================================================================================

#: (source path under the corpus, repository, name in corpus/<dir>/, what it exercises)
CORPUS: list[tuple[str, str, str, str]] = [
    ("zeek/testing/btest/Traces/dce-rpc/mapi.pcap", "zeek", "mapi.pcap",
     "Real Outlook <-> Exchange capture (2003): EPM on 135, NSPI and EMSMDB binds, SMB, HTTP, DNS, a UDP new-mail notification candidate."),
    ("zeek/testing/btest/Traces/pop3/pop3.pcap", "zeek", "pop3.pcap", "Real POP3 sessions on TCP 110."),
    ("zeek/testing/btest/Traces/tls/pop3-starttls.pcap", "zeek", "pop3-starttls.pcap", "POP3 with STARTTLS, BSD null/loopback link type (DLT 0)."),
    ("zeek/testing/btest/Traces/linux_dlt_sll2.pcap", "zeek", "linux_dlt_sll2.pcap", "Linux cooked v2 (LINKTYPE_LINUX_SLL2 276)."),
    ("zeek/testing/btest/Traces/ldap/ldap_search_umlaut.pcap", "zeek", "ldap_search_umlaut.pcap", "LINKTYPE_IPV4 (228) raw IPv4, LDAP."),
    ("zeek/testing/btest/Traces/ldap/modify-request.pcapng", "zeek", "modify-request.pcapng",
     "pcapng with 126 interface blocks of several link types (Ethernet, Linux SLL, 802.3br), VLAN + IPv6 LDAP on 389."),
    ("zeek/testing/btest/Traces/pcapng-multi-interface.pcapng", "zeek", "pcapng-multi-interface.pcapng", "pcapng with 2 Ethernet interfaces, DNS over UDP."),
    ("zeek/testing/btest/Traces/smtp/mime-header-size-limit.pcap.gz", "zeek", "mime-header-size-limit.pcap.gz", "gzip-compressed pcap, SMTP."),
    ("zeek/testing/btest/Traces/smb/dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap", "zeek",
     "dssetup_DsRoleGetPrimaryDomainInformation_standalone_workstation.cap", "Big-endian classic pcap: SMB/DCE-RPC."),
    ("nDPI/tests/cfgs/default/pcap/nntp.pcap", "nDPI", "nntp.pcap", "NNTP on TCP 119."),
    ("nDPI/tests/cfgs/default/pcap/synscan.pcap", "nDPI", "synscan.pcap", "A SYN scan over many ports (many one-packet flows, RSTs)."),
    ("nDPI/tests/cfgs/default/pcap/imap.pcap", "nDPI", "imap.pcap", "IMAP on TCP 143."),
    ("suricata-verify/tests/smtp-file-data-01/input.pcap", "suricata-verify", "smtp-file-data-01.pcap", "SMTP with an attachment (renamed from input.pcap)."),
    ("suricata-verify/tests/output-eve-smb-01/input.pcap", "suricata-verify", "output-eve-smb-01.pcap", "Linux cooked v1 (LINKTYPE_LINUX_SLL 113), SMB (renamed from input.pcap)."),
    ("suricata-verify/tests/decode-sll2-01/input.pcap", "suricata-verify", "decode-sll2-01.pcap", "Linux cooked v2 (renamed from input.pcap)."),
    ("suricata-verify/tests/dcerpc/dcerpc-dce-stub-data-02/input.pcap", "suricata-verify", "dcerpc-dce-stub-data-02.pcap",
     "LINKTYPE_IPV4 (228) raw IPv4, DCE/RPC over TCP (renamed from input.pcap)."),
    ("tcpdump/tests/LINKTYPE_RAW_ipv4.pcap", "tcpdump", "LINKTYPE_RAW_ipv4.pcap", "LINKTYPE_RAW (101) with IPv4, one packet."),
    ("tcpdump/tests/LINKTYPE_RAW_ipv6.pcap", "tcpdump", "LINKTYPE_RAW_ipv6.pcap", "LINKTYPE_RAW (101) with IPv6, one packet."),
    ("tcpdump/tests/LINKTYPE_IPV4.pcap", "tcpdump", "LINKTYPE_IPV4.pcap", "LINKTYPE_IPV4 (228), one packet."),
    ("tcpdump/tests/LINKTYPE_IPV6.pcap", "tcpdump", "LINKTYPE_IPV6.pcap", "LINKTYPE_IPV6 (229), one packet."),
    ("tcpdump/tests/tcp-handshake-nano.pcap", "tcpdump", "tcp-handshake-nano.pcap", "Nanosecond pcap (a1b23c4d), Linux SLL, TCP handshake."),
    ("nfstream/tests/pcaps/dhcp_big_endian.pcapng", "nfstream", "dhcp_big_endian.pcapng", "Big-endian pcapng, DHCP over UDP. Its writer put seconds in the EPB high word, so the times read as the year 151991 (about 4.7e21 ns: beyond int64 nanoseconds)."),
]
#: repository (as on GitHub) and the commit the corpus snapshot was taken at (corpus MANIFEST.tsv)
CORPUS_REPOS = {
    "zeek": "zeek/zeek@a13de64fbbdb01f90961c04719b308fbbb6d199e",
    "nDPI": "ntop/nDPI@3b1286ab03b0c9223ac208a01868d8c1f6c0ae00",
    "suricata-verify": "OISF/suricata-verify@10a45e4bad6d29d0f1239d93119ea24e1bbdab19",
    "tcpdump": "the-tcpdump-group/tcpdump@39b50f76672bca4af7d7eb52604c5b692c6b6b2c",
    "nfstream": "nfstream/nfstream@3ee463887326f6b7884555934bb0587372b00d6c",
}
#: license file of each repository in the corpus, copied beside its captures
CORPUS_LICENSES = {
    "zeek": ("zeek/LICENSE.COPYING", "BSD-3-Clause"),
    "nDPI": ("nDPI/LICENSE.COPYING", "LGPL-3.0"),
    "suricata-verify": ("suricata-verify/LICENSE.LICENSE.txt", "MIT"),
    "tcpdump": ("tcpdump/LICENSE.LICENSE", "BSD-3-Clause"),
    "nfstream": ("nfstream/LICENSE.LICENSE", "LGPL-3.0"),
}


def copy_corpus(src: Path, dest: Path) -> None:
    for rel, repo, name, _ in CORPUS:
        (dest / repo).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / repo / name)
    for repo, (rel, _) in CORPUS_LICENSES.items():
        shutil.copyfile(src / rel, dest / repo / Path(rel).name)


def sources_md(out: Output, corpus_dir: Path) -> bytes:
    lines = [
        "# Test captures: where every file comes from",
        "",
        "Generated by `python scripts/make_fixtures.py` -- do not edit; change the script and rerun it",
        "(`--copy-corpus CORPUS_DIR` also refreshes `corpus/`). The synthetic files are",
        "deterministic: rerunning the script rewrites them byte for byte (checked by",
        "`tests/test_fixtures_vs_tshark.py::test_fixtures_are_reproducible`).",
        "",
        "Network of the synthetic captures: Exchange back-end 10.0.0.10, front-end (and RPC proxy) 10.0.0.20,",
        "DC/GC 10.0.0.5, DNS server 10.0.0.53, clients 10.0.1.x; IPv6 twins fd00:0:0:10::10, fd00:0:0:1::15.",
        "Times start at 2006-05-02 09:00:00 UTC.",
        "",
        "## Synthetic (scapy-encoded packets, files written by the script's struct writers)",
        "",
        "| file | contents |",
        "| --- | --- |",
    ]
    for name in sorted(out.files):
        lines.append(f"| `{name}` | {out.notes[name]} |")
    lines += [
        "",
        "`bad/EXPECTED.csv` offset convention: the byte offset of the start of the record or block that cannot be",
        "read (or of the incomplete file header), except for a bad value inside the pcap file header, where it is",
        "that field's offset (the link type at byte 20).",
        "",
        "## Real captures (`corpus/<repository>/`, copied byte for byte from the public test corpora of each repository)",
        "",
        "| file | source (repository@commit path) | license | sha256 | what it exercises |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rel, repo, name, what in CORPUS:
        path = corpus_dir / repo / name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else "(missing)"
        origin = f"{CORPUS_REPOS[repo]} `{rel.split('/', 1)[1]}`"
        lines.append(f"| `corpus/{repo}/{name}` | {origin} | {CORPUS_LICENSES[repo][1]} (`corpus/{repo}/{Path(CORPUS_LICENSES[repo][0]).name}`) | `{digest}` | {what} |")
    lines.append("")
    return "\n".join(lines).encode()


def generate() -> Output:
    net = Net(SEED)
    out = Output()
    build_exchange(net, out)
    build_idle_split(net, out)
    build_linktypes(net, out)
    build_pcapng(net, out)
    build_bad(net, out)
    build_icmp_tunnel(net, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: tests/fixtures/pcaps)")
    ap.add_argument("--copy-corpus", type=Path, metavar="CORPUS", help="copy the selected real captures from this corpus into OUT/corpus")
    args = ap.parse_args(argv)
    out = generate()
    for name, data in out.files.items():
        path = args.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    corpus_dir = args.out / "corpus"
    if args.copy_corpus:
        copy_corpus(args.copy_corpus, corpus_dir)
    if not corpus_dir.exists():
        corpus_dir = DEFAULT_OUT / "corpus"
    (args.out / "SOURCES.md").write_bytes(sources_md(out, corpus_dir))
    print(f"wrote {len(out.files)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
