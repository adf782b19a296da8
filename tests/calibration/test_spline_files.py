"""The spline PSF's HDF5 file (voxloc.calibration.spline_files): round trip, what it records,
and the checks that a spline belongs to the run."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import voxloc
from voxloc.calibration.spline_files import (
    check_z_coverage,
    load_spline_psf,
    save_spline_psf,
    spline_attributes,
    spline_meta,
)
from voxloc.errors import InputError
from voxloc.physics.spline import SplinePSF

PX = 192.0
PLANES = (0.0, 400.0, 800.0, 1200.0)


@pytest.fixture
def psf() -> SplinePSF:
    """A small 4-plane spline: Gaussian samples on a ±5 px grid, z -300..500 nm."""
    z = -300.0 + 50.0 * np.arange(17)
    yy, xx = np.mgrid[-5:6, -5:6]
    width = 1.0 + np.abs(z[:, None] - np.array(PLANES)[None, :]) / 400.0  # (Z, P) px
    samples = np.exp(-(xx**2 + yy**2)[None, None] / (2 * width.T[:, :, None, None] ** 2))
    spline = SplinePSF.from_samples(samples, z0_nm=-300.0, z_step_nm=50.0, px_size_nm=PX,
                                    transmission=np.array([0.3, 0.2, 0.25, 0.25]), plane_z_nm=PLANES,
                                    n_beads=7, normalise=False)  # fmt: skip
    return SplinePSF(spline.coeffs, spline.z0_nm, spline.z_step_nm, PX, spline.transmission, PLANES,
                     n_beads=7, normalisation="focus")  # fmt: skip


def test_round_trip_and_what_the_file_records(tmp_path, psf):
    path = tmp_path / "psf_spline.h5"
    save_spline_psf(path, psf, n_beads_per_plane=[7, 9, 8, 8], source=["b.tif"], affine="a.yaml")
    assert not list(tmp_path.glob(".*tmp*"))
    back = load_spline_psf(path, expect_planes=4, expect_grid={"px_size_nm": PX, "grid_px": 11},
                           expect_plane_z_nm=PLANES, require_z_range_nm=(-300.0, 500.0))  # fmt: skip
    np.testing.assert_array_equal(back.coeffs, psf.coeffs)
    np.testing.assert_array_equal(back.transmission, psf.transmission)
    assert back.grid() == psf.grid() and back.plane_z_nm == PLANES and back.n_beads == 7
    assert back.normalisation == "focus"
    assert spline_meta(path) == {"source": ["b.tif"], "affine": "a.yaml"}
    attrs = spline_attributes(path)
    assert attrs["voxloc_version"] == voxloc.__version__ and attrs["voxloc_source"]
    assert attrs["n_beads_per_plane"] == [7, 9, 8, 8]
    assert (attrs["z_min_nm"], attrs["z_max_nm"], attrs["n_z"]) == (-300.0, 500.0, 17)
    assert (attrs["grid_px"], attrs["half_px"], attrs["px_size_nm"]) == (11, 4, PX)
    assert attrs["plane_z_nm"] == list(PLANES)
    with pytest.raises(ValueError, match="3 values for 4 planes"):
        save_spline_psf(tmp_path / "x.h5", psf, n_beads_per_plane=[1, 2, 3])
    assert not (tmp_path / "x.h5").exists()


def test_a_spline_of_another_calibration_is_one_line_naming_the_file(tmp_path, psf):
    path = tmp_path / "psf_spline.h5"
    save_spline_psf(path, psf)
    with pytest.raises(InputError, match=r"^\S*psf_spline\.h5: the spline PSF has 4 planes, the run has 2$"):
        load_spline_psf(path, expect_planes=2)
    with pytest.raises(
        InputError, match=r"^\S*psf_spline\.h5: the spline PSF has px_size_nm = 192, the run has 100$"
    ):
        load_spline_psf(path, expect_grid={"px_size_nm": 100.0})
    other = (0.0, 392.0, 809.0, 1196.0)
    with pytest.raises(InputError, match=r"^\S*psf_spline\.h5: the spline PSF's planes are at z \[0\.0, 400\.0, "
                       r"800\.0, 1200\.0\] nm, the run's at \[0\.0, 392\.0, .*another calibration"):  # fmt: skip
        load_spline_psf(path, expect_plane_z_nm=other)
    assert load_spline_psf(path, expect_plane_z_nm=other, plane_z_tol_nm=10.0).n_planes == 4
    with pytest.raises(InputError, match="planes are at"):
        load_spline_psf(path, expect_plane_z_nm=PLANES[:3])
    with pytest.raises(InputError, match=r"^\S*psf_spline\.h5: the spline PSF covers z -300\.\.500 nm, the run needs "
                       r"-400\.\.1400 nm"):  # fmt: skip
        load_spline_psf(path, require_z_range_nm=(-400.0, 1400.0))
    with pytest.raises(ValueError, match="unknown spline grid key"):
        load_spline_psf(path, expect_grid={"pixel": 1.0})
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(InputError, match=r"bad\.h5: cannot read"):
        load_spline_psf(bad)


def test_check_z_coverage(psf):
    check_z_coverage(psf, (-300.0, 500.0), "s.h5")
    check_z_coverage(psf, (0.0, 100.0), None)
    with pytest.raises(InputError, match=r"^s\.h5: the spline PSF covers z -300\.\.500 nm, the run needs 0\.\.600 nm .*"
                       r"calibration\.spline\.z_range_nm"):  # fmt: skip
        check_z_coverage(psf, (0.0, 600.0), "s.h5")
    with pytest.raises(InputError, match=r"^the spline PSF: .* needs -301\.\.0 nm"):
        check_z_coverage(psf, (-301.0, 0.0), None)


def test_a_file_of_an_earlier_version_still_loads(tmp_path, psf):
    """Files written before the per-plane bead counts and the z range attributes existed."""
    path = tmp_path / "old.h5"
    save_spline_psf(path, psf)
    with h5py.File(path, "a") as f:
        for key in (
            "n_beads_per_plane",
            "z_min_nm",
            "z_max_nm",
            "n_z",
            "grid_px",
            "half_px",
            "voxloc_source",
        ):
            del f.attrs[key]
    back = load_spline_psf(path, expect_plane_z_nm=PLANES)
    assert back.grid() == psf.grid() and back.normalisation == "focus"


def test_reference_from_metadata_reads_the_file_it_names(tmp_path, psf, monkeypatch):
    """A Microscope with a spline writes its PSF as a reference (file, absolute file, SHA-256),
    and load_spline_reference reads it back from the working directory or from elsewhere, and
    refuses a file that changed or went missing with one line naming it."""
    from voxloc.calibration.spline_files import load_spline_reference
    from voxloc.io import file_sha256
    from voxloc.physics.microscope import Microscope

    monkeypatch.chdir(tmp_path)
    save_spline_psf("psf_spline.h5", psf)
    mic = Microscope(
        psf=psf, plane_z_nm=PLANES, psf_file="psf_spline.h5", psf_sha256=file_sha256("psf_spline.h5")
    )
    meta = {**mic.metadata(), "px_size_nm": str(PX)}
    back = Microscope.from_metadata(meta, load_spline=load_spline_reference)
    assert back.model == "spline" and back.transmission == mic.transmission
    np.testing.assert_array_equal(back.psf.coeffs, psf.coeffs)
    with pytest.raises(ValueError, match="needs a loader"):
        Microscope.from_metadata(meta)
    # from another directory: the absolute path
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert Microscope.from_metadata(meta, load_spline=load_spline_reference).model == "spline"
    monkeypatch.chdir(tmp_path)
    # another calibration in its place
    other = SplinePSF(psf.coeffs * 1.01, psf.z0_nm, psf.z_step_nm, PX, psf.transmission, PLANES)
    save_spline_psf("psf_spline.h5", other)
    with pytest.raises(InputError, match=r"psf_spline\.h5: the spline PSF file changed") as exc:
        Microscope.from_metadata(meta, load_spline=load_spline_reference)
    assert "\n" not in str(exc.value)
    (tmp_path / "psf_spline.h5").unlink()
    with pytest.raises(InputError, match=r"psf_spline\.h5: the spline PSF file referred to is missing"):
        Microscope.from_metadata(meta, load_spline=load_spline_reference)
