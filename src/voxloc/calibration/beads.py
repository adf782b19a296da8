"""Bead z-stacks: reading, ADU -> photons, hot pixels, detection and the spot fits per slice.

The measurement half of the bead calibration (:mod:`voxloc.calibration.registration` does
the registration, :mod:`voxloc.calibration.psf_fit` the defocus-curve fit; the per-slice
spot fits themselves are :mod:`voxloc.calibration.spots`). A bead stack is (Z, 4, H, W): at
slice n the stage has moved the beads to depth z_n = z_start + n z_step, so camera k sees a
spot of width r(z_k - z_n) (Aritake et al. 2020, Eqs. 4-5). Every detected bead is fitted
in every slice with the single-plane form of Eq. 4 (:func:`voxloc.physics.psf.gaussian_spot`)
plus a tilted-plane background (the background of real bead slides slopes). Coordinates
are continuous pixel coordinates (x, y) = (column, row) with pixel (i, j) centred at
(j + 0.5, i + 0.5), as in :mod:`voxloc.physics.cameras`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max

from voxloc.calibration.options import BeadOptions, CalibrationOptions
from voxloc.calibration.spots import CameraBeads, measure_camera
from voxloc.errors import InputError
from voxloc.io import open_tiff
from voxloc.physics.cameras import N_PLANES
from voxloc.physics.noise import adu_to_photons
from voxloc.types import BoolArray, FloatArray

__all__ = [
    "BeadStack",
    "measure_stack",
    "single_beads",
    "read_bead_stack",
    "stack_source",
    "find_hot_pixels",
    "repair_hot_pixels",
    "detect_beads",
    "saturation_advice",
]

log = logging.getLogger(__name__)

HOT_PIXEL_MIN_PHOTONS = 30.0

#: a single bead vs. an overlapping pair (bead selection of the calibration)
ELONGATION_MAX = 1.2  # axis ratio of a single bead's sharpest spot (a close pair is ~1.5-2)
WIDTH_OUTLIER = 1.15  # a bead's sharpest width above this x the median: overlapping
MIN_SEPARATION_PX = 4.0

#: a camera with at least this fraction of its stack's pixels saturated is called saturated
#: when too few beads are detected (saturated bead cores alone cover far less: they do not
#: hinder detection; clipped plateaus over much of the field do)
SATURATED_AREA = 0.01


# ---------------------------------------------------------------------------- reading


def stack_source(paths: Sequence[str | Path]) -> str:
    """The bead stack's files as one label for messages."""
    return ", ".join(str(p) for p in paths)


def _read_tiff(path: Path) -> np.ndarray:
    with open_tiff(path) as tif:
        try:
            data = tif.asarray()
        except Exception as exc:  # truncated or corrupt pages
            raise InputError(f"{path}: cannot read the TIFF's pixels ({exc})".splitlines()[0]) from None
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise InputError(f"{path}: expected grey-level pixels, got dtype {data.dtype}")
    return data


def read_bead_stack(paths: str | Path | Sequence[str | Path], *, n_slices: int | None = None) -> np.ndarray:
    """Bead z-stack (Z, 4, H, W) in ADU from one Z x 4 x H x W TIFF or four Z x H x W TIFFs.

    Raises :class:`InputError` (one line naming the file) for a missing or non-TIFF file, a
    wrong shape, cameras of different shapes, or a slice count other than ``n_slices``.
    """
    paths = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if len(paths) == 1:
        stack = _read_tiff(paths[0])
        if stack.ndim != 4 or stack.shape[1] != N_PLANES:
            raise InputError(
                f"{paths[0]}: expected a Z x {N_PLANES} x H x W bead stack, got shape {stack.shape}"
            )
    elif len(paths) == N_PLANES:
        cams = []
        for p in paths:
            data = _read_tiff(p)
            if data.ndim != 3:
                raise InputError(
                    f"{p}: expected a Z x H x W bead stack of one camera, got shape {data.shape}"
                )
            if cams and data.shape != cams[0].shape:
                raise InputError(f"{p}: shape {data.shape} differs from {paths[0]}'s {cams[0].shape}")
            cams.append(data)
        stack = np.stack(cams, axis=1)
    else:
        raise InputError(f"{stack_source(paths)}: give one Z x 4 x H x W TIFF or {N_PLANES} camera TIFFs")
    if n_slices is not None and stack.shape[0] != n_slices:
        raise InputError(
            f"{paths[0]}: {stack.shape[0]} z slices, config calibration.beads.n_slices says {n_slices}"
        )
    if stack.shape[0] < 3 or min(stack.shape[2:]) < 16:
        raise InputError(f"{paths[0]}: bead stack {stack.shape} is too small (need >= 3 slices of >= 16 px)")
    if np.issubdtype(stack.dtype, np.floating) and not np.all(np.isfinite(stack)):
        raise InputError(f"{paths[0]}: bead stack holds NaN or infinite values")
    return stack


# ---------------------------------------------------------------------------- hot pixels


def find_hot_pixels(photons: FloatArray, *, n_sigma: float = 10.0) -> BoolArray:
    """Hot pixels (H, W) of one camera's stack (Z, H, W): single-pixel spikes constant in z.

    A pixel is hot where, in every slice, it exceeds the median of its 5 x 5 neighbourhood
    by more than ``n_sigma`` robust noise sigmas (and 30 photons) while its four neighbours
    rise less than 1/5 as much: no PSF is that sharp (a Gaussian of width >= 0.6 px lifts
    its neighbours by >= 1/4 of its peak), and no bead is in focus in every slice.
    """
    bg = ndimage.median_filter(photons, size=(1, 5, 5), mode="mirror")
    excess = photons - bg
    cross = np.array([[[0, 1, 0], [1, 0, 1], [0, 1, 0]]], dtype=np.float32) / 4
    rise = ndimage.convolve(photons, cross, mode="mirror") - bg
    mad = float(np.median(np.abs(excess - np.median(excess))))
    spike = (excess > max(n_sigma * 1.4826 * mad, HOT_PIXEL_MIN_PHOTONS)) & (rise < 0.2 * excess)
    return spike.all(axis=0)


def repair_hot_pixels(photons: FloatArray, hot: BoolArray) -> FloatArray:
    """Replace hot pixels in every slice by the median of their 3 x 3 neighbourhood (copy)."""
    out = np.array(photons, dtype=np.float32)
    if hot.any():
        med = ndimage.median_filter(out, size=(1, 3, 3), mode="nearest")
        out[:, hot] = med[:, hot]
    return out


# ---------------------------------------------------------------------------- detection


def detect_beads(photons: FloatArray, *, snr: float, min_distance_px: int = 2) -> FloatArray:
    """Bead positions (n, 2) (x, y) px in one camera's stack (Z, H, W), hot pixels repaired.

    Each slice is band-passed (difference of Gaussians, 1 and 4 px: removes sloped
    backgrounds); local maxima of the maximum over z above median + ``snr`` robust sigmas are
    beads, refined to the centroid of their 3 x 3 neighbourhood.
    """
    dog = ndimage.gaussian_filter(photons, (0, 1, 1)) - ndimage.gaussian_filter(photons, (0, 4, 4))
    proj = dog.max(axis=0)
    med = float(np.median(proj))
    sigma = 1.4826 * float(np.median(np.abs(proj - med))) + 1e-9
    peaks = peak_local_max(
        proj, min_distance=min_distance_px, threshold_abs=med + snr * sigma, exclude_border=2
    )
    out = np.empty((len(peaks), 2))
    for n, (i, j) in enumerate(peaks):
        w = np.clip(proj[i - 1 : i + 2, j - 1 : j + 2] - med, 0, None)
        di, dj = np.mgrid[-1:2, -1:2]
        total = w.sum() + 1e-12
        out[n] = (j + 0.5 + (w * dj).sum() / total, i + 0.5 + (w * di).sum() / total)
    return out


# ---------------------------------------------------------------------------- saturation


def saturation_advice(saturation_adu: float) -> str:
    """What to check when saturation is the problem (the end of a message)."""
    return (
        "lower the laser power or exposure time, or check calibration.beads.saturation_adu "
        f"(now {saturation_adu:.10g} ADU: pixels at or above it count as saturated)"
    )


def _check_saturation(where: str, k: int, cam: CameraBeads, min_beads: int, saturation_adu: float) -> None:
    """InputError when saturation leaves camera k fewer than ``min_beads`` beads with a good slice.

    A bead is lost to saturation when it has a saturated slice and no good one. Raised only
    if the lost beads account for the shortfall; other shortfalls are left to the later steps.
    """
    n = len(cam)
    usable = cam.good.any(axis=1)
    lost = cam.saturated.any(axis=1) & ~usable
    n_usable, n_lost = int(usable.sum()), int(lost.sum())
    if n_usable >= min_beads or n_lost == 0 or n_usable + n_lost < min_beads:
        return
    which = f"all {n} beads" if n_lost == n else f"{n_lost} of the {n} beads"
    raise InputError(
        f"{where}: {which} detected in camera {k + 1} are saturated in every slice where they could "
        f"be measured ({n_usable} usable, need >= {min_beads}); {saturation_advice(saturation_adu)}"
    )


# ---------------------------------------------------------------------------- spot fits


@dataclass
class BeadStack:
    """A measured bead stack: per-camera spot fits, slice depths, frame size and sources."""

    cameras: list[CameraBeads]
    z_nm: FloatArray  # (Z,) bead depth at each slice: z_start + n z_step
    shape: tuple[int, int]  # H, W
    paths: list[str]
    n_hot: list[int]
    saturation_adu: float = 65535.0  # config calibration.beads.saturation_adu (for messages)

    @property
    def source(self) -> str:
        return stack_source(self.paths)

    def path(self, k: int) -> str:
        """The file holding camera k (0-based)."""
        return self.paths[k] if len(self.paths) == N_PLANES else self.paths[0]


def measure_stack(
    paths: str | Path | Sequence[str | Path], beads: BeadOptions, opts: CalibrationOptions
) -> BeadStack:
    """Read a bead stack (config ``calibration.beads``), convert ADU to photons, repair hot
    pixels, detect the beads in each camera and fit them in every slice."""
    paths = [str(paths)] if isinstance(paths, str | Path) else [str(p) for p in paths]
    n_slices = beads.n_slices
    raw = read_bead_stack(paths, n_slices=None if n_slices is None else int(n_slices))
    saturation = float(beads.saturation_adu)
    z_nm = float(beads.z_start_nm) + float(beads.z_step_nm) * np.arange(raw.shape[0])
    cams, n_hot = [], []
    for k in range(N_PLANES):
        where = paths[k] if len(paths) == N_PLANES else f"{paths[0]} (camera {k + 1})"
        photons = adu_to_photons(raw[:, k], beads.offset_adu, float(beads.adu_per_photon))
        hot = find_hot_pixels(photons)
        photons = repair_hot_pixels(photons, hot)
        xy = detect_beads(photons, snr=float(opts.detect_snr))
        log.info("camera %d: %d hot pixel(s), %d bead(s) detected", k + 1, int(hot.sum()), len(xy))
        sat = (raw[:, k] >= saturation) & ~hot
        if len(xy) < int(opts.min_beads):
            msg = f"{where}: {len(xy)} bead(s) detected, need >= {opts.min_beads}"
            fraction = float(sat.mean())
            if fraction >= SATURATED_AREA:
                raise InputError(
                    f"{msg}, and {100 * fraction:.0f} % of the camera's pixels are saturated; "
                    f"{saturation_advice(saturation)}"
                )
            raise InputError(f"{msg} (config calibration.min_beads, calibration.detect_snr)")
        cam = measure_camera(photons, sat, xy, min_snr=float(opts.min_snr))
        _check_saturation(where, k, cam, int(opts.min_beads), saturation)
        cams.append(cam)
        n_hot.append(int(hot.sum()))
    return BeadStack(cams, z_nm, (raw.shape[2], raw.shape[3]), paths, n_hot, saturation)


def single_beads(cam: CameraBeads) -> BoolArray:
    """Beads usable for registration: not elongated (no overlapping neighbour), some good slice."""
    return (cam.elongation <= ELONGATION_MAX) & (cam.nn_px >= MIN_SEPARATION_PX) & cam.good.any(axis=1)
