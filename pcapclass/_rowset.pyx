# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Exact set membership of rows of uint64 columns: addresses (hi, lo) or address pairs; and
the distinct rows of such columns.

Why compiled: both ends of every flow of every block are looked up among the Exchange
servers, and UDP datagrams' address pairs among the RPC sessions. With numpy a lookup was a
hash of each row, a pandas hash table of those hashes and a pass per collision; here it is
one pass over the rows. The RPC sessions' candidates of every block are made distinct the
same way (a sort of four columns cost more than all the lookups).
"""

from pcapclass._golden cimport GOLDEN

import numpy as np


cdef inline unsigned long long _row_hash(const unsigned long long[:, :] cols, Py_ssize_t i) noexcept nogil:
    """A 64-bit hash of row ``i`` (a multiply and a shift per column)."""
    cdef unsigned long long h = 0
    cdef Py_ssize_t j
    for j in range(cols.shape[0]):
        h = (h ^ cols[j, i]) * GOLDEN
        h ^= h >> 29
    return h


cdef inline bint _same_row(const unsigned long long[:, :] a, Py_ssize_t i,
                           const unsigned long long[:, :] b, Py_ssize_t e) noexcept nogil:
    """Whether row ``i`` of ``a`` is row ``e`` of ``b``, column by column."""
    cdef Py_ssize_t j
    for j in range(a.shape[0]):
        if a[j, i] != b[j, e]:
            return False
    return True


cdef class RowTable:
    """The rows of a table (``rows``: one uint64 column per level, as a 2-D array), chained by a
    slot of each row's hash. A row looked up is compared with its slot's rows column by column:
    a collision costs a comparison, never a wrong answer."""

    cdef unsigned long long[:, ::1] _rows
    cdef long long[::1] _head, _next
    cdef Py_ssize_t _mask

    def __init__(self, const unsigned long long[:, :] rows):
        cdef Py_ssize_t n = rows.shape[1], size = 16, i, s
        while size < 2 * n:
            size <<= 1
        self._rows = np.ascontiguousarray(rows)
        self._mask = size - 1
        self._head = np.full(size, -1, np.int64)
        self._next = np.full(n, -1, np.int64)
        with nogil:
            for i in range(n):
                s = <Py_ssize_t>(_row_hash(self._rows, i) >> 20) & self._mask
                self._next[i] = self._head[s]
                self._head[s] = i

    def __len__(self):
        return self._rows.shape[1]

    def contains(self, const unsigned long long[:, :] cols):
        """Per row of ``cols`` (one column per level, as the table's), whether it is a row of the table."""
        cdef Py_ssize_t n = cols.shape[1], levels = cols.shape[0], i
        cdef long long e
        out_a = np.zeros(n, np.bool_)
        cdef unsigned char[::1] out = out_a.view(np.uint8)
        if levels != self._rows.shape[0]:
            raise ValueError(f"{levels} columns looked up in a table of {self._rows.shape[0]}")
        with nogil:
            for i in range(n):
                e = self._head[<Py_ssize_t>(_row_hash(cols, i) >> 20) & self._mask]
                while e >= 0:
                    if _same_row(cols, i, self._rows, e):
                        out[i] = 1
                        break
                    e = self._next[e]
        return out_a


def first_rows(const unsigned long long[:, :] rows):
    """Per row of ``rows`` (one uint64 column per level), whether it is the first of its value:
    the rows kept make the distinct rows, in the order they first come."""
    cdef Py_ssize_t n = rows.shape[1], size = 16, i, s
    cdef long long e
    while size < 2 * n:
        size <<= 1
    first_a = np.zeros(n, np.bool_)
    cdef unsigned char[::1] first = first_a.view(np.uint8)
    cdef long long[::1] head = np.full(size, -1, np.int64), chain = np.full(n, -1, np.int64)
    with nogil:
        for i in range(n):
            s = <Py_ssize_t>(_row_hash(rows, i) >> 20) & (size - 1)
            e = head[s]
            while e >= 0 and not _same_row(rows, i, rows, e):
                e = chain[e]
            if e < 0:  # a value not met before: chained, for the rows after it
                first[i] = 1
                chain[i] = head[s]
                head[s] = i
    return first_a
