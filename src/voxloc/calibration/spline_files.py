"""Save and load a cubic-spline PSF (:class:`voxloc.physics.spline.SplinePSF`) as HDF5.

Layout: dataset ``coeffs`` (P, Nz + 2, L + 2, L + 2) float64, dataset ``transmission``
(P,), attributes ``z0_nm``, ``z_step_nm``, ``px_size_nm``, ``plane_z_nm``, ``n_beads``,
``normalisation``, ``lateral_step_px``, ``format`` and ``voxloc_version``, plus the caller's
metadata under ``meta/`` (JSON strings). Written atomically (:func:`voxloc.io.atomic_output`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import voxloc
from voxloc.errors import InputError
from voxloc.io import atomic_output
from voxloc.physics.spline import SplinePSF

__all__ = ["FORMAT", "save_spline_psf", "load_spline_psf", "spline_meta"]

FORMAT = "voxloc-spline-psf-1"


def save_spline_psf(path: str | Path, psf: SplinePSF, **meta: Any) -> None:
    """Write ``psf`` to ``path`` (HDF5, atomically); ``meta`` values must be JSON-serialisable."""
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coeffs", data=psf.coeffs, compression="gzip", compression_opts=4)
        f.create_dataset("transmission", data=psf.transmission)
        f.attrs.update({
            "format": FORMAT,
            "voxloc_version": voxloc.__version__,
            "z0_nm": psf.z0_nm,
            "z_step_nm": psf.z_step_nm,
            "px_size_nm": psf.px_size_nm,
            "plane_z_nm": np.asarray(psf.plane_z_nm, dtype=np.float64),
            "n_beads": psf.n_beads,
            "normalisation": psf.normalisation,
            "lateral_step_px": psf.lateral_step_px,
        })  # fmt: skip
        g = f.create_group("meta")
        for key, value in meta.items():
            g.attrs[key] = json.dumps(value)


def spline_meta(path: str | Path) -> dict[str, Any]:
    """The caller's metadata of a spline file (as passed to :func:`save_spline_psf`)."""
    with h5py.File(path, "r") as f:
        return {k: json.loads(v) for k, v in f["meta"].attrs.items()}


def load_spline_psf(
    path: str | Path, *, expect_planes: int | None = None, expect_grid: Mapping[str, float] | None = None
) -> SplinePSF:
    """Read a spline PSF; InputError (one line naming ``path``) for an unreadable file or one
    whose planes or grid (keys of :meth:`SplinePSF.grid`, e.g. ``px_size_nm``) disagree."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise InputError(f"{path}: not a voxloc spline PSF file (format {f.attrs.get('format')!r})")
            a = f.attrs
            psf = SplinePSF(
                coeffs=f["coeffs"][()],
                z0_nm=float(a["z0_nm"]),
                z_step_nm=float(a["z_step_nm"]),
                px_size_nm=float(a["px_size_nm"]),
                transmission=f["transmission"][()],
                plane_z_nm=tuple(float(z) for z in np.atleast_1d(a["plane_z_nm"])),
                n_beads=int(a["n_beads"]),
                normalisation=str(a["normalisation"]),
                lateral_step_px=float(a["lateral_step_px"]),
            )
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the spline PSF ({type(exc).__name__}: {exc})") from None
    if expect_planes is not None and psf.n_planes != expect_planes:
        raise InputError(f"{path}: the spline PSF has {psf.n_planes} planes, the run has {expect_planes}")
    if expect_grid:
        grid = psf.grid()
        for key, want in expect_grid.items():
            if key not in grid:
                raise ValueError(f"unknown spline grid key {key!r}; known: {sorted(grid)}")
            if not np.isclose(float(grid[key]), float(want), rtol=1e-9, atol=1e-9):
                raise InputError(f"{path}: the spline PSF has {key} = {grid[key]:g}, the run has {want:g}")
    return psf
