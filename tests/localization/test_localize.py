"""Localization of a movie in chunks: schema, metadata, idempotence, merge, Picasso export."""

from __future__ import annotations

import json
import threading

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile
import torch
import yaml

from voxloc import config, exports, locs, runtime
from voxloc.errors import InputError
from voxloc.localization import localize
from voxloc.network.model import build_model, save_checkpoint
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, PixelNoise

T, H, W = 10, 16, 20


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("loc")
    torch.manual_seed(0)
    net = build_model({"widths": [4, 4]})
    net.eval()
    meta = {
        "arch": {"n_planes": 4, "widths": [4, 4], "n_large_kernels": 2},
        "grid": {
            "px_size_nm": 192.0,
            "plane_z_nm": [0.0, 400.0, 800.0, 1200.0],
            "z_range_nm": [-200.0, 1400.0],
        },
        "psf": {"a_prime": 5e7, "b": 0.0, "r0_nm": 133.0, "D_nm": 302.0, "A": 7.37e-4, "B": 6.27e-3},
        "normalisation": {"method": "median_background", "scale_photons": 100.0},
        "train": {},
    }
    save_checkpoint(d / "model.pt", net, meta)
    movie = np.random.default_rng(0).integers(90, 400, (T, 4, H, W)).astype(np.uint16)
    tifffile.imwrite(d / "movie.tif", movie, photometric="minisblack", metadata={"axes": "TCYX"})
    return d


def run(files, out, start, stop, **kw):
    return localize.run_chunk(
        [files / "movie.tif"],
        files / "model.pt",
        [np.eye(3)] * 4,
        out,
        name="m",
        start=start,
        stop=stop,
        offset_adu=100,
        adu_per_photon=2,
        # an untrained network on random frames detects nearly every voxel: no fit, unless asked
        options=localize.LocalizeOptions(
            **{"tau": 0.5, "batch_frames": 3, "device": "cpu", "fit": "none", **kw}
        ),
        microscope=Microscope(),
        camera_noise=PixelNoise.from_model(NoiseModel()),
    )


def test_chunk_schema_metadata_and_idempotence(files):
    n = run(files, files / "a.parquet", 0, 4)
    assert n > 0
    run(files, files / "b.parquet", 0, 4)
    a = pd.read_parquet(files / "a.parquet")
    b = pd.read_parquet(files / "b.parquet")
    pd.testing.assert_frame_equal(a, b)  # a chunk localized twice gives the same table
    schema = pq.read_schema(files / "a.parquet")
    assert [f.name for f in schema] == locs.LOC_SCHEMA.names
    assert schema.names[:8] == ["frame", "x_nm", "y_nm", "z_nm", "prob", "plane", "row", "col"]
    assert str(schema.field("frame").type) == "int32" and str(schema.field("x_nm").type) == "float"
    assert a["frame"].between(0, 3).all()
    assert (a["prob"] > 0.5).all()
    # decoded coordinates lie in their voxel: x in [col s, (col + 1) s)
    assert ((a["x_nm"] >= a["col"] * 192.0) & (a["x_nm"] < (a["col"] + 1) * 192.0 + 1e-3)).all()
    meta = locs.read_metadata(files / "a.parquet")
    assert meta["px_size_nm"] == 192.0 and meta["tau"] == 0.5
    assert meta["plane_z_nm"] == [0.0, 400.0, 800.0, 1200.0]
    assert meta["frame_range"] == [0, 4] and meta["n_frames"] == T
    assert len(meta["model_sha256"]) == 64 and meta["sources"] == [str(files / "movie.tif")]


def test_chunks_merge_to_the_whole_movie(files):
    ranges = config.chunk_ranges(T, 4)
    assert ranges == [(0, 4), (4, 8), (8, 10)]
    chunks = []
    for i, (s, e) in enumerate(ranges):
        chunks.append(files / f"chunk-{i}.parquet")
        run(files, chunks[-1], s, e, batch_frames=2)
    # batches of 2 frames fall alike in chunks and in the whole movie: identical numerics
    run(files, files / "whole.parquet", 0, T, batch_frames=2)
    n = locs.merge_chunk_files(chunks, files / "merged.parquet")
    merged = pd.read_parquet(files / "merged.parquet")
    whole = pd.read_parquet(files / "whole.parquet")
    assert n == len(merged) == len(whole)
    pd.testing.assert_frame_equal(merged, whole)
    assert "frame_range" not in locs.read_metadata(files / "merged.parquet")
    # one row group each, not one per batch of 2 frames
    for path in [*chunks, files / "whole.parquet", files / "merged.parquet"]:
        assert pq.ParquetFile(path).metadata.num_row_groups == 1, path


def test_a_chunk_of_many_batches_is_one_row_group_with_the_rows_in_order(files):
    """10 batches of 1 frame: one row group (was 10), rows as the batches gave them."""
    from voxloc.localization.movies import open_movie
    from voxloc.localization.resampling import Resampler
    from voxloc.network.model import load_checkpoint

    n = run(files, files / "groups.parquet", 0, T, batch_frames=1, precision="float32")
    meta = pq.ParquetFile(files / "groups.parquet").metadata
    assert meta.num_row_groups == 1 and meta.num_rows == n > 0
    model = load_checkpoint(files / "model.pt", "cpu", "float32")
    with open_movie(files / "movie.tif", offset_adu=100, adu_per_photon=2) as mov:
        resampler = Resampler([np.eye(3)] * 4, mov.camera_shapes)
        batches = list(localize.iter_localizations(mov, model, resampler, tau=0.5, batch_frames=1))
    assert len(batches) == T
    expected = locs.to_arrow(pd.concat(batches, ignore_index=True)).to_pandas()
    pd.testing.assert_frame_equal(pd.read_parquet(files / "groups.parquet"), expected)


def test_merged_file_is_few_row_groups_of_the_chunks_rows_in_order(files):
    chunks = []
    for i, (s, e) in enumerate(config.chunk_ranges(T, 2)):  # 5 chunks of 2 batches of 1 frame
        chunks.append(files / f"small-{i}.parquet")
        run(files, chunks[-1], s, e, batch_frames=1)
    parts = [pd.read_parquet(c) for c in chunks]
    n_rows = sum(map(len, parts))
    group = max(1, n_rows // 3)  # row groups of a third of the rows: 3 or 4 of them
    n = locs.merge_locs(chunks, files / "merged-small.parquet", {}, row_group_rows=group)
    meta = pq.ParquetFile(files / "merged-small.parquet").metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert n == n_rows and sum(sizes) == n_rows
    assert sizes[:-1] == [group] * (len(sizes) - 1) and 0 < sizes[-1] <= group
    pd.testing.assert_frame_equal(
        pd.read_parquet(files / "merged-small.parquet"), pd.concat(parts, ignore_index=True)
    )


def loc_table(first: int, n: int) -> pa.Table:
    frame = np.arange(first, first + n, dtype=np.int32)
    return locs.to_arrow(pd.DataFrame({c: frame for c in locs.LOC_SCHEMA.names}))


@pytest.mark.parametrize(
    ("sizes", "kw", "groups"),
    [
        ([7] * 100, {"max_rows": 50}, [50] * 14),  # many small batches
        ([120, 3], {"max_rows": 50}, [50, 50, 23]),  # one batch larger than a row group
        ([7] * 10, {"max_rows": 1000, "max_bytes": "20 rows"}, [20, 20, 20, 10]),  # by size
        ([0, 5, 0], {}, [5]),
    ],
)
def test_row_group_writer_buffers_a_bounded_number_of_rows(tmp_path, sizes, kw, groups):
    path, first = tmp_path / "t.parquet", 0
    if kw.get("max_bytes") == "20 rows":
        kw = {**kw, "max_bytes": 20.5 * loc_table(0, 7).nbytes / 7}  # the batches' bytes per row
    with locs.RowGroupWriter(path, locs.LOC_SCHEMA, **kw) as writer:
        for n in sizes:
            writer.write_table(loc_table(first, n))
            first += n
            # memory: never a full row group left in the buffer
            assert writer.buffered_rows < kw.get("max_rows", locs.ROW_GROUP_ROWS)
    meta = pq.ParquetFile(path).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == groups
    np.testing.assert_array_equal(pd.read_parquet(path)["frame"], np.arange(first))


def test_row_group_writer_writes_nothing_more_after_an_error(tmp_path):
    with pytest.raises(RuntimeError), locs.RowGroupWriter(tmp_path / "t.parquet", locs.LOC_SCHEMA) as writer:
        writer.write_table(loc_table(0, 5))
        raise RuntimeError("batch failed")
    assert writer.buffered_rows == 0 and writer.rows_written == 0


def test_picasso_export_round_trips(files):
    run(files, files / "p.parquet", 0, T)
    exports.write_picasso(files / "p.parquet", files / "p.hdf5", files / "p.yaml", lateral_precision_nm=19.2)
    table = pd.read_parquet(files / "p.parquet")
    with h5py.File(files / "p.hdf5") as h5:
        rec = h5["locs"][...]
    assert len(rec) == len(table)
    np.testing.assert_array_equal(rec["frame"], table["frame"])
    # Picasso: pixel centres at integer coordinates
    np.testing.assert_allclose(rec["x"], table["x_nm"] / 192.0 - 0.5, atol=1e-5)
    np.testing.assert_allclose(rec["y"], table["y_nm"] / 192.0 - 0.5, atol=1e-5)
    np.testing.assert_allclose(rec["z"], table["z_nm"])
    np.testing.assert_allclose(rec["lpx"], 0.1)
    info = yaml.safe_load((files / "p.yaml").read_text())
    assert (info["Width"], info["Height"], info["Frames"], info["Pixelsize"]) == (W, H, T, 192.0)


def test_model_for_another_psf_warns():
    meta = {"psf": {"r0_nm": 133.0, "D_nm": 302.0}, "grid": {"plane_z_nm": [0, 400, 800, 1200]}}
    assert (
        localize.check_model_psf(meta, {"r0_nm": 135.0, "D_nm": 300.0}, [0, 395, 810, 1190], source="m") == []
    )
    warnings = localize.check_model_psf(
        meta, {"r0_nm": 150.0, "D_nm": 302.0}, [0, 400, 900, 1200], source="m.pt"
    )
    assert len(warnings) == 2 and all(w.startswith("m.pt: ") for w in warnings)
    # a spline model: the calibration's psf_spline.h5 is compared by SHA-256
    spline = {"psf": {"model": "spline", "file": "s.h5", "sha256": "a" * 64}, "grid": meta["grid"]}
    planes, table2 = [0, 400, 800, 1200], {"r0_nm": 135.0, "D_nm": 300.0}
    assert localize.check_model_psf(spline, table2, planes, source="m", spline_sha256="a" * 64) == []
    (warning,) = localize.check_model_psf(spline, table2, planes, source="m", spline_sha256="b" * 64)
    assert "spline PSF of another calibration" in warning and "s.h5" in warning


def test_prefetch_gives_the_same_localizations(files):
    n0 = run(files, files / "p0.parquet", 0, T, prefetch=0)
    n2 = run(files, files / "p2.parquet", 0, T, prefetch=2)
    assert n0 == n2 > 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(files / "p0.parquet"), pd.read_parquet(files / "p2.parquet")
    )


def test_precision_is_recorded(files):
    run(files, files / "f32.parquet", 0, 4, precision="float32")
    assert locs.read_metadata(files / "f32.parquet")["precision"] == "float32"


def test_prefetched_order_errors_and_early_exit():
    assert list(runtime.prefetched(iter(range(50)), 2)) == list(range(50))
    assert list(runtime.prefetched(iter(range(5)), 0)) == list(range(5))

    def failing():
        yield 1
        raise InputError("movie.tif: frame 1 holds NaN or infinite values")

    with pytest.raises(InputError, match="frame 1 holds NaN"):
        list(runtime.prefetched(failing(), 2))

    before = {t for t in threading.enumerate() if t.name == "voxloc-prefetch"}
    it = runtime.prefetched(iter(range(1000)), 2)
    assert next(it) == 0
    it.close()  # leaving the loop early stops the producer thread
    assert not [t for t in threading.enumerate() if t.name == "voxloc-prefetch" and t not in before]


def test_bad_frame_read_ahead_leaves_no_chunk(files):
    movie = np.random.default_rng(1).normal(200, 10, (6, 4, H, W)).astype(np.float32)
    movie[4, 2, 3, 3] = np.nan
    tifffile.imwrite(files / "nan.tif", movie, photometric="minisblack", metadata={"axes": "TCYX"})
    with pytest.raises(InputError, match="frame 4 holds NaN"):
        localize.run_chunk(
            [files / "nan.tif"],
            files / "model.pt",
            [np.eye(3)] * 4,
            files / "nan.parquet",
            name="m",
            start=0,
            stop=6,
            offset_adu=100,
            adu_per_photon=2,
            options=localize.LocalizeOptions(batch_frames=2, device="cpu", prefetch=2, fit="none"),
        )
    assert not list(files.glob("nan*.parquet")) and not list(files.glob(".*tmp*"))


def test_device_input_path_gives_the_same_localizations(files):
    """Registration and normalisation in torch (the GPU path, run here on the CPU) find the
    same molecules as the numpy path, with a registration that resamples every camera."""
    from voxloc.localization.movies import open_movie
    from voxloc.localization.resampling import Resampler
    from voxloc.network.model import load_checkpoint
    from voxloc.physics.cameras import affine_matrix

    model = load_checkpoint(files / "model.pt", "cpu", "float32")
    m = affine_matrix(height=H, width=W, rotation_deg=2, shift_px=(0.4, -0.3))
    tables = {}
    with open_movie(files / "movie.tif", offset_adu=100, adu_per_photon=2) as mov:
        resampler = Resampler([np.eye(3), m, m, m], mov.camera_shapes)
        for on_device in (False, True):
            tables[on_device] = localize.localize_frames(
                mov, model, resampler, tau=0.5, batch_frames=4, device_input=on_device
            )
    host, dev = tables[False], tables[True]
    assert len(host) > 20
    keys = ["frame", "plane", "row", "col"]
    both = host.merge(dev, on=keys, suffixes=("", "_dev"))
    # float32 rounding may flip a voxel whose ĉ is within ~1e-6 of τ, no more
    assert len(both) >= 0.99 * max(len(host), len(dev))
    for c in ("x_nm", "y_nm", "z_nm", "prob"):
        np.testing.assert_allclose(both[c], both[f"{c}_dev"], rtol=1e-4, atol=0.05)


def test_options_from_the_config_section():
    cfg = {"tau": 0.9, "chunk_frames": 100, "batch_frames": "auto", "device": "cpu", "gpu": False}
    cfg |= {"precision": "float32", "prefetch": 0, "camera": {}, "model": None}
    opts = localize.LocalizeOptions.from_config(cfg, threads=2)
    assert opts == localize.LocalizeOptions(0.9, "auto", "cpu", "float32", 0, 2)
    assert localize.LocalizeOptions.from_config({}) == localize.LocalizeOptions()


def test_metadata_round_trips_strings_as_they_are_and_the_rest_as_json(tmp_path):
    values = {"movie": "m1", "n": 3, "s": 192.0, "z": [0.0, 400.0], "on": True, "list": json.dumps([1, 2])}
    raw = locs.encode_metadata({**values, "i": np.int64(7)})
    assert raw[b"movie"] == b"m1" and raw[b"on"] == b"true" and raw[b"list"] == b"[1, 2]"
    locs.write_parquet(tmp_path / "t.parquet", pd.DataFrame({"a": [1]}), **values)
    meta = locs.read_metadata(tmp_path / "t.parquet")
    assert meta == {
        "voxloc_version": meta["voxloc_version"],
        "voxloc_source": meta["voxloc_source"],
        **values,
        "list": [1, 2],
    }
    text = locs.read_metadata(tmp_path / "t.parquet", raw=True)
    assert text["s"] == "192.0" and text["z"] == "[0.0, 400.0]" and "pandas" not in text
    with pytest.raises(InputError, match="t.parquet: metadata movie='m1' is not valid JSON"):
        locs.metadata_json(text, "movie", tmp_path / "t.parquet")


def test_batch_frames_auto_depends_on_the_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert localize.resolve_batch_frames("auto", cpu) == 8
    assert localize.resolve_batch_frames("auto", cuda) == 64
    assert localize.resolve_batch_frames(5, cuda) == 5
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        localize.resolve_batch_frames(0, cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_gpu_finds_what_the_cpu_finds(files, precision):
    """On a GPU (device input, float16 autocast or TF32 float32) the localizations of the CPU
    float32 path: the same voxels up to a few near τ, positions within rounding."""
    run(files, files / "cpu.parquet", 0, T, precision="float32")
    run(files, files / f"gpu-{precision}.parquet", 0, T, device="cuda", precision=precision)
    cpu = pd.read_parquet(files / "cpu.parquet")
    gpu = pd.read_parquet(files / f"gpu-{precision}.parquet")
    assert locs.read_metadata(files / f"gpu-{precision}.parquet")["precision"] == precision
    both = cpu.merge(gpu, on=["frame", "plane", "row", "col"], suffixes=("", "_gpu"))
    assert len(cpu) > 20 and len(both) >= 0.97 * max(len(cpu), len(gpu))
    for c in ("x_nm", "y_nm", "z_nm"):
        np.testing.assert_allclose(both[c], both[f"{c}_gpu"], atol=2.0)
