"""Matching and metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from voxloc.errors import InputError
from voxloc.evaluation.evaluate import crlb_model_from_truth, crlb_summary, evaluate_files
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
