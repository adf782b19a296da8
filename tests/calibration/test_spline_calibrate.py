"""Rule fit_psf_spline's library function (voxloc.calibration.spline_calibrate) on small
synthetic bead stacks: both outputs, the spline against the true PSF, and the bad inputs
(one line naming the file, nothing written)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.special import erf

from voxloc.calibration import calibrate
from voxloc.calibration.options import BeadOptions, CalibrationOptions, SplineOptions
from voxloc.calibration.psf_spline import MARGIN_PX
from voxloc.calibration.spline_calibrate import fit_psf_spline
from voxloc.calibration.spline_files import load_spline_psf, spline_attributes, spline_meta
from voxloc.errors import InputError
from voxloc.io import write_tiff
from voxloc.physics.psf import TABLE2, defocus_width_nm
from voxloc.physics.spline import spline_windows

PX = 192.0
PLANES = np.array([0.0, 400.0, 800.0, 1200.0])
SHIFT_PX = np.array([[0.0, 0.0], [1.3, -0.7], [-0.8, 1.1], [0.6, 0.9]])  # camera k sees camera 1 + shift
SIDE = 80
Z_START, Z_STEP, N_SLICES = -700.0, 50.0, 47  # stage depths -700..1600 nm
BEADS = BeadOptions(
    offset_adu=100.0, adu_per_photon=4.0, z_step_nm=Z_STEP, z_start_nm=Z_START, n_slices=N_SLICES
)
OPTS = CalibrationOptions(flip=("none", "none", "none"), min_beads=4)
SPLINE = SplineOptions(half_px=5, z_step_nm=25.0, z_range_nm=(-400.0, 1500.0))


def gauss(xy_px: np.ndarray, defocus_nm: np.ndarray, photons: np.ndarray) -> np.ndarray:
    """Pixel-integrated Gaussians of Eqs. 4-5 (TABLE2): (Z, SIDE, SIDE) of beads (n, 2)."""
    r = defocus_width_nm(defocus_nm, r0_nm=TABLE2.r0_nm, D_nm=TABLE2.D_nm, A=TABLE2.A, B=TABLE2.B) / PX
    edges = np.arange(SIDE + 1)
    out = np.zeros((len(defocus_nm), SIDE, SIDE))
    for (x, y), n in zip(xy_px, photons, strict=True):
        px = 0.5 * np.diff(erf((edges[None] - x) / (np.sqrt(2) * r[:, None])), axis=1)
        py = 0.5 * np.diff(erf((edges[None] - y) / (np.sqrt(2) * r[:, None])), axis=1)
        out += n * py[:, :, None] * px[:, None, :]
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """16 beads on a jittered 4 x 4 grid 14 px apart (their light overlaps when defocused),
    Poisson noise, 4 cameras shifted by SHIFT_PX; the affine and PSF rules, then the spline's."""
    out = tmp_path_factory.mktemp("spline")
    rng = np.random.default_rng(11)
    g = 19.0 + 14.0 * np.arange(4)
    xy = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-1, 1, (16, 2))
    photons = rng.uniform(15000.0, 30000.0, len(xy))
    z_stage = Z_START + Z_STEP * np.arange(N_SLICES)
    paths = []
    for k in range(4):
        mean = 10.0 + gauss(xy + SHIFT_PX[k], PLANES[k] - z_stage, photons * (0.22 + 0.02 * k))
        adu = 100.0 + 4.0 * rng.poisson(mean)
        paths.append(str(out / f"camera{k + 1}.tif"))
        write_tiff(paths[-1], np.clip(adu, 0, 65535).astype(np.uint16), axes="ZYX")
    res = out / "results"
    calibrate.calibrate_affine(paths, BEADS, OPTS, PX, res / "affine.yaml")
    calibrate.fit_psf(paths, res / "affine.yaml", BEADS, OPTS, PX, res / "psf.yaml")
    files = {"h5": res / "psf_spline.h5", "png": res / "psf_spline_qc.png"}
    report = fit_psf_spline(paths, res / "affine.yaml", res / "psf.yaml", BEADS, OPTS, SPLINE, PX, files["h5"],
                            files["png"])  # fmt: skip
    return {"paths": paths, "res": res, "files": files, "report": report, "out": out}


def test_both_outputs_and_what_the_file_records(run):
    files, report = run["files"], run["report"]
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and files["png"].stat().st_size > 50000
    planes = yaml.safe_load((run["res"] / "psf.yaml").read_text())["plane_z_nm"]
    psf = load_spline_psf(files["h5"], expect_planes=4, expect_grid={"px_size_nm": PX},
                          expect_plane_z_nm=planes, require_z_range_nm=(-400.0, 1500.0))  # fmt: skip
    assert psf.normalisation == "focus" and psf.half_px == 5 and psf.z_step_nm == 25.0
    attrs, meta = spline_attributes(files["h5"]), spline_meta(files["h5"])
    assert attrs["n_beads_per_plane"] == list(report.n_beads) and min(report.n_beads) >= 8
    assert meta["source"] == run["paths"] and meta["psf_yaml"].endswith("psf.yaml")
    assert meta["beads"]["used"] == 16 and meta["options"]["z_range_nm"] == [-400.0, 1500.0]
    # transmission 0.22 .. 0.28 of the beads' photons, normalised; the background 10 photons
    np.testing.assert_allclose(psf.transmission, (0.22 + 0.02 * np.arange(4)) / 1.0, rtol=0.02)
    np.testing.assert_allclose(report.background_photons, 10.0, atol=0.3)
    assert not list(run["res"].glob(".*tmp*"))


def test_spline_matches_the_true_psf(run):
    """Within 2 % of the peak (RMS over the window) wherever the planes see the beads within
    1.2 µm of focus; the molecule depth axis is the sample frame (z from plane 1's focus)."""
    psf = load_spline_psf(run["files"]["h5"])
    rng = np.random.default_rng(3)
    z = rng.uniform(-400.0, 1500.0, 60)
    x, y = rng.uniform(30, 31, (60, 4)), rng.uniform(40, 41, (60, 4))
    origin, vals, _ = spline_windows(psf, x, y, z)
    vals = vals / psf.transmission[None, :, None, None]
    h = psf.half_px
    err = np.full((60, 4), np.nan)
    for k in range(4):
        for m in range(60):
            if abs(z[m] - PLANES[k]) > 1200:
                continue
            local = np.array([[x[m, k] - origin[m, k, 0], y[m, k] - origin[m, k, 1]]])
            big = gauss(local + 30, np.array([PLANES[k] - z[m]]), np.ones(1))[
                0, 30 : 31 + 2 * h, 30 : 31 + 2 * h
            ]
            focus = gauss(np.array([[40.5, 40.5]]), np.zeros(1), np.ones(1))[0, 34:47, 34:47].sum()
            truth = big / focus
            err[m, k] = 100 * np.sqrt(((vals[m, k] - truth) ** 2).mean()) / truth.max()
    print("spline vs truth, max rms % of peak per plane:", np.round(np.nanmax(err, axis=0), 2))
    assert np.nanmax(err) < 2.0


def _nothing_written(res: Path) -> bool:
    return not list(res.glob("psf_spline*")) and not list(res.glob(".*tmp*"))


def test_psf_yaml_of_another_calibration(run, tmp_path):
    doc = yaml.safe_load((run["res"] / "psf.yaml").read_text())
    doc["plane_z_nm"] = [0.0, 392.0, 809.0, 1196.0]
    other = tmp_path / "psf.yaml"
    other.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"^\S*psf\.yaml: plane positions \[0\.0, 392\.0, 809\.0, 1196\.0\] nm, "
                       r"the bead stacks .* give \[0\.0, 4\d\d\.\d, .*another calibration"):  # fmt: skip
        fit_psf_spline(run["paths"], run["res"] / "affine.yaml", other, BEADS, OPTS, SPLINE, PX,
                       tmp_path / "psf_spline.h5", tmp_path / "psf_spline_qc.png")  # fmt: skip
    assert _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("spline", "kwargs", "expected"),
    [
        (SplineOptions(half_px=5, min_beads=40), {}, r"camera1\.tif: plane 1 has \d+ usable beads .*needs 40$"),
        (SplineOptions(half_px=5, z_range_nm=(-900.0, 1500.0)), {},
         r"camera1\.tif: the bead stack covers z -70\d\.\.160\d nm \(sample frame\), the spline PSF needs -900\.\.1500 nm$"),
        (SplineOptions(half_px=5), {"require_z_range_nm": (-400.0, 2000.0)},
         r"camera1\.tif: the spline PSF covers z -\d+\.\.\d+ nm, the run needs -400\.\.2000 nm"),
        (SplineOptions(half_px=40 - MARGIN_PX), {}, r"camera1\.tif: plane 1 has 0 usable beads"),
    ],
)  # fmt: skip
def test_bad_beads_one_line_and_nothing_written(run, tmp_path, spline, kwargs, expected):
    with pytest.raises(InputError, match=expected) as exc:
        fit_psf_spline(run["paths"], run["res"] / "affine.yaml", run["res"] / "psf.yaml", BEADS, OPTS, spline, PX,
                       tmp_path / "psf_spline.h5", tmp_path / "psf_spline_qc.png", **kwargs)  # fmt: skip
    assert "\n" not in str(exc.value)
    assert _nothing_written(tmp_path)


def test_a_bead_stack_that_is_not_there(run, tmp_path):
    paths = [str(tmp_path / Path(p).name) for p in run["paths"]]
    for p, q in zip(run["paths"][1:], paths[1:], strict=True):
        shutil.copy(p, q)
    with pytest.raises(InputError, match=r"camera1\.tif"):
        fit_psf_spline(paths, run["res"] / "affine.yaml", run["res"] / "psf.yaml", BEADS, OPTS, SPLINE, PX,
                       tmp_path / "psf_spline.h5", tmp_path / "psf_spline_qc.png")  # fmt: skip
    assert _nothing_written(tmp_path)
