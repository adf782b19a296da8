"""End to end through the Snakemake CLI on a tiny config in a temporary directory.

One module-scoped run of the default target (demo data -> calibration -> simulation ->
training -> localization -> render -> evaluation, tests/workflow/config.yaml); then every
output is parsed, one chunk is rebuilt and compared, and bad inputs are run in copies of
the finished working directory (so nothing is trained twice).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import tifffile
import yaml
from PIL import Image
from snakemake.utils import update_config

import voxloc
from voxloc import config as vconfig
from voxloc.calibration import files
from voxloc.evaluation.depth import CRLB_DEPTH_COLUMNS, DEPTH_COLUMNS
from voxloc.evaluation.evaluate import NET_KEYS
from voxloc.evaluation.matching import Summary
from voxloc.evaluation.uncertainty import SUMMARY_KEYS as COVERAGE_KEYS
from voxloc.locs import FIT_FLAGS, LOC_SCHEMA, read_metadata
from voxloc.network.model import load_checkpoint
from voxloc.network.validation import LOG_COLUMNS
from voxloc.simulation import shards

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "workflow" / "config.yaml"
MOVIES = ("demo1", "demo2")
N_FRAMES = 12  # demo.movies.n_frames of the tiny config
CHUNKS = 2  # localize.chunk_frames 6
WIDTH = HEIGHT = 64  # demo.frame_size
PX_NM = 192.0
SOURCES = {
    "demo1": [f"resources/demo/demo1/camera{k}.tif" for k in range(1, 5)],
    "demo2": ["resources/demo/demo2/movie.tif"],
}
CRLB_COLUMNS = [f"crlb_{a}_nm" for a in ("x", "y", "z", "lateral")]
CRLB_COLUMNS += [f"rmse_to_crlb_{a}" for a in ("x", "y", "z", "lateral")] + ["crlb_unbounded", "crlb_source"]
METRIC_COLUMNS = [
    "movie",
    *Summary.__dataclass_fields__,
    *CRLB_COLUMNS,
    *NET_KEYS.values(),
    *[f"rmse_to_crlb_{a}_net" for a in ("x", "y", "z", "lateral")],
    "tp_fitted",
    *COVERAGE_KEYS,
    "lateral_tolerance_nm",
    "axial_tolerance_nm",
]
SHEET_COLUMNS = "movie path plane1 plane2 plane3 plane4 ground_truth offset_adu adu_per_photon".split()

pytestmark = pytest.mark.workflow


def snakemake(
    workdir: Path,
    *args: str,
    targets: Sequence[str] = (),
    configfiles: Sequence[Path] = (TINY,),
) -> subprocess.CompletedProcess:
    # targets first: --configfile takes one or more values and would swallow them
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", "2", *args, "--configfile", *map(str, configfiles)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def console(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def job_counts(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """The first 'Job stats' table of Snakemake's output: rule -> number of jobs."""
    m = re.search(r"Job stats:\njob\s+count\n[-\s]+\n(.*?)\ntotal\s", console(proc), re.S)
    assert m, console(proc)[-3000:]
    return {rule: int(n) for rule, n in (line.split() for line in m.group(1).splitlines())}


def copy_workdir(src: Path, dst: Path, drop: Sequence[str] = ()) -> Path:
    """Copy a finished working directory with its timestamps and .snakemake metadata, so that
    Snakemake sees its results as up to date; then delete the paths in ``drop``."""
    shutil.copytree(src, dst, symlinks=True)
    for rel in drop:
        shutil.rmtree(dst / rel, ignore_errors=True)
    return dst


def write_sheet(path: Path, rows: Sequence[dict[str, str]]) -> None:
    lines = ["\t".join(SHEET_COLUMNS)]
    lines += ["\t".join(row.get(c, "") for c in SHEET_COLUMNS) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def temp_leftovers(workdir: Path) -> list[Path]:
    return [p for d in ("results", "resources") for p in (workdir / d).rglob(".*.tmp*")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    (workdir / "config").mkdir()
    shutil.copy(ROOT / "config" / "movies.tsv", workdir / "config" / "movies.tsv")
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


# ------------------------------------------------------------------- outputs of rule all


def test_snakemake_summary_lists_every_output_up_to_date(run):
    proc = snakemake(run, "--summary")
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(io.StringIO(proc.stdout), sep="\t")
    assert (table["status"] == "ok").all(), table[table["status"] != "ok"]
    assert (table["plan"] == "no update").all(), table[table["plan"] != "no update"]
    expected = {
        "results/calibration/affine.yaml",
        "results/calibration/affine_qc.png",
        "results/calibration/psf.yaml",
        "results/calibration/psf_qc.png",
        "results/models/quick/model.pt",
        "results/models/quick/log.csv",
        "results/evaluation/summary.tsv",
        "results/run_summary.tsv",
    }
    for movie in MOVIES:
        expected |= {f"results/localizations/{movie}{ext}" for ext in (".parquet", ".hdf5", ".yaml", ".csv")}
        expected |= {f"results/render/{movie}{ext}" for ext in (".tif", ".png")}
        expected |= {f"results/evaluation/{movie}.csv", f"results/movies/{movie}/info.yaml"}
        expected |= {f"results/evaluation/{movie}_depth{ext}" for ext in (".tsv", ".png")}
        expected |= {f"results/evaluation/{movie}_sigma{ext}" for ext in (".tsv", ".png")}
    assert expected <= set(table["output_file"])
    for path in table["output_file"]:
        assert (run / path).is_file(), path
    assert not temp_leftovers(run)


def test_shards_exist_and_parse(run):
    for dataset, n in (("train", 2), ("val", 1)):
        for i in range(n):
            path = run / f"results/simulation/{dataset}/shard-{i:04d}.h5"
            settings = shards.read_settings(path)
            assert (settings.grid.height, settings.grid.width) == (24, 20)
            sim = shards.read_shard(path)
            assert sim.frames.shape == (30 if dataset == "train" else 10, 4, 24, 20)
            assert sim.frames.dtype == np.float32
            assert sim.drift_nm.shape == (sim.frames.shape[0], 4, 2)
            assert list(sim.emitters.columns) == ["frame", "x_nm", "y_nm", "z_nm", "photons"]
            with h5py.File(path) as h5:
                assert h5.attrs["dataset"] == dataset
                assert h5.attrs["shard_index"] == i
            assert (run / f"logs/simulate/{dataset}/shard-{i:04d}.log").exists()
            assert (run / f"benchmarks/simulate/{dataset}/shard-{i:04d}.tsv").exists()
    a = shards.read_shard(run / "results/simulation/train/shard-0000.h5").frames
    b = shards.read_shard(run / "results/simulation/train/shard-0001.h5").frames
    assert not np.array_equal(a, b)


def test_demo_outputs_exist_and_parse(run):
    demo = run / "resources/demo"
    for k in range(1, 5):
        beads = tifffile.imread(demo / f"beads/camera{k}.tif")
        assert beads.shape == (14, HEIGHT, WIDTH) and beads.dtype == np.uint16
        cam = tifffile.imread(demo / f"demo1/camera{k}.tif")
        assert cam.shape == (N_FRAMES, HEIGHT, WIDTH) and cam.dtype == np.uint16
    stack = tifffile.imread(demo / "demo2/movie.tif")
    assert stack.shape == (N_FRAMES, 4, HEIGHT, WIDTH) and stack.dtype == np.uint16
    for movie in MOVIES:
        gt = pd.read_parquet(demo / f"{movie}/ground_truth.parquet")
        assert list(gt.columns) == ["frame", "x_nm", "y_nm", "z_nm", "photons"]
        assert gt["frame"].dtype == np.int32
        assert gt["frame"].between(0, N_FRAMES - 1).all()
    assert (demo / "beads/truth.yaml").exists()


def assert_png(path: Path, mode: str | None = None) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.width > 0 and im.height > 0
        if mode is not None:
            assert im.mode == mode, (path, im.mode)


def test_calibration_outputs_parse(run):
    cal = run / "results/calibration"
    matrices = files.load_affine(cal / "affine.yaml")
    assert len(matrices) == 4
    np.testing.assert_allclose(matrices[0], np.eye(3))
    for m in matrices:
        assert m.shape == (3, 3) and np.isfinite(m).all()
    psf, planes = files.load_psf(cal / "psf.yaml")
    assert psf.r0_nm > 0 and psf.D_nm > 0
    assert len(planes) == 4 and planes[0] == 0 and np.all(np.diff(planes) > 0)
    for name in ("affine_qc.png", "psf_qc.png"):
        assert_png(cal / name)
    for name in ("affine", "psf"):
        assert (run / f"logs/calibration/{name}.log").exists()


def test_model_loads_and_log_has_one_row_per_epoch(run):
    model_dir = run / "results/models/quick"
    model = load_checkpoint(model_dir / "model.pt", "cpu")
    assert model.meta["arch"]["widths"] == [4, 4]
    assert model.meta["epochs_done"] == 1
    # trained for the bead calibration's planes (psf.source: calibration)
    _, planes = files.load_psf(run / "results/calibration/psf.yaml")
    np.testing.assert_allclose(model.meta["grid"]["plane_z_nm"], planes)
    log = pd.read_csv(model_dir / "log.csv")
    assert list(log.columns) == list(LOG_COLUMNS)
    assert log["epoch"].tolist() == [1]
    assert log[["train_loss", "val_loss"]].notna().all().all()
    assert log["frames_seen"].iloc[0] == 60  # one pass over the 2 x 30 training frames


def read_schema_fields(path: Path) -> list[tuple[str, object]]:
    return [(f.name, f.type) for f in pq.read_schema(path)]


@pytest.mark.parametrize("movie", MOVIES)
def test_localizations_parquet_schema_and_metadata(run, movie):
    path = run / f"results/localizations/{movie}.parquet"
    assert read_schema_fields(path) == [(f.name, f.type) for f in LOC_SCHEMA]
    meta = read_metadata(path)
    documented = {"px_size_nm", "plane_z_nm", "tau", "model_sha256", "voxloc_version", "sources"}
    documented |= {"n_frames", "width_px", "height_px"}
    assert documented <= set(meta), sorted(documented - set(meta))
    assert "frame_range" not in meta  # a chunk's key, dropped by the merge
    assert meta["px_size_nm"] == PX_NM
    _, planes = files.load_psf(run / "results/calibration/psf.yaml")
    np.testing.assert_allclose(meta["plane_z_nm"], planes)
    assert meta["tau"] == 0.5
    model_bytes = (run / "results/models/quick/model.pt").read_bytes()
    assert meta["model_sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert meta["voxloc_version"] == voxloc.__version__
    assert meta["sources"] == SOURCES[movie]
    assert (meta["n_frames"], meta["width_px"], meta["height_px"]) == (N_FRAMES, WIDTH, HEIGHT)

    table = pd.read_parquet(path)
    assert len(table) > 0
    assert table["frame"].between(0, N_FRAMES - 1).all()
    assert (table["prob"] > meta["tau"]).all()
    assert table["plane"].between(0, 3).all()
    assert table["row"].between(0, HEIGHT - 1).all() and table["col"].between(0, WIDTH - 1).all()
    assert table["x_nm"].between(0, WIDTH * PX_NM).all() and table["y_nm"].between(0, HEIGHT * PX_NM).all()
    assert np.isfinite(table[["x_nm", "y_nm", "z_nm"]].to_numpy()).all()

    # the merged table is the chunks in order; each chunk holds its own frame range
    chunk_dir = run / f"results/localizations/{movie}"
    chunks = sorted(chunk_dir.glob("chunk-*.parquet"))
    assert [p.name for p in chunks] == [f"chunk-{c:04d}.parquet" for c in range(CHUNKS)]
    parts = []
    for c, chunk in enumerate(chunks):
        assert read_schema_fields(chunk) == read_schema_fields(path)
        lo, hi = read_metadata(chunk)["frame_range"]
        assert (lo, hi) == (6 * c, 6 * (c + 1))
        part = pd.read_parquet(chunk)
        assert len(part) > 0 and part["frame"].between(lo, hi - 1).all()
        parts.append(part)
    pd.testing.assert_frame_equal(table, pd.concat(parts, ignore_index=True))


@pytest.mark.parametrize("movie", MOVIES)
def test_picasso_export_round_trips(run, movie):
    table = pd.read_parquet(run / f"results/localizations/{movie}.parquet")
    with h5py.File(run / f"results/localizations/{movie}.hdf5", "r") as h5:
        locs = h5["locs"][...]
    assert list(locs.dtype.names) == ["frame", "x", "y", "photons", "bg", "lpx", "lpy", "z", "lpz", "prob"]
    assert len(locs) == len(table)
    np.testing.assert_array_equal(locs["frame"], table["frame"])
    # Picasso: pixel centres at integer coordinates, x_px = x_nm / s - 0.5; z stays in nm
    np.testing.assert_allclose(locs["x"], table["x_nm"] / PX_NM - 0.5, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(locs["y"], table["y_nm"] / PX_NM - 0.5, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose((locs["x"] + 0.5) * PX_NM, table["x_nm"], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose((locs["y"] + 0.5) * PX_NM, table["y_nm"], rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(locs["z"], table["z_nm"])
    np.testing.assert_array_equal(locs["prob"], table["prob"])
    # the fit's values (localize.fit: mle); stand-ins (nominal 25 nm) where there is none
    no_fit = ((table["fit_flags"] & 32) != 0).to_numpy()
    for field, column, scale, stand_in in (
        ("lpx", "sigma_x_nm", PX_NM, 25.0 / PX_NM),
        ("lpy", "sigma_y_nm", PX_NM, 25.0 / PX_NM),
        ("lpz", "sigma_z_nm", 1.0, 50.0),
        ("photons", "photons", 1.0, 0.0),
    ):
        value = table[column].to_numpy(np.float64) / scale
        np.testing.assert_allclose(
            locs[field], np.where(no_fit | ~np.isfinite(value), stand_in, value), rtol=1e-6
        )
    assert np.isfinite(locs["lpx"]).all() and (locs["lpx"] > 0).all()
    info = yaml.safe_load((run / f"results/localizations/{movie}.yaml").read_text())
    assert info["Width"] == WIDTH and info["Height"] == HEIGHT
    assert info["Frames"] == N_FRAMES and info["Pixelsize"] == PX_NM


@pytest.mark.parametrize("movie", MOVIES)
def test_render_tiff_and_png(run, movie):
    meta = read_metadata(run / f"results/localizations/{movie}.parquet")
    n_rows = pq.ParquetFile(run / f"results/localizations/{movie}.parquet").metadata.num_rows
    with tifffile.TiffFile(run / f"results/render/{movie}.tif") as tif:
        assert tif.is_imagej
        series = tif.series[0]
        assert series.axes == "ZYX"
        volume = series.asarray()
        ij = tif.imagej_metadata
    assert volume.dtype == np.uint16
    z0, z1 = meta["z_range_nm"]
    # 24 nm pixels: 8x the 192 nm camera pixels; 50 nm z bins over the model's z range
    assert volume.shape == (math.ceil((z1 - z0) / 50.0), HEIGHT * 8, WIDTH * 8)
    assert ij["counts_per_level"] == 1.0  # counts stored as they are
    assert ij["n_localizations"] == n_rows
    assert int(volume.sum(dtype=np.int64)) == n_rows - ij["n_dropped"] > 0
    assert_png(run / f"results/render/{movie}.png", mode="RGB")


def test_evaluation_tables(run):
    for movie in MOVIES:
        row = pd.read_csv(run / f"results/evaluation/{movie}.csv")
        assert list(row.columns) == METRIC_COLUMNS
        assert len(row) == 1 and row["movie"].iloc[0] == movie
        n_est = pq.ParquetFile(run / f"results/localizations/{movie}.parquet").metadata.num_rows
        n_true = len(pd.read_parquet(run / f"resources/demo/{movie}/ground_truth.parquet"))
        assert (row["n_est"].iloc[0], row["n_true"].iloc[0]) == (n_est, n_true)
        assert row["tp"].iloc[0] + row["fp"].iloc[0] == n_est
        assert 0 <= row["jaccard"].iloc[0] <= 1
        # the bound is for the demo microscope's own physics (stored in its ground truth)
        assert row["crlb_source"].iloc[0] == "ground truth"
        assert 0 < row["crlb_x_nm"].iloc[0] < row["rmse_x_nm"].iloc[0]
        molecules = pd.read_parquet(run / f"results/evaluation/{movie}.molecules.parquet")
        assert len(molecules) == n_true and molecules["matched"].sum() == row["tp"].iloc[0]
        # per 100 nm bin of true z, from the same matched pairs and bounds
        depth = pd.read_csv(run / f"results/evaluation/{movie}_depth.tsv", sep="\t")
        assert list(depth.columns) == [*DEPTH_COLUMNS, *CRLB_DEPTH_COLUMNS]
        assert (depth["n_true"].sum(), depth["n_matched"].sum()) == (n_true, row["tp"].iloc[0])
        assert np.allclose(np.diff(depth["z_nm"]), 100.0)
        assert depth["z_lo_nm"].iloc[0] <= molecules["z_nm"].min() <= depth["z_hi_nm"].iloc[0]
        found = depth[depth["n_matched"] > 0]
        bias_z = (found["bias_z_nm"] * found["n_matched"]).sum() / found["n_matched"].sum()
        assert bias_z == pytest.approx(row["bias_z_nm"].iloc[0], abs=0.01)
        assert_png(run / f"results/evaluation/{movie}_depth.png")
        assert_png(run / f"results/evaluation/{movie}_sigma.png")
    summary = pd.read_csv(run / "results/evaluation/summary.tsv", sep="\t")
    assert list(summary.columns) == METRIC_COLUMNS
    assert summary["movie"].tolist() == list(MOVIES)


# ------------------------------------------------------------------------ reruns


def test_rebuilding_a_deleted_chunk_is_idempotent(run):
    chunk = "results/localizations/demo1/chunk-0001.parquet"
    old_chunk = pd.read_parquet(run / chunk)
    old_meta = read_metadata(run / chunk)
    old_merged = pd.read_parquet(run / "results/localizations/demo1.parquet")
    (run / chunk).unlink()
    # Snakemake does not rebuild a deleted intermediate file while the products built from
    # it are up to date: ask for the chunk, and for everything that depends on it
    dry = snakemake(run, "-n", targets=[chunk, "all"])
    assert dry.returncode == 0, console(dry)[-3000:]
    expected = {
        "localize_chunk": 1,
        "merge_localizations": 1,
        "render_movie": 1,
        "evaluate_movie": 1,
        "evaluation_summary": 1,
        "run_summary": 1,
        "all": 1,
    }
    assert job_counts(dry) == expected
    proc = snakemake(run, targets=[chunk, "all"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert job_counts(proc) == expected
    pd.testing.assert_frame_equal(pd.read_parquet(run / chunk), old_chunk)
    new_meta = read_metadata(run / chunk)
    assert new_meta == old_meta
    pd.testing.assert_frame_equal(pd.read_parquet(run / "results/localizations/demo1.parquet"), old_merged)


def test_run_summary_lists_every_movie(run):
    table = pd.read_csv(run / "results/run_summary.tsv", sep="\t")
    assert table["movie"].tolist() == list(MOVIES)
    for row in table.itertuples():
        parquet = run / f"results/localizations/{row.movie}.parquet"
        assert row.n_frames == N_FRAMES and row.n_chunks == CHUNKS
        assert row.n_localizations == pq.ParquetFile(parquet).metadata.num_rows
        bench = [
            pd.read_csv(p, sep="\t") for p in (run / f"benchmarks/localize/{row.movie}").glob("chunk-*.tsv")
        ]
        assert len(bench) == CHUNKS
        assert row.localize_job_s == pytest.approx(sum(b["s"].iloc[0] for b in bench), rel=1e-3)
        assert row.frames_per_job_s == pytest.approx(N_FRAMES / row.localize_job_s, rel=1e-3)
        assert row.localizations == f"results/localizations/{row.movie}.parquet"
        assert row.evaluation == f"results/evaluation/{row.movie}.csv"
        for column in ("localizations", "picasso", "thunderstorm", "render_tif", "render_png", "evaluation"):
            assert (run / getattr(row, column)).is_file()
        assert (run / row.logs / "merge.log").is_file()


def test_new_sheet_row_runs_only_the_new_movie(run, tmp_path):
    """A rerun after a row is added plans the new movie's jobs and the tables of all movies,
    nothing of the movies already done (dry run: the new movie's chunks appear only once its
    header checkpoint has run)."""
    sheet = pd.read_csv(ROOT / "config" / "movies.tsv", sep="\t", dtype=str, keep_default_na=False)
    rows = sheet.to_dict("records")
    rows.append({**rows[1], "movie": "demo3"})  # demo2's movie again, under a new name
    write_sheet(tmp_path / "movies.tsv", rows)
    more = tmp_path / "more.yaml"
    more.write_text(f"samples: {tmp_path / 'movies.tsv'}\n")
    dry = snakemake(run, "-n", configfiles=[TINY, more])
    assert dry.returncode == 0, console(dry)[-3000:]
    assert job_counts(dry) == {
        "movie_info": 1,
        "merge_localizations": 1,
        "render_movie": 1,
        "evaluate_movie": 1,
        "evaluation_summary": 1,
        "run_summary": 1,
        "all": 1,
    }
    planned = set(re.findall(r"^\s+output: (.*)$", console(dry), re.M))
    for movie in MOVIES:
        assert not [line for line in planned if f"/{movie}." in line or f"/{movie}/" in line], planned


def test_a_given_model_is_used_without_simulating_or_training(run, tmp_path):
    """localize.model: a model trained in another run localizes the movies; nothing is
    simulated or trained (dry run in a fresh working directory)."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "movies.tsv", tmp_path / "config" / "movies.tsv")
    model = tmp_path / "scope-a.pt"
    shutil.copy(run / "results/models/quick/model.pt", model)
    reuse = tmp_path / "reuse.yaml"
    reuse.write_text(f"localize:\n  model: {model}\n")
    dry = snakemake(tmp_path, "-n", configfiles=[TINY, reuse])
    assert dry.returncode == 0, console(dry)[-3000:]
    ran = job_counts(dry)
    assert ran["movie_info"] == len(MOVIES) and ran["fit_psf"] == 1
    for rule in ("simulate_shard", "train_model", "evaluate_voxels", "training_curves"):
        assert rule not in ran, ran
    assert "results/models/" not in console(dry)


def test_gpu_flags_request_one_gpu_for_training_and_each_chunk(run, tmp_path):
    """train.gpu / localize.gpu become the SLURM executor's gpu resource on their rules only."""
    jobs = {}
    for flag in ("false", "true"):
        cfg = tmp_path / f"gpu-{flag}.yaml"
        cfg.write_text(f"train:\n  gpu: {flag}\nlocalize:\n  gpu: {flag}\n")
        chunk = "results/localizations/demo2/chunk-0000.parquet"
        dry = snakemake(run, "-n", "--forceall", targets=[chunk], configfiles=[TINY, cfg])
        assert dry.returncode == 0, console(dry)[-3000:]
        blocks = re.findall(r"^rule (\w+):\n((?:    .*\n)+)", console(dry), re.M)
        jobs[flag] = {rule: re.search(r"resources: (.*)", body).group(1) for rule, body in blocks}
    assert "gpu=1" in jobs["true"]["train_model"] and "gpu=1" in jobs["true"]["localize_chunk"]
    assert "gpu=1" not in jobs["true"]["fit_psf"]
    assert not any("gpu=1" in res for res in jobs["false"].values())


def test_rerun_has_nothing_to_do(run):
    proc = snakemake(run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in console(proc)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "simulation:\n  noise: loud\n",
            "simulation.noise: 'loud' is not one of ['paper', 'physical', 'none']",
        ),
        ("train:\n  val_dataset: nope\n", "train.val_dataset: 'nope' is not one of simulation.datasets"),
    ],
)
def test_bad_config_stops_with_one_line_naming_the_key(run, tmp_path, text, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = snakemake(run, "-n", configfiles=[TINY, bad])
    assert proc.returncode != 0
    lines = [ln for ln in console(proc).splitlines() if ln.startswith("voxloc: ")]
    assert len(lines) == 1
    assert str(bad) in lines[0] and expected in lines[0]


# --------------------------------------------------------------------- bad inputs

#: bad movie -> (the file its error must name, the problem its error must state)
BAD_MOVIES = {
    "planes3": ("data/planes3.tif", "expected 4 planes per frame"),
    "mismatch": ("data/mismatch_camera1.tif", "frame counts differ across cameras"),
    "truncated": ("data/truncated.tif", "truncated TIFF"),
    "nan": ("data/nan.tif", "frame 8 holds NaN"),
    "empty": ("data/empty.tif", "no frame"),
}
#: outputs of the good movies' localization downstream, rebuilt in the bad batch
RELOCALIZE = ["results/localizations", "results/render", "results/evaluation", "results/movies"]


def write_bad_movies(data: Path) -> list[dict[str, str]]:
    """The bad movies of BAD_MOVIES under ``data``; their sample-sheet rows."""
    data.mkdir()
    rng = np.random.default_rng(7)

    def frames(*shape):
        return rng.integers(100, 200, shape).astype(np.uint16)

    def write(name, array):
        tifffile.imwrite(data / name, array, photometric="minisblack", metadata={"axes": "TCYX"})

    write("planes3.tif", frames(5, 3, HEIGHT, WIDTH))  # T x 3 x H x W
    for k in range(1, 5):  # camera 4 lost two frames
        tifffile.imwrite(
            data / f"mismatch_camera{k}.tif",
            frames(N_FRAMES if k < 4 else N_FRAMES - 2, HEIGHT, WIDTH),
            photometric="minisblack",
        )
    write("truncated.tif", frames(N_FRAMES, 4, HEIGHT, WIDTH))
    whole = (data / "truncated.tif").read_bytes()
    (data / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    nan = frames(N_FRAMES, 4, HEIGHT, WIDTH).astype(np.float32)
    nan[8, 2, 5, 5] = np.nan  # frame 8: the second chunk; the first one succeeds
    write("nan.tif", nan)
    with warnings.catch_warnings():  # tifffile: "writing zero-size array to nonconformant TIFF"
        warnings.simplefilter("ignore", UserWarning)
        write("empty.tif", np.zeros((0, 4, HEIGHT, WIDTH), np.uint16))
    camera = {"offset_adu": "100", "adu_per_photon": "4"}
    rows = [{"movie": m, "path": f"data/{m}.tif", **camera} for m in ("planes3", "truncated", "nan", "empty")]
    planes = {f"plane{k}": f"data/mismatch_camera{k}.tif" for k in range(1, 5)}
    rows.append({"movie": "mismatch", **planes, **camera})
    return rows


@pytest.fixture(scope="module")
def bad_run(run, tmp_path_factory):
    """The sheet's good movies plus the bad ones, localized in one --keep-going batch,
    reusing the trained model and calibration of ``run``."""
    workdir = copy_workdir(run, tmp_path_factory.mktemp("bad") / "wd", drop=[*RELOCALIZE, "logs/localize"])
    bad_rows = write_bad_movies(workdir / "data")
    sheet = pd.read_csv(ROOT / "config" / "movies.tsv", sep="\t", dtype=str, keep_default_na=False)
    write_sheet(workdir / "config/movies.tsv", sheet.to_dict("records") + bad_rows)
    proc = snakemake(workdir, "--keep-going", "--rerun-triggers", "mtime")
    return workdir, proc


def test_bad_batch_fails_but_reuses_the_model(bad_run):
    workdir, proc = bad_run
    assert proc.returncode != 0
    ran = job_counts(proc)
    for rule in ("demo_beads", "calibrate_affine", "fit_psf", "simulate_shard", "train_model"):
        assert rule not in ran, ran
    assert ran["movie_info"] == len(MOVIES) + len(BAD_MOVIES)


def test_good_movies_complete_beside_bad_ones(bad_run):
    workdir, _ = bad_run
    for movie in MOVIES:
        for ext in (".parquet", ".hdf5", ".yaml", ".csv"):
            assert (workdir / f"results/localizations/{movie}{ext}").is_file()
        for ext in (".tif", ".png"):
            assert (workdir / f"results/render/{movie}{ext}").is_file()
        assert (workdir / f"results/evaluation/{movie}.csv").is_file()
    assert (workdir / "results/evaluation/summary.tsv").is_file()


def error_lines(proc: subprocess.CompletedProcess, path: str) -> list[str]:
    return [ln for ln in console(proc).splitlines() if ln.startswith("voxloc: ") and path in ln]


@pytest.mark.parametrize("movie", list(BAD_MOVIES))
def test_bad_movie_gives_one_line_naming_file_and_problem(bad_run, movie):
    workdir, proc = bad_run
    path, problem = BAD_MOVIES[movie]
    lines = error_lines(proc, path)
    assert len(lines) == 1, console(proc)[-4000:]
    assert problem in lines[0], lines[0]


@pytest.mark.parametrize("movie", list(BAD_MOVIES))
def test_bad_movie_error_names_the_file_on_console_and_in_log(bad_run, movie):
    workdir, proc = bad_run
    path, _ = BAD_MOVIES[movie]
    lines = error_lines(proc, path)
    assert len(lines) == 1, console(proc)[-4000:]
    message = lines[0].removeprefix("voxloc: ")
    assert message.startswith(path)  # relative to the working directory, as in the sheet
    logs = [p.read_text() for p in (workdir / f"logs/localize/{movie}").glob("*.log")]
    failed = [text for text in logs if message in text]
    assert len(failed) == 1, logs
    assert "Traceback" not in failed[0]


@pytest.mark.parametrize("movie", list(BAD_MOVIES))
def test_bad_movie_leaves_no_output(bad_run, movie):
    workdir, _ = bad_run
    for ext in (".parquet", ".hdf5", ".yaml", ".csv"):
        assert not (workdir / f"results/localizations/{movie}{ext}").exists()
    assert not list((workdir / "results/render").glob(f"{movie}.*"))
    assert not (workdir / f"results/evaluation/{movie}.csv").exists()
    chunks = sorted(p.name for p in (workdir / f"results/localizations/{movie}").glob("*"))
    if movie == "nan":  # the first chunk is good and kept; the bad one is not written
        assert chunks == ["chunk-0000.parquet"]
        meta = read_metadata(workdir / "results/localizations/nan/chunk-0000.parquet")
        assert meta["frame_range"] == [0, 6]
    else:  # the header check failed: no chunk was started
        assert not (workdir / f"results/movies/{movie}/info.yaml").exists()
        assert chunks == []
    assert not temp_leftovers(workdir)


def write_movie(path: Path, n_frames: int = N_FRAMES, per_camera: bool = False) -> None:
    """A small movie of noise: T x 4 x H x W, or one T x H x W camera file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (n_frames, HEIGHT, WIDTH) if per_camera else (n_frames, 4, HEIGHT, WIDTH)
    frames = np.random.default_rng(5).integers(100, 200, shape).astype(np.uint16)
    tifffile.imwrite(
        path, frames, photometric="minisblack", metadata={"axes": "TYX" if per_camera else "TCYX"}
    )


#: rows of a sheet whose files are not all there -> the one line of the movie's failed job
MISSING_ROWS = {
    "gone": ({"path": "data/gone.tif"}, "config/movies.tsv row gone: data/gone.tif: no such file"),
    "nogt": (
        {"path": "data/good.tif", "ground_truth": "data/nogt.parquet"},
        "config/movies.tsv row nogt: data/nogt.parquet: no such file",
    ),
    "cams": (
        {f"plane{k}": f"data/cam{k}.tif" for k in range(1, 5)},  # cameras 2 and 4 are not there
        "config/movies.tsv row cams: data/cam2.tif, data/cam4.tif: no such file",
    ),
}


def test_missing_sheet_file_fails_only_its_movie(tmp_path):
    """A sheet row naming a file that is not there no longer stops every movie while the jobs
    are planned (MissingInputException): the plan has every movie and warns; the movie's
    first job fails with one line naming the sheet, the row and the file; the others run."""
    (tmp_path / "config").mkdir()
    write_movie(tmp_path / "data/good.tif")
    for k in (1, 3):
        write_movie(tmp_path / f"data/cam{k}.tif", per_camera=True)
    camera = {"offset_adu": "100", "adu_per_photon": "4"}
    rows = [{"movie": "good", "path": "data/good.tif", **camera}]
    rows += [{"movie": movie, **row, **camera} for movie, (row, _) in MISSING_ROWS.items()]
    write_sheet(tmp_path / "config/movies.tsv", rows)

    dry = snakemake(tmp_path, "-n")  # the default target: every movie's jobs
    assert dry.returncode == 0, console(dry)[-3000:]
    assert job_counts(dry)["movie_info"] == 1 + len(MISSING_ROWS)
    warned = [ln for ln in console(dry).splitlines() if ln.startswith("voxloc: warning: ")]
    assert warned == [
        f"voxloc: warning: {message} (this movie's jobs will fail, the others run)"
        for _, message in MISSING_ROWS.values()
    ]

    infos = [f"results/movies/{movie}/info.yaml" for movie in ["good", *MISSING_ROWS]]
    proc = snakemake(tmp_path, "--keep-going", targets=infos)
    assert proc.returncode != 0
    assert yaml.safe_load((tmp_path / infos[0]).read_text())["n_frames"] == N_FRAMES
    # each job's line is written whole, but Snakemake's own console lines come from another
    # process and may begin right after it: match the line's text, not the console's lines
    failed = re.findall(r"voxloc: (?!warning: )(.*?: no such file)", console(proc))
    assert sorted(failed) == sorted(message for _, message in MISSING_ROWS.values())
    for movie, (_, message) in MISSING_ROWS.items():
        assert not (tmp_path / f"results/movies/{movie}/info.yaml").exists()
        log = (tmp_path / f"logs/localize/{movie}/info.log").read_text()
        assert message in log and "Traceback" not in log, log


def test_model_trained_for_another_psf_warns_in_the_chunk_log(run, tmp_path):
    """A spline PSF recalibrated since the model was trained (another psf_spline.h5) is a
    warning in the chunk's log, not an error."""
    from voxloc.calibration.spline_files import load_spline_psf, save_spline_psf

    workdir = copy_workdir(run, tmp_path / "wd")
    spline_h5 = workdir / "results/calibration/psf_spline.h5"
    stamp = spline_h5.stat()
    old = load_spline_psf(spline_h5)
    changed = dataclasses.replace(old, coeffs=old.coeffs * 1.01)  # the microscope changed
    save_spline_psf(spline_h5, changed)
    os.utime(spline_h5, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # nothing else reruns
    chunk = "results/localizations/demo1/chunk-0000.parquet"
    proc = snakemake(workdir, "--force", "--rerun-triggers", "mtime", targets=[chunk])
    assert proc.returncode == 0, proc.stderr[-4000:]  # a warning, not an error
    assert job_counts(proc) == {"localize_chunk": 1}
    log = (workdir / "logs/localize/demo1/chunk-0000.log").read_text()
    warnings_ = [ln for ln in log.splitlines() if " WARNING " in ln and "results/models/quick/model.pt" in ln]
    assert len(warnings_) == 1, log
    assert "spline PSF of another calibration" in warnings_[0]
    # the chunk is written all the same (its int8 calibration frames fall back to Table 2's
    # PSF, since the model's own spline file is gone: the numbers may differ slightly)
    assert len(pd.read_parquet(workdir / chunk)) > 0


def test_the_per_molecule_fit_runs_in_a_chunk_job(run, tmp_path):
    """localize.fit: mle (config.yaml's default; the tiny config turns it off) refits each
    detection of a chunk on the cameras' raw pixels: the fit columns are filled, the network's
    positions are kept beside them, and the chunk log counts the flags. The tiny model
    detects nearly every voxel, all of them crowded: ``fit_crowded: alone`` fits them."""
    workdir = copy_workdir(run, tmp_path / "wd")
    fit = tmp_path / "fit.yaml"
    fit.write_text("localize:\n  fit: mle\n  fit_crowded: alone\n")
    chunk = "results/localizations/demo1/chunk-0000.parquet"
    proc = snakemake(workdir, "--force", targets=[chunk], configfiles=[TINY, fit])
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert job_counts(proc) == {"localize_chunk": 1}
    table = pd.read_parquet(workdir / chunk)
    before = pd.read_parquet(run / chunk)
    assert len(table) == len(before) > 0  # the same detections, refined
    for axis in "xyz":  # the network's positions, kept; the fit's, within its bounds
        np.testing.assert_allclose(table[f"{axis}_net_nm"], before[f"{axis}_nm"], rtol=0, atol=1e-3)
    shift = np.hypot(table["x_nm"] - table["x_net_nm"], table["y_nm"] - table["y_net_nm"])
    assert (shift <= 1.5 * np.sqrt(2) * PX_NM + 1e-3).all()
    fitted = table["fit_flags"] & FIT_FLAGS["not_fitted"] == 0
    assert fitted.all()
    assert np.isfinite(table[["photons", "bg", "chi2_dof"]].to_numpy()).all()
    sigma = table[["sigma_x_nm", "sigma_y_nm", "sigma_z_nm"]].to_numpy()
    assert (sigma[np.isfinite(sigma)] > 0).all() and np.isfinite(sigma).mean() > 0.9
    assert table["converged"].any() and (table["n_iter"] > 0).any()
    log = (workdir / "logs/localize/demo1/chunk-0000.log").read_text()
    counts = [ln for ln in log.splitlines() if "detections fitted" in ln]
    assert len(counts) == 1 and f"{len(table)} detections fitted" in counts[0], log
    crowded = int(re.search(r"crowded (\d+)", counts[0]).group(1))
    assert crowded == int((table["fit_flags"] & FIT_FLAGS["crowded"] > 0).sum())


def test_bad_bead_stack_gives_one_line_and_no_calibration(run, tmp_path):
    workdir = copy_workdir(run, tmp_path / "wd")
    affine = workdir / "results/calibration/affine.yaml"
    wrong = tmp_path / "slices.yaml"
    wrong.write_text("calibration:\n  beads:\n    n_slices: 13\n")
    target = "results/calibration/affine.yaml"
    proc = snakemake(workdir, "--force", targets=[target], configfiles=[TINY, wrong])
    assert proc.returncode != 0
    lines = [ln for ln in console(proc).splitlines() if ln.startswith("voxloc: ")]
    assert lines == [
        "voxloc: resources/demo/beads/camera1.tif: 14 z slices, config calibration.beads.n_slices says 13"
    ]
    assert "Traceback" not in (workdir / "logs/calibration/affine.log").read_text()
    # the forced job's old outputs are removed by Snakemake before it runs; none is written
    assert not affine.exists() and not (workdir / "results/calibration/affine_qc.png").exists()
    assert not temp_leftovers(workdir)


# ------------------------------------------------------------ facility configs, recovery


def write_sheet_file(workdir: Path, rows: Sequence[dict[str, str]]) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    write_sheet(workdir / "config/movies.tsv", rows)


def demo_sheet(workdir: Path) -> None:
    (workdir / "config").mkdir(exist_ok=True)
    shutil.copy(ROOT / "config" / "movies.tsv", workdir / "config/movies.tsv")


def test_facility_config_builds_no_demo_data(tmp_path):
    """The default target makes the demo data only where the config names it: none for a
    facility's own beads and sheet, the demo movies (not its beads) for the demo's sheet."""
    beads = {f"plane{k}": f"data/beads{k}.tif" for k in range(1, 5)}
    write_movie(tmp_path / "data/m.tif")
    for path in beads.values():
        tifffile.imwrite(tmp_path / path, np.zeros((12, HEIGHT, WIDTH), np.uint16))
    facility = tmp_path / "facility.yaml"
    facility.write_text(yaml.safe_dump({"calibration": {"beads": beads}}))
    write_sheet_file(
        tmp_path, [{"movie": "m", "path": "data/m.tif", "offset_adu": "100", "adu_per_photon": "4"}]
    )
    dry = snakemake(tmp_path, "-n", configfiles=[TINY, facility])
    assert dry.returncode == 0, console(dry)[-3000:]
    ran = job_counts(dry)
    assert not [rule for rule in ran if rule.startswith("demo_")], ran
    assert ran["calibrate_affine"] == ran["movie_info"] == 1
    assert "resources/demo" not in console(dry)

    demo_sheet(tmp_path)  # the demo's movies
    dry = snakemake(tmp_path, "-n", configfiles=[TINY, facility])
    assert dry.returncode == 0, console(dry)[-3000:]
    ran = job_counts(dry)
    # the movies need the true microscope's tabulated PSF, the bead stacks are not made
    assert {rule for rule in ran if rule.startswith("demo_")} == {
        "demo_true_psf",
        "demo_movie_per_camera",
        "demo_movie_stack",
    }


def voxloc_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in console(proc).splitlines() if ln.startswith("voxloc: ")]


def test_unknown_key_names_where_it_came_from_and_the_closest_key(tmp_path):
    """An unknown key is reported against the --config or --configfile that added it (not
    config/config.yaml or every file), with the valid key it is closest to."""
    demo_sheet(tmp_path)
    proc = snakemake(tmp_path, "-n", "--config", "localise={}")
    assert proc.returncode != 0
    assert voxloc_lines(proc) == ["voxloc: --config: unknown key localise (did you mean localize?)"]
    night = tmp_path / "night.yaml"
    night.write_text("render:\n  px_mn: 20.0\n")
    proc = snakemake(tmp_path, "-n", configfiles=[TINY, night])
    assert proc.returncode != 0
    assert voxloc_lines(proc) == [f"voxloc: {night}: unknown key render.px_mn (did you mean px_nm?)"]


def test_whole_number_floats_of_integer_keys_run(tmp_path):
    """chunk_frames: 6.0 and frames_per_shard: 2.0 (YAML floats) work as the ints 6 and 2:
    a real simulation shard of 2 frames, a movie of 12 frames planned as 2 chunks."""
    write_movie(tmp_path / "data/m.tif")
    write_sheet_file(
        tmp_path, [{"movie": "m", "path": "data/m.tif", "offset_adu": "100", "adu_per_photon": "4"}]
    )
    floats = tmp_path / "floats.yaml"
    floats.write_text(
        "psf: {model: gaussian, source: table2}\n"  # no bead calibration before the shard
        "localize: {chunk_frames: 6.0}\n"
        "simulation:\n  datasets:\n    val: {shards: 1.0, frames_per_shard: 2.0}\n"
    )
    shard, info = "results/simulation/val/shard-0000.h5", "results/movies/m/info.yaml"
    proc = snakemake(tmp_path, targets=[shard, info], configfiles=[TINY, floats])
    assert proc.returncode == 0, console(proc)[-3000:]
    assert shards.read_shard(tmp_path / shard).frames.shape == (2, 4, 24, 20)
    dry = snakemake(tmp_path, "-n", targets=["results/localizations/m.parquet"], configfiles=[TINY, floats])
    assert dry.returncode == 0, console(dry)[-3000:]
    assert job_counts(dry)["localize_chunk"] == 2


def test_tiny_config_means_the_same_in_a_checkout():
    """tests/workflow/config.yaml on top of config/config.yaml (a checkout) is the config the
    tests run (on top of the schema's defaults: their working directories have no
    config/config.yaml)."""
    schema = ROOT / "workflow/schemas/config.schema.yaml"
    tiny = yaml.safe_load(TINY.read_text())
    in_checkout = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    update_config(in_checkout, yaml.safe_load(TINY.read_text()))
    vconfig.validate(in_checkout, schema, source="checkout")
    assert in_checkout == vconfig.validate(tiny, schema, source="tests")


def test_tiny_config_dry_run_in_a_copy_of_the_checkout(tmp_path):
    """`snakemake -n --configfile tests/workflow/config.yaml` where the README says, in the
    checkout (here a copy of it, so as not to touch the real one's .snakemake)."""
    copy = tmp_path / "voxloc"
    (copy / "tests/workflow").mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config", "scripts", "envs", "src"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, copy / name)
    shutil.copy(TINY, copy / "tests/workflow/config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", "tests/workflow/config.yaml"]
    proc = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, console(proc)[-3000:]
    assert "voxloc:" not in console(proc)
    ran = job_counts(proc)
    assert ran["density_sweep"] == ran["train_model"] == ran["demo_beads"] == 1


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def test_killed_snakemake_recovers_as_the_readme_says(tmp_path):
    """Snakemake killed mid-job (kill -9, a lost login node) leaves its lock: the same command
    then refuses to run until `--unlock`, and `--rerun-incomplete` finishes the work. The
    README's batch and cluster sections say so."""
    for title in ("Facility batch mode", "Cluster (SLURM)"):
        section = readme_section(title)
        assert "--unlock" in section and "--rerun-incomplete" in section, title
    demo_sheet(tmp_path)
    # the true microscope's tabulated PSF first, so that demo_beads is the one job killed
    pre = snakemake(tmp_path, targets=["resources/demo/true_psf.h5"])
    assert pre.returncode == 0, console(pre)[-2000:]
    target = "resources/demo/beads/truth.yaml"  # rule demo_beads: a few seconds
    cmd = [sys.executable, "-m", "snakemake", target, "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path)]
    cmd += ["--cores", "1", "--configfile", str(TINY)]
    killed = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        incomplete = tmp_path / ".snakemake" / "incomplete"
        end = time.monotonic() + 120
        while killed.poll() is None and not (incomplete.is_dir() and any(incomplete.iterdir())):
            assert time.monotonic() < end, "demo_beads never started"
            time.sleep(0.05)
        assert killed.poll() is None, "demo_beads finished before it could be killed"
        os.killpg(killed.pid, signal.SIGKILL)  # Snakemake and its job
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
    assert not (tmp_path / target).exists()
    again = snakemake(tmp_path, targets=[target])
    assert again.returncode != 0 and "Directory cannot be locked" in console(again), console(again)[-2000:]
    unlock = snakemake(tmp_path, "--unlock", targets=[target])
    assert unlock.returncode == 0, console(unlock)[-2000:]
    rerun = snakemake(tmp_path, "--rerun-incomplete", targets=[target])
    assert rerun.returncode == 0, console(rerun)[-2000:]
    assert job_counts(rerun) == {"demo_beads": 1}
    assert (tmp_path / target).is_file()


# -------------------------------------------- report tables, row groups, CI (issue 18)

#: the evaluation tables of the tiny run, shown in the report as HTML beside their TSV
REPORT_TABLES = (
    "results/evaluation/summary",
    "results/evaluation/voxels/quick",
    "results/evaluation/density/quick",
    "results/evaluation/speed",
)


def test_report_tables_are_html_pages_with_the_numbers_of_the_tsv(run):
    from html import escape

    from voxloc.evaluation.html_tables import format_value

    for stem in REPORT_TABLES:
        table = pd.read_csv(run / f"{stem}.tsv", sep="\t")
        page = (run / f"{stem}.html").read_text(encoding="utf-8")
        assert 'class="headline"' in page, stem
        for column, values in table.items():
            name = re.escape(column)
            row = re.search(rf'<tr data-column="{name}">(.*?)</tr>', page)
            assert row, (stem, column)
            shown = re.findall(rf'data-column="{name}">([^<]*)</td>', row.group(1))
            assert shown == [escape(format_value(column, v)) for v in values.tolist()], (stem, column)
    summary = (run / "results/evaluation/summary.html").read_text(encoding="utf-8")
    for column in ("jaccard", "rmse_lateral_nm", "crlb_lateral_nm", "efficiency_3d"):  # at a glance
        assert summary.count(f'data-column="{column}"') == 2 * len(MOVIES) + 1, column


def test_report_embeds_the_tables_as_pages(run, tmp_path):
    import base64

    proc = snakemake(run, "--report", str(tmp_path / "report.html"))
    assert proc.returncode == 0, console(proc)[-3000:]
    report = (tmp_path / "report.html").read_text(encoding="utf-8")
    for stem in REPORT_TABLES:
        start = report.index(f'"{stem}.html": {{')
        uri = re.search(r'"data_uri": "data:text/html;[^,]*base64,([^"]+)"', report[start:])
        assert uri, stem
        assert base64.b64decode(uri.group(1)) == (run / f"{stem}.html").read_bytes(), stem


def test_merged_localizations_are_one_row_group(run):
    """12 frames in 2 chunks of 1 batch of 6 frames each: was one row group per batch."""
    for movie in MOVIES:
        meta = pq.ParquetFile(run / f"results/localizations/{movie}.parquet").metadata
        assert meta.num_rows > 0 and meta.num_row_groups == 1, movie


def test_ci_runs_the_linters_then_the_tests_and_fails_on_any_failure():
    import tomllib

    lines = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    lines = [line for line in lines if line]
    assert "set -euo pipefail" in lines
    assert '.venv/bin/pip install --quiet -e ".[test,dev]"' in lines
    checks = [
        ".venv/bin/ruff check .",
        ".venv/bin/ruff format --check .",
        ".venv/bin/snakefmt --check Snakefile workflow/rules/*.smk",
        ".venv/bin/snakemake --lint",
    ]
    assert [line for line in lines if line in checks] == checks
    assert lines.index(checks[-1]) < len(lines) - 1 and lines[-1] == ".venv/bin/python -m pytest -q"
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert {re.split("[=<>]", d)[0] for d in dev} >= {"ruff", "snakefmt"}
