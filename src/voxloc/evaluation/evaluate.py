"""Evaluation of localizations against ground truth (2016 SMLM challenge / DECODE style).

Per frame, estimates are matched one-to-one to true molecules by optimal assignment
(Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`, minimising the summed
3-D distance) among pairs within the tolerances: 250 nm laterally and 500 nm axially by
default. Matched pairs are true positives; unmatched estimates are false positives and
unmatched truths false negatives.

Efficiency (Sage et al. 2019, the 2016 SMLM challenge; DECODE): E = 100 − sqrt((100 − JI)² +
α² RMSE²) with JI the Jaccard index in % and α = 1 nm⁻¹ laterally, 0.5 nm⁻¹ axially; the 3-D
efficiency is the mean of the two. 100 is perfect; it can be negative.

The Cramér-Rao bound of every ground-truth molecule (:mod:`voxloc.physics.crlb`) is computed for the
physics that made the data where the ground truth says so (Parquet metadata ``psf``,
``plane_z_nm``, ``noise``, written by the demo generator and the simulator), else for the
calibrated PSF and the configured noise model; the summary reports sqrt(mean CRLB) over the
matched truths per axis and the ratio RMSE / sqrt(mean CRLB).

With and without the per-molecule fit (:data:`voxloc.locs.FIT_FIELDS`): the matching, and
every metric of :class:`~voxloc.evaluation.matching.Summary`, are of the FITTED position
``x_nm``, ``y_nm``, ``z_nm``; on the same matched pairs :func:`network_summary` scores the
network's own position ``x_net_nm``, ``y_net_nm``, ``z_net_nm`` (:data:`NET_KEYS`: RMSE and
bias with ``_net`` in the name, and ``rmse_to_crlb_{x,y,z,lateral}_net`` against the same
bound), so the two differ only by what the fit changed. ``tp_fitted`` counts the matched
localizations the fit refined (``fit_flags`` without ``not_fitted``). A table from before
the fit (no ``x_net_nm``...) or of ``localize.fit: none`` (``x_net_nm`` = ``x_nm``) was not
refined: its network metrics equal the fitted ones and ``tp_fitted`` is 0. The coverage of
the reported σ (``coverage_{x,y,z}``, ``coverage_2sigma_{x,y,z}``, ``sigma_excluded_{x,y,z}``,
:func:`voxloc.evaluation.uncertainty.coverage_summary`) is NaN without a finite σ (all
matched localizations excluded and counted).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.errors import InputError
from voxloc.evaluation.matching import (
    NET_COLUMNS,
    POSITION_COLUMNS,
    SIGMA_COLUMNS,
    MatchResult,
    Summary,
    match_tables,
    matched_errors,
    molecule_table,
    summary,
)
from voxloc.evaluation.uncertainty import coverage_summary
from voxloc.physics.crlb import crlb_table
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel

__all__ = [
    "crlb_model_from_truth",
    "crlb_model_from_config",
    "crlb_summary",
    "network_positions",
    "network_summary",
    "fitted_count",
    "matched_sigma",
    "NET_KEYS",
    "evaluate_files",
    "collect_summaries",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ Cramér-Rao bound


def crlb_model_from_truth(path: str | Path) -> tuple[Microscope, str] | None:
    """(the generator's physics stored in a ground-truth Parquet's metadata, "ground truth"),
    or None when the metadata holds none. A spline PSF is read from the file it names."""
    from voxloc.calibration.spline_files import load_spline_reference
    from voxloc.locs import read_metadata

    meta = read_metadata(path, raw=True)
    if not {"psf", "plane_z_nm", "noise", "px_size_nm"} <= meta.keys():
        return None
    try:
        return Microscope.from_metadata(meta, load_spline=load_spline_reference), "ground truth"
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
    spline_h5: str | Path | None = None,
) -> tuple[Microscope, str] | None:
    """(the pipeline's own physics, where it came from):
    :func:`voxloc.calibration.calibrated.calibrated_microscope` of the calibration files
    given, with the noise of config ``simulation`` (kind + params). None when the noise kind
    is ``none`` (no bound)."""
    from voxloc.calibration.calibrated import calibrated_microscope

    if noise["kind"] == "none":
        return None
    physics = calibrated_microscope(
        table2=table2,
        plane_z_nm=plane_z_nm,
        px_size_nm=px_size_nm,
        noise=NoiseModel(**noise),
        integrate_pixels=integrate_pixels,
        psf_yaml=psf_yaml,
        spline_h5=spline_h5,
    )
    source = f"config ({spline_h5 or psf_yaml})" if psf_yaml or spline_h5 else "config (Table 2)"
    return physics, source


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


# ------------------------------------------------------------------ with and without the fit

#: the Summary keys scored again for the network's own position, with ``_net`` in the name
NET_KEYS = {
    k: f"{k.removesuffix('_nm')}_net_nm"
    for k in (
        "rmse_lateral_nm",
        "rmse_axial_nm",
        "rmse_3d_nm",
        "rmse_x_nm",
        "rmse_y_nm",
        "bias_x_nm",
        "bias_y_nm",
        "bias_z_nm",
    )
}


def network_positions(est: pd.DataFrame) -> pd.DataFrame:
    """``est`` with the network's own position as ``x_nm``, ``y_nm``, ``z_nm`` (its
    ``x_net_nm``...); a table without them (from before the fit) is its own network position."""
    if not all(c in est.columns for c in NET_COLUMNS):
        return est
    out = est.copy()
    for pos, net in zip(POSITION_COLUMNS, NET_COLUMNS, strict=True):
        out[pos] = est[net]
    return out


def network_summary(
    est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult, truth_crlb: pd.DataFrame | None = None
) -> dict[str, float]:
    """The RMSE and bias of the network's own position over the pairs ``match`` made of the
    fitted one (:data:`NET_KEYS`), and with ``truth_crlb`` (the truths with their bound) the
    ratios ``rmse_to_crlb_{x,y,z,lateral}_net`` of :func:`crlb_summary`. Pairs whose
    localization has no network position (NaN: a molecule the fit found beside another)
    are left out."""
    positions = network_positions(est)
    xyz = positions[list(POSITION_COLUMNS)].to_numpy(np.float64)[match.est_index]
    has = np.isfinite(xyz).all(axis=1)
    if not has.all():
        match = dataclasses.replace(match, est_index=match.est_index[has], true_index=match.true_index[has])
    net = summary(positions, truth, match)
    values = net.to_dict()
    out = {name: values[k] for k, name in NET_KEYS.items()}
    if truth_crlb is not None:
        ratios = crlb_summary(truth_crlb, match, net)
        out |= {f"{k}_net": v for k, v in ratios.items() if k.startswith("rmse_to_crlb_")}
    return out


def fitted_count(est: pd.DataFrame, match: MatchResult) -> int:
    """Matched localizations the fit refined: ``fit_flags`` without ``not_fitted`` (0 when the
    table has no ``fit_flags``)."""
    from voxloc.locs import FIT_FLAGS

    if "fit_flags" not in est.columns:
        return 0
    flags = est["fit_flags"].to_numpy()[match.est_index].astype(np.int64)
    return int(np.count_nonzero((flags & FIT_FLAGS["not_fitted"]) == 0))


def matched_sigma(est: pd.DataFrame, match: MatchResult) -> np.ndarray:
    """(TP, 3) σ the matched localizations report (NaN where the table has none)."""
    out = np.full((len(match.est_index), 3), np.nan)
    for a, column in enumerate(SIGMA_COLUMNS):
        if column in est.columns:
            out[:, a] = est[column].to_numpy(np.float64)[match.est_index]
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
    crlb_model: tuple[Microscope, str] | None = None,
    molecules_out: str | Path | None = None,
) -> Summary:
    """Match a localization Parquet to a ground-truth Parquet; write one CSV row of metrics.

    With ``crlb`` and generator metadata in the ground truth (which takes precedence) or a
    ``crlb_model`` ((microscope, source) as :func:`crlb_model_from_config` gives), the row
    also has the CRLB columns of :func:`crlb_summary`; ``molecules_out`` receives the
    per-molecule table of :func:`molecule_table` as Parquet.

    Matching is on the fitted positions ``x_nm``...; then the row has the network's own
    position scored on the same pairs (:func:`network_summary`), ``tp_fitted`` and the
    coverage of the reported σ (module docstring): columns every table gets, so that the
    movies of a summary have the same columns whatever their localization tables hold.
    """
    from voxloc.io import atomic_output
    from voxloc.locs import write_parquet

    cols = ["frame", *POSITION_COLUMNS]
    table = _read_table(locs_path, cols, "localizations")
    optional = [*NET_COLUMNS, *SIGMA_COLUMNS, "fit_flags"]
    est = table[cols + [c for c in optional if c in table.columns]]
    del table
    truth = _read_table(truth_path, cols, "ground truth")
    truth = truth[[c for c in [*cols, "photons"] if c in truth.columns]]
    match = match_tables(est, truth, lateral_nm=lateral_nm, axial_nm=axial_nm)
    result = summary(est, truth, match)
    row: dict = {"movie": movie, **result.to_dict()}
    model = (crlb_model_from_truth(truth_path) or crlb_model) if crlb else None
    if model is not None and "photons" not in truth.columns:
        log.warning(
            "%s: no 'photons' column (detected photons per molecule): no Cramér-Rao bound", truth_path
        )
        model = None
    if model is not None:
        microscope, source = model
        truth = crlb_table(truth, microscope)
        row.update(crlb_summary(truth, match, result))
        row["crlb_source"] = source
    net = network_summary(est, truth, match, truth if model is not None else None)
    row.update(net)
    row["tp_fitted"] = fitted_count(est, match)
    row.update(coverage_summary(matched_errors(est, truth, match), matched_sigma(est, match)))
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
            "%s: sqrt(mean CRLB) x %.1f, y %.1f, z %.1f nm (%s); RMSE / bound x %.2f, y %.2f, z %.2f "
            "(network's own position: x %.2f, y %.2f, z %.2f)",
            movie,
            row["crlb_x_nm"],
            row["crlb_y_nm"],
            row["crlb_z_nm"],
            source,
            row["rmse_to_crlb_x"],
            row["rmse_to_crlb_y"],
            row["rmse_to_crlb_z"],
            row["rmse_to_crlb_x_net"],
            row["rmse_to_crlb_y_net"],
            row["rmse_to_crlb_z_net"],
        )
    log.info(
        "%s: %d of %d matched localizations fitted; RMSE lateral %.1f nm, axial %.1f nm without the "
        "fit (network); |error| <= reported sigma x %.3f, y %.3f, z %.3f (ideal 0.683)",
        movie,
        row["tp_fitted"],
        result.tp,
        row["rmse_lateral_net_nm"],
        row["rmse_axial_net_nm"],
        row["coverage_x"],
        row["coverage_y"],
        row["coverage_z"],
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
