from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

_In: TypeAlias = npt.NDArray[Any]

def certificate_subjects(data: _In, off: _In, plen: _In) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint64]]: ...
