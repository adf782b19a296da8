"""NeNA (voxloc.postprocess.resolution): the precision of molecules localized in
consecutive frames, against the σ they were simulated with."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from voxloc.postprocess.resolution import adjacent_frame_distances, frc, nena


def on_for_two_frames(rng, sigma_nm, n_mol=3000, n_frames=600):
    """Each molecule at a random place in a 20 µm field, on in two consecutive frames,
    localized with lateral precision ``sigma_nm``."""
    start = rng.integers(0, n_frames - 1, n_mol)
    xy = rng.uniform(0, 20_000, (n_mol, 2))
    frame = np.concatenate([start, start + 1])
    pos = np.concatenate([xy, xy]) + rng.normal(0, sigma_nm, (2 * n_mol, 2))
    return pd.DataFrame({"frame": frame, "x_nm": pos[:, 0], "y_nm": pos[:, 1]})


@pytest.mark.parametrize("sigma", [8.0, 15.0])
def test_nena_recovers_the_precision(sigma):
    rng = np.random.default_rng(int(sigma))
    out = nena(on_for_two_frames(rng, sigma))
    assert out.sigma_nm == pytest.approx(sigma, rel=0.1), out
    assert out.n_pairs >= 2500


def test_too_few_pairs_say_so():
    t = pd.DataFrame({"frame": [0, 5], "x_nm": [0.0, 1.0], "y_nm": [0.0, 0.0]})
    out = nena(t)
    assert np.isnan(out.sigma_nm) and "fewer than" in out.reason
    assert len(adjacent_frame_distances(t, 100.0)) == 0


def filaments(rng, sigma_nm, n_frames=2000, per_frame=40, drift_nm=0.0):
    """Localizations of 30 straight filaments in a 10 µm field, σ lateral, optionally a
    linear drift of ``drift_nm`` over the movie left in."""
    ends = rng.uniform(0, 10_000, (30, 2, 2))
    n = n_frames * per_frame
    line, t = rng.integers(0, 30, n), rng.uniform(0, 1, n)
    xy = ends[line, 0] + t[:, None] * (ends[line, 1] - ends[line, 0]) + rng.normal(0, sigma_nm, (n, 2))
    frame = np.repeat(np.arange(n_frames), per_frame)
    xy[:, 0] += drift_nm * frame / n_frames
    return pd.DataFrame({"frame": frame, "x_nm": xy[:, 0], "y_nm": xy[:, 1]})


def test_frc_follows_the_precision_and_sees_drift():
    rng = np.random.default_rng(9)
    fine = frc(filaments(rng, 8.0)).resolution_nm
    coarse = frc(filaments(rng, 25.0)).resolution_nm
    drifted = frc(filaments(rng, 8.0, drift_nm=300.0)).resolution_nm
    assert 15 < fine < 60 and coarse > 1.5 * fine, (fine, coarse)
    assert drifted > 1.5 * fine, (fine, drifted)
    out = frc(filaments(rng, 8.0).iloc[:50])
    assert np.isnan(out.resolution_nm) and "too few" in out.reason
