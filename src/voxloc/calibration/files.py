"""The calibration's files: affine.yaml (the registrations T_1..T_4 of the cameras onto
camera 1, Aritake et al. 2020 Sect. 4.1) and psf.yaml (the PSF of Table 2 and the plane
positions z_k), written by the rules calibrate_affine and fit_psf and read by localization,
simulation and evaluation.

This module is the only code that knows the two files' layout: :func:`save_affine` and
:func:`save_psf` write them (byte for byte as given the same numbers), :func:`load_affine`
and :func:`load_psf` read and check them. It imports neither scikit-image, scipy nor the
bead fitter, so reading a calibration is cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from voxloc import provenance
from voxloc.errors import InputError
from voxloc.io import read_yaml, write_yaml
from voxloc.physics.cameras import CONVENTION, N_PLANES
from voxloc.types import FloatArray

if TYPE_CHECKING:
    from voxloc.physics.psf import PSFParams

__all__ = ["Registration", "save_affine", "load_affine", "save_psf", "load_psf", "load_transmission"]

log = logging.getLogger(__name__)


class Registration(Protocol):
    """What affine.yaml records of camera k's registration onto camera 1
    (:class:`voxloc.calibration.registration.CameraRegistration` is one)."""

    matrix: FloatArray  # 3 x 3: camera-k pixel coordinates -> camera 1's
    flip: str
    n_detected: int
    n_matched: int
    n_inliers: int
    residual_rms_nm: float
    max_residual_nm: float


def save_affine(
    path: str | Path,
    registrations: Sequence[Registration],
    *,
    n_detected: int,
    px_size_nm: float,
    frame_size: Sequence[int],
    source: Sequence[str],
    hot_pixels: Sequence[int],
) -> dict:
    """Write affine.yaml: camera 1 (the identity; ``n_detected`` beads) and the
    ``registrations`` of cameras 2-4, the frame size (H, W), the bead stack's files and hot
    pixels per camera. Returns the document written."""
    cameras: dict[str, dict] = {
        "camera1": {"matrix": np.eye(3), "flip": "none", "n_detected": n_detected, "residual_rms_nm": 0.0}
    }
    for k, r in enumerate(registrations, start=2):
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
        **provenance(),
        "kind": "affine registration (Aritake et al. 2020, Sect. 4.1)",
        "convention": CONVENTION,
        "px_size_nm": float(px_size_nm),
        "frame_size": list(frame_size),
        "source": list(source),
        "hot_pixels": list(hot_pixels),
        "cameras": cameras,
    }
    write_yaml(path, doc)
    return doc


def load_affine(path: str | Path) -> list[FloatArray]:
    """The four 3 x 3 matrices T_1..T_4 of an affine.yaml (camera k -> camera 1 pixel coords)."""
    doc = _read_calibration(path)
    try:
        mats = [
            np.array(doc["cameras"][f"camera{k}"]["matrix"], dtype=np.float64) for k in range(1, N_PLANES + 1)
        ]
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{path}: not an affine calibration (needs cameras.camera1..camera4.matrix)"
        ) from None
    for k, m in enumerate(mats, start=1):
        if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m[2], [0, 0, 1]):
            raise InputError(f"{path}: cameras.camera{k}.matrix is not a 3 x 3 affine matrix")
    return mats


def save_psf(
    path: str | Path,
    psf: PSFParams,
    plane_z_nm: Sequence[float],
    *,
    plane_focus_stage_nm: Sequence[float],
    stderr: Mapping[str, float],
    counts: Mapping[str, int],
    n_points: int,
    n_outliers: int,
    residual_rms_nm: float,
    residual_rms_percent: float,
    bead_z_offset_rms_nm: float,
    a_prime_per_camera: Sequence[float],
    background_photons: Sequence[float],
    px_size_nm: float,
    source: Sequence[str],
    affine: str | Path,
) -> dict:
    """Write psf.yaml: the PSF (Table 2 form) and plane positions z_k (nm from plane 1),
    with the fit's diagnostics (``counts`` of beads per reason, ``counts["used"]`` fitted),
    the bead stack's files and the affine.yaml used. Returns the document written."""
    doc = {
        **provenance(),
        "kind": "PSF calibration (Aritake et al. 2020, Eqs. 4-6, Table 2)",
        "psf": {k: float(f"{v:.6g}") for k, v in psf.to_dict().items()},
        "plane_z_nm": [round(z, 2) for z in plane_z_nm],
        "notes": {
            "plane_z_nm": "focal position of each plane relative to plane 1 (z axis origin)",
            "a_prime": "median bead's integrated intensity peak*2*pi*r^2 (photons x nm^2), a summary: "
            "molecules' brightness is simulation.photons",
            "transmission": "share of the photons each camera records: its beads' a' / the sum over cameras",
            "b": "PSF constant of Eq. 4; the background is fitted per slice and reported separately",
        },
        "plane_focus_stage_nm": [round(float(z), 2) for z in plane_focus_stage_nm],
        "stderr": {k: float(f"{v:.3g}") for k, v in stderr.items()},
        "fit": {
            "n_beads": counts["used"],
            "beads": counts,
            "n_points": n_points,
            "n_outliers": n_outliers,
            "residual_rms_nm": round(residual_rms_nm, 3),
            "residual_rms_percent": round(residual_rms_percent, 3),
            "bead_z_offset_rms_nm": round(bead_z_offset_rms_nm, 3),
        },
        "a_prime_per_camera": [float(f"{a:.4g}") for a in a_prime_per_camera],
        "transmission": [round(float(a) / float(sum(a_prime_per_camera)), 5) for a in a_prime_per_camera],
        "background_photons_per_px": [round(b, 3) for b in background_photons],
        "px_size_nm": float(px_size_nm),
        "source": list(source),
        "affine": str(affine),
    }
    log.info("writing %s: %s, planes %s nm", path, doc["psf"], doc["plane_z_nm"])
    write_yaml(path, doc)
    return doc


def load_psf(path: str | Path) -> tuple[PSFParams, tuple[float, ...]]:
    """The fitted PSF (Table 2 form) and plane positions z_k (nm from plane 1) of a psf.yaml."""
    from voxloc.physics.psf import PSFParams  # here: the module imports scipy

    doc = _read_calibration(path)
    try:
        psf = PSFParams.from_dict(doc["psf"])
        planes = tuple(float(z) for z in doc["plane_z_nm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a PSF calibration ({exc})".splitlines()[0]) from None
    if len(planes) != N_PLANES:
        raise InputError(f"{path}: plane_z_nm has {len(planes)} planes, expected {N_PLANES}")
    return psf, planes


def load_transmission(path: str | Path) -> tuple[float, ...]:
    """The cameras' measured shares of a molecule's photons (sum 1) of a psf.yaml."""
    doc = _read_calibration(path)
    try:
        t = tuple(float(v) for v in doc["transmission"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: no transmission ratios ({exc}): rerun the PSF calibration".splitlines()[0]
        ) from None
    if len(t) != N_PLANES or min(t) <= 0:
        raise InputError(f"{path}: transmission must be {N_PLANES} positive shares, got {list(t)}")
    total = sum(t)
    return tuple(v / total for v in t)


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
