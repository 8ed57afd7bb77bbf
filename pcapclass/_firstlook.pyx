# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The first look at each flow's first payloads (which deserve a closer look, by their first
bytes and ports), at the later packets of the flows the evidence stage follows, and the table
of followed flows that wait unparsed (what the payloads say is ``_identify``'s).

Why compiled: every flow has up to two first payloads, and for each the evidence stage needs
a dozen facts from its first bytes and ports. With numpy that was some thirty passes over the
batch and a gather of bytes per payload; here it is one pass. Likewise every payload packet is checked for
belonging to a followed flow, and most of those need no Python look: one pass, not fifteen
numpy calls and a loop per batch.
"""

from libc.string cimport memcmp

from pcapclass._bytes cimport PREFETCH_AHEAD, __builtin_prefetch, _lower_bound, _sorted_value
from pcapclass._golden cimport GOLDEN

import numpy as np


def first_looks(const unsigned char[::1] data, const long long[:] first, const long long[:] off,
                const long long[:] plen, const long long[:] proto, const long long[:] sport, const long long[:] dport,
                const unsigned char[::1] service_port, const unsigned char[::1] must_server,
                const unsigned char[::1] must_client, long long direct_push_port,
                long long min_decisive):
    """The first payloads (packets ``first`` of the batch's columns) sorted into those to look at
    and those that contradict their port, in order, with what the next steps need of them:
    ``(quiet, quiet_side, look, look_tcp, look_port, look_src, look_off, look_len)``.

    * ``look``: its first bytes could start something ``identify`` knows (TCP), or it may be a
      Direct Push NOTIFY (UDP to or from ``direct_push_port``); with its transport, server port,
      whether the server sent it, and where its payload is;
    * ``quiet``: TCP, starting with control bytes no signature starts with, at least
      ``min_decisive`` bytes long, on a port whose protocol must show (``must_server`` /
      ``must_client`` by sender): an unrecognizable payload that contradicts its port; with
      ``quiet_side``, its server port * 2 + whether the server sent it;
    * the others need no look.

    A payload's server port is the side on a service port (the lower one if both), -1 if
    neither. Handed over compacted, so that no numpy pass per selection (each letting the GIL
    go and waiting to take it back) is needed.
    """
    cdef Py_ssize_t n = first.shape[0], size = data.shape[0], i, k, avail, o, p, n_quiet = 0, n_look = 0
    quiet_a, side_a, look_a, port_a, off_a, len_a = (np.empty(n, np.int64) for _ in range(6))
    tcp_a, src_a = np.empty(n, np.bool_), np.empty(n, np.bool_)
    cdef long long[::1] quiet = quiet_a, quiet_side = side_a, look = look_a, look_port = port_a, look_off = off_a, look_len = len_a
    cdef unsigned char[::1] look_tcp = tcp_a.view(np.uint8), look_src = src_a.view(np.uint8)
    cdef unsigned char b[8]
    cdef unsigned long long word1
    cdef long long sp, dp, length, spt
    cdef bint tcp, s_svc, d_svc, sis, smb0, silent, must
    with nogil:
        for i in range(n):
            if i + PREFETCH_AHEAD < n and off[first[i + PREFETCH_AHEAD]] < size:
                __builtin_prefetch(&data[off[first[i + PREFETCH_AHEAD]]])
            p = first[i]
            o = off[p]
            length = plen[p]
            avail = 0
            if o < size:
                avail = min(<Py_ssize_t>length, size - o)
            for k in range(8):
                b[k] = data[o + k] if k < avail else 0
            word1 = (<unsigned long long>b[4] << 24) | (<unsigned long long>b[5] << 16) | (<unsigned long long>b[6] << 8) | b[7]
            smb0 = b[0] == 0 and (word1 == 0xFF534D42ULL or word1 == 0xFE534D42ULL or word1 == 0xFD534D42ULL)
            # identify() has no opinion on these (control bytes that start no signature it knows)
            silent = b[0] < 0x21 and b[0] != 3 and b[0] != 5 and b[0] != 0x16 and not smb0
            tcp = proto[p] == 6
            sp, dp = sport[p], dport[p]
            s_svc, d_svc = service_port[sp] != 0, service_port[dp] != 0
            sis = (sp < dp) if (s_svc and d_svc) else (s_svc and not d_svc)
            spt = (sp if sis else dp) if (s_svc or d_svc) else -1
            must = spt >= 0 and (must_server[spt] if sis else must_client[spt]) != 0
            if tcp and silent and spt >= 0 and must and length >= min_decisive:
                quiet[n_quiet] = p
                quiet_side[n_quiet] = spt * 2 + sis
                n_quiet += 1
            elif (tcp and not silent) or (not tcp and (sp == direct_push_port or dp == direct_push_port) and b[0] == 0x4E):
                look[n_look] = p
                look_tcp[n_look] = tcp
                look_port[n_look] = spt
                look_src[n_look] = sis
                look_off[n_look] = o
                look_len[n_look] = length
                n_look += 1
    return (quiet_a[:n_quiet], side_a[:n_quiet], look_a[:n_look], tcp_a[:n_look], port_a[:n_look], src_a[:n_look], off_a[:n_look],
            len_a[:n_look])


cdef inline long long _context(long long server_port, bint tcp, bint server_is_src) noexcept nogil:
    return ((server_port + 1) << 2) | (<long long>tcp << 1) | server_is_src


def look_context(const long long[:] server_port, const unsigned char[:] tcp, const unsigned char[:] server_is_src):
    """What a first payload's verdict depends on besides its bytes (port guess, transport,
    which side sent it), one number per payload, as ``first_looks``' digest mixes it in."""
    cdef Py_ssize_t n = server_port.shape[0], i
    out_a = np.empty(n, np.int64)
    cdef long long[::1] out = out_a
    for i in range(n):
        out[i] = _context(server_port[i], tcp[i], server_is_src[i])
    return out_a


def same_payloads(const unsigned char[::1] data, const long long[:] off, const long long[:] plen,
                  const unsigned char[::1] other, const long long[:] other_off, const long long[:] other_len):
    """Per payload ``data[off[i]:off[i] + plen[i]]``, whether it is byte for byte
    ``other[other_off[i]:other_off[i] + other_len[i]]`` (each cut at the end of its buffer, as
    a slice is); False where ``other_off[i]`` is negative (nothing to compare with)."""
    cdef Py_ssize_t n = off.shape[0], size = data.shape[0], other_size = other.shape[0], i
    cdef long long o, p, length
    out_a = np.zeros(n, np.bool_)
    cdef unsigned char[::1] out = out_a.view(np.uint8)
    with nogil:
        for i in range(n):
            o, p = off[i], other_off[i]
            if p < 0:
                continue
            length = max(min(plen[i], <long long>size - o), 0)
            if length != max(min(other_len[i], <long long>other_size - p), 0):
                continue
            out[i] = length == 0 or memcmp(&data[o], &other[p], length) == 0
    return out_a


cdef inline Py_ssize_t _slot(unsigned long long h, Py_ssize_t mask) noexcept nogil:
    """Where probing for ``h`` starts in a table of ``mask + 1`` slots (Fibonacci hashing)."""
    return <Py_ssize_t>((h * GOLDEN) >> 40) & mask


cdef inline bint _in_sorted(const unsigned long long[::1] keys, unsigned long long h) noexcept nogil:
    cdef Py_ssize_t at = _lower_bound(keys, h)
    return at < keys.shape[0] and keys[at] == h


cdef inline unsigned char _byte(const unsigned char[::1] data, long long o, long long length, int k) noexcept nogil:
    """Byte ``k`` of the payload at ``data[o:o + length]``; 0 past its end (never the next record's)."""
    return data[o + k] if k < length and o + k < data.shape[0] else 0


cdef class WaitingFlows


def follow_scan(const unsigned char[::1] data, const long long[:] pay, const unsigned long long[:] hashes,
                const long long[:] off, const long long[:] plen, const unsigned short[::1] followed,
                WaitingFlows unparsed not None, const unsigned long long[::1] parsed_h,
                const unsigned long long[::1] started_h, const long long[::1] started_p,
                const unsigned long long[::1] waiting_h, const unsigned char[::1] ptype_used):
    """The payload packets ``pay`` of followed flows, in one call: ``(look, ended)``.

    A flow is followed when it waits ``unparsed`` or its hash is in ``parsed_h`` (sorted);
    ``followed`` (a count per low bits of the hash, kept by both) passes over most other packets
    before either is asked (a slot many flows share would otherwise send an unrelated flow's
    packets to be ended, or looked at in Python, for nothing). Its packets up to the one that started following in this batch (``started_h`` ->
    ``started_p``, sorted) are passed over; a whole PDU of a type following learns nothing
    from (``ptype_used`` is 0: bind_ack, RTS...) is skipped, unless the flow's stream waits
    for the rest of a PDU (``waiting_h``, sorted); the first packet that neither starts nor
    continues a PDU ends the following (its hash goes to ``ended``, in the order met), and the
    PDU packets before it are the ones to ``look`` at (Python parses them).
    """
    cdef Py_ssize_t n = pay.shape[0], size = data.shape[0], mask = followed.shape[0] - 1, i, s
    cdef Py_ssize_t slots = 16, ptype_max = ptype_used.shape[0] - 1
    candidates_a = np.empty(n, np.intp)
    cdef Py_ssize_t[::1] candidates = candidates_a
    cdef Py_ssize_t n_look = 0, n_ended = 0, n_candidates = 0
    cdef long long p, o, length, frag
    cdef unsigned long long h
    cdef unsigned char b0, b1, b2, drep, f8, f9
    cdef bint pdu_like, skip, cut
    if size == 0:  # no payload bytes at all: nothing to look at
        return candidates_a[:0], np.empty(0, np.uint64)
    with nogil:
        # the packets of followed flows first, then their first bytes, asked for ahead of use
        for i in range(n):
            p = pay[i]
            h = hashes[p]
            if (followed[h & mask] != 0 and (unparsed._find(h) >= 0 or _in_sorted(parsed_h, h))
                    and p > _sorted_value(started_h, started_p, h)):
                candidates[n_candidates] = p
                n_candidates += 1
    # the flows ended in this batch, a table sized by the candidates (few), not by the payload
    # packets (a few hundred kilobytes to allocate and zero per batch)
    while slots < 4 * n_candidates:
        slots <<= 1
    ended_table_a = np.zeros(slots, np.uint64)
    used_a = np.zeros(slots, np.uint8)
    look_a, ended_a = np.empty(n_candidates, np.intp), np.empty(n_candidates, np.uint64)
    cdef unsigned long long[::1] ended_table = ended_table_a
    cdef unsigned char[::1] used = used_a
    cdef Py_ssize_t[::1] look = look_a
    cdef unsigned long long[::1] ended = ended_a
    with nogil:
        for i in range(n_candidates):
            if i + PREFETCH_AHEAD < n_candidates and off[candidates[i + PREFETCH_AHEAD]] < size:
                __builtin_prefetch(&data[off[candidates[i + PREFETCH_AHEAD]]])
            p = candidates[i]
            h = hashes[p]
            o = off[p]
            length = plen[p]
            b0 = _byte(data, o, length, 0)
            b1 = _byte(data, o, length, 1)
            b2 = _byte(data, o, length, 2)
            drep = _byte(data, o, length, 4)
            f8 = _byte(data, o, length, 8)
            f9 = _byte(data, o, length, 9)
            pdu_like = b0 == 5 and b1 <= 1 and b2 <= 20
            frag = (f8 | (<long long>f9 << 8)) if drep & 0x10 else ((<long long>f8 << 8) | f9)
            skip = pdu_like and not ptype_used[min(<Py_ssize_t>b2, ptype_max)] and frag == length
            if waiting_h.shape[0] and _in_sorted(waiting_h, h):
                pdu_like, skip = True, False
            if skip:
                continue
            # has the flow ended already in this batch?
            s = _slot(h, slots - 1)
            cut = False
            while used[s]:
                if ended_table[s] == h:
                    cut = True
                    break
                s = (s + 1) & (slots - 1)
            if cut:
                continue
            if pdu_like:
                look[n_look] = p
                n_look += 1
            else:
                used[s] = 1
                ended_table[s] = h
                ended[n_ended] = h
                n_ended += 1
    return look_a[:n_look], ended_a[:n_ended]


cdef class WaitingFlows:
    """Followed flows that wait, unparsed, for a packet that needs a Python look: per flow hash,
    its key check, start time, server port guess and preset (the contexts its binds bound, by
    number); a count per slot of ``followed`` (shared with the caller's own followed flows) is
    kept in step, so that ``follow_scan`` finds their packets.

    Why compiled: most followed flows are DCE/RPC connections whose first payload was binds
    only, and most end with their next payload (no more PDUs). Tens of thousands of them start
    and end in a large capture; a batch's worth is started, ended and expired here in one call
    each, with no Python per flow. Open addressing (linear probing, deletion by backward shift)
    keyed by the hash; a log in start order gives the oldest first (expiry, the cap).
    """

    cdef unsigned long long[::1] _hash, _check, _log_hash
    cdef long long[::1] _ts, _port, _preset, _log_ts
    cdef unsigned char[::1] _used
    cdef unsigned short[::1] _followed
    cdef Py_ssize_t _mask, _count, _log_head, _log_len
    cdef object _arrays

    def __init__(self, unsigned short[::1] followed):
        self._followed = followed
        self._alloc(1 << 12)
        self._log_hash = np.zeros(16, np.uint64)
        self._log_ts = np.zeros(16, np.int64)
        self._log_head = self._log_len = 0

    cdef void _alloc(self, Py_ssize_t size):
        self._mask = size - 1
        self._hash = np.zeros(size, np.uint64)
        self._check = np.zeros(size, np.uint64)
        self._ts = np.zeros(size, np.int64)
        self._port = np.zeros(size, np.int64)
        self._preset = np.zeros(size, np.int64)
        self._used = np.zeros(size, np.uint8)
        self._count = 0

    cdef void _put(self, unsigned long long h, unsigned long long check, long long ts, long long port, long long preset) noexcept nogil:
        cdef Py_ssize_t s = _slot(h, self._mask)
        while self._used[s]:
            s = (s + 1) & self._mask
        self._used[s] = 1
        self._hash[s], self._check[s], self._ts[s], self._port[s], self._preset[s] = h, check, ts, port, preset
        self._count += 1

    cdef void _grow(self):
        """Twice the slots (the table is kept at most half full)."""
        cdef unsigned long long[::1] h = self._hash, check = self._check
        cdef long long[::1] ts = self._ts, port = self._port, preset = self._preset
        cdef unsigned char[::1] used = self._used
        cdef Py_ssize_t i
        self._alloc(2 * (self._mask + 1))
        for i in range(used.shape[0]):
            if used[i]:
                self._put(h[i], check[i], ts[i], port[i], preset[i])

    def __len__(self):
        return self._count

    cdef inline Py_ssize_t _find(self, unsigned long long h) noexcept nogil:
        """The slot of ``h``, or -1."""
        cdef Py_ssize_t s = _slot(h, self._mask)
        while self._used[s]:
            if self._hash[s] == h:
                return s
            s = (s + 1) & self._mask
        return -1

    cdef void _remove_at(self, Py_ssize_t s) noexcept nogil:
        """Empty slot ``s``, shifting back the entries its removal would cut off from their home."""
        cdef Py_ssize_t j = s, home
        self._followed[self._hash[s] & (self._followed.shape[0] - 1)] -= 1
        self._count -= 1
        while True:
            self._used[s] = 0
            while True:
                j = (j + 1) & self._mask
                if not self._used[j]:
                    return
                home = _slot(self._hash[j], self._mask)
                # j's entry may stay unless its home lies cyclically in (s, j]
                if (s <= j and (home <= s or home > j)) or (s > j and home <= s and home > j):
                    break
            self._hash[s], self._check[s], self._ts[s] = self._hash[j], self._check[j], self._ts[j]
            self._port[s], self._preset[s] = self._port[j], self._preset[j]
            self._used[s] = 1
            s = j

    cdef void _reserve_log(self, Py_ssize_t more):
        """Room at the log's end for ``more`` entries: when there is none, entries of flows that
        left (or came back later) go and the rest move to the front; the log grows to keep
        at least half of it free."""
        cdef Py_ssize_t n = self._log_hash.shape[0], size = n, i, k = 0, s
        if self._log_head + self._log_len + more <= n:
            return
        for i in range(self._log_head, self._log_head + self._log_len):
            s = self._find(self._log_hash[i])
            if s >= 0 and self._ts[s] == self._log_ts[i]:
                self._log_hash[k], self._log_ts[k] = self._log_hash[i], self._log_ts[i]
                k += 1
        self._log_head, self._log_len = 0, k
        while 2 * (k + more) > size:
            size *= 2
        if size != n:
            grown_h = np.zeros(size, np.uint64)
            grown_t = np.zeros(size, np.int64)
            grown_h[:k] = np.asarray(self._log_hash)[:k]
            grown_t[:k] = np.asarray(self._log_ts)[:k]
            self._log_hash, self._log_ts = grown_h, grown_t

    cdef inline void _log(self, unsigned long long h, long long ts) noexcept nogil:
        """Append to the log (the caller has reserved room)."""
        self._log_hash[self._log_head + self._log_len] = h
        self._log_ts[self._log_head + self._log_len] = ts
        self._log_len += 1

    def start(self, const unsigned long long[:] h, const unsigned long long[:] check, const long long[:] ts,
              const long long[:] port, const long long[:] preset):
        """Start waiting for each flow not waiting already; which were started (bool array)."""
        cdef Py_ssize_t n = h.shape[0], i
        added_a = np.zeros(n, np.bool_)
        cdef unsigned char[::1] added = added_a.view(np.uint8)
        # room for every flow first (at most half the slots used), so that the loop allocates
        # nothing and runs without the GIL
        while 2 * (self._count + n) > self._mask + 1:
            self._grow()
        self._reserve_log(n)
        with nogil:
            for i in range(n):
                if self._find(h[i]) >= 0:
                    continue
                self._put(h[i], check[i], ts[i], port[i], preset[i])
                self._followed[h[i] & (self._followed.shape[0] - 1)] += 1
                self._log(h[i], ts[i])
                added[i] = 1
        return added_a

    def end(self, const unsigned long long[:] h):
        """Stop waiting for these flows; which of them were waiting (bool array)."""
        cdef Py_ssize_t n = h.shape[0], i, s
        found_a = np.zeros(n, np.bool_)
        cdef unsigned char[::1] found = found_a.view(np.uint8)
        with nogil:
            for i in range(n):
                s = self._find(h[i])
                if s >= 0:
                    self._remove_at(s)
                    found[i] = 1
        return found_a

    def pop(self, unsigned long long h):
        """(check, start time, server port, preset) of a waiting flow, which stops waiting; or None."""
        cdef Py_ssize_t s = self._find(h)
        if s < 0:
            return None
        got = (self._check[s], self._ts[s], self._port[s], self._preset[s])
        self._remove_at(s)
        return got

    def __contains__(self, unsigned long long h):
        return self._find(h) >= 0

    def expire(self, long long before_ns):
        """Stop waiting for the flows that started before ``before_ns``; how many stopped."""
        return self._drop(True, before_ns, -1)

    def drop_oldest(self, Py_ssize_t n):
        """Stop waiting for the ``n`` flows that started first; how many stopped."""
        return self._drop(False, 0, n)

    cdef Py_ssize_t _drop(self, bint by_time, long long before_ns, Py_ssize_t at_most):
        cdef Py_ssize_t dropped = 0, s
        while self._log_len and dropped != at_most:
            s = self._find(self._log_hash[self._log_head])
            if s >= 0 and self._ts[s] == self._log_ts[self._log_head]:
                if by_time and self._ts[s] >= before_ns:
                    break
                self._remove_at(s)
                dropped += 1
            self._log_head += 1
            self._log_len -= 1
        return dropped

    def clear(self):
        """Forget every waiting flow (the caller clears ``followed``)."""
        self._used[:] = 0
        self._count = self._log_head = self._log_len = 0
