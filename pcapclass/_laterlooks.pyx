# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The payload packets of a batch that the evidence stage's later looks start from, in one pass.

Besides first payloads, every batch is searched for EHLO reply candidates (later TCP payloads
starting "250-"), DCE/RPC requests (a client's answer to a notification) and short datagrams
between high ports (notifications). What each test matches is handed in; the tests read each
payload's first bytes, a cache miss apiece on a batch of megabytes, so they read them once, and
numpy would have taken a gather per column and a mask per test.
"""

from pcapclass._bytes cimport PREFETCH_AHEAD, __builtin_prefetch

import numpy as np


cdef inline bint _starts(const unsigned char[::1] data, long long o, long long length, const unsigned char* want,
                         Py_ssize_t m, long long min_len) noexcept nogil:
    """Whether the payload ``data[o:o + length]`` (at least ``min_len`` and ``m`` bytes) starts with ``want[:m]``."""
    cdef Py_ssize_t k
    if length < min_len or length < m or o + m > data.shape[0]:
        return False
    for k in range(m):
        if data[o + k] != want[k]:
            return False
    return True


def later_looks(const unsigned char[::1] data, const long long[:] pay, const long long[:] first,
                const long long[:] off, const long long[:] plen, const long long[:] proto,
                const long long[:] sport, const long long[:] dport, bytes reply_prefix, long long reply_min,
                bytes request_head, long long request_min, long long max_datagram, long long high_port):
    """``(replies, requests, datagrams)``: packets of the payload packets ``pay``, each in order.

    * ``replies``: TCP, not in ``first``, whose payload (at least ``reply_min`` bytes) starts
      with ``reply_prefix``;
    * ``requests``: TCP, whose payload (at least ``request_min`` bytes) starts with ``request_head``;
    * ``datagrams``: UDP, at most ``max_datagram`` bytes, both ports at least ``high_port``.
    """
    cdef Py_ssize_t n = pay.shape[0], n_pkt = 0, i, n_replies = 0, n_requests = 0, n_datagrams = 0
    cdef const unsigned char* reply = reply_prefix
    cdef const unsigned char* head = request_head
    cdef Py_ssize_t m_reply = len(reply_prefix), m_head = len(request_head)
    cdef long long p
    for i in range(first.shape[0]):
        n_pkt = max(n_pkt, <Py_ssize_t>first[i] + 1)
    for i in range(n):
        n_pkt = max(n_pkt, <Py_ssize_t>pay[i] + 1)
    # empty, zeroed below (numpy's zeros would let the GIL go and wait to take it back)
    is_first_a = np.empty(n_pkt, np.uint8)
    replies_a, requests_a, datagrams_a = np.empty(n, np.intp), np.empty(n, np.intp), np.empty(n, np.intp)
    cdef unsigned char[::1] is_first = is_first_a
    cdef Py_ssize_t[::1] replies = replies_a, requests = requests_a, datagrams = datagrams_a
    with nogil:
        for i in range(n_pkt):
            is_first[i] = 0
        for i in range(first.shape[0]):
            is_first[first[i]] = 1
        for i in range(n):
            if i + PREFETCH_AHEAD < n and off[pay[i + PREFETCH_AHEAD]] < data.shape[0]:
                __builtin_prefetch(&data[off[pay[i + PREFETCH_AHEAD]]])
            p = pay[i]
            if proto[p] == 6:
                if not is_first[p] and _starts(data, off[p], plen[p], reply, m_reply, reply_min):
                    replies[n_replies] = p
                    n_replies += 1
                if _starts(data, off[p], plen[p], head, m_head, request_min):
                    requests[n_requests] = p
                    n_requests += 1
            elif proto[p] == 17 and plen[p] <= max_datagram and sport[p] >= high_port and dport[p] >= high_port:
                datagrams[n_datagrams] = p
                n_datagrams += 1
    return replies_a[:n_replies], requests_a[:n_requests], datagrams_a[:n_datagrams]
