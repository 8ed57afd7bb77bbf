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

from pcapclass._bytes cimport Group, _is_word, _one_of, _pack, _up

import numpy as np

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


cdef inline bint _space(unsigned char c) noexcept nogil:
    """What ``bytes.strip`` strips."""
    return c == 0x20 or 0x09 <= c <= 0x0D


cdef inline bint _token(unsigned char c) noexcept nogil:
    """An RFC 9110 tchar (a method's)."""
    return (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c == 0x21 or 0x23 <= c <= 0x27
            or c == 0x2A or c == 0x2B or c == 0x2D or c == 0x2E or c == 0x5E or c == 0x5F or c == 0x60 or c == 0x7C
            or c == 0x7E)


cdef class SignatureTables:
    """``signatures.py``'s byte strings and sets, held for ``facts`` (see ``evidence.first_payloads.SIGNATURE_TABLES``)."""

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
            if _starts_any(p, n, self.smtp_prefixes):
                line = self._line(p, n)
                return L_FTP if _in_upper(p, line, self.ftp_words) else L_SMTP if _in_upper(p, line, self.smtp_words) else L_NONE
            if _starts_any(p, n, self.nntp_prefixes):
                return L_NNTP if _in_upper(p, self._line(p, n), self.nntp_words) else L_NONE
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
        """``_request_line``, and where its two spaces are (the version is the 8 bytes after ``sp2``).

        A loop per part, each stopping at the first byte its part cannot hold: the method's
        tchars (at most ``max_method``) up to the first space, the target's visible bytes up to
        the second, then the version, a CR at most, and the line's end: an LF, or the payload's
        end when it is no longer than the longest line."""
        cdef Py_ssize_t head = min(n, self.max_request_line), k = 0
        while k < head and p[k] != 0x20:
            if k >= self.max_method or not _token(p[k]):
                return False
            k += 1
        if k == 0 or k == head:
            return False
        sp1[0] = k
        k += 1
        while k < head and 0x21 <= p[k] <= 0x7E:
            k += 1
        if k == head or p[k] != 0x20 or k == sp1[0] + 1:
            return False
        sp2[0] = k
        k += 1
        if k + 8 > head or not (p[k] == 0x48 and p[k + 1] == 0x54 and p[k + 2] == 0x54 and p[k + 3] == 0x50 and p[k + 4] == 0x2F
                                and 0x30 <= p[k + 5] <= 0x39 and p[k + 6] == 0x2E and 0x30 <= p[k + 7] <= 0x39):
            return False
        k += 8
        if k < head and p[k] == 0x0D:
            k += 1
        if k < head:
            return p[k] == 0x0A
        return n <= self.max_request_line


cdef bint _tls(const unsigned char* p, Py_ssize_t n, bint from_server) noexcept nogil:
    """``signatures._is_tls``: a TLS handshake record (RFC 8446 5.1) or an SSL 2.0 CLIENT-HELLO."""
    if p[0] == 0x16:
        if n < 3 or p[1] != 0x03 or p[2] > 0x04:
            return False
        if n >= 6:
            return p[5] == (2 if from_server else 1) and ((p[3] << 8) | p[4]) >= 4
        return True
    return not from_server and n >= 5 and p[0] & 0x80 != 0 and p[2] == 1 and (p[3] == 0x00 or p[3] == 0x03) and p[4] <= 0x04
