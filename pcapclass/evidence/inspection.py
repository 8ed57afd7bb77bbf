"""The Python look at one TCP first payload whose compiled facts do not decide it: DCE/RPC binds
and calls, ``ncacn_http`` greetings, HTTP request lines, EHLO replies.

Run once per distinct deciding bytes (``first_payloads``), so rare by construction. The facts
of ``SignatureTables.facts`` (labels, greeting flags) are turned into a verdict here too
(``facts_verdict``), for the payloads they decide alone.
"""

from __future__ import annotations

from .._identify import (
    AS_CLIENT_SHIFT,
    AS_SERVER_SHIFT,
    EHLO_MARKERS,
    LABEL_MASK,
    LABEL_NAMES,
    LONG,
    SHARED_MASK,
    SHARED_NAMES,
    SHARED_SHIFT,
    SMTP_BANNER,
)
from .._identify import EXCHANGE_GREETING as GREETS_EXCHANGE
from ..protocols.dcerpc import (
    PTYPE_ALTER_CONTEXT,
    PTYPE_BIND,
    PduReassembler,
    looks_like_dcerpc,
)
from ..protocols.emsmdb import EMSMDB_INTERFACE
from ..protocols.epm import EPM_INTERFACE
from ..protocols.http import HttpPathTable, classify_request, parse_request_line
from ..protocols.proofs import EXCHANGE_GREETING, MICROSOFT_SMTP_GREETING, RPC_OVER_HTTP
from ..protocols.rpch import NCACN_HTTP_GREETING
from ..protocols.signatures import EXPECTED_PROTOCOLS, label_contradicts_port
from .binds import Binds
from .following import EPM_PORTS
from .verdicts import (
    EXCHANGE_EHLO,
    MISMATCH,
    PROTOCOL_ONLY,
    SIGNATURE_SERVICES,
    Verdict,
    calls,
)

#: the contexts a followed flow starts with (None: parse its first payload)
Preset = list[tuple[int, str]] | None


class Inspector:
    """Looks at one first payload at a time, with the interface and HTTP path tables."""

    def __init__(self, binds: Binds, http_paths: HttpPathTable) -> None:
        self._binds = binds
        self.http_paths = http_paths

    def inspect(self, payload: bytes, server_port: int, server_is_src: bool, facts: int) -> tuple[list[Verdict], bool, Preset, int]:
        """Verdicts of one TCP first payload (``facts``: what ``SignatureTables.facts`` says of it),
        whether to follow the flow, its preset: the contexts its binds name when they are
        all it holds, or none for an IN channel's bare HTTP headers (a followed flow then starts
        from them unparsed, at a PDU boundary); None when neither; and how many of its binds
        did not parse (``EvidenceAnomalies.dcerpc_pdus_unparsed``)."""
        preset: Preset = None
        verdicts: list[Verdict] = []
        follow = False
        unparsed = 0
        if payload[0] == 5 and looks_like_dcerpc(payload):
            pdus = PduReassembler(resync_segments=0).feed(payload)
            whole = sum(map(len, pdus)) == len(payload)
            follow = not whole or server_port in EPM_PORTS
            if whole and all(pdu[2] in (PTYPE_BIND, PTYPE_ALTER_CONTEXT) for pdu in pdus):
                preset = [c for pdu in pdus for c in self._binds.contexts(pdu)]
            for pdu in pdus:
                v, fol, whole_bind = self._pdu_verdict(pdu)
                verdicts += v
                follow |= fol
                unparsed += not whole_bind
            if whole and not verdicts:
                verdicts += calls(pdus)
        elif payload.startswith(NCACN_HTTP_GREETING):
            # the back-end's first bytes on an RPC over HTTP leg: the service of its port
            port = server_port if server_is_src and server_port >= 0 else -1
            service = self.http_paths.rpc_http.ports.get(port, "")
            proof = RPC_OVER_HTTP if port in self.http_paths.rpc_http.exchange_ports else ""
            verdicts.append(Verdict("rpc-http", service, f"ncacn_http:{port}" if port > 0 else "ncacn_http", server_is_sender=1,
                                     protocol="ncacn_http", proof=proof))  # fmt: skip
            for pdu in PduReassembler(resync_segments=0).feed(payload[len(NCACN_HTTP_GREETING):]):
                v, _, whole_bind = self._pdu_verdict(pdu)
                verdicts += v
                unparsed += not whole_bind
        elif 0x21 <= payload[0] < 0x7F:
            req = parse_request_line(payload)
            if req is not None:
                hv = classify_request(req, table=self.http_paths)
                if hv is not None:
                    verdicts.append(Verdict(hv.evidence, hv.service, hv.detail, server_is_sender=0, protocol="http", proof=hv.proof))
                    # the IN channel carries RTS then ordinary PDUs (binds) after the headers
                    follow = hv.evidence == "rpc-http" and req.method.upper() == "RPC_IN_DATA"
                    if follow and payload.find(b"\r\n\r\n") == len(payload) - 4:
                        preset = []  # headers only: the flow waits for its PDUs as a bind's does
        if facts & EHLO_MARKERS:
            verdicts.append(EXCHANGE_EHLO)
        label = facts_verdict(facts, server_port, server_is_src, any(x.protocol for x in verdicts))
        return ([*verdicts, label] if label is not None else verdicts), follow, preset, unparsed


    def _pdu_verdict(self, pdu: bytes) -> tuple[list[Verdict], bool, bool]:
        """Rows a stand-alone PDU gives (binds), whether its flow is worth following, and False
        for a bind whose context list did not parse whole."""
        ptype = pdu[2]
        if ptype in (PTYPE_BIND, PTYPE_ALTER_CONTEXT):
            out: list[Verdict] = []
            follow = False
            contexts, whole = self._binds.parsed(pdu)
            for _, interface in contexts:
                out.append(self._binds.verdict(interface, "bind"))
                follow |= interface in (EPM_INTERFACE, EMSMDB_INTERFACE)
            return out, follow, whole
        return [], False, True


def facts_verdict(facts: int, server_port: int, server_is_src: bool, protocol_known: bool) -> Verdict | None:
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
            return named(facts, label, from_server)
    else:
        from_server, label = bool(server_is_src), as_server
    exp = EXPECTED_PROTOCOLS.get(server_port) if server_port >= 0 else None
    shared = SHARED_NAMES[(facts >> SHARED_SHIFT) & SHARED_MASK] if from_server else None
    if exp is not None and label_contradicts_port(server_port, label, shared, bool(facts & LONG), from_server=from_server):
        return Verdict(MISMATCH, "", f"{label or 'unrecognized payload'} on tcp/{server_port}", server_is_sender=int(from_server),
                        protocol=label or "")  # fmt: skip
    if label is not None and label not in SIGNATURE_SERVICES and exp is not None:
        # confirms the port: the port's service, decided by a signature
        return Verdict("signature", "", label, server_is_sender=int(from_server), protocol=label)
    if label is not None and not protocol_known:
        return named(facts, label, from_server)
    return None

def named(facts: int, label: str | None, from_server: bool) -> Verdict:
    """What a payload identified as ``label`` says: the service of a text protocol (with the
    proof an Exchange greeting is), else the protocol alone."""
    sender = int(from_server)
    assert label is not None  # two different labels: one is not None
    if label not in SIGNATURE_SERVICES:
        return Verdict(PROTOCOL_ONLY, "", label, server_is_sender=sender, protocol=label)
    service = SIGNATURE_SERVICES[label]
    if from_server and facts & GREETS_EXCHANGE:
        return Verdict("signature", service, f"exchange-{service}", server_is_sender=sender, protocol=label, proof=EXCHANGE_GREETING)
    if from_server and label == "smtp" and facts & SMTP_BANNER:
        return Verdict("signature", service, label, server_is_sender=sender, protocol=label, proof=MICROSOFT_SMTP_GREETING)
    return Verdict("signature", service, label, server_is_sender=sender, protocol=label)
