"""Resolution QC of a localization table: NeNA localization precision.

NeNA (Endesfelder et al., Histochem. Cell Biol. 141, 629, 2014): a molecule that stays on
is localized in consecutive frames, so the lateral distance d from each localization of
frame f to its nearest one in frame f + 1 follows, for those pairs, the distribution of the
difference of two localizations of precision σ, p₁(d) = d / (2σ²) exp(−d² / (4σ²)); nearest
other molecules add a Gaussian term around their typical distance d_c, and random pairs a
term linear in d. The histogram of d (density) is fitted with all three,

    p(d) = A₁ p₁(d; σ) + A₂ / (sqrt(2π) ω) exp(−(d − d_c)² / (2ω²)) + A₃ d,

and σ is the NeNA precision (nm). Distances over ``max_distance_nm`` are not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit
from scipy.spatial import cKDTree

from voxloc.types import FloatArray

__all__ = ["NeNA", "adjacent_frame_distances", "nena"]


@dataclass
class NeNA:
    """The NeNA precision ``sigma_nm`` (NaN when it cannot be fitted, ``reason`` says why),
    the fitted amplitudes and the pairs it was fitted on."""

    sigma_nm: float
    n_pairs: int
    params: dict
    reason: str = ""


def adjacent_frame_distances(table: pd.DataFrame, max_distance_nm: float) -> FloatArray:
    """Lateral distance from each localization to its nearest one in the next frame (within
    ``max_distance_nm``), over the whole table, frame by frame."""
    frame = table["frame"].to_numpy(np.int64)
    xy = table[["x_nm", "y_nm"]].to_numpy(np.float64)
    ok = np.isfinite(xy).all(axis=1)
    frame, xy = frame[ok], xy[ok]
    order = np.argsort(frame, kind="stable")
    frame, xy = frame[order], xy[order]
    starts = np.flatnonzero(np.r_[True, np.diff(frame) != 0])
    ends = np.r_[starts[1:], len(frame)]
    out = []
    for k in range(len(starts) - 1):
        if frame[starts[k + 1]] != frame[starts[k]] + 1:
            continue
        tree = cKDTree(xy[starts[k + 1] : ends[k + 1]])
        d, _ = tree.query(xy[starts[k] : ends[k]], distance_upper_bound=max_distance_nm)
        out.append(d[np.isfinite(d)])
    return np.concatenate(out) if out else np.zeros(0)


def _model(d, a1, s, a2, dc, w, a3):  # noqa: ANN001, ANN202
    single = a1 * d / (2 * s**2) * np.exp(-(d**2) / (4 * s**2))
    near = a2 / (np.sqrt(2 * np.pi) * w) * np.exp(-((d - dc) ** 2) / (2 * w**2))
    return single + near + a3 * d


def nena(
    table: pd.DataFrame, *, max_distance_nm: float = 150.0, bin_nm: float = 1.0, min_pairs: int = 200
) -> NeNA:
    """NeNA precision of ``table`` (frame, x_nm, y_nm; module doc)."""
    d = adjacent_frame_distances(table, max_distance_nm)
    if len(d) < min_pairs:
        return NeNA(float("nan"), len(d), {}, f"{len(d)} adjacent-frame pairs within {max_distance_nm:g} nm "
                                                f"(fewer than {min_pairs})")  # fmt: skip
    edges = np.arange(0.0, max_distance_nm + bin_nm, bin_nm)
    hist, _ = np.histogram(d, bins=edges, density=True)
    centres = 0.5 * (edges[1:] + edges[:-1])
    s0 = max(float(np.median(d[d < np.percentile(d, 50)])) / 1.2, bin_nm)
    p0 = (0.5, s0, 0.2, 0.5 * max_distance_nm, 0.25 * max_distance_nm, 1e-6)
    lower = (0.0, 0.5 * bin_nm, 0.0, 0.0, bin_nm, 0.0)
    upper = (1.0, max_distance_nm, 1.0, 2 * max_distance_nm, max_distance_nm, 1.0)
    try:
        popt, _ = curve_fit(_model, centres, hist, p0=p0, bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError) as err:
        return NeNA(float("nan"), len(d), {}, f"the NeNA fit failed: {err}")
    names = ("a_single", "sigma_nm", "a_near", "d_near_nm", "w_near_nm", "a_linear")
    return NeNA(float(popt[1]), len(d), dict(zip(names, map(float, popt), strict=True)))
