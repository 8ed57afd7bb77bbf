"""Live capture: an interface's batches through the offline pipeline, with rolling outputs.

Every ``interval`` the flow table is expired by the clock (idle, closed TCP, NetFlow active
timeout); finished flows are classified and appended to ``flows.csv``; the traffic of the
interval (what each flow, finished or open, gained since the last tick) becomes the
``timeseries.csv`` rows; the merged intervals are ``breakdown.csv``. Only open flows and the
previous tick's counters stay in memory, so a capture can run for days.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..accounting import CaptureCounts, capture_row
from ..addresses import Network, parse_networks
from ..addresses import sort_key as address_sort_key
from ..api import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Classifier
from ..classify import Servers, classify
from ..errors import LiveCaptureError, OutputError, PcapclassError
from ..evidence import Evidence
from ..flows import KEY_COLUMNS, FlowRows, Records
from ..output import (
    BREAKDOWN_CSV,
    CAPTURE_CSV,
    FLOWS_CSV,
    TIMESERIES_CSV,
    append_rows,
    make_outdir,
    write_csv,
)
from ..sources import PacketBatch
from ..sources.live import DEFAULT_BACKEND, LiveSource, open_live
from ..sources.writer import PcapWriter
from ..summarize import breakdown, empty_breakdown, merge
from ..tables.rules import RuleSet

DEFAULT_INTERVAL = 10.0
#: NetFlow's default active timeout: a flow open this long is exported and starts anew
DEFAULT_ACTIVE_TIMEOUT = 1800.0
_COUNTERS = ("packets_ab", "bytes_ab", "packets_ba", "bytes_ba")
_MATCH = [*KEY_COLUMNS, "first_ns"]


@dataclass
class LiveStatus:
    """What the terminal view shows after each step."""

    interface: str
    backend: str
    elapsed: float
    packets: int
    bytes: int
    packets_per_s: float
    drops: int
    open_flows: int
    totals: pd.DataFrame
    servers: Servers


@dataclass
class LiveResult:
    """The end of a live capture: totals, the capture row, and the fault if it died."""

    breakdown: pd.DataFrame
    captures: pd.DataFrame
    servers: Servers
    error: LiveCaptureError | None
    outdir: Path


class LiveCapture:
    """One live capture run: ``run()`` until ``stop()``, duration or count; outputs in ``outdir``.

    Example::

        cap = LiveCapture("eth0", outdir="out", interval=10, duration=60)
        result = cap.run()      # another thread (or a signal handler) may call cap.stop()
        result.breakdown

    ``run`` raises LiveCaptureError when the capture cannot start; when it dies midway the
    counted traffic is written and the error is in ``LiveResult.error``. It raises OutputError
    when the outputs cannot be written (no directory, a full disk); a row is appended whole
    or not at all.
    """

    def __init__(
        self,
        interface: str,
        *,
        outdir: str | os.PathLike[str] = "pcapclass-live",
        backend: str = DEFAULT_BACKEND,
        bpf: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        duration: float | None = None,
        count: int | None = None,
        servers: Sequence[str | Network] = (),
        rules: RuleSet | Iterable[str | os.PathLike[str]] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        active_timeout: float = DEFAULT_ACTIVE_TIMEOUT,
        max_flows: int = DEFAULT_MAX_FLOWS,
        write_pcap: str | os.PathLike[str] | None = None,
        on_status: Callable[[LiveStatus], None] | None = None,
        status_every: float = 0.5,
    ) -> None:
        self.interface = interface
        self.outdir = Path(outdir)
        self.backend = backend
        self.bpf = bpf
        self.interval = interval
        self.duration = duration
        self.count = count
        self.active_timeout_ns = int(active_timeout * 1e9)
        self.write_pcap = write_pcap
        self.on_status = on_status
        self.status_every = status_every
        self.clf = Classifier(servers=servers, rules=rules, idle_timeout=idle_timeout, max_flows=max_flows)
        self.order = self.clf.criteria.order
        self._given = list(self.clf.criteria.networks)
        self._known: set[str] = set()
        self._prev = self._snapshot(Records())
        self._totals = empty_breakdown()
        self._flows_total = 0
        self._stop_requested = False
        self._source: LiveSource | None = None
        self._reported_drops = 0

    # -- control -------------------------------------------------------------------------------

    def stop(self) -> None:
        """End the capture soon: what is already captured is still read and counted."""
        self._stop_requested = True
        if self._source is not None:
            self._source.stop()

    def run(self) -> LiveResult:
        """Capture until stopped; write the final outputs; return the totals."""
        make_outdir(self.outdir)
        source = open_live(self.interface, backend=self.backend, bpf=self.bpf, count=self.count)
        self._source = source
        if self._stop_requested:
            source.stop()
        counts = self.clf.begin(self.interface, source.format)
        writer: PcapWriter | None = None
        start = time.monotonic()
        try:
            try:
                # both logs start anew, header first, so that they parse from the first moment on
                # (and say that the capture runs)
                for name, columns in ((FLOWS_CSV, schema.FLOWS), (TIMESERIES_CSV, schema.TIMESERIES)):
                    (self.outdir / name).unlink(missing_ok=True)
                    self._append(pd.DataFrame(columns=schema.names(columns)), name, columns)
                writer = PcapWriter(self.write_pcap) if self.write_pcap is not None else None
                error, interval_start = self._loop(source, writer, counts, start)
            finally:
                source.close()
                if writer is not None:
                    writer.close()
            self._tick(counts, interval_start, time.time(), final=True)
        except OutputError as exc:  # a full disk: capture.csv says where the run stopped, if that still fits
            with contextlib.suppress(OutputError):
                self._write_capture(counts, exc)
            raise
        if self.on_status is not None:
            self.on_status(self._status(counts, time.monotonic() - start))
        captures = self._write_capture(counts, error)
        return LiveResult(breakdown=self._totals, captures=captures, servers=self._servers(), error=error, outdir=self.outdir)

    def _loop(self, source: LiveSource, writer: PcapWriter | None, counts: CaptureCounts, start: float) -> tuple[LiveCaptureError | None, float]:
        """Read, feed and tick until the source is finished; the fault that ended it (or None)
        and the start of the interval still open."""
        tick_at = start + self.interval
        status_at = start
        interval_start = time.time()
        deadline = start + self.duration if self.duration is not None else None
        while not source.finished:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.stop()
            wait = min(tick_at, status_at + self.status_every, deadline or tick_at) - now
            try:
                batch = source.poll(wait)
            except LiveCaptureError as exc:
                return exc, interval_start
            if batch is not None:
                batch = self._take(batch, counts)
                if writer is not None:
                    writer.write(batch)
                self.clf.feed(batch)
            now = time.monotonic()
            if now >= tick_at:
                interval_end = time.time()
                self._tick(counts, interval_start, interval_end, final=False)
                interval_start = interval_end
                tick_at += self.interval * max(1, int((now - tick_at) // self.interval) + 1)
            if self.on_status is not None and now >= status_at + self.status_every:
                status_at = now
                self.on_status(self._status(counts, now - start))
        return None, interval_start

    def _take(self, batch: PacketBatch, counts: CaptureCounts) -> PacketBatch:
        """The batch, cut at --count; asks the source to stop once the count is reached."""
        if self.count is None:
            return batch
        room = self.count - counts.packets
        if room < len(batch):
            batch = PacketBatch(batch.data, batch.offset[:room], batch.caplen[:room], batch.wirelen[:room],
                                batch.ts_ns[:room], batch.linktype[:room], batch.first_packet)  # fmt: skip
        if counts.packets + len(batch) >= self.count:
            self.stop()
        return batch

    # -- one tick --------------------------------------------------------------------------------

    def _tick(self, counts: CaptureCounts, start: float, end: float, *, final: bool) -> None:
        snap = self.clf.snapshot(None if final else time.time_ns(), active_timeout_ns=self.active_timeout_ns)
        recs, n_done = snap.flows, len(snap.done)
        counts.drops = self._source.drops if self._source is not None else 0
        new_drops = counts.drops - self._reported_drops
        self._reported_drops += new_drops
        if not len(recs):
            self._write_breakdown()
            return
        lookup = self.clf.criteria.lookup
        nets = self._learn_servers(recs, snap.evidence, snap.rows)
        flows, _ = classify(recs, lookup, nets, snap.evidence, rows=snap.rows)
        delta, new = self._deltas(recs)
        self._prev = self._snapshot(snap.opened)
        part, _ = classify(delta, lookup, nets, snap.evidence, rows=snap.rows)
        moved = (part["packets_c2s"] + part["packets_s2c"]).to_numpy() > 0
        self._append(self._interval_rows(part[moved], start, end, new_drops), TIMESERIES_CSV, schema.TIMESERIES)
        if n_done:
            finished = flows.iloc[:n_done]
            finished.insert(0, "capture", self.interface)
            self._append(finished, FLOWS_CSV, schema.FLOWS)
        totals_part = breakdown(part[moved], self.order)
        fresh = part[moved & new].groupby(["service", "direction"], observed=True).size()
        index = pd.MultiIndex.from_frame(totals_part[["service", "direction"]])
        totals_part["flows"] = fresh.reindex(index, fill_value=0).to_numpy()
        self._flows_total += int(np.count_nonzero(new))
        self._totals = merge([self._totals, totals_part], self.order)
        self._write_breakdown()
        self._write_capture(counts, None)

    def _learn_servers(self, recs: Records, evidence: Evidence | None, rows: FlowRows | None) -> list[Network]:
        """The --server networks, or every host the Exchange evidence so far names (rules/server_evidence.toml)."""
        if self._given:
            return self._given
        _, found = classify(recs, self.clf.criteria.lookup, (), evidence, rows=rows)
        self._known.update(found.addresses)
        return parse_networks(sorted(self._known))

    def _servers(self) -> Servers:
        if self._given:
            return Servers(networks=tuple(self._given), addresses=tuple(str(n) for n in self._given), inferred=False)
        return Servers(networks=(), addresses=tuple(sorted(self._known, key=address_sort_key)), inferred=True)

    def _deltas(self, recs: Records) -> tuple[Records, np.ndarray]:
        """The records with counters reduced to what they gained since the previous tick."""
        cur = pd.DataFrame({c: recs[c] for c in _MATCH})
        joined = cur.merge(self._prev, on=_MATCH, how="left")
        new = joined[_COUNTERS[0]].isna().to_numpy()
        gained = {c: recs[c] - joined[c].fillna(0).to_numpy(dtype=np.int64) for c in _COUNTERS}
        return recs.with_columns(gained), new

    @staticmethod
    def _snapshot(opened: Records) -> pd.DataFrame:
        return pd.DataFrame({c: opened[c] for c in (*_MATCH, *_COUNTERS)})

    def _interval_rows(self, part: pd.DataFrame, start: float, end: float, drops: int) -> pd.DataFrame:
        rows = breakdown(part, self.order)
        rows.insert(0, "interval_end", end)
        rows.insert(0, "interval_start", start)
        rows["drops"] = drops
        return rows

    # -- outputs ---------------------------------------------------------------------------------

    def _append(self, df: pd.DataFrame, name: str, columns: tuple[schema.Column, ...]) -> None:
        """Append rows in one write (header first when the file is new): readers see whole rows."""
        append_rows(self.outdir / name, df[schema.names(columns)])

    def _write_breakdown(self) -> None:
        write_csv(self._totals, self.outdir / BREAKDOWN_CSV)

    def _write_capture(self, counts: CaptureCounts, error: PcapclassError | None) -> pd.DataFrame:
        row: dict[str, Any] = capture_row(counts, self._flows_total, self._servers())
        row.update(partial=error is not None, error=str(error) if error is not None else "")
        captures = pd.DataFrame([row], columns=schema.names(schema.CAPTURE))
        write_csv(captures, self.outdir / CAPTURE_CSV)
        return captures

    def _status(self, counts: CaptureCounts, elapsed: float) -> LiveStatus:
        return LiveStatus(
            interface=self.interface, backend=self.backend, elapsed=elapsed, packets=counts.packets,
            bytes=counts.bytes, packets_per_s=counts.packets / elapsed if elapsed > 0 else 0.0,
            drops=self._source.drops if self._source is not None else 0, open_flows=self.clf.open_flows,
            totals=self._totals, servers=self._servers(),
        )  # fmt: skip
