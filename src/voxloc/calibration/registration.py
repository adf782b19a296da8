"""Registration of cameras 2-4 onto camera 1 from beads (Aritake et al. 2020, Sect. 4.1).

For each camera k, the single beads (no overlapping neighbour) of camera k and camera 1
are matched: a coarse flip and shift by phase correlation of rendered bead maps, tried
over the mirror flips none/x/y/xy (or the one configured in ``calibration.flip``), then
mutual nearest neighbours refined by affine refits at shrinking radii, then RANSAC on the
matched pairs' mean positions. The least-squares affine T_k of the inliers maps camera-k
pixel coordinates onto camera 1's (the convention of :mod:`voxloc.physics.cameras`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from voxloc.calibration.beads import BeadStack, single_beads
from voxloc.calibration.options import CalibrationOptions
from voxloc.calibration.spots import CameraBeads
from voxloc.errors import InputError
from voxloc.physics.cameras import FLIPS, N_PLANES, apply_affine, flip_matrix
from voxloc.physics.psf import gaussian_spot
from voxloc.types import FloatArray

log = logging.getLogger(__name__)

MIN_COMMON_SLICES = 5  # slices good in both cameras for a drift-proof pair position


SCALE_RANGE = (0.8, 1.25)  # singular values of a plausible registration


def _bead_map(xy: FloatArray, shape: tuple[int, int]) -> FloatArray:
    """Unit Gaussian spots (1 px wide) at the points: an image for phase correlation."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    img = np.zeros(shape)
    for x, y in xy:
        img += gaussian_spot(xx, yy, x, y, 1.0, 1.0)
    return img


def match_points(a: FloatArray, b: FloatArray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of point sets a (n, 2) and b (m, 2) closer than ``tol``: indices."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    da, ia = cKDTree(b).query(a)
    _, ib = cKDTree(a).query(b)
    keep = (da <= tol) & (ib[ia] == np.arange(len(a)))
    return np.flatnonzero(keep), ia[keep]


def coarse_registration(
    ref_xy: FloatArray, mov_xy: FloatArray, shape: tuple[int, int], flips: Sequence[str], tol_px: float
) -> tuple[FloatArray, str, int]:
    """Flip and shift of camera-k points onto camera 1 by phase correlation of bead maps.

    Each candidate flip is tried; the one whose correlation peak matches most beads within
    ``tol_px`` wins. Returns the 3 x 3 matrix, the flip and the number of matches.
    """
    from skimage.registration import phase_cross_correlation

    ref = _bead_map(ref_xy, shape)
    best = (np.eye(3), "none", -1)
    for flip in flips:
        f = flip_matrix(flip, *shape)
        moved = apply_affine(f, mov_xy)
        (dy, dx), _, _ = phase_cross_correlation(ref, _bead_map(moved, shape), upsample_factor=4)
        t = np.array([[1.0, 0, dx], [0, 1.0, dy], [0, 0, 1]]) @ f
        n = len(match_points(apply_affine(t, mov_xy), ref_xy, tol_px)[0])
        log.info("  flip %-4s shift (%.1f, %.1f) px: %d bead(s) match", flip, dx, dy, n)
        if n > best[2]:
            best = (t, flip, n)
    return best


def fit_affine(src: FloatArray, dst: FloatArray) -> FloatArray:
    """Least-squares 3 x 3 affine matrix mapping src (n, 2) onto dst (n, 2), n >= 3."""
    a = np.hstack([src, np.ones((len(src), 1))])
    sol, *_ = np.linalg.lstsq(a, dst, rcond=None)
    return np.vstack([sol.T, [0.0, 0.0, 1.0]])


def _plausible(matrix: FloatArray) -> bool:
    sv = np.linalg.svd(matrix[:2, :2], compute_uv=False)
    return bool(np.all(np.isfinite(matrix)) and SCALE_RANGE[0] <= sv.min() and sv.max() <= SCALE_RANGE[1])


class _AffineModel:
    """Affine model for skimage.measure.ransac (both its old and new estimation protocols)."""

    def __init__(self) -> None:
        self.params = np.eye(3)
        self.ok = True

    @classmethod
    def from_estimate(cls, src, dst):
        model = cls()
        model.ok = model.estimate(src, dst)
        return model

    def __bool__(self) -> bool:
        return self.ok

    def estimate(self, src, dst) -> bool:
        self.params = fit_affine(src, dst)
        return _plausible(self.params)

    def residuals(self, src, dst) -> FloatArray:
        return np.hypot(*(apply_affine(self.params, src) - dst).T)


@dataclass
class CameraRegistration:
    """Registration of one camera onto camera 1 and its matched bead positions (px)."""

    matrix: FloatArray
    flip: str
    n_detected: int
    n_matched: int
    n_inliers: int
    residual_rms_nm: float
    max_residual_nm: float
    ref_xy: FloatArray  # camera-1 positions of the inliers
    mov_xy: FloatArray  # camera-k positions of the inliers
    pairs: tuple[np.ndarray, np.ndarray]  # (camera-1 index, camera-k index) of the inliers


def _pair_positions(
    a: CameraBeads, ia: np.ndarray, b: CameraBeads, ib: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """Mean positions of matched beads: over the slices good in both cameras where there are
    at least :data:`MIN_COMMON_SLICES` (the same physical positions even if the stage drifted
    laterally during the z scan), else over each camera's own good slices."""
    both = a.good[ia] & b.good[ib]
    use_a, use_b = np.zeros_like(a.good), np.zeros_like(b.good)
    use_a[ia], use_b[ib] = both, both
    common = (both.sum(axis=1) >= MIN_COMMON_SLICES)[:, None]
    pa = np.where(common, a.mean_xy_px(use_a)[ia], a.mean_xy_px()[ia])
    pb = np.where(common, b.mean_xy_px(use_b)[ib], b.mean_xy_px()[ib])
    return pa, pb


def register_camera(
    stack: BeadStack, k: int, flips: Sequence[str], *, px_size_nm: float, opts: CalibrationOptions
) -> CameraRegistration:
    """Affine of camera k (1..3, 0-based) onto camera 1: coarse step, matching, RANSAC, refit."""
    where = stack.path(k)
    ref, mov = stack.cameras[0], stack.cameras[k]
    r_use, m_use = np.flatnonzero(single_beads(ref)), np.flatnonzero(single_beads(mov))
    r_xy, m_xy = ref.mean_xy_px()[r_use], mov.mean_xy_px()[m_use]
    tol = float(opts.match_tolerance_px)
    min_beads = int(opts.min_beads)
    log.info("camera %d -> camera 1: %d and %d single beads", k + 1, len(m_use), len(r_use))
    t, flip, n = coarse_registration(r_xy, m_xy, stack.shape, flips, tol)
    fail = f"{where}: no consistent set of >= {min_beads} beads of camera {k + 1} matched camera 1"
    if n < 3:
        raise InputError(f"{fail} (best: {max(n, 0)} with flip {flip}); are these the same bead sample?")
    for step_tol in (tol, tol / 2, max(tol / 3, 0.5)):  # refine: affine on matches, match again
        im, ir = match_points(apply_affine(t, m_xy), r_xy, step_tol)
        if len(im) >= 3:
            t = fit_affine(m_xy[im], r_xy[ir])
    im, ir = match_points(apply_affine(t, m_xy), r_xy, max(tol / 3, 0.5))
    if len(im) < min_beads:
        raise InputError(f"{fail} ({len(im)} matched)")
    ia, ib = r_use[ir], m_use[im]
    p_ref, p_mov = _pair_positions(ref, ia, mov, ib)
    from skimage.measure import ransac

    threshold_px = float(opts.ransac_threshold_nm) / px_size_nm
    model, inliers = ransac(
        (p_mov, p_ref), _AffineModel, min_samples=3, residual_threshold=threshold_px, max_trials=500, rng=0
    )
    if model is None or inliers is None or inliers.sum() < min_beads:
        raise InputError(f"{fail} ({0 if inliers is None else int(inliers.sum())} RANSAC inliers)")
    t = fit_affine(p_mov[inliers], p_ref[inliers])
    if not _plausible(t):
        raise InputError(
            f"{fail} (the fitted transform scales by {np.linalg.svd(t[:2, :2], compute_uv=False)})"
        )
    res_nm = np.hypot(*(apply_affine(t, p_mov[inliers]) - p_ref[inliers]).T) * px_size_nm
    return CameraRegistration(
        matrix=t,
        flip=flip,
        n_detected=len(mov),
        n_matched=len(im),
        n_inliers=int(inliers.sum()),
        residual_rms_nm=float(np.sqrt(np.mean(res_nm**2))),
        max_residual_nm=float(res_nm.max()),
        ref_xy=p_ref[inliers],
        mov_xy=p_mov[inliers],
        pairs=(ia[inliers], ib[inliers]),
    )


def register_cameras(
    stack: BeadStack, opts: CalibrationOptions, px_size_nm: float
) -> list[CameraRegistration]:
    """Registrations of cameras 2-4 onto camera 1 (config ``calibration.flip``: auto or a flip)."""
    flips_cfg = list(opts.flip)
    regs = []
    for k in range(1, N_PLANES):
        flips = FLIPS if flips_cfg[k - 1] == "auto" else (flips_cfg[k - 1],)
        reg = register_camera(stack, k, flips, px_size_nm=px_size_nm, opts=opts)
        log.info(
            "camera %d: flip %s, %d matched, %d inliers, residual rms %.1f nm",
            k + 1, reg.flip, reg.n_matched, reg.n_inliers, reg.residual_rms_nm,
        )  # fmt: skip
        regs.append(reg)
    return regs
