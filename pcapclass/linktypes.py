"""Link-layer header types pcapclass decodes, named as tcpdump.org's LINKTYPE_ registry names them.

Source: https://www.tcpdump.org/linktypes.html (the values stored in pcap and pcapng files).
"""

from __future__ import annotations

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

NAMES: dict[int, str] = {
    LINKTYPE_NULL: "null",
    LINKTYPE_ETHERNET: "ethernet",
    LINKTYPE_RAW: "raw",
    12: "raw",
    14: "raw",
    LINKTYPE_LOOP: "loop",
    LINKTYPE_LINUX_SLL: "linux-sll",
    LINKTYPE_IPV4: "ipv4",
    LINKTYPE_IPV6: "ipv6",
    LINKTYPE_LINUX_SLL2: "linux-sll2",
}

SUPPORTED: frozenset[int] = frozenset(NAMES)


def describe(linktype: int) -> str:
    """``'ethernet (1)'`` for messages; unknown values are shown by number."""
    return f"{NAMES.get(linktype, 'unsupported')} ({linktype})"
