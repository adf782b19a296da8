"""Blink linking: localizations of one emission event over consecutive frames become one.

A fluorophore that stays on for several frames is localized in each (Picasso's ``link``,
ThunderSTORM's merging). A localization of frame f continues an event whose latest
localization is at most ``max_dark_frames`` + 1 frames earlier when their Mahalanobis
distance, Σ_axes Δ² / (σ_a² + σ_b²) with the reported σ (``sigma_{x,y,z}_nm``), is at most
``n_sigma``² (with the default 3 and the true σ, 97 % of a molecule's own pairs pass in 3-D);
each localization and each event is linked at most once per frame, the closest pairs first.
An event is the uncertainty-weighted mean of its localizations (weights 1 / σ² per axis; σ
of the mean 1 / sqrt(Σ 1 / σ²)), its photons summed, its first frame and its number of
frames kept. Rows without a finite σ are events of their own.

Frames are visited in order with a KD-tree over the open events only, so time grows with
the movie's length and memory with the localizations of a frame and the open events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

__all__ = ["LinkOptions", "link_ids", "linked_events"]

_POS = ("x_nm", "y_nm", "z_nm")
_SIG = ("sigma_x_nm", "sigma_y_nm", "sigma_z_nm")


@dataclass(frozen=True)
class LinkOptions:
    """When two localizations are one event (config ``postprocess.link``)."""

    n_sigma: float = 3.0
    max_dark_frames: int = 1


def link_ids(table: pd.DataFrame, options: LinkOptions = LinkOptions()) -> np.ndarray:
    """The event (N,) int64 of each row of ``table`` (frame, x/y/z_nm, sigma_*_nm), numbered
    from 0 in the order the events start (module doc)."""
    n = len(table)
    out = np.full(n, -1, np.int64)
    if n == 0:
        return out
    frame = table["frame"].to_numpy(np.int64)
    pos = table[list(_POS)].to_numpy(np.float64)
    var = table[list(_SIG)].to_numpy(np.float64) ** 2
    ok = np.isfinite(pos).all(axis=1) & np.isfinite(var).all(axis=1) & (var > 0).all(axis=1)
    order = np.argsort(frame, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(frame[order]) != 0])
    ends = np.r_[starts[1:], n]
    # open events: their latest row, its frame
    open_row = np.zeros(0, np.int64)
    open_event = np.zeros(0, np.int64)
    open_frame = np.zeros(0, np.int64)
    next_id = 0
    reach = options.n_sigma**2
    for s, e in zip(starts, ends, strict=True):
        rows = order[s:e]
        f = frame[rows[0]]
        alive = open_frame >= f - 1 - options.max_dark_frames
        open_row, open_event, open_frame = open_row[alive], open_event[alive], open_frame[alive]
        good = rows[ok[rows]]
        linked = np.zeros(len(good), bool)
        if len(open_row) and len(good):
            # search radius: n_sigma of the widest lateral σ of both sides
            sig = np.sqrt(var[open_row, :2].max() + var[good, :2].max())
            pairs = cKDTree(pos[open_row, :2]).sparse_distance_matrix(
                cKDTree(pos[good, :2]), options.n_sigma * sig, output_type="ndarray"
            )
            a, b = pairs["i"], pairs["j"]
            d2 = np.sum((pos[open_row[a]] - pos[good[b]]) ** 2 / (var[open_row[a]] + var[good[b]]), axis=1)
            close = d2 <= reach
            a, b, d2 = a[close], b[close], d2[close]
            used_a = np.zeros(len(open_row), bool)
            for k in np.argsort(d2, kind="stable"):
                if not used_a[a[k]] and not linked[b[k]]:
                    used_a[a[k]] = linked[b[k]] = True
                    out[good[b[k]]] = open_event[a[k]]
                    open_row[a[k]], open_frame[a[k]] = good[b[k]], f
        new = np.concatenate([good[~linked], rows[~ok[rows]]])
        out[new] = np.arange(next_id, next_id + len(new))
        next_id += len(new)
        fresh = good[~linked]
        open_row = np.concatenate([open_row, fresh])
        open_event = np.concatenate([open_event, out[fresh]])
        open_frame = np.concatenate([open_frame, np.full(len(fresh), f)])
    return out


def linked_events(table: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """One row per event (module doc): ``link_id``, the first ``frame``, ``n_frames``, the
    weighted x/y/z_nm and their σ, ``photons`` summed and the mean ``bg``; other numeric
    columns take the event's mean."""
    ids = np.asarray(ids, np.int64)
    w = {axis: 1.0 / table[s].to_numpy(np.float64) ** 2 for axis, s in zip(_POS, _SIG, strict=True)}
    parts = {"link_id": ids, "frame": table["frame"].to_numpy(np.int64)}
    for axis in _POS:
        wi = np.where(np.isfinite(w[axis]), w[axis], 0.0)
        parts[f"_w_{axis}"] = wi
        parts[f"_wx_{axis}"] = wi * np.nan_to_num(table[axis].to_numpy(np.float64))
        parts[f"_x_{axis}"] = table[axis].to_numpy(np.float64)
    for c in ("photons", "bg"):
        if c in table.columns:
            parts[c] = table[c].to_numpy(np.float64)
    g = pd.DataFrame(parts).groupby("link_id", sort=True)
    out = pd.DataFrame({"link_id": g.size().index.to_numpy(np.int64)})
    out["frame"] = g["frame"].min().to_numpy()
    out["n_frames"] = g.size().to_numpy(np.int32)
    for axis, s in zip(_POS, _SIG, strict=True):
        sw = g[f"_w_{axis}"].sum().to_numpy()
        mean = np.where(sw > 0, g[f"_wx_{axis}"].sum().to_numpy() / np.where(sw > 0, sw, 1.0),
                        g[f"_x_{axis}"].mean().to_numpy())  # fmt: skip
        out[axis] = mean.astype(np.float32)
        out[s] = np.where(sw > 0, 1.0 / np.sqrt(np.where(sw > 0, sw, 1.0)), np.nan).astype(np.float32)
    if "photons" in table.columns:
        out["photons"] = g["photons"].sum().to_numpy(np.float32)
    if "bg" in table.columns:
        out["bg"] = g["bg"].mean().to_numpy(np.float32)
    return out
