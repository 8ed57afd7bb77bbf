# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A hash table of 64-bit keys and when each was last seen, answering "is this one new?".

Why compiled: the question is asked for every payload packet (over a million in a 2 M-packet
capture), and each answer depends on the ones before it in the same batch. Sorting a batch's
keys and merging them into sorted arrays, the numpy way, cost more than decoding the packets.
"""

cimport cython

import numpy as np

cdef long long NEVER = -0x7FFFFFFFFFFFFFFF - 1
cdef unsigned long long GOLDEN = 0x9E3779B97F4A7C15ULL


@cython.final
cdef class LastSeen:
    """Keys (say, a flow and direction) and the time each was last seen.

    A key counts as new when it was never seen or not for more than ``idle_ns`` (a reused
    5-tuple after the idle timeout is a new flow). Memory is bounded by the keys seen within
    ``idle_ns``: when the table fills, keys idle longer than that are dropped before it grows.
    Open addressing with linear probing; the slot comes from Fibonacci hashing of the key.
    """

    cdef unsigned long long[::1] keys
    cdef long long[::1] last
    cdef int shift
    cdef Py_ssize_t used
    cdef long long idle_ns
    cdef long long now

    def __init__(self, long long idle_ns, int bits=16):
        self.idle_ns = idle_ns
        self.now = NEVER
        self._allocate(bits)

    def __len__(self):
        return self.used

    cdef _allocate(self, int bits):
        self.keys = np.zeros(1 << bits, np.uint64)
        self.last = np.full(1 << bits, NEVER, np.int64)
        self.shift = 64 - bits
        self.used = 0

    cdef inline Py_ssize_t _slot(self, unsigned long long key) noexcept nogil:
        cdef Py_ssize_t mask = self.keys.shape[0] - 1
        cdef Py_ssize_t i = <Py_ssize_t>((key * GOLDEN) >> self.shift)
        while self.last[i] != NEVER and self.keys[i] != key:
            i = (i + 1) & mask
        return i

    cdef _rebuild(self):
        """Drop keys idle past ``idle_ns``; double the table if it would still be half full."""
        old_keys, old_last = self.keys, self.last
        cdef unsigned long long[::1] ok = old_keys
        cdef long long[::1] ol = old_last
        cdef long long horizon = self.now - self.idle_ns
        cdef Py_ssize_t j, live = 0
        for j in range(ok.shape[0]):
            if ol[j] != NEVER and ol[j] >= horizon:
                live += 1
        cdef int bits = 64 - self.shift
        while live * 2 >= (1 << bits):
            bits += 1
        self._allocate(bits)
        cdef Py_ssize_t i
        for j in range(ok.shape[0]):
            if ol[j] != NEVER and ol[j] >= horizon:
                i = self._slot(ok[j])
                self.keys[i] = ok[j]
                self.last[i] = ol[j]
                self.used += 1

    def first_seen(self, const unsigned long long[:] keys, const long long[:] ts):
        """Indices of the ``keys`` that are new (or back after an idle gap), in order; every
        key's time is recorded."""
        cdef Py_ssize_t n = keys.shape[0], k, i
        out_a = np.empty(n, np.intp)
        cdef Py_ssize_t[::1] out = out_a
        cdef Py_ssize_t found = 0
        cdef unsigned long long key
        cdef long long t
        for k in range(n):
            if (self.used + 1) * 4 > self.keys.shape[0] * 3:
                self._rebuild()
            key = keys[k]
            t = ts[k]
            if t > self.now:
                self.now = t
            i = self._slot(key)
            if self.last[i] == NEVER:
                self.keys[i] = key
                self.last[i] = t
                self.used += 1
                out[found] = k
                found += 1
            else:
                if t - self.last[i] > self.idle_ns:
                    out[found] = k
                    found += 1
                if t > self.last[i]:
                    self.last[i] = t
        return out_a[:found].copy()
