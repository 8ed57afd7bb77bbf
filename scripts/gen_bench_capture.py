#!/usr/bin/env python3
"""Generate a large synthetic Exchange 2003 capture for the pcapclass benchmark.

    python scripts/gen_bench_capture.py OUT.pcap [--packets 2000000] [--flows 50000] [--seed 1]

Writes a classic little-endian, microsecond pcap (link type Ethernet) of about ``--packets``
frames spread over ``--flows`` concurrent flows. The output is built with numpy a chunk at a
time (header templates filled column-wise, one write per chunk), so 2 M packets take seconds
and memory stays bounded whatever the size.

Model
-----
There are ``--flows`` *slots*; each slot holds one flow at a time and, when that flow has sent
its last packet, starts a new one. Every packet of the capture picks a slot at random, so about
``--flows`` flows are open at any moment and their packets interleave. Timestamps increase
strictly (``--pps`` packets per second on average).

* TCP flows: SYN, SYN-ACK, ACK, data both ways (pure ACKs, full 1460-byte segments and
  medium segments; correct sequence/acknowledgement numbers), then FIN-ACK, FIN-ACK, ACK.
  A flow still open when the capture ends is simply cut off (as in a real capture).
  The first data segments of many flows carry a realistic start of the protocol: DCE/RPC
  binds (EPM, EMSMDB, NSPI, RFR), ``ncacn_http/1.0``, HTTP requests (OWA, ActiveSync,
  RPC_IN_DATA / RPC_OUT_DATA), SMTP/POP3/IMAP4/NNTP banners, TLS ClientHello headers,
  TPKT, LDAP and SMB requests. All other payload bytes are zero.
* UDP flows (about 10 % of packets): DNS query/response pairs, UDP 2883 ``NOTIFY``
  datagrams from a front-end, new-mail notifications (an Exchange server's high port to a
  client's high port), CLDAP, NTP and random ports.
* About 10 % of flows are IPv6 and (independently) about 10 % are 802.1Q VLAN tagged.
* Server ports follow the Exchange 2003 port table: 135, 102, 25, 691, 80, 443, 110, 995, 143,
  993, 119, 563, 379, 389, 445, 6001, 6002, 6004, 593, dynamic RPC ports 1025-5000, plus
  outbound flows from the Exchange servers (25, 389, 379, 3268, 88, 80/110/143 front-end to
  back-end, 691) and unrelated traffic on random ports.

Addresses: Exchange servers 10.10.0.10-10.10.0.17 (front-ends .10 and .11), domain
controllers 10.10.0.2-10.10.0.5, clients in 10.20.0.0/16, outside hosts in 198.18.0.0/15
(the RFC 2544 benchmarking range); IPv6 flows use the same host numbers under 2001:db8::/96.
IPv4 header checksums are correct; TCP/UDP checksums are zero. Frames shorter than 60 bytes
are padded to 60 (Ethernet minimum), so IP total length is not always frame length - 14.

The generator is deterministic for a given (--packets, --flows, --seed, --pps).
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
T0_US = 1_143_000_000 * 1_000_000  # 2006-03-22, the Exchange 2003 SP2 era

TCP_SYN, TCP_FIN, TCP_PSH, TCP_ACK = 0x02, 0x01, 0x08, 0x10


# --------------------------------------------------------------------------------------------
# Payload signatures (the first bytes of real protocol conversations)
# --------------------------------------------------------------------------------------------

def _dcerpc_bind(iface: str, major: int, minor: int) -> bytes:
    ndr = uuid.UUID("8a885d04-1ceb-11c9-9fe8-08002b104860").bytes_le
    body = struct.pack("<HHIB3x", 4280, 4280, 0, 1)  # max_xmit, max_recv, assoc_group, n_ctx
    body += struct.pack("<HBx", 0, 1)  # context id, n_transfer
    body += uuid.UUID(iface).bytes_le + struct.pack("<HH", major, minor)
    body += ndr + struct.pack("<I", 2)
    frag_len = 16 + len(body)
    hdr = struct.pack("<BBBB4sHHI", 5, 0, 11, 0x03, b"\x10\x00\x00\x00", frag_len, 0, 1)
    return hdr + body


def _tls_client_hello() -> bytes:
    # record header + handshake header + client version + random (truncated hello is fine)
    rnd = bytes(range(32))
    hello = b"\x03\x01" + rnd + b"\x00" + b"\x00\x04\x00\x2f\x00\x35" + b"\x01\x00"
    hs = b"\x01" + len(hello).to_bytes(3, "big") + hello
    return b"\x16\x03\x01" + len(hs).to_bytes(2, "big") + hs


def _dns_query(name: str) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", 1, 1)


def _ldap_search() -> bytes:
    # SearchRequest for the rootDSE (base "", scope base, filter (objectClass=*))
    base = b"\x04\x00" + b"\x0a\x01\x00" + b"\x0a\x01\x00" + b"\x02\x01\x00" + b"\x02\x01\x00"
    base += b"\x01\x01\x00" + b"\x87\x0bobjectClass" + b"\x30\x00"
    req = b"\x63" + bytes([len(base)]) + base
    msg = b"\x02\x01\x01" + req
    return b"\x30" + bytes([len(msg)]) + msg


def _smb_negotiate() -> bytes:
    dialects = b"\x02NT LM 0.12\x00"
    smb = b"\xffSMBr" + b"\x00" * 4 + b"\x18" + b"\x53\xc8" + b"\x00" * 12 + b"\xff\xfe"
    smb += b"\x00\x00" + b"\x00\x00" + b"\x00\x00" + b"\x00" + len(dialects).to_bytes(2, "little")
    smb += dialects
    return b"\x00" + len(smb).to_bytes(3, "big") + smb


_HTTP_TAIL = b"Host: mail.example.com\r\nUser-Agent: MSRPC\r\nAccept: application/rpc\r\n\r\n"

# name -> bytes; index in this list is the signature id
_SIGNATURES: list[tuple[str, bytes]] = [
    ("bind_epm", _dcerpc_bind("e1af8308-5d1f-11c9-91a4-08002b14a0fa", 3, 0)),
    ("bind_emsmdb", _dcerpc_bind("a4f1db00-ca47-1067-b31f-00dd010662da", 0, 81)),
    ("bind_nspi", _dcerpc_bind("f5cc5a18-4264-101a-8c59-08002b2f8426", 56, 0)),
    ("bind_rfr", _dcerpc_bind("1544f5e0-613c-11d1-93df-00c04fd7bd09", 1, 0)),
    ("ncacn_http", b"ncacn_http/1.0"),
    ("http_owa", (b"GET /exchange/alice/Inbox/?Cmd=contents HTTP/1.1\r\n"
                  b"Host: mail.example.com\r\nAccept: */*\r\n\r\n")),
    ("http_exchweb", (b"POST /exchweb/bin/auth/owaauth.dll HTTP/1.1\r\n"
                      b"Host: mail.example.com\r\nContent-Length: 0\r\n\r\n")),
    ("http_eas", (b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId=ABC123"
                  b"&DeviceType=PocketPC HTTP/1.1\r\nHost: mail.example.com\r\n"
                  b"Content-Type: application/vnd.ms-sync.wbxml\r\n\r\n")),
    ("http_rpc_in", b"RPC_IN_DATA /rpc/rpcproxy.dll?exch01.example.com:6001 HTTP/1.1\r\n"
                    b"Content-Length: 1073741824\r\n" + _HTTP_TAIL),
    ("http_rpc_out", b"RPC_OUT_DATA /rpc/rpcproxy.dll?exch01.example.com:6004 HTTP/1.1\r\n"
                     b"Content-Length: 76\r\n" + _HTTP_TAIL),
    ("tls_hello", _tls_client_hello()),
    ("smtp_banner", (b"220 exch01.example.com Microsoft ESMTP MAIL Service, "
                     b"Version: 6.0.3790.3959 ready at  Wed, 22 Mar 2006 10:00:00 +0100 \r\n")),
    ("smtp_ehlo", b"EHLO client.example.com\r\n"),
    ("pop3_banner", (b"+OK Microsoft Exchange Server 2003 POP3 server version 6.5.7638.1 "
                     b"(exch01.example.com) ready.\r\n")),
    ("imap4_banner", (b"* OK Microsoft Exchange Server 2003 IMAP4rev1 server version "
                      b"6.5.7638.1 (exch01.example.com) ready.\r\n")),
    ("nntp_banner", b"200 NNTP Service 6.0.3790.3959 Version: 6.0.3790.3959 Posting Allowed \r\n"),
    ("tpkt_cr", (b"\x03\x00\x00\x16\x11\xe0\x00\x00\x00\x01\x00\xc1\x02\x00\x01"
                 b"\xc2\x02\x00\x01\xc0\x01\x0a")),
    ("ldap_search", _ldap_search()),
    ("smb_negotiate", _smb_negotiate()),
    ("dns_query", _dns_query("exch01.example.com")),
    ("notify_2883", (b"NOTIFY httpu://fe01.example.com:2883/ HTTP/1.1\r\n"
                     b"Subscription-id: 42\r\nContent-length: 0\r\n\r\n")),
    ("newmail_blob", b"\x01\x00\x00\x00\x2a\x00\x00\x00"),
]
SIG_ID = {name: i for i, (name, _) in enumerate(_SIGNATURES)}
SIG_BYTES = [np.frombuffer(b, dtype=np.uint8) for _, b in _SIGNATURES]
SIG_LEN = np.array([len(b) for _, b in _SIGNATURES], dtype=np.int64)
# direction of each signature relative to the flow: 0 = client->server, 1 = server->client
SIG_DIR = np.array(
    [1 if name.endswith("_banner") or name == "ncacn_http" else 0 for name, _ in _SIGNATURES],
    dtype=np.int8,
)

# --------------------------------------------------------------------------------------------
# Flow profiles
# --------------------------------------------------------------------------------------------

# roles: "in" client -> Exchange server, "out" Exchange server -> DC/outside, "fe" front-end ->
# back-end, "other" client -> outside host (not Exchange), "newmail" Exchange -> client (UDP)
# length: "tcp" (handshake ... teardown), "dns" (2), "one" (1), "udp" (short exchange)


@dataclass(frozen=True)
class Profile:
    name: str
    weight: float
    udp: bool
    port: int | tuple[int, int]
    role: str
    sig1: tuple[str | None, ...] = (None,)
    sig2: tuple[str | None, ...] = (None,)
    length: str = "tcp"


TCP_PROFILES = [
    Profile("epm", 6, False, 135, "in", ("bind_epm",)),
    Profile("rpc-dynamic", 12, False, (1025, 5000), "in",
            ("bind_emsmdb", "bind_emsmdb", "bind_emsmdb", "bind_nspi", "bind_rfr", None)),
    Profile("x400", 2, False, 102, "in", ("tpkt_cr",)),
    Profile("smtp", 8, False, 25, "in", ("smtp_banner",), ("smtp_ehlo",)),
    Profile("routing", 2, False, 691, "in"),
    Profile("http", 10, False, 80, "in",
            ("http_owa", "http_owa", "http_exchweb", "http_eas", "http_rpc_in", "http_rpc_out")),
    Profile("https", 10, False, 443, "in", ("tls_hello",)),
    Profile("pop3", 3, False, 110, "in", ("pop3_banner",)),
    Profile("pop3s", 1.5, False, 995, "in", ("tls_hello",)),
    Profile("imap4", 3, False, 143, "in", ("imap4_banner",)),
    Profile("imap4s", 1.5, False, 993, "in", ("tls_hello",)),
    Profile("nntp", 1, False, 119, "in", ("nntp_banner",)),
    Profile("nntps", 0.5, False, 563, "in", ("tls_hello",)),
    Profile("srs", 1, False, 379, "in", ("ldap_search",)),
    Profile("ldap", 3, False, 389, "in", ("ldap_search",)),
    Profile("smb", 3, False, 445, "in", ("smb_negotiate",)),
    Profile("rpch-store", 4, False, 6001, "in", ("ncacn_http",), ("bind_emsmdb",)),
    Profile("rpch-rfr", 1.5, False, 6002, "in", ("ncacn_http",), ("bind_rfr",)),
    Profile("rpch-nspi", 2.5, False, 6004, "in", ("ncacn_http",), ("bind_nspi",)),
    Profile("rpch-epm", 1.5, False, 593, "in", ("ncacn_http",), ("bind_epm",)),
    Profile("other-tcp", 8, False, (1, 65535), "other"),
    Profile("smtp-out", 4, False, 25, "out", ("smtp_banner",), ("smtp_ehlo",)),
    Profile("adc-ldap-out", 2, False, 389, "out", ("ldap_search",)),
    Profile("adc-srs-out", 0.5, False, 379, "out", ("ldap_search",)),
    Profile("gc-out", 1, False, 3268, "out", ("ldap_search",)),
    Profile("kerberos-out", 1, False, 88, "out"),
    Profile("routing-out", 0.5, False, 691, "out"),
    Profile("fe-http", 2, False, 80, "fe", ("http_owa", "http_eas")),
    Profile("fe-pop3", 0.5, False, 110, "fe", ("pop3_banner",)),
    Profile("fe-imap4", 0.5, False, 143, "fe", ("imap4_banner",)),
]
UDP_PROFILES = [
    Profile("dns", 40, True, 53, "out", ("dns_query",), length="dns"),
    Profile("dns-client", 15, True, 53, "other", ("dns_query",), length="dns"),
    Profile("directpush", 12, True, 2883, "fe", ("notify_2883",), length="udp"),
    Profile("newmail", 10, True, (1025, 5000), "newmail", ("newmail_blob",), length="one"),
    Profile("cldap", 8, True, 389, "out", ("ldap_search",), length="dns"),
    Profile("ntp", 5, True, 123, "out", length="dns"),
    Profile("other-udp", 10, True, (1, 65535), "other", length="udp"),
]
PROFILES = TCP_PROFILES + UDP_PROFILES
N_TCP_PROFILES = len(TCP_PROFILES)

_P_UDP = np.array([p.udp for p in PROFILES])
_P_LO = np.array([p.port if isinstance(p.port, int) else p.port[0] for p in PROFILES])
_P_HI = np.array([p.port if isinstance(p.port, int) else p.port[1] for p in PROFILES])
_P_ROLE = np.array([["in", "out", "fe", "other", "newmail"].index(p.role) for p in PROFILES])
_P_LEN = np.array([["tcp", "dns", "one", "udp"].index(p.length) for p in PROFILES])
ROLE_IN, ROLE_OUT, ROLE_FE, ROLE_OTHER, ROLE_NEWMAIL = range(5)

EXCHANGE = 0x0A0A000A  # 10.10.0.10 .. .17; .10 and .11 are front-ends
DCS = 0x0A0A0002  # 10.10.0.2 .. .5
CLIENTS = 0x0A140000  # 10.20.0.0/16
OUTSIDE = 0xC6120000  # 198.18.0.0/15
V6_PREFIX = np.frombuffer(bytes.fromhex("20010db8000000000000000000000000")[:12], dtype=np.uint8)

# mean frame size is tuned by these (see --help text); sizes are TCP payload bytes
MSS4, MSS6 = 1460, 1440
FLOW_ATTRS = ("L", "prof", "udp", "v6", "vlan", "caddr", "saddr", "cport", "sport",
              "isn_c", "isn_s", "sig1", "sig2")


class Generator:
    """Streams synthetic packets, a chunk at a time, as ready-to-write pcap record bytes."""

    def __init__(self, flows: int, seed: int, pps: float, packets: int | None = None,
                 udp_share: float = 0.10, v6_share: float = 0.10, vlan_share: float = 0.10) -> None:
        self.rng = np.random.default_rng(seed)
        self.S = flows
        self.v6_share = v6_share
        self.vlan_share = vlan_share
        self.mean_gap_us = 1e6 / pps
        self.t_us = T0_US
        tw = np.array([p.weight for p in TCP_PROFILES], dtype=float)
        uw = np.array([p.weight for p in UDP_PROFILES], dtype=float)
        # Choose the UDP share of *flows* so that UDP makes about udp_share of *packets*.
        p_udp = self._calibrate_udp(udp_share, uw / uw.sum(), (packets or 40 * flows) / flows)
        self.prof_p = np.concatenate([(1 - p_udp) * tw / tw.sum(), p_udp * uw / uw.sum()])
        self.flows_started = 0
        self.slot = self._new_flows(flows)
        self.pos = np.zeros(flows, dtype=np.int64)  # next packet index within the slot's flow
        self.cons_c = np.zeros(flows, dtype=np.int64)  # sequence space consumed so far
        self.cons_s = np.zeros(flows, dtype=np.int64)

    # -- flows ---------------------------------------------------------------------------------
    def _calibrate_udp(self, share: float, up: np.ndarray, per_slot: float) -> float:
        """UDP share of new flows that makes UDP ``share`` of the packets.

        Each slot sees about ``per_slot`` packets and starts every flow from its first packet,
        so long (TCP) flows are cut off at the end of the capture more often than short (UDP)
        ones; simulate a few thousand slots over that horizon and bisect.
        """
        rng = np.random.default_rng(12345)
        m = 4000
        horizon = rng.poisson(per_slot, m)
        n_draws = int(horizon.max()) + 1
        tcp_len = self._lengths(np.zeros(m * n_draws, dtype=np.int64), rng,
                                np.zeros(m * n_draws, bool)).reshape(m, n_draws)
        kinds = rng.choice(np.arange(N_TCP_PROFILES, len(PROFILES)), size=m * n_draws, p=up)
        udp_len = self._lengths(kinds, rng, np.zeros(m * n_draws, bool)).reshape(m, n_draws)
        u01 = rng.random((m, n_draws))

        def packet_share(p: float) -> float:
            is_udp = u01 < p
            lens = np.where(is_udp, udp_len, tcp_len)
            end = np.cumsum(lens, axis=1)
            got = np.clip(np.minimum(end, horizon[:, None]) - (end - lens), 0, None)
            return float(got[is_udp].sum() / max(got.sum(), 1))

        lo, hi = 0.0, 1.0
        for _ in range(30):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if packet_share(mid) < share else (lo, mid)
        return (lo + hi) / 2

    @staticmethod
    def _lengths(prof: np.ndarray, rng: np.random.Generator, has_sig: np.ndarray) -> np.ndarray:
        n = prof.shape[0]
        kind = _P_LEN[prof]
        tcp = 7 + np.minimum(np.floor(rng.lognormal(2.4, 1.0, n)), 4000).astype(np.int64)
        tcp = np.where(has_sig, np.maximum(tcp, 8), tcp)
        udp = 1 + np.minimum(np.floor(rng.lognormal(0.7, 0.9, n)), 200).astype(np.int64)
        return np.select([kind == 0, kind == 1, kind == 2], [tcp, 2, 1], udp)

    def _new_flows(self, n: int) -> dict[str, np.ndarray]:
        rng = self.rng
        self.flows_started += n
        prof = rng.choice(len(PROFILES), size=n, p=self.prof_p)
        role = _P_ROLE[prof]
        udp = _P_UDP[prof]
        sport = rng.integers(_P_LO[prof], _P_HI[prof] + 1)
        # client ephemeral port: Windows 2003 range or the modern one
        cport = np.where(rng.random(n) < 0.6, rng.integers(1025, 5001, n),
                         rng.integers(49152, 65536, n))
        exch = EXCHANGE + rng.integers(0, 8, n)
        fe = EXCHANGE + rng.integers(0, 2, n)
        be = EXCHANGE + rng.integers(2, 8, n)
        dc = DCS + rng.integers(0, 4, n)
        client = CLIENTS + rng.integers(0, 65536, n)
        outside = OUTSIDE + rng.integers(0, 131072, n)
        to_dc = np.isin(sport, [389, 379, 3268, 88, 53, 123])
        caddr = np.select([role == ROLE_IN, role == ROLE_OUT, role == ROLE_FE, role == ROLE_NEWMAIL],
                          [client, exch, fe, exch], client)
        saddr = np.select([role == ROLE_IN, role == ROLE_OUT, role == ROLE_FE, role == ROLE_NEWMAIL],
                          [np.where(np.isin(sport, [6001, 6002, 6004, 593]), be, exch),
                           np.where(to_dc, dc, outside), be, client],
                          np.where(sport == 53, dc, outside))
        sig1 = np.full(n, -1, dtype=np.int16)
        sig2 = np.full(n, -1, dtype=np.int16)
        for i in np.unique(prof):
            m = np.flatnonzero(prof == i)
            p = PROFILES[i]
            for attr, choices in (("sig1", p.sig1), ("sig2", p.sig2)):
                ids = np.array([-1 if c is None else SIG_ID[c] for c in choices], dtype=np.int16)
                (sig1 if attr == "sig1" else sig2)[m] = ids[rng.integers(0, len(ids), m.size)]
        vlan = np.where(rng.random(n) < self.vlan_share, rng.integers(2, 4095, n), 0)
        return {
            "L": self._lengths(prof, rng, (sig1 >= 0) | (sig2 >= 0)),
            "prof": prof.astype(np.int16),
            "udp": udp,
            "v6": rng.random(n) < self.v6_share,
            "vlan": vlan.astype(np.int64),
            "caddr": caddr.astype(np.int64),
            "saddr": saddr.astype(np.int64),
            "cport": cport.astype(np.int64),
            "sport": sport.astype(np.int64),
            "isn_c": rng.integers(0, 2**32, n, dtype=np.int64),
            "isn_s": rng.integers(0, 2**32, n, dtype=np.int64),
            "sig1": sig1,
            "sig2": sig2,
        }

    # -- packets -------------------------------------------------------------------------------
    def chunk(self, k: int) -> tuple[bytes | np.ndarray, int]:
        """Next ``k`` packets as one uint8 buffer of pcap records; returns (buffer, n_bytes_wire)."""
        rng, S = self.rng, self.S
        slots = rng.integers(0, S, k)
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        ar = np.arange(k)
        first = np.empty(k, dtype=bool)
        first[0] = True
        np.not_equal(ss[1:], ss[:-1], out=first[1:])
        rank = ar - np.maximum.accumulate(np.where(first, ar, 0))
        idx = self.pos[ss] + rank  # packet index within flow
        ref = ss.copy()  # row in the chunk's flow table (rows < S: the slots' current flows)

        # Packets past the end of their flow go to a new flow in the same slot (repeat, since a
        # new flow can also be shorter than what is left of this chunk for its slot).
        parts = [self.slot]
        lens = self.slot["L"]
        cur = np.flatnonzero(idx >= lens[ref])
        n_rows = S
        while cur.size:
            u, inv = np.unique(ref[cur], return_inverse=True)
            new = self._new_flows(u.size)
            parts.append(new)
            idx[cur] -= lens[ref[cur]]
            ref[cur] = n_rows + inv
            n_rows += u.size
            lens = np.concatenate([lens, new["L"]])
            cur = cur[idx[cur] >= lens[ref[cur]]]
        table = {a: np.concatenate([p[a] for p in parts]) for a in FLOW_ATTRS} if len(parts) > 1 \
            else self.slot
        f = {a: table[a][ref] for a in FLOW_ATTRS}  # per packet (sorted order) flow attributes
        L, udp, v6 = f["L"], f["udp"], f["v6"]

        # direction (0 = client->server), TCP flags, payload length
        sig_at = np.where(udp, 0, 3)
        sig = np.where(idx == sig_at, f["sig1"], np.where(idx == sig_at + 1, f["sig2"], -1))
        has_sig = sig >= 0
        direc = (rng.random(k) < 0.55).astype(np.int8)
        direc[has_sig] = SIG_DIR[sig[has_sig]]
        r = rng.random(k)
        mss = np.where(v6, MSS6, MSS4)
        medium = np.minimum(np.floor(rng.lognormal(5.3, 1.0, k)).astype(np.int64) + 1, mss)
        payload = np.select([r < 0.20, r < 0.63], [0, mss], medium)
        handshake = ~udp & (idx < 3)
        teardown = ~udp & (idx >= L - 3)
        tcp_dir = np.select([idx == 1, idx == L - 2], [1, 1], 0)
        direc = np.where(handshake | teardown, tcp_dir, direc)
        direc = np.where(udp & (idx == 0), 0, np.where(udp & (idx == 1), 1, direc))
        udp_size = np.where(f["sport"] == 53, rng.integers(40, 300, k), rng.integers(20, 600, k))
        payload = np.where(udp, udp_size, payload)
        payload = np.where(handshake | teardown, 0, payload)
        payload = np.where(has_sig, SIG_LEN[np.maximum(sig, 0)], payload)
        flags = np.where(payload > 0, TCP_PSH | TCP_ACK, TCP_ACK)
        flags = np.select([idx == 0, idx == 1, teardown & (idx < L - 1)],
                          [TCP_SYN, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK], flags)

        # sequence numbers: per flow and direction, bytes of sequence space consumed before
        # each packet (payload, +1 for SYN and FIN); flows continuing from the last chunk
        # start from what the slot carried over.
        x = payload + ((flags & (TCP_SYN | TCP_FIN)) != 0)
        gfirst = np.empty(k, dtype=bool)
        gfirst[0] = True
        np.not_equal(ref[1:], ref[:-1], out=gfirst[1:])
        gstart = np.maximum.accumulate(np.where(gfirst, ar, 0))
        cont = ref < S
        before = []
        for d, carried in ((0, self.cons_c), (1, self.cons_s)):
            xd = np.where(direc == d, x, 0)
            excl = np.cumsum(xd) - xd
            before.append(excl - excl[gstart] + np.where(cont, carried[ss], 0))
        c2s = direc == 0
        seq = np.where(c2s, f["isn_c"] + before[0], f["isn_s"] + before[1]) & 0xFFFFFFFF
        ack = np.where(c2s, f["isn_s"] + before[1], f["isn_c"] + before[0]) & 0xFFFFFFFF
        ack = np.where(flags == TCP_SYN, 0, ack)

        # carry each slot's state to the next chunk
        last = np.empty(k, dtype=bool)
        last[-1] = True
        np.not_equal(ss[1:], ss[:-1], out=last[:-1])
        ls, lr = ss[last], ref[last]
        for a in FLOW_ATTRS:
            self.slot[a][ls] = table[a][lr]
        self.pos[ls] = idx[last] + 1
        self.cons_c[ls] = before[0][last] + np.where(direc[last] == 0, x[last], 0)
        self.cons_s[ls] = before[1][last] + np.where(direc[last] == 1, x[last], 0)

        # back to capture order
        out = np.empty(k, dtype=np.int64)
        out[order] = ar
        def o(a: np.ndarray) -> np.ndarray:
            return a[out]
        gaps = 1 + np.floor(rng.exponential(self.mean_gap_us - 1, k)).astype(np.int64)
        ts = self.t_us + np.cumsum(gaps)
        self.t_us = int(ts[-1])
        buf = build_records(
            ts=ts, v6=o(v6), vlan=o(f["vlan"]), udp=o(udp),
            src=o(np.where(c2s, f["caddr"], f["saddr"])), dst=o(np.where(c2s, f["saddr"], f["caddr"])),
            sport=o(np.where(c2s, f["cport"], f["sport"])), dport=o(np.where(c2s, f["sport"], f["cport"])),
            seq=o(seq), ack=o(ack), flags=o(flags), payload=o(payload), sig=o(sig),
            ipid=rng.integers(0, 65536, k), c2s=o(c2s),
        )
        return buf, k


def _put(hdr: np.ndarray, col: int, values: np.ndarray, dtype: str) -> None:
    """Write ``values`` as ``dtype`` bytes into columns col.. of the (n, H) uint8 template."""
    b = np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(values.shape[0], -1)
    hdr[:, col:col + b.shape[1]] = b


def _mac(addr: np.ndarray, oui: int) -> np.ndarray:
    return (np.int64(oui) << 24) | (addr & 0xFFFFFF)


def build_records(*, ts, v6, vlan, udp, src, dst, sport, dport, seq, ack, flags, payload, sig,
                  ipid, c2s) -> np.ndarray:
    """One uint8 buffer holding the pcap records (16-byte header + frame) of the given packets."""
    has_vlan = vlan > 0
    l2 = 14 + 4 * has_vlan
    l3 = np.where(v6, 40, 20)
    l4 = np.where(udp, 8, 20)
    frame = np.maximum(l2 + l3 + l4 + payload, 60)
    rec_len = 16 + frame
    rec_off = np.cumsum(rec_len) - rec_len
    buf = np.zeros(int(rec_len.sum()), dtype=np.uint8)
    layout = has_vlan * 4 + v6 * 2 + udp
    for key in np.unique(layout):
        m = np.flatnonzero(layout == key)
        n = m.size
        isv, is6, isu = bool(key & 4), bool(key & 2), bool(key & 1)
        e = 14 + 4 * isv
        i3 = 40 if is6 else 20
        i4 = 8 if isu else 20
        H = 16 + e + i3 + i4
        hdr = np.zeros((n, H), dtype=np.uint8)
        t = ts[m]
        _put(hdr, 0, t // 1_000_000, "<u4")
        _put(hdr, 4, t % 1_000_000, "<u4")
        _put(hdr, 8, frame[m], "<u4")
        _put(hdr, 12, frame[m], "<u4")
        # Ethernet: client side 00:0c:29:..., server side 00:50:56:...
        s_is_c = c2s[m]
        _put(hdr, 16, np.where(s_is_c, _mac(dst[m], 0x005056), _mac(dst[m], 0x000C29)), ">u8")
        # (the 8-byte write above spills 2 bytes into the source MAC; overwrite them next)
        hdr[:, 16:22] = hdr[:, 18:24].copy()
        _put(hdr, 22, np.where(s_is_c, _mac(src[m], 0x000C29), _mac(src[m], 0x005056)), ">u8")
        hdr[:, 22:28] = hdr[:, 24:30].copy()
        p = 28
        if isv:
            _put(hdr, p, np.full(n, 0x8100), ">u2")
            _put(hdr, p + 2, vlan[m], ">u2")
            p += 4
        _put(hdr, p, np.full(n, 0x86DD if is6 else 0x0800), ">u2")
        p += 2
        proto = 17 if isu else 6
        l4len = i4 + payload[m]
        if is6:
            hdr[:, p] = 0x60
            _put(hdr, p + 4, l4len, ">u2")
            hdr[:, p + 6] = proto
            hdr[:, p + 7] = 64
            hdr[:, p + 8:p + 20] = V6_PREFIX
            _put(hdr, p + 20, src[m], ">u4")
            hdr[:, p + 24:p + 36] = V6_PREFIX
            _put(hdr, p + 36, dst[m], ">u4")
        else:
            total = 20 + l4len
            ttl_proto = (128 << 8) | proto
            s, d = src[m], dst[m]
            csum = 0x4500 + total + ipid[m] + 0x4000 + ttl_proto + (s >> 16) + (s & 0xFFFF) \
                + (d >> 16) + (d & 0xFFFF)
            csum = (csum & 0xFFFF) + (csum >> 16)
            csum = (csum & 0xFFFF) + (csum >> 16)
            hdr[:, p] = 0x45
            _put(hdr, p + 2, total, ">u2")
            _put(hdr, p + 4, ipid[m], ">u2")
            hdr[:, p + 6] = 0x40
            hdr[:, p + 8] = 128
            hdr[:, p + 9] = proto
            _put(hdr, p + 10, ~csum & 0xFFFF, ">u2")
            _put(hdr, p + 12, s, ">u4")
            _put(hdr, p + 16, d, ">u4")
        p += i3
        _put(hdr, p, sport[m], ">u2")
        _put(hdr, p + 2, dport[m], ">u2")
        if isu:
            _put(hdr, p + 4, l4len, ">u2")
        else:
            _put(hdr, p + 4, seq[m], ">u4")
            _put(hdr, p + 8, ack[m], ">u4")
            hdr[:, p + 12] = 0x50
            hdr[:, p + 13] = flags[m]
            _put(hdr, p + 14, np.where(s_is_c, 65535, 64240), ">u2")
        pos = (rec_off[m].astype(np.int64)[:, None] + np.arange(H)).ravel()
        buf[pos] = hdr.ravel()
    # payload signatures
    l7 = rec_off + 16 + l2 + l3 + l4
    for sid in np.unique(sig[sig >= 0]):
        m = np.flatnonzero(sig == sid)
        bs = SIG_BYTES[sid]
        buf[(l7[m][:, None] + np.arange(bs.size)).ravel()] = np.tile(bs, m.size)
    return buf


def pcap_global_header() -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def generate(out: str | Path, packets: int = 2_000_000, flows: int = 50_000, seed: int = 1,
             pps: float = 50_000.0, chunk: int = 65_536, progress: bool = False) -> dict:
    """Write the capture; return stats (packets, bytes, flows_started, seconds)."""
    if packets < 0 or flows < 1 or pps <= 1:
        raise ValueError("need packets >= 0, flows >= 1, pps > 1")
    t0 = time.perf_counter()
    gen = Generator(flows, seed, pps, packets=packets)
    done = 0
    frame_bytes = 0
    with open(out, "wb") as fh:
        fh.write(pcap_global_header())
        while done < packets:
            k = min(chunk, packets - done)
            buf, n = gen.chunk(k)
            fh.write(memoryview(buf))
            frame_bytes += buf.size - 16 * n
            done += n
            if progress:
                print(f"\r{done:,}/{packets:,} packets", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {
        "packets": done,
        "frame_bytes": frame_bytes,
        "file_bytes": 24 + frame_bytes + 16 * done,
        "flows_started": gen.flows_started,
        "concurrent_flows": flows,
        "duration_s": (gen.t_us - T0_US) / 1e6,
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output pcap file")
    ap.add_argument("--packets", type=int, default=2_000_000, help="number of packets (2,000,000)")
    ap.add_argument("--flows", type=int, default=50_000, help="concurrent flows (50,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (1)")
    ap.add_argument("--pps", type=float, default=50_000.0,
                    help="mean packets per second of capture time (50,000)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    a = ap.parse_args(argv)
    try:
        st = generate(a.out, a.packets, a.flows, a.seed, a.pps,
                      progress=not a.quiet and sys.stderr.isatty())
    except (ValueError, OSError) as e:
        print(f"gen_bench_capture: {e}", file=sys.stderr)
        return 2
    if not a.quiet:
        avg = st["frame_bytes"] / max(st["packets"], 1)
        print(f"{a.out}: {st['packets']:,} packets, {st['file_bytes'] / 1e6:,.1f} MB, "
              f"mean frame {avg:.0f} B, {st['flows_started']:,} flows "
              f"({st['concurrent_flows']:,} concurrent), {st['duration_s']:.1f} s of traffic; "
              f"written in {st['seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
