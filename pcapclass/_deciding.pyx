# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The deciding bytes of first payloads: each reduced to what its verdicts depend on, so that
payloads that say the same are looked at in Python once; which look each first payload needs
(``first_facts``), and the verdict sets spread over the packets (``spread``).

Why compiled: on real traffic nearly every first payload differs in fields no verdict reads (a
bind's call id, an HTTP request's user name); reducing them is one pass per batch here.
``DecidingTables`` is ``_identify.SignatureTables`` (whose request-line reader it uses) with
``deciding_bytes`` and ``first_facts`` (the facts, routed and looked up in the fact table in
the same pass: a numpy pass per test would cost more than the facts); ``PathRules`` is the HTTP path table as the reduction reads it.
"""

from libc.string cimport memcpy, memset

from pcapclass._bytes cimport Group, _digest, _is_word, _pack, _same_lower, _sorted_value
from pcapclass._identify cimport F_DCERPC_PLAIN, F_EHLO_MARKERS, F_LABEL_MASK, F_REQUEST_LINE, L_DCERPC, L_NCACN_HTTP, L_TLS, SignatureTables

import numpy as np


cdef class PathRules


cdef class DecidingTables(SignatureTables):
    """``SignatureTables`` with ``deciding_bytes`` (see ``evidence.first_payloads.SIGNATURE_TABLES``)."""

    def deciding_bytes(self, const unsigned char[::1] data, const long long[:] off, const long long[:] plen,
                       const long long[:] context, PathRules paths):
        """The first payloads ``data[off[i]:off[i] + plen[i]]`` (cut at the end of ``data``)
        reduced to what their verdicts depend on: ``(buf, buf_off, length, group)``, each
        copied to ``buf[buf_off[i]:buf_off[i] + length[i]]``, and ``group`` a digest of those
        bytes and of its ``context``, which finds a remembered verdict (``same_payloads`` then
        confirms it: a digest alone can collide).

        Why: payloads that say the same differ in fields no verdict reads (a bind's call id,
        an HTTP request's user name), so each would be looked at in Python. In each whole
        DCE/RPC PDU from the start (C706 12.6.3.1, 12.6.4.3) the call id is zeroed, and in
        binds and alter_contexts the fragment sizes, association group and auth value (its
        length stays). An HTTP request line becomes the shortest one ``http.classify_request``
        decides the same way (``PathRules``): its method and version, the path prefix of the
        rule it matches (or "/" when none does), and only the query the verdict reads (the
        rule's parameter, RPC over HTTP's port), then an empty line when the payload is
        exactly the request's headers. Anything else is copied as it is.
        """
        cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i, total = 0, at = 0, avail, kept
        cdef long long o
        length_a = np.empty(n, np.int64)  # every one set below (numpy's zeros would let the GIL go)
        cdef long long[::1] length = length_a
        for i in range(n):
            o = off[i]
            length[i] = max(min(plen[i], <long long>size - o), 0)
            total += length[i]
        buf_a = np.empty(max(total, 1), np.uint8)
        buf_off_a = np.empty(n, np.int64)
        group_a = np.empty(n, np.uint64)
        cdef unsigned char[::1] buf = buf_a
        cdef long long[::1] buf_off = buf_off_a
        cdef unsigned long long[::1] group = group_a
        cdef unsigned char* p
        cdef const unsigned char* src
        with nogil:
            for i in range(n):
                avail = length[i]
                buf_off[i] = at
                p = &buf[at]
                kept = -1
                if avail:
                    src = &data[off[i]]
                    if paths.usable and src[0] != 0x05:
                        kept = self._request(src, avail, paths, p)
                    if kept < 0:
                        memcpy(p, src, avail)
                        kept = avail
                        if p[0] == 0x05:
                            self._mask_pdus(p, avail)
                length[i] = kept if avail else 0
                group[i] = _digest(p, length[i], context[i])
                at += avail
        return buf_a, buf_off_a, length_a, group_a

    def first_facts(self, const unsigned char[::1] data, const long long[:] off, const long long[:] plen,
                    const unsigned char[:] tcp, const long long[:] server_port, const unsigned char[:] server_is_src,
                    const unsigned char[::1] call_ptypes, const unsigned long long[::1] fact_keys, const long long[::1] fact_sids):
        """What each first payload to look at needs next, in one pass:
        ``(facts, key, sid, named, shown, unknown, parse)``.

        ``facts`` as ``facts`` gives them. The others need a look besides their verdicts, or
        another way to them, and are handed over as the positions that do, in order:
        ``named``, a TCP request line or TLS client hello (the server it names); ``shown``, a
        TLS server hello (the certificate it shows); ``parse``, TCP whose facts do not decide
        it (a request line, EHLO markers, a DCE/RPC payload other than whole PDUs without
        binds, whole PDUs that are calls by ``call_ptypes`` of the first's type,
        ``ncacn_http``). The rest are decided by ``key`` (facts, transport, server port,
        sender), whose verdict set ``sid`` is that of ``fact_sids`` at ``key`` in the sorted
        ``fact_keys``; ``unknown``: those whose key is not there yet (``sid`` -1, as for
        ``parse``). Positions, not a route per payload, so that no numpy pass per route
        (each letting the GIL go and waiting to take it back) is needed.
        """
        cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i
        cdef Py_ssize_t n_named = 0, n_shown = 0, n_unknown = 0, n_parse = 0
        cdef long long o
        cdef int f, label
        cdef bint parse
        # empty, each set in the pass (numpy's zeros and full would each let the GIL go)
        facts_a, key_a, sid_a = np.empty(n, np.int32), np.empty(n, np.uint64), np.empty(n, np.int64)
        named_a, shown_a, unknown_a, parse_a = (np.empty(n, np.intp) for _ in range(4))
        cdef int[::1] facts = facts_a
        cdef unsigned long long[::1] key = key_a
        cdef long long[::1] sid = sid_a
        cdef Py_ssize_t[::1] named = named_a, shown = shown_a, unknown = unknown_a, parsed = parse_a
        with nogil:
            for i in range(n):
                o = off[i]
                f = 0
                if o < size and plen[i] > 0:
                    f = self._facts(&data[o], min(<Py_ssize_t>plen[i], size - <Py_ssize_t>o))
                facts[i] = f
                sid[i] = -1
                label = f & F_LABEL_MASK
                parse = False
                if tcp[i]:
                    parse = ((f & (F_REQUEST_LINE | F_EHLO_MARKERS)) != 0 or label == L_NCACN_HTTP
                             or (label == L_DCERPC and ((f & F_DCERPC_PLAIN) == 0 or call_ptypes[data[o + 2]] != 0)))
                    if (f & F_REQUEST_LINE) != 0 or (f >> 4) & F_LABEL_MASK == L_TLS:
                        named[n_named] = i
                        n_named += 1
                    if label == L_TLS:
                        shown[n_shown] = i
                        n_shown += 1
                key[i] = (<unsigned long long>f << 19) | (<unsigned long long>tcp[i] << 18) | (<unsigned long long>(server_port[i] + 1) << 1) | server_is_src[i]
                if parse:
                    parsed[n_parse] = i
                    n_parse += 1
                else:
                    sid[i] = _sorted_value(fact_keys, fact_sids, key[i])
                    if sid[i] < 0:
                        unknown[n_unknown] = i
                        n_unknown += 1
        return facts_a, key_a, sid_a, named_a[:n_named], shown_a[:n_shown], unknown_a[:n_unknown], parse_a[:n_parse]

    cdef void _mask_pdus(self, unsigned char* p, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t pos = 0
        cdef unsigned int frag, auth
        cdef bint little
        while n - pos >= 16 and p[pos] == 0x05:
            little = p[pos + 4] & 0xF0 == 0x10
            frag = (p[pos + 8] | (p[pos + 9] << 8)) if little else ((p[pos + 8] << 8) | p[pos + 9])
            auth = (p[pos + 10] | (p[pos + 11] << 8)) if little else ((p[pos + 10] << 8) | p[pos + 11])
            if frag < 16 or frag > n - pos:
                return
            memset(p + pos + 12, 0, 4)
            if self.bind_ptypes[p[pos + 2]] and frag >= 24:
                memset(p + pos + 16, 0, 8)
                if 24 + auth <= frag:
                    memset(p + pos + frag - auth, 0, auth)
            pos += frag

    cdef Py_ssize_t _request(self, const unsigned char* s, Py_ssize_t n, PathRules r, unsigned char* d) noexcept nogil:
        """The request line ``deciding_bytes`` makes of ``s[:n]`` into ``d`` (its length, never
        more than ``n``), or -1: not a request line, or one to keep as it is (a query the
        verdict reads with escapes in it)."""
        cdef Py_ssize_t sp1, sp2, ps = -1, pe = -1, q0 = -1, q1, k, rule, o = 0, at, m
        cdef bint escaped = False
        if not self._request_spans(s, n, &sp1, &sp2):
            return -1
        cdef Py_ssize_t t0 = sp1 + 1, t1 = sp2
        # HttpRequest.path: an absolute-form target loses scheme and authority ("/" if no path)
        k = t0
        while k + 3 <= min(t1, t0 + 16) and not (s[k] == 0x3A and s[k + 1] == 0x2F and s[k + 2] == 0x2F):
            k += 1
        if k + 3 <= min(t1, t0 + 16):
            k += 3
            while k < t1 and s[k] != 0x2F:
                k += 1
            if k < t1:
                ps = k
        else:
            ps = t0
        if ps >= 0:
            pe = ps
            while pe < t1 and s[pe] != 0x3F and s[pe] != 0x23:
                pe += 1
        # HttpRequest.query, from the target as sent
        for k in range(t0, t1):
            if s[k] == 0x3F:
                q0 = k + 1
                break
        q1 = q0
        if q0 >= 0:
            while q1 < t1 and s[q1] != 0x23:
                escaped |= s[q1] == 0x25 or s[q1] == 0x2B  # unquote_plus would change it
                q1 += 1
        memcpy(d, s, t0)
        o = t0
        if _is_word(s, sp1, r.methods):
            # RPC over HTTP: only whether the path's last segment is the proxy's file, and then
            # the ?server:port query's port, decide (classify_request)
            o = _rpc_target(s, ps, pe, q0, q1, escaped, r.proxy.p + 1, r.proxy.p[0], d, o, n)
            if o < 0:
                return -1
            return _request_tail(s, n, sp2, d, o)
        rule = -1
        at = 0
        k = 0
        while at < r.prefixes.n:
            m = r.prefixes.p[at]
            if _segment_prefix(s, ps, pe, r.prefixes.p + at + 1, m):
                rule = k
                break
            at += 1 + m
            k += 1
        if rule < 0:
            if not r.root_free or o + 1 > n:
                return -1
            d[o] = 0x2F
            o += 1
        else:
            if o + m > n:
                return -1
            memcpy(d + o, r.prefixes.p + at + 1, m)
            o += m
            if q0 >= 0 and r.query_count[rule]:
                if escaped:
                    return -1
                o = r.query(s, q0, q1, rule, d, o, n)
                if o < 0:
                    return -1
        return _request_tail(s, n, sp2, d, o)


cdef Py_ssize_t _request_tail(const unsigned char* s, Py_ssize_t n, Py_ssize_t sp2, unsigned char* d, Py_ssize_t o) noexcept nogil:
    """Append the version, then an empty line when the payload ends with the request's headers;
    the new length, or -1 past ``n``."""
    cdef Py_ssize_t k
    if o + 9 > n:
        return -1
    memcpy(d + o, s + sp2, 9)
    o += 9
    k = 0
    while k + 4 <= n and not (s[k] == 0x0D and s[k + 1] == 0x0A and s[k + 2] == 0x0D and s[k + 3] == 0x0A):
        k += 1
    if k + 4 == n:
        if o + 4 > n:
            return -1
        memcpy(d + o, b"\r\n\r\n", 4)
        o += 4
    return o


cdef Py_ssize_t _rpc_target(const unsigned char* s, Py_ssize_t ps, Py_ssize_t pe, Py_ssize_t q0, Py_ssize_t q1, bint escaped,
                            const unsigned char* proxy, Py_ssize_t m, unsigned char* d, Py_ssize_t o, Py_ssize_t n) noexcept nogil:
    """Append an RPC over HTTP request's target as ``classify_request`` reads it: ``/<proxy>``
    and ``?h:<port>`` when the path's last segment is the proxy's file, else ``/``; the new
    length, or -1 (past ``n``, or a query with escapes: kept as sent)."""
    cdef Py_ssize_t k = pe, first_end, colon = -1
    if ps >= 0:
        while k > ps and s[k - 1] != 0x2F:
            k -= 1
    if ps < 0 or pe - k != m or not _same_lower(s + k, proxy, m):
        if o + 1 > n:
            return -1
        d[o] = 0x2F
        return o + 1
    if o + 1 + m > n:
        return -1
    d[o] = 0x2F
    memcpy(d + o + 1, proxy, m)
    o += 1 + m
    if q0 < 0:
        return o
    if escaped:
        return -1
    first_end = q0
    while first_end < q1 and s[first_end] != 0x26:
        if s[first_end] == 0x3A:
            colon = first_end
        first_end += 1
    if colon > q0 and _port(s + colon + 1, first_end - colon - 1):
        if o + 3 + first_end - colon - 1 > n:
            return -1
        d[o], d[o + 1], d[o + 2] = 0x3F, 0x68, 0x3A  # ?h:<port digits as sent>
        memcpy(d + o + 3, s + colon + 1, first_end - colon - 1)
        o += 3 + first_end - colon - 1
    return o


cdef inline bint _port(const unsigned char* s, Py_ssize_t m) noexcept nogil:
    """Digits of a port ``parse_rpc_proxy_target`` accepts (1 to 65535)."""
    cdef long long value = 0
    cdef Py_ssize_t k
    if m == 0:
        return False
    for k in range(m):
        if not 0x30 <= s[k] <= 0x39:
            return False
        value = min(value * 10 + s[k] - 0x30, 1 << 20)
    return 0 < value < 65536


cdef class PathRules:
    """rules/http_paths.toml (an ``http.HttpPathTable``) as ``SignatureTables.deciding_bytes``
    reads it: the path prefixes in the table's order (longest first), each rule's query
    parameters and values, RPC over HTTP's methods and the proxy's file name.

    ``usable`` is False when a string of the table could not be written back into a request
    line that ``classify_request`` reads the same way (non-ASCII, '?', '#', escapes...):
    requests are then kept as they are.
    """

    cdef list _keep
    cdef Group prefixes, params, values, methods, proxy
    cdef long long[::1] query_start, query_count
    cdef readonly bint usable
    cdef bint root_free

    def __init__(self, *, prefixes, queries, rpc_proxy, rpc_methods):
        """``prefixes``: str per rule; ``queries``: per rule, a tuple of (param, value)."""
        self._keep = []
        self.usable = all(_plain(x, b"?#") and b"://" not in x.encode("ascii") for x in prefixes) and _plain(rpc_proxy, b"?#/") and all(
            _plain(param, b"?#&=%+") and _plain(value, b"?#&%+") for qs in queries for param, value in qs)
        if not self.usable:
            return
        self.prefixes = self._group([x.encode("ascii") for x in prefixes])
        self.params = self._group([param.encode("ascii") for qs in queries for param, _ in qs])
        self.values = self._group([value.encode("ascii") for qs in queries for _, value in qs])
        self.methods = self._group([m.encode("ascii") for m in rpc_methods])
        self.proxy = self._group([rpc_proxy.encode("ascii")])
        count = np.array([len(qs) for qs in queries], dtype=np.int64)
        self.query_count, self.query_start = count, np.cumsum(count) - count
        # a request matching no rule becomes "/": only while "/" matches none either
        self.root_free = all(x not in ("", "/") for x in prefixes)

    cdef Group _group(self, words):
        return _pack(self._keep, words)

    cdef Py_ssize_t query(self, const unsigned char* s, Py_ssize_t q0, Py_ssize_t q1, Py_ssize_t rule, unsigned char* d,
                          Py_ssize_t o, Py_ssize_t room) noexcept nogil:
        """Append to ``d[:o]`` ``?param=value`` of the first of ``rule``'s queries that the
        query ``s[q0:q1]`` meets (``http._query_params``: the first item of each name counts,
        both compared lower-cased); its new length, or -1 past ``room``."""
        cdef Py_ssize_t j, at_p = 0, at_v = 0, mp, mv, item, eq, end
        for j in range(self.query_start[rule]):
            at_p += 1 + self.params.p[at_p]
            at_v += 1 + self.values.p[at_v]
        for j in range(self.query_count[rule]):
            mp, mv = self.params.p[at_p], self.values.p[at_v]
            item = q0
            while item <= q1:
                end = item
                while end < q1 and s[end] != 0x26:
                    end += 1
                eq = item
                while eq < end and s[eq] != 0x3D:
                    eq += 1
                if eq - item == mp and _same_lower(s + item, self.params.p + at_p + 1, mp):
                    if end - eq - 1 == mv and _same_lower(s + eq + 1, self.values.p + at_v + 1, mv):
                        if o + 2 + mp + mv > room:
                            return -1
                        d[o] = 0x3F
                        memcpy(d + o + 1, self.params.p + at_p + 1, mp)
                        d[o + 1 + mp] = 0x3D
                        memcpy(d + o + 2 + mp, self.values.p + at_v + 1, mv)
                        return o + 2 + mp + mv
                    break  # the first item of that name decides
                item = end + 1
            at_p += 1 + mp
            at_v += 1 + mv
        return o


def _plain(text, bad):
    """Whether ``text`` is printable ASCII without any of ``bad``."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return False
    return all(0x21 <= c <= 0x7E and c not in bad for c in raw)


cdef inline bint _segment_prefix(const unsigned char* s, Py_ssize_t ps, Py_ssize_t pe, const unsigned char* w, Py_ssize_t m) noexcept nogil:
    """``http._segment_prefix`` on the lower-cased path: it is ``w`` or starts with it and a '/' or ';'."""
    if ps < 0:
        return m == 1 and w[0] == 0x2F
    if pe - ps < m or not _same_lower(s + ps, w, m):
        return False
    return pe - ps == m or s[ps + m] == 0x2F or s[ps + m] == 0x3B


def spread(const long long[:] sel, const long long[:] sid, const long long[:] n, const long long[:] start,
           const int[:] flat, const unsigned char[:] follow, const long long[:] unparsed):
    """Each payload's verdict set over rows, and what its set says besides: ``(packet, vid,
    unparsed, followed)``. ``packet``, ``vid``: a row per verdict, payload ``sel[i]`` with set
    ``sid[i]`` (``n``, ``start``: each set's length and start in ``flat``), in order;
    ``unparsed``: the sets' ``unparsed`` counts summed over the payloads; ``followed``: the
    positions of the payloads whose set is to be followed (``follow``), in order.

    Why compiled: numpy spread them with a dozen passes (repeats, cumulative sums, gathers),
    and each pass lets the GIL go and waits behind the other stages' Python to take it back.
    """
    cdef Py_ssize_t m = sel.shape[0], i, k, total = 0, at = 0, n_followed = 0
    cdef long long unparsed_total = 0
    for i in range(m):
        total += n[sid[i]]
    packet_a, vid_a, followed_a = np.empty(total, np.intp), np.empty(total, np.int32), np.empty(m, np.intp)
    cdef Py_ssize_t[::1] packet = packet_a, followed = followed_a
    cdef int[::1] vid = vid_a
    with nogil:
        for i in range(m):
            for k in range(start[sid[i]], start[sid[i]] + n[sid[i]]):
                packet[at], vid[at] = sel[i], flat[k]
                at += 1
            unparsed_total += unparsed[sid[i]]
            if follow[sid[i]]:
                followed[n_followed] = i
                n_followed += 1
    return packet_a, vid_a, unparsed_total, followed_a[:n_followed]
