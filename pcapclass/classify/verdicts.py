"""The evidence as ``classify`` reads it: the verdict table as arrays, and the rows that count.

Decisions run on verdict ids (integers); names are attached only at the end. A row counts for
its flow when its sender is the side the verdict expects (``agreeing``, once flows are
oriented); a lone call PDU first in each direction becomes a ``dcerpc`` verdict
(``calls_both_ways``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..evidence import DCERPC, EVIDENCE_VALUES, INTERFACE_ONLY, ONE_CALL, Evidence
from ..flows import FlowIndex, FlowRows, Records
from .orientation import Sides

#: the evidence column's names, in code order, and the code of each
EVIDENCE_NAMES = np.array(EVIDENCE_VALUES, dtype=object)
EV = {name: code for code, name in enumerate(EVIDENCE_VALUES)}


@dataclass(frozen=True, slots=True)
class VerdictArrays:
    """The evidence verdict table as arrays indexed by verdict id (decisions stay integer)."""

    kind: npt.NDArray[np.object_]
    service: npt.NDArray[np.object_]
    detail: npt.NDArray[np.object_]
    iface: npt.NDArray[np.object_]
    name: npt.NDArray[np.object_]
    server_is_sender: npt.NDArray[np.int8]
    client_is_sender: npt.NDArray[np.int8]
    protocol: npt.NDArray[np.object_]
    proof: npt.NDArray[np.object_]

    @staticmethod
    def of(evidence: Evidence | None) -> VerdictArrays:
        """The verdicts of ``evidence`` (none without it)."""
        table = evidence.verdicts if evidence is not None else pd.DataFrame(columns=["kind"])

        def col(c: str, t: type[np.generic] = np.object_) -> npt.NDArray[Any]:
            return table[c].to_numpy(dtype=t) if c in table else np.zeros(0, t)

        return VerdictArrays(col("kind"), col("service"), col("detail"), col("rpc_interface"), col("rpc_interface_name"),
                             col("server_is_sender", np.int8), col("client_is_sender", np.int8), col("protocol"), col("proof"))  # fmt: skip

    def as_kind(self, vids: npt.NDArray[np.int64], kind: str) -> tuple[VerdictArrays, npt.NDArray[np.int64]]:
        """Copies of verdicts ``vids`` with another kind: (table, the copies' ids)."""
        uniq, inverse = np.unique(vids, return_inverse=True)
        grown = VerdictArrays(*(np.concatenate([a, a[uniq]]) for a in (self.kind, self.service, self.detail, self.iface, self.name,
                                                                  self.server_is_sender, self.client_is_sender, self.protocol, self.proof)))  # fmt: skip
        grown.kind[len(self.kind):] = kind
        return grown, len(self.kind) + inverse.reshape(-1)

    @staticmethod
    def answered(service: npt.NDArray[np.object_], iface: npt.NDArray[np.object_], name: npt.NDArray[np.object_],
                 detail: npt.NDArray[np.object_]) -> VerdictArrays:  # fmt: skip
        """Verdicts as DCE/RPC endpoint-mapper answers (or binds elsewhere) give them: ``epm``
        where the answer names a service, else ``interface``; either side sends; no proof."""
        kind = np.where(service != "", "epm", INTERFACE_ONLY).astype(object)
        minus = np.full(kind.size, -1, dtype=np.int8)
        return VerdictArrays(kind, service, detail, iface, name, minus, minus.copy(), np.full(kind.size, DCERPC, dtype=object),
                             np.full(kind.size, "", dtype=object))  # fmt: skip

    def concat(self, more: VerdictArrays) -> tuple[VerdictArrays, int]:
        """These verdicts, then ``more``'s: (table, the id ``more``'s first takes)."""
        return VerdictArrays(*(np.concatenate([getattr(self, f.name), getattr(more, f.name)]) for f in fields(VerdictArrays))), self.kind.size


def flow_rows(recs: Records, evidence: Evidence | None) -> FlowRows | None:
    """Evidence rows joined to their flow (``FlowIndex``: same key, time inside the flow's
    span), for flows whose rows were not taken with them (live capture, callers of classify)."""
    if evidence is None or evidence.rows.empty or not len(recs):
        return None
    rows = evidence.rows
    flow = FlowIndex(recs).flows(rows["hash"].to_numpy(np.uint64), rows["check"].to_numpy(np.uint64), rows["ts_ns"].to_numpy(np.int64))
    ok = flow >= 0
    return FlowRows(flow[ok], rows["vid"].to_numpy(np.int64)[ok], rows["from_a"].to_numpy(bool)[ok])



def agreeing(rows: FlowRows | None, verdicts: VerdictArrays, s: Sides) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The rows (flow, verdict, sent by A) whose sender is the side the verdict expects."""
    if rows is None or not rows.flow.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    sis = verdicts.server_is_sender[rows.vid]
    sender_is_server = rows.from_a != s.client_is_a[rows.flow]
    ok = (sis == -1) | ((sis == 1) & sender_is_server) | ((sis == 0) & ~sender_is_server)
    return rows.flow[ok], rows.vid[ok], rows.from_a[ok]


def calls_both_ways(f: npt.NDArray[np.int64], vid: npt.NDArray[np.int64], from_a: npt.NDArray[np.bool_], verdicts: VerdictArrays,
                     n: int) -> tuple[VerdictArrays, npt.NDArray[np.int64]]:  # fmt: skip
    """A lone call PDU first in each direction of one flow is a DCE/RPC connection seen
    mid-stream: those rows become ``dcerpc`` verdicts (the others stay as they are)."""
    one = (verdicts.kind == ONE_CALL)[vid]
    if not one.any():
        return verdicts, vid
    sides = np.zeros((n, 2), dtype=bool)
    sides[f[one], from_a[one].astype(np.int64)] = True
    both = one & sides[f].all(axis=1)
    if not both.any():
        return verdicts, vid
    verdicts, promoted = verdicts.as_kind(vid[both], "dcerpc")
    vid = vid.copy()
    vid[both] = promoted
    return verdicts, vid
