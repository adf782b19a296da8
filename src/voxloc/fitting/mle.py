"""Multi-plane maximum-likelihood fit of each detection (issue 16; Smith et al., Nat. Methods
7, 373, 2010 and Li et al., Nat. Methods 15, 367, 2018 for the single-plane form).

Model: plane k's window of camera pixels has expectation μ_k = N g_k(x_k, y_k, z) + b_k, with
g_k the microscope's PSF per detected photon (:meth:`voxloc.physics.microscope.Microscope.patches`:
Gaussian of Eqs. 4-6 or measured spline, transmission t_k included), (x_k, y_k) where camera
k sees the camera-1 position (x, y) (:mod:`voxloc.fitting.windows`), N the photons summed
over the planes and b_k the background of plane k (photons / pixel). θ = (x, y, z, N, b_1..b_P).

Likelihood, by the camera's noise (:class:`voxloc.physics.noise.PixelNoise`): the paper's
noise is Gaussian of constant variance λ + σ² (least squares); a camera is Poisson with the
read noise folded in as a shift (sCMOS / CCD: y + c ~ Poisson(μ + c), c = σ², Huang et al.
2013) or, with an EM register, a Poisson of half the counts (excess factor 2,
(y + c)/2 ~ Poisson((μ + c)/2)). For all of them the score is
Σ (y − μ) / Var(μ) ∂μ/∂θ, so one Levenberg-Marquardt iteration of Fisher scoring
(H = Jᵀ W J, W = 1 / Var(μ)) serves all, and each step is accepted only when it lowers the
negative log-likelihood. Batched over every detection of a network batch (compiled, one
molecule per thread: :mod:`voxloc.fitting._lm`), with a
convergence test on the step (``tol_nm`` in position and 1e-4 in relative photons, or less
than :data:`LOGLIK_TOL` of log-likelihood gained) and an iteration cap. σ_x, σ_y, σ_z are the square roots of the diagonal of H⁻¹ at the estimate
(the CRLB with photons and backgrounds unknown too).

A fit that leaves its bounds (more than ``max_shift_px`` from the network's position, or
non-finite) keeps the network's position, with photons and backgrounds fitted at it
(linear least squares) and σ from the information there; it is flagged ``diverged``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from voxloc.fitting._light import neighbour_light
from voxloc.fitting._lm import CONVERGED, DIVERGED, MAX_ITER, fit_batch
from voxloc.fitting.windows import CameraMaps, Windows
from voxloc.locs import FIT_FLAGS
from voxloc.physics.crlb import diag_inverse
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise
from voxloc.physics.spline import SplinePSF
from voxloc.types import FloatArray

__all__ = [
    "FitOptions",
    "FitResult",
    "JointResult",
    "fit_joint",
    "fit_windows",
    "others_light",
    "z_bounds_nm",
    "LOGLIK_TOL",
]

#: an accepted step that gains less log-likelihood than this has converged (a change of 0.5
#: is one standard deviation of the estimate along the step)
LOGLIK_TOL = 1e-4


@dataclass(frozen=True)
class FitOptions:
    """How detections are fitted (config ``localize``: ``fit_window_px``, ``fit_max_iter``,
    ``fit_neighbour_nm``, ``fit_crowded``)."""

    window_px: int = 9
    max_iter: int = 30
    tol_nm: float = 0.05
    max_shift_px: float = 1.5

    def __post_init__(self) -> None:
        if self.window_px < 3 or self.window_px % 2 == 0:
            raise ValueError(f"fit window must be odd and >= 3 px, got {self.window_px}")
        if self.max_iter < 1:
            raise ValueError(f"fit_max_iter must be >= 1, got {self.max_iter}")


@dataclass
class FitResult:
    """Per detection: θ̂ (N, 3 + 1 + P), σ of (x, y, z) (N, 3) nm, χ² per degree of freedom,
    iterations, convergence, :data:`voxloc.locs.FIT_FLAGS` bits and the negative
    log-likelihood at θ̂ (up to terms free of μ: comparable between models of one window)."""

    theta: FloatArray
    sigma_nm: FloatArray
    chi2_dof: FloatArray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray
    nll: FloatArray

    def copy(self) -> FitResult:
        """A copy whose arrays can be changed without changing these."""
        return FitResult(**{f.name: getattr(self, f.name).copy() for f in fields(self)})


def z_bounds_nm(microscope: Microscope, z_range_nm: tuple[float, float]) -> tuple[float, float]:
    """The depths a fit may take: the network's z range, within a spline's own range."""
    lo, hi = float(z_range_nm[0]), float(z_range_nm[1])
    if isinstance(microscope.psf, SplinePSF):
        s_lo, s_hi = microscope.psf.z_range_nm
        lo, hi = max(lo, s_lo), min(hi, s_hi)
    return lo, hi


def _noise_tuple(noise: PixelNoise) -> tuple[int, float, float, float]:
    """The kernels' form of the pixel noise: (0 constant | 1 poisson, excess, read var, constant var)."""
    kind = 0 if noise.kind == "constant" else 1
    return kind, float(noise.excess), float(noise.read_var_photons), float(noise.constant_var)


def _max_shift_nm(microscope: Microscope, options: FitOptions) -> float:
    """How far (nm, x and y) a fitted position may go from its start."""
    return max(float(options.max_shift_px) * microscope.px_size_nm, 1e-9)


def _starts(
    starts_nm: FloatArray, p: int, z_bounds: tuple[float, float], shift_nm: float
) -> tuple[FloatArray, FloatArray]:
    """θ0 (M, 4 K + P) with K emitters at ``starts_nm`` (M, K, 3) (z clipped to its bounds,
    N and b 0: solved first by the kernel) and the bounds (M, 3 K, 2) of each one's x, y, z."""
    m, k, _ = starts_nm.shape
    theta0 = np.zeros((m, 4 * k + p))
    bounds = np.empty((m, 3 * k, 2))
    for e in range(k):
        theta0[:, 4 * e : 4 * e + 2] = starts_nm[:, e, :2]
        theta0[:, 4 * e + 2] = np.clip(starts_nm[:, e, 2], *z_bounds)
        bounds[:, 3 * e : 3 * e + 2, 0] = starts_nm[:, e, :2] - shift_nm
        bounds[:, 3 * e : 3 * e + 2, 1] = starts_nm[:, e, :2] + shift_nm
        bounds[:, 3 * e + 2] = z_bounds
    return theta0, bounds


def _run(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    windows: Windows,
    theta0: FloatArray,
    bounds: FloatArray,
    skip: np.ndarray,
    extra: FloatArray | None,
    shift_px: FloatArray | None,
    rows: np.ndarray,
    options: FitOptions,
) -> tuple[FloatArray, ...]:
    """The compiled fit of M windows' K emitters from θ0 (M, 4 K + P) within ``bounds``
    (M, 3 K, 2): θ̂, H, the variances of each emitter's x, y, z (M, 3 K), χ²/dof, NLL,
    iterations and status (:func:`voxloc.fitting._lm.fit_batch`)."""
    m, q = theta0.shape
    p = maps.n_planes
    k = (q - p) // 4
    n = windows.data.shape[-1]
    pm = microscope.patch_model(n)
    b_min = -noise.shift + 1e-3 if noise.kind == "poisson" else -np.inf
    shift = _max_shift_nm(microscope, options)
    opts = np.array([options.max_iter, options.tol_nm, LOGLIK_TOL, shift])
    extra = np.zeros((1, p, n, n)) if extra is None else np.asarray(extra, np.float64).reshape(m, p, n, n)
    shift_px = np.zeros((m, p, 2)) if shift_px is None else np.asarray(shift_px, np.float64)
    theta = np.empty((m, q))
    hess = np.empty((m, q, q))
    diag = np.empty((m, 4 * k - 1))
    chi2, nll = np.empty(m), np.empty(m)
    n_iter, status = np.empty(m, np.int64), np.empty(m, np.int64)
    fit_batch(
        (pm.kind, pm.gauss, pm.plane_z, pm.trans, pm.coeffs, pm.spline), np.ascontiguousarray(maps.inverse),
        float(microscope.px_size_nm), np.ascontiguousarray(windows.data, dtype=np.float64),
        np.ascontiguousarray(windows.mask), np.ascontiguousarray(windows.origin, np.int64),
        np.asarray(rows, np.int64), np.ascontiguousarray(extra),
        np.ascontiguousarray(np.broadcast_to(shift_px, (m, p, 2))), np.ascontiguousarray(theta0, np.float64),
        np.asarray(skip, bool), _noise_tuple(noise), b_min, np.ascontiguousarray(bounds, np.float64), opts,
        theta, hess, diag, chi2, nll, n_iter, status,
    )  # fmt: skip
    ill = np.isnan(diag).any(axis=1)
    if ill.any():
        diag[ill] = diag_inverse(hess[ill])[:, : 4 * k - 1]
    xyz = np.concatenate([np.arange(4 * e, 4 * e + 3) for e in range(k)])
    return theta, hess, diag[:, xyz], chi2, nll, n_iter, status


def fit_windows(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    windows: Windows,
    x_nm: FloatArray,
    y_nm: FloatArray,
    z_nm: FloatArray,
    *,
    z_bounds: tuple[float, float],
    options: FitOptions = FitOptions(),
    skip: np.ndarray | None = None,
    extra: FloatArray | None = None,
    shift_px: FloatArray | None = None,
    rows: np.ndarray | None = None,
) -> FitResult:
    """Fit every detection of one batch from the network's (x, y, z) (module doc).

    ``skip`` (N,) detections keep the network's position (photons and backgrounds fitted at
    it, σ there, n_iter 0), e.g. crowded ones when so configured. ``extra`` (N, P, n, n) is
    light of other molecules, known, added to each window's μ (the neighbours'
    model in :mod:`voxloc.fitting.refine`). ``shift_px`` (N, P, 2) moves where camera k
    sees each detection beyond the registration (a simulation's per-frame plane drift Δk, Eq. 7).
    With ``rows``, only those windows are fitted (x, y, z and the per-detection arguments
    are theirs), without copying them.
    """
    n_det = len(x_nm)
    rows = np.arange(n_det) if rows is None else np.asarray(rows, np.int64)
    p = maps.n_planes
    q = 4 + p
    xyz = np.stack([np.asarray(v, np.float64) for v in (x_nm, y_nm, z_nm)], axis=-1).reshape(n_det, 3)
    xyz[:, 2] = np.clip(xyz[:, 2], *z_bounds)
    flags = np.where(windows.edge[rows], FIT_FLAGS["edge"], 0) | np.where(
        windows.bad[rows], FIT_FLAGS["saturated"], 0
    )
    flags = flags.astype(np.int16)
    if n_det == 0:
        empty = np.zeros(0)
        return FitResult(
            np.zeros((0, q)), np.zeros((0, 3)), empty, np.zeros(0, np.int16), np.zeros(0, bool), flags, empty
        )
    # a start that is not a number cannot be fitted: computed at a harmless place, skipped,
    # and given back as it came (NaN), flagged diverged
    no_start = ~np.isfinite(xyz).all(axis=1)
    start_nan = xyz[no_start].copy()
    xyz[no_start] = [0.0, 0.0, z_bounds[0]]
    skip = no_start if skip is None else (np.asarray(skip, bool) | no_start)
    theta0, bounds = _starts(xyz[:, None, :], p, z_bounds, _max_shift_nm(microscope, options))
    theta, hess, var, chi2, nll, n_iter, status = _run(
        microscope, noise, maps, windows, theta0, bounds, skip, extra, shift_px, rows, options
    )
    flags[status == MAX_ITER] |= FIT_FLAGS["max_iter"]
    flags[status == DIVERGED] |= FIT_FLAGS["diverged"]
    sigma = np.sqrt(var)
    if no_start.any():
        theta[no_start, :3] = start_nan
        sigma[no_start] = np.nan
        chi2[no_start] = np.nan
        flags[no_start] |= FIT_FLAGS["diverged"]
    return FitResult(theta, sigma, chi2, n_iter.astype(np.int16), status == CONVERGED, flags, nll)


@dataclass
class JointResult:
    """Per window of K emitters: θ̂ (M, 4 K + P) = (x, y, z, N of each, then b per plane), σ
    (M, K, 3) nm, χ²/dof, the negative log-likelihood, iterations and status
    (:data:`voxloc.fitting._lm.CONVERGED`...)."""

    theta: FloatArray
    sigma_nm: FloatArray
    chi2_dof: FloatArray
    nll: FloatArray
    n_iter: np.ndarray
    status: np.ndarray

    def take(self, rows: np.ndarray) -> JointResult:
        """The fits of windows ``rows`` (an index or a mask)."""
        return JointResult(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def fit_joint(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    windows: Windows,
    starts_nm: FloatArray,
    *,
    z_bounds: tuple[float, float],
    options: FitOptions = FitOptions(),
    extra: FloatArray | None = None,
    shift_px: FloatArray | None = None,
) -> JointResult:
    """Fit K emitters jointly in each window (one background per plane shared), from
    ``starts_nm`` (M, K, 3) = their (x, y, z): the multi-emitter model of close pairs
    (:mod:`voxloc.fitting.groups`); each emitter kept within ``max_shift_px`` of its start."""
    m, k, _ = starts_nm.shape
    theta0, bounds = _starts(starts_nm, maps.n_planes, z_bounds, _max_shift_nm(microscope, options))
    skip = ~np.isfinite(starts_nm).all(axis=(1, 2))
    theta0[skip] = np.nan_to_num(theta0[skip])
    theta, _, var, chi2, nll, n_iter, status = _run(
        microscope, noise, maps, windows, theta0, bounds, skip, extra, shift_px, np.arange(m), options
    )
    return JointResult(theta, np.sqrt(var).reshape(m, k, 3), chi2, nll, n_iter, status)


def others_light(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    theta: FloatArray,
    others: tuple[np.ndarray, np.ndarray, np.ndarray],
    windows: Windows,
    given: FloatArray | None = None,
    shift_px: FloatArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """The light of other molecules on some detections' windows, and how much it changed.

    ``others`` = (rows, ptr, j): row r is the window of detection rows[r] (its origin and
    mask in ``windows``, of all detections), lit by the molecules j[ptr[r]:ptr[r + 1]] at
    their θ (position and photons; ``shift_px`` (N, P, 2) as for :func:`fit_windows`).
    Returns the light (R, P, n, n) and, with ``given`` (R, P, n, n), Σ (light - given)² / Var
    per row over the window's pixels (Var of the noise at that detection's fitted
    background; else zeros)."""
    rows, ptr, j = others
    n = windows.data.shape[-1]
    p = maps.n_planes
    pm = microscope.patch_model(n)
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    shift = np.zeros((len(theta), p, 2)) if shift_px is None else shift_px
    out = np.empty((len(rows), p, n, n))
    change = np.zeros(len(rows))
    given = np.zeros((0, p, n, n)) if given is None else np.ascontiguousarray(given, dtype=np.float64)
    if len(rows):
        neighbour_light(
            (pm.kind, pm.gauss, pm.plane_z, pm.trans, pm.coeffs, pm.spline), np.ascontiguousarray(maps.inverse),
            float(microscope.px_size_nm), theta, np.ascontiguousarray(shift, dtype=np.float64),
            np.ascontiguousarray(windows.origin, dtype=np.int64), np.ascontiguousarray(windows.mask),
            np.asarray(rows, np.int64), np.asarray(ptr, np.int64), np.asarray(j, np.int64), given,
            _noise_tuple(noise), out, change,
        )  # fmt: skip
    return out, change
