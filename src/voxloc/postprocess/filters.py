"""Filtering of localizations by the network's probability and the fit's σ, photons and
goodness of fit, with a count of what each filter removed (Picasso's filter, as thresholds).

Every threshold is off (None) by default: nothing a user would keep is removed unless asked.
A row with a missing value (NaN, e.g. σ of ``localize.fit: none``) is kept by that filter.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

__all__ = ["FilterOptions", "filter_locs"]


@dataclass(frozen=True)
class FilterOptions:
    """Thresholds (config ``postprocess.filter``); None: that filter is off."""

    min_prob: float | None = None
    max_sigma_xy_nm: float | None = None
    max_sigma_z_nm: float | None = None
    min_photons: float | None = None
    max_chi2_dof: float | None = None


def _fails(table: pd.DataFrame, name: str, value: float) -> np.ndarray:
    """Rows that a threshold ``name`` = ``value`` removes (NaN never fails)."""
    if name == "min_prob":
        v = table["prob"].to_numpy(np.float64)
        return v < value
    if name == "max_sigma_xy_nm":
        v = np.fmax(table["sigma_x_nm"].to_numpy(np.float64), table["sigma_y_nm"].to_numpy(np.float64))
        return v > value
    column = {"max_sigma_z_nm": "sigma_z_nm", "min_photons": "photons", "max_chi2_dof": "chi2_dof"}[name]
    v = table[column].to_numpy(np.float64)
    return v < value if name.startswith("min") else v > value


def filter_locs(
    table: pd.DataFrame, options: FilterOptions = FilterOptions()
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of ``table`` that pass every threshold, and per threshold the rows it removed
    (a row failing two counts for both); the index is reset."""
    keep = np.ones(len(table), bool)
    counts: dict[str, int] = {}
    for f in fields(options):
        value = getattr(options, f.name)
        if value is None:
            continue
        fail = _fails(table, f.name, float(value))
        counts[f.name] = int(fail.sum())
        keep &= ~fail
    return table[keep].reset_index(drop=True), counts
