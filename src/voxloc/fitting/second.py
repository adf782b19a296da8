"""A second molecule the network missed beside a fitted one (issue 16, neighbours).

Two molecules closer than the network's voxels tell apart are often found once: on the demo,
9 / 7 % of the matched isolated detections had a second true molecule within 400 nm, and
their 1-σ coverage was 0.19-0.29 (the fit of one emitter to two spots). As ThunderSTORM's
and DAOSTORM's multi-emitter fits do, the window of every single-emitter fit (an isolated
detection, or the row kept of a pair or group judged one molecule) is searched for light
its fit does not explain: the residual r = y − μ(θ̂), weighted by 1 / Var(μ), summed
over 3 x 3 pixels around each candidate offset o (camera-1 pixels, mapped into each camera
by the registration's linear part) and over the planes,

    T(o) = Σ_k Σ_box r / Var  /  sqrt(Σ_k Σ_box 1 / Var),

the score test of a flat spot of unknown brightness at o (T²/2 its log-likelihood gain).
Where T²/2 exceeds :data:`SCORE_GATE`, the window is fitted again as one emitter (from θ̂)
and as two (:func:`fit_second`), on the same pixels with the same light of the other
molecules, and two emitters are kept by the likelihood-ratio test of close pairs
(:data:`voxloc.fitting.groups.LLR_THRESHOLD`, at most
:data:`~voxloc.fitting.groups.PAIR_MAX_ITER` iterations): the second adds a row.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from voxloc.fitting._lm import CONVERGED
from voxloc.fitting.groups import LLR_THRESHOLD, capped, status_flags
from voxloc.fitting.mle import FitOptions, JointResult, fit_joint, fit_windows, others_light
from voxloc.fitting.windows import CameraMaps, Windows
from voxloc.locs import FIT_FLAGS
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise
from voxloc.types import FloatArray

__all__ = ["SCORE_GATE", "residual_peaks", "fit_second"]

#: T²/2 above which a window gets the two-emitter fit, whose likelihood ratio then decides:
#: the test's own threshold on its score approximation (on the density sweep's frames at 50
#: molecules a frame, 22 % of the isolated windows pass; a gate of 8 passes 35 % and finds 3 %
#: more molecules, 4 the same)
SCORE_GATE = LLR_THRESHOLD


def residual_peaks(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    windows: Windows,
    theta: FloatArray,
    rows: np.ndarray,
    extra: FloatArray | None = None,
    shift_px: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """For detections ``rows`` fitted at ``theta`` (N, 4 + P) on ``windows`` (with the other
    molecules' light ``extra`` (R, P, n, n) of those rows): the strongest unexplained light
    at least 1 px from the fit, as the camera-1 (x, y) starts (R, 2, 2) nm of two emitters,
    and its T²/2 (module doc)."""
    rows = np.asarray(rows, np.int64)
    r_n = len(rows)
    n = windows.data.shape[-1]
    p = maps.n_planes
    s = float(microscope.px_size_nm)
    if r_n == 0:
        return np.zeros((0, 2, 2)), np.zeros(0)
    own, _ = others_light(
        microscope, noise, maps, theta, (rows, np.arange(r_n + 1), rows), windows, shift_px=shift_px
    )
    mu = own + theta[rows, 4:][:, :, None, None]
    if extra is not None:
        mu = mu + extra
    weight = windows.mask[rows] / noise.variance(mu)
    resid = (windows.data[rows] - mu) * weight
    box_r = 9.0 * uniform_filter(resid, size=(1, 1, 3, 3), mode="constant")  # sums, not means
    box_w = 9.0 * uniform_filter(weight, size=(1, 1, 3, 3), mode="constant")
    # where camera k sees the fitted molecule, in its window's pixels
    pos = maps.positions_px(theta[rows, 0], theta[rows, 1], s)
    if shift_px is not None:
        pos = pos + shift_px[rows]
    local = pos - windows.origin[rows]  # (R, P, 2) = (column, row)
    h = n // 2 - 1
    grid = np.arange(-h, h + 1)
    ox, oy = (g.ravel() for g in np.meshgrid(grid, grid))
    far = np.maximum(np.abs(ox), np.abs(oy)) >= 1
    off = np.stack([ox[far], oy[far]], axis=-1).astype(np.float64)  # (C, 2) camera-1 px
    sum_r = np.zeros((r_n, len(off)))
    sum_w = np.zeros((r_n, len(off)))
    idx = np.arange(r_n)[:, None]
    for k in range(p):
        at = local[:, k, None, :] + off @ maps.linear[k].T  # (R, C, 2)
        col = np.clip(np.rint(at[..., 0]).astype(np.int64), 0, n - 1)
        row = np.clip(np.rint(at[..., 1]).astype(np.int64), 0, n - 1)
        sum_r += box_r[idx, k, row, col]
        sum_w += box_w[idx, k, row, col]
    t = np.where(sum_w > 0, sum_r / np.sqrt(np.where(sum_w > 0, sum_w, 1.0)), 0.0)
    best = np.argmax(t, axis=1)
    score = 0.5 * np.maximum(t[np.arange(r_n), best], 0.0) ** 2
    o = off[best]
    # a peak next to the fit: the fit sits between two molecules, which start either side
    # of it; a farther one: the fitted molecule stays, the second starts at the peak
    near = (np.abs(o).max(axis=1) == 1)[:, None]
    starts = np.empty((r_n, 2, 2))
    starts[:, 0] = theta[rows, :2] - np.where(near, 0.5, 0.0) * o * s
    starts[:, 1] = theta[rows, :2] + np.where(near, 0.5, 1.0) * o * s
    return starts, score


def fit_second(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    windows: Windows,
    theta: FloatArray,
    rows: np.ndarray,
    starts_nm: FloatArray,
    *,
    z_bounds: tuple[float, float],
    options: FitOptions,
    extra: FloatArray | None = None,
    shift_px: FloatArray | None = None,
) -> tuple[np.ndarray, JointResult, np.ndarray]:
    """Windows ``rows`` (with ``extra`` (R, P, n, n) of those rows) fitted as one emitter from
    ``theta`` and as two from ``starts_nm`` (R, 2, 2) (x, y; z of θ̂): whether two won the
    likelihood-ratio test (R,), the two-emitter fits and their :data:`voxloc.locs.FIT_FLAGS`."""
    rows = np.asarray(rows, np.int64)
    sub = windows.take(rows)
    shift = None if shift_px is None else shift_px[rows]
    one = fit_windows(
        microscope, noise, maps, sub, *theta[rows, :3].T, z_bounds=z_bounds, options=options, extra=extra,
        shift_px=shift,
    )  # fmt: skip
    z = np.repeat(theta[rows, None, 2:3], 2, axis=1)
    both = fit_joint(
        microscope, noise, maps, sub, np.concatenate([starts_nm, z], axis=-1), z_bounds=z_bounds,
        options=capped(options), extra=extra, shift_px=shift,
    )  # fmt: skip
    ok = (both.status == CONVERGED) & np.isfinite(both.nll) & np.isfinite(one.nll)
    two = ok & (one.nll - both.nll > LLR_THRESHOLD)
    flags = status_flags(both.status) | np.where(sub.edge, FIT_FLAGS["edge"], 0)
    flags |= np.where(sub.bad, FIT_FLAGS["saturated"], 0)
    return two, both, flags.astype(np.int16)
