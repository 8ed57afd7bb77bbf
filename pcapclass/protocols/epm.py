"""The DCE/RPC endpoint mapper: protocol towers, and ept_map / ept_lookup requests and replies.

Pure byte parsers over a call's stub (``dcerpc.parse_request`` / ``parse_response`` give it),
``None`` or an empty list for bytes that are not what they parse.
"""

from __future__ import annotations

import ipaddress
import struct
import uuid
from typing import NamedTuple

from .dcerpc import align4, read_uuid

__all__ = ["EpmEntry", "EpmMapRequest", "Tower", "epm_lookup_towers", "epm_map_towers", "parse_epm_lookup_response", "parse_epm_map_request",
           "parse_epm_map_response", "parse_tower"]  # fmt: skip

# --- Endpoint mapper ------------------------------------------------------------------------
# C706 appendix L (towers) and appendix O (ept interface); wireshark packet-dcerpc-epm.c;
# impacket epm.py.
EPM_INTERFACE = "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
EPM_OPNUM_LOOKUP = 2
EPM_OPNUM_MAP = 3
EPM_ENTRY_HANDLE_LEN = 20
EPT_S_NOT_REGISTERED = 0x16C9A0D6

# Tower floor protocol identifiers (C706 appendix I; wireshark packet-dcerpc-epm.c).
EPM_PROTOCOL_UUID = 0x0D
EPM_PROTOCOL_RPC_CL = 0x0A
EPM_PROTOCOL_RPC_CO = 0x0B
EPM_PROTOCOL_TCP = 0x07
EPM_PROTOCOL_UDP = 0x08
EPM_PROTOCOL_IP = 0x09
EPM_PROTOCOL_NAMED_PIPE = 0x0F
EPM_PROTOCOL_LRPC = 0x10
EPM_PROTOCOL_NETBIOS = 0x11
EPM_PROTOCOL_HTTP = 0x1F
TRANSPORT_NAMES = {
    EPM_PROTOCOL_TCP: "tcp",
    EPM_PROTOCOL_UDP: "udp",
    EPM_PROTOCOL_HTTP: "http",
    EPM_PROTOCOL_NAMED_PIPE: "np",
    EPM_PROTOCOL_LRPC: "lrpc",
    EPM_PROTOCOL_NETBIOS: "netbios",
}
#: transports whose floor-4 right-hand side is a big-endian port number
PORT_TRANSPORTS = frozenset({EPM_PROTOCOL_TCP, EPM_PROTOCOL_UDP, EPM_PROTOCOL_HTTP})


class Tower(NamedTuple):
    """A protocol tower: the interface it names and where that interface listens."""

    interface: str
    version: tuple[int, int]
    protocol: str | None  # 'tcp', 'udp', 'http', 'np', 'lrpc', 'netbios', '0x..' or None
    port: int | None  # floor-4 port (big-endian on the wire) for tcp/udp/http
    address: str | None  # floor-5 IPv4 address; may be '0.0.0.0'; None without an IP floor


class EpmMapRequest(NamedTuple):
    """An ept_map request: the object and the tower the client asks to be completed."""

    object: str | None
    tower: Tower | None
    max_towers: int


class EpmEntry(NamedTuple):
    """One ept_lookup entry."""

    object: str
    tower: Tower | None
    annotation: str


def parse_tower(tower: bytes) -> Tower | None:
    """Decode a protocol tower (twr_t octets); None unless floor 1 names an interface.

    Tower encoding is fixed by C706 appendix L, independent of the PDU's drep: floor count and
    LHS/RHS lengths little-endian, floor-1 UUID in little-endian field order, ports big-endian,
    IPv4 addresses in network order.
    """
    try:
        (floor_count,) = struct.unpack_from("<H", tower, 0)
        off = 2
        floors: list[tuple[bytes, bytes]] = []
        for _ in range(floor_count):
            (lhs_len,) = struct.unpack_from("<H", tower, off)
            lhs = tower[off + 2 : off + 2 + lhs_len]
            off += 2 + lhs_len
            (rhs_len,) = struct.unpack_from("<H", tower, off)
            rhs = tower[off + 2 : off + 2 + rhs_len]
            off += 2 + rhs_len
            if len(lhs) != lhs_len or len(rhs) != rhs_len or not lhs:
                return None
            floors.append((lhs, rhs))
    except struct.error:
        return None
    if not floors:
        return None
    lhs, rhs = floors[0]
    if lhs[0] != EPM_PROTOCOL_UUID or len(lhs) < 19 or len(rhs) < 2:
        return None
    interface = str(uuid.UUID(bytes_le=lhs[1:17]))
    (major,) = struct.unpack_from("<H", lhs, 17)
    (minor,) = struct.unpack_from("<H", rhs, 0)
    protocol: str | None = None
    port: int | None = None
    address: str | None = None
    if len(floors) >= 4:
        lhs4, rhs4 = floors[3]
        proto_id = lhs4[0]
        protocol = TRANSPORT_NAMES.get(proto_id, f"0x{proto_id:02x}")
        if proto_id in PORT_TRANSPORTS and len(rhs4) == 2:
            port = (rhs4[0] << 8) | rhs4[1]
    for lhs_n, rhs_n in floors[4:]:
        if lhs_n[0] == EPM_PROTOCOL_IP and len(rhs_n) == 4:
            address = str(ipaddress.IPv4Address(rhs_n))
            break
    return Tower(interface, (major, minor), protocol, port, address)


def _read_tower(stub: bytes, off: int, order: str) -> tuple[Tower | None, int]:
    """A conformant twr_t at ``off`` (max_count, tower_length, octets); returns the next offset."""
    max_count, length = struct.unpack_from(order + "II", stub, off)
    off += 8
    if length > max_count or off + length > len(stub):
        raise struct.error("tower overruns stub")
    tower = parse_tower(stub[off : off + length])
    return tower, align4(off + length)


def parse_epm_map_request(stub: bytes, *, little_endian: bool = True) -> EpmMapRequest | None:
    """The object and tower of an ept_map (opnum 3) request stub; None if it does not parse.

    Stub layout (impacket epm.py ept_map; wireshark packet-dcerpc-epm.c): object pointer u32
    (+ UUID when non-null), tower pointer u32 (+ max_count, tower_length, octets, pad to 4),
    entry handle (20 bytes), max_towers u32.
    """
    order = "<" if little_endian else ">"
    try:
        (object_ptr,) = struct.unpack_from(order + "I", stub, 0)
        off = 4
        obj: str | None = None
        if object_ptr:
            obj = read_uuid(stub, off, order)
            off += 16
        (tower_ptr,) = struct.unpack_from(order + "I", stub, off)
        off += 4
        tower: Tower | None = None
        if tower_ptr:
            tower, off = _read_tower(stub, off, order)
        off += EPM_ENTRY_HANDLE_LEN
        (max_towers,) = struct.unpack_from(order + "I", stub, off)
    except struct.error:
        return None
    return EpmMapRequest(obj, tower, max_towers)


def parse_epm_map_response(stub: bytes, *, little_endian: bool = True) -> list[Tower]:
    """The towers of an ept_map (opnum 3) response stub; [] when none parse or status != 0.

    Stub layout (impacket epm.py; wireshark packet-dcerpc-epm.c): entry handle (20),
    num_towers u32, conformant varying array header (max_count, offset, actual_count), then
    actual_count tower pointers, then each non-null tower (max_count, tower_length, octets,
    pad to 4), then status u32 (0 = ok, 0x16c9a0d6 = not registered).
    """
    return epm_map_towers(stub, little_endian=little_endian)[0]


def epm_map_towers(stub: bytes, *, little_endian: bool = True) -> tuple[list[Tower], bool]:
    """``parse_epm_map_response``, and whether the stub parsed to its status (False: the
    towers that parsed before it stopped, or none).

    >>> epm_map_towers(bytes(20) + bytes(16) + bytes(4))
    ([], True)
    >>> epm_map_towers(bytes(30))
    ([], False)
    """
    order = "<" if little_endian else ">"
    towers: list[Tower] = []
    try:
        off = EPM_ENTRY_HANDLE_LEN
        _num_towers, _max_count, _offset, actual = struct.unpack_from(order + "IIII", stub, off)
        off += 16
        if actual * 4 > len(stub) - off:
            return [], False
        pointers = struct.unpack_from(f"{order}{actual}I", stub, off)
        off += 4 * actual
        for ptr in pointers:
            if not ptr:
                continue
            tower, off = _read_tower(stub, off, order)
            if tower is not None:
                towers.append(tower)
        (status,) = struct.unpack_from(order + "I", stub, off)
    except struct.error:
        return towers, False
    return (towers if status == 0 else []), True


def parse_epm_lookup_response(stub: bytes, *, little_endian: bool = True) -> list[EpmEntry]:
    """The entries of an ept_lookup (opnum 2) response stub; [] when none parse.

    Layout confirmed against tshark on the Exchange 2003 capture zeek mapi.pcap (frame 505):
    entry handle (20), num_ents u32, array header (max_count, offset, actual_count), then per
    entry inline: object UUID (16), tower pointer u32, annotation as a varying string (offset
    u32, length u32, chars incl. NUL, pad to 4); then the towers of the non-null pointers
    (max_count, tower_length, octets, pad to 4), in entry order; then status u32.
    """
    return _lookup_entries(stub, "<" if little_endian else ">")[0]


def epm_lookup_towers(stub: bytes, *, little_endian: bool = True) -> tuple[list[Tower], bool]:
    """The towers of ``parse_epm_lookup_response``'s entries, and whether the stub parsed
    through its last entry's tower (False: those of the entries before it stopped, or none)."""
    entries, parsed = _lookup_entries(stub, "<" if little_endian else ">")
    return [e.tower for e in entries if e.tower is not None], parsed


def _lookup_entries(stub: bytes, order: str) -> tuple[list[EpmEntry], bool]:
    entries: list[tuple[str, int, str]] = []
    result: list[EpmEntry] = []
    try:
        off = EPM_ENTRY_HANDLE_LEN
        _num, _max_count, _offset, actual = struct.unpack_from(order + "IIII", stub, off)
        off += 16
        if actual * 28 > len(stub) - off:
            return [], False
        for _ in range(actual):
            obj = read_uuid(stub, off, order)
            tower_ptr, _ann_offset, ann_len = struct.unpack_from(order + "III", stub, off + 16)
            off += 28
            if off + ann_len > len(stub):
                return [], False
            annotation = stub[off : off + ann_len].split(b"\0", 1)[0].decode("ascii", "replace")
            off = align4(off + ann_len)
            entries.append((obj, tower_ptr, annotation))
        for obj, tower_ptr, annotation in entries:
            tower: Tower | None = None
            if tower_ptr:
                tower, off = _read_tower(stub, off, order)
            result.append(EpmEntry(obj, tower, annotation))
    except struct.error:
        return result, False
    return result, True
