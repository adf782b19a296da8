"""Benchmark: expected-image rendering, cubic-spline PSF vs Gaussian, on one CPU core.

Frames of 64 x 64 x 4 pixels with M = 50 molecules (target: >= 1,000 frames/s with the
spline, issue 15). The spline is built from the Table 2 Gaussian (±8 px window, z step
20 nm over -300..1500 nm). Run: python benchmarks/bench_spline.py [--frames N]
"""

from __future__ import annotations

import argparse
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np

from voxloc.physics.psf import TABLE2, render_planes
from voxloc.physics.spline import SplinePSF, render_spline_planes

PLANES = np.array([0.0, 400.0, 800.0, 1200.0])
PX = 192.0


def gaussian_spline(half: int = 8, z0: float = -300.0, dz: float = 20.0, nz: int = 91) -> SplinePSF:
    r = half + 1
    side = 2 * r + 1
    z = z0 + dz * np.arange(nz)
    xy = np.full((nz, 1, 4, 2), (r + 0.5) * PX)
    img = render_planes(xy, z[:, None], np.ones((nz, 1)), TABLE2, PLANES, (side, side), PX, integrate=True)
    return SplinePSF.from_samples(img.transpose(1, 0, 2, 3), z0_nm=z0, z_step_nm=dz, px_size_nm=PX)


def _rate(fn, frames: int, batch: int, repeats: int) -> float:
    fn()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(frames // batch):
            fn()
        best = max(best, frames / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    b, m = args.batch, 50
    xy = rng.uniform(0, 64 * PX, (b, m, 1, 2)) + np.zeros((1, 1, 4, 1))
    z = rng.uniform(-200, 1400, (b, m))
    w = rng.uniform(0.5, 1.5, (b, m))
    spline = gaussian_spline()
    for integrate in (False, True):
        g = _rate(lambda integrate=integrate: render_planes(xy, z, w, TABLE2, PLANES, (64, 64), PX, integrate=integrate),
                  args.frames, b, args.repeats)  # fmt: skip
        print(f"gaussian (integrate={integrate!s:5}) 64x64x4, M=50: {g:8.0f} frames/s on 1 core")
    s = _rate(lambda: render_spline_planes(xy, z, w * 1000, spline, (64, 64)), args.frames, b, args.repeats)
    print(f"spline ±8 px window          64x64x4, M=50: {s:8.0f} frames/s on 1 core")


if __name__ == "__main__":
    main()
