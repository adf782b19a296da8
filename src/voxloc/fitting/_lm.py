"""The compiled (numba) Levenberg-Marquardt fit of :func:`voxloc.fitting.mle.fit_windows`:
one molecule per thread of a batch (``prange``), its model from the window kernels of
:mod:`voxloc.physics._patch_kernels`, its likelihood, information and score from
:mod:`voxloc.fitting._likelihood`. The method is the module doc of
:mod:`voxloc.fitting.mle`; this file holds only its loops.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from voxloc.fitting._likelihood import accumulate
from voxloc.fitting._linalg import cholesky_solve, inverse_diagonal
from voxloc.physics._patch_kernels import plane_window, work_array

__all__ = ["CONVERGED", "MAX_ITER", "DIVERGED", "SKIPPED", "fit_batch"]

#: status of each fit
CONVERGED, MAX_ITER, DIVERGED, SKIPPED = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _model(pm, inv, s, origin, shift, th, n, deriv, g, d, work):  # noqa: ANN001
    """The PSF windows g (K, P, n, n) (and d (K, P, 3, n, n)) of the K emitters of θ =
    (x, y, z, N per emitter, then b per plane) on one window."""
    kind, gp, plane_z, trans, cf, sp = pm
    for e in range(g.shape[0]):
        x = th[4 * e] / s
        y = th[4 * e + 1] / s
        for k in range(g.shape[1]):
            xk = inv[k, 0, 0] * x + inv[k, 0, 1] * y + inv[k, 0, 2] + shift[k, 0]
            yk = inv[k, 1, 0] * x + inv[k, 1, 1] * y + inv[k, 1, 2] + shift[k, 1]
            plane_window(
                kind, gp, plane_z, trans, cf, sp, k, xk, yk, th[4 * e + 2], origin[k, 0], origin[k, 1], n,
                deriv, g[e], d[e], work,
            )  # fmt: skip


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _linear_photons(th, data, mask, extra, g, b_min) -> None:  # noqa: ANN001
    """N of each emitter and b_k of θ by linear least squares at their positions (unit
    weights), N >= 1; g (K, P, n, n). The normal equations' sums are taken plane by plane
    in scalars (the pixel loops vectorise)."""
    n_e, p, n = g.shape[0], g.shape[1], g.shape[2]
    nn = n * n
    q = n_e + p
    a = np.zeros((q, q))
    rhs = np.zeros(q)
    on = np.empty(nn)
    y = np.empty(nn)
    for k in range(p):
        mk = mask[k].reshape(nn)
        dk = data[k].reshape(nn)
        ek = extra[k].reshape(nn)
        count = 0.0
        sy = 0.0
        for t in range(nn):
            o = 1.0 if mk[t] else 0.0
            v = o * (dk[t] - ek[t])
            on[t] = o
            y[t] = v
            count += o
            sy += v
        a[n_e + k, n_e + k] = max(count, 1.0)
        rhs[n_e + k] = sy
        for e in range(n_e):
            ge = g[e, k].reshape(nn)
            sg = 0.0
            sgy = 0.0
            for t in range(nn):
                sg += on[t] * ge[t]
                sgy += ge[t] * y[t]
            a[e, n_e + k] = sg
            a[n_e + k, e] = sg
            rhs[e] += sgy
            for f in range(e + 1):
                gf = g[f, k].reshape(nn)
                sgg = 0.0
                for t in range(nn):
                    sgg += on[t] * ge[t] * gf[t]
                a[e, f] += sgg
    for e in range(n_e):
        for f in range(e):
            a[f, e] = a[e, f]
    scale = 0.0
    for i in range(q):
        scale = max(scale, a[i, i])
    for i in range(q):
        a[i, i] += 1e-9 * max(scale, 1.0)
    sol = np.zeros(q)
    if not cholesky_solve(a, rhs, sol):
        return
    for e in range(n_e):
        th[4 * e + 3] = max(sol[e], 1.0)
    for k in range(p):
        th[4 * n_e + k] = max(sol[n_e + k], b_min)


@njit(cache=True, nogil=True)
def _fit_one(pm, inv, s, data, mask, extra, origin, shift, th0, skip, noise, b_min, bounds, opts,  # noqa: ANN001
             theta_out, hess_out, var_out, chi2_out, nll_out, iter_out, status_out) -> None:  # fmt: skip
    p, n = data.shape[0], data.shape[1]
    q = len(th0)
    n_e = (q - p) // 4
    max_iter, tol_nm, ll_tol, max_shift_nm = int(opts[0]), opts[1], opts[2], opts[3]
    g = np.empty((n_e, p, n, n))
    d = np.empty((n_e, p, 3, n, n))
    work = work_array(n)
    start = th0.copy()
    # g and d do not depend on N and b: one evaluation serves the linear start and the fit
    _model(pm, inv, s, origin, shift, start, n, True, g, d, work)
    _linear_photons(start, data, mask, extra, g, b_min)
    n_pix = 0
    for k in range(p):
        for i in range(n):
            for j in range(n):
                if mask[k, i, j]:
                    n_pix += 1
    th = start.copy()
    hess = np.zeros((q, q))
    grad = np.zeros(q)
    status = SKIPPED
    n_iter = 0
    cost = np.inf
    chi2 = np.nan
    cost, chi2 = accumulate(th, inv, data, mask, extra, g, d, noise, hess, grad)
    if not skip and n_pix >= 2 * q:
        hess_t = np.zeros((q, q))
        grad_t = np.zeros(q)
        damped = np.zeros((q, q))
        step = np.zeros(q)
        trial = np.zeros(q)
        lam = 1e-3
        status = MAX_ITER
        while n_iter < max_iter:
            for a in range(q):
                for b in range(q):
                    damped[a, b] = hess[a, b]
                damped[a, a] += lam * hess[a, a] + 1e-12
            n_iter += 1
            ok = cholesky_solve(damped, grad, step)
            better = False
            small = False
            if ok:
                # the Newton decrement: the log-likelihood this step would gain on the
                # quadratic model; below the tolerance, θ is at the maximum already
                decrement = 0.0
                for a in range(q):
                    decrement += step[a] * grad[a]
                if lam <= 1e-3 and 0.5 * decrement < ll_tol:
                    status = CONVERGED
                    break
                for a in range(q):
                    trial[a] = th[a] + step[a]
                for e in range(n_e):
                    for a in range(3):
                        trial[4 * e + a] = min(
                            max(trial[4 * e + a], bounds[3 * e + a, 0]), bounds[3 * e + a, 1]
                        )
                    trial[4 * e + 3] = max(trial[4 * e + 3], 1.0)
                for k in range(p):
                    trial[4 * n_e + k] = max(trial[4 * n_e + k], b_min)
                _model(pm, inv, s, origin, shift, trial, n, True, g, d, work)
                c_t, chi2_t = accumulate(trial, inv, data, mask, extra, g, d, noise, hess_t, grad_t)
                better = math.isfinite(c_t) and c_t <= cost
                moved = 0.0
                photons_moved = False
                for e in range(n_e):
                    for a in range(3):
                        moved = max(moved, abs(trial[4 * e + a] - th[4 * e + a]))
                    photons_moved |= abs(trial[4 * e + 3] - th[4 * e + 3]) >= 1e-4 * trial[4 * e + 3]
                small = (moved < tol_nm and not photons_moved) or cost - c_t < ll_tol
                if better:
                    th[:] = trial
                    hess[:] = hess_t
                    grad[:] = grad_t
                    cost = c_t
                    chi2 = chi2_t
            lam = max(lam / 10, 1e-7) if better else lam * 10
            if (better and small) or (not better and lam > 1e6):
                status = CONVERGED
                break
        # out of bounds (at a clip) or not a number: the start kept, flagged
        failed = not math.isfinite(cost)
        for e in range(n_e):
            for a in range(2):
                failed |= abs(th[4 * e + a] - start[4 * e + a]) >= max_shift_nm * (1 - 1e-9)
        for a in range(q):
            failed |= not math.isfinite(th[a])
        if failed:
            status = DIVERGED
    if status == DIVERGED:
        th[:] = start
        _model(pm, inv, s, origin, shift, th, n, True, g, d, work)
        cost, chi2 = accumulate(th, inv, data, mask, extra, g, d, noise, hess, grad)
    theta_out[:] = th
    hess_out[:, :] = hess
    if not inverse_diagonal(hess, var_out):
        var_out[:] = np.nan
    chi2_out[0] = chi2 / max(n_pix - q, 1)
    nll_out[0] = cost
    iter_out[0] = n_iter
    status_out[0] = status


@njit(cache=True, parallel=True)
def fit_batch(pm, inv, s, data, mask, origin, idx, extra, shift, theta0, skip, noise, b_min, bounds, opts,  # noqa: ANN001
              theta_out, hess_out, var_out, chi2_out, nll_out, iter_out, status_out) -> None:  # fmt: skip
    """Fit the K emitters of each window fit m from θ0[m] = (x, y, z, N of each emitter, then
    b per plane) on window idx[m] (module doc of :mod:`voxloc.fitting.mle`).

    ``pm`` the :class:`voxloc.physics._patch_kernels.PatchModel` as a tuple, ``inv`` (P, 3, 3)
    the inverse registrations; the windows' ``data``, ``mask`` (of the pixels in the
    likelihood) (W, P, n, n) and ``origin`` (W, P, 2); per fit ``extra`` (M or 1, P, n, n),
    ``shift`` (M, P, 2) px, ``bounds`` (M, 3 K, 2) of each emitter's x, y, z; ``noise`` =
    (0 constant | 1 poisson, excess, read variance, constant variance), ``opts`` =
    (max_iter, tol_nm, log-likelihood tolerance, max shift nm). Writes θ̂, H at θ̂, the first
    ``var_out.shape[1]`` entries of diag(H⁻¹) (NaN where H is ill-conditioned), χ²/dof, the
    negative log-likelihood (up to terms free of μ), iterations and status."""
    e_step = 1 if extra.shape[0] > 1 else 0
    for m in prange(theta0.shape[0]):
        w = idx[m]
        _fit_one(
            pm, inv, s, data[w], mask[w], extra[m * e_step], origin[w], shift[m], theta0[m], skip[m], noise, b_min,
            bounds[m], opts, theta_out[m], hess_out[m], var_out[m], chi2_out[m : m + 1], nll_out[m : m + 1],
            iter_out[m : m + 1], status_out[m : m + 1],
        )  # fmt: skip
