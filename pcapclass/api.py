"""The library API the CLI calls: captures in, pandas DataFrames out.

``classify_file`` is the one-call form; ``Classifier`` is the same pipeline fed step by step
(several files, or batches from a live source), so the CLI and a script never diverge.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from . import schema
from .addresses import Network, parse_networks
from .ahead import DEPTH, ahead, quick_handover
from .classify import (
    Servers,
    Shared,
    block_facts,
    classify,
    empty_flows,
    epm_evidence,
    infer_servers,
    rpc_sessions_among,
)
from .decode import FRAGMENT_PROTO_BASE, Packets, Status, decode
from .errors import CaptureError, CaptureInterruptedError, OutputError
from .evidence import DEFAULT_EPM_EXPIRY, EvidenceCollector
from .flows import FlowKeys, FlowRows, FlowTable, Records, flow_keys
from .report import Format, Outputs, write_outputs
from .servers import merged
from .sources import CaptureFile, PacketBatch, ReadAnomalies
from .summarize import DEFAULT_BY, breakdown, grouping, merge, partial_breakdown, top
from .tables.rules import RuleSet, load_rules
from .tables.server_evidence import load_server_evidence
from .timeseries import PacketIntervals

DEFAULT_IDLE_TIMEOUT = 120.0
DEFAULT_MAX_FLOWS = 2_000_000

ProgressFn = Callable[[int, int], None]


@dataclass(kw_only=True)
class CaptureCounts(ReadAnomalies):
    """What one input contributed: the capture.csv row (the reader's anomaly counters, and these)."""

    capture: str
    format: str = ""
    packets: int = 0
    bytes: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    non_ip_packets: int = 0
    truncated_packets: int = 0
    undecoded_packets: int = 0
    fragment_packets: int = 0
    hash_collisions: int = 0
    flows_exported_early: int = 0
    #: packets a live capture's kernel or capture process reported dropping
    drops: int = 0
    error: CaptureError | None = None

    def add(self, pk: Packets) -> None:
        """Count one decoded batch."""
        self.packets += len(pk)
        self.bytes += int(pk.wirelen.sum())
        lo, hi = int(pk.ts_ns.min()), int(pk.ts_ns.max())
        self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
        self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        status = np.bincount(pk.status, minlength=len(Status))
        self.non_ip_packets += int(status[Status.NON_IP])
        self.truncated_packets += int(status[Status.TRUNCATED])
        self.undecoded_packets += int(status[Status.UNDECODED])
        self.fragment_packets += int(np.count_nonzero((pk.proto >= FRAGMENT_PROTO_BASE) & (pk.status == Status.FLOW)))


@dataclass
class Result:
    """Flows, breakdown and per-capture accounting of one run."""

    flows: pd.DataFrame
    breakdown: pd.DataFrame
    captures: pd.DataFrame
    servers: Servers
    errors: list[CaptureError] = field(default_factory=list)
    #: per interval, service and direction (schema.TIMESERIES), when an interval was asked for
    timeseries: pd.DataFrame | None = None

    @property
    def error(self) -> CaptureError | None:
        """The first fault met, or None."""
        return self.errors[0] if self.errors else None

    @property
    def partial(self) -> bool:
        """True when some capture could not be read to its end."""
        return bool(self.errors)

    @property
    def stats(self) -> dict[str, Any]:
        """Totals over all captures: packets, bytes, flows and the anomaly counters."""
        numeric = [c.name for c in schema.CAPTURE if c.dtype == "int64"]
        totals: dict[str, Any] = {name: int(self.captures[name].sum()) for name in numeric}
        totals.update(partial=self.partial, error=str(self.error) if self.error else "",
                      servers=self.servers.describe(), servers_inferred=self.servers.inferred)  # fmt: skip
        return totals


#: finished flows held in memory before they move to a temporary file (about 10 MB of records)
SPILL_FLOWS = 1 << 16
#: finished flows the flow table hands over at a time (its buffer of them stays small)
DRAIN_FLOWS = 1 << 14


class FlowStore:
    """The finished flows of a run, with their evidence rows: in memory up to ``spill_flows``,
    then in temporary files.

    Memory then follows the open flows, not all the flows a capture ever had; the blocks are
    read back one at a time (memory-mapped) to be classified and written. The flows still open
    at a capture's end stay in memory until more come, so that the last ones never make a
    round trip through the disk. A block is in order of capture, then first packet.
    ``rows_of`` hands over the evidence rows of finished flows (``EvidenceCollector.take``):
    asked once per block, when it is spilled or read.
    """

    def __init__(self, spill_flows: int = SPILL_FLOWS, rows_of: Callable[[Records], FlowRows] | None = None) -> None:
        self.spill_flows = spill_flows
        self._rows_of = rows_of
        #: parts as added (rows None), or once sorted the one joined part with its rows
        self._mem: list[tuple[Records, npt.NDArray[np.int64], FlowRows | None]] = []
        self._mem_rows = 0
        self._files: list[tuple[Path, Path, Path]] = []
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def one_block(self) -> bool:
        """True while all the flows fit one block (they can be classified in one go)."""
        return not self._files and self._mem_rows <= self.spill_flows

    def add(self, recs: Records, capture: int, *, last: bool = False) -> None:
        """Keep ``recs`` (finished flows of capture number ``capture``); ``last``: the flows
        still open at the capture's end, held in memory (whatever their number) until more come."""
        if not len(recs):
            return
        if self._mem and self._mem_rows + len(recs) > self.spill_flows:
            # what is held goes first: flows are joined for a spill only up to a block's
            # worth, and a larger part (a burst of ended flows) is sorted where it lies
            self._spill()
        self._mem.append((recs, np.full(len(recs), capture, dtype=np.int64), None))
        self._mem_rows += len(recs)
        if self._mem_rows >= self.spill_flows and not last:
            self._spill()

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
        self._mem, self._mem_rows = [], 0

    def _mem_blocks(self) -> Iterator[tuple[Records, npt.NDArray[np.int64], FlowRows]]:
        """The flows in memory in blocks of at most ``spill_flows``, each with its rows."""
        recs, index, rows = self._sorted()
        if len(recs) <= self.spill_flows:
            yield recs, index, rows
            return
        for start in range(0, len(recs), self.spill_flows):
            stop = start + self.spill_flows
            yield Records(recs.cols[:, start:stop]), index[start:stop], rows.block(start, stop)

    def _sorted(self) -> tuple[Records, npt.NDArray[np.int64], FlowRows]:
        """The flows in memory, joined, by capture then first packet, with their evidence rows
        (kept so: sorted and joined once)."""
        if len(self._mem) == 1 and self._mem[0][2] is not None:  # sorted already
            return self._mem[0]  # type: ignore[return-value]
        recs = Records.concat([r for r, _, _ in self._mem])
        index = np.concatenate([i for _, i, _ in self._mem]) if self._mem else np.zeros(0, np.int64)
        order = np.lexsort((recs["first_ns"], index))
        for column in recs.cols:  # in place, a field at a time: no second copy of the flows
            column[:] = column[order]
        rows = self._rows_of(recs) if self._rows_of is not None else FlowRows.empty()
        self._mem = [(recs, index[order], rows)]
        return self._mem[0]  # type: ignore[return-value]

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
        self.table = self._new_table()  # the emptied table's memory is not held while the flows are written

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

    def result(self, *, by: Sequence[str] = DEFAULT_BY, top_groups: int | None = None) -> Result:
        """Classify every finished flow and summarize, all in memory (``flows`` has them all).

        ``by``: the flow label columns the breakdown groups by; ``top_groups``: keep the
        largest groups of each service, the rest summed in one row (``summarize.top``).
        Raises ValueError for a ``by`` column that is not a flow label.
        """
        by = grouping(by)
        blocks = list(self.store.blocks())
        recs = Records.concat([r for r, _, _ in blocks])
        index = np.concatenate([i for _, i, _ in blocks]) if blocks else np.zeros(0, np.int64)
        rows = FlowRows.concat([w for _, _, w in blocks], np.cumsum([0] + [len(r) for r, _, _ in blocks[:-1]]).tolist())
        if len(blocks) > 1:  # each block is in order, not the blocks together
            order = np.lexsort((recs["first_ns"], index))
            recs, index = Records(recs.cols[:, order]), index[order]
            moved = np.empty_like(order)
            moved[order] = np.arange(order.size)
            rows = rows.renumbered(moved)
        evidence = self.evidence.evidence(rows=False) if self.evidence is not None else None
        flows, servers = classify(recs, self.lookup, self.networks, evidence, rows=rows, server_rules=self.server_rules)
        flows = self._labelled(flows, index)
        summary = top(breakdown(flows, self._order, by), top_groups, by)
        series = [self.intervals.part(recs, flows)] if self.intervals is not None else []
        return self._result(flows, summary, np.bincount(index, minlength=len(self.counts)), servers, series)

    def write(self, outdir: str | os.PathLike[str], *, by: Sequence[str] = DEFAULT_BY, top_groups: int | None = None,
              fmt: Format = Format.CSV) -> Result:
        """Classify and write flows, breakdown, servers and capture to ``outdir`` (files
        ``flows.csv`` ... or, with ``fmt``, ``.parquet`` or ``.jsonl``).

        Flows are classified and written block by block, so memory stays bounded however
        many flows the captures had; the Exchange servers and the RPC sessions that the
        new-mail heuristic needs are gathered over all blocks first, so that every block is
        decided as if all flows were one. The returned Result carries the breakdown and the
        per-capture rows; its ``flows`` is empty (they are in flows.csv). The three files
        appear together, when all are written; raises OutputError when they cannot be.
        ``by`` and ``top_groups`` as for ``result``.
        """
        by = grouping(by)
        if self.store.one_block:
            result = self.result(by=by, top_groups=top_groups)
            write_outputs(result, outdir, fmt)
            return result
        evidence = self.evidence.evidence(rows=False) if self.evidence is not None else None
        shared = Shared()
        shown, pairs, bound = [epm_evidence(evidence)], [], []
        for recs, _, rows in self.store.blocks():
            facts = block_facts(recs, self.lookup, evidence, rows, infer_servers=not self.networks)
            shown += [facts.shown] if facts.shown is not None else []
            pairs += [facts.candidates] if facts.candidates is not None and len(facts.candidates) else []
            bound += [facts.bound] if len(facts.bound) else []
        shared.bound = pd.concat(bound, ignore_index=True) if bound else None
        if not self.networks:
            shared.known, shared.servers = infer_servers(merged(shown), self.server_rules)
        if evidence is not None:  # the new-mail heuristic needs every block's RPC sessions
            candidates = pairs[0].append(pairs[1:]).unique() if pairs else pd.MultiIndex.from_arrays([np.zeros(0, np.uint64)] * 4)
            shared.sessions = rpc_sessions_among(candidates, self.networks, shared.known)
        with Outputs(outdir) as out:
            writer = out.appender(fmt.file("flows"))
            parts, series, counts = [], [], np.zeros(len(self.counts), dtype=np.int64)
            servers = Servers(networks=(), addresses=(), inferred=not self.networks)
            for recs, index, rows in self.store.blocks():
                flows, servers = classify(recs, self.lookup, self.networks, evidence, shared, rows, self.server_rules)
                flows = self._labelled(flows, index)
                writer.write(flows)
                parts.append(partial_breakdown(flows, by))
                series += [self.intervals.part(recs, flows)] if self.intervals is not None else []
                counts += np.bincount(index, minlength=len(self.counts))
            result = self._result(empty_flows(), top(merge(parts, self._order, by), top_groups, by), counts, servers, series)
            out.write(fmt.file("breakdown"), result.breakdown)
            out.write(fmt.file("servers"), servers.evidence)
            if result.timeseries is not None:
                out.write(fmt.file("timeseries"), result.timeseries)
            out.write(fmt.file("capture"), result.captures)
        return result

    def close(self) -> None:
        """Remove the temporary files of spilled flows."""
        self.store.close()

    @property
    def _order(self) -> tuple[str, ...]:
        return self.lookup.ids[1:] + ("other",)

    def _labelled(self, flows: pd.DataFrame, index: npt.NDArray[np.int64]) -> pd.DataFrame:
        if flows.empty:
            return empty_flows()
        # codes into the distinct names: no per-flow strings to factorize
        names, code = np.unique(np.array([c.capture for c in self.counts], dtype=object), return_inverse=True)
        flows.insert(0, "capture", pd.Categorical.from_codes(code.reshape(-1)[index], categories=pd.Index(names, dtype="str")))
        return flows

    def _result(self, flows: pd.DataFrame, summary: pd.DataFrame, flow_count: npt.NDArray[np.int64], servers: Servers,
                series: list[pd.DataFrame]) -> Result:
        captures = pd.DataFrame(
            [_capture_row(c, int(flow_count[i]), servers) for i, c in enumerate(self.counts)],
            columns=schema.names(schema.CAPTURE),
        )
        return Result(
            flows=flows,
            breakdown=summary,
            captures=captures,
            servers=servers,
            errors=[c.error for c in self.counts if c.error is not None],
            timeseries=self.intervals.table(series, self._order) if self.intervals is not None else None,
        )


def _capture_row(c: CaptureCounts, flows: int, servers: Servers) -> dict[str, Any]:
    return {
        "capture": c.capture,
        "format": c.format,
        "packets": c.packets,
        "bytes": c.bytes,
        "flows": flows,
        "first_ts": c.first_ns / 1e9 if c.first_ns is not None else np.nan,
        "last_ts": c.last_ns / 1e9 if c.last_ns is not None else np.nan,
        "non_ip_packets": c.non_ip_packets,
        "truncated_packets": c.truncated_packets,
        "undecoded_packets": c.undecoded_packets,
        "fragment_packets": c.fragment_packets,
        **{f.name: getattr(c, f.name) for f in fields(ReadAnomalies)},
        "hash_collisions": c.hash_collisions,
        "flows_exported_early": c.flows_exported_early,
        "drops": c.drops,
        "servers": servers.describe(),
        "servers_inferred": servers.inferred,
        "partial": c.error is not None,
        "error": str(c.error) if c.error is not None else "",
    }


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
