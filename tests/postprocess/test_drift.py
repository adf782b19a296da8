"""RCC drift (voxloc.postprocess.drift): recovers a known smooth 3-D drift from the
localizations of a filament-like sample, and refuses a movie too short or too sparse."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator

from voxloc.postprocess.drift import RCCOptions, estimate_drift, segment_pair_shift, solve_segment_drift


def sample(rng: np.random.Generator, n_sites: int = 4000) -> np.ndarray:
    """Binding sites (n, 3) nm on 12 straight filaments crossing a 10 x 10 µm field, z 0-800 nm."""
    t = rng.uniform(0, 1, n_sites)
    line = rng.integers(0, 12, n_sites)
    ends = rng.uniform([0, 0, 0], [10_000, 10_000, 800], (12, 2, 3))
    return ends[line, 0] + t[:, None] * (ends[line, 1] - ends[line, 0])


def smooth_walk(
    rng: np.random.Generator, n_frames: int, scale: np.ndarray, knot_frames: int = 1500
) -> np.ndarray:
    """A smooth random walk (T, 3) nm: a random walk with a step every ``knot_frames``,
    interpolated by a cubic (PCHIP), scaled so that its range is ``scale`` per axis."""
    knots = np.cumsum(rng.normal(size=(n_frames // knot_frames + 2, 3)), axis=0)
    walk = PchipInterpolator(np.arange(len(knots)) * knot_frames, knots, axis=0)(np.arange(n_frames))
    walk -= walk.min(axis=0)
    return walk / np.maximum(walk.max(axis=0), 1e-9) * scale


def movie(rng, n_frames, per_frame, drift, sigma=(10.0, 10.0, 25.0)):
    sites = sample(rng)
    frame = np.repeat(np.arange(n_frames), per_frame)
    pick = rng.integers(0, len(sites), len(frame))
    xyz = sites[pick] + drift[frame] + rng.normal(0, sigma, (len(frame), 3))
    return frame, xyz


def test_recovers_a_smooth_3d_drift():
    rng = np.random.default_rng(1)
    n_frames = 4000
    truth = smooth_walk(rng, n_frames, np.array([300.0, 250.0, 100.0]))
    frame, xyz = movie(rng, n_frames, 20, truth)
    est = estimate_drift(frame, xyz, n_frames, RCCOptions(segment_frames=500))
    assert est.applied and est.drift_nm.shape == (n_frames, 3)
    err = est.drift_nm - truth
    err -= err.mean(axis=0)  # the constant offset is not observable
    rms = np.sqrt(np.mean(err**2, axis=0))
    assert np.all(rms[:2] < 10.0) and rms[2] < 20.0, rms
    assert est.pairs_used >= 0.8 * est.pairs_total


def test_pair_shift_and_solve():
    rng = np.random.default_rng(2)
    sites = sample(rng)
    a = sites + rng.normal(0, 10, sites.shape)
    b = sites + np.array([123.0, -77.0, 40.0]) + rng.normal(0, 10, sites.shape)
    shift, n = segment_pair_shift(a, b, RCCOptions())
    assert np.all(np.abs(shift - [123.0, -77.0, 40.0]) < [3.0, 3.0, 8.0]), shift
    assert n > 1000
    # three segments, one bad pair among the redundant ones is dropped
    d = np.array([[0.0, 0, 0], [10.0, 5, 2], [30.0, -20, 6]])
    i, j = np.array([0, 0, 1]), np.array([1, 2, 2])
    shifts = d[j] - d[i]
    shifts[2] += [200.0, 0, 0]
    four = np.array([0, 0, 0, 1, 1, 2]), np.array([1, 2, 3, 2, 3, 3])
    d4 = np.vstack([d, [[50.0, 10, 0]]])
    s4 = d4[four[1]] - d4[four[0]]
    s4[3] += [200.0, 0, 0]
    out, kept = solve_segment_drift(*four, s4, 4, 20.0)
    np.testing.assert_allclose(out, d4, atol=1e-9)
    assert kept.tolist() == [True, True, True, False, True, True]
    out3, _ = solve_segment_drift(i, j, shifts, 3, 20.0)
    assert np.all(np.isfinite(out3))


@pytest.mark.parametrize("kind", ["short", "sparse"])
def test_too_short_or_too_sparse_is_not_corrected(kind):
    rng = np.random.default_rng(3)
    n_frames, per_frame = (800, 20) if kind == "short" else (4000, 0)
    truth = np.zeros((n_frames, 3))
    frame, xyz = movie(rng, n_frames, per_frame, truth)
    if kind == "sparse":
        frame, xyz = np.array([5, 1500]), np.zeros((2, 3))
    est = estimate_drift(frame, xyz, n_frames, RCCOptions(segment_frames=1000))
    assert not est.applied and np.all(est.drift_nm == 0)
    assert ("one segment" if kind == "short" else "fewer than") in est.reason
