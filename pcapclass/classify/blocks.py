"""Blocks of one run classified separately: what they must share, and what each brings to it.

A long capture's flows are classified in blocks; the inferred Exchange servers, the RPC
sessions and what binds said of their ports are gathered over every block first
(``block_facts``), so that each block is decided as if all were one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..addresses import RowSet
from ..evidence import ONE_CALL, Evidence
from ..flows import FlowRows, Records
from ..tables.services import PortLookup
from .inference import Servers, server_evidence
from .orientation import sides, transport_index
from .rpc_ports import Answers, bound_ports, epm_rows, rpc_sessions
from .verdicts import VerdictArrays, agreeing, flow_rows


@dataclass
class Shared:
    """What flows classified in separate blocks must share: the inferred Exchange servers and
    the RPC sessions (client, server) that make a UDP datagram a new-mail notification.

    Gathered over every block first (``block_facts``, ``infer_servers``, ``rpc_sessions_among``),
    they let ``classify`` decide each block as if all were one.
    """

    known: RowSet | None = None
    #: ``known`` as listed in the outputs (formatted once)
    servers: Servers | None = None
    #: (client, server) pairs of ``rpc_sessions_among``, ready for every block's lookups
    sessions: RowSet | None = None
    #: what binds said of their ports, in every block (``bound_ports``), ready to join
    bound: Answers | None = None
    #: the endpoint-mapper table (``Evidence.epm``), ready to join
    answers: Answers | None = None
    #: the verdict table (``Evidence.verdicts``) as arrays, made once for every block
    verdicts: VerdictArrays | None = None


class BlockFacts(NamedTuple):
    """What one block brings to ``Shared`` (see ``block_facts``)."""

    shown: pd.DataFrame | None
    #: (client hi, lo, server hi, lo) columns
    candidates: list[npt.NDArray[np.uint64]] | None
    bound: Answers


def block_facts(recs: Records, lookup: PortLookup, evidence: Evidence | None = None, rows: FlowRows | None = None, *,
                infer_servers: bool = True, answers: Answers | None = None,
                verdicts: VerdictArrays | None = None) -> BlockFacts:  # fmt: skip
    """What one block of a run brings to ``Shared``, in one look at its flows.

    * With ``infer_servers``: the Exchange server evidence its flows show (``server_evidence``:
      hi, lo, kind, flows); ``infer_servers`` adds the endpoint mapper's and scores them once
      every block is in. Else None.
    * With ``evidence``: (client hi, lo, server hi, lo) of the TCP flows that may be RPC
      sessions (a bind, an endpoint-mapper match, or TCP 135); which of those have an Exchange
      server on the server side is known only once every block is in (``rpc_sessions_among``).
      Else None.
    * What its binds said of their ports (``bound_ports``), for the other blocks' connections.

    ``rows``: ``flow_rows(recs, evidence)`` when already joined; ``answers``: ``evidence.epm``
    made ready (``Answers.of``) when already; ``verdicts``: ``VerdictArrays.of(evidence)`` when
    already made.
    """
    proto = recs["proto"]
    t, ported = transport_index(proto)
    verdicts = verdicts if verdicts is not None else VerdictArrays.of(evidence)
    rows = rows if rows is not None else flow_rows(recs, evidence)
    s = sides(recs, lookup, t, ported, verdicts.client_is_sender, rows)
    shown = server_evidence(recs, s, verdicts, rows) if infer_servers else None
    f, vid, _ = agreeing(rows, verdicts, s)
    bound_here = bound_ports(recs, s, verdicts, f, vid)
    if evidence is None:
        return BlockFacts(shown, None, bound_here)
    # a flow's evidence is bind or epm exactly when it has a bind row or an endpoint-mapper
    # match (nothing outranks those two), so the candidates need the join, not the decision
    bound = np.zeros(proto.shape[0], dtype=bool)
    if rows is not None:
        bound[rows.flow[np.flatnonzero(np.isin(verdicts.kind, ("bind", "dcerpc", ONE_CALL))[rows.vid])]] = True
    if not evidence.epm.empty:
        answers = answers if answers is not None else Answers.of(evidence.epm)
        mapped, row = epm_rows(answers, evidence.epm_expiry_ns, proto, s, recs["first_ns"])
        bound[mapped[answers.named.kind[answers.vid[row]] == "epm"]] = True
    return BlockFacts(shown, rpc_sessions(proto, s, bound), bound_here)
