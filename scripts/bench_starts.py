"""Protocol starts for the benchmark capture: the first payload of each side of an Exchange 2003
conversation, with the fields that differ per connection in real traffic.

Each start is built from a ``Conn`` (the connection it opens: its number, time, hosts and a
per-connection random key), so that two connections share a first payload only where real
ones would (``ncacn_http/1.0`` is the same everywhere). ``Conn.canned()`` gives every
connection the same fields: the few distinct payloads of the capture this script used to
write, which show what the evidence stage's verdict cache saves.

Wire formats: DCE/RPC C706 12.6 (bind, bind_ack), MS-RPCH 2.1.2.2.1 (ncacn_http), RFC 9112
(HTTP), RFC 5246 7.4.1 (TLS hellos), RFC 5321 / 1939 / 3501 / 3977 (SMTP, POP3, IMAP, NNTP
greetings and first commands), RFC 1006 + X.224 (TPKT/COTP CR and CC), RFC 4511 (LDAP search
and entry), MS-SMB2 2.2.3/2.2.4 (NEGOTIATE), RFC 4120 (Kerberos AS-REQ/KRB-ERROR over TCP),
RFC 1035 (DNS), RFC 5905 (NTP); the Direct Push NOTIFY and new-mail datagram as in
docs/exchange-wire-facts.md §6.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

NDR = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860").bytes_le + struct.pack("<I", 2)
EPM = ("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0)
EMSMDB = ("a4f1db00-ca47-1067-b31f-00dd010662da", 0, 81)
NSPI = ("f5cc5a18-4264-101a-8c59-08002b2f8426", 56, 0)
RFR = ("1544f5e0-613c-11d1-93df-00c04fd7bd09", 1, 0)


@dataclass(frozen=True)
class Conn:
    """What a connection's starts are made of."""

    number: int
    key: bytes  # per-connection randomness
    ts_us: int  # time of the start's packet
    client: str  # host names
    server: str
    server_port: int

    @staticmethod
    def canned(server_port: int) -> Conn:
        return Conn(0, bytes(16), 1_143_021_600_000_000, "client.example.com", "exch01.example.com", server_port)

    def rand(self, tag: str, n: int) -> bytes:
        """``n`` (at most 64) bytes that differ per connection and per ``tag``."""
        return hashlib.blake2b(tag.encode(), key=self.key, digest_size=n).digest()

    def u32(self, tag: str) -> int:
        return int.from_bytes(self.rand(tag, 4), "little") or 1

    @property
    def user(self) -> str:
        return f"user{self.u32('user') % 5000:04d}"

    def date(self) -> str:
        return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(self.ts_us // 1_000_000))


# -- DCE/RPC -------------------------------------------------------------------------------------

def _pdu(ptype: int, call_id: int, body: bytes) -> bytes:
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, 0x03, b"\x10\x00\x00\x00", 16 + len(body), 0, call_id) + body


def bind(iface: tuple[str, int, int]) -> Callable[[Conn], bytes]:
    def build(c: Conn) -> bytes:
        body = struct.pack("<HHIB3x", 5840, 5840, c.u32("assoc") if c.number % 3 else 0, 1)
        body += struct.pack("<HBx", 0, 1) + uuid.UUID(iface[0]).bytes_le + struct.pack("<HH", iface[1], iface[2]) + NDR
        return _pdu(11, c.u32("call") % 1000 + 1, body)
    return build


def bind_ack(c: Conn) -> bytes:
    port = f"{c.server_port}".encode() + b"\x00"
    body = struct.pack("<HHIH", 5840, 5840, c.u32("assoc") | 0x10000, len(port)) + port
    body += bytes(-(len(body)) % 4) + struct.pack("<B3xHH", 1, 0, 0) + NDR
    return _pdu(12, c.u32("call") % 1000 + 1, body)


# -- HTTP ----------------------------------------------------------------------------------------

def _cookie(c: Conn) -> str:
    return f"sessionid={uuid.UUID(bytes=c.rand('session', 16))}; cadata={base64.b64encode(c.rand('cadata', 48)).decode()}"


def _request(line: str, c: Conn, *headers: str) -> bytes:
    head = [line, f"Host: {c.server}", *headers, f"Cookie: {_cookie(c)}", "Connection: Keep-Alive"]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def http_owa(c: Conn) -> bytes:
    folder = ("Inbox", "Calendar", "Contacts", "Sent%20Items")[c.u32("folder") % 4]
    return _request(f"GET /exchange/{c.user}/{folder}/?Cmd=contents&Page={c.u32('page') % 40} HTTP/1.1", c,
                    "Accept: */*", "User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1)")


def http_exchweb(c: Conn) -> bytes:
    return _request(f"POST /exchweb/bin/auth/owaauth.dll?r={c.u32('r')} HTTP/1.1", c, "Content-Length: 0")


def http_eas(c: Conn) -> bytes:
    device = c.rand("device", 16).hex().upper()
    return _request(f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User={c.user}&DeviceId={device}&DeviceType=PocketPC HTTP/1.1",
                    c, "Content-Type: application/vnd.ms-sync.wbxml", "MS-ASProtocolVersion: 2.5")


def rpc_proxy(method: str, port: int) -> Callable[[Conn], bytes]:
    def build(c: Conn) -> bytes:
        auth = base64.b64encode(c.rand("auth", 40)).decode()
        return _request(f"{method} /rpc/rpcproxy.dll?{c.server}:{port} HTTP/1.1", c, "Accept: application/rpc",
                        "User-Agent: MSRPC", "Content-Length: 1073741824", f"Authorization: Basic {auth}")
    return build


def http_ok(c: Conn) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nDate: {c.date()}\r\nServer: Microsoft-IIS/6.0\r\nX-Powered-By: ASP.NET\r\n"
            f"Set-Cookie: {_cookie(c)}\r\nContent-Length: {c.u32('len') % 20000}\r\n\r\n").encode()


# -- TLS -----------------------------------------------------------------------------------------

def _hello(c: Conn, kind: int, body: bytes) -> bytes:
    hs = bytes([kind]) + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def tls_client_hello(c: Conn) -> bytes:
    resumed = c.u32("resume") % 3 == 0
    sid = c.rand("sid", 32) if resumed else b""
    random = struct.pack(">I", c.ts_us // 1_000_000) + c.rand("client-random", 28)
    suites = b"\x00\x04\x00\x05\x00\x0a\x00\x09\x00\x64\x00\x62\x00\x03\x00\x06\x00\x13\x00\x12\x00\x63"
    return _hello(c, 1, b"\x03\x01" + random + bytes([len(sid)]) + sid + len(suites).to_bytes(2, "big") + suites + b"\x01\x00")


def tls_server_hello(c: Conn) -> bytes:
    """ServerHello, then the server's certificate in a record of its own (the same segment)."""
    random = struct.pack(">I", c.ts_us // 1_000_000) + c.rand("server-random", 28)
    hello = _hello(c, 2, b"\x03\x01" + random + b"\x20" + c.rand("sid", 32) + b"\x00\x04\x00")
    cert = certificate(c.server)
    chain = (len(cert) + 3).to_bytes(3, "big") + len(cert).to_bytes(3, "big") + cert
    return hello + b"\x16\x03\x01" + (len(chain) + 4).to_bytes(2, "big") + b"\x0b" + len(chain).to_bytes(3, "big") + chain


def certificate_subject(server: str) -> str:
    """The subject of ``certificate(server)`` as RFC 4514 text (the last RDN first)."""
    return f"CN={server},OU=Messaging,O=Example Corp,C=US"


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    size = b"" if n < 0x80 else n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size) if size else n]) + size + body


def _name(*rdns: tuple[bytes, int, str]) -> bytes:
    """A DER Name of one-attribute RDNs (OID content, string tag, value), first to last."""
    return _der(0x30, b"".join(_der(0x31, _der(0x30, _der(0x06, oid) + _der(tag, value.encode()))) for oid, tag, value in rdns))


CN, OU, O, C = (bytes([0x55, 0x04, n]) for n in (3, 11, 10, 6))  # 2.5.4.x (X.520)
SHA256_RSA = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d01010b")) + b"\x05\x00")  # RFC 4055 sha256WithRSAEncryption
RSA = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")


@functools.cache
def certificate(server: str) -> bytes:
    """An X.509 v3 certificate (RFC 5280 4.1) for ``server``, issued by the corporate CA: the
    same for every connection to the server, as a server's certificate is; key and signature
    are bytes that stand for an RSA-2048 key and signature."""
    key = hashlib.shake_256(server.encode()).digest(256)
    tbs = (_der(0xA0, _der(0x02, b"\x02")) + _der(0x02, hashlib.sha1(server.encode()).digest()[:16]) + SHA256_RSA
           + _name((C, 0x13, "US"), (O, 0x0C, "Example Corp"), (CN, 0x0C, "Example Corp Issuing CA 01"))
           + _der(0x30, _der(0x17, b"060101000000Z") + _der(0x17, b"080101000000Z"))
           + _name((C, 0x13, "US"), (O, 0x0C, "Example Corp"), (OU, 0x0C, "Messaging"), (CN, 0x0C, server))
           + _der(0x30, RSA + _der(0x03, b"\x00" + _der(0x30, _der(0x02, b"\x00" + key) + _der(0x02, b"\x01\x00\x01")))))
    return _der(0x30, _der(0x30, tbs) + SHA256_RSA + _der(0x03, b"\x00" + hashlib.shake_256(b"sig" + key).digest(256)))


# -- text greetings and first commands --------------------------------------------------------------

def smtp_banner(c: Conn) -> bytes:
    return f"220 {c.server} Microsoft ESMTP MAIL Service, Version: 6.0.3790.3959 ready at  {c.date()} \r\n".encode()


def smtp_ehlo(c: Conn) -> bytes:
    return f"EHLO {c.client}\r\n".encode()


def pop3_banner(c: Conn) -> bytes:
    stamp = f"<{c.u32('pid') % 65536}.{c.ts_us // 1_000_000}@{c.server}>"
    return f"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 ({c.server}) ready. {stamp}\r\n".encode()


def pop3_user(c: Conn) -> bytes:
    return f"USER {c.user}\r\n".encode()


def imap4_banner(c: Conn) -> bytes:
    return f"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 ({c.server}) ready at {c.date()}.\r\n".encode()


def imap4_login(c: Conn) -> bytes:
    return f"a{c.u32('tag') % 1000:03d} LOGIN {c.user} {c.rand('pw', 6).hex()}\r\n".encode()


def nntp_banner(c: Conn) -> bytes:
    return f"200 {c.server} NNTP Service 6.0.3790.3959 Version: 6.0.3790.3959 Posting Allowed {c.date()}\r\n".encode()


def nntp_mode(c: Conn) -> bytes:
    return b"MODE READER\r\n"


# -- binary requests --------------------------------------------------------------------------------

def tpkt_cr(c: Conn) -> bytes:
    cotp = b"\xe0\x00\x00" + c.rand("src-ref", 2) + b"\x00\xc1\x02\x00\x01\xc2\x02\x00\x01\xc0\x01\x0a"
    return b"\x03\x00" + (4 + 1 + len(cotp)).to_bytes(2, "big") + bytes([len(cotp)]) + cotp


def tpkt_cc(c: Conn) -> bytes:
    cotp = b"\xd0" + c.rand("src-ref", 2) + c.rand("dst-ref", 2) + b"\x00\xc0\x01\x0a"
    return b"\x03\x00" + (4 + 1 + len(cotp)).to_bytes(2, "big") + bytes([len(cotp)]) + cotp


def _ber(tag: int, body: bytes) -> bytes:
    n = len(body)
    return bytes([tag]) + (bytes([n]) if n < 128 else bytes([0x82]) + n.to_bytes(2, "big")) + body


def _ldap(c: Conn, op: bytes) -> bytes:
    return _ber(0x30, _ber(0x02, (c.u32("msgid") % 0x7FFFFF + 1).to_bytes(3, "big")) + op)


def ldap_search(c: Conn) -> bytes:
    user = c.user.encode()
    base = b"DC=corp,DC=example,DC=com"
    op = _ber(0x04, base) + b"\x0a\x01\x02\x0a\x01\x00\x02\x01\x00\x02\x01\x00\x01\x01\x00"
    op += _ber(0xA3, _ber(0x04, b"sAMAccountName") + _ber(0x04, user)) + _ber(0x30, _ber(0x04, b"mail") + _ber(0x04, b"homeMDB"))
    return _ldap(c, _ber(0x63, op))


def ldap_entry(c: Conn) -> bytes:
    dn = f"CN={c.user},CN=Users,DC=corp,DC=example,DC=com".encode()
    attrs = _ber(0x30, _ber(0x04, b"mail") + _ber(0x31, _ber(0x04, f"{c.user}@example.com".encode())))
    return _ldap(c, _ber(0x64, _ber(0x04, dn) + _ber(0x30, attrs)))


def _smb2(c: Conn, body: bytes, response: bool) -> bytes:
    hdr = b"\xfeSMB" + struct.pack("<HHIHHII", 64, 0, 0, 0, 1 if response else 0, int(response), 0)
    hdr += struct.pack("<QIIQ", c.u32("mid") % 64, 0xFEFF, 0, 0) + bytes(16)
    msg = hdr + body
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


def smb_negotiate(c: Conn) -> bytes:
    body = struct.pack("<HHHHI", 36, 2, 1, 0, 0) + c.rand("client-guid", 16) + bytes(8) + struct.pack("<HH", 0x0202, 0x0210)
    return _smb2(c, body, False)


def smb_negotiate_response(c: Conn) -> bytes:
    body = struct.pack("<HHHHI", 65, 1, 0x0202, 0, 0) + c.rand("server-guid", 16)
    body += struct.pack("<IIIIQQHHI", 7, 65536, 65536, 65536, c.ts_us * 10, 0, 128, 0, 0)
    return _smb2(c, body, True)


def krb_as_req(c: Conn) -> bytes:
    req = _ber(0x30, b"\xa1\x03\x02\x01\x05\xa2\x03\x02\x01\x0a" + _ber(0xA2, _ber(0x1B, b"CORP.EXAMPLE.COM"))
               + _ber(0xA3, _ber(0x1B, c.user.encode())) + _ber(0xA7, _ber(0x02, c.rand("nonce", 4))))
    body = _ber(0x6A, req)
    return len(body).to_bytes(4, "big") + body


def krb_error(c: Conn) -> bytes:
    body = b"\x7e" + _ber(0x30, b"\xa0\x03\x02\x01\x05\xa1\x03\x02\x01\x1e" + _ber(0xA4, _ber(0x18, c.date().encode())))
    return len(body).to_bytes(4, "big") + body


# -- UDP ----------------------------------------------------------------------------------------------

def _dns_name(c: Conn) -> bytes:
    host = ("exch01", "exch02", "dc01", "gc", "_ldap._tcp", "mail", c.client.split(".")[0])[c.u32("qname") % 7]
    return b"".join(bytes([len(p)]) + p.encode() for p in f"{host}.corp.example.com".split(".")) + b"\x00"


def dns_query(c: Conn) -> bytes:
    return struct.pack(">HHHHHH", c.u32("dns-id") & 0xFFFF, 0x0100, 1, 0, 0, 0) + _dns_name(c) + b"\x00\x01\x00\x01"


def dns_answer(c: Conn) -> bytes:
    q = _dns_name(c) + b"\x00\x01\x00\x01"
    return (struct.pack(">HHHHHH", c.u32("dns-id") & 0xFFFF, 0x8180, 1, 1, 0, 0) + q + b"\xc0\x0c\x00\x01\x00\x01"
            + struct.pack(">IH", 3600, 4) + c.rand("a", 4))


def notify(c: Conn) -> bytes:
    return (f"NOTIFY httpu://{c.server}:2883/ HTTP/1.1\r\nSubscription-id: {c.u32('sub') % 100000}\r\n"
            f"Content-length: 0\r\n\r\n").encode()


def newmail(c: Conn) -> bytes:
    return c.rand("blob", 8)


def ntp(c: Conn) -> bytes:
    return b"\xe3\x00\x06\xec" + bytes(36) + struct.pack(">I", c.ts_us // 1_000_000 + 2_208_988_800) + c.rand("frac", 4)


@dataclass(frozen=True)
class Start:
    """A protocol start: who sends it, the evidence it proves (what a classifier should say of a
    flow that starts so: written by hand from the fact sheet), and how it is built."""

    name: str
    from_server: bool
    #: "bind", "rpc-http", "http", "signature" (the bytes name the service whatever the port),
    #: "confirms" (a signature that confirms the port's service, if it has one), "" (none)
    evidence: str
    build: Callable[[Conn], bytes]


STARTS = [
    Start("bind_epm", False, "bind", bind(EPM)),
    Start("bind_emsmdb", False, "bind", bind(EMSMDB)),
    Start("bind_nspi", False, "bind", bind(NSPI)),
    Start("bind_rfr", False, "bind", bind(RFR)),
    Start("bind_ack", True, "", bind_ack),
    Start("ncacn_http", True, "rpc-http", lambda c: b"ncacn_http/1.0"),
    Start("http_owa", False, "http", http_owa),
    Start("http_exchweb", False, "http", http_exchweb),
    Start("http_eas", False, "http", http_eas),
    Start("http_rpc_in", False, "rpc-http", rpc_proxy("RPC_IN_DATA", 6001)),
    Start("http_rpc_out", False, "rpc-http", rpc_proxy("RPC_OUT_DATA", 6004)),
    Start("http_ok", True, "confirms", http_ok),
    Start("tls_hello", False, "confirms", tls_client_hello),
    Start("tls_server_hello", True, "confirms", tls_server_hello),
    Start("smtp_banner", True, "signature", smtp_banner),
    Start("smtp_ehlo", False, "signature", smtp_ehlo),
    Start("pop3_banner", True, "signature", pop3_banner),
    Start("pop3_user", False, "", pop3_user),
    Start("imap4_banner", True, "signature", imap4_banner),
    Start("imap4_login", False, "", imap4_login),
    Start("nntp_banner", True, "signature", nntp_banner),
    Start("nntp_mode", False, "", nntp_mode),
    Start("tpkt_cr", False, "confirms", tpkt_cr),
    Start("tpkt_cc", True, "confirms", tpkt_cc),
    Start("ldap_search", False, "confirms", ldap_search),
    Start("ldap_entry", True, "confirms", ldap_entry),
    Start("smb_negotiate", False, "confirms", smb_negotiate),
    Start("smb_negotiate_response", True, "confirms", smb_negotiate_response),
    Start("krb_as_req", False, "", krb_as_req),
    Start("krb_error", True, "", krb_error),
    Start("dns_query", False, "", dns_query),
    Start("dns_answer", True, "", dns_answer),
    Start("notify_2883", False, "signature", notify),
    Start("newmail_blob", False, "", newmail),
    Start("ldap_search_udp", False, "", ldap_search),
    Start("ldap_entry_udp", True, "", ldap_entry),
    Start("ntp", False, "", ntp),
]
