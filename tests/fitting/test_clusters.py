"""Groups of three or more close detections (voxloc.fitting.clusters): three molecules keep
three rows fitted together; one molecule detected three times keeps one row."""

from __future__ import annotations

import numpy as np
from test_refine import PX, network_table, refiner, render_frames

from voxloc.fitting.clusters import close_groups
from voxloc.fitting.neighbours import neighbour_pairs
from voxloc.locs import FIT_FLAGS
from voxloc.physics.microscope import Microscope

JOINT = FIT_FLAGS["joint"]


def test_groups_are_the_components_of_three_or_more_most_probable_first():
    frame = np.zeros(7, int)
    x = np.array([0.0, 300.0, 5000.0, 5300.0, 5600.0, 9000.0, 5150.0])  # a pair, a group of 4, one alone
    prob = np.array([0.9, 0.8, 0.5, 0.7, 0.6, 0.9, 0.95])
    i, j, _ = neighbour_pairs(frame, x, np.zeros(7), 400.0)
    np.testing.assert_array_equal(close_groups(i, j, prob), [[6, 3, 4, 2]])
    assert close_groups(np.zeros(0, int), np.zeros(0, int), prob).shape == (0, 3)


def scene(kind: str, n_frames: int, rng: np.random.Generator):
    """Per frame three detections at the corners of a triangle of side 330 nm around the
    frame's centre: ``three`` molecules there, or ``one`` molecule at the centre found three
    times. The network's positions: the detections + N(0, 30 nm), z + N(0, 40)."""
    mic = Microscope()
    frame = np.repeat(np.arange(n_frames), 3)
    cx, cy = rng.uniform(22, 26, (2, n_frames)) * PX
    ang = rng.uniform(0, 2 * np.pi, n_frames)[:, None] + np.array([0.0, 2.0, 4.0]) * np.pi / 3
    r = 190.0 if kind == "three" else 110.0
    x_det = (cx[:, None] + r * np.cos(ang)).ravel()
    y_det = (cy[:, None] + r * np.sin(ang)).ravel()
    if kind == "three":
        z = rng.uniform(200, 1000, 3 * n_frames)
        photons = rng.uniform(3000, 5000, 3 * n_frames)
        truth = (frame, x_det, y_det, z, photons)
    else:
        z = np.repeat(rng.uniform(200, 1000, n_frames), 3)
        photons = rng.uniform(3000, 5000, n_frames)
        truth = (np.arange(n_frames), cx, cy, z[::3], photons)
    cams = render_frames(mic, *truth, n_frames, rng)
    m = 3 * n_frames
    table = network_table(
        frame, x_det + rng.normal(0, 30, m), y_det + rng.normal(0, 30, m), z + rng.normal(0, 40, m)
    )
    table["prob"] = rng.uniform(0.6, 0.99, m).astype(np.float32)
    return mic, cams, table, np.stack(truth[1:4], axis=1)


def test_three_molecules_keep_three_rows_fitted_together():
    rng = np.random.default_rng(31)
    mic, cams, table, truth = scene("three", 30, rng)
    ref = refiner(mic, "joint", second=False)
    out = ref(table, cams, 0)
    assert len(out) >= 84  # of 90
    joint = out[(out["fit_flags"] & JOINT) > 0]
    assert len(joint) >= 84
    # each fitted row against the nearest true molecule of its frame
    t = truth.reshape(30, 3, 3)[joint["frame"].to_numpy()]
    fitted = joint[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64)
    err = (
        fitted
        - t[np.arange(len(t)), np.argmin(np.linalg.norm(t[..., :2] - fitted[:, None, :2], axis=-1), axis=1)]
    )
    net = joint[["x_net_nm", "y_net_nm", "z_net_nm"]].to_numpy(np.float64)
    err_net = (
        net - t[np.arange(len(t)), np.argmin(np.linalg.norm(t[..., :2] - net[:, None, :2], axis=-1), axis=1)]
    )
    rmse = np.sqrt(np.mean(err**2, axis=0))
    assert np.all(rmse < 0.6 * np.sqrt(np.mean(err_net**2, axis=0))), rmse
    sigma = joint[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    assert np.all(rmse < 2.0 * np.sqrt(np.mean(sigma**2, axis=0))), rmse


def test_one_molecule_found_three_times_keeps_one_row():
    rng = np.random.default_rng(32)
    mic, cams, table, truth = scene("one", 30, rng)
    ref = refiner(mic, "joint", second=False)
    out = ref(table, cams, 0)
    assert len(out) <= 36  # ~30: one row per molecule
    assert ref.duplicates == 90 - len(out)
    single = out[(out["fit_flags"] & JOINT) == 0]
    assert len(single) >= 26
    frames = single["frame"].to_numpy()
    np.testing.assert_allclose(single["prob"], table["prob"].to_numpy().reshape(-1, 3).max(axis=1)[frames])
    err = single[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64) - truth[frames]
    sigma = single[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    assert np.all(np.sqrt(np.mean(err**2, axis=0)) < 1.6 * np.sqrt(np.mean(sigma**2, axis=0)))
