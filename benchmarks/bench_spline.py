"""Benchmark: expected-image rendering, cubic-spline PSF vs Gaussian, on one CPU core.

Frames of 64 x 64 x 4 pixels with M = 50 molecules (target: >= 1,000 frames/s with the
spline, issue 15), rendered alone and with the paper's noise (voxloc.physics.noise.add_noise).
The splines are built from the Table 2 Gaussian (z step 20 nm over -300..1500 nm) with
windows of ±8 px (the bead calibration's) and ±12 / ±16 px (a wide vectorial PSF's); a
smooth spline renders at low rank (voxloc.physics._spline_render), so one with bead-like
noise (1e-3 of the peak on every coefficient: full rank) is timed too.
Run: python benchmarks/bench_spline.py [--frames N] [--batch B]
"""

from __future__ import annotations

import argparse
import os
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np
from common import cpu_label

from voxloc.physics.noise import NoiseModel, add_noise
from voxloc.physics.psf import TABLE2, render_planes
from voxloc.physics.spline import SplinePSF, render_spline_planes

PLANES = np.array([0.0, 400.0, 800.0, 1200.0])
PX = 192.0
SHAPE = (64, 64)


def gaussian_spline(half: int = 8, z0: float = -300.0, dz: float = 20.0, nz: int = 91) -> SplinePSF:
    r = half + 1
    side = 2 * r + 1
    z = z0 + dz * np.arange(nz)
    xy = np.full((nz, 1, 4, 2), (r + 0.5) * PX)
    img = render_planes(xy, z[:, None], np.ones((nz, 1)), TABLE2, PLANES, (side, side), PX, integrate=True)
    return SplinePSF.from_samples(img.transpose(1, 0, 2, 3), z0_nm=z0, z_step_nm=dz, px_size_nm=PX)


def noisy(psf: SplinePSF, rel: float = 1e-3) -> SplinePSF:
    c = psf.coeffs + rel * psf.coeffs.max() * np.random.default_rng(1).standard_normal(psf.coeffs.shape)
    return SplinePSF(c, psf.z0_nm, psf.z_step_nm, psf.px_size_nm, psf.transmission, psf.plane_z_nm)


def _rate(fn, frames: int, batch: int, repeats: int) -> float:
    """Best frames/s over ``repeats`` runs of max(1, frames // batch) calls of ``batch`` frames."""
    fn()
    calls = max(1, frames // batch)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = max(best, calls * batch / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"CPU: {cpu_label()}; 1 core, {SHAPE[0]}x{SHAPE[1]}x4 px, M=50, batches of {args.batch} frames")
    rng = np.random.default_rng(0)
    b, m = args.batch, 50
    xy = rng.uniform(0, SHAPE[1] * PX, (b, m, 1, 2)) + np.zeros((1, 1, 4, 1))
    z = rng.uniform(-200, 1400, (b, m))
    photons = rng.uniform(1700, 5600, (b, m))
    paper = NoiseModel(kind="paper")
    noise_rng = np.random.default_rng(1)

    def report(label: str, render) -> None:
        alone = _rate(render, args.frames, b, args.repeats)
        full = _rate(lambda: add_noise(render(), paper, noise_rng), args.frames, b, args.repeats)
        print(f"{label:44s} {alone:7.0f} frames/s   + paper noise {full:7.0f} frames/s")

    for integrate in (False, True):
        report(f"gaussian (integrate={integrate})",
               lambda i=integrate: render_planes(xy, z, photons, TABLE2, PLANES, SHAPE, PX, integrate=i))  # fmt: skip
    for half, bead_noise in ((8, False), (8, True), (12, False), (16, False)):
        psf = gaussian_spline(half)
        psf = noisy(psf) if bead_noise else psf
        render_spline_planes(xy[:1], z[:1], photons[:1], psf, SHAPE)  # builds the render tables
        rank = psf._render[(half, False)].rank
        label = f"spline ±{half} px{' bead-like noise' if bead_noise else ''} (rank {rank}/{2 * half + 4})"
        report(label, lambda psf=psf: render_spline_planes(xy, z, photons, psf, SHAPE))


if __name__ == "__main__":
    main()
