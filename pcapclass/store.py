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
#: flows, the capture each started in, their evidence rows
Block = tuple[Records, npt.NDArray[np.int64], FlowRows]


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
        self._mem: list[Block] = []
        self._mem_rows = 0
        #: the flows in memory sorted and cut into blocks, made once until more are added (a run
        #: reads its blocks twice: ``pipeline``)
        self._blocks: list[Block] | None = None
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
        self._blocks = None
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
        self._mem, self._mem_rows, self._blocks = [], 0, None

    def _mem_blocks(self) -> list[Block]:
        """The flows in memory by capture then first packet, in blocks of at most
        ``spill_flows``, each with its rows: sorted and joined once (the joined part replaces
        the parts, so that the flows are not held twice)."""
        if self._blocks is not None:
            return self._blocks
        recs = Records.concat([r for r, _, _ in self._mem])
        index = np.concatenate([i for _, i, _ in self._mem]) if self._mem else np.zeros(0, np.int64)
        order = np.lexsort((recs["first_ns"], index))
        for column in recs.cols:  # in place, a field at a time: no second copy of the flows
            column[:] = column[order]
        moved = np.empty_like(order)
        moved[order] = np.arange(order.size)
        starts = np.cumsum([0] + [len(r) for r, _, _ in self._mem[:-1]]).tolist()
        rows = FlowRows.concat([w for _, _, w in self._mem], starts).renumbered(moved)
        index = index[order]
        self._mem = [(recs, index, rows)]
        if len(recs) <= self.spill_flows:
            self._blocks = [(recs, index, rows)]
        else:
            cuts = range(0, len(recs), self.spill_flows)
            self._blocks = [(Records(recs.cols[:, at : at + self.spill_flows]), index[at : at + self.spill_flows], block_rows)
                            for at, block_rows in zip(cuts, rows.blocks(self.spill_flows, len(cuts)), strict=True)]  # fmt: skip
        return self._blocks

    def blocks(self) -> Iterator[Block]:
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
