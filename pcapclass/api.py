"""The library API the CLI calls: captures in, pandas DataFrames out.

``Classifier`` is the pipeline's reading phase (read → decode → flows → evidence) fed step by
step (several files, or batches from a live source); its ``result`` and ``write`` hand what it
gathered to the merge phase (``pipeline``). ``classify_file`` is the one-call form, so the CLI
and a script never diverge.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict

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

    Flows never span two captures: each capture's table is flushed at its end, so that a
    flow row belongs to exactly one input file.
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
        #: the signal that asked reading to stop (``interrupt``), or None
        self.interrupted: int | None = None
        #: each packet's counts per interval, for the time series (``interval`` seconds), or None
        self.intervals = PacketIntervals(interval) if interval is not None else None

    def _new_table(self) -> FlowTable:
        return FlowTable(idle_timeout_ns=self.idle_timeout_ns, max_flows=self.max_flows)

    def begin(self, name: str, fmt: str = "") -> CaptureCounts:
        """Start a new input; later ``feed`` calls count towards it."""
        self.counts.append(CaptureCounts(capture=name, format=fmt))
        self.table = self._new_table()
        if self.evidence is not None:
            self.evidence.new_capture()
        return self.counts[-1]

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
        """Close the current input: every open flow becomes a finished record."""
        self._keep_finished(self.table.drain_all(), last=True)
        counts = self.counts[-1]
        counts.hash_collisions = self.table.stats.hash_collisions
        counts.flows_exported_early = self.table.stats.flows_exported_early
        if self.evidence is not None:
            counts.add_evidence(self.evidence.take_anomalies())
        self.table = self._new_table()  # the emptied table's memory is not held while the flows are written

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
        collector, so that it keeps only open flows' rows)."""
        self.store.add(recs, len(self.counts) - 1, last=last)

    def interrupt(self, signum: int) -> None:
        """Stop reading after the batch in hand (safe in a signal handler): everything read so
        far is still counted and classified; the capture is marked partial."""
        self.interrupted = signum

    def _until_interrupted(self, cap: CaptureFile) -> Iterator[PacketBatch]:
        for batch in cap:
            yield batch
            if self.interrupted is not None:
                return

    def read(self, path: str | os.PathLike[str], *, progress: ProgressFn | None = None) -> CaptureCounts:
        """Read one capture to its end, its first fault or ``interrupt`` (recorded, not raised).

        Raises CaptureError only when the file cannot be opened or is not a capture at all.
        """
        try:
            cap = CaptureFile(path, keep_chunks=AHEAD_CHUNKS)
        except CaptureError as exc:
            self.begin(os.fspath(path)).error = exc
            self.end()
            raise
        counts = self.begin(cap.path, cap.format)

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

    def gathered(self) -> Gathered:
        """What the reading phase has gathered so far, for the merge (``pipeline``)."""
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


def classify_file(
    path: str | os.PathLike[str],
    *,
    servers: Sequence[str | Network] = (),
    rules: RuleSet | Iterable[str | os.PathLike[str]] | None = None,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    max_flows: int = DEFAULT_MAX_FLOWS,
    payload: bool = True,
    epm_expiry: float = DEFAULT_EPM_EXPIRY,
    interval: float | None = None,
    by: Sequence[str] = DEFAULT_BY,
    top_groups: int | None = None,
) -> Result:
    """Classify one capture file (pcap, pcapng, gzip; ``-`` for stdin).

    A fault in the middle of the file does not raise: the result holds everything before
    it, ``partial`` is true and ``error`` says where. A file that cannot be opened, or is
    not a capture at all, raises CaptureError. ``payload=False`` skips the payload stage
    (services by port only); ``epm_expiry`` is how long an endpoint-mapper reply vouches for
    the port it handed out; ``by`` groups the breakdown by any flow label columns (add
    ``"detail"`` for OWA / ActiveSync / RPC over HTTP ... rows; ValueError for others);
    ``top_groups`` keeps the largest groups of each service, the rest summed in one row;
    ``interval`` (seconds) adds the time series (``Result.timeseries``).

    >>> r = classify_file("tests/fixtures/pcaps/exchange_services.pcap")  # doctest: +SKIP
    >>> r.breakdown[["service", "direction", "packets"]]  # doctest: +SKIP
    """
    clf = Classifier(servers=servers, rules=rules, idle_timeout=idle_timeout, max_flows=max_flows,
                     payload=payload, epm_expiry=epm_expiry, interval=interval)  # fmt: skip
    clf.read(path)
    return clf.result(by=by, top_groups=top_groups)
