"""RPC over HTTP (MS-RPCH): the legacy ``ncacn_http`` greeting and RTS PDUs."""

from __future__ import annotations

import struct
from typing import NamedTuple

from .dcerpc import CO_HEADER_LEN, PTYPE_RTS, checked_pdu

__all__ = ["NCACN_HTTP_GREETING", "Rts", "RtsCommand", "is_ncacn_http_greeting", "parse_rts"]

# --- RPC over HTTP (MS-RPCH) ------------------------------------------------------------------
# MS-RPCH 2.1.2.2.1: the legacy server response sent first by a back-end on 6001/6002/6004/593.
NCACN_HTTP_GREETING = b"ncacn_http/1.0"
# MS-RPCH 2.2.3.6.1 RTS header flags.
RTS_FLAG_NONE = 0x0000
RTS_FLAG_PING = 0x0001
RTS_FLAG_OTHER_CMD = 0x0002
RTS_FLAG_RECYCLE_CHANNEL = 0x0004
RTS_FLAG_IN_CHANNEL = 0x0008
RTS_FLAG_OUT_CHANNEL = 0x0010
RTS_FLAG_EOF = 0x0020
RTS_FLAG_ECHO = 0x0040
# MS-RPCH 2.2.3.5 RTS commands; value sizes after the 4-byte CommandType (variable ones: None).
RTS_CMD_RECEIVE_WINDOW_SIZE = 0
RTS_CMD_FLOW_CONTROL_ACK = 1
RTS_CMD_CONNECTION_TIMEOUT = 2
RTS_CMD_COOKIE = 3
RTS_CMD_CHANNEL_LIFETIME = 4
RTS_CMD_CLIENT_KEEPALIVE = 5
RTS_CMD_VERSION = 6
RTS_CMD_EMPTY = 7
RTS_CMD_PADDING = 8
RTS_CMD_NEGATIVE_ANCE = 9
RTS_CMD_ANCE = 10
RTS_CMD_CLIENT_ADDRESS = 11
RTS_CMD_ASSOCIATION_GROUP_ID = 12
RTS_CMD_DESTINATION = 13
RTS_CMD_PING_TRAFFIC_SENT_NOTIFY = 14
_RTS_FIXED_VALUE_LEN: dict[int, int] = {
    RTS_CMD_RECEIVE_WINDOW_SIZE: 4,
    RTS_CMD_FLOW_CONTROL_ACK: 24,
    RTS_CMD_CONNECTION_TIMEOUT: 4,
    RTS_CMD_COOKIE: 16,
    RTS_CMD_CHANNEL_LIFETIME: 4,
    RTS_CMD_CLIENT_KEEPALIVE: 4,
    RTS_CMD_VERSION: 4,
    RTS_CMD_EMPTY: 0,
    RTS_CMD_NEGATIVE_ANCE: 0,
    RTS_CMD_ANCE: 0,
    RTS_CMD_ASSOCIATION_GROUP_ID: 16,
    RTS_CMD_DESTINATION: 4,
    RTS_CMD_PING_TRAFFIC_SENT_NOTIFY: 4,
}


class RtsCommand(NamedTuple):
    """One RTS command: its type and its value bytes (without the 4-byte type)."""

    command: int
    value: bytes


class Rts(NamedTuple):
    """An RTS PDU (MS-RPCH 2.2.3.6): flags and commands."""

    flags: int
    commands: tuple[RtsCommand, ...]


def is_ncacn_http_greeting(payload: bytes) -> bool:
    """Whether a back-end's first bytes are MS-RPCH's legacy server response ``ncacn_http/1.0``."""
    return payload.startswith(NCACN_HTTP_GREETING)


def parse_rts(pdu: bytes) -> Rts | None:
    """Flags and commands of an RTS (20) PDU (MS-RPCH 2.2.3.6); None for anything else.

    A command whose type is unknown stops the walk (its size is unknown); the commands read
    so far are returned.
    """
    checked = checked_pdu(pdu, (PTYPE_RTS,))
    if checked is None:
        return None
    order, frag_length, _ = checked
    try:
        flags, n_commands = struct.unpack_from(order + "HH", pdu, CO_HEADER_LEN)
        off = CO_HEADER_LEN + 4
        commands: list[RtsCommand] = []
        for _ in range(n_commands):
            (command,) = struct.unpack_from(order + "I", pdu, off)
            off += 4
            size = _RTS_FIXED_VALUE_LEN.get(command)
            if size is None:
                if command == RTS_CMD_PADDING:
                    (count,) = struct.unpack_from(order + "I", pdu, off)
                    size = 4 + count
                elif command == RTS_CMD_CLIENT_ADDRESS:
                    (address_type,) = struct.unpack_from(order + "I", pdu, off)
                    size = 4 + (4 if address_type == 0 else 16) + 12
                else:
                    break
            if off + size > frag_length:
                break
            commands.append(RtsCommand(command, pdu[off : off + size]))
            off += size
    except struct.error:
        return None
    return Rts(flags, tuple(commands))
