"""Per-slice Gaussian spot fits of the beads (Aritake et al. 2020, Eq. 4, one plane).

Every detected bead is fitted in every slice with the single-plane form of Eq. 4
(:func:`voxloc.physics.psf.gaussian_spot`) plus a tilted-plane background, by batched
Levenberg-Marquardt over all spots at once, in two passes (windows from the
nearest-neighbour distance, then from the predicted widths with neighbours masked).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from voxloc.physics.psf import gaussian_spot
from voxloc.types import BoolArray, FloatArray

log = logging.getLogger(__name__)

__all__ = ["SPOT_PARAMS", "CameraBeads", "fit_spots", "measure_camera"]

#: columns of a spot fit: position (px), width r (px), peak and background plane (photons)
SPOT_PARAMS = ("x_px", "y_px", "width_px", "peak", "bg", "bg_dx", "bg_dy")
HALF_WINDOW_PX = (3, 12)  # first pass: half the nearest-neighbour distance, clipped
MAX_HALF_WINDOW_PX = 15  # second pass: +-4 predicted widths, up to this
WINDOW_WIDTHS = 3.0  # a fit counts only if the window spans +-3 typical widths
MASK_WIDTHS = 3.5  # second pass: pixels this many widths (+1 px) from another bead are left out


def _spot_model(params: FloatArray, u: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Model (N, S) and Jacobian (N, S, 7) of Eq. 4 (one plane) + background plane at pixels (u, v)."""
    x0, y0, w, peak, bg, bx, by = (params[:, i : i + 1] for i in range(7))
    g = gaussian_spot(u, v, x0, y0, w, 1.0)  # the PSF's own shape, peak 1
    du, dv = u - x0, v - y0
    pg = peak * g / (w * w)
    one, uu, vv = np.ones_like(g), np.broadcast_to(u, g.shape), np.broadcast_to(v, g.shape)
    jac = np.stack([pg * du, pg * dv, pg * (du * du + dv * dv) / w, g, one, uu, vv], axis=-1)
    return peak * g + bg + bx * u + by * v, jac


def fit_spots(
    windows: FloatArray, valid: BoolArray, init: FloatArray, *, max_iter: int = 40
) -> tuple[FloatArray, FloatArray, FloatArray, BoolArray]:
    """Least-squares fits of Eq. 4 (one plane) + a background plane to N square windows.

    ``windows`` (N, S, S) photons, ``valid`` (N, S, S) pixels to use (False: saturated or off
    the image), ``init`` (N, 7) as :data:`SPOT_PARAMS` with (x, y) relative to the window's
    centre pixel centre. Batched Levenberg-Marquardt with analytic derivatives. Returns the
    parameters (N, 7), their standard errors (N, 7), the residual rms per pixel (N,) and a
    converged flag (N,).
    """
    n, s, _ = windows.shape
    h = (s - 1) / 2
    v, u = (np.mgrid[0:s, 0:s].reshape(2, -1) - h).astype(np.float64)
    data = np.nan_to_num(windows.reshape(n, -1).astype(np.float64))
    m = valid.reshape(n, -1).astype(np.float64)
    p = init.astype(np.float64).copy()
    lam = np.full(n, 1e-2)

    def clamp(params):
        params[:, 2] = np.clip(params[:, 2], 0.2, 2 * s)
        params[:, :2] = np.clip(params[:, :2], -h, h)
        return params

    cost = _cost(p, data, m, u, v)
    done = np.zeros(n, dtype=bool)
    eye = np.eye(7)
    for _ in range(max_iter):
        act = ~done
        if not act.any():
            break
        model, jac = _spot_model(p[act], u, v)
        mm = m[act]
        r = (data[act] - model) * mm
        jw = jac * mm[..., None]
        a = np.einsum("nsi,nsj->nij", jw, jw)
        g = np.einsum("nsi,ns->ni", jw, r)
        diag = np.einsum("nii->ni", a)
        damped = a + (lam[act][:, None] * diag + 1e-9)[:, :, None] * eye
        step = np.linalg.solve(damped, g[..., None])[..., 0]
        trial = clamp(p[act] + step)
        new_cost = _cost(trial, data[act], mm, u, v)
        better = new_cost < cost[act]
        idx = np.flatnonzero(act)
        rel = (cost[act] - new_cost) / np.maximum(cost[act], 1e-12)
        p[idx[better]] = trial[better]
        cost[idx[better]] = new_cost[better]
        lam[idx] = np.where(better, lam[idx] / 4, lam[idx] * 4)
        done[idx] = (better & (rel < 1e-7)) | (lam[idx] > 1e8)
    model, jac = _spot_model(p, u, v)
    dof = np.maximum(m.sum(axis=1) - 7, 1)
    rms = np.sqrt(cost / dof)
    jw = jac * m[..., None]
    a = np.einsum("nsi,nsj->nij", jw, jw) + 1e-12 * eye
    cov = np.linalg.pinv(a) * (rms**2)[:, None, None]
    err = np.sqrt(np.abs(np.einsum("nii->ni", cov)))
    converged = (lam < 1e8) & np.all(np.isfinite(p), axis=1)
    return p, err, rms, converged


def _cost(params: FloatArray, data: FloatArray, m: FloatArray, u: FloatArray, v: FloatArray) -> FloatArray:
    model, _ = _spot_model(params, u, v)
    return (((data - model) * m) ** 2).sum(axis=1)


@dataclass
class CameraBeads:
    """Per-slice spot fits of the beads detected in one camera.

    ``params`` (n, Z, 7) as :data:`SPOT_PARAMS` with (x, y) absolute (px), ``errors`` their
    standard errors, ``rms`` the residual rms per pixel (photons), ``good`` (n, Z) the fits
    that count (converged, bead above background, window clear of neighbours, not
    saturated), ``saturated`` (n, Z) slices with a pixel at the saturation level near the
    bead, ``nn_px`` (n,) the distance to the nearest other bead and ``elongation`` (n,) the
    axis ratio of the spot at its sharpest slice (a close pair is elongated).
    """

    xy_px: FloatArray
    params: FloatArray
    errors: FloatArray
    rms: FloatArray
    good: BoolArray
    saturated: BoolArray
    nn_px: FloatArray
    elongation: FloatArray

    def __len__(self) -> int:
        return len(self.xy_px)

    def mean_xy_px(self, use: BoolArray | None = None) -> FloatArray:
        """Inverse-variance weighted mean position (n, 2) over the good (and ``use``) slices; NaN if none."""
        ok = self.good if use is None else self.good & use
        out = np.full((len(self), 2), np.nan)
        for c in range(2):
            w = np.where(ok, 1.0 / np.maximum(self.errors[..., c], 1e-4) ** 2, 0.0)
            num = (w * np.nan_to_num(self.params[..., c])).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, c] = np.where(w.sum(axis=1) > 0, num / w.sum(axis=1), np.nan)
        return out


def _elongation(window: FloatArray, fit: FloatArray, h: int) -> float:
    """Axis ratio sqrt(l_max / l_min) of the second moments of the background-free spot."""
    v, u = np.mgrid[-h : h + 1, -h : h + 1].astype(float)
    x0, y0, w, _, bg, bx, by = fit
    signal = np.nan_to_num(window - (bg + bx * u + by * v))
    near = (u - x0) ** 2 + (v - y0) ** 2 <= (3 * w) ** 2
    wt = np.where(near, signal, 0.0)
    total = wt.sum()
    if total <= 0:
        return np.nan
    du, dv = u - x0, v - y0
    cov = np.array(
        [[(wt * du * du).sum(), (wt * du * dv).sum()], [(wt * du * dv).sum(), (wt * dv * dv).sum()]]
    )
    ev = np.linalg.eigvalsh(cov / total)
    return float(np.sqrt(ev[1] / ev[0])) if ev[0] > 0 else np.inf


def measure_camera(
    photons: FloatArray,
    saturated_px: BoolArray,
    xy_px: FloatArray,
    *,
    min_snr: float,
) -> CameraBeads:
    """Fit every bead ``xy_px`` (n, 2) in every slice of one camera (Z, H, W) photons.

    Two passes. The first fits windows reaching half-way to the nearest neighbour: enough
    near focus, and it gives the typical width per slice, to which w^2 = quadratic in the
    slice index (Eq. 5 without A, B) is fitted. The second fits windows of +-4 predicted
    widths in which the pixels within 3.5 predicted widths + 1 px of any other bead are
    left out (their light there is < 0.3 % of their peak), so that crowded beads are
    measured further from focus. ``saturated_px`` (Z, H, W) pixels are left out too, and a
    bead slice with one within 2.5 px of the bead is flagged saturated.

    A fit is good when it converged, its peak is >= ``min_snr`` times the residual noise
    (the bead is above background), its width is >= 0.3 px and known to 20 %, its position
    is within 2 px of the detection, the bead's centre is clear of the neighbours' masks by
    1.5 widths, and the slice's typical width (the median over beads: a cut on each fitted
    width would bias the widths low) is at most 1/3 of the window.
    """
    n, n_z = len(xy_px), photons.shape[0]
    d = np.hypot(*(xy_px[:, None, :] - xy_px[None, :, :]).transpose(2, 0, 1)) + np.diag(np.full(n, np.inf))
    nn_px = d.min(axis=1) if n > 1 else np.full(n, np.inf)
    fitter = _WindowFitter(photons, saturated_px, xy_px, min_snr)
    half1 = np.repeat(np.clip(np.floor(nn_px / 2), *HALF_WINDOW_PX).astype(int)[:, None], n_z, axis=1)
    first = fitter.fit(half1, None)
    width_pred = _predict_widths(np.where(first.good.any(axis=0), first.typical, np.nan))
    if width_pred is None:
        log.warning("too few slices to predict the widths: crowded beads are measured near focus only")
        result = first
    else:
        half2 = np.repeat(np.clip(np.ceil(4 * width_pred) + 1, 3, MAX_HALF_WINDOW_PX).astype(int)[None], n, 0)
        radius = MASK_WIDTHS * width_pred + 1.0
        clear = (nn_px[:, None] - radius[None, :]) >= 1.5 * width_pred[None, :]
        result = fitter.fit(np.where(clear, half2, 0), radius)  # 0: the bead is not clear, not fitted
    params, half = result.params, result.half
    good = result.good
    elongation = np.full(n, np.nan)
    for b in np.flatnonzero(good.any(axis=1)):
        z = int(np.flatnonzero(good[b])[np.argmin(params[b, good[b], 2])])
        win, _ = fitter.windows(np.array([b]), np.array([z]), int(half[b, z]))
        local = params[b, z].copy()
        local[:2] -= fitter.centre[b] + 0.5
        elongation[b] = _elongation(win[0], local, int(half[b, z]))
    return CameraBeads(xy_px, params, result.errors, result.rms, good, fitter.saturated, nn_px, elongation)


@dataclass
class _Fits:
    params: FloatArray  # (n, Z, 7), positions absolute
    errors: FloatArray
    rms: FloatArray
    good: BoolArray
    half: np.ndarray  # (n, Z) window half-size
    typical: FloatArray  # (Z,) median width of the fits above background


class _WindowFitter:
    """Spot fits of beads in windows of a given half-size per (bead, slice), batched by size."""

    def __init__(self, photons: FloatArray, saturated_px: BoolArray, xy_px: FloatArray, min_snr: float):
        self.pad = MAX_HALF_WINDOW_PX + 1
        pad = ((0, 0), (self.pad, self.pad), (self.pad, self.pad))
        self.img = np.pad(photons.astype(np.float32), pad, constant_values=np.nan)
        self.sat = np.pad(saturated_px, pad, constant_values=False)
        self.xy, self.min_snr = xy_px, min_snr
        self.centre = np.floor(xy_px).astype(int)  # pixel (row, col) = (floor y, floor x)
        self.offset = xy_px - (self.centre + 0.5)  # detection relative to its window's centre pixel
        n, n_z = len(xy_px), photons.shape[0]
        win, swin = self.windows(np.repeat(np.arange(n), n_z), np.tile(np.arange(n_z), n), 3)
        near = np.hypot(*np.mgrid[-3:4, -3:4]) <= 2.5
        self.saturated = (swin & near).any(axis=(1, 2)).reshape(n, n_z)

    def windows(self, beads: np.ndarray, slices: np.ndarray, h: int) -> tuple[FloatArray, BoolArray]:
        """Windows (P, 2h+1, 2h+1) around beads[p] in slices[p], and their saturated pixels."""
        rows = self.centre[beads, 1][:, None] + np.arange(-h, h + 1) + self.pad
        cols = self.centre[beads, 0][:, None] + np.arange(-h, h + 1) + self.pad
        idx = (slices[:, None, None], rows[:, :, None], cols[:, None, :])
        return self.img[idx], self.sat[idx]

    def _clear(self, beads: np.ndarray, h: int) -> FloatArray:
        """Distance (P, s, s) from each window pixel to the nearest other bead (px)."""
        g = np.arange(-h, h + 1) + 0.5
        px = self.centre[:, 0][:, None, None] + g[None, None, :]  # (n, 1, s)
        py = self.centre[:, 1][:, None, None] + g[None, :, None]  # (n, s, 1)
        out = np.full((len(self.xy), 2 * h + 1, 2 * h + 1), np.inf)
        for b, (x, y) in enumerate(self.xy):
            d = np.hypot(px - x, py - y)
            d[b] = np.inf
            np.minimum(out, d, out=out)
        return out[beads]

    def fit(self, half: np.ndarray, radius: FloatArray | None) -> _Fits:
        """Fit all (bead, slice) with window half-sizes ``half`` (n, Z); with ``radius`` (Z,),
        leave out the pixels closer than radius[slice] to another bead."""
        n, n_z = half.shape
        params = np.full((n, n_z, 7), np.nan)
        errors = np.full((n, n_z, 7), np.nan)
        rms = np.full((n, n_z), np.nan)
        conv = np.zeros((n, n_z), dtype=bool)
        n_valid = np.zeros((n, n_z), dtype=int)
        for h in np.unique(half[half > 0]):
            beads, slices = np.nonzero(half == h)
            win, swin = self.windows(beads, slices, int(h))
            valid = np.isfinite(win) & ~swin
            if radius is not None:
                valid &= self._clear(beads, int(h)) >= radius[slices][:, None, None]
            init = _initial(win, valid, self.offset[beads], int(h))
            n_valid[beads, slices] = valid.sum(axis=(1, 2))
            chunk = int(np.clip(1_000_000 // win[0].size, 64, 2048))  # bounds the Jacobian's memory
            out = [
                fit_spots(win[c : c + chunk], valid[c : c + chunk], init[c : c + chunk])
                for c in range(0, len(init), chunk)
            ]
            p, e, r, c = (np.concatenate(x) for x in zip(*out, strict=True))
            params[beads, slices], errors[beads, slices], rms[beads, slices], conv[beads, slices] = p, e, r, c
        width = params[..., 2]
        moved = np.hypot(*(params[..., :2] - self.offset[:, None, :]).transpose(2, 0, 1))
        with np.errstate(invalid="ignore"):
            above = conv & ~self.saturated & (params[..., 3] >= self.min_snr * rms)
            good = above & (width >= 0.3) & (errors[..., 2] < 0.2 * width) & (moved <= 2.0) & (n_valid >= 16)
            typical = _nanmedian(np.where(above, width, np.nan), axis=0)
            good &= np.nan_to_num(typical, nan=np.inf)[None, :] <= half / WINDOW_WIDTHS
            good &= width <= half / 2  # and no fit far off the typical width
        params[..., :2] += (self.centre + 0.5)[:, None, :]
        return _Fits(params, errors, rms, good, half, typical)


def _predict_widths(typical: FloatArray) -> FloatArray | None:
    """Expected width (Z,) px: w^2 quadratic in the slice index, fitted where known (Eq. 5, A = B = 0)."""
    n = np.flatnonzero(np.isfinite(typical))
    if len(n) < 4 or np.ptp(n) < 3:
        return None
    c2, c1, c0 = np.polyfit(n, typical[n] ** 2, 2)
    if c2 <= 0:
        return None
    z = np.arange(len(typical))
    return np.sqrt(np.maximum(c0 + c1 * z + c2 * z * z, np.min(typical[n]) ** 2 * 0.5))


def _nanmedian(a: FloatArray, axis: int | None = None) -> FloatArray:
    """np.nanmedian, NaN (without a warning) where a slice holds no number."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=axis)


def _initial(win: FloatArray, valid: BoolArray, offset: FloatArray, h: int) -> FloatArray:
    """Starting values (N, 7): the detection position, border-median background, peak above
    it in the central 3 x 3, and the width from flux / (2 pi peak) (Eq. 6)."""
    n, s, _ = win.shape
    w = np.where(valid, win, np.nan)
    border = np.concatenate([w[:, 0], w[:, -1], w[:, 1:-1, 0], w[:, 1:-1, -1]], axis=1)
    with np.errstate(all="ignore"):
        bg = np.nan_to_num(_nanmedian(border, axis=1))
        centre = w[:, h - 1 : h + 2, h - 1 : h + 2].reshape(n, -1)
        peak = np.nanmax(np.where(np.isfinite(centre), centre, -np.inf), axis=1) - bg
        peak = np.maximum(np.nan_to_num(peak), 1.0)
        flux = np.nansum(np.clip(w - bg[:, None, None], 0, None), axis=(1, 2))
    width = np.clip(np.sqrt(flux / (2 * np.pi * peak)), 0.5, h / 2)
    zeros = np.zeros(n)
    return np.stack([offset[:, 0], offset[:, 1], width, peak, bg, zeros, zeros], axis=1)
