"""Each detection's window in every camera's own raw pixels (issue 16).

The network sees cameras 2-4 resampled onto camera 1's grid; the fit must not, because the
bilinear resampling correlates neighbouring pixels' noise and a fit of resampled pixels is
not a likelihood. So a molecule at (x, y) in camera 1 is mapped into camera k with the
affine registration, (x_k, y_k, 1)ᵀ = T_k⁻¹ (x, y, 1)ᵀ (:mod:`voxloc.physics.cameras`),
and fitted on a window of camera k's own pixels around that point. Pixels beyond a camera's
edge, saturated or not finite are left out of the likelihood (a mask) and flagged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from numba import njit, prange

from voxloc.physics.cameras import apply_affine
from voxloc.types import FloatArray, IntArray

__all__ = ["CameraMaps", "Windows", "cut_windows", "saturation_photons"]


@dataclass(frozen=True)
class CameraMaps:
    """Camera 1 -> camera k: the inverse registrations T_k⁻¹ (P, 3, 3) and their linear
    parts (P, 2, 2), the derivatives ∂(x_k, y_k) / ∂(x, y) of the fit's chain rule."""

    inverse: FloatArray
    linear: FloatArray

    @classmethod
    def from_registrations(cls, registrations: Sequence[FloatArray]) -> CameraMaps:
        inv = np.stack([np.linalg.inv(np.asarray(m, dtype=np.float64)) for m in registrations])
        return cls(inv, inv[:, :2, :2].copy())

    @property
    def n_planes(self) -> int:
        return self.inverse.shape[0]

    def positions_px(self, x_nm: FloatArray, y_nm: FloatArray, px_size_nm: float) -> FloatArray:
        """Where camera k sees molecules at camera-1 (x_nm, y_nm): (N, P, 2) px."""
        p1 = np.stack([np.asarray(x_nm, np.float64), np.asarray(y_nm, np.float64)], axis=-1) / px_size_nm
        return np.stack([apply_affine(m, p1) for m in self.inverse], axis=1)


@dataclass
class Windows:
    """Data windows (N, P, n, n) in photons, their origins (N, P, 2) = (column, row), the mask
    of pixels in the likelihood, and per detection whether some pixel was beyond a camera's
    edge (``edge``) or saturated / not finite (``bad``)."""

    data: FloatArray
    origin: IntArray
    mask: np.ndarray
    edge: np.ndarray
    bad: np.ndarray

    def take(self, rows: np.ndarray) -> Windows:
        """The windows of detections ``rows`` (an index or a mask), in their order."""
        return Windows(*(getattr(self, f.name)[rows] for f in fields(self)))


def saturation_photons(dtype: np.dtype, offset_adu: float, adu_per_photon: float) -> float | None:
    """The photon value of a saturated pixel of an integer camera (its largest ADU), or None."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return None
    return (float(np.iinfo(dtype).max) - offset_adu) / adu_per_photon


@njit(cache=True, parallel=True)
def _cut_plane(cam, t, origin, finite, saturation, data, mask, edge, bad) -> None:  # noqa: ANN001
    """Camera k's windows: data/mask (N, n, n) of the detections' windows starting at origin
    (N, 2) = (column, row) in frames t (N,) of ``cam`` (B, H, W); edge / bad are or-ed."""
    height, width = cam.shape[1], cam.shape[2]
    n = data.shape[1]
    for m in prange(data.shape[0]):
        for a in range(n):
            row = origin[m, 1] + a
            for b in range(n):
                col = origin[m, 0] + b
                inside = 0 <= row < height and 0 <= col < width
                if not inside:
                    edge[m] = True
                    data[m, a, b] = 0.0
                    mask[m, a, b] = False
                    continue
                v = np.float64(cam[t[m], row, col])
                good = finite[m] and math.isfinite(v) and v < saturation
                if not good:
                    bad[m] = True
                data[m, a, b] = v if good else 0.0
                mask[m, a, b] = good


def cut_windows(
    frames: Sequence[FloatArray],
    frame_index: IntArray,
    positions_px: FloatArray,
    n: int,
    *,
    saturation: float | None = None,
) -> Windows:
    """The window of side ``n`` (odd) around each detection in each camera.

    ``frames`` [(B, H_k, W_k)] are one batch's camera frames in photons, ``frame_index`` (N,)
    each detection's frame within the batch, ``positions_px`` (N, P, 2) where camera k sees it
    (:meth:`CameraMaps.positions_px`). The window's central pixel holds the molecule.
    """
    h = n // 2
    pos = np.asarray(positions_px, dtype=np.float64)
    m, p = pos.shape[:2]
    finite = np.isfinite(pos).all(axis=-1)  # (N, P); a position not a number: empty window
    origin = (np.ceil(np.where(finite[..., None], pos, 0.0) - 0.5) - h).astype(np.int64)
    data = np.empty((m, p, n, n))
    mask = np.empty((m, p, n, n), dtype=bool)
    edge = np.zeros(m, dtype=bool)
    bad = np.zeros(m, dtype=bool)
    t = np.ascontiguousarray(frame_index, dtype=np.int64)
    limit = np.inf if saturation is None else float(saturation) * (1 - 1e-6)
    if m:
        for k, cam in enumerate(frames):
            _cut_plane(np.asarray(cam), t, np.ascontiguousarray(origin[:, k]), np.ascontiguousarray(finite[:, k]),
                       limit, data[:, k], mask[:, k], edge, bad)  # fmt: skip
    return Windows(data, origin, mask, edge, bad)
