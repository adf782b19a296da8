"""Each detection's window in every camera's own raw pixels (issue 16).

The network sees cameras 2-4 resampled onto camera 1's grid; the fit must not, because the
bilinear resampling correlates neighbouring pixels' noise and a fit of resampled pixels is
not a likelihood. So a molecule at (x, y) in camera 1 is mapped into camera k with the
affine registration, (x_k, y_k, 1)ᵀ = T_k⁻¹ (x, y, 1)ᵀ (:mod:`voxloc.physics.cameras`),
and fitted on a window of camera k's own pixels around that point. Pixels beyond a camera's
edge, saturated or not finite are left out of the likelihood (a mask) and flagged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def saturation_photons(dtype: np.dtype, offset_adu: float, adu_per_photon: float) -> float | None:
    """The photon value of a saturated pixel of an integer camera (its largest ADU), or None."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return None
    return (float(np.iinfo(dtype).max) - offset_adu) / adu_per_photon


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
    data = np.zeros((m, p, n, n))
    mask = np.zeros((m, p, n, n), dtype=bool)
    a = np.arange(n)
    t = np.asarray(frame_index, dtype=np.int64)
    for k, cam in enumerate(frames):
        height, width = cam.shape[-2:]
        rows = origin[:, k, 1, None] + a  # (N, n)
        cols = origin[:, k, 0, None] + a
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        vals = cam[
            t[:, None, None],
            np.clip(rows, 0, height - 1)[:, :, None],
            np.clip(cols, 0, width - 1)[:, None, :],
        ]
        vals = np.asarray(vals, dtype=np.float64)
        good = inside & np.isfinite(vals) & finite[:, k, None, None]
        if saturation is not None:
            good &= vals < saturation * (1 - 1e-6)
        data[:, k] = np.where(good, vals, 0.0)
        mask[:, k] = good
        if k == 0:
            edge = ~inside.all(axis=(1, 2))
            bad = (inside & ~good).any(axis=(1, 2))
        else:
            edge |= ~inside.all(axis=(1, 2))
            bad |= (inside & ~good).any(axis=(1, 2))
    if m == 0 or not len(frames):
        edge = bad = np.zeros(m, dtype=bool)
    return Windows(data, origin, mask, edge, bad)
