"""Tests for pcapclass.protocols.dcerpc (and the interface table of pcapclass.tables.interfaces): hand-built PDUs (a comment per field), tshark as an oracle for
those bytes, and real DCE/RPC captures whose binds and towers are checked against tshark's own
dissection. Captures are copies of public test captures, listed in fixtures/payloads/SOURCES.md."""

from __future__ import annotations

import collections
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PAYLOADS, tshark_path
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapclass.errors import RulesError
from pcapclass.protocols import dcerpc, emsmdb, epm, rpch
from pcapclass.protocols.dcerpc import (
    BindContext,
    PduReassembler,
    looks_like_dcerpc,
    parse_bind,
    parse_bind_ack,
    parse_header,
    parse_request,
    parse_response,
)
from pcapclass.protocols.emsmdb import parse_register_push_notification
from pcapclass.protocols.epm import (
    Tower,
    parse_epm_lookup_response,
    parse_epm_map_request,
    parse_epm_map_response,
    parse_tower,
)
from pcapclass.protocols.rpch import parse_rts
from pcapclass.tables.interfaces import load_interfaces

EMSMDB = "a4f1db00-ca47-1067-b31f-00dd010662da"
NSPI = "f5cc5a18-4264-101a-8c59-08002b2f8426"
EPM = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
NDR = "8a885d04-1ceb-11c9-9fe8-08002b104860"


def h(text: str) -> bytes:
    """Hex with comments: everything after '#' on a line is ignored."""
    return bytes.fromhex("".join(line.split("#", 1)[0] for line in text.splitlines()))


# --- Hand-built PDUs (C706 ch. 12; docs/exchange-wire-facts.md §2, §3, §6) -------------------------

EMSMDB_BIND = h(
    """
    05 00 0b 03             # rpc_vers 5, minor 0, PTYPE 11 bind, pfc FIRST_FRAG|LAST_FRAG
    10 00 00 00             # drep: little-endian, ASCII, IEEE
    48 00                   # frag_length 72
    00 00                   # auth_length 0
    01 00 00 00             # call_id 1
    b8 10 b8 10             # max_xmit 4280, max_recv 4280
    00 00 00 00             # assoc_group 0
    01 00 00 00             # n_contexts 1, 3 reserved
    00 00 01 00             # context id 0, n_transfer 1, reserved
    00 db f1 a4 47 ca 67 10 b3 1f 00 dd 01 06 62 da   # EMSMDB a4f1db00-ca47-1067-b31f-00dd010662da
    00 00 51 00             # if_version: major 0, minor 81
    04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60   # transfer syntax NDR (8a885d04-...)
    02 00 00 00             # NDR version 2
    """
)

# the same bind in big-endian drep: UUID's first three fields and the u32 version swapped
EMSMDB_BIND_BE = h(
    """
    05 00 0b 03  00 00 00 00   # drep 00: big-endian
    00 48  00 00  00 00 00 01  # frag_length 72, auth_length 0, call_id 1
    10 b8 10 b8  00 00 00 00  01 00 00 00
    00 00 01 00                # context id 0, n_transfer 1
    a4 f1 db 00 ca 47 10 67 b3 1f 00 dd 01 06 62 da   # EMSMDB, big-endian field order
    00 51 00 00                # if_version u32 = 0x00510000: major 0 (low 16), minor 81 (high 16)
    8a 88 5d 04 1c eb 11 c9 9f e8 08 00 2b 10 48 60   # NDR
    00 00 00 02
    """
)

# an alter_context naming two contexts (NSPI with 2 transfer syntaxes, then EMSMDB)
ALTER_CONTEXT_TWO = h(
    """
    05 00 0e 03  10 00 00 00  88 00 00 00  02 00 00 00   # alter_context, frag_length 136, call 2
    b8 10 b8 10  00 00 00 00  02 00 00 00               # 2 contexts
    01 00 02 00                                         # context id 1, 2 transfer syntaxes
    18 5a cc f5 64 42 1a 10 8c 59 08 00 2b 2f 84 26  38 00 00 00   # NSPI 56.0
    04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60  02 00 00 00   # NDR 2
    33 05 71 71 ba be 37 49 83 19 b5 db ef 9c cc 36  01 00 00 00   # NDR64 1
    02 00 01 00                                         # context id 2, 1 transfer syntax
    00 db f1 a4 47 ca 67 10 b3 1f 00 dd 01 06 62 da  00 00 51 00   # EMSMDB 0.81
    04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60  02 00 00 00   # NDR 2
    """
)

BIND_ACK_1032 = h(
    """
    05 00 0c 03  10 00 00 00  3c 00 00 00  01 00 00 00   # bind_ack, frag_length 60, call 1
    b8 10 b8 10  f1 2e 00 00                            # max_xmit, max_recv, assoc_group 0x2ef1
    05 00  31 30 33 32 00                               # secondary address length 5, "1032\\0"
    00                                                  # pad to 4 (offset 31 -> 32)
    01 00 00 00                                         # n_results 1, 3 reserved
    00 00  00 00                                        # result 0 acceptance, reason 0
    04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60  02 00 00 00   # NDR 2
    """
)

# EcDoConnect-like request with an NTLM connect-level auth trailer: stub 6 bytes + 2 pad bytes
REQUEST_WITH_AUTH = h(
    """
    05 00 00 03  10 00 00 00  38 00 10 00  07 00 00 00   # request, frag_length 56, auth_length 16, call 7
    06 00 00 00                                         # alloc_hint 6
    00 00  0a 00                                        # context id 0, opnum 10
    de ad be ef 01 02                                   # stub (6 bytes)
    00 00                                               # auth padding (2)
    0a 02 02 00  a8 89 0b 00                            # auth: NTLMSSP, level 2 connect, pad 2, rsvd, ctx id
    01 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00     # NTLMSSP verifier (16)
    """
)

REQUEST_WITH_OBJECT = h(
    """
    05 00 00 83  10 00 00 00  2c 00 00 00  08 00 00 00   # request, FIRST|LAST|OBJECT_UUID, frag 44, call 8
    04 00 00 00  01 00 03 00                            # alloc_hint 4, context id 1, opnum 3
    11 11 11 11 22 22 33 33 44 44 55 55 55 55 55 55     # object UUID
    ca fe ba be                                         # stub
    """
)

RESPONSE_SMALL = h(
    """
    05 00 02 03  10 00 00 00  1c 00 00 00  07 00 00 00   # response, frag_length 28, call 7
    04 00 00 00  00 00 00 00                            # alloc_hint 4, context id 0, cancel_count 0
    00 00 00 00                                         # stub: return value 0
    """
)


# Tower for EMSMDB over TCP (C706 appendix L; docs/exchange-wire-facts.md §3)
def tower(port: int, ip: bytes, proto: int = 0x07) -> bytes:
    return h(
        f"""
        05 00                                           # floor_count 5
        13 00  0d 00 db f1 a4 47 ca 67 10 b3 1f 00 dd 01 06 62 da  00 00   # floor 1 LHS: UUID, EMSMDB, 0
        02 00  51 00                                    # floor 1 RHS: minor 81
        13 00  0d 04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60  02 00   # floor 2 LHS: NDR, major 2
        02 00  00 00                                    # floor 2 RHS: minor 0
        01 00  0b  02 00  00 00                         # floor 3: RPC connection-oriented
        01 00  {proto:02x}  02 00  {port:04x}           # floor 4: transport id, port big-endian
        01 00  09  04 00  {ip.hex()}                    # floor 5: IP, address in network order
        """
    )


EMSMDB_TOWER_1032 = tower(1032, bytes([192, 168, 0, 2]))
EMSMDB_TOWER_135 = tower(135, bytes(4))
assert len(EMSMDB_TOWER_1032) == 75


def pdu(ptype: int, call_id: int, body: bytes, *, opnum: int = 0) -> bytes:
    """A request (with opnum) or response around ``body``."""
    header_rest = struct.pack("<IHH", len(body), 0, opnum)
    frag = 16 + len(header_rest) + len(body)
    return struct.pack("<BBBB4sHHI", 5, 0, ptype, 3, b"\x10\0\0\0", frag, 0, call_id) + header_rest + body


EPM_MAP_REQUEST_STUB = (
    h(
        """
    01 00 00 00                                         # object pointer (non-null)
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00     # object UUID nil
    02 00 00 00                                         # map_tower pointer
    4b 00 00 00  4b 00 00 00                            # max_count 75, tower_length 75
    """
    )
    + EMSMDB_TOWER_135
    + h(
        """
    00                                                  # pad to 4
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   # entry_handle (20, nil)
    04 00 00 00                                         # max_towers 4
    """
    )
)

EPM_MAP_RESPONSE_STUB = (
    h(
        """
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   # entry_handle (20)
    01 00 00 00                                         # num_towers 1
    04 00 00 00  00 00 00 00  01 00 00 00               # array max_count 4, offset 0, actual_count 1
    03 00 00 00                                         # tower pointer
    4b 00 00 00  4b 00 00 00                            # max_count 75, tower_length 75
    """
    )
    + EMSMDB_TOWER_1032
    + h(
        """
    00                                                  # pad to 4
    00 00 00 00                                         # status 0
    """
    )
)

EPM_BIND = (
    EMSMDB_BIND[:32] + h("08 83 af e1 1f 5d c9 11 91 a4 08 00 2b 14 a0 fa  03 00 00 00") + EMSMDB_BIND[52:]
)
EPM_BIND_ACK = (
    BIND_ACK_1032[:24] + h("04 00 31 33 35 00  00 00  01 00 00 00") + BIND_ACK_1032[36:]
)  # "135\0", pad
EPM_BIND_ACK = EPM_BIND_ACK[:8] + struct.pack("<H", len(EPM_BIND_ACK)) + EPM_BIND_ACK[10:]
EPM_MAP_REQUEST = pdu(0, 2, EPM_MAP_REQUEST_STUB, opnum=3)
EPM_MAP_RESPONSE = pdu(2, 2, EPM_MAP_RESPONSE_STUB)

PUSH_STUB = h(
    """
    00 00 00 00  96 57 70 3b 05 09 2b 45 8e b2 2f 53 83 13 30 45   # context handle (20)
    00 00 00 00                                         # iRpc 0
    08 00 00 00                                         # rgbContext max_count 8
    de ad be ef 01 02 03 04                             # rgbContext (the future UDP payload)
    08 00                                               # cbContext 8
    00 00                                               # pad to 4
    ff ff ff ff                                         # grbitAdviseBits
    10 00 00 00                                         # rgbCallbackAddress max_count 16
    02 00  04 2f  c0 a8 00 ad  00 00 00 00 00 00 00 00  # SOCKADDR_IN: AF_INET, port 1071, 192.168.0.173
    10 00                                               # cbCallbackAddress 16
    """
)

PUSH_STUB_ODD = h(
    """
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00   # context handle (20)
    00 00 00 00  05 00 00 00                            # iRpc 0, max_count 5
    aa bb cc dd ee                                      # rgbContext (5 bytes)
    00                                                  # pad to 2
    05 00                                               # cbContext 5
    ff ff ff ff  10 00 00 00                            # grbitAdviseBits (offset 36), max_count 16
    02 00  13 88  0a 00 00 05  00 00 00 00 00 00 00 00  # AF_INET, port 5000, 10.0.0.5
    10 00                                               # cbCallbackAddress
    """
)

# RTS CONN/B1 on the RPC over HTTP IN channel (MS-RPCH 2.2.4.5)
RTS_CONN_B1 = h(
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


# --- looks_like_dcerpc / header ------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, expected",
    [
        (EMSMDB_BIND, True),
        (EMSMDB_BIND_BE, True),
        (EMSMDB_BIND[:16], True),  # header of a PDU continued in the next segment
        (RTS_CONN_B1, True),  # PTYPE 20 (nDPI's "< 16" would refuse it)
        (EMSMDB_BIND[:15], False),  # shorter than a header
        (b"\x04" + EMSMDB_BIND[1:], False),  # rpc_vers 4
        (EMSMDB_BIND[:1] + b"\x02" + EMSMDB_BIND[2:], False),  # minor 2
        (EMSMDB_BIND[:2] + b"\x15" + EMSMDB_BIND[3:], False),  # PTYPE 21
        (EMSMDB_BIND[:4] + b"\x20" + EMSMDB_BIND[5:], False),  # drep integer rep 2
        (EMSMDB_BIND[:8] + b"\x0f\x00" + EMSMDB_BIND[10:], False),  # frag_length 15
        (EMSMDB_BIND[:10] + b"\x40\x00" + EMSMDB_BIND[12:], False),  # auth_length beyond frag
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),
    ],
)
def test_looks_like_dcerpc(payload: bytes, expected: bool) -> None:
    assert looks_like_dcerpc(payload) is expected


def test_parse_header() -> None:
    assert parse_header(REQUEST_WITH_AUTH) == dcerpc.PduHeader(0, 3, True, 56, 16, 7)
    assert parse_header(EMSMDB_BIND_BE) == dcerpc.PduHeader(11, 3, False, 72, 0, 1)
    assert parse_header(b"\x05\x00") is None


# --- Reassembly ----------------------------------------------------------------------------


def test_bind_split_across_three_segments() -> None:
    r = PduReassembler()
    assert r.feed(EMSMDB_BIND[:7]) == []  # not even the frag_length yet
    assert r.feed(EMSMDB_BIND[7:40]) == []
    assert r.buffered == 40
    (whole,) = r.feed(EMSMDB_BIND[40:])
    assert whole == EMSMDB_BIND and r.buffered == 0 and not r.broken
    assert parse_bind(whole) == [BindContext(0, EMSMDB, (0, 81))]


def test_two_pdus_in_one_segment_and_a_third_split() -> None:
    r = PduReassembler()
    stream = EPM_BIND + EPM_MAP_REQUEST + EMSMDB_BIND
    out = r.feed(stream[: len(EPM_BIND) + len(EPM_MAP_REQUEST) + 10])
    assert out == [EPM_BIND, EPM_MAP_REQUEST]
    assert r.feed(stream[len(EPM_BIND) + len(EPM_MAP_REQUEST) + 10 :]) == [EMSMDB_BIND]
    assert r.pdus == 3


def test_every_split_point_gives_the_same_pdus() -> None:
    stream = EMSMDB_BIND + REQUEST_WITH_AUTH + RESPONSE_SMALL + RTS_CONN_B1
    for cut1 in range(0, len(stream), 7):
        for cut2 in range(cut1, len(stream), 29):
            r = PduReassembler()
            got = r.feed(stream[:cut1]) + r.feed(stream[cut1:cut2]) + r.feed(stream[cut2:])
            assert got == [EMSMDB_BIND, REQUEST_WITH_AUTH, RESPONSE_SMALL, RTS_CONN_B1]


def test_garbage_marks_broken_after_returning_good_pdus() -> None:
    r = PduReassembler(resync_segments=0)
    assert r.feed(EMSMDB_BIND + b"HTTP/1.1 200 OK\r\n") == [EMSMDB_BIND]
    assert r.broken and r.buffered == 0
    assert r.feed(EMSMDB_BIND) == []  # stays broken
    r.reset()
    assert r.feed(EMSMDB_BIND) == [EMSMDB_BIND]


@pytest.mark.parametrize(
    "first",
    [
        b"\x16\x03\x01\x00\xa5\x01",  # TLS ClientHello
        b"\x05\x00\x0b",  # a fine start ...
    ],
)
def test_first_bytes_decide(first: bytes) -> None:
    r = PduReassembler(resync_segments=0)
    r.feed(first)
    assert r.broken is (first[0] != 5)


def test_resync_on_a_later_segment_when_the_capture_starts_mid_pdu() -> None:
    r = PduReassembler(resync_segments=2)
    assert r.feed(EMSMDB_BIND[30:]) == []  # tail of a PDU whose start was not captured
    assert not r.broken and r.skipped_segments == 1
    assert r.feed(EMSMDB_BIND) == [EMSMDB_BIND]
    assert r.feed(b"garbage after sync") == [] and r.broken  # no second chance once synced


def test_resync_is_bounded() -> None:
    r = PduReassembler(resync_segments=2)
    for _ in range(3):
        assert r.feed(b"GET / HTTP/1.1\r\n") == []
    assert r.broken and r.skipped_segments == 2


def test_tiny_frag_length_marks_broken() -> None:
    r = PduReassembler(resync_segments=0)
    assert r.feed(EMSMDB_BIND[:8] + b"\x08\x00" + EMSMDB_BIND[10:]) == []
    assert r.broken


def test_buffer_bound() -> None:
    r = PduReassembler(max_buffered=100)
    big = bytearray(EMSMDB_BIND[:16])
    big[8:10] = struct.pack("<H", 4000)
    assert r.feed(bytes(big) + bytes(80)) == []
    assert not r.broken
    assert r.feed(bytes(10)) == []
    assert r.broken and r.buffered == 0


# --- Bind, bind_ack, request, response ---------------------------------------------------------


def test_parse_bind_little_and_big_endian() -> None:
    assert parse_bind(EMSMDB_BIND) == [BindContext(0, EMSMDB, (0, 81))]
    assert parse_bind(EMSMDB_BIND_BE) == [BindContext(0, EMSMDB, (0, 81))]


def test_parse_alter_context_with_two_contexts() -> None:
    assert parse_bind(ALTER_CONTEXT_TWO) == [
        BindContext(1, NSPI, (56, 0)),
        BindContext(2, EMSMDB, (0, 81)),
    ]


def test_parse_bind_refuses_other_ptypes() -> None:
    assert parse_bind(REQUEST_WITH_AUTH) == []
    assert parse_bind(b"") == []


def test_parse_bind_ack() -> None:
    ack = parse_bind_ack(BIND_ACK_1032)
    assert ack is not None
    assert ack.secondary_address == "1032"
    assert [(r.result, r.reason, r.transfer_syntax) for r in ack.results] == [(0, 0, NDR)]
    assert parse_bind_ack(EMSMDB_BIND) is None


def test_parse_request_strips_auth_padding_and_verifier() -> None:
    assert parse_request(REQUEST_WITH_AUTH) == (7, 0, 10, bytes.fromhex("deadbeef0102"), 2)


def test_parse_request_with_object_uuid() -> None:
    req = parse_request(REQUEST_WITH_OBJECT)
    assert req is not None
    assert (req.call_id, req.context_id, req.opnum, req.stub, req.auth_level) == (
        8,
        1,
        3,
        b"\xca\xfe\xba\xbe",
        None,
    )


def test_parse_response() -> None:
    assert parse_response(RESPONSE_SMALL) == (7, 0, b"\0\0\0\0")
    assert parse_response(REQUEST_WITH_AUTH) is None


ALL_HAND_BUILT = [
    EMSMDB_BIND,
    EMSMDB_BIND_BE,
    ALTER_CONTEXT_TWO,
    BIND_ACK_1032,
    REQUEST_WITH_AUTH,
    REQUEST_WITH_OBJECT,
    RESPONSE_SMALL,
    EPM_MAP_REQUEST,
    EPM_MAP_RESPONSE,
    RTS_CONN_B1,
]


@pytest.mark.parametrize("whole", ALL_HAND_BUILT)
def test_truncated_pdus_never_raise(whole: bytes) -> None:
    for n in range(len(whole)):
        cut = whole[:n]
        # a PDU cut short is not a whole PDU: nothing may come back, nothing may raise
        assert parse_bind(cut) == []
        assert parse_bind_ack(cut) is None
        assert parse_request(cut) is None
        assert parse_response(cut) is None
        assert parse_rts(cut) is None


@pytest.mark.parametrize("stub", [EPM_MAP_REQUEST_STUB, EPM_MAP_RESPONSE_STUB, PUSH_STUB, PUSH_STUB_ODD])
def test_truncated_stubs_never_raise(stub: bytes) -> None:
    for n in range(len(stub)):
        parse_epm_map_request(stub[:n])
        parse_epm_map_response(stub[:n])
        parse_epm_lookup_response(stub[:n])
        push = parse_register_push_notification(stub[:n])
        assert push is None or stub not in (PUSH_STUB, PUSH_STUB_ODD)


# --- Endpoint mapper -----------------------------------------------------------------------------


def test_parse_tower() -> None:
    assert parse_tower(EMSMDB_TOWER_1032) == Tower(EMSMDB, (0, 81), "tcp", 1032, "192.168.0.2")
    assert parse_tower(tower(5000, bytes(4), proto=0x1F)) == Tower(EMSMDB, (0, 81), "http", 5000, "0.0.0.0")
    assert parse_tower(tower(1029, bytes(4), proto=0x08)).protocol == "udp"  # type: ignore[union-attr]
    assert parse_tower(b"\x01\x00\x01\x00\x0b\x02\x00\x00\x00") is None  # floor 1 is not a UUID


def test_epm_map_request() -> None:
    req = parse_request(EPM_MAP_REQUEST)
    assert req is not None and req.opnum == epm.EPM_OPNUM_MAP
    parsed = parse_epm_map_request(req.stub)
    assert parsed == epm.EpmMapRequest(
        "00000000-0000-0000-0000-000000000000", Tower(EMSMDB, (0, 81), "tcp", 135, "0.0.0.0"), 4
    )


def test_epm_map_response_gives_port_1032_tcp() -> None:
    resp = parse_response(EPM_MAP_RESPONSE)
    assert resp is not None
    assert parse_epm_map_response(resp.stub) == [Tower(EMSMDB, (0, 81), "tcp", 1032, "192.168.0.2")]


def test_epm_map_response_not_registered() -> None:
    stub = bytes(20) + h("00 00 00 00  04 00 00 00  00 00 00 00  00 00 00 00  d6 a0 c9 16")
    assert parse_epm_map_response(stub) == []


def test_epm_map_response_several_towers() -> None:
    towers = [tower(1032, bytes([10, 0, 0, 1])), tower(1033, bytes([10, 0, 0, 2]))]
    body = bytes(20) + struct.pack("<IIII", 2, 4, 0, 2) + struct.pack("<II", 3, 4)
    for t in towers:
        body += struct.pack("<II", len(t), len(t)) + t + b"\0" * (-len(t) % 4)
    body += b"\0\0\0\0"
    assert [(t.port, t.address) for t in parse_epm_map_response(body)] == [
        (1032, "10.0.0.1"),
        (1033, "10.0.0.2"),
    ]


# --- EcRRegisterPushNotification ------------------------------------------------------------------


def test_register_push_notification() -> None:
    assert parse_register_push_notification(PUSH_STUB) == (
        bytes.fromhex("deadbeef01020304"),
        ("192.168.0.173", 1071),
    )


def test_register_push_notification_odd_blob() -> None:
    assert parse_register_push_notification(PUSH_STUB_ODD) == (
        bytes.fromhex("aabbccddee"),
        ("10.0.0.5", 5000),
    )


def test_register_push_notification_inconsistent_counts() -> None:
    bad = PUSH_STUB[:36] + b"\x07\x00" + PUSH_STUB[38:]  # cbContext 7 != max_count 8
    assert parse_register_push_notification(bad) is None


# --- RPC over HTTP ----------------------------------------------------------------------------


def test_rts_conn_b1() -> None:
    rts = parse_rts(RTS_CONN_B1)
    assert rts is not None and rts.flags == rpch.RTS_FLAG_NONE
    assert [c.command for c in rts.commands] == [6, 3, 3, 4, 5, 12]
    assert rts.commands[3].value == struct.pack("<I", 1073741824)
    assert parse_rts(EMSMDB_BIND) is None


def test_ncacn_http_greeting() -> None:
    assert rpch.is_ncacn_http_greeting(b"ncacn_http/1.0")
    assert not rpch.is_ncacn_http_greeting(b"HTTP/1.1 200 OK\r\n")


# --- Interface table ---------------------------------------------------------------------------


def test_load_interfaces_default_table() -> None:
    table = load_interfaces()
    assert table[EMSMDB].service == "information-store"
    assert table[EMSMDB].version == (0, 81)
    assert table[NSPI].service == "system-attendant"
    assert table["1544f5e0-613c-11d1-93df-00c04fd7bd09"].service == "system-attendant"
    assert table["9e8ee830-4459-11ce-979b-00aa005ffebe"].service == "mta-stacks"
    assert table[EPM].service == "rpc-endpoint-mapper"
    drs = table["f5cc59b4-4264-101a-8c59-08002b2f8426"]
    assert drs.decisive is False
    assert all(i.decisive for u, i in table.items() if u != drs.uuid)
    assert len(table) == 18


GOOD_ROW = 'uuid = "A4F1DB00-CA47-1067-B31F-00DD010662DA"\nname = "EMSMDB"\nservice = "information-store"\n'


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("[[interface]\n", None, "not valid TOML"),
        ("", "interface", "one or more"),
        ("[[interface]]\n" + GOOD_ROW + "[[interface]]\n" + GOOD_ROW, "interface[1].uuid", "duplicate UUID"),
        (
            "[[interface]]\n" + GOOD_ROW.replace("information-store", "infostore"),
            "interface[0].service",
            "unknown service 'infostore'",
        ),
        ("[[interface]]\n" + GOOD_ROW.replace("A4F1DB00-", "A4F1DB0-"), "interface[0].uuid", "invalid UUID"),
        ("[[interface]]\n" + GOOD_ROW.replace('name = "EMSMDB"\n', ""), "interface[0].name", "missing"),
        ("[[interface]]\n" + GOOD_ROW + 'version = "0.81.1"\n', "interface[0].version", "invalid version"),
        ("[[interface]]\n" + GOOD_ROW + "version = 0.81\n", "interface[0].version", "invalid version"),
        ("[[interface]]\n" + GOOD_ROW + 'decisive = "no"\n', "interface[0].decisive", "true or false"),
        ("[[interface]]\n" + GOOD_ROW + 'serivce = "www"\n', "interface[0].serivce", "unknown key"),
        ("[[interfaces]]\n" + GOOD_ROW, "interfaces", "unknown top-level key"),
    ],
)
def test_load_interfaces_rejects(tmp_path: Path, text: str, key: str | None, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as info:
        load_interfaces(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert message in info.value.message
    assert isinstance(info.value, ValueError)


def test_load_interfaces_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="no such file"):
        load_interfaces(tmp_path / "absent.toml")


def test_load_interfaces_normalises_uuid_case(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text("[[interface]]\n" + GOOD_ROW)
    assert list(load_interfaces(path)) == [EMSMDB]


# --- Property test ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_parsers_never_raise(data: bytes, cuts: list[int]) -> None:
    for candidate in (data, b"\x05\x00" + data, EMSMDB_BIND[:24] + data):
        parse_bind(candidate)
        parse_bind_ack(candidate)
        parse_request(candidate)
        parse_response(candidate)
        parse_rts(candidate)
        parse_tower(candidate)
        parse_epm_map_request(candidate)
        parse_epm_map_response(candidate)
        parse_epm_lookup_response(candidate)
        parse_register_push_notification(candidate)
    r = PduReassembler(max_buffered=256)
    pos = 0
    for cut in sorted(cuts) + [len(data)]:
        for out in r.feed(data[pos:cut]):
            assert looks_like_dcerpc(out)
        pos = max(pos, cut)
        assert r.buffered <= 256


# --- tshark as an oracle for the hand-built bytes ----------------------------------------------


def write_conversation(path: Path, exchanges: list[tuple[bool, bytes]], *, server_port: int) -> None:
    """A TCP conversation (handshake, then one segment per payload) as a pcap, via scapy."""
    from scapy.all import IP, TCP, Ether, wrpcap

    client, server = ("192.168.0.173", 1072), ("192.168.0.2", server_port)
    cseq, sseq = 1000, 5000
    pkts = [
        Ether()
        / IP(src=client[0], dst=server[0])
        / TCP(sport=client[1], dport=server[1], flags="S", seq=cseq - 1),
        Ether()
        / IP(src=server[0], dst=client[0])
        / TCP(sport=server[1], dport=client[1], flags="SA", seq=sseq - 1, ack=cseq),
        Ether()
        / IP(src=client[0], dst=server[0])
        / TCP(sport=client[1], dport=server[1], flags="A", seq=cseq, ack=sseq),
    ]
    for from_client, data in exchanges:
        if from_client:
            pkts.append(
                Ether()
                / IP(src=client[0], dst=server[0])
                / TCP(sport=client[1], dport=server[1], flags="PA", seq=cseq, ack=sseq)
                / data
            )
            cseq += len(data)
        else:
            pkts.append(
                Ether()
                / IP(src=server[0], dst=client[0])
                / TCP(sport=server[1], dport=client[1], flags="PA", seq=sseq, ack=cseq)
                / data
            )
            sseq += len(data)
    wrpcap(str(path), pkts)


def tshark_fields(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """tshark -T fields rows; a "-d" pair among ``fields`` is passed as a decode-as option."""
    cmd = [tshark_path(), "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "separator=\t"]
    args = iter(fields)
    for f in args:
        cmd += ["-d", next(args)] if f == "-d" else ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def test_hand_built_epm_conversation_matches_tshark(tmp_path: Path) -> None:
    path = tmp_path / "epm.pcap"
    write_conversation(
        path,
        [(True, EPM_BIND), (False, EPM_BIND_ACK), (True, EPM_MAP_REQUEST), (False, EPM_MAP_RESPONSE)],
        server_port=135,
    )
    rows = tshark_fields(
        path,
        "epm",
        "dcerpc.pkt_type",
        "epm.opnum",
        "epm.uuid",
        "epm.tower.proto_id",
        "epm.proto.tcp_port",
        "epm.proto.ip",
        "epm.rc",
    )
    assert rows == [
        [
            "0",
            "3",
            f"00000000-0000-0000-0000-000000000000,{EMSMDB},{NDR}",
            "0x0d,0x0d,0x0b,0x07,0x09",
            "135",
            "0.0.0.0",
            "",
        ],
        ["2", "3", f"{EMSMDB},{NDR}", "0x0d,0x0d,0x0b,0x07,0x09", "1032", "192.168.0.2", "0x00000000"],
    ]
    (ack,) = tshark_fields(path, "dcerpc.pkt_type == 12", "dcerpc.cn_sec_addr", "dcerpc.cn_ack_result")
    assert ack == ["135", "0"]


def test_hand_built_binds_match_tshark(tmp_path: Path) -> None:
    path = tmp_path / "binds.pcap"
    write_conversation(
        path,
        [
            (True, EMSMDB_BIND),
            (False, BIND_ACK_1032),
            (True, ALTER_CONTEXT_TWO),
            (True, REQUEST_WITH_AUTH),
            (True, EMSMDB_BIND_BE),
        ],
        server_port=1032,
    )
    rows = tshark_fields(
        path,
        "dcerpc",
        "dcerpc.pkt_type",
        "dcerpc.cn_bind_to_uuid",
        "dcerpc.cn_bind_if_ver",
        "dcerpc.cn_bind_if_ver_minor",
        "dcerpc.cn_sec_addr",
        "dcerpc.opnum",
        "dcerpc.auth_level",
    )
    assert rows == [
        ["11", EMSMDB, "0", "81", "", "", ""],
        ["12", "", "", "", "1032", "", ""],
        ["14", f"{NSPI},{EMSMDB}", "56,0", "0,81", "", "", ""],
        ["0", "", "", "", "", "10", "2"],
        ["11", EMSMDB, "0", "81", "", "", ""],
    ]


def test_hand_built_rts_matches_tshark(tmp_path: Path) -> None:
    path = tmp_path / "rts.pcap"
    write_conversation(path, [(True, RTS_CONN_B1)], server_port=6001)
    (row,) = tshark_fields(
        path,
        "dcerpc",
        "-d",
        "tcp.port==6001,dcerpc",
        "dcerpc.pkt_type",
        "dcerpc.cn_rts_commands_nb",
        "dcerpc.cn_rts_command",
        "dcerpc.cn_rts_command.channellifetime",
        "dcerpc.cn_rts_command.clientkeepalive",
        "_ws.col.Info",
    )
    ours = parse_rts(RTS_CONN_B1)
    assert ours is not None
    assert (int(row[0]), int(row[1])) == (20, len(ours.commands))
    assert [int(v, 16) for v in split(row[2])] == [c.command for c in ours.commands]
    assert int(row[3]) == struct.unpack("<I", ours.commands[3].value)[0] == 1073741824
    assert int(row[4], 16) == struct.unpack("<I", ours.commands[4].value)[0] == 300000
    assert "CONN/B1" in row[5]  # tshark names the RTS message


# --- Real captures against tshark --------------------------------------------------------------

Key = tuple[str, int, str, int]  # (src, sport, dst, dport)


def tcp_directions(path: Path) -> dict[Key, list[bytes | None]]:
    """Each TCP direction's payloads in sequence order (retransmissions trimmed, None = gap)."""
    from scapy.all import IP, TCP, IPv6, PcapReader

    segments: dict[Key, list[tuple[int, int, bytes]]] = collections.defaultdict(list)
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            if TCP not in pkt or (IP not in pkt and IPv6 not in pkt):
                continue
            tcp = pkt[TCP]
            data = bytes(tcp.payload)
            if IP in pkt:
                ip = pkt[IP]
                data = data[: max(ip.len - ip.ihl * 4 - tcp.dataofs * 4, 0)]  # drop Ethernet padding
            else:
                ip = pkt[IPv6]
            segments[(ip.src, tcp.sport, ip.dst, tcp.dport)].append((tcp.seq, int(tcp.flags), data))
    out: dict[Key, list[bytes | None]] = {}
    for key, segs in segments.items():
        expected: int | None = None
        chunks: list[bytes | None] = []
        for seq, flags, data in segs:
            if flags & 0x02:  # SYN
                expected = (seq + 1) & 0xFFFFFFFF
                continue
            if not data:
                continue
            if expected is None:
                expected = seq
            ahead = (seq - expected) & 0xFFFFFFFF
            if ahead >= 0x80000000:  # (partly) old data: keep only what is new
                behind = (expected - seq) & 0xFFFFFFFF
                if behind >= len(data):
                    continue
                data, seq = data[behind:], expected
            elif ahead:
                chunks.append(None)
            chunks.append(data)
            expected = (seq + len(data)) & 0xFFFFFFFF
        out[key] = chunks
    return out


def direction_pdus(chunks: list[bytes | None]) -> Iterator[bytes]:
    r = PduReassembler()
    for chunk in chunks:
        if chunk is None:
            r.reset()
            continue
        yield from r.feed(chunk)


DIRECT_TCP_CAPTURES = [
    "mapi.pcap",
    "bind-ack-no-inband-null.pcap",
    "cs_window7-join_stream092.pcap",
    "dce_rpc_netlogon.pcapng",
    "dce_rpc_ntlm.pcapng",
    "kerberos135_auth.pcapng",
    "ntlm-empty-av-sequence.pcap",
    "ntlm-unterminated-av-sequence.pcap",
    "arkime-dcerpc_synthetic.pcap",
    "ndpi-kerberos.pcap",
]


def tshark_by_direction(path: Path, display_filter: str, *fields: str) -> dict[Key, list[list[str]]]:
    rows = tshark_fields(path, display_filter, "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport", *fields)
    grouped: dict[Key, list[list[str]]] = collections.defaultdict(list)
    for row in rows:
        grouped[(row[0], int(row[1]), row[2], int(row[3]))].append(row[4:])
    return grouped


def split(field: str) -> list[str]:
    return [v for v in field.split(",") if v]


@pytest.mark.parametrize("name", DIRECT_TCP_CAPTURES)
def test_pdu_sequence_matches_tshark(name: str) -> None:
    """Every DCE/RPC PDU tshark finds on a direct TCP connection comes out of the reassembler,
    in the same order, with the same type and call id."""
    path = PAYLOADS / name
    expected = tshark_by_direction(path, "dcerpc && !smb && !smb2", "dcerpc.pkt_type", "dcerpc.cn_call_id")
    directions = tcp_directions(path)
    assert expected
    for key, rows in expected.items():
        want = [(int(t), int(c)) for row in rows for t, c in zip(split(row[0]), split(row[1]), strict=True)]
        got = []
        for p in direction_pdus(directions[key]):
            hdr = parse_header(p)
            assert hdr is not None
            got.append((hdr.ptype, hdr.call_id))
        assert got == want, key


@pytest.mark.parametrize("name", DIRECT_TCP_CAPTURES)
def test_bind_uuids_match_tshark(name: str) -> None:
    path = PAYLOADS / name
    expected = tshark_by_direction(
        path,
        "dcerpc.cn_bind_to_uuid && !smb && !smb2",
        "dcerpc.cn_bind_to_uuid",
        "dcerpc.cn_bind_if_ver",
        "dcerpc.cn_bind_if_ver_minor",
        "dcerpc.cn_ctx_id",
    )
    directions = tcp_directions(path)
    assert expected
    for key, rows in expected.items():
        want = [
            (u, (int(a), int(b)), int(c))
            for row in rows
            for u, a, b, c in zip(split(row[0]), split(row[1]), split(row[2]), split(row[3]), strict=True)
        ]
        got = [
            (c.interface, c.version, c.context_id)
            for p in direction_pdus(directions[key])
            for c in parse_bind(p)
        ]
        assert got == want, key


@pytest.mark.parametrize("name", DIRECT_TCP_CAPTURES)
def test_bind_ack_addresses_match_tshark(name: str) -> None:
    path = PAYLOADS / name
    expected = tshark_by_direction(
        path,
        "(dcerpc.pkt_type == 12 || dcerpc.pkt_type == 15) && !smb && !smb2",
        "dcerpc.cn_sec_addr",
        "dcerpc.cn_ack_result",
    )
    directions = tcp_directions(path)
    for key, rows in expected.items():
        want = [(row[0], [int(v) for v in split(row[1])]) for row in rows]
        got = []
        for p in direction_pdus(directions[key]):
            ack = parse_bind_ack(p)
            if ack is not None:
                got.append((ack.secondary_address, [r.result for r in ack.results]))
        assert got == want, key


def epm_results(path: Path) -> dict[Key, list[tuple[int, list[Tower]]]]:
    """Per server→client direction on port 135: (opnum, towers) of every EPM response, paired
    with its request by call id."""
    directions = tcp_directions(path)
    out: dict[Key, list[tuple[int, list[Tower]]]] = {}
    for key, chunks in directions.items():
        if key[3] != 135:
            continue
        opnums = {}
        for p in direction_pdus(chunks):
            req = parse_request(p)
            if req is not None:
                opnums[req.call_id] = req.opnum
        back = (key[2], key[3], key[0], key[1])
        results = []
        for p in direction_pdus(directions.get(back, [])):
            resp = parse_response(p)
            if resp is None or resp.call_id not in opnums:
                continue
            opnum = opnums[resp.call_id]
            if opnum == epm.EPM_OPNUM_MAP:
                results.append((opnum, parse_epm_map_response(resp.stub)))
            elif opnum == epm.EPM_OPNUM_LOOKUP:
                entries = parse_epm_lookup_response(resp.stub)
                results.append((opnum, [e.tower for e in entries if e.tower is not None]))
        out[back] = results
    return out


def test_mapi_epm_towers_match_tshark() -> None:
    path = PAYLOADS / "mapi.pcap"
    expected = tshark_by_direction(
        path,
        "epm && dcerpc.pkt_type == 2",
        "epm.opnum",
        "epm.uuid",
        "epm.tower.proto_id",
        "epm.proto.tcp_port",
        "epm.proto.http_port",
        "epm.proto.udp_port",
        "epm.proto.ip",
    )
    got = epm_results(path)
    n_towers = 0
    for key, rows in expected.items():
        assert len(got[key]) == len(rows)
        for (opnum, towers), row in zip(got[key], rows, strict=True):
            assert opnum == int(row[0])
            uuids = split(row[1])
            proto_ids = [int(v, 16) for v in split(row[2])]
            ports = [int(v) for v in split(row[3]) + split(row[4]) + split(row[5])]
            ips = split(row[6])
            # one tower per response here; floors 1-2 are the interface and NDR UUIDs
            (t,) = towers
            assert [t.interface, NDR] == uuids
            assert epm.TRANSPORT_NAMES[proto_ids[3]] == t.protocol
            assert [t.port] == ports
            assert ips == ([t.address] if t.address else [])
            n_towers += 1
    # ept_map: NSPI -> 4997/tcp and EMSMDB -> 1032/tcp at 192.168.0.2; ept_lookup: NSPI -> 5000/http
    summary = sorted(
        (t.interface, t.protocol, t.port, t.address) for rs in got.values() for _, ts in rs for t in ts
    )
    assert summary == [
        (EMSMDB, "tcp", 1032, "192.168.0.2"),
        (NSPI, "http", 5000, None),
        (NSPI, "tcp", 4997, "192.168.0.2"),
    ]
    assert n_towers == 3


def test_mapi_epm_lookup_annotation_matches_tshark() -> None:
    path = PAYLOADS / "mapi.pcap"
    (row,) = tshark_fields(path, "epm.opnum == 2 && dcerpc.pkt_type == 2", "epm.annotation", "epm.object")
    entries = []
    directions = tcp_directions(path)
    for key, chunks in directions.items():
        if key[1] == 135:
            for p in direction_pdus(chunks):
                resp = parse_response(p)
                if resp is not None:
                    entries += parse_epm_lookup_response(resp.stub)
    assert [(e.annotation, e.object) for e in entries] == [(row[0], "00000000-0000-0000-0000-000000000000")]


def test_mapi_epm_map_requests_match_tshark() -> None:
    path = PAYLOADS / "mapi.pcap"
    rows = tshark_fields(
        path, "epm.opnum == 3 && dcerpc.pkt_type == 0", "epm.uuid", "epm.proto.tcp_port", "epm.max_towers"
    )
    got = []
    for key, chunks in tcp_directions(path).items():
        if key[3] == 135:
            for p in direction_pdus(chunks):
                req = parse_request(p)
                if req is not None and req.opnum == epm.EPM_OPNUM_MAP:
                    m = parse_epm_map_request(req.stub)
                    assert m is not None and m.tower is not None
                    got.append(
                        [f"{m.object},{m.tower.interface},{NDR}", str(m.tower.port), str(m.max_towers)]
                    )
    assert sorted(got) == sorted(rows)
    assert len(got) == 2


def test_mapi_register_push_notification() -> None:
    """Outlook's EcRRegisterPushNotification in mapi.pcap (frame 797, auth level 2 = not
    encrypted). tshark's old EMSMDB dissector misreads this stub, so the expected values come
    from the fact-sheet layout and the capture itself: the callback 192.168.0.173:1071 is the
    client's address, and the only UDP datagram from the store (frame 564, to another client)
    is an 8-byte blob of the same shape (d0 27 ...)."""
    directions = tcp_directions(PAYLOADS / "mapi.pcap")
    contexts: dict[int, str] = {}
    found = []
    for p in direction_pdus(directions[("192.168.0.173", 1073, "192.168.0.2", 1032)]):
        for c in parse_bind(p):
            contexts[c.context_id] = c.interface
        req = parse_request(p)
        if (
            req is not None
            and contexts.get(req.context_id) == EMSMDB
            and req.opnum == emsmdb.EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION
        ):
            assert req.auth_level == 2
            found.append(parse_register_push_notification(req.stub))
    assert found == [(bytes.fromhex("d0273b0200e0fd7f"), ("192.168.0.173", 1071))]


@pytest.mark.parametrize(
    "name", ["20-fids.pcap", "20-fids-no-close.pcap", "mapi.pcap", "kerberos445_auth.pcapng"]
)
def test_smb_carried_binds_match_tshark(name: str) -> None:
    """Binds inside SMB named-pipe writes are not reassembled by PduReassembler (the pipeline
    does not parse SMB), but parse_bind still reads them when pointed at one."""
    path = PAYLOADS / name
    rows = tshark_fields(
        path, "dcerpc.cn_bind_to_uuid && (smb || smb2)", "dcerpc.cn_bind_to_uuid", "dcerpc.cn_bind_if_ver"
    )
    want = sorted((u, int(v)) for row in rows for u, v in zip(split(row[0]), split(row[1]), strict=True))
    got = []
    for key, chunks in tcp_directions(path).items():
        if 139 not in (key[1], key[3]) and 445 not in (key[1], key[3]):
            continue
        for chunk in chunks:
            if chunk is None:
                continue
            start = chunk.find(b"\x05\x00\x0b")
            while start >= 0:
                got += [(c.interface, c.version[0]) for c in parse_bind(chunk[start:])]
                start = chunk.find(b"\x05\x00\x0b", start + 1)
    assert sorted(got) == want
