"""The network's input normalisation (Sect. 2.3) and its robust background statistic.

:func:`normalise` is called by training batches and by localization alike, with the
parameters stored in ``model.pt``; :func:`row_median` is also the resampler's fill value.
torch is never imported here: a tensor is recognised by its type's module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from voxloc.types import FloatArray

if TYPE_CHECKING:
    import torch

__all__ = ["DEFAULT_NORMALISATION", "normalise", "row_median"]


def row_median(a: Any) -> Any:
    """Median of each row of a 2-D array: the values of ``np.median(a, axis=1)`` (float32 in,
    float32 out), from one partition at n // 2 plus the maximum of the lower part, ~1.6x faster
    than np.median's partition at two positions. A torch tensor (the GPU path of localization)
    gets the same values from a sort on its own device."""
    if _is_tensor(a):
        return _tensor_row_median(a)
    a = np.asarray(a)
    n = a.shape[1]
    part = np.partition(a, n // 2, axis=1)
    upper = part[:, n // 2]
    if n % 2:
        return upper
    return (part[:, : n // 2].max(axis=1) + upper) / a.dtype.type(2)


def _is_tensor(a: Any) -> bool:
    return not isinstance(a, np.ndarray) and type(a).__module__.startswith("torch")


def _tensor_row_median(a: Any) -> Any:
    n = a.shape[1]
    s = a.sort(dim=1).values
    if n % 2:
        return s[:, n // 2]
    return (s[:, n // 2 - 1] + s[:, n // 2]) / 2


#: (y - median over each plane of each frame) / scale_photons
DEFAULT_NORMALISATION: dict[str, Any] = {"method": "median_background", "scale_photons": 100.0}


def normalise(
    frames_photons: FloatArray | torch.Tensor, params: Mapping[str, Any]
) -> FloatArray | torch.Tensor:
    """Network input from frames in photons (..., P, H, W): float32, same shape.

    ``median_background``: x = (y - median_{H,W}(y)) / scale_photons, the median taken per
    frame and plane (a robust background: at SMLM densities most pixels hold background
    only). ``none``: the paper's raw values divided by scale_photons. Training and
    localization both call this function with the parameters stored in ``model.pt``; a
    torch tensor (the GPU path of localization) is normalised on its own device.
    """
    if _is_tensor(frames_photons):
        y = frames_photons.float()
        scale = float(params["scale_photons"])
    else:
        y = np.asarray(frames_photons, dtype=np.float32)
        scale = np.float32(params["scale_photons"])
    method = params.get("method", "median_background")
    if method == "median_background":
        return (y - _plane_median(y)) / scale
    if method == "none":
        return y / scale
    raise ValueError(f"unknown normalisation method {method!r}")


def _plane_median(y: FloatArray | torch.Tensor) -> FloatArray | torch.Tensor:
    """Median over the last two axes, float32, shaped (..., 1, 1)."""
    med = row_median(y.reshape(-1, y.shape[-2] * y.shape[-1]))
    if isinstance(med, np.ndarray):
        med = med.astype(np.float32)
    return med.reshape(*y.shape[:-2], 1, 1)
