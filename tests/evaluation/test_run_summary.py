"""Run summary of a batch (voxloc.evaluation.run_summary) on hand-made headers, Parquet files and benchmarks."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from voxloc.evaluation import run_summary

#: a Snakemake benchmark file: header and one row per repeat
BENCH_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
PATTERN = "{root}/benchmarks/localize/{{movie}}/chunk-{{chunk}}.tsv"


def write_bench(path: Path, rows: list[tuple[float, float]]) -> None:
    """Rows of (seconds, max_rss MB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{s}\t0:00:0{int(s)}\t{rss}\t900.0\t{rss}\t{rss}\t0.1\t0.2\t95.0\t{s}\n" for s, rss in rows]
    path.write_text(BENCH_HEADER + "".join(lines))


def write_movie(root: Path, movie: str, n_frames: int, n_locs: int) -> tuple[Path, Path]:
    info = root / f"results/movies/{movie}/info.yaml"
    info.parent.mkdir(parents=True)
    info.write_text(yaml.safe_dump({"movie": movie, "n_frames": n_frames}))
    locs = root / f"results/localizations/{movie}.parquet"
    locs.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"frame": pa.array(range(n_locs), pa.int32()), "x_nm": pa.array([1.0] * n_locs)})
    pq.write_table(table, locs, row_group_size=7)  # several row groups
    return info, locs


def test_chunk_benchmarks_one_file_per_chunk():
    files = run_summary.chunk_benchmarks("b/{movie}/chunk-{chunk}.tsv", "m1", n_frames=12, chunk_frames=5)
    assert files == [Path("b/m1/chunk-0000.tsv"), Path("b/m1/chunk-0001.tsv"), Path("b/m1/chunk-0002.tsv")]
    assert run_summary.chunk_benchmarks("b/{movie}/chunk-{chunk}.tsv", "m1", 10, 5)[-1] == Path(
        "b/m1/chunk-0001.tsv"
    )


def test_benchmark_totals_sum_time_and_take_the_peak_memory(tmp_path):
    write_bench(tmp_path / "a.tsv", [(1.5, 300.0)])
    write_bench(tmp_path / "b.tsv", [(2.0, 410.5), (3.0, 120.0)])  # repeat(): mean 2.5 s
    seconds, rss = run_summary.benchmark_totals([tmp_path / "a.tsv", tmp_path / "b.tsv"])
    assert seconds == pytest.approx(4.0)
    assert rss == pytest.approx(410.5)
    seconds, rss = run_summary.benchmark_totals([])
    assert seconds == 0.0 and math.isnan(rss)


def test_benchmark_totals_are_nan_when_a_file_is_missing(tmp_path):
    write_bench(tmp_path / "a.tsv", [(1.5, 300.0)])
    seconds, rss = run_summary.benchmark_totals([tmp_path / "a.tsv", tmp_path / "gone.tsv"])
    assert math.isnan(seconds) and math.isnan(rss)


def test_benchmark_with_unavailable_memory_reads_as_nan_memory(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text(BENCH_HEADER + "2.0\t0:00:02\t-\t-\t-\t-\t-\t-\t-\t-\n")
    seconds, rss = run_summary.benchmark_totals([path])
    assert seconds == 2.0 and math.isnan(rss)


def test_summarize_movie_counts_frames_localizations_and_job_time(tmp_path, monkeypatch):
    info, locs = write_movie(tmp_path, "m1", n_frames=12, n_locs=40)
    pattern = PATTERN.format(root=tmp_path)
    write_bench(Path(pattern.format(movie="m1", chunk="0000")), [(1.0, 250.0)])
    write_bench(Path(pattern.format(movie="m1", chunk="0001")), [(3.0, 260.0)])
    write_bench(Path(pattern.format(movie="other", chunk="0002")), [(100.0, 9000.0)])  # not this movie's

    def no_full_read(*args, **kwargs):
        raise AssertionError("the localization table was read")

    monkeypatch.setattr(pq, "read_table", no_full_read)
    monkeypatch.setattr(pd, "read_parquet", no_full_read)
    outputs = {"localizations": str(locs), "render_png": "results/render/m1.png"}
    row = run_summary.summarize_movie(
        m := "m1", info, locs, chunk_frames=6, benchmark=pattern, outputs=outputs
    )
    assert row == {
        "movie": m,
        "n_frames": 12,
        "n_localizations": 40,
        "n_chunks": 2,
        "localize_job_s": pytest.approx(4.0),
        "frames_per_job_s": pytest.approx(3.0),  # 12 frames / 4 job-seconds
        "peak_rss_mb": pytest.approx(260.0),
        **outputs,
    }


def test_summarize_movie_without_benchmarks_has_no_time(tmp_path):
    info, locs = write_movie(tmp_path, "m1", n_frames=12, n_locs=0)
    row = run_summary.summarize_movie(
        "m1", info, locs, chunk_frames=6, benchmark=PATTERN.format(root=tmp_path)
    )
    assert row["n_localizations"] == 0 and row["n_chunks"] == 2
    assert math.isnan(row["localize_job_s"]) and math.isnan(row["frames_per_job_s"])


def test_write_run_summary_round_trips_one_row_per_movie(tmp_path):
    rows = []
    for movie, n in (("a", 5), ("b", 9)):
        info, locs = write_movie(tmp_path, movie, n_frames=10, n_locs=n)
        pattern = PATTERN.format(root=tmp_path)
        write_bench(Path(pattern.format(movie=movie, chunk="0000")), [(2.0, 100.0)])
        rows.append(
            run_summary.summarize_movie(
                movie, info, locs, chunk_frames=10, benchmark=pattern, outputs={"x": "p"}
            )
        )
    out = tmp_path / "results/run_summary.tsv"
    run_summary.write_run_summary(rows, out)
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == [*run_summary.RUN_COLUMNS, "x"]
    assert table["movie"].tolist() == ["a", "b"]
    assert table["n_localizations"].tolist() == [5, 9]
    assert table["frames_per_job_s"].tolist() == [5.0, 5.0]
    assert sorted(p.name for p in out.parent.glob("*.tsv*")) == ["run_summary.tsv"]  # no temporary left


def test_write_run_summary_of_no_movie_has_the_header(tmp_path):
    out = tmp_path / "s.tsv"
    run_summary.write_run_summary([], out)
    assert out.read_text().strip().split("\t") == list(run_summary.RUN_COLUMNS)
