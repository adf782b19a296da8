"""Rule fit_psf_spline: bead z-stacks + affine.yaml + psf.yaml -> the measured spline PSF
(results/calibration/psf_spline.h5, :mod:`voxloc.calibration.spline_files`) and its QC
figure (:mod:`voxloc.calibration.spline_qc`).

The bead stack is measured and its defocus curve fitted again, as rule fit_psf does
(:func:`voxloc.calibration.beads.measure_stack`, :func:`voxloc.calibration.psf_fit.fit_psf_stack`:
the same code on the same files), for what psf.yaml does not hold: the position of each
bead in every camera and each bead's height. psf.yaml's plane positions must agree with the
refit (a psf.yaml of other beads is an InputError naming it). The spline is built by
:func:`voxloc.calibration.psf_spline.build_spline_psf` from the beads fit_psf used, with the
light of every other detected bead subtracted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from voxloc.calibration.beads import (
    BeadStack,
    find_hot_pixels,
    measure_stack,
    read_bead_stack,
    repair_hot_pixels,
)
from voxloc.calibration.files import load_affine, load_psf
from voxloc.calibration.options import BeadOptions, CalibrationOptions, SplineOptions
from voxloc.calibration.psf_fit import fit_psf_stack
from voxloc.calibration.psf_spline import SplineReport, anchor_shift_nm, build_spline_psf
from voxloc.calibration.spline_files import save_spline_psf
from voxloc.calibration.spline_qc import spline_figure
from voxloc.errors import InputError
from voxloc.io import atomic_output
from voxloc.physics.cameras import N_PLANES, apply_affine
from voxloc.physics.noise import adu_to_photons
from voxloc.types import BoolArray, FloatArray

__all__ = ["fit_psf_spline"]

log = logging.getLogger(__name__)

#: psf.yaml's plane positions (rounded to 0.01 nm) and the refit's must agree this well
PLANE_TOL_NM = 0.5


def _photon_stacks(paths: Sequence[str], beads: BeadOptions) -> tuple[list[FloatArray], list[BoolArray]]:
    """Per camera the stack (Z, H, W) in photons, hot pixels repaired, and its saturated pixels,
    as :func:`voxloc.calibration.beads.measure_stack` prepares them."""
    raw = read_bead_stack(paths, n_slices=None if beads.n_slices is None else int(beads.n_slices))
    photons, saturated = [], []
    for k in range(N_PLANES):
        ph = adu_to_photons(raw[:, k], beads.offset_adu, float(beads.adu_per_photon))
        hot = find_hot_pixels(ph)
        photons.append(repair_hot_pixels(ph, hot))
        saturated.append((raw[:, k] >= float(beads.saturation_adu)) & ~hot)
    return photons, saturated


def _bead_positions(
    stack: BeadStack, matrices: Sequence[FloatArray], xy1: FloatArray, tol_px: float
) -> tuple[list[FloatArray], list[FloatArray]]:
    """Per camera the positions (n, 2) of the camera-1 beads ``xy1`` (NaN where not found
    within ``tol_px`` of their registered position), and those (m, 2) of its other beads."""
    xy, others = [], []
    for k, cam in enumerate(stack.cameras):
        pos = cam.mean_xy_px()
        pos = np.where(np.isfinite(pos), pos, cam.xy_px)
        want = xy1 if k == 0 else apply_affine(np.linalg.inv(matrices[k]), xy1)
        d, j = cKDTree(pos).query(want)
        found = d <= tol_px
        xy.append(np.where(found[:, None], pos[np.minimum(j, len(pos) - 1)], np.nan))
        others.append(np.delete(pos, j[found], axis=0))
    return xy, others


def fit_psf_spline(
    paths: str | Path | Sequence[str | Path],
    affine_path: str | Path,
    psf_path: str | Path,
    beads: BeadOptions,
    opts: CalibrationOptions,
    spline: SplineOptions,
    px_size_nm: float,
    out_h5: str | Path,
    out_png: str | Path | None = None,
    *,
    require_z_range_nm: tuple[float, float] | None = None,
) -> SplineReport:
    """Rule fit_psf_spline (module doc): writes ``out_h5`` and ``out_png``, nothing on an
    error (InputError, one line naming the file); ``require_z_range_nm``: depths (nm, sample
    frame) the spline must cover. Returns the calibration's report."""
    matrices = load_affine(affine_path)
    _, planes = load_psf(psf_path)
    stack = measure_stack(paths, beads, opts)
    cal = fit_psf_stack(stack, matrices, opts, px_size_nm)
    off = float(np.max(np.abs(np.asarray(cal.plane_z_nm) - np.asarray(planes))))
    if off > PLANE_TOL_NM:
        fmt = ", ".join
        raise InputError(
            f"{psf_path}: plane positions [{fmt(f'{z:.1f}' for z in planes)}] nm, the bead stacks "
            f"{stack.source} give [{fmt(f'{z:.1f}' for z in cal.plane_z_nm)}] nm: psf.yaml is from another "
            "calibration (rerun rule fit_psf)"
        )
    photons, saturated = _photon_stacks(stack.paths, beads)
    xy, others = _bead_positions(stack, matrices, cal.bead_xy_px, float(opts.match_tolerance_px))
    min_beads = int(opts.min_beads if spline.min_beads is None else spline.min_beads)
    build = partial(
        build_spline_psf,
        photons,
        xy,
        stack.z_nm,
        source=[stack.path(k) for k in range(N_PLANES)],
        z_range_nm=spline.z_range_nm,
        require_z_range_nm=require_z_range_nm,
        z_step_nm=float(spline.z_step_nm),
        half_px=int(spline.half_px),
        smooth_z_nm=None if spline.smooth_z_nm is None else float(spline.smooth_z_nm),
        bead_z_offset_nm=cal.curve.bead_offset_nm,
        saturated_px=saturated,
        other_xy_px=others,
        min_beads=min_beads,
        px_size_nm=px_size_nm,
    )
    focus = np.asarray(cal.curve.focus_nm, dtype=np.float64)
    psf, report = build(focus)
    # z from the planes' sharpest images, not the width minima of Eq. 5 (anchor_shift_nm)
    shift = anchor_shift_nm(psf)
    if abs(shift) > 0.5:
        log.info(
            "spline PSF: the planes' sharpest images lie %.1f nm from the width minima: rebuilt there", shift
        )
        focus = focus + shift
        psf, report = build(focus)
    log.info(
        "spline PSF: z %.0f..%.0f nm, beads per plane %s (fewest per z node %d), neighbours subtracted %s, "
        "transmission %s, background %s photons/px",
        *psf.z_range_nm, report.n_beads, report.min_beads_per_z, report.n_neighbours,
        [round(t, 4) for t in report.transmission], [round(b, 2) for b in report.background_photons],
    )  # fmt: skip
    png = spline_figure(psf, report) if out_png is not None else None  # rendered before writing anything
    save_spline_psf(
        out_h5,
        psf,
        n_beads_per_plane=report.n_beads,
        kind="measured spline PSF (issue 15; Li et al. 2018)",
        source=list(stack.paths),
        affine=str(affine_path),
        psf_yaml=str(psf_path),
        plane_z_nm=[round(float(z), 3) for z in psf.plane_z_nm],
        plane_focus_stage_nm=[round(float(z), 3) for z in focus],
        focus_shift_from_width_minima_nm=round(shift, 2),
        beads=cal.counts,
        min_beads_per_z=report.min_beads_per_z,
        neighbours_subtracted=list(report.n_neighbours),
        background_photons_per_px=[round(b, 3) for b in report.background_photons],
        focus_photons=[round(f, 1) for f in report.focus_photons],
        options={
            "half_px": psf.half_px,
            "z_step_nm": psf.z_step_nm,
            "z_range_nm": list(psf.z_range_nm),
            "smooth_z_nm": spline.smooth_z_nm,
            "min_beads": min_beads,
        },  # fmt: skip
    )
    if png is not None:
        with atomic_output(out_png) as tmp:
            tmp.write_bytes(png)
    return report
