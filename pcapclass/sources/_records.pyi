"""Types of the compiled record walkers (_records.pyx)."""

import numpy as np
import numpy.typing as npt

MIN_EPB_LEN: int
MIN_SPB_LEN: int

def u32(data: npt.NDArray[np.uint8] | bytes | bytearray | memoryview, at: int, big_endian: bool) -> int: ...
def walk_pcap(
    data: npt.NDArray[np.uint8], pos: int, end: int, big_endian: bool, ts_scale: int, max_caplen: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], int, bool, int]: ...
def walk_pcapng(
    data: npt.NDArray[np.uint8], pos: int, end: int, big_endian: bool, max_block_len: int, room: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]: ...
def length_anomalies(caplen: npt.NDArray[np.int64], wirelen: npt.NDArray[np.int64], snaplen: int, max_caplen: int) -> tuple[int, int, int]: ...
def packet_blocks(
    data: npt.NDArray[np.uint8] | bytes | bytearray | memoryview, pos: npt.NDArray[np.int64], big_endian: bool, if_link: npt.NDArray[np.int64],
    if_snap: npt.NDArray[np.int64], if_exp2: npt.NDArray[np.int64], if_exp10: npt.NDArray[np.int64], if_offset_s: npt.NDArray[np.int64],
    max_caplen: int, ts_ns_max: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], int, int,
           tuple[int, int, int, int] | None]: ...
