"""Types of the compiled address printer (_addrtext.pyx)."""

import numpy as np
import numpy.typing as npt

def address_text(
    hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64], blank: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]: ...
