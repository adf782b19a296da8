"""Matching and metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from voxloc.errors import InputError
from voxloc.evaluation.evaluate import NET_KEYS, crlb_model_from_truth, crlb_summary, evaluate_files
from voxloc.evaluation.matching import efficiency, match_frame, match_tables, molecule_table, summary
from voxloc.locs import write_parquet
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import TABLE2


def table(rows):
    return pd.DataFrame(rows, columns=["frame", "x_nm", "y_nm", "z_nm"])


def test_perfect_match():
    t = table([(0, 100, 200, 300), (0, 900, 900, 100), (1, 50, 50, 50)])
    s = summary(t, t, match_tables(t, t))
    assert (s.tp, s.fp, s.fn) == (3, 0, 0)
    assert s.jaccard == 1.0 and s.rmse_3d_nm == 0.0


def test_one_false_positive_and_one_false_negative():
    truth = table([(0, 100, 100, 0), (0, 5000, 5000, 0)])
    est = table([(0, 100, 100, 0), (1, 3000, 3000, 0)])
    s = summary(est, truth, match_tables(est, truth))
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    assert s.jaccard == pytest.approx(1 / 3)
    assert s.precision == 0.5 and s.recall == 0.5


def test_pair_beyond_tolerance_is_not_matched():
    truth = table([(0, 0, 0, 0), (0, 10000, 0, 0)])
    est = table([(0, 251, 0, 0), (0, 10000, 0, 501)])  # 251 nm lateral; 501 nm axial
    s = summary(est, truth, match_tables(est, truth))
    assert (s.tp, s.fp, s.fn) == (0, 2, 2)
    assert math.isnan(s.rmse_3d_nm)


def test_3_4_5_offset():
    truth = table([(0, 1000, 1000, 500)])
    est = table([(0, 1003, 1004, 500)])
    s = summary(est, truth, match_tables(est, truth))
    assert s.rmse_lateral_nm == pytest.approx(5.0)
    assert s.rmse_axial_nm == 0.0
    assert (s.bias_x_nm, s.bias_y_nm) == (pytest.approx(3.0), pytest.approx(4.0))
    est = table([(0, 1000, 1003, 504)])
    s = summary(est, truth, match_tables(est, truth))
    assert s.rmse_3d_nm == pytest.approx(5.0) and s.rmse_axial_nm == pytest.approx(4.0)


def test_bias_is_the_mean_signed_error_per_axis():
    # estimate - truth: +10/-4/-30 nm and +20/+6/-10 nm; the unmatched truth and the far
    # false positive do not count
    truth = table([(0, 1000, 1000, 500), (0, 3000, 3000, 200), (1, 8000, 8000, 0)])
    est = table([(0, 1010, 996, 470), (0, 3020, 3006, 190), (2, 100, 100, 0)])
    s = summary(est, truth, match_tables(est, truth))
    assert s.tp == 2
    assert [s.bias_x_nm, s.bias_y_nm, s.bias_z_nm] == pytest.approx([15.0, 1.0, -20.0])
    # RMSE² = bias² + spread²: z errors -30 and -10 -> RMSE sqrt(500), bias -20, spread 10
    assert s.rmse_axial_nm == pytest.approx(math.sqrt(500.0))
    none = summary(est.iloc[2:], truth.iloc[:1], match_tables(est.iloc[2:], truth.iloc[:1]))
    assert math.isnan(none.bias_x_nm) and math.isnan(none.bias_z_nm)  # no matched pair: undefined


def test_assignment_is_optimal_not_greedy():
    # greedy nearest-first pairs e0-t1 (1 nm) and then e1-t0 (40 nm): 41 nm in total;
    # the optimal assignment pairs e0-t0 (19 nm) and e1-t1 (20 nm): 39 nm
    truth = table([(0, 0, 0, 0), (0, 20, 0, 0)])
    est = table([(0, 19, 0, 0), (0, 40, 0, 0)])
    r, c = match_frame(
        est[["x_nm", "y_nm", "z_nm"]].to_numpy(float), truth[["x_nm", "y_nm", "z_nm"]].to_numpy(float)
    )
    assert sorted(zip(r.tolist(), c.tolist(), strict=True)) == [(0, 0), (1, 1)]


def test_evaluate_files_writes_one_row(tmp_path):
    truth = table([(0, 100, 100, 0), (2, 500, 500, 200)])
    est = table([(0, 103, 104, 0)])
    truth.to_parquet(tmp_path / "gt.parquet")
    est.assign(prob=np.float32(0.9)).to_parquet(tmp_path / "locs.parquet")
    evaluate_files(tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m")
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert row["movie"] == "m" and row["tp"] == 1 and row["fn"] == 1
    assert row["rmse_lateral_nm"] == pytest.approx(5.0)
    assert (row["bias_x_nm"], row["bias_y_nm"], row["bias_z_nm"]) == (3.0, 4.0, 0.0)
    columns = list(pd.read_csv(tmp_path / "m.csv").columns)  # after the RMSE, before the efficiency
    at = columns.index("rmse_y_nm") + 1
    assert columns[at : at + 4] == ["bias_x_nm", "bias_y_nm", "bias_z_nm", "efficiency_lateral"]


def test_efficiency_known_values():
    # perfect: 100; JI 0.5 and RMSE 0 -> 50; JI 1 and RMSE 30 nm laterally -> 70,
    # axially (α = 0.5 nm⁻¹) -> 85; a 3-4-5 triangle: 100 - 5 = 95
    assert efficiency(1.0, 0.0, 1.0) == 100.0
    assert efficiency(0.5, 0.0, 1.0) == pytest.approx(50.0)
    assert efficiency(1.0, 30.0, 1.0) == pytest.approx(70.0)
    assert efficiency(1.0, 30.0, 0.5) == pytest.approx(85.0)
    assert efficiency(0.97, 4.0, 1.0) == pytest.approx(95.0)


def test_summary_efficiency_is_consistent():
    truth = table([(0, 1000, 1000, 500), (0, 3000, 3000, 500)])
    est = table([(0, 1030, 1040, 560)])  # lateral 50 nm, axial 60 nm; JI = 1/2
    s = summary(est, truth, match_tables(est, truth))
    assert s.efficiency_lateral == pytest.approx(100 - math.hypot(50, 50))
    assert s.efficiency_axial == pytest.approx(100 - math.hypot(50, 30))
    assert s.efficiency_3d == pytest.approx((s.efficiency_lateral + s.efficiency_axial) / 2)
    assert (s.rmse_x_nm, s.rmse_y_nm) == (pytest.approx(30.0), pytest.approx(40.0))


def test_crlb_summary_and_molecule_table():
    truth = table([(0, 1000, 1000, 500), (0, 3000, 3000, 500), (1, 50, 50, 50)])
    truth["crlb_x_nm"] = [3.0, 100.0, 4.0]
    truth["crlb_y_nm"] = [4.0, 100.0, 3.0]
    truth["crlb_z_nm"] = [6.0, 100.0, np.inf]  # unbounded: left out of the mean
    est = table([(0, 1006, 1008, 500), (1, 50, 50, 50)])
    m = match_tables(est, truth)
    s = summary(est, truth, m)
    c = crlb_summary(truth, m, s)
    assert c["crlb_unbounded"] == 1
    assert c["crlb_x_nm"] == pytest.approx(3.0) and c["crlb_z_nm"] == pytest.approx(6.0)
    assert c["crlb_lateral_nm"] == pytest.approx(5.0)
    assert c["rmse_to_crlb_x"] == pytest.approx(math.sqrt(36 / 2) / 3.0)  # errors 6 and 0 nm
    mol = molecule_table(est, truth, m)
    assert mol["matched"].tolist() == [True, False, True]
    assert mol.loc[0, ["dx_nm", "dy_nm", "dz_nm"]].tolist() == [6.0, 8.0, 0.0]
    assert np.isnan(mol.loc[1, "dx_nm"])


def test_crlb_physics_round_trips_through_ground_truth_metadata(tmp_path):
    physics = Microscope(TABLE2, (0.0, 400.0, 800.0, 1200.0), 192.0, NoiseModel("paper"))
    truth = table([(0, 1000, 1000, 600)]).assign(photons=4000.0)
    write_parquet(tmp_path / "gt.parquet", truth, px_size_nm=192.0, **physics.metadata())
    assert crlb_model_from_truth(tmp_path / "gt.parquet") == (physics, "ground truth")
    write_parquet(tmp_path / "plain.parquet", truth, px_size_nm=192.0)
    assert crlb_model_from_truth(tmp_path / "plain.parquet") is None


def test_evaluate_files_reports_crlb_ratio(tmp_path):
    physics = Microscope(TABLE2, (0.0, 400.0, 800.0, 1200.0), 192.0, NoiseModel("paper"))
    truth = table([(0, 1000, 1000, 600), (1, 2000, 1500, 300)]).assign(photons=4000.0)
    est = table([(0, 1010, 1000, 610), (1, 2000, 1490, 290)])
    write_parquet(tmp_path / "gt.parquet", truth, px_size_nm=192.0, **physics.metadata())
    est.to_parquet(tmp_path / "locs.parquet")
    evaluate_files(
        tmp_path / "locs.parquet",
        tmp_path / "gt.parquet",
        tmp_path / "m.csv",
        movie="m",
        molecules_out=tmp_path / "mol.parquet",
    )
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    mol = pd.read_parquet(tmp_path / "mol.parquet")
    bound = np.sqrt((mol[["crlb_x_nm", "crlb_y_nm", "crlb_z_nm"]] ** 2).mean())
    assert row["crlb_x_nm"] == pytest.approx(bound["crlb_x_nm"])
    assert row["rmse_to_crlb_z"] == pytest.approx(10.0 / bound["crlb_z_nm"])
    assert row["crlb_source"] == "ground truth"
    assert 1.0 < row["crlb_x_nm"] < 30.0  # a few nm at 4,000 photons (the val-shard bound is ~3 nm)


def test_ground_truth_without_photons_gets_no_bound(tmp_path, caplog):
    physics = Microscope(TABLE2, (0.0, 400.0, 800.0, 1200.0), 192.0, NoiseModel("paper"))
    truth = table([(0, 1000, 1000, 600)])
    write_parquet(tmp_path / "gt.parquet", truth, px_size_nm=192.0, **physics.metadata())
    table([(0, 1010, 1000, 610)]).to_parquet(tmp_path / "locs.parquet")
    with caplog.at_level("WARNING"):
        evaluate_files(tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m")
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert row["tp"] == 1 and "crlb_x_nm" not in row
    assert "gt.parquet: no 'photons' column" in caplog.text


def test_bad_ground_truth_is_one_line(tmp_path):
    (tmp_path / "gt.parquet").write_text("not parquet")
    table([(0, 1, 1, 1)]).to_parquet(tmp_path / "locs.parquet")
    with pytest.raises(InputError, match=r"gt\.parquet: cannot read the ground truth"):
        evaluate_files(tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m")
    assert not (tmp_path / "m.csv").exists()


# ------------------------------------------------- with and without the per-molecule fit


def fitted_table(truth: pd.DataFrame, fit_err, net_err) -> pd.DataFrame:
    """Localizations at truth + fit_err (x_nm...) with the network's own position at
    truth + net_err (x_net_nm...) and the rest of the fit's columns."""
    est = (
        truth[["frame", "x_nm", "y_nm", "z_nm"]].copy().astype({"x_nm": float, "y_nm": float, "z_nm": float})
    )
    pos = truth[["x_nm", "y_nm", "z_nm"]].to_numpy(float)
    est[["x_nm", "y_nm", "z_nm"]] = pos + np.asarray(fit_err, float)
    net = pos + np.asarray(net_err, float)
    for a, axis in enumerate("xyz"):
        est[f"{axis}_net_nm"] = net[:, a]
        est[f"sigma_{axis}_nm"] = 10.0
    est["fit_flags"] = np.int16(0)
    return est


def test_network_metrics_are_of_the_net_columns_on_the_fitted_pairs(tmp_path):
    truth = table([(0, 1000, 1000, 500), (0, 4000, 4000, 200), (1, 2000, 3000, 0), (2, 500, 500, 100)])
    # the fit: exact but for +4 nm in z on the first; the network: x +7, y -3, z +20 nm, and on
    # the last molecule z 600 nm off (beyond the 500 nm tolerance: matched on the fitted position)
    fit_err = [(0, 0, 4), (0, 0, 0), (0, 0, 0), (0, 0, 0)]
    net_err = [(7, -3, 20), (7, -3, 20), (7, -3, 20), (7, -3, 600)]
    est = fitted_table(truth, fit_err, net_err)
    truth.to_parquet(tmp_path / "gt.parquet")
    est.to_parquet(tmp_path / "locs.parquet")
    evaluate_files(
        tmp_path / "locs.parquet",
        tmp_path / "gt.parquet",
        tmp_path / "m.csv",
        movie="m",
        molecules_out=tmp_path / "mol.parquet",
    )
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert (row["tp"], row["fp"], row["fn"]) == (4, 0, 0)  # the far network z does not unmatch
    assert row["rmse_x_nm"] == 0.0 and row["rmse_axial_nm"] == pytest.approx(2.0)  # sqrt(16 / 4)
    assert row["rmse_x_net_nm"] == pytest.approx(7.0) and row["rmse_y_net_nm"] == pytest.approx(3.0)
    assert row["rmse_lateral_net_nm"] == pytest.approx(math.sqrt(49 + 9))
    assert row["rmse_axial_net_nm"] == pytest.approx(math.sqrt((3 * 400 + 600**2) / 4))
    assert row["rmse_3d_net_nm"] == pytest.approx(math.sqrt(58 + (3 * 400 + 600**2) / 4))
    assert (row["bias_x_net_nm"], row["bias_y_net_nm"]) == (pytest.approx(7.0), pytest.approx(-3.0))
    assert row["bias_z_net_nm"] == pytest.approx((3 * 20 + 600) / 4) and row["bias_z_nm"] == pytest.approx(
        1.0
    )
    assert row["tp_fitted"] == 4
    assert "rmse_to_crlb_x_net" not in row  # no bound without the physics
    mol = pd.read_parquet(tmp_path / "mol.parquet")
    assert mol["dx_net_nm"].tolist() == [7.0] * 4 and mol["dz_net_nm"].tolist() == [20.0, 20.0, 20.0, 600.0]
    assert mol["dz_nm"].tolist() == [4.0, 0.0, 0.0, 0.0] and (mol["sigma_x_nm"] == 10.0).all()


def test_network_crlb_ratio_uses_the_same_bound(tmp_path):
    physics = Microscope(TABLE2, (0.0, 400.0, 800.0, 1200.0), 192.0, NoiseModel("paper"))
    truth = table([(0, 1000, 1000, 600), (1, 2000, 1500, 300)]).assign(photons=4000.0)
    est = fitted_table(truth, [(3, 0, 0), (-3, 0, 0)], [(12, 0, -30), (-12, 0, 30)])
    write_parquet(tmp_path / "gt.parquet", truth, px_size_nm=192.0, **physics.metadata())
    est.to_parquet(tmp_path / "locs.parquet")
    evaluate_files(tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m")
    row = pd.read_csv(tmp_path / "m.csv").iloc[0]
    assert row["rmse_to_crlb_x"] == pytest.approx(3.0 / row["crlb_x_nm"])
    assert row["rmse_to_crlb_x_net"] == pytest.approx(12.0 / row["crlb_x_nm"])
    assert row["rmse_to_crlb_z_net"] == pytest.approx(30.0 / row["crlb_z_nm"])
    assert row["rmse_to_crlb_z"] == 0.0
    lateral = math.sqrt(row["crlb_x_nm"] ** 2 + row["crlb_y_nm"] ** 2)
    assert row["rmse_to_crlb_lateral_net"] == pytest.approx(12.0 / lateral)


def test_tables_without_the_fit_score_the_network_as_the_position(tmp_path):
    from voxloc.locs import with_network_only

    truth = table([(0, 1000, 1000, 500), (0, 4000, 4000, 200), (1, 2000, 3000, 0)])
    est = table([(0, 1006, 1008, 530), (0, 4000, 3990, 200), (1, 2003, 3004, -10)])
    truth.to_parquet(tmp_path / "gt.parquet")
    rows = {}
    for name, locs in (
        ("old", est),
        ("none", with_network_only(est.assign(prob=0.9, plane=0, row=0, col=0))),
    ):
        locs.to_parquet(tmp_path / f"{name}.parquet")
        evaluate_files(
            tmp_path / f"{name}.parquet", tmp_path / "gt.parquet", tmp_path / f"{name}.csv", movie=name
        )
        rows[name] = pd.read_csv(tmp_path / f"{name}.csv").iloc[0]
    for row in rows.values():  # nothing fitted: the network's metrics are the fitted ones
        assert row["tp"] == 3 and row["tp_fitted"] == 0
        for fitted, net in NET_KEYS.items():
            assert row[net] == pytest.approx(row[fitted]), net
        assert row["rmse_x_net_nm"] == pytest.approx(math.sqrt((36 + 0 + 9) / 3))
        # no reported σ: the coverage is undefined, every matched localization counted out
        assert math.isnan(row["coverage_x"]) and math.isnan(row["coverage_2sigma_z"])
        assert (row["sigma_excluded_x"], row["sigma_excluded_y"], row["sigma_excluded_z"]) == (3, 3, 3)
    # the same columns either way, so movies of both kinds share one summary
    assert list(rows["old"].index) == list(rows["none"].index)


def test_the_row_has_the_columns_in_order(tmp_path):
    truth = table([(0, 100, 100, 0)])
    truth.to_parquet(tmp_path / "gt.parquet")
    fitted_table(truth, [(1, 1, 1)], [(2, 2, 2)]).to_parquet(tmp_path / "locs.parquet")
    evaluate_files(tmp_path / "locs.parquet", tmp_path / "gt.parquet", tmp_path / "m.csv", movie="m")
    columns = list(pd.read_csv(tmp_path / "m.csv").columns)
    net = [*NET_KEYS.values()]
    coverage = [*(f"coverage_{a}" for a in "xyz"), *(f"coverage_2sigma_{a}" for a in "xyz")]
    coverage += [f"sigma_excluded_{a}" for a in "xyz"]
    assert columns[-(len(net) + 1 + len(coverage) + 2) :] == [
        *net,
        "tp_fitted",
        *coverage,
        "lateral_tolerance_nm",
        "axial_tolerance_nm",
    ]


def test_network_metrics_leave_out_rows_the_fit_found():
    """A row the fit found beside another has no network position (NaN x_net_nm): it is
    matched on its fitted position, and the network-only metrics are over the other pairs."""
    from voxloc.evaluation.evaluate import network_summary

    truth = pd.DataFrame({"frame": [0, 0], "x_nm": [0.0, 1000.0], "y_nm": [0.0, 0.0], "z_nm": [0.0, 0.0]})
    est = truth.copy()
    est["x_nm"] += [3.0, 4.0]
    est["x_net_nm"] = [10.0, np.nan]
    est["y_net_nm"] = [0.0, np.nan]
    est["z_net_nm"] = [0.0, np.nan]
    match = match_tables(est, truth)
    assert len(match.est_index) == 2
    net = network_summary(est, truth, match)
    assert net["rmse_x_net_nm"] == pytest.approx(10.0)  # the found row left out
    assert net["bias_x_net_nm"] == pytest.approx(10.0)
