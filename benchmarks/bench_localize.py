"""Benchmark: localization frames/s and peak memory for a quad-plane movie read from disk.

Writes a synthetic T x 4 x H x W uint16 TIFF (simulated frames at the paper's density,
physical camera noise in ADU; a few hundred distinct frames repeated), then localizes it
through the pipeline's own code path (voxloc.localization.localize.run_chunk: reading, registration,
network, decoding, Parquet writing) in a child process, and prints frames/s including
reading and writing, and the child's peak resident memory. A first run_chunk over 64 frames
just before the timed one takes the start-up (CUDA context, cuDNN's kernel choice, int8
calibration) off the clock; its seconds are printed too.

  python benchmarks/bench_localize.py                         # 1,000 frames of 256 x 256 x 4
  python benchmarks/bench_localize.py --frames 30000 --keep   # the ~15 GB movie of the issue
  python benchmarks/bench_localize.py --precision int8 --prefetch 0   # other levers (see --help)
  python benchmarks/bench_localize.py --device cuda --frames 20000 --stages   # GPU, with stages

--registration shift (default) maps cameras 2-4 with a 0.01 px translation, so every frame
goes through the bilinear resampling a calibrated microscope needs; identity skips it.
--stages also times the parts alone: reading the TIFF, reading + registration +
normalisation (on the model's device, as the pipeline does), and the network with
detection on one batch already in place. --drop-caches (root, Linux) empties the page cache
after the start-up run, so the timed run reads the movie from the disk rather than from
memory (and the libraries it has not touched yet, e.g. cuDNN kernels of the last, shorter
batch).

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
from common import registrations, write_movie_tiff


def write_movie(path: Path, n_frames: int, size: int, seed: int = 0) -> None:
    """A T x 4 x size x size uint16 TIFF (ADU) at the paper's density: 200 simulated frames
    repeated, written frame by frame (never whole in memory)."""
    from voxloc.physics.microscope import Microscope
    from voxloc.physics.noise import NoiseModel
    from voxloc.simulation.settings import SimulationSettings
    from voxloc.simulation.simulate import simulate_frames

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
    settings = SimulationSettings(Microscope(noise=camera), height=size, width=size, n_molecules=(m, m))
    pool = simulate_frames(min(n_frames, 200), settings, np.random.default_rng(seed)).frames.astype(np.uint16)
    write_movie_tiff(path, (pool[t % len(pool)] for t in range(n_frames)), (n_frames, 4, size, size))


def stage_rates(args: argparse.Namespace, model_path: Path) -> dict[str, float]:
    """Frames/s of the pipeline's parts alone (module doc), each over up to 2,000 frames."""
    import torch

    from voxloc.localization import localize
    from voxloc.localization.movies import open_movie
    from voxloc.localization.resampling import Resampler
    from voxloc.network.model import load_checkpoint, select_device

    model = load_checkpoint(model_path, select_device(args.device), args.precision)
    batch = localize.resolve_batch_frames(args.batch, model.device)
    n = min(args.frames, 2000)
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    out = {}
    with open_movie(args.movie, name="bench", offset_adu=100, adu_per_photon=4) as movie:
        resampler = Resampler(registrations(args.registration), movie.camera_shapes)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            movie.read_raw(s, min(s + batch, n))
        out["read_fps"] = n / (time.perf_counter() - t0)
        if model.device.type == "cpu":
            prepared = localize._prepared_batches(movie, model, resampler, 0, n, batch)
        else:
            prepared = localize._device_batches(movie, model, resampler, 0, n, batch, 0)
        t0 = time.perf_counter()
        for _first, _x in prepared:
            pass
        sync()
        out["read_prepare_fps"] = n / (time.perf_counter() - t0)
        x = next(iter(localize._prepared_batches(movie, model, resampler, 0, batch, batch)))[1]
        x = x.to(model.device)
        model.detect(x, 0.5)
        sync()
        reps = max(3, 500 // batch)
        t0 = time.perf_counter()
        for _ in range(reps):
            model.detect(x, 0.5)
        sync()
        out["network_detect_fps"] = reps * batch / (time.perf_counter() - t0)
    return out


def child(args: argparse.Namespace) -> None:
    """Localize the movie in this (child) process and print a JSON line of figures."""
    import torch

    from voxloc import locs
    from voxloc.localization import localize
    from voxloc.network.model import build_model, save_checkpoint

    torch.set_num_threads(args.threads)
    batch = args.batch if args.batch == "auto" else int(args.batch)
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
    stages = stage_rates(args, model) if args.stages else {}
    options = dict(
        name="bench",
        offset_adu=100,
        adu_per_photon=4,
        options=localize.LocalizeOptions(
            tau=0.5,
            batch_frames=batch,
            device=args.device,
            precision=args.precision,
            prefetch=args.prefetch,
            fit="none",  # the network's path from disk; the per-molecule fit: bench_peer.py
        ),
    )
    regs = registrations(args.registration)
    out = Path(args.workdir) / "locs.parquet"
    # start-up (CUDA context, cuDNN's kernel choice, int8 calibration) on a first batch, untimed
    # as in the speed sweep: a job pays it once per chunk, whatever the chunk's length
    t0 = time.perf_counter()
    localize.run_chunk([args.movie], model, regs, out, start=0, stop=min(args.frames, 64), **options)
    startup = time.perf_counter() - t0
    cache = drop_page_cache() if args.drop_caches else "as written (warm)"
    t0 = time.perf_counter()
    n = localize.run_chunk([args.movie], model, regs, out, start=0, stop=args.frames, **options)
    dt = time.perf_counter() - t0
    # VmHWM: this process's own peak resident memory (ru_maxrss would include the parent's,
    # which Linux carries across fork and exec)
    status = Path("/proc/self/status").read_text().splitlines()
    hwm_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    meta = locs.read_metadata(Path(args.workdir) / "locs.parquet")
    figures = {
        "seconds": dt,
        "startup_s": startup,
        "localizations": n,
        "model": str(model),
        "peak_mb": hwm_kb / 1024,
    }
    extra = {"precision": meta["precision"], "device": _device_name(), "page_cache": cache}
    print(json.dumps({**figures, **extra, **stages}))


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "cpu"


def drop_page_cache() -> str:
    """Empty Linux's page cache (root only), so the next read of the movie hits the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "dropped (read from disk)"
    except OSError as exc:
        return f"not dropped ({exc.strerror})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", default="auto", help="frames per batch, or auto (8 on the CPU, 64 on a GPU)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", help="auto, float32, bfloat16, float16 (CUDA), int8 (CPU)")
    ap.add_argument("--prefetch", type=int, default=2, help="batches read ahead in a thread (0: off)")
    ap.add_argument("--model", default="results/models/quick/model.pt")
    ap.add_argument("--workdir", default=None, help="where the movie goes (default: a temp dir)")
    ap.add_argument("--registration", choices=("shift", "identity"), default="shift")
    ap.add_argument(
        "--stages", action="store_true", help="also time reading, preparing and the network alone"
    )
    ap.add_argument("--drop-caches", action="store_true", help="empty the page cache first (root)")
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
    for key in ("frames", "batch", "threads", "device", "model", "precision", "prefetch", "registration"):
        cmd += [f"--{key}", str(getattr(args, key))]
    cmd += ["--stages"] * args.stages + ["--drop-caches"] * args.drop_caches
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"the localization child failed:\n{out.stderr[-3000:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    peak_mb = figures["peak_mb"]
    fps = args.frames / figures["seconds"]
    print(
        f"localize {args.frames} frames of {args.size}x{args.size}x4 from {movie.name}: "
        f"{fps:.1f} frames/s incl. reading + Parquet writing ({figures['device']}, "
        f"{figures['precision']}, {args.threads} threads, batch {args.batch}, prefetch {args.prefetch}, "
        f"registration {args.registration}, page cache {figures['page_cache']}); "
        f"{figures['localizations']} localizations; "
        f"peak RSS {peak_mb:.0f} MB; model {figures['model']}; a first run of 64 frames before the "
        f"clock took {figures['startup_s']:.1f} s (start-up)"
    )
    stages = {k: v for k, v in figures.items() if k.endswith("_fps")}
    if stages:
        print(
            "  alone: "
            + ", ".join(f"{k[:-4].replace('_', ' + ')} {v:.0f} frames/s" for k, v in stages.items())
        )
    if not args.keep:
        movie.unlink()


if __name__ == "__main__":
    main()
