"""Live capture sources: an interface's packets as the same PacketBatch columns files yield.

Backends:

* ``dumpcap`` (default) and ``tcpdump``: the capture process writes pcapng / pcap to a pipe
  that the streaming file readers parse; the C side does the capturing, we only parse.
* ``scapy``: scapy's ``L2ListenSocket`` (an AF_PACKET socket, BPF attached by scapy) read
  frame by frame in pure Python, with no external binary.

A backend is one module and one entry of ``_BACKENDS``.
"""

from __future__ import annotations

from ...errors import LiveCaptureError
from .dumpcap import DumpcapCapture
from .interfaces import Interface, check_interface, list_interfaces
from .pipe import PipeCapture, parse_drops
from .scapy import ScapyCapture
from .source import LiveSource, compact, describe_start_failure, merge_batches
from .tcpdump import TcpdumpCapture

#: each backend's source, by its ``--backend`` name
_BACKENDS: dict[str, type[DumpcapCapture | TcpdumpCapture | ScapyCapture]] = {
    "dumpcap": DumpcapCapture,
    "tcpdump": TcpdumpCapture,
    "scapy": ScapyCapture,
}
BACKENDS = tuple(_BACKENDS)
DEFAULT_BACKEND = "dumpcap"


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

    Example::

        src = open_live("lo", bpf="tcp port 25")
        batch = src.poll(1.0)
    """
    if backend not in BACKENDS:
        raise LiveCaptureError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    check_interface(interface)
    return _BACKENDS[backend](interface, bpf=bpf, count=count)


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "Interface",
    "LiveSource",
    "PipeCapture",
    "compact",
    "describe_start_failure",
    "list_interfaces",
    "merge_batches",
    "open_live",
    "parse_drops",
]
