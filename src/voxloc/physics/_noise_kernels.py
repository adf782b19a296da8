"""The constant-rate Poisson sampler of :func:`voxloc.physics.noise.poisson_constant` and the
paper's noise of Eq. 3 in one pass, compiled (numba), for :mod:`voxloc.physics.noise`.

n ~ Poisson(λ) is the smallest n with u < 2^32 F(n) for a 32-bit uniform u, found from the
guide table's start (:func:`_poisson_index`, the one home of that search); the paper's
y = signal + n + σ ε adds the normals ε in the same pass, without the index arrays and
temporaries of an array form (the noise was half of a simulated frame's cost; issue 15).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from voxloc.types import FloatArray, IntArray

__all__ = ["paper_noise", "poisson_from_uniforms"]


@njit(cache=True, nogil=True, inline="always")
def _poisson_index(ui, cdf, guide, shift):  # noqa: ANN001, ANN202
    """The n of uniform ``ui``: from the guide's start up to the first CDF entry above it
    (F(n_last) = 1 in float64 is reached only by u = 2^32 - 1)."""
    n_last = cdf.size - 1
    k = guide[ui >> shift]
    if ui >= cdf[k]:
        k += 1
        while k < n_last and ui >= cdf[k]:
            k += 1
    return k


@njit(cache=True, nogil=True)
def _poisson(u, cdf, guide, shift, out):  # pragma: no cover - compiled
    for i in range(u.size):
        out[i] = _poisson_index(u[i], cdf, guide, shift)


@njit(cache=True, nogil=True)
def _paper_noise(signal, u, normal, sigma, cdf, guide, shift, out):  # pragma: no cover - compiled
    for i in range(signal.size):
        out[i] = (signal[i] + np.float32(_poisson_index(u[i], cdf, guide, shift))) + sigma * normal[i]


def poisson_from_uniforms(u: np.ndarray, cdf: np.ndarray, guide: np.ndarray, guide_bits: int) -> IntArray:
    """Poisson samples (int32, ``u``'s shape) of the 32-bit uniforms ``u`` (C-contiguous)."""
    out = np.empty(u.shape, dtype=np.int32)
    _poisson(u.reshape(-1), cdf, guide, np.uint32(32 - guide_bits), out.reshape(-1))
    return out


def paper_noise(
    signal: FloatArray,
    u: np.ndarray,
    normal: FloatArray,
    sigma: np.float32,
    cdf: np.ndarray,
    guide: np.ndarray,
    guide_bits: int,
) -> FloatArray:
    """signal + Poisson(λ)[u] + σ normal, float32, of ``signal``'s shape (all C-contiguous)."""
    out = np.empty(signal.shape, dtype=np.float32)
    _paper_noise(
        signal.reshape(-1), u.reshape(-1), normal.reshape(-1), np.float32(sigma),
        cdf, guide, np.uint32(32 - guide_bits), out.reshape(-1),
    )  # fmt: skip
    return out
