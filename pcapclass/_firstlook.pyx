# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The first look at each flow's first payloads: which deserve a Python look, and a digest
that finds identical ones.

Why compiled: every flow has up to two first payloads, and for each the evidence stage needs
a dozen facts from its first bytes and ports plus a 64-bit digest of up to HEAD_BYTES bytes.
With numpy that was some thirty passes over the batch and a gather of HEAD_BYTES per payload;
here it is one pass that reads each byte once.
"""

from libc.string cimport memcpy

import numpy as np

cdef unsigned long long GOLDEN = 0x9E3779B97F4A7C15ULL

cdef enum:
    K_SKIP, K_QUIET, K_LOOK

#: what ``first_looks`` says of a payload
SKIP, QUIET, LOOK = K_SKIP, K_QUIET, K_LOOK


def first_looks(const unsigned char[::1] data, const long long[:] off, const long long[:] plen,
                const long long[:] proto, const long long[:] sport, const long long[:] dport,
                const unsigned char[::1] service_port, const unsigned char[::1] must_server,
                const unsigned char[::1] must_client, Py_ssize_t head_bytes, long long direct_push_port,
                long long min_decisive):
    """For each first payload: ``(kind, server_port, server_is_src, group)``.

    * ``kind``: LOOK when its first bytes could start something ``identify`` knows (TCP), or
      it may be a Direct Push NOTIFY (UDP to or from ``direct_push_port``); QUIET when it is
      TCP, starts with control bytes no signature starts with, is at least ``min_decisive``
      bytes long and sits on a port whose protocol must show (``must_server``/``must_client``
      by sender): an unrecognizable payload that contradicts its port; SKIP otherwise.
    * ``server_port``: the side on a service port (the lower one if both), -1 if neither;
      ``server_is_src``: that side sent the payload.
    * ``group``: a digest of the first ``head_bytes`` bytes (8-byte words in native order), the length, the transport and the
      port guess: payloads with the same group get the same verdict.
    """
    cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i, k, j, avail, o
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
            o = off[i]
            length = plen[i]
            avail = 0
            if o < size:
                avail = min(<Py_ssize_t>length, size - o)
            for k in range(8):
                b[k] = data[o + k] if k < avail else 0
            word1 = (<unsigned long long>b[4] << 24) | (<unsigned long long>b[5] << 16) | (<unsigned long long>b[6] << 8) | b[7]
            smb0 = b[0] == 0 and (word1 == 0xFF534D42ULL or word1 == 0xFE534D42ULL or word1 == 0xFD534D42ULL)
            # identify() has no opinion on these (control bytes that start no signature it knows)
            silent = b[0] < 0x21 and b[0] != 3 and b[0] != 5 and b[0] != 0x16 and not smb0
            tcp = proto[i] == 6
            sp, dp = sport[i], dport[i]
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
