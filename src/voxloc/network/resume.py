"""Resuming a training run: the fingerprint of its inputs and settings, and the checkpoint.

A run's fingerprint hashes the ``train:`` options that change the weights, the seed, the
identity of every input shard (path, frame count, seed entropy, hash of its settings) and
the hash of the model fine-tuned from. :func:`resume` loads ``checkpoint.pt`` into the
network, optimizer and grad scaler only when its fingerprint is the run's; otherwise the
run starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from voxloc.network.model import read_checkpoint
from voxloc.simulation.shards import ShardReader

__all__ = ["NOT_FINGERPRINTED", "Position", "fingerprint", "resume", "shard_identity"]

log = logging.getLogger(__name__)

#: options that do not change the weights: excluded from the resume fingerprint
NOT_FINGERPRINTED = ("name", "epochs", "device", "gpu", "num_workers", "progress_interval_s", "amp")


def shard_identity(paths: Sequence[str | Path]) -> list[dict]:
    """Path, frame count, seed entropy and settings hash of each shard (the model's input record)."""
    out = []
    for p in paths:
        r = ShardReader(p)
        out.append(
            {
                "path": str(p),
                "n_frames": r.n_frames,
                "seed_entropy": r.seed_entropy,
                "settings_sha256": hashlib.sha256(r.settings_json.encode()).hexdigest(),
            }
        )
    return out


def fingerprint(train: Mapping[str, Any], seed: int, shards: list[dict], init_sha: str | None) -> str:
    """SHA-256 of the weight-changing ``train`` options (a dict), seed, shard identities, init."""
    cfg = {k: v for k, v in train.items() if k not in NOT_FINGERPRINTED}
    doc = json.dumps({"train": cfg, "seed": seed, "shards": shards, "init": init_sha}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


class Position(NamedTuple):
    """Where a run stands: next epoch and batch, log rows, running loss of the epoch so far."""

    epoch: int
    batch: int
    history: list[dict]
    loss_sum: float
    loss_n: int


def resume(
    ckpt_path: Path,
    run_fingerprint: str,
    net: torch.nn.Module,
    optim: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    use_amp: bool,
) -> Position:
    """Load ``ckpt_path`` into net, optimizer (and scaler with AMP) if it is from this run;
    returns the position to continue from (the start when there is no such checkpoint)."""
    start = Position(0, 0, [], 0.0, 0)
    if not ckpt_path.exists():
        return start
    ckpt = read_checkpoint(ckpt_path, "cpu")
    if ckpt.get("fingerprint") != run_fingerprint:
        log.warning("%s is from other inputs or settings: starting afresh", ckpt_path)
        return start
    net.load_state_dict(ckpt["state_dict"])
    optim.load_state_dict(ckpt["optimizer"])
    if use_amp and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    history, loss_sum, loss_n = list(ckpt["history"]), float(ckpt["loss_sum"]), int(ckpt["loss_n"])
    pos = Position(int(ckpt["epoch"]), int(ckpt["batch"]), history, loss_sum, loss_n)
    log.info("resuming from %s at epoch %d, batch %d", ckpt_path, pos.epoch, pos.batch)
    return pos
