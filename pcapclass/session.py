"""A run over many captures: read here, or segment by segment on Dask workers, with one result.

``read_captures`` reads every capture a run names into one ``Classifier``: in this process
(``Classifier.read_all``), or with a ``dask.distributed.Client`` on its workers. There the
captures are first read for their reach, cut into segments (``segments.plan``), and each
segment read by a worker, which spools its finished flows to files as it goes; the results are
absorbed in reading order, so that what the Classifier then writes is what one process reading
the captures in order writes. Dask is imported only for a run that uses it.

``classify_file`` is the one-call form of a run, in memory.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .accounting import CaptureCounts
from .addresses import Network
from .api import DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, Classifier, ProgressFn
from .errors import (
    CaptureError,
    CaptureInterruptedError,
    ClusterError,
    OutputError,
    PcapclassError,
)
from .evidence import DEFAULT_EPM_EXPIRY
from .evidence.registrations import Registration
from .flows import FlowRows, Records
from .pipeline import Result
from .segments import (
    Part,
    SegmentResult,
    absorb,
    plan,
    reach,
    read_segment,
)
from .sources.inputs import CaptureInput, resolve_captures
from .summarize import DEFAULT_BY
from .tables.rules import RuleSet

if TYPE_CHECKING:
    from distributed import Client, Future, Worker

#: segments read or waiting on the workers at a time, per worker (their results wait there
#: until absorbed, in order)
AHEAD_PER_WORKER = 2
#: seconds between a worker's progress reports
REPORT_EVERY = 0.5
#: input below which a run stays in one process unless asked for workers (``spread``)
AUTO_BYTES = 1 << 30
#: cores one reading process keeps busy: its decoding, flow table and payload stages run in
#: threads of their own, about 1.4 cores' worth (``api.Classifier.read``), so a worker per
#: core would only take turns
CORES_PER_WORKER = 2


@contextmanager
def dask_client(jobs: int, scheduler: str | None = None) -> Iterator[Client]:
    """A Dask client: of the cluster at ``scheduler`` (an address, ``tcp://host:8786``), or of a
    ``LocalCluster`` of ``jobs`` worker processes with a thread each, started here and stopped
    when the block ends."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler)
        except (OSError, ValueError) as exc:  # refused, timed out, not an address
            raise ClusterError(f"{scheduler}: cannot reach the Dask scheduler: {exc}") from None
        with client:
            yield client
        return
    try:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, silence_logs=logging.ERROR, dashboard_address=":0")
    except (OSError, RuntimeError) as exc:
        raise ClusterError(f"cannot start {jobs} Dask workers: {exc}") from None
    with cluster, Client(cluster) as client:
        yield client


def dashboard(client: Client) -> str | None:
    """The address of the cluster's dashboard, or None when it has none."""
    link = client.dashboard_link
    return str(link) if link else None


@dataclass
class _Report:
    """A worker's progress callback: bytes and packets of its segment so far, put on the run's
    queue now and then (picklable: made on the client, called on a worker)."""

    queue: str
    segment: int
    _last: float = 0.0
    _put: Any = None

    def __call__(self, done: int, packets: int) -> None:
        now = time.monotonic()
        if now - self._last < REPORT_EVERY:
            return
        self._last = now
        if self._put is None:
            from distributed import Queue

            self._put = Queue(self.queue).put
        self._put((self.segment, done, packets))


def read_captures(clf: Classifier, captures: Sequence[str | os.PathLike[str]], *, client: Client | None = None,
                  progress: ProgressFn | None = None) -> list[CaptureCounts]:  # fmt: skip
    """Read every capture ``captures`` names into ``clf``, as ``Classifier.read_all`` does (its
    return and its errors), on ``client``'s workers when one is given; ``progress(bytes,
    packets)`` over all captures."""
    inputs = resolve_captures(captures) if client is not None else []
    if client is None or _streams(inputs):
        return clf.read_all(captures, progress=progress)
    return read_on(_planned_on(client, inputs), clf, inputs, progress=progress)


@dataclass(frozen=True)
class Spread:
    """Where a run's segments are read: the client of a Dask cluster, and the segments."""

    client: Client
    segments: list[list[int]]

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))


@contextmanager
def spread(inputs: Sequence[CaptureInput], *, jobs: int | None, scheduler: str | None) -> Iterator[Spread | None]:
    """The cluster to read ``inputs`` on, or None where this process reads them: ``jobs`` 1,
    or a single segment (``segments.plan``: one capture, or a ring buffer whose files all
    continue each other). ``scheduler``: an existing cluster's address; else a LocalCluster of
    ``jobs`` processes. ``jobs`` None: a worker per ``CORES_PER_WORKER`` cores, for at least
    ``AUTO_BYTES`` of input (below it, starting workers costs more than they save) that is not
    one ring buffer by the look of it (``_one_ring``). Standard
    input and pipes are read here: what is read from them is gone, and no worker sees them."""
    if _streams(inputs):
        yield None
        return
    if scheduler is not None:
        with dask_client(0, scheduler) as client:
            yield _planned_on(client, inputs)
        return
    workers = jobs if jobs is not None else (os.cpu_count() or 1) // CORES_PER_WORKER
    if workers < 2 or len(inputs) < 2:
        yield None
        return
    if jobs is None and (sum(c.size or 0 for c in inputs) < AUTO_BYTES or _one_ring(inputs)):
        yield None
        return
    segments = plan(inputs, [reach(c) for c in inputs])
    if len(segments) < 2:
        yield None
        return
    with dask_client(min(workers, len(segments))) as client:
        yield Spread(client, segments)


def _planned_on(client: Client, inputs: Sequence[CaptureInput]) -> Spread:
    """``inputs`` planned into segments on ``client``: their reaches read by its workers."""
    return Spread(client, plan(inputs, client.gather(client.map(reach, inputs, pure=False))))


def _one_ring(inputs: Sequence[CaptureInput]) -> bool:
    """Whether ``inputs`` look like one ring buffer, each file started after the one before was
    last written: then they continue each other and make one segment, and reading them all for
    their reach would be for nothing. A guess from the files' times, which decides only whether
    to look closer (a wrong guess reads in one process, with the same result)."""
    for before, capture in itertools.pairwise(inputs):
        try:
            written = os.stat(before.path).st_mtime_ns
        except OSError:
            return False
        if capture.first_ns is None or capture.first_ns < written:
            return False
    return True


def _streams(inputs: Sequence[CaptureInput]) -> bool:
    """Whether some input is standard input or a pipe (anything there but a regular file)."""
    return any(c.path == "-" or (os.path.exists(c.path) and not os.path.isfile(c.path)) for c in inputs)


def read_on(where: Spread, clf: Classifier, inputs: Sequence[CaptureInput], *, progress: ProgressFn | None = None) -> list[CaptureCounts]:
    """Read ``inputs`` segment by segment on the workers, each segment's result absorbed into
    ``clf`` in reading order (see the module doc); returns and raises as ``Classifier.read_all``.
    A signal (``Classifier.interrupt``) stops it without waiting for the segment being read: the
    captures not yet taken in get their rows, with the interruption."""
    client, segments = where.client, where.segments
    make = partial(Classifier, **clf.settings)
    origin = next((c.first_ns for c in inputs if c.first_ns is not None), None)
    if clf.intervals is not None:
        clf.intervals.origin_ns = origin
    run = f"pcapclass-{uuid.uuid4().hex}"
    queue, spool, load = f"{run}-progress", _Spool(run), _fetch(client)
    sizes = [sum(inputs[i].size or 0 for i in seg) for seg in segments]
    done, packets = [0] * len(segments), [0] * len(segments)

    def submit(k: int, registrations: Sequence[Registration] = ()) -> Future[SegmentResult]:
        return client.submit(read_segment, make, [inputs[i] for i in segments[k]], registrations=registrations, origin_ns=origin,
                             progress=_Report(queue, k) if progress is not None else None, keep=spool, pure=False)  # fmt: skip

    def wait(k: int, future: Future[SegmentResult]) -> SegmentResult | None:
        """Segment ``k``'s result, or None when a signal came first."""
        from distributed import wait as wait_for

        while not future.done():
            if clf.interrupted is not None:
                return None
            with contextlib.suppress(TimeoutError):
                wait_for(future, timeout=REPORT_EVERY)
            if progress is not None:
                _drain(queue, client, done, packets)
                progress(sum(done), sum(packets))
        return _outcome(future, f"reading {inputs[segments[k][0]].path}")  # type: ignore[no-any-return]

    ahead = AHEAD_PER_WORKER * max(1, where.workers)
    futures: dict[int, Future[SegmentResult]] = {k: submit(k) for k in range(min(ahead, len(segments)))}
    registered: list[Registration] = []
    start, opened, failed = len(clf.counts), 0, list[CaptureError]()
    try:
        for k in range(len(segments)):
            result = wait(k, futures.pop(k))
            if k + ahead < len(segments):
                futures[k + ahead] = submit(k + ahead)
            if result is not None and registered:  # read again, knowing them (``segments``)
                result = wait(k, submit(k, registered))
            if result is None or clf.interrupted is not None:  # the captures not taken in get their rows, with the signal
                _interrupted(clf, [inputs[i] for seg in segments[k:] for i in seg])
                break
            absorb(clf, result, load)
            registered += result.registrations
            done[k], packets[k] = sizes[k], sum(c.packets for c in result.counts)
            opened, failed = opened + result.opened, failed + result.failed
            if progress is not None:
                progress(sum(done), sum(packets))
    finally:
        client.cancel(list(futures.values()))
        client.run(_remove_spool, run)
    if failed and not opened:
        raise failed[0]
    return clf.counts[start:]


@dataclass(frozen=True)
class _Spool:
    """``read_segment``'s ``keep`` on a worker: each part of its finished flows goes to a file
    in the run's directory under the worker's own directory (which Dask removes with the
    worker), so that the worker holds only the open flows; gives (worker address, path) for
    ``_fetch``."""

    run: str

    def __call__(self, part: Part) -> tuple[str, str]:
        from distributed import get_worker

        recs, capture, rows, last = part
        worker = get_worker()
        directory = Path(worker.local_directory) / self.run
        path = directory / f"{uuid.uuid4().hex}.npz"
        try:
            directory.mkdir(exist_ok=True)
            np.savez(path, cols=recs.cols, capture=capture, flow=rows.flow, vid=rows.vid, from_a=rows.from_a, last=np.array(last))
        except OSError as exc:
            raise OutputError.from_os(exc, "cannot spill finished flows to a temporary file", path=directory) from None
        return worker.address, str(path)


def _part_file(path: str) -> Part:
    """A part ``_Spool`` wrote, read and removed."""
    with np.load(path) as f:
        part = Records(f["cols"]), f["capture"], FlowRows(f["flow"], f["vid"], f["from_a"]), bool(f["last"])
    os.unlink(path)
    return part


def _fetch(client: Client) -> Callable[[tuple[str, str]], Part]:
    """``absorb``'s ``load`` of spooled parts: read here when this machine sees the file (a
    LocalCluster), else read by the worker that wrote it and sent."""

    def load(kept: tuple[str, str]) -> Part:
        address, path = kept
        if os.path.exists(path):
            return _part_file(path)
        future = client.submit(_part_file, path, workers=[address], allow_other_workers=False, pure=False)
        return _outcome(future, "handing over finished flows")  # type: ignore[no-any-return]

    return load


def _remove_spool(run: str, dask_worker: Worker) -> None:
    """The run's spooled parts left on a worker (``Client.run`` passes the worker)."""
    shutil.rmtree(Path(dask_worker.local_directory) / run, ignore_errors=True)


def _outcome(future: Future[Any], doing: str) -> Any:
    """A worker's result; whatever ended its task (the worker died, its connection was lost,
    it failed) as a ClusterError, one line."""
    try:
        return future.result()
    except PcapclassError:
        raise
    except Exception as exc:  # whatever ended a remote task (KilledWorker, a lost connection) is one line
        raise ClusterError(f"a Dask worker failed {doing}: {type(exc).__name__}: {exc}") from exc


def _drain(queue: str, client: Client, done: list[int], packets: list[int]) -> None:
    """Take the workers' progress reports waiting on ``queue``."""
    from distributed import Queue

    for segment, nbytes, count in Queue(queue, client=client).get(batch=True):
        done[segment], packets[segment] = max(done[segment], nbytes), max(packets[segment], count)


def _interrupted(clf: Classifier, unread: Iterable[CaptureInput]) -> None:
    """Rows for the captures a signal kept from being read: nothing of theirs is classified."""
    assert clf.interrupted is not None
    for capture in unread:
        clf.unreadable(capture.path, CaptureInterruptedError(clf.interrupted, path=capture.path))


def classify_file(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
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
    client: Client | None = None,
) -> Result:
    """Classify a capture file (pcap, pcapng, gzip; ``-`` for stdin), or every capture of a
    directory, a glob or a list of them, read in capture-time order (``Classifier.read_all``);
    with ``client`` (a ``dask.distributed.Client``), on its workers, with the same result.

    A fault in the middle of a file does not raise: the result holds everything before
    it, ``partial`` is true and ``error`` says where. A file that cannot be opened, or is
    not a capture at all, has its row in ``captures`` with the error; when no capture could
    be opened at all (a single such file, say), raises CaptureError. ``payload=False`` skips the payload stage
    (services by port only); ``epm_expiry`` is how long an endpoint-mapper reply vouches for
    the port it handed out; ``by`` groups the breakdown by any flow label columns (add
    ``"detail"`` for OWA / ActiveSync / RPC over HTTP ... rows; ValueError for others);
    ``top_groups`` keeps the largest groups of each service, the rest summed in one row;
    ``interval`` (seconds) adds the time series (``Result.timeseries``).

    Example::

        r = classify_file("tests/fixtures/pcaps/exchange_services.pcap")
        r.breakdown[["service", "direction", "packets"]]
    """
    clf = Classifier(servers=servers, rules=rules, idle_timeout=idle_timeout, max_flows=max_flows,
                     payload=payload, epm_expiry=epm_expiry, interval=interval)  # fmt: skip
    try:
        read_captures(clf, [path] if isinstance(path, (str, os.PathLike)) else path, client=client)
        return clf.result(by=by, top_groups=top_groups)
    finally:
        clf.close()

