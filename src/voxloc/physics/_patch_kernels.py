"""The microscope's PSF on fixed windows, compiled (numba): the per-molecule fitter's model
(issue 16), through :meth:`voxloc.physics.microscope.Microscope.patches` and
:mod:`voxloc.fitting._lm`.

One plane's window of side n, starting at pixel (ox, oy) = (column, row) of that camera,
for a molecule that the plane sees at (xk, yk) px (pixel j centred at j + 0.5) and depth z:

- ``GAUSS``: the Gaussian of Eqs. 4-6, t_k s² / (2 π r²) exp(-d² / 2 r²) per photon, with
  r = r(z_k - z) of Eq. 5, point-sampled at the pixel centres or averaged over each pixel
  (erf), as :func:`voxloc.physics.psf.render_planes` draws it;
- ``SPLINE``: the cubic B-spline of :class:`voxloc.physics.spline.SplinePSF` (the 4 z
  nodes, then the 4-tap row and column contractions of the (n + 3)² lateral nodes the window
  needs), 0 beyond ±half_px of the pixel holding the molecule, as
  :func:`voxloc.physics.spline.render_spline_planes` draws it.

Both give the values and the analytic d/dx_nm, d/dy_nm (of the plane's position) and d/dz_nm.
Compiled once per machine (``cache=True``: beside this file), so that a window costs
microseconds instead of the tens of numpy calls the batched array form needed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, prange

from voxloc.physics.psf import PSFParams
from voxloc.physics.spline import SplinePSF
from voxloc.types import FloatArray, IntArray

__all__ = ["GAUSS", "SPLINE", "PatchModel", "patch_model", "patches"]

# numba's own thread pool, not a second OpenMP runtime beside torch's (whose threads spin
# after each network batch: the fit ran 20-25 % slower under numba's ``omp`` layer on 2
# cores); our kernels are launched from one thread at a time, as this layer needs.
# NUMBA_THREADING_LAYER in the environment still decides.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

GAUSS, SPLINE = 0, 1
_SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@dataclass(frozen=True)
class PatchModel:
    """The PSF as the kernels take it: ``kind`` (GAUSS or SPLINE), ``gauss`` = (r0, D, A, B,
    pixel nm, integrate) of Table 2, ``plane_z`` (P,) nm, ``trans`` (P,), ``coeffs`` the
    spline's coefficients x transmission, laterally zero-padded by ``n + 4`` nodes, (P, Nz + 2,
    L', L'), and ``spline`` = (z0, z step, Nz, z min, z max, half_px, R, pad, pixel nm)."""

    kind: int
    gauss: FloatArray
    plane_z: FloatArray
    trans: FloatArray
    coeffs: FloatArray
    spline: FloatArray


def patch_model(
    psf: PSFParams | SplinePSF,
    plane_z_nm: FloatArray,
    transmission: FloatArray,
    px_size_nm: float,
    integrate: bool,
    n: int,
) -> PatchModel:
    """The kernels' form of a microscope's PSF for windows of side up to ``n``."""
    plane_z = np.ascontiguousarray(plane_z_nm, dtype=np.float64)
    trans = np.ascontiguousarray(transmission, dtype=np.float64)
    if not isinstance(psf, SplinePSF):
        gauss = np.array([psf.r0_nm, psf.D_nm, psf.A, psf.B, px_size_nm, float(integrate)])
        return PatchModel(GAUSS, gauss, plane_z, trans, np.zeros((1, 1, 1, 1)), np.zeros(9))
    pad = n + 4
    coeffs = np.pad(
        psf.coeffs * psf.transmission[:, None, None, None], ((0, 0), (0, 0), (pad, pad), (pad, pad))
    )
    z_lo, z_hi = psf.z_range_nm
    spline = np.array(
        [psf.z0_nm, psf.z_step_nm, psf.n_z, z_lo, z_hi, psf.half_px, psf.grid_px // 2, pad, psf.px_size_nm],
        dtype=np.float64,
    )
    return PatchModel(SPLINE, np.zeros(6), plane_z, trans, np.ascontiguousarray(coeffs), spline)


@njit(cache=True, nogil=True)
def _bspline(f: float, w: FloatArray, d: FloatArray) -> None:
    """Cubic B-spline weights of nodes n-1..n+2 at t = n + f and d/dt (as spline.bspline_weights)."""
    f2 = f * f
    f3 = f2 * f
    g = 1.0 - f
    w[0] = g * g * g / 6.0
    w[1] = (3.0 * f3 - 6.0 * f2 + 4.0) / 6.0
    w[2] = (-3.0 * f3 + 3.0 * f2 + 3.0 * f + 1.0) / 6.0
    w[3] = f3 / 6.0
    d[0] = -0.5 * g * g
    d[1] = 1.5 * f2 - 2.0 * f
    d[2] = -1.5 * f2 + f + 0.5
    d[3] = 0.5 * f2


@njit(cache=True, nogil=True)
def _profile(d: float, r: float, s: float, integrate: bool, out: FloatArray, j: int) -> None:
    """The 1-D factor of Eq. 4 at d = pixel centre - position (nm), its d/d(position) and
    d/dr into out[0..2, j] (point-sampled, or the pixel average)."""
    if not integrate:
        e = math.exp(-(d * d) / (2.0 * r * r))
        out[0, j] = e
        out[1, j] = e * d / (r * r)
        out[2, j] = e * d * d / (r * r * r)
        return
    c = _SQRT_HALF_PI / s
    k = 1.0 / (math.sqrt(2.0) * r)
    a_hi = (d + s / 2) * k
    a_lo = (d - s / 2) * k
    e_hi = math.exp(-a_hi * a_hi)
    e_lo = math.exp(-a_lo * a_lo)
    g = (math.erf(a_hi) - math.erf(a_lo)) * r * c
    out[0, j] = g
    out[1, j] = (e_lo - e_hi) / s
    out[2, j] = g / r - c * _TWO_OVER_SQRT_PI * (a_hi * e_hi - a_lo * e_lo)


@njit(cache=True, nogil=True)
def _gauss_plane(gp, zk, tk, xk, yk, z, ox, oy, n, deriv, g, d, k, work):  # noqa: ANN001
    """Plane k's window of the Gaussian into g[k] (n, n) and d[k] (3, n, n)."""
    r0, big_d, a3, b4, s = gp[0], gp[1], gp[2], gp[3], gp[4]
    integrate = gp[5] != 0.0
    u = (zk - z) / big_d
    q = max(1.0 + u * u + a3 * u**3 + b4 * u**4, 1e-12)
    r = r0 * math.sqrt(q)
    drdx = r0 * (2 * u + 3 * a3 * u * u + 4 * b4 * u**3) / (2.0 * math.sqrt(q) * big_d)
    amp = tk * s * s / (2.0 * math.pi * r * r)
    px = work[0:3]
    py = work[3:6]
    for j in range(n):
        _profile((ox + j + 0.5 - xk) * s, r, s, integrate, px, j)
        _profile((oy + j + 0.5 - yk) * s, r, s, integrate, py, j)
    for i in range(n):
        for j in range(n):
            v = amp * py[0, i] * px[0, j]
            g[k, i, j] = v
            if deriv:
                d[k, 0, i, j] = amp * py[0, i] * px[1, j]
                d[k, 1, i, j] = amp * py[1, i] * px[0, j]
                d_r = (-2.0 / r) * v + amp * (py[2, i] * px[0, j] + py[0, i] * px[2, j])
                d[k, 2, i, j] = -d_r * drdx


@njit(cache=True, nogil=True)
def _spline_plane(cf, sp, xk, yk, z, ox, oy, n, deriv, g, d, k, work):  # noqa: ANN001
    """Plane k's window of the spline into g[k] (n, n) and d[k] (3, n, n)."""
    z0, z_step, n_z, z_lo, z_hi = sp[0], sp[1], int(sp[2]), sp[3], sp[4]
    half, rr, pad, s = int(sp[5]), sp[6], int(sp[7]), sp[8]
    tz = min(max((z - z0) / z_step, 0.0), n_z - 1.0)
    nz = min(int(math.floor(tz)), n_z - 2)
    wz = work[0, 0:4]
    dwz = work[0, 4:8]
    wx = work[1, 0:4]
    dwx = work[1, 4:8]
    wy = work[2, 0:4]
    dwy = work[2, 4:8]
    _bspline(tz - nz, wz, dwz)
    inside_z = z_lo <= z <= z_hi
    for c in range(4):
        dwz[c] = dwz[c] / z_step if inside_z else 0.0
    t0x = ox + 0.5 - xk + rr
    t0y = oy + 0.5 - yk + rr
    bx = math.floor(t0x)
    by = math.floor(t0y)
    _bspline(t0x - bx, wx, dwx)
    _bspline(t0y - by, wy, dwy)
    lp = cf.shape[2]
    m = n + 3
    cx0 = min(max(int(bx) + pad, 0), lp - m)
    cy0 = min(max(int(by) + pad, 0), lp - m)
    # the z contraction of the (n + 3)² nodes: slabs of the values and of d/dz
    slab = work[3 : 3 + m, 0:m]
    slab_z = work[3 + m : 3 + 2 * m, 0:m]
    for a in range(m):
        for b in range(m):
            v = 0.0
            vz = 0.0
            for c in range(4):
                coef = cf[k, nz + c, cy0 + a, cx0 + b]
                v += wz[c] * coef
                vz += dwz[c] * coef
            slab[a, b] = v
            slab_z[a, b] = vz
    # the row contraction (values, d/dy, d/dz), then the column contraction
    rows = work[3 + 2 * m : 3 + 3 * m, 0:m]
    rows_y = work[3 + 3 * m : 3 + 4 * m, 0:m]
    rows_z = work[3 + 4 * m : 3 + 5 * m, 0:m]
    for i in range(n):
        for b in range(m):
            v = 0.0
            vy = 0.0
            vz = 0.0
            for a in range(4):
                v += wy[a] * slab[i + a, b]
                vy += dwy[a] * slab[i + a, b]
                vz += wy[a] * slab_z[i + a, b]
            rows[i, b] = v
            rows_y[i, b] = vy
            rows_z[i, b] = vz
    cx = math.ceil(xk - 0.5)
    cy = math.ceil(yk - 0.5)
    per_nm = -1.0 / s  # d/dx = -d/du (u = pixel centre - position), per nm
    for i in range(n):
        in_y = abs(oy + i - cy) <= half
        for j in range(n):
            if not (in_y and abs(ox + j - cx) <= half):
                g[k, i, j] = 0.0
                if deriv:
                    d[k, 0, i, j] = 0.0
                    d[k, 1, i, j] = 0.0
                    d[k, 2, i, j] = 0.0
                continue
            v = 0.0
            vx = 0.0
            vy = 0.0
            vz = 0.0
            for b in range(4):
                v += wx[b] * rows[i, j + b]
                if deriv:
                    vx += dwx[b] * rows[i, j + b]
                    vy += wx[b] * rows_y[i, j + b]
                    vz += wx[b] * rows_z[i, j + b]
            g[k, i, j] = v
            if deriv:
                d[k, 0, i, j] = vx * per_nm
                d[k, 1, i, j] = vy * per_nm
                d[k, 2, i, j] = vz


@njit(cache=True, nogil=True)
def work_array(n: int) -> FloatArray:
    """Scratch space of one window evaluation (either kind)."""
    m = n + 3
    return np.empty((3 + 5 * m, max(m, 8)))


@njit(cache=True, nogil=True)
def plane_window(kind, gp, plane_z, trans, cf, sp, k, xk, yk, z, ox, oy, n, deriv, g, d, work):  # noqa: ANN001
    """Plane k of one molecule: values into g[k], derivatives into d[k] when ``deriv``."""
    if kind == GAUSS:
        _gauss_plane(gp, plane_z[k], trans[k], xk, yk, z, ox, oy, n, deriv, g, d, k, work)
    else:
        _spline_plane(cf, sp, xk, yk, z, ox, oy, n, deriv, g, d, k, work)


@njit(cache=True, parallel=True)
def _patches(kind, gp, plane_z, trans, cf, sp, x_px, y_px, z, origin, n, deriv, out, dout):  # noqa: ANN001
    for m in prange(x_px.shape[0]):
        work = work_array(n)
        dm = dout[m] if deriv else dout[0]
        for k in range(x_px.shape[1]):
            plane_window(
                kind, gp, plane_z, trans, cf, sp, k, x_px[m, k], y_px[m, k], z[m],
                origin[m, k, 0], origin[m, k, 1], n, deriv, out[m], dm, work,
            )  # fmt: skip


def patches(
    model: PatchModel,
    x_px: FloatArray,
    y_px: FloatArray,
    z_nm: FloatArray,
    origin: IntArray,
    n: int,
    *,
    derivatives: bool = False,
) -> tuple[FloatArray, FloatArray | None]:
    """Values (N, P, n, n) per detected photon and, with ``derivatives``, (N, P, 3, n, n):
    d/dx_nm, d/dy_nm, d/dz_nm (:meth:`voxloc.physics.microscope.Microscope.patches`)."""
    x_px = np.ascontiguousarray(x_px, dtype=np.float64)
    y_px = np.ascontiguousarray(y_px, dtype=np.float64)
    z_nm = np.ascontiguousarray(np.broadcast_to(np.asarray(z_nm, np.float64), x_px.shape[:1]))
    origin = np.ascontiguousarray(origin, dtype=np.int64)
    m, p = x_px.shape
    out = np.empty((m, p, n, n))
    dout = np.empty((m if derivatives else 1, p, 3, n, n))
    if m:
        _patches(
            model.kind, model.gauss, model.plane_z, model.trans, model.coeffs, model.spline,
            x_px, y_px, z_nm, origin, int(n), bool(derivatives), out, dout,
        )  # fmt: skip
    return out, (dout if derivatives else None)
