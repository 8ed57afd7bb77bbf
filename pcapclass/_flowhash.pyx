# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The flow table's core: a hash table of open flows, each packet added to its row.

Why compiled: a flow record is a handful of sums, a min, a max and ORs, and a packet touches
one record. With numpy, a batch had to be sorted by flow and reduced, then merged into the
table with another sort: several passes over every packet. A hash table does it in one
pass, in the order packets arrive, which also makes a flow's end exact: the packet that
comes after an idle gap, or after a closed TCP flow's grace time, starts the next record.

Rows are flows, columns the fields named in COLUMNS: what a packet updates comes first, in
one 64-byte cache line. With tens of thousands of flows open, the table is larger than the
CPU caches and each packet's row is a memory fetch; the loop prefetches the index slot and
the row of packets a few places ahead, so the fetches overlap instead of queueing.
"""

cimport cython

from pcapclass._bytes cimport __builtin_prefetch
from pcapclass._golden cimport GOLDEN

import numpy as np

#: a flow record's fields, in the order of a row
COLUMNS = (
    "hash", "check", "first_ns", "last_ns", "packets_ab", "bytes_ab", "packets_ba", "bytes_ba",
    "flags_a", "flags_b", "syn_a_ns", "syn_b_ns", "proto", "first_from_a", "payload_seen",
    "a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b",
)
#: the fields that name a flow
KEY_COLUMNS = ("hash", "check", "proto", "a_hi", "a_lo", "b_hi", "b_lo", "port_a", "port_b")

cdef enum:
    C_HASH, C_CHECK, C_FIRST, C_LAST, C_PACKETS_AB, C_BYTES_AB, C_PACKETS_BA, C_BYTES_BA
    C_FLAGS_A, C_FLAGS_B, C_SYN_A, C_SYN_B, C_PROTO, C_FROM_A, C_PAYLOAD_SEEN
    C_A_HI, C_A_LO, C_B_HI, C_B_LO, C_PORT_A, C_PORT_B, NCOL
    #: packets ahead whose index slot, then row, is prefetched
    AHEAD_SLOT = 16
    AHEAD_ROW = 8
    #: rows of the ended-records buffer kept between hand-overs (5.5 MB)
    KEPT_DONE_ROWS = 1 << 15

cdef enum:
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    ACK = 0x10
    PROTO_TCP = 6

IPPROTO_TCP = PROTO_TCP
#: "no SYN seen" in the first-SYN timestamp columns
NO_SYN = 0x7FFFFFFFFFFFFFFF
cdef long long C_NO_SYN = 0x7FFFFFFFFFFFFFFF

assert len(COLUMNS) == NCOL


cdef inline bint _closed(long long proto, long long flags_a, long long flags_b) noexcept nogil:
    """A TCP flow that was reset, or closed with a FIN from each side."""
    return proto == PROTO_TCP and (((flags_a | flags_b) & RST) != 0 or (flags_a & flags_b & FIN) != 0)


@cython.final
cdef class FlowHash:
    """Open flows keyed by two independent 64-bit hashes of their key.

    ``update`` adds packets; a packet whose flow was quiet longer than ``idle_ns`` (or,
    for a closed TCP flow, longer than ``grace_ns``) ends that record and starts a new one.
    Ended records wait in a second table until ``take_done``; ``remove`` ends the rows a
    caller picks (idle by the clock, over a cap, end of capture).
    """

    cdef long long[:, ::1] rows
    cdef Py_ssize_t n
    cdef long long[::1] index  # slot -> row, -1 empty
    cdef int shift
    cdef long long[:, ::1] done
    cdef Py_ssize_t n_done
    cdef readonly long long idle_ns, grace_ns, watermark, collisions

    def __init__(self, long long idle_ns, long long grace_ns):
        self.idle_ns = idle_ns
        self.grace_ns = grace_ns
        self.watermark = -0x7FFFFFFFFFFFFFFF - 1
        self.collisions = 0
        self.rows = np.zeros((1 << 12, NCOL), np.int64)
        self.n = 0
        self.done = np.zeros((1 << 10, NCOL), np.int64)
        self.n_done = 0
        self._reindex(1 << 13)

    def __len__(self):
        return self.n

    @property
    def capacity(self):
        """Rows the table holds before it must grow."""
        return self.rows.shape[0]

    def reserve(self, Py_ssize_t size):
        """Make room for ``size`` open flows (the table never holds fewer rows than it has)."""
        if size > self.rows.shape[0]:
            self._resize(size)

    cdef void _resize(self, Py_ssize_t size):
        resized = np.zeros((max(size, self.n), NCOL), np.int64)
        resized[: self.n] = np.asarray(self.rows)[: self.n]
        self.rows = resized

    @property
    def finished(self):
        """Ended records waiting for ``take_done``."""
        return self.n_done

    @property
    def table(self):
        """The open flows' rows (a view: valid until the next call)."""
        return np.asarray(self.rows)[: self.n]

    cdef void _reindex(self, Py_ssize_t slots):
        cdef int bits = 0
        while (1 << bits) < slots:
            bits += 1
        self.index = np.full(1 << bits, -1, np.int64)
        self.shift = 64 - bits
        cdef Py_ssize_t r
        with nogil:
            for r in range(self.n):
                self.index[self._find(self.rows[r, C_HASH], self.rows[r, C_CHECK], False)] = r

    cdef inline Py_ssize_t _home(self, long long h) noexcept nogil:
        """Where probing for ``h`` starts (Fibonacci hashing: the product's top bits)."""
        return <Py_ssize_t>((<unsigned long long>h * GOLDEN) >> self.shift)

    cdef inline Py_ssize_t _find(self, long long h, long long check, bint count) noexcept nogil:
        """The slot holding (h, check), or the empty slot where it would go."""
        cdef Py_ssize_t mask = self.index.shape[0] - 1
        cdef Py_ssize_t s = self._home(h)
        cdef long long r
        while True:
            r = self.index[s]
            if r < 0:
                return s
            if self.rows[r, C_HASH] == h:
                if self.rows[r, C_CHECK] == check:
                    return s
                if count:
                    self.collisions += 1
            s = (s + 1) & mask

    cdef void _reserve(self, Py_ssize_t more):
        """Room for ``more`` ended records."""
        cdef Py_ssize_t size = self.done.shape[0]
        if self.n_done + more <= size:
            return
        while size < self.n_done + more:
            size *= 2
        grown = np.empty((size, NCOL), np.int64)
        grown[: self.n_done] = np.asarray(self.done)[: self.n_done]
        self.done = grown

    cdef void _end(self, Py_ssize_t r) noexcept nogil:
        """Copy row ``r`` to the ended records (the caller has reserved room)."""
        cdef long long *src = &self.rows[r, 0]
        cdef long long *dst = &self.done[self.n_done, 0]
        cdef int c
        for c in range(NCOL):
            dst[c] = src[c]
        self.n_done += 1

    def update(self, const long long[:] h, const long long[:] check, const long long[:] proto,
               const unsigned long long[:] a_hi, const unsigned long long[:] a_lo,
               const unsigned long long[:] b_hi, const unsigned long long[:] b_lo,
               const long long[:] port_a, const long long[:] port_b, const unsigned char[:] from_a,
               const long long[:] ts, const long long[:] wirelen, const long long[:] flags,
               const long long[:] payload, Py_ssize_t[::1] first_payload, long long[:] started=None):
        """Add packets (their flow keys, direction, time, length and TCP flags), in order.

        Returns how many packets carry the first ``payload`` bytes of their record's direction
        (a reused 5-tuple after the idle timeout is a new record), their indexes written, in
        order, to the start of ``first_payload`` (a slot per packet): what payload evidence looks
        at, handed over without a pass of numpy (which would let the GIL go and wait behind the
        other stages' Python to take it back). The row is being updated anyway, so the question
        costs two bits of it (``payload_seen``: 1 A to B, 2 B to A) instead of a table of its own.
        ``started[i]``, if given, is set to a time inside the span of packet ``i``'s record (its
        first packet so far): with the key, it names the record among those of a reused 5-tuple,
        so that per-packet counts (a time series) join the finished record later.
        """
        cdef Py_ssize_t n = h.shape[0], found
        cdef bint want_started = started is not None
        if first_payload.shape[0] < n:
            raise ValueError("first_payload needs a slot per packet")
        if not want_started:
            started = np.empty(0, np.int64)
        # room for every packet to start or end a flow, made first, so that the loop allocates
        # nothing and runs without the GIL (the decoding thread goes on meanwhile)
        if self.n + n > self.rows.shape[0]:
            self._resize(2 * (self.n + n))
        if 2 * (self.n + n) > self.index.shape[0]:
            self._reindex(2 * (self.n + n))
        self._reserve(n)
        with nogil:
            found = self._update(n, h, check, proto, a_hi, a_lo, b_hi, b_lo, port_a, port_b, from_a, ts, wirelen, flags,
                                 payload, first_payload, started, want_started)
        return found

    cdef Py_ssize_t _update(self, Py_ssize_t n, const long long[:] h, const long long[:] check, const long long[:] proto,
                      const unsigned long long[:] a_hi, const unsigned long long[:] a_lo,
                      const unsigned long long[:] b_hi, const unsigned long long[:] b_lo,
                      const long long[:] port_a, const long long[:] port_b, const unsigned char[:] from_a,
                      const long long[:] ts, const long long[:] wirelen, const long long[:] flags,
                      const long long[:] payload, Py_ssize_t[::1] first_payload, long long[:] started,
                      bint want_started) noexcept nogil:
        cdef Py_ssize_t i, s, r, ahead, found = 0
        cdef long long t, f, gap
        cdef long long *row
        cdef bint pure_syn
        cdef long long side
        for i in range(n):
            ahead = i + AHEAD_SLOT
            if ahead < n:
                __builtin_prefetch(&self.index[self._home(h[ahead])])
            ahead = i + AHEAD_ROW
            if ahead < n:
                r = self.index[self._home(h[ahead])]
                if r >= 0:
                    __builtin_prefetch(&self.rows[r, 0])
            t = ts[i]
            if t > self.watermark:
                self.watermark = t
            s = self._find(h[i], check[i], True)
            r = self.index[s]
            if r >= 0:
                row = &self.rows[r, 0]
                gap = t - row[C_LAST]
                if gap > self.idle_ns or (_closed(proto[i], row[C_FLAGS_A], row[C_FLAGS_B]) and gap > self.grace_ns):
                    self._end(r)
                    row = &self.rows[r, 0]
                    self._start(row, i, h, check, proto, a_hi, a_lo, b_hi, b_lo, port_a, port_b, from_a, ts)
            else:
                r = self.n
                self.n += 1
                self.index[s] = r
                row = &self.rows[r, 0]
                self._start(row, i, h, check, proto, a_hi, a_lo, b_hi, b_lo, port_a, port_b, from_a, ts)
            if want_started:
                started[i] = row[C_FIRST]
            if payload[i] > 0:
                side = 1 if from_a[i] else 2
                if not row[C_PAYLOAD_SEEN] & side:
                    row[C_PAYLOAD_SEEN] |= side
                    first_payload[found] = i
                    found += 1
            f = flags[i]
            pure_syn = (f & (SYN | ACK)) == SYN and proto[i] == PROTO_TCP
            if t < row[C_FIRST]:
                row[C_FIRST] = t
            if t > row[C_LAST]:
                row[C_LAST] = t
            if from_a[i]:
                row[C_PACKETS_AB] += 1
                row[C_BYTES_AB] += wirelen[i]
                row[C_FLAGS_A] |= f
                if pure_syn and t < row[C_SYN_A]:
                    row[C_SYN_A] = t
            else:
                row[C_PACKETS_BA] += 1
                row[C_BYTES_BA] += wirelen[i]
                row[C_FLAGS_B] |= f
                if pure_syn and t < row[C_SYN_B]:
                    row[C_SYN_B] = t
        return found

    cdef inline void _start(self, long long *row, Py_ssize_t i, const long long[:] h, const long long[:] check,
                            const long long[:] proto, const unsigned long long[:] a_hi,
                            const unsigned long long[:] a_lo, const unsigned long long[:] b_hi,
                            const unsigned long long[:] b_lo, const long long[:] port_a,
                            const long long[:] port_b, const unsigned char[:] from_a, const long long[:] ts) noexcept nogil:
        cdef int c
        for c in range(NCOL):
            row[c] = 0
        row[C_HASH] = h[i]
        row[C_CHECK] = check[i]
        row[C_PROTO] = proto[i]
        row[C_A_HI] = <long long>a_hi[i]
        row[C_A_LO] = <long long>a_lo[i]
        row[C_B_HI] = <long long>b_hi[i]
        row[C_B_LO] = <long long>b_lo[i]
        row[C_PORT_A] = port_a[i]
        row[C_PORT_B] = port_b[i]
        row[C_FIRST] = ts[i]
        row[C_LAST] = ts[i]
        row[C_SYN_A] = C_NO_SYN
        row[C_SYN_B] = C_NO_SYN
        row[C_FROM_A] = from_a[i]

    def ended_by_clock(self, long long now_ns, long long grace_ns, long long started_before_ns):
        """The open flows (aligned with ``table``) that the clock ``now_ns`` has ended: quiet
        longer than ``idle_ns``, closed TCP quiet longer than ``grace_ns``, or started before
        ``started_before_ns`` (an active timeout; the int64 minimum for none)."""
        ended_a = np.zeros(self.n, np.bool_)
        cdef unsigned char[::1] ended = ended_a.view(np.uint8)
        cdef Py_ssize_t r
        cdef long long *row
        with nogil:
            for r in range(self.n):
                row = &self.rows[r, 0]
                ended[r] = (row[C_LAST] < now_ns - self.idle_ns
                            or (_closed(row[C_PROTO], row[C_FLAGS_A], row[C_FLAGS_B]) and row[C_LAST] < now_ns - grace_ns)
                            or row[C_FIRST] < started_before_ns)
        return ended_a

    def remove(self, const unsigned char[:] ended):
        """End the open flows where ``ended`` (aligned with ``table``) is set."""
        cdef Py_ssize_t r, keep = 0
        cdef int c
        self._reserve(np.count_nonzero(ended))
        with nogil:
            for r in range(self.n):
                if ended[r]:
                    self._end(r)
                else:
                    if keep != r:
                        for c in range(NCOL):
                            self.rows[keep, c] = self.rows[r, c]
                    keep += 1
        self.n = keep
        if keep * 4 < self.rows.shape[0] and self.rows.shape[0] > 1 << 12:
            self._resize(max(1 << 12, 2 * keep))  # give back what a burst of flows took
        self._reindex(max(1 << 13, 4 * keep))

    def take_done(self):
        """The ended records, column-major (a row per field, a column per flow, in the order
        they ended), forgetting them: one array, with no row-major copy left behind."""
        return self._take(False)

    def take_all(self):
        """Every record, column-major: the ended ones (in the order they ended), then the open
        ones (in table order), as ``remove`` of all then ``take_done`` would give them; the
        table is left empty. One copy of each open flow, where ending it first copies it twice
        (and faults in a buffer as large as the table for the first copy)."""
        return self._take(True)

    cdef object _take(self, bint open_too):
        """The ended records, then with ``open_too`` the open ones, column-major, forgotten."""
        cdef Py_ssize_t n_done = self.n_done, n = self.n if open_too else 0, r
        cdef int c
        out_a = np.empty((NCOL, n_done + n), np.int64)
        cdef long long[:, ::1] out = out_a
        with nogil:
            for r in range(n_done):
                for c in range(NCOL):
                    out[c, r] = self.done[r, c]
            for r in range(n):
                for c in range(NCOL):
                    out[c, n_done + r] = self.rows[r, c]
        self.n_done = 0
        # the buffer is kept for the next flows to end (fresh pages would be faulted in again,
        # row by row), unless a burst made it large
        if self.done.shape[0] > KEPT_DONE_ROWS:
            self.done = np.zeros((1 << 10, NCOL), np.int64)
        if open_too:
            self.n = 0
            if self.rows.shape[0] > 1 << 12:
                self._resize(1 << 12)
            self._reindex(1 << 13)
        return out_a
