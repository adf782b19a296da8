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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.errors import InputError
from voxloc.evaluation.matching import MatchResult, Summary, match_tables, molecule_table, summary
from voxloc.physics.crlb import crlb_table
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel

__all__ = [
    "crlb_model_from_truth",
    "crlb_model_from_config",
    "crlb_summary",
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
    """
    from voxloc.io import atomic_output
    from voxloc.locs import write_parquet

    cols = ["frame", "x_nm", "y_nm", "z_nm"]
    est = _read_table(locs_path, cols, "localizations")[cols]
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
            source,
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
