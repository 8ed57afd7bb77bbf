# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Names met before, found again by digest and bytes in one call per batch (``NameMemo``).

Why compiled: nearly every name a batch's first payloads carry (server names, certificate
subjects) was met in an earlier batch; finding each again in one pass leaves Python only the
few new ones, where grouping a batch's names by digest in numpy and looking each group up in
a dict cost more than finding the names.
"""

from libc.string cimport memcmp, memcpy

from pcapclass._golden cimport GOLDEN

import numpy as np


cdef class NameMemo:
    """A value (a verdict id) per name, by the name's digest; the name's bytes are kept, so a
    digest two names share finds only the name remembered with it (the other is not found).
    Open addressing (linear probing) keyed by the digest, at most half full; the bytes in one store."""

    cdef unsigned long long[::1] _digest
    cdef long long[:, ::1] _entry  # per slot: the name's start in the store, its length, its value
    cdef unsigned char[::1] _used, _store
    cdef Py_ssize_t _mask, _count, _stored

    def __init__(self):
        self.clear()

    def __len__(self):
        return self._count

    def clear(self):
        """Forget every name."""
        self._alloc(1 << 10)
        self._store = np.zeros(1 << 14, np.uint8)
        self._stored = 0

    cdef void _alloc(self, Py_ssize_t size):
        self._mask = size - 1
        self._digest = np.zeros(size, np.uint64)
        self._entry = np.zeros((size, 3), np.int64)
        self._used = np.zeros(size, np.uint8)
        self._count = 0

    cdef inline Py_ssize_t _slot(self, unsigned long long d) noexcept nogil:
        """The slot of digest ``d``, or the empty slot where it would go."""
        cdef Py_ssize_t s = <Py_ssize_t>((d * GOLDEN) >> 40) & self._mask
        while self._used[s] and self._digest[s] != d:
            s = (s + 1) & self._mask
        return s

    cdef void _put(self, unsigned long long d, long long start, long long length, long long value) noexcept:
        cdef Py_ssize_t s = self._slot(d)
        self._used[s] = 1
        self._digest[s], self._entry[s, 0], self._entry[s, 1], self._entry[s, 2] = d, start, length, value
        self._count += 1

    def find(self, const unsigned char[::1] data, const long long[:] start, const long long[:] length,
             const unsigned long long[:] digest):
        """The value of each name ``data[start[i]:start[i] + length[i]]`` remembered with
        ``digest[i]`` and the same bytes; -1 where none."""
        cdef Py_ssize_t n = start.shape[0], size = data.shape[0], i, s
        out_a = np.empty(n, np.int32)  # each set in the pass (numpy's full would let the GIL go)
        cdef int[::1] out = out_a
        with nogil:
            for i in range(n):
                out[i] = -1
                s = self._slot(digest[i])
                if (self._used[s] and self._entry[s, 1] == length[i] and 0 <= start[i] and start[i] + length[i] <= size
                        and (length[i] == 0 or memcmp(&data[start[i]], &self._store[self._entry[s, 0]], length[i]) == 0)):
                    out[i] = <int>self._entry[s, 2]
        return out_a

    def add(self, unsigned long long digest, const unsigned char[::1] name, long long value):
        """Remember ``name`` (with ``digest``) as having ``value``, unless its digest is taken."""
        cdef Py_ssize_t s = self._slot(digest), n = name.shape[0], i
        if self._used[s]:
            return
        if self._stored + n > self._store.shape[0]:
            grown = np.zeros(max(2 * self._store.shape[0], self._stored + n), np.uint8)
            grown[:self._stored] = np.asarray(self._store)[:self._stored]
            self._store = grown
        if 2 * (self._count + 1) > self._mask + 1:
            digest_a, entry_a, used_a = np.asarray(self._digest), np.asarray(self._entry), np.asarray(self._used)
            self._alloc(2 * (self._mask + 1))
            for i in np.flatnonzero(used_a).tolist():
                self._put(digest_a[i], entry_a[i, 0], entry_a[i, 1], entry_a[i, 2])
        if n:
            memcpy(&self._store[self._stored], &name[0], n)
        self._put(digest, self._stored, n, value)
        self._stored += n
