"""Movie reading: every TIFF flavour, batches equal the whole, ADU -> photons, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from voxloc.errors import InputError
from voxloc.localization.movies import open_movie
from voxloc.localization.resampling import Resampler
from voxloc.physics.cameras import affine_matrix, apply_affine

T, H, W = 9, 20, 24


@pytest.fixture(scope="module")
def movie() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 60000, (T, 4, H, W)).astype(np.uint16)


def _write(path, data, **kw):
    kw.setdefault("photometric", "minisblack")
    tifffile.imwrite(path, data, **kw)
    return path


FLAVOURS = {
    "plain": lambda p, a: _write(p / "m.tif", a, metadata={"axes": "TCYX"}),
    "bigtiff": lambda p, a: _write(p / "m.tif", a, bigtiff=True),
    "imagej_channels": lambda p, a: _write(
        p / "m.tif", a[:, None], imagej=True, metadata={"axes": "TZCYX"}, photometric=None
    ),
    "imagej_slices": lambda p, a: _write(
        p / "m.tif", a[:, :, None], imagej=True, metadata={"axes": "TZCYX"}, photometric=None
    ),
    "ome": lambda p, a: _write(p / "m.ome.tif", a, metadata={"axes": "TCYX"}),
    "compressed": lambda p, a: _write(p / "m.tif", a, compression="zlib", metadata={"axes": "TCYX"}),
    "flat_pages": lambda p, a: _write(p / "m.tif", a.reshape(-1, H, W)),
    "plane_major": lambda p, a: _write(
        p / "m.tif", a.transpose(1, 0, 2, 3).copy(), metadata={"axes": "CTYX"}
    ),
    "float32": lambda p, a: _write(p / "m.tif", a.astype(np.float32), metadata={"axes": "TCYX"}),
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_one_file_flavours_read_the_right_planes(tmp_path, movie, flavour):
    path = FLAVOURS[flavour](tmp_path, movie)
    with open_movie(path) as m:
        assert m.n_frames == T
        assert m.camera_shapes == [(H, W)] * 4
        got = np.concatenate([np.stack(cams, 1) for _, cams in m.batches(batch=4)])
        mapped = m.files[0].memory_mapped
    np.testing.assert_array_equal(got, movie.astype(np.float32))
    # uncompressed contiguous data is read directly (one read per batch, or a memory map for
    # plane-major files), compressed data page by page
    assert mapped == (flavour != "compressed")


def test_per_camera_files_and_photon_conversion(tmp_path, movie):
    paths = [_write(tmp_path / f"c{k}.tif", movie[:, k]) for k in range(4)]
    with open_movie(paths, offset_adu=100, adu_per_photon=4) as m:
        cams = m.read_photons(2, 5)
    for k in range(4):
        np.testing.assert_allclose(cams[k], (movie[2:5, k].astype(np.float64) - 100) / 4, rtol=1e-6)


def test_batches_cover_a_frame_range(tmp_path, movie):
    path = _write(tmp_path / "m.tif", movie)
    with open_movie(path) as m:
        starts = [s for s, _ in m.batches(start=2, stop=8, batch=4)]
        sizes = [c[0].shape[0] for _, c in m.batches(start=2, stop=8, batch=4)]
    assert starts == [2, 6] and sizes == [4, 2]


def test_bad_inputs_are_one_line_naming_the_file(tmp_path, movie):
    cases = {}
    cases["missing"] = (tmp_path / "nope.tif", "file not found")
    (tmp_path / "text.tif").write_text("not a tiff")
    cases["not tiff"] = (tmp_path / "text.tif", "not a readable TIFF")
    cases["3 planes"] = (_write(tmp_path / "p3.tif", movie[:, :3], metadata={"axes": "TCYX"}), "4 planes")
    cases["odd pages"] = (_write(tmp_path / "odd.tif", movie.reshape(-1, H, W)[:-1]), "cannot be 4 planes")
    full = _write(tmp_path / "full.tif", movie)
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    cases["truncated"] = (trunc, "truncated")
    nan = movie.astype(np.float32)
    nan[5, 2, 3, 3] = np.nan
    cases["nan"] = (_write(tmp_path / "nan.tif", nan, metadata={"axes": "TCYX"}), "frame 5 holds NaN")
    for name, (path, expected) in cases.items():
        with pytest.raises(InputError) as info:
            with open_movie(path) as m:
                list(m.batches())
        msg = str(info.value)
        assert str(path) in msg and expected in msg, (name, msg)
        assert "\n" not in msg


def test_empty_and_mismatched_cameras(tmp_path, movie):
    empty = tmp_path / "empty.tif"
    with pytest.warns(UserWarning):  # tifffile: a zero-size array is a nonconformant TIFF
        tifffile.imwrite(empty, np.zeros((0, 4, H, W), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match="empty.tif"):
        open_movie(empty)
    paths = [_write(tmp_path / f"c{k}.tif", movie[: T - (k == 2), k]) for k in range(4)]
    with pytest.raises(InputError, match=r"c0\.tif: frame counts differ across cameras .*c2\.tif: 8"):
        open_movie(paths)


def test_resampler_identity_is_a_copy_and_affine_is_bilinear():
    h, w = 40, 50
    m = affine_matrix(height=h, width=w, flip="x", rotation_deg=3, scale=1.01, shift_px=(2, -1))
    yy, xx = np.mgrid[0:h, 0:w]
    q = np.stack([xx + 0.5, yy + 0.5], -1)

    def f(p):  # a smooth scene in camera-1 pixel coordinates
        return np.sin(p[..., 0] / 5) + np.cos(p[..., 1] / 7)

    cam1 = f(q)[None].astype(np.float32)
    cam2 = f(apply_affine(m, q))[None].astype(np.float32)  # camera 2 at q sees the scene at T q
    r = Resampler([np.eye(3), m, np.eye(3), np.eye(3)], [(h, w)] * 4)
    out = r([cam1, cam2, cam1, cam1])
    np.testing.assert_array_equal(out[0, 0], cam1[0])
    src = apply_affine(np.linalg.inv(m), q)
    inner = (src[..., 0] > 1) & (src[..., 0] < w - 1) & (src[..., 1] > 1) & (src[..., 1] < h - 1)
    # bilinear error bound h²/8 · max|f''| per axis: (1/25 + 1/49) / 8 < 0.0076
    assert np.abs(out[0, 1] - cam1[0])[inner].max() < 0.0076
    # the flip moves part of the field off camera 2: uncovered, filled with its median
    assert 0.85 < r.coverage[1].mean() < 1.0 and r.coverage[0].all()
    np.testing.assert_allclose(out[0, 1][~r.coverage[1]], np.median(cam2))


def test_resampler_smaller_camera_leaves_uncovered_border():
    r = Resampler([np.eye(3)] * 4, [(30, 30), (30, 30), (20, 30), (30, 30)])
    assert r.coverage[2, :20].all() and not r.coverage[2, 21:].any()
    frames = [np.ones((2, 30, 30), np.float32)] * 2 + [
        np.full((2, 20, 30), 5, np.float32),
        np.ones((2, 30, 30), np.float32),
    ]
    out = r(frames)
    assert out.shape == (2, 4, 30, 30)
    np.testing.assert_allclose(out[:, 2], 5.0)


def test_torch_resampler_and_photons_match_the_numpy_path(tmp_path, movie):
    """The GPU path of localization (run here on the CPU): the same registered photons."""
    torch = pytest.importorskip("torch")
    m = affine_matrix(height=H, width=W, flip="x", rotation_deg=4, scale=1.02, shift_px=(1.5, -0.7))
    # camera 3 smaller: part of its plane is uncovered and filled with its frame's median
    shapes = [(H, W), (H, W), (H - 6, W), (H, W)]
    r = Resampler([np.eye(3), m, np.eye(3), m], shapes)
    rng = np.random.default_rng(5)
    raw = [rng.integers(0, 60000, (3, h, w)).astype(np.uint16) for h, w in shapes]
    paths = [_write(tmp_path / f"c{k}.tif", np.repeat(a, 2, axis=0)) for k, a in enumerate(raw)]
    with open_movie(paths, offset_adu=100, adu_per_photon=2.5) as mov:
        want = r(mov.read_photons(0, 3))
        photons = [mov.photons(torch.from_numpy(a)) for a in mov.read_raw(0, 3)]
    got = r.to_torch("cpu")(photons)
    assert got.dtype == torch.float32 and got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-2)
    assert not r.coverage.all()
