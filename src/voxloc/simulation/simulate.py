"""Seeded simulation of quad-plane training frames (Aritake et al. 2020, Sect. 2, Table 3).

Molecules are drawn uniformly in the target space of the voxel grid with photon counts
N ~ U[N_min, N_max] (detected photons summed over the planes); each plane k = 2..P sees them shifted by a per-frame lateral drift
Δk ~ U[-d, d]² (Eq. 7; Δ1 = 0); the expected image is the PSF of Eqs. 4-6 summed over the
molecules (Eq. 3) and the noise model in use adds ε.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from voxloc.physics.noise import add_noise
from voxloc.simulation.settings import SimulationSettings
from voxloc.types import FloatArray

__all__ = [
    "EMITTER_COLUMNS",
    "SimulatedFrames",
    "sample_emitters",
    "sample_drift",
    "expected_frames",
    "emitter_table",
    "padded_emitters",
    "simulate_frames",
]

#: columns (and dtypes) of an emitter table; coordinates in camera-1 nm
EMITTER_COLUMNS = {
    "frame": np.int32,
    "x_nm": np.float32,
    "y_nm": np.float32,
    "z_nm": np.float32,
    "photons": np.float32,  # detected photons summed over the P planes
}


@dataclass
class SimulatedFrames:
    frames: FloatArray  # (T, P, H, W) float32
    emitters: pd.DataFrame  # EMITTER_COLUMNS
    drift_nm: FloatArray  # (T, P, 2) float32, plane 1 is 0


def emitter_table(
    frame: ArrayLike, x_nm: ArrayLike, y_nm: ArrayLike, z_nm: ArrayLike, photons: ArrayLike
) -> pd.DataFrame:
    """An emitter table with the standard columns and dtypes."""
    cols = dict(zip(EMITTER_COLUMNS, (frame, x_nm, y_nm, z_nm, photons), strict=True))
    return pd.DataFrame({k: np.asarray(v, dtype=EMITTER_COLUMNS[k]) for k, v in cols.items()})


def sample_emitters(n_frames: int, settings: SimulationSettings, rng: np.random.Generator) -> pd.DataFrame:
    """M ~ U{M_min..M_max} molecules per frame, uniform in the target space of the grid."""
    lo, hi = settings.n_molecules
    counts = rng.integers(lo, hi + 1, size=n_frames)
    n = int(counts.sum())
    (x0, x1), (y0, y1), (z0, z1) = settings.grid.extent_nm
    wl, wh = settings.photons_range
    return emitter_table(
        np.repeat(np.arange(n_frames), counts),
        rng.uniform(x0, x1, n),
        rng.uniform(y0, y1, n),
        rng.uniform(z0, z1, n),
        rng.uniform(wl, wh, n),
    )


def sample_drift(n_frames: int, n_planes: int, max_nm: float, rng: np.random.Generator) -> FloatArray:
    """Relative lateral drift Δk (T, P, 2) in nm, U[-max, max] for planes 2..P, Δ1 = 0 (Eq. 7)."""
    drift = np.zeros((n_frames, n_planes, 2), dtype=np.float32)
    drift[:, 1:] = rng.uniform(-max_nm, max_nm, size=(n_frames, n_planes - 1, 2))
    return drift


def padded_emitters(emitters: pd.DataFrame, n_frames: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Emitter table -> per-frame arrays xy (T, M, 2), z (T, M), photons (T, M), zero-padded."""
    frame = emitters["frame"].to_numpy(np.int64)
    order = np.argsort(frame, kind="stable")
    frame = frame[order]
    counts = np.bincount(frame, minlength=n_frames)
    m = max(int(counts.max(initial=0)), 1)
    slot = np.arange(frame.size) - np.repeat(np.cumsum(counts) - counts, counts)
    xy = np.zeros((n_frames, m, 2))
    z = np.zeros((n_frames, m))
    w = np.zeros((n_frames, m))
    xy[frame, slot, 0] = emitters["x_nm"].to_numpy()[order]
    xy[frame, slot, 1] = emitters["y_nm"].to_numpy()[order]
    z[frame, slot] = emitters["z_nm"].to_numpy()[order]
    w[frame, slot] = emitters["photons"].to_numpy()[order]
    return xy, z, w


def expected_frames(
    emitters: pd.DataFrame,
    drift_nm: FloatArray,
    settings: SimulationSettings,
    *,
    batch: int = 256,
) -> FloatArray:
    """Noise-free frames Σ N t_k g(x - Δk, z_m) + b (Eqs. 3, 4, 7) as (T, P, H, W) float32."""
    drift_nm = np.asarray(drift_nm)
    n_frames = drift_nm.shape[0]
    grid = settings.grid
    xy, z, w = padded_emitters(emitters, n_frames)
    out = np.empty((n_frames, grid.n_planes, grid.height, grid.width), dtype=np.float32)
    for s in range(0, n_frames, batch):
        e = min(s + batch, n_frames)
        # plane k sees molecule m at xy_m + Δk: (T, M, P, 2)
        xy_seen = xy[s:e, :, None, :] + drift_nm[s:e, None, :, :]
        out[s:e] = settings.physics.render(xy_seen, z[s:e], w[s:e], (grid.height, grid.width))
    return out


def simulate_frames(n_frames: int, settings: SimulationSettings, rng: np.random.Generator) -> SimulatedFrames:
    """Draw emitters and drift, render and add noise: one seeded batch of training frames."""
    emitters = sample_emitters(n_frames, settings, rng)
    drift = sample_drift(n_frames, settings.grid.n_planes, settings.drift_max_nm, rng)
    frames = add_noise(expected_frames(emitters, drift, settings), settings.physics.noise, rng)
    return SimulatedFrames(frames=frames, emitters=emitters, drift_nm=drift)
