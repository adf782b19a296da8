"""Resolution QC of a localization table: NeNA localization precision and FRC resolution.

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

__all__ = ["FRC", "NeNA", "adjacent_frame_distances", "frc", "nena"]


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


@dataclass
class FRC:
    """The FRC resolution ``resolution_nm`` (NaN when the curve never falls below 1/7 or the
    table is too small: ``reason``), and the smoothed curve over spatial frequency (nm⁻¹)."""

    resolution_nm: float
    frequency_per_nm: FloatArray
    frc: FloatArray
    reason: str = ""


def _halves(table: pd.DataFrame, block_frames: int) -> np.ndarray:
    """Which half (0 / 1) each row goes to: by linked event (``link_id``: a blink's frames
    stay together), else by alternate blocks of ``block_frames`` frames."""
    if "link_id" in table.columns:
        ids = table["link_id"].to_numpy(np.int64)
        return (np.random.default_rng(0).integers(0, 2, int(ids.max(initial=-1)) + 1)[ids]).astype(bool)
    return ((table["frame"].to_numpy(np.int64) // block_frames) % 2).astype(bool)


def frc(
    table: pd.DataFrame,
    *,
    pixel_nm: float = 5.0,
    max_side_px: int = 4096,
    block_frames: int = 100,
    threshold: float = 1.0 / 7.0,
) -> FRC:
    """Fourier ring correlation resolution of the lateral render (Nieuwenhuizen et al., Nat.
    Methods 10, 557, 2013): the localizations split into two independent halves
    (:func:`_halves`), each rendered as a 2-D histogram of ``pixel_nm`` pixels (larger if the
    field would exceed ``max_side_px``) under a Hann window, FRC(q) = Re Σ F₁F₂* /
    sqrt(Σ|F₁|² Σ|F₂|²) over rings of frequency q, smoothed over 7 rings; the resolution is
    1 / q at the first crossing of ``threshold``."""
    xy = table[["x_nm", "y_nm"]].to_numpy(np.float64)
    ok = np.isfinite(xy).all(axis=1)
    nan = np.zeros(0)
    if ok.sum() < 100:
        return FRC(float("nan"), nan, nan, f"{int(ok.sum())} localizations: too few for an FRC")
    half = _halves(table, block_frames)[ok]
    xy = xy[ok]
    lo = xy.min(axis=0)
    extent = float((xy.max(axis=0) - lo).max())
    px = max(pixel_nm, extent / max_side_px)
    side = int(np.ceil(extent / px)) + 1
    edges = np.arange(side + 1) * px
    images = [np.histogram2d(*(xy[half == h] - lo).T, bins=(edges, edges))[0] for h in (False, True)]
    window = np.outer(np.hanning(side), np.hanning(side))
    f1, f2 = (np.fft.fft2(im * window) for im in images)
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.fftfreq(side)[None, :]
    ring = np.rint(np.hypot(fx, fy) * side).astype(np.int64).ravel()
    n_rings = side // 2
    keep = ring < n_rings
    num = np.bincount(ring[keep], weights=np.real(f1 * np.conj(f2)).ravel()[keep], minlength=n_rings)
    p1 = np.bincount(ring[keep], weights=(np.abs(f1) ** 2).ravel()[keep], minlength=n_rings)
    p2 = np.bincount(ring[keep], weights=(np.abs(f2) ** 2).ravel()[keep], minlength=n_rings)
    curve = np.where(p1 * p2 > 0, num / np.sqrt(np.where(p1 * p2 > 0, p1 * p2, 1.0)), 0.0)
    smooth = np.convolve(curve, np.ones(7) / 7, mode="same")
    q = np.arange(n_rings) / (side * px)
    below = np.flatnonzero((smooth < threshold) & (np.arange(n_rings) > 3))
    if not len(below):
        return FRC(float("nan"), q, smooth, f"the FRC stays above {threshold:.3f} up to the pixel's Nyquist")
    k = int(below[0])
    # linear interpolation of the crossing between rings k - 1 and k
    a, b = smooth[k - 1], smooth[k]
    qc = q[k - 1] + (a - threshold) / (a - b) * (q[k] - q[k - 1]) if a != b else q[k]
    return FRC(float(1.0 / qc), q, smooth)
