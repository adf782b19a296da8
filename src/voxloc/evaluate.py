"""Evaluation of localizations against ground truth (2016 SMLM challenge / DECODE style).

Per frame, estimates are matched one-to-one to true molecules by optimal assignment
(Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, minimising the summed
3-D distance) among pairs within the tolerances: 250 nm laterally and 500 nm axially by
default. Matched pairs are true positives; unmatched estimates are false positives and
unmatched truths false negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["MatchResult", "match_frame", "match_tables", "summary", "evaluate_files", "collect_summaries"]

_BIG = 1e12
log = logging.getLogger(__name__)


@dataclass
class MatchResult:
    """Matched pairs of one or many frames: indices into the estimate and truth tables."""

    est_index: np.ndarray
    true_index: np.ndarray
    n_est: int
    n_true: int


def match_frame(
    est_xyz: np.ndarray, true_xyz: np.ndarray, *, lateral_nm: float = 250.0, axial_nm: float = 500.0
) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of (N, 3) estimates to (M, 3) truths within tolerance."""
    if len(est_xyz) == 0 or len(true_xyz) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    d = est_xyz[:, None, :] - true_xyz[None, :, :]
    lat = np.hypot(d[..., 0], d[..., 1])
    ax = np.abs(d[..., 2])
    ok = (lat <= lateral_nm) & (ax <= axial_nm)
    cost = np.where(ok, np.sqrt(lat**2 + ax**2), _BIG)
    rows, cols = linear_sum_assignment(cost)
    keep = ok[rows, cols]
    return rows[keep], cols[keep]


def match_tables(
    est: pd.DataFrame, truth: pd.DataFrame, *, lateral_nm: float = 250.0, axial_nm: float = 500.0
) -> MatchResult:
    """Match two tables (frame, x_nm, y_nm, z_nm) frame by frame."""
    cols = ["x_nm", "y_nm", "z_nm"]
    e_frame = est["frame"].to_numpy()
    t_frame = truth["frame"].to_numpy()
    e_xyz = est[cols].to_numpy(np.float64)
    t_xyz = truth[cols].to_numpy(np.float64)
    e_order = np.argsort(e_frame, kind="stable")
    t_order = np.argsort(t_frame, kind="stable")
    frames = np.union1d(e_frame, t_frame)
    e_lo = np.searchsorted(e_frame[e_order], frames, "left")
    e_hi = np.searchsorted(e_frame[e_order], frames, "right")
    t_lo = np.searchsorted(t_frame[t_order], frames, "left")
    t_hi = np.searchsorted(t_frame[t_order], frames, "right")
    ei, ti = [], []
    for a, b, c, d in zip(e_lo, e_hi, t_lo, t_hi, strict=True):
        ie, it = e_order[a:b], t_order[c:d]
        r, k = match_frame(e_xyz[ie], t_xyz[it], lateral_nm=lateral_nm, axial_nm=axial_nm)
        ei.append(ie[r])
        ti.append(it[k])
    cat = np.concatenate if ei else (lambda _: np.zeros(0, dtype=np.int64))
    return MatchResult(cat(ei), cat(ti), len(est), len(truth))


@dataclass
class Summary:
    n_est: int
    n_true: int
    tp: int
    fp: int
    fn: int
    jaccard: float
    precision: float
    recall: float
    rmse_lateral_nm: float
    rmse_axial_nm: float
    rmse_3d_nm: float
    bias_x_nm: float
    bias_y_nm: float
    bias_z_nm: float

    def to_dict(self) -> dict:
        return asdict(self)


def summary(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> Summary:
    """TP/FP/FN, Jaccard = TP / (TP + FP + FN), precision, recall, RMSE and mean bias."""
    tp = len(match.est_index)
    fp, fn = match.n_est - tp, match.n_true - tp
    cols = ["x_nm", "y_nm", "z_nm"]
    d = est[cols].to_numpy(np.float64)[match.est_index] - truth[cols].to_numpy(np.float64)[match.true_index]
    nan = float("nan")
    rms = (lambda v: float(np.sqrt(np.mean(v)))) if tp else (lambda v: nan)
    return Summary(
        n_est=match.n_est,
        n_true=match.n_true,
        tp=tp,
        fp=fp,
        fn=fn,
        jaccard=tp / (tp + fp + fn) if tp + fp + fn else nan,
        precision=tp / (tp + fp) if tp + fp else nan,
        recall=tp / (tp + fn) if tp + fn else nan,
        rmse_lateral_nm=rms(d[:, 0] ** 2 + d[:, 1] ** 2),
        rmse_axial_nm=rms(d[:, 2] ** 2),
        rmse_3d_nm=rms((d**2).sum(axis=1)),
        bias_x_nm=float(d[:, 0].mean()) if tp else nan,
        bias_y_nm=float(d[:, 1].mean()) if tp else nan,
        bias_z_nm=float(d[:, 2].mean()) if tp else nan,
    )


def evaluate_files(
    locs_path: str | Path,
    truth_path: str | Path,
    out_csv: str | Path,
    *,
    movie: str,
    lateral_nm: float = 250.0,
    axial_nm: float = 500.0,
) -> Summary:
    """Match a localization Parquet to a ground-truth Parquet; write one CSV row of metrics."""
    from voxloc.io import atomic_output

    cols = ["frame", "x_nm", "y_nm", "z_nm"]
    est = pd.read_parquet(locs_path, columns=cols)
    truth = pd.read_parquet(truth_path, columns=cols)
    result = summary(est, truth, match_tables(est, truth, lateral_nm=lateral_nm, axial_nm=axial_nm))
    row = {
        "movie": movie,
        **result.to_dict(),
        "lateral_tolerance_nm": lateral_nm,
        "axial_tolerance_nm": axial_nm,
    }
    with atomic_output(out_csv) as tmp:
        pd.DataFrame([row]).to_csv(tmp, index=False)
    log.info(
        "%s: Jaccard %.3f (TP %d, FP %d, FN %d), RMSE lateral %.1f nm, axial %.1f nm",
        movie,
        result.jaccard,
        result.tp,
        result.fp,
        result.fn,
        result.rmse_lateral_nm,
        result.rmse_axial_nm,
    )
    return result


def collect_summaries(csvs: Sequence[str | Path], out_tsv: str | Path) -> pd.DataFrame:
    """Concatenate per-movie metric CSVs into one TSV (one row per movie)."""
    from voxloc.io import atomic_output

    table = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True) if csvs else pd.DataFrame()
    with atomic_output(out_tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    log.info("summary of %d movies:\n%s", len(table), table.to_string(index=False))
    return table
