"""EMSMDB (MS-OXCRPC): the store's interface, and the push-notification registration a client's
``EcRRegisterPushNotification`` call carries.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from .dcerpc import align4

__all__ = ["PushRegistration", "parse_register_push_notification"]

# --- EMSMDB -----------------------------------------------------------------------------------
# MS-OXCRPC 3.1.4 (opnums), 3.1.4.5 (EcRRegisterPushNotification); docs/exchange-wire-facts.md §6.
EMSMDB_INTERFACE = "a4f1db00-ca47-1067-b31f-00dd010662da"
EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION = 4
CONTEXT_HANDLE_LEN = 20
AF_INET_WINDOWS = 2
AF_INET6_WINDOWS = 23


class PushRegistration(NamedTuple):
    """EcRRegisterPushNotification's opaque blob and the address the store will send it to."""

    context: bytes  # rgbContext: the exact payload of later UDP notifications
    callback: tuple[str, int]  # (address, port) from rgbCallbackAddress


def parse_register_push_notification(stub: bytes, *, little_endian: bool = True) -> PushRegistration | None:
    """The context blob and callback address of an EcRRegisterPushNotification (EMSMDB
    opnum 4) request stub; None when it does not parse (e.g. an encrypted stub).

    Layout (MS-OXCRPC 3.1.4.5; docs/exchange-wire-facts.md §6; matched on mapi.pcap frame 797):
    context handle (20), iRpc u32, max_count u32, rgbContext (cbContext bytes), pad to 2,
    cbContext u16, pad to 4, grbitAdviseBits u32, max_count u32, rgbCallbackAddress (a Windows
    SOCKADDR: family u16 little-endian, port big-endian, address), pad to 2,
    cbCallbackAddress u16. Callers should skip stubs whose request had auth_level 6.
    """
    order = "<" if little_endian else ">"
    try:
        off = CONTEXT_HANDLE_LEN + 4
        (ctx_count,) = struct.unpack_from(order + "I", stub, off)
        off += 4
        if off + ctx_count > len(stub):
            return None
        context = stub[off : off + ctx_count]
        off = (off + ctx_count + 1) & ~1
        (cb_context,) = struct.unpack_from(order + "H", stub, off)
        off = align4(off + 2)
        _advise_bits, addr_count = struct.unpack_from(order + "II", stub, off)
        off += 8
        if off + addr_count > len(stub):
            return None
        sockaddr = stub[off : off + addr_count]
        off = (off + addr_count + 1) & ~1
        (cb_address,) = struct.unpack_from(order + "H", stub, off)
    except struct.error:
        return None
    if cb_context != ctx_count or cb_address != addr_count or len(sockaddr) < 8:
        return None
    family = sockaddr[0] | (sockaddr[1] << 8)  # SOCKADDR family: host order (little-endian)
    port = (sockaddr[2] << 8) | sockaddr[3]
    if family == AF_INET_WINDOWS:
        address = str(ipaddress.IPv4Address(sockaddr[4:8]))
    elif family == AF_INET6_WINDOWS and len(sockaddr) >= 24:
        address = str(ipaddress.IPv6Address(sockaddr[8:24]))
    else:
        return None
    return PushRegistration(bytes(context), (address, port))
