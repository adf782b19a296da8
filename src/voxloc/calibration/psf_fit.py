"""The defocus curve from bead widths (Aritake et al. 2020, Eq. 5, Fig. 2) and the PSF of
Table 2 with the measured plane positions: the fitting half of the bead calibration
(:mod:`voxloc.calibration.calibrate` runs it, :func:`voxloc.calibration.files.save_psf`
writes psf.yaml)."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial import cKDTree

from voxloc.calibration.beads import (
    ELONGATION_MAX,
    MIN_SEPARATION_PX,
    WIDTH_OUTLIER,
    BeadStack,
    saturation_advice,
)
from voxloc.calibration.options import CalibrationOptions
from voxloc.calibration.spots import CameraBeads
from voxloc.errors import InputError
from voxloc.physics.cameras import N_PLANES, apply_affine
from voxloc.physics.psf import PSFParams, defocus_width_nm
from voxloc.types import BoolArray, FloatArray

log = logging.getLogger(__name__)


@dataclass
class DefocusFit:
    """Joint fit of Eq. 5 to bead widths: shared curve, per-plane focus, per-bead height."""

    r0_nm: float
    D_nm: float
    A: float
    B: float
    focus_nm: FloatArray  # (4,) stage depth at which plane k is in focus
    bead_offset_nm: FloatArray  # (n_beads,) height of each bead, mean 0
    stderr: dict[str, float]
    width_nm: FloatArray  # (n_points,) observed width
    residual_nm: FloatArray  # (n_points,) observed - fitted width
    inlier: BoolArray  # (n_points,)
    defocus_nm: FloatArray  # (n_points,) z_k - z_bead at each point

    @property
    def n_outliers(self) -> int:
        return int((~self.inlier).sum())

    @property
    def residual_rms_nm(self) -> float:
        """Rms of the inliers' width residuals."""
        res = self.residual_nm[self.inlier]
        return float(np.sqrt(np.mean(res**2)))

    @property
    def residual_rms_percent(self) -> float:
        """Rms of the inliers' width residuals relative to the fitted width, in %."""
        res = self.residual_nm[self.inlier]
        rel = res / (self.width_nm[self.inlier] - res)
        return float(100 * np.sqrt(np.mean(rel**2)))

    @property
    def bead_z_offset_rms_nm(self) -> float:
        """Rms of the beads' fitted heights."""
        return float(np.sqrt(np.mean(self.bead_offset_nm**2)))


def _curve(theta: FloatArray, plane: np.ndarray, bead: np.ndarray, z_nm: FloatArray, n_beads: int):
    r0, d, a, b = theta[:4]
    focus = theta[4 : 4 + N_PLANES]
    offset = (
        np.concatenate([[0.0], theta[4 + N_PLANES :]]) if len(theta) > 4 + N_PLANES else np.zeros(n_beads)
    )
    defocus = focus[plane] - (z_nm + offset[bead])
    return defocus_width_nm(defocus, r0_nm=r0, D_nm=d, A=a, B=b), defocus


def fit_defocus_curve(
    width_nm: FloatArray,
    sigma_nm: FloatArray,
    z_nm: FloatArray,
    *,
    per_bead_offset: bool = True,
) -> DefocusFit:
    """Fit r(z_k - z_n - dz_b) of Eq. 5 to widths (n_beads, 4, Z) (NaN where missing).

    Shared r0, D, A, B; focus z_k per plane; per-bead heights dz_b (mean 0) when
    ``per_bead_offset``. Residuals are weighted by the width's standard error with a 1 %
    floor, under a soft-L1 loss (outliers beyond 5 sigma are reported, not trusted).
    """
    n_beads = width_nm.shape[0]
    bead, plane, zi = np.nonzero(np.isfinite(width_nm))
    w, s, z = width_nm[bead, plane, zi], sigma_nm[bead, plane, zi], z_nm[zi]
    s_eff = np.sqrt(s**2 + (0.01 * w) ** 2)
    has = np.isfinite(width_nm).any(axis=2)  # (bead, plane)
    if not has.any(axis=0).all():
        raise ValueError("every plane needs at least one bead width")
    sharpest = np.where(np.isfinite(width_nm), width_nm, np.inf)
    z_min = z_nm[np.argmin(sharpest, axis=2)]  # slice of smallest width per (bead, plane)
    best_z = np.array([np.median(z_min[has[:, k], k]) for k in range(N_PLANES)])
    r0 = float(np.median(sharpest.min(axis=2)[has]))
    theta = np.concatenate([[r0, 2.2 * r0, 0.0, 0.0], best_z])
    lo = np.concatenate([[1.0, 1.0, -5.0, -5.0], np.full(N_PLANES, -np.inf)])
    hi = np.concatenate([[1e5, 1e5, 5.0, 5.0], np.full(N_PLANES, np.inf)])

    def resid(t):
        return (_curve(t, plane, bead, z, n_beads)[0] - w) / s_eff

    fit = least_squares(resid, theta, bounds=(lo, hi), loss="soft_l1", f_scale=3.0, x_scale="jac")
    theta = fit.x
    if per_bead_offset and n_beads > 1:
        theta = np.concatenate([theta, np.zeros(n_beads - 1)])
        lo = np.concatenate([lo, np.full(n_beads - 1, -np.inf)])
        hi = np.concatenate([hi, np.full(n_beads - 1, np.inf)])
        fit = least_squares(resid, theta, bounds=(lo, hi), loss="soft_l1", f_scale=3.0, x_scale="jac")
    model, defocus = _curve(fit.x, plane, bead, z, n_beads)
    r = (model - w) / s_eff
    inlier = np.abs(r) <= 5.0
    offset = (
        np.concatenate([[0.0], fit.x[4 + N_PLANES :]]) if len(fit.x) > 4 + N_PLANES else np.zeros(n_beads)
    )
    mean_off = offset.mean()
    # standard errors from the Gauss-Newton covariance, scaled by the inliers' reduced chi^2
    jac = fit.jac
    chi2 = float(np.sum(r[inlier] ** 2) / max(inlier.sum() - len(fit.x), 1))
    cov = np.linalg.pinv(jac[inlier].T @ jac[inlier]) * chi2
    se = np.sqrt(np.abs(np.diag(cov)))
    names = ["r0_nm", "D_nm", "A", "B"] + [f"plane{k + 1}_focus_nm" for k in range(N_PLANES)]
    return DefocusFit(
        r0_nm=float(fit.x[0]),
        D_nm=float(fit.x[1]),
        A=float(fit.x[2]),
        B=float(fit.x[3]),
        focus_nm=fit.x[4 : 4 + N_PLANES] - mean_off,
        bead_offset_nm=offset - mean_off,
        stderr={n: float(v) for n, v in zip(names, se, strict=False)},
        width_nm=w,
        residual_nm=w - model,
        inlier=inlier,
        defocus_nm=defocus,
    )


def _psf_beads(stack: BeadStack, matrices: Sequence[FloatArray], tol_px: float) -> tuple[np.ndarray, dict]:
    """Camera-1 beads matched in all cameras through the registration: (n, 4) indices, and
    the reasons others were left out of the PSF fit."""
    cams = stack.cameras

    def position(cam: CameraBeads) -> FloatArray:  # fitted where possible, else as detected
        xy = cam.mean_xy_px()
        return np.where(np.isfinite(xy), xy, cam.xy_px)

    idx = [np.arange(len(cams[0]))]
    ref_xy = position(cams[0])
    found = np.ones(len(ref_xy), bool)
    for k in range(1, N_PLANES):
        d, j = cKDTree(position(cams[k])).query(apply_affine(np.linalg.inv(matrices[k]), ref_xy))
        found &= d <= tol_px
        idx.append(j)
    idx = np.stack(idx, axis=1)[found]
    saturated = np.zeros(len(idx), bool)
    overlapping = np.zeros(len(idx), bool)
    faint = np.zeros(len(idx), bool)
    min_w = np.full((len(idx), N_PLANES), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for k, cam in enumerate(cams):
            j = idx[:, k]
            saturated |= cam.saturated[j].any(axis=1)
            faint |= ~cam.good[j].any(axis=1)
            overlapping |= (cam.elongation[j] > ELONGATION_MAX) | (cam.nn_px[j] < MIN_SEPARATION_PX)
            min_w[:, k] = np.nanmin(np.where(cam.good[j], cam.params[j, :, 2], np.nan), axis=1)
        ok = ~saturated & ~overlapping & ~faint
        ref = np.nanmedian(min_w[ok] if ok.any() else min_w, axis=0)
        overlapping |= np.any(min_w > WIDTH_OUTLIER * ref, axis=1)  # wider in focus: a close pair
    faint &= ~saturated
    overlapping &= ~saturated & ~faint
    counts = {
        "detected_camera1": len(cams[0]),
        "matched_all_cameras": len(idx),
        "saturated": int(saturated.sum()),
        "overlapping": int(overlapping.sum()),
        "below_background": int(faint.sum()),
    }
    return idx, {"counts": counts, "use": ~(saturated | overlapping | faint), "saturated": saturated}


@dataclass
class PSFCalibration:
    """Result of :func:`fit_psf_stack`: Table 2 parameters, plane positions and the data."""

    psf: PSFParams
    plane_z_nm: tuple[float, ...]
    curve: DefocusFit
    width_nm: FloatArray  # (n_beads, 4, Z) widths used (NaN elsewhere)
    z_nm: FloatArray
    a_prime_per_camera: list[float]
    background_photons: list[float]
    counts: dict[str, int]
    n_points: int
    bead_xy_px: FloatArray  # (n_beads, 2) camera-1 positions of the beads used


def fit_psf_stack(
    stack: BeadStack, matrices: Sequence[FloatArray], opts: CalibrationOptions, px_size_nm: float
) -> PSFCalibration:
    """The PSF of Table 2 and the plane positions from a measured bead stack (Eqs. 4-6)."""
    idx, sel = _psf_beads(stack, matrices, float(opts.match_tolerance_px) / 3)
    counts = sel["counts"]
    use = idx[sel["use"]]
    min_beads = int(opts.min_beads)
    log.info("PSF beads: %s, %d usable", counts, len(use))
    advice = saturation_advice(stack.saturation_adu)
    if len(idx) and sel["saturated"].all():
        raise InputError(
            f"{stack.source}: all {len(idx)} beads found in the four cameras are saturated near focus, "
            f"and the PSF fit needs unsaturated ones; {advice}"
        )
    if len(use) < min_beads:
        msg = (
            f"{stack.source}: {len(use)} usable bead(s) for the PSF fit ({counts}), "
            f"need >= {min_beads} (config calibration.min_beads)"
        )
        if len(use) + counts["saturated"] >= min_beads:  # the saturated ones make the difference
            msg += f"; {counts['saturated']} are saturated: {advice}"
        raise InputError(msg)
    n_z = len(stack.z_nm)
    width = np.full((len(use), N_PLANES, n_z), np.nan)
    sigma = np.full_like(width, np.nan)
    a_bead = np.full_like(width, np.nan)
    bg = []
    for k, cam in enumerate(stack.cameras):
        j = use[:, k]
        good = cam.good[j]
        w_nm = cam.params[j, :, 2] * px_size_nm
        width[:, k] = np.where(good, w_nm, np.nan)
        sigma[:, k] = np.where(good, cam.errors[j, :, 2] * px_size_nm, np.nan)
        a_bead[:, k] = np.where(good, cam.params[j, :, 3] * 2 * math.pi * w_nm**2, np.nan)  # Eq. 6
        bg.append(float(np.nanmedian(np.where(good, cam.params[j, :, 4], np.nan))))
        if not good.any():
            raise InputError(f"{stack.path(k)}: no bead rises above the background in camera {k + 1}")
    curve = fit_defocus_curve(width, sigma, stack.z_nm, per_bead_offset=bool(opts.per_bead_z_offset))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_bead = np.nanmedian(a_bead.reshape(len(use), -1), axis=1)
        a_prime = float(np.nanmedian(per_bead))  # of the median bead: a summary, not a brightness
        a_cam = [float(np.nanmedian(np.nanmedian(a_bead[:, k], axis=1))) for k in range(N_PLANES)]
    psf = PSFParams(a_prime=a_prime, b=0.0, r0_nm=curve.r0_nm, D_nm=curve.D_nm, A=curve.A, B=curve.B)
    planes = tuple(float(z - curve.focus_nm[0]) for z in curve.focus_nm)
    counts = {**counts, "used": len(use)}
    xy = stack.cameras[0].mean_xy_px()[use[:, 0]]
    n_points = int(np.isfinite(width).sum())
    return PSFCalibration(psf, planes, curve, width, stack.z_nm, a_cam, bg, counts, n_points, xy)
