"""The exception tree: every error survives a trip through pickle (a worker process hands its
errors to the caller that way) with its class, its fields, its message and its exit code."""

from __future__ import annotations

import pickle
import signal

import pytest

from pcapclass.errors import (
    CaptureInterruptedError,
    CaptureOpenError,
    InvalidCaptureError,
    LiveCaptureError,
    OutputError,
    PcapclassError,
    RulesError,
)

ERRORS = [
    CaptureOpenError("No such file or directory", path="ring/a.pcap"),
    InvalidCaptureError("simple packet block total length 12 is below the 16 bytes its fields need", path="b.pcapng", offset=52, packet=3),
    CaptureInterruptedError(signal.SIGTERM, path="c.pcap", packet=9),
    RulesError("unknown service 'nowhere'", path="site.toml", key="interface[0].service"),
    OutputError("cannot write the outputs: No space left on device", path="/out"),
    LiveCaptureError("no such interface eth9"),
]


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_pickle_whole(err: PcapclassError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err)
    assert str(back) == str(err) and back.args == err.args
    assert vars(back) == vars(err) and back.exit_code == err.exit_code
    with pytest.raises(type(err), match="^" + str(err).split(":")[0]):
        raise back


def test_an_interrupted_read_keeps_the_shells_exit_code() -> None:
    back = pickle.loads(pickle.dumps(CaptureInterruptedError(signal.SIGINT, path="x.pcap")))
    assert back.exit_code == 130 and back.signum == signal.SIGINT and "interrupted by SIGINT" in str(back)
