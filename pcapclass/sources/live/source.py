"""What every live capture backend is: a reader thread queueing owned batches that ``poll`` hands out merged.

A reader thread turns the capture into batches and queues copies of them, so that the
consumer can wake up on a timer (rolling outputs) while no packet arrives, and so that under
load the batches that piled up are merged into one: fewer, larger numpy passes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np

from ...errors import CaptureError, LiveCaptureError
from ..batch import PacketBatch
from .interfaces import list_interfaces

#: what a capture needs on Linux, said in every permission error
PERMISSION_HINT = (
    "capturing needs root, or the capabilities CAP_NET_RAW and CAP_NET_ADMIN "
    "(e.g. `setcap cap_net_raw,cap_net_admin=eip /usr/bin/dumpcap`), or membership of the "
    "`wireshark` group where dumpcap is installed for it"
)
#: kernel capture buffer asked of the capture process / socket: absorbs bursts while we parse
KERNEL_BUFFER_BYTES = 64 << 20
#: packets merged at most into one batch handed to the pipeline
MAX_BATCH_PACKETS = 1 << 18
#: seconds to wait for a capture process to open the interface
START_TIMEOUT = 15.0
#: seconds a stopped capture process gets to flush before it is killed
STOP_TIMEOUT = 10.0


def compact(batch: PacketBatch) -> PacketBatch:
    """A copy of ``batch`` that owns just its packets' bytes (sources reuse their buffers)."""
    if not len(batch):
        return batch
    lo = int(batch.offset.min())
    hi = int((batch.offset + batch.caplen).max())
    return PacketBatch(
        data=batch.data[lo:hi].copy(),
        offset=batch.offset - lo,
        caplen=batch.caplen.copy(),
        wirelen=batch.wirelen.copy(),
        ts_ns=batch.ts_ns.copy(),
        linktype=batch.linktype.copy(),
        first_packet=batch.first_packet,
    )


def merge_batches(batches: list[PacketBatch]) -> PacketBatch:
    """Consecutive owned batches as one (offsets rebased onto the joined buffer)."""
    if len(batches) == 1:
        return batches[0]
    shift = np.cumsum([0] + [len(b.data) for b in batches[:-1]])
    return PacketBatch(
        data=np.concatenate([b.data for b in batches]),
        offset=np.concatenate([b.offset + s for b, s in zip(batches, shift)]),
        caplen=np.concatenate([b.caplen for b in batches]),
        wirelen=np.concatenate([b.wirelen for b in batches]),
        ts_ns=np.concatenate([b.ts_ns for b in batches]),
        linktype=np.concatenate([b.linktype for b in batches]),
        first_packet=batches[0].first_packet,
    )


_END = object()


class LiveSource:
    """A running capture: ``poll`` hands out batches; ``stop`` ends it, keeping what was caught.

    ``drops`` is what the kernel or the capture process reported losing, as soon as it is
    known (the pipe backends learn it when the process exits; scapy at every poll).
    """

    backend = ""

    def __init__(self, interface: str) -> None:
        self.interface = interface
        self.format = ""
        self.drops = 0
        self.finished = False
        self._queue: queue.Queue[object] = queue.Queue(maxsize=4096)
        self._error: LiveCaptureError | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._packets = 0

    def _start_reader(self, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except LiveCaptureError as exc:
                self._queue.put(exc)
            except CaptureError as exc:
                self._queue.put(LiveCaptureError(f"{self.backend} on {self.interface}: {exc.message}"))
            finally:
                self._queue.put(_END)

        self._thread = threading.Thread(target=run, name=f"pcapclass-{self.backend}", daemon=True)
        self._thread.start()

    def _emit(self, batch: PacketBatch) -> None:
        if len(batch):
            self._queue.put(batch)

    def poll(self, timeout: float) -> PacketBatch | None:
        """The packets that arrived (merged), waiting at most ``timeout`` s; None when none did.

        Raises LiveCaptureError once, after the packets before the failure were handed out.
        """
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if self.finished:
            return None
        got: list[PacketBatch] = []
        n = 0
        try:
            item = self._queue.get(timeout=max(timeout, 0.0))
            while True:
                if item is _END:
                    self._finish()
                    break
                if isinstance(item, LiveCaptureError):
                    self._error = item
                elif isinstance(item, PacketBatch):
                    got.append(item)
                    n += len(item)
                if n >= MAX_BATCH_PACKETS:
                    break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if not got:
            if self._error is not None:
                err, self._error = self._error, None
                raise err
            return None
        return merge_batches(got)

    def _finish(self) -> None:
        self.finished = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """Ask the capture to end; ``poll`` then returns what is still buffered until ``finished``."""
        self._stopping.set()

    def close(self) -> None:
        """Stop and release the capture (idempotent)."""
        self.stop()


def describe_start_failure(text: str, *, interface: str, backend: str) -> LiveCaptureError:
    """The capture tool's start-up complaint as one actionable LiveCaptureError."""
    low = text.lower()
    if "permission" in low or "operation not permitted" in low:
        return LiveCaptureError(f"no permission to capture on {interface}: {PERMISSION_HINT}")
    if "no such device" in low or "no device named" in low:
        names = ", ".join(i.name for i in list_interfaces())
        return LiveCaptureError(f"no such interface {interface!r}; the interfaces here are: {names or 'none'}")
    if "filter" in low or "syntax error" in low:
        # the compiler's own words: the line naming the syntax error, else the filter complaint
        lines = text.strip().splitlines()
        detail = [s for s in lines if "syntax" in s.lower()] or [s for s in lines if "filter" in s.lower()] or lines
        return LiveCaptureError(f"bad capture filter: {detail[0].removeprefix(backend + ': ')}")
    lines = [s for s in text.splitlines() if s.strip() and not s.startswith(("Capturing on", "File:"))]
    last = lines[-1].removeprefix(f"{backend}: ") if lines else "it exited without a message"
    return LiveCaptureError(f"{backend} could not capture on {interface}: {last}")
