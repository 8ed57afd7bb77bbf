"""What a payload says about its flow (a ``Verdict``), the kinds of evidence, and the table of
distinct verdicts every evidence row points into.

A verdict is relative to its payload's sender (``server_is_sender``), so that one verdict serves
every flow whose payload says the same; ``VerdictTable`` numbers the distinct ones (a row's
``vid``) and is the only place they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..protocols.dcerpc import PTYPE_REQUEST, PTYPE_RESPONSE, parse_request
from ..protocols.proofs import EXCHANGE_HTTP, EXCHANGE_SMTP

#: evidence values a flow can carry, strongest first (classify picks the first that applies)
DECISIVE = ("bind", "epm", "rpc-http", "http", "signature", "registration", "dcerpc")
EVIDENCE_VALUES = (*DECISIVE, "port", "port-mismatch", "heuristic", "none")
#: a row that names an interface (unknown UUID, or one shared with non-Exchange software) only
INTERFACE_ONLY = "interface"
#: a row that names only the protocol its payload starts (see ``signatures.identify``)
PROTOCOL_ONLY = "protocol"
#: a first payload that is one whole DCE/RPC call PDU: the connection was bound before the
#: capture began if the other direction's first payload is one too (classify makes it ``dcerpc``)
ONE_CALL = "dcerpc-call"
MISMATCH = "port-mismatch"
#: a row that names the server a client asked for (TLS SNI, HTTP ``Host``): the detail is the
#: name, lower-cased; it decides nothing else, so it ranks after every other kind
SERVER_NAME = "server-name"
#: a row that names the subject of the certificate a TLS server showed (RFC 4514 text, in the detail)
CERT_SUBJECT = "cert-subject"
#: a short datagram that its receiver's DCE/RPC request to its sender followed at once
#: (``notification_timing``); classify makes it a notification when an Exchange server sent it
TIMED_NOTIFICATION = "notification-timing"
RANK = {kind: i for i, kind in enumerate((*DECISIVE, MISMATCH, INTERFACE_ONLY, ONE_CALL, PROTOCOL_ONLY, TIMED_NOTIFICATION,
                                          SERVER_NAME, CERT_SUBJECT))}  # fmt: skip
#: protocols a text signature names whatever the port (others only confirm or contradict one)
SIGNATURE_SERVICES = {"smtp": "smtp", "pop3": "pop3", "imap": "imap4", "nntp": "nntp"}
#: the protocol column's name for DCE/RPC (binds, endpoint-mapper matches, registrations)
DCERPC = "dcerpc"

#: a verdict as the table holds it: kind, service, detail, interface, name, server_is_sender,
#: client_is_sender, protocol, proof
VerdictRow = tuple[str, str, str, str, str, int, int, str, str]


@dataclass(frozen=True, slots=True)
class Verdict:
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
    #: the kind of Exchange server evidence it is for the flow's server (proofs.KINDS), '' none
    proof: str = ""


#: an EHLO reply with Exchange's keywords
EXCHANGE_EHLO = Verdict("signature", "smtp", "exchange-smtp", server_is_sender=1, protocol="smtp", proof=EXCHANGE_SMTP)
#: a Direct Push request
DIRECT_PUSH = Verdict("signature", "activesync", "direct-push", protocol="http", proof=EXCHANGE_HTTP)
#: a UDP datagram to a registered callback carrying the registered blob
NOTIFICATION = Verdict("registration", "information-store", "new-mail-notification")
#: a datagram ``notification_timing`` points at
TIMED = Verdict(TIMED_NOTIFICATION, "", "new-mail-notification")


def calls(pdus: list[bytes]) -> list[Verdict]:
    """What whole DCE/RPC PDUs with no bind among them say: a connection seen mid-stream.

    Two or more well-formed PDUs in a row (one data representation, each fragment length
    landing on the next header) are a DCE/RPC connection (``dcerpc``); one alone waits for the
    other direction's first payload to agree (``ONE_CALL``). The detail is the first call seen.
    """
    found = [(pdu[2], pdu) for pdu in pdus if pdu[2] in (PTYPE_REQUEST, PTYPE_RESPONSE)]
    if not found or len({pdu[4] for pdu in pdus}) != 1:
        return []
    ptype, first = found[0]
    req = parse_request(first) if ptype == PTYPE_REQUEST else None
    detail = f"request opnum {req.opnum}" if req is not None else "response" if ptype == PTYPE_RESPONSE else "request"
    kind = "dcerpc" if len(pdus) >= 2 else ONE_CALL
    return [Verdict(kind, "", detail, server_is_sender=int(ptype == PTYPE_RESPONSE), protocol=DCERPC)]


class VerdictTable:
    """The distinct verdicts met so far, numbered in the order they were first met."""

    def __init__(self) -> None:
        self.rows: list[VerdictRow] = []
        self._ids: dict[VerdictRow, int] = {}

    def vid(self, v: Verdict, client_is_sender: int = -1) -> int:
        """The number of ``v`` (``client_is_sender``: 1 for a registration's rows), added if new."""
        return self.number((v.kind, v.service, v.detail, v.rpc_interface, v.rpc_interface_name, v.server_is_sender,
                            client_is_sender, v.protocol, v.proof))  # fmt: skip

    def number(self, row: VerdictRow) -> int:
        """The number of a verdict given as its row, added if new."""
        vid = self._ids.get(row)
        if vid is None:
            vid = self._ids[row] = len(self.rows)
            self.rows.append(row)
        return vid
