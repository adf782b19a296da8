"""The vectorial PSF tabulated as a SplinePSF (voxloc.physics.vectorial, issue 15).

Checked against a direct psfmodels evaluation that shares none of the tabulation's shortcuts
(15x oversampled pixels at the exact defocus and sub-pixel shift, no spline), and for the
physics of a 1.49-NA oil objective imaging into water (670 nm, 192 nm pixels)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.optimize import curve_fit
from scipy.special import erf

psfmodels = pytest.importorskip("psfmodels")

from voxloc.physics.spline import spline_windows
from voxloc.physics.vectorial import focus_zv_um, pixel_integrated_psf, vectorial_spline_psf

PX = 192.0
PLANES = (0.0, 392.0, 809.0, 1196.0)  # not on the 10 nm z grid: planes 2-4 are resampled
Z_RANGE = (-700.0, 1900.0)
OPTICS = dict(na=1.49, wavelength_nm=670.0, n_immersion=1.515, n_sample=1.33)
PARAMS = dict(NA=1.49, ni=1.515, ni0=1.515, ns=1.33, sf=1, mode=1)
F0 = focus_zv_um(depth_nm=0.0, **OPTICS)


@pytest.fixture(scope="module")
def psf():
    t = time.perf_counter()
    out = vectorial_spline_psf(
        plane_z_nm=PLANES, px_size_nm=PX, half_px=16, z_range_nm=Z_RANGE, z_step_nm=10.0
    )
    print(f"\ntabulation: {time.perf_counter() - t:.2f} s for {out.n_planes} planes x {out.n_z} depths")
    return out


def direct(zv_um: float, jx: int, jy: int, half: int, ss: int = 15, field: int = 80) -> np.ndarray:
    """psfmodels' pixel-integrated PSF (2 half + 1)² with the molecule (jx, jy) / ss px from
    the central pixel's centre, over the light in a ±field px field (its core 15x oversampled,
    the rest 5x)."""
    kw = dict(pz=0.0, wvl=0.67, params=PARAMS, normalize=False)
    r = half + 2
    fine = psfmodels.vectorial_psf(np.array([zv_um]), nx=ss * (2 * r + 1), dxy=PX / ss / 1000, **kw)[0]

    def binned(f, s):
        n = f.shape[-1] // s
        return f.reshape(n, s, n, s).mean(axis=(1, 3))

    core = binned(fine, ss)
    far = binned(
        psfmodels.vectorial_psf(np.array([zv_um]), nx=5 * (2 * field + 1), dxy=PX / 5000, **kw)[0], 5
    )
    total = far.sum() - far[field - r : field + r + 1, field - r : field + r + 1].sum() + core.sum()
    img = binned(np.roll(fine, (jy, jx), axis=(0, 1)), ss)
    return img[r - half : r + half + 1, r - half : r + half + 1] / total


def test_tabulation_matches_direct_vectorial_at_sub_pixel_positions(psf):
    assert psf.normalisation == "total" and psf.grid_px == 35 and psf.z_range_nm == Z_RANGE
    rng = np.random.default_rng(15)
    z = np.array([-612.3, -37.7, 233.1, 588.8, 1041.9, 1457.3, 1833.4])
    j = rng.integers(-7, 8, (len(z), 4, 2))  # sub-pixel offsets, 1/15 px
    x, y = 30.5 + j[..., 0] / 15, 40.5 + j[..., 1] / 15
    origin, vals, _ = spline_windows(psf, x, y, z, half_px=8)
    vals = vals / psf.transmission[None, :, None, None]
    # the window's central pixel has its centre at, or up to 1 px above, the molecule
    jw = np.round((np.stack([x, y], -1) - origin - 8.5) * 15).astype(int)
    assert np.all((jw <= 0) & (jw > -15))
    rms = np.empty((len(z), 4))
    worst = np.empty((len(z), 4))
    for m in range(len(z)):
        for k in range(4):
            ref = direct(F0 + (PLANES[k] - z[m]) / 1000, jw[m, k, 0], jw[m, k, 1], 8)
            err = vals[m, k] - ref
            rms[m, k] = 100 * np.sqrt((err**2).mean()) / ref.max()
            worst[m, k] = 100 * np.abs(err).max() / ref.max()
    print("tabulated vs direct, % of the peak (RMS over ±8 px | worst pixel), planes 1-4:")
    for m in range(len(z)):
        print(f"  z={z[m]:7.1f}", np.round(rms[m], 3), "|", np.round(worst[m], 2))
    # the limit is the pixel-step grid: 192 nm pixels sample an OTF reaching 0.85 cycles/px,
    # so the sharp ring of the PSF at +0.5..+0.9 µm defocus (focus beyond the molecule) is
    # undersampled: RMS up to ~2 % there (worst sub-pixel shift), ~0.1-0.6 % elsewhere
    defocus = np.array(PLANES)[None, :] - z[:, None]
    assert rms.max() < 2.2 and np.median(rms) < 0.8
    assert rms[defocus <= 250].max() < 1.0
    assert worst[defocus <= 250].max() < 3.0 and worst.max() < 13.0


def _gauss_sigma(img: np.ndarray) -> float:
    """σ (nm) of a least-squares pixel-integrated Gaussian (free amplitude) fitted to a window."""
    h = img.shape[-1] // 2
    u, v = np.meshgrid((np.arange(-h, h + 1)) * PX, (np.arange(-h, h + 1)) * PX)

    def model(uv, a, s):
        s2 = np.sqrt(2) * abs(s)
        gx = erf((uv[0] + PX / 2) / s2) - erf((uv[0] - PX / 2) / s2)
        gy = erf((uv[1] + PX / 2) / s2) - erf((uv[1] - PX / 2) / s2)
        return a * gx * gy / 4

    (_, s), _ = curve_fit(model, (u.ravel(), v.ravel()), img.ravel(), p0=[img.sum(), 200.0])
    return abs(float(s))


def test_physics_of_a_149_na_oil_objective_into_water():
    defocus = np.array([-1700, -1500, -1300, -700, -500, 0, 500, 700, 1300, 1500, 1700, 1900.0])
    st = pixel_integrated_psf(F0 + defocus / 1000, px_size_nm=PX, half_px=16, **OPTICS)
    at = {d: st[i] for i, d in enumerate(defocus)}
    sigma = {d: _gauss_sigma(at[d][8:25, 8:25]) for d in (-700, -500, 0, 500, 700)}
    in12 = {d: float(at[d][4:29, 4:29].sum()) for d in defocus}
    print("\nGaussian σ (nm, pixel-integrated fit over ±8 px):", {int(d): round(s) for d, s in sigma.items()})
    print("light in a ±12 px window:", {int(d): round(f, 3) for d, f in in12.items()})
    print(f"best focus at zv = {1000 * F0:.1f} nm (psfmodels); focal shift at 1 µm depth:",
          f"{focus_zv_um(depth_nm=1000.0, **OPTICS):.3f} µm")  # fmt: skip
    # in focus ~130 nm (issue 15): 122 nm measured (133 nm with the pixel's own width)
    assert 110 < sigma[0] < 135
    assert 110 < np.hypot(sigma[0], PX / np.sqrt(12)) < 145
    # at 500 nm defocus "about 500 nm": 430-440 nm measured
    assert 380 < sigma[500] < 520 and 380 < sigma[-500] < 520
    assert sigma[700] > 1.4 * sigma[500] and sigma[-700] > 1.4 * sigma[-500]
    # a ±12 px window (±2.3 µm) still holds > 80 % at ±700 nm; half the light is lost only
    # beyond ~-1.4 µm (focus below the molecule) and ~+1.7 µm: not at ±700 nm as issue 15 says
    assert in12[-700] > 0.8 and in12[700] > 0.9
    assert in12[-1300] > 0.55 > in12[-1500] and in12[1500] > 0.55 > in12[1900]
    # the emitter in water 1 µm deep is best focused with the nominal focus ~16 % deeper
    assert 1.10 < focus_zv_um(depth_nm=1000.0, **OPTICS) < 1.25
    assert 0.0 < F0 < 0.1


def test_window_light_near_one_at_focus_and_falling_with_defocus(psf):
    z = psf.z0_nm + psf.z_step_nm * np.arange(psf.n_z)
    xy = np.full((len(z), 4), 20.5)
    _, vals, _ = spline_windows(psf, xy, xy, z)
    light = vals.sum(axis=(2, 3)) / psf.transmission  # (Nz, P), ±16 px window
    assert light.max() < 1.0
    for k, zk in enumerate(PLANES):
        d = zk - z  # defocus of plane k at each node
        at_focus = light[np.argmin(np.abs(d)), k]
        print(f"plane {k + 1}: ±16 px window holds {at_focus:.4f} in focus, "
              f"{light[np.argmin(np.abs(d + 700)), k]:.3f} at -700 nm")  # fmt: skip
        assert 0.975 < at_focus < 0.99
        for side in (d <= -300, d >= 300):  # outward from focus, nm steps of 10
            order = np.argsort(np.abs(d[side]))
            assert np.all(np.diff(light[side, k][order]) < 1e-4)
    # the ends of the range: 1.9 µm from plane 1 (focus below) and 1.9 µm from plane 4
    assert light[-1, 0] < 0.6 and 0.6 < light[0, 3] < 0.75
    # in focus, the node at the molecule is the peak of its plane
    peak = vals[:, :, 16, 16] / psf.transmission
    np.testing.assert_allclose(z[np.argmax(peak, axis=0)], PLANES, atol=10.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        pixel_integrated_psf(np.array([0.0]), px_size_nm=PX, half_px=4, oversample=4)
    with pytest.raises(ValueError, match="increasing"):
        pixel_integrated_psf(np.array([0.1, 0.0]), px_size_nm=PX, half_px=4)
    with pytest.raises(ValueError, match="NA"):
        vectorial_spline_psf(plane_z_nm=(0.0,), px_size_nm=PX, na=1.6, z_range_nm=(0.0, 100.0))
