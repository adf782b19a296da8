"""Bead calibration (voxloc.calibration: beads, registration, psf_fit, calibrate, files,
options) against the demo microscope's truth.

Small bead stacks of the demo "true microscope" (a known PSF, plane positions, unequal
camera transmission, mirrored and misregistered cameras, saturated beads, close pairs, hot
pixels and a sloped background) are generated in a temporary directory; the calibration must
recover the truth to the issue's accuracy: affine residual < 10 nm over the field, r0 and D
within 2 %, plane positions within 10 nm, the defocus curve within 3 % where the beads are
above background, the cameras' photometry (transmission) within 3 %. The demo's true PSF is
its Gaussian (``psf_model: gaussian``): the Table 2 form the Gaussian fit must recover.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from voxloc.calibration import beads, calibrate, files, psf_fit, spots
from voxloc.calibration.options import BeadOptions, CalibrationOptions, SplineOptions
from voxloc.config import load_config, load_schema
from voxloc.errors import InputError
from voxloc.io import write_tiff
from voxloc.physics.cameras import apply_affine
from voxloc.physics.noise import adu_to_photons
from voxloc.physics.psf import TABLE2, PSFParams, defocus_width_nm, gaussian_spot, psf_value
from voxloc.simulation import demo, demo_beads

ROOT = Path(__file__).resolve().parents[2]
PX = 192.0
CALIB = CalibrationOptions(flip=("auto", "auto", "auto"), min_beads=4)
SIZE = 64


@pytest.fixture(scope="module")
def demo_cfg() -> dict:
    cfg = load_config(ROOT / "config" / "config.yaml")["demo"]
    cfg["microscope"]["psf_model"] = "gaussian"
    return cfg


def make_stack(demo_cfg: dict, seed: int = 7, size: int = SIZE, **bead_overrides):
    """A bead stack (Z, 4, H, W) uint16 and its truth from the demo microscope."""
    cfg = copy.deepcopy(demo_cfg)
    cfg["frame_size"] = [size, size]
    cfg["beads"].update(
        n_beads=16,
        n_saturated=1,
        n_close_pairs=1,
        n_hot_pixels=3,
        z_start_nm=-1000.0,
        z_step_nm=50.0,
    )
    cfg["beads"].update(bead_overrides)
    mic = demo.DemoMicroscope.from_config(cfg, PX)
    stack, truth = demo_beads.make_bead_stacks(mic, cfg["beads"], np.random.default_rng(seed))
    return stack, truth


def write_cameras(stack: np.ndarray, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [str(out / f"camera{k + 1}.tif") for k in range(4)]
    for k, p in enumerate(paths):
        write_tiff(p, np.ascontiguousarray(stack[:, k]), axes="ZYX")
    return paths


def bead_options(truth: dict, **extra) -> BeadOptions:
    return BeadOptions.from_config(
        {
            "z_start_nm": truth["z_start_nm"],
            "z_step_nm": truth["z_step_nm"],
            "n_slices": truth["n_slices"],
            "offset_adu": truth["baseline_adu"],
            "adu_per_photon": truth["adu_per_photon"],
            "saturation_adu": 65535,
            **extra,
        }
    )


@pytest.fixture(scope="module")
def run(demo_cfg, tmp_path_factory):
    """Both rules on one 64 x 64 x 65-slice stack of 16 beads."""
    out = tmp_path_factory.mktemp("calib")
    stack, truth = make_stack(demo_cfg)
    paths = write_cameras(stack, out / "beads")
    bc = bead_options(truth)
    files = {n: out / f"results/{n}" for n in ("affine.yaml", "affine_qc.png", "psf.yaml", "psf_qc.png")}
    affine = calibrate.calibrate_affine(paths, bc, CALIB, PX, files["affine.yaml"], files["affine_qc.png"])
    psf = calibrate.fit_psf(
        paths, files["affine.yaml"], bc, CALIB, PX, files["psf.yaml"], files["psf_qc.png"]
    )
    return {"stack": stack, "truth": truth, "paths": paths, "files": files, "affine": affine, "psf": psf}


# ---------------------------------------------------------------------------- options


def schema_section(*keys: str) -> dict:
    node = load_schema(ROOT / "workflow" / "schemas" / "config.schema.yaml")
    for key in keys:
        node = node["properties"][key]
    return node


@pytest.mark.parametrize(
    ("cls", "keys", "not_options"),
    [
        (CalibrationOptions, ("calibration",), {"beads", "spline"}),
        (BeadOptions, ("calibration", "beads"), {"path", "plane1", "plane2", "plane3", "plane4"}),
        (SplineOptions, ("calibration", "spline"), set()),
    ],
)
def test_option_defaults_are_the_schemas(cls, keys, not_options):
    """The schema is the source of the defaults; the dataclasses repeat them exactly."""
    section = schema_section(*keys)
    props, required = section["properties"], set(section.get("required", ()))
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(fields) == set(props) - not_options  # every config key is an option
    for name, default in fields.items():
        if name in required:
            assert default is dataclasses.MISSING, name
        elif "default" in props[name]:
            schema_default = props[name]["default"]
            assert (list(default) if isinstance(default, tuple) else default) == schema_default, name
            assert type(default) in (type(schema_default), tuple), name
        else:  # optional without a default (n_slices: not checked)
            assert default is None, name


def test_options_from_the_validated_config():
    cfg = load_config(ROOT / "config" / "config.yaml")["calibration"]
    opts = CalibrationOptions.from_config(cfg)
    assert opts.flip == ("auto", "auto", "auto") and opts.min_beads == cfg["min_beads"]
    assert not hasattr(opts, "bead_weight")  # brightness is in photons: no bead weight
    bead = BeadOptions.from_config(cfg["beads"])
    assert (bead.offset_adu, bead.adu_per_photon, bead.n_slices) == (100.0, 4.0, 65)
    assert BeadOptions.from_config({"offset_adu": 0, "adu_per_photon": 1, "z_step_nm": 10}).n_slices is None
    with pytest.raises(ValueError, match="unknown calibration option"):
        CalibrationOptions.from_config({"min_bead": 3})


def test_reading_a_calibration_needs_no_fitter():
    """localization reads affine.yaml/psf.yaml: neither scikit-image, scipy nor torch loaded."""
    code = (
        "import sys, voxloc.calibration.files; "
        "print([m for m in sys.modules if m.startswith(('skimage', 'scipy', 'torch'))])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- physics


def test_gaussian_spot_by_hand():
    # peak 50 at (10, 20), r = 4, background 3; at (13, 24): d^2 = 25 -> 50 exp(-25/32) + 3
    assert float(gaussian_spot(13.0, 24.0, 10.0, 20.0, 4.0, 50.0, 3.0)) == pytest.approx(
        50 * math.exp(-25 / 32) + 3, rel=1e-12
    )
    # psf_value is Eq. 4 = gaussian_spot with r = r(z_k - z_m) and peak = w a' / (2 pi r^2)
    r = float(defocus_width_nm(300.0, r0_nm=133.0, D_nm=302.0, A=7.37e-4, B=6.27e-3))
    peak = 0.5 * TABLE2.a_prime / (2 * math.pi * r * r)
    expected = gaussian_spot(1100.0, 1950.0, 1000.0, 2000.0, r, peak)
    assert float(psf_value(1100.0, 1950.0, 400.0, 1000.0, 2000.0, 100.0, weight=0.5)) == pytest.approx(
        float(expected), rel=1e-12
    )


def test_fit_spots_recovers_a_spot_on_a_sloped_background():
    h = 5
    v, u = np.mgrid[-h : h + 1, -h : h + 1].astype(float)
    truth = np.array([[0.3, -0.2, 1.4, 500.0, 20.0, 1.5, -0.7], [-0.6, 0.45, 0.8, 80.0, 5.0, 0.0, 0.3]])
    windows = np.stack([gaussian_spot(u, v, *t[:2], t[2], t[3], t[4] + t[5] * u + t[6] * v) for t in truth])
    valid = np.ones(windows.shape, bool)
    valid[0, h, h] = False  # a masked (saturated) centre must not matter
    init = np.array([[0, 0, 1.0, 300, 10, 0, 0], [0, 0, 1.5, 50, 0, 0, 0]], dtype=float)
    params, errors, rms, converged = spots.fit_spots(windows, valid, init)
    assert converged.all()
    np.testing.assert_allclose(params, truth, atol=1e-6)
    assert np.all(rms < 1e-6)


def test_fit_defocus_curve_exact_widths():
    """Widths made with Eq. 5, known plane foci and bead heights: the fit returns them."""
    true = PSFParams(r0_nm=140.0, D_nm=280.0, A=0.02, B=0.01)
    focus = np.array([10.0, 415.0, 790.0, 1230.0])
    offsets = np.array([0.0, 30.0, -20.0, 5.0, -15.0])
    z = -800.0 + 50.0 * np.arange(50)
    defocus = focus[None, :, None] - (z[None, None, :] + offsets[:, None, None])
    widths = defocus_width_nm(defocus, r0_nm=140.0, D_nm=280.0, A=0.02, B=0.01)
    widths[np.abs(defocus) > 700] = np.nan  # only near focus, as in a crowded field
    fit = psf_fit.fit_defocus_curve(widths, np.full_like(widths, 1.0), z)
    assert (fit.r0_nm, fit.D_nm, fit.A, fit.B) == pytest.approx(
        (true.r0_nm, true.D_nm, true.A, true.B), rel=1e-5
    )
    mean_off = offsets.mean()  # heights are reported with mean 0
    np.testing.assert_allclose(fit.focus_nm, focus - mean_off, atol=1e-3)
    np.testing.assert_allclose(fit.bead_offset_nm, offsets - mean_off, atol=1e-3)
    assert fit.inlier.all() and np.abs(fit.residual_nm).max() < 1e-3


# ---------------------------------------------------------------------------- measuring


def test_hot_pixels_found_exactly(run):
    stack, truth = run["stack"], run["truth"]
    for k in range(4):
        photons = adu_to_photons(stack[:, k], truth["baseline_adu"], truth["adu_per_photon"])
        found = sorted(map(tuple, np.argwhere(beads.find_hot_pixels(photons)).tolist()))
        expected = sorted((i, j) for i, j, _ in truth["hot_pixels_row_col_adu"][f"camera{k + 1}"])
        assert found == expected
        repaired = beads.repair_hot_pixels(photons, beads.find_hot_pixels(photons))
        for i, j in expected:  # now within the range of its neighbours in every slice
            block = photons[:, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].reshape(len(photons), -1)
            ring = np.delete(block, block.shape[1] // 2, axis=1) if block.shape[1] == 9 else block
            value = repaired[:, i, j]
            assert np.all((value <= ring.max(axis=1)) & (value >= ring.min(axis=1)))


def test_beads_detected_and_localized(run):
    truth = run["truth"]
    stack = beads.measure_stack(run["paths"], bead_options(truth), CALIB)
    b = truth["beads"]
    xy = np.stack([b["x_nm"], b["y_nm"]], axis=1) / PX
    paired = {i for pair in b["close_pairs"] for i in pair}
    for k, cam in enumerate(stack.cameras):
        seen = apply_affine(np.linalg.inv(np.array(truth["registrations"][f"camera{k + 1}"])), xy)
        nearest = np.hypot(*(cam.xy_px[:, None] - seen[None]).transpose(2, 0, 1)).argmin(axis=1)
        d = np.hypot(*(cam.mean_xy_px()[:, None] - seen[None]).transpose(2, 0, 1))
        singles = [i for i, t in enumerate(nearest) if t not in paired and t not in b["saturated"]]
        # every single bead is found, localized to a few nm, round (a close pair is not)
        assert set(nearest[singles]) == set(range(len(b["photons"]))) - paired - set(b["saturated"])
        assert np.max(d[singles, nearest[singles]]) * PX < 5.0
        assert np.all(cam.elongation[singles] < beads.ELONGATION_MAX)
        pair_rows = [i for i, t in enumerate(nearest) if t in paired]
        assert pair_rows and np.all(cam.elongation[pair_rows] > beads.ELONGATION_MAX)
        # the saturated bead's slices in focus are flagged and left out
        sat_rows = [i for i, t in enumerate(nearest) if t in b["saturated"]]
        assert cam.saturated[sat_rows].any(axis=1).all() and not (cam.good & cam.saturated).any()


# ---------------------------------------------------------------------------- accuracy


def test_affine_recovers_known_transform(run):
    truth, doc = run["truth"], run["affine"]
    mats = files.load_affine(run["files"]["affine.yaml"])
    np.testing.assert_allclose(mats[0], np.eye(3))
    yy, xx = np.mgrid[0:SIZE:2, 0:SIZE:2] + 0.5
    grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
    for k in range(1, 4):
        true = np.array(truth["registrations"][f"camera{k + 1}"])
        err_nm = np.hypot(*(apply_affine(mats[k], grid) - apply_affine(true, grid)).T) * PX
        assert np.sqrt(np.mean(err_nm**2)) < 10.0, f"camera {k + 1}"
        cam = doc["cameras"][f"camera{k + 1}"]
        assert cam["residual_rms_nm"] < 10.0
        assert cam["n_inliers"] >= 12  # 14 single beads: 16 less the close pair and the saturated one
    assert doc["cameras"]["camera2"]["flip"] == "x"  # camera 2 is mirrored in the demo
    assert doc["cameras"]["camera3"]["flip"] == "none"


def test_psf_recovers_table2_form_and_planes(run):
    truth, doc = run["truth"], run["psf"]
    psf, planes = files.load_psf(run["files"]["psf.yaml"])
    t = truth["psf"]
    assert psf.r0_nm == pytest.approx(t["r0_nm"], rel=0.02)
    assert psf.D_nm == pytest.approx(t["D_nm"], rel=0.02)
    assert psf.b == 0.0
    assert planes[0] == 0.0
    np.testing.assert_allclose(planes, truth["plane_z_nm"], atol=10.0)
    # the curve within 3 % wherever the dimmest bead's peak N t_k s^2 / (2 pi r^2) in the
    # dimmest camera is 5 sigma above background
    a = np.linspace(-2500.0, 2500.0, 501)
    true_w = defocus_width_nm(a, r0_nm=t["r0_nm"], D_nm=t["D_nm"], A=t["A"], B=t["B"])
    n_min = min(n for i, n in enumerate(truth["beads"]["photons"]) if i not in truth["beads"]["saturated"])
    sigma_photons = math.sqrt(2 * (truth["camera"]["background"] + 20.0))  # EM excess, with the slope
    above = n_min * min(truth["transmission"]) * PX**2 / (2 * math.pi * true_w**2) >= 5 * sigma_photons
    z = truth["z_start_nm"] + truth["z_step_nm"] * np.arange(truth["n_slices"])
    seen = np.zeros_like(a, bool)  # defocus values the stack holds in some plane
    for zk in truth["plane_z_nm"]:
        seen |= (a >= zk - z.max()) & (a <= zk - z.min())
    fitted_w = defocus_width_nm(a, r0_nm=psf.r0_nm, D_nm=psf.D_nm, A=psf.A, B=psf.B)
    rel = np.abs(fitted_w / true_w - 1)[above & seen]
    assert rel.size > 300 and rel.max() < 0.03
    assert doc["fit"]["residual_rms_percent"] < 3.0
    assert doc["fit"]["n_outliers"] <= 0.02 * doc["fit"]["n_points"]


def test_psf_excludes_saturated_and_overlapping_beads_and_measures_photometry(run, demo_cfg):
    truth = run["truth"]
    counts = run["psf"]["fit"]["beads"]
    assert counts["saturated"] == len(truth["beads"]["saturated"])
    assert counts["overlapping"] == len(truth["beads"]["close_pairs"])  # a pair is detected as one
    stack = beads.measure_stack(run["paths"], bead_options(truth), CALIB)
    cal = psf_fit.fit_psf_stack(stack, files.load_affine(run["files"]["affine.yaml"]), CALIB, PX)
    b = truth["beads"]
    xy = np.stack([b["x_nm"], b["y_nm"]], axis=1) / PX
    used = np.hypot(*(cal.bead_xy_px[:, None] - xy[None]).transpose(2, 0, 1)).argmin(axis=1)
    paired = {i for pair in b["close_pairs"] for i in pair}
    assert set(used) == set(range(len(b["photons"]))) - paired - set(b["saturated"])
    # camera k's integrated intensity peak 2 pi r^2 of a bead of N photons is N t_k s^2
    # (photons x nm^2): per camera, the median over the beads used
    t = np.asarray(truth["transmission"])
    median_n = np.median(np.array(b["photons"])[used])
    np.testing.assert_allclose(cal.a_prime_per_camera, median_n * t * PX**2, rtol=0.03)
    # their ratios are the cameras' transmission (psf.yaml, read back normalised)
    measured_t = files.load_transmission(run["files"]["psf.yaml"])
    assert sum(measured_t) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(measured_t, t, rtol=0.01)  # the beads' brightness cancels
    np.testing.assert_allclose(run["psf"]["transmission"], measured_t, atol=1e-5)
    # a' is the median bead's integrated intensity over all cameras: a summary, between the
    # dimmest and the brightest camera's
    assert cal.psf.a_prime == pytest.approx(run["psf"]["psf"]["a_prime"], rel=1e-3)
    lo, hi = median_n * t.min() * PX**2, median_n * t.max() * PX**2
    assert 0.97 * lo <= cal.psf.a_prime <= 1.03 * hi
    # the background per pixel is reported separately, in photons (lambda 12 + the slope)
    assert all(12.0 < bg < 12.0 + 0.3 * SIZE * 1.5 for bg in run["psf"]["background_photons_per_px"])


def test_outputs_are_files_with_figures(run):
    files = run["files"]
    for name in ("affine_qc.png", "psf_qc.png"):
        data = files[name].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    doc = yaml.safe_load(files["psf.yaml"].read_text())
    assert set(doc["psf"]) == {"a_prime", "b", "r0_nm", "D_nm", "A", "B"}
    assert "bead_weight" not in doc and "transmission" in doc["notes"]
    assert len(doc["transmission"]) == 4 and sum(doc["transmission"]) == pytest.approx(1.0, abs=1e-4)
    assert not list(files["psf.yaml"].parent.glob(".*tmp*"))  # no temporary file left


def test_single_file_layout_and_configured_flip(run, tmp_path):
    path = tmp_path / "beads.tif"
    write_tiff(path, run["stack"], axes="ZCYX")
    cfg = dataclasses.replace(CALIB, flip=("x", "none", "none"))
    doc = calibrate.calibrate_affine(str(path), bead_options(run["truth"]), cfg, PX, tmp_path / "a.yaml")
    for k in range(2, 5):
        np.testing.assert_allclose(
            doc["cameras"][f"camera{k}"]["matrix"],
            run["affine"]["cameras"][f"camera{k}"]["matrix"],
            atol=1e-9,
        )
    # a wrongly configured flip matches nothing
    with pytest.raises(InputError, match="camera 2 matched camera 1"):
        bad = dataclasses.replace(CALIB, flip=("none", "none", "none"))
        calibrate.calibrate_affine(str(path), bead_options(run["truth"]), bad, PX, tmp_path / "b.yaml")
    assert not (tmp_path / "b.yaml").exists()


# ---------------------------------------------------------------------------- bad input


def one_line(exc: pytest.ExceptionInfo, path: str | Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.fixture(scope="module")
def quick(demo_cfg):
    """A small, short stack for the error cases: 64 x 64, 12 slices of 200 nm."""
    return make_stack(demo_cfg, seed=3, size=48, n_beads=10, n_slices=12, z_step_nm=200.0)


def test_too_few_beads(demo_cfg, tmp_path):
    stack, truth = make_stack(
        demo_cfg, seed=5, size=48, n_beads=2, n_saturated=0, n_close_pairs=0, n_slices=8
    )
    paths = write_cameras(stack, tmp_path)
    with pytest.raises(InputError, match="need >= 4") as exc:
        calibrate.calibrate_affine(paths, bead_options(truth), CALIB, PX, tmp_path / "affine.yaml")
    one_line(exc, paths[0])
    assert not (tmp_path / "affine.yaml").exists()


def test_no_bead_matched_across_cameras(demo_cfg, quick, tmp_path):
    stack, truth = quick
    other, _ = make_stack(demo_cfg, seed=99, size=48, n_beads=10, n_slices=12, z_step_nm=200.0)
    stack = stack.copy()
    stack[:, 2] = other[:, 2]  # camera 3 holds another bead sample
    paths = write_cameras(stack, tmp_path)
    with pytest.raises(InputError, match="matched camera 1") as exc:
        calibrate.calibrate_affine(
            paths, bead_options(truth), CALIB, PX, tmp_path / "affine.yaml", tmp_path / "qc.png"
        )
    one_line(exc, paths[2])
    assert not (tmp_path / "affine.yaml").exists() and not (tmp_path / "qc.png").exists()


def test_all_beads_saturated(demo_cfg, tmp_path):
    stack, truth = make_stack(
        demo_cfg, seed=4, size=SIZE, n_beads=8, n_saturated=8, n_close_pairs=0, n_slices=12, z_step_nm=200.0
    )
    paths = write_cameras(stack, tmp_path)
    bc = bead_options(truth)
    calibrate.calibrate_affine(paths, bc, CALIB, PX, tmp_path / "affine.yaml")  # positions still fine
    with pytest.raises(InputError, match=r"all 8 beads .*are saturated") as exc:
        calibrate.fit_psf(
            paths, tmp_path / "affine.yaml", bc, CALIB, PX, tmp_path / "psf.yaml", tmp_path / "psf.png"
        )
    msg = one_line(exc, paths[0])
    assert "calibration.beads.saturation_adu (now 65535 ADU" in msg and "laser power or exposure" in msg
    assert not (tmp_path / "psf.yaml").exists() and not (tmp_path / "psf.png").exists()


def _brighter(stack: np.ndarray, factor: float) -> np.ndarray:
    """The stack recorded ``factor`` x brighter by a 16-bit camera (clipped at 65535)."""
    return np.clip(stack.astype(np.float64) * factor, 0, 65535).astype(np.uint16)


@pytest.mark.parametrize(
    ("factor", "saturation_adu"), [(1.0, 2000), (60.0, 65535)], ids=["saturation_adu_2000", "stack_x60"]
)
def test_saturated_beads_are_diagnosed_as_saturated(quick, tmp_path, factor, saturation_adu):
    """Every bead saturated: the message says so, with the count and the setting, not that
    the cameras hold other bead samples (registration) or the thresholds are wrong."""
    stack, truth = quick
    paths = write_cameras(_brighter(stack, factor), tmp_path)
    bc = bead_options(truth, saturation_adu=saturation_adu)
    with pytest.raises(InputError, match=r"all 9 beads detected in camera 1 are saturated") as exc:
        calibrate.calibrate_affine(paths, bc, CALIB, PX, tmp_path / "affine.yaml", tmp_path / "qc.png")
    msg = one_line(exc, paths[0])
    assert f"calibration.beads.saturation_adu (now {saturation_adu} ADU" in msg
    assert "laser power or exposure" in msg and "bead sample" not in msg
    assert not (tmp_path / "affine.yaml").exists() and not (tmp_path / "qc.png").exists()


def test_saturated_stack_is_diagnosed_as_saturated(quick, tmp_path):
    """Beads and background clipped at 65535 over most of the field: too few beads are
    found, and the message names the saturation rather than only the detection settings."""
    stack, truth = quick
    paths = write_cameras(_brighter(stack, 1500.0), tmp_path)
    with pytest.raises(InputError, match=r"bead\(s\) detected, need >= 4") as exc:
        calibrate.calibrate_affine(paths, bead_options(truth), CALIB, PX, tmp_path / "affine.yaml")
    msg = one_line(exc, paths[0])
    assert re.search(r"\d+ % of the camera's pixels are saturated", msg), msg
    assert "calibration.beads.saturation_adu (now 65535 ADU" in msg and "laser power or exposure" in msg


def test_stack_shape_mismatch(quick, tmp_path):
    stack, truth = quick
    paths = write_cameras(stack, tmp_path)
    with pytest.raises(InputError, match="12 z slices, config calibration.beads.n_slices says 65") as exc:
        calibrate.calibrate_affine(
            paths, bead_options(truth, n_slices=65), CALIB, PX, tmp_path / "affine.yaml"
        )
    one_line(exc, paths[0])
    write_tiff(paths[3], np.ascontiguousarray(stack[:, 3, :, :40]), axes="ZYX")
    with pytest.raises(InputError, match="differs from") as exc:
        beads.read_bead_stack(paths)
    one_line(exc, paths[3])
    write_tiff(tmp_path / "three.tif", stack[:, :3], axes="ZCYX")
    with pytest.raises(InputError, match="Z x 4 x H x W") as exc:
        beads.read_bead_stack(tmp_path / "three.tif")
    one_line(exc, tmp_path / "three.tif")
    assert not (tmp_path / "affine.yaml").exists()


def test_not_a_tiff_and_missing_file(quick, tmp_path):
    stack, truth = quick
    paths = write_cameras(stack, tmp_path)
    Path(paths[1]).write_text("plane 2, not an image\n")
    with pytest.raises(InputError, match="not a readable TIFF") as exc:
        calibrate.calibrate_affine(paths, bead_options(truth), CALIB, PX, tmp_path / "affine.yaml")
    one_line(exc, paths[1])
    with pytest.raises(InputError, match="file not found") as exc:
        beads.read_bead_stack(tmp_path / "missing.tif")
    one_line(exc, tmp_path / "missing.tif")
    assert not (tmp_path / "affine.yaml").exists()
    assert tifffile.imread(paths[0]).shape == stack[:, 0].shape


def test_loaders_reject_bad_files(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: {camera1: {matrix: [[1, 0], [0, 1]]}}\n")
    with pytest.raises(InputError, match="not an affine calibration") as exc:
        files.load_affine(bad)
    one_line(exc, bad)
    with pytest.raises(InputError, match="not a PSF calibration") as exc:
        files.load_psf(run["files"]["affine.yaml"])
    one_line(exc, run["files"]["affine.yaml"])
    with pytest.raises(InputError, match="file not found"):
        files.load_psf(tmp_path / "nothing.yaml")
    with pytest.raises(InputError, match="psf.yaml"):
        calibrate.fit_psf(
            run["paths"], tmp_path / "psf.yaml", bead_options(run["truth"]), CALIB, PX, tmp_path / "o.yaml"
        )
