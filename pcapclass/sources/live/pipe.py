"""The pipe backends' common part: a capture program's pcap / pcapng stdout parsed by the streaming file readers."""

from __future__ import annotations

import fcntl
import re
import select
import shutil
import signal
import subprocess
import threading
from typing import IO, BinaryIO, cast

from ...errors import CaptureError, LiveCaptureError
from .. import CaptureFile
from .source import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    LiveSource,
    compact,
    describe_start_failure,
)

#: pipe capacity asked for (F_SETPIPE_SZ): larger reads, fewer batches under load
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031
#: chunk of the pipe reader's window: a read returns what is there, up to this
PIPE_CHUNK = 4 << 20


class PipeCapture(LiveSource):
    """A capture program writing pcapng / pcap to a pipe, parsed by the file readers; a
    subclass says how the program is called (``_command``)."""

    #: the Debian package that brings the program, named when it is missing
    package = ""

    def __init__(self, interface: str, *, bpf: str | None = None, count: int | None = None) -> None:
        super().__init__(interface)
        self._count = count
        backend = self.backend
        program = shutil.which(backend)
        if program is None:
            raise LiveCaptureError(f"{backend} is not installed: install the Debian package {self.package}, or use --backend scapy")
        cmd = self._command(program, interface, bpf=bpf, count=count)
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as exc:
            raise LiveCaptureError(f"cannot run {backend}: {exc.strerror or exc}") from None
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._stderr: list[str] = []
        self._stderr_thread = threading.Thread(target=self._drain_stderr, args=(self._proc.stderr,), daemon=True)
        self._stderr_thread.start()
        try:
            fcntl.fcntl(self._proc.stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means smaller batches
        self._signalled = False
        ready, _, _ = select.select([self._proc.stdout], [], [], START_TIMEOUT)
        if not ready:
            self._kill()
            raise LiveCaptureError(f"{backend} did not start capturing on {interface} within {START_TIMEOUT:.0f} s")
        try:
            self._capture = CaptureFile(f"{backend}:{interface}", stream=cast(BinaryIO, self._proc.stdout), low_latency=True,
                                        chunk_size=PIPE_CHUNK, name=f"{backend}:{interface}")  # fmt: skip
        except CaptureError:
            raise self._startup_error() from None
        self.format = self._capture.format
        self._start_reader(self._read)

    def _command(self, program: str, interface: str, *, bpf: str | None, count: int | None) -> list[str]:
        """The command line that captures ``interface`` to stdout."""
        raise NotImplementedError

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            for line in raw.decode(errors="replace").replace("\r", "\n").splitlines():
                if line.strip():
                    self._stderr.append(line.strip())

    def _read(self) -> None:
        for batch in self._capture:
            self._emit(compact(batch))
        rc = self._proc.wait()
        self._stderr_thread.join(timeout=STOP_TIMEOUT)
        self.drops = parse_drops("\n".join(self._stderr))
        if self._signalled or (self._count is not None and rc == 0):
            return
        raise LiveCaptureError(f"{self.backend} on {self.interface} stopped unexpectedly (exit status {rc}): {self._last_message()}")

    def _last_message(self) -> str:
        lines = [s for s in self._stderr if not s.startswith(("Capturing on", "File:", "Packets", "tcpdump: listening"))]
        return lines[-1].removeprefix(f"{self.backend}: ") if lines else "no message"

    def _startup_error(self) -> LiveCaptureError:
        """Name the cause when the process quit before capturing: interface, permission, filter."""
        try:
            self._proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        self._stderr_thread.join(timeout=STOP_TIMEOUT)
        text = "\n".join(self._stderr)
        return describe_start_failure(text, interface=self.interface, backend=self.backend)

    def stop(self) -> None:
        """SIGINT the capture process: it flushes its buffer, reports its drops and exits."""
        super().stop()
        if not self._signalled and self._proc.poll() is None:
            self._signalled = True
            try:
                self._proc.send_signal(signal.SIGINT)
            except ProcessLookupError:
                pass
        elif self._proc.poll() is not None:
            self._signalled = True

    def close(self) -> None:
        """Stop the process, killing it if it does not exit in time."""
        self.stop()
        try:
            self._proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._kill()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)

    def _kill(self) -> None:
        self._proc.kill()
        self._proc.wait()


_DUMPCAP_DROPS = re.compile(r"received/dropped on interface .*?: \d+/(\d+) \(.*?ps_ifdrop:(\d+)\)")
_TCPDUMP_DROPS = re.compile(r"(\d+) packets? dropped by (?:kernel|interface)")


def parse_drops(text: str) -> int:
    """Packets lost, from dumpcap's or tcpdump's closing statistics on stderr."""
    total = 0
    for m in _DUMPCAP_DROPS.finditer(text):
        total += int(m.group(1)) + int(m.group(2))
    for m in _TCPDUMP_DROPS.finditer(text):
        total += int(m.group(1))
    return total
