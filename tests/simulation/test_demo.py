"""Tests of the demo data generator (voxloc.simulation.demo, demo_beads, demo_movies), at reduced
sizes of the default config, with the Gaussian true PSF (``psf_model: gaussian``: fast, and
checkable by hand)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
import yaml

from voxloc.io import read_yaml
from voxloc.physics.cameras import apply_affine
from voxloc.physics.noise import NoiseModel
from voxloc.simulation import demo, demo_beads, demo_movies
from voxloc.simulation.simulate import EMITTER_COLUMNS, emitter_table

ROOT = Path(__file__).resolve().parents[2]
H, W = 48, 56
N_FRAMES = 12


@pytest.fixture(scope="module")
def config() -> dict:
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    small = copy.deepcopy(cfg)
    d = small["demo"]
    d["frame_size"] = [H, W]
    d["microscope"]["psf_model"] = "gaussian"
    d["beads"].update(
        n_beads=12,
        n_slices=18,
        z_start_nm=-400.0,
        z_step_nm=100.0,
        n_saturated=2,
        n_close_pairs=1,
    )
    d["movies"]["n_frames"] = N_FRAMES
    return small


@pytest.fixture(scope="module")
def microscope(config) -> demo.DemoMicroscope:
    return demo.DemoMicroscope.from_config(config["demo"], config["grid"]["px_size_nm"])


def _write_beads(config, microscope, out: Path) -> tuple[list[Path], Path]:
    paths = [out / f"camera{k}.tif" for k in range(1, 5)]
    demo_beads.write_bead_stacks(
        [str(p) for p in paths], str(out / "truth.yaml"), microscope, config["demo"]["beads"], config["seed"]
    )
    return paths, out / "truth.yaml"


@pytest.fixture(scope="module")
def beads(config, microscope, tmp_path_factory):
    paths, truth_path = _write_beads(config, microscope, tmp_path_factory.mktemp("beads"))
    stack = np.stack([tifffile.imread(p) for p in paths], axis=1)
    return paths, truth_path, stack, read_yaml(truth_path)


def _write_movie(config, microscope, out: Path, layout: str, name: str) -> tuple[dict, Path]:
    if layout == "stack":
        outputs = {"path": str(out / "movie.tif")}
    else:
        outputs = {f"plane{k}": str(out / f"camera{k}.tif") for k in range(1, 5)}
    gt = out / "ground_truth.parquet"
    demo_movies.write_movie(outputs, str(gt), microscope, config["demo"]["movies"], config["seed"], name)
    return outputs, gt


# ---------------------------------------------------------------------------- microscope


def test_microscope_from_config(microscope, config):
    mic_cfg = config["demo"]["microscope"]
    physics = microscope.physics
    assert physics.plane_z_nm == tuple(mic_cfg["plane_z_nm"])
    assert physics.model == "gaussian" and physics.psf.r0_nm == mic_cfg["psf"]["r0_nm"]
    # the cameras' shares of the light, normalised to sum 1
    t = np.asarray(mic_cfg["transmission"], dtype=float)
    np.testing.assert_allclose(physics.transmission, t / t.sum(), rtol=1e-12)
    assert sum(physics.transmission) == pytest.approx(1.0, abs=1e-12)
    assert len(set(physics.transmission)) > 1  # unequal, as behind real beam splitters
    assert physics.px_size_nm == config["grid"]["px_size_nm"] and not physics.integrate_pixels
    assert physics.noise.kind == "physical" and physics.noise.quantize
    assert physics.adu_per_photon == pytest.approx(4.0)  # em_gain 100 / 25 e-/ADU
    assert (microscope.height, microscope.width) == (H, W)
    np.testing.assert_allclose(microscope.registrations[0], np.eye(3))
    assert np.linalg.det(microscope.registrations[1][:2, :2]) < 0  # camera 2 is mirrored


def test_vectorial_microscope_needs_its_psf_file(config):
    d = copy.deepcopy(config["demo"])
    d["microscope"]["psf_model"] = "vectorial"
    assert demo.uses_true_psf(d) and not demo.uses_true_psf(config["demo"])
    with pytest.raises(ValueError, match="true_psf_h5"):
        demo.DemoMicroscope.from_config(d, config["grid"]["px_size_nm"])


def test_render_cameras_photometry(microscope):
    """Noise-free (kind none: photons, no offset or gain): camera k's image of a molecule of N
    photons sums to N t_k."""
    phys = microscope.physics
    quiet = dataclasses.replace(
        microscope,
        physics=dataclasses.replace(phys, noise=NoiseModel(kind="none")),
    )
    s = phys.px_size_nm
    n = 200000.0
    table = emitter_table([0], [0.5 * W * s], [0.5 * H * s], [600.0], [n])
    image = demo.render_cameras(quiet, table, 1, np.random.default_rng(0))[0].astype(float)
    assert image.max() < 65535  # nothing clipped
    for k in range(4):
        # the whole spot lies inside the frame; the rounding to integers (±0.5 a pixel,
        # ~sqrt(H W / 12) = 20 photons over the frame) is ~1e-3 of the ~5e4 photons
        assert image[k].sum() == pytest.approx(n * phys.transmission[k], abs=100.0)


def test_render_cameras_follows_registration(microscope):
    """Noise-free, one molecule: camera k's brightest pixel holds T_k^-1 of its camera-1 position."""
    quiet = dataclasses.replace(
        microscope, physics=dataclasses.replace(microscope.physics, noise=NoiseModel(kind="none"))
    )
    p_px = np.array([20.8, 30.6])  # camera-1 (x, y)
    s = microscope.physics.px_size_nm
    planes = microscope.physics.plane_z_nm
    table = emitter_table([0] * 4, [p_px[0] * s] * 4, [p_px[1] * s] * 4, planes, [5000.0] * 4)
    # four molecules at p, each in focus on one camera: camera k sees the sharp one there
    image = demo.render_cameras(quiet, table, 1, np.random.default_rng(0))[0]
    assert image.dtype == np.uint16 and image.shape == (4, H, W)
    for k in range(4):
        q = apply_affine(np.linalg.inv(microscope.registrations[k]), p_px)
        i, j = np.unravel_index(np.argmax(image[k]), image[k].shape)
        assert (i, j) == (int(q[1]), int(q[0]))
    # by hand: camera 2 mirrors x about the centre and shifts by (2.3, -1.7) px, so it sees
    # x1 at W + 2.3 - x1 (up to its 0.8 deg rotation and 0.4 % scale: < 0.3 px here)
    i, j = np.unravel_index(np.argmax(image[1]), image[1].shape)
    assert abs(j + 0.5 - (W + 2.3 - p_px[0])) < 0.8 and abs(i + 0.5 - (p_px[1] + 1.7)) < 0.8


# ---------------------------------------------------------------------------- beads


def test_bead_tiffs(beads, config, microscope):
    paths, _, _, truth = beads
    n_slices = config["demo"]["beads"]["n_slices"]
    for p in paths:
        with tifffile.TiffFile(p) as tif:
            assert tif.series[0].axes == "ZYX"
            data = tif.asarray()
        assert data.dtype == np.uint16 and data.shape == (n_slices, H, W)
    assert truth["z_step_nm"] == 100.0 and truth["n_slices"] == n_slices
    assert len(truth["beads"]["x_nm"]) == config["demo"]["beads"]["n_beads"]
    assert truth["baseline_adu"] == 100.0 and truth["adu_per_photon"] == 4.0
    assert np.array(truth["registrations"]["camera2"]).shape == (3, 3)
    assert truth["psf"] == microscope.physics.psf_dict()
    np.testing.assert_allclose(truth["transmission"], microscope.physics.transmission, rtol=1e-12)
    assert "weight" not in truth["beads"]


def _in_focus_slice(truth: dict, k: int) -> int:
    z = truth["z_start_nm"] + truth["z_step_nm"] * np.arange(truth["n_slices"])
    return int(np.argmin(np.abs(z - truth["plane_z_nm"][k])))


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_bright_bead_peaks_where_truth_says(beads, microscope, k):
    _, _, stack, truth = beads
    b = truth["beads"]
    paired = {i for pair in b["close_pairs"] for i in pair}
    singles = [i for i in range(len(b["photons"])) if i not in paired and i not in b["saturated"]]
    bead = max(singles, key=lambda i: b["photons"][i])
    p_px = np.array([b["x_nm"][bead], b["y_nm"][bead]]) / truth["px_size_nm"]
    q = apply_affine(np.linalg.inv(np.array(truth["registrations"][f"camera{k + 1}"])), p_px)
    image = stack[_in_focus_slice(truth, k), k].astype(float)
    i0, j0 = int(q[1]), int(q[0])
    window = image[i0 - 3 : i0 + 4, j0 - 3 : j0 + 4]
    di, dj = np.unravel_index(np.argmax(window), window.shape)
    i, j = i0 - 3 + di, j0 - 3 + dj
    assert abs(j + 0.5 - q[0]) <= 1.0 and abs(i + 0.5 - q[1]) <= 1.0
    # well above background: at least a third of the in-focus peak N t_k s^2 / (2 pi r0^2)
    psf, s = microscope.physics.psf, truth["px_size_nm"]
    t_k = truth["transmission"][k]
    peak_adu = b["photons"][bead] * t_k * s * s / (2 * np.pi * psf.r0_nm**2) * truth["adu_per_photon"]
    assert window.max() - truth["baseline_adu"] > peak_adu / 3


def test_saturated_beads_clip(beads, config, microscope):
    _, _, stack, truth = beads
    b = truth["beads"]
    assert len(b["saturated"]) == 2
    for bead in b["saturated"]:
        p_px = np.array([b["x_nm"][bead], b["y_nm"][bead]]) / truth["px_size_nm"]
        for k in range(4):
            q = apply_affine(np.linalg.inv(np.array(truth["registrations"][f"camera{k + 1}"])), p_px)
            assert stack[_in_focus_slice(truth, k), k, int(q[1]), int(q[0])] == 65535
    photons = np.array(b["photons"])
    lo, hi = config["demo"]["beads"]["photons"]
    unsaturated = np.delete(np.arange(len(photons)), b["saturated"])
    assert photons[unsaturated].min() >= lo and photons[unsaturated].max() <= hi
    # saturating photons: at least twice the brightest ordinary bead
    want = demo_beads._saturating_photons(microscope, hi)
    np.testing.assert_allclose(photons[b["saturated"]], want, atol=0.05)
    assert want >= 2 * hi


def test_close_pairs_hot_pixels_and_margins(beads, microscope):
    _, _, stack, truth = beads
    b = truth["beads"]
    xy = np.stack([b["x_nm"], b["y_nm"]], axis=1)
    for i, j in b["close_pairs"]:
        assert 250.0 <= np.hypot(*(xy[i] - xy[j])) <= 400.0
    seen_px = microscope.camera_xy_nm(xy) / microscope.physics.px_size_nm
    assert np.all(seen_px >= demo_beads.BEAD_MARGIN_PX) and np.all(
        seen_px <= np.array([W, H]) - demo_beads.BEAD_MARGIN_PX
    )
    for k in range(4):
        hot = truth["hot_pixels_row_col_adu"][f"camera{k + 1}"]
        assert len(hot) == 4
        for i, j, value in hot:
            assert np.all(stack[:, k, i, j] == value) and value >= 20000


def test_sloped_background(beads, microscope):
    _, _, stack, truth = beads
    k = 0
    angle = np.radians(truth["background_slope_direction_deg"]["camera1"])
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    u = xx * np.cos(angle) + yy * np.sin(angle)
    image = stack[0, k].astype(float)  # defocused slice: beads spread thin
    low, high = image[u < np.quantile(u, 0.2)], image[u > np.quantile(u, 0.8)]
    expected_adu = truth["background_slope_photons_per_px"] * (u.max() - u.min()) * 0.8 * 4.0
    assert np.median(high) - np.median(low) == pytest.approx(expected_adu, rel=0.35)


def test_beads_reproducible(beads, config, microscope, tmp_path):
    paths, truth_path, _, _ = beads
    again, again_truth = _write_beads(config, microscope, tmp_path)
    for a, b in zip(paths, again, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert truth_path.read_bytes() == again_truth.read_bytes()


def test_too_many_beads(microscope, config):
    cfg = dict(config["demo"]["beads"], n_beads=400)
    with pytest.raises(ValueError, match="cannot place"):
        demo_beads.make_bead_stacks(microscope, cfg, np.random.default_rng(0))


def test_default_demo_config_places_its_beads():
    """The shipped demo (96 x 96 px, demo.beads as configured) has room for all its beads."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    d = copy.deepcopy(cfg["demo"])
    d["microscope"]["psf_model"] = "gaussian"  # the placement does not depend on the PSF
    mic = demo.DemoMicroscope.from_config(d, cfg["grid"]["px_size_nm"])
    b = d["beads"]
    n_pairs = int(b["n_close_pairs"])
    xy, pairs = demo_beads.place_beads(
        mic, int(b["n_beads"]) - 2 * n_pairs, n_pairs, np.random.default_rng(0)
    )
    assert len(xy) == int(b["n_beads"]) and len(pairs) == n_pairs


# ---------------------------------------------------------------------------- movies


def test_filament_sampling_is_uniform_by_arc_length():
    # a straight filament whose Bezier parameter runs unevenly along it
    control = np.array([[[0.0, 0, 0], [100.0, 0, 0], [200.0, 0, 0], [1000.0, 0, 0]]])
    x = demo_movies.sample_on_filaments(control, 20000, np.random.default_rng(1))[:, 0]
    assert np.mean(x < 500.0) == pytest.approx(0.5, abs=0.02)
    assert x.min() >= 0.0 and x.max() <= 1000.0


def test_filaments_stay_in_the_box():
    rng = np.random.default_rng(2)
    control = demo_movies.make_filaments(
        8, width_nm=9000.0, height_nm=7000.0, z_range_nm=(-100.0, 1300.0), rng=rng
    )
    pts = demo_movies.sample_on_filaments(control, 5000, rng)
    assert np.all(pts[:, :2] >= 1000.0) and np.all(pts[:, :2] <= [8000.0, 6000.0])
    assert np.all((pts[:, 2] >= -100.0) & (pts[:, 2] <= 1300.0))
    assert np.ptp(pts[:, 2]) > 700.0  # the filaments span the depth range


def test_movie_layouts_and_ground_truth(config, microscope, tmp_path):
    per_camera, gt1 = _write_movie(config, microscope, tmp_path / "a", "per_camera", "demo1")
    stacked, gt2 = _write_movie(config, microscope, tmp_path / "b", "stack", "demo1")
    planes = []
    for k in range(1, 5):
        with tifffile.TiffFile(per_camera[f"plane{k}"]) as tif:
            assert tif.series[0].axes == "TYX"
            planes.append(tif.asarray())
        assert planes[-1].dtype == np.uint16 and planes[-1].shape == (N_FRAMES, H, W)
    movie = tifffile.imread(stacked["path"])
    assert movie.dtype == np.uint16 and movie.shape == (N_FRAMES, 4, H, W)  # not RGB
    assert tifffile.TiffFile(stacked["path"]).series[0].axes == demo_movies.STACK_AXES
    np.testing.assert_array_equal(movie, np.stack(planes, axis=1))  # same movie, two layouts
    assert gt1.read_bytes() == gt2.read_bytes()

    truth = pd.read_parquet(gt1)
    assert list(truth.columns) == list(EMITTER_COLUMNS)
    assert all(truth[c].dtype == np.dtype(t) for c, t in EMITTER_COLUMNS.items())
    s = microscope.physics.px_size_nm
    assert truth["frame"].between(0, N_FRAMES - 1).all() and truth["frame"].is_monotonic_increasing
    assert truth["x_nm"].between(0, W * s).all() and truth["y_nm"].between(0, H * s).all()
    z0, z1 = config["demo"]["movies"]["z_range_nm"]
    assert truth["z_nm"].between(z0, z1).all()
    assert truth["photons"].between(*config["demo"]["movies"]["photons"]).all()
    assert len(truth) == pytest.approx(N_FRAMES * config["demo"]["movies"]["molecules_per_frame"], rel=0.3)
    meta = pq.read_schema(gt1).metadata
    assert meta[b"coordinates"] == b"camera 1" and float(meta[b"px_size_nm"]) == s
    assert b"voxloc_version" in meta
    # the true physics, for the Cramér-Rao bound of the evaluation
    assert all(meta[k.encode()] == v.encode() for k, v in microscope.physics.metadata().items())


def test_movies_reproducible_and_distinct(config, microscope, tmp_path):
    a, gt_a = _write_movie(config, microscope, tmp_path / "a", "stack", "demo2")
    b, gt_b = _write_movie(config, microscope, tmp_path / "b", "stack", "demo2")
    c, gt_c = _write_movie(config, microscope, tmp_path / "c", "stack", "demo1")
    assert Path(a["path"]).read_bytes() == Path(b["path"]).read_bytes()
    assert gt_a.read_bytes() == gt_b.read_bytes()
    assert not np.array_equal(tifffile.imread(a["path"]), tifffile.imread(c["path"]))
    xa, xc = pd.read_parquet(gt_a)["x_nm"], pd.read_parquet(gt_c)["x_nm"]
    assert len(xa) != len(xc) or not np.array_equal(xa, xc)


def test_write_movie_rejects_bad_outputs(config, microscope, tmp_path):
    with pytest.raises(ValueError, match="outputs"):
        demo_movies.write_movie(
            {"plane1": str(tmp_path / "x.tif")}, str(tmp_path / "gt.parquet"), microscope,
            config["demo"]["movies"], 1, "demo1",
        )  # fmt: skip
