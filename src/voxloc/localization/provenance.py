"""What a localization chunk records and checks about where it came from: the Parquet
key-value metadata of its table, and warnings when the model was trained for another PSF
or other planes than the current calibration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voxloc.locs import file_sha256

if TYPE_CHECKING:
    from voxloc.localization.movies import Movie
    from voxloc.network.model import TrainedModel

__all__ = ["check_model_psf", "locs_metadata"]


def check_model_psf(
    meta: Mapping[str, Any],
    psf: Mapping[str, float],
    plane_z_nm: Sequence[float],
    *,
    source: str,
    spline_sha256: str | None = None,
) -> list[str]:
    """Warnings when a model was trained for another PSF or other planes than the current
    calibration (Gaussian: r0, D off by > 5 %; spline: another psf_spline.h5, by SHA-256,
    ``spline_sha256`` that of the current one; a plane off by > 50 nm)."""
    warnings = []
    trained = meta.get("psf") or {}
    if trained.get("model") == "spline" and spline_sha256 is not None:
        if trained.get("sha256") and trained["sha256"] != spline_sha256:
            warnings.append(
                f"{source}: model trained for the spline PSF of another calibration "
                f"({trained.get('file')}, SHA-256 {trained['sha256'][:12]}, now {spline_sha256[:12]})"
            )
    for key in ("r0_nm", "D_nm"):
        if key in trained and key in psf and abs(trained[key] - psf[key]) > 0.05 * abs(psf[key]):
            warnings.append(
                f"{source}: model trained for {key} = {trained[key]:.1f}, calibration says {psf[key]:.1f}"
            )
    planes = (meta.get("grid") or {}).get("plane_z_nm")
    if planes is not None and len(planes) == len(plane_z_nm):
        off = max(abs(a - b) for a, b in zip(planes, plane_z_nm, strict=True))
        if off > 50:
            warnings.append(
                f"{source}: model planes {planes} differ from calibrated {list(plane_z_nm)} by {off:.0f} nm"
            )
    return warnings


def locs_metadata(model: TrainedModel, model_path: str | Path, movie: Movie, *, tau: float) -> dict[str, Any]:
    """The key-value metadata of a localization file."""
    height, width = movie.camera_shapes[0]
    grid = model.grid(height, width)
    edges = grid.z_edges_nm
    return {
        "px_size_nm": grid.px_size_nm,
        "plane_z_nm": list(grid.plane_z_nm),
        "z_range_nm": [float(edges[0]), float(edges[-1])],
        "tau": tau,
        "precision": model.precision,
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "sources": movie.sources,
        "n_frames": movie.n_frames,
        "width_px": width,
        "height_px": height,
        "coordinates": "camera 1; pixel (i, j) centre at ((j + 0.5) s, (i + 0.5) s)",
    }
