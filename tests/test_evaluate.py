"""Matching and metrics on hand-made cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from voxloc.evaluate import evaluate_files, match_frame, match_tables, summary


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
