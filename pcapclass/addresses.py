"""128-bit addresses as (hi, lo) uint64 pairs: formatting, and matching against networks.

IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``) so one pair of columns serves both families;
the standard library's ``ipaddress`` does the parsing and printing, once per distinct address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_V4_MAPPED = 0xFFFF_0000_0000


def parse_networks(specs: Iterable[str]) -> list[Network]:
    """``10.0.0.10``, ``10.0.0.0/24``, ``2001:db8::/32`` -> networks; ValueError names the bad one."""
    nets: list[Network] = []
    for spec in specs:
        try:
            nets.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or CIDR network: {spec!r}") from None
    return nets


def _bounds(net: Network) -> tuple[int, int]:
    lo, hi = int(net.network_address), int(net.broadcast_address)
    if net.version == 4:
        lo, hi = lo | (_V4_MAPPED), hi | (_V4_MAPPED)
    return lo, hi


def sort_key(text: str) -> tuple[int, int]:
    """Order addresses as people read them: IPv4 before IPv6, each numerically."""
    addr = ipaddress.ip_address(text)
    return addr.version, int(addr)


def in_networks(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], nets: Sequence[Network]) -> npt.NDArray[np.bool_]:
    """Which addresses fall inside any of ``nets`` (a 128-bit range compare per network)."""
    mask = np.zeros(hi.shape, dtype=bool)
    for net in nets:
        first, last = _bounds(net)
        f_hi, f_lo = np.uint64(first >> 64), np.uint64(first & (2**64 - 1))
        l_hi, l_lo = np.uint64(last >> 64), np.uint64(last & (2**64 - 1))
        above = (hi > f_hi) | ((hi == f_hi) & (lo >= f_lo))
        below = (hi < l_hi) | ((hi == l_hi) & (lo <= l_lo))
        mask |= above & below
    return mask


def pair_index(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> pd.MultiIndex:
    """The (hi, lo) pairs as a MultiIndex, for exact set membership with ``isin``."""
    return pd.MultiIndex.from_arrays([hi, lo])


def format_addresses(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> npt.NDArray[np.object_]:
    """Addresses as text (dotted quad for IPv4-mapped); each distinct address formatted once.

    A capture has far fewer distinct addresses than flows, so the Python string work is done
    per distinct address and spread back with numpy indexing.
    """
    out = np.empty(hi.shape[0], dtype=object)
    v4 = (hi == 0) & ((lo >> np.uint64(32)) == np.uint64(0xFFFF))
    if v4.any():
        uniq, inverse = np.unique(lo[v4] & np.uint64(0xFFFF_FFFF), return_inverse=True)
        octets = [((uniq >> np.uint64(s)) & np.uint64(255)).tolist() for s in (24, 16, 8, 0)]
        text = np.array([f"{a}.{b}.{c}.{d}" for a, b, c, d in zip(*octets)], dtype=object)
        out[v4] = text[inverse.reshape(-1)]
    v6 = np.flatnonzero(~v4)
    if v6.size:
        h, l = hi[v6], lo[v6]
        order = np.lexsort((l, h))
        first = np.ones(v6.size, dtype=bool)
        first[1:] = (h[order][1:] != h[order][:-1]) | (l[order][1:] != l[order][:-1])
        rank = np.empty(v6.size, dtype=np.int64)
        rank[order] = np.cumsum(first) - 1
        reps = order[first]
        raw = np.stack([h[reps], l[reps]], axis=1).astype(">u8").tobytes()
        ntop = socket.inet_ntop
        text = np.array([ntop(socket.AF_INET6, raw[i : i + 16]) for i in range(0, len(raw), 16)], dtype=object)
        out[v6] = text[rank]
    return out
