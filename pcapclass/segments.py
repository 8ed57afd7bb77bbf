"""Segments: the runs of captures that can be read apart from each other, each as one process
reads it, and their results put together as if one process had read them all.

A capture continues the one read before it when it starts no earlier than the last packet
before it (``CaptureInput.continues``: the next file of a ring buffer); one that does not starts
its flows afresh. ``plan`` cuts the captures, in their reading order, before each capture that
starts afresh, so that no flow, followed DCE/RPC stream or waiting datagram crosses a cut.
Across a cut one process keeps only what it learns for good: the verdict numbers, the
endpoint-mapper table and the push-notification registrations. ``absorb`` takes a segment's
result into the Classifier that holds the run, in reading order, with its verdicts renumbered
and its tables added as if read there. Registrations are the one thing a later segment
reads while reading (a datagram to a callback registered earlier is a notification), so a
segment read before the registrations of the segments before it were known is read again
with them (``read_segment``'s ``registrations``).

A segment's reading is ``read_segment``: picklable in and out, so any process can do it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .accounting import CaptureCounts
from .api import Classifier, ProgressFn
from .errors import CaptureError
from .evidence.epm import EpmEntry
from .evidence.registrations import Registration
from .evidence.verdicts import VerdictRow
from .flows import FlowRows, Records
from .sources import CaptureFile
from .sources.inputs import CaptureInput
from .store import FlowStore
from .timeseries import PacketIntervals

#: finished flows as a store is given them: flows, the capture (in the segment) each started in,
#: their evidence rows, held to the end (``FlowStore.add``'s ``last``)
Part = tuple[Records, npt.NDArray[np.int64], FlowRows, bool]


@dataclass(frozen=True)
class Reach:
    """How far a capture reaches in time, as ``plan`` needs it: whether it opens as a capture,
    and its last packet (None: none, or it stopped at a fault before one)."""

    opens: bool
    last_ns: int | None


def reach(capture: CaptureInput) -> Reach:
    """Read ``capture`` through the capture readers, as the classification will, for its last
    packet's time (the latest of its packets, as ``CaptureCounts.last_ns`` has it)."""
    if capture.missing is not None:
        return Reach(False, None)
    last = None
    try:
        cap = CaptureFile(capture.path)
    except CaptureError:
        return Reach(False, None)
    try:
        for batch in cap:
            hi = int(batch.ts_ns.max())
            last = hi if last is None else max(last, hi)
    except CaptureError:
        pass  # the reading meets the same fault and stops there too
    finally:
        cap.close()
    return Reach(True, last)


def plan(captures: Sequence[CaptureInput], reaches: Sequence[Reach]) -> list[list[int]]:
    """The segments of ``captures`` (in reading order, each with its ``reach``): lists of
    their indexes, cut before each capture that opens and does not continue the one read
    before it (``CaptureInput.continues``, as ``Classifier.read_input`` decides). A capture
    that does not open joins the segment it falls in: it gives no packets and touches no flow."""
    segments: list[list[int]] = []
    last: int | None = None
    for i, (capture, r) in enumerate(zip(captures, reaches, strict=True)):
        starts_afresh = r.opens and not capture.continues(last)
        if starts_afresh or not segments:
            segments.append([])
        segments[-1].append(i)
        if r.opens and r.last_ns is not None:
            last = r.last_ns
    return segments


@dataclass
class SegmentResult:
    """What reading one segment gathered (``read_segment``), to ``absorb`` in reading order."""

    counts: list[CaptureCounts]
    #: the finished flows as the segment's store was given them (``Part``), or what
    #: ``read_segment``'s ``keep`` made of each, for ``absorb``'s ``load``
    parts: list[Any]
    #: the verdicts the rows' ``vid`` number
    verdicts: list[VerdictRow]
    epm: list[EpmEntry]
    registrations: list[Registration]
    intervals: PacketIntervals | None
    #: captures read (opened), and the faults of those that could not be
    opened: int = 0
    failed: list[CaptureError] = field(default_factory=list)


class _Parts(FlowStore):
    """A store that hands each part on as given, with its rows (to ``keep``, or to its list):
    a segment's flows leave the worker as the parts a single process's store is given."""

    def __init__(self, rows_of: Callable[[Records], FlowRows] | None, keep: Callable[[Part], Any] | None) -> None:
        super().__init__(rows_of=rows_of)
        self.parts: list[Any] = []
        self._keep = keep

    def add(self, recs: Records, capture: npt.NDArray[np.int64], *, last: bool = False, rows: FlowRows | None = None) -> None:
        if len(recs):
            part = (recs, capture, self.rows(recs, rows), last)
            self.parts.append(self._keep(part) if self._keep is not None else part)


def read_segment(make: Callable[[], Classifier], captures: Sequence[CaptureInput], *, registrations: Sequence[Registration] = (),
                 origin_ns: int | None = None, progress: ProgressFn | None = None, keep: Callable[[Part], Any] | None = None,
                 ) -> SegmentResult:  # fmt: skip
    """Read one segment with a fresh Classifier (``make``), after the ``registrations`` of the
    segments before it; ``origin_ns``: the run's first packet, where time-series intervals
    start; ``keep``: where each part of the finished flows goes as it is made (a file, so that
    the worker's memory does not hold them all), returning what ``absorb`` will ``load``."""
    clf = make()
    store = clf.store = _Parts(clf.evidence.take if clf.evidence is not None else None, keep)
    if clf.evidence is not None and registrations:
        clf.evidence.registrations.absorb(list(registrations))
        clf.evidence.take_anomalies()  # evictions of earlier segments' registrations were counted there
    if clf.intervals is not None:
        clf.intervals.origin_ns = origin_ns
    opened, failed = clf.read_inputs(captures, progress=progress)
    clf.finish()
    ev = clf.evidence
    return SegmentResult(
        counts=clf.counts, parts=store.parts, verdicts=ev.verdicts.rows if ev else [], epm=ev.epm.entries() if ev else [],
        registrations=ev.registrations.entries() if ev else [], intervals=clf.intervals, opened=opened, failed=failed,
    )  # fmt: skip


def absorb(clf: Classifier, result: SegmentResult, load: Callable[[Any], Part] | None = None) -> None:
    """Take a segment's result into ``clf`` (which reads nothing itself), after the segments
    before it: its captures' rows, its flows with their rows renumbered into ``clf``'s
    verdicts (each part through ``load`` when ``read_segment`` had them kept), its
    endpoint-mapper entries and time-series counts."""
    base = len(clf.counts)
    clf.counts += result.counts
    if clf.evidence is not None:
        number = clf.evidence.verdicts.number
        renumber = np.array([number(row) for row in result.verdicts], dtype=np.int64)
        clf.evidence.epm.absorb(result.epm)
    for kept in result.parts:
        recs, capture, rows, last = load(kept) if load is not None else kept
        if clf.evidence is not None and len(rows.vid):
            rows = FlowRows(rows.flow, renumber[rows.vid], rows.from_a)
        clf.store.add(recs, capture + base, last=last, rows=rows)
    if clf.intervals is not None and result.intervals is not None:
        clf.intervals.absorb(result.intervals)
