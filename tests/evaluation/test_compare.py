"""Side-by-side comparison of finished runs (voxloc.evaluation.compare, benchmarks/compare_runs.py)
on two hand-made results directories: a "gaussian" run with a depth-dependent z bias and a
"spline" run without one."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from voxloc.errors import InputError
from voxloc.evaluation import compare, depth

ROOT = Path(__file__).resolve().parents[2]
Z = np.repeat([50.0, 150.0, 250.0], 4)  # 4 true molecules in each of three 100 nm bins


def write_run(results: Path, bias_z: np.ndarray, rmse_axial: float, movies=("demo1", "demo2")) -> None:
    """A results/ directory as the workflow leaves it: evaluation/summary.tsv and per movie
    {movie}_depth.tsv (from a molecule table whose z errors are ``bias_z`` per molecule)."""
    (results / "evaluation").mkdir(parents=True)
    rows = []
    for movie in movies:
        rows.append(
            {
                "movie": movie,
                "n_est": 12,
                "n_true": 12,
                "jaccard": 0.8,
                "recall": 0.9,
                "rmse_lateral_nm": 20.0,
                "rmse_axial_nm": rmse_axial,
                "bias_x_nm": 1.0,
                "bias_y_nm": -2.0,
                "bias_z_nm": float(np.mean(bias_z)),
                "crlb_lateral_nm": 10.0,
                "crlb_z_nm": 20.0,
                "rmse_to_crlb_lateral": 2.0,
                "rmse_to_crlb_z": rmse_axial / 20.0,
            }
        )
        mol = pd.DataFrame({"z_nm": Z, "matched": True, "dx_nm": 0.0, "dy_nm": 0.0, "dz_nm": bias_z})
        mol = mol.assign(crlb_x_nm=7.0, crlb_y_nm=7.0, crlb_z_nm=20.0)
        depth.depth_table(mol).to_csv(results / "evaluation" / f"{movie}_depth.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(results / "evaluation" / "summary.tsv", sep="\t", index=False)


@pytest.fixture
def two_runs(tmp_path):
    gauss = tmp_path / "gauss"  # a working directory holding results/
    write_run(gauss / "results", np.repeat([-60.0, 0.0, 60.0], 4), 50.0)
    spline = tmp_path / "spline" / "results"  # given as the results/ directory itself
    write_run(spline, np.full(12, 5.0), 15.0, movies=("demo1",))
    return gauss, spline


def test_comparison_table_has_one_row_per_movie_and_run(two_runs, tmp_path):
    gauss, spline = two_runs
    table = compare.compare_runs([gauss, spline], tmp_path / "out", labels=["gaussian", "spline"])
    assert list(table.columns) == list(compare.COMPARE_COLUMNS)
    assert list(zip(table["movie"], table["run"], strict=True)) == [
        ("demo1", "gaussian"),
        ("demo1", "spline"),
        ("demo2", "gaussian"),
    ]
    g, s = table.iloc[0], table.iloc[1]
    assert (g["rmse_axial_nm"], s["rmse_axial_nm"]) == (50.0, 15.0)
    assert (g["bias_x_nm"], g["bias_y_nm"], g["bias_z_nm"]) == (1.0, -2.0, 0.0)
    assert s["bias_z_nm"] == pytest.approx(5.0) and s["rmse_to_crlb_z"] == pytest.approx(0.75)
    # over depth: bins of -60, 0, +60 nm (4 pairs each) -> sqrt((3600 + 0 + 3600) / 3); a
    # constant 5 nm bias is 5 nm at every depth
    assert g["bias_z_over_depth_nm"] == pytest.approx(math.sqrt(2400.0))
    assert s["bias_z_over_depth_nm"] == pytest.approx(5.0)
    back = pd.read_csv(tmp_path / "out" / "comparison.tsv", sep="\t")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    with Image.open(tmp_path / "out" / "comparison.png") as im:
        assert im.format == "PNG" and im.width > 1000
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_markdown_table_rounds_as_the_report(two_runs, tmp_path):
    table = compare.compare_runs(list(two_runs), tmp_path / "out", labels=["gaussian", "spline"])
    lines = compare.markdown_table(table).splitlines()
    assert len(lines) == 2 + len(table)
    assert lines[0].startswith("| movie | run | true molecules | Jaccard |")
    assert "RMSE axial (nm)" in lines[0] and "bias z (nm)" in lines[0]
    assert lines[1].startswith("| --- | --- | ---: |")
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells[:4] == ["demo1", "spline", "12", "0.800"]
    assert cells[list(table.columns).index("bias_z_over_depth_nm")] == "5.0"


def test_default_labels_and_results_directories(two_runs, tmp_path):
    gauss, spline = two_runs
    assert compare.run_labels([gauss, spline]) == ["gauss", "spline"]  # spline/results -> spline
    assert compare.run_labels([gauss, gauss / "results"]) == ["gauss-1", "gauss-2"]
    assert compare.find_results(gauss) == gauss / "results"
    assert compare.find_results(spline) == spline
    with pytest.raises(InputError, match="no evaluation/summary.tsv"):
        compare.find_results(tmp_path)
    with pytest.raises(InputError, match="labels for"):
        compare.compare_runs([gauss, spline], tmp_path / "out", labels=["one"])
    with pytest.raises(InputError, match="two or more"):
        compare.compare_runs([gauss], tmp_path / "out")


def test_a_run_without_depth_tables_is_compared_on_its_summary(two_runs, tmp_path):
    gauss, spline = two_runs
    (spline / "evaluation" / "demo1_depth.tsv").unlink()
    table = compare.compare_runs([gauss, spline], tmp_path / "out")
    row = table[(table["movie"] == "demo1") & (table["run"] == "spline")].iloc[0]
    assert row["rmse_axial_nm"] == 15.0 and math.isnan(row["bias_z_over_depth_nm"])
    assert (tmp_path / "out" / "comparison.png").is_file()


def test_the_benchmark_script_prints_markdown(two_runs, tmp_path):
    gauss, spline = two_runs
    script = ROOT / "benchmarks" / "compare_runs.py"
    args = [sys.executable, str(script), str(gauss), str(spline), "--labels", "gaussian", "spline"]
    proc = subprocess.run(
        [*args, "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("| movie | run |")
    assert (tmp_path / "out" / "comparison.tsv").is_file()
    bad = subprocess.run(
        [*args[:2], str(tmp_path), str(spline), "--out", str(tmp_path / "o")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no evaluation/summary.tsv" in bad.stderr
