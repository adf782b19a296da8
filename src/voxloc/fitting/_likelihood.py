"""A window's Poisson or Gaussian log-likelihood under the fit's K emitters, compiled
(numba): with the Fisher information H = Jᵀ W J and the score Jᵀ W (y - μ) that the
Levenberg-Marquardt loop of :mod:`voxloc.fitting._lm` steps with (the likelihoods are
the module doc of :mod:`voxloc.fitting.mle`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["accumulate"]


@njit(cache=True, nogil=True)
def _mirror(hess, from_upper) -> None:  # noqa: ANN001
    """Fill the other triangle of H from the one that was summed."""
    for a in range(hess.shape[0]):
        for b in range(a):
            if from_upper:
                hess[a, b] = hess[b, a]
            else:
                hess[b, a] = hess[a, b]


@njit(cache=True, nogil=True)
def accumulate(th, inv, data, mask, extra, g, d, noise, hess, grad) -> tuple[float, float]:  # noqa: ANN001
    """Fisher information H = Jᵀ W J, score Jᵀ W (y - μ) (when ``hess`` has rows), the
    negative log-likelihood and Σ (y - μ)² / Var(μ) of a window's K emitters at θ."""
    if g.shape[0] == 1:
        return _accumulate_one(th, inv, data, mask, extra, g[0], d[0], noise, hess, grad)
    return _accumulate_many(th, inv, data, mask, extra, g, d, noise, hess, grad)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _accumulate_one(th, inv, data, mask, extra, g, d, noise, hess, grad) -> tuple[float, float]:  # noqa: ANN001
    """:func:`accumulate` of one emitter (the ``mask`` as a 0 / 1 weight: the pixel loop
    has no branch and vectorises). Per plane k the Jacobian has 5 non-zero columns (x, y,
    z, N, b_k): their 15 products are summed in scalars, then added to H."""
    kind, excess, read_var, const_var = noise
    p, n = g.shape[0], g.shape[1]
    with_h = hess.shape[0] > 0
    if with_h:
        hess[:] = 0.0
        grad[:] = 0.0
    photons = th[3]
    c = read_var / excess
    cost = 0.0
    chi2 = 0.0
    nn = n * n
    for k in range(p):
        l00, l01, l10, l11 = inv[k, 0, 0], inv[k, 0, 1], inv[k, 1, 0], inv[k, 1, 1]
        b = th[4 + k]
        gk = g[k].reshape(nn)
        yk = data[k].reshape(nn)
        mk = mask[k].reshape(nn)
        ek = extra[k].reshape(nn)
        dxk = d[k, 0].reshape(nn)
        dyk = d[k, 1].reshape(nn)
        dzk = d[k, 2].reshape(nn)
        h00 = h01 = h02 = h03 = h04 = h11 = h12 = h13 = h14 = h22 = h23 = h24 = h33 = h34 = h44 = 0.0
        g0 = g1 = g2 = g3 = g4 = 0.0
        for t in range(nn):
            gv = gk[t]
            mu = photons * gv + b + ek[t]
            y = yk[t]
            r = y - mu
            on = 1.0 if mk[t] else 0.0
            if kind == 0:
                w = on / const_var
                cost += 0.5 * r * r * w
            else:
                w = on / (excess * max(mu, 0.0) + read_var)
                mu_s = max(mu + c, 1e-9) / excess
                cost += on * (mu_s - max(y + c, 0.0) / excess * math.log(mu_s))
            chi2 += r * r * w
            if not with_h:
                continue
            j0 = photons * (dxk[t] * l00 + dyk[t] * l10)
            j1 = photons * (dxk[t] * l01 + dyk[t] * l11)
            j2 = photons * dzk[t]
            w0, w1, w2, w3 = w * j0, w * j1, w * j2, w * gv
            g0 += w0 * r
            g1 += w1 * r
            g2 += w2 * r
            g3 += w3 * r
            g4 += w * r
            h00 += w0 * j0
            h01 += w0 * j1
            h02 += w0 * j2
            h03 += w0 * gv
            h04 += w0
            h11 += w1 * j1
            h12 += w1 * j2
            h13 += w1 * gv
            h14 += w1
            h22 += w2 * j2
            h23 += w2 * gv
            h24 += w2
            h33 += w3 * gv
            h34 += w3
            h44 += w
        if with_h:
            e = 4 + k
            grad[0] += g0
            grad[1] += g1
            grad[2] += g2
            grad[3] += g3
            grad[e] += g4
            hess[0, 0] += h00
            hess[0, 1] += h01
            hess[0, 2] += h02
            hess[0, 3] += h03
            hess[0, e] += h04
            hess[1, 1] += h11
            hess[1, 2] += h12
            hess[1, 3] += h13
            hess[1, e] += h14
            hess[2, 2] += h22
            hess[2, 3] += h23
            hess[2, e] += h24
            hess[3, 3] += h33
            hess[3, e] += h34
            hess[e, e] += h44
    if with_h:
        _mirror(hess, True)
    return cost, chi2


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _accumulate_many(th, inv, data, mask, extra, g, d, noise, hess, grad) -> tuple[float, float]:  # noqa: ANN001
    """:func:`accumulate` of K > 1 emitters. Per plane the Jacobian's 4 K + 1 non-zero
    columns (x, y, z, N of each emitter and b_k) are formed over the window's pixels, then
    each entry of H and the score is one dot product over them (the pixel loops have no
    branch, the ``mask`` a 0 / 1 weight as in :func:`_accumulate_one`, and vectorise)."""
    kind, excess, read_var, const_var = noise
    n_e, p, n = g.shape[0], g.shape[1], g.shape[2]
    nn = n * n
    with_h = hess.shape[0] > 0
    if with_h:
        hess[:] = 0.0
        grad[:] = 0.0
    c = read_var / excess
    cost = 0.0
    chi2 = 0.0
    m = 4 * n_e + 1
    jac = np.empty((m, nn))
    mu = np.empty(nn)
    w = np.empty(nn)
    wr = np.empty(nn)
    col = np.empty(m, np.int64)
    for e in range(4 * n_e):
        col[e] = e
    for t in range(nn):
        jac[m - 1, t] = 1.0
    for k in range(p):
        l00, l01, l10, l11 = inv[k, 0, 0], inv[k, 0, 1], inv[k, 1, 0], inv[k, 1, 1]
        col[m - 1] = 4 * n_e + k
        b = th[4 * n_e + k]
        yk = data[k].reshape(nn)
        mk = mask[k].reshape(nn)
        ek = extra[k].reshape(nn)
        for t in range(nn):
            mu[t] = b + ek[t]
        for e in range(n_e):
            ph = th[4 * e + 3]
            ge = g[e, k].reshape(nn)
            for t in range(nn):
                mu[t] += ph * ge[t]
        for t in range(nn):
            y = yk[t]
            r = y - mu[t]
            on = 1.0 if mk[t] else 0.0
            if kind == 0:
                wt = on / const_var
                cost += 0.5 * r * r * wt
            else:
                wt = on / (excess * max(mu[t], 0.0) + read_var)
                mu_s = max(mu[t] + c, 1e-9) / excess
                cost += on * (mu_s - max(y + c, 0.0) / excess * math.log(mu_s))
            chi2 += r * r * wt
            w[t] = wt
            wr[t] = wt * r
        if not with_h:
            continue
        for e in range(n_e):
            ph = th[4 * e + 3]
            ge = g[e, k].reshape(nn)
            dx = d[e, k, 0].reshape(nn)
            dy = d[e, k, 1].reshape(nn)
            dz = d[e, k, 2].reshape(nn)
            for t in range(nn):
                jac[4 * e, t] = ph * (dx[t] * l00 + dy[t] * l10)
                jac[4 * e + 1, t] = ph * (dx[t] * l01 + dy[t] * l11)
                jac[4 * e + 2, t] = ph * dz[t]
                jac[4 * e + 3, t] = ge[t]
        for a in range(m):
            ja = jac[a]
            s = 0.0
            for t in range(nn):
                s += wr[t] * ja[t]
            grad[col[a]] += s
            for bb in range(a + 1):
                jb = jac[bb]
                s = 0.0
                for t in range(nn):
                    s += w[t] * ja[t] * jb[t]
                hess[col[a], col[bb]] += s
    if with_h:
        _mirror(hess, False)
    return cost, chi2
