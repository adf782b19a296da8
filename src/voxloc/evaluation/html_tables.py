"""The evaluation tables as HTML pages for the Snakemake report.

Snakemake's report offers a TSV only for download, so its numbers never appear on the page;
an ``.html`` result is shown in the report itself. :func:`write_html_table` turns one of
the evaluation TSVs (the movie summary, the voxel Tables 4-5, the density and the speed
sweep) into a self-contained page (inline style, no script): first a table of the headline
columns of that kind of table (:data:`KINDS`: Jaccard, RMSE, bias, CRLB, efficiency, ...), then
every column of the TSV, one row per column, with its unit and its value for each row of
the TSV. Values are rounded to what their unit resolves (:func:`format_value`: fractions to
3 decimals, nm to 0.1 nm, ratios to 0.01, counts in full); a value that is not defined
(NaN: no matched pair, a zero denominator) is shown as "–".
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from voxloc.errors import InputError
from voxloc.io import atomic_output

__all__ = ["KINDS", "TableKind", "column_label", "format_value", "html_table", "write_html_table"]

#: how an undefined value (NaN) is shown
MISSING = "–"


@dataclass(frozen=True)
class TableKind:
    """One kind of evaluation table: its title, its headline columns (those present are
    shown first), and the columns that name a row (headers of the full table)."""

    title: str
    headline: tuple[str, ...]
    row_name: tuple[str, ...]
    labels: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # over LABELS


KINDS: dict[str, TableKind] = {
    "summary": TableKind(
        "Localization accuracy per movie",
        tuple(
            "movie n_est n_true jaccard precision recall rmse_lateral_nm rmse_axial_nm rmse_3d_nm "
            "rmse_lateral_net_nm rmse_axial_net_nm "
            "bias_x_nm bias_y_nm bias_z_nm crlb_lateral_nm crlb_z_nm rmse_to_crlb_lateral rmse_to_crlb_z "
            "rmse_to_crlb_lateral_net rmse_to_crlb_z_net coverage_x coverage_y coverage_z efficiency_lateral "
            "efficiency_axial efficiency_3d".split()
        ),
        ("movie",),
    ),
    "voxels": TableKind(
        "Voxel classification on the validation shards (Tables 4-5)",
        tuple(
            "tau jaccard precision recall tp fp fn fp_adjacent1 fn_adjacent1 fp_nonadjacent "
            "fn_nonadjacent".split()
        ),
        ("tau",),
        # totals over the shards, not per frame
        {
            "n_molecules": ("molecules", ""),
            "n_frames": ("frames", ""),
            "n_collisions": ("voxel collisions", ""),
        },
    ),
    "density": TableKind(
        "Density sweep (Figs. 7-8)",
        tuple(
            "n_molecules density_per_um2 tau voxel_jaccard jaccard precision recall "
            "rmse_lateral_nm rmse_axial_nm efficiency_3d".split()
        ),
        ("n_molecules", "tau"),
    ),
    "speed": TableKind(
        "Localization speed (Fig. 9)",
        tuple("size_px frames seconds frames_per_s localizations_per_s batch_frames device".split()),
        ("size_px",),
    ),
}

#: column -> (label, unit) where the name alone does not say it well
LABELS: dict[str, tuple[str, str]] = {
    "movie": ("movie", ""),
    "n_est": ("localizations", ""),
    "n_true": ("true molecules", ""),
    "tp": ("TP", ""),
    "fp": ("FP", ""),
    "fn": ("FN", ""),
    "tn": ("TN", ""),
    "jaccard": ("Jaccard", ""),
    "voxel_jaccard": ("voxel Jaccard", ""),
    "tau": ("τ", ""),
    "n_molecules": ("M", "per frame"),
    "density_per_um2": ("density", "µm⁻²"),
    "crlb_unbounded": ("molecules without a finite CRLB", ""),
    "crlb_source": ("CRLB physics", ""),
    "size_px": ("S", "px"),
    "movie_mb": ("movie", "MB"),
    "frames_per_s": ("speed", "frames/s"),
    "localizations_per_s": ("localizations", "per s"),
    "seconds": ("time", "s"),
    "warmup_s": ("warm-up", "s"),
    "batch_frames": ("batch", "frames"),
    "threads": ("CPU threads", ""),
    "tp_fitted": ("TP refined by the fit", ""),
}
# the reported σ's coverage (voxloc.evaluation.uncertainty): fractions of the matched pairs
for _axis in "xyz":
    LABELS[f"coverage_{_axis}"] = (f"|error| ≤ σ{_axis}", "fraction (ideal 0.683)")
    LABELS[f"coverage_2sigma_{_axis}"] = (f"|error| ≤ 2σ{_axis}", "fraction (ideal 0.954)")
    LABELS[f"sigma_excluded_{_axis}"] = (f"matched without a finite σ{_axis}", "")


#: words of column names as they are written in a label
WORDS = {"rmse": "RMSE", "crlb": "CRLB", "sd": "SD", "3d": "3-D", "tp": "TP", "fp": "FP", "fn": "FN"}
WORDS |= {"tn": "TN", "adjacent1": "adjacent 1", "adjacent2": "adjacent 2", "nonadjacent": "non-adjacent"}
WORDS |= {"net": "(network)"}  # the network's own position, without the per-molecule fit


def column_label(column: str, kind: str | None = None) -> tuple[str, str]:
    """(label, unit) of a column: the kind's own labels, :data:`LABELS`, else from its
    name (``_nm`` is nm, ``rmse`` RMSE, ...)."""
    own = KINDS[kind].labels if kind in KINDS else {}
    if column in own:
        return own[column]
    if column in LABELS:
        return LABELS[column]
    unit = ""
    if column.startswith("rmse_to_crlb_"):
        words = column.removeprefix("rmse_to_crlb_").split("_")
        return f"RMSE / CRLB {' '.join(WORDS.get(w, w) for w in words)}", "×"
    if column.startswith("efficiency_"):
        return f"efficiency {WORDS.get(column.removeprefix('efficiency_'), column[11:])}", "%"
    words = column
    if column.endswith("_nm"):
        words, unit = column[:-3], "nm"
    return " ".join(WORDS.get(w, w) for w in words.split("_")), unit


def _decimals(column: str) -> int | None:
    """Decimals a float column is shown with; None: 4 significant digits."""
    if column in ("jaccard", "precision", "recall", "voxel_jaccard") or column.startswith("coverage_"):
        return 3
    if column.startswith("rmse_to_crlb_") or column in ("density_per_um2", "movie_mb"):
        return 2
    if column.endswith("_nm") or column.startswith("efficiency_") or column.endswith("_per_s"):
        return 1
    return None


def format_value(column: str, value: object) -> str:
    """A TSV value as shown: text as it is, counts with thousands separators, floats rounded
    by their column (:func:`_decimals`; τ and other plain settings as given), NaN as "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and _decimals(column) is None
    ):
        return f"{int(value):,}"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    digits = _decimals(column)
    if digits is not None:
        return f"{value:,.{digits}f}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"  # 4 digits, never 1e+04


STYLE = """
body { font: 13px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1e293b;
       margin: 1.2em; background: #fff; }
h1 { font-size: 1.25em; margin: 0 0 0.2em; }
h2 { font-size: 1.05em; margin: 1.4em 0 0.4em; }
p.source { color: #64748b; margin: 0 0 0.8em; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.5em; border-bottom: 1px solid #e2e8f0; }
th { background: #f1f5f9; text-align: center; vertical-align: bottom; }
table.headline th { max-width: 6.5em; }
th.group { border-bottom: 1px solid #cbd5e1; }
th .unit { display: block; font-weight: normal; color: #64748b; font-size: 0.85em; }
td.num { text-align: right; }
td.text, th.name { text-align: left; }
tr:nth-child(even) td { background: #f8fafc; }
td.missing { color: #94a3b8; }
code { font-size: 0.85em; color: #64748b; }
"""


def _cell(column: str, value: object, tag: str = "td") -> str:
    text = format_value(column, value)
    numeric = not isinstance(value, str)
    cls = "missing num" if text == MISSING else ("num" if numeric else "text")
    return f'<{tag} class="{cls}" data-column="{html.escape(column)}">{html.escape(text)}</{tag}>'


def _header(column: str, kind: str, label: str | None = None, unit: str | None = None, span: str = "") -> str:
    default_label, default_unit = column_label(column, kind)
    label = default_label if label is None else label
    unit = default_unit if unit is None else unit
    unit_html = f'<span class="unit">{html.escape(unit)}</span>' if unit else ""
    return f'<th{span} title="{html.escape(column)}">{html.escape(label)}{unit_html}</th>'


#: headline columns shown under one heading: prefix -> (heading, unit); the longest first
HEADLINE_GROUPS = (
    ("rmse_to_crlb_", "RMSE / CRLB", "×"),
    ("rmse_", "RMSE", "nm"),
    ("bias_", "bias", "nm"),
    ("crlb_", "CRLB", "nm"),
    ("efficiency_", "efficiency", "%"),
    ("coverage_2sigma_", "|error| ≤ 2σ", "ideal 0.954"),
    ("coverage_", "|error| ≤ σ", "ideal 0.683"),
)


def _group(column: str) -> tuple[str, str, str] | None:
    """(heading, unit, sub-label) of a headline column under a group heading, else None."""
    for prefix, heading, unit in HEADLINE_GROUPS:
        if column.startswith(prefix):
            sub = column.removeprefix(prefix).removesuffix("_nm").replace("3d", "3-D")
            sub = sub.replace("_net", " (network)")
            return heading, unit, sub
    return None


def _headline_header(columns: Sequence[str], kind: str) -> str:
    """Two header rows: a group's heading over its columns (RMSE: lateral, axial, 3-D...),
    the other columns spanning both rows; narrow enough for the report's frame."""
    top, bottom = [], []
    i = 0
    while i < len(columns):
        group = _group(columns[i])
        if group is None:
            top.append(_header(columns[i], kind, span=' rowspan="2"'))
            i += 1
            continue
        j = i
        while j < len(columns) and (g := _group(columns[j])) is not None and g[:2] == group[:2]:
            bottom.append(_header(columns[j], kind, label=g[2], unit=""))
            j += 1
        unit = f'<span class="unit">{html.escape(group[1])}</span>'
        top.append(f'<th colspan="{j - i}" class="group">{html.escape(group[0])}{unit}</th>')
        i = j
    return f"<thead><tr>{''.join(top)}</tr>\n<tr>{''.join(bottom)}</tr></thead>"


def _row_names(table: pd.DataFrame, columns: Sequence[str], kind: str) -> list[str]:
    names = []
    for i, row in enumerate(table.to_dict("records")):
        parts = []
        for c in columns:
            if c in row:
                label, unit = column_label(c, kind)
                unit = f" {unit}" if unit and unit != "per frame" else ""
                parts.append(f"{label} = {format_value(c, row[c])}{unit}")
        names.append(", ".join(parts) or f"row {i + 1}")
    return names


def html_table(table: pd.DataFrame, kind: str, *, title: str | None = None, source: str = "") -> str:
    """The HTML page of an evaluation table of ``kind`` (a key of :data:`KINDS`)."""
    spec = KINDS[kind]
    title = title or spec.title
    records = table.to_dict("records")
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if source:
        parts.append(f'<p class="source">From <code>{html.escape(source)}</code>: {len(table)} rows.</p>')
    if not records:
        parts.append("<p>The table has no rows.</p>\n</body>\n</html>\n")
        return "\n".join(parts)
    headline = [c for c in spec.headline if c in table.columns]
    parts.append('<h2>At a glance</h2>\n<table class="headline">')
    parts.append(_headline_header(headline, kind) + "\n<tbody>")
    for row in records:
        parts.append("<tr>" + "".join(_cell(c, row[c]) for c in headline) + "</tr>")
    parts.append("</tbody></table>")
    parts.append('<h2>All columns</h2>\n<table class="all">')
    names = "".join(f"<th>{html.escape(n)}</th>" for n in _row_names(table, spec.row_name, kind))
    parts.append(f'<thead><tr><th class="name">column</th><th>unit</th>{names}</tr></thead>\n<tbody>')
    for c in table.columns:
        label, unit = column_label(c, kind)
        head = f'<td class="text">{html.escape(label)} <code>{html.escape(str(c))}</code></td>'
        cells = "".join(_cell(str(c), row[c]) for row in records)
        parts.append(
            f'<tr data-column="{html.escape(str(c))}">{head}<td class="text">{html.escape(unit)}</td>{cells}</tr>'
        )
    parts.append("</tbody></table>\n</body>\n</html>\n")
    return "\n".join(parts)


def read_tsv(path: str | Path) -> pd.DataFrame:
    """An evaluation TSV; InputError naming the file when it cannot be read."""
    try:
        return pd.read_csv(path, sep="\t")
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable TSV table ({exc})".splitlines()[0]) from None


def write_html_table(
    tsv: str | Path, out_html: str | Path, kind: str, *, title: str | None = None
) -> pd.DataFrame:
    """Write the HTML page (:func:`html_table`) of the evaluation TSV ``tsv`` atomically, with
    the numbers as the TSV has them; returns the table read."""
    if kind not in KINDS:
        raise ValueError(f"unknown table kind {kind!r}; one of {sorted(KINDS)}")
    table = read_tsv(tsv)
    page = html_table(table, kind, title=title, source=str(tsv))
    with atomic_output(out_html) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return table
