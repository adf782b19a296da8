"""Depth-resolved accuracy: recall, RMSE, bias and the Cramér-Rao bound per bin of true z.

From the per-molecule table of the evaluation (:func:`voxloc.evaluation.matching.molecule_table`,
``results/evaluation/{movie}.molecules.parquet``: every true molecule with ``z_nm``,
``matched``, the errors ``dx_nm``, ``dy_nm``, ``dz_nm`` = estimate − truth of its matched
estimate, and ``crlb_{x,y,z}_nm`` where the bound was computed), :func:`depth_table` bins
the molecules by their TRUE z (so a z bias does not move a molecule to another bin) into
bins of ``bin_nm`` whose edges are multiples of ``bin_nm`` and span the truths' z range.
Per bin: the number of true and of matched molecules, the recall, the RMSE lateral, axial
and per axis, the mean bias per axis and, with the bound, sqrt(mean CRLB) per axis over the
matched truths whose bound is finite (as :func:`voxloc.evaluation.evaluate.crlb_summary`
does for the whole movie) and RMSE / that bound. A bin without a true molecule keeps its
row with n_true = 0; a ratio with a zero denominator is NaN.

:func:`plot_depth` draws the table (RMSE with the bound dashed, bias, recall against z);
:func:`write_depth` is the rule's edge: molecule Parquet in, TSV and PNG out.
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
    "CRLB_DEPTH_COLUMNS",
    "DEFAULT_BIN_NM",
    "DEPTH_COLUMNS",
    "depth_edges",
    "depth_table",
    "plot_depth",
    "read_depth",
    "write_depth",
]

log = logging.getLogger(__name__)

#: the depth bin width of the workflow (config ``evaluate.depth_bin_nm`` where the schema has it)
DEFAULT_BIN_NM = 100.0

#: columns of every depth table, in order
DEPTH_COLUMNS = (
    "z_lo_nm",
    "z_hi_nm",
    "z_nm",
    "n_true",
    "n_matched",
    "recall",
    "rmse_lateral_nm",
    "rmse_axial_nm",
    "rmse_x_nm",
    "rmse_y_nm",
    "bias_x_nm",
    "bias_y_nm",
    "bias_z_nm",
)
#: columns that follow where the molecules carry their Cramér-Rao bound
CRLB_DEPTH_COLUMNS = (
    "crlb_x_nm",
    "crlb_y_nm",
    "crlb_z_nm",
    "crlb_lateral_nm",
    "rmse_to_crlb_lateral",
    "rmse_to_crlb_z",
    "crlb_unbounded",
)
#: the per-molecule columns the table is made from
MOLECULE_COLUMNS = ("z_nm", "matched", "dx_nm", "dy_nm", "dz_nm")
_CRLB_INPUT = ("crlb_x_nm", "crlb_y_nm", "crlb_z_nm")


def depth_edges(z_min_nm: float, z_max_nm: float, bin_nm: float = DEFAULT_BIN_NM) -> np.ndarray:
    """Bin edges at multiples of ``bin_nm`` from below ``z_min_nm`` to at or above
    ``z_max_nm`` (at least one bin; a value on the top edge falls in the last bin)."""
    if not bin_nm > 0 or not math.isfinite(bin_nm):
        raise ValueError(f"depth bin width must be a positive number of nm, not {bin_nm!r}")
    lo = math.floor(z_min_nm / bin_nm)
    hi = max(math.ceil(z_max_nm / bin_nm), lo + 1)
    return bin_nm * np.arange(lo, hi + 1, dtype=np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def depth_table(
    molecules: pd.DataFrame, *, bin_nm: float = DEFAULT_BIN_NM, z_range_nm: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Accuracy per bin of true z (module docstring): :data:`DEPTH_COLUMNS`, then
    :data:`CRLB_DEPTH_COLUMNS` when ``molecules`` has ``crlb_{x,y,z}_nm``.

    ``molecules`` has one row per true molecule with :data:`MOLECULE_COLUMNS` (the errors
    are read only where ``matched``). ``z_range_nm`` fixes the binned range (truths outside
    it are left out), e.g. to compare runs bin by bin; by default it is the truths' range.
    No molecule and no range: an empty table with the columns.
    """
    missing = [c for c in MOLECULE_COLUMNS if c not in molecules.columns]
    if missing:
        raise ValueError(f"molecule table lacks column(s) {', '.join(missing)}")
    has_crlb = all(c in molecules.columns for c in _CRLB_INPUT)
    columns = [*DEPTH_COLUMNS, *(CRLB_DEPTH_COLUMNS if has_crlb else ())]
    z = molecules["z_nm"].to_numpy(np.float64)
    if z_range_nm is None:
        finite = z[np.isfinite(z)]
        if not len(finite):
            return pd.DataFrame({c: pd.Series(dtype=np.float64) for c in columns})
        z_range_nm = (float(finite.min()), float(finite.max()))
    edges = depth_edges(*z_range_nm, bin_nm)
    n_bins = len(edges) - 1
    inside = np.isfinite(z) & (z >= z_range_nm[0]) & (z <= z_range_nm[1])
    idx = np.clip(np.floor((z - edges[0]) / bin_nm), 0, n_bins - 1)
    idx = np.where(inside, idx, 0).astype(np.int64)
    matched = molecules["matched"].to_numpy(bool) & inside
    d = molecules[["dx_nm", "dy_nm", "dz_nm"]].to_numpy(np.float64)[matched]
    im = idx[matched]

    def per_bin(weights: np.ndarray | None, which: np.ndarray = im) -> np.ndarray:
        return np.bincount(which, weights=weights, minlength=n_bins).astype(np.float64)

    n_true = per_bin(None, idx[inside])
    n_matched = per_bin(None)
    sq = [per_bin(d[:, a] ** 2) for a in range(3)]
    out: dict[str, np.ndarray] = {
        "z_lo_nm": edges[:-1],
        "z_hi_nm": edges[1:],
        "z_nm": (edges[:-1] + edges[1:]) / 2.0,
        "n_true": n_true.astype(np.int64),
        "n_matched": n_matched.astype(np.int64),
        "recall": _ratio(n_matched, n_true),
        "rmse_lateral_nm": np.sqrt(_ratio(sq[0] + sq[1], n_matched)),
        "rmse_axial_nm": np.sqrt(_ratio(sq[2], n_matched)),
        "rmse_x_nm": np.sqrt(_ratio(sq[0], n_matched)),
        "rmse_y_nm": np.sqrt(_ratio(sq[1], n_matched)),
    }
    for a, axis in enumerate("xyz"):
        out[f"bias_{axis}_nm"] = _ratio(per_bin(d[:, a]), n_matched)
    if has_crlb:
        std = molecules[list(_CRLB_INPUT)].to_numpy(np.float64)[matched]
        bounded = np.isfinite(std).all(axis=1)
        n_bounded = per_bin(None, im[bounded])
        var = [_ratio(per_bin(std[bounded, a] ** 2, im[bounded]), n_bounded) for a in range(3)]
        out |= {f"crlb_{axis}_nm": np.sqrt(var[a]) for a, axis in enumerate("xyz")}
        out["crlb_lateral_nm"] = np.sqrt(var[0] + var[1])
        out["rmse_to_crlb_lateral"] = _ratio(out["rmse_lateral_nm"], out["crlb_lateral_nm"])
        out["rmse_to_crlb_z"] = _ratio(out["rmse_axial_nm"], out["crlb_z_nm"])
        out["crlb_unbounded"] = (n_matched - n_bounded).astype(np.int64)
    return pd.DataFrame(out, columns=columns)


# ------------------------------------------------------------------ figure

AXIS_COLOURS = {"x": "C0", "y": "C1", "z": "C3"}


def _save(fig, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_depth(table: pd.DataFrame, path: str | Path, *, title: str = "") -> None:
    """Three panels against true z: (a) RMSE lateral and axial, sqrt(mean CRLB) dashed where
    the table has it; (b) mean bias per axis (z bold); (c) recall, with the number of true
    molecules per bin as grey bars (right axis)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_r, ax_b, ax_c = fig.subplots(1, 3)
    z = table["z_nm"].to_numpy(np.float64)
    lat, ax_colour = AXIS_COLOURS["x"], AXIS_COLOURS["z"]
    ax_r.plot(z, table["rmse_lateral_nm"], "o-", color=lat, ms=4, label="RMSE lateral")
    ax_r.plot(z, table["rmse_axial_nm"], "s-", color=ax_colour, ms=4, label="RMSE axial")
    if "crlb_lateral_nm" in table.columns:
        ax_r.plot(z, table["crlb_lateral_nm"], "--", color=lat, label="√CRLB lateral")
        ax_r.plot(z, table["crlb_z_nm"], "--", color=ax_colour, label="√CRLB z")
    for axis in "xyz":
        bold = axis == "z"
        ax_b.plot(
            z,
            table[f"bias_{axis}_nm"],
            "o-" if bold else ".-",
            color=AXIS_COLOURS[axis],
            lw=2.0 if bold else 1.0,
            ms=4,
            alpha=1.0 if bold else 0.7,
            label=f"bias {axis}",
        )
    ax_b.axhline(0, color="0.5", lw=0.8)
    ax_c.plot(z, table["recall"], "o-", color="C2", ms=4, label="recall")
    if len(table):
        width = float((table["z_hi_nm"] - table["z_lo_nm"]).iloc[0])
        ax_n = ax_c.twinx()
        ax_n.bar(z, table["n_true"], width=0.9 * width, color="0.85", zorder=0)
        ax_n.set_ylabel("true molecules per bin", color="0.45")
        ax_c.set_zorder(ax_n.get_zorder() + 1)
        ax_c.patch.set_visible(False)
    else:
        for ax in (ax_r, ax_b, ax_c):
            ax.text(0.5, 0.5, "no true molecules", ha="center", va="center", transform=ax.transAxes)
    ax_r.set(xlabel="true z (nm)", ylabel="RMSE of matched pairs (nm)", title="(a) RMSE and bound")
    ax_r.set_ylim(bottom=0)
    ax_b.set(xlabel="true z (nm)", ylabel="mean error, estimate − truth (nm)", title="(b) bias")
    ax_c.set(xlabel="true z (nm)", ylabel="recall (matched / true)", ylim=(0, 1.05), title="(c) recall")
    for ax in (ax_r, ax_b, ax_c):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    _save(fig, path)


# ------------------------------------------------------------------ files


def read_depth(path: str | Path) -> pd.DataFrame:
    """A depth TSV written by :func:`write_depth`; InputError naming the file otherwise."""
    try:
        table = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable depth table ({exc})".splitlines()[0]) from None
    missing = [c for c in DEPTH_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(f"{path}: depth table lacks column(s) {', '.join(missing)}")
    return table


def write_depth(
    molecules_path: str | Path,
    out_tsv: str | Path,
    out_png: str | Path | None = None,
    *,
    bin_nm: float = DEFAULT_BIN_NM,
    movie: str = "",
) -> pd.DataFrame:
    """:func:`depth_table` of a per-molecule Parquet, written as TSV (and :func:`plot_depth`
    as PNG); returns the table."""
    try:
        molecules = pd.read_parquet(molecules_path)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{molecules_path}: cannot read the molecule table ({exc})".splitlines()[0]
        ) from None
    missing = [c for c in MOLECULE_COLUMNS if c not in molecules.columns]
    if missing:
        raise InputError(f"{molecules_path}: molecule table lacks column(s) {', '.join(missing)}")
    table = depth_table(molecules, bin_nm=bin_nm)
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    if out_png is not None:
        name = f"{movie}: " if movie else ""
        plot_depth(table, out_png, title=f"{name}accuracy against true z ({bin_nm:g} nm bins)")
    worst = table["rmse_axial_nm"].max() if len(table) else math.nan
    log.info(
        "%s: %d depth bins of %g nm over z %s; largest axial RMSE in a bin %.1f nm, |bias z| up to %.1f nm",
        movie or molecules_path,
        len(table),
        bin_nm,
        f"{table['z_lo_nm'].min():g}..{table['z_hi_nm'].max():g} nm" if len(table) else "(none)",
        worst,
        table["bias_z_nm"].abs().max() if len(table) else math.nan,
    )
    return table
