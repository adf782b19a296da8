"""Save and load a cubic-spline PSF (:class:`voxloc.physics.spline.SplinePSF`) as HDF5.

Layout: dataset ``coeffs`` (P, Nz + 2, L + 2, L + 2) float64, dataset ``transmission``
(P,), attributes ``z0_nm``, ``z_step_nm``, ``px_size_nm``, ``plane_z_nm``, ``n_beads``,
``normalisation``, ``lateral_step_px``, ``format`` and ``voxloc_version``, plus, for readers
of the file (not read back into the PSF): ``voxloc_source``, ``n_beads_per_plane``,
``z_min_nm``, ``z_max_nm``, ``n_z``, ``grid_px``, ``half_px``; the caller's metadata under
``meta/`` (JSON strings). Written atomically (:func:`voxloc.io.atomic_output`).

:func:`load_spline_psf` checks that a file belongs to the run (planes, grid, plane positions,
z range) and :func:`check_z_coverage` that a spline covers the depths a run needs: InputError,
one line naming the file and the problem.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import voxloc
from voxloc.errors import InputError
from voxloc.io import atomic_output
from voxloc.physics.spline import SplinePSF

__all__ = [
    "FORMAT",
    "save_spline_psf",
    "load_spline_psf",
    "spline_meta",
    "spline_attributes",
    "check_z_coverage",
    "load_spline_reference",
]

FORMAT = "voxloc-spline-psf-1"


def save_spline_psf(
    path: str | Path, psf: SplinePSF, *, n_beads_per_plane: Sequence[int] | None = None, **meta: Any
) -> None:
    """Write ``psf`` to ``path`` (HDF5, atomically); ``n_beads_per_plane`` the beads averaged
    per plane (default: ``psf.n_beads`` each); ``meta`` values must be JSON-serialisable."""
    n_beads = (
        [psf.n_beads] * psf.n_planes if n_beads_per_plane is None else [int(n) for n in n_beads_per_plane]
    )
    if len(n_beads) != psf.n_planes:
        raise ValueError(f"n_beads_per_plane: {len(n_beads)} values for {psf.n_planes} planes")
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("coeffs", data=psf.coeffs, compression="gzip", compression_opts=4)
        f.create_dataset("transmission", data=psf.transmission)
        f.attrs.update({
            "format": FORMAT,
            **voxloc.provenance(),
            "z0_nm": psf.z0_nm,
            "z_step_nm": psf.z_step_nm,
            "px_size_nm": psf.px_size_nm,
            "plane_z_nm": np.asarray(psf.plane_z_nm, dtype=np.float64),
            "n_beads": psf.n_beads,
            "normalisation": psf.normalisation,
            "lateral_step_px": psf.lateral_step_px,
            "n_beads_per_plane": np.asarray(n_beads, dtype=np.int64),
            "z_min_nm": psf.z_range_nm[0],
            "z_max_nm": psf.z_range_nm[1],
            "n_z": psf.n_z,
            "grid_px": psf.grid_px,
            "half_px": psf.half_px,
        })  # fmt: skip
        g = f.create_group("meta")
        for key, value in meta.items():
            g.attrs[key] = json.dumps(value)


def spline_meta(path: str | Path) -> dict[str, Any]:
    """The caller's metadata of a spline file (as passed to :func:`save_spline_psf`)."""
    with h5py.File(path, "r") as f:
        return {k: json.loads(v) for k, v in f["meta"].attrs.items()}


def spline_attributes(path: str | Path) -> dict[str, Any]:
    """The top-level attributes of a spline file (module doc), arrays as lists."""
    with h5py.File(path, "r") as f:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in f.attrs.items()}


def check_z_coverage(spline: SplinePSF, z_range_nm: Sequence[float], path: str | Path | None) -> None:
    """InputError (naming ``path``) unless the spline's z range covers ``z_range_nm`` (lo, hi)
    (nm, sample frame: the depths a run simulates or fits)."""
    lo, hi = spline.z_range_nm
    need = (float(z_range_nm[0]), float(z_range_nm[1]))
    if need[0] < lo - 1e-6 or need[1] > hi + 1e-6:
        raise InputError(
            f"{path or 'the spline PSF'}: the spline PSF covers z {lo:g}..{hi:g} nm, the run needs "
            f"{need[0]:g}..{need[1]:g} nm (sample frame): calibrate it over that range "
            "(config calibration.spline.z_range_nm, bead stacks that reach it)"
        )


def load_spline_psf(
    path: str | Path,
    *,
    expect_planes: int | None = None,
    expect_grid: Mapping[str, float] | None = None,
    expect_plane_z_nm: Sequence[float] | None = None,
    plane_z_tol_nm: float = 1.0,
    require_z_range_nm: Sequence[float] | None = None,
) -> SplinePSF:
    """Read a spline PSF; InputError (one line naming ``path``) for an unreadable file or one
    from another calibration: its number of planes, grid (keys of :meth:`SplinePSF.grid`, e.g.
    ``px_size_nm``) or plane positions (beyond ``plane_z_tol_nm``) disagree with the run's,
    or its z range misses ``require_z_range_nm`` (:func:`check_z_coverage`)."""
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
    if expect_plane_z_nm is not None:
        want = np.asarray(expect_plane_z_nm, dtype=np.float64)
        have = np.asarray(psf.plane_z_nm, dtype=np.float64)
        if have.shape != want.shape or np.abs(have - want).max() > plane_z_tol_nm:
            raise InputError(
                f"{path}: the spline PSF's planes are at z {_nm(have)} nm, the run's at {_nm(want)} nm "
                f"(more than {plane_z_tol_nm:g} nm apart: a spline from another calibration?)"
            )
    if require_z_range_nm is not None:
        check_z_coverage(psf, require_z_range_nm, path)
    return psf


def _nm(z: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in z) + "]"


def load_spline_reference(ref: Mapping[str, Any]) -> SplinePSF:
    """The spline PSF that metadata refers to (:meth:`voxloc.physics.microscope.Microscope.psf_dict`:
    ``file`` as given, relative to the working directory, else ``abs_file``; ``sha256``);
    InputError (one line naming the file) when it is missing or no longer the file the
    reference was made from."""
    from voxloc.io import file_sha256

    path = str(ref["file"])
    found = next((p for p in (path, ref.get("abs_file")) if p and Path(p).is_file()), None)
    if found is None:
        raise InputError(f"{path}: the spline PSF file referred to is missing")
    sha256 = str(ref.get("sha256", ""))
    if sha256 and file_sha256(found) != sha256:
        raise InputError(
            f"{found}: the spline PSF file changed since it was used (another calibration?): "
            "rerun the steps that used it"
        )
    return load_spline_psf(found)
