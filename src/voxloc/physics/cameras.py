"""The four cameras of the quad-plane microscope and their registration (Aritake et al. 2020, Sect. 4.1).

Coordinates are continuous pixel coordinates (x, y) = (column, row) in which pixel (i, j)
has its centre at (j + 0.5, i + 0.5), i.e. positions in nm divided by the pixel size.
A registration is a 3 x 3 homogeneous matrix T_k that maps camera-k coordinates onto
camera-1 coordinates: (x1, y1, 1)^T = T_k (xk, yk, 1)^T; T_1 is the identity
(:data:`CONVENTION`). This module is the one home of the number of planes, the mirror flips
and the matrices; the calibration fits them, the simulator and the resampler apply them.
"""

from __future__ import annotations

import math

import numpy as np

from voxloc.types import FloatArray

__all__ = ["N_PLANES", "PLANE_COLUMNS", "FLIPS", "CONVENTION", "affine_matrix", "apply_affine", "flip_matrix"]

#: focal planes per frame = cameras of the microscope (Fig. 1)
N_PLANES = 4
#: sample-sheet columns naming one TIFF per camera
PLANE_COLUMNS = tuple(f"plane{k + 1}" for k in range(N_PLANES))
#: mirror flips a camera can have relative to camera 1
FLIPS = ("none", "x", "y", "xy")
CONVENTION = "T_k maps camera-k pixel coords (x = col + 0.5, y = row + 0.5) onto camera 1; T_1 = identity"


def affine_matrix(
    *,
    height: int,
    width: int,
    flip: str = "none",
    rotation_deg: float = 0.0,
    scale: float = 1.0,
    shift_px: tuple[float, float] = (0.0, 0.0),
) -> FloatArray:
    """Camera-k -> camera-1 matrix: mirror (about the frame centre), then rotation and scale
    about the frame centre, then a shift (dx, dy) in pixels.

    ``flip`` is ``"none"``, ``"x"`` (columns reversed, as a camera behind one more mirror
    sees it) or ``"y"`` (rows reversed).
    """
    cx, cy = width / 2.0, height / 2.0
    to_centre = np.array([[1.0, 0, -cx], [0, 1.0, -cy], [0, 0, 1.0]])
    back = np.array([[1.0, 0, cx], [0, 1.0, cy], [0, 0, 1.0]])
    if flip not in ("none", "x", "y"):
        raise ValueError(f"flip must be 'none', 'x' or 'y', got {flip!r}")
    mirror = np.diag([-1.0 if flip == "x" else 1.0, -1.0 if flip == "y" else 1.0, 1.0])
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    rot = np.array([[scale * c, -scale * s, 0], [scale * s, scale * c, 0], [0, 0, 1.0]])
    shift = np.array([[1.0, 0, shift_px[0]], [0, 1.0, shift_px[1]], [0, 0, 1.0]])
    return shift @ back @ rot @ mirror @ to_centre


def apply_affine(matrix: FloatArray, xy: FloatArray) -> FloatArray:
    """Map points (..., 2) through a 3 x 3 affine matrix."""
    xy = np.asarray(xy, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return xy @ m[:2, :2].T + m[:2, 2]


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
