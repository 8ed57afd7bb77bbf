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
from ._rowset import RowTable, first_rows

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


def distinct_rows(cols: Sequence[npt.NDArray[np.uint64]]) -> list[npt.NDArray[np.uint64]]:
    """The distinct rows of ``cols`` (uint64 columns of equal length: addresses or address
    pairs), each where it first comes: one compiled pass (``_rowset.first_rows``), no sort."""
    first = first_rows(_stacked(cols))
    return [np.asarray(c, dtype=np.uint64)[first] for c in cols]


class RowSet:
    """The entries of a table of addresses or address pairs (uint64 columns, one per level:
    hi, lo of each address), made ready once for the rows of many blocks to be looked up in
    it: exact membership, by a compiled hash table (``_rowset.RowTable``).

    Why not ``MultiIndex.isin``: it factorizes every level of the rows looked up, a hash table
    per level, for every lookup.
    """

    def __init__(self, table: Sequence[npt.NDArray[np.uint64]]) -> None:
        self._table = RowTable(_stacked(table))

    def __len__(self) -> int:
        return len(self._table)

    def contains(self, cols: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.bool_]:
        """Whether each row of ``cols`` (one column per level) is an entry."""
        return self._table.contains(_stacked(cols))


def _stacked(cols: Sequence[npt.NDArray[np.uint64]]) -> npt.NDArray[np.uint64]:
    return np.stack([np.asarray(c, dtype=np.uint64) for c in cols])


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
