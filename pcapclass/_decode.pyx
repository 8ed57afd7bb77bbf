# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""L2/L3/L4 header layouts, decoded packet by packet in one compiled pass over a batch.

Layouts: IEEE 802.3/802.1Q/802.1ad, Linux cooked v1/v2 (tcpdump.org LINKTYPE_LINUX_SLL/SLL2),
BSD loopback, IPv4 (RFC 791), IPv6 and its extension headers (RFC 8200), TCP (RFC 9293),
UDP (RFC 768).

Why compiled: a packet's headers are a chain (link type → VLAN tags → IP version → IPv6
extension headers → transport), and with numpy every link of the chain is a gather over
the whole batch plus masks; one compiled loop reads each header once. Every read is bounded
by the packet's own captured bytes: a byte past ``offset + caplen`` reads as 0 (never the next
record's bytes), and a header cut short marks the packet TRUNCATED.
"""

import numpy as np

from .sources import linktypes as lt

cdef enum:
    # What decode made of a packet (decode.Status names them); everything but FLOW is counted, not flowed.
    S_FLOW = 0  # an IP packet with addresses (and ports for TCP/UDP)
    S_NON_IP = 1  # ARP, STP, LLC...: a link layer that carries no IP
    S_TRUNCATED = 2  # the capture cut an IP, TCP or UDP header short
    S_UNDECODED = 3  # a link type pcapclass does not decode
    #: key protocol of IPv4/IPv6 non-first fragments: 256 + the fragmented protocol
    FRAGMENT_BASE = 256

FLOW, NON_IP, TRUNCATED, UNDECODED = S_FLOW, S_NON_IP, S_TRUNCATED, S_UNDECODED
FRAGMENT_PROTO_BASE = FRAGMENT_BASE

cdef enum:
    ETHERTYPE_IPV4 = 0x0800
    ETHERTYPE_IPV6 = 0x86DD
    ETHERTYPE_VLAN = 0x8100  # IEEE 802.1Q
    ETHERTYPE_QINQ = 0x88A8  # IEEE 802.1ad
    ETHERTYPE_QINQ_OLD = 0x9100
    MAX_VLAN_TAGS = 3  # QinQ plus one more
    ETH_HDR_LEN = 14
    SLL_HDR_LEN = 16
    SLL2_HDR_LEN = 20
    NULL_HDR_LEN = 4
    AF_INET = 2
    IPPROTO_HOPOPTS = 0
    IPPROTO_TCP = 6
    IPPROTO_UDP = 17
    IPPROTO_ROUTING = 43
    IPPROTO_FRAGMENT = 44
    IPPROTO_AH = 51
    IPPROTO_DSTOPTS = 60
    MAX_IPV6_EXT_HEADERS = 8
#: the transport protocol numbers (IANA "Assigned Internet Protocol Numbers") for Python code
TCP, UDP = IPPROTO_TCP, IPPROTO_UDP
#: IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) so one key serves both families
cdef unsigned long long IPV4_MAPPED_PREFIX = 0xFFFF00000000

# the header walks, as linktypes.LinkLayer numbers them (0: a link type not decoded)
cdef long long L_ETHERNET = lt.LinkLayer.ETHERNET
cdef long long L_SLL = lt.LinkLayer.LINUX_SLL
cdef long long L_SLL2 = lt.LinkLayer.LINUX_SLL2
cdef long long L_IP = lt.LinkLayer.IP
cdef long long L_FAMILY = lt.LinkLayer.FAMILY


def _layer_table():
    """The header walk of each link type, indexed by link type (linktypes.LINKTYPES)."""
    table = np.zeros(max(lt.LINKTYPES) + 1, dtype=np.int8)
    for linktype, (_, layer) in lt.LINKTYPES.items():
        table[linktype] = layer
    return table


cdef const signed char[::1] LAYER_OF = _layer_table()


cdef inline long long _u8(const unsigned char[::1] d, Py_ssize_t end, Py_ssize_t i) noexcept nogil:
    """The byte at ``i`` of a packet whose captured bytes end before ``end``; 0 past them."""
    return d[i] if i < end else 0


cdef inline long long _be16(const unsigned char[::1] d, Py_ssize_t end, Py_ssize_t i) noexcept nogil:
    return (_u8(d, end, i) << 8) | _u8(d, end, i + 1)


cdef inline unsigned long long _be_n(const unsigned char[::1] d, Py_ssize_t end, Py_ssize_t i, int n) noexcept nogil:
    cdef unsigned long long v = 0
    cdef int k
    for k in range(n):
        v = (v << 8) | <unsigned long long>_u8(d, end, i + k)
    return v


cdef inline bint _is_v6_ext(long long nh) noexcept nogil:
    return (nh == IPPROTO_HOPOPTS or nh == IPPROTO_ROUTING or nh == IPPROTO_FRAGMENT
            or nh == IPPROTO_AH or nh == IPPROTO_DSTOPTS)


def decode_headers(const unsigned char[::1] data, const long long[:] offset,
                   const long long[:] caplen, const long long[:] linktype):
    """Decode every packet down to the transport header.

    Returns ``(status, proto, src_hi, src_lo, dst_hi, dst_lo, sport, dport, tcp_flags,
    payload_off, payload_len)``, one array each, aligned with the packets (see decode.Packets).
    """
    cdef Py_ssize_t n = offset.shape[0]
    status_a = np.empty(n, np.uint8)
    proto_a = np.empty(n, np.int64)
    src_hi_a = np.empty(n, np.uint64)
    src_lo_a = np.empty(n, np.uint64)
    dst_hi_a = np.empty(n, np.uint64)
    dst_lo_a = np.empty(n, np.uint64)
    sport_a = np.empty(n, np.int64)
    dport_a = np.empty(n, np.int64)
    flags_a = np.empty(n, np.int64)
    poff_a = np.empty(n, np.int64)
    plen_a = np.empty(n, np.int64)
    cdef unsigned char[::1] status = status_a
    cdef long long[::1] proto = proto_a
    cdef unsigned long long[::1] src_hi = src_hi_a
    cdef unsigned long long[::1] src_lo = src_lo_a
    cdef unsigned long long[::1] dst_hi = dst_hi_a
    cdef unsigned long long[::1] dst_lo = dst_lo_a
    cdef long long[::1] sport = sport_a
    cdef long long[::1] dport = dport_a
    cdef long long[::1] tcp_flags = flags_a
    cdef long long[::1] payload_off = poff_a
    cdef long long[::1] payload_len = plen_a
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t i, s, e, l3, a, p, ip_end, hlen
    cdef long long code, layer, etype, family, b0, ihl, nh, plen, kind
    cdef int k
    cdef bint first_frag, tcp
    cdef const signed char[::1] layers = LAYER_OF
    cdef Py_ssize_t n_layers = layers.shape[0]
    with nogil:
        # the outputs are made empty and zeroed here: numpy's zeros would let go of the GIL, and
        # wait to take it back behind the other stages' Python, once per array
        for i in range(n):
            proto[i] = src_hi[i] = src_lo[i] = dst_hi[i] = dst_lo[i] = 0
            sport[i] = dport[i] = tcp_flags[i] = payload_off[i] = payload_len[i] = 0
        for i in range(n):
            if size == 0:
                status[i] = S_UNDECODED
                continue
            s = offset[i]
            e = min(s + caplen[i], size)
            code = linktype[i]
            layer = layers[code] if 0 <= code < n_layers else 0
            # ---- link layer: where L3 starts and which ethertype it has
            l3 = s
            if layer == L_ETHERNET:
                etype = _be16(data, e, s + 12)
                l3 = s + ETH_HDR_LEN
            elif layer == L_SLL:
                etype = _be16(data, e, s + 14)
                l3 = s + SLL_HDR_LEN
            elif layer == L_SLL2:
                etype = _be16(data, e, s)
                l3 = s + SLL2_HDR_LEN
            elif layer == L_IP:
                b0 = _u8(data, e, s) >> 4
                etype = ETHERTYPE_IPV4 if b0 == 4 else (ETHERTYPE_IPV6 if b0 == 6 else 0)
            elif layer == L_FAMILY:
                # the family is a 4-byte integer in host (NULL) or network (LOOP) order; its
                # value is < 256, so whichever end byte is non-zero holds it
                family = _u8(data, e, s) | _u8(data, e, s + 3)
                etype = ETHERTYPE_IPV4 if family == AF_INET else (
                    ETHERTYPE_IPV6 if (family == 24 or family == 28 or family == 30) else 0)
                l3 = s + NULL_HDR_LEN
            else:
                status[i] = S_UNDECODED
                continue
            for k in range(MAX_VLAN_TAGS):
                if etype != ETHERTYPE_VLAN and etype != ETHERTYPE_QINQ and etype != ETHERTYPE_QINQ_OLD:
                    break
                etype = _be16(data, e, l3 + 2)
                l3 += 4
            if l3 > e or s >= e:  # a runt: nothing captured, or the link-layer header cut short
                status[i] = S_TRUNCATED
                continue
            status[i] = S_NON_IP
            first_frag = True
            a = l3
            if etype == ETHERTYPE_IPV4:
                b0 = _u8(data, e, a)
                ihl = (b0 & 0x0F) * 4
                status[i] = S_FLOW if ((b0 >> 4) == 4 and ihl >= 20 and a + ihl <= e) else S_TRUNCATED
                nh = _u8(data, e, a + 9)
                first_frag = (_be16(data, e, a + 6) & 0x1FFF) == 0
                src_lo[i] = IPV4_MAPPED_PREFIX | _be_n(data, e, a + 12, 4)
                dst_lo[i] = IPV4_MAPPED_PREFIX | _be_n(data, e, a + 16, 4)
                p = a + ihl
                ip_end = min(e, a + _be16(data, e, a + 2))
            elif etype == ETHERTYPE_IPV6:
                status[i] = S_FLOW if ((_u8(data, e, a) >> 4) == 6 and a + 40 <= e) else S_TRUNCATED
                src_hi[i] = _be_n(data, e, a + 8, 8)
                src_lo[i] = _be_n(data, e, a + 16, 8)
                dst_hi[i] = _be_n(data, e, a + 24, 8)
                dst_lo[i] = _be_n(data, e, a + 32, 8)
                plen = _be16(data, e, a + 4)
                ip_end = min(e, a + 40 + plen) if plen > 0 else e
                nh = _u8(data, e, a + 6)
                p = a + 40
                for k in range(MAX_IPV6_EXT_HEADERS):
                    if not _is_v6_ext(nh):
                        break
                    if p + 8 > e:  # every extension header is 8 bytes or more
                        status[i] = S_TRUNCATED
                        break
                    if nh == IPPROTO_FRAGMENT:
                        hlen = 8
                        first_frag = first_frag and (_be16(data, e, p + 2) >> 3) == 0
                    elif nh == IPPROTO_AH:
                        hlen = (_u8(data, e, p + 1) + 2) * 4
                    else:
                        hlen = (_u8(data, e, p + 1) + 1) * 8
                    nh = _u8(data, e, p)
                    p += hlen
            else:
                continue
            proto[i] = nh
            if status[i] != S_FLOW:
                continue
            # ---- transport: ports for TCP/UDP first fragments; non-first fragments get their own key
            if not first_frag:
                proto[i] = nh + FRAGMENT_BASE
                continue
            if nh != IPPROTO_TCP and nh != IPPROTO_UDP:
                continue
            tcp = nh == IPPROTO_TCP
            sport[i] = _be16(data, e, p)
            dport[i] = _be16(data, e, p + 2)
            if p + (14 if tcp else 4) > e:
                status[i] = S_TRUNCATED
                continue  # no payload: what follows a cut transport header is not one
            if tcp:
                tcp_flags[i] = _u8(data, e, p + 13)
                hlen = (_u8(data, e, p + 12) >> 4) * 4
            else:
                hlen = 8
            payload_off[i] = p + hlen
            payload_len[i] = max(ip_end - (p + hlen), 0)
    return (status_a, proto_a, src_hi_a, src_lo_a, dst_hi_a, dst_lo_a, sport_a, dport_a,
            flags_a, poff_a, plen_a)


def batch_totals(const long long[:] wirelen, const long long[:] ts_ns, const unsigned char[:] status, const long long[:] proto):
    """``(bytes, first_ns, last_ns, per_status, fragments)`` of a decoded batch of at least one
    packet: its original bytes, earliest and latest times, packets per status (a list indexed
    by status) and IP fragments after the first; one pass without the GIL, where a numpy call
    per total would each let it go and wait to take it back behind the other stages' Python."""
    cdef Py_ssize_t i, n = wirelen.shape[0]
    if n == 0 or ts_ns.shape[0] < n or status.shape[0] < n or proto.shape[0] < n:
        raise ValueError("batch_totals needs a batch of at least one packet, its columns aligned")
    cdef long long total = 0, lo = ts_ns[0], hi = ts_ns[0], fragments = 0
    cdef long long per_status[S_UNDECODED + 1]
    for i in range(S_UNDECODED + 1):
        per_status[i] = 0
    with nogil:
        for i in range(n):
            total += wirelen[i]
            lo = min(lo, ts_ns[i])
            hi = max(hi, ts_ns[i])
            if status[i] <= S_UNDECODED:
                per_status[status[i]] += 1
            fragments += status[i] == S_FLOW and proto[i] >= FRAGMENT_BASE
    return total, lo, hi, [per_status[i] for i in range(S_UNDECODED + 1)], fragments
