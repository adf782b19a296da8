"""Filtering (voxloc.postprocess.filters): off by default; each threshold counted; NaN kept."""

from __future__ import annotations

import numpy as np
import pandas as pd

from voxloc.postprocess.filters import FilterOptions, filter_locs


def table():
    return pd.DataFrame({
        "prob": [0.9, 0.4, 0.95, 0.8], "sigma_x_nm": [5.0, 6.0, 30.0, np.nan], "sigma_y_nm": [5.0, 6.0, 8.0, np.nan],
        "sigma_z_nm": [10.0, 12.0, 20.0, np.nan], "photons": [3000.0, 200.0, 2500.0, np.nan],
        "chi2_dof": [1.0, 1.1, 4.0, np.nan],
    })  # fmt: skip


def test_nothing_is_removed_by_default():
    out, counts = filter_locs(table())
    assert len(out) == 4 and counts == {}


def test_each_threshold_counts_what_it_removes():
    opts = FilterOptions(min_prob=0.5, max_sigma_xy_nm=20.0, min_photons=500.0, max_chi2_dof=3.0)
    out, counts = filter_locs(table(), opts)
    assert out["prob"].tolist() == [0.9, 0.8]  # the row without a fit (NaN) stays
    assert counts == {"min_prob": 1, "max_sigma_xy_nm": 1, "min_photons": 1, "max_chi2_dof": 1}
