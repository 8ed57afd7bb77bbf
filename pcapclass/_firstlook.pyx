# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The first look at each flow's first payloads (which deserve a Python look, and a digest
that finds identical ones), and at the later packets of the flows the evidence stage follows.

Why compiled: every flow has up to two first payloads, and for each the evidence stage needs
a dozen facts from its first bytes and ports plus a 64-bit digest of up to HEAD_BYTES bytes.
With numpy that was some thirty passes over the batch and a gather of HEAD_BYTES per payload;
here it is one pass that reads each byte once. Likewise every payload packet is checked for
belonging to a followed flow, and most of those need no Python look: one pass, not fifteen
numpy calls and a loop per batch.
"""

from libc.string cimport memcpy

import numpy as np

cdef unsigned long long GOLDEN = 0x9E3779B97F4A7C15ULL

cdef enum:
    K_SKIP, K_QUIET, K_LOOK

#: what ``first_looks`` says of a payload
SKIP, QUIET, LOOK = K_SKIP, K_QUIET, K_LOOK


def first_looks(const unsigned char[::1] data, const long long[:] first, const long long[:] off,
                const long long[:] plen, const long long[:] proto, const long long[:] sport, const long long[:] dport,
                const unsigned char[::1] service_port, const unsigned char[::1] must_server,
                const unsigned char[::1] must_client, Py_ssize_t head_bytes, long long direct_push_port,
                long long min_decisive):
    """For each first payload (packet ``first[i]`` of the batch's columns): ``(kind, server_port,
    server_is_src, group)``.

    * ``kind``: LOOK when its first bytes could start something ``identify`` knows (TCP), or
      it may be a Direct Push NOTIFY (UDP to or from ``direct_push_port``); QUIET when it is
      TCP, starts with control bytes no signature starts with, is at least ``min_decisive``
      bytes long and sits on a port whose protocol must show (``must_server``/``must_client``
      by sender): an unrecognizable payload that contradicts its port; SKIP otherwise.
    * ``server_port``: the side on a service port (the lower one if both), -1 if neither;
      ``server_is_src``: that side sent the payload.
    * ``group``: for a payload to LOOK at (0 for the others), a digest of its first ``head_bytes``
      bytes (8-byte words in native order), its length, the transport and the port guess:
      payloads with the same group get the same verdict.
    """
    cdef Py_ssize_t n = first.shape[0], size = data.shape[0], i, k, j, avail, o, p
    kind_a = np.zeros(n, np.int8)
    port_a = np.empty(n, np.int64)
    src_a = np.zeros(n, np.bool_)
    group_a = np.empty(n, np.uint64)
    cdef signed char[::1] kind = kind_a
    cdef long long[::1] server_port = port_a
    cdef unsigned char[::1] server_is_src = src_a.view(np.uint8)
    cdef unsigned long long[::1] group = group_a
    cdef unsigned char b[8]
    cdef unsigned long long word1, digest, w
    cdef long long sp, dp, length, spt
    cdef bint tcp, s_svc, d_svc, sis, smb0, silent, must
    with nogil:
        for i in range(n):
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
            server_port[i] = spt
            server_is_src[i] = sis
            must = spt >= 0 and (must_server[spt] if sis else must_client[spt]) != 0
            if tcp and silent and spt >= 0 and must and length >= min_decisive:
                kind[i] = K_QUIET
            elif (tcp and not silent) or (not tcp and (sp == direct_push_port or dp == direct_push_port) and b[0] == 0x4E):
                kind[i] = K_LOOK
            if kind[i] != K_LOOK:  # only a payload to look at needs its digest
                group[i] = 0
                continue
            # the digest: 8-byte little-endian words of the first head_bytes, each weighted
            digest = 0
            avail = min(avail, head_bytes)
            k = 0
            while k < avail:
                if avail - k >= 8:
                    memcpy(&w, &data[o + k], 8)  # native order, as numpy's uint64 view was
                else:
                    w = 0
                    for j in range(avail - k):
                        w |= <unsigned long long>data[o + k + j] << (8 * j)
                digest += w * ((<unsigned long long>(k // 8 + 1) * GOLDEN) | 1)
                k += 8
            digest ^= digest >> 29
            group[i] = (digest + <unsigned long long>length * 0xC2B2AE3D27D4EB4FULL
                        + <unsigned long long>(spt + 1) * 0x165667B19E3779F9ULL
                        + ((<unsigned long long>tcp << 1) | <unsigned long long>sis) * 0x27D4EB2F165667C5ULL)
    return kind_a, port_a, src_a, group_a


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


cdef inline bint _in_sorted(const unsigned long long[::1] keys, unsigned long long h) noexcept nogil:
    cdef Py_ssize_t at = _lower_bound(keys, h)
    return at < keys.shape[0] and keys[at] == h


cdef inline long long _start_of(const unsigned long long[::1] keys, const long long[::1] values,
                                unsigned long long h) noexcept nogil:
    cdef Py_ssize_t at = _lower_bound(keys, h)
    if at < keys.shape[0] and keys[at] == h:
        return values[at]
    return -1


def follow_scan(const unsigned char[::1] data, const long long[:] pay, const unsigned long long[:] hashes,
                const long long[:] off, const long long[:] plen, const unsigned short[::1] followed,
                const unsigned long long[::1] started_h, const long long[::1] started_p,
                const unsigned long long[::1] waiting_h, const unsigned char[::1] ptype_used):
    """The payload packets ``pay`` of followed flows, in one pass: ``(look, ended)``.

    A flow is followed when its hash's slot in ``followed`` (a count per low bits of the hash)
    is set. Its packets up to the one that started following in this batch (``started_h`` ->
    ``started_p``, sorted) are passed over; a whole PDU of a type following learns nothing
    from (``ptype_used`` is 0: bind_ack, RTS...) is skipped, unless the flow's stream waits
    for the rest of a PDU (``waiting_h``, sorted); the first packet that neither starts nor
    continues a PDU ends the following (its hash goes to ``ended``, in the order met), and the
    PDU packets before it are the ones to ``look`` at (Python parses them).
    """
    cdef Py_ssize_t n = pay.shape[0], size = data.shape[0], mask = followed.shape[0] - 1, i, s
    cdef Py_ssize_t slots = 16, ptype_max = ptype_used.shape[0] - 1
    while slots < 4 * n:
        slots <<= 1
    ended_table_a = np.zeros(slots, np.uint64)
    used_a = np.zeros(slots, np.uint8)
    look_a = np.empty(n, np.intp)
    ended_a = np.empty(n, np.uint64)
    cdef unsigned long long[::1] ended_table = ended_table_a
    cdef unsigned char[::1] used = used_a
    cdef Py_ssize_t[::1] look = look_a
    cdef unsigned long long[::1] ended = ended_a
    cdef Py_ssize_t n_look = 0, n_ended = 0
    cdef long long p, o, length, frag
    cdef unsigned long long h
    cdef unsigned char b0, b1, b2, drep, f8, f9
    cdef bint pdu_like, skip, cut
    if size == 0:  # no payload bytes at all: nothing to look at
        return look_a[:0], ended_a[:0]
    with nogil:
        for i in range(n):
            p = pay[i]
            h = hashes[p]
            if followed[h & mask] == 0:
                continue
            if p <= _start_of(started_h, started_p, h):
                continue
            o = off[p]
            length = plen[p]
            b0 = data[min(o, size - 1)]
            b1 = data[min(o + 1, size - 1)]
            b2 = data[min(o + 2, size - 1)]
            drep = data[min(o + 4, size - 1)]
            f8 = data[min(o + 8, size - 1)]
            f9 = data[min(o + 9, size - 1)]
            pdu_like = b0 == 5 and b1 <= 1 and b2 <= 20
            frag = (f8 | (<long long>f9 << 8)) if drep & 0x10 else ((<long long>f8 << 8) | f9)
            skip = pdu_like and not ptype_used[min(<Py_ssize_t>b2, ptype_max)] and frag == length
            if waiting_h.shape[0] and _in_sorted(waiting_h, h):
                pdu_like, skip = True, False
            if skip:
                continue
            # has the flow ended already in this batch?
            s = <Py_ssize_t>((h * GOLDEN) >> 40) & (slots - 1)
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


def later_starts(const unsigned char[::1] data, const long long[:] pay, const long long[:] first,
                 const long long[:] off, const long long[:] plen, const long long[:] proto,
                 bytes prefix, long long min_len):
    """The TCP packets of ``pay`` not in ``first`` whose payload (at least ``min_len`` bytes,
    and no shorter than ``prefix``) starts with ``prefix``, in order.

    Why compiled: the EHLO reply scan looks at the first bytes of every later TCP payload of
    a batch; with numpy that was a mask per condition and a gather per prefix byte.
    """
    cdef Py_ssize_t n = pay.shape[0], size = data.shape[0], n_pkt = 0, i, k, m = len(prefix), found = 0
    cdef const unsigned char* want = prefix
    cdef long long p, o
    cdef bint match
    for i in range(first.shape[0]):
        n_pkt = max(n_pkt, <Py_ssize_t>first[i] + 1)
    for i in range(n):
        n_pkt = max(n_pkt, <Py_ssize_t>pay[i] + 1)
    is_first_a = np.zeros(n_pkt, np.uint8)
    out_a = np.empty(n, np.intp)
    cdef unsigned char[::1] is_first = is_first_a
    cdef Py_ssize_t[::1] out = out_a
    min_len = max(min_len, <long long>m)
    with nogil:
        for i in range(first.shape[0]):
            is_first[first[i]] = 1
        for i in range(n):
            p = pay[i]
            if is_first[p] or proto[p] != 6 or plen[p] < min_len:
                continue
            o = off[p]
            if o + m > size:
                continue
            match = True
            for k in range(m):
                if data[o + k] != want[k]:
                    match = False
                    break
            if match:
                out[found] = p
                found += 1
    return out_a[:found]
