"""The ``scapy`` backend: an AF_PACKET socket opened through scapy and read frame by frame in Python, no external program."""

from __future__ import annotations

import errno
import logging
import select
import socket
import struct
import time

import numpy as np

from ...errors import LiveCaptureError
from .. import linktypes
from ..batch import PacketBatch
from .interfaces import ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE
from .source import (
    KERNEL_BUFFER_BYTES,
    PERMISSION_HINT,
    STOP_TIMEOUT,
    LiveSource,
    describe_start_failure,
)

# linux/if_packet.h
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
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
