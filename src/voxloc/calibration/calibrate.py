"""Bead calibration: affine registration of the four cameras and the PSF of Table 2.

Two steps at the head of the pipeline (Aritake et al. 2020, Sect. 2.2 and 4.1):

* :func:`calibrate_affine`: beads detected and localized in each camera
  (:mod:`voxloc.calibration.beads`) are matched across cameras - coarse phase correlation of rendered
  bead maps over the mirror flips none/x/y/xy, then nearest neighbours, then RANSAC - and
  an affine T_k mapping camera-k pixel coordinates onto camera 1 is fitted to the inliers
  (the convention of :mod:`voxloc.localization.resampling`);
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
from pathlib import Path

import numpy as np

from voxloc import __version__
from voxloc.calibration.beads import measure_stack
from voxloc.calibration.files import _write_bytes, load_affine
from voxloc.calibration.psf_fit import fit_psf_stack
from voxloc.calibration.qc import affine_figure, psf_figure
from voxloc.calibration.registration import register_cameras
from voxloc.io import write_yaml
from voxloc.physics.cameras import CONVENTION
from voxloc.physics.psf import TABLE2

__all__ = ["calibrate_affine", "fit_psf"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- measuring


# ---------------------------------------------------------------------------- registration


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


# ---------------------------------------------------------------------------- files
