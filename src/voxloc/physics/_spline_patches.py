"""The spline PSF on fixed windows with analytic derivatives: the per-molecule fitter's view
of :class:`voxloc.physics.spline.SplinePSF` (issue 16), through
:meth:`voxloc.physics.microscope.Microscope.patches`."""

from __future__ import annotations

import numpy as np

from voxloc.physics.spline import SplinePSF, _z_weights, bspline_weights
from voxloc.types import FloatArray, IntArray

__all__ = ["spline_patches"]


def _patch_view(psf: SplinePSF, n: int) -> FloatArray:
    """The coefficients laid out (P, Ly, Lx, Nz + 2) with ``pad`` = n + 4 zero nodes on each
    lateral side (the PSF is 0 outside its grid), seen as every (n + 3) x 4 block of
    (column, z node): one index (plane, row, first column, first z node) is then the block a
    window row needs, the gather of :func:`spline_patches`."""
    view = psf._patch.get(n)
    if view is None:
        pad = n + 4
        c = np.pad(
            psf.coeffs * psf.transmission[:, None, None, None], ((0, 0), (0, 0), (pad, pad), (pad, pad))
        )
        c = np.ascontiguousarray(c.transpose(0, 2, 3, 1))
        view = np.lib.stride_tricks.sliding_window_view(c, (n + 3, 4), axis=(2, 3))
        psf._patch[n] = view
    return view


def spline_patches(
    psf: SplinePSF,
    x_px: FloatArray,
    y_px: FloatArray,
    z_nm: FloatArray,
    origin: IntArray,
    n: int,
    *,
    derivatives: bool = False,
) -> tuple[FloatArray, FloatArray | None]:
    """Expected images per detected photon on fixed windows: the fitter's view of the spline.

    As :func:`spline_windows` (same positions, units and transmission), but plane k's window
    of side ``n`` starts at the given pixel ``origin`` (N, P, 2) = (column, row), wherever
    the molecule is in it; pixels beyond ±half_px of the pixel holding the molecule are 0, as
    in :func:`voxloc.physics.spline.render_spline_planes`. Only the 4 z nodes and the
    (n + 3)² lateral nodes each window needs are gathered, so a window costs O(n²), not the
    whole grid. Returns values (N, P, n, n) and, with ``derivatives``, (N, P, 3, n, n): d/dx_nm,
    d/dy_nm, d/dz_nm of plane k's position.
    """
    x_px = np.asarray(x_px, dtype=np.float64)
    y_px = np.asarray(y_px, dtype=np.float64)
    origin = np.asarray(origin, dtype=np.int64)
    p = x_px.shape[1]
    r = psf.grid_px // 2  # nodes u = -R..R px from the molecule
    view = _patch_view(psf, n)
    pad = n + 4
    # pixel col = origin + a has its centre u = col + 0.5 - x px from the molecule, node
    # t = u + R: the same fraction for the whole window, first node floor(t) at a = 0
    t0x = origin[..., 0] + 0.5 - x_px + r
    t0y = origin[..., 1] + 0.5 - y_px + r
    bx, by = np.floor(t0x), np.floor(t0y)
    wx, dwx = bspline_weights(t0x - bx)
    wy, dwy = bspline_weights(t0y - by)
    # the padded index of node floor(t) - 1 is floor(t) (one mirrored node first), plus the
    # zero pad; windows far off the grid read zeros (clipped into the pad)
    cx0 = np.clip(bx.astype(np.int64) + pad, 0, view.shape[2] - 1)
    cy0 = np.clip(by.astype(np.int64) + pad, 0, view.shape[1] - (n + 3))
    nz, wz, dwz = _z_weights(psf, np.asarray(z_nm, dtype=np.float64), np.float64)
    rows = cy0[..., None] + np.arange(n + 3)  # (N, P, n + 3)
    plane = np.arange(p)[None, :, None]
    block = view[plane, rows, cx0[..., None], nz[:, None, None]]  # (N, P, n + 3, n + 3, 4)
    zw = np.stack([wz, dwz], axis=-1) if derivatives else wz[..., None]  # (N, 4, 1 or 2)
    slabs = np.matmul(block, zw[:, None, None])  # (N, P, n + 3, n + 3, 1 or 2)
    # the lateral contractions Σ_ab wy_a wx_b S[i + a, j + b] as products with banded
    # (n, n + 3) matrices of the 4 weights: Wy S Wxᵀ, batched over molecules and planes
    # the model is 0 beyond ±half_px of the pixel holding the molecule, as in
    # render_spline_planes (the grid's edge nodes reach 1-3 px further): masked weights
    a = np.arange(n)
    h = psf.half_px
    in_x = np.abs(origin[..., 0, None] + a - np.ceil(x_px - 0.5)[..., None]) <= h  # (N, P, n)
    in_y = np.abs(origin[..., 1, None] + a - np.ceil(y_px - 0.5)[..., None]) <= h
    wy_m, wx_t = _band(wy, n) * in_y[..., None], np.swapaxes(_band(wx, n) * in_x[..., None], -1, -2)
    rows_s = wy_m @ slabs[..., 0]
    values = rows_s @ wx_t
    if not derivatives:
        return values, None
    s = -1.0 / psf.px_size_nm  # d/dx = -d/du (u = pixel centre - position), per nm
    d_x = rows_s @ np.swapaxes(_band(dwx * s, n) * in_x[..., None], -1, -2)
    d_y = ((_band(dwy * s, n) * in_y[..., None]) @ slabs[..., 0]) @ wx_t
    d_z = (wy_m @ slabs[..., 1]) @ wx_t
    return values, np.stack([d_x, d_y, d_z], axis=2)


def _band(w: FloatArray, n: int) -> FloatArray:
    """(..., n, n + 3) matrices B with B[i, i + a] = w[..., a], a = 0..3."""
    out = np.zeros(w.shape[:-1] + (n, n + 3))
    i = np.arange(n)
    for a in range(4):
        out[..., i, i + a] = w[..., a, None]
    return out
