"""End to end through the Snakemake CLI on a tiny config in a temporary directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tifffile

from voxloc import shards

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "workflow" / "config.yaml"

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir)]
    cmd += ["--cores", "2", "--configfile", str(TINY), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wf")
    (workdir / "config").mkdir()
    shutil.copy(ROOT / "config" / "movies.tsv", workdir / "config" / "movies.tsv")
    proc = snakemake(workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return workdir


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
            assert list(sim.emitters.columns) == ["frame", "x_nm", "y_nm", "z_nm", "weight"]
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
        assert beads.shape == (12, 40, 40) and beads.dtype == np.uint16
        cam = tifffile.imread(demo / f"demo1/camera{k}.tif")
        assert cam.shape == (12, 40, 40) and cam.dtype == np.uint16
    stack = tifffile.imread(demo / "demo2/movie.tif")
    assert stack.shape == (12, 4, 40, 40) and stack.dtype == np.uint16
    for movie in ("demo1", "demo2"):
        gt = pd.read_parquet(demo / f"{movie}/ground_truth.parquet")
        assert list(gt.columns) == ["frame", "x_nm", "y_nm", "z_nm", "weight"]
        assert gt["frame"].dtype == np.int32
        assert gt["frame"].between(0, 11).all()
    assert (demo / "beads/truth.yaml").exists()


def test_rerun_has_nothing_to_do(run):
    proc = snakemake(run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_config_stops_with_one_line_naming_the_key(run, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("simulation:\n  noise: loud\n")
    proc = snakemake(run, "-n", "--configfile", str(bad))
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("voxloc: ")]
    assert len(lines) == 1
    assert "simulation.noise: 'loud' is not one of ['paper', 'physical', 'none']" in lines[0]
