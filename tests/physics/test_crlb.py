"""Tests of the Cramér-Rao lower bound (voxloc.physics.crlb)."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import pytest

from voxloc.physics.crlb import crlb, crlb_ratio, crlb_table, fisher_information
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import TABLE2, PSFParams, photons_per_plane, render_planes

PLANES = (0.0, 400.0, 800.0, 1200.0)
PX = 192.0
POISSON = NoiseModel(kind="physical", background=0.0, read_noise_var=0.0)
#: detected photons (summed over the 4 planes) of a molecule of weight 1 with Table 2's a'
N1 = float(4 * photons_per_plane(1.0, TABLE2, PX))  # 5425.3


def _independent_fisher(x, y, z, n, psf, planes, px, drift, window, var_fn, gain=1.0, h=0.05, t=None):
    """Fisher information of a tiny Gaussian model written here, central differences: n
    photons, plane k gets n t_k of them (t default: equal shares)."""
    share = np.full(len(planes), 1.0 / len(planes)) if t is None else np.asarray(t)
    half = window // 2
    ox = (np.floor(x / px) - half) * px
    oy = (np.floor(y / px) - half) * px
    c = (np.arange(window) + 0.5) * px
    yy, xx = np.meshgrid(oy + c, ox + c, indexing="ij")

    def model(t):
        out = []
        for k, zk in enumerate(planes):
            u = (zk - t[2]) / psf.D_nm
            r2 = psf.r0_nm**2 * (1 + u**2 + psf.A * u**3 + psf.B * u**4)
            amp = n * share[k] * px * px / (2 * np.pi * r2)
            dx = xx - t[0] - drift[k, 0]
            dy = yy - t[1] - drift[k, 1]
            out.append(amp * np.exp(-(dx**2 + dy**2) / (2 * r2)) + psf.b)
        return np.stack(out)

    theta = np.array([x, y, z], dtype=float)
    mu = model(theta)
    grads = []
    for a in range(3):
        e = np.zeros(3)
        e[a] = h
        grads.append((model(theta + e) - model(theta - e)) / (2 * h))
    g = np.stack(grads).reshape(3, -1)
    iv = gain**2 / var_fn(mu).reshape(-1)
    return (g * iv) @ g.T


@pytest.mark.parametrize(
    "noise,gain,var_fn",
    [
        (
            NoiseModel(kind="paper", background=10.0, read_noise_var=9.0),
            1.0,
            lambda mu: np.full_like(mu, 19.0),
        ),
        (
            NoiseModel(
                kind="physical",
                background=12.0,
                read_noise_var=2500.0,
                em_gain=100.0,
                sensitivity_e_per_adu=25.0,
            ),
            4.0,
            lambda mu: (2 * 100.0**2 * (mu + 12.0) + 2500.0) / 25.0**2,
        ),
    ],
)
@pytest.mark.parametrize("transmission", [None, (0.27, 0.22, 0.28, 0.23)])
def test_matches_independent_fisher(noise, gain, var_fn, transmission):
    psf = PSFParams(b=3.0)
    rng = np.random.default_rng(1)
    drift = rng.uniform(-48, 48, size=(len(PLANES), 2))
    drift[0] = 0
    xs, ys, zs, ns = [2000.3, 2501.7], [1900.9, 3333.3], [-150.0, 730.0], [N1, 0.4 * N1]
    mic = Microscope(psf, PLANES, PX, noise, transmission=transmission)
    info = fisher_information(mic, xs, ys, zs, ns, window_px=25, drift_nm=drift)
    assert info.shape == (2, 3, 3)
    for m in range(2):
        ref = _independent_fisher(
            xs[m], ys[m], zs[m], ns[m], psf, PLANES, PX, drift, 25, var_fn, gain, t=transmission
        )
        scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
        np.testing.assert_allclose(info[m] / scale, ref / scale, atol=0.01)
        np.testing.assert_allclose(np.diag(info[m]), np.diag(ref), rtol=0.01)


def test_single_plane_gaussian_limit():
    """One in-focus plane, pure Poisson, small pixels: var(x) -> r0² / N (N = w a' / px² for
    a molecule of weight w)."""
    px, w = 10.0, 0.8
    psf = PSFParams(a_prime=5e7, r0_nm=133.0)
    window = 2 * int(6 * psf.r0_nm / px) + 1
    n_photons = float(photons_per_plane(w, psf, px))  # one plane: all of them
    assert n_photons == pytest.approx(w * psf.a_prime / px**2, rel=1e-12)
    mu = render_planes(
        np.array([[[[503.0, 497.0]]]]),
        np.zeros((1, 1)),
        np.full((1, 1), n_photons),
        psf,
        (0.0,),
        (100, 100),
        px,
        dtype=np.float64,
    )
    assert mu.sum() == pytest.approx(n_photons, rel=1e-3)
    mic = Microscope(psf, (0.0,), px, POISSON)
    assert mic.transmission == (1.0,)
    info = fisher_information(mic, 503.0, 497.0, 0.0, n_photons, window_px=window)
    expected = psf.r0_nm**2 / n_photons
    assert 1.0 / info[0, 0] == pytest.approx(expected, rel=0.02)
    assert 1.0 / info[1, 1] == pytest.approx(expected, rel=0.02)
    var = crlb(mic, 503.0, 497.0, 0.0, n_photons, window_px=window, nuisance=False)[0]
    assert var[0] == pytest.approx(expected, rel=0.02)
    assert np.isinf(var[2])  # dr/dz = 0 in focus: z is not identifiable from one plane
    # pixel integration gives the same limit for small pixels
    integrating = dataclasses.replace(mic, integrate_pixels=True)
    info_int = fisher_information(integrating, 503.0, 497.0, 0.0, n_photons, window_px=window)
    assert 1.0 / info_int[0, 0] == pytest.approx(expected, rel=0.02)


def test_bound_scales_with_photons():
    poisson = Microscope(TABLE2, PLANES, PX, POISSON)
    v1 = crlb(poisson, 1000.0, 1000.0, 300.0, 2000.0, window_px=21)
    v2 = crlb(poisson, 1000.0, 1000.0, 300.0, 4000.0, window_px=21)
    np.testing.assert_allclose(v2, v1 / 2, rtol=1e-6)  # pure Poisson: 1 / N
    paper = Microscope(TABLE2, PLANES, PX, NoiseModel(kind="paper"))
    p1 = crlb(paper, 1000.0, 1000.0, 300.0, 2000.0, window_px=21)
    p2 = crlb(paper, 1000.0, 1000.0, 300.0, 4000.0, window_px=21)
    np.testing.assert_allclose(p2, p1 / 4, rtol=1e-6)  # constant variance: 1 / N²
    # the photon count has no default: a bound needs the molecule's brightness
    with pytest.raises(TypeError):
        crlb(paper, 1000.0, 1000.0, 300.0)


def test_bound_follows_transmission():
    # pure Poisson, z in focus of plane 2: moving photons from the other planes to plane 2
    # (brighter in-focus spot) tightens x; the same shares give the same bound as equal ones
    equal = Microscope(TABLE2, PLANES, PX, POISSON)
    same = Microscope(TABLE2, PLANES, PX, POISSON, transmission=(0.25, 0.25, 0.25, 0.25))
    focus2 = Microscope(TABLE2, PLANES, PX, POISSON, transmission=(0.1, 0.7, 0.1, 0.1))
    known = {"window_px": 21, "nuisance": False}  # no background: b is not identifiable
    v_eq = crlb(equal, 1000.0, 1000.0, 400.0, N1, **known)
    np.testing.assert_allclose(crlb(same, 1000.0, 1000.0, 400.0, N1, **known), v_eq, rtol=1e-12)
    v_f2 = crlb(focus2, 1000.0, 1000.0, 400.0, N1, **known)
    assert v_f2[0, 0] < v_eq[0, 0] and v_f2[0, 1] < v_eq[0, 1]


def test_quad_plane_z_finite_and_xy_symmetric():
    mic = Microscope(TABLE2, PLANES, PX, NoiseModel(kind="paper"))
    # molecule at a pixel centre, no drift: x and y are exchangeable
    z = np.array([-100.0, 0.0, 10.0, 400.0, 790.0, 1200.0, 1300.0])
    v = crlb(mic, np.full(z.size, 5 * PX + PX / 2), np.full(z.size, 7 * PX + PX / 2), z, N1)
    assert np.all(np.isfinite(v)) and np.all(v > 0)
    np.testing.assert_allclose(v[:, 0], v[:, 1], rtol=1e-6)
    assert np.all(v[:, 2] > v[:, 0])
    info = fisher_information(mic, 5.5 * PX, 7.5 * PX, 0.0, N1)
    np.testing.assert_allclose(info, info.T, rtol=1e-10, atol=1e-12)
    assert abs(info[0, 1]) < 1e-6 * info[0, 0]


def test_noise_none_raises():
    with pytest.raises(ValueError, match="undefined"):
        crlb(Microscope(TABLE2, PLANES, PX, NoiseModel(kind="none")), 0.0, 0.0, 0.0, N1)


def test_table_ratio_and_speed():
    rng = np.random.default_rng(0)
    n = 1000
    truth = pd.DataFrame(
        {
            "frame": rng.integers(0, 10, n),
            "x_nm": rng.uniform(0, 12288, n),
            "y_nm": rng.uniform(0, 12288, n),
            "z_nm": rng.uniform(-200, 1400, n),
            "photons": rng.uniform(0.3 * N1, N1, n),
        }
    )
    drift = rng.uniform(-48, 48, (10, 4, 2))
    drift[:, 0] = 0
    t0 = time.perf_counter()
    mic = Microscope(TABLE2, PLANES, PX, NoiseModel())
    out = crlb_table(truth, mic, drift_nm=drift, window_px=15)
    assert time.perf_counter() - t0 < 5.0  # thousands of molecules per second
    assert list(out.columns[-3:]) == ["crlb_x_nm", "crlb_y_nm", "crlb_z_nm"]
    assert list(truth.columns) == ["frame", "x_nm", "y_nm", "z_nm", "photons"]
    std = out[["crlb_x_nm", "crlb_y_nm", "crlb_z_nm"]].to_numpy()
    assert np.all(np.isfinite(std)) and np.all(std > 0)
    # one row against a direct call with that frame's drift
    r = truth.iloc[3]
    v = crlb(mic, r.x_nm, r.y_nm, r.z_nm, r.photons, drift_nm=drift[int(r.frame)], window_px=15)[0]
    np.testing.assert_allclose(std[3], np.sqrt(v), rtol=1e-10)
    # no photons column: the bound is undefined, not computed for a made-up brightness
    with pytest.raises(KeyError, match="photons"):
        crlb_table(truth.drop(columns="photons"), mic, window_px=15)
    ratio = crlb_ratio([2.0, 4.0, 6.0], np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(ratio, [2.0, 2.0, 2.0])
    ratio = crlb_ratio([1.0, 1.0, 1.0], np.array([[1.0, 1.0, np.inf], [7.0**0.5, 1.0, 2.0]]))
    np.testing.assert_allclose(ratio, [0.5, 1.0, 0.5])


def test_microscope_metadata_round_trip():
    """The Parquet metadata of the physics: five JSON strings (the pixel size rides apart)."""
    t = (0.27, 0.22, 0.28, 0.23)
    mic = Microscope(PSFParams(b=1.5), (0, 390, 810.5, 1200), 160.0, NoiseModel("physical"), True, t)
    assert mic.plane_z_nm == (0.0, 390.0, 810.5, 1200.0)
    assert mic.model == "gaussian" and mic.transmission == t
    meta = mic.metadata()
    assert list(meta) == ["psf", "plane_z_nm", "noise", "integrate_pixels", "transmission"]
    assert meta["plane_z_nm"] == "[0.0, 390.0, 810.5, 1200.0]" and meta["integrate_pixels"] == "true"
    assert json.loads(meta["psf"]) == PSFParams(b=1.5).to_dict() == mic.psf_dict()
    assert json.loads(meta["transmission"]) == list(t)
    assert Microscope.from_metadata({**meta, "px_size_nm": "160.0"}) == mic
    del meta["transmission"]  # older ground truths: equal shares
    assert Microscope.from_metadata({**meta, "px_size_nm": "160.0"}).transmission == (0.25,) * 4
    del meta["integrate_pixels"]  # older ground truths: point sampling
    assert not Microscope.from_metadata({**meta, "px_size_nm": "160.0"}).integrate_pixels
    with pytest.raises(KeyError):
        Microscope.from_metadata(meta)  # no px_size_nm


def test_bound_with_photons_and_backgrounds_unknown():
    """The default bound has N and the 4 backgrounds unknown: against an independent Fisher
    matrix of all 8 parameters from central differences of Microscope.render, and never
    below the bound with them known, which it nearly equals between the planes."""
    noise = NoiseModel(kind="paper")
    mic = Microscope(TABLE2, PLANES, PX, noise)
    z = np.array([-150.0, 200.0, 600.0, 1350.0])
    x = np.full(z.size, 10.3 * PX)
    y = np.full(z.size, 10.6 * PX)
    full = crlb(mic, x, y, z, N1, window_px=21)
    known = crlb(mic, x, y, z, N1, window_px=21, nuisance=False)
    assert np.all(full >= known * (1 - 1e-9))
    inside = (z > 0) & (z < 1200)
    np.testing.assert_allclose(full[inside], known[inside], rtol=0.05)
    assert np.all(full[~inside, 2] > 1.2 * known[~inside, 2])
    var_y = noise.background + noise.read_noise_var  # the paper's constant variance
    ox = (np.floor(x / PX) - 10) * PX
    oy = (np.floor(y / PX) - 10) * PX
    for m in range(z.size):

        def mu(theta, m=m):
            xy = np.broadcast_to([theta[0] - ox[m], theta[1] - oy[m]], (1, 4, 2))
            img = mic.render(xy, np.array([theta[2]]), np.array([theta[3]]), (21, 21), dtype=np.float64)
            return img + np.asarray(theta[4:])[:, None, None]

        theta = np.array([x[m], y[m], z[m], N1, 0.0, 0.0, 0.0, 0.0])
        steps = np.array([0.05, 0.05, 0.05, 0.5, 0.01, 0.01, 0.01, 0.01])
        jac = []
        for i, h in enumerate(steps):
            e = np.zeros(8)
            e[i] = h
            jac.append(((mu(theta + e) - mu(theta - e)) / (2 * h)).ravel())
        jac = np.array(jac)
        ref = np.diag(np.linalg.inv(jac @ jac.T / var_y))[:3]
        np.testing.assert_allclose(full[m], ref, rtol=2e-3)
