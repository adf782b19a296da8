"""Benchmark: simulated training frames per second on one CPU core (issue: >= 2,000 fps;
with a spline PSF, issue 15: >= 1,000 fps).

Frames of 64 x 64 x 4 voxels with M = 50 molecules, the paper's noise model (the defaults of
config/config.yaml), through the simulator's own path (voxloc.simulation.simulate_frames):
the Table 2 PSF, and with --spline a measured spline PSF (e.g. the main job's
results/calibration/psf_spline.h5 or the demo's resources/demo/true_psf.h5).
Run: python benchmarks/bench_simulate.py [--frames N] [--spline FILE ...]
"""

from __future__ import annotations

import argparse
import os
import time

# one core: pin the BLAS / OpenMP pools before numpy loads
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import numpy as np
from common import cpu_label

from voxloc.calibration.spline_files import load_spline_psf
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.simulate import simulate_frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--spline", nargs="*", default=[], help="spline PSF files (psf_spline.h5)")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"CPU: {cpu_label()}; 1 core")
    rng = np.random.default_rng(0)
    psfs = [("table2", None)] + [(path, load_spline_psf(path)) for path in args.spline]
    for (label, psf), noise in [(p, n) for p in psfs for n in ("paper", "physical", "none")]:
        kw = {} if psf is None else {"psf": psf, "plane_z_nm": psf.plane_z_nm, "px_size_nm": psf.px_size_nm}
        settings = SimulationSettings(Microscope(noise=NoiseModel(kind=noise), **kw))
        simulate_frames(args.batch, settings, rng)  # warm-up (tables, allocator)
        calls = max(1, args.frames // args.batch)  # at least one batch (--frames < --batch)
        best = 0.0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(calls):
                simulate_frames(args.batch, settings, rng)
            best = max(best, calls * args.batch / (time.perf_counter() - t0))
        print(f"simulate 64x64x4, M=50, psf={label}, noise={noise:8s}: {best:8.0f} frames/s on 1 core")


if __name__ == "__main__":
    main()
