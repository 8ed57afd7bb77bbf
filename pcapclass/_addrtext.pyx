# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Addresses as text, written straight into the buffers of an Arrow string array.

Why compiled: flows.csv has two address columns, one string per flow. Formatting them in
Python (even once per distinct address) and handing pandas an object array cost a Python
string per flow, a hash per string to spread the distinct ones back, and a second pass when
pandas turned the objects into Arrow strings. Here each address is one short loop writing
bytes, and the result is the Arrow array itself.
"""

import numpy as np

cdef extern from "arpa/inet.h" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)

cdef extern from "sys/socket.h" nogil:
    int AF_INET6

#: the longest text of an IPv6 address (with an embedded IPv4 tail), without its NUL
cdef enum:
    MAX_TEXT = 45

cdef unsigned long long V4_MAPPED_HI32 = 0xFFFF


cdef inline Py_ssize_t _octet(unsigned char *out, unsigned int v) noexcept nogil:
    """Write ``v`` (0..255) in decimal; return how many digits."""
    if v >= 100:
        out[0] = 48 + v // 100
        out[1] = 48 + (v // 10) % 10
        out[2] = 48 + v % 10
        return 3
    if v >= 10:
        out[0] = 48 + v // 10
        out[1] = 48 + v % 10
        return 2
    out[0] = 48 + v
    return 1


def address_text(const unsigned long long[:] hi, const unsigned long long[:] lo, const unsigned char[:] blank):
    """``(offsets, data)`` of a large_string array: IPv4-mapped pairs as dotted quads, other
    pairs as ``inet_ntop`` writes IPv6 (the C library's text, the same as ``socket.inet_ntop``),
    the empty string where ``blank`` is set."""
    cdef Py_ssize_t n = hi.shape[0], i, k, pos = 0
    offsets = np.empty(n + 1, dtype=np.int64)
    buffer = np.empty(n * MAX_TEXT + 1, dtype=np.uint8)
    cdef long long[::1] off = offsets
    cdef unsigned char[::1] out = buffer
    cdef unsigned long long h, l
    cdef unsigned int v4
    cdef unsigned char raw[16]
    cdef char text[MAX_TEXT + 1]
    with nogil:
        off[0] = 0
        for i in range(n):
            if not blank[i]:
                h, l = hi[i], lo[i]
                if h == 0 and (l >> 32) == V4_MAPPED_HI32:
                    v4 = <unsigned int>(l & 0xFFFFFFFFULL)
                    pos += _octet(&out[pos], v4 >> 24)
                    out[pos] = 46
                    pos += 1
                    pos += _octet(&out[pos], (v4 >> 16) & 255)
                    out[pos] = 46
                    pos += 1
                    pos += _octet(&out[pos], (v4 >> 8) & 255)
                    out[pos] = 46
                    pos += 1
                    pos += _octet(&out[pos], v4 & 255)
                else:
                    for k in range(8):
                        raw[k] = (h >> (56 - 8 * k)) & 255
                        raw[8 + k] = (l >> (56 - 8 * k)) & 255
                    inet_ntop(AF_INET6, raw, text, MAX_TEXT + 1)
                    k = 0
                    while text[k] != 0:
                        out[pos] = text[k]
                        pos += 1
                        k += 1
            off[i + 1] = pos
    return offsets, buffer[:pos]
