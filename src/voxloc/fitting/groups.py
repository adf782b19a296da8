"""Close pairs of detections: one molecule found twice, or two molecules (issue 16, neighbours).

Two detections of a frame closer than ``neighbour_nm`` (and no third within it of either:
a *pair*) are one spot to single-emitter fits. On the sweep's frames (Table 2 PSF, 64 x 64
px) most such pairs are one molecule that the network detected in two voxels: 41 of 58 at
10 molecules a frame, 325 of 583 at 50; the others are two molecules. Both models are
fitted on one window centred on the pair, of side ``n + 2 ceil(neighbour_nm / 2 s)`` (each
detection's own ``n``-pixel window fits inside it), with the farther neighbours' light
added: one emitter started at the more probable detection, and two emitters, one at each
(x, y, z, N of each and a background per plane: :func:`voxloc.fitting.mle.fit_joint`).

The two-emitter model (at most :data:`PAIR_MAX_ITER` iterations) is kept when it converges
and raises the log-likelihood by more than
:data:`LLR_THRESHOLD`: the likelihood-ratio test of a nested model with 4 more parameters
at p = 1e-6 (half the χ²₄ quantile; ThunderSTORM's multi-emitter fitting uses the same
p-value). Both rows then take the joint fit, whose σ includes what the overlap costs. Else
the pair is one molecule: the more probable row takes the one-emitter fit, and the other
is a duplicate (removed from the table by :class:`voxloc.fitting.refine.Refiner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxloc.fitting._lm import CONVERGED, DIVERGED, MAX_ITER
from voxloc.fitting.mle import FitOptions, JointResult, fit_joint, fit_windows, others_light
from voxloc.fitting.windows import CameraMaps, Windows, cut_windows
from voxloc.locs import FIT_FLAGS
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import PixelNoise
from voxloc.types import FloatArray

__all__ = [
    "LLR_THRESHOLD",
    "PairFits",
    "capped",
    "close_pairs",
    "fit_pairs",
    "member_others",
    "pair_window_px",
    "status_flags",
]

#: log-likelihood gain that makes a pair two molecules: chi2.ppf(1 - 1e-6, 4) / 2
LLR_THRESHOLD = 16.69
#: iteration cap of the two-emitter fit: for one molecule found twice its information is
#: near singular and it crawls (23 iterations on average, 38 % at a 30 cap, on bench_peer's
#: 0.01 / px movie, 90 % of the fit's time); two molecules converge well within it, and a
#: fit that does not converge counts as one molecule
PAIR_MAX_ITER = 10


def close_pairs(near_i: np.ndarray, near_j: np.ndarray, n: int) -> np.ndarray:
    """(G, 2) detections that are each other's only neighbour, from the ordered pairs (i, j)
    of :func:`voxloc.fitting.neighbours.neighbour_pairs` within ``neighbour_nm`` of ``n``
    detections."""
    degree = np.bincount(near_i, minlength=n)
    alone = (near_i < near_j) & (degree[near_i] == 1) & (degree[near_j] == 1)
    return np.stack([near_i[alone], near_j[alone]], axis=1)


def pair_window_px(window_px: int, neighbour_nm: float, px_size_nm: float) -> int:
    """Side of a pair's window: each member's own window fits inside it."""
    return int(window_px + 2 * np.ceil(neighbour_nm / (2 * px_size_nm)))


@dataclass
class PairFits:
    """Per pair: whether it is two molecules (``two``), and each member's position, photons,
    background (θ of 4 + P), σ (G, 2, 3), χ²/dof, iterations, convergence and fit flags
    (G, 2); for one
    molecule the kept member (``keep``, 0 or 1) holds the fit and the other is a duplicate."""

    two: np.ndarray
    keep: np.ndarray
    theta: FloatArray
    sigma_nm: FloatArray
    chi2_dof: FloatArray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray


def capped(options: FitOptions) -> FitOptions:
    """``options`` with at most :data:`PAIR_MAX_ITER` iterations: the multi-emitter fits' cap."""
    return dataclasses.replace(options, max_iter=min(options.max_iter, PAIR_MAX_ITER))


def status_flags(status: np.ndarray) -> np.ndarray:
    """The ``max_iter`` / ``diverged`` :data:`voxloc.locs.FIT_FLAGS` of the kernels' statuses."""
    return (
        np.where(status == MAX_ITER, FIT_FLAGS["max_iter"], 0)
        | np.where(status == DIVERGED, FIT_FLAGS["diverged"], 0)
    ).astype(np.int16)


def fit_pairs(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    cams: Sequence[FloatArray],
    frame: np.ndarray,
    xyz_nm: FloatArray,
    prob: FloatArray,
    pairs: np.ndarray,
    theta: FloatArray,
    others: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    *,
    z_bounds: tuple[float, float],
    options: FitOptions,
    neighbour_nm: float,
    saturation: float | None = None,
    shift_px: FloatArray | None = None,
) -> PairFits:
    """Fit each pair (G, 2) of detections (``frame``, network ``xyz_nm`` (N, 3), ``prob``) as
    one and as two emitters (module doc). ``theta`` (N, 4 + P) are every detection's current
    estimates, whose light (for the ``others`` of each member: rows, ptr, neighbours as in
    :func:`voxloc.fitting.mle.others_light`) is added to the pair's window."""
    g = len(pairs)
    p = maps.n_planes
    a, b = pairs[:, 0], pairs[:, 1]
    n2 = pair_window_px(options.window_px, neighbour_nm, microscope.px_size_nm)
    win, extra, edge, shift = member_windows(
        microscope, noise, maps, cams, frame, xyz_nm, pairs, theta, others, n2, saturation, shift_px
    )
    keep = (prob[b] > prob[a]).astype(np.int64)
    first = np.where(keep == 1, b, a)
    one = fit_windows(
        microscope, noise, maps, win, *xyz_nm[first].T, z_bounds=z_bounds, options=options, extra=extra,
        shift_px=shift,
    )  # fmt: skip
    both: JointResult = fit_joint(
        microscope, noise, maps, win, xyz_nm[pairs], z_bounds=z_bounds, options=capped(options), extra=extra,
        shift_px=shift,
    )  # fmt: skip
    ok = (both.status == CONVERGED) & np.isfinite(both.nll) & np.isfinite(one.nll)
    two = ok & (one.nll - both.nll > LLR_THRESHOLD)
    out_theta = np.zeros((g, 2, 4 + p))
    out_sigma = np.full((g, 2, 3), np.nan)
    for e in range(2):
        out_theta[:, e, :4] = both.theta[:, 4 * e : 4 * e + 4]
        out_theta[:, e, 4:] = both.theta[:, 8:]
        out_sigma[:, e] = both.sigma_nm[:, e]
    rows = np.arange(g)
    single = ~two
    out_theta[rows[single], keep[single]] = one.theta[single]
    out_sigma[rows[single], keep[single]] = one.sigma_nm[single]
    chi2 = np.where(two, both.chi2_dof, one.chi2_dof)[:, None].repeat(2, axis=1)
    n_iter = np.where(two, both.n_iter, one.n_iter)[:, None].repeat(2, axis=1).astype(np.int16)
    flags = np.where(
        two, status_flags(both.status), one.flags & ~(FIT_FLAGS["edge"] | FIT_FLAGS["saturated"])
    )
    flags = (flags | edge)[:, None].repeat(2, axis=1).astype(np.int16)
    converged = np.where(two, both.status == CONVERGED, one.converged)[:, None].repeat(2, axis=1)
    return PairFits(two, keep, out_theta, out_sigma, chi2, n_iter, converged, flags)


def member_windows(
    microscope: Microscope,
    noise: PixelNoise,
    maps: CameraMaps,
    cams: Sequence[FloatArray],
    frame: np.ndarray,
    xyz_nm: FloatArray,
    members: np.ndarray,
    theta: FloatArray,
    others: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    n: int,
    saturation: float | None,
    shift_px: FloatArray | None,
) -> tuple[Windows, FloatArray | None, np.ndarray, FloatArray | None]:
    """One window of side ``n`` per group (G, m) of detections (-1: none), centred on their
    mean network position in their frame, with the light of their farther neighbours at
    ``theta`` (:func:`member_others`; None without ``others``), the ``edge`` / ``saturated``
    flags of each window and the plane drift of each group (its first member's)."""
    valid = members >= 0
    lead = members[:, 0]
    xy = np.where(valid[..., None], xyz_nm[np.maximum(members, 0), :2], 0.0)
    centre = xy.sum(axis=1) / valid.sum(axis=1)[:, None]
    pos = maps.positions_px(centre[:, 0], centre[:, 1], microscope.px_size_nm)
    shift = None if shift_px is None else shift_px[lead]  # one frame: one plane drift
    if shift is not None:
        pos = pos + shift
    win = cut_windows(cams, frame[lead], pos, n, saturation=saturation)
    extra = None
    if others is not None:
        extra, _ = others_light(
            microscope, noise, maps, theta, member_others(members, others), win, shift_px=shift_px
        )
    edge = np.where(win.edge, FIT_FLAGS["edge"], 0) | np.where(win.bad, FIT_FLAGS["saturated"], 0)
    return win, extra, edge, shift


def member_others(
    members: np.ndarray, others: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The farther neighbours of any member of each group (G, m) of detections (-1: none),
    once each and none of the group itself: (rows = group index, ptr, neighbours) for
    :func:`voxloc.fitting.mle.others_light` on the groups' windows."""
    rows, ptr, j = others
    where = np.full(int(max(rows.max(initial=-1), members.max(initial=-1))) + 1, -1)
    where[rows] = np.arange(len(rows))
    owner, nbr = [], []
    for e in range(members.shape[1]):
        r = np.where(members[:, e] >= 0, where[np.maximum(members[:, e], 0)], -1)
        has = np.flatnonzero(r >= 0)
        counts = ptr[r[has] + 1] - ptr[r[has]]
        starts = np.repeat(ptr[r[has]], counts)
        offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        owner.append(np.repeat(has, counts))
        nbr.append(j[starts + offset])
    owner, nbr = np.concatenate(owner), np.concatenate(nbr)
    own = (members[owner] == nbr[:, None]).any(axis=1)
    owner, nbr = owner[~own], nbr[~own]
    key = np.unique(np.stack([owner, nbr], axis=1), axis=0).reshape(-1, 2)
    owner, nbr = key[:, 0], key[:, 1]
    g_ptr = np.searchsorted(owner, np.arange(len(members) + 1))
    return np.arange(len(members)), g_ptr, nbr
