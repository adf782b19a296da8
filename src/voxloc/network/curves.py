"""Training curves from a model's ``log.csv`` (:data:`voxloc.network.validation.LOG_COLUMNS`).

Three panels against the epoch: the loss of Eq. 11 on the training and validation frames,
the voxel Jaccard index on the validation frames at τ (the paper's Fig. 7a measure), and the
root mean square error per axis of the matched voxels.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from voxloc.errors import InputError
from voxloc.io import atomic_output

__all__ = ["read_log", "plot_training"]

_NEEDED = ("epoch", "train_loss", "val_loss", "val_jaccard")


def read_log(path: str | Path) -> pd.DataFrame:
    """A training log as a table; one line error when it is not one."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the training log ({exc})".splitlines()[0]) from None
    missing = [c for c in _NEEDED if c not in table.columns]
    if missing or table.empty:
        what = f"lacks column(s) {', '.join(missing)}" if missing else "has no epoch"
        raise InputError(f"{path}: not a voxloc training log: {what}")
    return table


def plot_training(
    log_csv: str | Path, out_png: str | Path, *, title: str = "", tau: float | None = None
) -> None:
    """Write the three-panel training figure of ``log_csv`` to ``out_png`` (atomically)."""
    from matplotlib.figure import Figure

    log = read_log(log_csv)
    epoch = log["epoch"]
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    ax_loss, ax_jac, ax_err = fig.subplots(1, 3)
    ax_loss.plot(epoch, log["train_loss"], "o-", label="training")
    ax_loss.plot(epoch, log["val_loss"], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (BCE + L1, Eq. 11)", yscale="log")
    ax_loss.legend()
    ax_jac.plot(epoch, log["val_jaccard"], "o-", color="C2")
    tau_text = f" (τ = {tau:g})" if tau is not None else ""
    ax_jac.set(xlabel="epoch", ylabel=f"validation voxel Jaccard{tau_text}", ylim=(0, 1))
    ax_jac.grid(alpha=0.3)
    for axis, colour in zip("xyz", ("C0", "C1", "C3"), strict=True):
        col = f"val_rmse_{axis}_nm"
        if col in log:
            ax_err.plot(epoch, log[col], "o-", color=colour, label=axis)
    ax_err.set(xlabel="epoch", ylabel="RMSE of matched voxels (nm)")
    ax_err.set_ylim(bottom=0)
    if ax_err.lines:
        ax_err.legend()
    ax_err.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
