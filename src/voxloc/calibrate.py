"""Bead calibration: affine registration of the four cameras and the PSF of Table 2.

Two steps at the head of the pipeline (Aritake et al. 2020, Sect. 2.2 and 4.1):

* :func:`calibrate_affine`: beads detected and localized in each camera
  (:mod:`voxloc.beads`) are matched across cameras - coarse phase correlation of rendered
  bead maps over the mirror flips none/x/y/xy, then nearest neighbours, then RANSAC - and
  an affine T_k mapping camera-k pixel coordinates onto camera 1 is fitted to the inliers
  (the convention of :mod:`voxloc.registration`);
* :func:`fit_psf`: the per-slice widths of the isolated, unsaturated beads of all four
  planes are fitted jointly with the defocus curve of Eq. 5 (shared r0, D, A, B; one focal
  stage position per plane, one height offset per bead), robustly. The focal positions,
  relative to plane 1, are the measured plane positions z_k. a' of Eq. 6 is the median
  integrated intensity peak 2 pi r^2 of a bead (photons x nm^2) divided by
  ``calibration.bead_weight``, the brightness of a bead in molecule weights; b of Eq. 4 is
  the PSF's own constant, 0: the background is fitted per slice and reported separately
  (the noise model supplies it downstream).

Outputs are YAML (read back with :func:`load_affine` and :func:`load_psf`) and QC PNGs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from voxloc import __version__
from voxloc.beads import (
    ELONGATION_MAX,
    MIN_SEPARATION_PX,
    N_CAMERAS,
    CameraBeads,
    detect_beads,
    find_hot_pixels,
    measure_camera,
    read_bead_stack,
    repair_hot_pixels,
    stack_source,
)
from voxloc.calibrate_qc import affine_figure, psf_figure
from voxloc.defocus import DefocusFit, PSFCalibration, fit_defocus_curve, fit_psf_stack
from voxloc.errors import InputError
from voxloc.io import atomic_output, read_yaml, write_yaml
from voxloc.psf import TABLE2, PSFParams, gaussian_spot
from voxloc.registration import apply_affine
from voxloc.types import BoolArray, FloatArray

__all__ = [
    "FLIPS",
    "BeadStack",
    "measure_stack",
    "flip_matrix",
    "coarse_registration",
    "match_points",
    "fit_affine",
    "register_cameras",
    "DefocusFit",
    "fit_defocus_curve",
    "PSFCalibration",
    "fit_psf_stack",
    "calibrate_affine",
    "fit_psf",
    "load_affine",
    "load_psf",
]

log = logging.getLogger(__name__)

FLIPS = ("none", "x", "y", "xy")
CONVENTION = "T_k maps camera-k pixel coords (x = col + 0.5, y = row + 0.5) onto camera 1; T_1 = identity"
MIN_COMMON_SLICES = 5  # slices good in both cameras for a drift-proof pair position
SCALE_RANGE = (0.8, 1.25)  # singular values of a plausible registration


# ---------------------------------------------------------------------------- measuring


@dataclass
class BeadStack:
    """A measured bead stack: per-camera spot fits, slice depths, frame size and sources."""

    cameras: list[CameraBeads]
    z_nm: FloatArray  # (Z,) bead depth at each slice: z_start + n z_step
    shape: tuple[int, int]  # H, W
    paths: list[str]
    n_hot: list[int]

    @property
    def source(self) -> str:
        return stack_source(self.paths)

    def path(self, k: int) -> str:
        """The file holding camera k (0-based)."""
        return self.paths[k] if len(self.paths) == N_CAMERAS else self.paths[0]


def measure_stack(
    paths: str | Path | Sequence[str | Path], beads_cfg: Mapping, calib_cfg: Mapping
) -> BeadStack:
    """Read a bead stack (config ``calibration.beads``), convert ADU to photons, repair hot
    pixels, detect the beads in each camera and fit them in every slice."""
    paths = [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]
    n_slices = beads_cfg.get("n_slices")
    raw = read_bead_stack(paths, n_slices=None if n_slices is None else int(n_slices))
    gain = float(beads_cfg["adu_per_photon"])
    saturation = float(beads_cfg.get("saturation_adu", 65535))
    z_nm = float(beads_cfg.get("z_start_nm", 0.0)) + float(beads_cfg["z_step_nm"]) * np.arange(raw.shape[0])
    cams, n_hot = [], []
    for k in range(N_CAMERAS):
        where = paths[k] if len(paths) == N_CAMERAS else f"{paths[0]} (camera {k + 1})"
        photons = (raw[:, k].astype(np.float32) - np.float32(beads_cfg["offset_adu"])) / np.float32(gain)
        hot = find_hot_pixels(photons)
        photons = repair_hot_pixels(photons, hot)
        xy = detect_beads(photons, snr=float(calib_cfg.get("detect_snr", 10.0)))
        log.info("camera %d: %d hot pixel(s), %d bead(s) detected", k + 1, int(hot.sum()), len(xy))
        if len(xy) < int(calib_cfg.get("min_beads", 4)):
            raise InputError(
                f"{where}: {len(xy)} bead(s) detected, need >= {calib_cfg.get('min_beads', 4)} "
                "(config calibration.min_beads, calibration.detect_snr)"
            )
        sat = (raw[:, k] >= saturation) & ~hot
        cams.append(measure_camera(photons, sat, xy, min_snr=float(calib_cfg.get("min_snr", 5.0))))
        n_hot.append(int(hot.sum()))
    return BeadStack(cams, z_nm, (raw.shape[2], raw.shape[3]), paths, n_hot)


def single_beads(cam: CameraBeads) -> BoolArray:
    """Beads usable for registration: not elongated (no overlapping neighbour), some good slice."""
    return (cam.elongation <= ELONGATION_MAX) & (cam.nn_px >= MIN_SEPARATION_PX) & cam.good.any(axis=1)


# ---------------------------------------------------------------------------- registration


def flip_matrix(flip: str, height: int, width: int) -> FloatArray:
    """Mirror about the frame centre: 'x' reverses columns (x -> W - x), 'y' rows, 'xy' both."""
    if flip not in FLIPS:
        raise ValueError(f"flip must be one of {FLIPS}, got {flip!r}")
    fx, fy = "x" in flip, "y" in flip
    return np.array(
        [
            [-1.0 if fx else 1.0, 0, width if fx else 0],
            [0, -1.0 if fy else 1.0, height if fy else 0],
            [0, 0, 1],
        ]
    )


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
    stack: BeadStack, k: int, flips: Sequence[str], *, px_size_nm: float, calib_cfg: Mapping
) -> CameraRegistration:
    """Affine of camera k (1..3, 0-based) onto camera 1: coarse step, matching, RANSAC, refit."""
    where = stack.path(k)
    ref, mov = stack.cameras[0], stack.cameras[k]
    r_use, m_use = np.flatnonzero(single_beads(ref)), np.flatnonzero(single_beads(mov))
    r_xy, m_xy = ref.mean_xy_px()[r_use], mov.mean_xy_px()[m_use]
    tol = float(calib_cfg.get("match_tolerance_px", 3.0))
    min_beads = int(calib_cfg.get("min_beads", 4))
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

    threshold_px = float(calib_cfg.get("ransac_threshold_nm", 100.0)) / px_size_nm
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


def register_cameras(stack: BeadStack, calib_cfg: Mapping, px_size_nm: float) -> list[CameraRegistration]:
    """Registrations of cameras 2-4 onto camera 1 (config ``calibration.flip``: auto or a flip)."""
    flips_cfg = list(calib_cfg.get("flip", ["auto"] * (N_CAMERAS - 1)))
    regs = []
    for k in range(1, N_CAMERAS):
        flips = FLIPS if flips_cfg[k - 1] == "auto" else (flips_cfg[k - 1],)
        reg = register_camera(stack, k, flips, px_size_nm=px_size_nm, calib_cfg=calib_cfg)
        log.info(
            "camera %d: flip %s, %d matched, %d inliers, residual rms %.1f nm",
            k + 1, reg.flip, reg.n_matched, reg.n_inliers, reg.residual_rms_nm,
        )  # fmt: skip
        regs.append(reg)
    return regs


def calibrate_affine(
    paths: str | Path | Sequence[str | Path],
    beads_cfg: Mapping,
    calib_cfg: Mapping,
    px_size_nm: float,
    out_yaml: str | Path,
    out_png: str | Path | None = None,
) -> dict:
    """Rule calibrate_affine: bead stack -> affine.yaml (T_1..T_4) and its QC figure."""
    stack = measure_stack(paths, beads_cfg, calib_cfg)
    regs = register_cameras(stack, calib_cfg, px_size_nm)
    cam1 = stack.cameras[0]
    cameras = {
        "camera1": {"matrix": np.eye(3), "flip": "none", "n_detected": len(cam1), "residual_rms_nm": 0.0}
    }
    for k, r in enumerate(regs, start=2):
        cameras[f"camera{k}"] = {
            "matrix": r.matrix,
            "flip": r.flip,
            "n_detected": r.n_detected,
            "n_matched": r.n_matched,
            "n_inliers": r.n_inliers,
            "residual_rms_nm": round(r.residual_rms_nm, 3),
            "max_residual_nm": round(r.max_residual_nm, 3),
        }
    doc = {
        "voxloc_version": __version__,
        "kind": "affine registration (Aritake et al. 2020, Sect. 4.1)",
        "convention": CONVENTION,
        "px_size_nm": float(px_size_nm),
        "frame_size": list(stack.shape),
        "source": stack.paths,
        "hot_pixels": stack.n_hot,
        "cameras": cameras,
    }
    png = None
    if out_png is not None:
        png = affine_figure(stack, regs, px_size_nm)
    log.info("writing %s (residual rms %s nm)", out_yaml, [round(r.residual_rms_nm, 2) for r in regs])
    write_yaml(out_yaml, doc)
    if png is not None:
        _write_bytes(out_png, png)
    return doc


def load_affine(path: str | Path) -> list[FloatArray]:
    """The four 3 x 3 matrices T_1..T_4 of an affine.yaml (camera k -> camera 1 pixel coords)."""
    doc = _read_calibration(path)
    try:
        mats = [
            np.array(doc["cameras"][f"camera{k}"]["matrix"], dtype=np.float64)
            for k in range(1, N_CAMERAS + 1)
        ]
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{path}: not an affine calibration (needs cameras.camera1..camera4.matrix)"
        ) from None
    for k, m in enumerate(mats, start=1):
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m[2], [0, 0, 1]):
            raise InputError(f"{path}: cameras.camera{k}.matrix is not a 3 x 3 affine matrix")
    return mats


# ---------------------------------------------------------------------------- PSF


def fit_psf(
    paths: str | Path | Sequence[str | Path],
    affine_path: str | Path,
    beads_cfg: Mapping,
    calib_cfg: Mapping,
    px_size_nm: float,
    out_yaml: str | Path,
    out_png: str | Path | None = None,
) -> dict:
    """Rule fit_psf: bead stack + affine.yaml -> psf.yaml (Table 2 form, plane positions) and
    the QC figure of the paper's Fig. 2."""
    matrices = load_affine(affine_path)
    stack = measure_stack(paths, beads_cfg, calib_cfg)
    cal = fit_psf_stack(stack, matrices, calib_cfg, px_size_nm)
    c = cal.curve
    res = c.residual_nm[c.inlier]
    rel = res / (c.width_nm[c.inlier] - res)
    doc = {
        "voxloc_version": __version__,
        "kind": "PSF calibration (Aritake et al. 2020, Eqs. 4-6, Table 2)",
        "psf": {k: float(f"{v:.6g}") for k, v in cal.psf.to_dict().items()},
        "plane_z_nm": [round(z, 2) for z in cal.plane_z_nm],
        "notes": {
            "plane_z_nm": "focal position of each plane relative to plane 1 (z axis origin)",
            "a_prime": f"median bead integrated intensity peak*2*pi*r^2 (photons x nm^2) / bead_weight {calib_cfg.get('bead_weight', 1.0)}",
            "b": "PSF constant of Eq. 4; the background is fitted per slice and reported separately",
        },
        "plane_focus_stage_nm": [round(float(z), 2) for z in c.focus_nm],
        "stderr": {k: float(f"{v:.3g}") for k, v in c.stderr.items()},
        "fit": {
            "n_beads": cal.counts["used"],
            "beads": cal.counts,
            "n_points": cal.n_points,
            "n_outliers": int((~c.inlier).sum()),
            "residual_rms_nm": round(float(np.sqrt(np.mean(res**2))), 3),
            "residual_rms_percent": round(float(100 * np.sqrt(np.mean(rel**2))), 3),
            "bead_z_offset_rms_nm": round(float(np.sqrt(np.mean(c.bead_offset_nm**2))), 3),
        },
        "a_prime_per_camera": [float(f"{a:.4g}") for a in cal.a_prime_per_camera],
        "background_photons_per_px": [round(b, 3) for b in cal.background_photons],
        "bead_weight": float(calib_cfg.get("bead_weight", 1.0)),
        "px_size_nm": float(px_size_nm),
        "source": stack.paths,
        "affine": str(affine_path),
    }
    png = None
    if out_png is not None:
        png = psf_figure(cal, TABLE2)
    log.info("writing %s: %s, planes %s nm", out_yaml, doc["psf"], doc["plane_z_nm"])
    write_yaml(out_yaml, doc)
    if png is not None:
        _write_bytes(out_png, png)
    return doc


def load_psf(path: str | Path) -> tuple[PSFParams, tuple[float, ...]]:
    """The fitted PSF (Table 2 form) and plane positions z_k (nm from plane 1) of a psf.yaml."""
    doc = _read_calibration(path)
    try:
        psf = PSFParams.from_dict(doc["psf"])
        planes = tuple(float(z) for z in doc["plane_z_nm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a PSF calibration ({exc})".splitlines()[0]) from None
    if len(planes) != N_CAMERAS:
        raise InputError(f"{path}: plane_z_nm has {len(planes)} planes, expected {N_CAMERAS}")
    return psf, planes


# ---------------------------------------------------------------------------- files


def _read_calibration(path: str | Path) -> dict:
    import yaml

    try:
        doc = read_yaml(path)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise InputError(f"{path}: not valid YAML") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a mapping of keys")
    return doc


def _write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
