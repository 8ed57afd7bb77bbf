"""The ``dumpcap`` backend (the default): Wireshark's capture program writing pcapng to a pipe."""

from __future__ import annotations

from .pipe import PipeCapture
from .source import KERNEL_BUFFER_BYTES


class DumpcapCapture(PipeCapture):
    """dumpcap on an interface, pcapng on its stdout."""

    backend = "dumpcap"
    package = "tshark (or wireshark-common)"

    def _command(self, program: str, interface: str, *, bpf: str | None, count: int | None) -> list[str]:
        cmd = [program, "-i", interface, "-w", "-", "-B", str(KERNEL_BUFFER_BYTES >> 20)]
        if count is not None:
            cmd += ["-c", str(count)]
        return cmd + (["-f", bpf] if bpf else [])
