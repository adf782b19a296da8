"""The paper's noise of Eq. 3 in one compiled pass (numba), for
:func:`voxloc.physics.noise.add_noise`.

y = signal + n + σ ε, with n ~ Poisson(λ) drawn by the guide-table inverse transform of
:func:`voxloc.physics.noise.poisson_constant` from the same 32-bit uniforms u, and ε the
same standard normals: the result equals the array form bit for bit, without its index
arrays and temporaries (the noise was half of a simulated frame's cost; issue 15).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from voxloc.types import FloatArray

__all__ = ["paper_noise"]


@njit(cache=True, nogil=True)
def _paper_noise(signal, u, normal, sigma, cdf, guide, shift, out):  # pragma: no cover - compiled
    n_last = cdf.size - 1  # F(n_last) = 1 in float64: reached only by u = 2^32 - 1
    for i in range(signal.size):
        ui = u[i]
        k = guide[ui >> shift]
        if ui >= cdf[k]:
            k += 1
            while k < n_last and ui >= cdf[k]:
                k += 1
        out[i] = (signal[i] + np.float32(k)) + sigma * normal[i]


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
        signal.reshape(-1),
        u.reshape(-1),
        normal.reshape(-1),
        np.float32(sigma),
        cdf,
        guide,
        np.uint32(32 - guide_bits),
        out.reshape(-1),
    )
    return out
