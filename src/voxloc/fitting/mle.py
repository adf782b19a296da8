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
negative log-likelihood. Batched over every detection of a network batch (numpy), with a
convergence test on the step (``tol_nm`` in position and 1e-4 in relative photons, or less
than :data:`LOGLIK_TOL` of log-likelihood gained) and an iteration cap. σ_x, σ_y, σ_z are the square roots of the diagonal of H⁻¹ at the estimate
(the CRLB with photons and backgrounds unknown too).

A fit that leaves its bounds (more than ``max_shift_px`` from the network's position, or
non-finite) keeps the network's position, with photons and backgrounds fitted at it
(linear least squares) and σ from the information there; it is flagged ``diverged``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxloc.fitting.windows import CameraMaps, Windows
from voxloc.locs import FIT_FLAGS
from voxloc.physics.crlb import diag_inverse
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise
from voxloc.physics.spline import SplinePSF
from voxloc.types import FloatArray

__all__ = ["FitOptions", "FitResult", "fit_windows", "z_bounds_nm", "LOGLIK_TOL"]

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
    iterations, convergence and :data:`voxloc.locs.FIT_FLAGS` bits."""

    theta: FloatArray
    sigma_nm: FloatArray
    chi2_dof: FloatArray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray


def z_bounds_nm(microscope: Microscope, z_range_nm: tuple[float, float]) -> tuple[float, float]:
    """The depths a fit may take: the network's z range, within a spline's own range."""
    lo, hi = float(z_range_nm[0]), float(z_range_nm[1])
    if isinstance(microscope.psf, SplinePSF):
        s_lo, s_hi = microscope.psf.z_range_nm
        lo, hi = max(lo, s_lo), min(hi, s_hi)
    return lo, hi


class _Model:
    """μ(θ), J(θ) and the negative log-likelihood on fixed windows."""

    def __init__(
        self,
        microscope: Microscope,
        noise: PixelNoise,
        maps: CameraMaps,
        win: Windows,
        n: int,
        extra: FloatArray | None = None,
        shift_px: FloatArray | None = None,
    ) -> None:
        self.mic = microscope
        self.maps = maps
        self.n = n
        self.p = maps.n_planes
        self.s = float(microscope.px_size_nm)
        self.data = win.data.reshape(len(win.data), -1)
        self.mask = win.mask.reshape(len(win.mask), -1)
        self.origin = win.origin
        self.extra = None if extra is None else np.asarray(extra, np.float64).reshape(len(win.data), -1)
        self.shift = None if shift_px is None else np.asarray(shift_px, np.float64)
        self.noise = noise
        self.b_min = -noise.shift + 1e-3 if noise.kind == "poisson" else -np.inf

    def positions(self, idx: np.ndarray, theta: FloatArray) -> FloatArray:
        """Where camera k sees detections ``idx`` at θ: (M, P, 2) px."""
        pos = self.maps.positions_px(theta[:, 0], theta[:, 1], self.s)
        return pos if self.shift is None else pos + self.shift[idx]

    def evaluate(self, idx: np.ndarray, theta: FloatArray, derivatives: bool):
        """μ (M, P n²) and J (M, Q, P n²) of detections ``idx`` at θ (M, Q)."""
        pos = self.positions(idx, theta)
        g, dg = self.mic.patches(
            pos[..., 0], pos[..., 1], theta[:, 2], self.origin[idx], self.n, derivatives=derivatives
        )
        m = len(idx)
        photons = theta[:, 3]
        mu = photons[:, None, None, None] * g + theta[:, 4:, None, None]
        mu = mu.reshape(m, -1)
        if self.extra is not None:
            mu = mu + self.extra[idx]
        if not derivatives:
            return mu, None
        lin = self.maps.linear  # (P, 2, 2): ∂(x_k, y_k)/∂(x, y)
        nn = self.n * self.n
        jac = np.zeros((m, 4 + self.p, self.p, nn))
        dgx = dg[:, :, 0].reshape(m, self.p, nn)
        dgy = dg[:, :, 1].reshape(m, self.p, nn)
        ph = photons[:, None, None]
        jac[:, 0] = ph * (dgx * lin[None, :, 0, 0, None] + dgy * lin[None, :, 1, 0, None])
        jac[:, 1] = ph * (dgx * lin[None, :, 0, 1, None] + dgy * lin[None, :, 1, 1, None])
        jac[:, 2] = ph * dg[:, :, 2].reshape(m, self.p, nn)
        jac[:, 3] = g.reshape(m, self.p, nn)
        for k in range(self.p):
            jac[:, 4 + k, k] = 1.0
        return mu, jac.reshape(m, 4 + self.p, -1)

    def weights(self, idx: np.ndarray, mu: FloatArray) -> FloatArray:
        return self.mask[idx] / self.noise.variance(mu)

    def nll(self, idx: np.ndarray, mu: FloatArray) -> FloatArray:
        return self.noise.nll(self.data[idx], mu, self.mask[idx])


def _linear_photons(model: _Model, idx: np.ndarray, theta: FloatArray) -> FloatArray:
    """θ with N and b_k by linear least squares at its position (unit weights), N >= 1."""
    pos = model.positions(idx, theta)
    g, _ = model.mic.patches(pos[..., 0], pos[..., 1], theta[:, 2], model.origin[idx], model.n)
    m, p = len(idx), model.p
    g = g.reshape(m, p, -1)
    mask = model.mask[idx].reshape(m, p, -1)
    y = model.data[idx] if model.extra is None else model.data[idx] - model.extra[idx]
    y = y.reshape(m, p, -1)
    a = np.zeros((m, 1 + p, 1 + p))
    rhs = np.zeros((m, 1 + p))
    a[:, 0, 0] = np.sum(mask * g * g, axis=(1, 2))
    rhs[:, 0] = np.sum(mask * g * y, axis=(1, 2))
    for k in range(p):
        a[:, 0, 1 + k] = a[:, 1 + k, 0] = np.sum(mask[:, k] * g[:, k], axis=1)
        a[:, 1 + k, 1 + k] = np.maximum(np.sum(mask[:, k], axis=1), 1.0)
        rhs[:, 1 + k] = np.sum(mask[:, k] * y[:, k], axis=1)
    a += 1e-9 * np.eye(1 + p)
    sol = np.linalg.solve(a, rhs[..., None])[..., 0]
    out = theta.copy()
    out[:, 3] = np.maximum(sol[:, 0], 1.0)
    out[:, 4:] = np.maximum(sol[:, 1:], model.b_min)
    return out


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
) -> FitResult:
    """Fit every detection of one batch from the network's (x, y, z) (module doc).

    ``skip`` (N,) detections keep the network's position (photons and backgrounds fitted at
    it, σ there, n_iter 0), e.g. crowded ones when so configured. ``extra`` (N, P, n, n) is
    light of other molecules, known, added to each window's μ (the neighbours'
    model in :mod:`voxloc.fitting.refine`). ``shift_px`` (N, P, 2) moves where camera k
    sees each detection beyond the registration (a simulation's per-frame plane drift Δk, Eq. 7).
    """
    n_det = len(x_nm)
    p = maps.n_planes
    q = 4 + p
    theta0 = np.zeros((n_det, q))
    theta0[:, 0], theta0[:, 1] = x_nm, y_nm
    theta0[:, 2] = np.clip(z_nm, *z_bounds)
    flags = np.where(windows.edge, FIT_FLAGS["edge"], 0) | np.where(windows.bad, FIT_FLAGS["saturated"], 0)
    flags = flags.astype(np.int16)
    n_iter = np.zeros(n_det, np.int16)
    converged = np.zeros(n_det, bool)
    if n_det == 0:
        return FitResult(theta0, np.zeros((0, 3)), np.zeros(0), n_iter, converged, flags)
    # a start that is not a number cannot be fitted: computed at a harmless place, skipped,
    # and given back as it came (NaN), flagged diverged
    no_start = ~np.isfinite(theta0[:, :3]).all(axis=1)
    start_nan = theta0[no_start, :3].copy()
    theta0[no_start, :3] = [0.0, 0.0, z_bounds[0]]
    model = _Model(microscope, noise, maps, windows, options.window_px, extra, shift_px)
    everyone = np.arange(n_det)
    theta0 = _linear_photons(model, everyone, theta0)
    theta = theta0.copy()
    too_few = (model.mask.sum(axis=1) < 2 * q) | no_start
    skip = too_few if skip is None else (np.asarray(skip, bool) | too_few)
    active = np.flatnonzero(~skip)
    lam = np.full(n_det, 1e-3)
    mu_all = np.zeros((n_det, model.data.shape[1]))
    cost = np.full(n_det, np.inf)
    hess = np.zeros((n_det, q, q))
    grad = np.zeros((n_det, q))

    def refresh(idx: np.ndarray, th: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        mu, jac = model.evaluate(idx, th, True)
        w = model.weights(idx, mu)
        jw = jac * w[:, None, :]
        h = np.matmul(jw, jac.transpose(0, 2, 1))
        gr = np.matmul(jw, (model.data[idx] - mu)[..., None])[..., 0]
        return mu, h, gr, model.nll(idx, mu)

    if len(active):
        mu_all[active], hess[active], grad[active], cost[active] = refresh(active, theta[active])
    s = float(microscope.px_size_nm)
    lo = np.concatenate([theta0[:, :2] - options.max_shift_px * s, np.full((n_det, 1), z_bounds[0])], axis=1)
    hi = np.concatenate([theta0[:, :2] + options.max_shift_px * s, np.full((n_det, 1), z_bounds[1])], axis=1)
    eye = np.eye(q)
    for _ in range(options.max_iter):
        if not len(active):
            break
        a = active
        h = hess[a]
        damped = h + lam[a, None, None] * (h * eye) + 1e-12 * eye
        try:
            step = np.linalg.solve(damped, grad[a][..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.einsum("mqr,mr->mq", np.linalg.pinv(damped), grad[a])
        trial = theta[a] + step
        trial[:, :3] = np.clip(trial[:, :3], lo[a], hi[a])
        trial[:, 3] = np.maximum(trial[:, 3], 1.0)
        trial[:, 4:] = np.maximum(trial[:, 4:], model.b_min)
        mu_t, h_t, g_t, c_t = refresh(a, trial)
        n_iter[a] += 1
        better = np.isfinite(c_t) & (c_t <= cost[a])
        gain = cost[a] - c_t  # the log-likelihood gained; 0.5 is one standard deviation
        moved = np.abs(trial - theta[a])
        acc = a[better]
        theta[acc], mu_all[acc], hess[acc], grad[acc], cost[acc] = (
            trial[better],
            mu_t[better],
            h_t[better],
            g_t[better],
            c_t[better],
        )
        lam[a] = np.where(better, np.maximum(lam[a] / 10, 1e-7), lam[a] * 10)
        small = (moved[:, :3].max(axis=1) < options.tol_nm) & (moved[:, 3] < 1e-4 * trial[:, 3])
        small |= gain < LOGLIK_TOL
        stuck = ~better & (lam[a] > 1e6)  # no step lowers the likelihood: at its minimum
        done = (better & small) | stuck
        converged[a[done]] = True
        active = a[~done]
    flags[active] |= FIT_FLAGS["max_iter"]
    # out of bounds (at a clip) or non-finite: keep the network's position
    at_bound = (np.abs(theta[:, :2] - theta0[:, :2]) >= options.max_shift_px * s * (1 - 1e-9)).any(axis=1)
    failed = at_bound | ~np.isfinite(theta).all(axis=1) | ~np.isfinite(cost) & ~skip
    fallback = np.flatnonzero(failed | skip)
    theta[fallback] = theta0[fallback]
    flags[np.flatnonzero(failed & ~skip)] |= FIT_FLAGS["diverged"]
    converged[fallback] = False
    if len(fallback):
        mu_all[fallback], hess[fallback], grad[fallback], cost[fallback] = refresh(fallback, theta[fallback])
    var = diag_inverse(hess)
    sigma = np.sqrt(var[:, :3])
    resid = model.mask * (model.data - mu_all) ** 2 / noise.variance(mu_all)
    dof = np.maximum(model.mask.sum(axis=1) - q, 1)
    chi2 = resid.sum(axis=1) / dof
    if no_start.any():
        theta[no_start, :3] = start_nan
        sigma[no_start] = np.nan
        chi2[no_start] = np.nan
        flags[no_start] |= FIT_FLAGS["diverged"]
    return FitResult(theta, sigma, chi2, n_iter, converged, flags)
