"""DCE/RPC connection-oriented PDUs: the header, reassembly from a TCP stream, bind, bind_ack,
request and response (the endpoint mapper: ``epm``; EMSMDB: ``emsmdb``; RPC over HTTP: ``rpch``).

Pure byte parsers: no sockets, no scapy, no per-packet objects beyond the small immutable
records they return. Every parser returns ``None`` (or an empty list) for bytes that are not a
well-formed instance of what it parses, because a bad packet is something the pipeline counts,
not an error it raises (see docs/style.md, rule 6). What an interface UUID means for a flow is
the interface table's to say (``pcapclass.tables.interfaces``), not the parser's.

Example — a bind to EMSMDB seen in a TCP stream::

    reassembler = PduReassembler()
    for pdu in reassembler.feed(segment_payload):
        for ctx in parse_bind(pdu):
            ctx.interface                         # -> 'a4f1db00-ca47-1067-b31f-00dd010662da' (EMSMDB)
"""

from __future__ import annotations

import struct
import uuid
from typing import NamedTuple

__all__ = [
    "BindAck",
    "BindContext",
    "ContextResult",
    "PduHeader",
    "PduReassembler",
    "Request",
    "Response",
    "looks_like_dcerpc",
    "parse_bind",
    "parse_bind_ack",
    "parse_header",
    "parse_request",
    "parse_response",
]

# --- Connection-oriented PDU header ----------------------------------------------------------
# The Open Group C706 (DCE 1.1 RPC) ch. 12.6; MS-RPCE 2.2.2 (minor version 1, PTYPE 20 from MS-RPCH).
RPC_VERS = 5
RPC_VERS_MINORS = (0, 1)
CO_HEADER_LEN = 16

PTYPE_REQUEST = 0
PTYPE_PING = 1
PTYPE_RESPONSE = 2
PTYPE_FAULT = 3
PTYPE_BIND = 11
PTYPE_BIND_ACK = 12
PTYPE_BIND_NAK = 13
PTYPE_ALTER_CONTEXT = 14
PTYPE_ALTER_CONTEXT_RESP = 15
PTYPE_AUTH3 = 16
PTYPE_SHUTDOWN = 17
PTYPE_CO_CANCEL = 18
PTYPE_ORPHANED = 19
PTYPE_RTS = 20
PTYPE_MAX = PTYPE_RTS

PFC_FIRST_FRAG = 0x01
PFC_LAST_FRAG = 0x02
PFC_PENDING_CANCEL = 0x04
PFC_CONC_MPX = 0x10
PFC_DID_NOT_EXECUTE = 0x20
PFC_MAYBE = 0x40
PFC_OBJECT_UUID = 0x80

# drep byte 0, high nibble: integer representation (C706 14.1).
DREP_BIG_ENDIAN = 0x00
DREP_LITTLE_ENDIAN = 0x10

# Bind / alter_context / request / response offsets (C706 12.6.4; zeek dce_rpc-protocol.pac;
# impacket rpcrt.py).
BIND_N_CONTEXTS_OFFSET = 24
BIND_FIRST_CONTEXT_OFFSET = 28
SYNTAX_ID_LEN = 20  # UUID (16) + version u32
BIND_ACK_SEC_ADDR_OFFSET = 24
BIND_ACK_RESULT_LEN = 24  # result u16, reason u16, transfer syntax (20)
REQUEST_STUB_OFFSET = 24
REQUEST_STUB_OFFSET_WITH_OBJECT = 40
RESPONSE_STUB_OFFSET = 24
AUTH_TRAILER_LEN = 8  # auth_type, auth_level, pad_length, reserved, context id u32

# Auth levels (C706 13.1.2.1; MS-RPCE 2.2.1.1.8): 6 = privacy, the stub is encrypted.
AUTH_LEVEL_PKT_PRIVACY = 6

#: Largest amount of unconsumed bytes a PduReassembler holds before giving up. A PDU's
#: frag_length is a u16, so a well-formed stream never needs more than 65535 bytes.
MAX_BUFFERED_BYTES = 64 * 1024

# --- Records ----------------------------------------------------------------------------------


class PduHeader(NamedTuple):
    """The common 16-byte header of a connection-oriented PDU."""

    ptype: int
    flags: int
    little_endian: bool
    frag_length: int
    auth_length: int
    call_id: int


class BindContext(NamedTuple):
    """One presentation context of a bind or alter_context: which interface a context id names."""

    context_id: int
    interface: str  # canonical lower-case UUID
    version: tuple[int, int]  # (major, minor)


class ContextResult(NamedTuple):
    """One result of a bind_ack, in the order of the bind's contexts (0 = acceptance)."""

    result: int
    reason: int
    transfer_syntax: str


class BindAck(NamedTuple):
    """A bind_ack / alter_context_resp: the server's port string and the per-context results."""

    secondary_address: str  # e.g. "1032"; empty in alter_context_resp
    results: tuple[ContextResult, ...]


class Request(NamedTuple):
    """A request fragment: which call, context and operation, and its stub bytes."""

    call_id: int
    context_id: int
    opnum: int
    stub: bytes  # this fragment's stub only, without auth padding or verifier
    auth_level: int | None  # None without an auth trailer; 6 means the stub is encrypted


class Response(NamedTuple):
    """A response fragment: which call and context, and its stub bytes."""

    call_id: int
    context_id: int
    stub: bytes


# --- Header and reassembly --------------------------------------------------------------------


def _endian(drep0: int) -> str | None:
    rep = drep0 & 0xF0
    if rep == DREP_LITTLE_ENDIAN:
        return "<"
    if rep == DREP_BIG_ENDIAN:
        return ">"
    return None


def _plausible_prefix(buf: bytes | bytearray | memoryview, start: int, avail: int) -> bool:
    """Whether the first ``avail`` bytes at ``start`` can begin a CO PDU header."""
    if avail >= 1 and buf[start] != RPC_VERS:
        return False
    if avail >= 2 and buf[start + 1] not in RPC_VERS_MINORS:
        return False
    if avail >= 3 and buf[start + 2] > PTYPE_MAX:
        return False
    return avail < 5 or _endian(buf[start + 4]) is not None


def _frag_length(buf: bytes | bytearray, start: int) -> int:
    if buf[start + 4] & 0xF0 == DREP_LITTLE_ENDIAN:
        return buf[start + 8] | (buf[start + 9] << 8)
    return (buf[start + 8] << 8) | buf[start + 9]


def looks_like_dcerpc(payload: bytes) -> bool:
    """Cheap test that ``payload`` starts with a connection-oriented DCE/RPC header.

    nDPI's test (byte 0 = 5, PTYPE < 16, frag_length = payload length) loosened so that it
    also holds for RTS (20) and auth3 (16), and for a segment holding several PDUs or the first
    part of a longer one: frag_length need only be a sane header-sized value whose auth part fits.

    >>> looks_like_dcerpc(bytes.fromhex("05000b0310000000480000000100000000"))
    True
    """
    if len(payload) < CO_HEADER_LEN or not _plausible_prefix(payload, 0, CO_HEADER_LEN):
        return False
    order = "<" if payload[4] & 0xF0 == DREP_LITTLE_ENDIAN else ">"
    frag_length, auth_length = struct.unpack_from(order + "HH", payload, 8)
    return bool(frag_length >= CO_HEADER_LEN and auth_length + CO_HEADER_LEN <= frag_length)


def parse_header(pdu: bytes) -> PduHeader | None:
    """The common header of ``pdu``, or None when it is not a plausible CO PDU header."""
    if not looks_like_dcerpc(pdu):
        return None
    order = "<" if pdu[4] & 0xF0 == DREP_LITTLE_ENDIAN else ">"
    frag_length, auth_length, call_id = struct.unpack_from(order + "HHI", pdu, 8)
    return PduHeader(pdu[2], pdu[3], order == "<", frag_length, auth_length, call_id)


class PduReassembler:
    """Cuts one direction of one TCP connection into whole DCE/RPC PDUs.

    Feed it each segment's payload in sequence order; it returns the PDUs completed by that
    segment, stepping through the byte stream by frag_length so that a PDU split across
    segments and several PDUs in one segment both come out whole.

    The buffer is bounded, and the reassembler gives up — marks itself ``broken`` and returns
    nothing more — when the stream stops looking like DCE/RPC: a header that is not one, or
    more than ``max_buffered`` bytes waiting. One allowance: until the first PDU has come out,
    a segment that does not start with a header is skipped rather than fatal, up to
    ``resync_segments`` times, because a capture that starts in the middle of a connection
    usually starts in the middle of a PDU, and the next segment often begins a new one
    (``resync_segments=0`` gives up on the first bad segment). After a TCP gap, call
    :meth:`reset`.

    >>> r = PduReassembler()
    >>> r.feed(bytes.fromhex("05000b03100000001800"))
    []
    >>> [len(p) for p in r.feed(bytes(14))]
    [24]
    """

    __slots__ = ("_buf", "broken", "max_buffered", "pdus", "resync_segments", "skipped_segments")

    def __init__(self, *, max_buffered: int = MAX_BUFFERED_BYTES, resync_segments: int = 4) -> None:
        self._buf = bytearray()
        self.max_buffered = max_buffered
        self.resync_segments = resync_segments
        #: True once the stream stopped parsing as DCE/RPC; feed() then returns [] for good
        self.broken = False
        #: segments dropped while looking for the first PDU header
        self.skipped_segments = 0
        #: number of PDUs handed out since creation or the last reset()
        self.pdus = 0

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a PDU."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes and the broken mark: resynchronise on the next segment."""
        self._buf.clear()
        self.broken = False
        self.skipped_segments = 0
        self.pdus = 0

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data`` and return the PDUs it completes, in stream order."""
        if self.broken:
            return []
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            avail = end - pos
            if not _plausible_prefix(buf, pos, min(avail, CO_HEADER_LEN)):
                return self._bad_header(out)
            if avail < 10:
                break
            frag_length = _frag_length(buf, pos)
            if frag_length < CO_HEADER_LEN:
                return self._bad_header(out)
            if avail < frag_length:
                break
            out.append(bytes(buf[pos : pos + frag_length]))
            pos += frag_length
        if pos:
            del buf[:pos]
        if len(buf) > self.max_buffered:
            self._give_up()
        self.pdus += len(out)
        return out

    def _bad_header(self, out: list[bytes]) -> list[bytes]:
        self._buf = bytearray()
        if self.pdus == 0 and not out and self.skipped_segments < self.resync_segments:
            self.skipped_segments += 1
        else:
            self.broken = True
        self.pdus += len(out)
        return out

    def _give_up(self) -> None:
        self.broken = True
        self._buf = bytearray()


# --- Bind, bind_ack, request, response --------------------------------------------------------


def read_uuid(data: bytes | memoryview, offset: int, order: str) -> str:
    """A UUID whose first three fields are in ``order`` byte order (C706 appendix A)."""
    raw = bytes(data[offset : offset + 16])
    if len(raw) != 16:
        raise struct.error("short UUID")
    if order == "<":
        return str(uuid.UUID(bytes_le=raw))
    return str(uuid.UUID(bytes=raw))


def checked_pdu(pdu: bytes, ptypes: tuple[int, ...]) -> tuple[str, int, int] | None:
    """(byte order, frag_length, auth_length) when ``pdu`` is a whole PDU of one of ``ptypes``."""
    if not looks_like_dcerpc(pdu) or pdu[2] not in ptypes:
        return None
    order = "<" if pdu[4] & 0xF0 == DREP_LITTLE_ENDIAN else ">"
    frag_length, auth_length = struct.unpack_from(order + "HH", pdu, 8)
    if frag_length > len(pdu):
        return None
    return order, frag_length, auth_length


def parse_bind(pdu: bytes) -> list[BindContext]:
    """The presentation contexts of a bind (11) or alter_context (14) PDU.

    Returns the contexts that parse completely (an empty list for anything else). The
    interface version is C706's u32 ``if_version`` read in drep order: major = low 16 bits
    (what wireshark shows as "Interface Ver" / "Interface Ver Minor").
    Example: Outlook 2003's bind to EMSMDB gives
    ``[BindContext(context_id=0, interface='a4f1db00-ca47-1067-b31f-00dd010662da', version=(0, 81))]``.
    """
    checked = checked_pdu(pdu, (PTYPE_BIND, PTYPE_ALTER_CONTEXT))
    if checked is None:
        return []
    order, frag_length, auth_length = checked
    limit = frag_length - (auth_length + AUTH_TRAILER_LEN if auth_length else 0)
    if limit < BIND_FIRST_CONTEXT_OFFSET:
        return []
    n_contexts = pdu[BIND_N_CONTEXTS_OFFSET]
    contexts: list[BindContext] = []
    off = BIND_FIRST_CONTEXT_OFFSET
    item = struct.Struct(order + "HBx")
    version = struct.Struct(order + "I")
    for _ in range(n_contexts):
        if off + 4 + SYNTAX_ID_LEN > limit:
            break
        context_id, n_transfer = item.unpack_from(pdu, off)
        interface = read_uuid(pdu, off + 4, order)
        (if_version,) = version.unpack_from(pdu, off + 20)
        contexts.append(BindContext(context_id, interface, (if_version & 0xFFFF, if_version >> 16)))
        off += 4 + SYNTAX_ID_LEN + SYNTAX_ID_LEN * n_transfer
        if off > limit:
            break
    return contexts


def parse_bind_ack(pdu: bytes) -> BindAck | None:
    """The secondary address (the server's port, as a string) and results of a bind_ack (12)
    or alter_context_resp (15); None for anything else.

    The address length counts the terminating NUL on Windows, but not every stack sends it
    (zeek's bind-ack-no-inband-null trace); trailing NULs are stripped either way.
    """
    checked = checked_pdu(pdu, (PTYPE_BIND_ACK, PTYPE_ALTER_CONTEXT_RESP))
    if checked is None:
        return None
    order, frag_length, _ = checked
    try:
        (addr_len,) = struct.unpack_from(order + "H", pdu, BIND_ACK_SEC_ADDR_OFFSET)
        start = BIND_ACK_SEC_ADDR_OFFSET + 2
        if start + addr_len > frag_length:
            return None
        address = pdu[start : start + addr_len].rstrip(b"\0").decode("ascii", "replace")
        off = (start + addr_len + 3) & ~3
        if off + 4 > frag_length:
            return BindAck(address, ())
        n_results = pdu[off]
        off += 4
        results: list[ContextResult] = []
        for _ in range(n_results):
            if off + BIND_ACK_RESULT_LEN > frag_length:
                break
            result, reason = struct.unpack_from(order + "HH", pdu, off)
            results.append(ContextResult(result, reason, read_uuid(pdu, off + 4, order)))
            off += BIND_ACK_RESULT_LEN
    except struct.error:
        return None
    return BindAck(address, tuple(results))


def _stub_bounds(
    pdu: bytes, order: str, frag_length: int, auth_length: int, start: int
) -> tuple[int, int | None] | None:
    """(stub end, auth level) of a request/response, excluding auth padding and verifier."""
    if not auth_length:
        return (frag_length, None) if start <= frag_length else None
    trailer = frag_length - auth_length - AUTH_TRAILER_LEN
    if trailer < start:
        return None
    auth_level = pdu[trailer + 1]
    pad_length = pdu[trailer + 2]
    end = trailer - pad_length
    if end < start:
        end = trailer  # a bogus pad length: keep the padding rather than lose the stub
    return end, auth_level


def parse_request(pdu: bytes) -> Request | None:
    """Call id, context id, opnum, stub and auth level of a request (0) PDU; None otherwise.

    The stub is this fragment's only; check ``parse_header(pdu).flags`` for
    PFC_FIRST_FRAG | PFC_LAST_FRAG before reading a whole call's arguments from it.
    """
    checked = checked_pdu(pdu, (PTYPE_REQUEST,))
    if checked is None:
        return None
    order, frag_length, auth_length = checked
    start = REQUEST_STUB_OFFSET_WITH_OBJECT if pdu[3] & PFC_OBJECT_UUID else REQUEST_STUB_OFFSET
    if start > frag_length:
        return None
    bounds = _stub_bounds(pdu, order, frag_length, auth_length, start)
    if bounds is None:
        return None
    end, auth_level = bounds
    call_id, context_id, opnum = struct.unpack_from(order + "I4xHH", pdu, 12)
    return Request(call_id, context_id, opnum, pdu[start:end], auth_level)


def parse_response(pdu: bytes) -> Response | None:
    """Call id, context id and stub of a response (2) PDU; None otherwise."""
    checked = checked_pdu(pdu, (PTYPE_RESPONSE,))
    if checked is None:
        return None
    order, frag_length, auth_length = checked
    if frag_length < RESPONSE_STUB_OFFSET:
        return None
    bounds = _stub_bounds(pdu, order, frag_length, auth_length, RESPONSE_STUB_OFFSET)
    if bounds is None:
        return None
    end, _ = bounds
    call_id, context_id = struct.unpack_from(order + "I4xH", pdu, 12)
    return Response(call_id, context_id, pdu[RESPONSE_STUB_OFFSET:end])


def align4(off: int) -> int:
    """``off`` rounded up to NDR's 4-byte alignment."""
    return (off + 3) & ~3
