"""Groups of three or more close detections (issue 16, neighbours): one emitter each, then fewer.

Detections of a frame linked by distances under ``neighbour_nm`` (connected components of
3 to :data:`MAX_GROUP` detections; close pairs are :mod:`voxloc.fitting.groups`') kept the
network's positions before: on the demo 8 / 4 % of the matched localizations, 83-85 % of
them beside two or more true molecules, with a 1-σ coverage of 0.17. Each group is now fitted
on one window around its centre, by backward elimination: one emitter per detection, all
from the network's positions (a fit of fewer emitters than molecules sits between them and
converges slowly: forward selection stalled at its iteration cap), then each detection,
the least probable first, is left out: it is a duplicate of a kept one when the fit without
it loses less log-likelihood than :data:`~voxloc.fitting.groups.LLR_THRESHOLD`, else it
stays. Each of these fits has at most :data:`~voxloc.fitting.groups.PAIR_MAX_ITER`
iterations, as the pairs' (20 took bench_peer's 0.01 / px movie from 6.3 to 4.8 frames/s
for a Jaccard of 0.939 instead of 0.941); the model kept, if still at the cap, is then
iterated to convergence from where it stopped (without that, at 10 molecules a frame a few
groups' z was 160-220 nm off and the sweep's RMSE / CRLB z 1.39 instead of 1.15). The farther neighbours'
light is added to the window as for pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from voxloc.fitting._lm import CONVERGED
from voxloc.fitting.groups import LLR_THRESHOLD, capped, member_windows, pair_window_px, status_flags
from voxloc.fitting.mle import FitOptions, JointResult, fit_joint
from voxloc.fitting.windows import CameraMaps
from voxloc.locs import FIT_FLAGS
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise
from voxloc.types import FloatArray

__all__ = ["MAX_GROUP", "GroupFits", "close_groups", "fit_groups"]

#: larger groups keep the network's positions (a window of ~15 px holds no more)
MAX_GROUP = 6


def close_groups(near_i: np.ndarray, near_j: np.ndarray, prob: FloatArray) -> np.ndarray:
    """(G, m) detections of each group of 3 to :data:`MAX_GROUP` linked by the ordered pairs
    (i, j) of :func:`voxloc.fitting.neighbours.neighbour_pairs`, most probable first, -1 padded."""
    n = len(prob)
    if not len(near_i):
        return np.zeros((0, 3), np.int64)
    graph = coo_matrix((np.ones(len(near_i)), (near_i, near_j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    size = np.bincount(label)
    ok = (size[label] >= 3) & (size[label] <= MAX_GROUP)
    idx = np.flatnonzero(ok)
    if not len(idx):
        return np.zeros((0, 3), np.int64)
    order = idx[np.lexsort((-np.asarray(prob)[idx], label[idx]))]
    labels, first, counts = np.unique(label[order], return_index=True, return_counts=True)
    out = np.full((len(labels), int(counts.max())), -1, np.int64)
    rank = np.arange(len(order)) - np.repeat(first, counts)
    out[np.repeat(np.arange(len(labels)), counts), rank] = order
    return out


@dataclass
class GroupFits:
    """Per group member (G, m): kept (False: a duplicate, or padding), θ (4 + P), σ (3),
    χ²/dof, iterations, convergence and fit flags of the group's last accepted model."""

    kept: np.ndarray
    theta: FloatArray
    sigma_nm: FloatArray
    chi2_dof: FloatArray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray


def fit_groups(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    cams: Sequence[FloatArray],
    frame: np.ndarray,
    xyz_nm: FloatArray,
    groups: np.ndarray,
    theta: FloatArray,
    others: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    *,
    z_bounds: tuple[float, float],
    options: FitOptions,
    neighbour_nm: float,
    saturation: float | None = None,
    shift_px: FloatArray | None = None,
) -> GroupFits:
    """Fit each group (G, m) of detections (``frame``, network ``xyz_nm`` (N, 3)) by backward
    elimination (module doc); ``theta`` (N, 4 + P) are every detection's current estimates,
    whose light (the ``others`` of the members, as in :func:`voxloc.fitting.groups.fit_pairs`)
    is added to the group's window."""
    g, m = groups.shape
    p = maps.n_planes
    valid = groups >= 0
    n = pair_window_px(options.window_px, 2 * neighbour_nm, microscope.px_size_nm)
    win, extra, edge, shift = member_windows(
        microscope, noise, maps, cams, frame, xyz_nm, groups, theta, others, n, saturation, shift_px
    )
    if extra is None:
        extra = np.zeros((g, p, n, n))

    kept = valid.copy()
    out_theta = np.zeros((g, m, 4 + p))
    out_sigma = np.full((g, m, 3), np.nan)
    chi2 = np.full(g, np.nan)
    n_iter = np.zeros(g, np.int64)
    status = np.zeros(g, np.int64)
    nll = np.full(g, np.nan)

    def fit(sel: np.ndarray, keep: np.ndarray, polish: bool = False) -> tuple[np.ndarray, JointResult]:
        """Groups ``sel`` (each with the same number of ``keep`` (S, m) members) fitted with
        one emitter per kept member, from its network position (``polish``: from its fit so
        far, with the full iteration budget): the members (S, c), the fit."""
        member = np.array([np.flatnonzero(k) for k in keep]).reshape(len(sel), -1)
        starts = out_theta[sel[:, None], member, :3] if polish else xyz_nm[groups[sel[:, None], member]]
        res = fit_joint(microscope, noise, maps, win.take(sel), starts, z_bounds=z_bounds,
                        options=options if polish else capped(options), extra=extra[sel],
                        shift_px=None if shift is None else shift[sel])  # fmt: skip
        n_iter[sel] += res.n_iter
        return member, res

    def accept(sel: np.ndarray, member: np.ndarray, res: JointResult) -> None:
        """Group ``sel``'s model is now ``res``: emitter e is member column ``member[:, e]``."""
        for e in range(member.shape[1]):
            out_theta[sel, member[:, e], :4] = res.theta[:, 4 * e : 4 * e + 4]
            out_sigma[sel, member[:, e]] = res.sigma_nm[:, e]
        out_theta[sel, :, 4:] = res.theta[:, None, 4 * member.shape[1] :]
        chi2[sel], status[sel], nll[sel] = res.chi2_dof, res.status, res.nll

    # every detection an emitter, then the least probable first: one fewer unless that
    # costs more than the threshold
    size = valid.sum(axis=1)
    for c in np.unique(size):
        sel = np.flatnonzero(size == c)
        accept(sel, *fit(sel, kept[sel]))
    for col in range(m - 1, 0, -1):
        tried = np.flatnonzero(kept[:, col] & np.isfinite(nll))
        count = kept[tried].sum(axis=1)
        for c in np.unique(count):
            sel = tried[count == c]
            without = kept[sel].copy()
            without[:, col] = False
            member, res = fit(sel, without)
            drop = np.isfinite(res.nll) & (res.nll - nll[sel] < LLR_THRESHOLD)
            if drop.any():
                kept[sel[drop], col] = False
                accept(sel[drop], member[drop], res.take(drop))
    # the model kept, still at its cap: iterated on to convergence (a capped fit was enough
    # to decide, not to report: at 10 molecules a frame its z errors reached 160-220 nm)
    late = np.flatnonzero((status != CONVERGED) & np.isfinite(nll))
    count = kept[late].sum(axis=1)
    for c in np.unique(count):
        sel = late[count == c]
        member, res = fit(sel, kept[sel], polish=True)
        better = np.isfinite(res.nll) & (res.nll <= nll[sel])
        if better.any():
            accept(sel[better], member[better], res.take(better))
    flags = (status_flags(status) | edge).astype(np.int16)
    flags = np.where(kept.sum(axis=1) > 1, flags | FIT_FLAGS["joint"], flags)
    rep = lambda v: np.repeat(v[:, None], m, axis=1)  # noqa: E731
    return GroupFits(kept & valid, out_theta, out_sigma, rep(chi2), rep(n_iter).astype(np.int16),
                     rep(status == CONVERGED), rep(flags).astype(np.int16))  # fmt: skip
