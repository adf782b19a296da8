"""Benchmark: training frames/s of the voxel-wise regression network (CPU, and CUDA if present).

Frames of 64 x 64 x 4 voxels with M = 50 molecules (Table 3, paper noise) are simulated
into a temporary shard, then full training steps (streamed batch of 50 frames -> forward,
Eq. 11 loss, backward, Adam) are timed for the paper profile (authors' widths, batch 50)
and the quick profile (narrower, batch 10),
exactly as :func:`voxloc.network.train.train_model` runs them (channels-last; float16 autocast on
CUDA). Run: python benchmarks/bench_train.py [--threads 2] [--batches 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import torch

from voxloc.network.batches import EpochBatches, ShardBatches
from voxloc.network.model import DEFAULT_ARCH, build_model
from voxloc.network.normalise import DEFAULT_NORMALISATION
from voxloc.network.train import train_step
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import simulate_shard

#: (widths, batch size): the paper profile (authors' widths) and the quick CPU profile
CASES = {
    "paper": (DEFAULT_ARCH["widths"], 50),
    "quick": ([16, 16, 32, 32, 16, 16], 10),
}


def bench(
    shard: Path, widths: list[int], device: torch.device, *, batch: int, n_batches: int, warmup: int
) -> float:
    """Steady-state training frames/s (data loading in the main process included)."""
    data = ShardBatches([shard], DEFAULT_NORMALISATION, resample="noise", seed=0)
    torch.manual_seed(0)
    net = build_model({"widths": widths}).to(device).to(memory_format=torch.channels_last)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    keys = list(EpochBatches(len(data), batch, seed=0, epoch=1))
    frames, t0 = 0, None
    for n in range(warmup + n_batches):
        if n == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, frames = time.perf_counter(), 0
        x, t = data[keys[n % len(keys)]]
        train_step(net, optim, scaler, x, t, device=device)
        frames += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return frames / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--batches", type=int, default=8, help="timed frames per case / 50")
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "shard.h5"
        simulate_shard(shard, 50 * 4, SimulationSettings(), seed=0, dataset="bench", index=0)
        for device in devices:
            name = (
                torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} CPU threads"
            )
            for case, (widths, batch) in CASES.items():
                n = args.batches * 50 // batch * (10 if device.type == "cuda" else 1)
                fps = bench(shard, widths, device, batch=batch, n_batches=n, warmup=args.warmup)
                print(f"train 64x64x4, M=50, {case}: {widths} batch {batch}, {name}: {fps:.1f} frames/s")
    if len(devices) == 1:
        print("no CUDA device visible: GPU figures not measured")


if __name__ == "__main__":
    main()
