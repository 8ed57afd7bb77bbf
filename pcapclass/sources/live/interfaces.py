"""The network interfaces a live capture can open, listed from the kernel (no capture tool)."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass

from ...errors import LiveCaptureError

# linux/if_arp.h
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE


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
