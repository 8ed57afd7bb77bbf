"""Tests for pcapclass._firstlook.deciding_bytes: what it zeroes is read by no verdict, so a
payload and its deciding bytes get the same verdicts, and binds that differ only by call id,
association group or token share them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from pcapclass._firstlook import deciding_bytes
from test_identify import fixture_payloads

from pcapclass.evidence import _BIND_PTYPES, SIGNATURE_TABLES, EvidenceCollector
from pcapclass.signatures import identify

EMSMDB = bytes.fromhex("00dbf1a447ca6710b31f00dd010662da")
OTHER = bytes.fromhex("083afce1f4051fd0b1a60000000000dd")  # some other interface
NDR = bytes.fromhex("045d888aeb1cc9119fe808002b10486002000000")


def deciding(*payloads: bytes) -> list[bytes]:
    length = np.array([len(p) for p in payloads], dtype=np.int64)
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    buf, off, cut, _ = deciding_bytes(data, np.cumsum(length) - length, length, np.zeros(len(payloads), np.int64), _BIND_PTYPES)
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


@pytest.mark.parametrize(("server_port", "server_is_src"), [(135, False), (135, True), (6001, False), (-1, False)])
def test_a_payload_and_its_deciding_bytes_get_the_same_verdicts(server_port: int, server_is_src: bool) -> None:
    payloads = [p for p in fixture_payloads() if identify(p, from_server=True) == "dcerpc"]
    payloads += [bind(3, 77, EMSMDB, b"T" * 24), bind(3, 77, EMSMDB) + bind(4, 77, OTHER)[:30]]
    assert len(payloads) > 300
    col = EvidenceCollector()
    for payload, kept in zip(payloads, deciding(*payloads)):
        facts = SIGNATURE_TABLES.facts(np.frombuffer(payload, np.uint8), np.zeros(1, np.int64), np.array([len(payload)])).tolist()[0]
        want = col._inspect(payload, server_port, server_is_src, facts), col._preset
        assert (col._inspect(kept, server_port, server_is_src, facts), col._preset) == want
