"""Side by side: the evaluation of two or more finished runs (e.g. psf.model gaussian vs spline).

A run is its ``results/`` directory (or the working directory holding it) as the workflow
left it: ``evaluation/summary.tsv`` (rule ``evaluation_summary``) and, per movie,
``evaluation/{movie}_depth.tsv`` (:mod:`voxloc.evaluation.depth`; runs from before it have
none and are compared on the summary alone). :func:`comparison_table` has one row per
movie and run with the headline numbers (:data:`COMPARE_COLUMNS`) and, from the depth
table, ``bias_z_over_depth_nm``: the RMS over the depth bins (weighted by their matched
pairs) of the mean z error of each bin, i.e. the part of the axial RMSE that is a bias
depending on depth (≥ |bias_z_nm|; equal when the bias does not depend on z).
:func:`plot_comparison` draws the runs' depth curves on one axes per quantity and movie;
:func:`compare_runs` writes both and :func:`markdown_table` gives the table for a README.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.errors import InputError
from voxloc.evaluation.depth import read_depth
from voxloc.evaluation.html_tables import column_label, format_value, read_tsv
from voxloc.io import atomic_output

__all__ = [
    "COMPARE_COLUMNS",
    "RunResults",
    "compare_runs",
    "comparison_table",
    "find_results",
    "load_run",
    "markdown_table",
    "plot_comparison",
    "run_labels",
]

log = logging.getLogger(__name__)

#: columns of the comparison, in order (a column a run's summary lacks is NaN)
COMPARE_COLUMNS = (
    "movie",
    "run",
    "n_true",
    "jaccard",
    "recall",
    "rmse_lateral_nm",
    "rmse_axial_nm",
    "bias_x_nm",
    "bias_y_nm",
    "bias_z_nm",
    "bias_z_over_depth_nm",
    "crlb_lateral_nm",
    "crlb_z_nm",
    "rmse_to_crlb_lateral",
    "rmse_to_crlb_z",
)
#: (label, unit) of the comparison's own columns, for the Markdown header
LABELS = {"run": ("run", ""), "bias_z_over_depth_nm": ("z bias over depth", "nm, RMS")}


@dataclass
class RunResults:
    """One finished run: its label, its results directory, its evaluation summary (one row
    per movie) and the depth table of each movie that has one."""

    label: str
    results: Path
    summary: pd.DataFrame
    depth: dict[str, pd.DataFrame] = field(default_factory=dict)


def find_results(run_dir: str | Path) -> Path:
    """The ``results/`` directory of a run: ``run_dir`` itself or ``run_dir/results``."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "results", run_dir):
        if (candidate / "evaluation" / "summary.tsv").is_file():
            return candidate
    raise InputError(
        f"{run_dir}: no evaluation/summary.tsv here or in results/; "
        "give a finished run's working directory or its results/ directory"
    )


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """Default labels: each run's working-directory name (the parent of a ``results/``
    given), made unique with ``-2``, ``-3``, ... where two runs share a name."""
    names = []
    for d in run_dirs:
        path = Path(d).resolve()
        names.append(path.parent.name if path.name == "results" else path.name)
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if names.count(name) == 1 else f"{name}-{seen[name]}")
    return out


def load_run(run_dir: str | Path, label: str) -> RunResults:
    """The evaluation summary and the depth tables of a finished run."""
    results = find_results(run_dir)
    summary = read_tsv(results / "evaluation" / "summary.tsv")
    if "movie" not in summary.columns:
        raise InputError(
            f"{results / 'evaluation' / 'summary.tsv'}: no movie column; not an evaluation summary"
        )
    depth = {}
    for movie in summary["movie"].astype(str):
        path = results / "evaluation" / f"{movie}_depth.tsv"
        if path.is_file():
            depth[movie] = read_depth(path)
        else:
            log.warning("%s: no depth table for movie %s (%s)", label, movie, path)
    return RunResults(label, results, summary, depth)


def bias_over_depth(depth: pd.DataFrame, axis: str = "z") -> float:
    """RMS over the bins of a depth table of their mean error on ``axis``, weighted by the
    matched pairs of each bin; NaN when no bin has a matched pair."""
    n = depth["n_matched"].to_numpy(np.float64)
    b = depth[f"bias_{axis}_nm"].to_numpy(np.float64)
    ok = (n > 0) & np.isfinite(b)
    return float(np.sqrt(np.sum(n[ok] * b[ok] ** 2) / n[ok].sum())) if ok.any() else math.nan


def comparison_table(runs: Sequence[RunResults]) -> pd.DataFrame:
    """:data:`COMPARE_COLUMNS`, one row per movie (in order of first appearance) and run (in
    the order given)."""
    rows = []
    for run in runs:
        for record in run.summary.to_dict("records"):
            movie = str(record["movie"])
            row = {c: record.get(c, math.nan) for c in COMPARE_COLUMNS}
            row |= {"movie": movie, "run": run.label}
            depth = run.depth.get(movie)
            row["bias_z_over_depth_nm"] = bias_over_depth(depth) if depth is not None else math.nan
            rows.append(row)
    table = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    if len(table):
        movie_order = {m: i for i, m in enumerate(dict.fromkeys(table["movie"]))}
        run_order = {r.label: i for i, r in enumerate(runs)}
        key = table["movie"].map(movie_order) * len(runs) + table["run"].map(run_order)
        table = table.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)
    return table


def markdown_table(table: pd.DataFrame) -> str:
    """The comparison as a GitHub Markdown table, numbers rounded as in the report's pages."""
    columns = list(table.columns)
    header = []
    for c in columns:
        label, unit = LABELS.get(c) or column_label(c, "summary")
        header.append(f"{label} ({unit})" if unit else label)
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("| " + " | ".join("---" if c in ("movie", "run") else "---:" for c in columns) + " |")
    for record in table.to_dict("records"):
        lines.append("| " + " | ".join(format_value(c, record[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


#: (column of the depth table, axes title, y label) of each panel of the comparison figure
PANELS = (
    ("rmse_lateral_nm", "RMSE lateral", "RMSE of matched pairs (nm)"),
    ("rmse_axial_nm", "RMSE axial", "RMSE of matched pairs (nm)"),
    ("bias_z_nm", "bias z", "mean z error, estimate − truth (nm)"),
    ("recall", "recall", "recall (matched / true)"),
)
#: the bound drawn dashed on an RMSE panel
BOUNDS = {"rmse_lateral_nm": "crlb_lateral_nm", "rmse_axial_nm": "crlb_z_nm"}


def plot_comparison(runs: Sequence[RunResults], path: str | Path, *, title: str = "") -> None:
    """One row per movie, one axes per quantity (:data:`PANELS`) against true z, one colour
    per run; sqrt(mean CRLB) of each run dashed on the RMSE axes."""
    from matplotlib.figure import Figure

    movies = list(dict.fromkeys(m for run in runs for m in run.depth))
    n_rows = max(len(movies), 1)
    fig = Figure(figsize=(4.0 * len(PANELS), 3.4 * n_rows + 0.5), layout="constrained")
    axes = fig.subplots(n_rows, len(PANELS), squeeze=False)
    if not movies:
        axes[0, 0].text(0.5, 0.5, "no depth tables in these runs", ha="center", va="center")
    for r, movie in enumerate(movies):
        for c, (column, name, ylabel) in enumerate(PANELS):
            ax = axes[r, c]
            for k, run in enumerate(runs):
                depth = run.depth.get(movie)
                if depth is None:
                    continue
                colour = f"C{k}"
                ax.plot(depth["z_nm"], depth[column], "o-", color=colour, ms=3.5, label=run.label)
                bound = BOUNDS.get(column)
                if bound in depth.columns:
                    ax.plot(
                        depth["z_nm"], depth[bound], "--", color=colour, lw=1.0, label=f"{run.label}: √CRLB"
                    )
            if column.startswith("bias_"):
                ax.axhline(0, color="0.5", lw=0.8)
            elif column == "recall":
                ax.set_ylim(0, 1.05)
            else:
                ax.set_ylim(bottom=0)
            ax.set(xlabel="true z (nm)", ylabel=ylabel, title=f"{movie}: {name}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def compare_runs(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """Load the runs, write ``out_dir/comparison.tsv`` and ``out_dir/comparison.png``;
    returns the table."""
    if len(run_dirs) < 2:
        raise InputError("give two or more runs to compare")
    labels = list(labels) if labels else run_labels(run_dirs)
    if len(labels) != len(run_dirs):
        raise InputError(f"{len(labels)} labels for {len(run_dirs)} runs; give one label per run")
    if len(set(labels)) != len(labels):
        raise InputError(f"labels must differ: {', '.join(labels)}")
    runs = [load_run(d, label) for d, label in zip(run_dirs, labels, strict=True)]
    table = comparison_table(runs)
    out_dir = Path(out_dir)
    with atomic_output(out_dir / "comparison.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    plot_comparison(runs, out_dir / "comparison.png", title=" vs ".join(labels))
    log.info("compared %d runs (%s) on %d movies", len(runs), ", ".join(labels), table["movie"].nunique())
    return table
