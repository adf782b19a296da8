"""The quad-plane point spread function (Aritake et al. 2020, Sect. 2.2, Eqs. 4-7).

This is the one implementation of the physics: the simulator, the bead calibration, the
Cramér-Rao bound and any fitter call these functions.

Conventions (see README, "Coordinates and units"):

* a frame is an array (P, H, W) = (plane, row, column); rows are y, columns are x;
* pixel (row i, column j) has its centre at x = (j + 0.5) s, y = (i + 0.5) s, s = px size;
* z is in nm from the focal plane of plane 1; plane k is in focus at ``plane_z_nm[k]``;
* the defocus argument of Eqs. 5-6 is ``z_plane - z_molecule``;
* the lateral drift of Eq. 7: plane k sees a molecule at (x, y) at (x + Δk,x, y + Δk,y).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.special import erf

from voxloc.types import FloatArray

__all__ = [
    "PSFParams",
    "TABLE2",
    "defocus_width_nm",
    "peak_amplitude",
    "gaussian_spot",
    "psf_value",
    "photons_per_plane",
    "render_planes",
]


@dataclass(frozen=True)
class PSFParams:
    """Parameters of the PSF in the form of the paper's Table 2.

    ``a_prime`` is the integrated intensity a' of Eq. 6 (intensity units x nm²), ``b`` the
    constant background of Eq. 4, ``r0_nm`` the in-focus width, ``D_nm`` the focus depth
    and ``A``, ``B`` the cubic and quartic coefficients of the defocus curve (Eq. 5).
    """

    a_prime: float = 5.00e7
    b: float = 0.0
    r0_nm: float = 133.0
    D_nm: float = 302.0
    A: float = 7.37e-4
    B: float = 6.27e-3

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> PSFParams:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown PSF parameter(s): {sorted(unknown)}")
        return cls(**{k: float(v) for k, v in d.items()})


#: Table 2 of the paper (the authors' published code uses B = 0.122 instead).
TABLE2 = PSFParams()


def defocus_width_nm(
    defocus_nm: FloatArray | float, *, r0_nm: float, D_nm: float, A: float, B: float
) -> FloatArray:
    """PSF width r(x) at defocus x = z_plane - z_molecule (Eq. 5).

    r(x) = r0 sqrt(1 + (x/D)^2 + A (x/D)^3 + B (x/D)^4). The radicand is floored at a tiny
    positive value so that unphysical parameter sets met during a fit stay finite.
    """
    u = np.asarray(defocus_nm, dtype=np.float64) / D_nm
    u2 = u * u
    radicand = 1.0 + u2 + A * u2 * u + B * u2 * u2
    return r0_nm * np.sqrt(np.maximum(radicand, 1e-12))


def peak_amplitude(width_nm: FloatArray | float, a_prime: float) -> FloatArray:
    """Peak intensity a(x) = a' / (2 π r(x)^2) of a molecule of weight 1 (Eq. 6)."""
    r = np.asarray(width_nm, dtype=np.float64)
    return a_prime / (2.0 * math.pi * r * r)


def gaussian_spot(
    x_nm: FloatArray | float,
    y_nm: FloatArray | float,
    x0_nm: FloatArray | float,
    y0_nm: FloatArray | float,
    width_nm: FloatArray | float,
    peak: FloatArray | float,
    background: FloatArray | float = 0.0,
) -> FloatArray:
    """One plane of Eq. 4: peak exp(-((x - x0)^2 + (y - y0)^2) / (2 r^2)) + background.

    The single-plane form behind :func:`psf_value` (with r = r(z_k - z_m) of Eq. 5 and
    peak = w a(z_k - z_m) of Eq. 6) and the per-slice bead fit, which frees r and the peak.
    Point-sampled at (x, y); all arguments broadcast; any length unit, used consistently.
    """
    r = np.asarray(width_nm, dtype=np.float64)
    d2 = (np.asarray(x_nm) - x0_nm) ** 2 + (np.asarray(y_nm) - y0_nm) ** 2
    return np.asarray(peak) * np.exp(-d2 / (2 * r * r)) + background


def psf_value(
    x_nm: FloatArray | float,
    y_nm: FloatArray | float,
    plane_z_nm: FloatArray | float,
    mol_x_nm: FloatArray | float,
    mol_y_nm: FloatArray | float,
    mol_z_nm: FloatArray | float,
    params: PSFParams = TABLE2,
    *,
    weight: FloatArray | float = 1.0,
    include_background: bool = True,
) -> FloatArray:
    """Point-sampled intensity of one molecule at (x, y) in a plane in focus at z (Eq. 4).

    w a(z_k - z_m) exp(-((x - x_m)^2 + (y - y_m)^2) / (2 r(z_k - z_m)^2)) + b, all
    arguments broadcast. Drift (Eq. 7) is applied by the caller: pass x_m + Δk,x.
    """
    r = defocus_width_nm(
        np.asarray(plane_z_nm) - np.asarray(mol_z_nm),
        r0_nm=params.r0_nm,
        D_nm=params.D_nm,
        A=params.A,
        B=params.B,
    )
    peak = np.asarray(weight) * peak_amplitude(r, params.a_prime)
    return gaussian_spot(x_nm, y_nm, mol_x_nm, mol_y_nm, r, peak, params.b if include_background else 0.0)


def _profile(
    centres_nm: FloatArray, pos_nm: FloatArray, width_nm: FloatArray, px_size_nm: float, integrate: bool
) -> FloatArray:
    """1-D Gaussian factor of Eq. 4 along one axis: (..., 1) positions -> (..., n) pixels.

    Point sampling evaluates exp(-(c - p)^2 / (2 r^2)) at the pixel centre c; integration
    averages the same function over [c - s/2, c + s/2] (so both have the same units).
    """
    if not integrate:
        d = centres_nm - pos_nm
        return np.exp(-(d * d) / (2.0 * width_nm * width_nm))
    k = 1.0 / (math.sqrt(2.0) * width_nm)
    hi = erf((centres_nm + px_size_nm / 2 - pos_nm) * k)
    lo = erf((centres_nm - px_size_nm / 2 - pos_nm) * k)
    return (hi - lo) * (width_nm * math.sqrt(math.pi / 2.0) / px_size_nm)


def photons_per_plane(weight: FloatArray | float, params: PSFParams, px_size_nm: float) -> FloatArray:
    """Photons a molecule of weight w puts into one plane under Eqs. 4 and 6: w a' / s².

    The Gaussian w a(x) exp(...) of Eq. 4 integrates to w a' over the plane (nm²); a camera
    pixel of side s samples it once, so the photons summed over the pixels are w a' / s²,
    whatever the defocus. This is how the paper's weights translate into the photon counts
    the simulation takes (``simulation.photons``: total over the P planes = P w a' / s²).
    """
    return np.asarray(weight, dtype=np.float64) * params.a_prime / (px_size_nm * px_size_nm)


def render_planes(
    xy_nm: FloatArray,
    z_nm: FloatArray,
    photons: FloatArray,
    params: PSFParams,
    plane_z_nm: FloatArray,
    shape: tuple[int, int],
    px_size_nm: float,
    *,
    transmission: FloatArray | None = None,
    integrate: bool = False,
    dtype: type = np.float32,
) -> FloatArray:
    """Expected image Σ_m N_m t_k g(x_ijk, z_m) + b of Eqs. 3-4 for a batch of frames.

    ``xy_nm`` (..., M, P, 2) is the lateral position (x, y) at which each of the P planes
    sees each molecule, i.e. the true position plus that plane's drift Δk (Eq. 7) or
    registration offset; ``z_nm`` and ``photons`` are (..., M): N_m, the molecule's detected
    photons summed over the planes (0 = padding). Plane k receives the share t_k of them
    (``transmission`` (P,), sum 1; default 1/P each) spread as the Gaussian of Eq. 4 with
    the width r of Eq. 5: peak N t_k s² / (2 π r²), i.e. Eq. 6 with w a' = N t_k s² (see
    :func:`photons_per_plane`); ``params.a_prime`` is not used. Returns (..., P, H, W). The
    Gaussian is separable, so each frame is one batched matrix product (P, H, M) @ (P, M, W):
    fast enough to simulate thousands of frames/s.
    """
    xy_nm = np.asarray(xy_nm, dtype=np.float64)
    z_nm = np.asarray(z_nm, dtype=np.float64)
    photons = np.asarray(photons, dtype=np.float64)
    plane_z = np.asarray(plane_z_nm, dtype=np.float64)
    n_planes = plane_z.size
    t = np.full(n_planes, 1.0 / n_planes) if transmission is None else np.asarray(transmission, np.float64)
    height, width = shape
    r = defocus_width_nm(
        plane_z - z_nm[..., None], r0_nm=params.r0_nm, D_nm=params.D_nm, A=params.A, B=params.B
    )  # (..., M, P)
    amp = (photons[..., None] * t * (px_size_nm * px_size_nm) / (2.0 * math.pi * r * r)).astype(dtype)
    # the 1-D profiles in the output precision: positions relative to the pixel grid are
    # small numbers, so float32 keeps ~1e-4 nm of accuracy
    xc = ((np.arange(width) + 0.5) * px_size_nm).astype(dtype)
    yc = ((np.arange(height) + 0.5) * px_size_nm).astype(dtype)
    r = r[..., None].astype(dtype)
    gx = _profile(xc, xy_nm[..., 0:1].astype(dtype), r, px_size_nm, integrate)  # (..., M, P, W)
    gy = _profile(yc, xy_nm[..., 1:2].astype(dtype), r, px_size_nm, integrate)  # (..., M, P, H)
    gy *= amp[..., None]
    # (..., P, H, M) @ (..., P, M, W) -> (..., P, H, W)
    image = np.matmul(np.moveaxis(gy, -3, -1), np.moveaxis(gx, -3, -2))
    if params.b:
        image += dtype(params.b)
    return image
