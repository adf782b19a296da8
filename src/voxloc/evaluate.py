"""Evaluation of localizations against ground truth (2016 SMLM challenge / DECODE style).

Per frame, estimates are matched one-to-one to true molecules by optimal assignment
(Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, minimising the summed
3-D distance) among pairs within the tolerances: 250 nm laterally and 500 nm axially by
default. Matched pairs are true positives; unmatched estimates are false positives and
unmatched truths false negatives.

Efficiency (Sage et al. 2019, the 2016 SMLM challenge; DECODE): E = 100 − sqrt((100 − JI)² +
α² RMSE²) with JI the Jaccard index in % and α = 1 nm⁻¹ laterally, 0.5 nm⁻¹ axially; the 3-D
efficiency is the mean of the two. 100 is perfect; it can be negative.

The Cramér-Rao bound of every ground-truth molecule (:mod:`voxloc.crlb`) is computed for the
physics that made the data where the ground truth says so (Parquet metadata ``psf``,
``plane_z_nm``, ``noise``, written by the demo generator and the simulator), else for the
calibrated PSF and the configured noise model; the summary reports sqrt(mean CRLB) over the
matched truths per axis and the ratio RMSE / sqrt(mean CRLB).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from voxloc.crlb import crlb_table
from voxloc.errors import InputError
from voxloc.noise import NoiseModel
from voxloc.psf import PSFParams

__all__ = [
    "MatchResult",
    "match_frame",
    "match_tables",
    "Summary",
    "summary",
    "matched_errors",
    "efficiency",
    "CRLBModel",
    "crlb_model_from_truth",
    "crlb_model_from_config",
    "with_crlb",
    "crlb_summary",
    "molecule_table",
    "evaluate_files",
    "collect_summaries",
]

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


def matched_errors(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> np.ndarray:
    """(TP, 3) errors estimate − truth in nm of the matched pairs (x, y, z)."""
    cols = ["x_nm", "y_nm", "z_nm"]
    e = est[cols].to_numpy(np.float64)[match.est_index]
    return e - truth[cols].to_numpy(np.float64)[match.true_index]


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


# ------------------------------------------------------------------ Cramér-Rao bound


@dataclass(frozen=True)
class CRLBModel:
    """The physics a bound is computed for: PSF (Eqs. 4-6), focal planes, pixel, noise (Eq. 3)."""

    psf: PSFParams
    plane_z_nm: tuple[float, ...]
    px_size_nm: float
    noise: NoiseModel
    integrate_pixels: bool = False
    source: str = "config"

    def metadata(self) -> dict[str, str]:
        """Parquet key-value metadata that :func:`crlb_model_from_truth` reads back."""
        return {
            "psf": json.dumps(self.psf.to_dict()),
            "plane_z_nm": json.dumps([float(z) for z in self.plane_z_nm]),
            "noise": json.dumps(self.noise.to_dict()),
            "integrate_pixels": json.dumps(bool(self.integrate_pixels)),
        }


def crlb_model_from_truth(path: str | Path) -> CRLBModel | None:
    """The generator's physics stored in a ground-truth Parquet's metadata, or None."""
    import pyarrow.parquet as pq

    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    if not {"psf", "plane_z_nm", "noise", "px_size_nm"} <= meta.keys():
        return None
    try:
        return CRLBModel(
            psf=PSFParams.from_dict(json.loads(meta["psf"])),
            plane_z_nm=tuple(float(z) for z in json.loads(meta["plane_z_nm"])),
            px_size_nm=float(meta["px_size_nm"]),
            noise=NoiseModel(**json.loads(meta["noise"])),
            integrate_pixels=bool(json.loads(meta.get("integrate_pixels", "false"))),
            source="ground truth",
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{path}: bad generator metadata for the CRLB ({exc})".splitlines()[0]) from None


def crlb_model_from_config(
    *,
    psf_yaml: str | Path | None,
    table2: dict,
    plane_z_nm: Sequence[float],
    px_size_nm: float,
    noise: dict,
    integrate_pixels: bool = False,
) -> CRLBModel | None:
    """The pipeline's own physics: the bead-calibrated PSF and planes (``psf_yaml``) or config
    ``psf.table2`` + ``grid.plane_z_nm``, and the noise of config ``simulation`` (kind +
    params). None when the noise kind is ``none`` (no bound)."""
    from voxloc.calibrate import load_psf

    if noise["kind"] == "none":
        return None
    if psf_yaml:
        psf, planes = load_psf(psf_yaml)
        source = f"config ({psf_yaml})"
    else:
        psf, planes = PSFParams.from_dict(table2), tuple(plane_z_nm)
        source = "config (Table 2)"
    return CRLBModel(psf, tuple(planes), float(px_size_nm), NoiseModel(**noise), integrate_pixels, source)


def with_crlb(truth: pd.DataFrame, model: CRLBModel) -> pd.DataFrame:
    """Ground truth + crlb_x_nm, crlb_y_nm, crlb_z_nm (standard deviations) per molecule."""
    return crlb_table(
        truth,
        psf=model.psf,
        plane_z_nm=np.asarray(model.plane_z_nm),
        px_size_nm=model.px_size_nm,
        noise=model.noise,
        integrate=model.integrate_pixels,
    )


def crlb_summary(truth_crlb: pd.DataFrame, match: MatchResult, result: Summary) -> dict[str, float]:
    """sqrt(mean CRLB) per axis over the matched truths, and RMSE / sqrt(mean CRLB) per axis.

    Lateral: the bound of the lateral RMSE is sqrt(mean(CRLB_x + CRLB_y)). Molecules whose
    bound is infinite (an axis the data cannot identify) are left out and counted.
    """
    std = truth_crlb[["crlb_x_nm", "crlb_y_nm", "crlb_z_nm"]].to_numpy(np.float64)[match.true_index]
    finite = np.isfinite(std).all(axis=1)
    var = std[finite] ** 2
    nan = float("nan")
    mean = var.mean(axis=0) if len(var) else np.full(3, nan)
    bound = {
        "x": float(np.sqrt(mean[0])),
        "y": float(np.sqrt(mean[1])),
        "z": float(np.sqrt(mean[2])),
        "lateral": float(np.sqrt(mean[0] + mean[1])),
    }
    rmse = {"x": result.rmse_x_nm, "y": result.rmse_y_nm, "z": result.rmse_axial_nm}
    rmse["lateral"] = result.rmse_lateral_nm
    out: dict[str, float] = {f"crlb_{a}_nm": b for a, b in bound.items()}
    out.update({f"rmse_to_crlb_{a}": rmse[a] / bound[a] if bound[a] > 0 else nan for a in bound})
    out["crlb_unbounded"] = int((~finite).sum())
    return out


def molecule_table(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> pd.DataFrame:
    """Per ground-truth molecule: its row (with any crlb_* columns), matched flag and errors."""
    out = truth.reset_index(drop=True).copy()
    out["matched"] = False
    for axis in "xyz":
        out[f"d{axis}_nm"] = np.nan
    out.loc[match.true_index, "matched"] = True
    d = matched_errors(est, truth, match)
    for a, axis in enumerate("xyz"):
        out.loc[match.true_index, f"d{axis}_nm"] = d[:, a]
    return out


# ------------------------------------------------------------------ files


def _read_table(path: str | Path, columns: list[str], what: str) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the {what} as Parquet ({exc})".splitlines()[0]) from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InputError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return table


def evaluate_files(
    locs_path: str | Path,
    truth_path: str | Path,
    out_csv: str | Path,
    *,
    movie: str,
    lateral_nm: float = 250.0,
    axial_nm: float = 500.0,
    crlb: bool = True,
    crlb_model: CRLBModel | None = None,
    molecules_out: str | Path | None = None,
) -> Summary:
    """Match a localization Parquet to a ground-truth Parquet; write one CSV row of metrics.

    With ``crlb`` and generator metadata in the ground truth (which takes precedence) or a
    ``crlb_model``, the row also has the CRLB columns of :func:`crlb_summary`; ``molecules_out`` receives the
    per-molecule table of :func:`molecule_table` as Parquet.
    """
    from voxloc.io import atomic_output, write_parquet

    cols = ["frame", "x_nm", "y_nm", "z_nm"]
    est = _read_table(locs_path, cols, "localizations")[cols]
    truth = _read_table(truth_path, cols, "ground truth")
    truth = truth[[c for c in [*cols, "weight"] if c in truth.columns]]
    match = match_tables(est, truth, lateral_nm=lateral_nm, axial_nm=axial_nm)
    result = summary(est, truth, match)
    row: dict = {"movie": movie, **result.to_dict()}
    model = (crlb_model_from_truth(truth_path) or crlb_model) if crlb else None
    if model is not None:
        truth = with_crlb(truth, model)
        row.update(crlb_summary(truth, match, result))
        row["crlb_source"] = model.source
    row.update({"lateral_tolerance_nm": lateral_nm, "axial_tolerance_nm": axial_nm})
    if molecules_out is not None:
        write_parquet(molecules_out, molecule_table(est, truth, match), movie=movie)
    with atomic_output(out_csv) as tmp:
        pd.DataFrame([row]).to_csv(tmp, index=False)
    log.info(
        "%s: Jaccard %.3f (TP %d, FP %d, FN %d), RMSE lateral %.1f nm, axial %.1f nm, "
        "efficiency lateral %.1f, axial %.1f",
        movie,
        result.jaccard,
        result.tp,
        result.fp,
        result.fn,
        result.rmse_lateral_nm,
        result.rmse_axial_nm,
        result.efficiency_lateral,
        result.efficiency_axial,
    )
    if model is not None:
        log.info(
            "%s: sqrt(mean CRLB) x %.1f, y %.1f, z %.1f nm (%s); RMSE / bound x %.2f, y %.2f, z %.2f",
            movie,
            row["crlb_x_nm"],
            row["crlb_y_nm"],
            row["crlb_z_nm"],
            model.source,
            row["rmse_to_crlb_x"],
            row["rmse_to_crlb_y"],
            row["rmse_to_crlb_z"],
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
