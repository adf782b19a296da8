"""Exports of a localization table: Picasso's HDF5 + YAML and ThunderSTORM's CSV."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from voxloc import exports, locs

S = 100.0  # px_size_nm
W, H, T = 32, 24, 9
LP = 19.2  # the nominal lateral precision of rows without a fit
NOT_FITTED = locs.FIT_FLAGS["not_fitted"]
META = {"px_size_nm": S, "width_px": W, "height_px": H, "n_frames": T, "tau": 0.5}
TS_HEADER = (
    '"id","frame","x [nm]","y [nm]","z [nm]","intensity [photon]","offset [photon]",'
    '"uncertainty_xy [nm]","uncertainty_z [nm]"'
)


def loc_frame(n: int, seed: int = 0) -> pd.DataFrame:
    """A fitted localization table of n rows (every column of LOC_SCHEMA)."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    col = rng.integers(0, W, n)
    row = rng.integers(0, H, n)
    table = pd.DataFrame(
        {
            "frame": np.sort(rng.integers(0, T, n)).astype(np.int32),
            "x_nm": ((col + rng.uniform(0, 1, n)) * S).astype(f32),
            "y_nm": ((row + rng.uniform(0, 1, n)) * S).astype(f32),
            "z_nm": rng.uniform(-200, 1400, n).astype(f32),
            "prob": rng.uniform(0.5, 1, n).astype(f32),
            "plane": rng.integers(0, 4, n).astype(np.int16),
            "row": row.astype(np.int32),
            "col": col.astype(np.int32),
        }
    )
    for axis in "xyz":
        table[f"{axis}_net_nm"] = table[f"{axis}_nm"]
    table["photons"] = rng.uniform(200, 20000, n).astype(f32)
    table["bg"] = rng.uniform(1, 50, n).astype(f32)
    table["sigma_x_nm"] = rng.uniform(3, 40, n).astype(f32)
    table["sigma_y_nm"] = rng.uniform(3, 40, n).astype(f32)
    table["sigma_z_nm"] = rng.uniform(10, 90, n).astype(f32)
    table["chi2_dof"] = rng.uniform(0.8, 1.5, n).astype(f32)
    table["n_iter"] = rng.integers(1, 30, n).astype(np.int16)
    table["converged"] = True
    table["fit_flags"] = np.zeros(n, np.int16)
    return table


def write_table(path, table: pd.DataFrame, row_group_rows: int = 8) -> None:
    """A localization Parquet as the workflow writes it: LOC_SCHEMA, the metadata the exports
    read, several row groups."""
    arrow = locs.to_arrow(table)
    pq.write_table(
        arrow.replace_schema_metadata(locs.encode_metadata(META)), path, row_group_size=row_group_rows
    )


@pytest.fixture
def table_file(tmp_path):
    """23 rows: rows 3, 10, 17 without a fit (localize.fit: none), row 5 fitted but with a
    non-finite σ_x, row 0 exactly on the centre of camera pixel (col 7, row 4)."""
    table = loc_frame(23)
    network = locs.with_network_only(table)
    no_fit = [3, 10, 17]
    table.loc[no_fit] = network.loc[no_fit]
    table.loc[5, "sigma_x_nm"] = np.inf
    table.loc[0, ["x_nm", "y_nm", "col", "row"]] = [7.5 * S, 4.5 * S, 7, 4]
    path = tmp_path / "m.parquet"
    write_table(path, table)
    return path, pd.read_parquet(path), np.isin(np.arange(len(table)), no_fit)


def read_picasso(path):
    with h5py.File(path, "r") as h5:
        return h5["locs"][...]


def test_picasso_writes_each_localizations_fit(table_file, tmp_path):
    path, table, no_fit = table_file
    exports.write_picasso(path, tmp_path / "p.hdf5", tmp_path / "p.yaml", lateral_precision_nm=LP)
    rec = read_picasso(tmp_path / "p.hdf5")
    assert list(rec.dtype.names) == ["frame", "x", "y", "photons", "bg", "lpx", "lpy", "z", "lpz", "prob"]
    assert rec.dtype["frame"] == np.uint32 and all(rec.dtype[f] == np.float32 for f in rec.dtype.names[1:])
    assert len(rec) == len(table)
    np.testing.assert_array_equal(rec["frame"], table["frame"])
    # Picasso: pixel centres at integer coordinates
    np.testing.assert_allclose(rec["x"], table["x_nm"] / S - 0.5, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(rec["y"], table["y_nm"] / S - 0.5, rtol=1e-6, atol=1e-5)
    assert (rec["x"][0], rec["y"][0]) == (7.0, 4.0)
    np.testing.assert_array_equal(rec["z"], table["z_nm"])
    np.testing.assert_array_equal(rec["prob"], table["prob"])
    fit = ~no_fit
    # the fit's own values: photons, bg as they are, lpx, lpy in camera pixels, lpz in nm
    np.testing.assert_array_equal(rec["photons"][fit], table["photons"][fit])
    np.testing.assert_array_equal(rec["bg"][fit], table["bg"][fit])
    ok = fit & np.isfinite(table["sigma_x_nm"].to_numpy())
    np.testing.assert_allclose(rec["lpx"][ok], table["sigma_x_nm"][ok] / S, rtol=2e-7)
    np.testing.assert_allclose(rec["lpy"][fit], table["sigma_y_nm"][fit] / S, rtol=2e-7)
    np.testing.assert_array_equal(rec["lpz"][fit], table["sigma_z_nm"][fit])
    assert not np.allclose(rec["lpx"][fit], LP / S)  # not the nominal precision
    info = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert (info["Width"], info["Height"], info["Frames"], info["Pixelsize"]) == (W, H, T, S)
    assert "z, lpz: nm" in info["Units"] and "lpx, lpy: camera pixels" in info["Units"]


def test_picasso_rows_without_a_fit_get_the_documented_stand_ins(table_file, tmp_path):
    path, table, no_fit = table_file
    exports.write_picasso(path, tmp_path / "p.hdf5", tmp_path / "p.yaml", lateral_precision_nm=LP)
    rec = read_picasso(tmp_path / "p.hdf5")
    # Picasso drops a row with a NaN anywhere (lib.ensure_sanity): every value is finite
    assert all(np.isfinite(rec[f]).all() for f in rec.dtype.names)
    np.testing.assert_allclose(rec["lpx"][no_fit], LP / S, rtol=1e-6)
    np.testing.assert_allclose(rec["lpy"][no_fit], LP / S, rtol=1e-6)
    np.testing.assert_allclose(rec["lpz"][no_fit], 2 * LP, rtol=1e-6)
    np.testing.assert_array_equal(rec["photons"][no_fit], 0.0)
    np.testing.assert_array_equal(rec["bg"][no_fit], 0.0)
    # a fitted row's non-finite σ_x: the stand-in for that value only
    assert rec["lpx"][5] == np.float32(LP / S) and rec["photons"][5] == table["photons"][5]
    info = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert info["Not fitted"].startswith("3 rows without a fit")


def test_picasso_export_of_a_table_without_fit_columns(tmp_path):
    """A table written before the fit existed reads as one of localize.fit: none."""
    table = loc_frame(6)[[name for name, _ in locs.NETWORK_FIELDS]]
    path = tmp_path / "old.parquet"
    locs.write_parquet(path, table, **META)
    exports.write_picasso(path, tmp_path / "p.hdf5", tmp_path / "p.yaml", lateral_precision_nm=LP)
    rec = read_picasso(tmp_path / "p.hdf5")
    np.testing.assert_allclose(rec["lpx"], LP / S, rtol=1e-6)
    np.testing.assert_array_equal(rec["photons"], 0.0)
    np.testing.assert_allclose(rec["x"], table["x_nm"] / S - 0.5, rtol=1e-6, atol=1e-5)


# a number as Java's Double.parseDouble reads it (ThunderSTORM's importer): no "nan", no ""
JAVA_DOUBLE = re.compile(r"[+-]?(NaN|Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)")


def test_thunderstorm_csv(table_file, tmp_path):
    path, table, no_fit = table_file
    assert exports.write_thunderstorm(path, tmp_path / "m.csv") == len(table)
    text = (tmp_path / "m.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == TS_HEADER
    assert len(lines) == len(table) + 1
    for line in lines[1:]:
        fields = line.split(",")
        assert len(fields) == 9 and all(JAVA_DOUBLE.fullmatch(f) for f in fields), line
    ts = pd.read_csv(tmp_path / "m.csv")
    assert list(ts.columns) == list(exports.THUNDERSTORM_COLUMNS)
    np.testing.assert_array_equal(ts["id"], np.arange(1, len(table) + 1))
    np.testing.assert_array_equal(ts["frame"], table["frame"] + 1)  # ImageJ's 1-based slices
    # ThunderSTORM: a pixel's corner at 0, its centre at (k + 0.5) px, as in the table
    np.testing.assert_allclose(ts["x [nm]"], table["x_nm"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(ts["y [nm]"], table["y_nm"], atol=0.005 + 1e-9)
    assert (ts["x [nm]"][0], ts["y [nm]"][0]) == (7.5 * S, 4.5 * S)
    np.testing.assert_allclose(ts["z [nm]"], table["z_nm"], atol=0.005 + 1e-9)
    fit = ~no_fit
    np.testing.assert_allclose(ts["intensity [photon]"][fit], table["photons"][fit], atol=0.05 + 1e-6)
    np.testing.assert_allclose(ts["offset [photon]"][fit], table["bg"][fit], atol=0.005 + 1e-9)
    sx, sy = (table[c].to_numpy(np.float64) for c in ("sigma_x_nm", "sigma_y_nm"))
    ok = fit & np.isfinite(sx)
    np.testing.assert_allclose(
        ts["uncertainty_xy [nm]"][ok], np.sqrt((sx**2 + sy**2) / 2)[ok], atol=0.005 + 1e-9
    )
    np.testing.assert_allclose(ts["uncertainty_z [nm]"][fit], table["sigma_z_nm"][fit], atol=0.005 + 1e-9)
    # no value: NaN (Java reads it), never "nan" or an empty field
    fitted_columns = ["intensity [photon]", "offset [photon]", "uncertainty_xy [nm]", "uncertainty_z [nm]"]
    assert ts.loc[no_fit, fitted_columns].isna().all().all()
    assert ts.loc[fit, fitted_columns[:2]].notna().all().all()
    assert np.isnan(ts["uncertainty_xy [nm]"][5]) and "nan" not in text and ",," not in text


@pytest.mark.parametrize("rows", [1, 3, 8, 10])
def test_exports_written_in_batches_equal_one_batch(table_file, tmp_path, rows):
    path, _, _ = table_file
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    for name, r in (("one", 1_000_000), ("many", rows)):
        exports.write_picasso(
            path, tmp_path / f"{name}.hdf5", tmp_path / f"{name}.yaml", lateral_precision_nm=LP, rows=r
        )
        exports.write_thunderstorm(path, tmp_path / f"{name}.csv", rows=r)
    np.testing.assert_array_equal(read_picasso(tmp_path / "many.hdf5"), read_picasso(tmp_path / "one.hdf5"))
    assert (tmp_path / "many.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_exports_of_an_empty_table(tmp_path):
    path = tmp_path / "e.parquet"
    write_table(path, locs.empty_locs())
    assert exports.write_thunderstorm(path, tmp_path / "e.csv") == 0
    assert (tmp_path / "e.csv").read_text() == TS_HEADER + "\n"
    exports.write_picasso(path, tmp_path / "e.hdf5", tmp_path / "e.yaml", lateral_precision_nm=LP)
    assert len(read_picasso(tmp_path / "e.hdf5")) == 0


def test_failed_export_leaves_no_file(tmp_path):
    (tmp_path / "m.csv").write_text("old")
    with pytest.raises(OSError):
        exports.write_thunderstorm(tmp_path / "missing.parquet", tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text() == "old"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]  # no temporary left
