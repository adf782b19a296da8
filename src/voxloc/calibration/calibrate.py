"""Bead calibration: affine registration of the four cameras and the PSF of Table 2.

Two steps at the head of the pipeline (Aritake et al. 2020, Sect. 2.2 and 4.1):

* :func:`calibrate_affine`: beads detected and localized in each camera
  (:mod:`voxloc.calibration.beads`) are matched across cameras - coarse phase correlation
  of rendered bead maps over the mirror flips none/x/y/xy, then nearest neighbours, then
  RANSAC - and an affine T_k mapping camera-k pixel coordinates onto camera 1 is fitted to
  the inliers (:mod:`voxloc.calibration.registration`; the convention of
  :mod:`voxloc.physics.cameras`, applied by :mod:`voxloc.localization.resampling`);
* :func:`fit_psf`: the per-slice widths of the isolated, unsaturated beads of all four
  planes are fitted jointly with the defocus curve of Eq. 5 (shared r0, D, A, B; one focal
  stage position per plane, one height offset per bead), robustly. The focal positions,
  relative to plane 1, are the measured plane positions z_k. a' of Eq. 6 is the median
  bead's integrated intensity peak 2 pi r^2 (photons x nm^2), kept as a summary (molecules'
  brightness is given in photons); the ratios of the cameras' a' are their transmission
  shares (``transmission`` in psf.yaml, sum 1); b of Eq. 4 is
  the PSF's own constant, 0: the background is fitted per slice and reported separately
  (the noise model supplies it downstream); see :mod:`voxloc.calibration.psf_fit`.

Options come from the config as :mod:`voxloc.calibration.options`. Outputs are YAML
(:mod:`voxloc.calibration.files` writes them and reads them back with
:func:`~voxloc.calibration.files.load_affine` and :func:`~voxloc.calibration.files.load_psf`)
and QC PNGs (:mod:`voxloc.calibration.qc`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from voxloc.calibration.beads import measure_stack
from voxloc.calibration.files import load_affine, save_affine, save_psf
from voxloc.calibration.options import BeadOptions, CalibrationOptions
from voxloc.calibration.psf_fit import fit_psf_stack
from voxloc.calibration.qc import affine_figure, psf_figure
from voxloc.calibration.registration import register_cameras
from voxloc.io import atomic_output
from voxloc.physics.psf import TABLE2

__all__ = ["calibrate_affine", "fit_psf"]

log = logging.getLogger(__name__)


def calibrate_affine(
    paths: str | Path | Sequence[str | Path],
    beads: BeadOptions,
    opts: CalibrationOptions,
    px_size_nm: float,
    out_yaml: str | Path,
    out_png: str | Path | None = None,
) -> dict:
    """Rule calibrate_affine: bead stack -> affine.yaml (T_1..T_4) and its QC figure.

    Returns the document written (:func:`voxloc.calibration.files.save_affine`)."""
    stack = measure_stack(paths, beads, opts)
    regs = register_cameras(stack, opts, px_size_nm)
    png = None
    if out_png is not None:
        png = affine_figure(stack, regs, px_size_nm)
    log.info("writing %s (residual rms %s nm)", out_yaml, [round(r.residual_rms_nm, 2) for r in regs])
    doc = save_affine(
        out_yaml,
        regs,
        n_detected=len(stack.cameras[0]),
        px_size_nm=px_size_nm,
        frame_size=stack.shape,
        source=stack.paths,
        hot_pixels=stack.n_hot,
    )
    if png is not None:
        _write_png(out_png, png)
    return doc


def fit_psf(
    paths: str | Path | Sequence[str | Path],
    affine_path: str | Path,
    beads: BeadOptions,
    opts: CalibrationOptions,
    px_size_nm: float,
    out_yaml: str | Path,
    out_png: str | Path | None = None,
) -> dict:
    """Rule fit_psf: bead stack + affine.yaml -> psf.yaml (Table 2 form, plane positions) and
    the QC figure of the paper's Fig. 2.

    Returns the document written (:func:`voxloc.calibration.files.save_psf`)."""
    matrices = load_affine(affine_path)
    stack = measure_stack(paths, beads, opts)
    cal = fit_psf_stack(stack, matrices, opts, px_size_nm)
    png = None
    if out_png is not None:
        png = psf_figure(cal, TABLE2)
    c = cal.curve
    doc = save_psf(
        out_yaml,
        cal.psf,
        cal.plane_z_nm,
        plane_focus_stage_nm=c.focus_nm,
        stderr=c.stderr,
        counts=cal.counts,
        n_points=cal.n_points,
        n_outliers=c.n_outliers,
        residual_rms_nm=c.residual_rms_nm,
        residual_rms_percent=c.residual_rms_percent,
        bead_z_offset_rms_nm=c.bead_z_offset_rms_nm,
        a_prime_per_camera=cal.a_prime_per_camera,
        background_photons=cal.background_photons,
        px_size_nm=px_size_nm,
        source=stack.paths,
        affine=affine_path,
    )
    if png is not None:
        _write_png(out_png, png)
    return doc


def _write_png(path: str | Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
