"""A certificate subject as text: the DER ``Name`` (RFC 5280 4.1.2.4) that
``_certificate.certificate_subjects`` finds, written as RFC 4514 writes a distinguished name.

The text is the one OpenSSL, Zeek's ``ssl.log`` and Python's ``cryptography`` print: relative
names from the last to the first (``CN=mail.example.com,O=Example,C=US``), the values of a
multi-valued one joined by ``+`` in their DER order, ``, + " \\ < > ;`` and a leading ``#`` or
space escaped with a backslash. The attribute types of RFC 4514 3 go by their short names,
``emailAddress``, ``serialNumber`` and ``postalCode`` as OpenSSL names them, any other by its
dotted OID. A value of no string type is ``#`` and its DER value in hex. ``None`` when the
bytes are not a well-formed ``Name``: the subject is dropped, nothing else.
"""

_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
    "1.2.840.113549.1.9.1": "emailAddress",
    "2.5.4.5": "serialNumber",
    "2.5.4.17": "postalCode",
}

#: DER string tags (X.680 8.4) and how their bytes read as text
_STRINGS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x14: "latin-1",  # TeletexString, as OpenSSL reads it
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}

_SEQUENCE, _SET, _OID = 0x30, 0x31, 0x06


def subject_text(der: bytes) -> str | None:
    """RFC 4514 text of the DER ``Name`` ``der`` (its header included), or ``None``."""
    try:
        items = _elements(_only(der, _SEQUENCE))
        if any(tag != _SET for tag, _ in items):
            return None
        rdns = [_rdn(body) for _, body in items]
    except ValueError:
        return None
    return ",".join(reversed(rdns))


def _rdn(body: bytes) -> str:
    """One RelativeDistinguishedName: ``type=value`` pairs joined by ``+``."""
    pairs = []
    for tag, pair in _elements(body):
        if tag != _SEQUENCE:
            raise ValueError("attribute is not a SEQUENCE")
        (oid_tag, oid), (value_tag, value) = _elements(pair)
        if oid_tag != _OID:
            raise ValueError("attribute type is not an OID")
        dotted = _dotted(oid)
        pairs.append(f"{_SHORT_NAMES.get(dotted, dotted)}={_value(value_tag, value)}")
    if not pairs:
        raise ValueError("empty RelativeDistinguishedName")
    return "+".join(pairs)


def _value(tag: int, value: bytes) -> str:
    encoding = _STRINGS.get(tag)
    if encoding is None:
        return "#" + bytes([tag, *_length(len(value))]).hex() + value.hex()
    try:
        text = value.decode(encoding)
    except UnicodeDecodeError as e:
        raise ValueError("string value does not decode") from e
    return _escape(text)


def _escape(text: str) -> str:
    if not text:
        return ""
    for special in '\\"+,;<>':
        text = text.replace(special, "\\" + special)
    text = text.replace("\0", "\\00")
    if text[0] in "# ":
        text = "\\" + text
    if text[-1] == " ":
        text = text[:-1] + "\\ "
    return text


def _dotted(oid: bytes) -> str:
    """An OBJECT IDENTIFIER's content octets (X.690 8.19) as dotted text."""
    if not oid or oid[-1] & 0x80:
        raise ValueError("bad OID")
    arcs, value = [], 0
    for b in oid:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(a) for a in (first, arcs[0] - 40 * first, *arcs[1:]))


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def _only(der: bytes, tag: int) -> bytes:
    """The content of ``der``, one element of type ``tag`` and nothing after it."""
    ((got, body),) = _elements(der)
    if got != tag:
        raise ValueError("unexpected tag")
    return body


def _elements(der: bytes) -> list[tuple[int, bytes]]:
    """The (tag, content) of each DER element in ``der``, which they must fill exactly."""
    out, at = [], 0
    while at < len(der):
        if at + 2 > len(der) or der[at] & 0x1F == 0x1F:
            raise ValueError("bad header")
        tag, b = der[at], der[at + 1]
        at += 2
        if b >= 0x80:
            size = b & 0x7F
            if size == 0 or size > 4 or at + size > len(der):
                raise ValueError("bad length")
            b = int.from_bytes(der[at : at + size], "big")
            at += size
        if at + b > len(der):
            raise ValueError("element runs past its parent")
        out.append((tag, der[at : at + b]))
        at += b
    return out
