#!/usr/bin/env python3
"""Build tests/fixtures/split/: a capture made to be cut into 20 pieces (rerunning gives identical bytes).

    python scripts/make_split_capture.py [--out DIR]

Issue 18's three-ways test classifies one capture whole, cut into 20 pieces by ``editcap -c``
and in parallel units, and needs what a cut can break: flows that cross every cut, an
endpoint-mapper reply in one piece and the connection to the port it hands out in a later one,
a push-notification registration in one piece and the store's datagram in a later one, a flow
idle past the flow table's timeout across a cut, one idle less, and a TCP 4-tuple reused after
its close. zeek's real mapi.pcap has the first two but no registration followed by its
notification, hence this synthetic capture. Packets are encoded with scapy by the helpers of
scripts/make_fixtures.py (same network: back-end 10.0.0.10, DC 10.0.0.5, clients 10.0.1.x);
tests/scripts/test_make_split_capture.py proves the properties with editcap and tshark.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

from scapy.layers.dns import DNS, DNSQR

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "split"
NAME = "split_boundaries.pcap"
PIECES = 20


def _load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "scripts" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_fixtures", module)
    spec.loader.exec_module(module)
    return module


mf = _load_make_fixtures()
Conversation, Msg, Net = mf.Conversation, mf.Msg, mf.Net
BACKEND, DC, DNS_SERVER = mf.BACKEND, mf.DC, mf.DNS_SERVER
SEED = 20060504
T0 = mf.T0_NS + 2 * 86_400 * 1_000_000_000  # two days after the main fixtures
S = 1_000_000_000
EMSMDB_OPNUM_ECDORPC = 2
EMSMDB_OPNUM_REGISTER_PUSH = 4
#: the port the endpoint mapper hands out, on which nothing but that answer names the service
EPM_PORT = 1043
#: MS-OXCRPC 3.1.4.5: the opaque context the store sends back in its notification datagram
NOTIFY_BLOB = bytes.fromhex("4e0a1f2e77010900")
CALLBACK_PORT = 1055
#: the flow table's idle timeout (pcapclass.flows.FlowTable), which the two DNS flows straddle
IDLE_TIMEOUT_S = 120

#: what happens when, as (seconds after T0, description) rows for SOURCES.md
EVENTS = [
    (0, "EMSMDB session 10.0.1.41:1301 -> 10.0.0.10:1032 (bind, then an EcDoRpc call about every 3 s to the end)"),
    (1, "LDAP session 10.0.1.41:1302 -> 10.0.0.5:389 (a search about every 7 s to the end)"),
    (100, f"EPM bind + ept_map from 10.0.1.42:1401: EMSMDB is at TCP {EPM_PORT}"),
    (160, f"10.0.1.42:1402 -> 10.0.0.10:{EPM_PORT}, opaque bytes: only the EPM reply names its service"),
    (200, "DNS query/answer 10.0.1.45:1405 <-> 10.0.0.53:53"),
    (250, f"10.0.1.43:1403 -> 10.0.0.10:1032: EMSMDB bind, EcRRegisterPushNotification (callback 10.0.1.43:{CALLBACK_PORT}, blob {NOTIFY_BLOB.hex()})"),
    (310, f"the store's datagram 10.0.0.10:3002 -> 10.0.1.43:{CALLBACK_PORT} carrying the blob"),
    (350, f"DNS again on 10.0.1.45:1405 <-> 10.0.0.53:53, 150 s later: past the {IDLE_TIMEOUT_S} s idle timeout"),
    (380, "IMAP session 10.0.1.44:1404 -> 10.0.0.10:143, closed"),
    (420, "DNS query/answer 10.0.1.46:1406 <-> 10.0.0.53:53"),
    (440, "IMAP again on the same 4-tuple 10.0.1.44:1404 -> 10.0.0.10:143 (a new connection)"),
    (510, f"DNS again on 10.0.1.46:1406 <-> 10.0.0.53:53, 90 s later: within the {IDLE_TIMEOUT_S} s idle timeout"),
]




def ldap_search(msgid: int) -> bytes:
    """An RFC 4511 searchRequest for objectClass=* under the domain."""
    return mf.ldap_msg(msgid, mf.ber(0x63, mf.ber(0x04, b"dc=corp,dc=example") + mf.ber(0x0A, b"\x02") + mf.ber(0x0A, b"\x00")
                                      + mf.ber_int(0x02, 0) + mf.ber_int(0x02, 0) + mf.ber(0x01, b"\x00")
                                      + mf.ber(0x87, b"objectClass") + mf.ber(0x30, b"")))  # fmt: skip


def ldap_done(msgid: int) -> bytes:
    return mf.ldap_msg(msgid, mf.ber(0x65, mf.ber(0x0A, b"\x00") + mf.ber(0x04, b"") + mf.ber(0x04, b"")))


def dns(qid: int, name: str) -> list[Msg]:
    return [Msg("c", bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name)))),
            Msg("s", bytes(DNS(id=qid, qr=1, rd=1, ra=1, qd=DNSQR(qname=name))))]  # fmt: skip


def conversations(net: Net) -> list[tuple[int, Conversation]]:
    """(start in seconds after T0, conversation), in the order of EVENTS."""
    rng = net.rng
    rpc = [Msg("c", mf.dce_bind(1, mf.EMSMDB_UUID, 0, 81)), Msg("s", mf.dce_bind_ack(1, "1032", 0x4141))]
    for call in range(2, 202):
        rpc.append(Msg("c", mf.dce_request(call, EMSMDB_OPNUM_ECDORPC, rng.randbytes(rng.randint(80, 400))), think_us=rng.randint(2_000_000, 4_000_000)))
        rpc.append(Msg("s", mf.dce_response(call, rng.randbytes(rng.randint(100, 3000)))))
    ldap = [Msg("c", ldap_search(k), think_us=rng.randint(5_000_000, 9_000_000)) if side == "c" else Msg("s", ldap_done(k))
            for k in range(1, 86) for side in "cs"]  # fmt: skip
    opaque = bytes(range(0x80, 0x80 + 64)) * 3  # starts no signature pcapclass knows
    reg = mf.dce_request(2, EMSMDB_OPNUM_REGISTER_PUSH, mf.register_push_stub(NOTIFY_BLOB, "10.0.1.43", CALLBACK_PORT, handle=0x22))
    epm = [Msg("c", mf.dce_bind(1, mf.EPM_UUID, 3, 0)), Msg("s", mf.dce_bind_ack(1, "135", 0x1234)),
           Msg("c", mf.ept_map_request(2, mf.EMSMDB_UUID, 0, 81)),
           Msg("s", mf.ept_map_response(2, mf.EMSMDB_UUID, 0, 81, EPM_PORT, BACKEND))]  # fmt: skip
    imap = mf.imap_session("exch01.corp.example")
    convs = [
        Conversation("10.0.1.41", 1301, BACKEND, 1032, "tcp", rpc),
        Conversation("10.0.1.41", 1302, DC, 389, "tcp", ldap),
        Conversation("10.0.1.42", 1401, BACKEND, 135, "tcp", epm),
        Conversation("10.0.1.42", 1402, BACKEND, EPM_PORT, "tcp", [Msg("c", opaque), Msg("s", opaque)]),
        Conversation("10.0.1.45", 1405, DNS_SERVER, 53, "udp", dns(0x4545, "exch01.corp.example")),
        Conversation("10.0.1.43", 1403, BACKEND, 1032, "tcp", [rpc[0], rpc[1], Msg("c", reg), Msg("s", mf.dce_response(2, b"\x00" * 8))]),
        Conversation(BACKEND, 3002, "10.0.1.43", CALLBACK_PORT, "udp", [Msg("c", NOTIFY_BLOB)]),
        Conversation("10.0.1.45", 1405, DNS_SERVER, 53, "udp", dns(0x4546, "dc01.corp.example")),
        Conversation("10.0.1.44", 1404, BACKEND, 143, "tcp", imap),
        Conversation("10.0.1.46", 1406, DNS_SERVER, 53, "udp", dns(0x4646, "exch01.corp.example")),
        Conversation("10.0.1.44", 1404, BACKEND, 143, "tcp", imap),
        Conversation("10.0.1.46", 1406, DNS_SERVER, 53, "udp", dns(0x4647, "dc01.corp.example")),
    ]
    return [(at, conv) for (at, _), conv in zip(EVENTS, convs, strict=True)]


def generate() -> tuple[bytes, str]:
    """The capture's bytes and its SOURCES.md."""
    net = Net(SEED)
    pkts = [p for at, conv in conversations(net) for p in mf.build(net, conv, T0 + at * S)]
    pkts.sort(key=lambda p: p.ts_ns)
    capture = mf.pcap_file(mf.records(pkts, mf.eth), mf.LINKTYPE_ETHERNET)
    per_piece = math.ceil(len(pkts) / PIECES)
    rows = "\n".join(f"| {at} | {what} |" for at, what in EVENTS)
    sources = f"""# A capture to cut into pieces (the test that parallel runs agree with one process)

Generated by `python scripts/make_split_capture.py` -- do not edit; change the script and rerun it
(`tests/scripts/test_make_split_capture.py` checks the bytes and, with editcap and tshark, the
properties below). Packets are encoded with scapy by the helpers of `scripts/make_fixtures.py`;
times start at 2006-05-04 09:00:00 UTC.

`{NAME}`: {len(pkts)} packets, Ethernet, microsecond pcap (little-endian), {pkts[-1].ts_ns // S - T0 // S} s long.
`editcap -c {per_piece}` cuts it into {PIECES} pieces, and then: the EMSMDB and LDAP sessions have
packets in every piece; the endpoint-mapper reply and the connection to the port it hands out are
in different pieces, as are the registration and the store's datagram; the DNS flows straddle
cuts, one idle past the {IDLE_TIMEOUT_S} s flow timeout, one not; the IMAP 4-tuple opens again in a
later piece after its close. zeek's real mapi.pcap has an endpoint-mapper reply and its connection,
but no registration followed by its notification.

| seconds after start | what |
| --- | --- |
{rows}
"""
    return capture, sources


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    capture, sources = generate()
    (args.out / NAME).write_bytes(capture)
    (args.out / "SOURCES.md").write_text(sources)
    print(f"wrote {args.out / NAME} and SOURCES.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
