# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled record walks: the one sequential step of reading a capture.

Each record's length says where the next one begins, so no vectorized form exists: in
Python the walk costs ~0.3 µs a record, more than all the numpy work after it. Compiled,
it costs a few ns. Only the walk lives here; every check and message stays in Python.
"""

import numpy as np

cdef inline long long _u32(const unsigned char[::1] data, Py_ssize_t at, bint big_endian) noexcept nogil:
    if big_endian:
        return (<long long>data[at] << 24) | (<long long>data[at + 1] << 16) | (<long long>data[at + 2] << 8) | data[at + 3]
    return (<long long>data[at + 3] << 24) | (<long long>data[at + 2] << 16) | (<long long>data[at + 1] << 8) | data[at]


def u32(const unsigned char[::1] data, Py_ssize_t at, bint big_endian):
    """The unsigned 32-bit integer at ``data[at:at + 4]`` in the given byte order."""
    return _u32(data, at, big_endian)


def walk_pcap(const unsigned char[::1] data, Py_ssize_t pos, Py_ssize_t end, bint big_endian,
              long long ts_scale, long long max_caplen):
    """Walk the whole pcap records in ``data[pos:end]`` (draft-ietf-opsawg-pcap §5).

    Returns ``(offset, caplen, wirelen, ts_ns, stop, bad, bad_fraction)``: per record, where
    its packet starts, its captured and original lengths and its time in ns; ``stop`` is where
    the walk ended, at the first record that does not fit in ``end`` or, with ``bad`` set,
    whose caplen exceeds ``max_caplen`` (trusting that length would misread every record
    after it); ``bad_fraction`` counts the records whose fractional-second field is a second
    or more (``ts_scale`` of them make a second), which carries into the seconds.
    """
    cdef Py_ssize_t cap = (end - pos) // 16 + 1 if end > pos else 1
    offset_a = np.empty(cap, np.int64)
    caplen_a = np.empty(cap, np.int64)
    wirelen_a = np.empty(cap, np.int64)
    ts_a = np.empty(cap, np.int64)
    cdef long long[::1] offset = offset_a
    cdef long long[::1] caplen = caplen_a
    cdef long long[::1] wirelen = wirelen_a
    cdef long long[::1] ts_ns = ts_a
    cdef Py_ssize_t n = 0
    cdef Py_ssize_t nxt
    cdef long long length, fraction
    cdef long long second = 1000000000 // ts_scale
    cdef Py_ssize_t bad_fraction = 0
    cdef bint bad = False
    with nogil:
        while pos + 16 <= end:
            length = _u32(data, pos + 8, big_endian)
            if length > max_caplen:
                bad = True
                break
            nxt = pos + 16 + length
            if nxt > end:
                break
            offset[n] = pos + 16
            caplen[n] = length
            wirelen[n] = _u32(data, pos + 12, big_endian)
            fraction = _u32(data, pos + 4, big_endian)
            if fraction >= second:
                bad_fraction += 1
            ts_ns[n] = _u32(data, pos, big_endian) * 1000000000 + fraction * ts_scale
            n += 1
            pos = nxt
    # copied out in one section without the GIL (numpy's copies would each let it go and wait
    # to take it back behind the other stages' Python)
    out = [np.empty(n, np.int64) for _ in range(4)]
    cdef long long[::1] o0 = out[0], o1 = out[1], o2 = out[2], o3 = out[3]
    cdef Py_ssize_t i
    with nogil:
        for i in range(n):
            o0[i], o1[i], o2[i], o3[i] = offset[i], caplen[i], wirelen[i], ts_ns[i]
    return out[0], out[1], out[2], out[3], pos, bad, bad_fraction


cdef enum:
    BT_SHB = 0x0A0D0D0A
    BT_IDB = 1
    BT_PB = 2
    BT_SPB = 3
    BT_EPB = 6
    #: the smallest valid block, and the smallest packet blocks: EPB and PB have 20 bytes of
    #: fixed fields between the 8-byte head and the 4-byte trailing length, SPB has 4
    MIN_BLOCK = 12
    MIN_EPB = 32
    MIN_SPB = 16

#: the smallest total length of each packet block type (the reader names them in its message)
MIN_EPB_LEN, MIN_SPB_LEN = MIN_EPB, MIN_SPB


def walk_pcapng(const unsigned char[::1] data, Py_ssize_t pos, Py_ssize_t end, bint big_endian,
                long long max_block_len, Py_ssize_t room):
    """Walk a run of pcapng blocks in ``data[pos:end]`` (draft-ietf-opsawg-pcapng §3.1, §4).

    Returns ``(epb, spb, stop)``: where each Enhanced (or obsolete) Packet Block and each
    Simple Packet Block of the run starts, and where the walk stopped. Blocks of other types
    are skipped. The walk stops at a section header or interface description (the reader
    parses those), at a block whose length is invalid (under the spec's minimum for its type,
    not a multiple of 4) or above ``max_block_len`` (the reader reports it), at a block that
    does not fit before ``end``, or after ``room`` packet blocks.

    Every packet block counted is at least ``MIN_EPB`` or ``MIN_SPB`` bytes long, which is
    what sizes the output arrays; the walk also stops when they are full, so no crafted run of
    blocks can write past them.
    """
    cdef Py_ssize_t span = end - pos if end > pos else 0
    cdef Py_ssize_t cap_e = span // MIN_EPB + 1, cap_s = span // MIN_SPB + 1
    epb_a = np.empty(cap_e, np.int64)
    spb_a = np.empty(cap_s, np.int64)
    cdef long long[::1] epb = epb_a
    cdef long long[::1] spb = spb_a
    cdef Py_ssize_t ne = 0, ns = 0
    cdef long long btype, blen
    with nogil:
        while pos + MIN_BLOCK <= end and ne + ns < room:
            btype = _u32(data, pos, big_endian)
            if btype == BT_SHB or btype == BT_IDB:
                break
            blen = _u32(data, pos + 4, big_endian)
            if blen < MIN_BLOCK or blen % 4 or blen > max_block_len or pos + blen > end:
                break
            if btype == BT_EPB or btype == BT_PB:
                if blen < MIN_EPB or ne >= cap_e:
                    break
                epb[ne] = pos
                ne += 1
            elif btype == BT_SPB:
                if blen < MIN_SPB or ns >= cap_s:
                    break
                spb[ns] = pos
                ns += 1
            pos += blen
    return epb_a[:ne].copy(), spb_a[:ns].copy(), pos


def length_anomalies(const long long[:] caplen, const long long[:] wirelen, long long snaplen, long long max_caplen):
    """``(over_snaplen, below, implausible)``: the records captured longer than ``snaplen``
    (0: none is), and those whose original length is below their captured length, or above
    ``max_caplen``; one pass without the GIL, where numpy's comparisons and counts would each
    let it go and wait to take it back behind the other stages' Python."""
    cdef Py_ssize_t i, over = 0, below = 0, implausible = 0
    with nogil:
        for i in range(caplen.shape[0]):
            over += snaplen != 0 and caplen[i] > snaplen
            below += wirelen[i] < caplen[i]
            implausible += wirelen[i] > max_caplen
    return over, below, implausible


cdef inline long long _u16(const unsigned char[::1] data, Py_ssize_t at, bint big_endian) noexcept nogil:
    if big_endian:
        return (<long long>data[at] << 8) | data[at + 1]
    return (<long long>data[at + 1] << 8) | data[at]


cdef inline long long _pow10(long long e) noexcept nogil:
    cdef long long r = 1
    for _ in range(e):
        r *= 10
    return r


cdef enum:
    EPB_HEAD = 28  # type, length, interface, time (high, low), captured and original length


def packet_blocks(const unsigned char[::1] data, const long long[:] pos, bint big_endian, const long long[:] if_link,
                  const long long[:] if_snap, const long long[:] if_exp2, const long long[:] if_exp10,
                  const long long[:] if_offset_s, long long max_caplen, long long ts_ns_max):
    """The packets of the Enhanced (and obsolete) Packet Blocks at ``pos`` (draft-ietf-opsawg-pcapng
    §4.3, Appendix A; ``walk_pcapng`` finds them), in one pass without the GIL:
    ``(offset, caplen, wirelen, ts_ns, linktype, over_snaplen, saturated, bad)``.

    The interfaces are described by the ``if_*`` arrays: link type, snaplen (0: none), time
    resolution (``if_exp2`` 2**-n, -1 when it is ``if_exp10`` 10**-n) and offset in seconds.
    A time is the interface's ticks in ns since the epoch; one past int64 ns saturates at
    ``ts_ns_max`` (``saturated`` counts those). ``over_snaplen`` counts packets captured longer
    than their interface's snaplen. The packets end before the first block that names an
    interface not described, or claims more captured bytes than it holds or than
    ``max_caplen``: ``bad`` is that block's (index, interface, captured length, block length),
    for the caller's message, or None when there is none.
    """
    cdef Py_ssize_t n = pos.shape[0], n_if = if_link.shape[0], size = data.shape[0], i, k = 0
    cdef Py_ssize_t stop = -1
    cdef long long stop_if = 0, stop_cap = 0, stop_len = 0
    for i in range(n):
        if pos[i] < 0 or pos[i] + EPB_HEAD > size:
            raise ValueError(f"packet block {i} at {pos[i]} runs past the buffer")
    # per interface: the largest tick count (in whole units) that fits, the ns per unit, and the
    # divisor for resolutions finer than a ns (int64 holds them: reading the interface bounds
    # if_tsoffset and if_tsresol)
    limit_a, mul_a, div_a, off_a = (np.zeros(n_if, np.int64) for _ in range(4))
    cdef long long[::1] limit = limit_a, mul = mul_a, div = div_a, off_ns = off_a
    for j in range(n_if):
        if if_exp2[j] >= 0:
            mul[j], div[j] = 1_000_000_000, 1
        elif if_exp10[j] <= 9:
            mul[j], div[j] = _pow10(9 - if_exp10[j]), 1
        else:
            mul[j], div[j] = 1, _pow10(if_exp10[j] - 9)
        limit[j] = (ts_ns_max - abs(if_offset_s[j]) * 1_000_000_000 - 1_000_000_000) // mul[j]
        off_ns[j] = if_offset_s[j] * 1_000_000_000
    offset_a, caplen_a, wirelen_a, ts_a, link_a = (np.empty(n, np.int64) for _ in range(5))
    cdef long long[::1] offset = offset_a, caplen = caplen_a, wirelen = wirelen_a, ts_ns = ts_a, link = link_a
    cdef Py_ssize_t over = 0, saturated = 0
    cdef long long p, ifc, blen, cap, e2, frac_ns
    cdef unsigned long long ticks, whole
    with nogil:
        for i in range(n):
            p = pos[i]
            blen = _u32(data, p + 4, big_endian)
            ifc = _u16(data, p + 8, big_endian) if _u32(data, p, big_endian) == BT_PB else _u32(data, p + 8, big_endian)
            cap = _u32(data, p + 20, big_endian)
            if ifc >= n_if or cap > blen - MIN_EPB or cap > max_caplen:
                stop, stop_if, stop_cap, stop_len = i, ifc, cap, blen
                break
            offset[k], caplen[k], wirelen[k], link[k] = p + EPB_HEAD, cap, _u32(data, p + 24, big_endian), if_link[ifc]
            if if_snap[ifc] > 0 and cap > if_snap[ifc]:
                over += 1
            ticks = (<unsigned long long>_u32(data, p + 12, big_endian) << 32) | <unsigned long long>_u32(data, p + 16, big_endian)
            e2 = if_exp2[ifc]
            frac_ns = 0
            if e2 >= 0:
                whole = ticks >> e2
                if e2 <= 30:
                    frac_ns = (<long long>(ticks & ((1ULL << e2) - 1)) * 1_000_000_000) >> e2
            else:
                whole = ticks // <unsigned long long>div[ifc]
            if whole > <unsigned long long>limit[ifc]:
                ts_ns[k] = ts_ns_max
                saturated += 1
            else:
                ts_ns[k] = <long long>whole * mul[ifc] + frac_ns + off_ns[ifc]
            k += 1
    bad = (stop, stop_if, stop_cap, stop_len) if stop >= 0 else None
    return offset_a[:k], caplen_a[:k], wirelen_a[:k], ts_a[:k], link_a[:k], over, saturated, bad
