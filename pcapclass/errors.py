"""The exception tree of pcapclass: one root, each leaf also a matching built-in.

    PcapclassError
    ├── CaptureError                      a capture cannot be read (any reason)
    │   ├── CaptureOpenError(OSError)     missing, unreadable, a directory
    │   ├── InvalidCaptureError(ValueError)  bytes that are not (or stop being) a capture
    │   └── CaptureInterruptedError       reading stopped by SIGINT or SIGTERM
    ├── RulesError(ValueError)            a rules file is malformed or inconsistent
    ├── LiveCaptureError(RuntimeError)    a live capture cannot start or died
    ├── ClusterError(RuntimeError)        a Dask cluster cannot be reached, or a worker failed
    └── OutputError(OSError)              an output or spill file cannot be written

Every CaptureError carries the file, the byte offset and the packet number (1-based, as
tshark numbers frames) where it was found, so that the CLI can print one precise line.
"""

from __future__ import annotations

import os
import signal


def signal_exit_code(signum: int) -> int:
    """The shell's exit code for a death by signal ``signum``: 128 + its number.

    >>> signal_exit_code(signal.SIGINT)
    130
    """
    return 128 + signum


class PcapclassError(Exception):
    """Root of every error pcapclass raises on purpose.

    Errors pickle with their fields (file, offset, key ...), so that one raised in another
    process (a worker reading part of a capture) reaches the caller whole.
    """

    #: process exit code the CLI uses for this class of error
    exit_code: int = 1

    def __reduce__(self) -> tuple[object, ...]:
        # the default would call the class with ``args`` alone, and the leaves' fields are keywords
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[PcapclassError], args: tuple[object, ...], state: dict[str, object]) -> PcapclassError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class CaptureError(PcapclassError):
    """A capture could not be read, in whole or from some point on."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        path: str,
        offset: int | None = None,
        packet: int | None = None,
    ) -> None:
        self.message = message
        self.path = path
        self.offset = offset
        self.packet = packet
        super().__init__(str(self))

    def __str__(self) -> str:
        where = [self.path]
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        if self.packet is not None:
            where.append(f"packet {self.packet}")
        return f"{': '.join([', '.join(where), self.message])}"


class CaptureOpenError(CaptureError, OSError):
    """The capture cannot be opened: missing, a directory, no permission."""


class InvalidCaptureError(CaptureError, ValueError):
    """The bytes are not a capture, or stop being one at ``offset``."""


class CaptureInterruptedError(CaptureError):
    """Reading was stopped by a signal (SIGINT, SIGTERM): what was read before it is kept.

    The exit code is the shell's for a death by that signal (``signal_exit_code``).
    """

    def __init__(self, signum: int, *, path: str, offset: int | None = None, packet: int | None = None) -> None:
        self.signum = signum
        self.exit_code = signal_exit_code(signum)
        super().__init__(f"interrupted by {signal.Signals(signum).name}", path=path, offset=offset, packet=packet)


class RulesError(PcapclassError, ValueError):
    """A rules file is malformed: carries the file, the key path and the reason."""

    exit_code = 5

    def __init__(self, message: str, *, path: str, key: str | None = None) -> None:
        self.message = message
        self.path = path
        self.key = key
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.key is None else f"{self.path}: {self.key}"
        return f"{where}: {self.message}"


class LiveCaptureError(PcapclassError, RuntimeError):
    """A live capture could not start, or its capture process died."""

    exit_code = 6


class ClusterError(PcapclassError, RuntimeError):
    """The Dask cluster a run was to be read on cannot be started or reached, or a worker died
    or failed while reading (``session``): nothing is written."""

    exit_code = 8


class OutputError(PcapclassError, OSError):
    """An output cannot be written: the directory cannot be made, a disk or the spill directory
    is full. Carries the file or directory and the operating system's reason."""

    exit_code = 7

    def __init__(self, message: str, *, path: str) -> None:
        self.message = message
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    @classmethod
    def from_os(cls, exc: OSError, doing: str, *, path: str | os.PathLike[str]) -> OutputError:
        """``exc`` met while ``doing`` (``"cannot write the outputs"``), naming the file it
        names, else ``path``."""
        return cls(f"{doing}: {exc.strerror or exc}", path=os.fspath(exc.filename or path))
