"""Types of the compiled row set (_rowset.pyx)."""

from typing import Any

import numpy as np
import numpy.typing as npt

class RowTable:
    def __init__(self, rows: npt.NDArray[np.uint64]) -> None: ...
    def __len__(self) -> int: ...
    def contains(self, cols: npt.NDArray[np.uint64] | npt.NDArray[Any]) -> npt.NDArray[np.bool_]: ...
