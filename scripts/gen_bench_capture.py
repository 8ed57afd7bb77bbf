#!/usr/bin/env python3
"""Generate a large synthetic Exchange 2003 capture for the pcapclass benchmark.

    python scripts/gen_bench_capture.py OUT.pcap [--packets 2000000] [--flows 50000] [--seed 1]
                                         [--canned] [--truth TRUTH.csv]

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
  Nearly every TCP flow starts a protocol, as Exchange traffic does: its first data segment
  each way is a start of ``bench_starts.py`` (DCE/RPC bind and bind_ack, ``ncacn_http/1.0``
  then a bind, HTTP request and response, TLS hellos, SMTP/POP3/IMAP4/NNTP greeting and first
  command, TPKT/COTP, LDAP, SMB2, Kerberos), with the fields that differ per connection in
  real traffic (times, host and user names, randoms, session and message ids, cookies), so
  that first payloads are as varied as a real network's. Later payload bytes are random.
  ``--canned`` gives every flow the same start fields and zero bytes after them: a few
  distinct first payloads, which shows (against the default capture) what the evidence
  stage's verdict cache saves.
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

``--truth`` also writes what was written per flow (endpoints, profile, starts, whether they
were all written before the capture ended, the evidence they prove), one CSV row each: the
ground truth a test compares the classifier's output with, flow by flow.

The generator is deterministic for a given (--packets, --flows, --seed, --pps, --canned).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import ipaddress
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
T0_US = 1_143_000_000 * 1_000_000  # 2006-03-22, the Exchange 2003 SP2 era

TCP_SYN, TCP_FIN, TCP_PSH, TCP_ACK = 0x02, 0x01, 0x08, 0x10


def _load_starts():
    spec = importlib.util.spec_from_file_location("bench_starts", Path(__file__).with_name("bench_starts.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_starts", module)
    spec.loader.exec_module(module)
    return module


bench_starts = _load_starts()
STARTS = bench_starts.STARTS
SIG_ID = {st.name: i for i, st in enumerate(STARTS)}
# direction of each start relative to the flow: 0 = client->server, 1 = server->client
SIG_DIR = np.array([int(st.from_server) for st in STARTS], dtype=np.int8)

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
    #: the port names an Exchange service, which a start that only confirms the port proves
    service_port: bool = True


_BINDS = ("bind_emsmdb", "bind_emsmdb", "bind_emsmdb", "bind_nspi", "bind_rfr")
_HTTP = ("http_owa", "http_owa", "http_exchweb", "http_eas", "http_rpc_in", "http_rpc_out")
_TLS = (("tls_hello",), ("tls_server_hello",))
_LDAP = (("ldap_search",), ("ldap_entry",))
TCP_PROFILES = [
    Profile("epm", 6, False, 135, "in", ("bind_epm",), ("bind_ack",)),
    Profile("rpc-dynamic", 12, False, (1025, 5000), "in", _BINDS, ("bind_ack",)),
    Profile("x400", 2, False, 102, "in", ("tpkt_cr",), ("tpkt_cc",)),
    Profile("smtp", 8, False, 25, "in", ("smtp_banner",), ("smtp_ehlo",)),
    Profile("routing", 2, False, 691, "in"),
    Profile("http", 10, False, 80, "in", _HTTP, ("http_ok",)),
    Profile("https", 10, False, 443, "in", *_TLS),
    Profile("pop3", 3, False, 110, "in", ("pop3_banner",), ("pop3_user",)),
    Profile("pop3s", 1.5, False, 995, "in", *_TLS),
    Profile("imap4", 3, False, 143, "in", ("imap4_banner",), ("imap4_login",)),
    Profile("imap4s", 1.5, False, 993, "in", *_TLS),
    Profile("nntp", 1, False, 119, "in", ("nntp_banner",), ("nntp_mode",)),
    Profile("nntps", 0.5, False, 563, "in", *_TLS),
    Profile("srs", 1, False, 379, "in", *_LDAP),
    Profile("ldap", 3, False, 389, "in", *_LDAP),
    Profile("smb", 3, False, 445, "in", ("smb_negotiate",), ("smb_negotiate_response",)),
    Profile("rpch-store", 4, False, 6001, "in", ("ncacn_http",), ("bind_emsmdb",)),
    Profile("rpch-rfr", 1.5, False, 6002, "in", ("ncacn_http",), ("bind_rfr",)),
    Profile("rpch-nspi", 2.5, False, 6004, "in", ("ncacn_http",), ("bind_nspi",)),
    Profile("rpch-epm", 1.5, False, 593, "in", ("ncacn_http",), ("bind_epm",)),
    Profile("other-tcp", 4, False, (1, 65535), "other"),
    Profile("smtp-out", 4, False, 25, "out", ("smtp_banner",), ("smtp_ehlo",)),
    Profile("adc-ldap-out", 2, False, 389, "out", *_LDAP),
    Profile("adc-srs-out", 0.5, False, 379, "out", *_LDAP),
    Profile("gc-out", 1, False, 3268, "out", *_LDAP, service_port=False),  # a DC's global catalog
    Profile("kerberos-out", 1, False, 88, "out", ("krb_as_req",), ("krb_error",)),
    Profile("routing-out", 0.5, False, 691, "out"),
    Profile("fe-http", 2, False, 80, "fe", ("http_owa", "http_eas"), ("http_ok",)),
    Profile("fe-pop3", 0.5, False, 110, "fe", ("pop3_banner",), ("pop3_user",)),
    Profile("fe-imap4", 0.5, False, 143, "fe", ("imap4_banner",), ("imap4_login",)),
]
UDP_PROFILES = [
    Profile("dns", 40, True, 53, "out", ("dns_query",), ("dns_answer",), length="dns"),
    Profile("dns-client", 15, True, 53, "other", ("dns_query",), ("dns_answer",), length="dns"),
    Profile("directpush", 12, True, 2883, "fe", ("notify_2883",), length="udp"),
    Profile("newmail", 10, True, (1025, 5000), "newmail", ("newmail_blob",), length="one"),
    Profile("cldap", 8, True, 389, "out", ("ldap_search_udp",), ("ldap_entry_udp",), length="dns"),
    Profile("ntp", 5, True, 123, "out", ("ntp",), length="dns"),
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
FLOW_ATTRS = ("fid", "L", "prof", "udp", "v6", "vlan", "caddr", "saddr", "cport", "sport",
              "isn_c", "isn_s", "sig1", "sig2")
#: what the ground truth keeps of each flow
TRUTH_ATTRS = ("fid", "L", "prof", "udp", "v6", "caddr", "saddr", "cport", "sport", "sig1", "sig2")


class Generator:
    """Streams synthetic packets, a chunk at a time, as ready-to-write pcap record bytes."""

    def __init__(self, flows: int, seed: int, pps: float, packets: int | None = None,
                 udp_share: float = 0.10, v6_share: float = 0.10, vlan_share: float = 0.10,
                 canned: bool = False, truth: bool = False) -> None:
        self.rng = np.random.default_rng(seed)
        self.seed, self.canned = seed, canned
        #: the flows started, as written (TRUTH_ATTRS), when the ground truth is kept
        self.log: list[dict[str, np.ndarray]] | None = [] if truth else None
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
        fid = np.arange(self.flows_started, self.flows_started + n, dtype=np.int64)
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
        flows = {
            "fid": fid,
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
        if self.log is not None:
            self.log.append({a: flows[a].copy() for a in TRUTH_ATTRS})  # slot arrays change later
        return flows

    # -- packets -------------------------------------------------------------------------------
    def chunk(self, k: int) -> tuple[bytes | np.ndarray, int]:
        """Next ``k`` packets as one uint8 buffer of pcap records; returns (buffer, n_bytes_wire)."""
        rng, S = self.rng, self.S
        slots = rng.integers(0, S, k)
        order = np.argsort(slots, kind="stable")
        ss = slots[order]
        gaps = 1 + np.floor(rng.exponential(self.mean_gap_us - 1, k)).astype(np.int64)
        ts = self.t_us + np.cumsum(gaps)  # in capture order; packet i of the sorted order is order[i]
        self.t_us = int(ts[-1])
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
        starts = np.flatnonzero(has_sig)
        start_bytes = self._starts(sig[starts], {a: f[a][starts] for a in ("fid", "caddr", "saddr", "sport")},
                                   ts[order[starts]])
        payload[starts] = [len(b) for b in start_bytes]
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
        buf = build_records(
            ts=ts, v6=o(v6), vlan=o(f["vlan"]), udp=o(udp),
            src=o(np.where(c2s, f["caddr"], f["saddr"])), dst=o(np.where(c2s, f["saddr"], f["caddr"])),
            sport=o(np.where(c2s, f["cport"], f["sport"])), dport=o(np.where(c2s, f["sport"], f["cport"])),
            seq=o(seq), ack=o(ack), flags=o(flags), payload=o(payload),
            ipid=rng.integers(0, 65536, k), c2s=o(c2s), start_at=order[starts], start_bytes=start_bytes,
            fill=None if self.canned else rng,
        )
        return buf, k

    def _starts(self, sig: np.ndarray, f: dict[str, np.ndarray], ts: np.ndarray) -> list[bytes]:
        """The bytes of each protocol start (``STARTS[sig[i]]`` of flow ``f[...][i]``, sent at ``ts[i]``)."""
        out = []
        for s, fid, caddr, saddr, sport, t in zip(sig.tolist(), f["fid"].tolist(), f["caddr"].tolist(),
                                                 f["saddr"].tolist(), f["sport"].tolist(), ts.tolist()):
            conn = bench_starts.Conn.canned(sport) if self.canned else bench_starts.Conn(
                fid, struct.pack("<QQ", self.seed, fid), t, _host(caddr), _host(saddr), sport)
            out.append(STARTS[s].build(conn))
        return out

    def truth(self) -> dict[str, np.ndarray]:
        """Per flow started (TRUTH_ATTRS), and ``packets``: how many of its packets were written
        (all of them, but for the flows still open when the capture ends)."""
        assert self.log is not None, "Generator(truth=True) keeps the ground truth"
        t = {a: np.concatenate([part[a] for part in self.log]) for a in TRUTH_ATTRS}
        t["packets"] = t["L"].copy()
        t["packets"][self.slot["fid"]] = self.pos
        return t


def _host(addr: int) -> str:
    """The host name of a generated address (its place in the address plan)."""
    if EXCHANGE <= addr < EXCHANGE + 8:
        return f"exch{addr - EXCHANGE + 1:02d}.corp.example.com"
    if DCS <= addr < DCS + 4:
        return f"dc{addr - DCS + 1:02d}.corp.example.com"
    if CLIENTS <= addr < CLIENTS + 65536:
        return f"ws{addr - CLIENTS:05d}.corp.example.com"
    return f"mx{addr - OUTSIDE:06d}.example.net"


def _put(hdr: np.ndarray, col: int, values: np.ndarray, dtype: str) -> None:
    """Write ``values`` as ``dtype`` bytes into columns col.. of the (n, H) uint8 template."""
    b = np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(values.shape[0], -1)
    hdr[:, col:col + b.shape[1]] = b


def _mac(addr: np.ndarray, oui: int) -> np.ndarray:
    return (np.int64(oui) << 24) | (addr & 0xFFFFFF)


def build_records(*, ts, v6, vlan, udp, src, dst, sport, dport, seq, ack, flags, payload, ipid, c2s,
                  start_at, start_bytes, fill) -> np.ndarray:
    """One uint8 buffer holding the pcap records (16-byte header + frame) of the given packets:
    packet ``start_at[i]`` carries ``start_bytes[i]``, the other payload bytes are random from
    ``fill`` (zero if None)."""
    has_vlan = vlan > 0
    l2 = 14 + 4 * has_vlan
    l3 = np.where(v6, 40, 20)
    l4 = np.where(udp, 8, 20)
    frame = np.maximum(l2 + l3 + l4 + payload, 60)
    rec_len = 16 + frame
    rec_off = np.cumsum(rec_len) - rec_len
    size = int(rec_len.sum())
    buf = np.zeros(size, dtype=np.uint8) if fill is None else np.frombuffer(fill.bytes(size), dtype=np.uint8).copy()
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
    # protocol starts
    if start_bytes:
        l7 = rec_off + 16 + l2 + l3 + l4
        n = np.array([len(b) for b in start_bytes], dtype=np.int64)
        at = np.repeat(l7[start_at] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        buf[at] = np.frombuffer(b"".join(start_bytes), dtype=np.uint8)
    return buf


def pcap_global_header() -> bytes:
    return struct.pack("<IHHiIII", PCAP_MAGIC_US, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)


def generate(out: str | Path, packets: int = 2_000_000, flows: int = 50_000, seed: int = 1,
             pps: float = 50_000.0, chunk: int = 65_536, progress: bool = False, canned: bool = False,
             truth: str | Path | None = None) -> dict:
    """Write the capture (and with ``truth``, the ground truth CSV: ``write_truth``); return
    stats (packets, bytes, flows_started, seconds)."""
    if packets < 0 or flows < 1 or pps <= 1:
        raise ValueError("need packets >= 0, flows >= 1, pps > 1")
    t0 = time.perf_counter()
    gen = Generator(flows, seed, pps, packets=packets, canned=canned, truth=truth is not None)
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
    if truth is not None:
        write_truth(truth, gen.truth(), canned=canned)
    return {
        "packets": done,
        "frame_bytes": frame_bytes,
        "file_bytes": 24 + frame_bytes + 16 * done,
        "flows_started": gen.flows_started,
        "concurrent_flows": flows,
        "duration_s": (gen.t_us - T0_US) / 1e6,
        "seconds": time.perf_counter() - t0,
    }


TRUTH_COLUMNS = ("client", "client_port", "server", "server_port", "transport", "profile", "start1", "start2",
                 "starts_written", "evidence", "cert_subject")


def _address(addr: int, v6: bool) -> str:
    if v6:
        return str(ipaddress.IPv6Address(int.from_bytes(V6_PREFIX.tobytes(), "big") << 32 | addr))
    return str(ipaddress.IPv4Address(addr))


def write_truth(path: str | Path, t: dict[str, np.ndarray], canned: bool = False) -> None:
    """One CSV row per flow, what was written: its endpoints, profile, protocol starts (the
    client's or server's first payload, in the order sent; empty: none), whether every start was
    written (not cut off by the end of the capture), and the evidence those starts prove (the
    starts' own ``evidence`` on the profile's port, '|'-joined; empty: none that names a service),
    and the subject of the certificate its server sent (empty: none)."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRUTH_COLUMNS)
        for fid in range(t["fid"].size):
            sig1, sig2, udp = int(t["sig1"][fid]), int(t["sig2"][fid]), bool(t["udp"][fid])
            sigs = [STARTS[x] for x in (sig1, sig2) if x >= 0]
            last = (0 if udp else 3) + (1 if sig2 >= 0 else 0)  # the packet of the last start
            v6 = bool(t["v6"][fid])
            w.writerow([_address(int(t["caddr"][fid]), v6), int(t["cport"][fid]), _address(int(t["saddr"][fid]), v6),
                        int(t["sport"][fid]), "udp" if udp else "tcp", PROFILES[int(t["prof"][fid])].name,
                        *(st.name for st in sigs), *([""] * (2 - len(sigs))),
                        int(bool(sigs) and t["packets"][fid] > last),
                        "|".join(sorted(_evidence(sigs, PROFILES[int(t["prof"][fid])]))),
                        _cert_subject(sigs, int(t["saddr"][fid]), int(t["sport"][fid]), canned)])


def _cert_subject(starts: list, saddr: int, sport: int, canned: bool) -> str:
    """The subject of the certificate in the flow's starts (as ``bench_starts`` names it)."""
    if not any(st.build is bench_starts.tls_server_hello for st in starts):
        return ""
    return bench_starts.certificate_subject(bench_starts.Conn.canned(sport).server if canned else _host(saddr))


def _evidence(starts: list, profile: Profile) -> set[str]:
    """The evidence values these starts prove on the profile's port."""
    return {("signature" if profile.service_port else "") if st.evidence == "confirms" else st.evidence
            for st in starts} - {""}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output pcap file")
    ap.add_argument("--packets", type=int, default=2_000_000, help="number of packets (2,000,000)")
    ap.add_argument("--flows", type=int, default=50_000, help="concurrent flows (50,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (1)")
    ap.add_argument("--pps", type=float, default=50_000.0,
                    help="mean packets per second of capture time (50,000)")
    ap.add_argument("--canned", action="store_true",
                    help="the same fields in every flow's protocol starts and zero bytes after them")
    ap.add_argument("--truth", metavar="CSV", help="also write what was written per flow (the ground truth)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no progress or summary")
    a = ap.parse_args(argv)
    try:
        st = generate(a.out, a.packets, a.flows, a.seed, a.pps, progress=not a.quiet and sys.stderr.isatty(),
                      canned=a.canned, truth=a.truth)
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
