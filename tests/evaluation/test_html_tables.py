"""HTML pages of the evaluation tables (voxloc.evaluation.html_tables) for the Snakemake report.

Every value of the TSV must be on the page, rounded no more than its unit says, and the
headline columns (Jaccard, RMSE, CRLB, efficiency) must be in the first table.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from voxloc.errors import InputError
from voxloc.evaluation import evaluate, html_tables, sweeps
from voxloc.evaluation.matching import match_tables, summary


class Tables(HTMLParser):
    """The cells of a page: table class -> rows -> [(data-column, text)]."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self._table: str | None = None
        self._cell: tuple[str, list[str]] | None = None
        self._in_th = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("class", "")
            self.tables[self._table], self.headers[self._table] = [], []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = (a.get("data-column", ""), [])
        elif tag == "th":
            self._in_th = True
            self.headers[self._table].append("")

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1].append(data)
        elif self._in_th:
            self.headers[self._table][-1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append((self._cell[0], "".join(self._cell[1])))
            self._cell = None
        elif tag == "th":
            self._in_th = False
        elif tag == "table":
            self._table = None


def parse(path: Path) -> Tables:
    page = Tables()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def shown_equals(text: str, value: object) -> bool:
    """Whether a cell's text shows the TSV value: rounded to the decimals it shows (counts
    and other whole numbers exactly), NaN as "–", text as it is."""
    if isinstance(value, float) and math.isnan(value):
        return text == html_tables.MISSING
    if isinstance(value, str | bool | np.bool_):
        return text == str(value)
    shown, value = float(text.replace(",", "").replace("−", "-")), float(value)
    if "e" in text:
        return math.isclose(shown, value, rel_tol=5e-4)
    decimals = len(text.split(".")[1]) if "." in text else 0
    if not decimals and value.is_integer():
        return shown == value
    return abs(shown - value) <= 0.5 * 10.0**-decimals * (1 + 1e-9)


def assert_page_has_the_tsv(tsv: Path, page_path: Path) -> pd.DataFrame:
    table = pd.read_csv(tsv, sep="\t")
    page = parse(page_path)
    rows = [r for r in page.tables["all"] if r]  # the header rows have no <td>
    assert [r[0][1].split()[-1] for r in rows] == list(table.columns)  # label, then the name
    for (column, values), row in zip(table.items(), rows, strict=True):
        cells = row[2:]  # label, unit, then one value per row of the TSV
        assert len(cells) == len(table)
        for value, (data_column, text) in zip(values.tolist(), cells, strict=True):
            assert data_column == column
            assert shown_equals(text, value), (column, value, text)
    return table


def assert_headline(page_path: Path, table: pd.DataFrame, columns: list[str]) -> None:
    page = parse(page_path)
    rows = [r for r in page.tables["headline"] if r]
    assert len(rows) == len(table)
    for row, (_, record) in zip(rows, table.iterrows(), strict=True):
        cells = dict(row)
        for c in columns:
            assert shown_equals(cells[c], record[c]), (c, record[c], cells[c])


def summary_row(movie: str, shift_nm: float, rng) -> dict:
    truth = pd.DataFrame({"frame": np.repeat(np.arange(20), 5)})
    for c in ("x_nm", "y_nm", "z_nm"):
        truth[c] = rng.uniform(0, 5000, len(truth))
    est = truth.iloc[:90].copy()
    est[["x_nm", "y_nm", "z_nm"]] += rng.normal(0, shift_nm, (90, 3))
    est = pd.concat([est, truth.iloc[:3].assign(x_nm=lambda d: d.x_nm + 2000)], ignore_index=True)
    match = match_tables(est, truth, lateral_nm=250, axial_nm=500)
    row = {"movie": movie, **summary(est, truth, match).to_dict()}
    row |= {"crlb_x_nm": 6.83, "crlb_y_nm": 6.79, "crlb_z_nm": 15.21, "crlb_lateral_nm": 9.63}
    row |= {f"rmse_to_crlb_{a}": row[k] / row[f"crlb_{a}_nm"] for a, k in (("x", "rmse_x_nm"), ("y", "rmse_y_nm"), ("z", "rmse_axial_nm"), ("lateral", "rmse_lateral_nm"))}  # fmt: skip
    row |= {"crlb_unbounded": 0, "crlb_source": "ground truth"}
    return row | {"lateral_tolerance_nm": 250.0, "axial_tolerance_nm": 500.0}


def test_summary_page_shows_every_number_of_the_tsv(tmp_path):
    rng = np.random.default_rng(0)
    csvs = []
    for movie, shift in (("demo1", 30.0), ("demo2", 45.0)):
        csvs.append(tmp_path / f"{movie}.csv")
        pd.DataFrame([summary_row(movie, shift, rng)]).to_csv(csvs[-1], index=False)
    tsv, page = tmp_path / "summary.tsv", tmp_path / "summary.html"
    evaluate.collect_summaries(csvs, tsv)  # as the rule writes it (4 significant digits)
    html_tables.write_html_table(tsv, page, "summary")
    table = assert_page_has_the_tsv(tsv, page)
    glance = ["jaccard", "rmse_lateral_nm", "rmse_axial_nm", "bias_x_nm", "bias_y_nm", "bias_z_nm"]
    glance += ["crlb_lateral_nm", "rmse_to_crlb_lateral"]
    assert_headline(page, table, [*glance, "efficiency_lateral", "efficiency_axial", "efficiency_3d"])
    headers = parse(page).headers["headline"]
    assert {"Jaccard", "RMSEnm", "lateral", "3-D", "CRLBnm", "RMSE / CRLB×", "efficiency%"} <= set(headers)
    assert {"biasnm", "x", "y", "z"} <= set(headers)
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "summary.tsv" in text
    assert not list(tmp_path.glob(".*tmp*"))


def test_rounding_follows_the_unit():
    f = html_tables.format_value
    assert f("jaccard", 0.78649) == "0.786" and f("rmse_lateral_nm", 41.63) == "41.6"
    assert f("rmse_to_crlb_x", 4.2345) == "4.23" and f("efficiency_3d", 61.26) == "61.3"
    assert f("tp", 8871) == "8,871" and f("tau", 0.5) == "0.5" and f("seconds", 12.3456) == "12.35"
    assert f("jaccard", float("nan")) == "–" and f("movie", "demo1") == "demo1"
    assert f("warmup_s", 12345.6) == "12,346"  # never 1.235e+04
    assert html_tables.column_label("rmse_lateral_nm") == ("RMSE lateral", "nm")
    assert html_tables.column_label("density_per_um2") == ("density", "µm⁻²")


def test_voxel_page_and_undefined_values(tmp_path):
    table = pd.DataFrame(
        {
            "tau": [0.5, 0.9],
            "tp": [1234567, 0],
            "fp": [2345, 0],
            "fn": [3456, 0],
            "tn": [987654321, 1000],
            "jaccard": [0.853214, float("nan")],  # 0.9: nothing to find and nothing found
            "precision": [0.998, float("nan")],
            "recall": [0.855, float("nan")],
            "n_frames": [100, 100],
            "n_molecules": [5000, 5000],  # over all frames of the shards
        }
    )
    tsv, page = tmp_path / "quick.tsv", tmp_path / "quick.html"
    table.to_csv(tsv, sep="\t", index=False, float_format="%.4g")
    html_tables.write_html_table(tsv, page, "voxels", title="model quick")
    assert_page_has_the_tsv(tsv, page)
    assert_headline(page, pd.read_csv(tsv, sep="\t"), ["tau", "jaccard", "tp", "fp", "fn"])
    names = parse(page).headers["all"]
    assert names[:4] == ["column", "unit", "τ = 0.5", "τ = 0.9"]
    assert 'class="missing num"' in page.read_text(encoding="utf-8")
    labels = [row[0][1] for row in parse(page).tables["all"] if row]
    assert "molecules n_molecules" in labels and "FP adjacent 1 fp_adjacent1" not in labels
    assert html_tables.column_label("fp_adjacent1") == ("FP adjacent 1", "")
    assert html_tables.column_label("n_molecules", "density") == ("M", "per frame")


def test_density_and_speed_pages(tmp_path):
    rng = np.random.default_rng(1)
    rows = []
    for m in (10, 50):
        for tau in (0.5, 0.9):
            s = summary_row("x", 20.0 + m / 5, rng)
            s = {k: v for k, v in s.items() if k not in ("movie", "crlb_source") and not k.startswith(("crlb", "rmse_to", "lateral_t", "axial_t"))}  # fmt: skip
            voxel = {"voxel_tp": 400 + m, "voxel_fp": 30, "voxel_fn": 20, "voxel_tn": 1_600_000}
            rows.append(
                {"n_molecules": m, "density_per_um2": m / 150.99, "tau": tau, "frames": 3, **voxel}
                | {"voxel_jaccard": 400 / 450, "voxel_collisions": 1, **s, "sd_x_nm": 21.37, "sd_y_nm": 22.0}
                | {"sd_z_nm": float("nan")}
            )
    tsv, page = tmp_path / "quick.tsv", tmp_path / "quick.html"
    sweeps.write_tsv(pd.DataFrame(rows), tsv)  # as the rule writes it (6 significant digits)
    html_tables.write_html_table(tsv, page, "density")
    table = assert_page_has_the_tsv(tsv, page)
    assert_headline(page, table, ["n_molecules", "tau", "voxel_jaccard", "jaccard", "rmse_lateral_nm"])
    assert parse(page).headers["all"][2] == "M = 10, τ = 0.5"

    speed = pd.DataFrame(
        {
            "size_px": [16, 256],
            "frames": [512, 32],
            "molecules_per_frame": [3, 750],
            "movie_mb": [1.05, 16.78],
            "seconds": [0.8123, 14.5],
            "frames_per_s": [630.3, 2.207],
            "localizations": [1500, 22000],
            "localizations_per_s": [1846.6, 1517.2],
            "warmup_s": [0.21, 1.3],
            "batch_frames": [8, 8],
            "device": ["cpu", "cpu"],
            "device_name": ["AMD EPYC 9654 96-Core Processor"] * 2,
            "threads": [2, 2],
        }
    )
    sweeps.write_tsv(speed, tmp_path / "speed.tsv")
    html_tables.write_html_table(tmp_path / "speed.tsv", tmp_path / "speed.html", "speed")
    assert_page_has_the_tsv(tmp_path / "speed.tsv", tmp_path / "speed.html")
    assert "AMD EPYC 9654 96-Core Processor" in (tmp_path / "speed.html").read_text(encoding="utf-8")


def test_an_empty_table_gives_a_page_and_a_bad_file_one_line(tmp_path):
    (tmp_path / "empty.tsv").write_text("\n")
    html_tables.write_html_table(tmp_path / "empty.tsv", tmp_path / "empty.html", "summary")
    assert "no rows" in (tmp_path / "empty.html").read_text(encoding="utf-8")
    with pytest.raises(InputError, match=r"^\S*missing.tsv: not a readable TSV table") as info:
        html_tables.write_html_table(tmp_path / "missing.tsv", tmp_path / "m.html", "summary")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.html").exists()
    with pytest.raises(ValueError, match="unknown table kind 'nope'"):
        html_tables.write_html_table(tmp_path / "empty.tsv", tmp_path / "e.html", "nope")


def test_summary_labels_with_and_without_the_fit_and_the_coverage(tmp_path):
    rng = np.random.default_rng(1)
    row = summary_row("demo1", 30.0, rng)
    row |= {"rmse_lateral_net_nm": 52.25, "rmse_axial_net_nm": 71.3, "rmse_to_crlb_lateral_net": 5.43}
    row |= {"rmse_to_crlb_z_net": 4.7, "tp_fitted": 90, "coverage_x": 0.68349, "coverage_y": 0.7}
    row |= {"coverage_z": 0.5, "coverage_2sigma_x": 0.95, "sigma_excluded_x": 3}
    csv, tsv, page = tmp_path / "demo1.csv", tmp_path / "summary.tsv", tmp_path / "summary.html"
    pd.DataFrame([row]).to_csv(csv, index=False)
    evaluate.collect_summaries([csv], tsv)
    html_tables.write_html_table(tsv, page, "summary")
    table = assert_page_has_the_tsv(tsv, page)
    glance = ["rmse_lateral_nm", "rmse_lateral_net_nm", "rmse_axial_net_nm", "rmse_to_crlb_lateral_net"]
    assert_headline(page, table, [*glance, "rmse_to_crlb_z_net", "coverage_x", "coverage_y", "coverage_z"])
    headers = parse(page).headers["headline"]
    assert {"lateral (network)", "axial (network)", "z (network)"} <= set(headers)
    assert "|error| ≤ σideal 0.683" in headers  # the coverage group, its ideal as the unit
    label = html_tables.column_label
    assert label("rmse_to_crlb_lateral_net") == ("RMSE / CRLB lateral (network)", "×")
    assert label("rmse_x_net_nm") == ("RMSE x (network)", "nm")
    assert label("coverage_z") == ("|error| ≤ σz", "fraction (ideal 0.683)")
    assert html_tables.format_value("coverage_x", 0.68349) == "0.683"
