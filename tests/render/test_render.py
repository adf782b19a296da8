"""Tests of the super-resolved renders (voxloc.render) with hand-computed values."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
from PIL import Image

from voxloc.errors import InputError
from voxloc.locs import write_parquet
from voxloc.render import movie, png, precision, tiff, volume

S = 192.0  # camera pixel (nm)
H_PX, W_PX = 5, 7  # camera-1 field (pixels)
FIELD = (W_PX * S, H_PX * S)  # (width, height) nm
Z_RANGE = (-200.0, 1400.0)
SHAPE = (32, 8 * H_PX, 8 * W_PX)


def hist(x, y, z, **kwargs) -> np.ndarray:
    return volume.histogram_3d(
        np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(z), field_nm=FIELD, z_range_nm=Z_RANGE, **kwargs
    )


def write_locs(path, x, y, z, *, row_group_size=None, metadata=True, sigmas=None) -> None:
    """A localization Parquet; ``sigmas`` = (σx, σy, σz) nm columns of the fit (None: none)."""
    n = len(x)
    columns = {
        "frame": pa.array(np.arange(n, dtype=np.int32)),
        "x_nm": pa.array(np.asarray(x, np.float32)),
        "y_nm": pa.array(np.asarray(y, np.float32)),
        "z_nm": pa.array(np.asarray(z, np.float32)),
        "prob": pa.array(np.ones(n, np.float32)),
    }
    if sigmas is not None:
        for axis, sigma in zip("xyz", sigmas, strict=True):
            columns[f"sigma_{axis}_nm"] = pa.array(np.broadcast_to(np.asarray(sigma, np.float32), (n,)))
    table = pa.table(columns)
    if metadata:
        meta = {
            "px_size_nm": str(S),
            "plane_z_nm": json.dumps([0.0, 400.0, 800.0, 1200.0]),
            "z_range_nm": json.dumps(list(Z_RANGE)),
            "width_px": str(W_PX),
            "height_px": str(H_PX),
            "n_frames": str(n),
        }
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, path, row_group_size=row_group_size)


def random_locs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mostly inside the field and z range, a few outside."""
    x = rng.uniform(-100, FIELD[0] + 100, n)
    y = rng.uniform(-100, FIELD[1] + 100, n)
    z = rng.uniform(Z_RANGE[0] - 100, Z_RANGE[1] + 100, n)
    return x, y, z


# -------------------------------------------------------------------------- binning


def test_shape_is_8x_the_camera_field_and_32_z_bins():
    assert volume.histogram_shape(field_nm=FIELD, z_range_nm=Z_RANGE, px_nm=24, z_bin_nm=50) == SHAPE
    assert hist(S / 2, S / 2, 0.0).shape == SHAPE
    assert hist(S / 2, S / 2, 0.0).dtype == np.uint32


@pytest.mark.parametrize(
    ("i", "j", "z", "k"),
    [(0, 0, -200.0, 0), (2, 3, 0.0, 4), (4, 6, 49.9, 4), (1, 5, 50.0, 5), (3, 0, 1399.0, 31)],
)
def test_camera_pixel_centre_lands_in_8i_plus_4(i, j, z, k):
    counts = hist((j + 0.5) * S, (i + 0.5) * S, z)
    assert k == int(np.floor((z - Z_RANGE[0]) / 50))
    assert counts.sum() == 1
    assert counts[k, 8 * i + 4, 8 * j + 4] == 1


@pytest.mark.parametrize(("i", "j"), [(0, 0), (2, 3), (4, 6)])
def test_camera_pixel_corner_lands_in_8i(i, j):
    counts = hist(j * S, i * S, 600.0)
    assert counts[16, 8 * i, 8 * j] == 1 and counts.sum() == 1
    # just short of the next camera pixel: the last of the 8 sub-pixels
    counts = hist((j + 1) * S - 1e-3, (i + 1) * S - 1e-3, 600.0)
    assert counts[16, 8 * i + 7, 8 * j + 7] == 1


def test_counts_add_and_accumulate():
    x, y, z = [S / 2] * 3 + [1.5 * S], [S / 2] * 3 + [S / 2], [0.0] * 3 + [0.0]
    counts = hist(x, y, z)
    assert counts[4, 4, 4] == 3 and counts[4, 4, 12] == 1 and counts.sum() == 4
    dropped = volume.accumulate_histogram_3d(counts, x, y, z, field_nm=FIELD, z_range_nm=Z_RANGE)
    assert dropped == 0
    assert counts[4, 4, 4] == 6 and counts.sum() == 8


def test_outside_the_field_or_z_range_is_dropped_and_counted():
    w, h = FIELD
    x = [-0.1, w, 10.0, 10.0, 10.0, 10.0, np.nan, 10.0, w - 1e-3]
    y = [10.0, 10.0, -1.0, h, 10.0, 10.0, 10.0, 10.0, h - 1e-3]
    z = [0.0, 0.0, 0.0, 0.0, -200.1, 1400.0, 0.0, 1399.99, -200.0]
    counts = np.zeros(SHAPE, np.uint32)
    dropped = volume.accumulate_histogram_3d(counts, x, y, z, field_nm=FIELD, z_range_nm=Z_RANGE)
    assert dropped == 7
    assert counts.sum() == 2
    assert counts[31, 0, 0] == 1 and counts[0, SHAPE[1] - 1, SHAPE[2] - 1] == 1


def test_field_not_a_multiple_of_the_bin_gets_a_partial_last_bin():
    assert volume.histogram_shape(field_nm=(100.0, 48.0), z_range_nm=(0.0, 120.0), px_nm=24, z_bin_nm=50) == (
        3,
        2,
        5,
    )


# ------------------------------------------------------------------------- Parquet


def test_chunked_parquet_equals_one_shot_histogram(tmp_path):
    rng = np.random.default_rng(1)
    x, y, z = random_locs(5000, rng)
    path = tmp_path / "locs.parquet"
    write_locs(path, x, y, z, row_group_size=700)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    # float32 as stored in the file
    expected = hist(*(np.asarray(v, np.float32) for v in (x, y, z)))
    rendered = volume.render_parquet(path, chunk_rows=333)
    np.testing.assert_array_equal(rendered.counts, expected)
    assert rendered.n_rows == 5000
    assert rendered.n_dropped == 5000 - int(expected.sum()) > 0
    assert rendered.field_nm == FIELD and rendered.z_range_nm == Z_RANGE
    np.testing.assert_allclose(rendered.z_centres_nm[[0, -1]], [-175.0, 1375.0])
    assert rendered.metadata["width_px"] == str(W_PX)


def test_metadata_wins_and_arguments_are_fallbacks(tmp_path):
    x, y, z = [S / 2], [S / 2], [0.0]
    path = tmp_path / "with.parquet"
    write_locs(path, x, y, z)
    rendered = volume.render_parquet(path, field_nm=(10 * S, 10 * S), z_range_nm=(0.0, 100.0))
    assert rendered.counts.shape == SHAPE
    bare = tmp_path / "bare.parquet"
    write_locs(bare, x, y, z, metadata=False)
    rendered = volume.render_parquet(bare, field_nm=(2 * S, 3 * S), z_range_nm=(-100.0, 100.0))
    assert rendered.counts.shape == (4, 24, 16)
    assert rendered.counts[2, 4, 4] == 1
    # no field anywhere: the data extent (column statistics), rounded up to camera pixels
    rendered = volume.render_parquet(bare, px_size_nm=S, z_range_nm=(-100.0, 100.0))
    assert rendered.field_nm == (S, S)
    with pytest.raises(InputError, match="bare.parquet: no z_range_nm"):
        volume.render_parquet(bare, field_nm=(S, S))


def test_plane_z_metadata_gives_the_slab_edges(tmp_path):
    path = tmp_path / "planes.parquet"
    df = pd.DataFrame({"x_nm": [10.0], "y_nm": [10.0], "z_nm": [0.0]})
    write_parquet(path, df, px_size_nm=S, plane_z_nm=json.dumps([0, 300, 600, 900]), width_px=2, height_px=2)
    rendered = volume.render_parquet(path)
    assert rendered.z_range_nm == (-150.0, 1050.0)
    assert rendered.counts.shape == (24, 16, 16)


def test_unusable_files_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.parquet: file not found"):
        volume.render_parquet(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(InputError, match="bad.parquet: not a readable Parquet"):
        volume.render_parquet(bad)
    cols = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"x_nm": [1.0], "y_nm": [1.0]}), cols)
    with pytest.raises(InputError, match="cols.parquet: missing column.* z_nm"):
        volume.render_parquet(cols, field_nm=FIELD, z_range_nm=Z_RANGE)


def _peak_bytes(path, chunk_rows: int, monkeypatch) -> tuple[int, int]:
    """Peaks while rendering: Python/numpy memory (tracemalloc) and Arrow's, sampled per chunk."""
    arrow_peak = [0]
    accumulate = volume.accumulate_histogram_3d

    def spy(*args, **kwargs):
        arrow_peak[0] = max(arrow_peak[0], pa.total_allocated_bytes())
        return accumulate(*args, **kwargs)

    monkeypatch.setattr(volume, "accumulate_histogram_3d", spy)
    arrow_before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        volume.render_parquet(path, chunk_rows=chunk_rows)
        return tracemalloc.get_traced_memory()[1], arrow_peak[0] - arrow_before
    finally:
        tracemalloc.stop()
        monkeypatch.undo()


def test_memory_does_not_grow_with_the_number_of_localizations(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    n_big, n_small, group = 2_000_000, 200_000, 200_000
    x, y, z = random_locs(n_big, rng)
    big, small = tmp_path / "big.parquet", tmp_path / "small.parquet"
    write_locs(big, x, y, z, row_group_size=group)
    write_locs(small, x[:n_small], y[:n_small], z[:n_small], row_group_size=group)
    del x, y, z
    chunk = 50_000
    py_small, arrow_small = _peak_bytes(small, chunk, monkeypatch)
    py_big, arrow_big = _peak_bytes(big, chunk, monkeypatch)
    volume_bytes = np.prod(SHAPE) * 4
    all_columns_bytes = n_big * 3 * 8
    # numpy side: the volume and one chunk's temporaries (~50 bytes per row)
    assert py_big < 1.3 * py_small + 1e6, (py_small, py_big)
    assert py_big < volume_bytes + 100 * chunk
    assert py_big < all_columns_bytes / 5
    # Arrow side: one row group (decoded, ~12 bytes per row, + page buffers), not all 10
    assert arrow_big < arrow_small + 2e6, (arrow_small, arrow_big)
    assert arrow_big < 12 * n_big / 2, arrow_big


# ------------------------------------------------------------------ blur and 16 bits


@pytest.mark.parametrize("sigmas", [(0.0, 60.0), (30.0, 0.0), (48.0, 100.0), (500.0, 2000.0)])
def test_blur_preserves_total_counts_even_at_the_edges(sigmas):
    rng = np.random.default_rng(3)
    counts = np.zeros(SHAPE, np.uint32)
    counts[0, 0, 0] = 50  # a corner: half of the Gaussian would leave the volume
    counts[31, 39, 55] = 7
    counts[rng.integers(0, 32, 300), rng.integers(0, 40, 300), rng.integers(0, 56, 300)] += 1
    out = volume.blur(counts, *sigmas)
    assert out.dtype == np.float32 and out.shape == SHAPE
    assert out.sum(dtype=np.float64) == pytest.approx(float(counts.sum()), rel=1e-6)
    assert out.min() >= 0


def test_blur_with_zero_sigmas_is_identity_and_sigma_is_in_nm():
    counts = np.zeros((3, 41, 41), np.uint32)
    counts[1, 20, 20] = 1000
    np.testing.assert_array_equal(volume.blur(counts, 0.0, 0.0), counts)
    out = volume.blur(counts, 48.0, 0.0, px_nm=24.0, z_bin_nm=50.0)  # sigma = 2 px
    profile = out[1, 20].astype(np.float64)
    var_px2 = np.sum(profile * (np.arange(41) - 20) ** 2) / profile.sum()
    assert var_px2 == pytest.approx(4.0, rel=0.01)
    assert out[0].sum() == 0 and out[2].sum() == 0


def test_to_uint16_keeps_counts_and_records_the_scale_otherwise():
    counts = np.array([[[0, 1, 65535]]], np.uint32)
    out, per_level = tiff.to_uint16(counts)
    assert out.dtype == np.uint16 and per_level == 1.0
    np.testing.assert_array_equal(out, counts)
    big = np.array([[[0, 1000, 131070]]], np.uint32)
    out, per_level = tiff.to_uint16(big)
    assert per_level == pytest.approx(2.0) and out.tolist() == [[[0, 500, 65535]]]
    frac = np.array([[[0.0, 0.25, 2.5]]], np.float32)
    out, per_level = tiff.to_uint16(frac)
    assert out[0, 0, 2] == 65535
    np.testing.assert_allclose(out * per_level, frac, atol=per_level)
    whole = np.array([[[0.0, 3.0]]], np.float32)
    assert tiff.to_uint16(whole)[1] == 1.0


def test_tiff_reads_back_as_zyx_uint16_with_imagej_voxel_size(tmp_path):
    counts = hist([S / 2, S / 2, 3.5 * S], [S / 2, S / 2, 2.5 * S], [0.0, 0.0, 1000.0])
    path = tmp_path / "volume.tif"
    assert tiff.write_render_tiff(path, counts, 24.0, 50.0, z_min_nm=-200.0) == 1.0
    data = tifffile.imread(path)
    assert data.shape == SHAPE and data.dtype == np.uint16
    np.testing.assert_array_equal(data, counts)
    with tifffile.TiffFile(path) as tif:
        ij = tif.imagej_metadata
        assert tif.series[0].axes == "ZYX"
        num, den = tif.pages[0].tags["XResolution"].value
        assert den / num == pytest.approx(0.024)  # µm per pixel
        num, den = tif.pages[0].tags["YResolution"].value
        assert den / num == pytest.approx(0.024)
    assert ij["spacing"] == pytest.approx(0.05) and ij["unit"] == "um"
    assert ij["slices"] == 32 and ij["zorigin"] == pytest.approx(4.0)
    assert ij["counts_per_level"] == 1.0 and ij["c1"] == 1.0
    assert not list(tmp_path.glob(".*tmp*"))


def test_scaled_tiff_records_counts_per_level(tmp_path):
    blurred = volume.blur(hist([S / 2] * 5, [S / 2] * 5, [0.0] * 5), 30.0, 50.0)
    path = tmp_path / "blurred.tif"
    per_level = tiff.write_render_tiff(path, blurred, 24.0, 50.0)
    with tifffile.TiffFile(path) as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    assert ij["counts_per_level"] == pytest.approx(per_level) and per_level < 1
    assert data.max() == 65535
    assert data.sum() * per_level == pytest.approx(5.0, rel=1e-3)


# ----------------------------------------------------------------------------- PNG


def test_depth_coded_rgb_hue_is_mean_z_and_brightness_saturates():
    zc = np.array([100.0, 300.0, 500.0, 700.0])
    vol = np.zeros((4, 2, 3))
    vol[0, 0, 0] = 4  # z = 100, bright
    vol[1, 0, 1], vol[3, 0, 1] = 2, 2  # mean z = 500, bright
    vol[3, 1, 0] = 1  # z = 700, half as bright
    rgb = png.depth_coded_rgb(vol, zc, z_range_nm=(0.0, 800.0), saturation_percentile=100.0)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    cmap = png.depth_colormap("turbo")

    def colour(t, b=1.0):
        return np.rint(np.asarray(cmap(t)[:3]) * b * 255)

    np.testing.assert_array_equal(rgb[0, 0], colour(100 / 800))
    np.testing.assert_array_equal(rgb[0, 1], colour(500 / 800))
    np.testing.assert_array_equal(rgb[1, 0], colour(700 / 800, 0.25))
    assert rgb[0, 2].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 0, 0]


def test_depth_colormap_skips_the_dark_ends_and_rejects_unknown_names():
    turbo = matplotlib.colormaps["turbo"]
    lo, hi = png.DEPTH_COLORMAP_RANGES["turbo"]
    np.testing.assert_allclose(png.depth_colormap("turbo")(0.0), turbo(lo), atol=1e-2)
    np.testing.assert_allclose(png.depth_colormap("turbo")(1.0), turbo(hi), atol=1e-2)
    with pytest.raises(ValueError, match="unknown matplotlib colormap 'nope'"):
        png.depth_colormap("nope")


def test_png_is_rgb_with_the_image_drawn_one_to_one(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    rgb[200:, 300:] = 0  # the bottom right corner is free
    path = tmp_path / "volume.png"
    size = png.write_depth_png(path, rgb, Z_RANGE, 24.0, 1000.0, caption=["demo", "3 localizations"])
    with Image.open(path) as im:
        assert im.mode == "RGB"
        image = np.asarray(im)
        assert im.info["Description"].endswith("scale bar 1 µm (bottom right)")
    assert image.shape[:2] == size
    assert size[0] >= 300 and size[1] > 420 + 80  # room for the colour bar
    # top left: the image itself, unscaled (the scale bar is at the bottom right)
    np.testing.assert_array_equal(image[:250, :300], rgb[:250, :300])
    # the scale bar: 1000 nm / 24 nm ~ 42 white pixels, 4% of 300 px from the corner
    assert (image[300 - 12 - 1, 420 - 12 - 42 : 420 - 12] == 255).all()
    # colour bar: saturated colours in the panel
    panel = image[:, 430:].astype(int)
    assert (panel.max(axis=2) - panel.min(axis=2) > 100).sum() > 1000
    assert not list(tmp_path.glob(".*tmp*"))


def white_runs(image: np.ndarray, length: int) -> list[tuple[int, int]]:
    """(row, first column) of the horizontal runs of exactly ``length`` white pixels."""
    white = (image == 255).all(axis=2)
    out = []
    for r in range(white.shape[0]):
        edges = np.flatnonzero(np.diff(np.r_[0, white[r].astype(np.int8), 0]))
        out += [(r, int(a)) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a == length]
    return out


@pytest.mark.parametrize(
    ("lit", "corner"),
    [
        ((slice(240, 300), slice(340, 420)), "bottom left"),  # data in the bottom right
        ((slice(200, 300), slice(None)), "top right"),  # data along the whole bottom
    ],
)
def test_scale_bar_goes_to_a_corner_without_data(tmp_path, lit, corner):
    rgb = np.zeros((300, 420, 3), np.uint8)
    rgb[lit] = (200, 40, 40)  # red: no white pixel of the image itself
    path = tmp_path / "corner.png"
    png.write_depth_png(path, rgb, Z_RANGE, 24.0, 1000.0)
    with Image.open(path) as im:
        image, description = np.asarray(im), im.info["Description"]
    np.testing.assert_array_equal(image[:300, :420][lit], rgb[lit])  # no datum covered
    (row, col), *_ = white_runs(image[:300, :420], 42)  # the 1000 nm bar (42 px), 12 px inside
    assert (row > 150) == corner.startswith("bottom") and (col < 210) == corner.endswith("left")
    assert 12 <= col and col + 42 <= 420 - 12 and 12 <= row < 300 - 12
    assert description.endswith(f"scale bar 1 µm ({corner})")


def test_scale_bar_goes_below_an_image_full_of_data(tmp_path):
    rgb = np.full((300, 420, 3), 120, np.uint8)
    path = tmp_path / "full.png"
    h, _ = png.write_depth_png(path, rgb, Z_RANGE, 24.0, 1000.0)
    with Image.open(path) as im:
        image, description = np.asarray(im), im.info["Description"]
    np.testing.assert_array_equal(image[:300, :420], rgb)  # the whole image untouched
    (row, col), *_ = white_runs(image[:, :420], 42)
    assert row >= 300 and h > 300 and col + 42 == 420 - 12
    assert description.endswith("(below the image)")


def test_render_with_a_localization_in_the_corner_puts_the_bar_elsewhere(tmp_path):
    src = tmp_path / "corner.parquet"
    n = 50  # one place near the bottom right corner of the 7 x 5 camera-pixel field
    write_locs(src, [FIELD[0] - 60.0] * n, [FIELD[1] - 60.0] * n, [600.0] * n)
    movie.render_movie(src, tmp_path / "c.tif", tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        assert "scale bar" in im.info["Description"]
        assert "(bottom right)" not in im.info["Description"]
        image = np.asarray(im)
    zoom = 5  # 56 x 40 render pixels shown x5
    h, w = SHAPE[1] * zoom, SHAPE[2] * zoom
    spot = image[h - 4 * zoom : h - 1 * zoom, w - 4 * zoom : w - 1 * zoom]
    assert spot.max() > 200 and not (spot == 255).all(axis=2).any()  # the datum, not the bar


def test_default_config_blurs_the_png_and_keeps_counts_in_the_tiff(tmp_path):
    from voxloc import config as vconfig

    root = Path(__file__).resolve().parents[2]
    shipped = vconfig.load_config(root / "config" / "config.yaml")["render"]
    defaults = vconfig.validate({}, root / "workflow" / "schemas" / "config.schema.yaml", source="x")[
        "render"
    ]
    assert shipped == defaults
    opts = movie.RenderOptions.from_config(shipped)
    assert opts == movie.RenderOptions()
    assert 0 < opts.blur_sigma_nm[0] <= opts.px_nm and 0 < opts.blur_sigma_nm[1] <= opts.z_bin_nm
    src = tmp_path / "one.parquet"
    write_locs(src, [3.5 * S], [2.5 * S], [600.0])  # one localization in the middle
    movie.render_movie(src, tmp_path / "one.tif", tmp_path / "one.png", options=opts)
    with Image.open(tmp_path / "one.png") as im:
        image = np.asarray(im)[: SHAPE[1] * 5 : 5, : SHAPE[2] * 5 : 5]  # one value per render pixel
    lit = image.max(axis=2) >= png.LIT_LEVEL
    assert lit.sum() >= 9  # a spot of at least 3 x 3 render pixels, not one pixel
    with tifffile.TiffFile(tmp_path / "one.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    assert ij["counts_per_level"] == 1.0 and data.sum() == 1 and ij["blur_sigma_nm"] == "0,0"


def test_blur_tiff_blurs_the_volume_too(tmp_path):
    src = tmp_path / "one.parquet"
    write_locs(src, [3.5 * S] * 4, [2.5 * S] * 4, [600.0] * 4)
    opts = movie.RenderOptions.from_config(
        {"blur": "fixed", "blur_sigma_nm": [24.0, 25.0], "blur_tiff": True}
    )
    movie.render_movie(src, tmp_path / "b.tif", tmp_path / "b.png", options=opts)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    assert ij["blur_sigma_nm"] == "24,25" and ij["blur"] == "fixed" and np.count_nonzero(data) > 9
    assert data.sum() * ij["counts_per_level"] == pytest.approx(4.0, rel=1e-3)


def test_png_blur_equals_the_projection_of_the_laterally_blurred_volume():
    rng = np.random.default_rng(7)
    counts = hist(*random_locs(300, rng))
    zc = Z_RANGE[0] + 50.0 * (np.arange(SHAPE[0]) + 0.5)
    a = png.depth_coded_rgb(volume.blur(counts, 36.0, 0.0), zc, z_range_nm=Z_RANGE)
    b = png.depth_coded_rgb(counts, zc, z_range_nm=Z_RANGE, blur_px=1.5)
    assert np.abs(a.astype(int) - b).max() <= 1  # float32 vs float64 rounding


def test_small_png_is_enlarged_and_scale_bar_adapts(tmp_path):
    rgb = np.zeros((40, 40, 3), np.uint8)
    size = png.write_depth_png(tmp_path / "s.png", rgb, Z_RANGE, 24.0, 1000.0)
    assert size[0] >= 7 * 40  # 40 px shown x7 (>= 256 px)
    assert png.nice_scale_bar_nm(960.0) == 100.0
    assert png.nice_scale_bar_nm(18432.0) == 2000.0
    assert png.nice_scale_bar_nm(6000.0) == 1000.0


def test_render_options_from_the_config_section():
    cfg = {"px_nm": 12.0, "blur_sigma_nm": [10, 0], "colormap": "jet", "scale_bar_nm": None}
    opts = movie.RenderOptions.from_config(cfg)
    assert opts.blur_sigma_nm == (10.0, 0.0) and opts.scale_bar_nm is None and opts.z_bin_nm == 50.0
    assert opts.blur == "individual" and opts.min_blur_nm == (12.0, 25.0)
    opts = movie.RenderOptions.from_config({"blur": "fixed", "min_blur_nm": [5, 10]})
    assert opts.blur == "fixed" and opts.min_blur_nm == (5.0, 10.0)
    with pytest.raises(ValueError, match="unknown render option.*'pixel_nm'"):
        movie.RenderOptions.from_config({"pixel_nm": 12.0})
    with pytest.raises(ValueError, match="render blur must be one of fixed, individual"):
        movie.RenderOptions.from_config({"blur": "gaussian"})


def test_render_movie_writes_tiff_and_png(tmp_path):
    rng = np.random.default_rng(5)
    t = rng.uniform(0, 1, 3000)
    x, y, z = FIELD[0] * (0.1 + 0.8 * t), FIELD[1] * (0.5 + 0.3 * np.sin(6 * t)), -100 + 1400 * t
    src = tmp_path / "movie.parquet"
    write_locs(src, x, y, z, row_group_size=1000)
    options = movie.RenderOptions(blur_sigma_nm=(20.0, 50.0), chunk_rows=512)
    out = movie.render_movie(src, tmp_path / "r.tif", tmp_path / "r.png", options=options)
    assert out.n_rows == 3000 and out.n_dropped == 0
    with tifffile.TiffFile(tmp_path / "r.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    assert data.shape == SHAPE
    assert data.sum() * ij["counts_per_level"] == pytest.approx(3000, rel=1e-3)
    assert ij["n_localizations"] == 3000 and ij["source"] == "movie.parquet"
    with Image.open(tmp_path / "r.png") as im:
        assert im.mode == "RGB"


# ------------------------------------------------- individual localization precision


def gaussians(x, y, z, sx, sy, sz, **kwargs) -> np.ndarray:
    """accumulate_gaussians_3d into a fresh float32 volume of the test field (SHAPE)."""
    density = np.zeros(SHAPE, np.float32)
    x = np.atleast_1d(np.asarray(x, np.float64))
    arrays = (np.broadcast_to(np.asarray(a, np.float64), x.shape) for a in (y, z, sx, sy, sz))
    precision.accumulate_gaussians_3d(density, x, *arrays, field_nm=FIELD, z_range_nm=Z_RANGE, **kwargs)
    return density


def moments(density: np.ndarray) -> list[tuple[float, float]]:
    """(mean, variance) per axis (z, y, x) of a volume, in bins, bin k centred at k + 1/2."""
    out = []
    for axis in range(3):
        profile = density.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.float64)
        c = np.arange(profile.size) + 0.5
        mean = float(np.sum(profile * c) / profile.sum())
        out.append((mean, float(np.sum(profile * (c - mean) ** 2) / profile.sum())))
    return out


@pytest.mark.parametrize(
    ("sigmas_nm", "where_px"),
    [((36.0, 48.0, 75.0), (20.5, 18.5, 16.5)), ((60.0, 30.0, 120.0), (23.3, 17.8, 14.1))],
)
def test_one_localization_is_a_gaussian_of_total_one_with_its_own_sigmas(sigmas_nm, where_px):
    sx, sy, sz = sigmas_nm
    x, y = where_px[0] * 24.0, where_px[1] * 24.0
    z = Z_RANGE[0] + where_px[2] * 50.0
    density = gaussians(x, y, z, sx, sy, sz)
    assert density.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    assert density.min() >= 0
    (mz, vz), (my, vy), (mx, vx) = moments(density)
    assert (mx, my, mz) == pytest.approx((where_px[0], where_px[1], where_px[2]), abs=0.02)
    # pixel-integrated: σ² + 1/12 bin² (Sheppard); the ±3 σ window takes < 3 % off
    for var, sigma, bin_nm in ((vx, sx, 24.0), (vy, sy, 24.0), (vz, sz, 50.0)):
        expected = (sigma / bin_nm) ** 2 + 1 / 12
        assert var == pytest.approx(expected, rel=0.03), (var, expected)
        assert var < expected  # the truncation only narrows
    # separable: the volume is the outer product of its three profiles
    pz, py, px_ = (density.sum(axis=tuple(b for b in range(3) if b != a), dtype=np.float64) for a in range(3))
    np.testing.assert_allclose(density, np.einsum("k,i,j->kij", pz, py, px_), atol=1e-6)


def test_a_sigma_below_a_pixel_still_sums_to_one_in_its_pixel():
    x, y, z = 10.3 * 24.0, 7.8 * 24.0, Z_RANGE[0] + 3.4 * 50.0
    density = gaussians(x, y, z, 3.0, 3.0, 5.0)  # σ = 1/8 pixel, 1/10 bin
    assert density.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    assert np.unravel_index(np.argmax(density), SHAPE) == (3, 7, 10)
    assert density[3, 7, 10] > 0.9  # point sampling would give a 1 / (2π)^1.5 σ³ spike instead
    # σ = 0: exactly the histogram, voxel edges included
    w, h = FIELD
    xs = np.array([0.0, 24.0, 100.0, w - 1e-3, 3.5 * S])
    ys = np.array([0.0, 48.0, 100.0, h - 1e-3, 2.5 * S])
    zs = np.array([Z_RANGE[0], 0.0, 50.0, Z_RANGE[1] - 1e-3, 600.0])
    zero = np.zeros(xs.size)
    np.testing.assert_array_equal(gaussians(xs, ys, zs, zero, zero, zero), hist(xs, ys, zs))


def test_two_localizations_with_different_sigmas_have_different_widths(tmp_path):
    src = tmp_path / "two.parquet"
    x, y, z = [1.5 * S, 5.5 * S], [2.5 * S, 2.5 * S], [600.0, 600.0]  # 768 nm apart in x
    write_locs(src, x, y, z, sigmas=([15.0, 60.0], [15.0, 60.0], [30.0, 30.0]))
    blur = precision.IndividualBlur(min_blur_nm=(0.0, 0.0), fallback_sigma_nm=(24.0, 25.0))
    rendered = volume.render_parquet(src, individual=blur)
    d = rendered.density
    assert d.sum(dtype=np.float64) == pytest.approx(2.0, abs=1e-5) and rendered.n_fallback == 0
    left, right = d[:, :, :28], d[:, :, 28:]  # each spot in its half of the 56 px field
    assert left.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-4)
    (_, _), (_, vy_l), (_, vx_l) = moments(left)
    (_, _), (_, vy_r), (_, vx_r) = moments(right)
    assert vx_l == pytest.approx((15 / 24) ** 2 + 1 / 12, rel=0.03)
    assert vx_r == pytest.approx((60 / 24) ** 2 + 1 / 12, rel=0.03)
    assert vy_r / vy_l > 8  # 60 vs 15 nm: 16x the σ², diluted by the pixel's 1/12
    assert left.max() > 5 * right.max()  # the precise one is the brighter spot


def test_nan_sigma_falls_back_to_the_fixed_blur_and_small_sigmas_to_the_floor(tmp_path):
    x, y, z = [3.4 * S] * 4, [2.6 * S] * 4, [610.0] * 4
    nan = np.nan
    # a localization.fit: none row, a z-only NaN, one below the floor, one fitted
    sx, sy, sz = [nan, 40.0, 2.0, 40.0], [nan, 40.0, 2.0, 40.0], [nan, nan, 3.0, 80.0]
    src = tmp_path / "nan.parquet"
    write_locs(src, x, y, z, sigmas=(sx, sy, sz))
    blur = precision.IndividualBlur(min_blur_nm=(10.0, 20.0), fallback_sigma_nm=(30.0, 60.0))
    rendered = volume.render_parquet(src, individual=blur, chunk_rows=1)
    assert rendered.n_fallback == 2 and rendered.n_floored == 1
    expected = gaussians(
        x, y, z, [30.0, 40.0, 10.0, 40.0], [30.0, 40.0, 10.0, 40.0], [60.0, 60.0, 20.0, 80.0]
    )
    np.testing.assert_allclose(rendered.density, expected, atol=1e-6)
    # and not what the NaN rows would be with some other sigma
    other = gaussians(x, y, z, [24.0, 40.0, 10.0, 40.0], [24.0, 40.0, 10.0, 40.0], [25.0, 25.0, 20.0, 80.0])
    assert np.abs(rendered.density - other).max() > 1e-3
    # a table without sigma columns: all get the fixed blur
    bare = tmp_path / "bare.parquet"
    write_locs(bare, x, y, z)
    rendered = volume.render_parquet(bare, individual=blur)
    assert rendered.n_fallback == 4
    np.testing.assert_allclose(rendered.density, gaussians(x, y, z, 30.0, 30.0, 60.0), atol=1e-5)


def test_tails_past_the_edges_fold_back_and_each_localization_sums_to_one():
    w, h = FIELD
    x, y, z = [1.0, w - 1.0, 100.0], [1.0, h / 2, h - 1.0], [Z_RANGE[0] + 1.0, Z_RANGE[1] - 1.0, 500.0]
    density = gaussians(x, y, z, [60.0, 500.0, 30.0], [60.0, 30.0, 30.0], [100.0, 100.0, 5000.0])
    assert density.sum(dtype=np.float64) == pytest.approx(3.0, abs=1e-5)
    for one in range(3):  # one at a time: each 1
        d = gaussians(x[one], y[one], z[one], [60.0, 500.0, 30.0][one], [60.0, 30.0, 30.0][one], 100.0)
        assert d.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-6)
    # the corner one is folded (reflected) back: its corner voxel holds the most
    d = gaussians(x[0], y[0], z[0], 60.0, 60.0, 100.0)
    assert np.unravel_index(np.argmax(d), SHAPE) == (0, 0, 0)
    assert d[0, 0, 1] < d[0, 0, 0] and d[0, 1, 0] < d[0, 0, 0] and d[1, 0, 0] < d[0, 0, 0]
    # folded as a mirror at the edge (half-sample reflection, as blur's mode 'reflect'), not
    # piled into the edge voxel: a localization on the edge x = 0 has the profile of one on
    # the voxel edge x = 10 px folded there, bin 10 + j plus bin 9 - j
    y0, z0 = 2.5 * S, 600.0
    edge = gaussians(0.0, y0, z0, 48.0, 20.0, 20.0).sum(axis=(0, 1), dtype=np.float64)
    mid = gaussians(240.0, y0, z0, 48.0, 20.0, 20.0).sum(axis=(0, 1), dtype=np.float64)
    folded = mid[10:17].copy()
    folded[:6] += mid[9:3:-1]
    np.testing.assert_allclose(edge[:7], folded, atol=1e-6)
    assert edge[7:].sum() == 0


def test_individual_blur_streamed_in_chunks_equals_one_chunk(tmp_path):
    rng = np.random.default_rng(8)
    n = 3000
    x, y, z = random_locs(n, rng)
    sigmas = rng.uniform(5, 60, n), rng.uniform(5, 60, n), rng.uniform(10, 120, n)
    sigmas[0][::7] = np.nan  # some without a fit
    path = tmp_path / "locs.parquet"
    write_locs(path, x, y, z, row_group_size=700, sigmas=sigmas)
    blur = precision.IndividualBlur()
    one = volume.render_parquet(path, chunk_rows=10**6, individual=blur)
    many = volume.render_parquet(path, chunk_rows=333, individual=blur)
    np.testing.assert_array_equal(one.counts, many.counts)
    np.testing.assert_allclose(many.density, one.density, rtol=1e-5, atol=1e-6)
    assert (one.n_fallback, one.n_floored) == (many.n_fallback, many.n_floored)
    assert 0 < one.n_fallback < n and 0 < one.n_floored < n
    n_in = n - one.n_dropped
    assert one.density.sum(dtype=np.float64) == pytest.approx(n_in, rel=1e-5)
    # the same as all the rows at once, straight from the arrays (float32 as stored)
    f32 = [np.asarray(a, np.float32).astype(np.float64) for a in (x, y, z, *sigmas)]
    sx, sy, sz, _, _ = blur.sigmas_nm(*f32[3:])
    np.testing.assert_allclose(one.density, gaussians(*f32[:3], sx, sy, sz), rtol=1e-5, atol=1e-6)


def test_individual_blur_memory_does_not_grow_with_the_number_of_localizations(tmp_path):
    rng = np.random.default_rng(9)
    n_big, n_small, group, chunk = 300_000, 30_000, 30_000, 10_000
    x, y, z = random_locs(n_big, rng)
    # one window size (σ of one voxel: 7 x 7 x 7), so that a chunk is one group of rows
    sigmas = np.full(n_big, 24.0), rng.uniform(20.0, 24.0, n_big), np.full(n_big, 50.0)
    big, small = tmp_path / "big.parquet", tmp_path / "small.parquet"
    write_locs(big, x, y, z, row_group_size=group, sigmas=sigmas)
    write_locs(
        small,
        x[:n_small],
        y[:n_small],
        z[:n_small],
        row_group_size=group,
        sigmas=[a[:n_small] for a in sigmas],
    )
    del x, y, z, sigmas
    import scipy.special  # noqa: F401  (imported by the first render: not in its peak)

    peaks = []
    for path in (small, big):
        tracemalloc.start()
        try:
            volume.render_parquet(path, chunk_rows=chunk, individual=precision.IndividualBlur())
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    py_small, py_big = peaks
    volumes_bytes = np.prod(SHAPE) * (4 + 4)  # counts and density
    assert py_big < 1.3 * py_small + 1e6, (py_small, py_big)
    # ~200 bytes per chunk row and the patches of PATCH_VOXELS weights (~3 MB), not the
    # chunk's 3.4 M weights at once (~50 MB)
    assert py_big < volumes_bytes + 500 * chunk + 8e6, py_big


def test_blur_fixed_reproduces_the_histogram_render(tmp_path, monkeypatch):
    rng = np.random.default_rng(10)
    x, y, z = random_locs(2000, rng)
    src = tmp_path / "fixed.parquet"
    write_locs(src, x, y, z, row_group_size=500, sigmas=(rng.uniform(5, 50, 2000),) * 3)  # ignored
    counts = hist(*(np.asarray(v, np.float32) for v in (x, y, z)))
    zc = Z_RANGE[0] + 50.0 * (np.arange(SHAPE[0]) + 0.5)
    seen = {}
    write_png = movie.write_depth_png
    monkeypatch.setattr(
        movie,
        "write_depth_png",
        lambda path, rgb, *a, **k: seen.update(rgb=rgb) or write_png(path, rgb, *a, **k),
    )
    for blur_tiff in (False, True):
        opts = movie.RenderOptions(blur="fixed", blur_sigma_nm=(36.0, 50.0), blur_tiff=blur_tiff)
        movie.render_movie(src, tmp_path / "f.tif", tmp_path / "f.png", options=opts)
        data = tifffile.imread(tmp_path / "f.tif")
        if blur_tiff:  # the 3-D blur of the counts, in TIFF and PNG
            blurred = volume.blur(counts, 36.0, 50.0)
            np.testing.assert_array_equal(data, tiff.to_uint16(blurred)[0])
            expected = png.depth_coded_rgb(blurred, zc, z_range_nm=Z_RANGE)
        else:  # the counts in the TIFF, the PNG blurred laterally
            np.testing.assert_array_equal(data, counts)
            expected = png.depth_coded_rgb(counts, zc, z_range_nm=Z_RANGE, blur_px=1.5)
        np.testing.assert_array_equal(seen["rgb"], expected)
    # the individual blur of the same table is another image
    movie.render_movie(
        src, tmp_path / "i.tif", tmp_path / "i.png", options=movie.RenderOptions(blur_tiff=True)
    )
    assert np.abs(tifffile.imread(tmp_path / "i.tif").astype(float) - tiff.to_uint16(blurred)[0]).max() > 1000


def test_individual_render_movie_tiff_keeps_counts_unless_blur_tiff(tmp_path, monkeypatch):
    rng = np.random.default_rng(11)
    n = 500
    x, y, z = (
        FIELD[0] * rng.uniform(0.1, 0.9, n),
        FIELD[1] * rng.uniform(0.1, 0.9, n),
        rng.uniform(0, 1200, n),
    )
    sigmas = rng.uniform(5, 50, n), rng.uniform(5, 50, n), np.where(np.arange(n) % 5 == 0, np.nan, 40.0)
    src = tmp_path / "ind.parquet"
    write_locs(src, x, y, z, sigmas=sigmas)
    seen = {}
    write_png = movie.write_depth_png
    monkeypatch.setattr(
        movie,
        "write_depth_png",
        lambda path, rgb, *a, **k: (
            seen.update(rgb=rgb, caption=k["caption"]) or write_png(path, rgb, *a, **k)
        ),
    )
    opts = movie.RenderOptions()  # blur individual, blur_tiff false
    out = movie.render_movie(src, tmp_path / "c.tif", tmp_path / "c.png", options=opts)
    assert out.n_fallback == n // 5
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    np.testing.assert_array_equal(data, out.counts)
    assert ij["blur"] == "none" and ij["blur_sigma_nm"] == "0,0"
    zc = out.z_centres_nm
    np.testing.assert_array_equal(seen["rgb"], png.depth_coded_rgb(out.density, zc, z_range_nm=Z_RANGE))
    assert any("≥ 12/25 nm" in line for line in seen["caption"])
    assert any(f"{n // 5} without σ: 24/25 nm" in line for line in seen["caption"])
    opts = movie.RenderOptions(blur_tiff=True)
    out = movie.render_movie(src, tmp_path / "d.tif", tmp_path / "d.png", options=opts)
    with tifffile.TiffFile(tmp_path / "d.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    np.testing.assert_array_equal(data, tiff.to_uint16(out.density)[0])
    assert ij["blur"] == "individual" and ij["min_blur_nm"] == "12,25" and ij["fallback_sigma_nm"] == "24,25"
    assert ij["n_fallback"] == n // 5
    assert data.sum() * ij["counts_per_level"] == pytest.approx(n, rel=1e-3)
