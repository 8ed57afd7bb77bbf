"""The ``tcpdump`` backend: tcpdump writing classic pcap to a pipe, a packet at a time (``-U``)."""

from __future__ import annotations

from .pipe import PipeCapture
from .source import KERNEL_BUFFER_BYTES


class TcpdumpCapture(PipeCapture):
    """tcpdump on an interface, pcap on its stdout."""

    backend = "tcpdump"
    package = "tcpdump"

    def _command(self, program: str, interface: str, *, bpf: str | None, count: int | None) -> list[str]:
        cmd = [program, "-i", interface, "-U", "-w", "-", "-n", "-B", str(KERNEL_BUFFER_BYTES >> 10)]
        if count is not None:
            cmd += ["-c", str(count)]
        return cmd + ([bpf] if bpf else [])
