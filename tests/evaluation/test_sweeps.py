"""Density and speed sweeps (voxloc.evaluation.sweeps) and their figures (voxloc.evaluation.sweep_plots).

Numbers are checked on hand-made inputs (density, matched errors, their spread, the ADU
round trip of the speed movies); the sweeps themselves run on a tiny untrained network,
where only the bookkeeping (counts that must add up, one row per point) is meaningful.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from voxloc.errors import ConfigError, InputError
from voxloc.evaluation import sweep_plots, sweeps
from voxloc.evaluation.matching import match_tables, summary
from voxloc.localization.movies import open_movie
from voxloc.network.model import build_model, save_checkpoint
from voxloc.physics.noise import NoiseModel
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import settings_to_dict
from voxloc.simulation.simulate import simulate_frames
from voxloc.voxels import VoxelGrid

SETTINGS = SimulationSettings(height=16, width=16, n_molecules=(4, 4))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny untrained network whose model.pt records SETTINGS as its training frames."""
    torch.manual_seed(0)
    arch = {"n_planes": 4, "widths": [4, 4], "n_large_kernels": 1}
    grid = SETTINGS.grid
    meta = {
        "arch": arch,
        "grid": {"px_size_nm": grid.px_size_nm, "plane_z_nm": list(grid.plane_z_nm)},
        "psf": SETTINGS.physics.psf.to_dict(),
        "normalisation": {"method": "median_background", "scale_photons": 100.0},
        "simulation": settings_to_dict(SETTINGS),
        "train": {},
    }
    path = tmp_path_factory.mktemp("sweep") / "model.pt"
    save_checkpoint(path, build_model(arch).eval(), meta)
    return path


# ------------------------------------------------------------------ numbers on hand-made inputs


def test_density_per_um2():
    # 64 x 64 pixels of 192 nm = 12.288 µm squared = 150.99 µm²: M = 50 is 0.3311 / µm²
    assert sweeps.density_per_um2(50, VoxelGrid(64, 64)) == pytest.approx(50 / 12.288**2)
    assert sweeps.density_per_um2(50, VoxelGrid(64, 64)) == pytest.approx(0.33114, abs=1e-5)
    # 10 x 20 pixels of 100 nm = 1 µm x 2 µm
    assert sweeps.density_per_um2(3, VoxelGrid(10, 20, 100.0)) == pytest.approx(1.5)


def table(rows):
    return pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm", "z_nm", "photons"][: len(rows[0])])


def test_error_table_has_estimate_minus_truth_of_matched_pairs_only():
    truth = table([(0, 1000, 1000, 300, 2500.0), (0, 3000, 3000, 600, 4000.0), (1, 2000, 2000, 100, 5000.0)])
    est = table(
        [
            (0, 3030, 2960, 720),  # matches truth 1: (30, -40, 120)
            (0, 8000, 8000, 0),  # nothing near: FP
            (0, 1003, 1004, 305),  # matches truth 0: the 3-4-5 offset
        ]
    )  # frame 1 has no estimate: FN
    match = match_tables(est, truth)
    errors = sweeps.error_table(est, truth, match).sort_values("z_true_nm").reset_index(drop=True)
    assert list(errors.columns) == ["frame", "z_true_nm", "photons", "dx_nm", "dy_nm", "dz_nm"]
    np.testing.assert_allclose(errors["dx_nm"], [3, 30])
    np.testing.assert_allclose(errors["dy_nm"], [4, -40])
    np.testing.assert_allclose(errors["dz_nm"], [5, 120])
    np.testing.assert_allclose(errors["z_true_nm"], [300, 600])
    np.testing.assert_allclose(errors["photons"], [2500.0, 4000.0])
    # the histogram input and the table's RMSE describe the same pairs
    s = summary(est, truth, match)
    assert (s.tp, s.fp, s.fn) == (2, 1, 1)
    lateral = math.sqrt((errors["dx_nm"] ** 2 + errors["dy_nm"] ** 2).mean())
    assert s.rmse_lateral_nm == pytest.approx(lateral)
    assert s.rmse_lateral_nm == pytest.approx(math.sqrt((25 + 2500) / 2))
    # sample standard deviation of two values a, b: |a - b| / sqrt(2)
    spread = sweeps.error_spread(errors)
    assert spread["sd_x_nm"] == pytest.approx(27 / math.sqrt(2))
    assert spread["sd_y_nm"] == pytest.approx(44 / math.sqrt(2))
    assert spread["sd_z_nm"] == pytest.approx(115 / math.sqrt(2))
    assert all(math.isnan(v) for v in sweeps.error_spread(errors.iloc[:1]).values())


@pytest.mark.parametrize(
    "noise",
    [
        NoiseModel(kind="paper"),
        NoiseModel(kind="physical", em_gain=100.0, sensitivity_e_per_adu=25.0, baseline_adu=100.0),
    ],
    ids=["paper", "physical"],
)
def test_speed_movie_reads_back_as_the_simulated_photons(tmp_path, noise):
    settings = dataclasses.replace(SETTINGS, physics=dataclasses.replace(SETTINGS.physics, noise=noise))
    path = tmp_path / "movie.tif"
    offset, gain = sweeps.write_speed_movie(path, settings, 5, np.random.default_rng(3))
    expected = simulate_frames(5, settings, np.random.default_rng(3)).frames
    if noise.kind == "physical":  # frames are ADU: baseline 100, 100 / 25 = 4 ADU per photon
        assert (offset, gain) == (100.0, 4.0)
        expected = (expected - 100.0) / 4.0
    else:  # photons written with a 100 ADU baseline
        assert (offset, gain) == (sweeps.SPEED_OFFSET_ADU, 1.0)
    with open_movie(path, offset_adu=offset, adu_per_photon=gain) as movie:
        assert movie.n_frames == 5 and movie.camera_shapes == [(16, 16)] * 4
        photons = np.stack(movie.read_photons(0, 5), axis=1)
    np.testing.assert_allclose(photons, expected, atol=0.5 / gain + 1e-4)  # rounding to ADU


def test_speed_frames_needs_one_count_per_size():
    assert sweeps.speed_frames([16, 32], [8, 4]) == [8, 4]
    with pytest.raises(ConfigError, match="sweeps.speed.frames has 1 values for 2 sizes_px"):
        sweeps.speed_frames([16, 32], [8])


def test_histogram_molecules_and_range():
    assert sweep_plots.histogram_molecules([30, 10, 50], None) == [10, 50]
    assert sweep_plots.histogram_molecules([10, 50], [50]) == [50]
    with pytest.raises(ConfigError, match=r"\[20\] not in"):
        sweep_plots.histogram_molecules([10, 50], [10, 20])
    errors = np.array([-10.0, 10.0] * 50)
    assert sweep_plots.histogram_range_nm(errors, 250.0) == pytest.approx(11.0)
    assert sweep_plots.histogram_range_nm(errors * 100, 250.0) == 250.0  # at most the tolerance
    assert sweep_plots.histogram_range_nm(np.array([]), 500.0) == 500.0


# ------------------------------------------------------------- the sweeps on a tiny network


def test_density_sweep_bookkeeping(model_path):
    result = sweeps.density_sweep(model_path, [2, 5], [0.5, 0.9], n_frames=3, seed=1, device="cpu")
    t = result.table
    assert list(zip(t["n_molecules"], t["tau"], strict=True)) == [(2, 0.5), (2, 0.9), (5, 0.5), (5, 0.9)]
    assert (t["frames"] == 3).all()
    np.testing.assert_allclose(t["density_per_um2"], t["n_molecules"] / (16 * 0.192) ** 2)
    # every frame holds exactly M molecules; every voxel is counted once
    assert (t["n_true"] == 3 * t["n_molecules"]).all()
    assert (t["tp"] + t["fn"] == t["n_true"]).all() and (t["tp"] + t["fp"] == t["n_est"]).all()
    voxels = t[["voxel_tp", "voxel_fp", "voxel_fn", "voxel_tn"]].sum(axis=1)
    assert (voxels == 3 * 4 * 16 * 16).all()
    assert (t["voxel_tp"] + t["voxel_fn"] == t["n_true"] - t["voxel_collisions"]).all()
    jac = t["voxel_tp"] / (t["voxel_tp"] + t["voxel_fp"] + t["voxel_fn"])
    np.testing.assert_allclose(t["voxel_jaccard"], jac)
    for _, rows in t.groupby("n_molecules"):
        lo, hi = rows.iloc[0], rows.iloc[1]  # τ = 0.5, 0.9 on the same frames, one network pass
        assert lo["voxel_tp"] + lo["voxel_fn"] == hi["voxel_tp"] + hi["voxel_fn"]
        assert hi["voxel_tp"] + hi["voxel_fp"] <= lo["voxel_tp"] + lo["voxel_fp"]
        assert hi["n_est"] <= lo["n_est"]
    # the errors Parquet holds exactly the matched pairs of each row
    e = result.errors
    assert list(e.columns[:2]) == ["n_molecules", "tau"]
    for _, row in t.iterrows():
        d = e[(e["n_molecules"] == row["n_molecules"]) & (e["tau"] == np.float32(row["tau"]))]
        assert len(d) == row["tp"]
        if len(d):
            lateral = np.sqrt(np.mean(d["dx_nm"].astype(float) ** 2 + d["dy_nm"].astype(float) ** 2))
            assert row["rmse_lateral_nm"] == pytest.approx(lateral, rel=1e-5)
            assert (d["dx_nm"].abs() <= 250).all() and (d["dz_nm"].abs() <= 500).all()
    # seeded: the same seed gives the same table
    again = sweeps.density_sweep(model_path, [2, 5], [0.5, 0.9], n_frames=3, seed=1, device="cpu")
    pd.testing.assert_frame_equal(t, again.table)


def test_density_sweep_needs_the_training_settings(tmp_path):
    with pytest.raises(InputError, match="stores no simulation settings"):
        sweeps.training_settings({"grid": {}}, source="old.pt")


def test_speed_sweep_table(model_path, tmp_path):
    t = sweeps.speed_sweep(
        model_path, [16, 24], [5, 3], batch_frames=4, device="cpu", threads=1, workdir=tmp_path
    )
    assert t["size_px"].tolist() == [16, 24] and t["frames"].tolist() == [5, 3]
    # the training density, 4 molecules per 16 x 16, scaled to the size
    assert t["molecules_per_frame"].tolist() == [4, round(4 * 24**2 / 16**2)]
    np.testing.assert_allclose(t["frames_per_s"] * t["seconds"], t["frames"])
    np.testing.assert_allclose(t["localizations_per_s"] * t["seconds"], t["localizations"])
    assert (t["device"] == "cpu").all() and (t["threads"] == 1).all()
    # uint16 movie of T x 4 x S x S plus the TIFF header
    assert (t["movie_mb"] * 1e6 >= t["frames"] * 4 * t["size_px"] ** 2 * 2).all()
    assert not list(tmp_path.iterdir())  # the movies and Parquet files are removed


# --------------------------------------------------------------------------------- figures


def assert_png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 400 and im.height > 300


def test_figures_are_written(tmp_path, model_path):
    result = sweeps.density_sweep(model_path, [2, 5], [0.5, 0.9], n_frames=2, seed=0, device="cpu")
    sweeps.write_density_sweep(result, tmp_path / "d.tsv", tmp_path / "e.parquet")
    table = pd.read_csv(tmp_path / "d.tsv", sep="\t")
    errors = pd.read_parquet(tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(errors, result.errors)
    sweep_plots.plot_density(table, tmp_path / "fig7.png", title="tiny")
    sweep_plots.plot_error_histograms(errors, tmp_path / "fig8.png", [2, 5])
    speed = pd.DataFrame(
        {
            "size_px": [16, 32, 64],
            "frames_per_s": [300.0, 150.0, 50.0],
            "localizations_per_s": [900.0, 1800.0, 2500.0],
            "device": "cpu",
            "device_name": "test",
            "threads": 2,
            "batch_frames": 32,
        }
    )
    sweep_plots.plot_speed(speed, tmp_path / "fig9.png")
    for name in ("fig7.png", "fig8.png", "fig9.png"):
        assert_png(tmp_path / name)
