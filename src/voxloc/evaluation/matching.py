"""Matching of estimates to ground truth, one frame at a time, and the summary metrics.

Estimates are matched one-to-one to true molecules by optimal assignment (Hungarian
algorithm, :func:`scipy.optimize.linear_sum_assignment` on the summed 3-D distance) among
pairs within the lateral and axial tolerances. :func:`summary` gives TP/FP/FN, Jaccard,
precision, recall, RMSE and bias per axis and the efficiency of the 2016 SMLM challenge
(:func:`efficiency`). A ratio with a zero denominator (nothing to find and nothing found)
is NaN, as in :mod:`voxloc.evaluation.voxel_metrics` and the training validation.

Matching is on the table's ``x_nm``, ``y_nm``, ``z_nm``: with the per-molecule fit
(:data:`voxloc.locs.FIT_FIELDS`), the FITTED positions; the network's own positions
(``x_net_nm``...) are scored on the same pairs (:func:`matched_errors` with
:data:`NET_COLUMNS`), never matched on their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

_BIG = 1e12

#: the estimate's position (the fitted one where the table has the fit) ...
POSITION_COLUMNS = ("x_nm", "y_nm", "z_nm")
#: ... the network's own position (:data:`voxloc.locs.FIT_FIELDS`) ...
NET_COLUMNS = ("x_net_nm", "y_net_nm", "z_net_nm")
#: ... and the uncertainty the fit reports (√CRLB at the estimate), copied to the molecule table
SIGMA_COLUMNS = ("sigma_x_nm", "sigma_y_nm", "sigma_z_nm")


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


def efficiency(jaccard: float, rmse_nm: float, alpha_per_nm: float) -> float:
    """E = 100 − sqrt((100 − 100·JI)² + α² RMSE²) (2016 SMLM challenge; ``jaccard`` in [0, 1])."""
    return float(100.0 - np.hypot(100.0 - 100.0 * jaccard, alpha_per_nm * rmse_nm))


@dataclass
class Summary:
    """Localization-level metrics of one movie or data set (nm; Jaccard etc. in [0, 1])."""

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
    rmse_x_nm: float
    rmse_y_nm: float
    bias_x_nm: float
    bias_y_nm: float
    bias_z_nm: float
    efficiency_lateral: float
    efficiency_axial: float
    efficiency_3d: float

    def to_dict(self) -> dict:
        return asdict(self)


def matched_errors(
    est: pd.DataFrame,
    truth: pd.DataFrame,
    match: MatchResult,
    columns: tuple[str, str, str] = POSITION_COLUMNS,
) -> np.ndarray:
    """(TP, 3) errors estimate − truth in nm of the matched pairs (x, y, z); ``columns``: the
    estimate's position columns (:data:`NET_COLUMNS`: the network's, on the same pairs)."""
    e = est[list(columns)].to_numpy(np.float64)[match.est_index]
    return e - truth[list(POSITION_COLUMNS)].to_numpy(np.float64)[match.true_index]


def summary(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> Summary:
    """TP/FP/FN, Jaccard = TP / (TP + FP + FN), precision, recall, RMSE, mean bias, efficiency."""
    tp = len(match.est_index)
    fp, fn = match.n_est - tp, match.n_true - tp
    d = matched_errors(est, truth, match)
    nan = float("nan")
    rms = (lambda v: float(np.sqrt(np.mean(v)))) if tp else (lambda v: nan)
    jaccard = tp / (tp + fp + fn) if tp + fp + fn else nan
    rmse_lat, rmse_ax = rms(d[:, 0] ** 2 + d[:, 1] ** 2), rms(d[:, 2] ** 2)
    eff_lat, eff_ax = efficiency(jaccard, rmse_lat, 1.0), efficiency(jaccard, rmse_ax, 0.5)
    return Summary(
        n_est=match.n_est,
        n_true=match.n_true,
        tp=tp,
        fp=fp,
        fn=fn,
        jaccard=jaccard,
        precision=tp / (tp + fp) if tp + fp else nan,
        recall=tp / (tp + fn) if tp + fn else nan,
        rmse_lateral_nm=rmse_lat,
        rmse_axial_nm=rmse_ax,
        rmse_3d_nm=rms((d**2).sum(axis=1)),
        rmse_x_nm=rms(d[:, 0] ** 2),
        rmse_y_nm=rms(d[:, 1] ** 2),
        bias_x_nm=float(d[:, 0].mean()) if tp else nan,
        bias_y_nm=float(d[:, 1].mean()) if tp else nan,
        bias_z_nm=float(d[:, 2].mean()) if tp else nan,
        efficiency_lateral=eff_lat,
        efficiency_axial=eff_ax,
        efficiency_3d=(eff_lat + eff_ax) / 2.0,
    )


def molecule_table(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> pd.DataFrame:
    """Per ground-truth molecule: its row (with any crlb_* columns), matched flag and errors
    ``d{x,y,z}_nm`` of its matched estimate; where ``est`` has them, also the errors of the
    network's own position ``d{x,y,z}_net_nm`` and the matched estimate's reported
    ``sigma_{x,y,z}_nm`` (NaN for a molecule not found)."""
    out = truth.reset_index(drop=True).copy()
    out["matched"] = False
    out.loc[match.true_index, "matched"] = True
    parts = [("", POSITION_COLUMNS)]
    if all(c in est.columns for c in NET_COLUMNS):
        parts.append(("_net", NET_COLUMNS))
    for suffix, columns in parts:
        d = matched_errors(est, truth, match, columns)
        for a, axis in enumerate("xyz"):
            out[f"d{axis}{suffix}_nm"] = np.nan
            out.loc[match.true_index, f"d{axis}{suffix}_nm"] = d[:, a]
    for column in SIGMA_COLUMNS:
        if column in est.columns:
            out[column] = np.nan
            out.loc[match.true_index, column] = est[column].to_numpy(np.float64)[match.est_index]
    return out
