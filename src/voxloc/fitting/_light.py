"""The compiled light of other molecules on a window (the neighbours' model of
:mod:`voxloc.fitting.refine`), from the window kernels of :mod:`voxloc.fitting._lm`."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from voxloc.fitting._lm import _model
from voxloc.physics._patch_kernels import work_array

__all__ = ["neighbour_light"]


@njit(cache=True, parallel=True)
def neighbour_light(
    pm, inv, s, theta, shift, origin, mask, rows, ptr, nbr, given, noise, out, change
) -> None:  # noqa: ANN001
    """out[r] = Σ N_j g_j on the window of detection rows[r] (``origin``, ``mask`` of all
    windows) over the molecules j = nbr[ptr[r]:ptr[r + 1]] at θ[j] (their photons and
    positions), shifted by shift[j]; with ``given`` (R, P, n, n) also change[r] =
    Σ mask (out[r] - given[r])² / Var at the fitted background of that detection."""
    kind, excess, read_var, const_var = noise
    p, n = out.shape[1], out.shape[2]
    with_change = given.shape[0] > 0
    for r in prange(out.shape[0]):
        w = rows[r]
        out[r] = 0.0
        g = np.empty((1, p, n, n))
        d = np.empty((1, p, 3, 1, 1))
        work = work_array(n)
        for e in range(ptr[r], ptr[r + 1]):
            j = nbr[e]
            _model(pm, inv, s, origin[w], shift[j], theta[j], n, False, g, d, work)
            photons = theta[j, 3]
            for k in range(p):
                for a in range(n):
                    for b in range(n):
                        out[r, k, a, b] += photons * g[0, k, a, b]
        if not with_change:
            continue
        acc = 0.0
        for k in range(p):
            var = const_var if kind == 0 else excess * max(theta[w, 4 + k], 0.0) + read_var
            for a in range(n):
                for b in range(n):
                    if mask[w, k, a, b]:
                        acc += (out[r, k, a, b] - given[r, k, a, b]) ** 2 / var
        change[r] = acc
