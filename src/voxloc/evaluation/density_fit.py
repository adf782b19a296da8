"""The density sweep with the per-molecule fit (issue 16): the same frames' detections
refined by :mod:`voxloc.fitting` and scored against the truth and the Cramér-Rao bound.

The sweep's frames are the model's training frames, whose planes 2-4 see each molecule
shifted by a per-frame drift Δk (Eq. 7) and have no camera affine; the fit is given that
Δk as its registration (what a calibrated microscope knows), and the simulation's noise as
its likelihood. Per (M, τ) the row gains ``jaccard_fit`` and the RMSEs of the fitted
positions (matched on them), ``crlb_{x,y,z}_nm`` (sqrt of the mean bound of the matched
true molecules, their true positions and photons) and ``rmse_to_crlb_{x,y,z}_fit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from voxloc.evaluation.matching import match_tables, summary
from voxloc.fitting.mle import FitOptions
from voxloc.fitting.refine import Refiner
from voxloc.physics.crlb import crlb
from voxloc.physics.noise import PixelNoise
from voxloc.simulation.settings import SimulationSettings
from voxloc.types import FloatArray

__all__ = ["FIT_COLUMNS", "sweep_refiner", "fit_block", "fit_metrics"]

FIT_COLUMNS = (
    "jaccard_fit",
    "rmse_lateral_fit_nm",
    "rmse_axial_fit_nm",
    "rmse_x_fit_nm",
    "rmse_y_fit_nm",
    "crlb_x_nm",
    "crlb_y_nm",
    "crlb_z_nm",
    "rmse_to_crlb_x_fit",
    "rmse_to_crlb_y_fit",
    "rmse_to_crlb_z_fit",
)


def sweep_refiner(
    settings: SimulationSettings, z_range_nm: tuple[float, float], fit: Mapping[str, Any]
) -> Refiner:
    """The fit of the sweep's frames: the simulation's microscope and noise, no affine, and
    the ``localize`` config's ``fit_*`` settings (``fit``; defaults of LocalizeOptions)."""
    p = settings.physics
    options = FitOptions(
        window_px=int(fit.get("fit_window_px", 9)), max_iter=int(fit.get("fit_max_iter", 30))
    )
    return Refiner(
        p,
        PixelNoise.from_model(p.noise),
        [np.eye(3)] * p.n_planes,
        z_range_nm,
        options=options,
        neighbour_nm=float(fit.get("fit_neighbour_nm", 400.0)),
        crowded_mode=str(fit.get("fit_crowded", "joint")),
        second=bool(fit.get("fit_second", True)),
    )


def fit_block(
    refiner: Refiner, est: pd.DataFrame, photons: FloatArray, drift_nm: FloatArray, first: int
) -> pd.DataFrame:
    """Fit one block's detections ``est`` (absolute frames from ``first``) in its frames
    ``photons`` (B, P, H, W), each plane shifted by the frame's drift ``drift_nm`` (B, P, 2)."""
    shift = drift_nm[est["frame"].to_numpy() - first] / refiner.microscope.px_size_nm
    cams = [photons[:, k] for k in range(photons.shape[1])]
    return refiner(est, cams, first, shift_px=shift)


def fit_metrics(
    est: pd.DataFrame,
    truth: pd.DataFrame,
    settings: SimulationSettings,
    *,
    lateral_nm: float,
    axial_nm: float,
) -> dict[str, float]:
    """:data:`FIT_COLUMNS` of the fitted table ``est`` against ``truth`` (module doc)."""
    match = match_tables(est, truth, lateral_nm=lateral_nm, axial_nm=axial_nm)
    s = summary(est, truth, match)
    out = {
        "jaccard_fit": s.jaccard,
        "rmse_lateral_fit_nm": s.rmse_lateral_nm,
        "rmse_axial_fit_nm": s.rmse_axial_nm,
        "rmse_x_fit_nm": s.rmse_x_nm,
        "rmse_y_fit_nm": s.rmse_y_nm,
    }
    t = truth.iloc[match.true_index]
    if len(t) and settings.physics.noise.kind != "none":
        var = crlb(
            settings.physics, *(t[c].to_numpy(np.float64) for c in ("x_nm", "y_nm", "z_nm", "photons"))
        )
        bound = np.sqrt(np.mean(var[np.isfinite(var).all(axis=1)], axis=0))
    else:
        bound = np.full(3, np.nan)
    rmse = (s.rmse_x_nm, s.rmse_y_nm, s.rmse_axial_nm)
    for a, axis in enumerate("xyz"):
        out[f"crlb_{axis}_nm"] = float(bound[a])
        out[f"rmse_to_crlb_{axis}_fit"] = float(rmse[a] / bound[a]) if bound[a] > 0 else float("nan")
    return out
