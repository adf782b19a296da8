"""Resuming a training run: the fingerprint of its inputs and settings, and the checkpoint.

A run's fingerprint hashes the ``train:`` options that change the weights, the seed, the
identity of every input shard and the hash of the model fine-tuned from. A shard's identity
is its path, its stored frame count, seed entropy and settings hash (what it was made from)
and the file's size and modification time (that it is still the same file: a shard made
again, or damaged, has another mtime). A content hash would catch more, but reading every
byte of multi-GB shards at each resume costs minutes, and the frames are compressed, so
damage to them shows as a read error when they are read.

:func:`resume` continues from ``checkpoint.pt`` only when it is from the same run (same
fingerprint) and has not gone past ``train.epochs``. Otherwise the checkpoint is moved aside
to ``checkpoint.pt.stale-<time it was written>`` (kept: it may be the only record of the old
run, whose ``model.pt`` Snakemake deletes before a rerun) and the run starts afresh, with a
log line saying why. A complete checkpoint of the same run leaves nothing to train: the
model is written from it, and the log says so (delete the checkpoint to train again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from voxloc.network.model import read_checkpoint
from voxloc.simulation.shards import ShardReader

__all__ = ["NOT_FINGERPRINTED", "Position", "fingerprint", "move_aside", "resume", "shard_identity"]

log = logging.getLogger(__name__)

#: options that do not change the weights: excluded from the resume fingerprint
NOT_FINGERPRINTED = ("name", "epochs", "device", "gpu", "num_workers", "progress_interval_s", "amp")
#: the parts of a shard's identity that tell whether the file changed (not what it was made from)
FILE_STAMP = ("size", "mtime_ns")


def shard_identity(paths: Sequence[str | Path]) -> list[dict]:
    """Path, frame count, seed entropy, settings hash, size and mtime of each shard (the
    model's input record)."""
    out = []
    for p in paths:
        r = ShardReader(p)
        st = os.stat(p)
        out.append(
            {
                "path": str(p),
                "n_frames": r.n_frames,
                "seed_entropy": r.seed_entropy,
                "settings_sha256": hashlib.sha256(r.settings_json.encode()).hexdigest(),
                "size": int(st.st_size),
                "mtime_ns": int(st.st_mtime_ns),
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


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.stale-<YYYYmmdd-HHMMSS of its mtime>`` (``-2``, ... if taken)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"{path.name}.stale-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.stale-{stamp}-{n}")
    path.rename(target)
    return target


def _input_change(recorded: Any, inputs: Sequence[Mapping[str, Any]] | None) -> str | None:
    """What differs between the checkpoint's input record and this run's; None if nothing
    does (or either is unknown)."""
    if not isinstance(recorded, list) or inputs is None:
        return None
    before = {str(r.get("path")): r for r in recorded if isinstance(r, Mapping)}
    now = {str(r["path"]): r for r in inputs}
    for path, ident in now.items():
        old = before.get(path)
        if old is None:
            return f"{path} is a new input"
        keys = [k for k in ident if old.get(k) != ident[k]]
        if keys:
            what = "the file was rewritten" if set(keys) <= set(FILE_STAMP) else "it holds other frames"
            return f"{path} changed since ({what}: {', '.join(keys)} differ)"
    gone = sorted(set(before) - set(now))
    return f"{gone[0]} is no longer an input" if gone else None


def resume(
    ckpt_path: Path,
    run_fingerprint: str,
    net: torch.nn.Module,
    optim: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    use_amp: bool,
    epochs: int | None = None,
    inputs: Sequence[Mapping[str, Any]] | None = None,
) -> Position:
    """Load ``ckpt_path`` into net, optimizer (and scaler with AMP) if it is from this run and
    not past ``epochs``; returns the position to continue from (the start otherwise, after
    moving the checkpoint aside). ``inputs`` (this run's shard identities) name the changed
    input in the log when the checkpoint was made from others."""
    start = Position(0, 0, [], 0.0, 0)
    if not ckpt_path.exists():
        return start
    ckpt = read_checkpoint(ckpt_path, "cpu")
    done = (int(ckpt.get("epoch", 0)), int(ckpt.get("batch", 0)))
    why = None
    if ckpt.get("fingerprint") != run_fingerprint:
        recorded = ckpt.get("inputs")
        change = _input_change(recorded, inputs)
        if change is not None:
            why = f"its inputs differ: {change}"
        elif isinstance(recorded, list) and inputs is not None:
            why = "it is from other train options, seed or model fine-tuned from"
        else:
            why = "it is from other inputs or settings"
    elif epochs is not None and (done[0] > epochs or (done[0] == epochs and done[1] > 0)):
        why = f"it went past train.epochs = {epochs} (epoch {done[0]}, batch {done[1]})"
    if why is not None:
        stale = move_aside(ckpt_path)
        log.warning("%s not resumed: %s; moved it to %s and training afresh", ckpt_path, why, stale.name)
        return start
    net.load_state_dict(ckpt["state_dict"])
    optim.load_state_dict(ckpt["optimizer"])
    if use_amp and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    history, loss_sum, loss_n = list(ckpt["history"]), float(ckpt["loss_sum"]), int(ckpt["loss_n"])
    pos = Position(done[0], done[1], history, loss_sum, loss_n)
    if epochs is not None and pos.epoch == epochs and pos.batch == 0:
        log.warning(
            "%s is complete for this config and inputs (%d epochs): nothing to train, the model is "
            "written from it; delete %s to retrain",
            ckpt_path, pos.epoch, ckpt_path,
        )  # fmt: skip
    else:
        log.info("resuming from %s at epoch %d, batch %d", ckpt_path, pos.epoch, pos.batch)
    return pos
