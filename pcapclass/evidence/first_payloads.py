"""First payloads and their verdicts: what the first bytes of each flow in each direction say.

A first payload is looked at in compiled code (``DecidingTables.first_facts``): most are decided
by their facts alone (labels, greeting flags, port, sender), from a table filled once per distinct
combination; the few that need parsing (binds, HTTP requests, EHLO replies) are looked at in
Python once per distinct deciding bytes (``DecidingTables.deciding_bytes``, ``inspection``),
their verdicts remembered with those bytes (``verdict_sets``). Either way verdicts are spread
over the packets (``spread``), as rows. A flow whose first payload leaves more to learn is
handed to ``following``; the names a payload carries (SNI, ``Host``, a certificate's subject)
go to ``names``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._deciding import DecidingTables, PathRules, spread
from .._firstlook import (
    first_looks,
    look_context,
    same_payloads,
)
from .._identify import (
    AS_SERVER_SHIFT,
    LABEL_MASK,
    LABEL_NAMES,
    NOTIFY,
)
from ..decode import Packets
from ..flows import FlowKeys
from ..protocols import signatures as sig
from ..protocols.dcerpc import (
    PTYPE_ALTER_CONTEXT,
    PTYPE_BIND,
    PTYPE_MAX,
    PTYPE_REQUEST,
    PTYPE_RESPONSE,
    RPC_VERS_MINORS,
)
from ..protocols.http import MAX_METHOD_LEN, MAX_REQUEST_LINE
from ..protocols.rpch import NCACN_HTTP_GREETING
from ..protocols.signatures import EXPECTED_PROTOCOLS, exchange_smtp_markers
from .anomalies import EvidenceAnomalies
from .following import EPM_PORTS, FollowedFlows
from .inspection import Inspector, facts_verdict
from .names import Names
from .rows import RowLog
from .verdict_sets import VerdictSets
from .verdicts import (
    DIRECT_PUSH,
    EXCHANGE_EHLO,
    MISMATCH,
    Verdict,
    VerdictTable,
)

#: TCP/UDP port of Direct Push (docs/exchange-wire-facts.md §6)
DIRECT_PUSH_PORT = 2883
#: what a multi-line SMTP reply starts with, and the least an EHLO reply worth a look holds
EHLO_REPLY, MIN_EHLO_REPLY = b"250-", 8
#: what a Direct Push request starts with (docs/exchange-wire-facts.md §6)
DIRECT_PUSH_NOTIFY = (b"NOTIFY ", b"NOTIFY\t")
#: the Microsoft SMTP service's greeting (IIS; Exchange 2003 runs on it)
MICROSOFT_SMTP_BANNER = b"MICROSOFT ESMTP MAIL SERVICE"

#: signatures.py's byte strings and sets, for the compiled first look (``SignatureTables.facts``)
SIGNATURE_TABLES = DecidingTables(
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
_DCERPC_CODE = LABEL_NAMES.index("dcerpc")


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

#: whether a PDU type (a byte) is a call's (a connection's traffic once bound)
_CALL_PTYPE = np.zeros(256, dtype=np.uint8)
_CALL_PTYPE[[PTYPE_REQUEST, PTYPE_RESPONSE]] = 1


class FirstPayloads:
    """The verdicts of first payloads met so far, by facts and by deciding bytes."""

    def __init__(self, *, inspector: Inspector, sets: VerdictSets, verdicts: VerdictTable, rows: RowLog,
                 following: FollowedFlows, names: Names, counts: EvidenceAnomalies) -> None:  # fmt: skip
        self.inspector = inspector
        self._counts = counts
        #: what distinct first payloads said (by their bytes), remembered across batches
        self.sets = sets
        self._verdicts, self._rows, self._following, self._names = verdicts, rows, following, names
        paths = inspector.http_paths
        self.path_rules = PathRules(prefixes=[r.prefix for r in paths.paths], queries=[[(q.param, q.value) for q in r.queries]
                                                                                        for r in paths.paths],
                                    rpc_proxy=paths.rpc_http.proxy, rpc_methods=sorted(paths.rpc_http.methods))  # fmt: skip
        #: verdict id of an unrecognizable first payload, by server port * 2 + sent by the server (-1: none yet)
        self._quiet_vids = np.full(2 * 65536, -1, dtype=np.int32)
        #: verdict set of a first payload that needs no parsing, by its fact key (sorted; filled
        #: once per distinct key)
        self._fact_keys, self._fact_sids = np.zeros(0, np.uint64), np.zeros(0, np.int64)

    def look(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, idx: npt.NDArray[np.intp]) -> None:
        """The first payloads ``idx`` of their flows in their direction: the compiled first look
        (``first_looks``), vectorized shortcuts, then one look per distinct payload."""
        quiet, pair, sel, tcp, server_port, server_is_src, off, plen = first_looks(
            data, idx, pk.payload_off, pk.payload_len, pk.proto, pk.sport, pk.dport,
            _SERVICE_PORT, _MUST_SERVER, _MUST_CLIENT, DIRECT_PUSH_PORT, _MIN_DECISIVE,
        )  # fmt: skip
        # an unrecognizable first payload on a port whose protocol must show: port-mismatch
        if quiet.size:
            vids = self._quiet_vids[pair]
            if (vids < 0).any():
                for u in np.unique(pair[vids < 0]).tolist():
                    self._quiet_vids[u] = self._verdicts.vid(Verdict(MISMATCH, "", f"unrecognized payload on tcp/{u >> 1}", server_is_sender=u & 1))
                vids = self._quiet_vids[pair]
            self._rows.add_rows(keys, pk, quiet, vids)
        if sel.size:
            self.inspect_distinct(data, pk, keys, sel, tcp, server_port, server_is_src, off, plen)

    def inspect_distinct(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, sel: npt.NDArray[np.intp],
                          tcp: npt.NDArray[np.bool_], server_port: npt.NDArray[np.int64], server_is_src: npt.NDArray[np.bool_],
                          off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """Verdicts of first payloads ``sel`` (``off``, ``plen``: where their payloads are): those
        whose compiled facts decide them from a table, the others (DCE/RPC binds, HTTP requests,
        ``ncacn_http``, EHLO replies) by one Python look per distinct payload."""
        sets = self.sets
        # a DCE/RPC payload of whole PDUs with no bind decides by its facts, unless it is calls:
        # a connection seen mid-stream, whose PDU count and first operation the verdict names
        facts, key, sid, named, shown, unknown, looked = SIGNATURE_TABLES.first_facts(
            data, off, plen, tcp.view(np.uint8), server_port, server_is_src.view(np.uint8), _CALL_PTYPE, self._fact_keys, self._fact_sids,
        )  # fmt: skip
        if named.size:
            self._names.server_names(data, pk, keys, sel[named], off[named], plen[named])
        if shown.size:
            self._names.cert_subjects(data, pk, keys, sel[shown], off[shown], plen[shown])
        if unknown.size:
            sid[unknown] = self._new_fact_sets(key[unknown], facts[unknown], tcp[unknown], server_port[unknown], server_is_src[unknown])
        if looked.size:
            sid[looked] = self._parsed_sets(data, off[looked], plen[looked], tcp[looked], server_port[looked],
                                            server_is_src[looked], facts[looked])  # fmt: skip
        sets.build()
        # binds that did not parse are counted per payload (a verdict set counts those of its payload)
        rows, vids, unparsed, js = spread(sel, sid, sets.n, sets.start, sets.flat, sets.follow.view(np.uint8), sets.unparsed)
        self._counts.dcerpc_pdus_unparsed += unparsed
        self._rows.add_rows(keys, pk, rows, vids)
        if js.size:
            self._following.start(data, pk, keys, sel, js, server_port, sid)

    def _new_fact_sets(self, key: npt.NDArray[np.uint64], facts: npt.NDArray[np.int32], tcp: npt.NDArray[np.bool_],
                       server_port: npt.NDArray[np.int64], server_is_src: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:  # fmt: skip
        """The verdict sets of payloads whose facts alone decide them, by fact ``key``s
        (``first_facts``) not in the table of those met so far: each is decided here, once,
        and added to the table."""
        new, at = np.unique(key, return_index=True)
        sids = [self._fact_set(*args) for args in zip(facts[at].tolist(), tcp[at].tolist(), server_port[at].tolist(),
                                                      server_is_src[at].tolist())]  # fmt: skip
        keys = np.concatenate([self._fact_keys, new])
        order = np.argsort(keys)
        self._fact_keys, self._fact_sids = keys[order], np.concatenate([self._fact_sids, sids]).astype(np.int64)[order]
        return self._fact_sids[np.searchsorted(self._fact_keys, key)]

    def _fact_set(self, facts: int, tcp: bool, server_port: int, server_is_src: bool) -> int:
        """The verdict set of a payload its facts decide: a UDP Direct Push request, a TCP
        payload by its labels (a DCE/RPC one of whole PDUs without binds also by whether its
        flow is followed: on an endpoint-mapper port, for the reply towers)."""
        if not tcp:
            return self.sets.set_of([self._verdicts.vid(DIRECT_PUSH)] if facts & NOTIFY else [], False, None)
        v = facts_verdict(facts, server_port, server_is_src, False)
        follow = (facts >> AS_SERVER_SHIFT) & LABEL_MASK == _DCERPC_CODE and server_port in EPM_PORTS
        return self.sets.set_of([self._verdicts.vid(v)] if v is not None else [], follow, None)

    def _parsed_sets(self, data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], plen: npt.NDArray[np.int64],
                     tcp: npt.NDArray[np.bool_], server_port: npt.NDArray[np.int64], server_is_src: npt.NDArray[np.bool_],
                     facts: npt.NDArray[np.int32]) -> npt.NDArray[np.int64]:  # fmt: skip
        """The verdict set of each payload that needs parsing: those that say the same (same
        deciding bytes, as ``deciding_bytes`` leaves them, same facts, same context: port guess,
        transport, sender) are looked at once, ever, found by digest, then by those bytes and
        context; ``Inspector.inspect`` reads the deciding bytes and the facts of the payload itself."""
        sets = self.sets
        context = look_context(server_port, tcp.view(np.uint8), server_is_src.view(np.uint8)) | (facts.astype(np.int64) << 20)
        buf, off, plen, group = SIGNATURE_TABLES.deciding_bytes(data, off, plen, context, self.path_rules)
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
                v, fol, preset, unparsed = self.inspector.inspect(payload, port, src, fact)
                got.append(sets.add(digest, ctx, payload, [self._verdicts.vid(x) for x in v], fol, preset, unparsed))
            sid[looked] = got
            rep = looked[which]
            same = (context[new] == context[rep]) & same_payloads(buf, off[new], plen[new], buf, off[rep], plen[rep])
            sid[new[same]] = sid[rep[same]]
            new = new[sid[new] < 0]
        return sid

    def ehlo_replies(self, data: npt.NDArray[np.uint8], pk: Packets, keys: FlowKeys, idx: npt.NDArray[np.intp]) -> None:
        """Multi-line 250 replies among the later TCP payloads ``idx`` that start EHLO_REPLY (at
        least MIN_EHLO_REPLY bytes, as ``_laterlooks.later_looks`` finds them): Exchange-only EHLO
        keywords prove an Exchange SMTP server. An EHLO reply is a server's second payload, so
        "250-" lines are looked at wherever they are."""
        proven = []
        for p in idx.tolist():
            o = int(pk.payload_off[p])
            if exchange_smtp_markers(data[o : o + int(pk.payload_len[p])].tobytes()):
                proven.append(p)
        if proven:
            vid = self._verdicts.vid(EXCHANGE_EHLO)
            self._rows.add_rows(keys, pk, np.array(proven, dtype=np.intp), np.full(len(proven), vid, dtype=np.int32))
