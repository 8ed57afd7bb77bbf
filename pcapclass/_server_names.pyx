# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The server a client names in its first payload: a TLS client hello's SNI (RFC 6066 3) or an
HTTP request's ``Host`` header, for a whole batch of first payloads in one call.

Why compiled: every TLS and HTTP flow has one; finding the name is a walk over the hello's
extensions or the header lines, one pass per batch here, with a digest of each name so that
Python makes one string per distinct name.
"""

from libc.string cimport memchr

from pcapclass._bytes cimport _digest

import numpy as np


cdef enum:
    K_MAX_SERVER_NAME = 255

#: the longest name ``server_names`` gives (a DNS name's limit, RFC 1035 2.3.4)
MAX_SERVER_NAME = K_MAX_SERVER_NAME


cdef inline unsigned int _be16(const unsigned char* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline bint _name_bytes(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """``p[:n]`` can be a server name: 1 to MAX_SERVER_NAME printable ASCII bytes, no space."""
    cdef Py_ssize_t k
    if n < 1 or n > K_MAX_SERVER_NAME:
        return False
    for k in range(n):
        if p[k] < 0x21 or p[k] > 0x7E:
            return False
    return True


cdef Py_ssize_t _sni(const unsigned char* p, Py_ssize_t n, Py_ssize_t* length) noexcept nogil:
    """Where the host_name of a TLS ClientHello's server_name extension (RFC 6066 3) starts in
    ``p[:n]`` (its length into ``length``), or -1. The ClientHello (RFC 8446 4.1.2, RFC 5246
    7.4.1.2) must be the first handshake message of the first record; every read stays inside
    ``p[:n]``, the record and the handshake message."""
    cdef Py_ssize_t end, pos, stop, ext_end, m, list_end, k
    cdef unsigned int kind, size
    if n < 9 or p[0] != 0x16 or p[1] != 0x03 or p[5] != 0x01:
        return -1
    end = min(n, 5 + <Py_ssize_t>_be16(p + 3))
    end = min(end, 9 + ((<Py_ssize_t>p[6] << 16) | (<Py_ssize_t>p[7] << 8) | p[8]))
    pos = 9 + 2 + 32  # client_version, random
    if pos + 1 > end:
        return -1
    pos += 1 + p[pos]  # legacy_session_id
    if pos + 2 > end:
        return -1
    pos += 2 + _be16(p + pos)  # cipher_suites
    if pos + 1 > end:
        return -1
    pos += 1 + p[pos]  # compression_methods
    if pos + 2 > end:
        return -1
    ext_end = min(end, pos + 2 + <Py_ssize_t>_be16(p + pos))
    pos += 2
    while pos + 4 <= ext_end:
        kind, size = _be16(p + pos), _be16(p + pos + 2)
        pos += 4
        stop = pos + size
        if stop > ext_end:
            return -1
        if kind == 0:  # server_name: ServerNameList, entries of (name_type, HostName)
            if pos + 2 > stop:
                return -1
            list_end = min(stop, pos + 2 + <Py_ssize_t>_be16(p + pos))
            k = pos + 2
            while k + 3 <= list_end:
                m = _be16(p + k + 1)
                if k + 3 + m > list_end:
                    return -1
                if p[k] == 0:  # host_name
                    if not _name_bytes(p + k + 3, m):
                        return -1
                    length[0] = m
                    return k + 3
                k += 3 + m
            return -1
        pos = stop
    return -1


cdef Py_ssize_t _host(const unsigned char* p, Py_ssize_t n, Py_ssize_t* length) noexcept nogil:
    """Where the value of an HTTP request's ``Host`` header (RFC 9112 3.2) starts in ``p[:n]``
    (its length, without a ``:port``, into ``length``), or -1: the first header line named
    ``Host`` among those after the first line, before the empty line that ends them; the line
    must end inside ``p[:n]`` (a value cut short is no name)."""
    cdef Py_ssize_t pos, eol, a, b, k
    cdef const unsigned char* lf = <const unsigned char*>memchr(p, 0x0A, n)
    if lf == NULL:
        return -1
    pos = lf - p + 1
    while pos < n:
        lf = <const unsigned char*>memchr(p + pos, 0x0A, n - pos)
        if lf == NULL:
            return -1
        eol = lf - p
        b = eol
        if b > pos and p[b - 1] == 0x0D:
            b -= 1
        if b == pos:  # the empty line: no Host header
            return -1
        if (b - pos >= 5 and (p[pos] | 0x20) == 0x68 and (p[pos + 1] | 0x20) == 0x6F and (p[pos + 2] | 0x20) == 0x73
                and (p[pos + 3] | 0x20) == 0x74 and p[pos + 4] == 0x3A):
            a = pos + 5
            while a < b and (p[a] == 0x20 or p[a] == 0x09):
                a += 1
            while b > a and (p[b - 1] == 0x20 or p[b - 1] == 0x09):
                b -= 1
            if a < b and p[a] == 0x5B:  # an IP literal: up to its "]"
                k = a
                while k < b and p[k] != 0x5D:
                    k += 1
                if k == b:
                    return -1
                b = k + 1
            else:
                for k in range(a, b):
                    if p[k] == 0x3A:
                        b = k
                        break
            if not _name_bytes(p + a, b - a):
                return -1
            length[0] = b - a
            return a
        pos = eol + 1
    return -1


def server_names(const unsigned char[::1] data, const long long[:] off, const long long[:] plen):
    """Per payload ``data[off[i]:off[i] + plen[i]]`` (cut at the end of ``data``): the server
    name it carries, as ``(start, length, digest)``: ``data[start[i]:start[i] + length[i]]``
    is the name (``length`` 0: none) and ``digest`` a 64-bit digest of it lower-cased (0 when
    none), so that names are made into strings once per distinct digest (``same_names`` then
    confirms one: a digest alone can collide).

    The name is a TLS ClientHello's SNI (its first ``host_name``) when the payload starts
    with a handshake record, else the ``Host`` header's value (no ``:port``) of the HTTP
    request the payload is taken to start with (the caller checks its request line). Only
    printable ASCII names of at most MAX_SERVER_NAME bytes count; every read stays inside
    the payload.
    """
    cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i, avail, at, m, k
    cdef long long o
    cdef const unsigned char* p
    cdef unsigned char low[K_MAX_SERVER_NAME]
    # empty, each set in the pass (numpy's zeros would let the GIL go and wait to take it back)
    start_a, length_a, digest_a = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.uint64)
    cdef long long[::1] start = start_a
    cdef long long[::1] length = length_a
    cdef unsigned long long[::1] digest = digest_a
    with nogil:
        for i in range(n):
            o = off[i]
            start[i] = length[i] = digest[i] = 0
            if o < 0 or o >= size or plen[i] <= 0:
                continue
            avail = min(<Py_ssize_t>plen[i], size - <Py_ssize_t>o)
            p = &data[o]
            m = 0
            at = _sni(p, avail, &m) if p[0] == 0x16 else _host(p, avail, &m)
            if at < 0:
                continue
            for k in range(m):
                low[k] = p[at + k] + 32 if 0x41 <= p[at + k] <= 0x5A else p[at + k]
            start[i] = o + at
            length[i] = m
            digest[i] = _digest(low, m, 0)
    return start_a, length_a, digest_a


def same_names(const unsigned char[::1] data, const long long[:] start, const long long[:] length,
               const long long[:] other_start, const long long[:] other_length):
    """Per name ``data[start[i]:start[i] + length[i]]`` (as ``server_names`` gives them),
    whether it is ``data[other_start[i]:...]`` but for the case of its letters."""
    cdef Py_ssize_t n = start.shape[0], i, k
    cdef unsigned char a, b
    out_a = np.zeros(n, np.bool_)
    cdef unsigned char[::1] out = out_a.view(np.uint8)
    with nogil:
        for i in range(n):
            if length[i] != other_length[i]:
                continue
            out[i] = True
            for k in range(length[i]):
                a, b = data[start[i] + k], data[other_start[i] + k]
                if (a + 32 if 0x41 <= a <= 0x5A else a) != (b + 32 if 0x41 <= b <= 0x5A else b):
                    out[i] = False
                    break
    return out_a
