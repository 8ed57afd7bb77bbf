"""Tests for the server certificate's subject: the compiled ``certificate_subjects`` and the
DER name reader against Python's ``cryptography`` (OpenSSL's and Rust's X.509 parsers, an
independent implementation), on names it builds and on the certificates tshark reassembles
from real captures."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import PAYLOADS
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier
from hypothesis import given, settings
from hypothesis import strategies as st

import pcapclass
from pcapclass._certificate import certificate_subjects
from pcapclass.certificate import subject_text
from pcapclass.evidence.names import _same_bytes

#: the attribute names OpenSSL (and so Zeek) prints where ``cryptography`` gives the dotted OID
OPENSSL_NAMES = {NameOID.EMAIL_ADDRESS: "emailAddress", NameOID.SERIAL_NUMBER: "serialNumber", NameOID.POSTAL_CODE: "postalCode"}


def rfc4514(name: x509.Name) -> str:
    return name.rfc4514_string(OPENSSL_NAMES)


def kernel(payload: bytes, plen: int | None = None) -> bytes | None:
    """``certificate_subjects`` on one payload (its first ``plen`` bytes): the DER name or None."""
    buf = np.frombuffer(payload or b"\0", dtype=np.uint8)
    start, length, digest = certificate_subjects(buf, np.array([0]), np.array([len(payload) if plen is None else plen]))
    if not length[0]:
        assert digest[0] == 0
        return None
    return payload[int(start[0]) : int(start[0] + length[0])]


def _record(kind: int, body: bytes) -> bytes:
    return bytes([kind, 3, 3]) + len(body).to_bytes(2, "big") + body


def _handshake(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


# --- the DER name reader against cryptography's ------------------------------------------------

ATTRIBUTES = [NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.LOCALITY_NAME,
              NameOID.STATE_OR_PROVINCE_NAME, NameOID.STREET_ADDRESS, NameOID.DOMAIN_COMPONENT, NameOID.USER_ID,
              NameOID.EMAIL_ADDRESS, NameOID.SERIAL_NUMBER, NameOID.POSTAL_CODE, NameOID.TITLE,
              ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.1")]  # fmt: skip
TYPES = [_ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.IA5String, _ASN1Type.BMPString, _ASN1Type.UniversalString]
PRINTABLE = "ABCXYZabcxyz0189 '()+,-./:=?"
SPECIALS = ' ,+"\\<>;#=\x00é日'
KEY = ec.generate_private_key(ec.SECP256R1())


def _attribute(oid: ObjectIdentifier, text: str, kind: _ASN1Type) -> x509.NameAttribute:
    if kind is _ASN1Type.PrintableString:
        text = "".join(c for c in text if c in PRINTABLE) or "x"
    if kind is _ASN1Type.IA5String:
        text = text.encode("ascii", "ignore").decode() or "x"
    return x509.NameAttribute(oid, text, kind)


@st.composite
def names(draw: st.DrawFn) -> x509.Name:
    rdns = []
    for _ in range(draw(st.integers(1, 6))):
        oids = draw(st.lists(st.sampled_from(ATTRIBUTES), min_size=1, max_size=2, unique=True))
        rdns.append(x509.RelativeDistinguishedName(
            [_attribute(oid, draw(st.text(PRINTABLE + SPECIALS, min_size=1, max_size=20)), draw(st.sampled_from(TYPES))) for oid in oids]))
    return x509.Name(rdns)


def certificate(subject: x509.Name) -> bytes:
    """A DER certificate for ``subject``, signed by ``cryptography``."""
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    at = datetime.datetime(2006, 5, 2, tzinfo=datetime.UTC)
    builder = x509.CertificateBuilder(subject, issuer, KEY.public_key(), 0x1234567890ABCDEF, at, at + datetime.timedelta(days=365))
    return builder.sign(KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def server_flight(cert: bytes) -> bytes:
    """A TLS 1.2 server's first segment: ServerHello and Certificate in one handshake record."""
    hello = _handshake(2, b"\x03\x03" + bytes(32) + b"\x00\xc0\x2f\x00")
    return _record(0x16, hello + _handshake(11, (len(cert) + 3).to_bytes(3, "big") + len(cert).to_bytes(3, "big") + cert))


@settings(max_examples=200, deadline=None)
@given(names())
def test_subject_text_is_cryptographys(name: x509.Name) -> None:
    """The subject of a certificate ``cryptography`` signs, found in a server's first segment and
    read, is the text ``cryptography`` gives for the subject it reads back from that certificate."""
    cert = certificate(name)
    der = kernel(server_flight(cert))
    assert der is not None
    assert subject_text(der) == rfc4514(x509.load_der_x509_certificate(cert).subject)


def test_a_country_code_and_a_readable_name() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "1&1 Mail, Media"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "imap.gmx.net")])  # fmt: skip
    assert subject_text(name.public_bytes()) == "CN=imap.gmx.net,O=1&1 Mail\\, Media,C=DE"


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x05\x31\x03\x30\x01\x06", b"\x31\x00", b"\x30\x02\x30\x00",
                                 b"\x30\x80\x00\x00", b"\x30\x09\x31\x07\x30\x05\x06\x00\x0c\x01x"])  # fmt: skip
def test_malformed_names_give_none(der: bytes) -> None:
    assert subject_text(der) is None


# --- the kernel on real server payloads, against tshark's reassembly ---------------------------

CAPTURES = [PAYLOADS / "ndpi-sites.pcapng", PAYLOADS / "ndpi-imaps.pcap", PAYLOADS / "zeek-telesec.pcap"]


def server_hellos(tshark: str, capture: Path) -> list[tuple[str, bytes, str | None]]:
    """Per TCP segment that starts with a ServerHello (tshark without reassembly): its stream,
    its payload, and what tshark says of the stream's certificate: the subject of the first one
    it reassembles (read by ``cryptography``); ``None`` when the hello's segment says none comes
    in the clear (TLS 1.3's ``supported_versions``, or a ChangeCipherSpec: a resumed session);
    else ``"?"`` (the capture ends inside the certificate: tshark has nothing to say)."""
    run = [tshark, "-n", "-r", str(capture), "-T", "fields", "-E", "occurrence=a"]
    hellos = subprocess.run([*run, "-o", "tcp.desegment_tcp_streams:FALSE", "-Y", "tcp && tls.handshake.type == 2", "-e", "tcp.stream",
                             "-e", "tcp.payload", "-e", "tls.handshake.extensions.supported_version", "-e", "tls.record.content_type"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    certs = subprocess.run([*run, "-Y", "tls.handshake.type == 11", "-e", "tcp.stream", "-e", "tls.handshake.certificate"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    subjects: dict[str, str] = {}
    for line in certs.splitlines():
        stream, cert = line.split("\t")
        if cert and stream not in subjects:
            subjects[stream] = rfc4514(x509.load_der_x509_certificate(bytes.fromhex(cert.split(",")[0])).subject)
    out: list[tuple[str, bytes, str | None]] = []
    for line in hellos.splitlines():
        stream, payload, version, records = line.split("\t")
        if not payload:
            continue
        clear = "0x0304" not in version.split(",") and "20" not in records.replace("\\", ",").split(",")
        out.append((stream, bytes.fromhex(payload), subjects.get(stream, "?" if clear else None)))
    return out


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_subjects_in_server_hello_segments_are_cryptographys(tshark: str, capture: Path) -> None:
    hellos = [h for h in server_hellos(tshark, capture) if h[2] != "?"]
    assert any(subject for _, _, subject in hellos), "the capture must hold certificates for this test to mean something"
    for stream, payload, subject in hellos:
        der = kernel(payload)
        assert (subject_text(der) if der is not None else None) == subject, f"stream {stream}"


def test_a_subject_cut_short_is_not_given(tshark: str) -> None:
    """Every cut of a real ServerHello segment gives the whole subject or none: never a part."""
    (_, payload, subject), *_ = [h for h in server_hellos(tshark, PAYLOADS / "ndpi-imaps.pcap") if h[2]]
    whole = kernel(payload)
    assert whole is not None and subject_text(whole) == subject
    end = payload.index(whole) + len(whole)
    for cut in range(len(payload) + 1):
        assert kernel(payload, cut) == (whole if cut >= end else None), cut


def test_a_tls13_server_hello_and_a_client_hello_give_none() -> None:
    """TLS 1.3 (RFC 8446 4.1.3): the ServerHello is followed by records in the clear only for a
    ChangeCipherSpec; the certificate is application data."""
    supported_versions = bytes.fromhex("002b00020304")
    hello = _handshake(2, b"\x03\x03" + bytes(32) + b"\x20" + bytes(32) + b"\x13\x01\x00" + len(supported_versions).to_bytes(2, "big")
                       + supported_versions)  # fmt: skip
    flight = _record(0x16, hello) + _record(0x14, b"\x01") + _record(0x17, bytes(300))
    assert kernel(flight) is None
    assert kernel(_record(0x16, _handshake(1, b"\x03\x03" + bytes(200)))) is None
    # the same ServerHello followed by a Certificate message in the clear (TLS 1.2) is read
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.org")]).public_bytes()
    tbs = b"\xa0\x03\x02\x01\x02" + b"\x02\x01\x07" + b"\x30\x00" + b"\x30\x00" + b"\x30\x00" + name
    cert = b"\x30\x82" + (len(tbs) + 4).to_bytes(2, "big") + b"\x30\x82" + len(tbs).to_bytes(2, "big") + tbs
    chain = _handshake(11, (len(cert) + 3).to_bytes(3, "big") + len(cert).to_bytes(3, "big") + cert)
    assert kernel(_record(0x16, hello + chain)) == name
    assert kernel(_record(0x16, hello) + _record(0x16, chain)) == name


def test_same_bytes_tells_apart_subjects_whose_digests_agree() -> None:
    data = np.frombuffer(b"abcdabcdabce", dtype=np.uint8)
    start, length = np.array([0, 0, 0]), np.array([4, 4, 3])
    assert _same_bytes(data, start, length, np.array([4, 8, 8]), np.array([4, 4, 3])).tolist() == [True, False, True]


# --- whole captures: the flows' cert_subject --------------------------------------------------


def stream_ends(tshark: str, capture: Path) -> dict[str, tuple[str, int, str, int]]:
    """Per TCP stream with a ServerHello: (client, client port, server, server port)."""
    fields = ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"]
    out = subprocess.run([tshark, "-n", "-r", str(capture), "-o", "tcp.desegment_tcp_streams:FALSE", "-Y", "tcp && tls.handshake.type == 2",
                          "-T", "fields", "-E", "occurrence=f", *(a for f in fields for a in ("-e", f))],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    ends = {}
    for line in out.splitlines():
        stream, s4, s6, sport, d4, d6, dport = line.split("\t")
        ends[stream] = (d4 or d6, int(dport), s4 or s6, int(sport))
    return ends


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_flows_carry_the_subject_of_their_certificate(tshark: str, capture: Path) -> None:
    """Every TLS flow whose server sent its certificate in the ServerHello's segment names its
    subject; flows whose certificate tshark says is not in the clear name none."""
    ends = stream_ends(tshark, capture)
    expected = {ends[stream]: subject or "" for stream, _, subject in server_hellos(tshark, capture) if subject != "?"}
    flows = pcapclass.classify_file(capture).flows
    got = {(c, int(cp), s, int(sp)): subject for c, cp, s, sp, subject
           in zip(flows.client_addr, flows.client_port, flows.server_addr, flows.server_port, flows.cert_subject)}  # fmt: skip
    assert any(expected.values())
    assert {key: got.get(key) for key in expected} == expected
