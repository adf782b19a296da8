"""Calibration of the reported uncertainty: does the fit's σ say how far off a localization is?

The per-molecule fit (:mod:`voxloc.fitting`) reports, per localization and axis, σ = the
square root of the Cramér-Rao bound at its estimate (``sigma_{x,y,z}_nm`` of
:data:`voxloc.locs.FIT_FIELDS`). Where the fit is efficient and unbiased, error / σ is
standard normal: |error| ≤ σ for 68.27 % of the localizations and ≤ 2σ for 95.45 %
(:data:`EXPECTED_COVERAGE`). Less means σ is too small (over-confident), more too large.

From the matched pairs of the evaluation (the errors estimate − truth of the FITTED
position, the σ reported for it), :func:`sigma_table` gives per axis x, y, z one row
``bin = "all"``, over every matched localization whose σ of that axis is a positive finite
number, with the coverage at 1σ and 2σ, the mean and RMS reported σ, the observed RMSE and
bias, the RMS of error / σ (1 when calibrated) and ``curve_slope``; ``n_excluded`` counts
the matched localizations left out on that axis (σ NaN, infinite or ≤ 0: ``localize.fit:
none``, a table from before the fit, a detection the fit skipped, an axis the data cannot
identify). Then the calibration curve: those localizations split into ``n_bins`` quantile
bins of their σ (equal counts by rank; fewer bins when there are fewer localizations),
``bin`` = 1.. in order of σ, each with the same statistics; a calibrated σ puts the bins'
RMSE on their RMS σ (the identity), and ``curve_slope`` is the least-squares slope through
the origin of RMSE on RMS σ over the bins, weighted by their counts (1 when calibrated, 2
when the errors are twice what σ says).

:func:`coverage_summary` gives the per-movie summary's ``coverage_{x,y,z}`` (1σ),
``coverage_2sigma_{x,y,z}`` and ``sigma_excluded_{x,y,z}``, the same numbers as the "all"
rows. :func:`plot_sigma` draws the curve and the histogram of error / σ against the standard
normal; :func:`write_sigma` is the rule's edge: the evaluation's molecule Parquet
(:func:`voxloc.evaluation.matching.molecule_table`: ``matched``, ``d{x,y,z}_nm`` and the
matched localization's ``sigma_{x,y,z}_nm``) in, TSV and PNG out.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.errors import InputError
from voxloc.io import atomic_output

__all__ = [
    "AXES",
    "DEFAULT_BINS",
    "EXPECTED_COVERAGE",
    "SIGMA_COLUMNS",
    "SUMMARY_KEYS",
    "axis_stats",
    "coverage_summary",
    "plot_sigma",
    "read_sigma",
    "sigma_from_molecules",
    "sigma_table",
    "usable_sigma",
    "write_sigma",
]

log = logging.getLogger(__name__)

AXES = ("x", "y", "z")
#: quantile bins of the calibration curve (config ``evaluate.sigma_bins`` where the schema has it)
DEFAULT_BINS = 10
#: P(|Z| ≤ 1), P(|Z| ≤ 2) of a standard normal Z: the coverage of a calibrated σ
EXPECTED_COVERAGE = (math.erf(1 / math.sqrt(2)), math.erf(2 / math.sqrt(2)))

#: columns of the table, in order
SIGMA_COLUMNS = (
    "axis",
    "bin",
    "n",
    "n_excluded",
    "sigma_lo_nm",
    "sigma_hi_nm",
    "coverage_1sigma",
    "coverage_2sigma",
    "mean_sigma_nm",
    "rms_sigma_nm",
    "rmse_nm",
    "bias_nm",
    "rms_error_over_sigma",
    "curve_slope",
)
#: keys of :func:`coverage_summary`, in order (the per-movie summary's columns)
SUMMARY_KEYS = (
    *(f"coverage_{a}" for a in AXES),
    *(f"coverage_2sigma_{a}" for a in AXES),
    *(f"sigma_excluded_{a}" for a in AXES),
)
#: the per-molecule columns the table is made from
MOLECULE_COLUMNS = ("matched", "dx_nm", "dy_nm", "dz_nm")
SIGMA_INPUT = tuple(f"sigma_{a}_nm" for a in AXES)

_NAN = float("nan")


def usable_sigma(sigma: np.ndarray) -> np.ndarray:
    """Where a reported σ can be used: a positive finite number."""
    sigma = np.asarray(sigma, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(sigma) & (sigma > 0)


def axis_stats(error: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Coverage, σ and error statistics of one axis's localizations (all usable: see
    :func:`usable_sigma`); NaN where there is none."""
    e, s = np.asarray(error, np.float64), np.asarray(sigma, np.float64)
    n = len(e)
    if not n:
        keys = ("coverage_1sigma", "coverage_2sigma", "mean_sigma_nm", "rms_sigma_nm", "rmse_nm")
        return {"n": 0, "sigma_lo_nm": _NAN, "sigma_hi_nm": _NAN} | dict.fromkeys(
            (*keys, "bias_nm", "rms_error_over_sigma"), _NAN
        )
    a = np.abs(e)
    return {
        "n": n,
        "sigma_lo_nm": float(s.min()),
        "sigma_hi_nm": float(s.max()),
        "coverage_1sigma": float(np.mean(a <= s)),
        "coverage_2sigma": float(np.mean(a <= 2.0 * s)),
        "mean_sigma_nm": float(s.mean()),
        "rms_sigma_nm": float(np.sqrt(np.mean(s**2))),
        "rmse_nm": float(np.sqrt(np.mean(e**2))),
        "bias_nm": float(e.mean()),
        "rms_error_over_sigma": float(np.sqrt(np.mean((e / s) ** 2))),
    }


def _usable(errors: np.ndarray, sigma: np.ndarray, a: int) -> np.ndarray:
    return usable_sigma(sigma[:, a]) & np.isfinite(errors[:, a])


def _check(errors: np.ndarray, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    errors = np.asarray(errors, np.float64).reshape(-1, 3)
    sigma = np.asarray(sigma, np.float64).reshape(-1, 3)
    if errors.shape != sigma.shape:
        raise ValueError(f"errors {errors.shape} and sigma {sigma.shape} differ in shape")
    return errors, sigma


def sigma_table(errors: np.ndarray, sigma: np.ndarray, *, n_bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """The calibration table (module docstring) of (N, 3) errors estimate − truth (nm, x y z)
    of matched localizations and their (N, 3) reported σ (nm): per axis the "all" row, then
    its quantile bins."""
    if int(n_bins) < 1:
        raise ValueError(f"the calibration curve needs at least one bin, not {n_bins!r}")
    errors, sigma = _check(errors, sigma)
    rows = []
    for a, axis in enumerate(AXES):
        ok = _usable(errors, sigma, a)
        e, s = errors[ok, a], sigma[ok, a]
        order = np.argsort(s, kind="stable")
        groups = np.array_split(order, min(int(n_bins), len(s))) if len(s) else []
        bins = [{"axis": axis, "bin": str(i + 1), **axis_stats(e[g], s[g])} for i, g in enumerate(groups)]
        n = np.array([b["n"] for b in bins], np.float64)
        rs = np.array([b["rms_sigma_nm"] for b in bins])
        rm = np.array([b["rmse_nm"] for b in bins])
        den = float(np.sum(n * rs**2))
        slope = float(np.sum(n * rs * rm)) / den if den > 0 else _NAN
        head = {"axis": axis, "bin": "all", **axis_stats(e, s), "n_excluded": int((~ok).sum())}
        rows += [head | {"curve_slope": slope}, *bins]
    table = pd.DataFrame(rows, columns=list(SIGMA_COLUMNS))
    return table.astype({"n": np.int64, "n_excluded": np.float64})


def coverage_summary(errors: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """The per-movie summary's coverage keys (:data:`SUMMARY_KEYS`) of (N, 3) matched errors
    and reported σ: the fraction with |error| ≤ σ, ≤ 2σ per axis over the usable σ, and the
    matched localizations left out per axis."""
    errors, sigma = _check(errors, sigma)
    out: dict[str, float] = {}
    stats = {}
    for a, axis in enumerate(AXES):
        ok = _usable(errors, sigma, a)
        stats[axis] = (axis_stats(errors[ok, a], sigma[ok, a]), int((~ok).sum()))
    out |= {f"coverage_{a}": stats[a][0]["coverage_1sigma"] for a in AXES}
    out |= {f"coverage_2sigma_{a}": stats[a][0]["coverage_2sigma"] for a in AXES}
    out |= {f"sigma_excluded_{a}": stats[a][1] for a in AXES}
    return out


def sigma_from_molecules(molecules: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) errors and reported σ of the matched molecules of a per-molecule table; σ NaN
    where the table has no ``sigma_{x,y,z}_nm`` (the localizations had no fit columns)."""
    missing = [c for c in MOLECULE_COLUMNS if c not in molecules.columns]
    if missing:
        raise ValueError(f"molecule table lacks column(s) {', '.join(missing)}")
    matched = molecules["matched"].to_numpy(bool)
    errors = molecules[["dx_nm", "dy_nm", "dz_nm"]].to_numpy(np.float64)[matched]
    sigma = np.full(errors.shape, np.nan)
    for a, column in enumerate(SIGMA_INPUT):
        if column in molecules.columns:
            sigma[:, a] = molecules[column].to_numpy(np.float64)[matched]
    return errors, sigma


# ------------------------------------------------------------------ figure

AXIS_COLOURS = {"x": "C0", "y": "C1", "z": "C3"}


def plot_sigma(
    table: pd.DataFrame, errors: np.ndarray, sigma: np.ndarray, path: str | Path, *, title: str = ""
) -> None:
    """Two rows, one column per axis: (top) the calibration curve, RMSE of each quantile bin
    of σ against its RMS σ, with the identity line (a calibrated σ) dashed; (bottom) the
    histogram of error / σ against the standard normal density, the coverage at 1σ and 2σ
    in the legend."""
    from matplotlib.figure import Figure

    errors, sigma = _check(errors, sigma)
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    axes = fig.subplots(2, 3)
    grid = np.linspace(-5.0, 5.0, 401)
    normal = np.exp(-0.5 * grid**2) / math.sqrt(2.0 * math.pi)
    c1, c2 = EXPECTED_COVERAGE
    for a, axis in enumerate(AXES):
        ax_c, ax_h = axes[0, a], axes[1, a]
        colour = AXIS_COLOURS[axis]
        rows = table[table["axis"] == axis]
        head = rows[rows["bin"].astype(str) == "all"]
        bins = rows[rows["bin"].astype(str) != "all"]
        excluded = int(head["n_excluded"].iloc[0]) if len(head) else 0
        ok = _usable(errors, sigma, a)
        if not ok.any() or not len(head):
            note = f"no reported σ{axis}\n({excluded} matched localizations without one)"
            for ax in (ax_c, ax_h):
                ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
        else:
            h = head.iloc[0]
            top = 1.05 * float(np.nanmax([bins["rms_sigma_nm"].max(), bins["rmse_nm"].max()]))
            ax_c.plot([0, top], [0, top], "--", color="0.5", label="identity (calibrated σ)")
            curve = f"quantile bins of σ (slope {h['curve_slope']:.2f})"
            ax_c.plot(bins["rms_sigma_nm"], bins["rmse_nm"], "o-", color=colour, ms=5, label=curve)
            ax_c.set(xlim=(0, top), ylim=(0, top))
            ratio = errors[ok, a] / sigma[ok, a]
            outside = int(np.count_nonzero(np.abs(ratio) > 5.0))
            label = f"{len(ratio)} matched" + (f", {outside} beyond ±5 (in the edge bins)" if outside else "")
            clipped = np.clip(ratio, -5.0, 5.0)
            heights, _, _ = ax_h.hist(
                clipped, bins=50, range=(-5.0, 5.0), density=True, color=colour, alpha=0.6, label=label
            )
            ax_h.set_ylim(0, 1.6 * max(float(heights.max()), normal.max()))  # room for the legend
            ax_h.plot(grid, normal, "k-", lw=1.2, label="standard normal")
            notes = [
                f"|e| ≤ σ: {100 * h['coverage_1sigma']:.1f} % (ideal {100 * c1:.1f})",
                f"|e| ≤ 2σ: {100 * h['coverage_2sigma']:.1f} % (ideal {100 * c2:.1f})",
            ]
            if excluded:
                notes.append(f"{excluded} without a finite σ: left out")
            for note in notes:
                ax_h.plot([], [], " ", label=note)
            ax_c.legend(fontsize=8, loc="upper left")
            ax_h.legend(fontsize=8, loc="upper left")
        ax_c.set(
            xlabel=f"RMS reported σ{axis} of the bin (nm)",
            ylabel=f"observed RMSE {axis} (nm)",
            title=f"({'abc'[a]}) calibration curve, {axis}",
        )
        ax_h.set(
            xlabel=f"error / reported σ{axis}",
            ylabel="density",
            title=f"({'def'[a]}) normalized error, {axis}",
        )
        for ax in (ax_c, ax_h):
            ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# ------------------------------------------------------------------ files


def read_sigma(path: str | Path) -> pd.DataFrame:
    """A calibration TSV written by :func:`write_sigma` (``bin`` as text); InputError naming
    the file otherwise."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={"bin": str, "axis": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable sigma calibration table ({exc})".splitlines()[0]) from None
    missing = [c for c in SIGMA_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: sigma calibration table lacks column(s) {', '.join(missing)}")
    return table


def write_sigma(
    molecules_path: str | Path,
    out_tsv: str | Path,
    out_png: str | Path | None = None,
    *,
    n_bins: int = DEFAULT_BINS,
    movie: str = "",
) -> pd.DataFrame:
    """:func:`sigma_table` of the matched molecules of a per-molecule Parquet, written as TSV
    (and :func:`plot_sigma` as PNG); returns the table."""
    try:
        molecules = pd.read_parquet(molecules_path)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{molecules_path}: cannot read the molecule table ({exc})".splitlines()[0]
        ) from None
    missing = [c for c in MOLECULE_COLUMNS if c not in molecules.columns]
    if missing:
        raise InputError(f"{molecules_path}: molecule table lacks column(s) {', '.join(missing)}")
    errors, sigma = sigma_from_molecules(molecules)
    table = sigma_table(errors, sigma, n_bins=n_bins)
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    if out_png is not None:
        name = f"{movie}: " if movie else ""
        plot_sigma(
            table,
            errors,
            sigma,
            out_png,
            title=f"{name}reported σ (√CRLB of the fit) against the observed error",
        )
    heads = table[table["bin"] == "all"].set_index("axis")
    log.info(
        "%s: |error| <= sigma for x %.3f, y %.3f, z %.3f (ideal %.3f) of %s matched localizations; "
        "%s without a finite sigma",
        movie or molecules_path,
        *(heads.loc[a, "coverage_1sigma"] for a in AXES),
        EXPECTED_COVERAGE[0],
        "/".join(str(int(heads.loc[a, "n"])) for a in AXES),
        "/".join(str(int(heads.loc[a, "n_excluded"])) for a in AXES),
    )
    return table
