"""Cramér-Rao lower bound of (x, y, z) for one molecule of the quad-plane PSF.

The expected image μ of one molecule (Eqs. 4-7) of a :class:`voxloc.physics.microscope.Microscope`
(PSF, focal planes, pixel, transmission, noise) is rendered by
:meth:`~voxloc.physics.microscope.Microscope.render` on a square pixel window around it in
each of the P planes. For a spline PSF the derivatives are the spline's analytic ones
(:func:`voxloc.physics.spline.fisher_information_spline`, same formula below); for the
Gaussian its derivatives ∂μ/∂θ,
θ = (x, y, z), are central finite differences with step ``step_nm`` (0.1 nm by default:
the truncation error is O((h/r)^2) < 1e-6 relative for r >= 100 nm and, in float64, the
rounding error is ~1e-16 μ / h, negligible). The Fisher information is summed over planes
and pixels,

    I_ij = Σ_k Σ_pixels g² ∂μ/∂θi ∂μ/∂θj / Var(y),    Var(y) = noise_variance(μ, model),

with g the ADU per photon of the ``physical`` model (1 for ``paper``). This is the Fisher
information of a Gaussian of mean g μ and variance Var(y) that ignores the information in the
mean dependence of the variance, i.e. the usual "Poisson(μ + σ²/g²)" approximation of
Poisson-plus-Gaussian noise (Huang et al. 2013); it is exact for pure Poisson noise
(``physical``, gain 1, no read noise) and for the ``paper`` model, whose noise λ + N(0, σ²) is
additive and independent of the signal (here the variance λ + σ² is constant; treating the
non-Gaussian Poisson(λ) term as Gaussian of the same variance is the approximation). EM-CCD
gain > 1 doubles the shot-noise variance (high-gain excess-noise factor 2). Without noise
(kind ``none``) the bound is undefined and a :class:`ValueError` is raised.

The bound is for a known PSF and known drift. By default (:func:`crlb`) the photons and each
plane's background are unknown, estimated with (x, y, z) as every fitter does: the standard
bound of the field (Smith et al. 2010; SMAP's and DECODE's CRLB). With them known (``nuisance=
False``) it is lower: on Table 2's planes by under 2 % inside 0-1,200 nm, but by up to 2x in z
beyond the outer planes, where a spot's width and its photons trade off.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from voxloc.physics._fisher import information_sum
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import noise_variance
from voxloc.physics.psf import defocus_width_nm
from voxloc.physics.spline import SplinePSF, fisher_information_spline
from voxloc.types import FloatArray

__all__ = ["fisher_information", "crlb", "crlb_table", "crlb_ratio", "auto_window_px", "diag_inverse"]

_AXES = ("x", "y", "z")


def auto_window_px(microscope: Microscope, z_nm: FloatArray | float, *, n_sigma: float = 4.0) -> int:
    """Odd window side (pixels) covering ±``n_sigma`` r of the widest spot over all planes
    (a spline PSF: its whole window)."""
    z = np.atleast_1d(np.asarray(z_nm, dtype=np.float64))
    psf = microscope.psf
    if isinstance(psf, SplinePSF):
        return 2 * psf.half_px + 1
    r = defocus_width_nm(
        np.asarray(microscope.plane_z_nm, dtype=np.float64)[None, :] - z[:, None],
        r0_nm=psf.r0_nm,
        D_nm=psf.D_nm,
        A=psf.A,
        B=psf.B,
    )
    half = int(math.ceil(n_sigma * float(r.max()) / microscope.px_size_nm)) + 1
    return 2 * half + 1


def _signal_gain(microscope: Microscope) -> float:
    """Mean output units per unit of the rendered signal: ADU/photon for physical, else 1."""
    if microscope.noise.kind == "none":
        raise ValueError("the CRLB is undefined without noise (noise kind 'none')")
    return microscope.adu_per_photon


def fisher_information(
    microscope: Microscope,
    x_nm: FloatArray | float,
    y_nm: FloatArray | float,
    z_nm: FloatArray | float,
    photons: FloatArray | float,
    *,
    window_px: int | None = None,
    drift_nm: FloatArray | None = None,
    step_nm: float = 0.1,
    chunk: int = 512,
    nuisance: bool = False,
) -> FloatArray:
    """Fisher information (N, 3, 3) of θ = (x, y, z) in nm⁻² for N molecules (module doc);
    with ``nuisance`` (N, 4 + P, 4 + P) of θ = (x, y, z, N, b_1..b_P), photons and the
    planes' backgrounds unknown too (:func:`voxloc.physics._fisher.information_sum`).

    The image is that of ``microscope`` (PSF, planes, pixel, transmission, noise, pixel
    sampling) for molecules of ``photons`` detected photons (summed over the planes).
    Positions are in nm in the frame of plane 1; ``drift_nm`` (P, 2) or (N, P, 2) is the
    lateral drift Δk of Eq. 7 (plane k sees the molecule at (x, y) + Δk). ``window_px`` is
    the side of the square window rendered per plane (default: :func:`auto_window_px`, ±4 r
    of the widest spot); the window is centred on the pixel holding the molecule, so edge
    effects of the camera are ignored. Scalars in, (3, 3) out.
    """
    if isinstance(microscope.psf, SplinePSF):
        half = None if window_px is None else window_px // 2
        return fisher_information_spline(
            microscope.psf, microscope.noise, x_nm, y_nm, z_nm, photons, drift_nm=drift_nm, half_px=half,
            nuisance=nuisance,
        )  # fmt: skip
    gain = _signal_gain(microscope)
    noise = microscope.noise
    scalar = all(np.ndim(v) == 0 for v in (x_nm, y_nm, z_nm, photons)) and (
        drift_nm is None or np.ndim(drift_nm) < 3
    )
    x, y, z, w = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x_nm, y_nm, z_nm, photons))
    )
    n = x.size
    x, y, z, w = (v.reshape(n) for v in (x, y, z, w))
    n_planes = microscope.n_planes
    if drift_nm is None:
        drift = np.zeros((n, n_planes, 2))
    else:
        drift = np.broadcast_to(np.asarray(drift_nm, dtype=np.float64), (n, n_planes, 2))
    if window_px is None:
        window_px = auto_window_px(microscope, z)
    half = window_px // 2
    s = float(microscope.px_size_nm)
    # perturbations of (x, y, z): 0, +x, -x, +y, -y, +z, -z
    delta = np.zeros((7, 3))
    for a in range(3):
        delta[1 + 2 * a, a] = step_nm
        delta[2 + 2 * a, a] = -step_nm
    q = 4 + n_planes if nuisance else 3
    out = np.empty((n, q, q))
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        m = hi - lo
        # window origin: the window's pixel (half, half) holds the molecule (in plane 1)
        ox = (np.floor(x[lo:hi] / s) - half) * s
        oy = (np.floor(y[lo:hi] / s) - half) * s
        base = np.stack([x[lo:hi] - ox, y[lo:hi] - oy], axis=-1)  # (m, 2) window coordinates
        xy = base[:, None, None, :] + drift[lo:hi, None, :, :] + delta[None, :, None, :2]  # (m, 7, P, 2)
        zz = z[lo:hi, None] + delta[None, :, 2]  # (m, 7)
        ww = np.broadcast_to(w[lo:hi, None], (m, 7))
        mu = microscope.render(
            xy[:, :, None], zz[:, :, None], ww[:, :, None], (window_px, window_px), dtype=np.float64
        )  # (m, 7, P, H, W)
        d = (mu[:, 1::2] - mu[:, 2::2]) / (2.0 * step_nm)  # (m, 3, P, H, W)
        inv_var = gain * gain / noise_variance(mu[:, 0], noise)  # (m, P, H, W)
        out[lo:hi] = information_sum(
            d.reshape(m, 3, n_planes, -1), mu[:, 0].reshape(m, n_planes, -1),
            inv_var.reshape(m, n_planes, -1), w[lo:hi], nuisance=nuisance,
        )  # fmt: skip
    return out[0] if scalar else out


def diag_inverse(info: FloatArray, rcond: float = 1e-10) -> FloatArray:
    """diag(I⁻¹) of (N, Q, Q) matrices; an axis along an unidentifiable direction gets inf."""
    info = 0.5 * (info + np.swapaxes(info, -1, -2))
    evals, evecs = np.linalg.eigh(info)  # ascending
    top = evals[..., -1:]
    ok = evals > rcond * np.maximum(top, np.finfo(float).tiny)
    inv_evals = np.where(ok, 1.0 / np.where(ok, evals, 1.0), 0.0)
    var = np.einsum("...ik,...k,...ik->...i", evecs, inv_evals, evecs)
    # any component along a null direction: the variance of that axis is unbounded
    null_weight = np.einsum("...ik,...k->...i", evecs**2, (~ok).astype(float))
    return np.where(null_weight > 1e-12, np.inf, var)


def crlb(
    microscope: Microscope,
    x_nm: FloatArray | float,
    y_nm: FloatArray | float,
    z_nm: FloatArray | float,
    photons: FloatArray | float,
    *,
    nuisance: bool = True,
    **kwargs,
) -> FloatArray:
    """CRLB variances (N, 3) in nm² of (x, y, z): diag(I⁻¹)[:3] of :func:`fisher_information`.

    ``nuisance`` (the default): photons and the planes' backgrounds are unknown too, the
    bound of every fitter that estimates them and the one SMAP and DECODE report; False:
    they are known (a lower bound, which only an oracle attains). Other keyword arguments as
    for :func:`fisher_information`. An axis that the data cannot identify (e.g. z of a
    molecule exactly in focus of a single plane) gets ``inf``.
    """
    info = fisher_information(microscope, x_nm, y_nm, z_nm, photons, nuisance=nuisance, **kwargs)
    q = info.shape[-1]
    return diag_inverse(info.reshape(-1, q, q))[:, :3]


def crlb_table(
    truth: pd.DataFrame,
    microscope: Microscope,
    *,
    drift_nm: FloatArray | None = None,
    frame_offset: int = 0,
    **kwargs,
) -> pd.DataFrame:
    """Ground truth (frame, x_nm, y_nm, z_nm, photons) + crlb_x_nm, crlb_y_nm, crlb_z_nm
    for ``microscope``.

    The added columns are standard deviations (sqrt of the CRLB variances, nm). ``drift_nm``
    (T, P, 2) is the per-frame drift of Eq. 7 (row ``frame - frame_offset``), or (P, 2) for
    all frames, or None for no drift. Returns a copy.
    """
    out = truth.copy()
    if "photons" not in truth:
        raise KeyError("the CRLB needs the true molecules' photons (column 'photons')")
    photons = truth["photons"].to_numpy(np.float64)
    drift = None
    if drift_nm is not None:
        drift = np.asarray(drift_nm, dtype=np.float64)
        if drift.ndim == 3:
            drift = drift[truth["frame"].to_numpy(np.int64) - frame_offset]
    var = crlb(
        microscope,
        truth["x_nm"].to_numpy(np.float64),
        truth["y_nm"].to_numpy(np.float64),
        truth["z_nm"].to_numpy(np.float64),
        photons,
        drift_nm=drift,
        **kwargs,
    )
    for a, name in enumerate(_AXES):
        out[f"crlb_{name}_nm"] = np.sqrt(var[:, a]) if len(truth) else np.zeros(0)
    return out


def crlb_ratio(rmse_per_axis_nm: FloatArray, crlb_std_per_axis_nm: FloatArray) -> FloatArray:
    """RMSE / sqrt(mean CRLB variance) per axis (1 = efficient estimator, > 1 above the bound).

    ``rmse_per_axis_nm`` (3,) is the RMSE of matched localizations; ``crlb_std_per_axis_nm``
    (N, 3) are the CRLB standard deviations of the matched truths (e.g. the crlb_*_nm columns
    of :func:`crlb_table`), averaged as variances. Non-finite bounds are ignored.
    """
    rmse = np.asarray(rmse_per_axis_nm, dtype=np.float64)
    std = np.asarray(crlb_std_per_axis_nm, dtype=np.float64).reshape(-1, rmse.size)
    var = np.where(np.isfinite(std), std**2, np.nan)
    return rmse / np.sqrt(np.nanmean(var, axis=0))
