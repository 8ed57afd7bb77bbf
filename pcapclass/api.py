"""The library API the CLI calls: captures in, pandas DataFrames out.

``Classifier`` is the pipeline's reading phase (read → decode → flows → evidence) fed step by
step (several files, or batches from a live source); its ``result`` and ``write`` hand what it
gathered to the merge phase (``pipeline``). A run over many captures, here or on Dask workers,
is ``session``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt

from .accounting import CaptureCounts
from .addresses import Network, parse_networks
from .ahead import DEPTH, ahead, quick_handover
from .classify import flow_rows
from .decode import Packets, decode
from .errors import CaptureError, CaptureInterruptedError
from .evidence import DEFAULT_EPM_EXPIRY, EvidenceCollector
from .flows import CLOSED_GRACE_NS, FlowKeys, FlowRows, FlowTable, Records, flow_keys
from .output import Format
from .pipeline import Criteria, Gathered, Result, Snapshot, merge, merge_to
from .sources import CaptureFile, PacketBatch
from .sources.inputs import CaptureInput, resolve_captures
from .store import FlowStore
from .summarize import DEFAULT_BY, grouping
from .tables.rules import RuleSet, load_rules
from .tables.server_evidence import load_server_evidence
from .timeseries import PacketIntervals

DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_MAX_FLOWS = 2_000_000

ProgressFn = Callable[[int, int], None]


#: finished flows the flow table hands over at a time (its buffer of them stays small)
DRAIN_FLOWS = 1 << 14

#: a batch's bytes must outlive the batches decoded ahead of it: each of the two stages ahead
#: holds its queue and the batch it works on, the evidence stage one more, plus a spare
AHEAD_CHUNKS = 2 * (DEPTH + 1) + 2


def _decoded(batch: PacketBatch) -> tuple[Packets, FlowKeys]:
    """A batch's headers and flow keys: the compiled half of the per-batch work."""
    pk = decode(batch)
    return pk, flow_keys(pk)


class Classifier:
    """The pipeline, fed one capture (or one batch) at a time; ``result()`` classifies all.

    A capture starts its flows afresh, unless it ``continues`` the one before (``read_input``:
    a ring buffer's next file, which starts where the last one stopped): then its packets carry
    on the open flows, as they would in one file. A flow row belongs to the input of its first
    packet.
    """

    def __init__(
        self,
        *,
        servers: Sequence[str | Network] = (),
        rules: RuleSet | Iterable[str | os.PathLike[str]] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
        payload: bool = True,
        epm_expiry: float = DEFAULT_EPM_EXPIRY,
        interval: float | None = None,
    ) -> None:
        self.rules = rules if isinstance(rules, RuleSet) else load_rules(rules or ())
        #: what another Classifier needs to read as this one does (a worker's, ``session``)
        self.settings: dict[str, Any] = {"servers": servers, "rules": self.rules, "idle_timeout": idle_timeout, "max_flows": max_flows,
                                             "payload": payload, "epm_expiry": epm_expiry, "interval": interval}  # fmt: skip
        #: the payload stage (None with ``payload=False``: services by port only)
        self.evidence = EvidenceCollector(interfaces=self.rules.interfaces, http_paths=self.rules.http_paths, epm_expiry=epm_expiry,
                                          idle_timeout=idle_timeout) if payload else None  # fmt: skip
        self.lookup = self.rules.lookup()
        #: what makes a host an Exchange server when ``servers`` names none
        self.server_rules = load_server_evidence()
        self.networks = [s if not isinstance(s, str) else parse_networks([s])[0] for s in servers]
        self.idle_timeout_ns = int(idle_timeout * 1e9)
        self.max_flows = max_flows
        self.counts: list[CaptureCounts] = []
        self.store = FlowStore(rows_of=self.evidence.take if self.evidence is not None else None)
        self.table = self._new_table()
        #: the first input whose flows the table holds (earlier inputs' flows are all finished)
        self._segment = 0
        #: the table's counters when the current input began (its capture.csv row gets the difference)
        self._stats_before = (0, 0)
        #: the signal that asked reading to stop (``interrupt``), or None
        self.interrupted: int | None = None
        #: each packet's counts per interval, for the time series (``interval`` seconds), or None
        self.intervals = PacketIntervals(interval) if interval is not None else None

    def _new_table(self) -> FlowTable:
        return FlowTable(idle_timeout_ns=self.idle_timeout_ns, max_flows=self.max_flows)

    def begin(self, name: str, fmt: str = "", *, continues: bool = False) -> CaptureCounts:
        """Start a new input; later ``feed`` calls count towards it. Its flows start afresh,
        unless it ``continues`` the previous input's."""
        if not continues:
            self.finish()
        self.counts.append(CaptureCounts(capture=name, format=fmt))
        self._stats_before = (self.table.stats.hash_collisions, self.table.stats.flows_exported_early)
        return self.counts[-1]

    def finish(self) -> None:
        """Every open flow becomes a finished record (the end of reading, or an input that
        does not continue the last); the next input starts a new table."""
        if len(self.table) or self.table.finished:
            self._keep_finished(self.table.drain_all(), last=True)
        # a new table: the emptied one's memory is not held while the flows are written
        self.table = self._new_table()
        self._segment = len(self.counts)
        if self.evidence is not None:
            self.evidence.new_capture()

    def feed(self, batch: PacketBatch) -> None:
        """Decode a batch and fold it into the current input's flow table."""
        pk, keys = _decoded(batch)
        self._look(batch, pk, keys, self._add(pk, keys))

    def _add(self, pk: Packets, keys: FlowKeys) -> npt.NDArray[np.intp]:
        """Count a decoded batch and add it to the flow table; its first payloads per flow."""
        self.counts[-1].add(pk)
        if self.intervals is None:
            return self.table.update(pk, keys)
        started = np.empty(len(pk), dtype=np.int64)
        first = self.table.update(pk, keys, started)
        self.intervals.add(pk.ts_ns, pk.wirelen, keys, started)
        return first

    def _look(self, batch: PacketBatch, pk: Packets, keys: FlowKeys, first: npt.NDArray[np.intp]) -> None:
        """The payload evidence of a batch the flow table has taken."""
        if self.evidence is not None:
            self.evidence.feed(batch, pk, keys, first)

    def end(self) -> None:
        """Close the current input; its open flows stay open for an input that continues it
        (they finish at the next input that does not, or when the flows are gathered)."""
        counts = self.counts[-1]
        counts.hash_collisions = self.table.stats.hash_collisions - self._stats_before[0]
        counts.flows_exported_early = self.table.stats.flows_exported_early - self._stats_before[1]
        if self.evidence is not None:
            counts.add_evidence(self.evidence.take_anomalies())

    @property
    def open_flows(self) -> int:
        """The flows open in the current input's table."""
        return len(self.table)

    def snapshot(self, now_ns: int | None, *, active_timeout_ns: int) -> Snapshot:
        """Finish the flows the clock ends at ``now_ns`` (idle, closed TCP, open longer than
        ``active_timeout_ns``; None: every flow, at the end of a live capture) and hand them
        over with the open ones and the evidence so far. The finished flows' evidence rows
        leave the collector with them (as ``end`` does), so memory follows the open flows."""
        table = self.table
        if now_ns is None:
            done, opened = table.drain_all(), Records()
        else:
            table.expire(now_ns, active_timeout_ns=active_timeout_ns, closed_grace_ns=CLOSED_GRACE_NS)
            done, opened = table.drain(), table.active()
        counts = self.counts[-1]
        counts.hash_collisions = table.stats.hash_collisions
        counts.flows_exported_early = table.stats.flows_exported_early
        if self.evidence is not None:
            counts.add_evidence(self.evidence.take_anomalies())
        if self.evidence is None or not (len(done) or len(opened)):
            return Snapshot(done, opened, None, None)
        taken = self.evidence.take(done)
        evidence = self.evidence.evidence()
        still = flow_rows(opened, evidence) or FlowRows.empty()
        return Snapshot(done, opened, evidence, FlowRows.concat([taken, still], [0, len(done)]))

    def _keep_finished(self, recs: Records, *, last: bool = False) -> None:
        """Move finished flows to the store (which takes their evidence rows from the
        collector, so that it keeps only open flows' rows), each under the input of its first
        packet."""
        self.store.add(recs, self._inputs_of(recs), last=last)

    def _inputs_of(self, recs: Records) -> npt.NDArray[np.int64]:
        """The input each flow started in: of the inputs whose flows the table holds, the
        last to begin before the flow's first packet."""
        held = [(c.first_ns, i) for i, c in enumerate(self.counts[self._segment :], self._segment) if c.first_ns is not None]
        if len(held) < 2:
            return np.full(len(recs), held[0][1] if held else len(self.counts) - 1, dtype=np.int64)
        starts, inputs = np.array(held, dtype=np.int64).T
        at = np.maximum(np.searchsorted(starts, recs["first_ns"], side="right") - 1, 0)
        return np.asarray(inputs[at], dtype=np.int64)

    def interrupt(self, signum: int) -> None:
        """Stop reading after the batch in hand (safe in a signal handler): everything read so
        far is still counted and classified; the capture is marked partial."""
        self.interrupted = signum

    def _until_interrupted(self, cap: CaptureFile) -> Iterator[PacketBatch]:
        for batch in cap:
            yield batch
            if self.interrupted is not None:
                return

    def read(self, path: str | os.PathLike[str], *, progress: ProgressFn | None = None, continues: bool = False) -> CaptureCounts:
        """Read one capture to its end, its first fault or ``interrupt`` (recorded, not raised);
        ``continues``: its packets carry on the previous capture's open flows.

        Raises CaptureError only when the file cannot be opened or is not a capture at all.
        """
        try:
            cap = CaptureFile(path, keep_chunks=AHEAD_CHUNKS)
        except CaptureError as exc:
            self.unreadable(os.fspath(path), exc)
            raise
        counts = self.begin(cap.path, cap.format, continues=continues)

        def add(item: tuple[PacketBatch, tuple[Packets, FlowKeys]]) -> tuple[npt.NDArray[np.intp], Records | None]:
            _, (pk, keys) = item
            first = self._add(pk, keys)
            return first, (self.table.drain() if self.table.finished >= DRAIN_FLOWS else None)

        try:
            # three stages, each a batch ahead of the next: reading and decoding, the flow
            # table, the evidence (compiled stages let go of the GIL, so they overlap); flows
            # the table finished are kept after the evidence of their last batch
            with quick_handover():
                for (batch, (pk, keys)), (first, finished) in ahead(ahead(self._until_interrupted(cap), _decoded), add):
                    self._look(batch, pk, keys, first)
                    if finished is not None:
                        self._keep_finished(finished)
                    if progress is not None:
                        progress(cap.consumed, counts.packets)
        except CaptureError as exc:
            counts.error = exc
        finally:
            cap.close()
            if self.interrupted is not None and counts.error is None:
                counts.error = CaptureInterruptedError(self.interrupted, path=cap.path, packet=counts.packets + 1)
            for name, value in asdict(cap.anomalies).items():
                setattr(counts, name, value)
            self.end()
        return counts

    def unreadable(self, name: str, error: CaptureError) -> CaptureCounts:
        """Record an input that could not be read at all: its capture.csv row, with ``error``
        (it gave no packets, so the flows open before it stay open)."""
        counts = self.begin(name, continues=True)
        counts.error = error
        self.end()
        return counts

    def read_input(self, capture: CaptureInput, *, progress: ProgressFn | None = None) -> CaptureCounts:
        """Read one capture that ``resolve_captures`` found, as ``read`` does.

        A file is read even when resolving it failed, so that its fault is reported as
        ``read`` reports it; what is no file (a glob matching nothing, a directory without
        captures) is recorded with its error. A capture that starts where the last one with
        packets stopped carries on its flows (``CaptureInput.continues``). Raises CaptureError
        as ``read`` does, after recording the input.
        """
        if (missing := capture.missing) is not None:
            self.unreadable(capture.path, missing)
            raise missing
        last = next((c.last_ns for c in reversed(self.counts) if c.last_ns is not None), None)
        return self.read(capture.path, progress=progress, continues=capture.continues(last))

    def read_all(self, captures: Sequence[str | os.PathLike[str]], *, progress: ProgressFn | None = None) -> list[CaptureCounts]:
        """Read every capture ``captures`` names (files, directories walked for captures by
        their content, globs, ``-``: ``sources.inputs``) in capture-time order, the first
        packet's, so that the files of a ring buffer are read one after the other.

        A capture that cannot be read gets its row, with the error, and does not stop the
        others; reading stops at ``interrupt``. Returns the inputs' counts in the order read.
        Raises the first CaptureError when no capture could be opened at all.

        Example::

            clf = Classifier()
            clf.read_all(["/var/captures/ring", "extra/*.pcapng"])
        """
        start = len(self.counts)
        opened, failed = self.read_inputs(resolve_captures(captures), progress=progress)
        if failed and not opened:
            raise failed[0]
        return self.counts[start:]

    def read_inputs(self, captures: Iterable[CaptureInput], *, progress: ProgressFn | None = None) -> tuple[int, list[CaptureError]]:
        """Read captures ``resolve_captures`` found, in their order, as ``read_input`` does, until
        ``interrupt``: how many were read, and the faults of those that could not be."""
        opened, failed = 0, []
        for capture in captures:
            if self.interrupted is not None:
                break
            try:
                self.read_input(capture, progress=progress)
            except CaptureError as exc:
                failed.append(exc)
            else:
                opened += 1
        return opened, failed

    def gathered(self) -> Gathered:
        """What the reading phase has gathered, for the merge (``pipeline``): every flow still
        open is finished first."""
        self.finish()
        evidence = self.evidence.evidence(rows=False) if self.evidence is not None else None
        return Gathered(store=self.store, counts=self.counts, evidence=evidence, intervals=self.intervals)

    @property
    def criteria(self) -> Criteria:
        """What a flow is decided by (ports, given servers, server evidence rules)."""
        return Criteria(lookup=self.lookup, networks=self.networks, server_rules=self.server_rules)

    def result(self, *, by: Sequence[str] = DEFAULT_BY, top_groups: int | None = None) -> Result:
        """Classify every finished flow and summarize, all in memory (``flows`` has them all).

        ``by``: the flow label columns the breakdown groups by; ``top_groups``: keep the
        largest groups of each service, the rest summed in one row (``summarize.top``).
        Raises ValueError for a ``by`` column that is not a flow label.
        """
        by = grouping(by)
        return merge(self.gathered(), self.criteria, by, top_groups)

    def write(self, outdir: str | os.PathLike[str], *, by: Sequence[str] = DEFAULT_BY, top_groups: int | None = None,
              fmt: Format = Format.CSV) -> Result:
        """Classify and write flows, breakdown, servers and capture to ``outdir`` (files
        ``flows.csv`` ... or, with ``fmt``, ``.parquet`` or ``.jsonl``).

        Flows are classified and written block by block, so memory stays bounded however
        many flows the captures had; the Exchange servers and the RPC sessions that the
        new-mail heuristic needs are gathered over all blocks first, so that every block is
        decided as if all flows were one. The returned Result carries the breakdown and the
        per-capture rows; its ``flows`` is empty (they are in flows.csv). The files appear
        together, when all are written; raises OutputError when they cannot be.
        ``by`` and ``top_groups`` as for ``result``.
        """
        by = grouping(by)
        return merge_to(self.gathered(), self.criteria, outdir, fmt, by, top_groups)

    def close(self) -> None:
        """Remove the temporary files of spilled flows."""
        self.store.close()

