from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ._identify import SignatureTables

_In: TypeAlias = npt.NDArray[Any]

class PathRules:
    usable: bool
    def __init__(self, *, prefixes: Sequence[str], queries: Sequence[Sequence[tuple[str, str]]], rpc_proxy: str,
                 rpc_methods: Sequence[str]) -> None: ...

class DecidingTables(SignatureTables):
    def first_facts(self, data: _In, off: _In, plen: _In, tcp: _In, server_port: _In, server_is_src: _In, call_ptypes: _In,
                    fact_keys: _In, fact_sids: _In) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.uint64], npt.NDArray[np.int64],
                                                              npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp],
                                                              npt.NDArray[np.intp]]: ...
    def deciding_bytes(self, data: _In, off: _In, plen: _In, context: _In, paths: PathRules) -> tuple[
        npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint64]]: ...

def spread(sel: _In, sid: _In, n: _In, start: _In, flat: _In, follow: _In,
           unparsed: _In) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int32], int, npt.NDArray[np.intp]]: ...
