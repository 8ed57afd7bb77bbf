"""The output schemas, said once: column name, pandas dtype, meaning.

The DataFrames, the CSV files and the README tables all come from these lists, so a column
cannot be added to one and forgotten in another (tests/test_schema.py checks the README).
"""

from __future__ import annotations

from typing import NamedTuple


class Column(NamedTuple):
    name: str
    dtype: str
    meaning: str


FLOWS: tuple[Column, ...] = (
    Column("capture", "category", "the input file of the flow's first packet (a ring buffer's next file carries on the flows of the one before)"),
    Column("first_ts", "float64", "first packet, seconds since the Unix epoch (UTC)"),
    Column("last_ts", "float64", "last packet, seconds since the Unix epoch (UTC)"),
    Column("transport", "category", "`tcp`, `udp`, `other` (any other IP protocol, and IP fragments after the first), or for frames with no IP flow `non-ip`, `truncated`, `undecoded`"),
    Column("ip_proto", "Int64", "IP protocol number (empty for frames with no IP flow)"),
    Column("fragment", "bool", "true for the flow of non-first IP fragments (they carry no ports)"),
    Column("client_addr", "string", "the flow's client: the SYN sender, else the side not on a rule port, else the higher port, else the first sender"),
    Column("client_port", "int64", "client's TCP/UDP port (0 when the transport has none)"),
    Column("server_addr", "string", "the flow's server (the other side)"),
    Column("server_port", "int64", "server's TCP/UDP port (0 when the transport has none)"),
    Column("server_name", "category", "the name the client asked for, lower-cased: the SNI (server_name extension, host_name) of a TLS ClientHello, else the `Host` header of an HTTP request (without a `:port`), in the client's first payload (empty when none: printable ASCII names of at most 255 bytes only)"),
    Column("cert_subject", "category", "the subject of the certificate the server showed, as RFC 4514 text with the most specific name first (`CN=mail.example.com,O=Example,C=US`, as OpenSSL and Zeek print it): read from the server's first payload when its ServerHello and Certificate are there in the clear (TLS 1.0-1.2; TLS 1.3 encrypts it; empty when none)"),
    Column("protocol", "category", "what the flow's bytes are, whatever its port and whether or not it is Exchange traffic: `smtp`, `pop3`, `imap`, `nntp`, `ftp`, `http`, `tls`, `ssh`, `dcerpc`, `ncacn_http`, `ldap`, `smb`, `tpkt` (RFC 1006: X.400, MMS, S7comm ...), `rdp`, `redis` (empty when no payload was recognized)"),
    Column("service", "category", "Exchange 2003 service id from the rules, or `other`: a flow is Exchange traffic when one end is an Exchange server or its own payload is Exchange's alone (an Exchange RPC interface, an OWA path ...), whatever its port"),
    Column("evidence", "category", "what decided the service, strongest first: `bind` (a DCE/RPC bind naming the interface), `epm` (an endpoint-mapper reply handed out this port), `rpc-http` (RPC over HTTP), `http` (the request path), `signature` (the protocol's first bytes), `registration` (a new-mail notification matching a registration), `dcerpc` (DCE/RPC calls of a connection bound before the capture), `port` (the rules' port table), `port-mismatch` (the port's service, but the payload is another protocol), `heuristic` (UDP new-mail notification guessed from an RPC session), `none`"),
    Column("detail", "category", "sub-label of the evidence: `owa`, `public-folders`, `admin`, `oma`, `activesync`, `direct-push`, `rpc-http:6001`, `rpc-http:unknown-port`, `ncacn_http:6004`, `bound-elsewhere`, `request opnum 2`, `exchange-smtp`, `exchange-pop3`, the protocol a signature saw, `new-mail-notification`, ... (empty when none)"),
    Column("rpc_interface", "category", "DCE/RPC interface UUID bound on the flow or handed out for its port (empty when none); unknown UUIDs too, to extend rules/rpc_interfaces.toml"),
    Column("rpc_interface_name", "category", "the interface's name from rules/rpc_interfaces.toml (empty when unknown)"),
    Column("direction", "category", "`inbound` (the server is an Exchange server), `outbound` (the client is one) or `other` (neither end is one: always so for service `other`, and for Exchange-only payloads between hosts --server does not name)"),
    Column("packets_c2s", "int64", "packets client → server"),
    Column("bytes_c2s", "int64", "frame bytes (original length on the wire) client → server"),
    Column("packets_s2c", "int64", "packets server → client"),
    Column("bytes_s2c", "int64", "frame bytes server → client"),
    Column("tcp_flags_c2s", "category", "TCP flags the client sent, as letters (`S` SYN, `A` ACK, `P` PSH, `F` FIN, `R` RST, `U` URG, `E` ECE, `C` CWR)"),
    Column("tcp_flags_s2c", "category", "TCP flags the server sent"),
)

#: the flow columns a breakdown can be grouped by (``--by``): the labels, not the counters or times
GROUP_COLUMNS: tuple[str, ...] = tuple(
    c.name for c in FLOWS if not c.name.startswith(("packets_", "bytes_")) and c.name not in ("first_ts", "last_ts")
)

BREAKDOWN: tuple[Column, ...] = (
    Column("service", "string", "service id (as in flows)"),
    Column("direction", "string", "`inbound`, `outbound` or `other`"),
    Column("flows", "int64", "flows of this service and direction"),
    Column("port_mismatch_flows", "int64", "of these, flows whose payload contradicts the port (evidence `port-mismatch`)"),
    Column("packets", "int64", "packets both ways"),
    Column("bytes", "int64", "frame bytes both ways"),
    Column("packets_c2s", "int64", "packets client → server"),
    Column("bytes_c2s", "int64", "frame bytes client → server"),
    Column("packets_s2c", "int64", "packets server → client"),
    Column("bytes_s2c", "int64", "frame bytes server → client"),
    Column("first_ts", "float64", "earliest first packet of these flows (epoch seconds)"),
    Column("last_ts", "float64", "latest last packet of these flows (epoch seconds)"),
)

CAPTURE: tuple[Column, ...] = (
    Column("capture", "string", "the input file (`<stdin>` for standard input)"),
    Column("format", "string", "`pcap` or `pcapng` (empty if the file could not be opened)"),
    Column("packets", "int64", "packets read"),
    Column("bytes", "int64", "frame bytes read (original lengths)"),
    Column("flows", "int64", "flows found (every packet read is in exactly one flow)"),
    Column("first_ts", "float64", "first packet (epoch seconds)"),
    Column("last_ts", "float64", "last packet (epoch seconds)"),
    Column("non_ip_packets", "int64", "frames carrying no IP (ARP, STP, ...): in flows with transport `non-ip`"),
    Column("truncated_packets", "int64", "frames cut short inside an IP, TCP or UDP header: transport `truncated`"),
    Column("undecoded_packets", "int64", "frames of a link type pcapclass does not decode (pcapng interfaces): transport `undecoded`"),
    Column("fragment_packets", "int64", "non-first IP fragments: transport `other`, `fragment` true"),
    Column("caplen_over_snaplen", "int64", "records longer than the file's snaplen: read anyway, as libpcap and tshark do, and counted here"),
    Column("ts_fraction_invalid", "int64", "pcap records whose fractional-second field is a second or more (10^6 µs, 10^9 in nanosecond files): the excess carries into the seconds, as libpcap has it (tshark flags these too)"),
    Column("ts_out_of_range", "int64", "pcapng timestamps past what int64 nanoseconds hold (year 2262; a 64-bit tick count with its high bit set among them): saturated to 2262-04-11"),
    Column("wirelen_below_caplen", "int64", "records whose original length is below their captured length (tshark: \"Frame length is less than captured length\"): `bytes` counts the original length as recorded"),
    Column("wirelen_implausible", "int64", "records whose original length is above 262,144 bytes, which no link carries in one frame (0xffffffff in crafted files): `bytes` counts it as recorded"),
    Column("gzip_trailing_bytes", "int64", "bytes after the end of a gzip-compressed capture's last member that start no new member: ignored, as gzip(1) ignores them, and counted here"),
    Column("hash_collisions", "int64", "packets whose 64-bit flow-key hash matched another flow's (told apart by a second, independent 64-bit hash; expected 0)"),
    Column("flows_exported_early", "int64", "flows pushed out of the table by the flow cap before they went idle"),
    Column("dcerpc_pdus_unparsed", "int64", "DCE/RPC PDUs whose content did not parse: a bind or alter_context whose context list is cut short (once per first payload holding it, and per such PDU of a followed flow), a request or response whose stub does not fit its header"),
    Column("epm_replies_unparsed", "int64", "endpoint-mapper replies to an ept_map or ept_lookup request of a followed flow whose stub did not parse to its end: the towers before the fault are kept"),
    Column("registrations_unparsed", "int64", "EcRRegisterPushNotification requests (not encrypted) whose stub did not parse: no registration kept"),
    Column("rpc_reassembly_abandoned", "int64", "DCE/RPC streams of followed flows given up: not a PDU header where one was due, or more bytes waiting than a PDU holds"),
    Column("followed_flows_evicted", "int64", "followed flows (DCE/RPC connections watched past their first payload) let go by the cap on them (50,000) before they were done"),
    Column("followed_flows_expired", "int64", "followed flows let go when the idle timeout passed with no packet of theirs"),
    Column("epm_entries_evicted", "int64", "endpoint-mapper entries (server, transport, port, interface) pushed out by the table's cap (200,000), the least recently seen first"),
    Column("registrations_evicted", "int64", "push-notification registrations forgotten when their callback was pushed out by the cap (100,000 callbacks)"),
    Column("payloads_forgotten", "int64", "remembered first payloads forgotten at once when their cap was reached (65,536 payloads or 8 MiB): those met again are looked at again"),
    Column("binds_forgotten", "int64", "parsed bind context lists forgotten at once when their cache was full (4,097 binds): those met again are parsed again"),
    Column("datagrams_dropped", "int64", "short UDP datagrams that stopped waiting for their receiver's DCE/RPC request (the new-mail heuristic) because 65,536 waited"),
    Column("drops", "int64", "packets the kernel or the capture process reported dropping (live capture; 0 for files)"),
    Column("servers", "string", "the Exchange servers used for direction, space-separated"),
    Column("servers_inferred", "bool", "true when the servers were inferred from Exchange evidence (no --server; see servers.csv)"),
    Column("partial", "bool", "true when reading stopped early, at a fault or at SIGINT/SIGTERM: the counts cover the packets before it"),
    Column("error", "string", "the fault (file, byte offset, packet number, what was wrong), empty when none"),
)

#: one row per host that showed Exchange evidence (rules/server_evidence.toml), strongest first
SERVERS: tuple[Column, ...] = (
    Column("server", "string", "the host's address"),
    Column("kinds", "string", "the kinds of Exchange evidence it showed, space-separated (`rpc-interface`, `epm-answer`, `rpc-over-http`, `exchange-smtp`, `exchange-greeting`, `exchange-http`, `public-folders-http`, `microsoft-smtp-greeting`)"),
    Column("flows", "int64", "flows (endpoint-mapper answers for `epm-answer`) that showed them, summed over the kinds"),
    Column("score", "int64", "the sum of its kinds' weights"),
    Column("exchange", "bool", "true when the score reaches the threshold: the host is taken for an Exchange server (unless --server names the servers)"),
)

#: ``live``: one row per (service, direction) per interval, counting the traffic seen in that
#: interval (``flows``: those that carried packets in it; first/last seen may precede it)
TIMESERIES: tuple[Column, ...] = (
    Column("interval_start", "float64", "start of the interval (epoch seconds)"),
    Column("interval_end", "float64", "end of the interval (epoch seconds)"),
    *BREAKDOWN,
    Column("drops", "int64", "packets the capture reported dropped during the interval (repeated on each row of it)"),
)


#: epoch-seconds columns, and the ISO 8601 UTC text written beside each in CSV and JSONL
#: (Parquet keeps the epoch alone: a reader's own types convert it)
READABLE_TIMES: dict[str, str] = {
    "first_ts": "first_time",
    "last_ts": "last_time",
    "interval_start": "interval_start_time",
    "interval_end": "interval_end_time",
}


def with_readable_times(columns: tuple[Column, ...]) -> tuple[Column, ...]:
    """``columns`` with each epoch column followed by its ISO 8601 twin: a text file's columns."""
    out: list[Column] = []
    for c in columns:
        out.append(c)
        if c.name in READABLE_TIMES:
            out.append(Column(READABLE_TIMES[c.name], "string", f"`{c.name}` as ISO 8601 UTC, to the microsecond (`2004-05-13T10:17:07.311224Z`; CSV and JSONL only)"))
    return tuple(out)


def names(columns: tuple[Column, ...]) -> list[str]:
    """The column names, in order."""
    return [c.name for c in columns]


def markdown(columns: tuple[Column, ...]) -> str:
    """A README table of the columns."""
    rows = ["| column | type | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{c.name}` | {c.dtype} | {c.meaning} |" for c in columns]
    return "\n".join(rows)
