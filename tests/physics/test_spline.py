"""Tests of the cubic-spline PSF (voxloc.physics.spline)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates

from voxloc.physics import spline
from voxloc.physics.crlb import crlb, fisher_information
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import TABLE2, render_planes
from voxloc.physics.spline import (
    SplinePSF,
    bspline_weights,
    fisher_information_spline,
    render_spline_planes,
    spline_windows,
)

PLANES = np.array([0.0, 400.0, 800.0, 1200.0])
PX = 192.0
HALF = 8  # window ±8 px; grid R = 9
Z0, DZ, NZ = -300.0, 20.0, 91  # -300 .. 1500 nm
POISSON = NoiseModel(kind="physical", background=5.0, read_noise_var=0.0)


def gaussian_samples(z_nodes: np.ndarray, half: int = HALF) -> np.ndarray:
    """Pixel-integrated Gaussian (Table 2) at the grid nodes: (P, Nz, L, L), per-z sum 1."""
    r = half + 1
    side = 2 * r + 1
    nz = len(z_nodes)
    xy = np.full((nz, 1, len(PLANES), 2), (r + 0.5) * PX)
    img = render_planes(xy, z_nodes[:, None], np.ones((nz, 1)), TABLE2, PLANES, (side, side), PX,
                        integrate=True, dtype=np.float64)  # fmt: skip
    img = img.transpose(1, 0, 2, 3)
    return img / img.sum(axis=(2, 3), keepdims=True)


@pytest.fixture(scope="module")
def gauss_spline() -> SplinePSF:
    z = Z0 + DZ * np.arange(NZ)
    return SplinePSF.from_samples(gaussian_samples(z), z0_nm=Z0, z_step_nm=DZ, px_size_nm=PX,
                                  plane_z_nm=tuple(PLANES))  # fmt: skip


def test_bspline_weights_partition_of_unity():
    w, d = bspline_weights(np.linspace(0, 1, 11))
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(d.sum(-1), 0.0, atol=1e-12)


def test_matches_scipy_map_coordinates(gauss_spline):
    """The B-spline evaluation is scipy's order-3 mirror interpolation of the samples."""
    rng = np.random.default_rng(1)
    n = 20
    x = rng.uniform(10, 11, (n, 4))
    y = rng.uniform(20, 21, (n, 4))
    z = rng.uniform(Z0, Z0 + DZ * (NZ - 1), n)
    origin, vals, _ = spline_windows(gauss_spline, x, y, z)
    samples = gaussian_samples(Z0 + DZ * np.arange(NZ))
    r = HALF + 1
    ar = np.arange(2 * HALF + 1)
    for m in range(3):
        for k in range(4):
            u = origin[m, k, 0] + ar + 0.5 - x[m, k] + r  # node coordinates of the pixel centres
            v = origin[m, k, 1] + ar + 0.5 - y[m, k] + r
            vv, uu = np.meshgrid(v, u, indexing="ij")
            tz = np.full_like(uu, (z[m] - Z0) / DZ)
            ref = map_coordinates(samples[k], [tz, vv, uu], order=3, mode="mirror")
            np.testing.assert_allclose(vals[m, k], ref * 0.25, rtol=1e-9, atol=1e-12)


def test_analytic_derivatives_match_finite_differences(gauss_spline):
    rng = np.random.default_rng(2)
    n = 30
    x = rng.uniform(5, 6, (n, 4))
    y = rng.uniform(5, 6, (n, 4))
    z = rng.uniform(Z0 + 10, Z0 + DZ * (NZ - 1) - 10, n)
    # keep away from pixel borders so the finite step does not move the window
    x = np.floor(x) + np.clip(x % 1, 0.01, 0.99)
    y = np.floor(y) + np.clip(y % 1, 0.01, 0.99)
    _, _, d = spline_windows(gauss_spline, x, y, z, derivatives=True)
    h_nm = 0.05
    hx = h_nm / PX
    fd = [
        (spline_windows(gauss_spline, x + hx, y, z)[1] - spline_windows(gauss_spline, x - hx, y, z)[1]),
        (spline_windows(gauss_spline, x, y + hx, z)[1] - spline_windows(gauss_spline, x, y - hx, z)[1]),
        (spline_windows(gauss_spline, x, y, z + h_nm)[1] - spline_windows(gauss_spline, x, y, z - h_nm)[1]),
    ]
    for a in range(3):
        num = fd[a] / (2 * h_nm)
        scale = np.abs(d[:, :, a]).max()
        np.testing.assert_allclose(d[:, :, a], num, atol=1e-6 * scale)


def test_render_matches_windows_and_gaussian(gauss_spline):
    """The frame renderer adds the windows; the spline is the Gaussian within 3 % of the peak
    per pixel (the interpolation error of a pixel-step spline of a spot of r0 = 0.7 px)."""
    rng = np.random.default_rng(3)
    f, m = 3, 5
    xy = rng.uniform(20 * PX, 44 * PX, (f, m, 1, 2)) + rng.normal(0, 30, (f, m, 4, 2))
    z = rng.uniform(0, 1200, (f, m))
    ph = rng.uniform(500, 2000, (f, m))
    ph[0, 0] = 0.0  # padding
    img = render_spline_planes(xy, z, ph, gauss_spline, (64, 64), dtype=np.float64)
    assert img.shape == (f, 4, 64, 64)
    # both put N t_k = N / 4 photons into each plane (the spline: within its window)
    ref = render_planes(xy, z, ph, TABLE2, PLANES, (64, 64), PX, integrate=True, dtype=np.float64)
    peak = ref.max(axis=(-1, -2), keepdims=True)
    assert np.abs(img - ref).max() < 0.03 * peak.max()
    np.testing.assert_allclose(img.sum(axis=(-1, -2)), np.repeat(ph.sum(1)[:, None] * 0.25, 4, 1), rtol=1e-2)
    # partly outside the frame: the visible part only
    edge = render_spline_planes(np.zeros((1, 4, 2)), [600.0], [1000.0], gauss_spline, (16, 16))
    assert 0 < edge.sum() < 1000.0 * 0.5


def test_crlb_matches_gaussian_crlb(gauss_spline):
    """CRLB with the spline's analytic derivatives = the Gaussian's (finite differences), ±5 %."""
    mic = Microscope(noise=NoiseModel(kind="paper"), integrate_pixels=True)
    z = np.linspace(-100, 1300, 8)
    x = np.full_like(z, 32.37 * PX)
    y = np.full_like(z, 30.81 * PX)
    photons = 4 * TABLE2.a_prime / PX**2  # w = 1: 4 planes x a'/s² each
    ref = crlb(mic, x, y, z, photons, window_px=2 * HALF + 1, nuisance=False)
    info = fisher_information_spline(gauss_spline, mic.noise, x, y, z, photons)
    info = 0.5 * (info + info.transpose(0, 2, 1))
    var = np.array([np.diag(np.linalg.inv(i)) for i in info])
    ratio = np.sqrt(var / ref)
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    # Poisson noise, and the Fisher matrices themselves
    ref_i = fisher_information(Microscope(noise=POISSON, integrate_pixels=True), x[:2], y[:2], z[:2], photons,
                               window_px=2 * HALF + 1)  # fmt: skip
    info_p = fisher_information_spline(gauss_spline, POISSON, x[:2], y[:2], z[:2], photons)
    diag = np.diagonal(info_p, axis1=1, axis2=2) / np.diagonal(ref_i, axis1=1, axis2=2)
    assert np.all(np.abs(diag - 1) < 0.1), diag
    # the same bound through the one PSF interface: a Microscope holding the spline
    spline_mic = Microscope(psf=gauss_spline, plane_z_nm=PLANES, noise=NoiseModel(kind="paper"))
    assert spline_mic.model == "spline"
    np.testing.assert_allclose(crlb(spline_mic, x, y, z, photons, nuisance=False), var, rtol=1e-9)
    # photons and backgrounds unknown: the spline's bound is the Gaussian's too
    full = crlb(spline_mic, x, y, z, photons)
    np.testing.assert_allclose(full, crlb(mic, x, y, z, photons, window_px=2 * HALF + 1), rtol=0.1)
    assert np.all(full >= var * (1 - 1e-9))


def test_bad_construction():
    with pytest.raises(ValueError):
        SplinePSF.from_samples(np.ones((4, 10, 8, 8)), z0_nm=0, z_step_nm=10, px_size_nm=PX)
    s = SplinePSF.from_samples(np.ones((2, 10, 5, 5)), z0_nm=0, z_step_nm=10, px_size_nm=PX)
    assert s.half_px == 1 and s.z_range_nm == (0.0, 90.0)
    with pytest.raises(ValueError):
        spline_windows(s, np.zeros((1, 2)), np.zeros((1, 2)), np.zeros(1), half_px=2)
    with pytest.raises(ValueError):
        render_spline_planes(np.zeros((1, 3, 2)), [0.0], [1.0], s, (8, 8))


def window_sums(psf, xy, z, ph, shape, half_px):
    """Reference frames: the exact float64 windows of spline_windows added pixel by pixel."""
    lead, (m, p) = xy.shape[:-3], xy.shape[-3:-1]
    xy, z, ph = xy.reshape(-1, p, 2), z.reshape(-1), ph.reshape(-1)
    keep = ph != 0
    origin, vals, _ = spline_windows(psf, xy[keep, :, 0] / PX, xy[keep, :, 1] / PX, z[keep], half_px=half_px)
    n = vals.shape[-1]
    frame = np.repeat(np.arange(len(ph) // m), m)[keep]
    pad = np.zeros((len(ph) // m, p, shape[0] + 4 * n, shape[1] + 4 * n))
    o = np.clip(origin, -2 * n, np.array(shape[::-1]) + n) + 2 * n  # far-off windows stay off the frame
    ar = np.arange(n)
    np.add.at(pad, (frame[:, None, None, None], np.arange(p)[:, None, None], o[..., 1, None, None] + ar[:, None],
                    o[..., 0, None, None] + ar), vals * ph[keep, None, None, None])  # fmt: skip
    return pad[..., 2 * n : 2 * n + shape[0], 2 * n : 2 * n + shape[1]].reshape(lead + (p,) + shape)


@pytest.mark.parametrize("noisy", [False, True])
def test_fast_render_equals_window_sums(gauss_spline, noisy):
    """render_spline_planes = Σ of exact spline_windows: float64 to rounding; float32 within
    the low-rank bound RENDER_TOL x photons x the plane's largest coefficient (the Gaussian
    spline has rank 7 of 20; a noisy one is full rank). Molecules over the frame edges and far
    outside it, z beyond the spline's range, padding with NaN positions, several chunks."""
    psf = gauss_spline
    if noisy:  # a bead-like spline: 1e-3 of the peak of independent noise on every coefficient
        c = psf.coeffs + 1e-3 * psf.coeffs.max() * np.random.default_rng(4).standard_normal(psf.coeffs.shape)
        psf = SplinePSF(c, psf.z0_nm, psf.z_step_nm, PX, psf.transmission, psf.plane_z_nm)
    rng = np.random.default_rng(5)
    lead, m, shape = (2, 37), 7, (40, 52)  # 74 frames: > one chunk of the renderer
    xy = rng.uniform(-12 * PX, 64 * PX, lead + (m, 1, 2)) + rng.normal(0, 200, lead + (m, 4, 2))
    xy[0, 0, 0] = 1e7  # far outside
    z = rng.uniform(Z0 - 100, Z0 + DZ * (NZ - 1) + 100, lead + (m,))
    ph = rng.uniform(500, 5000, lead + (m,))
    ph[:, ::5, -2:] = 0.0  # padding, with any position
    xy[:, ::5, -2:] = np.nan
    z[:, ::5, -2:] = np.nan
    for half in (HALF, 5):
        ref = window_sums(psf, xy, z, ph, shape, half)
        img64 = render_spline_planes(xy, z, ph, psf, shape, half_px=half, dtype=np.float64)
        img32 = render_spline_planes(xy, z, ph, psf, shape, half_px=half)
        assert img64.shape == img32.shape == lead + (4,) + shape and img32.dtype == np.float32
        peak = ref.max()
        np.testing.assert_allclose(img64, ref, rtol=0, atol=1e-12 * peak)
        tables = psf._render[(half, False)]
        assert tables.rank == (2 * half + 4 if noisy else 7)
        scale = np.abs(psf.coeffs * psf.transmission[:, None, None, None]).max()
        bound = spline.RENDER_TOL * scale * ph.sum(-1).max() + 1e-6 * peak  # + float32 rounding
        err = np.abs(img32 - ref).max()
        print(f"noisy={noisy} half_px={half} rank={tables.rank}: float32 error {err / peak:.1e} of the peak")
        assert err <= bound and err < 3e-4 * peak, (err / peak, bound / peak)
    # no molecule at all, or only padding
    assert not render_spline_planes(
        np.zeros((3, 0, 4, 2)), np.zeros((3, 0)), np.zeros((3, 0)), psf, shape
    ).any()
    assert not render_spline_planes(xy[:, :, :1], z[:, :, :1], 0 * ph[:, :, :1], psf, shape).any()
