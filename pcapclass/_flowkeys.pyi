from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_In: TypeAlias = npt.NDArray[Any]

def flow_keys(status: _In, proto: _In, src_hi: _In, src_lo: _In, dst_hi: _In, dst_lo: _In, sport: _In, dport: _In,
              flow_status: int, non_flow_base: int) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.uint64],
    npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]: ...

class KeyIndex:
    def __init__(self, hash: _In, check: _In, first_ns: _In, last_ns: _In) -> None: ...
    def flows(self, hash: _In, check: _In, ts_ns: _In) -> npt.NDArray[np.int64]: ...

def keys_at(idx: _In, hash: _In, check: _In, ts_ns: _In, from_a: _In) -> tuple[
    npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]: ...
