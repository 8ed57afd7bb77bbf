"""First-payload protocol signatures, Exchange SMTP markers and the protocols each port expects.

:func:`identify` looks only at the first bytes of a flow's first payload in one direction and
names the protocol they start (or None: no opinion). :data:`EXPECTED_PROTOCOLS` says which
labels each Exchange server port expects, and :func:`port_mismatch` applies it, so that the
pipeline can keep the port's service but record evidence ``port-mismatch``.

Example::

    identify(b"220 mail.example.com Microsoft ESMTP MAIL Service ready\\r\\n", from_server=True)  # 'smtp'
    port_mismatch(102, b"GET / HTTP/1.0\\r\\n\\r\\n", from_server=False)                       # True
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from .dcerpc import looks_like_dcerpc
from .http import parse_request_line
from .rpch import NCACN_HTTP_GREETING

__all__ = [
    "EXCHANGE_SMTP_KEYWORDS",
    "EXPECTED_PROTOCOLS",
    "LABELS",
    "PortExpectation",
    "exchange_greeting",
    "exchange_smtp_markers",
    "expected_protocols",
    "identify",
    "label_contradicts_port",
    "port_mismatch",
    "shared_prefix",
]

#: every label identify() can return
LABELS = frozenset(
    {"tpkt", "rdp", "smtp", "ftp", "pop3", "imap", "nntp", "ldap", "smb", "dcerpc", "http", "tls", "ncacn_http",
     "ssh", "redis"}
)

# --- TPKT / COTP ------------------------------------------------------------------------------
# RFC 1006 §6 (TPKT: version 3, reserved 0, length u16 big-endian incl. header);
# ISO 8073 / X.224 13 (COTP: length indicator, then PDU code in the high nibble).
TPKT_VERSION = 3
TPKT_HEADER_LEN = 4
COTP_CR = 0xE0
COTP_CC = 0xD0
COTP_DR = 0x80
COTP_DC = 0xC0
COTP_DT = 0xF0
COTP_ED = 0x10
COTP_AK = 0x60
COTP_EA = 0x20
COTP_RJ = 0x50
COTP_ER = 0x70
COTP_CODES = frozenset(
    {COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ED, COTP_AK, COTP_EA, COTP_RJ, COTP_ER}
)
# MS-RDPBCGR 2.2.1.1 / 2.2.1.2: an RDP connection request is a COTP CR whose user data is a
# "Cookie: mstshash=" or routing token line and/or an 8-byte RDP_NEG_REQ (type 1); the
# confirm carries RDP_NEG_RSP (type 2) or RDP_NEG_FAILURE (type 3). X.400 and MMS over
# RFC 1006 carry neither.
RDP_COOKIE = b"Cookie: mstshash="
RDP_ROUTING_TOKEN = b"Cookie: msts="
RDP_NEG_TYPES = {COTP_CR: 0x01, COTP_CC: 0x02}
RDP_NEG_FAILURE = 0x03
RDP_NEG_LEN = 8

# --- TLS / SSL --------------------------------------------------------------------------------
# RFC 8446 5.1 (record: content type, legacy version 3.x, length), 4 (handshake type);
# SSL 2.0 draft (2-byte header with the high bit set, then message type 1 = CLIENT-HELLO), which
# Windows 2000/XP-era clients still sent.
TLS_CONTENT_HANDSHAKE = 0x16
TLS_MAJOR = 0x03
TLS_HANDSHAKE_CLIENT_HELLO = 1
TLS_HANDSHAKE_SERVER_HELLO = 2
SSL2_CLIENT_HELLO = 1

# --- NetBIOS session service / SMB ------------------------------------------------------------
# RFC 1002 4.3 (session packet types); MS-SMB 2.2.3.1 / MS-SMB2 2.2.1 protocol ids.
NBSS_SESSION_MESSAGE = 0x00
NBSS_SESSION_REQUEST = 0x81
NBSS_POSITIVE_RESPONSE = 0x82
NBSS_NEGATIVE_RESPONSE = 0x83
NBSS_ENCODED_NAME_LEN = 0x20
SMB_PROTOCOL_IDS = (b"\xffSMB", b"\xfeSMB", b"\xfdSMB")

# --- LDAP -------------------------------------------------------------------------------------
# RFC 4511 4.1.1: LDAPMessage ::= SEQUENCE { messageID INTEGER, protocolOp CHOICE of
# [APPLICATION 0..25], controls [0] OPTIONAL }; X.690 BER tags and lengths.
BER_SEQUENCE = 0x30
BER_INTEGER = 0x02
BER_CLASS_MASK = 0xC0
BER_CLASS_APPLICATION = 0x40
BER_CONSTRUCTED = 0x20
#: the protocolOp tags RFC 4511 defines (4.2-4.14: 0-16, 19, 23-25); 17, 18, 20-22 are unused
LDAP_OPS = frozenset({*range(17), 19, 23, 24, 25})
#: those that are primitive: unbindRequest (NULL), delRequest (LDAPDN), abandonRequest (MessageID)
LDAP_PRIMITIVE_OPS = frozenset({2, 10, 16})

# --- Text greetings -----------------------------------------------------------------------------
# RFC 5321 4.2/4.3.1 (SMTP 220 greeting, 554 refusal; EHLO/HELO), RFC 1939 4 (POP3 +OK),
# RFC 3501 7.1 (IMAP untagged OK / PREAUTH / BYE greeting), RFC 3977 5.1 (NNTP 200/201),
# MS-RPCH 2.1.2.2.1 (ncacn_http/1.0), RFC 9112 4 (HTTP status line).
# A reply code is shared: FTP greets with 220 too (RFC 959 5.4), Redis answers +OK, FTP's 200
# answers many commands. So a greeting names its protocol only when its first line does: FTP's
# name it ("FTP"), SMTP's say "SMTP"/"ESMTP" (RFC 5321 4.3.1 suggests it; every MTA of the
# corpus does), NNTP's "NNTP", "news" or "posting"; POP3's +OK is followed by text, Redis's is
# not. A prefix alone only stays consistent with a port that expects the protocol (``_SHARED``).
SMTP_SERVER_PREFIXES = (b"220 ", b"220-", b"554 ", b"554-")
SMTP_GREETING_WORDS = (b"SMTP",)
FTP_GREETING_WORDS = (b"FTP",)
SMTP_CLIENT_COMMANDS = (b"EHLO", b"HELO")
POP3_SERVER_PREFIXES = (b"+OK ",)
POP3_SHARED_PREFIX = b"+OK"
IMAP_SERVER_PREFIXES = (b"* OK", b"* PREAUTH", b"* BYE")
NNTP_SERVER_PREFIXES = (b"200 ", b"201 ", b"200-", b"201-")
NNTP_GREETING_WORDS = (b"NNTP", b"NEWS", b"POSTING", b"NNRP")
HTTP_STATUS_PREFIX = b"HTTP/1."
#: RFC 4253 4.2: the identification string both sides send first
SSH_PREFIX = b"SSH-"
#: Redis serialization protocol: a client's command is an array ``*<n>\r\n$<len>\r\n``
RESP_ARRAY = b"*"
#: the first line of a greeting that is looked at for the words above
GREETING_LINE = 256
#: Exchange's POP3 and IMAP4 greetings name it (docs/exchange-wire-facts.md §7)
EXCHANGE_GREETING = b"Microsoft Exchange"

# --- Exchange SMTP ----------------------------------------------------------------------------
# docs/exchange-wire-facts.md §7: Exchange 2003's EHLO reply advertises these (KB 842026).
EXCHANGE_SMTP_KEYWORDS = frozenset({"X-EXPS", "X-LINK2STATE", "XEXCH50"})

# --- Ports -> protocols a flow's first payloads should start ----------------------------------
# docs/exchange-wire-facts.md §4, §7, §8 (TCP server ports). Ports missing here (691: wire format
# unconfirmed; 88, 53, 123 ...) give no opinion.


class PortExpectation(NamedTuple):
    """What the first payloads of a flow to a server port should be.

    ``labels``: the identify() labels consistent with the port. ``client_must_match`` /
    ``server_must_match``: whether that side's first payload must be recognised as one of them
    (binary protocols, greetings), so that an unrecognised payload is a mismatch too; when
    False, only a payload recognised as another protocol is (a POP3 client's ``USER`` is not
    recognised, and that says nothing).
    """

    labels: frozenset[str]
    client_must_match: bool
    server_must_match: bool


def _both(*labels: str) -> PortExpectation:
    return PortExpectation(frozenset(labels), True, True)


def _greeting(*labels: str) -> PortExpectation:
    return PortExpectation(frozenset(labels), False, True)


EXPECTED_PROTOCOLS: Mapping[int, PortExpectation] = MappingProxyType(
    {
        25: _greeting("smtp"),
        80: _both("http"),
        102: _both("tpkt"),
        110: _greeting("pop3"),
        119: _greeting("nntp"),
        135: _both("dcerpc"),
        139: _both("smb"),
        143: _greeting("imap"),
        379: _both("ldap"),
        389: _both("ldap"),
        443: _both("tls"),
        445: _both("smb"),
        465: _both("tls"),
        563: _both("tls"),
        587: _greeting("smtp"),
        # RPC over HTTP back-end legs: the server greets with ncacn_http/1.0, the proxy then
        # sends RTS PDUs (DCE/RPC-shaped).
        593: _both("ncacn_http", "dcerpc"),
        636: _both("tls"),
        993: _both("tls"),
        995: _both("tls"),
        3268: _both("ldap"),
        3269: _both("tls"),
        6001: _both("ncacn_http", "dcerpc"),
        6002: _both("ncacn_http", "dcerpc"),
        6004: _both("ncacn_http", "dcerpc"),
    }
)

#: a first payload shorter than this is too short for its absence of a signature to mean much
MIN_DECISIVE_PAYLOAD = 8


def expected_protocols(port: int) -> frozenset[str]:
    """Labels consistent with a TCP server ``port`` (empty: no expectation)."""
    exp = EXPECTED_PROTOCOLS.get(port)
    return exp.labels if exp is not None else frozenset()


def port_mismatch(port: int, payload: bytes, *, from_server: bool) -> bool:
    """Whether a flow's first payload in one direction contradicts its TCP server ``port``.

    Meant for true first payloads (the connection's start was captured). A payload recognised
    as another protocol always contradicts; an unrecognised one contradicts only where that
    side must show its protocol (binary protocols, server greetings) and it is at least
    MIN_DECISIVE_PAYLOAD bytes long.

    >>> port_mismatch(102, b"GET / HTTP/1.0\\r\\n\\r\\n", from_server=False)
    True
    >>> port_mismatch(110, b"USER jo\\r\\n", from_server=False)
    False
    >>> port_mismatch(691, b"anything", from_server=True)
    False
    """
    if not payload:
        return False
    label = identify(payload, from_server=from_server)
    return label_contradicts_port(port, label, shared_prefix(payload), len(payload) >= MIN_DECISIVE_PAYLOAD, from_server=from_server)


def label_contradicts_port(port: int, label: str | None, shared: str | None, decisive: bool, *, from_server: bool) -> bool:
    """``port_mismatch`` from what is known of the payload: its ``identify`` label, its
    ``shared_prefix`` and whether it is at least MIN_DECISIVE_PAYLOAD bytes long (the
    compiled first look gives these for a whole batch).

    >>> label_contradicts_port(110, None, "pop3", True, from_server=True)
    False
    """
    exp = EXPECTED_PROTOCOLS.get(port)
    if exp is None:
        return False
    if label is not None:
        return label not in exp.labels
    if from_server and shared in exp.labels:
        return False  # a reply code the port's protocol shares with others: consistent, not proof
    must = exp.server_must_match if from_server else exp.client_must_match
    return must and decisive


def shared_prefix(payload: bytes) -> str | None:
    r"""The text protocol whose greeting prefix a server payload starts with, without the words
    that would make it that protocol's (``220 Welcome``: SMTP's or FTP's), or None.

    >>> shared_prefix(b"220 host ready\r\n"), shared_prefix(b"+OK\r\n")
    ('smtp', 'pop3')
    """
    if payload.startswith(SMTP_SERVER_PREFIXES):
        return "smtp"
    if payload.startswith(POP3_SHARED_PREFIX):
        return "pop3"
    if payload.startswith(NNTP_SERVER_PREFIXES):
        return "nntp"
    return None


def _is_tpkt(p: bytes) -> bool:
    """TPKT header, plus the COTP length indicator and code when present (a sender may put
    the 4-byte TPKT header in a segment of its own, as in zeek's mmsX.pcap)."""
    if len(p) < TPKT_HEADER_LEN or p[0] != TPKT_VERSION or p[1] != 0:
        return False
    length = (p[2] << 8) | p[3]
    if length < TPKT_HEADER_LEN + 3:
        return False
    if len(p) >= 5 and not 2 <= p[4] <= length - TPKT_HEADER_LEN - 1:
        return False
    return len(p) < 6 or (p[5] & 0xF0) in COTP_CODES


def _is_rdp(p: bytes) -> bool:
    """A TPKT/COTP connection request or confirm carrying RDP's cookie or negotiation PDU."""
    if len(p) < 11 or (p[5] & 0xF0) not in RDP_NEG_TYPES:
        return False
    end = min(len(p), (p[2] << 8) | p[3])
    user = p[11:end]  # after the 7-byte CR/CC fixed part
    if user.startswith((RDP_COOKIE, RDP_ROUTING_TOKEN)):
        return True
    neg = user[-RDP_NEG_LEN:]
    return len(neg) == RDP_NEG_LEN and neg[0] in (RDP_NEG_TYPES[p[5] & 0xF0], RDP_NEG_FAILURE) and neg[2:4] == b"\x08\x00"


def _is_tls(p: bytes, from_server: bool) -> bool:
    if p[0] == TLS_CONTENT_HANDSHAKE:
        if len(p) < 3 or p[1] != TLS_MAJOR or p[2] > 0x04:
            return False
        if len(p) >= 6:
            expected = TLS_HANDSHAKE_SERVER_HELLO if from_server else TLS_HANDSHAKE_CLIENT_HELLO
            return p[5] == expected and ((p[3] << 8) | p[4]) >= 4
        return True
    # SSL 2.0-compatible CLIENT-HELLO: 2-byte length with the high bit, type 1, version 2.0/3.x.
    return (
        not from_server
        and len(p) >= 5
        and p[0] & 0x80 != 0
        and p[2] == SSL2_CLIENT_HELLO
        and p[3] in (0x00, 0x03)
        and p[4] <= 0x04
    )


def _is_ldap(p: bytes) -> bool:
    if len(p) < 7 or p[0] != BER_SEQUENCE:
        return False
    i = 1
    first = p[i]
    if first & 0x80:
        n = first & 0x7F
        if not 1 <= n <= 4:
            return False
        i += 1 + n
    else:
        i += 1
    if i + 2 > len(p) or p[i] != BER_INTEGER or not 1 <= p[i + 1] <= 4:
        return False
    i += 2 + p[i + 1]
    if i >= len(p):
        return False
    tag = p[i]
    return (tag & BER_CLASS_MASK) == BER_CLASS_APPLICATION and (tag & 0x1F) in LDAP_OPS and bool(tag & BER_CONSTRUCTED) != ((tag & 0x1F) in LDAP_PRIMITIVE_OPS)


def _is_smb(p: bytes) -> bool:
    kind = p[0]
    if kind == NBSS_SESSION_MESSAGE:
        return len(p) >= 8 and p[4:8] in SMB_PROTOCOL_IDS
    if kind == NBSS_SESSION_REQUEST:
        return len(p) >= 5 and p[1] == 0 and p[4] == NBSS_ENCODED_NAME_LEN
    if kind in (NBSS_POSITIVE_RESPONSE, NBSS_NEGATIVE_RESPONSE):
        return len(p) >= 4 and p[1] == 0 and ((p[2] << 8) | p[3]) <= 1
    return False


def _is_command(p: bytes, commands: tuple[bytes, ...]) -> bool:
    word = p[:4].upper()
    return word in commands and (len(p) == 4 or p[4:5] in (b" ", b"\r", b"\n"))


def identify(payload: bytes, *, from_server: bool) -> str | None:
    """The protocol a flow's first payload in one direction starts, or None (no opinion).

    ``from_server`` says whether the payload was sent by the flow's server (greetings,
    banners, server hellos) or by its client (EHLO, HTTP requests, client hellos). Binary
    signatures (DCE/RPC, TPKT/COTP, TLS, LDAP BER, NBSS/SMB) are checked in both directions.

    >>> identify(b"+OK POP3 server ready\\r\\n", from_server=True)
    'pop3'
    >>> identify(b"\\x03\\x00\\x00\\x16\\x11\\xe0\\x00\\x00\\x00\\x01\\x00", from_server=False)
    'tpkt'
    """
    if len(payload) < 3:
        return None
    b0 = payload[0]
    if b0 == 0x05:
        return "dcerpc" if looks_like_dcerpc(payload) else None
    if b0 == TPKT_VERSION:
        return None if not _is_tpkt(payload) else "rdp" if _is_rdp(payload) else "tpkt"
    if b0 == TLS_CONTENT_HANDSHAKE or (
        b0 & 0x80 and b0 not in (NBSS_SESSION_REQUEST, NBSS_POSITIVE_RESPONSE, NBSS_NEGATIVE_RESPONSE)
    ):
        return "tls" if _is_tls(payload, from_server) else None
    if b0 == BER_SEQUENCE:
        return "ldap" if _is_ldap(payload) else None
    if b0 in (NBSS_SESSION_MESSAGE, NBSS_SESSION_REQUEST, NBSS_POSITIVE_RESPONSE, NBSS_NEGATIVE_RESPONSE):
        if _is_smb(payload):
            return "smb"
        if b0 != NBSS_SESSION_MESSAGE:
            return "tls" if _is_tls(payload, from_server) else None
        return None
    if payload.startswith(NCACN_HTTP_GREETING):
        return "ncacn_http"
    if payload.startswith(SSH_PREFIX):
        return "ssh"
    if from_server:
        if payload.startswith(HTTP_STATUS_PREFIX):
            return "http"
        if payload.startswith(POP3_SERVER_PREFIXES):
            return "pop3"
        if payload.startswith(IMAP_SERVER_PREFIXES):
            return "imap"
        line = greeting_line(payload)
        if payload.startswith(SMTP_SERVER_PREFIXES):
            return "ftp" if _names(line, FTP_GREETING_WORDS) else "smtp" if _names(line, SMTP_GREETING_WORDS) else None
        if payload.startswith(NNTP_SERVER_PREFIXES):
            return "nntp" if _names(line, NNTP_GREETING_WORDS) else None
        return None
    if _is_command(payload, SMTP_CLIENT_COMMANDS):
        return "smtp"
    if _is_resp_command(payload):
        return "redis"
    if b0 >= 0x21 and parse_request_line(payload) is not None:
        return "http"
    return None


def greeting_line(payload: bytes) -> bytes:
    """The first line of a greeting, upper-cased (the words above are looked for in it)."""
    return payload[:GREETING_LINE].split(b"\n", 1)[0].upper()


def _names(line: bytes, words: tuple[bytes, ...]) -> bool:
    return any(w in line for w in words)


def _is_resp_command(p: bytes) -> bool:
    """``*<count>\\r\\n$<length>\\r\\n``: a Redis client's first command (RESP array of bulk strings)."""
    if not p.startswith(RESP_ARRAY):
        return False
    count, sep, rest = p[1:16].partition(b"\r\n")
    return bool(sep) and count.isdigit() and rest[:1] == b"$" and rest[1:2].isdigit()


def exchange_greeting(payload: bytes) -> bool:
    """Whether a server's POP3 or IMAP4 greeting names Microsoft Exchange (Exchange 5.5 to 2003).

    >>> exchange_greeting(b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 ready.\\r\\n")
    True
    """
    return payload.startswith((*POP3_SERVER_PREFIXES, *IMAP_SERVER_PREFIXES)) and EXCHANGE_GREETING.upper() in greeting_line(payload)


def exchange_smtp_markers(payload: bytes) -> set[str]:
    """Exchange-only keywords (X-EXPS, X-LINK2STATE, XEXCH50) advertised in an EHLO reply.

    Looks at ``250-``/``250 `` lines of a server payload; a non-empty result is proof of an
    Exchange SMTP server. X-EXPS and XEXCH50 are also sent by Exchange 2007 and later (seen in
    zeek's smtp-multi-addr.pcap); X-LINK2STATE is the Exchange 2000/2003 one.

    >>> reply = b"250-mail Hello\\r\\n250-X-EXPS GSSAPI NTLM\\r\\n250-XEXCH50\\r\\n250 OK\\r\\n"
    >>> sorted(exchange_smtp_markers(reply))
    ['X-EXPS', 'XEXCH50']
    """
    found: set[str] = set()
    for line in payload.split(b"\n"):
        if len(line) < 5 or not line.startswith((b"250-", b"250 ")):
            continue
        word = line[4:].strip().split(b" ", 1)[0].split(b"=", 1)[0].upper()
        keyword = word.decode("ascii", "replace")
        if keyword in EXCHANGE_SMTP_KEYWORDS:
            found.add(keyword)
    return found
