"""Demo STORM movies of the true microscope (:mod:`voxloc.simulation.demo`), and their truth.

Molecules blink on microtubule-like filaments (cubic Bézier curves in 3-D): per frame a
Poisson number of them, uniform by arc length, jittered, with random weights. The ground
truth (camera-1 nm) is written as Parquet with the true microscope's physics in its
metadata (:meth:`voxloc.physics.microscope.Microscope.metadata`), for the Cramér-Rao bound.

Files: a movie is either one TIFF per camera, T x H x W (axes ``TYX``), or one TIFF
T x 4 x H x W (axes ``TCYX``: the channel axis is the camera/plane, written as
'minisblack' pages, never RGB).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.io import write_tiff
from voxloc.locs import write_parquet
from voxloc.physics.cameras import N_PLANES
from voxloc.simulation.demo import DemoMicroscope, demo_rng, render_cameras
from voxloc.simulation.simulate import emitter_table
from voxloc.types import FloatArray

__all__ = [
    "STACK_AXES",
    "make_filaments",
    "sample_on_filaments",
    "make_movie",
    "write_ground_truth",
    "write_movie",
]

log = logging.getLogger(__name__)

#: axes of the single-file movie T x 4 x H x W (C = camera/plane)
STACK_AXES = "TCYX"
FILAMENT_MARGIN_NM = 1000.0


def make_filaments(
    n_filaments: int,
    *,
    width_nm: float,
    height_nm: float,
    z_range_nm: tuple[float, float],
    rng: np.random.Generator,
    margin_nm: float = FILAMENT_MARGIN_NM,
) -> FloatArray:
    """Control points (F, 4, 3) of cubic Bézier curves: microtubule-like filaments in nm.

    Endpoints are at least half the field apart laterally, the inner control points bend
    the curve gently, and z runs from near one end of ``z_range_nm`` to near the other.
    All control points lie in the box [margin, size - margin]² x z_range, hence so does
    the curve (it stays in their convex hull).
    """
    lo = np.array([margin_nm, margin_nm])
    hi = np.array([width_nm - margin_nm, height_nm - margin_nm])
    if np.any(hi <= lo):
        raise ValueError(f"field {width_nm} x {height_nm} nm is too small for a {margin_nm} nm margin")
    z0, z1 = (float(v) for v in z_range_nm)
    span = z1 - z0
    out = np.empty((n_filaments, 4, 3))
    for f in range(n_filaments):
        while True:
            a, b = rng.uniform(lo, hi), rng.uniform(lo, hi)
            if np.hypot(*(b - a)) >= 0.5 * np.min(hi - lo):
                break
        chord = b - a
        normal = np.array([-chord[1], chord[0]])
        bends = rng.normal(0.0, 0.25, 2)
        inner = [a + chord * t + normal * bend for t, bend in zip((1 / 3, 2 / 3), bends, strict=True)]
        out[f, :, :2] = np.clip(np.stack([a, *inner, b]), lo, hi)
        za, zb = z0 + rng.uniform(0.0, 0.25) * span, z1 - rng.uniform(0.0, 0.25) * span
        if rng.random() < 0.5:
            za, zb = zb, za
        z = za + (zb - za) * np.linspace(0.0, 1.0, 4)
        z[1:3] += rng.normal(0.0, 0.1 * span, 2)
        out[f, :, 2] = np.clip(z, z0, z1)
    return out


def _bezier(control: FloatArray, n_points: int) -> FloatArray:
    """Cubic Bézier curves (F, 4, 3) sampled at n_points parameters -> (F, n_points, 3)."""
    t = np.linspace(0.0, 1.0, n_points)[:, None]
    basis = [(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3]  # Bernstein
    return sum(b[None] * control[:, i, None, :] for i, b in enumerate(basis))


def sample_on_filaments(
    control: FloatArray, n: int, rng: np.random.Generator, *, n_points: int = 512
) -> FloatArray:
    """n points (n, 3) uniform by 3-D arc length over all filaments (polyline approximation)."""
    pts = _bezier(control, n_points)
    a, b = pts[:, :-1].reshape(-1, 3), pts[:, 1:].reshape(-1, 3)  # segments
    cum = np.cumsum(np.linalg.norm(b - a, axis=1))
    u = rng.uniform(0.0, cum[-1], n)
    seg = np.minimum(np.searchsorted(cum, u, side="right"), cum.size - 1)
    start = cum[seg] - np.linalg.norm(b[seg] - a[seg], axis=1)
    frac = (u - start) / np.maximum(cum[seg] - start, 1e-12)
    return a[seg] + frac[:, None] * (b[seg] - a[seg])


def make_movie(
    microscope: DemoMicroscope, movie_cfg: dict, n_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, pd.DataFrame]:
    """A STORM movie (T, 4, H, W) uint16 of filaments and its ground truth (camera-1 nm).

    Per frame N ~ Poisson(molecules_per_frame) molecules uniform by arc length on the
    filaments, displaced by isotropic N(0, jitter_nm²) (z clipped to ``z_range_nm``), with
    photons U(photons) (summed over the planes); rendered by :func:`render_cameras`.
    """
    z_range = tuple(float(v) for v in movie_cfg["z_range_nm"])
    control = make_filaments(
        int(movie_cfg["n_filaments"]),
        width_nm=microscope.width * microscope.physics.px_size_nm,
        height_nm=microscope.height * microscope.physics.px_size_nm,
        z_range_nm=z_range,
        rng=rng,
    )
    counts = rng.poisson(float(movie_cfg["molecules_per_frame"]), n_frames)
    n = int(counts.sum())
    xyz = sample_on_filaments(control, n, rng) + rng.normal(0.0, float(movie_cfg["jitter_nm"]), (n, 3))
    xyz[:, 2] = np.clip(xyz[:, 2], *z_range)
    p_lo, p_hi = (float(v) for v in movie_cfg["photons"])
    truth = emitter_table(
        np.repeat(np.arange(n_frames), counts), xyz[:, 0], xyz[:, 1], xyz[:, 2], rng.uniform(p_lo, p_hi, n)
    )
    log.info("rendering %d frames x %d cameras, %d molecules", n_frames, N_PLANES, n)
    return render_cameras(microscope, truth, n_frames, rng), truth


def write_ground_truth(path: str | Path, table: pd.DataFrame, *, px_size_nm: float, **metadata: str) -> None:
    """Write a ground-truth emitter table (camera-1 nm) atomically as Parquet with metadata."""
    write_parquet(path, table, px_size_nm=px_size_nm, coordinates="camera 1", **metadata)


def write_movie(
    outputs: dict[str, str],
    ground_truth_path: str,
    microscope: DemoMicroscope,
    movie_cfg: dict,
    seed: int,
    name: str,
) -> None:
    """Generate movie ``name`` (seeded by (seed, name)) and write it in one of two layouts.

    ``outputs`` is ``{"path": ...}`` for one T x 4 x H x W TIFF (axes ``TCYX``) or
    ``{"plane1": ..., ..., "plane4": ...}`` for one T x H x W TIFF per camera (axes ``TYX``).
    """
    per_camera = {f"plane{k + 1}" for k in range(N_PLANES)}
    if set(outputs) not in ({"path"}, per_camera):
        raise ValueError(f"outputs must have key 'path' or keys {sorted(per_camera)}, got {sorted(outputs)}")
    rng = demo_rng(seed, f"demo-movie-{name}")
    frames, truth = make_movie(microscope, movie_cfg, int(movie_cfg["n_frames"]), rng)
    if "path" in outputs:
        write_tiff(outputs["path"], frames, axes=STACK_AXES)
    else:
        for k in range(N_PLANES):
            write_tiff(outputs[f"plane{k + 1}"], np.ascontiguousarray(frames[:, k]), axes="TYX")
    # the true physics, so that the evaluation can compute the Cramér-Rao bound for it
    write_ground_truth(
        ground_truth_path,
        truth,
        px_size_nm=microscope.physics.px_size_nm,
        movie=name,
        seed=str(int(seed)),
        **microscope.physics.metadata(),
    )
    log.info("wrote movie %s: %s + %s", name, ", ".join(map(str, outputs.values())), ground_truth_path)
