"""The payload stage: what the first bytes of each flow say about its Exchange service.

``EvidenceCollector.feed`` sees every decoded batch (with its flow keys) and looks at payloads
only where vectorized prefilters point: the first payload of each flow in each direction, and
the packets of the few flows it follows further (DCE/RPC connections that may still reveal an
endpoint-mapper reply or a push-notification registration, RPC over HTTP IN channels). A first
payload is looked at in compiled code (``SignatureTables.facts``): most are decided by their
facts alone (labels, greeting flags, port, sender), from a table filled once per distinct
combination; the few that need parsing (binds, HTTP requests, EHLO replies) are inspected in
Python once per distinct deciding bytes (``SignatureTables.deciding_bytes``), their verdicts
remembered with those bytes. Either way verdicts are spread over the packets with numpy.
What it learns is kept as small tables keyed by the flow key (``hash``, ``check``) and a
timestamp, so that ``classify`` can attach it to the right flow at the end — whichever read
chunk, and whichever order, the pieces came in:

* ``rows``: per flow key, a piece of evidence (``bind``, ``epm``, ``rpc-http``, ``http``,
  ``signature``, ``registration``, ``port-mismatch``, or interface-only), with service, detail
  and interface;
* ``epm``: (server address, transport, port) → interface learned from endpoint-mapper replies,
  with the interval it was seen in (it applies ``epm_expiry`` either side).

Learned tables are bounded: tracked flows expire after the idle timeout and are capped,
endpoint-mapper entries are merged per (server, transport, port, interface), registrations
and remembered payloads are capped.
"""

from __future__ import annotations

import array
import ipaddress
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from ._firstlook import (
    LOOK,
    QUIET,
    WaitingFlows,
    first_looks,
    follow_scan,
    later_starts,
    look_context,
    same_payloads,
)
from ._flowhash import KeyIndex
from ._identify import (
    AS_CLIENT_SHIFT,
    AS_SERVER_SHIFT,
    DCERPC_PLAIN,
    EHLO_MARKERS,
    LABEL_MASK,
    LABEL_NAMES,
    LONG,
    NOTIFY,
    REQUEST_LINE,
    SHARED_MASK,
    SHARED_NAMES,
    SHARED_SHIFT,
    SMTP_BANNER,
    PathRules,
    SignatureTables,
    same_names,
    server_names,
)
from ._identify import EXCHANGE_GREETING as GREETS_EXCHANGE
from .decode import Packets
from .flows import FlowKeys, Records
from .notification_timing import NotificationTiming
from .payload_memo import PayloadMemo
from .protocols import signatures as sig
from .protocols.dcerpc import (
    AUTH_LEVEL_PKT_PRIVACY,
    EMSMDB_INTERFACE,
    EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION,
    EPM_INTERFACE,
    EPM_OPNUM_LOOKUP,
    EPM_OPNUM_MAP,
    NCACN_HTTP_GREETING,
    PFC_FIRST_FRAG,
    PFC_LAST_FRAG,
    PTYPE_ALTER_CONTEXT,
    PTYPE_BIND,
    PTYPE_MAX,
    PTYPE_REQUEST,
    PTYPE_RESPONSE,
    RPC_VERS_MINORS,
    PduReassembler,
    looks_like_dcerpc,
    parse_bind,
    parse_epm_lookup_response,
    parse_epm_map_response,
    parse_header,
    parse_register_push_notification,
    parse_request,
    parse_response,
)
from .protocols.http import (
    MAX_METHOD_LEN,
    MAX_REQUEST_LINE,
    HttpPathTable,
    classify_request,
    parse_request_line,
)
from .protocols.proofs import (
    EXCHANGE_GREETING,
    EXCHANGE_HTTP,
    EXCHANGE_SMTP,
    MICROSOFT_SMTP_GREETING,
    RPC_INTERFACE,
    RPC_OVER_HTTP,
)
from .protocols.signatures import (
    EXPECTED_PROTOCOLS,
    exchange_smtp_markers,
    label_contradicts_port,
)
from .sources.batch import PacketBatch
from .tables.http_paths import load_http_paths
from .tables.interfaces import Interface, load_interfaces

IPPROTO_TCP, IPPROTO_UDP = 6, 17

#: evidence values a flow can carry, strongest first (classify picks the first that applies)
DECISIVE = ("bind", "epm", "rpc-http", "http", "signature", "registration", "dcerpc")
EVIDENCE_VALUES = (*DECISIVE, "port", "port-mismatch", "heuristic", "none")
#: a row that names an interface (unknown UUID, or one shared with non-Exchange software) only
INTERFACE_ONLY = "interface"
#: a row that names only the protocol its payload starts (see ``signatures.identify``)
PROTOCOL_ONLY = "protocol"
#: the PDU types of calls (a connection's traffic once bound)
_CALL_PTYPES = np.array([PTYPE_REQUEST, PTYPE_RESPONSE], dtype=np.uint8)
#: a first payload that is one whole DCE/RPC call PDU: the connection was bound before the
#: capture began if the other direction's first payload is one too (classify makes it ``dcerpc``)
ONE_CALL = "dcerpc-call"
MISMATCH = "port-mismatch"
#: a row that names the server a client asked for (TLS SNI, HTTP ``Host``): the detail is the
#: name, lower-cased; it decides nothing else, so it ranks after every other kind
SERVER_NAME = "server-name"
RANK = {kind: i for i, kind in enumerate((*DECISIVE, MISMATCH, INTERFACE_ONLY, ONE_CALL, PROTOCOL_ONLY, "notification-timing",
                                          SERVER_NAME))}  # fmt: skip

DEFAULT_EPM_EXPIRY = 300.0
#: TCP/UDP port of Direct Push (docs/exchange-wire-facts.md §6)
DIRECT_PUSH_PORT = 2883
#: what a Direct Push request starts with (docs/exchange-wire-facts.md §6)
DIRECT_PUSH_NOTIFY = (b"NOTIFY ", b"NOTIFY\t")
#: endpoint-mapper ports (TCP 135; 593 for ncacn_http)
EPM_PORTS = (135, 593)
#: protocols a text signature names whatever the port (others only confirm or contradict one)
SIGNATURE_SERVICES = {"smtp": "smtp", "pop3": "pop3", "imap": "imap4", "nntp": "nntp"}
#: the protocol column's name for DCE/RPC (binds, endpoint-mapper matches, registrations)
DCERPC = "dcerpc"
#: the Microsoft SMTP service's greeting (IIS; Exchange 2003 runs on it)
MICROSOFT_SMTP_BANNER = b"MICROSOFT ESMTP MAIL SERVICE"

#: signatures.py's byte strings and sets, for the compiled first look (``SignatureTables.facts``)
SIGNATURE_TABLES = SignatureTables(
    smtp_prefixes=sig.SMTP_SERVER_PREFIXES, smtp_words=sig.SMTP_GREETING_WORDS, ftp_words=sig.FTP_GREETING_WORDS,
    smtp_commands=sig.SMTP_CLIENT_COMMANDS, pop3_prefixes=sig.POP3_SERVER_PREFIXES, pop3_shared=(sig.POP3_SHARED_PREFIX,),
    imap_prefixes=sig.IMAP_SERVER_PREFIXES, nntp_prefixes=sig.NNTP_SERVER_PREFIXES, nntp_words=sig.NNTP_GREETING_WORDS,
    http_status=(sig.HTTP_STATUS_PREFIX,), ssh=(sig.SSH_PREFIX,), resp_array=(sig.RESP_ARRAY,),
    exchange_greeting=(sig.EXCHANGE_GREETING.upper(),), smtp_banner=(MICROSOFT_SMTP_BANNER,), ncacn_http=(NCACN_HTTP_GREETING,),
    ehlo_keywords=tuple(k.encode("ascii") for k in sorted(sig.EXCHANGE_SMTP_KEYWORDS)), smb_ids=sig.SMB_PROTOCOL_IDS,
    rdp_cookies=(sig.RDP_COOKIE, sig.RDP_ROUTING_TOKEN), cotp_codes=sig.COTP_CODES, rdp_neg_types=sig.RDP_NEG_TYPES,
    rdp_neg_failure=sig.RDP_NEG_FAILURE, ldap_ops=sig.LDAP_OPS, ldap_primitive_ops=sig.LDAP_PRIMITIVE_OPS,
    rpc_minors=RPC_VERS_MINORS, ptype_max=PTYPE_MAX, bind_ptypes=(PTYPE_BIND, PTYPE_ALTER_CONTEXT), notify=DIRECT_PUSH_NOTIFY,
    greeting_line=sig.GREETING_LINE, min_decisive=sig.MIN_DECISIVE_PAYLOAD,
    max_request_line=MAX_REQUEST_LINE, max_method=MAX_METHOD_LEN,
)  # fmt: skip
_DCERPC_CODE, _NCACN_HTTP_CODE, _TLS_CODE = LABEL_NAMES.index("dcerpc"), LABEL_NAMES.index("ncacn_http"), LABEL_NAMES.index("tls")

#: packets a followed flow is looked at before it is let go
MAX_TRACKED_PACKETS = 48
#: followed flows held at most (the least recently seen go first)
MAX_TRACKED_FLOWS = 50_000
#: registrations held at most
MAX_REGISTRATIONS = 100_000
#: endpoint-mapper entries held at most
MAX_EPM_ENTRIES = 200_000
#: parts of held rows ``take`` goes through one by one before it joins them into one (many
#: small parts cost a numpy call each; one large one costs a copy of the rows held)
_TAKE_PARTS = 16
#: slots of the table that finds packets of followed flows without a Python loop (a count of
#: followed flows per slot of their hash's low bits, so a flow no longer followed leaves at once).
#: 128 KiB stays in a core's L2 cache, where every payload packet of a batch probes it: on the
#: bench, follow_scan took 17 ms instead of 26-28 ms with 1 << 20 slots; an unrelated flow that
#: shares a slot costs a look that finds no followed flow (156 such looks instead of 8)
_TRACK_SLOTS = 1 << 16

_NO_PORT = -1
#: PDU types whose content following uses (bind, alter_context, request, response), by ptype
_PTYPE_USED = np.zeros(PTYPE_MAX + 1, dtype=bool)
_PTYPE_USED[[PTYPE_BIND, PTYPE_ALTER_CONTEXT, PTYPE_REQUEST, PTYPE_RESPONSE]] = True
_U64 = (1 << 64) - 1


def _expected_port_table() -> npt.NDArray[np.bool_]:
    table = np.zeros(65536, dtype=bool)
    table[:1024] = True
    table[list(EXPECTED_PROTOCOLS)] = True
    table[DIRECT_PUSH_PORT] = True
    return table


#: ports that name a service (well-known, or one the port expectations list); others are ephemeral
_SERVICE_PORT = _expected_port_table().view(np.uint8)
_MUST_CLIENT = np.zeros(65536, dtype=np.uint8)
_MUST_SERVER = np.zeros(65536, dtype=np.uint8)
for _port, _exp in EXPECTED_PROTOCOLS.items():
    _MUST_CLIENT[_port] = _exp.client_must_match
    _MUST_SERVER[_port] = _exp.server_must_match
#: a first payload shorter than this is too short for an unknown one to contradict a port
_MIN_DECISIVE = 8


@dataclass
class Evidence:
    """What the payload stage learned, ready for ``classify``."""

    #: one row per piece of evidence, in the order found: hash, check (uint64), ts_ns, from_a
    #: (the sender was endpoint A), vid (its verdict: a row of ``verdicts``) and kind (the
    #: verdict's kind, categorical)
    rows: pd.DataFrame
    #: the distinct verdicts, indexed by vid: kind, service ('' = the port's), detail,
    #: rpc_interface, rpc_interface_name, server_is_sender (1 / 0 / -1 either),
    #: client_is_sender (registration rows: 1), protocol (what the bytes are, '' unknown) and
    #: proof (the kind of Exchange server evidence it is, servers.KINDS, '' none)
    verdicts: pd.DataFrame
    #: server_hi, server_lo, transport ('tcp'/'udp'), port, first_ns, last_ns, service,
    #: rpc_interface, rpc_interface_name, exchange (the interface is Exchange's alone)
    epm: pd.DataFrame
    epm_expiry_ns: int

    @staticmethod
    def empty(epm_expiry: float = DEFAULT_EPM_EXPIRY) -> Evidence:
        return Evidence(_rows_frame([]), _verdict_frame([]), _epm_frame([]), int(epm_expiry * 1e9))


VERDICT_COLUMNS = ("kind", "service", "detail", "rpc_interface", "rpc_interface_name", "server_is_sender",
                   "client_is_sender", "protocol", "proof")  # fmt: skip
EPM_COLUMNS = ("server_hi", "server_lo", "transport", "port", "first_ns", "last_ns", "service",
               "rpc_interface", "rpc_interface_name", "exchange")  # fmt: skip


def _rows_frame(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if parts:
        return pd.concat(parts, ignore_index=True)
    return pd.DataFrame({
        "hash": np.zeros(0, np.uint64), "check": np.zeros(0, np.uint64), "ts_ns": np.zeros(0, np.int64),
        "from_a": np.zeros(0, bool), "vid": np.zeros(0, np.int32), "kind": pd.Categorical([]),
    })  # fmt: skip


def _verdict_frame(table: list[tuple[str, str, str, str, str, int, int, str, str]]) -> pd.DataFrame:
    df = pd.DataFrame(table, columns=list(VERDICT_COLUMNS))
    return df.astype({"server_is_sender": np.int8, "client_is_sender": np.int8})


def _epm_frame(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(EPM_COLUMNS))
    for c in ("server_hi", "server_lo"):
        df[c] = df[c].astype(np.uint64)
    for c in ("port", "first_ns", "last_ns"):
        df[c] = df[c].astype(np.int64)
    df["exchange"] = df["exchange"].astype(bool)
    return df


@dataclass(frozen=True, slots=True)
class FlowRows:
    """Evidence rows matched to flows: flow index, verdict id, sender was endpoint A.

    Joined once per flow (``EvidenceCollector.take`` as flows finish, or ``classify.flow_rows``)
    and handed to each pass that classifies those flows.
    """

    flow: npt.NDArray[np.int64]
    vid: npt.NDArray[np.int64]
    from_a: npt.NDArray[np.bool_]

    def block(self, start: int, stop: int) -> FlowRows:
        """The rows of flows ``start`` to ``stop - 1``, numbered as ``recs.cols[:, start:stop]`` numbers them."""
        mine = (self.flow >= start) & (self.flow < stop)
        return FlowRows(self.flow[mine] - start, self.vid[mine], self.from_a[mine])

    def renumbered(self, new_index: npt.NDArray[np.int64]) -> FlowRows:
        """The rows after the flows moved: flow ``i`` is now flow ``new_index[i]``."""
        return FlowRows(new_index[self.flow], self.vid, self.from_a)

    @staticmethod
    def concat(parts: list[FlowRows], offsets: list[int]) -> FlowRows:
        """Rows of consecutive record tables, flow numbers shifted by where each table starts."""
        if not parts:
            return FlowRows.empty()
        return FlowRows(np.concatenate([p.flow + o for p, o in zip(parts, offsets)]), np.concatenate([p.vid for p in parts]),
                        np.concatenate([p.from_a for p in parts]))  # fmt: skip

    @staticmethod
    def empty() -> FlowRows:
        return FlowRows(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))


class FlowIndex:
    """Finds the flow of ``recs`` each evidence row belongs to: the same key (hash and check),
    the row's time inside the flow's span; of several (a 5-tuple reused after an idle gap),
    the first in ``recs`` whose span fits. The one join of rows to flows (``KeyIndex``)."""

    def __init__(self, recs: Records) -> None:
        self._index = KeyIndex(recs["hash"], recs["check"], recs["first_ns"], recs["last_ns"])

    def flows(self, h: npt.NDArray[np.uint64], check: npt.NDArray[np.uint64], ts_ns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Per row, the index of its flow in ``recs``, -1 where none."""
        return self._index.flows(h, check, ts_ns)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What one payload says, relative to its sender: a row template."""

    kind: str
    service: str = ""
    detail: str = ""
    rpc_interface: str = ""
    rpc_interface_name: str = ""
    #: 1: the sender is the flow's server, 0: its client, -1: either
    server_is_sender: int = -1
    #: the protocol the payload is ('' unknown)
    protocol: str = ""
    #: the kind of Exchange server evidence it is for the flow's server (servers.KINDS), '' none
    proof: str = ""


def _calls(pdus: list[bytes]) -> list[_Verdict]:
    """What whole DCE/RPC PDUs with no bind among them say: a connection seen mid-stream.

    Two or more well-formed PDUs in a row (one data representation, each fragment length
    landing on the next header) are a DCE/RPC connection (``dcerpc``); one alone waits for the
    other direction's first payload to agree (``ONE_CALL``). The detail is the first call seen.
    """
    calls = [(pdu[2], pdu) for pdu in pdus if pdu[2] in (PTYPE_REQUEST, PTYPE_RESPONSE)]
    if not calls or len({pdu[4] for pdu in pdus}) != 1:
        return []
    ptype, first = calls[0]
    req = parse_request(first) if ptype == PTYPE_REQUEST else None
    detail = f"request opnum {req.opnum}" if req is not None else "response" if ptype == PTYPE_RESPONSE else "request"
    kind = "dcerpc" if len(pdus) >= 2 else ONE_CALL
    return [_Verdict(kind, "", detail, server_is_sender=int(ptype == PTYPE_RESPONSE), protocol=DCERPC)]


#: an EHLO reply with Exchange's keywords
_EXCHANGE_EHLO = _Verdict("signature", "smtp", "exchange-smtp", server_is_sender=1, protocol="smtp", proof=EXCHANGE_SMTP)
#: a Direct Push request
_DIRECT_PUSH = _Verdict("signature", "activesync", "direct-push", protocol="http", proof=EXCHANGE_HTTP)
#: a UDP datagram to a registered callback carrying the registered blob
_NOTIFICATION = _Verdict("registration", "information-store", "new-mail-notification")
#: a short datagram that its receiver's DCE/RPC request to its sender followed at once
#: (``notification_timing``); classify makes it a notification when an Exchange server sent it
TIMED_NOTIFICATION = "notification-timing"
_TIMED = _Verdict(TIMED_NOTIFICATION, "", "new-mail-notification")


@dataclass(slots=True)
class _Flow:
    """A followed flow: DCE/RPC streams per direction, bound contexts, calls waiting."""

    check: int
    last_ns: int
    server_port: int  # the port that was guessed the server's when following began
    streams: dict[bool, PduReassembler] = field(default_factory=dict)
    #: direction -> bytes of HTTP headers to skip before the stream carries PDUs
    http_body: dict[bool, bool] = field(default_factory=dict)
    contexts: dict[int, str] = field(default_factory=dict)
    calls: dict[int, tuple[int, int]] = field(default_factory=dict)
    packets: int = 0


class _VerdictSets:
    """What distinct first payloads said, found for a whole batch with one binary search.

    A first payload is found again by its bytes and context (``PayloadMemo``); payloads that
    say the same (the same rows, follow or not, preset binds) share a set. Every set is
    stored flat (its verdict ids one after the other), so that spreading a batch's verdicts over
    its packets is a few numpy calls whatever the mix, with no Python per payload or per
    verdict. Sets are kept for the run (a waiting flow names its preset by set number; they
    grow only with distinct verdicts, as the verdict table does); the payloads that lead to
    them are capped.
    """

    def __init__(self) -> None:
        #: per set, the contexts a flow that follows from it starts with (None: parse its payload)
        self.presets: list[list[tuple[int, str]] | None] = []
        self._ids: dict[tuple[tuple[int, ...], bool, tuple[tuple[int, str], ...] | None], int] = {}
        self.payloads = PayloadMemo()
        self._vids: list[tuple[int, ...]] = []
        self._follow: list[bool] = []
        #: the sets as arrays, extended by the sets added since (never rebuilt from the start)
        self._built = 0
        self.n, self.start = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.flat = np.zeros(0, np.int32)
        self.follow, self.preset = np.zeros(0, bool), np.zeros(0, bool)

    def add(self, digest: int, context: int, payload: bytes, vids: list[int], follow: bool,
            preset: list[tuple[int, str]] | None) -> int:  # fmt: skip
        """The set of what ``payload`` says, which is remembered for it (in ``context``)."""
        sid = self.set_of(vids, follow, preset)
        self.payloads.remember(digest, context, payload, sid)
        return sid

    def set_of(self, vids: list[int], follow: bool, preset: list[tuple[int, str]] | None) -> int:
        """The set of these verdicts (added if new)."""
        key = (tuple(vids), follow, tuple(preset) if preset is not None else None)
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self._vids)
            self._vids.append(key[0])
            self._follow.append(follow)
            self.presets.append(preset)
        return sid

    def build(self) -> None:
        """Extend the set arrays by the sets added since the last call."""
        if self._built < len(self._vids):
            b, new = self._built, self._vids[self._built :]
            n = np.array([len(v) for v in new], dtype=np.int64)
            self.start = np.concatenate([self.start, self.flat.size + np.cumsum(n) - n])
            self.n = np.concatenate([self.n, n])
            self.flat = np.concatenate([self.flat, np.fromiter((v for vs in new for v in vs), dtype=np.int32, count=int(n.sum()))])
            self.follow = np.concatenate([self.follow, np.array(self._follow[b:], dtype=bool)])
            self.preset = np.concatenate([self.preset, np.array([p is not None for p in self.presets[b:]], dtype=bool)])
            self._built = len(self._vids)


class EvidenceCollector:
    """Looks at candidate payloads of each batch and keeps what they prove (see module doc).

    >>> col = EvidenceCollector()                       # doctest: +SKIP
    >>> for batch in CaptureFile(path):                 # doctest: +SKIP
    ...     pk = decode(batch); keys = flow_keys(pk); col.feed(batch, pk, keys, table.update(pk, keys))
    >>> ev = col.evidence()                             # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        interfaces: Mapping[str, Interface] | None = None,
        http_paths: HttpPathTable | None = None,
        epm_expiry: float = DEFAULT_EPM_EXPIRY,
        idle_timeout: float = 120.0,
    ) -> None:
        self.interfaces = interfaces if interfaces is not None else load_interfaces()
        self.http_paths = http_paths if http_paths is not None else load_http_paths()
        rpc = self.http_paths.rpc_http
        self._path_rules = PathRules(prefixes=[r.prefix for r in self.http_paths.paths], queries=[[(q.param, q.value) for q in r.queries]
                                                                                                    for r in self.http_paths.paths],
                                     rpc_proxy=rpc.proxy, rpc_methods=sorted(rpc.methods))  # fmt: skip
        self.epm_expiry_ns = int(epm_expiry * 1e9)
        self.idle_ns = int(idle_timeout * 1e9)
        self._flows: OrderedDict[int, _Flow] = OrderedDict()
        # counted from Python one flow at a time (array.array: no numpy scalar cost), read by
        # numpy a batch at a time through a view of the same memory
        self._track_count = array.array("H", bytes(2 * _TRACK_SLOTS))
        self._track_view = np.frombuffer(self._track_count, dtype=np.uint16)
        #: flows whose first payload was binds only (or an IN channel's headers), not yet looked
        #: at again, with the set that names their contexts. Most end with their next packet (no
        #: more PDUs, or PDUs of no interest), so they become a _Flow only when a packet needs a
        #: Python look
        self._waiting = WaitingFlows(self._track_view)
        #: rows as (hash, check, ts_ns, from_a, verdict id) arrays, one part per batch
        self._row_parts: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int32]]] = []
        self._rows: list[tuple[int, int, int, bool, int]] = []
        #: distinct verdicts (kind, service, detail, interface, name, server_is_sender, client_is_sender, protocol, proof)
        self._verdicts: list[tuple[str, str, str, str, str, int, int, str, str]] = []
        self._verdict_ids: dict[tuple[str, str, str, str, str, int, int, str, str], int] = {}
        self._bind_cache: dict[bytes, list[tuple[int, str]]] = {}
        #: what distinct first payloads said (by their bytes), remembered across batches
        self._sets = _VerdictSets()
        #: verdict id of an unrecognizable first payload, by server port * 2 + sent by the server (-1: none yet)
        self._quiet_vids = np.full(2 * 65536, -1, dtype=np.int32)
        #: verdict set of a first payload that needs no parsing, by ``_fact_key`` (sorted; filled
        #: once per distinct key)
        self._fact_keys, self._fact_sids = np.zeros(0, np.int64), np.zeros(0, np.int64)
        #: followed flows with a stream waiting for the rest of a PDU (or of HTTP headers)
        self._cont: set[int] = set()
        #: this batch's newly followed flows: (hashes, index of the packet that started each)
        self._started: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.intp]]] = []
        self._preset: list[tuple[int, str]] | None = None
        #: (hi, lo, transport, port, interface) -> [first_ns, last_ns]
        self._epm: OrderedDict[tuple[int, int, str, int, str], list[int]] = OrderedDict()
        #: (callback hi, lo, port) -> {blob: ts}
        self._registrations: OrderedDict[tuple[int, int, int], dict[bytes, int]] = OrderedDict()
        self._timing = NotificationTiming()
        self._reg_lengths: set[int] = set()
        self._reg_ports: set[int] = set()

    def new_capture(self) -> None:
        """A new input starts: forget per-flow state (flows never span captures), keep what
        was learned (endpoint-mapper ports, registrations)."""
        self._flows.clear()
        self._waiting.clear()
        self._cont.clear()
        self._started.clear()
        self._track_view[:] = 0

    # -- per batch -------------------------------------------------------------------------

    def feed(self, batch: PacketBatch, pk: Packets, keys: FlowKeys, first: npt.NDArray[np.intp]) -> None:
        """Inspect the candidate payloads of one decoded batch (``keys``: its flow keys;
        ``first``: its packets that carry their flow's first payload in their direction, as
        ``FlowTable.update`` returns them).

        The compiled first looks run here, on the caller's thread, not beside the flow
        table: this stage waits for the two ahead of it, while their work is the pipeline's
        pace (on the bench, 1.52 -> 1.42 s median of eight alternating runs)."""
        plen = pk.payload_len
        pay = np.flatnonzero(plen > 0)
        if not pay.size:
            return
        data = batch.data
        if first.size:
            looks = first_looks(
                data, first, pk.payload_off, plen, pk.proto, pk.sport, pk.dport,
                _SERVICE_PORT, _MUST_SERVER, _MUST_CLIENT, DIRECT_PUSH_PORT, _MIN_DECISIVE,
            )  # fmt: skip
            self._first_payloads(data, pk, keys, first, looks)
        # an EHLO reply is a server's second payload: "250-" lines are looked at wherever they are
        ehlo = later_starts(data, pay, first, pk.payload_off, plen, pk.proto, b"250-", 8)
        if ehlo.size:
            self._ehlo_replies(data, pk, keys, ehlo)
        if self._flows or len(self._waiting):
            self._followed(data, pk, keys, pay)
        if self._registrations:
            self._notifications(data, pk, keys, pay)
        timed = self._timing.feed(data, pk, pay)
        if timed.size:
            self._add_rows(keys, pk, timed, np.full(timed.size, self._vid(_TIMED), dtype=np.int32))

    def _first_payloads(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, idx: npt.NDArray[np.intp],
                        looks: tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.bool_]]) -> None:  # fmt: skip
        """First payload of a flow in one direction (``looks``: what ``first_looks`` said of
        them): vectorized shortcuts, then one look per distinct payload."""
        kind, server_port, server_is_src = looks
        # an unrecognizable first payload on a port whose protocol must show: port-mismatch
        quiet = np.flatnonzero(kind == QUIET)
        if quiet.size:
            pair = server_port[quiet] * 2 + server_is_src[quiet]
            vids = self._quiet_vids[pair]
            if (vids < 0).any():
                for u in np.unique(pair[vids < 0]).tolist():
                    self._quiet_vids[u] = self._vid(_Verdict(MISMATCH, "", f"unrecognized payload on tcp/{u >> 1}", server_is_sender=u & 1))
                vids = self._quiet_vids[pair]
            self._add_rows(keys, pk, idx[quiet], vids)

        look = np.flatnonzero(kind == LOOK)
        if not look.size:
            return
        sel = idx[look]
        self._inspect_distinct(data, pk, keys, sel, pk.proto[sel] == IPPROTO_TCP, server_port[look], server_is_src[look])

    def _inspect_distinct(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                          tcp: npt.NDArray[np.bool_], server_port: npt.NDArray[np.int64],
                          server_is_src: npt.NDArray[np.bool_]) -> None:  # fmt: skip
        """Verdicts of first payloads ``sel``: those whose compiled facts decide them from a
        table, the others (DCE/RPC binds, HTTP requests, ``ncacn_http``, EHLO replies) by one
        Python look per distinct payload."""
        sets = self._sets
        off, plen = pk.payload_off[sel], pk.payload_len[sel]
        facts = SIGNATURE_TABLES.facts(data, off, plen)
        label = (facts >> AS_SERVER_SHIFT) & LABEL_MASK
        dcerpc = label == _DCERPC_CODE
        # whole PDUs with no bind decide by their facts, unless they are calls: a connection
        # seen mid-stream, whose PDU count and first operation the verdict names (few per capture)
        calls = dcerpc & (facts & DCERPC_PLAIN != 0)
        calls[calls] = np.isin(data[off[calls] + 2], _CALL_PTYPES)
        parse = tcp & ((facts & (REQUEST_LINE | EHLO_MARKERS) != 0) | (dcerpc & (facts & DCERPC_PLAIN == 0)) | calls
                       | (label == _NCACN_HTTP_CODE))  # fmt: skip
        named = np.flatnonzero(tcp & ((facts & REQUEST_LINE != 0) | ((facts >> AS_CLIENT_SHIFT) & LABEL_MASK == _TLS_CODE)))
        if named.size:
            self._server_names(data, pk, keys, sel[named], off[named], plen[named])
        sid = np.empty(sel.size, np.int64)
        decided = np.flatnonzero(~parse)
        if decided.size:
            sid[decided] = self._fact_sets(facts[decided], tcp[decided], server_port[decided], server_is_src[decided])
        looked = np.flatnonzero(parse)
        if looked.size:
            sid[looked] = self._parsed_sets(data, off[looked], plen[looked], tcp[looked], server_port[looked],
                                            server_is_src[looked], facts[looked])  # fmt: skip
        sets.build()
        # spread each payload's verdicts over its packets
        per_pkt = sets.n[sid]
        if per_pkt.any():
            pkt = np.repeat(np.arange(sid.size), per_pkt)
            within = np.arange(pkt.size) - np.repeat(np.cumsum(per_pkt) - per_pkt, per_pkt)
            self._add_rows(keys, pk, sel[pkt], sets.flat[sets.start[sid[pkt]] + within])
        js = np.flatnonzero(sets.follow[sid])
        if js.size:
            self._start_following(data, pk, keys, sel, js, server_port, sid)

    def _server_names(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                      off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """A ``server-name`` row for each first payload ``sel`` (TLS client hellos and HTTP
        requests) that names its server (``server_names``): one string per distinct name."""
        start, length, digest = server_names(data, off, plen)
        has = np.flatnonzero(length > 0)
        if not has.size:
            return
        start, length, digest = start[has], length[has], digest[has]
        vid = np.full(has.size, -1, dtype=np.int32)
        new = np.arange(has.size)
        while new.size:
            # one string per digest; the names that are its bytes (but for case) share its row,
            # the others (a digest collision) go round again
            _, first_of, which = np.unique(digest[new], return_index=True, return_inverse=True)
            looked = new[first_of]
            for i, s, n in zip(looked.tolist(), start[looked].tolist(), length[looked].tolist()):
                vid[i] = self._vid(_Verdict(SERVER_NAME, "", data[s : s + n].tobytes().decode("ascii").lower()))
            rep = looked[which.reshape(-1)]
            same = same_names(data, start[new], length[new], start[rep], length[rep])
            vid[new[same]] = vid[rep[same]]
            new = new[vid[new] < 0]
        self._add_rows(keys, pk, sel[has], vid)

    def _fact_sets(self, facts: npt.NDArray[np.int32], tcp: npt.NDArray[np.bool_], server_port: npt.NDArray[np.int64],
                   server_is_src: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:  # fmt: skip
        """The verdict set of each payload whose facts alone decide it, from the table of
        distinct (facts, transport, server port, sender) met so far; a key met for the first
        time is decided here, once."""
        key = (facts.astype(np.int64) << 19) | (tcp.astype(np.int64) << 18) | ((server_port + 1) << 1) | server_is_src
        at = np.searchsorted(self._fact_keys, key)
        known = self._fact_keys[np.minimum(at, self._fact_keys.size - 1)] == key if self._fact_keys.size else np.zeros(key.size, bool)
        if not known.all():
            new = np.unique(key[~known])
            sids = [self._fact_set(k >> 19, bool(k >> 18 & 1), (k >> 1 & 0x1FFFF) - 1, bool(k & 1)) for k in new.tolist()]
            keys = np.concatenate([self._fact_keys, new])
            order = np.argsort(keys)
            self._fact_keys, self._fact_sids = keys[order], np.concatenate([self._fact_sids, sids]).astype(np.int64)[order]
            at = np.searchsorted(self._fact_keys, key)
        return self._fact_sids[at]

    def _fact_set(self, facts: int, tcp: bool, server_port: int, server_is_src: bool) -> int:
        """The verdict set of a payload its facts decide: a UDP Direct Push request, a TCP
        payload by its labels (a DCE/RPC one of whole PDUs without binds also by whether its
        flow is followed: on an endpoint-mapper port, for the reply towers)."""
        if not tcp:
            return self._sets.set_of([self._vid(_DIRECT_PUSH)] if facts & NOTIFY else [], False, None)
        v = self._facts_verdict(facts, server_port, server_is_src, False)
        follow = (facts >> AS_SERVER_SHIFT) & LABEL_MASK == _DCERPC_CODE and server_port in EPM_PORTS
        return self._sets.set_of([self._vid(v)] if v is not None else [], follow, None)

    def _parsed_sets(self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64],
                     tcp: npt.NDArray[np.bool_], server_port: npt.NDArray[np.int64], server_is_src: npt.NDArray[np.bool_],
                     facts: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:  # fmt: skip
        """The verdict set of each payload that needs parsing: those that say the same (same
        deciding bytes, as ``deciding_bytes`` leaves them, same facts, same context: port guess,
        transport, sender) are looked at once, ever, found by digest, then by those bytes and
        context; ``_inspect`` reads the deciding bytes and the facts of the payload itself."""
        sets = self._sets
        context = look_context(server_port, tcp.view(np.uint8), server_is_src.view(np.uint8)) | (facts.astype(np.int64) << 20)
        buf, off, plen, group = SIGNATURE_TABLES.deciding_bytes(data, off, plen, context, self._path_rules)
        sid = sets.payloads.find(buf, off, plen, group, context)
        new = np.flatnonzero(sid < 0)
        while new.size:
            # one look per digest; the payloads that are its bytes share its verdicts, the others
            # (a digest collision) go round again
            _, first_of, which = np.unique(group[new], return_index=True, return_inverse=True)
            looked = new[first_of]
            got = []
            # Python ints and bools made in one go, not a numpy scalar per payload and field
            for digest, o, n, ctx, port, src, fact in zip(*(a[looked].tolist() for a in (group, off, plen, context, server_port, server_is_src,
                                                                                              facts))):  # fmt: skip
                payload = buf[o : o + n].tobytes()
                v, fol = self._inspect(payload, port, src, fact)
                got.append(sets.add(digest, ctx, payload, [self._vid(x) for x in v], fol, self._preset))
            sid[looked] = got
            rep = looked[which]
            same = (context[new] == context[rep]) & same_payloads(buf, off[new], plen[new], buf, off[rep], plen[rep])
            sid[new[same]] = sid[rep[same]]
            new = new[sid[new] < 0]
        return sid

    def _start_following(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                         js: npt.NDArray[np.intp], server_port: npt.NDArray[np.int64], sid: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """Follow the flows of first payloads ``sel[js]`` (in packet order) not followed yet: a
        flow at a PDU boundary whose contexts are known waits unparsed, a batch at a time; the
        few others are parsed now."""
        ps = sel[js]
        h = keys.hash[ps].view(np.uint64)
        preset = self._sets.preset[sid[js]]
        if not preset.all():  # a flow follows from its first such packet (WaitingFlows keeps the first of its own)
            _, once = np.unique(h, return_index=True)
            if once.size < js.size:
                keep = np.sort(once)
                js, ps, h, preset = js[keep], ps[keep], h[keep], preset[keep]
        if self._flows:
            fresh = ~np.isin(h, np.fromiter(self._flows, dtype=np.uint64, count=len(self._flows)))
            js, ps, h, preset = js[fresh], ps[fresh], h[fresh], preset[fresh]
        w = np.flatnonzero(preset)
        if w.size:
            started = self._waiting.start(h[w], keys.check[ps[w]].view(np.uint64), pk.ts_ns[ps[w]], server_port[js[w]], sid[js[w]])
            self._started.append((h[w][started], ps[w][started]))
        parse = np.flatnonzero(~preset)
        if parse.size:
            mine = []
            # the per-flow loop takes Python ints made in one go, not one numpy scalar at a time
            for p, hsh, check, ts, port in zip(ps[parse].tolist(), h[parse].tolist(), keys.check[ps[parse]].view(np.uint64).tolist(),
                                               pk.ts_ns[ps[parse]].tolist(), server_port[js[parse]].tolist()):  # fmt: skip
                if hsh in self._waiting:
                    continue
                mine.append(p)
                st = self._track(hsh, check, ts, port)
                o = int(pk.payload_off[p])
                if not self._step(st, hsh, data[o : o + int(pk.payload_len[p])].tobytes(), bool(keys.from_a[p]), ts, pk, p):
                    self._untrack(hsh)
            mine_p = np.array(mine, dtype=np.intp)
            self._started.append((keys.hash[mine_p].view(np.uint64), mine_p))
        self._limit()

    def _ehlo_replies(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, idx: npt.NDArray[np.intp]) -> None:
        """Multi-line 250 replies: Exchange-only EHLO keywords prove an Exchange SMTP server."""
        proven = []
        for p in idx.tolist():
            o = int(pk.payload_off[p])
            if exchange_smtp_markers(data[o : o + int(pk.payload_len[p])].tobytes()):
                proven.append(p)
        if proven:
            vid = self._vid(_EXCHANGE_EHLO)
            self._add_rows(keys, pk, np.array(proven, dtype=np.intp), np.full(len(proven), vid, dtype=np.int32))

    def _inspect(self, payload: bytes, server_port: int, server_is_src: bool, facts: int) -> tuple[list[_Verdict], bool]:
        """Verdicts of one TCP first payload (``facts``: what ``SignatureTables.facts`` says of it),
        and whether to follow the flow.
        Sets ``self._preset``: the contexts its binds name when they are all it holds, or none
        for an IN channel's bare HTTP headers (a followed flow then starts from them unparsed,
        at a PDU boundary)."""
        self._preset = None
        verdicts: list[_Verdict] = []
        follow = False
        if payload[0] == 5 and looks_like_dcerpc(payload):
            pdus = PduReassembler(resync_segments=0).feed(payload)
            whole = sum(map(len, pdus)) == len(payload)
            follow = not whole or server_port in EPM_PORTS
            if whole and all(pdu[2] in (PTYPE_BIND, PTYPE_ALTER_CONTEXT) for pdu in pdus):
                self._preset = [c for pdu in pdus for c in self._bind(pdu)]
            for pdu in pdus:
                v, fol = self._pdu_verdict(pdu)
                verdicts += v
                follow |= fol
            if whole and not verdicts:
                verdicts += _calls(pdus)
        elif payload.startswith(NCACN_HTTP_GREETING):
            # the back-end's first bytes on an RPC over HTTP leg: the service of its port
            port = server_port if server_is_src and server_port >= 0 else -1
            service = self.http_paths.rpc_http.ports.get(port, "")
            proof = RPC_OVER_HTTP if port in self.http_paths.rpc_http.exchange_ports else ""
            verdicts.append(_Verdict("rpc-http", service, f"ncacn_http:{port}" if port > 0 else "ncacn_http", server_is_sender=1,
                                     protocol="ncacn_http", proof=proof))  # fmt: skip
            for pdu in PduReassembler(resync_segments=0).feed(payload[len(NCACN_HTTP_GREETING):]):
                verdicts += self._pdu_verdict(pdu)[0]
        elif 0x21 <= payload[0] < 0x7F:
            req = parse_request_line(payload)
            if req is not None:
                hv = classify_request(req, table=self.http_paths)
                if hv is not None:
                    verdicts.append(_Verdict(hv.evidence, hv.service, hv.detail, server_is_sender=0, protocol="http", proof=hv.proof))
                    # the IN channel carries RTS then ordinary PDUs (binds) after the headers
                    follow = hv.evidence == "rpc-http" and req.method.upper() == "RPC_IN_DATA"
                    if follow and payload.find(b"\r\n\r\n") == len(payload) - 4:
                        self._preset = []  # headers only: the flow waits for its PDUs as a bind's does
        if facts & EHLO_MARKERS:
            verdicts.append(_EXCHANGE_EHLO)
        label = self._facts_verdict(facts, server_port, server_is_src, any(x.protocol for x in verdicts))
        return ([*verdicts, label] if label is not None else verdicts), follow

    @staticmethod
    def _facts_verdict(facts: int, server_port: int, server_is_src: bool, protocol_known: bool) -> _Verdict | None:
        """What a TCP first payload's facts (``SignatureTables.facts``) say about the protocol
        its bytes start and what its server port expects; ``protocol_known``: a verdict of its
        parsed content already names its protocol."""
        as_server = LABEL_NAMES[(facts >> AS_SERVER_SHIFT) & LABEL_MASK]
        as_client = LABEL_NAMES[(facts >> AS_CLIENT_SHIFT) & LABEL_MASK]
        sender_srv = int(server_is_src) if server_port >= 0 else -1
        if as_server != as_client:  # text: the content says who sent it
            from_server = as_client is None
            label = as_server if from_server else as_client
            if sender_srv == -1 or bool(sender_srv) != from_server:
                # the port guess disagrees, or there was none: the port expectation cannot be used
                return EvidenceCollector._named(facts, label, from_server)
        else:
            from_server, label = bool(server_is_src), as_server
        exp = EXPECTED_PROTOCOLS.get(server_port) if server_port >= 0 else None
        shared = SHARED_NAMES[(facts >> SHARED_SHIFT) & SHARED_MASK] if from_server else None
        if exp is not None and label_contradicts_port(server_port, label, shared, bool(facts & LONG), from_server=from_server):
            return _Verdict(MISMATCH, "", f"{label or 'unrecognized payload'} on tcp/{server_port}", server_is_sender=int(from_server),
                            protocol=label or "")  # fmt: skip
        if label is not None and label not in SIGNATURE_SERVICES and exp is not None:
            # confirms the port: the port's service, decided by a signature
            return _Verdict("signature", "", label, server_is_sender=int(from_server), protocol=label)
        if label is not None and not protocol_known:
            return EvidenceCollector._named(facts, label, from_server)
        return None

    @staticmethod
    def _named(facts: int, label: str | None, from_server: bool) -> _Verdict:
        """What a payload identified as ``label`` says: the service of a text protocol (with the
        proof an Exchange greeting is), else the protocol alone."""
        sender = int(from_server)
        assert label is not None  # two different labels: one is not None
        if label not in SIGNATURE_SERVICES:
            return _Verdict(PROTOCOL_ONLY, "", label, server_is_sender=sender, protocol=label)
        service = SIGNATURE_SERVICES[label]
        if from_server and facts & GREETS_EXCHANGE:
            return _Verdict("signature", service, f"exchange-{service}", server_is_sender=sender, protocol=label, proof=EXCHANGE_GREETING)
        if from_server and label == "smtp" and facts & SMTP_BANNER:
            return _Verdict("signature", service, label, server_is_sender=sender, protocol=label, proof=MICROSOFT_SMTP_GREETING)
        return _Verdict("signature", service, label, server_is_sender=sender, protocol=label)

    def _pdu_verdict(self, pdu: bytes) -> tuple[list[_Verdict], bool]:
        """Rows a stand-alone PDU gives (binds), and whether its flow is worth following."""
        ptype = pdu[2]
        if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
            out: list[_Verdict] = []
            follow = False
            for _, interface in self._bind(pdu):
                out.append(self._interface_verdict(interface, "bind"))
                follow |= interface in (EPM_INTERFACE, EMSMDB_INTERFACE)
            return out, follow
        return [], False

    def _bind(self, pdu: bytes) -> list[tuple[int, str]]:
        """(context id, interface) of a bind / alter_context; clients repeat theirs, so cached."""
        found = self._bind_cache.get(pdu)
        if found is None:
            if len(self._bind_cache) > 4096:
                self._bind_cache.clear()
            found = self._bind_cache[pdu] = [(c.context_id, c.interface) for c in parse_bind(pdu)]
        return found

    def _interface_verdict(self, uuid: str, kind: str) -> _Verdict:
        iface = self.interfaces.get(uuid)
        if iface is None:
            return _Verdict(INTERFACE_ONLY, "", "", uuid, "", protocol=DCERPC)
        if not iface.decisive:
            return _Verdict(INTERFACE_ONLY, "", "", uuid, iface.name, protocol=DCERPC)
        return _Verdict(kind, iface.service, "", uuid, iface.name, protocol=DCERPC, proof=RPC_INTERFACE if iface.exchange else "")

    # -- followed flows ---------------------------------------------------------------------

    def _track(self, hsh: int, check: int, ts: int, server_port: int) -> _Flow:
        st = self._flows[hsh] = _Flow(check=check, last_ns=ts, server_port=server_port)
        self._track_count[hsh & (_TRACK_SLOTS - 1)] += 1
        self._limit()
        return st

    def _limit(self) -> None:
        """At most MAX_TRACKED_FLOWS followed: waiting ones go first, then the least recent."""
        excess = len(self._flows) + len(self._waiting) - MAX_TRACKED_FLOWS
        if excess > 0:
            excess -= self._waiting.drop_oldest(excess)
        for _ in range(max(excess, 0)):
            gone, _ = self._flows.popitem(last=False)
            self._cont.discard(gone)
            self._track_count[gone & (_TRACK_SLOTS - 1)] -= 1

    def _untrack(self, hsh: int) -> None:
        if self._flows.pop(hsh, None) is not None:
            self._cont.discard(hsh)
            self._track_count[hsh & (_TRACK_SLOTS - 1)] -= 1
        else:
            self._waiting.pop(hsh)

    def _flow(self, hsh: int) -> _Flow | None:
        """The followed flow of ``hsh``; a waiting one becomes a _Flow, its preset contexts bound."""
        st = self._flows.get(hsh)
        if st is None:
            waiting = self._waiting.pop(hsh)
            if waiting is not None:
                check, ts, port, preset = waiting
                st = self._flows[hsh] = _Flow(check=check, last_ns=ts, server_port=port, contexts=dict(self._sets.presets[preset] or ()),
                                              packets=1)  # fmt: skip
                self._track_count[hsh & (_TRACK_SLOTS - 1)] += 1
        return st

    def _followed(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, pay: npt.NDArray[np.intp]) -> None:
        """The payload packets of followed flows, in capture order.

        ``follow_scan`` finds them and passes over what needs no Python look: a whole PDU of
        no interest, or the first packet that neither starts a DCE/RPC PDU nor continues one
        its stream is waiting for (which ends the following of its flow)."""
        started, self._started = self._started, []
        started_h = np.concatenate([h for h, _ in started]) if started else np.zeros(0, np.uint64)
        started_p = np.concatenate([p for _, p in started]).astype(np.int64) if started else np.zeros(0, np.int64)
        by_hash = np.argsort(started_h)
        look, ended = follow_scan(data, pay, keys.hash.view(np.uint64), pk.payload_off, pk.payload_len, self._track_view,
                                  started_h[by_hash], started_p[by_hash],
                                  np.sort(np.fromiter(self._cont, dtype=np.uint64, count=len(self._cont))), _PTYPE_USED.view(np.uint8))  # fmt: skip
        for hsh, p, check, ts in zip(keys.hash[look].view(np.uint64).tolist(), look.tolist(),
                                     keys.check[look].view(np.uint64).tolist(), pk.ts_ns[look].tolist()):  # fmt: skip
            st = self._flow(hsh)
            if st is None or st.check != check:
                continue
            if ts - st.last_ns > self.idle_ns:  # the key was reused after an idle gap
                self._untrack(hsh)
                continue
            st.last_ns = ts
            self._flows.move_to_end(hsh)
            off = int(pk.payload_off[p])
            if not self._step(st, hsh, data[off : off + int(pk.payload_len[p])].tobytes(), bool(keys.from_a[p]), ts, pk, p):
                self._untrack(hsh)
        waited = self._waiting.end(ended)
        if self._flows:
            for hsh in ended[~waited].tolist():
                self._untrack(hsh)
        # forget flows gone quiet (waiting ones are in the order they began)
        now = int(pk.ts_ns[pay[-1]])
        while self._flows:
            hsh, st = next(iter(self._flows.items()))
            if now - st.last_ns <= self.idle_ns:
                break
            self._untrack(hsh)
        self._waiting.expire(now - self.idle_ns)

    def _step(self, st: _Flow, hsh: int, payload: bytes, from_a: bool, ts: int, pk: Packets, p: int) -> bool:
        """One payload of a followed flow; False when the flow is not worth following further."""
        st.packets += 1
        stream = st.streams.get(from_a)
        if stream is None:
            stream = st.streams[from_a] = PduReassembler(resync_segments=1)
            if payload.startswith(NCACN_HTTP_GREETING):
                payload = payload[len(NCACN_HTTP_GREETING):]
            elif payload[:1].isalpha():
                req = parse_request_line(payload)
                if req is not None:
                    st.http_body[from_a] = True
        if st.http_body.get(from_a):
            end = payload.find(b"\r\n\r\n")
            if end < 0:
                return st.packets < MAX_TRACKED_PACKETS
            st.http_body[from_a] = False
            payload = payload[end + 4 :]
        if payload:
            for pdu in stream.feed(payload):
                self._pdu(st, pdu, from_a, ts, pk, p, hsh)
        if stream.buffered or st.http_body.get(from_a):
            self._cont.add(hsh)
        else:
            self._cont.discard(hsh)
        return st.packets < MAX_TRACKED_PACKETS and not any(s.broken for s in st.streams.values())

    def _pdu(self, st: _Flow, pdu: bytes, from_a: bool, ts: int, pk: Packets, p: int, hsh: int) -> None:
        header = parse_header(pdu)
        if header is None:
            return
        ptype = header.ptype
        if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
            for context_id, interface in self._bind(pdu):
                st.contexts[context_id] = interface
                self._add_row(hsh, st.check, ts, from_a, self._interface_verdict(interface, "bind"))
        elif ptype == PTYPE_REQUEST:
            req = parse_request(pdu)
            if req is None:
                return
            st.calls[req.call_id] = (req.opnum, req.context_id)
            iface = st.contexts.get(req.context_id)
            whole = header.flags & (PFC_FIRST_FRAG | PFC_LAST_FRAG) == (PFC_FIRST_FRAG | PFC_LAST_FRAG)
            if (iface == EMSMDB_INTERFACE and req.opnum == EMSMDB_OPNUM_REGISTER_PUSH_NOTIFICATION and whole
                    and req.auth_level != AUTH_LEVEL_PKT_PRIVACY):  # fmt: skip
                reg = parse_register_push_notification(req.stub, little_endian=header.little_endian)
                if reg is not None and reg.context:
                    self._register(reg.callback, reg.context, ts)
        elif ptype == PTYPE_RESPONSE:
            resp = parse_response(pdu)
            if resp is None:
                return
            opnum, ctx = st.calls.pop(resp.call_id, (-1, resp.context_id))
            iface = st.contexts.get(ctx)
            if iface != EPM_INTERFACE and not (iface is None and st.server_port in EPM_PORTS):
                return
            if not header.flags & PFC_FIRST_FRAG:
                return
            towers = []
            if opnum in (EPM_OPNUM_MAP, -1):
                towers = parse_epm_map_response(resp.stub, little_endian=header.little_endian)
            if opnum == EPM_OPNUM_LOOKUP or (opnum == -1 and not towers):
                towers = [e.tower for e in parse_epm_lookup_response(resp.stub, little_endian=header.little_endian) if e.tower is not None]
            server = (int(pk.src_hi[p]), int(pk.src_lo[p]))
            for t in towers:
                if t.port is None or t.protocol not in ("tcp", "udp", "http"):
                    continue
                transport = "udp" if t.protocol == "udp" else "tcp"
                self._learn(server, transport, t.port, t.interface, ts)
                if t.address not in (None, "0.0.0.0"):
                    a = int.from_bytes(bytes(int(x) for x in t.address.split(".")), "big") | 0xFFFF_0000_0000
                    if (0, a) != server:
                        self._learn((0, a), transport, t.port, t.interface, ts)

    def _learn(self, server: tuple[int, int], transport: str, port: int, interface: str, ts: int) -> None:
        key = (server[0], server[1], transport, port, interface)
        span = self._epm.get(key)
        if span is None:
            self._epm[key] = [ts, ts]
            while len(self._epm) > MAX_EPM_ENTRIES:
                self._epm.popitem(last=False)
        else:
            span[0], span[1] = min(span[0], ts), max(span[1], ts)
            self._epm.move_to_end(key)

    def _register(self, callback: tuple[str, int], blob: bytes, ts: int) -> None:
        addr = ipaddress.ip_address(callback[0])
        value = int(addr) | (0xFFFF_0000_0000 if addr.version == 4 else 0)
        key = (value >> 64, value & _U64, callback[1])
        self._registrations.setdefault(key, {})[blob] = ts
        self._reg_lengths.add(len(blob))
        self._reg_ports.add(callback[1])
        self._registrations.move_to_end(key)
        while len(self._registrations) > MAX_REGISTRATIONS:
            self._registrations.popitem(last=False)

    # -- UDP notifications ---------------------------------------------------------------------

    def _notifications(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, pay: npt.NDArray[np.intp]) -> None:
        """UDP datagrams to a registered callback whose payload is the registered blob."""
        lengths = np.fromiter(self._reg_lengths, dtype=np.int64)
        ports = np.fromiter(self._reg_ports, dtype=np.int64)
        cand = pay[(pk.proto[pay] == IPPROTO_UDP) & np.isin(pk.payload_len[pay], lengths) & np.isin(pk.dport[pay], ports)]
        for p in cand.tolist():
            blobs = self._registrations.get((int(pk.dst_hi[p]), int(pk.dst_lo[p]), int(pk.dport[p])))
            if not blobs:
                continue
            o = int(pk.payload_off[p])
            payload = data[o : o + int(pk.payload_len[p])].tobytes()
            if payload in blobs:
                self._add_row(int(keys.hash[p]) & _U64, int(keys.check[p]) & _U64, int(pk.ts_ns[p]), bool(keys.from_a[p]),
                              _NOTIFICATION, client_is_sender=1)  # fmt: skip

    # -- rows ----------------------------------------------------------------------------------

    def _vid(self, v: _Verdict, client_is_sender: int = -1) -> int:
        key = (v.kind, v.service, v.detail, v.rpc_interface, v.rpc_interface_name, v.server_is_sender, client_is_sender, v.protocol, v.proof)
        vid = self._verdict_ids.get(key)
        if vid is None:
            vid = self._verdict_ids[key] = len(self._verdicts)
            self._verdicts.append(key)
        return vid

    def _add_rows(self, keys: FlowKeys, pk: Packets, idx: npt.NDArray[np.intp], vids: npt.NDArray[np.int32]) -> None:
        if idx.size:
            self._row_parts.append((keys.hash[idx].view(np.uint64), keys.check[idx].view(np.uint64), pk.ts_ns[idx],
                                    keys.from_a[idx], vids.astype(np.int32)))  # fmt: skip

    def _add_row(self, hsh: int, check: int, ts: int, from_a: bool, v: _Verdict, client_is_sender: int = -1) -> None:
        self._rows.append((hsh, check, ts, from_a, self._vid(v, client_is_sender)))

    def _joined_rows(self) -> list[npt.NDArray[np.generic]]:
        """The rows not yet taken, as (hash, check, ts_ns, from_a, vid) arrays in the order
        they were found; they replace the parts they were made of (one copy, not two)."""
        cols = list(zip(*self._row_parts)) if self._row_parts else [[] for _ in range(5)]
        extra = list(zip(*self._rows)) if self._rows else [() for _ in range(5)]
        dtypes = (np.uint64, np.uint64, np.int64, bool, np.int32)
        arrays = [np.concatenate([*(np.asarray(c, dtype=t) for c in part), np.array(e, dtype=t)])
                  for part, e, t in zip(cols, extra, dtypes)]  # fmt: skip
        self._row_parts, self._rows = ([tuple(arrays)] if arrays[0].size else []), []  # type: ignore[list-item]
        return arrays

    def take(self, recs: Records) -> FlowRows:
        """The rows of these finished flows (joined as ``classify`` joins them: same key, found
        within the flow's span), handed over and forgotten here.

        A finished flow gets no more rows, so the rows held stay those of open flows, and
        memory does not grow with the capture. The rows are joined a batch's part at a time.
        """
        if self._rows or len(self._row_parts) > _TAKE_PARTS:
            self._joined_rows()  # a few large parts, not thousands of small ones
        if not self._row_parts or not len(recs):
            return FlowRows.empty()
        index = FlowIndex(recs)
        taken: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.bool_]]] = []
        kept = []
        for part in self._row_parts:
            h, check, ts_ns, from_a, vid = part
            flow = index.flows(h, check, ts_ns)
            mine = flow >= 0
            if mine.any():
                taken.append((flow[mine], vid[mine], from_a[mine]))
                if not mine.all():
                    kept.append(tuple(a[~mine] for a in part))
            else:
                kept.append(part)
        self._row_parts = kept  # type: ignore[assignment]
        if not taken:
            return FlowRows.empty()
        return FlowRows(np.concatenate([t[0] for t in taken]), np.concatenate([t[1] for t in taken]).astype(np.int64),
                        np.concatenate([t[2] for t in taken]))  # fmt: skip

    def evidence(self, *, rows: bool = True) -> Evidence:
        """Everything learned so far, as tables for ``classify``; ``rows=False`` leaves the
        rows table empty, for callers that hand classify rows taken with their flows."""
        parts = []
        arrays = self._joined_rows() if rows else None
        if arrays is not None and arrays[0].size:
            vid = arrays[4]
            kinds = pd.Categorical([v[0] for v in self._verdicts])
            parts.append(pd.DataFrame({"hash": arrays[0], "check": arrays[1], "ts_ns": arrays[2], "from_a": arrays[3], "vid": vid,
                                       "kind": pd.Categorical.from_codes(kinds.codes[vid], kinds.categories)},
                                      copy=False))  # fmt: skip
        epm_rows = []
        for (hi, lo, transport, port, uuid), (first, last) in self._epm.items():
            iface = self.interfaces.get(uuid)
            service = iface.service if iface is not None and iface.decisive else ""
            epm_rows.append((hi, lo, transport, port, first, last, service, uuid, iface.name if iface else "", iface is not None and iface.exchange))
        return Evidence(_rows_frame(parts), _verdict_frame(self._verdicts), _epm_frame(epm_rows),
                        self.epm_expiry_ns)  # fmt: skip


__all__ = ["DECISIVE", "DEFAULT_EPM_EXPIRY", "EVIDENCE_VALUES", "SERVER_NAME", "Evidence", "EvidenceCollector", "FlowIndex", "FlowRows"]
