"""A measured cubic-spline PSF from bead z-stacks (issue 15; Li et al., Nat. Methods 15,
367, 2018: average of aligned beads, then spline coefficients).

Per plane: a window of ±(half_px + 1) px is cut around each usable bead (inside the frame,
no other bead within the window's reach, no saturated pixel), the background of each slice
(the median of the window border) is subtracted, the window is shifted by the bead's measured
sub-pixel position (Fourier shift of a larger window, so that the bead sits at the centre of
the central pixel), and the beads are averaged onto the z grid of the spline by Gaussian
kernel regression along z (σ = ``smooth_z_nm``: the light smoothing along z, which also
resamples beads whose heights differ, ``bead_z_offset_nm``). The z axis is the sample frame
of :mod:`voxloc.physics.psf`: a bead at stage depth z_s (+ its height offset) is a molecule
at z = z_s + offset - focus_1, so that plane k is in focus at focus_k - focus_1. The averages
are normalised per z (:class:`voxloc.physics.spline.SplinePSF`); the transmission ratios are
the planes' mean integrated bead intensities, normalised to sum 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxloc.errors import InputError
from voxloc.physics.spline import SplinePSF
from voxloc.types import BoolArray, FloatArray

__all__ = ["SplineReport", "build_spline_psf"]

FFT_MARGIN_PX = 4  # extra pixels per side for the Fourier shift


@dataclass(frozen=True)
class SplineReport:
    """What the spline calibration used: beads per plane, transmission, z range (nm)."""

    n_beads: tuple[int, ...]
    transmission: tuple[float, ...]
    z_range_nm: tuple[float, float]
    min_beads_per_z: int


def _fourier_shift(win: FloatArray, dx: FloatArray, dy: FloatArray) -> FloatArray:
    """out(x) = win(x + d): windows (n, Z, S, S) shifted by (dx, dy) (n,) px."""
    side = win.shape[-1]
    k = np.fft.fftfreq(side)
    phase = np.exp(2j * np.pi * (k[None, :, None] * dy[:, None, None] + k[None, None, :] * dx[:, None, None]))
    return np.fft.ifft2(np.fft.fft2(win) * phase[:, None]).real


def _usable(xy: FloatArray, shape: tuple[int, int], reach: int, sat: BoolArray | None) -> BoolArray:
    """Beads whose window lies in the frame, with no other bead within 2 reach, unsaturated."""
    height, width = shape
    cx = np.ceil(xy[:, 0] - 0.5).astype(int)
    cy = np.ceil(xy[:, 1] - 0.5).astype(int)
    ok = (cx - reach >= 0) & (cx + reach < width) & (cy - reach >= 0) & (cy + reach < height)
    ok &= np.isfinite(xy).all(axis=1)
    d = np.abs(xy[:, None, :] - xy[None, :, :]).max(axis=-1)
    np.fill_diagonal(d, np.inf)
    ok &= ~(d < 2 * reach + 1).any(axis=1)
    if sat is not None:
        for b in np.flatnonzero(ok):
            ok[b] = not sat[:, cy[b] - reach : cy[b] + reach + 1, cx[b] - reach : cx[b] + reach + 1].any()
    return ok


def _plane_average(
    stack: FloatArray,
    xy: FloatArray,
    z_bead: FloatArray,
    z_nodes: FloatArray,
    half_px: int,
    smooth_z_nm: float,
    sat: BoolArray | None,
    background: float | None,
) -> tuple[FloatArray, int, FloatArray, FloatArray]:
    """Aligned, background-free mean window (Nz, L, L) on the z grid; beads used; beads
    covering each node (Nz,); the mean integrated intensity per bead (photons)."""
    r = half_px + 1
    reach = r + FFT_MARGIN_PX
    use = _usable(xy, stack.shape[1:], reach, sat)
    idx = np.flatnonzero(use)
    if len(idx) == 0:
        return np.zeros((len(z_nodes), 2 * r + 1, 2 * r + 1)), 0, np.zeros(len(z_nodes)), np.zeros(0)
    cx = np.ceil(xy[idx, 0] - 0.5).astype(int)
    cy = np.ceil(xy[idx, 1] - 0.5).astype(int)
    ar = np.arange(-reach, reach + 1)
    rows = (cy[:, None] + ar)[:, None, :, None]
    cols = (cx[:, None] + ar)[:, None, None, :]
    win = stack[np.arange(stack.shape[0])[None, :, None, None], rows, cols].astype(np.float64)  # (n, Z, S, S)
    border = np.concatenate([win[..., 0, :], win[..., -1, :], win[..., 1:-1, 0], win[..., 1:-1, -1]], axis=-1)
    win -= np.median(border, axis=-1)[..., None, None] if background is None else background
    # bead at (cx + 0.5 - f): shift so that it sits at the centre of pixel cx
    win = _fourier_shift(win, xy[idx, 0] - (cx + 0.5), xy[idx, 1] - (cy + 0.5))
    win = win[..., FFT_MARGIN_PX:-FFT_MARGIN_PX, FFT_MARGIN_PX:-FFT_MARGIN_PX]
    zb = z_bead[idx]  # (n, Z)
    kern = np.exp(-0.5 * ((z_nodes[:, None, None] - zb[None]) / smooth_z_nm) ** 2)  # (Nz, n, Z)
    lo, hi = zb.min(axis=1), zb.max(axis=1)
    covers = (z_nodes[:, None] >= lo) & (z_nodes[:, None] <= hi)  # (Nz, n)
    kern *= covers[:, :, None]
    # per bead a kernel mean, then the mean over the beads covering the node
    kb = kern.sum(axis=2, keepdims=True)
    per_bead = np.einsum("qnz,nzij->qnij", kern / np.where(kb > 0, kb, 1.0), win)
    count = covers.sum(axis=1)
    mean = per_bead.sum(axis=1) / np.maximum(count, 1)[:, None, None]
    return mean, len(idx), count, win.sum(axis=(2, 3)).mean(axis=1)


def build_spline_psf(
    stacks: Sequence[FloatArray],
    bead_xy_px: Sequence[FloatArray],
    slice_z_nm: FloatArray,
    focus_stage_nm: FloatArray,
    *,
    z_range_nm: tuple[float, float],
    source: str,
    z_step_nm: float = 20.0,
    half_px: int = 8,
    smooth_z_nm: float | None = None,
    bead_z_offset_nm: Sequence[FloatArray] | None = None,
    saturated_px: Sequence[BoolArray] | None = None,
    min_beads: int = 3,
    px_size_nm: float = 192.0,
    background_photons: Sequence[float] | None = None,
) -> tuple[SplinePSF, SplineReport]:
    """The spline PSF of bead stacks (module doc).

    ``stacks`` per plane (Z, H, W) in photons; ``bead_xy_px`` per plane (n_k, 2) bead
    positions (px, pixel j centred at j + 0.5, e.g. the spot fits' mean positions);
    ``slice_z_nm`` (Z,) stage depths; ``focus_stage_nm`` (P,) the stage depth at which each
    plane is in focus; ``z_range_nm`` the molecule depths to calibrate (sample frame);
    ``bead_z_offset_nm`` per plane (n_k,) bead heights; ``saturated_px`` per plane (Z, H, W);
    ``background_photons`` per plane, a known background instead of the window-border median
    (which takes the tails of a PSF wider than the window for background).
    Raises InputError naming ``source`` with too few usable beads at some z or a bead z
    range that does not cover ``z_range_nm``.
    """
    n_planes = len(stacks)
    slice_z = np.asarray(slice_z_nm, dtype=np.float64)
    focus = np.asarray(focus_stage_nm, dtype=np.float64)
    if len(bead_xy_px) != n_planes or focus.shape != (n_planes,):
        raise InputError(f"{source}: bead positions or focus depths for {len(bead_xy_px)} / {focus.size} planes, "
                         f"stacks for {n_planes}")  # fmt: skip
    z_lo, z_hi = float(z_range_nm[0]), float(z_range_nm[1])
    n_z = int(round((z_hi - z_lo) / z_step_nm)) + 1
    if n_z < 4:
        raise InputError(
            f"{source}: the z range {z_lo:g}..{z_hi:g} nm spans fewer than 4 z steps of {z_step_nm:g} nm"
        )
    z_nodes = z_lo + z_step_nm * np.arange(n_z)
    step = float(np.median(np.abs(np.diff(slice_z)))) if len(slice_z) > 1 else z_step_nm
    sigma = smooth_z_nm if smooth_z_nm is not None else max(step, 0.5 * z_step_nm)
    means, counts, intensity, used = [], [], [], []
    for k in range(n_planes):
        xy = np.asarray(bead_xy_px[k], dtype=np.float64).reshape(-1, 2)
        offset = np.zeros(len(xy)) if bead_z_offset_nm is None else np.asarray(bead_z_offset_nm[k], float)
        z_bead = slice_z[None, :] + offset[:, None] - focus[0]
        sat = None if saturated_px is None else np.asarray(saturated_px[k], bool)
        mean, n_used, count, flux = _plane_average(
            np.asarray(stacks[k]),
            xy,
            z_bead,
            z_nodes,
            half_px,
            sigma,
            sat,
            None if background_photons is None else float(background_photons[k]),
        )
        if n_used < min_beads:
            raise InputError(f"{source}: plane {k + 1} has {n_used} usable beads (isolated, unsaturated, "
                             f"inside the frame); the spline PSF needs {min_beads}")  # fmt: skip
        if count.max() == 0 or count[0] == 0 or count[-1] == 0:
            zb = slice_z - focus[0]
            raise InputError(f"{source}: the bead stack covers z {zb.min():g}..{zb.max():g} nm (sample frame), "
                             f"the spline PSF needs {z_lo:g}..{z_hi:g} nm")  # fmt: skip
        if count.min() < min_beads:
            q = int(np.argmin(count))
            raise InputError(f"{source}: plane {k + 1} has {int(count[q])} usable beads at z = {z_nodes[q]:g} nm; "
                             f"the spline PSF needs {min_beads}")  # fmt: skip
        means.append(mean)
        counts.append(count)
        intensity.append(float(np.median(flux)))
        used.append(n_used)
    samples = np.stack(means)
    if np.any(samples.sum(axis=(2, 3)) <= 0):
        raise InputError(f"{source}: a bead average has no signal above the background at some z")
    trans = np.asarray(intensity) / np.sum(intensity)
    psf = SplinePSF.from_samples(samples, z0_nm=z_lo, z_step_nm=z_step_nm, px_size_nm=px_size_nm,
                                 transmission=trans, plane_z_nm=tuple(focus - focus[0]),
                                 n_beads=int(min(used)))  # fmt: skip
    report = SplineReport(tuple(used), tuple(float(t) for t in trans), psf.z_range_nm,
                          int(min(c.min() for c in counts)))  # fmt: skip
    return psf, report
