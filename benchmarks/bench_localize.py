"""Benchmark: localization frames/s and peak memory for a quad-plane movie read from disk.

Writes a synthetic T x 4 x H x W uint16 TIFF (simulated frames at the paper's density,
physical camera noise in ADU; a few hundred distinct frames repeated), then localizes it
through the pipeline's own code path (voxloc.localize.run_chunk: reading, registration,
network, decoding, Parquet writing) in a child process, and prints frames/s including
reading and writing, and the child's peak resident memory.

  python benchmarks/bench_localize.py                         # 1,000 frames of 256 x 256 x 4
  python benchmarks/bench_localize.py --frames 30000 --keep   # the ~15 GB movie of the issue
  python benchmarks/bench_localize.py --precision int8 --prefetch 0   # other levers (see --help)

The speed and accuracy of each lever side by side: benchmarks/bench_levers.py.

The model is results/models/quick/model.pt when it exists (--model), else a network of the
quick profile's architecture with random weights (same speed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_movie(path: Path, n_frames: int, size: int, seed: int = 0) -> None:
    """A T x 4 x size x size uint16 TIFF (ADU), written frame by frame (never whole in memory)."""
    import tifffile

    from voxloc.noise import NoiseModel
    from voxloc.simulate import SimulationSettings, simulate_frames
    from voxloc.voxels import VoxelGrid

    density = 50 / 64**2  # the paper's: M = 50 on 64 x 64
    m = int(round(density * size * size))
    camera = NoiseModel(
        kind="physical",
        background=12,
        read_noise_var=2500,
        em_gain=100,
        sensitivity_e_per_adu=25,
        baseline_adu=100,
        quantize=True,
    )
    settings = SimulationSettings(grid=VoxelGrid(size, size), noise=camera, n_molecules=(m, m))
    pool = simulate_frames(min(n_frames, 200), settings, np.random.default_rng(seed)).frames.astype(np.uint16)

    def frames():
        for t in range(n_frames):
            yield pool[t % len(pool)]

    tifffile.imwrite(
        path,
        frames(),
        shape=(n_frames, 4, size, size),
        dtype=np.uint16,
        photometric="minisblack",
        metadata={"axes": "TCYX"},
        bigtiff=n_frames * 4 * size * size * 2 > 2**31,
    )


def child(args: argparse.Namespace) -> None:
    """Localize the movie in this (child) process and print a JSON line of figures."""
    import torch

    from voxloc import localize
    from voxloc.model import build_model, save_checkpoint

    torch.set_num_threads(args.threads)
    model = Path(args.model)
    if not model.exists():
        model = Path(args.workdir) / "random-quick.pt"
        arch = {"n_planes": 4, "widths": [16, 16, 32, 32, 16, 16], "n_large_kernels": 2}
        meta = {
            "arch": arch,
            "grid": {
                "px_size_nm": 192.0,
                "plane_z_nm": [0.0, 400.0, 800.0, 1200.0],
                "z_range_nm": [-200.0, 1400.0],
            },
            "psf": {},
            "normalisation": {"method": "median_background", "scale_photons": 100.0},
            "train": {},
        }
        save_checkpoint(model, build_model(arch), meta)
    t0 = time.perf_counter()
    n = localize.run_chunk(
        [args.movie],
        model,
        [np.eye(3)] * 4,
        Path(args.workdir) / "locs.parquet",
        name="bench",
        start=0,
        stop=args.frames,
        offset_adu=100,
        adu_per_photon=4,
        tau=0.5,
        batch_frames=args.batch,
        device=args.device,
        precision=args.precision,
        prefetch=args.prefetch,
    )
    dt = time.perf_counter() - t0
    # VmHWM: this process's own peak resident memory (ru_maxrss would include the parent's,
    # which Linux carries across fork and exec)
    status = Path("/proc/self/status").read_text().splitlines()
    hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": dt, "localizations": n, "model": str(model), "peak_mb": hwm_kb / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, float32, bfloat16, float16 (CUDA), int8 (CPU)")
    ap.add_argument("--prefetch", type=int, default=2, help="batches read ahead in a thread (0: off)")
    ap.add_argument("--model", default="results/models/quick/model.pt")
    ap.add_argument("--workdir", default=None, help="where the movie goes (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the movie for another run")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--movie", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="voxloc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    movie = workdir / f"movie-{args.frames}x4x{args.size}x{args.size}.tif"
    if not movie.exists():
        t0 = time.perf_counter()
        write_movie(movie, args.frames, args.size)
        print(f"wrote {movie} ({movie.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.0f} s")
    cmd = [sys.executable, __file__, "--child", "--movie", str(movie), "--workdir", str(workdir)]
    for key in ("frames", "batch", "threads", "device", "model", "precision", "prefetch"):
        cmd += [f"--{key}", str(getattr(args, key))]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    peak_mb = figures["peak_mb"]
    fps = args.frames / figures["seconds"]
    print(
        f"localize {args.frames} frames of {args.size}x{args.size}x4 from {movie.name}: "
        f"{fps:.1f} frames/s incl. reading + Parquet writing ({args.device}, {args.precision}, "
        f"{args.threads} threads, batch {args.batch}, prefetch {args.prefetch}); "
        f"{figures['localizations']} localizations; peak RSS {peak_mb:.0f} MB; "
        f"model {figures['model']}"
    )
    if not args.keep:
        movie.unlink()


if __name__ == "__main__":
    main()
