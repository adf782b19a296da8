"""The voxel grid and the voxel encoding of emitters (Aritake et al. 2020, Sect. 3.2).

The target space is split into H x W x P voxels: pixel (i, j) of plane k. A voxel holds
a label c ∈ {0, 1} and, when c = 1, the offsets ζ ∈ [0, 1)^3 of its molecule
(ζ_d = (z_d - x_ijk,d) / s_d + 1/2, the paper's ζ equation), so that

    x = (j + ζx) s,   y = (i + ζy) s,   z = e_k + ζz (e_{k+1} - e_k)

where e_0..e_P are the slab edges along z. Slab k is centred on plane k: its edges are the
midpoints between neighbouring planes, and the outer edges lie half a spacing beyond the
first and last plane. With the nominal planes (0, 400, 800, 1200) nm the slabs are
[-200, 200), [200, 600), ... [1000, 1400), i.e. [z_k - Δz/2, z_k + Δz/2).

Targets are arrays (T, P, 4, H, W) with the 4 channels (c, ζx, ζy, ζz) per plane, i.e. the
16 = P x 4 output channels of the network in plane-major order (channel 4k + q).

Collision policy: at most one molecule per voxel (the paper's assumption). When several
molecules of one frame fall in the same voxel, the one with the largest photon count (the
brightest) is kept and the others are counted in ``n_collisions``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from voxloc.types import BoolArray, FloatArray, IntArray

__all__ = ["CHANNELS", "VoxelGrid", "Encoded", "voxel_index", "encode", "decode", "voxel_table"]

#: per-plane channels of a target / network output
CHANNELS = ("c", "zeta_x", "zeta_y", "zeta_z")


@dataclass(frozen=True)
class VoxelGrid:
    """Geometry of the voxel grid: image shape, lateral voxel size and plane positions."""

    height: int
    width: int
    px_size_nm: float = 192.0
    plane_z_nm: tuple[float, ...] = (0.0, 400.0, 800.0, 1200.0)

    def __post_init__(self) -> None:
        z = np.asarray(self.plane_z_nm, dtype=float)
        if z.ndim != 1 or z.size < 2 or np.any(np.diff(z) <= 0):
            raise ValueError(f"plane_z_nm must increase strictly, got {self.plane_z_nm}")
        object.__setattr__(self, "plane_z_nm", tuple(float(v) for v in z))

    @property
    def n_planes(self) -> int:
        return len(self.plane_z_nm)

    @property
    def z_edges_nm(self) -> FloatArray:
        """Slab edges e_0 < ... < e_P along z (midpoints between planes, see module doc)."""
        z = np.asarray(self.plane_z_nm)
        mid = (z[1:] + z[:-1]) / 2
        return np.concatenate([[z[0] - (z[1] - z[0]) / 2], mid, [z[-1] + (z[-1] - z[-2]) / 2]])

    @property
    def extent_nm(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """((x_min, x_max), (y_min, y_max), (z_min, z_max)) of the target space."""
        e = self.z_edges_nm
        return (
            (0.0, self.width * self.px_size_nm),
            (0.0, self.height * self.px_size_nm),
            (float(e[0]), float(e[-1])),
        )


def voxel_index(
    x_nm: FloatArray, y_nm: FloatArray, z_nm: FloatArray, grid: VoxelGrid
) -> tuple[IntArray, IntArray, IntArray, FloatArray, BoolArray]:
    """Voxel (i, j, k) and offsets ζ (N, 3) of positions; ``inside`` marks those in the grid."""
    s = grid.px_size_nm
    edges = grid.z_edges_nm
    fx = np.asarray(x_nm, dtype=np.float64) / s
    fy = np.asarray(y_nm, dtype=np.float64) / s
    z = np.asarray(z_nm, dtype=np.float64)
    j = np.floor(fx).astype(np.int64)
    i = np.floor(fy).astype(np.int64)
    k = np.searchsorted(edges, z, side="right") - 1
    inside = (i >= 0) & (i < grid.height) & (j >= 0) & (j < grid.width)
    inside &= (k >= 0) & (k < grid.n_planes)
    kc = np.clip(k, 0, grid.n_planes - 1)
    zeta = np.stack([fx - j, fy - i, (z - edges[kc]) / (edges[kc + 1] - edges[kc])], axis=-1)
    return i, j, k, zeta, inside


@dataclass
class Encoded:
    """Voxel targets of a batch of frames and the bookkeeping of the encoding."""

    targets: FloatArray  # (T, P, 4, H, W) float32: c, ζx, ζy, ζz
    n_emitters: int
    n_collisions: int  # molecules dropped because a brighter one shared their voxel
    n_outside: int  # molecules outside the target space (dropped)


def encode(emitters: pd.DataFrame, n_frames: int, grid: VoxelGrid) -> Encoded:
    """Emitter table (frame, x_nm, y_nm, z_nm, photons) -> voxel targets (T, P, 4, H, W).

    See the module docstring for the layout and the collision policy (brightest wins).
    """
    frame = emitters["frame"].to_numpy(np.int64)
    weight = emitters["photons"].to_numpy(np.float64) if "photons" in emitters else np.ones(len(frame))
    i, j, k, zeta, inside = voxel_index(
        emitters["x_nm"].to_numpy(), emitters["y_nm"].to_numpy(), emitters["z_nm"].to_numpy(), grid
    )
    inside &= (frame >= 0) & (frame < n_frames)
    n_outside = int((~inside).sum())
    frame, i, j, k, zeta, weight = (
        frame[inside],
        i[inside],
        j[inside],
        k[inside],
        zeta[inside],
        weight[inside],
    )
    P, H, W = grid.n_planes, grid.height, grid.width
    flat = ((frame * P + k) * H + i) * W + j
    # brightest first, then keep the first occurrence of each voxel
    order = np.lexsort((-weight, flat))
    flat_sorted = flat[order]
    first = np.ones(flat_sorted.size, dtype=bool)
    first[1:] = flat_sorted[1:] != flat_sorted[:-1]
    keep = order[first]
    targets = np.zeros((n_frames, P, 4, H, W), dtype=np.float32)
    t_, k_, i_, j_ = frame[keep], k[keep], i[keep], j[keep]
    targets[t_, k_, 0, i_, j_] = 1.0
    for q in range(3):
        targets[t_, k_, q + 1, i_, j_] = zeta[keep, q]
    return Encoded(
        targets, n_emitters=len(emitters), n_collisions=int(flat.size - keep.size), n_outside=n_outside
    )


def decode(output: FloatArray, grid: VoxelGrid, tau: float = 0.5, *, frame_offset: int = 0) -> pd.DataFrame:
    """Network output or targets (T, P, 4, H, W) -> one row per voxel with c > τ.

    The exact inverse of :func:`encode`: x = (j + ζx) s, y = (i + ζy) s,
    z = e_k + ζz (e_{k+1} - e_k). Columns: frame (int32), x_nm, y_nm, z_nm, prob (float32)
    and the voxel indices plane, row, col (int16/int32).
    """
    output = np.asarray(output)
    if output.ndim == 4:  # (T, 4P, H, W) straight from the network
        output = output.reshape(output.shape[0], -1, 4, *output.shape[-2:])
    t, k, i, j = np.nonzero(output[:, :, 0] > tau)
    return voxel_table(t, k, i, j, output[t, k, 1:4, i, j], output[t, k, 0, i, j], grid, frame_offset)


def voxel_table(
    t: IntArray,
    k: IntArray,
    i: IntArray,
    j: IntArray,
    zeta: FloatArray,
    prob: FloatArray,
    grid: VoxelGrid,
    frame_offset: int = 0,
) -> pd.DataFrame:
    """Detected voxels (frame t, plane k, row i, col j; offsets ζ (N, 3); ĉ) -> the table of
    :func:`decode`, positions x = (j + ζx) s, y = (i + ζy) s, z = e_k + ζz (e_{k+1} - e_k)."""
    t, k, i, j = (np.asarray(a, dtype=np.int64) for a in (t, k, i, j))
    zeta = np.asarray(zeta, dtype=np.float64).reshape(-1, 3)
    edges = grid.z_edges_nm
    s = grid.px_size_nm
    return pd.DataFrame(
        {
            "frame": (t + frame_offset).astype(np.int32),
            "x_nm": ((j + zeta[:, 0]) * s).astype(np.float32),
            "y_nm": ((i + zeta[:, 1]) * s).astype(np.float32),
            "z_nm": (edges[k] + zeta[:, 2] * (edges[k + 1] - edges[k])).astype(np.float32),
            "prob": np.asarray(prob, dtype=np.float32),
            "plane": k.astype(np.int16),
            "row": i.astype(np.int32),
            "col": j.astype(np.int32),
        }
    )
