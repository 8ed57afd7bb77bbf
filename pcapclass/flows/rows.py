"""Evidence rows joined to their flows: which flow of a record table each row belongs to.

A row of the payload stage is keyed by its flow's key (``hash``, ``check``) and a timestamp; a
flow is the record with that key whose span holds the timestamp (of several, a 5-tuple reused
after an idle gap, the first in the table). ``FlowIndex`` is that join, done once per flow,
and ``FlowRows`` its result, handed to each pass that classifies those flows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._flowkeys import KeyIndex
from .table import Records


@dataclass(frozen=True, slots=True)
class FlowRows:
    """Evidence rows matched to flows: flow index, verdict id, sender was endpoint A.

    Joined once per flow (``EvidenceCollector.take`` as flows finish, or ``classify.flow_rows``)
    and handed to each pass that classifies those flows.
    """

    flow: npt.NDArray[np.int64]
    vid: npt.NDArray[np.int64]
    from_a: npt.NDArray[np.bool_]

    def blocks(self, size: int, count: int) -> list[FlowRows]:
        """The rows of each of ``count`` blocks of ``size`` flows (``recs.cols[:, start:start + size]``),
        numbered as the block numbers its flows, in their order here: one grouping of the rows,
        not a scan of them all per block."""
        block = (self.flow // size).astype(np.min_scalar_type(count))  # few blocks: a radix sort
        order = np.argsort(block, kind="stable")
        parts = np.split(order, np.cumsum(np.bincount(block, minlength=count))[:-1])
        return [FlowRows(self.flow[mine] - i * size, self.vid[mine], self.from_a[mine]) for i, mine in enumerate(parts)]

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
        return self._index.flows(h, check, ts_ns)
