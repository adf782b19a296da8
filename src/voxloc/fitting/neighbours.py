"""Detections of one frame near each other: the ordered pairs within a distance, and which
detections have a neighbour (``crowded``); :mod:`voxloc.fitting.refine` decides from them
what each detection's fit models."""

from __future__ import annotations

import numpy as np

from voxloc.types import FloatArray

__all__ = ["crowded", "neighbour_pairs"]


def neighbour_pairs(
    frame: np.ndarray, x_nm: FloatArray, y_nm: FloatArray, distance_nm: float
) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """Ordered pairs (i, j), i != j, of detections of one frame within ``distance_nm``
    (lateral), both ways, with their distances."""
    n = len(frame)
    if n < 2 or distance_nm <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # sorted by frame, then x: a neighbour is within the next rows whose x is < d further
    frame = np.asarray(frame, np.int64)
    x = np.asarray(x_nm, np.float64)
    y = np.asarray(y_nm, np.float64)
    order = np.lexsort((x, frame))
    f, xs, ys = frame[order], x[order], y[order]
    first, second, dist = [], [], []
    for lag in range(1, n):
        same = (f[lag:] == f[:-lag]) & (xs[lag:] - xs[:-lag] <= distance_nm)
        if not same.any():
            break
        d = np.hypot(xs[lag:] - xs[:-lag], ys[lag:] - ys[:-lag])
        close = np.flatnonzero(same & (d <= distance_nm))
        first.append(order[close])
        second.append(order[close + lag])
        dist.append(d[close])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    i, j, d = np.concatenate(first), np.concatenate(second), np.concatenate(dist)
    return np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([d, d])


def crowded(frame: np.ndarray, x_nm: FloatArray, y_nm: FloatArray, distance_nm: float) -> np.ndarray:
    """Whether each detection has another one of its frame within ``distance_nm`` (lateral)."""
    out = np.zeros(len(frame), dtype=bool)
    i, _, _ = neighbour_pairs(frame, x_nm, y_nm, distance_nm)
    out[i] = True
    return out
