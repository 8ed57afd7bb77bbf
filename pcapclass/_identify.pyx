# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""What ``signatures.identify`` and its helpers say of a whole batch of first payloads, in one call.

Why compiled: on real traffic nearly every first payload is new, and looking at each in Python
(``identify`` both ways, ``port_mismatch``, the greeting words) was most of the evidence
stage's time. Here one pass per payload yields its labels and the few facts a verdict
depends on (``facts``); Python keeps ``identify`` as the reference and decides the verdict of
each distinct combination of facts once. The byte strings matched (greeting prefixes and
words, command words, protocol ids...) are ``signatures.py``'s, handed to ``SignatureTables``;
the layouts (TPKT/COTP, TLS, BER, NBSS, the DCE/RPC header, the request line) are those of
the specs ``signatures.py`` and ``dcerpc.py`` cite. Every read stays inside the payload.
"""

from libc.string cimport memchr, memcpy, memset

import numpy as np

cdef enum:
    L_NONE, L_TPKT, L_RDP, L_SMTP, L_FTP, L_POP3, L_IMAP, L_NNTP, L_LDAP, L_SMB, L_DCERPC, L_HTTP, L_TLS, L_NCACN_HTTP, L_SSH, L_REDIS

cdef enum:
    F_LABEL_MASK = 0xF
    F_LONG = 1 << 10
    F_EXCHANGE_GREETING = 1 << 11
    F_SMTP_BANNER = 1 << 12
    F_EHLO_MARKERS = 1 << 13
    F_REQUEST_LINE = 1 << 14
    F_DCERPC_PLAIN = 1 << 15
    F_NOTIFY = 1 << 16

#: ``identify``'s label of each code ``facts`` gives (code 0: None)
LABEL_NAMES = (None, "tpkt", "rdp", "smtp", "ftp", "pop3", "imap", "nntp", "ldap", "smb", "dcerpc", "http", "tls",
               "ncacn_http", "ssh", "redis")

#: where each fact sits in ``facts``' numbers: the label as a server's payload (4 bits), as a
#: client's (4 bits), the shared reply prefix (2 bits: ``SHARED_NAMES``), then one bit each
AS_SERVER_SHIFT, AS_CLIENT_SHIFT, SHARED_SHIFT = 0, 4, 8
LABEL_MASK, SHARED_MASK = F_LABEL_MASK, 0x3
#: ``shared_prefix``'s answer of each code (code 0: None)
SHARED_NAMES = (None, "smtp", "pop3", "nntp")
#: at least ``min_decisive`` bytes long
LONG = F_LONG
#: ``exchange_greeting``
EXCHANGE_GREETING = F_EXCHANGE_GREETING
#: an SMTP greeting's prefix, and the Microsoft SMTP banner in its line
SMTP_BANNER = F_SMTP_BANNER
#: starts with "250" and ``exchange_smtp_markers`` finds one
EHLO_MARKERS = F_EHLO_MARKERS
#: ``parse_request_line`` finds a request line
REQUEST_LINE = F_REQUEST_LINE
#: whole DCE/RPC PDUs end to end (as ``PduReassembler`` cuts them), none a bind or alter_context
DCERPC_PLAIN = F_DCERPC_PLAIN
#: starts with a Direct Push ``NOTIFY`` request
NOTIFY = F_NOTIFY

cdef class PathRules


cdef struct Group:
    # byte strings packed as (length byte, bytes) one after the other
    const unsigned char* p
    Py_ssize_t n


cdef Group _pack(list keep, words):
    """``words`` packed for the matchers below (the bytes object is kept alive in ``keep``)."""
    cdef Group g
    if any(not 0 < len(w) < 256 for w in words):
        raise ValueError(f"signature strings must be 1 to 255 bytes: {words!r}")
    packed = b"".join(bytes([len(w)]) + bytes(w) for w in words)
    keep.append(packed)
    g.p = packed
    g.n = len(packed)
    return g


cdef inline unsigned char _up(unsigned char c) noexcept nogil:
    """ASCII upper case, as ``bytes.upper``."""
    return c - 32 if 0x61 <= c <= 0x7A else c


cdef bint _one_of(const unsigned char* p, Py_ssize_t n, Group g, bint prefix, bint upper) noexcept nogil:
    """Whether ``p[:n]`` (upper-cased when ``upper``) is one of ``g``, or starts with one when ``prefix``."""
    cdef Py_ssize_t at = 0, m, k
    while at < g.n:
        m = g.p[at]
        if m == n or (prefix and m < n):
            k = 0
            while k < m and (_up(p[k]) if upper else p[k]) == g.p[at + 1 + k]:
                k += 1
            if k == m:
                return True
        at += 1 + m
    return False


cdef inline bint _starts_any(const unsigned char* p, Py_ssize_t n, Group g) noexcept nogil:
    """Whether ``p[:n]`` starts with one of ``g``."""
    return _one_of(p, n, g, True, False)


cdef bint _in_upper(const unsigned char* p, Py_ssize_t n, Group g) noexcept nogil:
    """Whether one of ``g`` occurs in ``p[:n].upper()``."""
    cdef Py_ssize_t i
    for i in range(n):
        if _one_of(p + i, n - i, g, True, True):
            return True
    return False


cdef inline bint _is_word(const unsigned char* p, Py_ssize_t n, Group g) noexcept nogil:
    """Whether ``p[:n].upper()`` is one of ``g``."""
    return _one_of(p, n, g, False, True)


cdef inline bint _space(unsigned char c) noexcept nogil:
    """What ``bytes.strip`` strips."""
    return c == 0x20 or 0x09 <= c <= 0x0D


cdef inline bint _token(unsigned char c) noexcept nogil:
    """An RFC 9110 tchar (a method's)."""
    return (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c == 0x21 or 0x23 <= c <= 0x27
            or c == 0x2A or c == 0x2B or c == 0x2D or c == 0x2E or c == 0x5E or c == 0x5F or c == 0x60 or c == 0x7C
            or c == 0x7E)


cdef class SignatureTables:
    """``signatures.py``'s byte strings and sets, held for ``facts`` (see ``evidence.SIGNATURE_TABLES``)."""

    cdef list _keep
    cdef Group smtp_prefixes, smtp_words, ftp_words, smtp_commands, pop3_prefixes, pop3_shared, imap_prefixes
    cdef Group nntp_prefixes, nntp_words, http_status, ssh, resp_array, exchange, banner, ncacn, markers
    cdef Group smb_ids, rdp_cookies, notify
    cdef unsigned char cotp[16]
    cdef unsigned char rdp_neg[16]
    cdef unsigned char ldap_ops[32]
    cdef unsigned char ldap_primitive[32]
    cdef unsigned char rpc_minors[256]
    cdef unsigned char bind_ptypes[256]
    cdef Py_ssize_t greeting_line, min_decisive, max_request_line, max_method
    cdef int rdp_neg_failure, ptype_max

    def __init__(self, *, smtp_prefixes, smtp_words, ftp_words, smtp_commands, pop3_prefixes, pop3_shared,
                 imap_prefixes, nntp_prefixes, nntp_words, http_status, ssh, resp_array, exchange_greeting,
                 smtp_banner, ncacn_http, ehlo_keywords, smb_ids, rdp_cookies, cotp_codes, rdp_neg_types,
                 rdp_neg_failure, ldap_ops, ldap_primitive_ops, rpc_minors, ptype_max, bind_ptypes, notify, greeting_line,
                 min_decisive, max_request_line, max_method):
        """Each text argument is a tuple of byte strings (words matched in an upper-cased line
        must be upper case, as ``signatures`` writes them); ``cotp_codes`` etc. are sets of ints."""
        self._keep = []
        self.smtp_prefixes = self._group(smtp_prefixes)
        self.smtp_words = self._group(smtp_words)
        self.ftp_words = self._group(ftp_words)
        self.smtp_commands = self._group(smtp_commands)
        self.pop3_prefixes = self._group(pop3_prefixes)
        self.pop3_shared = self._group(pop3_shared)
        self.imap_prefixes = self._group(imap_prefixes)
        self.nntp_prefixes = self._group(nntp_prefixes)
        self.nntp_words = self._group(nntp_words)
        self.http_status = self._group(http_status)
        self.ssh = self._group(ssh)
        self.resp_array = self._group(resp_array)
        self.exchange = self._group(exchange_greeting)
        self.banner = self._group(smtp_banner)
        self.ncacn = self._group(ncacn_http)
        self.markers = self._group(ehlo_keywords)
        self.smb_ids = self._group(smb_ids)
        self.rdp_cookies = self._group(rdp_cookies)
        self.notify = self._group(notify)
        cdef int i
        for i in range(16):
            self.cotp[i] = (i << 4) in cotp_codes
            self.rdp_neg[i] = rdp_neg_types.get(i << 4, 0)
        for i in range(32):
            self.ldap_ops[i] = i in ldap_ops
            self.ldap_primitive[i] = i in ldap_primitive_ops
        for i in range(256):
            self.rpc_minors[i] = i in rpc_minors
            self.bind_ptypes[i] = i in bind_ptypes
        self.rdp_neg_failure, self.ptype_max = rdp_neg_failure, ptype_max
        self.greeting_line, self.min_decisive = greeting_line, min_decisive
        self.max_request_line, self.max_method = max_request_line, max_method

    cdef Group _group(self, words):
        return _pack(self._keep, words)

    def facts(self, const unsigned char[::1] data, const long long[:] off, const long long[:] plen):
        """Per payload ``data[off[i]:off[i] + plen[i]]`` (cut at the end of ``data``), its facts
        as one int32: the labels ``identify`` gives it as a server's and as a client's payload,
        ``shared_prefix``, and the flags ``LONG`` .. ``REQUEST_LINE``."""
        cdef Py_ssize_t n = off.shape[0], size = data.shape[0], i, avail
        cdef long long o
        out_a = np.zeros(n, np.int32)
        cdef int[::1] out = out_a
        cdef const unsigned char* p
        with nogil:
            for i in range(n):
                o = off[i]
                if o >= size or plen[i] <= 0:
                    continue
                avail = min(<Py_ssize_t>plen[i], size - <Py_ssize_t>o)
                p = &data[o]
                out[i] = self._facts(p, avail)
        return out_a

    cdef int _facts(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        cdef bint request = self._request_line(p, n)
        cdef int f = self._label(p, n, True, request) | (self._label(p, n, False, request) << 4)
        if _starts_any(p, n, self.smtp_prefixes):
            f |= 1 << 8
            if _in_upper(p, self._line(p, n), self.banner):
                f |= F_SMTP_BANNER
        elif _starts_any(p, n, self.pop3_shared):
            f |= 2 << 8
        elif _starts_any(p, n, self.nntp_prefixes):
            f |= 3 << 8
        if n >= self.min_decisive:
            f |= F_LONG
        if (_starts_any(p, n, self.pop3_prefixes) or _starts_any(p, n, self.imap_prefixes)) and _in_upper(p, self._line(p, n), self.exchange):
            f |= F_EXCHANGE_GREETING
        if n >= 3 and p[0] == 0x32 and p[1] == 0x35 and p[2] == 0x30 and self._ehlo_markers(p, n):
            f |= F_EHLO_MARKERS
        if request:
            f |= F_REQUEST_LINE
        if (f & F_LABEL_MASK) == L_DCERPC and self._plain_pdus(p, n):
            f |= F_DCERPC_PLAIN
        if _starts_any(p, n, self.notify):
            f |= F_NOTIFY
        return f

    cdef Py_ssize_t _line(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """Length of ``greeting_line``: up to the first LF of the first GREETING_LINE bytes."""
        cdef Py_ssize_t k, end = min(n, self.greeting_line)
        for k in range(end):
            if p[k] == 0x0A:
                return k
        return end

    cdef int _label(self, const unsigned char* p, Py_ssize_t n, bint from_server, bint request) noexcept nogil:
        """``identify(p[:n], from_server=from_server)``, as a code of LABEL_NAMES (``request``:
        ``_request_line(p, n)``)."""
        if n < 3:
            return L_NONE
        cdef unsigned char b0 = p[0]
        cdef Py_ssize_t line
        if b0 == 0x05:
            return L_DCERPC if self._dcerpc(p, n) else L_NONE
        if b0 == 0x03:
            return L_NONE if not self._tpkt(p, n) else L_RDP if self._rdp(p, n) else L_TPKT
        if b0 == 0x16 or (b0 & 0x80 and b0 != 0x81 and b0 != 0x82 and b0 != 0x83):
            return L_TLS if _tls(p, n, from_server) else L_NONE
        if b0 == 0x30:
            return L_LDAP if self._ldap(p, n) else L_NONE
        if b0 == 0x00 or b0 == 0x81 or b0 == 0x82 or b0 == 0x83:
            if self._smb(p, n):
                return L_SMB
            if b0 != 0x00:
                return L_TLS if _tls(p, n, from_server) else L_NONE
            return L_NONE
        if _starts_any(p, n, self.ncacn):
            return L_NCACN_HTTP
        if _starts_any(p, n, self.ssh):
            return L_SSH
        if from_server:
            if _starts_any(p, n, self.http_status):
                return L_HTTP
            if _starts_any(p, n, self.pop3_prefixes):
                return L_POP3
            if _starts_any(p, n, self.imap_prefixes):
                return L_IMAP
            line = self._line(p, n)
            if _starts_any(p, n, self.smtp_prefixes):
                return L_FTP if _in_upper(p, line, self.ftp_words) else L_SMTP if _in_upper(p, line, self.smtp_words) else L_NONE
            if _starts_any(p, n, self.nntp_prefixes):
                return L_NNTP if _in_upper(p, line, self.nntp_words) else L_NONE
            return L_NONE
        if _is_word(p, min(n, 4), self.smtp_commands) and (n == 4 or (n > 4 and (p[4] == 0x20 or p[4] == 0x0D or p[4] == 0x0A))):
            return L_SMTP
        if self._resp_command(p, n):
            return L_REDIS
        if b0 >= 0x21 and request:
            return L_HTTP
        return L_NONE

    cdef bint _dcerpc(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """``dcerpc.looks_like_dcerpc``: a CO header (C706 12.6.3.1) whose lengths are sane."""
        if n < 16 or not self._header(p):
            return False
        cdef int frag, auth
        if p[4] & 0xF0 == 0x10:
            frag, auth = p[8] | (p[9] << 8), p[10] | (p[11] << 8)
        else:
            frag, auth = (p[8] << 8) | p[9], (p[10] << 8) | p[11]
        return frag >= 16 and auth + 16 <= frag

    cdef bint _plain_pdus(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """Whether ``p[:n]`` is whole PDUs end to end, as ``PduReassembler`` steps through them
        by frag_length, none of them a bind or alter_context (whose contexts need parsing)."""
        cdef Py_ssize_t pos = 0, frag
        while pos < n:
            if n - pos < 16 or not self._header(p + pos):
                return False
            frag = (p[pos + 8] | (p[pos + 9] << 8)) if p[pos + 4] & 0xF0 == 0x10 else ((p[pos + 8] << 8) | p[pos + 9])
            if frag < 16 or frag > n - pos or self.bind_ptypes[p[pos + 2]]:
                return False
            pos += frag
        return True

    cdef bint _header(self, const unsigned char* p) noexcept nogil:
        """Whether 16 bytes can begin a CO PDU header (``dcerpc._plausible_prefix``)."""
        return p[0] == 0x05 and self.rpc_minors[p[1]] and p[2] <= self.ptype_max and (p[4] & 0xF0 == 0x10 or p[4] & 0xF0 == 0x00)

    cdef bint _tpkt(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        if n < 4 or p[1] != 0:
            return False
        cdef int length = (p[2] << 8) | p[3]
        if length < 7:
            return False
        if n >= 5 and not 2 <= p[4] <= length - 5:
            return False
        return n < 6 or self.cotp[p[5] >> 4]

    cdef bint _rdp(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        if n < 11 or not self.rdp_neg[p[5] >> 4]:
            return False
        cdef Py_ssize_t end = min(n, <Py_ssize_t>((p[2] << 8) | p[3])), user = end - 11
        if user > 0 and _starts_any(p + 11, user, self.rdp_cookies):
            return True
        if user < 8:
            return False
        cdef const unsigned char* neg = p + end - 8
        return (neg[0] == self.rdp_neg[p[5] >> 4] or neg[0] == self.rdp_neg_failure) and neg[2] == 0x08 and neg[3] == 0x00

    cdef bint _ldap(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        if n < 7:
            return False
        cdef Py_ssize_t i = 1, k
        cdef unsigned char tag
        if p[1] & 0x80:
            k = p[1] & 0x7F
            if not 1 <= k <= 4:
                return False
            i += 1 + k
        else:
            i += 1
        if i + 2 > n or p[i] != 0x02 or not 1 <= p[i + 1] <= 4:
            return False
        i += 2 + p[i + 1]
        if i >= n:
            return False
        tag = p[i]
        return (tag & 0xC0) == 0x40 and self.ldap_ops[tag & 0x1F] and (tag & 0x20 != 0) != self.ldap_primitive[tag & 0x1F]

    cdef bint _smb(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        cdef unsigned char kind = p[0]
        if kind == 0x00:
            return n >= 8 and _one_of(p + 4, 4, self.smb_ids, False, False)
        if kind == 0x81:
            return n >= 5 and p[1] == 0 and p[4] == 0x20
        return n >= 4 and p[1] == 0 and ((p[2] << 8) | p[3]) <= 1

    cdef bint _resp_command(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """``*<digits>\\r\\n$<digit>`` within the first 16 bytes (``signatures._is_resp_command``)."""
        if not _starts_any(p, n, self.resp_array):
            return False
        cdef Py_ssize_t end = min(n, 16), k = 1, i
        while k + 1 < end and not (p[k] == 0x0D and p[k + 1] == 0x0A):
            k += 1
        if k + 1 >= end or k == 1:
            return False
        for i in range(1, k):
            if not 0x30 <= p[i] <= 0x39:
                return False
        return k + 3 < end and p[k + 2] == 0x24 and 0x30 <= p[k + 3] <= 0x39

    cdef bint _ehlo_markers(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """``signatures.exchange_smtp_markers`` finds a keyword on one of the ``250`` lines."""
        cdef Py_ssize_t s = 0, e, a, b, w
        while s <= n:
            e = s
            while e < n and p[e] != 0x0A:
                e += 1
            if e - s >= 5 and p[s] == 0x32 and p[s + 1] == 0x35 and p[s + 2] == 0x30 and (p[s + 3] == 0x2D or p[s + 3] == 0x20):
                a, b = s + 4, e
                while a < b and _space(p[a]):
                    a += 1
                while b > a and _space(p[b - 1]):
                    b -= 1
                w = a
                while w < b and p[w] != 0x20 and p[w] != 0x3D:
                    w += 1
                if _is_word(p + a, w - a, self.markers):
                    return True
            s = e + 1
        return False

    cdef bint _request_line(self, const unsigned char* p, Py_ssize_t n) noexcept nogil:
        """``http.parse_request_line`` finds ``method SP target SP HTTP/d.d`` as the first line."""
        cdef Py_ssize_t sp1, sp2
        return self._request_spans(p, n, &sp1, &sp2)

    cdef bint _request_spans(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* sp1, Py_ssize_t* sp2) noexcept nogil:
        """``_request_line``, and where its two spaces are (the version is the 8 bytes after ``sp2``)."""
        cdef Py_ssize_t head = min(n, self.max_request_line), end = 0, k
        cdef unsigned char c
        sp1[0] = sp2[0] = -1
        while end < head and p[end] != 0x0A:
            c = p[end]
            if (c < 0x20 and c != 0x0D) or c > 0x7E:  # no part of a request line holds it
                return False
            end += 1
        if end == head and n > self.max_request_line:
            return False
        if end > 0 and p[end - 1] == 0x0D:
            end -= 1
        for k in range(end):
            if p[k] == 0x20:
                if sp1[0] < 0:
                    sp1[0] = k
                elif sp2[0] < 0:
                    sp2[0] = k
                else:
                    return False
        if sp2[0] < 0 or sp1[0] == 0 or sp1[0] > self.max_method or sp2[0] == sp1[0] + 1 or end - sp2[0] - 1 != 8:
            return False
        for k in range(sp1[0]):
            if not _token(p[k]):
                return False
        for k in range(sp1[0] + 1, sp2[0]):
            if not 0x21 <= p[k] <= 0x7E:
                return False
        k = sp2[0] + 1
        return (p[k] == 0x48 and p[k + 1] == 0x54 and p[k + 2] == 0x54 and p[k + 3] == 0x50 and p[k + 4] == 0x2F
                and 0x30 <= p[k + 5] <= 0x39 and p[k + 6] == 0x2E and 0x30 <= p[k + 7] <= 0x39)

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
        length_a = np.zeros(n, np.int64)
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


cdef inline bint _same_lower(const unsigned char* s, const unsigned char* w, Py_ssize_t m) noexcept nogil:
    """Whether ``s[:m]``, lower-cased, is ``w``."""
    cdef Py_ssize_t k
    for k in range(m):
        if (s[k] + 32 if 0x41 <= s[k] <= 0x5A else s[k]) != w[k]:
            return False
    return True


cdef inline bint _segment_prefix(const unsigned char* s, Py_ssize_t ps, Py_ssize_t pe, const unsigned char* w, Py_ssize_t m) noexcept nogil:
    """``http._segment_prefix`` on the lower-cased path: it is ``w`` or starts with it and a '/' or ';'."""
    if ps < 0:
        return m == 1 and w[0] == 0x2F
    if pe - ps < m or not _same_lower(s + ps, w, m):
        return False
    return pe - ps == m or s[ps + m] == 0x2F or s[ps + m] == 0x3B


cdef unsigned long long _digest(const unsigned char* p, Py_ssize_t n, long long context) noexcept nogil:
    """A multiply-rotate over the 8-byte words (native order) of ``p[:n]``, and ``context``."""
    cdef unsigned long long digest = <unsigned long long>n * 0x9E3779B97F4A7C15ULL, w
    cdef Py_ssize_t k = 0, j
    while k < n:
        if n - k >= 8:
            memcpy(&w, &p[k], 8)
        else:
            w = 0
            for j in range(n - k):
                w |= <unsigned long long>p[k + j] << (8 * j)
        digest ^= w * 0x87C37B91114253D5ULL
        digest = ((digest << 31) | (digest >> 33)) * 0x4CF5AD432745937FULL
        k += 8
    digest ^= <unsigned long long>context * 0xC2B2AE3D27D4EB4FULL
    digest = (digest ^ (digest >> 33)) * 0xFF51AFD7ED558CCDULL
    return digest ^ (digest >> 29)


cdef bint _tls(const unsigned char* p, Py_ssize_t n, bint from_server) noexcept nogil:
    """``signatures._is_tls``: a TLS handshake record (RFC 8446 5.1) or an SSL 2.0 CLIENT-HELLO."""
    if p[0] == 0x16:
        if n < 3 or p[1] != 0x03 or p[2] > 0x04:
            return False
        if n >= 6:
            return p[5] == (2 if from_server else 1) and ((p[3] << 8) | p[4]) >= 4
        return True
    return not from_server and n >= 5 and p[0] & 0x80 != 0 and p[2] == 1 and (p[3] == 0x00 or p[3] == 0x03) and p[4] <= 0x04


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
    start_a = np.zeros(n, np.int64)
    length_a = np.zeros(n, np.int64)
    digest_a = np.zeros(n, np.uint64)
    cdef long long[::1] start = start_a
    cdef long long[::1] length = length_a
    cdef unsigned long long[::1] digest = digest_a
    with nogil:
        for i in range(n):
            o = off[i]
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
