"""Validation of the network after each epoch (Aritake et al. 2020, Sect. 4.2) and the CSV log.

The voxel Jaccard index TP / (TP + FP + FN) of the labels at ĉ > τ (the paper's Fig. 7a,
τ = 0.5 or 0.9) and the localization error of matched voxels (true positives), whose
positions are decoded from ζ̂ as :func:`voxloc.voxels.decode` does.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxloc.io import atomic_output
from voxloc.network.loss import voxel_loss
from voxloc.voxels import VoxelGrid

__all__ = ["LOG_COLUMNS", "evaluate", "write_log_csv", "amp_context", "to_device"]

#: columns of ``results/models/{name}/log.csv``, one row per epoch
LOG_COLUMNS = (
    "epoch",
    "frames_seen",
    "train_loss",
    "val_loss",
    "val_jaccard",
    "val_tp",
    "val_fp",
    "val_fn",
    "val_error_nm",
    "val_error_x_nm",
    "val_error_y_nm",
    "val_error_z_nm",
    "val_rmse_x_nm",
    "val_rmse_y_nm",
    "val_rmse_z_nm",
    "frames_per_s",
    "epoch_s",
)


def amp_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate(
    net: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    grid: VoxelGrid,
    *,
    device: torch.device,
    tau: float = 0.5,
    neg_per_pos: float = 3.0,
    amp: bool = True,
) -> dict[str, float]:
    """Validation: loss, voxel Jaccard TP / (TP + FP + FN) at ĉ > τ, and errors of matched voxels.

    A matched voxel is a true positive; its error is ζ̂ - ζ in nm (x, y: the pixel size;
    z: the slab thickness of its plane). ``val_error_nm`` is the mean 3-D distance,
    ``val_error_{x,y,z}_nm`` the mean absolute error per axis and ``val_rmse_{x,y,z}_nm`` the
    root mean square error per axis. Undefined values are NaN: the Jaccard index when there
    is nothing to find and nothing found (TP + FP + FN = 0, as in
    :func:`voxloc.evaluation.voxel_metrics.confusion`), the errors without true positives.
    """
    was_training = net.training
    net.eval()
    slab_nm = torch.as_tensor(np.diff(grid.z_edges_nm), dtype=torch.float32, device=device)
    tp = fp = fn = 0
    loss_sum, n_batches = 0.0, 0
    err_sum = torch.zeros(7, dtype=torch.float64, device=device)  # 3-D, |x|, |y|, |z|, x², y², z²
    for x, t in batches:
        x, t = to_device(x, device, True), t.to(device)
        with amp_context(device, amp):
            logits = net.logits(x)
        logits = logits.float()
        loss_sum += float(voxel_loss(logits, t, neg_per_pos=neg_per_pos).total)
        n_batches += 1
        prob = torch.sigmoid(logits)
        pred, true = prob[:, :, 0] > tau, t[:, :, 0] > 0.5
        hit = pred & true
        tp += int(hit.sum())
        fp += int((pred & ~true).sum())
        fn += int((~pred & true).sum())
        n, k, i, j = torch.nonzero(hit, as_tuple=True)
        d = prob[n, k, 1:4, i, j] - t[n, k, 1:4, i, j]  # (M, 3) in voxel units
        d_nm = torch.stack([d[:, 0] * grid.px_size_nm, d[:, 1] * grid.px_size_nm, d[:, 2] * slab_nm[k]], 1)
        err_sum[0] += d_nm.norm(dim=1).sum().double()
        err_sum[1:4] += d_nm.abs().sum(dim=0).double()
        err_sum[4:] += d_nm.square().sum(dim=0).double()
    net.train(was_training)
    denom = tp + fp + fn
    err = (err_sum / max(tp, 1)).tolist() if tp else [float("nan")] * 7
    return {
        "val_loss": loss_sum / max(n_batches, 1),
        "val_jaccard": tp / denom if denom else float("nan"),
        "val_tp": tp,
        "val_fp": fp,
        "val_fn": fn,
        "val_error_nm": err[0],
        "val_error_x_nm": err[1],
        "val_error_y_nm": err[2],
        "val_error_z_nm": err[3],
        "val_rmse_x_nm": err[4] ** 0.5,
        "val_rmse_y_nm": err[5] ** 0.5,
        "val_rmse_z_nm": err[6] ** 0.5,
    }


def write_log_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """All epochs so far as CSV (rewritten atomically every epoch)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
