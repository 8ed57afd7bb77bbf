"""Link-layer header types pcapclass decodes, named as tcpdump.org's LINKTYPE_ registry names them, and how each is decoded.

Source: https://www.tcpdump.org/linktypes.html (the values stored in pcap and pcapng files).
"""

from __future__ import annotations

from enum import IntEnum

LINKTYPE_NULL = 0  # BSD loopback: 4-byte protocol family in the writer's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version nibble decides
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte family in network byte order
LINKTYPE_LINUX_SLL = 113  # Linux cooked capture v1, 16-byte header
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276  # Linux cooked capture v2, 20-byte header
#: DLT_RAW as some BSDs numbered it in files (libpcap maps both to LINKTYPE_RAW)
DLT_RAW_BSD = (12, 14)


class LinkLayer(IntEnum):
    """The link-layer header walks ``_decode.pyx`` knows: where IP starts and how its version
    is told. A link type with one of these layouts is one entry of ``LINKTYPES``."""

    ETHERNET = 1  # 14-byte header, ethertype at byte 12 (802.1Q/802.1ad tags after it)
    LINUX_SLL = 2  # 16-byte header, ethertype at byte 14
    LINUX_SLL2 = 3  # 20-byte header, ethertype at byte 0
    IP = 4  # no header: the IP version nibble decides
    FAMILY = 5  # 4-byte address family, in either byte order (BSD loopback)


#: every link type pcapclass decodes: its name in messages, and the header walk that reaches IP
LINKTYPES: dict[int, tuple[str, LinkLayer]] = {
    LINKTYPE_NULL: ("null", LinkLayer.FAMILY),
    LINKTYPE_ETHERNET: ("ethernet", LinkLayer.ETHERNET),
    LINKTYPE_RAW: ("raw", LinkLayer.IP),
    DLT_RAW_BSD[0]: ("raw", LinkLayer.IP),
    DLT_RAW_BSD[1]: ("raw", LinkLayer.IP),
    LINKTYPE_LOOP: ("loop", LinkLayer.FAMILY),
    LINKTYPE_LINUX_SLL: ("linux-sll", LinkLayer.LINUX_SLL),
    LINKTYPE_IPV4: ("ipv4", LinkLayer.IP),
    LINKTYPE_IPV6: ("ipv6", LinkLayer.IP),
    LINKTYPE_LINUX_SLL2: ("linux-sll2", LinkLayer.LINUX_SLL2),
}

NAMES: dict[int, str] = {linktype: name for linktype, (name, _) in LINKTYPES.items()}
SUPPORTED: frozenset[int] = frozenset(LINKTYPES)


def describe(linktype: int) -> str:
    """``'ethernet (1)'`` for messages; unknown values are shown by number."""
    return f"{NAMES.get(linktype, 'unsupported')} ({linktype})"
