"""Picasso's "individual localization precision" render (``picasso.render.render_gaussian``,
Schnitzbauer et al., Nat. Protoc. 12, 1198, 2017), in 3-D: config ``render.blur: individual``.

Each localization is its own 3-D Gaussian of its own σ (``sigma_x_nm``, ``sigma_y_nm``,
``sigma_z_nm``: the square root of the fit's CRLB at the estimate), of total 1, added to a
float32 volume of the render's voxels (:mod:`voxloc.render.grid`), chunk after chunk, so that
memory does not grow with the number of localizations (:func:`accumulate_gaussians_3d`).

Picasso's conventions, kept: every σ is floored at a minimum blur (Picasso's
``min_blur_width``, ``np.maximum(lpx, min_blur_width)``; here ``render.min_blur_nm``
[lateral, axial], a key of its own, not the fixed blur), and a localization is drawn over
±3 σ (Picasso's ``_DRAW_MAX_SIGMA = 3``). Changed: Picasso samples the density at pixel
centres, which for a σ below a pixel does not sum to 1 (a spike of up to 1 / (2π σ²) in
one pixel); here each voxel gets the Gaussian's integral over it (erf differences per axis,
the product of the three), and the tails beyond the ±3 σ window are given back in
proportion (each axis sums to 1). Tails that leave the volume are folded back (half-sample reflection, as mode
'reflect' of :func:`voxloc.render.volume.blur`), so the total is the number of
localizations. Localizations without a finite σ (``localize.fit: none``) get the fixed
blur's sigmas (``render.blur_sigma_nm``): :class:`IndividualBlur`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from voxloc.render.grid import histogram_shape, in_grid
from voxloc.types import BoolArray, FloatArray

__all__ = ["SIGMA_COLUMNS", "GAUSSIAN_TRUNCATE", "IndividualBlur", "accumulate_gaussians_3d"]

#: the per-localization precision (voxloc.locs.FIT_FIELDS) read for the individual blur
SIGMA_COLUMNS = ("sigma_x_nm", "sigma_y_nm", "sigma_z_nm")
#: the individual blur draws each localization over ±this many of its σ per axis
#: (Picasso's ``_DRAW_MAX_SIGMA``), whole voxels around the one it lies in
GAUSSIAN_TRUNCATE = 3.0
#: weights computed and added at a time by :func:`accumulate_gaussians_3d` (a float32
#: weight and an index each: ~3 MB of temporaries, in cache; 2^16..2^20 are within 20 % of
#: the fastest on a Xeon with 2 MB of L2 per core)
PATCH_VOXELS = 1 << 18
#: rows whose 1-D weights :func:`accumulate_gaussians_3d` computes at a time (~2 MB) ...
AXIS_ROWS = 1 << 14
#: ... and that it groups and sorts at a time (~300 bytes each: ~20 MB)
ROWS = 1 << 16


#: the widest σ (lateral, axial) drawn: a localization less precise than this is junk that a
#: ±3σ window of 24 x 24 x 50 nm voxels would spread over hundreds of thousands of voxels
#: (a briefly trained model's fits of noise did, and took minutes to render)
MAX_BLUR_NM = (100.0, 200.0)


@dataclass(frozen=True)
class IndividualBlur:
    """The σ of each localization in the individual blur (config ``render.blur:
    individual``): its own ``sigma_*_nm`` where finite, else ``fallback_sigma_nm``
    (``render.blur_sigma_nm``, the fixed blur), floored per axis at ``min_blur_nm``
    (Picasso's ``min_blur_width``); both (lateral, axial) in nm, 0 = no floor / none. At
    most :data:`MAX_BLUR_NM`."""

    min_blur_nm: tuple[float, float] = (12.0, 25.0)
    fallback_sigma_nm: tuple[float, float] = (24.0, 25.0)

    def __post_init__(self) -> None:
        for name in ("min_blur_nm", "fallback_sigma_nm"):
            v = tuple(float(a) for a in getattr(self, name))
            if len(v) != 2 or not all(math.isfinite(a) and a >= 0 for a in v):
                raise ValueError(f"{name} must be two finite sigmas >= 0 nm (lateral, axial), got {v}")
            object.__setattr__(self, name, v)

    def sigmas_nm(
        self, sigma_x_nm: FloatArray, sigma_y_nm: FloatArray, sigma_z_nm: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray, BoolArray]:
        """(σx, σy, σz) drawn, float64 nm, and per row whether some axis took the fallback
        (no finite σ) and whether some axis was raised to the floor."""
        out, fell_back, floored = [], None, None
        for sigma, fallback, floor, ceiling in zip(
            (sigma_x_nm, sigma_y_nm, sigma_z_nm),
            (self.fallback_sigma_nm[0], self.fallback_sigma_nm[0], self.fallback_sigma_nm[1]),
            (self.min_blur_nm[0], self.min_blur_nm[0], self.min_blur_nm[1]),
            (MAX_BLUR_NM[0], MAX_BLUR_NM[0], MAX_BLUR_NM[1]),
            strict=True,
        ):
            sigma = np.asarray(sigma, dtype=np.float64)
            missing = ~np.isfinite(sigma)  # NaN (not fitted) and inf (a singular bound)
            sigma = np.where(missing, fallback, sigma)
            low = sigma < floor
            out.append(np.minimum(np.maximum(sigma, floor), max(ceiling, floor)))
            fell_back = missing if fell_back is None else fell_back | missing
            floored = low if floored is None else floored | low
        return out[0], out[1], out[2], fell_back, floored


def _axis_weights(u: FloatArray, s: FloatArray, r: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """1-D weights of m Gaussians (centres ``u``, sigmas ``s``, in bins) over the 2r + 1 bins
    around the bin of each centre: the integral over each bin (erf differences) divided by
    their sum, so each row sums to 1; and those bins, reflected into [0, n) (r <= n).
    A σ of 0 puts the whole weight into the centre's bin. -> (m, 2r+1) float32, intp."""
    from scipy.special import erf

    c = np.minimum(np.floor(u).astype(np.intp), n - 1)
    edges = c[:, None] + np.arange(-r, r + 2, dtype=np.intp)  # the 2r + 2 bin edges
    point = s <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf = erf((edges - u[:, None]) / (math.sqrt(2.0) * np.where(point, 1.0, s))[:, None])
    w = np.diff(cdf, axis=1)
    if point.any():
        w[point] = np.arange(-r, r + 1) == 0
    w /= w.sum(axis=1, keepdims=True)
    idx = edges[:, :-1]
    if c.size and (int(c.min()) < r or int(c.max()) + r >= n):  # half-sample reflection:
        idx = np.where(idx < 0, -1 - idx, idx)  # d c b a | a b c d | d c b a
        idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    return w.astype(np.float32), idx


def accumulate_gaussians_3d(
    density: FloatArray,
    x_nm: FloatArray,
    y_nm: FloatArray,
    z_nm: FloatArray,
    sigma_x_nm: FloatArray,
    sigma_y_nm: FloatArray,
    sigma_z_nm: FloatArray,
    *,
    field_nm: tuple[float, float],
    z_range_nm: tuple[float, float],
    px_nm: float = 24.0,
    z_bin_nm: float = 50.0,
) -> int:
    """Add each localization to ``density`` (Z, Y, X) float32 in place as a 3-D Gaussian of
    its own sigmas (nm, finite, >= 0; see :class:`IndividualBlur`), of total 1; return how
    many were dropped (as :func:`voxloc.render.volume.accumulate_histogram_3d`: outside the
    field or z range, or not finite).

    Voxel (k, i, j) gets the Gaussian's integral over it, separably: the product of three
    1-D weights (:func:`_axis_weights`) over a window of ±ceil(3 σ) voxels per axis around
    the voxel the localization lies in (:data:`GAUSSIAN_TRUNCATE`), each axis normalised to
    1; what would leave the volume is folded back (reflection). Vectorised: the rows are
    grouped by window size and, within a group, taken :data:`PATCH_VOXELS` weights at a
    time: the (wz, wy, wx) patch of each is the outer product of its three weight vectors,
    scattered with ``np.add.at``. Time ~ Σ of the window volumes: ~350 voxels for a σ of
    about one voxel, ~5 µs per localization on one core; a σ of many voxels (a poorly
    constrained fit) costs its whole window (capped at the volume's size). Memory does not
    grow with the number of rows.
    """
    shape = histogram_shape(field_nm=field_nm, z_range_nm=z_range_nm, px_nm=px_nm, z_bin_nm=z_bin_nm)
    if density.shape != shape or density.dtype != np.float32 or not density.flags.c_contiguous:
        raise ValueError(
            f"density must be a C-contiguous float32 array of shape {shape}, got {density.shape}"
        )
    columns = [np.asarray(a) for a in (x_nm, y_nm, z_nm, sigma_x_nm, sigma_y_nm, sigma_z_nm)]
    if columns[0].ndim != 1 or any(a.shape != columns[0].shape for a in columns):
        raise ValueError(f"positions and sigmas must be 1-D of one length, got {[a.shape for a in columns]}")
    n_dropped = 0
    for lo in range(0, columns[0].size, ROWS):  # ~300 bytes of temporaries per row: a slice at a time
        arrays = [a[lo : lo + ROWS].astype(np.float64) for a in columns]
        inside = in_grid(*arrays[:3], field_nm, z_range_nm)
        n_out = int(inside.size - np.count_nonzero(inside))
        n_dropped += n_out
        x, y, z, sx, sy, sz = (a[inside] for a in arrays) if n_out else arrays
        if not all(np.isfinite(s).all() and (s >= 0).all() for s in (sx, sy, sz)):
            raise ValueError("sigmas must be finite and >= 0 nm (IndividualBlur.sigmas_nm resolves NaN)")
        if x.size:
            _accumulate(
                density,
                (z - z_range_nm[0]) / z_bin_nm,
                y / px_nm,
                x / px_nm,
                sz / z_bin_nm,
                sy / px_nm,
                sx / px_nm,
            )
    return n_dropped


def _accumulate(
    density: FloatArray,
    uz: FloatArray,
    uy: FloatArray,
    ux: FloatArray,
    sz: FloatArray,
    sy: FloatArray,
    sx: FloatArray,
) -> None:
    """:func:`accumulate_gaussians_3d` of rows inside the volume, centres ``u`` and sigmas
    ``s`` in voxels (z, y, x)."""
    shape = density.shape
    nz, ny, nx = shape
    # per axis (z, y, x): centre and sigma in bins, window half-width in bins (<= the axis)
    u, s = (uz, uy, ux), (sz, sy, sx)
    r = [
        np.minimum(np.ceil(GAUSSIAN_TRUNCATE * s_a), n_a).astype(np.intp)
        for s_a, n_a in zip(s, shape, strict=True)
    ]
    key = np.ravel_multi_index(tuple(r), (nz + 1, ny + 1, nx + 1))
    centre = np.ravel_multi_index(
        tuple(np.minimum(np.floor(u_a).astype(np.intp), n_a - 1) for u_a, n_a in zip(u, shape, strict=True)),
        shape,
    )
    order = np.lexsort((centre, key))  # by window, then by place: the adds stay cache-friendly
    key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(key)) + 1, key.size]
    flat_density = density.reshape(-1)
    index_dtype = np.int32 if density.size < 2**31 else np.int64
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        rz, ry, rx = (int(r_a[order[a]]) for r_a in r)
        step = max(1, PATCH_VOXELS // ((2 * rz + 1) * (2 * ry + 1) * (2 * rx + 1)))  # rows per patch batch
        block = step * max(1, AXIS_ROWS // step)  # rows whose 1-D weights are computed at once
        for lo_block in range(a, b, block):
            rows = order[lo_block : min(lo_block + block, b)]
            gz, iz = _axis_weights(u[0][rows], s[0][rows], rz, nz)
            gy, iy = _axis_weights(u[1][rows], s[1][rows], ry, ny)
            gx, ix = _axis_weights(u[2][rows], s[2][rows], rx, nx)
            iz, iy, ix = (iz * ny).astype(index_dtype), iy.astype(index_dtype), ix.astype(index_dtype)
            for lo in range(0, rows.size, step):
                p = slice(lo, lo + step)
                weights = (gz[p, :, None] * gy[p, None, :])[..., None] * gx[p, None, None, :]
                flat = ((iz[p, :, None] + iy[p, None, :]) * nx)[..., None] + ix[p, None, None, :]
                np.add.at(flat_density, flat.reshape(-1), weights.reshape(-1))
