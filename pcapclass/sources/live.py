"""Live capture sources: an interface's packets as the same PacketBatch columns files yield.

Backends:

* ``dumpcap`` (default) and ``tcpdump``: the capture process writes pcapng / pcap to a pipe
  that the streaming file readers parse; the C side does the capturing, we only parse.
* ``scapy``: scapy's ``L2ListenSocket`` (an AF_PACKET socket, BPF attached by scapy) read
  frame by frame in pure Python, with no external binary.

A reader thread turns the capture into batches and queues copies of them, so that the
consumer can wake up on a timer (rolling outputs) while no packet arrives, and so that under
load the batches that piled up are merged into one: fewer, larger numpy passes.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import queue
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, BinaryIO, cast

import numpy as np

from .. import linktypes
from ..errors import CaptureError, LiveCaptureError
from . import CaptureFile
from .batch import PacketBatch

BACKENDS = ("dumpcap", "tcpdump", "scapy")
DEFAULT_BACKEND = "dumpcap"

#: what a capture needs on Linux, said in every permission error
PERMISSION_HINT = (
    "capturing needs root, or the capabilities CAP_NET_RAW and CAP_NET_ADMIN "
    "(e.g. `setcap cap_net_raw,cap_net_admin=eip /usr/bin/dumpcap`), or membership of the "
    "`wireshark` group where dumpcap is installed for it"
)
#: kernel capture buffer asked of the capture process / socket: absorbs bursts while we parse
KERNEL_BUFFER_BYTES = 64 << 20
#: pipe capacity asked for (F_SETPIPE_SZ): larger reads, fewer batches under load
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031
#: chunk of the pipe reader's window: a read returns what is there, up to this
PIPE_CHUNK = 4 << 20
#: packets merged at most into one batch handed to the pipeline
MAX_BATCH_PACKETS = 1 << 18
#: seconds to wait for a capture process to open the interface
START_TIMEOUT = 15.0
#: seconds a stopped capture process gets to flush before it is killed
STOP_TIMEOUT = 10.0

# linux/if_packet.h and linux/if_arp.h
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
#: struct tpacket_auxdata: tp_status, tp_len, tp_snaplen, tp_mac, tp_net, tp_vlan_tci, tp_vlan_tpid
_AUXDATA = struct.Struct("IIIHHHH")
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
ETHERTYPE_VLAN = 0x8100
#: ARPHRD_* -> the link type its AF_PACKET frames carry (libpcap's mapping for these three)
_ARPHRD_LINKTYPE = {
    ARPHRD_ETHER: linktypes.LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: linktypes.LINKTYPE_ETHERNET,
    ARPHRD_NONE: linktypes.LINKTYPE_RAW,
}


@dataclass(frozen=True, slots=True)
class Interface:
    """A network interface as ``pcapclass interfaces`` lists it."""

    name: str
    index: int
    state: str
    kind: str
    addresses: tuple[str, ...]


def list_interfaces() -> list[Interface]:
    """The interfaces of this network namespace, by index, from the kernel (no capture tool)."""
    addrs: dict[str, list[str]] = {}
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            addrs.setdefault(parts[1], []).append(parts[3])
    result = []
    for index, name in socket.if_nameindex():
        base = f"/sys/class/net/{name}"
        state = _read_text(f"{base}/operstate") or "unknown"
        kind = {str(k): v for k, v in ((ARPHRD_ETHER, "ethernet"), (ARPHRD_LOOPBACK, "loopback"), (ARPHRD_NONE, "raw-ip"))}.get(
            _read_text(f"{base}/type"), "other"
        )
        result.append(Interface(name=name, index=index, state=state, kind=kind, addresses=tuple(addrs.get(name, ()))))
    return result


def _read_text(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def check_interface(name: str) -> None:
    """Raise LiveCaptureError naming the real interfaces when ``name`` is not one of them."""
    names = [i.name for i in list_interfaces()]
    if name not in names:
        raise LiveCaptureError(f"no such interface {name!r}; the interfaces here are: {', '.join(names) or 'none'}")


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


class PipeCapture(LiveSource):
    """dumpcap or tcpdump writing pcapng / pcap to a pipe, parsed by the file readers."""

    def __init__(
        self,
        interface: str,
        *,
        backend: str = DEFAULT_BACKEND,
        bpf: str | None = None,
        count: int | None = None,
    ) -> None:
        super().__init__(interface)
        self.backend = backend
        self._count = count
        program = shutil.which(backend)
        if program is None:
            package = "tshark (or wireshark-common)" if backend == "dumpcap" else backend
            raise LiveCaptureError(f"{backend} is not installed: install the Debian package {package}, or use --backend scapy")
        if backend == "dumpcap":
            cmd = [program, "-i", interface, "-w", "-", "-B", str(KERNEL_BUFFER_BYTES >> 20)]
        else:
            cmd = [program, "-i", interface, "-U", "-w", "-", "-n", "-B", str(KERNEL_BUFFER_BYTES >> 10)]
        if count is not None:
            cmd += ["-c", str(count)]
        if bpf:
            cmd += ["-f", bpf] if backend == "dumpcap" else [bpf]
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


class ScapyCapture(LiveSource):
    """scapy's ``L2ListenSocket`` read raw, frame by frame, into batches (no external binary).

    On loopback the kernel shows every packet twice (as sent, as received); the sent copy
    (PACKET_OUTGOING) is dropped so each packet counts once, as libpcap does.
    """

    backend = "scapy"
    #: frames gathered at most before a batch is queued, and seconds at most to gather them
    BATCH_FRAMES = 8192
    BATCH_SECONDS = 0.05

    def __init__(self, interface: str, *, bpf: str | None = None, count: int | None = None) -> None:
        super().__init__(interface)
        self.format = "scapy"
        self._count = count
        try:
            from scapy.arch.linux import L2ListenSocket
            from scapy.error import Scapy_Exception
        except (ImportError, OSError) as exc:  # a broken install, or scapy's cache unreadable
            raise LiveCaptureError(f"scapy cannot be loaded: {exc}") from None
        runtime_log = logging.getLogger("scapy.runtime")
        level = runtime_log.level
        runtime_log.setLevel(logging.ERROR)  # scapy warns that it cannot guess lo's layer; we do not ask it to
        try:
            self._sock = L2ListenSocket(iface=interface, filter=bpf or None, promisc=False)
        except PermissionError:
            raise LiveCaptureError(f"no permission to capture on {interface}: {PERMISSION_HINT}") from None
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise describe_start_failure("no such device", interface=interface, backend="scapy") from None
            raise LiveCaptureError(f"scapy could not capture on {interface}: {exc.strerror or exc}") from None
        except Scapy_Exception as exc:
            raise LiveCaptureError(f"bad capture filter: {exc}") from None
        finally:
            runtime_log.setLevel(level)
        sock = self._sock.ins
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, KERNEL_BUFFER_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER_BYTES)
        hatype = sock.getsockname()[3]
        if hatype not in _ARPHRD_LINKTYPE:
            self._sock.close()
            raise LiveCaptureError(f"the scapy backend does not decode {interface}'s link (ARPHRD {hatype}); use --backend dumpcap")
        self._linktype = _ARPHRD_LINKTYPE[hatype]
        self._loopback = hatype == ARPHRD_LOOPBACK
        self._stats()  # reading the statistics resets them: start from zero
        self.drops = 0
        self._start_reader(self._read)

    def _stats(self) -> None:
        try:
            _packets, dropped = struct.unpack("II", self._sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return
        self.drops += dropped

    def _read(self) -> None:
        sock = self._sock.ins
        recvmsg = sock.recvmsg
        cmsg_size = socket.CMSG_SPACE(_AUXDATA.size) + socket.CMSG_SPACE(16)
        unpack_aux = _AUXDATA.unpack_from
        first_packet = 0
        try:
            while not self._stopping.is_set():
                if not select.select([sock], [], [], 0.1)[0]:
                    continue
                frames: list[bytes] = []
                wire: list[int] = []
                stamps: list[int] = []
                deadline = time.monotonic() + self.BATCH_SECONDS
                while len(frames) < self.BATCH_FRAMES:
                    try:
                        frame, anc, _flags, addr = recvmsg(65535, cmsg_size, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        if time.monotonic() > deadline or not select.select([sock], [], [], 0.005)[0]:
                            break
                        continue
                    if self._loopback and addr[2] == PACKET_OUTGOING:
                        continue
                    length, ts = len(frame), 0
                    for level, kind, value in anc:
                        if level == SOL_PACKET and kind == PACKET_AUXDATA:
                            status, length, _snap, _mac, _net, tci, tpid = unpack_aux(value)
                            if tci or status & TP_STATUS_VLAN_VALID:
                                # the kernel strips the 802.1Q tag; put it back as libpcap does
                                tag = struct.pack("!HH", tpid if status & TP_STATUS_VLAN_TPID_VALID else ETHERTYPE_VLAN, tci)
                                frame = frame[:12] + tag + frame[12:]
                                length += 4
                        elif level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = struct.unpack_from("qq", value)
                            ts = sec * 1_000_000_000 + nsec
                    frames.append(frame)
                    wire.append(length)
                    stamps.append(ts or time.time_ns())
                    if self._count is not None and first_packet + len(frames) >= self._count:
                        break
                self._stats()
                if frames:
                    self._emit(self._batch(frames, wire, stamps, first_packet))
                    first_packet += len(frames)
                if self._count is not None and first_packet >= self._count:
                    return
        finally:
            self._stats()
            self._sock.close()

    def _batch(self, frames: list[bytes], wire: list[int], stamps: list[int], first_packet: int) -> PacketBatch:
        caplen = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
        return PacketBatch(
            data=np.frombuffer(b"".join(frames), dtype=np.uint8),
            offset=np.concatenate(([0], np.cumsum(caplen)[:-1])).astype(np.int64),
            caplen=caplen,
            wirelen=np.array(wire, dtype=np.int64),
            ts_ns=np.array(stamps, dtype=np.int64),
            linktype=np.full(len(frames), self._linktype, dtype=np.int64),
            first_packet=first_packet,
        )

    def close(self) -> None:
        """Stop the reader thread; it closes the socket."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT)


def open_live(
    interface: str,
    *,
    backend: str = DEFAULT_BACKEND,
    bpf: str | None = None,
    count: int | None = None,
) -> LiveSource:
    """Start capturing on ``interface``; ``count`` lets the capture end itself after N packets.

    Raises LiveCaptureError for an unknown interface (naming the real ones), a missing
    permission (saying what is needed), a filter the compiler refuses (its message), or a
    capture tool that is missing or will not start.

    >>> src = open_live("lo", bpf="tcp port 25")  # doctest: +SKIP
    >>> batch = src.poll(1.0)                      # doctest: +SKIP
    """
    if backend not in BACKENDS:
        raise LiveCaptureError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_interface(interface)
    if backend == "scapy":
        return ScapyCapture(interface, bpf=bpf, count=count)
    return PipeCapture(interface, backend=backend, bpf=bpf, count=count)
