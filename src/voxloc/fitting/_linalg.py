"""Small dense linear algebra of the compiled fit (:mod:`voxloc.fitting._lm`), per molecule:
Q x Q systems (Q = 4 + planes) solved in registers' reach instead of a LAPACK call each."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["cholesky_solve", "inverse_diagonal"]


@njit(cache=True, nogil=True)
def _cholesky(a, low, pivot_min) -> bool:  # noqa: ANN001
    """The lower factor L of a = L Lᵀ into ``low``; False at a pivot <= ``pivot_min``."""
    q = a.shape[0]
    for i in range(q):
        for j in range(i + 1):
            v = a[i, j]
            for k in range(j):
                v -= low[i, k] * low[j, k]
            if i == j:
                if not v > pivot_min:
                    return False
                low[i, i] = math.sqrt(v)
            else:
                low[i, j] = v / low[j, j]
    return True


@njit(cache=True, nogil=True)
def cholesky_solve(a, b, out) -> bool:  # noqa: ANN001
    """Solve a x = b for a symmetric positive-definite (q, q) a; False if it is not."""
    q = a.shape[0]
    low = np.zeros((q, q))
    if not _cholesky(a, low, 0.0):
        return False
    for i in range(q):
        v = b[i]
        for k in range(i):
            v -= low[i, k] * out[k]
        out[i] = v / low[i, i]
    for i in range(q - 1, -1, -1):
        v = out[i]
        for k in range(i + 1, q):
            v -= low[k, i] * out[k]
        out[i] = v / low[i, i]
    return True


@njit(cache=True, nogil=True)
def inverse_diagonal(h, out) -> bool:  # noqa: ANN001
    """diag(H⁻¹)[:len(out)] of a symmetric positive-definite H by its Cholesky factor (H = L Lᵀ,
    diag(H⁻¹)_i = Σ_k (L⁻¹)_ki²); False when H is not well conditioned (the caller falls
    back to :func:`voxloc.physics.crlb.diag_inverse`)."""
    q = h.shape[0]
    low = np.zeros((q, q))
    top = 0.0
    for i in range(q):
        top = max(top, h[i, i])
    if not _cholesky(h, low, 1e-10 * top):
        return False
    col = np.zeros(q)
    for c in range(len(out)):  # column c of L⁻¹ (rows c.. are non-zero)
        col[:] = 0.0
        col[c] = 1.0 / low[c, c]
        for i in range(c + 1, q):
            v = 0.0
            for k in range(c, i):
                v -= low[i, k] * col[k]
            col[i] = v / low[i, i]
        acc = 0.0
        for i in range(c, q):
            acc += col[i] * col[i]
        out[c] = acc
    return True
