"""Accuracy per bin of true z (voxloc.evaluation.depth): a known depth-dependent bias and
recall are recovered, empty bins keep their row, the bound appears only with a CRLB."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from voxloc.errors import InputError
from voxloc.evaluation import depth
from voxloc.evaluation.evaluate import evaluate_files
from voxloc.evaluation.matching import molecule_table


def molecules(z, dx, dy, dz, matched=None, **extra) -> pd.DataFrame:
    z = np.asarray(z, dtype=float)
    matched = np.ones(len(z), bool) if matched is None else np.asarray(matched, bool)
    out = pd.DataFrame({"frame": 0, "x_nm": 0.0, "y_nm": 0.0, "z_nm": z, "matched": matched})
    for name, d in (("dx_nm", dx), ("dy_nm", dy), ("dz_nm", dz)):
        out[name] = np.where(matched, np.broadcast_to(np.asarray(d, float), z.shape), np.nan)
    return out.assign(**extra)


def test_edges_are_multiples_of_the_bin_over_the_range():
    np.testing.assert_array_equal(depth.depth_edges(-450.0, 950.0, 100.0), np.arange(-500.0, 1001.0, 100.0))
    np.testing.assert_array_equal(depth.depth_edges(0.0, 300.0, 100.0), [0.0, 100.0, 200.0, 300.0])
    np.testing.assert_array_equal(depth.depth_edges(120.0, 120.0, 50.0), [100.0, 150.0])  # one bin
    for bad in (0.0, -10.0, math.nan):
        with pytest.raises(ValueError, match="bin width"):
            depth.depth_edges(0.0, 1.0, bad)


def test_known_depth_dependent_bias_and_recall_are_recovered():
    rng = np.random.default_rng(1)
    n = 40_000
    z = rng.uniform(-500.0, 1000.0, n)
    # the localizer's z error grows with depth (0.2 nm per nm about z = 250 nm), a constant
    # 5 nm x bias, noise 15 nm laterally and 10 nm axially; it finds 90 % of the molecules
    # at z < 300 nm (a bin edge) and 50 % of those at z >= 300 nm
    bias_z = 0.2 * (z - 250.0)
    matched = rng.random(n) < np.where(z < 300.0, 0.9, 0.5)
    mol = molecules(
        z, 5.0 + rng.normal(0, 15, n), rng.normal(0, 15, n), bias_z + rng.normal(0, 10, n), matched
    )
    table = depth.depth_table(mol, bin_nm=100.0)

    assert list(table.columns) == list(depth.DEPTH_COLUMNS)  # no CRLB columns without a bound
    np.testing.assert_allclose(table["z_nm"], np.arange(-450.0, 1000.0, 100.0))
    assert table["n_true"].sum() == n and table["n_matched"].sum() == matched.sum()
    centre = table["z_nm"].to_numpy()
    # mean z error of a 100 nm bin: 0.2 (z_c - 250) ± a few standard errors (~0.3-0.5 nm)
    np.testing.assert_allclose(table["bias_z_nm"], 0.2 * (centre - 250.0), atol=2.0)
    assert table["bias_z_nm"].iloc[-1] > 120.0 and table["bias_z_nm"].iloc[0] < -120.0
    np.testing.assert_allclose(table["bias_x_nm"], 5.0, atol=2.5)
    np.testing.assert_allclose(table["bias_y_nm"], 0.0, atol=2.5)
    expected_recall = np.where(centre < 300.0, 0.9, 0.5)
    np.testing.assert_allclose(table["recall"], expected_recall, atol=0.05)
    # RMSE² = bias² + spread² (noise and the bias's slope over the bin width: 20² / 12)
    rmse_z = np.sqrt((0.2 * (centre - 250.0)) ** 2 + 10.0**2 + 20.0**2 / 12)
    np.testing.assert_allclose(table["rmse_axial_nm"], rmse_z, rtol=0.1, atol=1.0)
    np.testing.assert_allclose(table["rmse_lateral_nm"], math.sqrt(2 * 15.0**2 + 5.0**2), rtol=0.06)
    np.testing.assert_allclose(table["rmse_x_nm"], math.hypot(15.0, 5.0), rtol=0.06)


def test_bins_are_by_true_z_not_the_estimate():
    # two molecules at z = 50 nm, estimated 150 nm deeper: both stay in the [0, 100) bin
    mol = molecules([50.0, 50.0, 250.0], 0.0, 0.0, [150.0, 150.0, 0.0])
    table = depth.depth_table(mol, bin_nm=100.0)
    assert table["n_matched"].tolist() == [2, 0, 1]
    assert table["bias_z_nm"].iloc[0] == pytest.approx(150.0)


def test_empty_bins_and_bins_without_a_match():
    # truths at 10 and 50 nm (one found, off by 3, 4, -6 nm), none in 100-300 nm, one missed at 350 nm
    mol = molecules(
        [10.0, 50.0, 350.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0], [-6.0, 0.0, 0.0], [True, False, False]
    )
    table = depth.depth_table(mol, bin_nm=100.0)
    assert table["z_nm"].tolist() == [50.0, 150.0, 250.0, 350.0]
    assert table["n_true"].tolist() == [2, 0, 0, 1]
    assert table["n_matched"].tolist() == [1, 0, 0, 0]
    assert table["recall"].iloc[0] == 0.5 and table["recall"].iloc[3] == 0.0
    assert table[["recall"]].iloc[1:3].isna().all().all()  # nothing to find: undefined
    first = table.iloc[0]
    assert (first["rmse_lateral_nm"], first["rmse_axial_nm"]) == (pytest.approx(5.0), pytest.approx(6.0))
    assert (first["bias_x_nm"], first["bias_y_nm"], first["bias_z_nm"]) == (3.0, 4.0, -6.0)
    for column in ("rmse_lateral_nm", "rmse_axial_nm", "bias_z_nm"):
        assert table[column].iloc[1:].isna().all(), column


def test_no_molecules_is_an_empty_table():
    table = depth.depth_table(molecules([], 0.0, 0.0, 0.0))
    assert len(table) == 0 and list(table.columns) == list(depth.DEPTH_COLUMNS)


def test_a_fixed_range_leaves_out_the_truths_outside_it():
    mol = molecules([-50.0, 20.0, 180.0, 420.0], 0.0, 0.0, 1.0)
    table = depth.depth_table(mol, bin_nm=100.0, z_range_nm=(0.0, 200.0))
    assert table["z_nm"].tolist() == [50.0, 150.0] and table["n_true"].tolist() == [1, 1]


def test_crlb_per_bin_over_the_matched_finite_bounds():
    mol = molecules(
        [10.0, 20.0, 30.0, 40.0, 150.0],
        [6.0, 0.0, 0.0, 0.0, 0.0],
        [8.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 12.0],
        [True, True, True, False, True],
        crlb_x_nm=[3.0, 4.0, 5.0, 100.0, 2.0],
        crlb_y_nm=[4.0, 3.0, 5.0, 100.0, 2.0],
        crlb_z_nm=[6.0, 8.0, np.inf, 100.0, 6.0],  # the third: unbounded; the fourth: missed
    )
    table = depth.depth_table(mol, bin_nm=100.0)
    assert list(table.columns) == [*depth.DEPTH_COLUMNS, *depth.CRLB_DEPTH_COLUMNS]
    first, second = table.iloc[0], table.iloc[1]
    assert first["crlb_unbounded"] == 1 and second["crlb_unbounded"] == 0
    assert first["crlb_x_nm"] == pytest.approx(math.sqrt((9 + 16) / 2))
    assert first["crlb_z_nm"] == pytest.approx(math.sqrt((36 + 64) / 2))
    assert first["crlb_lateral_nm"] == pytest.approx(5.0)  # sqrt(mean(x² + y²)) = sqrt(25)
    # RMSE over the bin's 3 matched pairs (errors 10, 0, 0 nm lateral) / the bound
    assert first["rmse_to_crlb_lateral"] == pytest.approx(math.sqrt(100 / 3) / 5.0)
    assert second["rmse_to_crlb_z"] == pytest.approx(12.0 / 6.0)


def test_write_depth_from_the_evaluation(tmp_path):
    rng = np.random.default_rng(3)
    truth = pd.DataFrame({"frame": np.arange(200) // 5})
    truth["x_nm"] = rng.uniform(0, 20_000, 200)
    truth["y_nm"] = rng.uniform(0, 20_000, 200)
    truth["z_nm"] = rng.uniform(-300, 700, 200)
    est = truth.iloc[:150].copy()
    est["z_nm"] += 30.0  # a constant 30 nm z bias, 150 of 200 found
    truth.to_parquet(tmp_path / "gt.parquet")
    est.to_parquet(tmp_path / "locs.parquet")
    mol_path = tmp_path / "m.molecules.parquet"
    evaluate_files(
        tmp_path / "locs.parquet",
        tmp_path / "gt.parquet",
        tmp_path / "m.csv",
        movie="m",
        molecules_out=mol_path,
    )
    table = depth.write_depth(
        mol_path, tmp_path / "m_depth.tsv", tmp_path / "m_depth.png", bin_nm=200.0, movie="m"
    )
    back = depth.read_depth(tmp_path / "m_depth.tsv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False, rtol=1e-5)
    assert table["z_nm"].tolist() == [-300.0, -100.0, 100.0, 300.0, 500.0, 700.0]
    assert table["n_true"].sum() == 200 and table["n_matched"].sum() == 150
    np.testing.assert_allclose(table["bias_z_nm"].dropna(), 30.0, atol=1e-6)
    np.testing.assert_allclose(table["rmse_lateral_nm"].dropna(), 0.0, atol=1e-6)
    with Image.open(tmp_path / "m_depth.png") as im:
        assert im.format == "PNG" and im.width > 500
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "bad.parquet").write_text("no")
    with pytest.raises(InputError, match=r"bad\.parquet: cannot read the molecule table"):
        depth.write_depth(tmp_path / "bad.parquet", tmp_path / "d.tsv")
    pd.DataFrame({"z_nm": [1.0]}).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(InputError, match=r"short\.parquet: molecule table lacks column\(s\) matched"):
        depth.write_depth(tmp_path / "short.parquet", tmp_path / "d.tsv")
    pd.DataFrame({"z_nm": [1.0]}).to_csv(tmp_path / "d.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"d\.tsv: depth table lacks column"):
        depth.read_depth(tmp_path / "d.tsv")


def test_molecule_table_feeds_the_depth_table():
    truth = pd.DataFrame({"frame": [0, 0], "x_nm": [0.0, 5000.0], "y_nm": [0.0, 0.0], "z_nm": [-20.0, 480.0]})
    est = truth.iloc[:1].assign(z_nm=-5.0)
    from voxloc.evaluation.matching import match_tables

    table = depth.depth_table(molecule_table(est, truth, match_tables(est, truth)))
    assert table["n_true"].sum() == 2 and table["recall"].iloc[0] == 1.0
    assert table["bias_z_nm"].iloc[0] == pytest.approx(15.0)
