from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_In: TypeAlias = npt.NDArray[Any]

def later_looks(data: _In, pay: _In, first: _In, off: _In, plen: _In, proto: _In, sport: _In, dport: _In, reply_prefix: bytes,
                reply_min: int, request_head: bytes, request_min: int, max_datagram: int,
                high_port: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]: ...
