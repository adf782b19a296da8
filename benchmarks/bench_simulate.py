"""Benchmark: simulated training frames per second on one CPU core (issue: >= 2,000 fps).

Frames of 64 x 64 x 4 voxels with M = 50 molecules, Table 2 PSF, the paper's noise model
(the defaults of config/config.yaml). Run: python benchmarks/bench_simulate.py [--frames N]
"""

from __future__ import annotations

import argparse
import os
import time

# one core: pin the BLAS / OpenMP pools before numpy loads
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np

from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.simulate import simulate_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rng = np.random.default_rng(0)
    for noise in ("paper", "physical", "none"):
        settings = SimulationSettings(Microscope(noise=NoiseModel(kind=noise)))
        simulate_frames(args.batch, settings, rng)  # warm-up (tables, allocator)
        calls = max(1, args.frames // args.batch)  # at least one batch (--frames < --batch)
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                simulate_frames(args.batch, settings, rng)
            best = max(best, calls * args.batch / (time.perf_counter() - t0))
        print(f"simulate 64x64x4, M=50, noise={noise:8s}: {best:8.0f} frames/s on 1 core")


if __name__ == "__main__":
    main()
