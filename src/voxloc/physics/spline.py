"""A measured, cubic-spline PSF of the quad-plane microscope (issue 15; Li et al., Nat.
Methods 15, 367, 2018, as in SMAP's fit3Dcspline and DECODE's CubicSplinePSF).

The model replaces the Gaussian of Eqs. 4-6 by a tabulated PSF per plane. For plane k,
``g_k(u, v, z)`` is the expected number of photons in a camera pixel whose centre lies at
(u, v) px from a molecule at depth z (nm from the focus of plane 1, the sample frame of
:mod:`voxloc.physics.psf`), per photon detected in that plane. It is a pixel-integrated PSF
(the bead stacks it is measured from are pixel-integrated data), so an image is the spline
sampled at the pixel centres with the molecule's sub-pixel shift (no further integration).
All planes share one z axis: the plane positions are in the model itself (``plane_z_nm`` is
kept for reference and checks).

Representation: a separable cubic B-spline on a regular grid, lateral step = the camera
pixel, nodes u, v = -R..R px (R = ``half_px`` + 1), z step ``z_step_nm`` from ``z0_nm``.
The coefficients are those of :func:`scipy.ndimage.spline_filter` (order 3, ``mirror``
boundaries), padded by one mirrored node per side, so the spline interpolates the samples
exactly at the nodes and agrees with ``scipy.ndimage.map_coordinates(order=3,
mode="mirror")``. It is the same function space as the 64-coefficient tricubic form of Li et
al. (piecewise tricubic, C² instead of C¹), chosen because it is separable: one image costs
a z contraction (one BLAS matrix product for all molecules) and two 4-tap lateral
contractions, and the analytic derivatives d/dx, d/dy, d/dz only swap one axis' basis for its
derivative. Whole frames (:func:`render_spline_planes`, training simulation) go through a
low-rank form of the same spline and sparse tile sums instead of a per-pixel scatter
(:mod:`voxloc.physics._spline_render`).

Normalisation (``normalisation = "per_z"``): at every z node, the sum of g_k over the
(2R+1)² grid samples is 1, i.e. the PSF is normalised to 1 photon within the window at each
depth (light outside the window is dropped). ``transmission`` (P,) sums to 1: plane k
receives the fraction t_k of a molecule's detected photons, so ``photons`` in
:func:`render_spline_planes` is the total over all planes. Outside the window the model is 0;
a depth outside [z0, z_max] is clipped to the range (zero z derivative there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import spline_filter

from voxloc.physics._fisher import information_sum
from voxloc.physics._spline_render import low_rank_tables, render_low_rank
from voxloc.physics.noise import NoiseModel, noise_variance, signal_gain
from voxloc.types import FloatArray, IntArray

#: error bound of the float32 renderer per photon, relative to each plane's largest coefficient
RENDER_TOL = 1e-4

__all__ = [
    "SplinePSF",
    "bspline_weights",
    "spline_windows",
    "render_spline_planes",
    "fisher_information_spline",
]


@dataclass(frozen=True, eq=False)
class SplinePSF:
    """Cubic B-spline PSF per plane (module doc).

    ``coeffs`` (P, Nz + 2, L + 2, L + 2), L = 2 R + 1, are the padded B-spline coefficients;
    ``transmission`` (P,) the planes' shares of the photons (sum 1); ``n_beads`` the beads
    averaged (0 for a model PSF).
    """

    coeffs: FloatArray
    z0_nm: float
    z_step_nm: float
    px_size_nm: float
    transmission: FloatArray
    plane_z_nm: tuple[float, ...]
    n_beads: int = 0
    normalisation: str = "per_z"
    lateral_step_px: float = 1.0
    _cmat: FloatArray = field(init=False, repr=False)
    _cmat32: FloatArray = field(init=False, repr=False)
    _render: dict = field(init=False, repr=False)
    _patch: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        c = np.ascontiguousarray(self.coeffs, dtype=np.float64)
        if c.ndim != 4 or c.shape[2] != c.shape[3] or c.shape[2] % 2 == 0 or c.shape[1] < 4:
            raise ValueError(f"spline coefficients must be (P, Nz+2, L+2, L+2), L odd; got {c.shape}")
        t = np.asarray(self.transmission, dtype=np.float64)
        if t.shape != (c.shape[0],):
            raise ValueError(f"transmission must have one value per plane ({c.shape[0]}); got {t.shape}")
        object.__setattr__(self, "coeffs", c)
        object.__setattr__(self, "transmission", t)
        object.__setattr__(self, "plane_z_nm", tuple(float(z) for z in self.plane_z_nm))
        # (Nz + 2, P * (L + 2)^2) float32 with the transmission folded in: the z contraction
        cm = (c * t[:, None, None, None]).transpose(1, 0, 2, 3).reshape(c.shape[1], -1)
        object.__setattr__(self, "_cmat", np.ascontiguousarray(cm))
        object.__setattr__(self, "_cmat32", np.ascontiguousarray(cm, dtype=np.float32))
        object.__setattr__(self, "_render", {})  # render tables per (half_px, exact)
        object.__setattr__(self, "_patch", {})  # Microscope.patch_model per window side

    @classmethod
    def from_samples(
        cls,
        samples: FloatArray,
        *,
        z0_nm: float,
        z_step_nm: float,
        px_size_nm: float,
        transmission: FloatArray | None = None,
        plane_z_nm: tuple[float, ...] = (),
        n_beads: int = 0,
        normalise: bool = True,
        normalisation: str = "per_z",
    ) -> SplinePSF:
        """The spline through samples (P, Nz, L, L) at the grid nodes (pixel-integrated PSF,
        node (L // 2, L // 2) = molecule at the pixel centre); ``normalise``: per-z sum 1;
        ``normalisation``: the label stored with the model (e.g. "total" for samples that
        a caller normalised to the light in the whole image plane)."""
        s = np.asarray(samples, dtype=np.float64)
        if s.ndim != 4 or s.shape[2] != s.shape[3] or s.shape[2] % 2 == 0:
            raise ValueError(f"samples must be (P, Nz, L, L) with L odd; got {s.shape}")
        if normalise:
            s = s / s.sum(axis=(2, 3), keepdims=True)
        coeffs = np.stack([spline_filter(p, order=3, mode="mirror") for p in s])
        coeffs = np.pad(coeffs, ((0, 0), (1, 1), (1, 1), (1, 1)), mode="reflect")
        p = s.shape[0]
        t = np.full(p, 1.0 / p) if transmission is None else np.asarray(transmission, dtype=np.float64)
        return cls(coeffs, float(z0_nm), float(z_step_nm), float(px_size_nm), t / t.sum(),
                   tuple(plane_z_nm), int(n_beads), str(normalisation))  # fmt: skip

    @property
    def n_planes(self) -> int:
        return self.coeffs.shape[0]

    @property
    def n_z(self) -> int:
        return self.coeffs.shape[1] - 2

    @property
    def grid_px(self) -> int:
        """Lateral grid side L = 2 R + 1 (nodes)."""
        return self.coeffs.shape[2] - 2

    @property
    def half_px(self) -> int:
        """Largest window half-side (px) the grid covers: R - 1."""
        return self.grid_px // 2 - 1

    @property
    def z_range_nm(self) -> tuple[float, float]:
        return self.z0_nm, self.z0_nm + (self.n_z - 1) * self.z_step_nm

    def grid(self) -> dict[str, float | int]:
        """The grid description compared by :func:`voxloc.calibration.spline_files.load_spline_psf`."""
        return {
            "n_planes": self.n_planes,
            "grid_px": self.grid_px,
            "px_size_nm": self.px_size_nm,
            "z0_nm": self.z0_nm,
            "z_step_nm": self.z_step_nm,
            "n_z": self.n_z,
        }


def bspline_weights(f: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Cubic B-spline weights of nodes n-1..n+2 at t = n + f, f in [0, 1], and their
    derivatives d/dt: two arrays (..., 4)."""
    f = np.asarray(f)
    f2 = f * f
    f3 = f2 * f
    g = 1.0 - f
    w = np.stack([g * g * g / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * f + 1) / 6, f3 / 6], -1)
    d = np.stack([-0.5 * g * g, 1.5 * f2 - 2 * f, -1.5 * f2 + f + 0.5, 0.5 * f2], -1)
    return w, d


def _z_weights(psf: SplinePSF, z_nm: FloatArray, dtype: type) -> tuple[IntArray, FloatArray, FloatArray]:
    """Padded first node (N,) and weights / d-weights per nm (N, 4) along z (clipped range)."""
    tz = np.clip((np.asarray(z_nm, dtype=np.float64) - psf.z0_nm) / psf.z_step_nm, 0.0, psf.n_z - 1)
    nz = np.minimum(np.floor(tz).astype(np.int64), psf.n_z - 2)
    w, d = bspline_weights(tz - nz)
    inside = ((z_nm >= psf.z_range_nm[0]) & (z_nm <= psf.z_range_nm[1]))[:, None]
    return nz, w.astype(dtype), (np.where(inside, d, 0.0) / psf.z_step_nm).astype(dtype)


def _z_contract(psf: SplinePSF, nz: IntArray, w: FloatArray) -> FloatArray:
    """Σ_a w_a C[:, nz + a]: (N, P, L + 2, L + 2) by one matrix product over all molecules."""
    n = len(nz)
    wz = np.zeros((n, psf.n_z + 2), dtype=w.dtype)
    np.put_along_axis(wz, nz[:, None] + np.arange(4), w, axis=1)
    cm = psf._cmat32 if w.dtype == np.float32 else psf._cmat
    lp = psf.grid_px + 2
    return (wz @ cm).reshape(n, psf.n_planes, lp, lp)


def _lateral(slab: FloatArray, wy: FloatArray, wx: FloatArray, n: int) -> FloatArray:
    """Σ_ab wy_a wx_b S[.., d + 1 + a, e + 1 + b]: (N, P, n, n) from slabs (N, P, L+2, L+2)."""
    out_y = wy[..., 0, None, None] * slab[..., 1 : 1 + n, :]
    for a in range(1, 4):
        out_y += wy[..., a, None, None] * slab[..., 1 + a : 1 + a + n, :]
    out = wx[..., None, 0:1] * out_y[..., 1 : 1 + n]
    for b in range(1, 4):
        out += wx[..., None, b : b + 1] * out_y[..., 1 + b : 1 + b + n]
    return out


def spline_windows(
    psf: SplinePSF,
    x_px: FloatArray,
    y_px: FloatArray,
    z_nm: FloatArray,
    *,
    half_px: int | None = None,
    derivatives: bool = False,
    dtype: type = np.float64,
) -> tuple[IntArray, FloatArray, FloatArray | None]:
    """Expected window images per detected photon of N molecules in each plane.

    ``x_px``, ``y_px`` (N, P) are where plane k sees each molecule (px; pixel j has its centre
    at j + 0.5), ``z_nm`` (N,). The window of side n = 2 h + 1 (h = ``half_px``, at most and
    by default :attr:`SplinePSF.half_px`) in plane k starts at pixel ``origin[m, k]`` =
    (column, row) and holds the molecule within its central pixel (shifted by < 1 px toward
    lower indices). Returns origin (N, P, 2), values (N, P, n, n) (transmission included) and,
    with ``derivatives``, (N, P, 3, n, n): analytic d/dx_nm, d/dy_nm, d/dz_nm.
    """
    h = psf.half_px if half_px is None else int(half_px)
    if not 0 <= h <= psf.half_px:
        raise ValueError(f"half_px must be in 0..{psf.half_px}; got {h}")
    n = 2 * h + 1
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    # pixel c = ceil(pos - 0.5) holds the molecule; f = c + 0.5 - pos in [0, 1) is the
    # fractional node offset, the same for every pixel of the window
    cx = np.ceil(x_px - 0.5)
    cy = np.ceil(y_px - 0.5)
    wx, dwx = bspline_weights(cx + 0.5 - x_px)
    wy, dwy = bspline_weights(cy + 0.5 - y_px)
    off = psf.half_px - h  # windows smaller than the grid use its central part
    origin = np.stack([cx - h, cy - h], axis=-1).astype(np.int64)
    nz, wz, dwz = _z_weights(psf, np.asarray(z_nm, dtype=np.float64), dtype)
    slab = _z_contract(psf, nz, wz)
    if off:
        slab = slab[..., off:-off, off:-off]
    wx, wy, dwx, dwy = (a.astype(dtype) for a in (wx, wy, dwx, dwy))
    values = _lateral(slab, wy, wx, n)
    if not derivatives:
        return origin, values, None
    # u = pixel centre - position, so d/dx = -d/du (and per nm: / pixel size)
    s = dtype(-1.0 / psf.px_size_nm)
    dslab = _z_contract(psf, nz, dwz)
    if off:
        dslab = dslab[..., off:-off, off:-off]
    deriv = np.stack(
        [_lateral(slab, wy, dwx * s, n), _lateral(slab, dwy * s, wx, n), _lateral(dslab, wy, wx, n)], axis=2
    )
    return origin, values, deriv


def render_spline_planes(
    xy_nm: FloatArray,
    z_nm: FloatArray,
    photons: FloatArray,
    psf: SplinePSF,
    shape: tuple[int, int],
    *,
    half_px: int | None = None,
    dtype: type = np.float32,
) -> FloatArray:
    """Expected image Σ_m N_m t_k g_k of molecules, the spline counterpart of
    :func:`voxloc.physics.psf.render_planes`: ``xy_nm`` (..., M, P, 2) where plane k sees
    each molecule (drift / registration included), ``z_nm`` and ``photons`` (..., M) (total
    detected photons; 0 = padding). Returns (..., P, H, W); no background.

    The windows of :func:`spline_windows` summed by a low-rank form of the spline
    (:mod:`voxloc.physics._spline_render`): exact in float64; in float32 every pixel is within
    ``RENDER_TOL`` x N x the plane's largest coefficient (about its peak)."""
    xy_nm = np.asarray(xy_nm, dtype=np.float64)
    lead = xy_nm.shape[:-3]
    m_count, p = xy_nm.shape[-3], xy_nm.shape[-2]
    if p != psf.n_planes:
        raise ValueError(f"the spline PSF has {psf.n_planes} planes; got positions for {p}")
    h = psf.half_px if half_px is None else int(half_px)
    if not 0 <= h <= psf.half_px:
        raise ValueError(f"half_px must be in 0..{psf.half_px}; got {h}")
    exact = np.dtype(dtype) == np.float64
    work = np.float64 if exact else np.float32
    n_frames = int(np.prod(lead, dtype=np.int64))
    if n_frames == 0 or m_count == 0:
        return np.zeros(lead + (p, *shape), dtype=dtype)
    z = np.broadcast_to(np.asarray(z_nm, dtype=np.float64), lead + (m_count,)).reshape(-1)
    ph = np.broadcast_to(np.asarray(photons, dtype=np.float64), lead + (m_count,)).reshape(-1)
    keep = ph != 0  # padding may hold any position: park it at the origin
    xy = np.where(keep[:, None, None], xy_nm.reshape(-1, p, 2), 0.0) / psf.px_size_nm
    z = np.where(keep, z, psf.z0_nm)
    # as in spline_windows: pixel c = ceil(pos - 0.5) holds the molecule, offset c + 0.5 - pos
    cx, cy = np.ceil(xy[..., 0] - 0.5), np.ceil(xy[..., 1] - 0.5)
    wx = bspline_weights(cx + 0.5 - xy[..., 0])[0].astype(work)
    wy = bspline_weights(cy + 0.5 - xy[..., 1])[0].astype(work)
    nz, wz, _ = _z_weights(psf, z, np.float64)
    tables = psf._render.get((h, exact))
    if tables is None:
        c = psf.coeffs * psf.transmission[:, None, None, None]
        tables = low_rank_tables(c, h, 0.0 if exact else RENDER_TOL, work)
        psf._render[(h, exact)] = tables
    ox, oy = (cx - h).astype(np.int64), (cy - h).astype(np.int64)
    out = render_low_rank(tables, wx, wy, ox, oy, nz, (wz * ph[:, None]).astype(work), shape, n_frames)
    return out.astype(dtype, copy=False).reshape(lead + (p, *shape))


def fisher_information_spline(
    psf: SplinePSF,
    noise: NoiseModel,
    x_nm: FloatArray | float,
    y_nm: FloatArray | float,
    z_nm: FloatArray | float,
    photons: FloatArray | float,
    *,
    drift_nm: FloatArray | None = None,
    half_px: int | None = None,
    nuisance: bool = False,
) -> FloatArray:
    """Fisher information (N, 3, 3) of (x, y, z) in nm⁻² with the spline's analytic
    derivatives and the noise formula of :mod:`voxloc.physics.crlb`:
    I_ij = Σ g² ∂μ/∂θi ∂μ/∂θj / Var(y); with ``nuisance`` (N, 4 + P, 4 + P) of (x, y, z,
    N, b_1..b_P) (:mod:`voxloc.physics._fisher`). ``drift_nm`` (P, 2) or (N, P, 2); scalars
    give one matrix."""
    if noise.kind == "none":
        raise ValueError("the CRLB is undefined without noise (noise kind 'none')")
    gain = signal_gain(noise)
    scalar = all(np.ndim(v) == 0 for v in (x_nm, y_nm, z_nm, photons))
    x, y, z, ph = (
        np.atleast_1d(v).astype(np.float64).ravel() for v in np.broadcast_arrays(x_nm, y_nm, z_nm, photons)
    )
    p = psf.n_planes
    drift = np.zeros((len(x), p, 2)) if drift_nm is None else np.broadcast_to(drift_nm, (len(x), p, 2))
    xs = (x[:, None] + drift[..., 0]) / psf.px_size_nm
    ys = (y[:, None] + drift[..., 1]) / psf.px_size_nm
    _, mu, d = spline_windows(psf, xs, ys, z, half_px=half_px, derivatives=True)
    m = len(x)
    mu = (mu * ph[:, None, None, None]).reshape(m, p, -1)
    d = (d * ph[:, None, None, None, None]).transpose(0, 2, 1, 3, 4).reshape(m, 3, p, -1)
    inv_var = gain * gain / noise_variance(mu, noise)
    info = information_sum(d, mu, inv_var, ph, nuisance=nuisance)
    return info[0] if scalar else info
