"""Per-run summary of a batch of movies: frames, localizations, localization time, outputs.

One row per movie of the sample sheet (rule ``run_summary``), from files the workflow has
written: the movie header (``results/movies/{movie}/info.yaml``), the footer of the merged
Parquet (the localization count, without reading the table) and the Snakemake benchmark
files of the movie's ``localize_chunk`` jobs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from voxloc.config import chunk_ranges
from voxloc.io import atomic_output, read_yaml

__all__ = ["RUN_COLUMNS", "benchmark_totals", "chunk_benchmarks", "summarize_movie", "write_run_summary"]

log = logging.getLogger(__name__)

#: columns of the summary, in order; output paths follow as further columns
RUN_COLUMNS = (
    "movie",
    "n_frames",
    "n_localizations",
    "n_chunks",
    "localize_job_s",
    "frames_per_job_s",
    "peak_rss_mb",
)


def chunk_benchmarks(pattern: str, movie: str, n_frames: int, chunk_frames: int) -> list[Path]:
    """The benchmark files of a movie's ``localize_chunk`` jobs: ``pattern`` with {movie} and
    {chunk} (4 digits), one per chunk of ``chunk_frames`` frames."""
    n_chunks = len(chunk_ranges(n_frames, chunk_frames))
    return [Path(pattern.format(movie=movie, chunk=f"{c:04d}")) for c in range(n_chunks)]


def benchmark_totals(paths: Sequence[str | Path]) -> tuple[float, float]:
    """Summed wall time (s) and largest max_rss (MB) over Snakemake benchmark files; a file
    with several rows (``repeat()``) counts with its mean time. Both NaN when any file is
    missing (a partial sum would pass for the whole); the memory NaN when none was measured."""
    seconds, rss = 0.0, []
    for path in paths:
        if not Path(path).is_file():
            return math.nan, math.nan
        table = pd.read_csv(path, sep="\t")
        seconds += float(table["s"].mean())
        rss += pd.to_numeric(table["max_rss"], errors="coerce").dropna().tolist()  # "-": unknown
    return seconds, max(rss, default=math.nan)


def summarize_movie(
    movie: str,
    info: str | Path,
    localizations: str | Path,
    *,
    chunk_frames: int,
    benchmark: str,
    outputs: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """One row of the run summary. ``benchmark``: the localize_chunk benchmark pattern;
    ``outputs``: further columns (output paths) copied as they are.

    ``localize_job_s`` sums the chunk jobs' wall times: job-seconds, the elapsed time only
    when the chunks ran one after another; ``frames_per_job_s`` = n_frames / localize_job_s.
    """
    n_frames = int(read_yaml(info)["n_frames"])
    n_locs = pq.ParquetFile(localizations).metadata.num_rows  # the footer only
    files = chunk_benchmarks(benchmark, movie, n_frames, chunk_frames)
    seconds, rss = benchmark_totals(files)
    row: dict[str, object] = {
        "movie": movie,
        "n_frames": n_frames,
        "n_localizations": n_locs,
        "n_chunks": len(files),
        "localize_job_s": seconds,
        "frames_per_job_s": n_frames / seconds if seconds > 0 else math.nan,
        "peak_rss_mb": rss,
    }
    row.update(outputs or {})
    return row


def write_run_summary(rows: Sequence[Mapping[str, object]], out_tsv: str | Path) -> pd.DataFrame:
    """Write the rows of :func:`summarize_movie` as a TSV (atomically); log it."""
    table = pd.DataFrame(list(rows))
    if table.empty:
        table = pd.DataFrame(columns=list(RUN_COLUMNS))
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    shown = table[[c for c in RUN_COLUMNS if c in table]]
    log.info("run summary, %d movies:\n%s", len(table), shown.to_string(index=False))
    return table
