"""Tests for pcapclass.protocols.signatures: first-payload labels on hand-written bytes and on real
captures (checked against the protocol tshark dissects in the same frame), Exchange's SMTP
markers, and the port expectations behind ``port-mismatch``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import PAYLOADS, tshark_path

from pcapclass.protocols.signatures import (
    EXPECTED_PROTOCOLS,
    LABELS,
    exchange_smtp_markers,
    expected_protocols,
    identify,
    port_mismatch,
)

EMSMDB_BIND_HEAD = bytes.fromhex("05000b031000000048000000010000000000000000000000")
TPKT_COTP_CR = bytes.fromhex(
    "03 00 00 16"  # TPKT v3, length 22
    " 11 e0"  # COTP length indicator 17, CR (connection request)
    " 00 00 00 01 00 c0 01 0a c1 02 01 00 c2 02 01 02"
)
CLIENT_HELLO = bytes.fromhex("16 03 01 00 a5 01 00 00 a1 03 03")  # handshake, TLS 1.0 record, ClientHello
SERVER_HELLO = bytes.fromhex("16 03 03 00 5d 02 00 00 59 03 03")  # ServerHello
SSL2_CLIENT_HELLO = bytes.fromhex("80 4c 01 03 01 00 33 00 00 00 10")  # SSLv2-compatible hello (IE6 era)
LDAP_BIND = bytes.fromhex("30 0c 02 01 01 60 07 02 01 03 04 00 80 00")  # bindRequest, anonymous
LDAP_BIND_LONG = bytes.fromhex(
    "30 84 00 00 00 0c 02 01 01 61 84 00 00 00 07 0a 01 00 04 00 04 00"
)  # AD style
SMB1_NEGOTIATE = bytes.fromhex("00 00 00 2f ff 53 4d 42 72 00 00 00 00")  # NBSS message + \xffSMB
SMB2_NEGOTIATE = bytes.fromhex("00 00 00 66 fe 53 4d 42 40 00 00 00")
NBSS_SESSION_REQUEST = bytes.fromhex("81 00 00 44 20 45 46 45 4a") + b"A" * 60
NBSS_POSITIVE = bytes.fromhex("82 00 00 00")


@pytest.mark.parametrize(
    "payload, from_server, expected",
    [
        (
            b"220 mail.example.com Microsoft ESMTP MAIL Service, Version: 6.0.3790.1830 ready\r\n",
            True,
            "smtp",
        ),
        (b"220-mail.example.com ESMTP\r\n220 ok\r\n", True, "smtp"),
        (b"554 mail.example.com ESMTP no service\r\n", True, "smtp"),
        (b"220 localhost.localdomain FTP server (Version 6.4/OpenBSD/Linux-ftpd-0.17) ready.\r\n", True, "ftp"),  # zeek var-services-std-ports.pcap
        (b"220 ProFTPD Server In ECI Telecom\r\n", True, "ftp"),
        (b"EHLO client.example.com\r\n", False, "smtp"),
        (b"helo x\r\n", False, "smtp"),
        (b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 ready.\r\n", True, "pop3"),
        (b"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version 6.5.7638.1 ready.\r\n", True, "imap"),
        (b"* PREAUTH ready\r\n", True, "imap"),
        (b"200 news.example.com Microsoft NNTP Service 5.0 ready (posting ok).\r\n", True, "nntp"),
        (b"201 news ready (no posting)\r\n", True, "nntp"),
        (b"HTTP/1.1 200 OK\r\n", True, "http"),
        (b"RPC_IN_DATA /rpc/rpcproxy.dll?ex:6001 HTTP/1.1\r\n", False, "http"),
        (b"ncacn_http/1.0", True, "ncacn_http"),
        (EMSMDB_BIND_HEAD, False, "dcerpc"),
        (TPKT_COTP_CR, False, "tpkt"),
        (TPKT_COTP_CR[:4], False, "tpkt"),  # header alone in its segment (zeek mmsX.pcap)
        (CLIENT_HELLO, False, "tls"),
        (SERVER_HELLO, True, "tls"),
        (SSL2_CLIENT_HELLO, False, "tls"),
        (LDAP_BIND, False, "ldap"),
        (LDAP_BIND_LONG, True, "ldap"),
        (SMB1_NEGOTIATE, False, "smb"),
        (SMB2_NEGOTIATE, True, "smb"),
        (NBSS_SESSION_REQUEST, False, "smb"),
        (NBSS_POSITIVE, True, "smb"),
        # no opinion
        (b"", True, None),
        (b"USER jo\r\n", False, None),
        (b"220 mail ESMTP\r\n", False, None),  # a banner from the client side
        (b"EHLO x\r\n", True, None),
        (b"EHLOx\r\n", False, None),
        (b"SSH-2.0-OpenSSH_9.0\r\n", True, "ssh"),
        (b"SSH-2.0-PuTTY_Release_0.78\r\n", False, "ssh"),
        (b"*2\r\n$4\r\nAUTH\r\n$4\r\nzeek\r\n", False, "redis"),  # zeek pop3/redis-50-pings.pcap
        (bytes.fromhex("0300002823e00000000000") + b"Cookie: mstshash=jo\r\n" + bytes.fromhex("0100080003000000"), False, "rdp"),
        (bytes.fromhex("030000130ed000001234000200080003000000"), True, "rdp"),  # RDP_NEG_RSP in a CC
        # a shared reply code or prefix names no protocol
        (b"554 no service\r\n", True, None),
        (b"220 Welcome\r\n", True, None),
        (b"+OK\r\n", True, None),  # Redis's reply (zeek pop3/redis-50-pings.pcap)
        (b"200 PORT command successful\r\n", True, None),  # FTP's reply (nDPI fuzz-2006-06-26-2594.pcap)
        (bytes.fromhex("30 0c 02 01 01 71 07"), False, None),  # [APPLICATION 17]: no LDAP operation
        (bytes.fromhex("30 0c 02 01 01 42 07"), False, "ldap"),  # unbindRequest is primitive
        (bytes.fromhex("30 0c 02 01 01 62 07"), False, None),  # ... so a constructed [APPLICATION 2] is not LDAP
        (bytes.fromhex("03 00 00 05 11 e0"), False, None),  # TPKT length too small
        (bytes.fromhex("03 00 00 16 11 30"), False, None),  # not a COTP code
        (bytes.fromhex("16 03 01 00 a5 02"), False, None),  # ServerHello from the client
        (bytes.fromhex("30 0c 04 01 01 60 07"), False, None),  # BER but not LDAPMessage
        (bytes.fromhex("30 0c 02 01 01 a0 07"), False, None),  # context tag, not [APPLICATION]
        (bytes.fromhex("00 00 00 2f 00 53 4d 42"), False, None),  # NBSS, not SMB
        (b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00", False, None),  # DCE/RPC header too short
        (b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00", False, None),  # frag_length 8
    ],
)
def test_identify(payload: bytes, from_server: bool, expected: str | None) -> None:
    assert identify(payload, from_server=from_server) == expected


def test_labels_are_closed() -> None:
    for exp in EXPECTED_PROTOCOLS.values():
        assert exp.labels <= LABELS


# --- port-mismatch --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "port, payload, from_server, mismatch",
    [
        (102, TPKT_COTP_CR, False, False),
        (102, b"GET / HTTP/1.0\r\n\r\n", False, True),  # a 102 flow that is not TPKT
        (102, b"SSH-2.0-OpenSSH_9.0\r\n", True, True),  # unrecognised, but 102 must be TPKT
        (102, b"\x00\x01", False, False),  # too short to judge
        (25, b"220 mail ESMTP\r\n", True, False),
        (25, b"+OK ready\r\n", True, True),
        (25, b"MAIL FROM:<a@b>\r\n", False, False),  # client text: no opinion
        (25, CLIENT_HELLO, False, True),  # TLS straight away on 25
        (110, b"USER jo\r\n", False, False),
        (110, b"HELLO THERE\r\n", True, True),  # a server that does not greet like POP3
        (135, EMSMDB_BIND_HEAD, False, False),
        (135, CLIENT_HELLO, False, True),
        (445, SMB2_NEGOTIATE, True, False),
        (445, EMSMDB_BIND_HEAD, False, True),  # raw DCE/RPC on 445 (arkime dcerpc_synthetic.pcap)
        (389, LDAP_BIND, False, False),
        (995, CLIENT_HELLO, False, False),
        (6001, b"ncacn_http/1.0", True, False),
        (6001, b"HTTP/1.1 400 Bad Request\r\n", True, True),
        (691, b"anything at all", True, False),  # no expectation: wire format unconfirmed
        (8080, b"anything at all", False, False),
    ],
)
def test_port_mismatch(port: int, payload: bytes, from_server: bool, mismatch: bool) -> None:
    assert port_mismatch(port, payload, from_server=from_server) is mismatch


def test_expected_protocols() -> None:
    assert expected_protocols(102) == {"tpkt"}
    assert expected_protocols(25) == {"smtp"}
    assert expected_protocols(110) == {"pop3"}
    assert expected_protocols(995) == {"tls"}
    assert expected_protocols(389) == expected_protocols(379) == {"ldap"}
    assert expected_protocols(445) == {"smb"}
    assert expected_protocols(135) == {"dcerpc"}
    assert expected_protocols(691) == frozenset()


# --- Exchange SMTP markers --------------------------------------------------------------------


def test_exchange_smtp_markers_on_a_non_exchange_reply() -> None:
    reply = b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250 8BITMIME\r\n"
    assert exchange_smtp_markers(reply) == set()


def test_exchange_smtp_markers_need_reply_lines() -> None:
    assert exchange_smtp_markers(b"X-LINK2STATE\r\n") == set()
    assert exchange_smtp_markers(b"250 XEXCH50\r\n") == {"XEXCH50"}


# --- Real captures ------------------------------------------------------------------------------


def first_payloads(path: Path) -> list[tuple[int, bool, bytes, tuple[str, int, str, int]]]:
    """(frame number, from_server, payload, direction) of each direction's first payload, for
    connections whose SYN is in the capture."""
    from scapy.all import IP, TCP, IPv6, PcapReader

    syn: set[tuple[str, int, str, int]] = set()
    first: dict[tuple[str, int, str, int], tuple[int, bytes]] = {}
    with PcapReader(str(path)) as reader:
        for number, pkt in enumerate(reader, 1):
            if TCP not in pkt or (IP not in pkt and IPv6 not in pkt):
                continue
            tcp = pkt[TCP]
            data = bytes(tcp.payload)
            if IP in pkt:
                ip = pkt[IP]
                data = data[: max(ip.len - ip.ihl * 4 - tcp.dataofs * 4, 0)]
            else:
                ip = pkt[IPv6]
            key = (ip.src, tcp.sport, ip.dst, tcp.dport)
            if tcp.flags & 0x02 and not tcp.flags & 0x10:
                syn.add(key)
            if data and key not in first:
                first[key] = (number, data)
    out = []
    for key, (number, data) in first.items():
        reverse = (key[2], key[3], key[0], key[1])
        if key in syn or reverse in syn:
            out.append((number, reverse in syn, data, key))
    return out


# tshark protocol names, most specific first, and the label they correspond to
TSHARK_LABELS = [
    ("dcerpc", "dcerpc"),
    ("smb2", "smb"),
    ("smb", "smb"),
    ("nbss", "smb"),
    ("ldap", "ldap"),
    ("tls", "tls"),
    ("tpkt", "tpkt"),
    ("smtp", "smtp"),
    ("pop", "pop3"),
    ("imap", "imap"),
    ("nntp", "nntp"),
    ("http", "http"),
]

# where the bytes and tshark's port-based guess disagree, the bytes are right:
KNOWN_DISAGREEMENTS = {
    # raw DCE/RPC on port 445 without NBSS (a synthetic capture); tshark decodes NBSS by port
    **{
        ("arkime-dcerpc_synthetic.pcap", n): "dcerpc"
        for n in (11, 12, 31, 32, 52, 53, 73, 74, 94, 95, 115, 116)
    },
    # the HTTP response starts here; tshark shows "http" only on the frame that completes it
    ("mapi.pcap", 161): "http",
}

SIGNATURE_CAPTURES = {
    "suricata-smtp-file-data-01.pcap": {"smtp"},
    "zeek-smtp-multi-addr.pcap": {"smtp"},
    "zeek-pop3.pcap": {"pop3"},
    "ndpi-imap.pcap": {"imap"},
    "ndpi-nntp.pcap": {"nntp"},
    "zeek-ldap-who-am-i.pcap": {"ldap"},
    "ndpi-pops.pcapng": {"tls"},
    "ndpi-iso9506-1-mms.pcap": {"tpkt"},
    "kerberos445_auth.pcapng": {"smb"},
    "mapi.pcap": {"dcerpc", "http"},
    "arkime-dcerpc_synthetic.pcap": {"dcerpc"},
}


@pytest.mark.parametrize("name", sorted(SIGNATURE_CAPTURES))
def test_first_payloads_match_tshark(name: str) -> None:
    path = PAYLOADS / name
    out = subprocess.run(
        [tshark_path(), "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "frame.protocols"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    protocols = {int(n): p.split(":") for n, p in (line.split("\t") for line in out.splitlines())}
    seen = set()
    for number, from_server, payload, key in first_payloads(path):
        ours = identify(payload, from_server=from_server)
        theirs = next((label for proto, label in TSHARK_LABELS if proto in protocols[number]), None)
        if (name, number) in KNOWN_DISAGREEMENTS:
            assert ours == KNOWN_DISAGREEMENTS[(name, number)]
        elif ours is None:
            # only a client's first command of a text protocol may go unrecognised
            assert not from_server and theirs in {"pop3", "imap", "nntp"}, (number, payload[:20])
        else:
            assert ours == theirs, (number, key, payload[:20])
        if ours is not None:
            seen.add(ours)
            server_port = key[1] if from_server else key[3]
            expect_mismatch = name == "arkime-dcerpc_synthetic.pcap" and server_port == 445
            assert port_mismatch(server_port, payload, from_server=from_server) is expect_mismatch, number
    assert seen == SIGNATURE_CAPTURES[name]


def test_tpkt_header_alone_in_its_segment() -> None:
    """zeek mmsX.pcap sends the 4-byte TPKT header in a segment of its own (tshark labels
    that frame plain TCP)."""
    ((number, from_server, payload, _),) = first_payloads(PAYLOADS / "zeek-mmsX.pcap")
    assert (number, from_server, payload) == (4, False, bytes.fromhex("03000016"))
    assert identify(payload, from_server=False) == "tpkt"
    assert not port_mismatch(102, payload, from_server=False)


def test_exchange_2003_ehlo_reply() -> None:
    """suricata-verify smtp-file-data-01: an Exchange 2003 (6.0.3790.1830) server's EHLO reply."""
    from scapy.all import TCP, PcapReader

    replies = []
    with PcapReader(str(PAYLOADS / "suricata-smtp-file-data-01.pcap")) as reader:
        for pkt in reader:
            if TCP in pkt and pkt[TCP].sport == 25:
                data = bytes(pkt[TCP].payload)
                if data.startswith(b"250-"):
                    replies.append(data)
    (reply,) = replies
    assert exchange_smtp_markers(reply) == {"X-EXPS", "X-LINK2STATE", "XEXCH50"}


def test_later_exchange_lacks_only_x_link2state() -> None:
    """zeek smtp-multi-addr: a 2015 Exchange (2007 or later) server at CERN still advertises
    X-EXPS and XEXCH50 but not X-LINK2STATE (link-state routing ended with Exchange 2003)."""
    from scapy.all import TCP, PcapReader

    found: set[str] = set()
    with PcapReader(str(PAYLOADS / "zeek-smtp-multi-addr.pcap")) as reader:
        for pkt in reader:
            if TCP in pkt and pkt[TCP].sport == 25:
                found |= exchange_smtp_markers(bytes(pkt[TCP].payload))
    assert found == {"X-EXPS", "XEXCH50"}
