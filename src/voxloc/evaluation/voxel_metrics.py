"""Voxel-level classification metrics of the paper's Tables 4 and 5 (Aritake et al. 2020, Sect. 4.2).

Labels are the c channel of the voxel encoding (:mod:`voxloc.voxels`): arrays
(T, P, 4, H, W) (channel 0 is taken) or label arrays (T, P, H, W). True labels are c > 0.5,
estimated labels c > τ (τ = 0.5 in Table 4).

Adjacency (Table 5) is the 26-neighbourhood in the 3-D voxel grid (plane, row, column) of
the same frame: two voxels of frame t are adjacent when they differ by at most one in each
of plane, row and column (and are distinct). Voxels of different frames are never adjacent.

A ratio whose denominator is 0 is undefined and given as NaN: the Jaccard index when there
is nothing to find and nothing found, precision without estimates, recall without molecules
(as :func:`voxloc.network.validation.evaluate` and :func:`voxloc.evaluation.matching.summary`
do, and as NumPy and pandas give 0 / 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from voxloc.types import BoolArray, FloatArray

__all__ = ["labels", "confusion", "adjacency_breakdown", "evaluate_shards"]

#: 26-neighbourhood within a frame, for arrays (T, P, H, W); the centre is excluded
_NEIGHBOURS = np.ones((1, 3, 3, 3), dtype=np.int64)
_NEIGHBOURS[0, 1, 1, 1] = 0


def labels(arr: FloatArray, tau: float = 0.5) -> BoolArray:
    """Binary voxel labels (T, P, H, W): c > τ of (T, P, 4, H, W) or of (T, P, H, W) arrays."""
    a = np.asarray(arr)
    if a.ndim == 5:
        a = a[:, :, 0]
    if a.ndim != 4:
        raise ValueError(f"expected (T, P, 4, H, W) or (T, P, H, W) labels, got shape {a.shape}")
    return a > tau


def confusion(targets: FloatArray, output: FloatArray, tau: float = 0.5) -> dict[str, float]:
    """Confusion matrix of voxel labels (Table 4) and the voxel Jaccard TP / (TP + FP + FN).

    ``targets`` and ``output`` are (T, P, 4, H, W) or (T, P, H, W); truth is c > 0.5, the
    estimate c > ``tau``. Returns tp, fp, fn, tn (int) and jaccard (NaN when there is
    nothing to find and nothing found: TP + FP + FN = 0).
    """
    t = labels(targets, 0.5)
    p = labels(output, tau)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: targets {t.shape} vs output {p.shape}")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    tn = int(t.size - tp - fp - fn)
    denom = tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "jaccard": tp / denom if denom else float("nan")}


def _count_neighbours(mask: BoolArray) -> np.ndarray:
    """Number of voxels of ``mask`` in the 26-neighbourhood of every voxel (same frame)."""
    return ndimage.correlate(mask.astype(np.int64), _NEIGHBOURS, mode="constant", cval=0)


def adjacency_breakdown(true_c: FloatArray, pred_c: FloatArray, tau: float = 0.5) -> dict[str, int]:
    """FP and FN voxels split by adjacency as in the paper's Table 5.

    With TP, FP, FN voxels of ``confusion`` and the adjacency of the module docstring:

    * Adjacent1: pairs (FN, FP) of adjacent voxels in one-to-one correspondence, i.e. the FP
      is the only FP adjacent to the FN and the FN the only FN adjacent to the FP (the
      molecule was localized from the neighbouring voxel). ``fp_adjacent1`` and
      ``fn_adjacent1`` count the two sides (equal; the paper prints one number);
    * FP Adjacent2: other FP voxels adjacent to a voxel containing a molecule (TP or FN);
    * FP Non-adjacent: the remaining FP voxels (adjacent to no TP or FN);
    * FN Adjacent2: other FN voxels adjacent to a voxel estimated positive (TP or FP);
    * FN Non-adjacent: the remaining FN voxels (adjacent to no TP or FP).

    Inputs are (T, P, 4, H, W) or (T, P, H, W) arrays as for :func:`confusion`. Also returns
    fp and fn, the totals, so that each row of Table 5 sums to its Table 4 entry.
    """
    t = labels(true_c, 0.5)
    p = labels(pred_c, tau)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch: true {t.shape} vs predicted {p.shape}")
    tp, fp, fn = t & p, ~t & p, t & ~p
    n_fp_near = _count_neighbours(fp)  # FP neighbours of each voxel
    n_fn_near = _count_neighbours(fn)
    # the FP partner of an FN with exactly one FP neighbour: the sum of (flat index + 1)
    # over its FP neighbours is that neighbour's flat index + 1
    idx = np.where(fp, np.arange(1, fp.size + 1, dtype=np.int64).reshape(fp.shape), 0)
    partner_sum = ndimage.correlate(idx, _NEIGHBOURS, mode="constant", cval=0)
    fn_single = fn & (n_fp_near == 1)
    partner = partner_sum[fn_single] - 1  # flat indices of the FP partners
    mutual = n_fn_near.reshape(-1)[partner] == 1
    fn_adj1 = np.zeros(fn.shape, dtype=bool)
    fn_adj1[fn_single] = mutual
    fp_adj1 = np.zeros(fp.size, dtype=bool)
    fp_adj1[partner[mutual]] = True
    fp_adj1 = fp_adj1.reshape(fp.shape)

    near_molecule = _count_neighbours(t) > 0  # adjacent to TP or FN
    near_positive = _count_neighbours(p) > 0  # adjacent to TP or FP
    fp_rest, fn_rest = fp & ~fp_adj1, fn & ~fn_adj1
    fp_adj2 = int(np.count_nonzero(fp_rest & near_molecule))
    fn_adj2 = int(np.count_nonzero(fn_rest & near_positive))
    n_fp, n_fn = int(np.count_nonzero(fp)), int(np.count_nonzero(fn))
    n_adj1 = int(np.count_nonzero(fp_adj1))
    return {
        "fp": n_fp,
        "fp_adjacent1": n_adj1,
        "fp_adjacent2": fp_adj2,
        "fp_nonadjacent": n_fp - n_adj1 - fp_adj2,
        "fn": n_fn,
        "fn_adjacent1": int(np.count_nonzero(fn_adj1)),
        "fn_adjacent2": fn_adj2,
        "fn_nonadjacent": n_fn - int(np.count_nonzero(fn_adj1)) - fn_adj2,
        "tp": int(np.count_nonzero(tp)),
    }


def evaluate_shards(
    paths: Sequence[str | Path],
    predict: Callable[[FloatArray], FloatArray],
    taus: Sequence[float] = (0.5, 0.9),
    *,
    chunk_frames: int = 100,
) -> pd.DataFrame:
    """Tables 4 and 5 over simulated shards: one row per τ with the confusion matrix, voxel
    Jaccard, precision, recall and the adjacency breakdown (each NaN where its denominator is
    0, e.g. the Jaccard index of shards without molecules and without detections).

    ``predict`` maps frames in photons (T, P, H, W) to the network output (T, P, 4, H, W)
    (e.g. :meth:`voxloc.network.model.TrainedModel.predict`). Targets are the shards' emitters encoded
    on the shards' voxel grid (:func:`voxloc.voxels.encode`); frames are read ``chunk_frames``
    at a time (adjacency never crosses frames, so the counts are exact).
    """
    from voxloc.physics.noise import to_photons
    from voxloc.simulation.shards import read_settings, read_shard, shard_length
    from voxloc.voxels import encode

    keys = ("tp", "fp", "fn", "tn", "fp_adjacent1", "fp_adjacent2", "fp_nonadjacent")
    keys += ("fn_adjacent1", "fn_adjacent2", "fn_nonadjacent")
    totals = {tau: dict.fromkeys(keys, 0) for tau in taus}
    n_frames = n_molecules = n_collisions = 0
    for path in paths:
        settings = read_settings(path)
        for start in range(0, shard_length(path), chunk_frames):
            sim = read_shard(path, start, start + chunk_frames)
            n = sim.frames.shape[0]
            enc = encode(sim.emitters, n, settings.grid)
            out = predict(to_photons(sim.frames, settings.physics.noise))
            for tau in taus:
                counts = {**confusion(enc.targets, out, tau), **adjacency_breakdown(enc.targets, out, tau)}
                for key in keys:
                    totals[tau][key] += int(counts[key])
            n_frames += n
            n_molecules += enc.n_emitters
            n_collisions += enc.n_collisions
    rows = []
    for tau, c in totals.items():
        denom = c["tp"] + c["fp"] + c["fn"]
        rows.append(
            {
                "tau": tau,
                **c,
                "jaccard": c["tp"] / denom if denom else float("nan"),
                "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan"),
                "recall": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan"),
                "n_frames": n_frames,
                "n_molecules": n_molecules,
                "n_collisions": n_collisions,
            }
        )
    return pd.DataFrame(rows)
