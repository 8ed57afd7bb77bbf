"""The spilling store of a run's finished flows: in memory up to a block, then in temporary files."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import OutputError
from .flows import FlowRows, Records

#: finished flows held in memory before they move to a temporary file (about 10 MB of records)
SPILL_FLOWS = 1 << 16


class FlowStore:
    """The finished flows of a run, with their evidence rows: in memory up to ``spill_flows``,
    then in temporary files.

    Memory then follows the open flows, not all the flows a capture ever had; the blocks are
    read back one at a time (memory-mapped) to be classified and written. The flows still open
    at a capture's end stay in memory until more come, so that the last ones never make a
    round trip through the disk. A block is in order of capture, then first packet.
    ``rows_of`` hands over the evidence rows of finished flows (``EvidenceCollector.take``)
    as they are added, so that the rows are those of these flows even where a flow of another
    capture has the same key and time (two mirror ports seeing one conversation); flows read
    elsewhere (``segments``) are added with their rows.
    """

    def __init__(self, spill_flows: int = SPILL_FLOWS, rows_of: Callable[[Records], FlowRows] | None = None) -> None:
        self.spill_flows = spill_flows
        self._rows_of = rows_of
        #: parts as added, or once sorted the one joined part, each with its rows
        self._mem: list[tuple[Records, npt.NDArray[np.int64], FlowRows]] = []
        self._mem_rows = 0
        self._sorted_once = False
        #: the sorted part's rows split by block, once (a run reads its blocks twice: ``pipeline``)
        self._row_blocks: list[FlowRows] | None = None
        self._files: list[tuple[Path, Path, Path]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def one_block(self) -> bool:
        """True while all the flows fit one block (they can be classified in one go)."""
        return not self._files and self._mem_rows <= self.spill_flows

    def add(self, recs: Records, capture: npt.NDArray[np.int64], *, last: bool = False, rows: FlowRows | None = None) -> None:
        """Keep ``recs`` (finished flows; ``capture``: the number of the capture each started
        in); ``last``: the flows still open at the captures' end, held in memory (whatever
        their number) until more come; ``rows``: their evidence rows (default: ``rows_of``'s)."""
        if not len(recs):
            return
        if self._mem and self._mem_rows + len(recs) > self.spill_flows:
            # what is held goes first: flows are joined for a spill only up to a block's
            # worth, and a larger part (a burst of ended flows) is sorted where it lies
            self._spill()
        self._mem.append((recs, capture, self.rows(recs, rows)))
        self._mem_rows += len(recs)
        self._sorted_once, self._row_blocks = False, None
        if self._mem_rows >= self.spill_flows and not last:
            self._spill()

    def rows(self, recs: Records, given: FlowRows | None = None) -> FlowRows:
        """The evidence rows of finished flows ``recs``: ``given``, else ``rows_of``'s."""
        if given is not None:
            return given
        return self._rows_of(recs) if self._rows_of is not None else FlowRows.empty()

    def _spill(self) -> None:
        """Move the flows in memory to temporary files; raises OutputError when they cannot be
        written (``TMPDIR`` full or unwritable)."""
        try:
            if self._dir is None:
                self._dir = tempfile.TemporaryDirectory(prefix="pcapclass-flows-")
            for recs, index, rows in self._mem_blocks():
                base = Path(self._dir.name) / f"{len(self._files):06d}"
                paths = base.with_suffix(".flows.npy"), base.with_suffix(".capture.npy"), base.with_suffix(".rows.npy")
                self._files.append(paths)
                np.save(paths[0], recs.cols)
                np.save(paths[1], index)
                np.save(paths[2], np.stack([rows.flow, rows.vid, rows.from_a.astype(np.int64)]))
        except OSError as exc:
            raise OutputError.from_os(exc, "cannot spill finished flows to a temporary file", path=tempfile.gettempdir()) from None
        self._mem, self._mem_rows, self._sorted_once, self._row_blocks = [], 0, False, None

    def _mem_blocks(self) -> Iterator[tuple[Records, npt.NDArray[np.int64], FlowRows]]:
        """The flows in memory in blocks of at most ``spill_flows``, each with its rows."""
        recs, index, rows = self._sorted()
        if len(recs) <= self.spill_flows:
            yield recs, index, rows
            return
        starts = range(0, len(recs), self.spill_flows)
        if self._row_blocks is None:
            self._row_blocks = rows.blocks(self.spill_flows, len(starts))
        for start, block_rows in zip(starts, self._row_blocks, strict=True):
            stop = start + self.spill_flows
            yield Records(recs.cols[:, start:stop]), index[start:stop], block_rows

    def _sorted(self) -> tuple[Records, npt.NDArray[np.int64], FlowRows]:
        """The flows in memory, joined, by capture then first packet, with their evidence rows
        (kept so: sorted and joined once)."""
        if self._sorted_once:
            return self._mem[0]
        recs = Records.concat([r for r, _, _ in self._mem])
        index = np.concatenate([i for _, i, _ in self._mem]) if self._mem else np.zeros(0, np.int64)
        order = np.lexsort((recs["first_ns"], index))
        for column in recs.cols:  # in place, a field at a time: no second copy of the flows
            column[:] = column[order]
        moved = np.empty_like(order)
        moved[order] = np.arange(order.size)
        starts = np.cumsum([0] + [len(r) for r, _, _ in self._mem[:-1]]).tolist()
        rows = FlowRows.concat([w for _, _, w in self._mem], starts).renumbered(moved)
        self._mem = [(recs, index[order], rows)]
        self._sorted_once = True
        return self._mem[0]

    def blocks(self) -> Iterator[tuple[Records, npt.NDArray[np.int64], FlowRows]]:
        """(flows, capture number of each, their evidence rows) block by block."""
        for cols, idx, rows in self._files:
            flow, vid, from_a = np.load(rows)
            yield Records(np.load(cols, mmap_mode="r")), np.load(idx), FlowRows(flow, vid, from_a.astype(bool))
        if self._mem:
            yield from self._mem_blocks()

    def close(self) -> None:
        """Remove the temporary files."""
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
            self._files = []
