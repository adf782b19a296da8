"""A vectorial PSF of an ideal high-NA objective, tabulated as a :class:`SplinePSF` (issue 15).

The demo's true microscope renders through this tabulation: :func:`vectorial_spline_psf`
evaluates the vectorial model of Aguet et al. (Opt. Express 17, 6829, 2009; Gibson-Lanni
geometry) with :func:`psfmodels.vectorial_psf` for a 1.49-NA oil objective (n_i = n_i0 =
1.515, coverslip matched) imaging into water (n_s = 1.33), integrates it over the camera
pixels and stores it at the pixel-step nodes of a :class:`voxloc.physics.spline.SplinePSF`;
an image is then the cubic-spline interpolation between those nodes. Its error against a
direct psfmodels evaluation (15x oversampled pixels, exact sub-pixel shift and depth;
tests/physics/test_vectorial.py), 192 nm pixels, 670 nm, 10 nm z step, RMS over a ±8 px
window for the worst sub-pixel shift: <= 0.7 % of the peak (median 0.6 %) for defocus (focal
plane minus molecule) in [-1.9, +0.4] µm, up to 2.0 % at +0.7 µm (worst pixel there ~11 %) and ~1 % at
+1.3 µm. The limit is the pixel-step grid, not the z step (0.06 % at pixel-centred
positions): 192 nm pixels sample an OTF reaching 2 NA / λ = 0.85 cycles/px, beyond their
Nyquist limit, and the sharp ring of the PSF with the focus beyond the molecule is the most
undersampled. (A least-squares fit of the same spline to all sub-pixel shifts instead of
interpolating the nodes would cut these errors by ~35 %.)

Geometry and sign. psfmodels' ``zv`` is the nominal focal position (µm above the coverslip,
positive into the sample) and ``pz`` the emitter's depth. The emitter stays at ``pz`` =
``depth_nm`` (as a bead on a slide scanned through focus: the depth-dependent aberration is
that of ``depth_nm``), and the focus moves: a molecule at depth z (nm from the focus of plane
1, voxloc's sample frame) is seen by plane k at ``zv = zv_focus + (plane_z[k] - z) / 1000``,
so z > plane_z[k] puts the molecule beyond the focal plane, away from the objective.
``zv_focus`` is where the on-axis intensity peaks (:func:`focus_zv_um`: +0.045 µm at depth 0,
the supercritical light shifts it off the design focus), so plane k is in focus at plane_z[k].

Pixel integration: the PSF is sampled on a grid ``oversample`` (odd) times finer than the
pixels, centred on the emitter, and averaged in blocks of oversample x oversample, so the
central block is the pixel whose centre holds the molecule (midpoint rule). psfmodels
interpolates its radial profile linearly at the fine step, which costs ~0.4 % of the total
at focus for oversample 5.

Normalisation (``normalisation = "total"``): at every defocus the pixel values are divided by
the light in the whole image plane, taken as a ±``field_px`` field (the PSF's tail falls
as r^-3, so some light lies beyond: ~0.4 % for ±80 px of 192 nm, ~1-3 % for ±40 px); the
node window ±(half_px + 1) px then holds less than 1 where the defocused halo spreads beyond
it (lost, as outside a camera window). The field outside the window is sampled 3x finer
than the pixels and, as it varies smoothly with defocus, only every ``halo_step_nm``
(cubic interpolation between: < 1e-5 of the total).

Cost: all planes see the same optics, so one stack over a regular defocus grid (step
``z_step_nm``, aligned with plane 1) serves them all; planes whose defoci fall between its
nodes are resampled by a cubic spline in defocus. psfmodels 0.3.3 is itself not smooth in
defocus: its Simpson rule changes its sample count in steps, which moves pixels at isolated
defoci (by 2.5 % of the peak at zv = 1.457 µm); the tabulation keeps those steps.
About 2 s for 4 planes, half_px 16, z in [-700, 1900] nm at 10 nm (2 cores).
"""

from __future__ import annotations

import numpy as np
import psfmodels
from scipy.interpolate import CubicSpline

from voxloc.physics.spline import SplinePSF
from voxloc.types import FloatArray

__all__ = ["focus_zv_um", "pixel_integrated_psf", "vectorial_spline_psf"]

#: defoci per psfmodels call (bounds the memory of the oversampled stack)
_CHUNK = 48
#: oversampling of the field around the window (only its light outside the window is used)
_HALO_OVERSAMPLE = 3


def _params(na: float, n_immersion: float, n_sample: float) -> dict[str, float]:
    """psfmodels parameters of an ideal objective: immersion as designed, coverslip matched."""
    if not 0 < na < n_immersion:
        raise ValueError(f"need 0 < NA < n_immersion; got NA {na}, n_immersion {n_immersion}")
    return {"NA": na, "ni": n_immersion, "ni0": n_immersion, "ns": n_sample, "sf": 1, "mode": 1}


def _fine(zv_um: FloatArray, nx: int, dxy_um: float, pz_um: float, wvl_um: float, params: dict) -> FloatArray:
    """Point samples (len(zv), nx, nx) of psfmodels' vectorial PSF, emitter at the centre."""
    zv = np.ascontiguousarray(zv_um, dtype=np.float64)
    return psfmodels.vectorial_psf(
        zv, nx=nx, dxy=dxy_um, pz=pz_um, wvl=wvl_um, params=params, normalize=False
    )


def _blocks(fine: FloatArray, oversample: int) -> FloatArray:
    """Means of (..., n s, n s) in s x s blocks -> (..., n, n): the pixel-averaged intensity,
    comparable between oversampling factors."""
    n = fine.shape[-1] // oversample
    return fine.reshape(fine.shape[:-2] + (n, oversample, n, oversample)).mean(axis=(-3, -1))


def focus_zv_um(
    *, depth_nm: float, na: float, wavelength_nm: float, n_immersion: float, n_sample: float
) -> float:
    """psfmodels ``zv`` (µm) at which the on-axis intensity of an emitter at ``depth_nm``
    peaks: a 10 nm scan, a 1 nm scan around its maximum and a parabola through the best three."""
    params = _params(na, n_immersion, n_sample)
    pz, wvl = depth_nm / 1000.0, wavelength_nm / 1000.0
    lo, hi = 0.8 * pz - 0.5, 1.6 * pz + 0.5
    zv = np.arange(lo, hi + 1e-9, 0.01)
    best = zv[np.argmax(_fine(zv, 1, 0.01, pz, wvl, params)[:, 0, 0])]
    zv = best + np.arange(-0.015, 0.0151, 0.001)
    on_axis = _fine(zv, 1, 0.01, pz, wvl, params)[:, 0, 0]
    i = int(np.clip(np.argmax(on_axis), 1, len(zv) - 2))
    a, b, c = on_axis[i - 1 : i + 2]
    den = a - 2 * b + c
    return float(zv[i] + (0.5 * (a - c) / den * 0.001 if den < 0 else 0.0))


def pixel_integrated_psf(
    zv_um: FloatArray,
    *,
    px_size_nm: float,
    half_px: int,
    oversample: int = 5,
    field_px: int = 80,
    halo_every: int = 1,
    depth_nm: float = 0.0,
    na: float = 1.49,
    wavelength_nm: float = 670.0,
    n_immersion: float = 1.515,
    n_sample: float = 1.33,
) -> FloatArray:
    """Pixel-integrated vectorial PSF (N, 2 h + 1, 2 h + 1), h = ``half_px``, molecule at the
    centre of the central pixel, at psfmodels focal positions ``zv_um`` (N,) sorted ascending,
    each divided by its light in the ±``field_px`` field. The field is evaluated at every
    ``halo_every``-th focal position (and the last) and the light outside the window
    interpolated in between (module doc)."""
    if oversample < 1 or oversample % 2 == 0:
        raise ValueError(f"oversample must be odd (the emitter at a pixel centre); got {oversample}")
    if not 0 <= half_px < field_px:
        raise ValueError(f"need 0 <= half_px < field_px; got {half_px}, {field_px}")
    zv = np.asarray(zv_um, dtype=np.float64)
    if zv.ndim != 1 or len(zv) == 0 or np.any(np.diff(zv) <= 0):
        raise ValueError("zv_um must be a non-empty, strictly increasing vector")
    params = _params(na, n_immersion, n_sample)
    kw = dict(dxy_um=px_size_nm / oversample / 1000.0, pz_um=depth_nm / 1000.0, wvl_um=wavelength_nm / 1000.0)
    n = 2 * half_px + 1
    core = np.empty((len(zv), n, n))
    for i in range(0, len(zv), _CHUNK):
        core[i : i + _CHUNK] = _blocks(
            _fine(zv[i : i + _CHUNK], oversample * n, params=params, **kw), oversample
        )
    picks = np.unique(np.r_[np.arange(0, len(zv), max(int(halo_every), 1)), len(zv) - 1])
    halo = np.empty(len(picks))
    c, h, s = field_px, half_px, min(oversample, _HALO_OVERSAMPLE)
    kw["dxy_um"] = px_size_nm / s / 1000.0
    for i in range(0, len(picks), _CHUNK):
        sel = picks[i : i + _CHUNK]
        f = _blocks(_fine(zv[sel], s * (2 * field_px + 1), params=params, **kw), s)
        halo[i : i + len(sel)] = f.sum(axis=(1, 2)) - f[:, c - h : c + h + 1, c - h : c + h + 1].sum(
            axis=(1, 2)
        )
    if len(picks) < len(zv):
        halo = CubicSpline(zv[picks], halo)(zv) if len(picks) > 2 else np.interp(zv, zv[picks], halo)
    return core / (core.sum(axis=(1, 2)) + halo)[:, None, None]


def vectorial_spline_psf(
    *,
    plane_z_nm: tuple[float, ...],
    px_size_nm: float,
    half_px: int = 16,
    z_range_nm: tuple[float, float] = (-700.0, 1900.0),
    z_step_nm: float = 10.0,
    na: float = 1.49,
    wavelength_nm: float = 670.0,
    n_immersion: float = 1.515,
    n_sample: float = 1.33,
    oversample: int = 5,
    transmission: FloatArray | None = None,
    depth_nm: float = 0.0,
    field_px: int = 80,
    halo_step_nm: float = 100.0,
) -> SplinePSF:
    """The vectorial PSF of each plane tabulated as a :class:`SplinePSF` (module doc).

    Nodes: z from ``z_range_nm[0]`` every ``z_step_nm`` up to at least ``z_range_nm[1]``;
    lateral ±(``half_px`` + 1) px (the grid :class:`SplinePSF` needs for ``half_px``
    windows). Values are photons per pixel per photon detected in the plane, the whole
    image plane holding 1 at every depth (``normalisation = "total"``); ``transmission``
    (P,) defaults to equal shares.
    """
    planes = np.asarray(plane_z_nm, dtype=np.float64)
    lo, hi = (float(v) for v in z_range_nm)
    if planes.ndim != 1 or len(planes) == 0 or not z_step_nm > 0 or not hi > lo:
        raise ValueError("need planes, z_step_nm > 0 and z_range_nm (lo, hi) with hi > lo")
    n_z = max(int(np.ceil((hi - lo) / z_step_nm - 1e-9)) + 1, 4)
    z = lo + z_step_nm * np.arange(n_z)
    defocus = planes[:, None] - z[None, :]  # (P, Nz) nm: focal plane minus molecule
    # one regular defocus grid for all planes, on plane 1's nodes, two nodes of margin
    base = planes[0] - z[-1]
    j_lo = int(np.floor((defocus.min() - base) / z_step_nm + 1e-9)) - 2
    j_hi = int(np.ceil((defocus.max() - base) / z_step_nm - 1e-9)) + 2
    grid = base + z_step_nm * np.arange(j_lo, j_hi + 1)
    zv_focus = focus_zv_um(
        depth_nm=depth_nm, na=na, wavelength_nm=wavelength_nm, n_immersion=n_immersion, n_sample=n_sample
    )
    stack = pixel_integrated_psf(
        zv_focus + grid / 1000.0,
        px_size_nm=px_size_nm,
        half_px=half_px + 1,
        oversample=oversample,
        field_px=field_px,
        halo_every=max(int(round(halo_step_nm / z_step_nm)), 1),
        depth_nm=depth_nm,
        na=na,
        wavelength_nm=wavelength_nm,
        n_immersion=n_immersion,
        n_sample=n_sample,
    )
    t = (defocus - grid[0]) / z_step_nm  # fractional grid index of each plane's defoci
    on_nodes = np.abs(t - np.round(t)) < 1e-6
    resample = None if on_nodes.all() else CubicSpline(grid, stack, axis=0)
    samples = np.stack(
        [
            stack[np.round(t[k]).astype(np.int64)] if on_nodes[k].all() else resample(defocus[k])
            for k in range(len(planes))
        ]
    )
    return SplinePSF.from_samples(
        samples,
        z0_nm=lo,
        z_step_nm=z_step_nm,
        px_size_nm=px_size_nm,
        transmission=transmission,
        plane_z_nm=tuple(float(v) for v in planes),
        normalise=False,
        normalisation="total",
    )
