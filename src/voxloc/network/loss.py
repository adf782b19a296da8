"""The training loss of Eqs. 10-11 (Aritake et al. 2020, Sect. 3.2) with hard-negative mining.

For targets η = (c, ζ) and network output η̂ = (ĉ, ζ̂) per voxel (arrays (N, P, 4, H, W)):

    L = ( Σ_{Ω'} BCE(c, ĉ) + Σ_{Ω+} ||ζ - ζ̂||_1 ) / max(|Ω+|, 1)        (Eq. 11)

Ω+ are the positive voxels of the batch and Ω' = Ω+ ∪ the hardest negatives: per frame,
the ``neg_per_pos`` x max(n+, 1) negative voxels with the largest BCE (as in SSD, Liu et al.
2016, and the authors' code; a frame without molecules still contributes ``neg_per_pos``
negatives). Ties at the p-th largest loss π are broken by ``torch.topk``, so exactly that
many negatives are taken.

Normalisation: the sum is divided by the number of positive voxels in the whole batch
(per positive, as SSD divides by its matched boxes), so the loss does not depend on the
batch size or the density and one positive weighs the same in every batch.

The BCE is evaluated from the logits (``binary_cross_entropy_with_logits``): the same value
as the paper's sigmoid followed by BCE, but finite for saturated outputs and safe under
mixed precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossTerms", "voxel_loss"]


@dataclass
class LossTerms:
    """The loss and its parts, each already divided by max(n_pos, 1)."""

    total: torch.Tensor  # scalar, differentiable
    bce_pos: torch.Tensor
    bce_neg: torch.Tensor
    l1_zeta: torch.Tensor
    n_pos: int
    n_neg: int  # negatives selected by the mining


def voxel_loss(logits: torch.Tensor, targets: torch.Tensor, *, neg_per_pos: float = 3.0) -> LossTerms:
    """Eq. 11 with hard-negative mining; ``logits`` and ``targets`` are (N, P, 4, H, W).

    ``targets[:, :, 0]`` is the label c ∈ {0, 1}, ``targets[:, :, 1:]`` the offsets ζ
    (used only where c = 1). ``logits`` are the pre-sigmoid network outputs. See the
    module docstring for the selection of negatives and the normalisation.
    """
    if logits.shape != targets.shape or logits.ndim != 5 or logits.shape[2] != 4:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}: need (N, P, 4, H, W)"
        )
    logits = logits.float()
    targets = targets.float()
    n = logits.shape[0]
    c = targets[:, :, 0]
    pos = c > 0.5
    bce = F.binary_cross_entropy_with_logits(logits[:, :, 0], c, reduction="none")
    n_pos_frame = pos.reshape(n, -1).sum(dim=1)
    n_pos = int(n_pos_frame.sum())
    norm = float(max(n_pos, 1))

    bce_pos = bce[pos].sum()
    # hard negatives: the k_t largest BCE among the negatives of frame t
    neg_bce = bce.masked_fill(pos, float("-inf")).reshape(n, -1)
    n_neg_frame = neg_bce.shape[1] - n_pos_frame
    k = torch.minimum(torch.ceil(neg_per_pos * n_pos_frame.clamp(min=1)).long(), n_neg_frame)
    k_max = int(k.max()) if n else 0
    if k_max > 0:
        top, _ = torch.topk(neg_bce, k_max, dim=1, sorted=True)
        take = torch.arange(k_max, device=top.device)[None, :] < k[:, None]
        bce_neg = torch.where(take, top, torch.zeros_like(top)).sum()
    else:
        bce_neg = bce.sum() * 0.0

    zeta_hat = torch.sigmoid(logits[:, :, 1:4])
    l1 = (zeta_hat - targets[:, :, 1:4]).abs().sum(dim=2)  # (N, P, H, W)
    l1_zeta = l1[pos].sum()

    total = (bce_pos + bce_neg + l1_zeta) / norm
    return LossTerms(
        total=total,
        bce_pos=(bce_pos / norm).detach(),
        bce_neg=(bce_neg / norm).detach(),
        l1_zeta=(l1_zeta / norm).detach(),
        n_pos=n_pos,
        n_neg=int(k.sum()),
    )
