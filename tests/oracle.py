"""tshark as the independent oracle: per-packet fields and per-conversation packet/byte sums.

Design
------
One ``tshark -n -r FILE -T fields`` run per capture (cached) gives, per frame: number, link
encapsulation, interface, epoch time (as text, parsed to exact integer nanoseconds), wire and
captured length, ``frame.protocols`` and the address/port fields. Reassembly is off
(``ip.defragment``, ``ipv6.defragment``, TCP desegmentation), so every frame is counted once,
fragments included.

Tunnels and ICMP errors make tshark emit several values per field (outer, then inner headers).
The *outermost* IP header decides everything: ``frame.protocols`` tells whether it is ``ip`` or
``ipv6`` and which protocol follows it (IPv6 extension headers skipped), and the first value of
the matching address field is taken. A frame whose outermost transport is not TCP/UDP -- ICMP
errors that quote a TCP/UDP header included -- is transport ``other`` and is in no TCP/UDP
conversation (this is also what a one-layer flow table sees). A non-first IPv4/IPv6 fragment
has no ports and is transport ``other``.

Records that are not packets (pcapng Custom Blocks, which tshark 4 lists as frames without an
encapsulation) are dropped. Simple Packet Blocks have no timestamp: ``ts_ns`` is None. ``ts_ns`` holds exact Python ints
(a writer's garbage timestamp can exceed the int64 nanosecond range).

Conversations are keyed like ``tshark -z conv,tcp``: transport plus the unordered pair of
(address, port) endpoints. Addresses are normalised with :mod:`ipaddress` so they compare
equal to ``str(ipaddress.ip_address(...))`` as pcapclass prints them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

FIELDS = [
    "frame.number",
    "frame.encap_type",
    "frame.interface_id",
    "frame.time_epoch",
    "frame.len",
    "frame.cap_len",
    "frame.protocols",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "udp.srcport",
    "udp.dstport",
]

PREFERENCES = [
    "ip.defragment:FALSE",
    "ipv6.defragment:FALSE",
    "tcp.desegment_tcp_streams:FALSE",
    "tcp.analyze_sequence_numbers:FALSE",
]

#: entries of frame.protocols that sit between an IPv6 header and its transport
_IPV6_EXTENSIONS = ("ipv6.", "ah")

#: Wireshark's WTAP_ENCAP numbers (frame.encap_type, wireshark 4.0 wiretap/wtap.h) for the
#: LINKTYPE_ values pcapclass reads; LINKTYPE_RAW and the BSD DLT_RAW numbers all map to RAW_IP.
WTAP_ENCAP_BY_LINKTYPE = {
    0: 15,  # NULL
    1: 1,  # ETHERNET
    12: 7,  # RAW_IP
    14: 7,
    101: 7,
    108: 15,  # LOOP -> NULL handling in wiretap
    113: 25,  # SLL
    228: 129,  # RAW_IP4
    229: 130,  # RAW_IP6
    276: 210,  # SLL2
    274: 198,  # ETHERNET_MPACKET
}


class TsharkError(RuntimeError):
    """tshark is missing or could not read a capture."""


def tshark_path() -> str:
    path = shutil.which("tshark")
    if path is None:
        raise TsharkError(
            "tshark is not installed; the tests use it as the independent oracle. "
            "Install it (Debian/Ubuntu: apt-get install -y tshark) and rerun."
        )
    return path


@dataclass(frozen=True)
class TsharkRun:
    rc: int
    stdout: str
    stderr: str


def _run(path: str, args: list[str]) -> TsharkRun:
    cmd = [tshark_path(), "-n", "-r", path]
    for pref in PREFERENCES:
        cmd += ["-o", pref]
    cmd += args
    env = dict(os.environ, LC_ALL="C")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, errors="replace", check=False)
    stderr = "\n".join(line for line in proc.stderr.splitlines() if "Running as user" not in line)
    return TsharkRun(proc.returncode, proc.stdout, stderr)


def parse_epoch_ns(text: str) -> int | None:
    """``'1146560400.000607000'`` -> 1146560400000607000 exactly (no float rounding)."""
    if not text:
        return None
    neg = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    ns = int(whole or 0) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if neg else ns


def _first(value: str) -> str:
    return value.split(",", 1)[0] if value else ""


def _outer(protocols: str) -> tuple[str | None, str | None]:
    """(``'ip'``/``'ipv6'``/None, the protocol after it) for the outermost IP header."""
    parts = protocols.split(":")
    for i, p in enumerate(parts):
        if p in ("ip", "ipv6"):
            j = i + 1
            if p == "ipv6":
                while j < len(parts) and parts[j].startswith(_IPV6_EXTENSIONS):
                    j += 1
            return p, (parts[j] if j < len(parts) else None)
    return None, None


def _key(cache_path: str | os.PathLike[str]) -> tuple[str, int, int]:
    st = os.stat(cache_path)
    return os.fspath(cache_path), st.st_size, st.st_mtime_ns


def tshark_packets(path: str | os.PathLike[str], *, allow_errors: bool = False) -> pd.DataFrame:
    """One row per packet tshark reads from ``path`` (a copy of the cached frame)."""
    return _packets(*_key(path), allow_errors).copy()


@functools.lru_cache(maxsize=256)
def _packets(path: str, _size: int, _mtime: int, allow_errors: bool) -> pd.DataFrame:
    args = ["-T", "fields", "-E", "header=n", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in FIELDS:
        args += ["-e", f]
    run = _run(path, args)
    if run.rc != 0 and not allow_errors:
        raise TsharkError(f"tshark failed on {path} (exit {run.rc}): {run.stderr.strip()}")
    rows = []
    for line in run.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) != len(FIELDS):
            raise TsharkError(f"unexpected tshark line for {path}: {line!r}")
        f = dict(zip(FIELDS, cols))
        if not f["frame.encap_type"]:
            continue  # not a packet (e.g. a pcapng Custom Block)
        l3, nxt = _outer(f["frame.protocols"])
        transport: str | None = None
        src = dst = None
        sport = dport = None
        if l3 is not None:
            src = _first(f["ip.src" if l3 == "ip" else "ipv6.src"])
            dst = _first(f["ip.dst" if l3 == "ip" else "ipv6.dst"])
            transport = "other"
            if nxt in ("tcp", "udp"):
                sp, dp = _first(f[f"{nxt}.srcport"]), _first(f[f"{nxt}.dstport"])
                if sp and dp:
                    transport, sport, dport = nxt, int(sp), int(dp)
            if src:
                src = str(ipaddress.ip_address(src))
            if dst:
                dst = str(ipaddress.ip_address(dst))
        rows.append(
            {
                "number": int(f["frame.number"]),
                "encap": int(f["frame.encap_type"]),
                "interface": int(f["frame.interface_id"]) if f["frame.interface_id"] else None,
                "ts_ns": parse_epoch_ns(f["frame.time_epoch"]),
                "wirelen": int(f["frame.len"]),
                "caplen": int(f["frame.cap_len"]),
                "protocols": f["frame.protocols"],
                "l3": {"ip": "ipv4", "ipv6": "ipv6"}.get(l3 or "", None),
                "transport": transport,
                "src": src,
                "dst": dst,
                "sport": sport,
                "dport": dport,
            }
        )
    columns = ["number", "encap", "interface", "ts_ns", "wirelen", "caplen", "protocols", "l3", "transport", "src", "dst", "sport", "dport"]
    data = {c: [r[c] for r in rows] for c in columns}
    df = pd.DataFrame({c: pd.Series(data[c], dtype=object) for c in columns})
    for col in ("number", "encap", "wirelen", "caplen"):
        df[col] = df[col].astype("int64")
    for col in ("interface", "sport", "dport"):
        df[col] = pd.array(data[col], dtype="Int64")
    # ts_ns stays an object column of exact Python ints (None when the record has no time):
    # a writer's garbage timestamp can exceed int64 nanoseconds, and the oracle must not wrap
    # it, nor round it through float64.
    return df


def tshark_packet_count(path: str | os.PathLike[str], *, allow_errors: bool = False) -> int:
    """How many packets tshark reads from ``path``."""
    return len(_packets(*_key(path), allow_errors))


def endpoint_order(addr: str, port: int) -> tuple[int, int, int]:
    ip = ipaddress.ip_address(addr)
    return (ip.version, int(ip), port)


CONVERSATION_COLUMNS = [
    "transport",
    "addr_a",
    "port_a",
    "addr_b",
    "port_b",
    "packets_a2b",
    "bytes_a2b",
    "packets_b2a",
    "bytes_b2a",
    "packets",
    "bytes",
    "first_ts_ns",
    "last_ts_ns",
]


def tshark_conversations(path: str | os.PathLike[str], *, allow_errors: bool = False) -> pd.DataFrame:
    """Per bidirectional TCP/UDP conversation: packets and frame bytes per side and in total.

    Endpoint A is the lower (IP version, address, port) of the two, so the frame does not
    depend on who spoke first; ``*_a2b`` counts what A sent.
    """
    pk = _packets(*_key(path), allow_errors)
    pk = pk[pk["transport"].isin(["tcp", "udp"])]
    acc: dict[tuple, list] = {}
    for t, src, sport, dst, dport, wl, ts in zip(
        pk["transport"], pk["src"], pk["sport"], pk["dst"], pk["dport"], pk["wirelen"], pk["ts_ns"]
    ):
        a, b = (src, int(sport)), (dst, int(dport))
        forward = endpoint_order(*a) <= endpoint_order(*b)
        lo, hi = (a, b) if forward else (b, a)
        key = (t, lo[0], lo[1], hi[0], hi[1])
        rec = acc.setdefault(key, [0, 0, 0, 0, None, None])
        if forward:
            rec[0] += 1
            rec[1] += int(wl)
        else:
            rec[2] += 1
            rec[3] += int(wl)
        if ts is not None:
            rec[4] = int(ts) if rec[4] is None else min(rec[4], int(ts))
            rec[5] = int(ts) if rec[5] is None else max(rec[5], int(ts))
    rows = [
        [*key, r[0], r[1], r[2], r[3], r[0] + r[2], r[1] + r[3], r[4], r[5]]
        for key, r in acc.items()
    ]
    df = pd.DataFrame({c: pd.Series([r[i] for r in rows], dtype=object) for i, c in enumerate(CONVERSATION_COLUMNS)})
    for col in CONVERSATION_COLUMNS[5:11]:
        df[col] = df[col].astype("int64")
    for col in ("port_a", "port_b"):
        df[col] = df[col].astype("int64")
    return df.sort_values(["transport", "addr_a", "port_a", "addr_b", "port_b"]).reset_index(drop=True)


# -- tshark's own conversation table, for cross-checking the aggregation above --------------------

_CONV_LINE = re.compile(
    r"^(?P<a>\S+):(?P<pa>\d+)\s+<->\s+(?P<b>\S+):(?P<pb>\d+)\s+"
    r"(?P<f1>\d+)\s+(?P<b1>[\d.]+)\s+(?P<u1>bytes|kB|MB|GB)\s+"
    r"(?P<f2>\d+)\s+(?P<b2>[\d.]+)\s+(?P<u2>bytes|kB|MB|GB)\s+"
    r"(?P<f3>\d+)\s+(?P<b3>[\d.]+)\s+(?P<u3>bytes|kB|MB|GB)\s"
)
_UNIT = {"bytes": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3}


def tshark_conv_table(path: str | os.PathLike[str], transport: str) -> pd.DataFrame:
    """``tshark -q -z conv,<transport>`` parsed: frames exact; bytes exact when printed in bytes.

    ``bytes_*_unit`` holds the printed unit (1 when exact, 1000 for kB, ...): tshark 4.0 rounds
    larger values to kB/MB, so callers compare those within one unit.
    """
    run = _run(os.fspath(path), ["-q", "-z", f"conv,{transport}"])
    if run.rc != 0:
        raise TsharkError(f"tshark -z conv,{transport} failed on {path}: {run.stderr.strip()}")
    rows = []
    for line in run.stdout.splitlines():
        m = _CONV_LINE.match(line)
        if not m:
            continue
        a, b = str(ipaddress.ip_address(m["a"])), str(ipaddress.ip_address(m["b"]))
        # tshark prints "<-" (frames B sent to A) before "->" (frames A sent to B)
        rows.append(
            {
                "transport": transport,
                "addr_a": a,
                "port_a": int(m["pa"]),
                "addr_b": b,
                "port_b": int(m["pb"]),
                "packets_b2a": int(m["f1"]),
                "bytes_b2a": float(m["b1"]) * _UNIT[m["u1"]],
                "bytes_b2a_unit": _UNIT[m["u1"]],
                "packets_a2b": int(m["f2"]),
                "bytes_a2b": float(m["b2"]) * _UNIT[m["u2"]],
                "bytes_a2b_unit": _UNIT[m["u2"]],
                "packets": int(m["f3"]),
                "bytes": float(m["b3"]) * _UNIT[m["u3"]],
                "bytes_unit": _UNIT[m["u3"]],
            }
        )
    return pd.DataFrame(rows)


def capture_files(root: Path) -> list[Path]:
    """Every capture under ``root`` (pcap, pcapng, cap, gz), sorted."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and re.search(r"\.(pcap|pcapng|cap)(\.gz)?$", p.name):
            out.append(p)
    return out
