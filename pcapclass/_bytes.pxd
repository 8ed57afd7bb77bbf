# Byte strings packed for the kernels' matchers, and the helpers several kernels share (all
# inline: cimported, they compile into each kernel as they did in one).

from libc.string cimport memcpy

cdef extern from *:
    # asks for the cache line at ``p`` ahead of its use (payloads are scattered over a batch of
    # megabytes, so a loop over them waits on a cache miss apiece unless they overlap)
    void __builtin_prefetch(const void* p) noexcept nogil

cdef enum:
    # payloads ahead whose first bytes a loop asks for before it reads them
    PREFETCH_AHEAD = 16

from pcapclass._golden cimport GOLDEN


cdef struct Group:
    # byte strings packed as (length byte, bytes) one after the other
    const unsigned char* p
    Py_ssize_t n
    # per byte, whether a string may start with it (either case of a letter): most bytes that
    # are looked at start none, and are then passed over without a walk through the strings
    const unsigned char* starts


cdef inline Group _pack(list keep, words):
    """``words`` packed for the matchers below (the bytes objects are kept alive in ``keep``)."""
    cdef Group g
    parts = []
    starts = bytearray(256)
    for w in words:  # a loop, not a generator expression: a .pxd's inline function cannot hold one
        if not 0 < len(w) < 256:
            raise ValueError(f"signature strings must be 1 to 255 bytes: {words!r}")
        parts.append(bytes([len(w)]) + bytes(w))
        starts[w[0]] = 1
        if 0x41 <= w[0] <= 0x5A:
            starts[w[0] + 32] = 1
    packed, starts_b = b"".join(parts), bytes(starts)
    keep.append(packed)
    keep.append(starts_b)
    g.p = packed
    g.n = len(packed)
    g.starts = starts_b
    return g


cdef inline unsigned char _up(unsigned char c) noexcept nogil:
    """ASCII upper case, as ``bytes.upper``."""
    return c - 32 if 0x61 <= c <= 0x7A else c


cdef inline bint _one_of(const unsigned char* p, Py_ssize_t n, Group g, bint prefix, bint upper) noexcept nogil:
    """Whether ``p[:n]`` (upper-cased when ``upper``) is one of ``g``, or starts with one when ``prefix``."""
    cdef Py_ssize_t at = 0, m, k
    if n <= 0 or not g.starts[p[0]]:
        return False
    while at < g.n:
        m = g.p[at]
        if m == n or (prefix and m < n):
            k = 0
            while k < m and (_up(p[k]) if upper else p[k]) == g.p[at + 1 + k]:
                k += 1
            if k == m:
                return True
        at += 1 + m


cdef inline bint _is_word(const unsigned char* p, Py_ssize_t n, Group g) noexcept nogil:
    """Whether ``p[:n].upper()`` is one of ``g``."""
    return _one_of(p, n, g, False, True)


cdef inline bint _same_lower(const unsigned char* s, const unsigned char* w, Py_ssize_t m) noexcept nogil:
    """Whether ``s[:m]``, lower-cased, is ``w``."""
    cdef Py_ssize_t k
    for k in range(m):
        if (s[k] + 32 if 0x41 <= s[k] <= 0x5A else s[k]) != w[k]:
            return False
    return True


cdef inline unsigned long long _digest(const unsigned char* p, Py_ssize_t n, long long context) noexcept nogil:
    """A multiply-rotate over the 8-byte words (native order) of ``p[:n]``, and ``context``."""
    cdef unsigned long long digest = <unsigned long long>n * GOLDEN, w
    cdef Py_ssize_t k = 0, j
    while k < n:
        if n - k >= 8:
            memcpy(&w, &p[k], 8)
        else:
            w = 0
            for j in range(n - k):
                w |= <unsigned long long>p[k + j] << (8 * j)
        digest ^= w * 0x87C37B91114253D5ULL
        digest = ((digest << 31) | (digest >> 33)) * 0x4CF5AD432745937FULL
        k += 8
    digest ^= <unsigned long long>context * 0xC2B2AE3D27D4EB4FULL
    digest = (digest ^ (digest >> 33)) * 0xFF51AFD7ED558CCDULL
    return digest ^ (digest >> 29)


cdef inline Py_ssize_t _lower_bound(const unsigned long long[::1] keys, unsigned long long h) noexcept nogil:
    """Where ``h`` is, or would go, in the sorted ``keys``."""
    cdef Py_ssize_t lo = 0, hi = keys.shape[0], mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < h:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline long long _sorted_value(const unsigned long long[::1] keys, const long long[::1] values,
                                    unsigned long long h) noexcept nogil:
    """The value of ``h`` (``values`` beside the sorted ``keys``), or -1 where it is not a key."""
    cdef Py_ssize_t at = _lower_bound(keys, h)
    if at < keys.shape[0] and keys[at] == h:
        return values[at]
    return -1
