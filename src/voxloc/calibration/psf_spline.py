"""A measured cubic-spline PSF from bead z-stacks (issue 15; Li et al., Nat. Methods 15,
367, 2018, and SMAP's fit3Dcspline: beads averaged, then spline coefficients).

Per plane, each usable bead (its window of ±(half_px + 1 + MARGIN_PX) px inside the frame and
never saturated, no other bead within MIN_SEPARATION_PX) is taken through four steps
(:mod:`voxloc.calibration.bead_light` holds the pieces):

1. background: the plane's background map, a plane fitted robustly far from every bead to
   the median of the slices within FOCUS_BAND_NM of the plane's focus, where the beads'
   light is compact; taken as constant along z (bead slides). A defocused PSF's halo reaches
   beyond any window (a vectorial NA 1.49 PSF keeps ~15 % of its peak 13 px out at 1.4 µm),
   so the median of each slice's window border, used before, took it for background: up to
   13 % of the peak too little PSF at 1.4 µm, against 1 % now (the vectorial test).
   ``background_photons`` gives a known background instead;
2. neighbours: every bead of the plane (``other_xy_px`` too: beads not averaged but shining,
   e.g. saturated ones) is its brightness x one cubic B-spline image per slice, fitted to all
   windows at once; the other beads' part is subtracted from each window;
3. z: the windows are resampled onto the spline's z grid by Gaussian kernel regression along
   z (σ = ``smooth_z_nm``), each bead at its own depth (``bead_z_offset_nm``);
4. coefficients: per z node, the spline's lateral B-spline coefficients are the linear least
   squares fit of all the beads covering the node, each seen at its measured sub-pixel
   position (no resampling of undersampled data; Fourier shifts lost ~0.6 % of an in-focus
   bead's light to ringing).

The z axis is the sample frame of :mod:`voxloc.physics.psf`: a bead at stage depth z_s (+ its
height offset) is a molecule at z = z_s + offset - focus_1, so plane k is in focus at
focus_k - focus_1. Normalisation ``"focus"`` (as fit3Dcspline and SMAP, by the in-focus
slice): plane k is scaled so that its window sums to 1 at its own focus, so the light that
leaves the window with defocus is a loss the model keeps. The transmission ratios are the
planes' in-focus window intensities per bead (the median, over the beads usable in every
plane, of each bead's shares), normalised to sum 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.ndimage import spline_filter1d

from voxloc.calibration import bead_light as bl
from voxloc.errors import InputError
from voxloc.physics.spline import SplinePSF
from voxloc.types import BoolArray, FloatArray, IntArray

__all__ = [
    "SplineReport",
    "PlaneBeads",
    "build_spline_psf",
    "auto_z_range",
    "peak_depths_nm",
    "anchor_shift_nm",
]

MARGIN_PX = 4  # the window beyond the spline grid: the B-spline's support and a margin
FOCUS_BAND_NM = 300.0  # the background from the slices this close to the plane's focus
MIN_SEPARATION_PX = 4.0  # a bead with another one closer is not averaged (a close pair)


@dataclass(frozen=True, eq=False)
class PlaneBeads:
    """The beads averaged in one plane (for the QC): positions (n, 2) px, depths (n, Z) nm
    (sample frame), background (n,) photons / px, in-focus window light (n,) photons (NaN:
    the bead misses the focus), and their windows (n, Z, 2 h + 1, 2 h + 1) around their
    pixel, free of background and neighbours."""

    xy_px: FloatArray
    z_nm: FloatArray
    background: FloatArray
    flux: FloatArray
    windows: FloatArray


@dataclass(frozen=True, eq=False)
class SplineReport:
    """What the spline calibration used and saw, per plane."""

    n_beads: tuple[int, ...]  # beads averaged
    transmission: tuple[float, ...]
    z_range_nm: tuple[float, float]
    min_beads_per_z: int  # fewest beads covering a z node, over planes and nodes
    background_photons: tuple[float, ...]  # median background at the beads (photons / px)
    focus_photons: tuple[float, ...]  # median bead's in-focus window light (photons)
    n_neighbours: tuple[int, ...]  # beads whose light was subtracted from some window
    beads_per_z: IntArray  # (P, Nz) beads covering each node
    beads: tuple[PlaneBeads, ...]


def _usable(xy: FloatArray, others: FloatArray, shape: tuple[int, int], reach: int, sat: BoolArray | None):
    """Beads whose window lies in the frame, never saturated, no other bead within MIN_SEPARATION_PX."""
    height, width = shape
    c = bl.pixel_of(xy)
    ok = np.isfinite(xy).all(axis=1)
    ok &= (c[:, 0] >= reach) & (c[:, 0] + reach < width) & (c[:, 1] >= reach) & (c[:, 1] + reach < height)
    d = np.hypot(*(xy[:, None, :] - np.concatenate([xy, others])[None, :, :]).transpose(2, 0, 1))
    d[np.arange(len(xy)), np.arange(len(xy))] = np.inf
    ok &= ~(np.nan_to_num(d, nan=np.inf) < MIN_SEPARATION_PX).any(axis=1)
    if sat is not None:
        ever = sat.any(axis=0)
        for b in np.flatnonzero(ok):
            cx, cy = c[b]
            ok[b] = not ever[cy - reach : cy + reach + 1, cx - reach : cx + reach + 1].any()
    return ok


def _plane(stack, xy, use, others, z_bead, plane_z, z_nodes, half_px, sigma, step, sat, background):
    """One plane's beads: the lateral B-spline coefficients (Nz + 1, L + 2, L + 2) on
    ``z_nodes`` and, last, at the plane's focus (module doc), and what the report needs."""
    r = half_px + 1
    reach, m = r + MARGIN_PX, r + 1  # window half-side; nodes -m..m: the spline's padded grid
    idx = np.flatnonzero(use)
    c = bl.pixel_of(xy[idx])
    ar = np.arange(-reach, reach + 1)
    rows, cols = (c[:, 1, None] + ar)[:, :, None], (c[:, 0, None] + ar)[:, None, :]
    win = stack[:, rows, cols].transpose(1, 0, 2, 3).astype(np.float64)  # (n, Z, S, S)
    zb = z_bead[idx]  # (n, Z)
    finite = np.flatnonzero(np.isfinite(xy).all(axis=1))
    src = np.concatenate([xy[finite], others])  # every bead that shines
    own = np.searchsorted(finite, idx)
    if background is None:
        defocus = np.abs(np.median(zb, axis=0) - plane_z)
        near = defocus <= max(FOCUS_BAND_NM, 1.5 * step)
        bg_map = bl.background_map(stack, near if near.any() else defocus <= np.sort(defocus)[2], src, r)
    else:
        bg_map = np.full(stack.shape[1:], float(background))
    w = bl.brightness(stack, src, own, bg_map, sat)
    bg_win = bg_map[rows, cols]  # (n, S, S)
    win -= bg_win[:, None]
    images = [bl.bspline_image(c[i], xy[b], reach, m) for i, b in enumerate(idx)]
    neighbours, hit = [], set()
    for i, b in enumerate(idx):
        near_src = [s for s in np.flatnonzero(np.abs(src - xy[b]).max(axis=1) < reach + m + 2) if s != own[i]]
        hit.update(int(s) for s in near_src)
        zero = sparse.csr_matrix(images[i].shape)
        neighbours.append(sum((w[s] * bl.bspline_image(c[i], src[s], reach, m) for s in near_src), zero))
    if hit:
        win -= bl.neighbour_light(win, images, w[own], neighbours)
    nodes = np.append(z_nodes, plane_z)  # the last: the plane's focus
    kern = np.exp(-0.5 * ((nodes[:, None, None] - zb[None]) / sigma) ** 2)  # (Nz + 1, n, Z)
    covers = (nodes[:, None] >= zb.min(axis=1)) & (nodes[:, None] <= zb.max(axis=1))  # (Nz + 1, n)
    kern *= covers[:, :, None]
    kb = kern.sum(axis=2, keepdims=True)
    means = np.einsum("qnz,nzij->nijq", kern / np.where(kb > 0, kb, 1.0), win)  # per bead and node
    a = [w[own[i]] * images[i] for i in range(len(idx))]
    rhs = sparse.vstack(a, format="csr").T @ means.reshape(-1, len(nodes))  # (Q, Nz + 1)
    coef = np.zeros((len(nodes), (2 * m + 1) ** 2))
    for pattern in np.unique(covers, axis=0):  # the beads covering a node: few distinct sets
        if pattern.any():
            sel = np.flatnonzero((covers == pattern).all(axis=1))
            ap = sparse.vstack([a[i] for i in np.flatnonzero(pattern)], format="csr")
            coef[sel] = bl.ridge_solve((ap.T @ ap).toarray(), rhs[:, sel]).T
    coef = coef.reshape(len(nodes), 2 * m + 1, 2 * m + 1)
    # each bead's in-focus light in the window: its least-squares scale of the focus model
    model = np.stack([im @ coef[-1].reshape(-1) for im in images]).reshape(len(idx), 2 * reach + 1, -1)
    fit = np.einsum("nij,nij->n", means[..., -1], model) / np.maximum(
        np.einsum("nij,nij->n", model, model), 1e-300
    )
    flux = np.where(covers[-1], fit * bl.window_sum(coef[-1]), np.nan)
    bead_flux = np.full(len(xy), np.nan)
    bead_flux[idx] = flux
    h = slice(reach - half_px, reach + half_px + 1)
    beads = PlaneBeads(xy[idx], zb, bg_win[:, reach, reach], flux, win[..., h, h])
    return {"coef": coef, "count": covers[:-1].sum(axis=1), "n_focus": int(covers[-1].sum()),
            "n_used": len(idx), "bead_flux": bead_flux, "n_neighbours": len(hit), "beads": beads}  # fmt: skip


def auto_z_range(
    lo: Sequence[FloatArray], hi: Sequence[FloatArray], z_step_nm: float, min_beads: int
) -> tuple[float, float] | None:
    """The longest z range (multiples of ``z_step_nm``, >= 4 nodes) in which every plane has
    ``min_beads`` beads covering each node; ``lo``, ``hi`` per plane the beads' depth ranges."""
    z_min = np.ceil(min(x.min() for x in lo if len(x)) / z_step_nm)
    z_max = np.floor(max(x.max() for x in hi if len(x)) / z_step_nm)
    nodes = z_step_nm * np.arange(z_min, z_max + 1)
    ok = np.ones(len(nodes), bool)
    for a, b in zip(lo, hi, strict=True):
        ok &= ((nodes[:, None] >= a) & (nodes[:, None] <= b)).sum(axis=1) >= min_beads
    best, start = (0, 0), None
    for i, good in enumerate(np.append(ok, False)):
        if good and start is None:
            start = i
        elif not good and start is not None:
            best, start = max(best, (i - start, start)), None
    length, first = best
    return None if length < 4 else (float(nodes[first]), float(nodes[first + length - 1]))


def _check_coverage(names, lo, hi, z_nodes, min_beads, require) -> None:
    """InputError for a z range that the beads do not cover (with ``min_beads`` per node) or
    that misses the ``require``d one."""
    z_lo, z_hi = z_nodes[0], z_nodes[-1]
    if require is not None and (require[0] < z_lo or require[1] > z_hi):
        raise InputError(f"{names[0]}: the spline PSF covers z {z_lo:g}..{z_hi:g} nm, the run needs "
                         f"{require[0]:g}..{require[1]:g} nm (sample frame)")  # fmt: skip
    for k, (a, b) in enumerate(zip(lo, hi, strict=True)):
        count = ((z_nodes[:, None] >= a) & (z_nodes[:, None] <= b)).sum(axis=1)
        if count[0] == 0 or count[-1] == 0:
            raise InputError(f"{names[k]}: the bead stack covers z {a.min():.0f}..{b.max():.0f} nm (sample frame), "
                             f"the spline PSF needs {z_lo:g}..{z_hi:g} nm")  # fmt: skip
        short = np.flatnonzero(count < min_beads)
        if len(short):
            run = short[: np.argmax(np.append(np.diff(short) > 1, True)) + 1]
            raise InputError(f"{names[k]}: plane {k + 1} has {int(count[run].min())} usable beads at z "
                             f"{z_nodes[run[0]]:g}..{z_nodes[run[-1]]:g} nm (sample frame); the spline PSF "
                             f"needs {min_beads}")  # fmt: skip


def build_spline_psf(
    stacks: Sequence[FloatArray],
    bead_xy_px: Sequence[FloatArray],
    slice_z_nm: FloatArray,
    focus_stage_nm: FloatArray,
    *,
    source: str | Sequence[str],
    z_range_nm: tuple[float, float] | None = None,
    require_z_range_nm: tuple[float, float] | None = None,
    z_step_nm: float = 20.0,
    half_px: int = 8,
    smooth_z_nm: float | None = None,
    bead_z_offset_nm: Sequence[FloatArray] | FloatArray | None = None,
    saturated_px: Sequence[BoolArray] | None = None,
    other_xy_px: Sequence[FloatArray] | None = None,
    min_beads: int = 3,
    px_size_nm: float = 192.0,
    background_photons: Sequence[float] | None = None,
) -> tuple[SplinePSF, SplineReport]:
    """The spline PSF (normalisation ``"focus"``) of bead stacks (module doc).

    ``stacks`` per plane (Z, H, W) in photons; ``bead_xy_px`` per plane (n, 2) positions
    (px, pixel j centred at j + 0.5), row i the same bead in every plane (NaN where a plane
    lacks it), e.g. the spot fits' mean positions; ``slice_z_nm`` (Z,) stage depths;
    ``focus_stage_nm`` (P,) the stage depth at which each plane is in focus;
    ``z_range_nm`` the molecule depths to calibrate (sample frame; None: the longest range
    with ``min_beads`` beads at every node of every plane); ``require_z_range_nm`` depths
    that must be covered; ``bead_z_offset_nm`` (n,) bead heights (or one row per plane);
    ``saturated_px`` per plane (Z, H, W); ``other_xy_px`` per plane (m, 2) beads not to
    average whose light is subtracted; ``background_photons`` per plane, a known background;
    ``source`` the stack's name, or one per plane. Raises InputError naming it for too few
    usable beads (in a plane, or at some z: the plane and the z range), beads that do not
    cover ``z_range_nm`` or ``require_z_range_nm``, or no bead at a plane's focus.
    """
    n_planes = len(stacks)
    names = [source] * n_planes if isinstance(source, str) else list(source)
    slice_z = np.asarray(slice_z_nm, dtype=np.float64)
    focus = np.asarray(focus_stage_nm, dtype=np.float64)
    if len(bead_xy_px) != n_planes or focus.shape != (n_planes,) or len(names) != n_planes:
        raise ValueError(f"bead positions, focus depths or sources for {len(bead_xy_px)} / {focus.size} / "
                         f"{len(names)} planes, stacks for {n_planes}")  # fmt: skip
    xys = [np.asarray(b, dtype=np.float64).reshape(-1, 2) for b in bead_xy_px]
    if any(len(b) != len(xys[0]) for b in xys):
        raise ValueError(
            f"bead_xy_px: row i is the same bead in every plane; got {[len(b) for b in xys]} rows"
        )
    offsets = np.zeros(len(xys[0])) if bead_z_offset_nm is None else np.asarray(bead_z_offset_nm, float)
    offsets = np.broadcast_to(offsets, (n_planes, len(xys[0])))
    others = [np.zeros((0, 2)) if o is None else np.asarray(o, float).reshape(-1, 2)
              for o in (other_xy_px or [None] * n_planes)]  # fmt: skip
    planes = []
    for k in range(n_planes):
        sat = None if saturated_px is None else np.asarray(saturated_px[k], bool)
        use = _usable(xys[k], others[k], np.shape(stacks[k])[1:], half_px + 1 + MARGIN_PX, sat)
        if use.sum() < min_beads:
            raise InputError(f"{names[k]}: plane {k + 1} has {int(use.sum())} usable beads (unsaturated, "
                             f"inside the frame, no bead closer than {MIN_SEPARATION_PX:g} px); "
                             f"the spline PSF needs {min_beads}")  # fmt: skip
        planes.append((use, slice_z[None, :] + offsets[k][:, None] - focus[0], sat))
    lo = [zb[use].min(axis=1) for use, zb, _ in planes]
    hi = [zb[use].max(axis=1) for use, zb, _ in planes]
    if z_range_nm is None:
        z_range_nm = auto_z_range(lo, hi, z_step_nm, min_beads)
        if z_range_nm is None:
            raise InputError(f"{names[0]}: no z range of 4 z steps ({z_step_nm:g} nm) has {min_beads} usable "
                             "beads in every plane")  # fmt: skip
    z_lo, z_hi = float(z_range_nm[0]), float(z_range_nm[1])
    n_z = int(round((z_hi - z_lo) / z_step_nm)) + 1
    if n_z < 4:
        raise InputError(f"{names[0]}: the z range {z_lo:g}..{z_hi:g} nm spans fewer than 4 z steps of "
                         f"{z_step_nm:g} nm")  # fmt: skip
    z_nodes = z_lo + z_step_nm * np.arange(n_z)
    _check_coverage(names, lo, hi, z_nodes, min_beads, require_z_range_nm)
    step = float(np.median(np.abs(np.diff(slice_z)))) if len(slice_z) > 1 else z_step_nm
    sigma = smooth_z_nm if smooth_z_nm is not None else max(step, 0.5 * z_step_nm)
    out = []
    for k, (use, zb, sat) in enumerate(planes):
        bg = None if background_photons is None else background_photons[k]
        res = _plane(np.asarray(stacks[k]), xys[k], use, others[k], zb, focus[k] - focus[0], z_nodes,
                     half_px, sigma, step, sat, bg)  # fmt: skip
        res["norm"] = bl.window_sum(res["coef"][-1])
        if res["n_focus"] == 0 or not res["norm"] > 0:
            raise InputError(f"{names[k]}: no usable bead of plane {k + 1} reaches its focus "
                             f"(z = {focus[k] - focus[0]:.0f} nm, sample frame)")  # fmt: skip
        out.append(res)
    norm = np.array([res["norm"] for res in out])
    per_bead = np.stack([res["bead_flux"] for res in out])  # (P, n)
    common = np.isfinite(per_bead).all(axis=0) & (per_bead > 0).all(axis=0)
    trans = np.median(per_bead[:, common] / per_bead[:, common].sum(axis=0), axis=1) if common.any() else norm
    trans = trans / trans.sum()
    lateral = np.stack([res["coef"][:-1] for res in out]) / norm[:, None, None, None]  # (P, Nz, L + 2, L + 2)
    coeffs = np.pad(spline_filter1d(lateral, order=3, axis=1, mode="mirror"), ((0, 0), (1, 1), (0, 0), (0, 0)),
                    mode="reflect")  # z as SplinePSF.from_samples; laterally the fit's own  # fmt: skip
    psf = SplinePSF(coeffs, z_lo, float(z_step_nm), float(px_size_nm), trans, tuple(focus - focus[0]),
                    n_beads=int(min(res["n_used"] for res in out)), normalisation="focus")  # fmt: skip
    report = SplineReport(
        n_beads=tuple(res["n_used"] for res in out),
        transmission=tuple(float(t) for t in trans),
        z_range_nm=psf.z_range_nm,
        min_beads_per_z=int(min(res["count"].min() for res in out)),
        background_photons=tuple(float(np.median(res["beads"].background)) for res in out),
        focus_photons=tuple(float(np.nanmedian(res["beads"].flux)) for res in out),
        n_neighbours=tuple(res["n_neighbours"] for res in out),
        beads_per_z=np.stack([res["count"] for res in out]),
        beads=tuple(res["beads"] for res in out),
    )
    return psf, report


def peak_depths_nm(psf: SplinePSF, step_nm: float = 2.0) -> FloatArray:
    """Per plane, the depth (nm, the spline's z frame) at which a molecule at a pixel centre
    gives that plane its brightest pixel: the plane's focus as the sharpest image."""
    from voxloc.physics.spline import spline_windows

    lo, hi = psf.z_range_nm
    z = np.arange(lo, hi + step_nm / 2, step_nm)
    centre = np.full((z.size, psf.n_planes), 0.5)
    _, values, _ = spline_windows(psf, centre, centre, z)
    h = values.shape[-1] // 2
    peak = values[:, :, h, h]  # (Nz, P)
    i = np.clip(np.argmax(peak, axis=0), 1, z.size - 2)
    k = np.arange(psf.n_planes)
    a, b, c = peak[i - 1, k], peak[i, k], peak[i + 1, k]
    denom = a - 2 * b + c
    shift = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)  # parabola
    return z[i] + np.clip(shift, -1.0, 1.0) * step_nm


def anchor_shift_nm(psf: SplinePSF) -> float:
    """How far (nm) the planes' sharpest images (:func:`peak_depths_nm`) lie, on average,
    from ``plane_z_nm``: the focus positions to build the spline at instead.

    The Gaussian fit places each focus at the width minimum of Eq. 5, which for a real
    high-NA PSF lies tens of nm from its intensity peak (35 nm on the demo's vectorial
    optics). Its plane spacings are precise (< 1 nm on the demo), the peak of one noisy plane
    less so: so only the common origin moves, by the mean over the planes."""
    return float(np.mean(peak_depths_nm(psf) - np.asarray(psf.plane_z_nm)))
