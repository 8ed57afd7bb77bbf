"""The evidence rows: a verdict id per flow key (``hash``, ``check``), time and sender side.

Rows are kept as arrays, one part per batch (``add_rows``; ``add_part`` for rows given by their
columns, such as datagrams of earlier batches), plus the few found one at a time (``add_row``:
binds of followed flows, notifications). ``take`` hands over the rows of finished
flows, joined to them as ``classify`` joins rows (``pcapclass.flows.FlowIndex``), and forgets
them: the rows held stay those of open flows, so memory does not grow with the capture.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..decode import Packets
from ..flows import FlowIndex, FlowKeys, FlowRows, Records
from .learned import rows_frame
from .verdicts import VerdictRow

#: parts of held rows ``take`` goes through one by one before it joins them into one (many
#: small parts cost a numpy call each; one large one costs a copy of the rows held)
_TAKE_PARTS = 16

#: a part: hash, check, ts_ns, from_a, vid
_Part = tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int32]]


class RowLog:
    """The rows found and not yet taken, in the order they were found."""

    def __init__(self) -> None:
        self._parts: list[_Part] = []
        self._rows: list[tuple[int, int, int, bool, int]] = []

    def add_rows(self, keys: FlowKeys, pk: Packets, idx: npt.NDArray[np.intp], vids: npt.NDArray[np.int32]) -> None:
        """A row per packet ``idx`` of the batch, with verdict ``vids``."""
        if idx.size:
            self.add_part(*keys.at(idx, pk.ts_ns), vids)

    def add_part(self, hsh: npt.NDArray[np.uint64], check: npt.NDArray[np.uint64], ts_ns: npt.NDArray[np.int64],
                 from_a: npt.NDArray[np.bool_], vids: npt.NDArray[np.int32]) -> None:  # fmt: skip
        """Rows given by their columns (packets of earlier batches, whose rows are gone)."""
        if hsh.size:
            self._parts.append((hsh, check, ts_ns, from_a, vids.astype(np.int32, copy=False)))

    def add_row(self, hsh: int, check: int, ts: int, from_a: bool, vid: int) -> None:
        """One row."""
        self._rows.append((hsh, check, ts, from_a, vid))

    def _joined(self) -> list[npt.NDArray[np.generic]]:
        """The rows not yet taken, as (hash, check, ts_ns, from_a, vid) arrays in the order
        they were found; they replace the parts they were made of (one copy, not two)."""
        cols: list[tuple[Any, ...]] = list(zip(*self._parts)) if self._parts else [() for _ in range(5)]
        extra: list[tuple[Any, ...]] = list(zip(*self._rows)) if self._rows else [() for _ in range(5)]
        dtypes = (np.uint64, np.uint64, np.int64, bool, np.int32)
        arrays = [np.concatenate([*(np.asarray(c, dtype=t) for c in part), np.array(e, dtype=t)])
                  for part, e, t in zip(cols, extra, dtypes)]  # fmt: skip
        self._parts, self._rows = ([tuple(arrays)] if arrays[0].size else []), []  # type: ignore[list-item]
        return arrays

    def take(self, recs: Records) -> FlowRows:
        """The rows of these finished flows (joined as ``classify`` joins them: same key, found
        within the flow's span), handed over and forgotten here; joined a batch's part at a time."""
        if self._rows or len(self._parts) > _TAKE_PARTS:
            self._joined()  # a few large parts, not thousands of small ones
        if not self._parts or not len(recs):
            return FlowRows.empty()
        index = FlowIndex(recs)
        taken: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.bool_]]] = []
        kept = []
        for part in self._parts:
            h, check, ts_ns, from_a, vid = part
            flow = index.flows(h, check, ts_ns)
            # by position: rows of finished and open flows interleave, and a boolean mask that
            # keeps rows here and there copies several times slower than the positions do
            mine = np.flatnonzero(flow >= 0)
            if mine.size:
                taken.append((flow[mine], vid[mine], from_a[mine]))
                if mine.size < flow.size:
                    rest = np.flatnonzero(flow < 0)
                    kept.append(tuple(a[rest] for a in part))
            else:
                kept.append(part)
        self._parts = kept  # type: ignore[assignment]
        if not taken:
            return FlowRows.empty()
        return FlowRows(np.concatenate([t[0] for t in taken]), np.concatenate([t[1] for t in taken]).astype(np.int64),
                        np.concatenate([t[2] for t in taken]))  # fmt: skip

    def frame(self, verdicts: list[VerdictRow]) -> pd.DataFrame:
        """Every row held, as the ``Evidence.rows`` table (``verdicts``: the verdict table's rows)."""
        arrays = self._joined()
        parts = []
        if arrays[0].size:
            vid = arrays[4]
            kinds = pd.Categorical([v[0] for v in verdicts])
            parts.append(pd.DataFrame({"hash": arrays[0], "check": arrays[1], "ts_ns": arrays[2], "from_a": arrays[3], "vid": vid,
                                       "kind": pd.Categorical.from_codes(kinds.codes[vid], kinds.categories)},
                                      copy=False))  # fmt: skip
        return rows_frame(parts)
