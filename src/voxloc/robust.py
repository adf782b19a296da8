"""Background statistics shared by the input normalisation and the camera resampler."""

from __future__ import annotations

import numpy as np

from voxloc.types import FloatArray

__all__ = ["row_median"]


def row_median(a: FloatArray) -> FloatArray:
    """Median of each row of a 2-D array: the values of ``np.median(a, axis=1)`` (float32 in,
    float32 out), from one partition at n // 2 plus the maximum of the lower part, ~1.6x faster
    than np.median's partition at two positions."""
    a = np.asarray(a)
    n = a.shape[1]
    part = np.partition(a, n // 2, axis=1)
    upper = part[:, n // 2]
    if n % 2:
        return upper
    return (part[:, : n // 2].max(axis=1) + upper) / a.dtype.type(2)
