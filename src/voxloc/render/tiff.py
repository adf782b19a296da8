"""The render as a 16-bit ImageJ hyperstack (axes ZYX, voxel size in µm).

Counts are stored as they are when they fit in 16 bits, else scaled, with the factor
recorded as ``counts_per_level`` in the ImageJ metadata so that a user can read counts back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from voxloc.io import atomic_output
from voxloc.types import FloatArray, IntArray

log = logging.getLogger(__name__)

UINT16_MAX = 65535


def to_uint16(volume: FloatArray | IntArray) -> tuple[np.ndarray, float]:
    """Volume -> (uint16 volume, counts per grey level).

    Whole counts that fit are stored as they are (1 count per level); otherwise (larger
    counts or fractional ones after blurring) the maximum is mapped to 65535 and the value
    of one grey level, max / 65535, is returned, for the TIFF description.
    """
    volume = np.asarray(volume)
    vmax = float(volume.max()) if volume.size else 0.0
    if volume.size and float(volume.min()) < 0:
        raise ValueError("volume must be non-negative")
    integral = np.issubdtype(volume.dtype, np.integer) or all(np.array_equal(s, np.rint(s)) for s in volume)
    if integral and vmax <= UINT16_MAX:
        return volume.astype(np.uint16), 1.0
    scale = UINT16_MAX / vmax
    out = np.empty(volume.shape, dtype=np.uint16)
    for k, plane in enumerate(volume):  # slice by slice: no full-size float temporary
        out[k] = np.minimum(np.rint(plane * scale), UINT16_MAX)
    return out, 1.0 / scale


def write_render_tiff(
    path: str | Path,
    volume: FloatArray | IntArray,
    px_nm: float,
    z_bin_nm: float,
    *,
    z_min_nm: float = 0.0,
    info: Mapping[str, object] | None = None,
) -> float:
    """Write a (Z, Y, X) volume atomically as a 16-bit ImageJ hyperstack; return counts per level.

    Voxel size in µm (X/Y resolution in px per µm, ``spacing`` = z bin, ``unit=um``);
    ``zorigin`` places z = 0 (plane 1's focus). The grey-level calibration goes into the
    description both as ImageJ's (``cf=0``, ``c1`` = counts per level, ``vunit``) and as
    ``counts_per_level``; ``info`` adds more ``key=value`` lines.
    """
    import tifffile

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be (Z, Y, X), got shape {volume.shape}")
    data, per_level = to_uint16(volume)
    px_um, z_um = px_nm / 1000.0, z_bin_nm / 1000.0
    metadata: dict[str, object] = {
        "axes": "ZYX",
        "spacing": z_um,
        "unit": "um",
        "zorigin": -z_min_nm / z_bin_nm,
        "cf": 0,  # ImageJ calibration: straight line, value = c0 + c1 * level
        "c0": 0.0,
        "c1": per_level,
        "vunit": "localizations",
        "counts_per_level": per_level,
        "px_nm": px_nm,
        "z_bin_nm": z_bin_nm,
        "z_min_nm": z_min_nm,
        **(info or {}),
    }
    with atomic_output(path) as tmp:
        tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / px_um, 1.0 / px_um), metadata=metadata)
    log.info("%s: %s uint16, %g localizations per grey level", path, data.shape, per_level)
    return per_level
