"""Blink linking (voxloc.postprocess.link): a molecule on for several frames is one event
at the weighted mean; separate molecules and events after a long dark time stay apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from voxloc.postprocess.link import LinkOptions, link_ids, linked_events


def blinks(rng, n_mol=300, sigma=(10.0, 10.0, 25.0)):
    """Molecules 2 µm apart on a grid, each on for a geometric number of frames (mean 3)
    starting at a random frame; localizations = truth + N(0, σ), σ reported."""
    rows = []
    for m in range(n_mol):
        x0, y0, z0 = (m % 20) * 2000.0, (m // 20) * 2000.0, rng.uniform(0, 800)
        start, on = rng.integers(0, 200), rng.geometric(1 / 3)
        for f in range(start, start + on):
            rows.append((f, *(np.array([x0, y0, z0]) + rng.normal(0, sigma)), *sigma, 1000.0, m))
    cols = ["frame", "x_nm", "y_nm", "z_nm", "sigma_x_nm", "sigma_y_nm", "sigma_z_nm", "photons", "molecule"]
    return pd.DataFrame(rows, columns=cols)


def test_each_blink_becomes_one_event_at_its_weighted_mean():
    rng = np.random.default_rng(5)
    t = blinks(rng)
    ids = link_ids(t)
    # one event per molecule (their on-times never overlap in place)
    per_mol = t.assign(id=ids).groupby("molecule")["id"].nunique()
    assert (per_mol == 1).mean() > 0.95
    ev = linked_events(t, ids)
    assert len(ev) < 1.05 * t["molecule"].nunique()
    sizes = t.groupby("molecule").size()
    assert ev["n_frames"].sum() == len(t) and ev["n_frames"].max() == sizes.max()
    long = ev[ev["n_frames"] >= 4]
    assert np.all(long["sigma_x_nm"] <= 5.0 + 1e-6)  # 10 / sqrt(4)
    assert np.allclose(long["photons"], 1000.0 * long["n_frames"])


def test_a_long_dark_time_or_a_distant_molecule_starts_a_new_event():
    t = pd.DataFrame({"frame": [0, 1, 5, 5], "x_nm": [0.0, 3.0, 1.0, 500.0], "y_nm": 0.0, "z_nm": 0.0,
                      "sigma_x_nm": 10.0, "sigma_y_nm": 10.0, "sigma_z_nm": 20.0})  # fmt: skip
    assert link_ids(t, LinkOptions(max_dark_frames=1)).tolist() == [0, 0, 1, 2]
    assert link_ids(t, LinkOptions(max_dark_frames=3)).tolist() == [0, 0, 0, 1]
    t.loc[1, "sigma_x_nm"] = np.nan  # no σ: its own event
    assert link_ids(t).tolist() == [0, 1, 2, 3]
    assert len(link_ids(t.iloc[:0])) == 0
