"""Frame rendering of the cubic-spline PSF (private helper of :mod:`voxloc.physics.spline`).

A molecule's window in plane k is V = Wy C(z) Wxᵀ (Li et al. 2018's separable form; see
``spline``): C(z) = Σ_a wz_a C[nz + a] the z-interpolated coefficient slab, Wy, Wx (n x n+3)
the 4-tap lateral B-spline weights. Each plane's slabs are written once in orthonormal row /
column bases (a truncated HOSVD), C[z] ≈ Uy A[z] Uxᵀ with a core A of r x r, so
V = (Wy Uy A_m)(Wx Ux)ᵀ: a product of an n x r and an r x n matrix. The rank r is the
smallest whose reconstruction error is <= ``tol`` x the plane's largest coefficient at every
node; the B-spline weights are >= 0 and sum to 1, so that also bounds every pixel (per
photon). At ``tol`` = 0 the bases are complete and the result is exact.

Per chunk of frames: the cores by one sparse (molecules x z nodes) product, the window rows
(Wy Uy A_m) (Wx Ux)ᵀ by batched BLAS products with (Wx Ux)ᵀ placed at its column offset
within S-wide tiles, and the sum over molecules by one sparse product that adds each S-wide
piece of a window row to its tile of the frame (no per-pixel scatter-add).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from voxloc.types import FloatArray, IntArray

#: molecules rendered per chunk (keeps the buffers in cache); frame columns per tile
_CHUNK_MOLECULES = 200
_TILE = 16


@dataclass(frozen=True)
class LowRankTables:
    """Cores ``a`` (Nz + 2, P r r); window profiles ``ywin`` (P, 4, n r), entry
    [k, a, i r + ρ] = Uy_k[i + a, ρ], and ``xwin`` (P, 4, r n), entry [k, a, ρ n + i] =
    Ux_k[i + a, ρ]; ``error``: the largest coefficient error (per photon, transmission in)."""

    rank: int
    n: int
    a: FloatArray
    ywin: FloatArray
    xwin: FloatArray
    error: float


def low_rank_tables(coeffs: FloatArray, h: int, tol: float, dtype: type) -> LowRankTables:
    """Tables for windows of half-side h from padded coefficients (P, Nz + 2, L + 2, L + 2)
    (transmission included): the n + 3 central rows / columns that such windows use."""
    p, nz2, lp, _ = coeffs.shape
    n = 2 * h + 1
    q = n + 3
    o = (lp - q + 1) // 2  # window pixel i uses nodes i + 1 .. i + 4 of the centred n + 4
    c = coeffs[:, :, o : o + q, o : o + q]  # (P, Nz + 2, q, q)
    uy = [np.linalg.svd(ck.transpose(1, 0, 2).reshape(q, -1), full_matrices=False)[0] for ck in c]
    ux = [np.linalg.svd(ck.transpose(2, 0, 1).reshape(q, -1), full_matrices=False)[0] for ck in c]
    scale = np.abs(c).max(axis=(1, 2, 3))
    for r in range(1, q + 1):
        errs = np.array([
            np.abs(uy[k][:, :r] @ (uy[k][:, :r].T @ c[k] @ ux[k][:, :r]) @ ux[k][:, :r].T - c[k]).max()
            for k in range(p)
        ])  # fmt: skip
        if r == q or np.all(errs <= tol * scale):
            break
    by = np.stack([u[:, :r] for u in uy])  # (P, q, r)
    bx = np.stack([u[:, :r] for u in ux])
    core = np.einsum("kyr,kzyx,kxs->zkrs", by, c, bx).reshape(nz2, p * r * r)
    taps = np.arange(4)[:, None] + np.arange(n)  # (4, n): node i + a
    ywin = by[:, taps].reshape(p, 4, n * r)
    xwin = bx[:, taps].transpose(0, 1, 3, 2).reshape(p, 4, r * n)
    arrays = (np.ascontiguousarray(x, dtype=dtype) for x in (core, ywin, xwin))
    return LowRankTables(r, n, *arrays, error=float(errs.max()))


def render_low_rank(
    t: LowRankTables,
    wx: FloatArray,
    wy: FloatArray,
    ox: IntArray,
    oy: IntArray,
    nz: IntArray,
    wz: FloatArray,
    shape: tuple[int, int],
    n_frames: int,
) -> FloatArray:
    """Frames (F, P, H, W) of F x M molecules (frame-major): lateral B-spline weights wx, wy
    (N, P, 4) and window origins ox, oy (N, P) (pixels), first z node nz (N,) and z weights
    wz (N, 4) with the photons folded in."""
    height, width = shape
    r, n, s_ = t.rank, t.n, _TILE
    dtype = t.a.dtype
    p = t.ywin.shape[0]
    m = len(nz) // n_frames
    fc = max(1, min(_CHUNK_MOLECULES // m, n_frames))
    c = -(-(n + s_ - 1) // s_)  # tiles a window row spans
    # the padded tile grid of a plane: rows -n .. H + n - 1, tiles -c .. ceil(W / S) + c - 1
    hp, tp = height + 2 * n, -(-width // s_) + 2 * c
    oy = np.clip(oy, -n, height) + n
    u0, v = np.divmod(ox, s_)
    u0 = np.clip(u0, -c, tp - 2 * c) + c
    nb = p * fc * m  # (plane, molecule) blocks of a chunk
    xbuf = np.zeros((nb, r, c * s_), dtype=dtype)
    e = xbuf.strides[-1]
    # xview[b, v]: block b's r x n columns (Wx Ux)ᵀ at offset v of its r x c S rows
    xview = np.lib.stride_tricks.as_strided(xbuf, (nb, s_, r, n), (r * c * s_ * e, e, c * s_ * e, e))
    rows = np.empty((nb, n, c * s_), dtype=dtype)
    out = np.empty((n_frames, p, height, width), dtype=dtype)
    zptr = np.arange(0, 4 * fc * m + 1, 4, dtype=np.int32)
    tile = (np.arange(n)[:, None] * tp + np.arange(c)).ravel()  # window row i, tile j
    ones = np.ones(nb * n * c, dtype=dtype)
    sptr = np.arange(nb * n * c + 1, dtype=np.int32)
    blk = np.arange(nb)
    for f0 in range(0, n_frames, fc):
        f1 = min(f0 + fc, n_frames)
        s = slice(f0 * m, f1 * m)
        k = (f1 - f0) * m
        b = p * k
        zcol = (nz[s, None] + np.arange(4)).astype(np.int32).ravel()
        zmat = sparse.csr_matrix((wz[s].ravel(), zcol, zptr[: k + 1]), shape=(k, t.a.shape[0]))
        core = (zmat @ t.a).reshape(k, p, r, r).transpose(1, 0, 2, 3)  # A_m (P, N, r, r)
        ya = np.matmul(np.matmul(wy[s].transpose(1, 0, 2), t.ywin).reshape(p, k, n, r), core)
        vs = v[s].T.ravel()
        xview[blk[:b], vs] = np.matmul(wx[s].transpose(1, 0, 2), t.xwin).reshape(b, r, n)
        np.matmul(ya, xbuf[:b].reshape(p, k, r, c * s_), out=rows[:b].reshape(p, k, n, c * s_))
        xview[blk[:b], vs] = 0
        # piece j of window row i -> tile (oy + i, u0 + j) of its frame and plane
        fp = np.arange(f1 - f0).repeat(m) * p + np.arange(p)[:, None]  # (P, N)
        dst = (((fp * hp + oy[s].T) * tp + u0[s].T).reshape(-1, 1) + tile).astype(np.int32).ravel()
        add = sparse.csc_matrix(
            (ones[: dst.size], dst, sptr[: dst.size + 1]), shape=((f1 - f0) * p * hp * tp, dst.size)
        )
        img = (add @ rows[:b].reshape(-1, s_)).reshape(f1 - f0, p, hp, tp * s_)
        out[f0:f1] = img[:, :, n : n + height, c * s_ : c * s_ + width]
    return out
