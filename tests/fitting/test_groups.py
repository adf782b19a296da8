"""Close pairs (voxloc.fitting.groups, fit_crowded: joint): two molecules are fitted as two
emitters, one molecule detected twice keeps one row."""

from __future__ import annotations

import numpy as np
import pytest
from test_refine import FRAME, PX, network_table, refiner, render_frames

from voxloc.fitting.groups import close_pairs, pair_window_px
from voxloc.fitting.neighbours import neighbour_pairs
from voxloc.locs import FIT_FLAGS, LOC_SCHEMA
from voxloc.physics.microscope import Microscope

CROWDED, JOINT = FIT_FLAGS["crowded"], FIT_FLAGS["joint"]


def test_close_pairs_are_each_others_only_neighbour():
    frame = np.zeros(6, int)
    x = np.array([0.0, 300.0, 5000.0, 5200.0, 5400.0, 9000.0])  # a pair, a chain of 3, one alone
    y = np.zeros(6)
    i, j, _ = neighbour_pairs(frame, x, y, 400.0)
    np.testing.assert_array_equal(close_pairs(i, j, 6), [[0, 1]])
    assert close_pairs(np.zeros(0, int), np.zeros(0, int), 3).shape == (0, 2)
    assert pair_window_px(9, 400.0, 192.0) == 13  # each member's 9 px window inside it


def scenes(kind: str, n_frames: int, rng: np.random.Generator):
    """One close pair of detections per frame at the frame's centre: ``two`` molecules 250 nm
    apart, or ``one`` molecule found twice (two detections 120 nm either side of it). The
    network's positions: the truth (or the duplicate's) + N(0, 30 nm), z + N(0, 40)."""
    mic = Microscope()
    frame = np.repeat(np.arange(n_frames), 2)
    cx, cy = rng.uniform(22, 26, (2, n_frames)) * PX
    ang = rng.uniform(0, np.pi, n_frames)
    half = 125.0 if kind == "two" else 120.0
    dx, dy = half * np.cos(ang), half * np.sin(ang)
    x_det = np.stack([cx - dx, cx + dx], axis=1).ravel()
    y_det = np.stack([cy - dy, cy + dy], axis=1).ravel()
    z = (
        np.repeat(rng.uniform(200, 1000, n_frames), 2)
        if kind == "one"
        else rng.uniform(200, 1000, 2 * n_frames)
    )
    photons = rng.uniform(3000, 5000, 2 * n_frames)
    if kind == "two":
        x_true, y_true, frame_true, z_true, n_true = x_det, y_det, frame, z, photons
    else:
        x_true, y_true, frame_true, z_true, n_true = cx, cy, np.arange(n_frames), z[::2], photons[::2]
    cams = render_frames(mic, frame_true, x_true, y_true, z_true, n_true, n_frames, rng)
    table = network_table(frame, x_det + rng.normal(0, 30, 2 * n_frames), y_det + rng.normal(0, 30, 2 * n_frames),
                          z + rng.normal(0, 40, 2 * n_frames))  # fmt: skip
    table["prob"] = rng.uniform(0.6, 0.99, 2 * n_frames).astype(np.float32)
    truth = np.stack([x_true, y_true, z_true], axis=1)
    return mic, cams, table, truth, n_true


def test_two_molecules_250_nm_apart_keep_both_rows_fitted_jointly():
    rng = np.random.default_rng(11)
    mic, cams, table, truth, _ = scenes("two", 40, rng)
    ref = refiner(mic, "joint")
    out = ref(table, cams, 0)
    assert len(out) == 80 and list(out.columns) == LOC_SCHEMA.names
    joint = (out["fit_flags"] & JOINT) > 0
    assert joint.mean() > 0.9 and ((out["fit_flags"] & CROWDED) > 0).all()
    fitted = out[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64)
    sigma = out[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    err = (fitted - truth)[joint]
    network = out[["x_net_nm", "y_net_nm", "z_net_nm"]].to_numpy(np.float64) - truth
    rmse = np.sqrt(np.mean(err**2, axis=0))
    assert np.all(rmse < 0.3 * np.sqrt(np.mean(network[joint] ** 2, axis=0))), rmse
    assert np.all(rmse < 1.5 * np.sqrt(np.mean(sigma[joint] ** 2, axis=0))), rmse  # σ with the overlap
    coverage = np.mean(np.abs(err) < sigma[joint], axis=0)
    assert np.all((coverage > 0.5) & (coverage < 0.86)), coverage  # 68 % ± 3 sd of ~75
    assert abs(np.median(out["photons"][joint] / 4000) - 1) < 0.1
    assert "0 duplicates removed" in ref.summary()


def test_one_molecule_found_twice_keeps_its_more_probable_row():
    rng = np.random.default_rng(12)
    mic, cams, table, truth, photons = scenes("one", 40, rng)
    ref = refiner(mic, "joint")
    out = ref(table, cams, 0)
    kept_rows = len(out)
    assert kept_rows <= 44  # ~40: one row per molecule
    assert ref.duplicates == 80 - kept_rows and f"{80 - kept_rows} duplicates removed" in ref.summary()
    single = out[(out["fit_flags"] & JOINT) == 0]
    assert len(single) >= 36
    frames = single["frame"].to_numpy()
    prob = table["prob"].to_numpy().reshape(-1, 2).max(axis=1)
    np.testing.assert_allclose(single["prob"], prob[frames])  # the more probable detection
    err = single[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64) - truth[frames]
    sigma = single[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy(np.float64)
    assert np.all(np.sqrt(np.mean(err**2, axis=0)) < 1.6 * np.sqrt(np.mean(sigma**2, axis=0)))
    assert abs(np.median(single["photons"] / photons[frames]) - 1) < 0.05


@pytest.mark.parametrize("mode", ["subtract", "network"])
def test_other_modes_keep_every_row(mode):
    rng = np.random.default_rng(13)
    mic, cams, table, _, _ = scenes("one", 6, rng)
    out = refiner(mic, mode)(table, cams, 0)
    assert len(out) == 12 and not ((out["fit_flags"] & JOINT) > 0).any()
    assert FRAME == 48
