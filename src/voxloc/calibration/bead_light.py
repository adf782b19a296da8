"""The light in bead windows, for the spline PSF of :mod:`voxloc.calibration.psf_spline`: the
plane's background, the beads' relative brightness, and beads as cubic B-spline images fitted
by linear least squares (their own light and their neighbours').

A bead at (x, y) px (pixel j centred at j + 0.5) images as sum_q c_q b3(u - q), u = pixel
centre - (x, y), on lateral nodes q = -m..m px: the separable cubic B-spline of
:class:`voxloc.physics.spline.SplinePSF` with its padded coefficients (m = R + 1), so that the
fitted coefficients are the spline's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.ndimage import distance_transform_edt

from voxloc.types import BoolArray, FloatArray, IntArray

__all__ = ["pixel_of", "background_map", "brightness", "bspline_image", "ridge_solve", "neighbour_light",
           "window_sum"]  # fmt: skip

CORE_PX = 3  # the box (±CORE_PX) whose sum gives a bead's relative brightness
RIDGE = 1e-3  # Tikhonov weight of the least-squares fits (x the mean diagonal of A^T A)


def pixel_of(xy: FloatArray) -> IntArray:
    """The pixel (column, row) holding each position (n, 2) (NaN -> far outside)."""
    return np.ceil(np.nan_to_num(xy, nan=-1e9) - 0.5).astype(np.int64)


def background_map(stack: FloatArray, near: BoolArray, src: FloatArray, radius: int) -> FloatArray:
    """The plane's background (H, W), photons / px: a plane a + b x + c y fitted robustly (3
    sigma clipping) to the median of the near-focus slices ``near`` (Z,) over the pixels
    farther than ``radius`` px from every bead ``src`` (m, 2) (less far, down to 3 px, where
    that leaves under 5 % of the frame). Near focus a bead's light is compact; far from the
    beads is background only (a defocused high-NA PSF's halo reaches far beyond any window)."""
    height, width = stack.shape[1:]
    img = np.median(stack[near], axis=0)
    marks = np.ones((height, width), bool)
    c = pixel_of(src)
    inside = (c[:, 0] >= 0) & (c[:, 0] < width) & (c[:, 1] >= 0) & (c[:, 1] < height)
    marks[c[inside, 1], c[inside, 0]] = False
    dist = distance_transform_edt(marks)
    for rad in range(max(int(radius), 3), 2, -1):
        far = dist > rad
        if far.sum() >= max(0.05 * height * width, 50):
            break
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    design = np.stack([np.ones(far.sum()), xx[far], yy[far]], axis=1)
    v, keep = img[far], np.ones(far.sum(), bool)
    for _ in range(4):
        coef = np.linalg.lstsq(design[keep], v[keep], rcond=None)[0]
        res = v - design @ coef
        keep = np.abs(res) <= 3 * 1.4826 * np.median(np.abs(res[keep])) + 1e-9
    return coef[0] + coef[1] * xx + coef[2] * yy


def brightness(
    stack: FloatArray, src: FloatArray, ref: IntArray, bg: FloatArray, sat: BoolArray | None
) -> FloatArray:
    """Relative brightness (m,) of the beads ``src``: the median over the bright slices where
    the bead is unsaturated of its ±CORE_PX box sum (less the background ``bg`` (H, W)) over
    the median of the beads ``ref``."""
    n_z, height, width = stack.shape
    sums = np.full((len(src), n_z), np.nan)
    for n, (cx, cy) in enumerate(pixel_of(src)):
        r0, r1 = max(cy - CORE_PX, 0), min(cy + CORE_PX + 1, height)
        c0, c1 = max(cx - CORE_PX, 0), min(cx + CORE_PX + 1, width)
        if r0 >= r1 or c0 >= c1:
            continue
        s = stack[:, r0:r1, c0:c1].sum(axis=(1, 2)) - bg[r0:r1, c0:c1].sum()
        if sat is not None:
            s[sat[:, r0:r1, c0:c1].any(axis=(1, 2))] = np.nan
        sums[n] = s
    med = np.median(sums[ref], axis=0)
    bright = med > 0.3 * np.nanmax(med)
    ratio = sums[:, bright] / med[bright]
    w = np.array([np.median(r[np.isfinite(r)]) if np.isfinite(r).any() else 1.0 for r in ratio])
    return np.clip(w, 0.0, None)


def _bspline3(t: FloatArray) -> FloatArray:
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a**2 + a**3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


def bspline_image(centre: IntArray, xy: FloatArray, reach: int, m: int) -> sparse.csr_matrix:
    """(S², Q) sparse: the window (side S = 2 reach + 1, around pixel ``centre``) of a bead at
    ``xy`` per B-spline coefficient (Q = (2 m + 1)², row-major (v, u))."""
    q = np.arange(-m, m + 1)
    ar = np.arange(-reach, reach + 1) + 0.5
    bx = sparse.csr_matrix(_bspline3((centre[0] + ar)[:, None] - xy[0] - q[None, :]))
    by = sparse.csr_matrix(_bspline3((centre[1] + ar)[:, None] - xy[1] - q[None, :]))
    return sparse.kron(by, bx, format="csr")


def ridge_solve(gram: FloatArray, rhs: FloatArray) -> FloatArray:
    """(A^T A + λ I)^-1 A^T y from ``gram`` = A^T A and ``rhs`` = A^T y, λ = RIDGE x its mean diagonal."""
    gram = gram.copy()
    gram[np.diag_indices_from(gram)] += RIDGE * max(float(np.mean(np.diag(gram))), 1e-300)
    return np.linalg.solve(gram, rhs)


def neighbour_light(
    win: FloatArray, own: Sequence[sparse.csr_matrix], w_own: FloatArray, others: Sequence[sparse.csr_matrix]
) -> FloatArray:
    """The other beads' light (n, Z, S, S) in background-free windows ``win`` (n, Z, S, S):
    every bead of the plane is its brightness x one B-spline image per slice, fitted to all
    windows at once; ``own[i]`` is bead i's image in its window, ``others[i]`` those of the
    beads near it (brightness included)."""
    n, n_z, side = win.shape[0], win.shape[1], win.shape[-1]
    a_nb = sparse.vstack(others, format="csr")
    a = sparse.vstack([w * b for w, b in zip(w_own, own, strict=True)], format="csr") + a_nb
    coef = ridge_solve((a.T @ a).toarray(), a.T @ win.transpose(0, 2, 3, 1).reshape(-1, n_z))  # (Q, Z)
    return (a_nb @ coef).reshape(n, side, side, n_z).transpose(0, 3, 1, 2)


def window_sum(coef: FloatArray) -> float:
    """Sum of the spline's samples over its L x L window nodes, of padded lateral coefficients
    (L + 2, L + 2): the samples are the coefficients filtered by (1, 4, 1) / 6 per axis."""
    k = np.array([1.0, 4.0, 1.0]) / 6
    rows = k[0] * coef[:-2] + k[1] * coef[1:-1] + k[2] * coef[2:]
    return float((k[0] * rows[:, :-2] + k[1] * rows[:, 1:-1] + k[2] * rows[:, 2:]).sum())
