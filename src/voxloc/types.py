"""Array aliases used across voxloc (defined once, as in Picasso's ``lib``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
BoolArray = npt.NDArray[np.bool_]

__all__ = ["FloatArray", "IntArray", "BoolArray"]
