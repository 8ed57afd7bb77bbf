"""128-bit addresses as (hi, lo) uint64 pairs: formatting, and matching against networks.

IPv4 is stored IPv4-mapped (``::ffff:a.b.c.d``) so one pair of columns serves both families;
the standard library's ``ipaddress`` parses networks; a compiled kernel prints addresses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from ._addrtext import address_text

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


def _mix(cols: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    h = np.zeros(cols[0].shape[0], dtype=np.uint64)
    for c in cols:
        h = (h ^ c) * np.uint64(0x9E37_79B9_7F4A_7C15)
        h ^= h >> np.uint64(29)
    return h


def distinct_rows(cols: Sequence[npt.NDArray[np.uint64]]) -> list[npt.NDArray[np.uint64]]:
    """The distinct rows of ``cols`` (uint64 columns of equal length: addresses or address
    pairs), in the columns' order: one sort, no hash table per column (a MultiIndex's)."""
    order = np.lexsort(cols[::-1])
    cols = [c[order] for c in cols]
    new = np.ones(order.size, dtype=bool)
    new[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in cols])
    return [c[new] for c in cols]


class RowSet:
    """The entries of a table of addresses or address pairs (uint64 columns, one per level:
    hi, lo of each address), made ready once for the rows of many blocks to be looked up in it.

    Why not ``MultiIndex.isin``: it factorizes every level of the rows looked up, a hash table
    per level. Here a 64-bit mix of each row finds the table's entries with the same mix (one
    hash table, of the table's distinct mixes, built at the first lookup and kept), and the
    columns themselves decide, so that a collision of mixes costs a comparison, never a wrong
    answer.
    """

    def __init__(self, table: Sequence[npt.NDArray[np.uint64]]) -> None:
        levels = [np.asarray(level, dtype=np.uint64) for level in table]
        t_mix = _mix(levels)
        order = np.argsort(t_mix)
        self._mix, self._levels = t_mix[order], [level[order] for level in levels]
        # where each distinct mix first stands in the table
        self._first = np.flatnonzero(np.concatenate(([True], self._mix[1:] != self._mix[:-1]))) if t_mix.size else np.zeros(0, np.int64)
        self._index = pd.Index(self._mix[self._first], copy=False)

    def __len__(self) -> int:
        return int(self._mix.size)

    def contains(self, cols: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.bool_]:
        """Whether each row of ``cols`` (one column per level) is an entry."""
        n = cols[0].shape[0]
        found = np.zeros(n, dtype=bool)
        if not self._mix.size or not n:
            return found
        t_mix, levels = self._mix, self._levels
        # where each row's mix first stands in the table, found by hashing (a binary search per
        # row cost four times as much); the table's size where it does not
        mix = _mix(cols)
        where = self._index.get_indexer(mix)  # type: ignore[arg-type]  # pandas takes an array; its stubs want an Index
        at = np.where(where >= 0, self._first[where], t_mix.size)
        idx = np.arange(n)
        while idx.size:  # a row tries each entry of its mix in turn (one, but for a collision)
            keep = at < t_mix.size
            idx, at = idx[keep], at[keep]
            keep = t_mix[at] == mix[idx]
            idx, at = idx[keep], at[keep]
            same = np.logical_and.reduce([level[at] == c[idx] for level, c in zip(levels, cols)])
            found[idx[same]] = True
            idx, at = idx[~same], at[~same] + 1
        return found


def format_addresses(
    hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], blank: npt.NDArray[np.bool_] | None = None
) -> pd.api.extensions.ExtensionArray:
    """Addresses as text (dotted quad for IPv4-mapped, RFC 5952 IPv6 otherwise; empty where
    ``blank``), as a pandas string array backed by Arrow.

    The text is written by a compiled loop into an Arrow array's own buffers: no Python
    string per flow, and nothing for pandas or the CSV writer to convert.
    """
    mask = np.zeros(hi.shape[0], dtype=np.uint8) if blank is None else np.ascontiguousarray(blank, dtype=np.uint8)
    offsets, data = address_text(np.ascontiguousarray(hi), np.ascontiguousarray(lo), mask)
    text = pa.LargeStringArray.from_buffers(hi.shape[0], pa.py_buffer(offsets), pa.py_buffer(data))
    array: pd.api.extensions.ExtensionArray = pd.array(text, dtype="str")
    return array
