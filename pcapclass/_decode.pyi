"""Types of the compiled header decoder (_decode.pyx)."""

import numpy as np
import numpy.typing as npt

FLOW: int
NON_IP: int
TRUNCATED: int
UNDECODED: int
FRAGMENT_PROTO_BASE: int
TCP: int
UDP: int

def decode_headers(
    data: npt.NDArray[np.uint8],
    offset: npt.NDArray[np.int64],
    caplen: npt.NDArray[np.int64],
    linktype: npt.NDArray[np.int64],
) -> tuple[
    npt.NDArray[np.uint8],
    npt.NDArray[np.int64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
]: ...
def batch_totals(
    wirelen: npt.NDArray[np.int64], ts_ns: npt.NDArray[np.int64], status: npt.NDArray[np.uint8], proto: npt.NDArray[np.int64]
) -> tuple[int, int, int, list[int], int]: ...
