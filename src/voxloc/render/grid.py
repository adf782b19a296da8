"""The voxel grid of a render: ``px_nm`` x ``px_nm`` x ``z_bin_nm`` bins over the camera-1
field and the z range (bin (k, i', j') covers x ∈ [j' px, (j' + 1) px), y ∈ [i' px,
(i' + 1) px), z ∈ [z_min + k dz, z_min + (k + 1) dz); see :mod:`voxloc.render.volume`), and
which localizations lie in it. Shared by the histogram (:mod:`voxloc.render.volume`) and
the individual-precision render (:mod:`voxloc.render.precision`)."""

from __future__ import annotations

import math

from voxloc.types import BoolArray, FloatArray

__all__ = ["histogram_shape", "in_grid"]


def _n_bins(extent: float, bin_size: float) -> int:
    """Bins of ``bin_size`` covering ``extent`` (the last one partial if it does not divide)."""
    if not (extent > 0 and bin_size > 0):
        raise ValueError(f"extent {extent} and bin size {bin_size} must be positive")
    return max(1, math.ceil(round(extent / bin_size, 9)))


def histogram_shape(
    *, field_nm: tuple[float, float], z_range_nm: tuple[float, float], px_nm: float, z_bin_nm: float
) -> tuple[int, int, int]:
    """(Z, Y, X) bins of a render of the field (width_nm, height_nm) x [z_min, z_max)."""
    width_nm, height_nm = field_nm
    z0, z1 = z_range_nm
    return _n_bins(z1 - z0, z_bin_nm), _n_bins(height_nm, px_nm), _n_bins(width_nm, px_nm)


def in_grid(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    field_nm: tuple[float, float],
    z_range_nm: tuple[float, float],
) -> BoolArray:
    """Rows inside [0, width) x [0, height) x [z_min, z_max) (NaN: outside)."""
    (w, h), (z0, z1) = field_nm, z_range_nm
    return (x >= 0) & (x < w) & (y >= 0) & (y < h) & (z >= z0) & (z < z1)
