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
from voxloc.render import movie, png, tiff, volume

S = 192.0  # camera pixel (nm)
H_PX, W_PX = 5, 7  # camera-1 field (pixels)
FIELD = (W_PX * S, H_PX * S)  # (width, height) nm
Z_RANGE = (-200.0, 1400.0)
SHAPE = (32, 8 * H_PX, 8 * W_PX)


def hist(x, y, z, **kwargs) -> np.ndarray:
    return volume.histogram_3d(
        np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(z), field_nm=FIELD, z_range_nm=Z_RANGE, **kwargs
    )


def write_locs(path, x, y, z, *, row_group_size=None, metadata=True) -> None:
    n = len(x)
    table = pa.table(
        {
            "frame": pa.array(np.arange(n, dtype=np.int32)),
            "x_nm": pa.array(np.asarray(x, np.float32)),
            "y_nm": pa.array(np.asarray(y, np.float32)),
            "z_nm": pa.array(np.asarray(z, np.float32)),
            "prob": pa.array(np.ones(n, np.float32)),
        }
    )
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
    opts = movie.RenderOptions.from_config({"blur_sigma_nm": [24.0, 25.0], "blur_tiff": True})
    movie.render_movie(src, tmp_path / "b.tif", tmp_path / "b.png", options=opts)
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        data, ij = tif.asarray(), tif.imagej_metadata
    assert ij["blur_sigma_nm"] == "24,25" and np.count_nonzero(data) > 9
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
    with pytest.raises(ValueError, match="unknown render option.*'pixel_nm'"):
        movie.RenderOptions.from_config({"pixel_nm": 12.0})


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
