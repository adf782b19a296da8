"""Benchmark: the speed levers of localization (CPU; --device cuda for a GPU), each with its accuracy (issue 8).

Simulates a T x 4 x 256 x 256 movie with ground truth (the first model's training PSF,
planes and noise, --density molecules per pixel per frame, uint16 ADU = photons + 100) and
localizes it with every combination of --models x --precision x --prefetch x --batch x
--threads, round-robin --repeats times in this one process, so that the variants meet the
same machine load. Each run goes through the pipeline's own path: voxloc.network.model.load_checkpoint
and voxloc.localization.localize.iter_localizations (reading the TIFF, registering cameras 2-4, the
network, decoding) streaming into a Parquet file. Printed per variant:

* frames/s from opening the movie to the closed Parquet file (best and median of the repeats),
  frames per CPU second of this process (all threads; less sensitive to other jobs on a
  shared machine) and the start-up (model load; int8 includes its calibration);
* localization accuracy against the ground truth (voxloc.evaluation.evaluate at 250 / 500 nm):
  Jaccard, lateral and axial RMSE;
* with --voxel, the voxel Jaccard at τ = 0.5 on simulated shards (--val, Tables 4-5).

--registration shift (default) maps cameras 2-4 with a 0.01 px translation: every frame goes
through the bilinear resampling a calibrated microscope needs, with no effect on accuracy
worth the name; identity skips it (as the peer benchmark does, its movies have no affine).

  python benchmarks/bench_levers.py --models quick=results/models/quick/model.pt \\
      --precision float32 bfloat16 int8 --prefetch 0 2 --frames 200
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BASELINE_ADU, registrations, simulate_movie


def simulate_truth_movie(path: Path, model_path: str, n_frames: int, size: int, density: float, seed: int):
    """Write the movie (uint16 TIFF, T x 4 x size x size) and return its ground truth table."""
    from voxloc.network.model import read_checkpoint
    from voxloc.simulation.shards import settings_from_dict

    settings = settings_from_dict(read_checkpoint(model_path)["meta"]["simulation"])
    sized = dataclasses.replace(settings, height=size, width=size)
    return simulate_movie(path, sized, n_frames, density, seed)[0]


def localize_once(movie: Path, model_path: str, out: Path, v: dict, regs: list[np.ndarray], device: str):
    """One run of the pipeline's path: (start-up s, seconds and CPU seconds movie -> Parquet, table)."""
    import pandas as pd
    import pyarrow.parquet as pq
    import torch

    from voxloc.localization.localize import iter_localizations
    from voxloc.localization.movies import open_movie
    from voxloc.localization.resampling import Resampler
    from voxloc.locs import LOC_SCHEMA, to_arrow
    from voxloc.network.model import load_checkpoint

    torch.set_num_threads(v["threads"])
    t0 = time.perf_counter()
    model = load_checkpoint(model_path, device, v["precision"])
    t1, c1 = time.perf_counter(), time.process_time()
    parts = []
    with open_movie(movie, name="bench", offset_adu=BASELINE_ADU, adu_per_photon=1.0) as mov:
        resampler = Resampler(regs, mov.camera_shapes)
        with pq.ParquetWriter(out, LOC_SCHEMA) as writer:
            for table in iter_localizations(
                mov, model, resampler, tau=0.5, batch_frames=v["batch"], prefetch=v["prefetch"]
            ):
                writer.write_table(to_arrow(table))
                parts.append(table)
    t2, c2 = time.perf_counter(), time.process_time()
    return t1 - t0, t2 - t1, c2 - c1, pd.concat(parts, ignore_index=True)


def voxel_jaccard(model_path: str, precision: str, val: list[str], device: str) -> float:
    from voxloc.evaluation.voxel_metrics import evaluate_shards
    from voxloc.network.model import load_checkpoint

    model = load_checkpoint(model_path, device, precision)
    return float(evaluate_shards(val, model.predict, taus=(0.5,)).iloc[0]["jaccard"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["quick=results/models/quick/model.pt"], help="name=path")
    ap.add_argument("--precision", nargs="+", default=["float32", "bfloat16", "int8"])
    ap.add_argument("--prefetch", nargs="+", type=int, default=[2])
    ap.add_argument("--batch", nargs="+", type=int, default=[8])
    ap.add_argument("--threads", nargs="+", type=int, default=[2])
    ap.add_argument(
        "--variants",
        nargs="+",
        help="explicit runs model:precision:prefetch:batch:threads (instead of the product above)",
    )
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--density", type=float, default=50 / 64**2, help="molecules / px / frame")
    ap.add_argument("--registration", choices=("shift", "identity"), default="shift")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (precision int8 runs as float16 there)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--voxel", action="store_true", help="also the voxel Jaccard on --val shards")
    ap.add_argument("--val", nargs="+", default=["results/simulation/val/shard-0000.h5"])
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--workdir", help="where the movie and its truth go, kept and reused (default: temp dir)")
    ap.add_argument("--out", help="also write the table as TSV")
    args = ap.parse_args()

    import pandas as pd

    from voxloc.evaluation.matching import match_tables, summary

    models = dict(m.split("=", 1) for m in args.models)
    tmp = tempfile.TemporaryDirectory(prefix="voxloc-levers-") if not args.workdir else None
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    movie = work / f"levers-{args.frames}x{args.size}-d{args.density:.4f}-s{args.seed}.tif"
    first_model = next(iter(models.values()))
    truth_path = movie.with_suffix(".truth.parquet")
    if movie.exists() and truth_path.exists():  # kept in --workdir by an earlier run
        truth = pd.read_parquet(truth_path)
    else:
        truth = simulate_truth_movie(movie, first_model, args.frames, args.size, args.density, args.seed)
        truth.to_parquet(truth_path)
    print(f"movie {movie.name}: {len(truth)} molecules; load {os.getloadavg()[0]:.2f}", flush=True)
    keys = ("model", "precision", "prefetch", "batch", "threads")
    if args.variants:  # explicit list: model:precision:prefetch:batch:threads
        variants = []
        for spec in args.variants:
            name, prec, pre, batch, threads = spec.split(":")
            variants.append(dict(zip(keys, (name, prec, int(pre), int(batch), int(threads)), strict=True)))
    else:
        variants = [
            dict(zip(keys, combo, strict=True))
            for combo in itertools.product(models, args.precision, args.prefetch, args.batch, args.threads)
        ]
    fps = {n: [] for n in range(len(variants))}
    cpu = {n: [] for n in range(len(variants))}
    startup, tables = {}, {}
    regs = registrations(args.registration)
    for _ in range(args.repeats):
        for n, v in enumerate(variants):
            s, dt, dc, table = localize_once(
                movie, models[v["model"]], work / "locs.parquet", v, regs, args.device
            )
            fps[n].append(args.frames / dt)
            cpu[n].append(args.frames / dc)
            startup.setdefault(n, s)
            tables[n] = table
    rows = []
    for n, v in enumerate(variants):
        res = summary(tables[n], truth, match_tables(tables[n], truth))
        row = {
            **v,
            "fps_best": max(fps[n]),
            "fps_median": float(np.median(fps[n])),
            "frames_per_cpu_s": float(np.median(cpu[n])),
            "startup_s": startup[n],
            "jaccard": res.jaccard,
            "rmse_lateral_nm": res.rmse_lateral_nm,
            "rmse_axial_nm": res.rmse_axial_nm,
        }
        if args.voxel:
            row["voxel_jaccard"] = voxel_jaccard(models[v["model"]], v["precision"], args.val, args.device)
        rows.append(row)
    table = pd.DataFrame(rows)
    print(
        f"{args.frames} frames {args.size}x{args.size}x4, density {args.density:.4f}/px, "
        f"registration {args.registration}, {args.repeats} repeats, {args.device}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.out:
        table.to_csv(args.out, sep="\t", index=False)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
