"""TODO docstring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxloc.errors import InputError
from voxloc.io import atomic_output, read_yaml
from voxloc.physics.cameras import N_PLANES
from voxloc.physics.psf import PSFParams
from voxloc.types import FloatArray


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


def load_psf(path: str | Path) -> tuple[PSFParams, tuple[float, ...]]:
    """The fitted PSF (Table 2 form) and plane positions z_k (nm from plane 1) of a psf.yaml."""
    doc = _read_calibration(path)
    try:
        psf = PSFParams.from_dict(doc["psf"])
        planes = tuple(float(z) for z in doc["plane_z_nm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a PSF calibration ({exc})".splitlines()[0]) from None
    if len(planes) != N_PLANES:
        raise InputError(f"{path}: plane_z_nm has {len(planes)} planes, expected {N_PLANES}")
    return psf, planes


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
