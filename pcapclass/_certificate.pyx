# cython: boundscheck=False, wraparound=False, cdivision=True
"""Where the server certificate's subject lies in a TLS server's first payload.

In TLS 1.0–1.2 the server sends its certificate chain in the clear right after the
ServerHello (RFC 5246 7.4.2), usually in the same TCP segment; the subject of the first
certificate (the server's own, RFC 5280 4.1.2.6) is a few hundred bytes into it. The kernel
finds that DER ``Name`` without copying it; ``certificate.py`` turns each distinct one into
text. TLS 1.3 encrypts the certificate: its ServerHello is followed by no handshake record in
the clear, so nothing is found there.
"""

import numpy as np

from pcapclass._bytes cimport _digest

cdef enum:
    # TLS record content type and handshake message types (RFC 5246 6.2.1, 7.4)
    HANDSHAKE = 0x16
    SERVER_HELLO = 2
    CERTIFICATE = 11
    # DER tags (X.690 8.1.2): SEQUENCE, INTEGER, the [0] EXPLICIT version of a TBSCertificate
    SEQUENCE = 0x30
    INTEGER = 0x02
    VERSION = 0xA0


cdef inline Py_ssize_t _be(const unsigned char* p, int n) noexcept nogil:
    cdef Py_ssize_t v = 0
    cdef int k
    for k in range(n):
        v = (v << 8) | p[k]
    return v


cdef Py_ssize_t _element(const unsigned char* p, Py_ssize_t at, Py_ssize_t avail, int tag,
                         Py_ssize_t* header) noexcept nogil:
    """The content length of the DER element at ``p[at]`` if its tag is ``tag`` and its
    header lies inside ``avail`` bytes (``header`` gets the header's length), else -1.
    Only definite lengths of at most 4 bytes: a certificate has no others."""
    cdef Py_ssize_t b, n
    if at + 2 > avail or p[at] != tag:
        return -1
    b = p[at + 1]
    if b < 0x80:
        header[0] = 2
        return b
    n = b & 0x7F
    if n == 0 or n > 4 or at + 2 + n > avail:
        return -1
    header[0] = 2 + n
    return _be(&p[at + 2], <int>n)


cdef Py_ssize_t _certificate(const unsigned char* p, Py_ssize_t avail) noexcept nogil:
    """Where the Certificate handshake message starts in a server's first payload made of
    handshake records (the ServerHello first), else -1. A message may not span records here."""
    cdef Py_ssize_t at = 0, hs, end
    cdef bint first = True
    while at + 5 <= avail and p[at] == HANDSHAKE and p[at + 1] == 3:
        end = at + 5 + _be(&p[at + 3], 2)
        hs = at + 5
        while hs + 4 <= end and hs + 4 <= avail:
            if first and p[hs] != SERVER_HELLO:
                return -1
            first = False
            if p[hs] == CERTIFICATE:
                return hs
            hs += 4 + _be(&p[hs + 1], 3)
        if hs != end:
            return -1
        at = end
    return -1


cdef Py_ssize_t _subject(const unsigned char* p, Py_ssize_t avail, Py_ssize_t* length) noexcept nogil:
    """Where the first certificate's subject ``Name`` starts (``length``: its DER length,
    header included), when it lies whole inside ``avail`` bytes; else -1."""
    cdef Py_ssize_t at = _certificate(p, avail), hdr = 0, n, k
    if at < 0:
        return -1
    at += 4 + 3 + 3  # handshake header, certificate_list length, the first certificate's length
    # Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
    if _element(p, at, avail, SEQUENCE, &hdr) < 0:
        return -1
    at += hdr
    if _element(p, at, avail, SEQUENCE, &hdr) < 0:
        return -1
    at += hdr
    # TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer, validity, subject, ... }
    n = _element(p, at, avail, VERSION, &hdr)
    if n >= 0:
        at += hdr + n
    n = _element(p, at, avail, INTEGER, &hdr)
    if n < 0:
        return -1
    at += hdr + n
    for k in range(3):  # signature, issuer, validity
        n = _element(p, at, avail, SEQUENCE, &hdr)
        if n < 0:
            return -1
        at += hdr + n
    n = _element(p, at, avail, SEQUENCE, &hdr)
    if n < 0 or at + hdr + n > avail:
        return -1
    length[0] = hdr + n
    return at


def certificate_subjects(const unsigned char[::1] data, const long long[:] off, const long long[:] plen):
    """Per server payload ``data[off[i]:off[i] + plen[i]]`` (cut at the end of ``data``):
    its certificate's subject as ``(start, length, digest)``: ``data[start[i]:start[i] +
    length[i]]`` is the DER ``Name`` (``length`` 0: none) and ``digest`` a 64-bit digest of
    it (``_digest``), so that names are made into text once per distinct digest (their bytes
    then confirm one: a digest alone can collide). Every read stays inside the payload."""
    cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i, avail, at, m
    cdef long long o
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
            m = 0
            at = _subject(&data[o], avail, &m)
            if at < 0:
                continue
            start[i] = o + at
            length[i] = m
            digest[i] = _digest(&data[o + at], m, 0)
    return start_a, length_a, digest_a

