"""128-bit addresses as (hi, lo) uint64 pairs: formatting, and matching against networks.

IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``) so one pair of columns serves both families;
the standard library's ``ipaddress`` does the parsing and printing, once per distinct address.
"""

from __future__ import annotations

import ipaddress
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
    """Addresses as text (dotted quad for IPv4-mapped); each distinct address formatted once."""
    if not hi.size:
        return np.zeros(0, dtype=object)
    pairs = np.stack([hi, lo], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    text = np.array([_format(int(h), int(l)) for h, l in uniq], dtype=object)
    return text[inverse.reshape(-1)]


def _format(hi: int, lo: int) -> str:
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))
