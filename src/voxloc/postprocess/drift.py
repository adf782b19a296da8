"""Sample drift from the localizations themselves: redundant cross-correlation in x, y and z.

RCC (Wang et al., Opt. Express 22, 15982, 2014): the frames are cut into segments of
``segment_frames``; every pair of segments (i, j) gives the shift r_ij = d_j − d_i of their
drifts from the peak of their cross-correlation, the drifts d_i solve the redundant system
in least squares (d_0 = 0), pairs whose residual is over ``rmax_nm`` are dropped and the
system solved again, and the per-segment drift is interpolated to every frame (monotone
cubic, PCHIP; held constant beyond the first and last segment centres).

The cross-correlation of two binned localization sets is the histogram of the displacements
between their localizations (up to the binning), so it is computed from the pairs closer than
the search radius (a KD-tree), in 3-D, with no image of the field: memory is set by the
localizations kept per segment (``max_locs_per_segment``, a random subset), not by the field
of view or the movie's length. Coarse to fine: a first pass over ±``max_drift_xy_nm`` /
±``max_drift_z_nm`` with bins of 2.5 times the final ones, then a pass over ±2 coarse bins
around it with bins of ``bin_xy_nm`` / ``bin_z_nm``; the peak is refined to a fraction of a
bin by a parabola through the smoothed histogram's maximum and its neighbours per axis,
then by Gaussian mean shift on the displacements themselves (widths of one fine bin). The
coarse pass uses :data:`COARSE_LOCS` localizations per segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.ndimage import gaussian_filter
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from voxloc.types import FloatArray

#: localizations per segment in the coarse pass (its pairs grow with the search radius²)
COARSE_LOCS = 3000

__all__ = ["RCCOptions", "DriftEstimate", "estimate_drift", "segment_pair_shift", "solve_segment_drift"]


@dataclass(frozen=True)
class RCCOptions:
    """How the drift is estimated (config ``postprocess.drift``)."""

    segment_frames: int = 1000
    bin_xy_nm: float = 20.0
    bin_z_nm: float = 40.0
    max_drift_xy_nm: float = 1000.0
    max_drift_z_nm: float = 400.0
    rmax_nm: float = 30.0
    max_locs_per_segment: int = 20000
    min_locs_per_segment: int = 200


@dataclass
class DriftEstimate:
    """The drift (T, 3) nm of every frame 0..T-1 (x, y, z: subtract it from the positions),
    the segments' drifts (S, 3) at their centre frames (S,), how many segment pairs were used
    of how many, and whether it can be applied (else ``reason`` says why and the drift is 0)."""

    drift_nm: FloatArray
    segment_drift_nm: FloatArray
    segment_frame: FloatArray
    pairs_used: int
    pairs_total: int
    applied: bool
    reason: str = ""
    segment_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _peak(hist: FloatArray, edges: list[FloatArray]) -> FloatArray:
    """Sub-bin position of the smoothed histogram's maximum (3,)."""
    smooth = gaussian_filter(hist, 1.0, mode="constant")
    at = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    out = np.empty(3)
    for a in range(3):
        centres = 0.5 * (edges[a][1:] + edges[a][:-1])
        i = at[a]
        step = centres[1] - centres[0] if len(centres) > 1 else 0.0
        off = 0.0
        if 0 < i < len(centres) - 1:
            idx = list(at)
            v = []
            for k in (i - 1, i, i + 1):
                idx[a] = k
                v.append(smooth[tuple(idx)])
            den = v[0] - 2 * v[1] + v[2]
            off = 0.5 * (v[0] - v[2]) / den if den < 0 else 0.0
        out[a] = centres[i] + np.clip(off, -0.5, 0.5) * step
    return out


def _displacements(a: FloatArray, b: FloatArray, radius_xy: float, radius_z: float, centre: FloatArray):
    """Displacements b_k − a_l (M, 3) of the pairs within ``radius`` of ``centre``."""
    tree_a = cKDTree(a[:, :2])
    tree_b = cKDTree(b[:, :2] - centre[:2])
    pairs = tree_a.sparse_distance_matrix(tree_b, radius_xy, output_type="ndarray")
    d = b[pairs["j"]] - a[pairs["i"]]
    return d[np.abs(d[:, 2] - centre[2]) <= radius_z]


def _mean_shift(d: FloatArray, start: FloatArray, scale: FloatArray, n_iter: int = 20) -> FloatArray:
    """The mode near ``start`` of the displacements ``d`` (M, 3): Gaussian mean shift of
    widths ``scale`` (3,), whose fixed point on a flat background is the peak itself."""
    c = start.copy()
    d = d[np.all(np.abs(d - c) < 3 * scale, axis=1)]  # a truncated kernel: the same fixed point
    for _ in range(n_iter):
        w = np.exp(-0.5 * np.sum(((d - c) / scale) ** 2, axis=1))
        if w.sum() <= 0:
            break
        new = (w[:, None] * d).sum(axis=0) / w.sum()
        if np.all(np.abs(new - c) < 0.01 * scale):
            return new
        c = new
    return c


def segment_pair_shift(
    a_xyz: FloatArray, b_xyz: FloatArray, options: RCCOptions, *, seed: int = 0
) -> tuple[FloatArray, int]:
    """The shift (3,) nm of localizations ``b_xyz`` against ``a_xyz`` (b ≈ a + shift): the
    peak of their 3-D cross-correlation, coarse then fine (module doc), and the pairs in the
    fine histogram."""
    o = options
    coarse_xy, coarse_z = 2.5 * o.bin_xy_nm, 2.5 * o.bin_z_nm
    rng = np.random.default_rng(seed)
    few = [
        v if len(v) <= COARSE_LOCS else v[rng.choice(len(v), COARSE_LOCS, replace=False)]
        for v in (a_xyz, b_xyz)
    ]
    centre = np.zeros(3)
    for (a, b), bxy, bz, rxy, rz in (
        (few, coarse_xy, coarse_z, o.max_drift_xy_nm, o.max_drift_z_nm),
        ((a_xyz, b_xyz), o.bin_xy_nm, o.bin_z_nm, 2 * coarse_xy, 2 * coarse_z),
    ):
        d = _displacements(a, b, rxy, rz, centre)
        if len(d) == 0:
            return np.full(3, np.nan), 0
        nxy, nz = int(np.ceil(rxy / bxy)), max(int(np.ceil(rz / bz)), 1)
        edges = [centre[0] + bxy * np.arange(-nxy, nxy + 1), centre[1] + bxy * np.arange(-nxy, nxy + 1),
                 centre[2] + bz * np.arange(-nz, nz + 1)]  # fmt: skip
        hist, _ = np.histogramdd(d, bins=edges)
        centre = _peak(hist, edges)
    return _mean_shift(d, centre, np.array([o.bin_xy_nm, o.bin_xy_nm, o.bin_z_nm])), len(d)


def solve_segment_drift(
    i: np.ndarray, j: np.ndarray, shifts: FloatArray, n_segments: int, rmax_nm: float
) -> tuple[FloatArray, np.ndarray]:
    """Drifts (S, 3) with d_0 = 0 from the pairs' shifts r_ij = d_j − d_i (least squares),
    dropping the worst pair while its lateral residual exceeds ``rmax_nm`` and the rest still
    ties every segment to segment 0; returns the drifts and the pairs kept."""
    keep = np.isfinite(shifts).all(axis=1)
    while True:
        a = np.zeros((int(keep.sum()), n_segments))
        rows = np.arange(len(a))
        a[rows, j[keep]] = 1.0
        a[rows, i[keep]] -= 1.0
        sol, *_ = np.linalg.lstsq(a[:, 1:], shifts[keep], rcond=None)
        d = np.vstack([np.zeros((1, 3)), sol])
        err = np.full(len(shifts), -1.0)
        err[keep] = np.hypot(*(d[j[keep]] - d[i[keep]] - shifts[keep])[:, :2].T)
        worst = int(np.argmax(err))
        if err[worst] <= rmax_nm:
            return d, keep
        trial = keep.copy()
        trial[worst] = False
        if not _connected(i[trial], j[trial], n_segments):
            return d, keep
        keep = trial


def _connected(i: np.ndarray, j: np.ndarray, n: int) -> bool:
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[0] == 1


def estimate_drift(
    frame: np.ndarray,
    xyz_nm: FloatArray,
    n_frames: int,
    options: RCCOptions = RCCOptions(),
    *,
    seed: int = 0,
) -> DriftEstimate:
    """RCC drift (module doc) of localizations in ``frame`` (N,) at ``xyz_nm`` (N, 3) of a
    movie of ``n_frames``. Fewer than two segments with ``min_locs_per_segment`` gives no
    correction (``applied`` False, ``reason``)."""
    o = options
    frame = np.asarray(frame, np.int64)
    xyz = np.asarray(xyz_nm, np.float64)
    ok = np.isfinite(xyz).all(axis=1)
    frame, xyz = frame[ok], xyz[ok]
    n_seg = max(int(np.ceil(n_frames / o.segment_frames)), 1)
    seg = np.minimum(frame // o.segment_frames, n_seg - 1)
    counts = np.bincount(seg, minlength=n_seg)
    zero = np.zeros((n_frames, 3))
    none = DriftEstimate(zero, np.zeros((n_seg, 3)), (np.arange(n_seg) + 0.5) * o.segment_frames, 0, 0, False,
                         segment_counts=counts)  # fmt: skip
    if n_seg < 2:
        none.reason = f"{n_frames} frames make one segment of {o.segment_frames}: no drift to estimate"
        return none
    sparse = counts < o.min_locs_per_segment
    if sparse.any():
        none.reason = (f"{int(sparse.sum())} of {n_seg} segments of {o.segment_frames} frames have fewer than "
                       f"{o.min_locs_per_segment} localizations (fewest {int(counts.min())})")  # fmt: skip
        return none
    rng = np.random.default_rng(seed)
    order = np.argsort(seg, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    sets, centres = [], np.empty(n_seg)
    for s in range(n_seg):
        idx = order[bounds[s] : bounds[s + 1]]
        centres[s] = frame[idx].mean()
        if len(idx) > o.max_locs_per_segment:
            idx = rng.choice(idx, o.max_locs_per_segment, replace=False)
        sets.append(xyz[idx])
    i, j = np.triu_indices(n_seg, k=1)
    shifts = np.array([segment_pair_shift(sets[a], sets[b], o)[0] for a, b in zip(i, j, strict=True)])
    seg_drift, kept = solve_segment_drift(i, j, shifts, n_seg, o.rmax_nm)
    frames = np.arange(n_frames, dtype=np.float64)
    per_frame = PchipInterpolator(centres, seg_drift, axis=0, extrapolate=False)(frames)
    per_frame[frames < centres[0]] = seg_drift[0]
    per_frame[frames > centres[-1]] = seg_drift[-1]
    return DriftEstimate(per_frame, seg_drift, centres, int(kept.sum()), len(i), True, segment_counts=counts)
