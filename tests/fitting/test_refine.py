"""The batch-level fit (voxloc.fitting.refine): neighbour search, crowded flags, the
crowded modes (alone / subtract / network) and the localization table it writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from voxloc.fitting.neighbours import crowded, neighbour_pairs
from voxloc.fitting.refine import NEIGHBOUR_REACH_PX, Refiner
from voxloc.fitting.windows import CameraMaps
from voxloc.locs import FIT_FLAGS, LOC_SCHEMA, NETWORK_FIELDS, to_arrow
from voxloc.physics.cameras import affine_matrix
from voxloc.physics.crlb import crlb
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise, add_noise

PX = 192.0
FRAME = 48
Z_RANGE = (-400.0, 1600.0)
REGISTRATIONS = [np.eye(3)] + [
    affine_matrix(
        height=FRAME, width=FRAME, rotation_deg=1.5 * k, scale=1 + 0.01 * k, shift_px=(0.7 * k, -0.4 * k)
    )
    for k in range(1, 4)
]
MAPS = CameraMaps.from_registrations(REGISTRATIONS)
CROWDED = FIT_FLAGS["crowded"]


def brute_pairs(frame, x, y, d):
    """All ordered pairs (i, j), i != j, of one frame within d, O(N²)."""
    out = {}
    for i in range(len(frame)):
        for j in range(len(frame)):
            if i != j and frame[i] == frame[j]:
                r = np.hypot(x[i] - x[j], y[i] - y[j])
                if r <= d:
                    out[(i, j)] = r
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_neighbour_pairs_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, d = 400, 400.0
    frame = rng.integers(0, 6, n)
    x = rng.uniform(0, 6000, n)
    y = rng.uniform(0, 6000, n)
    # ties and edge cases: a duplicate, a pair at exactly d along x, equal x far apart in y,
    # and a close pair split over two frames
    x[1], y[1], frame[1] = x[0], y[0], frame[0]
    x[2], x[3], y[3], frame[3] = 1000.0, 1000.0 + d, y[2], frame[2]
    y[4], x[5], y[5], frame[5] = 2000.0, x[4], 2000.0 + d + 1e-6, frame[4]
    x[7], y[7], frame[7] = x[6] + 10, y[6], (frame[6] + 1) % 6
    i, j, dist = neighbour_pairs(frame, x, y, d)
    assert i.dtype.kind == "i" and j.dtype.kind == "i"
    got = {(a, b): r for a, b, r in zip(i.tolist(), j.tolist(), dist.tolist(), strict=True)}
    assert len(got) == len(i)  # no pair twice
    ref = brute_pairs(frame, x, y, d)
    assert set(got) == set(ref)
    assert len(ref) > 50  # a real test: many pairs
    assert (0, 1) in got and got[(0, 1)] == 0.0
    assert (2, 3) in got and (4, 5) not in got and (6, 7) not in got
    for key, r in ref.items():
        assert got[key] == pytest.approx(r, rel=1e-12, abs=1e-9)
        assert got[(key[1], key[0])] == got[key]  # symmetric
    near = crowded(frame, x, y, d)
    expect = np.zeros(n, bool)
    expect[[a for a, _ in ref]] = True
    np.testing.assert_array_equal(near, expect)


def test_neighbour_pairs_degenerate():
    for args in [(np.zeros(0, int), np.zeros(0), np.zeros(0), 400.0), (np.zeros(1, int), [0.0], [0.0], 400.0),
                 (np.zeros(2, int), [0.0, 1.0], [0.0, 0.0], 0.0)]:  # fmt: skip
        i, j, d = neighbour_pairs(*args)
        assert len(i) == len(j) == len(d) == 0
    assert not crowded(np.zeros(3, int), [0.0, 1000.0, 2000.0], [0.0] * 3, 400.0).any()
    # a frame column that is not sorted, and negative frames
    frame = np.array([5, -1, 5, -1])
    i, j, d = neighbour_pairs(frame, [0.0, 0.0, 100.0, 500.0], [0.0] * 4, 200.0)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == [(0, 2), (2, 0)]
    np.testing.assert_allclose(d, 100.0)


def network_table(frame, x, y, z) -> pd.DataFrame:
    """A table of the network's columns (NETWORK_FIELDS) with their dtypes."""
    n = len(frame)
    cols = {"frame": frame, "x_nm": x, "y_nm": y, "z_nm": z, "prob": np.full(n, 0.9), "plane": np.ones(n),
            "row": np.arange(n), "col": np.arange(n)}  # fmt: skip
    return pd.DataFrame(
        {name: np.asarray(cols[name]).astype(t.to_pandas_dtype()) for name, t in NETWORK_FIELDS}
    )


def render_frames(mic, frame, x, y, z, photons, n_frames, rng):
    """Frames (B, P, H, W) in photons with the molecules of each frame, paper noise."""
    pos = MAPS.positions_px(x, y, PX)
    sig = np.zeros((n_frames, 4, FRAME, FRAME))
    for f in range(n_frames):
        m = frame == f
        if m.any():
            sig[f] = mic.render(
                (pos[m] * PX)[None], z[m][None], photons[m][None], (FRAME, FRAME), dtype=np.float64
            )[0]
    obs = add_noise(sig, mic.noise, rng)
    return [np.ascontiguousarray(obs[:, k]) for k in range(4)]


@pytest.fixture(scope="module")
def small_batch():
    """Frames 10 and 11 of a movie: in frame 10 two molecules 300 nm apart (crowded at the
    default 400 nm) and one 24 px away (beyond any neighbour's reach); in frame 11 one
    molecule alone. The network's positions: truth + N(0, 30 nm) laterally, N(0, 40) in z."""
    mic = Microscope()
    rng = np.random.default_rng(3)
    frame = np.array([0, 0, 0, 1])
    x = np.array([12 * PX, 12 * PX + 300, 36 * PX, 24 * PX])
    y = np.array([24 * PX, 24 * PX, 24 * PX, 20 * PX])
    z = np.array([500.0, 700.0, 600.0, 400.0])
    photons = np.full(4, 4000.0)
    cams = render_frames(mic, frame, x, y, z, photons, 2, rng)
    table = network_table(
        frame + 10, x + rng.normal(0, 30, 4), y + rng.normal(0, 30, 4), z + rng.normal(0, 40, 4)
    )
    return mic, cams, table, np.stack([x, y, z], axis=1)


def refiner(mic, mode, **kwargs):
    return Refiner(mic, PixelNoise.from_model(mic.noise), REGISTRATIONS, Z_RANGE, crowded_mode=mode, **kwargs)


FIT_COLUMNS = ["x_nm", "y_nm", "z_nm", "photons", "bg", "sigma_x_nm", "sigma_y_nm", "sigma_z_nm", "chi2_dof",
               "n_iter", "converged", "fit_flags"]  # fmt: skip


@pytest.mark.parametrize("mode", ["alone", "subtract", "network"])
def test_refiner_modes(small_batch, mode):
    mic, cams, table, truth = small_batch
    ref = refiner(mic, mode)
    out = ref(table, cams, 10)
    # the localization table: exactly LOC_SCHEMA's columns, castable to it
    assert list(out.columns) == LOC_SCHEMA.names
    arrow = to_arrow(out)
    assert arrow.schema.equals(LOC_SCHEMA)
    assert arrow.num_rows == 4
    for f in LOC_SCHEMA:
        assert out[f.name].dtype == f.type.to_pandas_dtype(), f.name
    # the network's columns are kept, its position copied into *_net_nm
    for name in ("frame", "prob", "plane", "row", "col"):
        np.testing.assert_array_equal(out[name], table[name])
    for axis in "xyz":
        np.testing.assert_array_equal(out[f"{axis}_net_nm"].to_numpy(), table[f"{axis}_nm"].to_numpy())
    flags = out["fit_flags"].to_numpy()
    assert flags.tolist() == [CROWDED, CROWDED, 0, 0]
    fitted = out[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64)
    sigma = out[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    assert np.all(np.isfinite(out[FIT_COLUMNS[:9]].to_numpy(np.float64)))
    # the isolated molecules are fitted, close to the truth
    for m in (2, 3):
        assert out["converged"][m] and out["n_iter"][m] >= 1
        assert np.all(np.abs(fitted[m] - truth[m]) < 4 * sigma[m]), (m, fitted[m] - truth[m])
        assert abs(out["photons"][m] / 4000 - 1) < 0.1 and abs(out["bg"][m] / 10 - 1) < 0.1
    net = table[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64)
    if mode in ("network", "subtract"):
        # the crowded pair keeps the network's positions (photons, background, σ fitted there)
        np.testing.assert_array_equal(fitted[:2], net[:2])
        assert out["n_iter"][:2].tolist() == [0, 0] and not out["converged"][:2].any()
        assert np.all(out["photons"][:2] > 1000) and np.all(np.isfinite(sigma[:2])) and np.all(sigma[:2] > 0)
    else:
        # fitted alone, each of the pair moves from the network's position
        assert np.all(out["n_iter"][:2] >= 1)
        assert np.all(np.abs(fitted[:2, :2] - net[:2, :2]).max(axis=1) > 1.0)
    assert ref.counts["crowded"] == 2 and ref.n_fitted == 4
    ref(table, cams, 10)
    assert ref.counts["crowded"] == 4 and ref.n_fitted == 8
    assert "8 detections fitted" in ref.summary()


def test_subtract_isolated_rows_match_alone(small_batch):
    """Molecules with no other within the neighbours' reach are fitted alike in ``subtract``
    and ``alone``: the same row; frame 11's molecule sits where frame 10's pair would reach
    it (frames are separate)."""
    mic, cams, table, _ = small_batch
    assert (36 - 12) * PX - 300 > (9 // 2 + NEIGHBOUR_REACH_PX) * PX
    alone = refiner(mic, "alone")(table, cams, 10)
    sub = refiner(mic, "subtract")(table, cams, 10)
    for name in FIT_COLUMNS:
        np.testing.assert_allclose(sub[name][2:].to_numpy(np.float64), alone[name][2:].to_numpy(np.float64),
                                   rtol=1e-6, atol=1e-6, err_msg=name)  # fmt: skip


def test_subtract_models_the_neighbours_light():
    """Pairs 4 px (768 nm, not crowded at 400 nm) apart, one pair per frame: each molecule's
    window holds its neighbour's light. Fitted alone they are biased toward each other with
    the light taken for background; ``subtract`` (the neighbours' light, at the network's
    positions with their photons fitted there, added to μ)
    gives fits near the CRLB with calibrated σ, photons and background."""
    mic = Microscope()
    rng = np.random.default_rng(4)
    pairs, sep = 40, 4.0 * PX
    xa, ya = rng.uniform(18, 22, pairs) * PX, rng.uniform(18, 30, pairs) * PX
    ang = rng.uniform(0, 2 * np.pi, pairs)
    x = np.stack([xa, xa + sep * np.cos(ang)], axis=1).ravel()
    y = np.stack([ya, ya + sep * np.sin(ang)], axis=1).ravel()
    z = rng.uniform(0, 1200, 2 * pairs)
    photons = rng.uniform(3000, 5000, 2 * pairs)
    frame = np.repeat(np.arange(pairs), 2)
    cams = render_frames(mic, frame, x, y, z, photons, pairs, rng)
    table = network_table(frame, x + rng.normal(0, 30, 2 * pairs), y + rng.normal(0, 30, 2 * pairs),
                          z + rng.normal(0, 40, 2 * pairs))  # fmt: skip
    truth = np.stack([x, y, z], axis=1)
    bound = np.sqrt(crlb(mic, x, y, z, photons).mean(axis=0))
    results = {}
    for mode in ("alone", "subtract"):
        out = refiner(mic, mode)(table, cams, 0)
        assert np.all(out["fit_flags"] == 0)
        err = out[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64) - truth
        sigma = out[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
        results[mode] = (np.sqrt(np.mean(err**2, axis=0)), np.mean(np.abs(err) < sigma, axis=0), out)
    rmse_alone, _, alone = results["alone"]
    rmse, coverage, sub = results["subtract"]
    assert np.all(rmse < 0.5 * rmse_alone), (rmse, rmse_alone)
    assert np.all(rmse < 1.4 * bound), (rmse, bound)
    assert np.all((coverage > 0.52) & (coverage < 0.84)), coverage  # 68 % ± 3 sd of 80
    assert abs(np.median(sub["photons"] / photons) - 1) < 0.03
    assert abs(np.median(sub["bg"]) / 10 - 1) < 0.03 and np.median(alone["bg"]) > 12
    assert 0.9 < np.median(sub["chi2_dof"]) < 1.1 < np.median(alone["chi2_dof"])


def test_refiner_rejects_unknown_mode():
    with pytest.raises(ValueError, match="fit_crowded"):
        refiner(Microscope(), "pairs")


def test_refiner_empty_batch():
    """Frames without detections (e.g. the end of a movie): an empty table of LOC_SCHEMA."""
    mic = Microscope()
    table = network_table(np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0))
    cams = [np.zeros((4, FRAME, FRAME), np.float32)] * 4
    out = refiner(mic, "subtract")(table, cams, 0)
    assert len(out) == 0 and list(out.columns) == LOC_SCHEMA.names
    assert isinstance(to_arrow(out), pa.Table)
