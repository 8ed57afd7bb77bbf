# SignatureTables' state and compiled methods, declared for the kernels that extend it
# (``_deciding.DecidingTables``).

from pcapclass._bytes cimport Group

# the label codes and fact bits of ``facts`` (``LABEL_NAMES`` and the flags ``_identify`` exports)
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


cdef class SignatureTables:
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

    cdef Group _group(self, words)
    cdef int _facts(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t _line(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef int _label(self, const unsigned char* p, Py_ssize_t n, bint from_server, bint request) noexcept nogil
    cdef bint _dcerpc(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _plain_pdus(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _header(self, const unsigned char* p) noexcept nogil
    cdef bint _tpkt(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _rdp(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _ldap(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _smb(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _resp_command(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _ehlo_markers(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _request_line(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef bint _request_spans(self, const unsigned char* p, Py_ssize_t n, Py_ssize_t* sp1, Py_ssize_t* sp2) noexcept nogil
