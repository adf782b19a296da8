"""Shared by the benchmarks: the CPU's name, simulated movies written as TIFF and camera
registrations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np


def cpu_label() -> str:
    """The CPU model and the vector extensions that decide its speed (lscpu's flags avx2,
    avx512f, avx512_vnni, amx_int8): speed figures name them."""
    from voxloc.network.precision import cpu_flags, cpu_name

    flags = cpu_flags() or set()
    ext = [x for x in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if x in flags]
    return f"{cpu_name()} ({', '.join(ext) or 'no AVX2 / AVX-512'})"


#: camera offset of the simulated movies: ADU = photons + 100
BASELINE_ADU = 100.0


def write_movie_tiff(path: Path, frames: Iterable[np.ndarray], shape: tuple[int, int, int, int]) -> None:
    """Write frames (each P x H x W uint16) as one T x P x H x W TIFF, frame by frame (never
    whole in memory); ``minisblack`` so that 4 planes are not taken for RGBA."""
    import tifffile

    tifffile.imwrite(
        path,
        frames,
        shape=shape,
        dtype=np.uint16,
        photometric="minisblack",
        metadata={"axes": "TCYX"},
        bigtiff=int(np.prod(shape)) * 2 > 2**31,
    )


def simulate_movie(path: Path, settings, n_frames: int, density: float, seed: int):
    """Simulate ``density`` molecules per pixel per frame with ``settings`` (voxloc.simulation.simulate)
    and write ADU = photons + BASELINE_ADU as uint16; returns (true emitters, M per frame)."""
    import pandas as pd

    from voxloc.physics.noise import to_photons
    from voxloc.simulation.simulate import simulate_frames

    g = settings.grid
    m = int(round(density * g.height * g.width))
    settings = dataclasses.replace(settings, n_molecules=(m, m))
    rng = np.random.default_rng(seed)
    truths = []

    def frames():
        for start in range(0, n_frames, 10):
            sim = simulate_frames(min(10, n_frames - start), settings, rng)
            sim.emitters["frame"] += start
            truths.append(sim.emitters)
            photons = to_photons(sim.frames, settings.physics.noise)
            yield from np.clip(np.rint(photons + BASELINE_ADU), 0, 65535).astype(np.uint16)

    write_movie_tiff(path, frames(), (n_frames, g.n_planes, g.height, g.width))
    return pd.concat(truths, ignore_index=True), m


def registrations(kind: str) -> list[np.ndarray]:
    """Camera -> camera-1 matrices: ``identity``, or ``shift``: cameras 2-4 moved by 0.01 px, so
    every frame goes through the bilinear resampling a calibrated microscope needs, with no
    effect on accuracy worth the name."""
    if kind not in ("shift", "identity"):
        raise ValueError(f"registration must be shift or identity, got {kind!r}")
    shift = np.eye(3)
    if kind == "shift":
        shift[:2, 2] = 0.01
    return [np.eye(3)] + [shift] * 3
