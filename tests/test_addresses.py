"""Address text from (hi, lo) pairs, checked against the standard library's printers; set
membership of addresses checked against Python's sets."""

from __future__ import annotations

import ipaddress
import socket

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pcapclass.addresses import RowSet, distinct_rows, format_addresses

_MAPPED = 0xFFFF_0000_0000


def _expected(value: int) -> str:
    """IPv4-mapped as a dotted quad (ipaddress), anything else as libc's inet_ntop prints IPv6."""
    if value >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(value & 0xFFFF_FFFF))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


def _pairs(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([v >> 64 for v in values], dtype=np.uint64), np.array([v & (2**64 - 1) for v in values], dtype=np.uint64))


_address = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: _MAPPED | v),  # IPv4
    st.integers(0, 2**128 - 1),  # any IPv6
    st.integers(0, 2**16 - 1).map(lambda v: (0x2001_0DB8 << 96) | v),  # runs of zero groups to compress
    st.integers(0, 2**32 - 1),  # IPv4-compatible, printed the IPv6 way
)


@given(st.lists(_address, max_size=50), st.data())
def test_text_matches_the_standard_library(values: list[int], data: st.DataObject) -> None:
    blank = np.array(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))), dtype=bool)
    hi, lo = _pairs(values)
    text = format_addresses(hi, lo, blank)
    assert list(text) == ["" if b else _expected(v) for v, b in zip(values, blank)]


def test_known_addresses() -> None:
    values = [_MAPPED | 0x0A00_000A, _MAPPED, _MAPPED | 0xFFFF_FFFF, 1, (0x2001_0DB8 << 96) | 1, 0]
    assert list(format_addresses(*_pairs(values))) == ["10.0.0.10", "0.0.0.0", "255.255.255.255", "::1", "2001:db8::1", "::"]


@given(st.lists(_address, max_size=40), st.lists(_address, max_size=40))
def test_row_set_is_exact_set_membership(table: list[int], probe: list[int]) -> None:
    """Pairs of addresses against a set of pairs, as Python's ``in`` answers (a table of up to
    40 rows in 16 to 128 slots: rows share slots, and the columns decide)."""
    pairs = [(a, b) for a, b in zip(table, reversed(table))]
    looked = [(a, b) for a, b in zip(probe, reversed(probe))] + pairs[:3] + [(b, a) for a, b in pairs[:3]]
    table_cols = [*_pairs([a for a, _ in pairs]), *_pairs([b for _, b in pairs])]
    cols = [*_pairs([a for a, _ in looked]), *_pairs([b for _, b in looked])]
    assert RowSet(table_cols).contains(cols).tolist() == [p in set(pairs) for p in looked]
    assert RowSet(table_cols[2:]).contains(cols[:2]).tolist() == [a in {b for _, b in pairs} for a, _ in looked]


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2**64 - 1]), st.integers(0, 3)), max_size=30))
def test_distinct_rows_are_the_set_of_rows(rows: list[tuple[int, int]]) -> None:
    cols = [np.array([r[i] for r in rows], dtype=np.uint64) for i in range(2)]
    got = list(zip(*(c.tolist() for c in distinct_rows(cols))))
    assert got == list(dict.fromkeys(rows))  # each row where it first comes
