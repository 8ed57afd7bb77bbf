# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Flow keys: each packet's canonical key and its two hashes, and the index that finds a
finished flow by key.

Why compiled: a key is computed for every packet, and evidence rows are joined to flows a
block of tens of thousands at a time; both are one pass in C. The hashes are the flow table's
(``_flowhash``), so a row found here names the same flow the table kept.
"""

from pcapclass._golden cimport GOLDEN

import numpy as np

cdef unsigned long long SEED2 = 0xD6E8FEB86659FD93ULL


cdef inline unsigned long long _mix(unsigned long long x) noexcept nogil:
    """splitmix64's finalizer: a cheap, well-distributed 64-bit mix."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL
    return x ^ (x >> 31)


def flow_keys(const unsigned char[:] status, const long long[:] proto,
              const unsigned long long[:] src_hi, const unsigned long long[:] src_lo,
              const unsigned long long[:] dst_hi, const unsigned long long[:] dst_lo,
              const long long[:] sport, const long long[:] dport, unsigned char flow_status, long long non_flow_base):
    """Each packet's canonical flow key and its two hashes (see flows.FlowKeys).

    Endpoint A is the lower (address, port). A packet whose status is not ``flow_status``
    gets the pseudo-key (``non_flow_base`` + status, no addresses, no ports). ``hash`` and
    ``check`` are independent 64-bit hashes of the key: merging two flows would need both to
    collide (about 2**-128 per pair); IPv6 keys also mix in the high address halves.
    """
    cdef Py_ssize_t n = status.shape[0], i
    h_a = np.empty(n, np.int64)
    c_a = np.empty(n, np.int64)
    proto_a = np.empty(n, np.int64)
    a_hi_a = np.empty(n, np.uint64)
    a_lo_a = np.empty(n, np.uint64)
    b_hi_a = np.empty(n, np.uint64)
    b_lo_a = np.empty(n, np.uint64)
    pa_a = np.empty(n, np.int64)
    pb_a = np.empty(n, np.int64)
    from_a_a = np.empty(n, np.bool_)
    cdef long long[::1] h = h_a, c = c_a, kproto = proto_a, pa = pa_a, pb = pb_a
    cdef unsigned long long[::1] a_hi = a_hi_a, a_lo = a_lo_a, b_hi = b_hi_a, b_lo = b_lo_a
    cdef unsigned char[::1] from_a = from_a_a.view(np.uint8)
    cdef unsigned long long sh, sl, dh, dl, word, x, y
    cdef long long sp, dp, pr
    cdef bint swap
    with nogil:
        for i in range(n):
            if status[i] == flow_status:
                pr, sh, sl, dh, dl, sp, dp = proto[i], src_hi[i], src_lo[i], dst_hi[i], dst_lo[i], sport[i], dport[i]
            else:
                pr, sh, sl, dh, dl, sp, dp = non_flow_base + status[i], 0, 0, 0, 0, 0, 0
            swap = sh > dh or (sh == dh and (sl > dl or (sl == dl and sp > dp)))
            if swap:
                sh, dh = dh, sh
                sl, dl = dl, sl
                sp, dp = dp, sp
            kproto[i] = pr
            a_hi[i], a_lo[i], b_hi[i], b_lo[i], pa[i], pb[i] = sh, sl, dh, dl, sp, dp
            from_a[i] = not swap
            word = (<unsigned long long>pr << 32) | (<unsigned long long>sp << 16) | <unsigned long long>dp
            x = _mix(_mix(_mix(word ^ GOLDEN) ^ sl) ^ dl)
            y = _mix(_mix(_mix(dl ^ SEED2) ^ word) ^ sl)
            if sh | dh:
                x = _mix(_mix(x ^ sh) ^ dh)
                y = _mix(_mix(y ^ dh) ^ sh)
            h[i] = <long long>x
            c[i] = <long long>y
    return h_a, c_a, proto_a, a_hi_a, a_lo_a, b_hi_a, b_lo_a, pa_a, pb_a, from_a_a


cdef class KeyIndex:
    """Finished flows by key, to join evidence rows to them: the flow of the same hash and
    check whose span (first to last packet) holds the row's time.

    Why compiled: rows are joined as flows finish, a block of tens of thousands at a time;
    with pandas that was a hash table to find shared hashes, a second to look rows up, and a
    sort for the shared ones. Here flows are chained by a slot of their hash, in index order,
    so that a row takes the first flow of its key whose span fits, in one pass.
    """

    cdef const unsigned long long[:] _hash
    cdef const unsigned long long[:] _check
    cdef const long long[:] _first
    cdef const long long[:] _last
    cdef long long[::1] _head, _next
    cdef Py_ssize_t _mask

    def __init__(self, const unsigned long long[:] hash, const unsigned long long[:] check,
                 const long long[:] first_ns, const long long[:] last_ns):
        cdef Py_ssize_t n = hash.shape[0], size = 16, i, s
        while size < 2 * n:
            size <<= 1
        self._hash, self._check, self._first, self._last = hash, check, first_ns, last_ns
        self._mask = size - 1
        self._head = np.full(size, -1, np.int64)
        self._next = np.full(n, -1, np.int64)
        with nogil:
            for i in range(n - 1, -1, -1):  # chains in index order: the first flow of a key first
                s = self._slot(hash[i])
                self._next[i] = self._head[s]
                self._head[s] = i

    cdef inline Py_ssize_t _slot(self, unsigned long long h) noexcept nogil:
        """The chain of ``h`` (Fibonacci hashing, as the flow table's)."""
        return <Py_ssize_t>((h * GOLDEN) >> 40) & self._mask

    def flows(self, const unsigned long long[:] hash, const unsigned long long[:] check, const long long[:] ts_ns):
        """Per row, the index of its flow, -1 where none."""
        cdef Py_ssize_t n = hash.shape[0], i
        cdef long long f
        cdef unsigned long long h
        out_a = np.full(n, -1, np.int64)
        cdef long long[::1] out = out_a
        with nogil:
            for i in range(n):
                h = hash[i]
                f = self._head[self._slot(h)]
                while f >= 0:
                    if (self._hash[f] == h and self._check[f] == check[i]
                            and self._first[f] <= ts_ns[i] and ts_ns[i] <= self._last[f]):
                        out[i] = f
                        break
                    f = self._next[f]
        return out_a


def keys_at(const long long[:] idx, const long long[:] hash, const long long[:] check, const long long[:] ts_ns,
            const unsigned char[:] from_a):
    """``(hash, check, ts_ns, from_a)`` of packets ``idx`` (hashes as uint64), gathered in one
    pass without the GIL, where four numpy gathers would each let it go and wait to take it
    back behind the other stages' Python."""
    cdef Py_ssize_t m = idx.shape[0], n = hash.shape[0], i
    if check.shape[0] != n or ts_ns.shape[0] != n or from_a.shape[0] != n:
        raise ValueError("keys_at needs aligned columns")
    h_a, c_a, t_a, f_a = np.empty(m, np.uint64), np.empty(m, np.uint64), np.empty(m, np.int64), np.empty(m, np.bool_)
    cdef unsigned long long[::1] h = h_a, c = c_a
    cdef long long[::1] t = t_a
    cdef unsigned char[::1] f = f_a.view(np.uint8)
    cdef long long p
    cdef bint outside = False
    with nogil:
        for i in range(m):
            p = idx[i]
            if p < 0 or p >= n:
                outside = True
                break
            h[i], c[i], t[i], f[i] = <unsigned long long>hash[p], <unsigned long long>check[p], ts_ns[p], from_a[p]
    if outside:
        raise IndexError("keys_at: a packet index outside the batch")
    return h_a, c_a, t_a, f_a
