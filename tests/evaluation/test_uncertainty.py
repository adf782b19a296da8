"""Calibration of the reported σ (voxloc.evaluation.uncertainty): synthetic matched errors
drawn N(0, k σ) with a known σ per row give the coverage of a normal at 1/k and 2/k, the
calibration curve's bins lie on RMSE = k · RMS σ, and unusable σ are left out and counted."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from voxloc.errors import InputError
from voxloc.evaluation import uncertainty
from voxloc.evaluation.evaluate import evaluate_files

N = 20_000
#: P(|Z| <= 1), P(|Z| <= 2), P(|Z| <= 0.5) of a standard normal
P1, P2, P_HALF = 0.682689, 0.954500, 0.382925


def binomial_tol(p: float, n: int, k: float = 4.0) -> float:
    """k standard errors of a fraction p of n independent trials."""
    return k * math.sqrt(p * (1 - p) / n)


def draw(rng, n: int = N, factor: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) σ spread over a decade per axis (z larger) and errors N(0, factor σ)."""
    sigma = rng.uniform(5.0, 50.0, (n, 3)) * np.array([1.0, 1.2, 2.5])
    return rng.normal(0.0, factor * sigma), sigma


def heads(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["bin"] == "all"].set_index("axis")


def test_calibrated_sigma_covers_68_and_95_percent():
    errors, sigma = draw(np.random.default_rng(0))
    table = uncertainty.sigma_table(errors, sigma, n_bins=10)
    assert list(table.columns) == list(uncertainty.SIGMA_COLUMNS)
    assert table["axis"].tolist() == [a for a in "xyz" for _ in range(11)]
    head = heads(table)
    for axis in "xyz":
        h = head.loc[axis]
        assert h["n"] == N and h["n_excluded"] == 0
        assert abs(h["coverage_1sigma"] - P1) < binomial_tol(P1, N), axis
        assert abs(h["coverage_2sigma"] - P2) < binomial_tol(P2, N), axis
        assert h["rms_error_over_sigma"] == pytest.approx(1.0, abs=0.02)
        assert h["curve_slope"] == pytest.approx(1.0, abs=0.03)
        # the observed RMSE is the RMS σ (not the mean σ: sqrt(E σ²) > E σ for a spread of σ)
        assert h["rmse_nm"] == pytest.approx(h["rms_sigma_nm"], rel=0.02)
        assert h["mean_sigma_nm"] < 0.95 * h["rms_sigma_nm"]
    assert uncertainty.EXPECTED_COVERAGE == pytest.approx((P1, P2), abs=1e-6)


def test_errors_twice_sigma_drop_the_coverage_to_38_percent():
    errors, sigma = draw(np.random.default_rng(1), factor=2.0)
    head = heads(uncertainty.sigma_table(errors, sigma))
    for axis in "xyz":
        h = head.loc[axis]
        assert abs(h["coverage_1sigma"] - P_HALF) < binomial_tol(P_HALF, N), axis
        assert abs(h["coverage_2sigma"] - P1) < binomial_tol(P1, N), axis  # 2σ = one true sd
        assert h["curve_slope"] == pytest.approx(2.0, abs=0.06)
        assert h["rms_error_over_sigma"] == pytest.approx(2.0, abs=0.04)
    summary = uncertainty.coverage_summary(errors, sigma)
    assert list(summary) == list(uncertainty.SUMMARY_KEYS)
    for axis in "xyz":  # the summary's keys are the table's numbers
        assert summary[f"coverage_{axis}"] == head.loc[axis, "coverage_1sigma"]
        assert summary[f"coverage_2sigma_{axis}"] == head.loc[axis, "coverage_2sigma"]
        assert summary[f"sigma_excluded_{axis}"] == 0


def test_calibration_curve_bins_recover_the_slope():
    rng = np.random.default_rng(2)
    errors, sigma = draw(rng, factor=1.5)
    table = uncertainty.sigma_table(errors, sigma, n_bins=8)
    for axis in "xyz":
        bins = table[(table["axis"] == axis) & (table["bin"] != "all")]
        assert bins["bin"].tolist() == [str(i) for i in range(1, 9)]
        assert bins["n"].tolist() == [N // 8] * 8  # quantile bins: equal counts
        # ordered by σ, bins do not overlap, each bin's σ inside its range
        assert (np.diff(bins["rms_sigma_nm"]) > 0).all()
        assert (bins["sigma_hi_nm"].to_numpy()[:-1] <= bins["sigma_lo_nm"].to_numpy()[1:]).all()
        assert (
            (bins["sigma_lo_nm"] <= bins["rms_sigma_nm"]) & (bins["rms_sigma_nm"] <= bins["sigma_hi_nm"])
        ).all()
        # every bin on RMSE = 1.5 RMS σ: 2,500 draws per bin, ~1.4 % standard error of an RMS
        np.testing.assert_allclose(bins["rmse_nm"] / bins["rms_sigma_nm"], 1.5, rtol=0.06)
        assert heads(table).loc[axis, "curve_slope"] == pytest.approx(1.5, abs=0.04)
    # a σ that misses a constant 10 nm error: over-confident where σ is small, not where large
    sigma_x = np.sort(rng.uniform(2.0, 60.0, N))
    err = rng.normal(0.0, np.hypot(sigma_x, 10.0))
    flat = np.column_stack([err, err, err]), np.column_stack([sigma_x, sigma_x, sigma_x])
    bins = uncertainty.sigma_table(*flat, n_bins=10)
    bins = bins[(bins["axis"] == "x") & (bins["bin"] != "all")]
    ratio = (bins["rmse_nm"] / bins["rms_sigma_nm"]).to_numpy()
    assert ratio[0] > 2.0 and ratio[-1] < 1.1
    expected = np.sqrt(bins["rms_sigma_nm"] ** 2 + 100.0)
    np.testing.assert_allclose(bins["rmse_nm"], expected, rtol=0.08)


def test_unusable_sigma_is_excluded_and_counted():
    rng = np.random.default_rng(3)
    errors, sigma = draw(rng, n=4000)
    sigma[:500, 0] = np.nan  # x: 500 NaN
    sigma[:300, 2] = np.inf  # z: 300 infinite, 200 zero or negative
    sigma[300:400, 2] = 0.0
    sigma[400:500, 2] = -5.0
    errors[-10:, 1] = np.nan  # y: an error that is not finite is left out too
    table = uncertainty.sigma_table(errors, sigma, n_bins=5)
    head = heads(table)
    assert head["n_excluded"].tolist() == [500, 10, 500]
    assert head["n"].tolist() == [3500, 3990, 3500]
    for axis, keep in (("x", slice(500, None)), ("y", slice(None, -10)), ("z", slice(500, None))):
        a = "xyz".index(axis)
        e, s = errors[keep, a], sigma[keep, a]
        assert head.loc[axis, "coverage_1sigma"] == pytest.approx(np.mean(np.abs(e) <= s))
        assert head.loc[axis, "rmse_nm"] == pytest.approx(np.sqrt(np.mean(e**2)))
        bins = table[(table["axis"] == axis) & (table["bin"] != "all")]
        assert bins["n"].sum() == head.loc[axis, "n"]
        assert np.isfinite(bins[["rmse_nm", "rms_sigma_nm"]].to_numpy()).all()
    summary = uncertainty.coverage_summary(errors, sigma)
    assert (summary["sigma_excluded_x"], summary["sigma_excluded_y"], summary["sigma_excluded_z"]) == (
        500,
        10,
        500,
    )


def test_no_sigma_at_all_is_nan_coverage(tmp_path):
    errors = np.random.default_rng(4).normal(0, 10, (50, 3))
    sigma = np.full((50, 3), np.nan)
    table = uncertainty.sigma_table(errors, sigma)
    assert table["bin"].tolist() == ["all"] * 3  # no bin without a localization
    assert (table["n"] == 0).all() and (table["n_excluded"] == 50).all()
    assert table[["coverage_1sigma", "coverage_2sigma", "rmse_nm", "curve_slope"]].isna().all().all()
    summary = uncertainty.coverage_summary(errors, sigma)
    assert math.isnan(summary["coverage_x"]) and summary["sigma_excluded_z"] == 50
    empty = uncertainty.sigma_table(np.zeros((0, 3)), np.zeros((0, 3)))
    assert (empty["n"] == 0).all() and (empty["n_excluded"] == 0).all()
    uncertainty.plot_sigma(table, errors, sigma, tmp_path / "none.png", title="no fit")
    with Image.open(tmp_path / "none.png") as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="at least one bin"):
        uncertainty.sigma_table(errors, sigma, n_bins=0)


def test_fewer_localizations_than_bins():
    errors, sigma = np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]), np.array([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]])
    table = uncertainty.sigma_table(errors, sigma, n_bins=10)
    x = table[table["axis"] == "x"]
    assert x["bin"].tolist() == ["all", "1", "2"] and x["n"].tolist() == [2, 1, 1]
    assert x["coverage_1sigma"].iloc[0] == 0.5 and x["coverage_2sigma"].iloc[0] == 1.0
    assert x["rmse_nm"].iloc[0] == pytest.approx(math.sqrt(5.0))


def fitted_movie(rng, n: int = 600, factor: float = 1.0):
    """A ground truth and a localization table with the fit's columns: fitted errors N(0, k σ),
    the network's position 40 nm off in x, 20 of the 600 truths missed, 30 false positives."""
    frames = np.arange(n) // 6
    truth = pd.DataFrame(
        {"frame": frames, "x_nm": rng.uniform(0, 30_000, n), "y_nm": rng.uniform(0, 30_000, n)}
    )
    truth["z_nm"] = rng.uniform(-400, 800, n)
    found = truth.iloc[20:].reset_index(drop=True)
    sigma = rng.uniform(8.0, 30.0, (len(found), 3)) * np.array([1.0, 1.0, 2.0])
    est = found.copy()
    est[["x_nm", "y_nm", "z_nm"]] += rng.normal(0.0, factor * sigma)
    for a, axis in enumerate("xyz"):
        est[f"{axis}_net_nm"] = found[f"{axis}_nm"] + (40.0 if axis == "x" else 0.0)
        est[f"sigma_{axis}_nm"] = sigma[:, a].astype(np.float32)
    est["fit_flags"] = np.int16(0)
    far = pd.DataFrame({"frame": np.arange(30), "x_nm": -9000.0, "y_nm": -9000.0, "z_nm": 0.0})
    far = far.assign(x_net_nm=-9000.0, y_net_nm=-9000.0, z_net_nm=0.0, sigma_x_nm=10.0, fit_flags=np.int16(0))
    far = far.assign(sigma_y_nm=10.0, sigma_z_nm=20.0)
    return truth, pd.concat([est, far], ignore_index=True)


def test_write_sigma_from_the_evaluation(tmp_path):
    truth, est = fitted_movie(np.random.default_rng(5))
    truth.to_parquet(tmp_path / "gt.parquet")
    est.to_parquet(tmp_path / "locs.parquet")
    mol = tmp_path / "m.molecules.parquet"
    evaluate_files(
        tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m", molecules_out=mol
    )
    table = uncertainty.write_sigma(
        mol, tmp_path / "m_sigma.tsv", tmp_path / "m_sigma.png", n_bins=4, movie="m"
    )
    back = uncertainty.read_sigma(tmp_path / "m_sigma.tsv")
    pd.testing.assert_frame_equal(back, table, check_dtype=False, rtol=1e-5)
    head = heads(table)
    assert head["n"].tolist() == [580, 580, 580] and head["n_excluded"].tolist() == [0, 0, 0]
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert row["tp"] == 580 and row["fp"] == 30 and row["tp_fitted"] == 580
    for axis in "xyz":  # the summary has the table's coverage
        assert row[f"coverage_{axis}"] == pytest.approx(head.loc[axis, "coverage_1sigma"])
        assert row[f"coverage_2sigma_{axis}"] == pytest.approx(head.loc[axis, "coverage_2sigma"])
        assert row[f"sigma_excluded_{axis}"] == 0
        assert abs(row[f"coverage_{axis}"] - P1) < binomial_tol(P1, 580)
    with Image.open(tmp_path / "m_sigma.png") as im:
        assert im.format == "PNG" and im.width > 800
    assert not list(tmp_path.glob(".*tmp*"))


def test_bad_inputs_name_the_file(tmp_path):
    (tmp_path / "bad.parquet").write_text("no")
    with pytest.raises(InputError, match=r"bad\.parquet: cannot read the molecule table"):
        uncertainty.write_sigma(tmp_path / "bad.parquet", tmp_path / "s.tsv")
    pd.DataFrame({"z_nm": [1.0]}).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(InputError, match=r"short\.parquet: molecule table lacks column\(s\) matched"):
        uncertainty.write_sigma(tmp_path / "short.parquet", tmp_path / "s.tsv")
    pd.DataFrame({"axis": ["x"]}).to_csv(tmp_path / "s.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match=r"s\.tsv: sigma calibration table lacks column"):
        uncertainty.read_sigma(tmp_path / "s.tsv")
