#!/usr/bin/env python3
"""Build the payload-evidence captures under tests/fixtures/evidence/ (rerunning gives identical bytes).

    python scripts/make_evidence_fixtures.py [--out DIR]

Conversations byte for byte from docs/exchange-wire-facts.md, encoded with scapy by the
helpers of scripts/make_fixtures.py (same network: back-end 10.0.0.10, front-end 10.0.0.20,
clients 10.0.1.x). Expected services are written by hand in tests/test_evidence.py, never
taken from pcapclass's output.
"""

from __future__ import annotations

import argparse
import importlib.util
import struct
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "evidence"


def _load_make_fixtures():
    spec = importlib.util.spec_from_file_location("make_fixtures", REPO / "scripts" / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_fixtures", module)
    spec.loader.exec_module(module)
    return module


mf = _load_make_fixtures()
Conversation, Msg, Net = mf.Conversation, mf.Msg, mf.Net
BACKEND, FRONTEND = mf.BACKEND, mf.FRONTEND
EPM, EMSMDB, NSPI = mf.EPM_UUID, mf.EMSMDB_UUID, mf.NSPI_UUID
SEED = 20060503
T0 = mf.T0_NS + 86_400 * 1_000_000_000  # a day after the main fixtures

#: MS-OXCRPC 3.1.4.5 / docs/exchange-wire-facts.md §6: the opaque context the store will send back
NOTIFY_BLOB = bytes.fromhex("d027270278010900")
CALLBACK_PORT = 1054
DCERPC_ALTER_CONTEXT = 14
DCERPC_RTS = 20


def ept_map_exchange(call: int, port: int) -> list[Msg]:
    """Bind to the endpoint mapper, ept_map for EMSMDB, the reply naming TCP ``port``."""
    return [
        Msg("c", mf.dce_bind(1, EPM, 3, 0)),
        Msg("s", mf.dce_bind_ack(1, "135", 0x1234)),
        Msg("c", mf.ept_map_request(call, EMSMDB, 0, 81)),
        Msg("s", mf.ept_map_response(call, EMSMDB, 0, 81, port, BACKEND)),
    ]




def alter_context(call_id: int, iface: str, major: int, minor: int) -> bytes:
    bind = mf.dce_bind(call_id, iface, major, minor)
    return bind[:2] + bytes([DCERPC_ALTER_CONTEXT]) + bind[3:]


def rts_conn_b1() -> bytes:
    """MS-RPCH 2.2.4.4 CONN/B1: RTS PDU, flags 0, 6 commands."""
    body = struct.pack("<HH", 0, 6)
    body += struct.pack("<II", 6, 1)  # Version 1
    body += struct.pack("<I", 3) + b"\x21" * 16  # Cookie (virtual connection)
    body += struct.pack("<I", 3) + b"\x22" * 16  # Cookie (IN channel)
    body += struct.pack("<II", 4, 0x40000000)  # ChannelLifetime
    body += struct.pack("<II", 5, 300000)  # ClientKeepalive
    body += struct.pack("<I", 12) + b"\x23" * 16  # AssociationGroupId
    return struct.pack("<BBBB4sHHI", 5, 0, DCERPC_RTS, 3, b"\x10\x00\x00\x00", 16 + len(body), 0, 0) + body


def http_request(method: str, target: str, *headers: str) -> bytes:
    return mf.crlf(f"{method} {target} HTTP/1.1", "Host: mail.example.com", *headers, "")


def conversations() -> dict[str, list[Conversation]]:
    """File name -> its conversations, in time order."""
    opaque = bytes(range(0x80, 0x80 + 64)) * 3  # starts no signature pcapclass knows
    reg = mf.dce_request(3, 4, mf.register_push_stub(NOTIFY_BLOB, "10.0.1.31", CALLBACK_PORT, handle=0x11))
    return {
        # EPM reply first, then connections to the port it handed out
        "epm_then_connect.pcap": [
            Conversation("10.0.1.31", 1301, BACKEND, 135, "tcp", ept_map_exchange(2, 1032)),
            Conversation("10.0.1.31", 1302, BACKEND, 1032, "tcp", [Msg("c", opaque), Msg("s", opaque)]),
            # a bind split over three segments (mss 30), then a request
            Conversation("10.0.1.32", 1303, BACKEND, 1032, "tcp", [Msg("c", mf.dce_bind(1, EMSMDB, 0, 81)),
                                                                 Msg("s", mf.dce_bind_ack(1, "1032", 0x55))]),
            # two PDUs in one segment: a bind to NSPI and an alter_context to EMSMDB
            Conversation("10.0.1.33", 1304, BACKEND, 1033, "tcp", [
                Msg("c", mf.dce_bind(1, NSPI, 56, 0) + alter_context(2, EMSMDB, 0, 81)),
                Msg("s", mf.dce_bind_ack(1, "1033", 0x56))]),
        ],
        # the connection to the learned port comes before the EPM reply
        "connect_then_epm.pcap": [
            Conversation("10.0.1.34", 1311, BACKEND, 1040, "tcp", [Msg("c", opaque), Msg("s", opaque)]),
            Conversation("10.0.1.34", 1312, BACKEND, 135, "tcp", ept_map_exchange(2, 1040)),
        ],
        # RPC over HTTP v2: IN channel (CONN/B1 then a bind, after the headers) and OUT channel
        "rpc_over_http.pcap": [
            Conversation("10.0.1.35", 1321, FRONTEND, 80, "tcp", [
                Msg("c", http_request("RPC_IN_DATA", "/rpc/rpcproxy.dll?exch01.corp.example:6001", "Accept: application/rpc",
                                      "User-Agent: MSRPC", "Content-Length: 1073741824")),
                Msg("c", rts_conn_b1()),
                Msg("c", mf.dce_bind(1, EMSMDB, 0, 81)),
            ]),
            Conversation("10.0.1.35", 1322, FRONTEND, 80, "tcp", [
                Msg("c", http_request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?exch01.corp.example:6004", "Accept: application/rpc",
                                      "User-Agent: MSRPC", "Content-Length: 76")),
                Msg("s", mf.crlf("HTTP/1.1 200 Success", "Content-Type: application/rpc", "Content-Length: 1073741824", "")),
            ]),
        ],
        # OWA, ActiveSync Direct Push, OMA
        "owa_activesync.pcap": [
            Conversation("10.0.1.36", 1331, FRONTEND, 80, "tcp", [
                Msg("c", http_request("GET", "/exchange/alice/Inbox/?Cmd=contents")),
                Msg("s", mf.crlf("HTTP/1.1 200 OK", "Content-Length: 0", ""))]),
            Conversation("10.0.1.36", 1332, FRONTEND, 80, "tcp", [
                Msg("c", http_request("POST", "/Microsoft-Server-ActiveSync?User=alice&DeviceId=ABC123&DeviceType=PocketPC&Cmd=Ping",
                                      "Content-Type: application/vnd.ms-sync.wbxml", "Content-Length: 0")),
                Msg("s", mf.crlf("HTTP/1.1 200 OK", "Content-Length: 0", ""))]),
            Conversation("10.0.1.36", 1333, FRONTEND, 80, "tcp", [
                Msg("c", http_request("GET", "/oma/")), Msg("s", mf.crlf("HTTP/1.1 200 OK", "Content-Length: 0", ""))]),
            Conversation("10.0.1.36", 1334, FRONTEND, 80, "tcp", [
                Msg("c", http_request("GET", "/index.html")), Msg("s", mf.crlf("HTTP/1.1 200 OK", "Content-Length: 0", ""))]),
        ],
        # a registration, then the store's UDP datagram carrying exactly its blob
        "registration.pcap": [
            Conversation("10.0.1.31", 1341, BACKEND, 1032, "tcp", [
                Msg("c", mf.dce_bind(1, EMSMDB, 0, 81)), Msg("s", mf.dce_bind_ack(1, "1032", 0x77)),
                Msg("c", reg), Msg("s", mf.dce_response(3, b"\x00" * 8))]),
            Conversation(BACKEND, 3001, "10.0.1.31", CALLBACK_PORT, "udp", [Msg("c", NOTIFY_BLOB)]),
            # same shape to a host with no registration and no RPC session: stays other
            Conversation(BACKEND, 3002, "10.0.1.39", 1055, "udp", [Msg("c", NOTIFY_BLOB)]),
        ],
        # TCP 102 whose first payload is not TPKT; UDP 2883 NOTIFY
        "mismatch_and_notify.pcap": [
            Conversation("10.0.1.37", 1351, BACKEND, 102, "tcp", [Msg("c", http_request("GET", "/")),
                                                                Msg("s", mf.crlf("HTTP/1.0 404 Not Found", ""))]),
            Conversation(FRONTEND, 1352, BACKEND, 2883, "udp", [
                Msg("c", mf.crlf("NOTIFY httpu://fe01.corp.example:2883/ HTTP/1.1", "Subscription-id: 42", "Content-length: 0", ""))]),
        ],
    }


#: conversations segmented at a small MSS (to split a PDU across segments)
SMALL_MSS = {("epm_then_connect.pcap", 2): 30}


def generate() -> dict[str, bytes]:
    net = Net(SEED)
    out: dict[str, bytes] = {}
    for name, convs in conversations().items():
        pkts = []
        for k, conv in enumerate(convs):
            start = T0 + k * 2_000_000_000
            if conv.transport == "tcp":
                pkts += mf.tcp_conversation(net, conv, start, mss=SMALL_MSS.get((name, k), 1460))
            else:
                pkts += mf.udp_conversation(net, conv, start)
        pkts.sort(key=lambda p: p.ts_ns)
        out[name] = mf.pcap_file(mf.records(pkts, mf.eth), mf.LINKTYPE_ETHERNET)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    files = generate()
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    print(f"wrote {len(files)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
