"""Simulation of training frames (Sect. 2, Table 3): sampling, rendering, seeding."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import PSFParams
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.simulate import (
    EMITTER_COLUMNS,
    expected_frames,
    sample_drift,
    sample_emitters,
    simulate_frames,
)

S = 192.0
# Table 2, by hand
A_PRIME, R0, D, A, B = 5.00e7, 133.0, 302.0, 7.37e-4, 6.27e-3


PHYSICS = {"psf", "plane_z_nm", "px_size_nm", "noise", "integrate_pixels", "transmission"}


def settings(**kw) -> SimulationSettings:
    """12 x 10 frames of 2-5 molecules with paper noise; the physics keywords go to the Microscope."""
    physics = {"noise": NoiseModel("paper")} | {k: kw.pop(k) for k in PHYSICS & kw.keys()}
    return SimulationSettings(
        Microscope(**physics), **{"height": 12, "width": 10, "n_molecules": (2, 5), **kw}
    )


def test_table3_defaults():
    st = SimulationSettings()
    assert (st.grid.height, st.grid.width, st.grid.px_size_nm) == (64, 64, 192.0)
    assert st.n_molecules == (50, 50)
    # the paper's weights w in [0.3, 1] as detected photons summed over the planes: 4 w a' / s^2
    assert st.photons_range == (1627.6, 5425.3)
    np.testing.assert_allclose(st.photons_range, [4 * w * A_PRIME / S**2 for w in (0.3, 1.0)], atol=0.05)
    assert st.drift_max_nm == 48.0
    # the nominal microscope; the voxel grid follows its pixel and planes
    assert st.physics.psf.r0_nm == R0 and st.physics.noise.kind == "paper" and not st.physics.integrate_pixels
    assert st.grid.plane_z_nm == st.physics.plane_z_nm == (0.0, 400.0, 800.0, 1200.0)
    assert st.physics.transmission == (0.25, 0.25, 0.25, 0.25)


@pytest.mark.parametrize(
    "kw",
    [
        {"n_molecules": (5, 2)},
        {"n_molecules": (-1, 2)},
        {"photons_range": (5000.0, 1000.0)},
        {"photons_range": (-1.0, 1000.0)},
        {"transmission": (0.5, 0.5, 0.5, 0.5)},  # shares must sum to 1
        {"drift_max_nm": -1.0},
        {"plane_z_nm": (0.0, 400.0, 300.0, 1200.0)},  # no voxel grid
    ],
)
def test_settings_reject_bad_values(kw):
    with pytest.raises(ValueError):
        settings(**kw)


def test_sample_emitters_counts_positions_photons():
    st = settings(photons_range=(1500.0, 6000.0))
    n_frames = 300
    em = sample_emitters(n_frames, st, np.random.default_rng(0))
    assert list(em.columns) == list(EMITTER_COLUMNS)
    for name, dtype in EMITTER_COLUMNS.items():
        assert em[name].dtype == dtype
    counts = np.bincount(em["frame"], minlength=n_frames)
    assert counts.size == n_frames
    assert counts.min() >= 2 and counts.max() <= 5
    assert set(np.unique(counts)) == {2, 3, 4, 5}  # every count in the inclusive range occurs
    assert np.all(np.diff(em["frame"].to_numpy()) >= 0)
    # inside the target space [0, W s) x [0, H s) x [-200, 1400)
    assert em["x_nm"].min() >= 0 and em["x_nm"].max() <= 10 * S
    assert em["y_nm"].min() >= 0 and em["y_nm"].max() <= 12 * S
    assert em["z_nm"].min() >= -200 and em["z_nm"].max() <= 1400
    assert em["photons"].min() >= 1500.0 and em["photons"].max() <= 6000.0
    # uniform: the means are near the centres (3 SE of a uniform: width / sqrt(12 n))
    n = len(em)
    assert abs(em["x_nm"].mean() - 5 * S) < 5 * 10 * S / math.sqrt(12 * n)
    assert abs(em["z_nm"].mean() - 600.0) < 5 * 1600 / math.sqrt(12 * n)
    assert abs(em["photons"].mean() - 3750.0) < 5 * 4500 / math.sqrt(12 * n)


def test_sample_emitters_fixed_and_zero_count():
    em = sample_emitters(7, settings(n_molecules=(3, 3)), np.random.default_rng(1))
    np.testing.assert_array_equal(np.bincount(em["frame"], minlength=7), 3)
    assert len(sample_emitters(4, settings(n_molecules=(0, 0)), np.random.default_rng(1))) == 0


def test_sample_drift():
    drift = sample_drift(500, 4, 48.0, np.random.default_rng(2))
    assert drift.shape == (500, 4, 2) and drift.dtype == np.float32
    np.testing.assert_array_equal(drift[:, 0], 0.0)  # Δ1 = 0
    assert np.abs(drift[:, 1:]).max() <= 48.0
    assert np.abs(drift[:, 1:]).max() > 40.0  # fills the range
    assert np.all(drift[:, 1:] != 0)
    np.testing.assert_array_equal(sample_drift(3, 4, 0.0, np.random.default_rng(3)), 0.0)


def hand_pixel(
    em: pd.DataFrame, drift, frame: int, k: int, i: int, j: int, plane_z, b: float = 0.0, t=(0.25,) * 4
) -> float:
    """Σ_m N_m t_k s² / (2 π r²) exp(-|x_ij - (x_m + Δk)|² / (2 r²)) + b, Eqs. 3-7 by hand
    (Eq. 6 with w a' = N t_k s²)."""
    xc, yc = (j + 0.5) * S, (i + 0.5) * S
    total = 0.0
    for row in em[em["frame"] == frame].itertuples():
        u = (plane_z[k] - float(row.z_nm)) / D
        r = R0 * math.sqrt(1 + u**2 + A * u**3 + B * u**4)
        dx = xc - (float(row.x_nm) + float(drift[frame, k, 0]))
        dy = yc - (float(row.y_nm) + float(drift[frame, k, 1]))
        total += (
            float(row.photons)
            * t[k]
            * S
            * S
            / (2 * math.pi * r * r)
            * math.exp(-(dx * dx + dy * dy) / (2 * r * r))
        )
    return total + b


@pytest.mark.parametrize(("b", "t"), [(0.0, None), (2.5, None), (0.0, (0.27, 0.22, 0.28, 0.23))])
def test_expected_frames_hand_sum(b, t):
    st = settings(psf=PSFParams(b=b), transmission=t)
    shares = st.physics.transmission
    em = pd.DataFrame(
        {
            "frame": [0, 0, 0, 2],  # frame 1 is empty
            "x_nm": [700.0, 900.0, 1500.0, 400.0],
            "y_nm": [800.0, 1000.0, 300.0, 2000.0],
            "z_nm": [0.0, 650.0, 1300.0, -150.0],
            "photons": [5425.3, 2712.6, 4340.2, 1627.6],
        }
    )
    drift = np.zeros((3, 4, 2), dtype=np.float32)
    drift[:, 1:] = [[10.0, -20.0], [-33.0, 5.0], [47.0, 47.0]]
    out = expected_frames(em, drift, st)
    assert out.shape == (3, 4, 12, 10) and out.dtype == np.float32
    planes = st.grid.plane_z_nm
    for f, k, i, j in [
        (0, 0, 4, 3),
        (0, 1, 5, 4),
        (0, 3, 1, 7),
        (0, 2, 3, 4),
        (2, 0, 10, 2),
        (2, 3, 10, 2),
        (0, 0, 11, 0),
    ]:
        assert out[f, k, i, j] == pytest.approx(
            hand_pixel(em, drift, f, k, i, j, planes, b, shares), rel=1e-5, abs=1e-5
        )
    np.testing.assert_allclose(out[1], b, atol=1e-6)
    # the batch size does not matter
    np.testing.assert_allclose(expected_frames(em, drift, st, batch=1), out, rtol=1e-6)


def test_expected_frames_drift_moves_planes_2_to_4():
    st = settings()
    em = pd.DataFrame({"frame": [0], "x_nm": [960.0], "y_nm": [1152.0], "z_nm": [600.0], "photons": [5425.3]})
    still = expected_frames(em, np.zeros((1, 4, 2)), st)
    drift = np.zeros((1, 4, 2))
    drift[0, 2] = [S, 0.0]  # plane 3 sees the molecule one pixel to the right
    moved = expected_frames(em, drift, st)
    np.testing.assert_array_equal(moved[0, [0, 1, 3]], still[0, [0, 1, 3]])
    np.testing.assert_allclose(moved[0, 2, :, 1:], still[0, 2, :, :-1], rtol=1e-5, atol=1e-6)


def test_simulate_frames_seeding():
    st = settings()
    a = simulate_frames(6, st, np.random.default_rng(5))
    b = simulate_frames(6, st, np.random.default_rng(5))
    c = simulate_frames(6, st, np.random.default_rng(6))
    assert a.frames.shape == (6, 4, 12, 10) and a.frames.dtype == np.float32
    assert a.drift_nm.shape == (6, 4, 2)
    np.testing.assert_array_equal(a.frames, b.frames)
    pd.testing.assert_frame_equal(a.emitters, b.emitters)
    np.testing.assert_array_equal(a.drift_nm, b.drift_nm)
    assert not np.array_equal(a.frames, c.frames)
    assert not a.emitters.equals(c.emitters)
    assert not np.array_equal(a.drift_nm, c.drift_nm)


@pytest.mark.parametrize("integrate", [False, True])
def test_simulate_frames_noise_none_is_expected(integrate):
    st = settings(noise=NoiseModel("none"), integrate_pixels=integrate)
    sim = simulate_frames(4, st, np.random.default_rng(7))
    np.testing.assert_array_equal(sim.frames, expected_frames(sim.emitters, sim.drift_nm, st))
    # paper noise: the frames are the expected image plus noise of mean λ = 10
    st_noisy = settings(noise=NoiseModel("paper"), integrate_pixels=integrate)
    noisy = simulate_frames(4, st_noisy, np.random.default_rng(7))
    resid = noisy.frames - expected_frames(noisy.emitters, noisy.drift_nm, st_noisy)
    # 4 x 4 x 12 x 10 = 1920 pixels of variance 19: SE of the mean = sqrt(19 / 1920)
    assert abs(resid.mean() - 10.0) < 5 * math.sqrt(19.0 / resid.size)
