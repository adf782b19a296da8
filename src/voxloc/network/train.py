"""Training of the voxel-wise regression network (Aritake et al. 2020, Sect. 3.2 and 4.2).

Adam (β1 0.9, β2 0.99, lr 1e-3), batches of 50 frames reshuffled every epoch, loss of
Eq. 11 (:mod:`voxloc.network.loss`), validation after each epoch on held-out shards (voxel Jaccard
at τ and the localization error of matched voxels) into ``log.csv``.

Resumable: ``checkpoint.pt`` beside ``model.pt`` is written atomically after every epoch
and when SIGTERM arrives (SLURM sends it before preemption; the run then stops with
:class:`Preempted`). It holds weights, optimizer and grad-scaler state, the position
(epoch, next batch), the log rows and a fingerprint of the inputs and settings
(:mod:`voxloc.network.resume`). A rerun with the same fingerprint continues from it; since
every batch is a function of (seed, epoch, frames) only (:mod:`voxloc.network.batches`), a
resumed run on CPU ends with the same weights as an uninterrupted one. Raising ``epochs``
and rerunning continues a finished run. A checkpoint of other inputs (a shard made again or
damaged since), other settings, or past a lowered ``epochs`` is moved aside and the run
starts afresh; a complete one of the same run leaves nothing to train (the log says so).
"""

from __future__ import annotations

import hashlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from voxloc.errors import VoxlocError
from voxloc.network.batches import RESAMPLE, EpochBatches, ShardBatches, check_compatible
from voxloc.network.loss import voxel_loss
from voxloc.network.model import DEFAULT_ARCH, build_model, read_checkpoint, save_checkpoint, select_device
from voxloc.network.normalise import DEFAULT_NORMALISATION
from voxloc.network.resume import fingerprint, resume, shard_identity
from voxloc.network.validation import amp_context, evaluate, to_device, write_log_csv
from voxloc.simulation.shards import settings_to_dict
from voxloc.voxels import VoxelGrid

__all__ = ["TrainOptions", "Preempted", "train_model", "train_step"]

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """The ``train:`` config section (defaults as in workflow/schemas/config.schema.yaml)."""

    name: str = "quick"
    train_dataset: str = "train"
    val_dataset: str = "val"
    epochs: int = 20
    batch_size: int = 50
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    neg_per_pos: float = 3.0
    arch: dict = field(default_factory=lambda: dict(DEFAULT_ARCH))
    normalisation: dict = field(default_factory=lambda: dict(DEFAULT_NORMALISATION))
    resample: str = "noise"
    val_tau: float = 0.5
    device: str = "auto"
    gpu: bool = False
    amp: bool = True
    num_workers: int | None = None  # DataLoader workers; None: see _threads_and_workers
    init_from: str | None = None
    progress_interval_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrainOptions:
        known = set(cls.__dataclass_fields__)
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown train option(s): {sorted(unknown)}")
        opts = cls(**{k: v for k, v in cfg.items() if k in known})
        opts.arch = {**DEFAULT_ARCH, **(opts.arch or {})}
        opts.normalisation = {**DEFAULT_NORMALISATION, **(opts.normalisation or {})}
        opts.betas = (float(opts.betas[0]), float(opts.betas[1]))
        if opts.resample not in RESAMPLE:
            raise ValueError(f"train.resample must be one of {RESAMPLE}, got {opts.resample!r}")
        return opts


class Preempted(Exception):
    """SIGTERM arrived: the checkpoint was written and training stopped."""


class _SigtermFlag:
    """Sets ``self.raised`` on SIGTERM while active (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: finishing this step, then writing the checkpoint")
        self.raised = True

    def __enter__(self) -> _SigtermFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _threads_and_workers(threads: int, num_workers: int | None, device: torch.device) -> tuple[int, int]:
    """Split the job's threads into torch threads and DataLoader worker processes.

    On CPU with <= 2 threads the data are made in the main process (a worker beside two
    busy torch threads oversubscribes the cores: measured 155 -> 65 frames/s); with more, a
    quarter of the threads (at most 4) feed the rest. On CUDA all but one thread load data.
    """
    threads = max(int(threads), 1)
    if num_workers is None:
        if device.type == "cuda":
            num_workers = min(8, max(threads - 1, 1))
        else:
            num_workers = 0 if threads <= 2 else min(4, max(threads // 4, 1))
    compute = 1 if device.type == "cuda" else max(threads - num_workers, 1)
    return compute, int(num_workers)


def _worker_init(worker_id: int) -> None:
    # the main process handles SIGTERM (checkpoint); workers must survive until it is done
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader(dataset: ShardBatches, sampler: EpochBatches, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
    )


def _one_line(exc: VoxlocError) -> VoxlocError:
    """A VoxlocError raised in a DataLoader worker comes back with the worker's traceback in
    its message ("Caught InputError in DataLoader worker process 0. Original Traceback ...");
    the original one-line error again (the exception itself when it is one line)."""
    text = str(exc)
    if "\n" not in text:
        return exc
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    for line in reversed(text.splitlines()):
        if line.startswith(prefix):
            return type(exc)(line[len(prefix) :])
    return exc


def _batches(loader: Iterable) -> Iterator:
    """The loader's batches; a shard's read error stays one line naming the shard.

    The workers are shut down however the iteration ends: after an error the traceback
    keeps the loader's iterator alive, and its workers ignore SIGTERM (:func:`_worker_init`),
    so multiprocessing's exit handler would wait for them for ever."""
    it = iter(loader)
    try:
        yield from it
    except VoxlocError as exc:
        one = _one_line(exc)
        if one is exc:
            raise
        raise one from None
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls
        if shutdown is not None:
            shutdown()


def train_step(
    net: torch.nn.Module,
    optim: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    x: torch.Tensor,
    t: torch.Tensor,
    *,
    device: torch.device,
    neg_per_pos: float = 3.0,
) -> float:
    """One Adam step on a batch (inputs (B, P, H, W), targets (B, P, 4, H, W)); returns the loss.

    Channels-last memory; on CUDA the forward pass runs in float16 autocast when the
    scaler is enabled (the loss itself is computed in float32 from the logits).
    """
    x, t = to_device(x, device, True), t.to(device, non_blocking=True)
    with amp_context(device, scaler.is_enabled()):
        logits = net.logits(x)
    loss = voxel_loss(logits, t, neg_per_pos=neg_per_pos).total
    optim.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optim)
    scaler.update()
    return float(loss.detach())


def _model_meta(
    opts: TrainOptions, seed: int, grid: VoxelGrid, settings_dict: dict, shards: list[dict]
) -> dict:
    edges = grid.z_edges_nm
    return {
        "arch": opts.arch,
        "normalisation": opts.normalisation,
        "input_units": "photons",
        "grid": {
            "px_size_nm": grid.px_size_nm,
            "plane_z_nm": list(grid.plane_z_nm),
            "z_edges_nm": edges.tolist(),
            "z_range_nm": [float(edges[0]), float(edges[-1])],
            "train_frame_size": [grid.height, grid.width],
        },
        "psf": settings_dict["psf"],
        "noise": settings_dict["noise"],
        "simulation": settings_dict,
        "train": asdict(opts),
        "seed": int(seed),
        "train_shards": shards,
    }


def train_model(
    train_paths: Sequence[str | Path],
    val_paths: Sequence[str | Path],
    model_path: str | Path,
    log_csv_path: str | Path,
    options: TrainOptions | Mapping[str, Any],
    *,
    seed: int,
    checkpoint_path: str | Path | None = None,
    threads: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a model on the shards; write ``model.pt`` and ``log.csv``.

    ``checkpoint_path`` defaults to ``checkpoint.pt`` beside ``model_path``. ``on_step``
    (epoch, batch) is called after every optimizer step (tests, benchmarks). Returns the
    last log row. Raises :class:`Preempted` after saving the checkpoint on SIGTERM.
    """
    if isinstance(options, TrainOptions):
        opts = replace(options, arch=dict(options.arch), normalisation=dict(options.normalisation))
    else:
        opts = TrainOptions.from_config(options)
    model_path = Path(model_path)
    ckpt_path = Path(checkpoint_path) if checkpoint_path else model_path.with_name("checkpoint.pt")
    device = select_device(opts.device)
    n_threads, workers = _threads_and_workers(threads or torch.get_num_threads(), opts.num_workers, device)
    torch.set_num_threads(n_threads)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal activations slow CPU convolutions ~2x
    use_amp = opts.amp and device.type == "cuda"

    init = read_checkpoint(opts.init_from) if opts.init_from else None
    init_sha = None
    if init is not None:
        init_sha = hashlib.sha256(Path(opts.init_from).read_bytes()).hexdigest()
        opts.arch, opts.normalisation = dict(init["meta"]["arch"]), dict(init["meta"]["normalisation"])
        log.info("fine-tuning from %s: its architecture and normalisation are kept", opts.init_from)

    settings = check_compatible(list(train_paths) + list(val_paths))
    grid = settings.grid
    if int(opts.arch["n_planes"]) != grid.n_planes:
        raise ValueError(f"architecture has {opts.arch['n_planes']} planes, the shards {grid.n_planes}")
    shards, val_shards = shard_identity(list(train_paths)), shard_identity(list(val_paths))
    run_fingerprint = fingerprint(asdict(opts), seed, shards + val_shards, init_sha)
    meta = _model_meta(opts, seed, grid, settings_to_dict(settings), shards)
    if opts.init_from:
        meta["init_from"] = {"path": str(opts.init_from), "sha256": init_sha, "meta": init["meta"]}

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(opts.arch)
    if init is not None:
        net.load_state_dict(init["state_dict"])
    net.to(device).to(memory_format=torch.channels_last)  # faster on CPU (oneDNN) and GPU alike
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr, betas=opts.betas)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    inputs = shards + val_shards
    epoch, start_batch, history, loss_sum, loss_n = resume(
        ckpt_path, run_fingerprint, net, optim, scaler, use_amp=use_amp, epochs=opts.epochs, inputs=inputs
    )
    if history:  # resumed: the log so far
        write_log_csv(log_csv_path, history)

    train_set = ShardBatches(train_paths, opts.normalisation, resample=opts.resample, seed=seed)
    val_set = ShardBatches(val_paths, opts.normalisation, resample="none", seed=seed)
    n_train = len(train_set)
    log.info(
        "training %s: %d train frames (%d shards), %d val frames, arch %s, device %s%s, %d threads, %d workers",
        opts.name,
        n_train,
        len(train_paths),
        len(val_set),
        opts.arch["widths"],
        device,
        " (AMP)" if use_amp else "",
        n_threads,
        workers,
    )

    def save(next_epoch: int, next_batch: int) -> None:
        save_checkpoint(
            ckpt_path,
            net,
            meta,
            optimizer=optim.state_dict(),
            scaler=scaler.state_dict(),
            epoch=next_epoch,
            batch=next_batch,
            history=history,
            fingerprint=run_fingerprint,
            inputs=inputs,
            loss_sum=loss_sum,
            loss_n=loss_n,
        )

    with _SigtermFlag() as sigterm:
        while epoch < opts.epochs:
            sampler = EpochBatches(n_train, opts.batch_size, seed=seed, epoch=epoch, start=start_batch)
            net.train()
            t0, frames_done = time.perf_counter(), 0
            bar = tqdm(
                total=n_train,
                initial=min(start_batch * opts.batch_size, n_train),
                desc=f"epoch {epoch + 1}/{opts.epochs}",
                unit="frame",
                file=sys.stderr,
                mininterval=opts.progress_interval_s,
                dynamic_ncols=False,
                ascii=True,
            )
            for b, (x, t) in enumerate(_batches(_loader(train_set, sampler, workers)), start=start_batch):
                loss = train_step(net, optim, scaler, x, t, device=device, neg_per_pos=opts.neg_per_pos)
                loss_sum, loss_n = loss_sum + loss, loss_n + 1
                frames_done += x.shape[0]
                bar.update(x.shape[0])
                bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
                if on_step is not None:
                    on_step(epoch, b)
                if sigterm.raised:
                    bar.close()
                    save(epoch, b + 1)
                    log.warning("checkpoint %s written at epoch %d, batch %d", ckpt_path, epoch, b + 1)
                    raise Preempted(f"stopped by SIGTERM; rerun to resume from {ckpt_path}")
            bar.close()
            train_s = time.perf_counter() - t0
            val_sampler = EpochBatches(len(val_set), opts.batch_size, seed=seed, epoch=0, shuffle=False)
            metrics = evaluate(
                net,
                _batches(_loader(val_set, val_sampler, workers)),
                grid,
                device=device,
                tau=opts.val_tau,
                neg_per_pos=opts.neg_per_pos,
                amp=use_amp,
            )
            row = {
                "epoch": epoch + 1,
                "frames_seen": (epoch + 1) * n_train,
                "train_loss": loss_sum / max(loss_n, 1),
                **metrics,
                "frames_per_s": frames_done / train_s if train_s > 0 else float("nan"),
                "epoch_s": time.perf_counter() - t0,
            }
            history.append(row)
            log.info(
                "epoch %d/%d: loss %.4f, val loss %.4f, Jaccard %.4f (τ = %.2f), error %.1f nm, %.0f frames/s",
                epoch + 1,
                opts.epochs,
                row["train_loss"],
                row["val_loss"],
                row["val_jaccard"],
                opts.val_tau,
                row["val_error_nm"],
                row["frames_per_s"],
            )
            epoch, start_batch, loss_sum, loss_n = epoch + 1, 0, 0.0, 0
            save(epoch, 0)
            write_log_csv(log_csv_path, history)
            if sigterm.raised:
                raise Preempted(f"stopped by SIGTERM; rerun to resume from {ckpt_path}")
    train_set.close()
    val_set.close()
    if not history:
        raise ValueError("train.epochs must be >= 1")
    final = {**meta, "epochs_done": epoch, "history": history, "metrics": history[-1], "device": str(device)}
    save_checkpoint(model_path, net, final)
    write_log_csv(log_csv_path, history)
    log.info("wrote %s", model_path)
    return history[-1]
