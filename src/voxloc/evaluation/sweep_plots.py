"""Figures of the density and speed sweeps (:mod:`voxloc.evaluation.sweeps`), after Aritake et al. 2020:
Fig. 7 (Jaccard and error against the density), Fig. 8 (error histograms), Fig. 9 (speed
against the image size). Matplotlib's object API (no pyplot state), PNG written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.errors import ConfigError
from voxloc.io import atomic_output

__all__ = ["histogram_molecules", "histogram_range_nm", "plot_density", "plot_error_histograms", "plot_speed"]

AXIS_COLOURS = {"x": "C0", "y": "C1", "z": "C3"}
TAU_MARKERS = ("o", "s", "^", "D", "v")


def _save(fig, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _density_axis(ax, table: pd.DataFrame) -> None:
    """A top axis in molecules per µm² (the density is proportional to M)."""
    per_m = float((table["density_per_um2"] / table["n_molecules"]).iloc[0])
    top = ax.secondary_xaxis("top", functions=(lambda m: m * per_m, lambda d: d / per_m))
    top.set_xlabel("density (molecules / µm²)")


def plot_density(table: pd.DataFrame, path: str | Path, *, title: str = "") -> None:
    """Fig. 7: (a) voxel and localization Jaccard, (b) RMSE lateral and axial, (c) mean ± SD
    of the error per axis, each against M molecules per frame, one marker per τ."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    ax_j, ax_r, ax_b = fig.subplots(1, 3)
    taus = sorted(table["tau"].unique())
    step = 0.8 * float(np.min(np.diff(sorted(table["n_molecules"].unique())), initial=10))
    for n, tau in enumerate(taus):
        t = table[table["tau"] == tau].sort_values("n_molecules")
        m, mk = t["n_molecules"], TAU_MARKERS[n % len(TAU_MARKERS)]
        colour = f"C{n}"
        ax_j.plot(m, t["voxel_jaccard"], mk + "-", color=colour, label=f"voxels, τ = {tau:g}")
        ax_j.plot(m, t["jaccard"], mk + "--", color=colour, mfc="none", label=f"localizations, τ = {tau:g}")
        ax_r.plot(m, t["rmse_lateral_nm"], mk + "-", color=colour, label=f"lateral, τ = {tau:g}")
        ax_r.plot(m, t["rmse_axial_nm"], mk + "--", color=colour, mfc="none", label=f"axial, τ = {tau:g}")
        for k, axis in enumerate("xyz"):  # side by side: 3 axes x len(taus) series per M
            shift = step * ((n * 3 + k) / (3 * len(taus)) - 0.5 + 0.5 / (3 * len(taus)))
            ax_b.errorbar(
                m + shift,
                t[f"bias_{axis}_nm"],
                yerr=t[f"sd_{axis}_nm"],
                fmt=mk,
                color=AXIS_COLOURS[axis],
                mfc=AXIS_COLOURS[axis] if n == 0 else "none",
                capsize=2,
                label=f"{axis}, τ = {tau:g}",
            )
    ax_j.set(xlabel="M (molecules per frame)", ylabel="Jaccard index", ylim=(0, 1), title="(a) detection")
    ax_r.set(xlabel="M (molecules per frame)", ylabel="RMSE of matched pairs (nm)", title="(b) RMSE")
    ax_r.set_ylim(bottom=0)
    ax_b.axhline(0, color="0.5", lw=0.8)
    ax_b.set(xlabel="M (molecules per frame)", ylabel="error, estimate − truth (nm)", title="(c) mean ± SD")
    for ax in (ax_j, ax_r, ax_b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if ax is ax_b else 1)
        _density_axis(ax, table)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def histogram_molecules(n_molecules: Sequence[int], chosen: Sequence[int] | None) -> list[int]:
    """The M values of the error histograms: ``chosen`` (each must be one of the sweep's M),
    or the smallest and largest M, as the paper's Fig. 8."""
    if chosen is None:
        return sorted({min(n_molecules), max(n_molecules)})
    missing = sorted(set(chosen) - set(n_molecules))
    if missing:
        raise ConfigError(
            f"config: sweeps.density.histogram_n_molecules {missing} not in sweeps.density.n_molecules"
        )
    return list(chosen)


def histogram_range_nm(errors: np.ndarray, tolerance_nm: float) -> float:
    """Half-width of a histogram of ``errors``: 1.1 x their 99.5th |percentile|, at most the
    matching tolerance (no matched error lies beyond it), at least 1 nm."""
    if errors.size == 0:
        return float(tolerance_nm)
    return float(np.clip(1.1 * np.percentile(np.abs(errors), 99.5), 1.0, tolerance_nm))


def plot_error_histograms(
    errors: pd.DataFrame,
    path: str | Path,
    n_molecules: Sequence[int],
    *,
    lateral_nm: float = 250.0,
    axial_nm: float = 500.0,
    bins: int = 60,
    title: str = "",
) -> None:
    """Fig. 8: histograms (probability density) of the error per axis of matched pairs, one
    row per τ, one curve per M of ``n_molecules``."""
    from matplotlib.figure import Figure

    taus = sorted(errors["tau"].unique())
    fig = Figure(figsize=(12, 3.2 * max(len(taus), 1) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(len(taus), 1), 3, squeeze=False))
    shown = errors[errors["n_molecules"].isin(n_molecules)]
    for c, axis in enumerate("xyz"):
        tol = axial_nm if axis == "z" else lateral_nm
        half = histogram_range_nm(shown[f"d{axis}_nm"].to_numpy(), tol)
        edges = np.linspace(-half, half, bins + 1)
        for r, tau in enumerate(taus):
            ax = axes[r, c]
            for n, m in enumerate(n_molecules):
                d = shown.loc[(shown["tau"] == tau) & (shown["n_molecules"] == m), f"d{axis}_nm"]
                if len(d) == 0:
                    continue
                sd = d.std(ddof=1) if len(d) > 1 else float("nan")
                ax.hist(d, bins=edges, density=True, histtype="step", lw=1.4, color=f"C{n}",
                        label=f"M = {m}: SD {sd:.0f} nm, n = {len(d)}")  # fmt: skip
            ax.axvline(0, color="0.5", lw=0.8)
            ax.set(xlabel=f"{axis} error, estimate − truth (nm)", ylabel="probability density (1/nm)")
            ax.set_title(f"{axis}, τ = {tau:g}")
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_speed(table: pd.DataFrame, path: str | Path, *, title: str = "") -> None:
    """Fig. 9: frames per second against the image size S (S x S x 4), log-log, with the
    1/S² line through the largest size (a cost proportional to the pixel count)."""
    from matplotlib.figure import Figure

    t = table.sort_values("size_px")
    s, fps = t["size_px"].to_numpy(float), t["frames_per_s"].to_numpy(float)
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(s, fps, "o-", color="C0", label="voxloc, read TIFF → Parquet")
    ax.plot(s, fps[-1] * (s[-1] / s) ** 2, ":", color="0.5", label="∝ 1/S² (cost per pixel)")
    for x, y, n in zip(s, fps, t["localizations_per_s"], strict=True):
        ax.annotate(
            f"{y:.0f} fps\n{n:.0f} loc/s", (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7
        )
    ax.set(xscale="log", yscale="log", xlabel="image size S (S × S × 4 pixels)", ylabel="frames per second")
    ax.set_xticks(s, [f"{int(v)}" for v in s])
    ax.minorticks_off()
    ax.set_xlim(s[0] / 1.4, s[-1] * 1.6)
    ax.set_ylim(fps.min() / 3, fps.max() * 3)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    row = t.iloc[0]
    sub = f"{row['device']} ({row['device_name']}), {row['threads']} threads, batch {row['batch_frames']}"
    ax.set_title(f"{title}\n{sub}" if title else sub, fontsize=9)
    _save(fig, path)
