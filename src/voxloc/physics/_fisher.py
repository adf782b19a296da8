"""The Fisher information sum shared by the Gaussian and spline bounds (:mod:`voxloc.physics.crlb`).

I_ij = Σ_k Σ_pixels ∂μ/∂θi ∂μ/∂θj / Var(y) for θ = (x, y, z), or, with ``nuisance``, for
θ = (x, y, z, N, b_1..b_P): the photons N summed over the planes and a background b_k per
plane (photons / pixel) unknown too, as every fitter estimates them (Smith et al., Nat.
Methods 7, 373, 2010; Li et al., Nat. Methods 15, 367, 2018; the fit of
:mod:`voxloc.fitting.mle`). ∂μ/∂N = μ_signal / N and ∂μ_k/∂b_j = δ_kj.
"""

from __future__ import annotations

import numpy as np

from voxloc.types import FloatArray


def information_sum(
    d_xyz: FloatArray, signal: FloatArray, inv_var: FloatArray, photons: FloatArray, *, nuisance: bool
) -> FloatArray:
    """(m, Q, Q) information from ∂μ/∂(x, y, z) ``d_xyz`` (m, 3, P, n), the molecule's
    expected signal ``signal`` (m, P, n) of ``photons`` (m,) and 1 / Var(y) ``inv_var``
    (m, P, n), already times gain²; Q = 3, or 4 + P with ``nuisance`` (module doc)."""
    m, _, p, n = d_xyz.shape
    if nuisance:
        scale = np.where(photons > 0, 1.0 / np.where(photons > 0, photons, 1.0), 0.0)
        d_xyz = np.concatenate([d_xyz, (signal * scale[:, None, None])[:, None]], axis=1)
    q = d_xyz.shape[1]
    dw = d_xyz * inv_var[:, None]
    block = np.matmul(dw.reshape(m, q, p * n), d_xyz.reshape(m, q, p * n).transpose(0, 2, 1))
    if not nuisance:
        return block
    # ∂μ/∂b_k is 1 on plane k's pixels: its rows are plane sums
    out = np.zeros((m, q + p, q + p))
    out[:, :q, :q] = block
    cross = dw.sum(axis=-1)  # (m, q, P)
    out[:, :q, q:] = cross
    out[:, q:, :q] = cross.transpose(0, 2, 1)
    idx = np.arange(q, q + p)
    out[:, idx, idx] = inv_var.sum(axis=-1)
    return out
