"""The voxel-wise regression network (Aritake et al. 2020, Sect. 3.2, Fig. 3), its input
normalisation and its checkpoint file.

The network g(y; θ) of Eq. 9 is fully convolutional: Conv → BatchNorm → ReLU blocks with
5 x 5 kernels in the first two and 3 x 3 after ("same" padding, so any H x W), then a 3 x 3
head to 4P channels and a sigmoid. Output (N, P, 4, H, W): per pixel and plane the four
values η̂ = (ĉ, ζ̂x, ζ̂y, ζ̂z), plane-major like :mod:`voxloc.voxels` targets (channel 4k + q).

Input normalisation (:func:`normalise`): the paper fed raw intensities; voxloc feeds
(y - median_plane(y)) / scale_photons, i.e. per frame and plane the median is taken as the
background and removed, and a fixed photon scale is divided out. Inputs are photons
(localization converts camera ADU with offset and gain first), so a model keeps its meaning
on a camera with another background level or offset; the zero padding of the convolutions
then also looks like background. The parameters travel in ``model.pt``.

``model.pt`` (and the resumable ``checkpoint.pt``) is a plain dict saved by ``torch.save``
that loads with ``weights_only=True``: tensors plus JSON-like metadata (see
:func:`save_checkpoint`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from voxloc import __version__
from voxloc.io import atomic_output, to_builtin
from voxloc.types import FloatArray
from voxloc.voxels import VoxelGrid

__all__ = [
    "DEFAULT_ARCH",
    "DEFAULT_NORMALISATION",
    "VoxelNet",
    "build_model",
    "normalise",
    "select_device",
    "TrainedModel",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
]

log = logging.getLogger(__name__)

#: the authors' published widths: 4 -> 16 -> 32 -> 64 -> 128 -> 64 -> 32 -> 16 -> 16
DEFAULT_ARCH: dict[str, Any] = {
    "n_planes": 4,
    "widths": [16, 32, 64, 128, 64, 32, 16],
    "n_large_kernels": 2,  # the first blocks use 5 x 5 kernels, the rest 3 x 3
}

#: (y - median over each plane of each frame) / scale_photons
DEFAULT_NORMALISATION: dict[str, Any] = {"method": "median_background", "scale_photons": 100.0}


def normalise(frames_photons: FloatArray, params: Mapping[str, Any]) -> FloatArray:
    """Network input from frames in photons (..., P, H, W): float32, same shape.

    ``median_background``: x = (y - median_{H,W}(y)) / scale_photons, the median taken per
    frame and plane (a robust background: at SMLM densities most pixels hold background
    only). ``none``: the paper's raw values divided by scale_photons. Training and
    localization both call this function with the parameters stored in ``model.pt``.
    """
    y = np.asarray(frames_photons, dtype=np.float32)
    method = params.get("method", "median_background")
    scale = np.float32(params["scale_photons"])
    if method == "median_background":
        flat = y.reshape(*y.shape[:-2], -1)
        bg = np.median(flat, axis=-1).astype(np.float32)[..., None, None]
        return (y - bg) / scale
    if method == "none":
        return y / scale
    raise ValueError(f"unknown normalisation method {method!r}")


def _block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class VoxelNet(nn.Module):
    """Fig. 3: Conv-BN-ReLU blocks, 3 x 3 head to 4P channels; :meth:`forward` applies the sigmoid."""

    def __init__(self, n_planes: int = 4, widths: Sequence[int] = (16,), n_large_kernels: int = 2) -> None:
        super().__init__()
        self.n_planes = int(n_planes)
        blocks = []
        c_in = self.n_planes
        for n, c_out in enumerate(widths):
            blocks.append(_block(c_in, int(c_out), 5 if n < n_large_kernels else 3))
            c_in = int(c_out)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Conv2d(c_in, 4 * self.n_planes, 3, padding=1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid output (N, P, 4, H, W); the loss works on these (stable BCE)."""
        out = self.head(self.features(x))
        return out.reshape(out.shape[0], self.n_planes, 4, *out.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """η̂ = g(y; θ) of Eq. 9: (N, P, H, W) normalised frames -> (N, P, 4, H, W) in [0, 1]."""
        return torch.sigmoid(self.logits(x))


def build_model(arch: Mapping[str, Any] | None = None) -> VoxelNet:
    """A VoxelNet from an architecture dict (keys of :data:`DEFAULT_ARCH`, missing = default)."""
    a = {**DEFAULT_ARCH, **(arch or {})}
    unknown = set(a) - set(DEFAULT_ARCH)
    if unknown:
        raise ValueError(f"unknown architecture key(s): {sorted(unknown)}")
    if not a["widths"] or any(int(w) < 1 for w in a["widths"]):
        raise ValueError(f"widths must be a non-empty list of positive integers, got {a['widths']}")
    return VoxelNet(int(a["n_planes"]), [int(w) for w in a["widths"]], int(a["n_large_kernels"]))


def select_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is visible, else CPU; ``cpu``/``cuda`` force one."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no GPU")
    return torch.device(preference)


@dataclass
class TrainedModel:
    """A network ready for inference plus everything needed to use it (``meta``)."""

    net: VoxelNet
    meta: dict[str, Any]
    device: torch.device

    @property
    def normalisation(self) -> dict[str, Any]:
        return self.meta["normalisation"]

    def grid(self, height: int, width: int) -> VoxelGrid:
        """The voxel grid of the training data for frames of ``height`` x ``width`` pixels."""
        g = self.meta["grid"]
        return VoxelGrid(int(height), int(width), float(g["px_size_nm"]), tuple(g["plane_z_nm"]))

    @torch.no_grad()
    def predict(self, frames_photons: FloatArray, *, batch_frames: int = 64) -> FloatArray:
        """Frames in photons (T, P, H, W) -> η̂ (T, P, 4, H, W) float32 (normalised here)."""
        frames_photons = np.asarray(frames_photons)
        out = []
        for s in range(0, frames_photons.shape[0], batch_frames):
            x = torch.from_numpy(normalise(frames_photons[s : s + batch_frames], self.normalisation))
            # channels-last: faster convolutions on the GPU and on the CPU (oneDNN) alike
            x = x.to(self.device).contiguous(memory_format=torch.channels_last)
            out.append(self.net(x).float().cpu().numpy())
        if not out:
            n, p, h, w = frames_photons.shape
            return np.zeros((0, p, 4, h, w), dtype=np.float32)
        return np.concatenate(out)


def save_checkpoint(path: str | Path, net: nn.Module, meta: Mapping[str, Any], **state: Any) -> None:
    """Write ``{"state_dict", "meta", **state}`` atomically (temp file, then rename).

    ``meta`` must hold ``arch``, ``grid`` (px_size_nm, plane_z_nm, z_range_nm), ``psf``,
    ``normalisation`` and ``train`` (the training config); ``voxloc_version`` and
    ``torch_version`` are added. ``state`` carries resumable training state (optimizer,
    epoch, ...) as tensors or builtin types.
    """
    raw = net.module if hasattr(net, "module") else net
    weights = {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
    meta = to_builtin(
        {**meta, "voxloc_version": __version__, "torch_version": str(torch.__version__)}, finite=True
    )
    with atomic_output(path) as tmp:
        torch.save({"format": "voxloc-model/1", "state_dict": weights, "meta": meta, **state}, tmp)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict (tensors mapped to ``device``), safely (weights only)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "voxloc-model/1":
        raise ValueError(f"{path}: not a voxloc model file")
    return ckpt


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> TrainedModel:
    """``model.pt`` -> :class:`TrainedModel` (network in eval mode on ``device``, default auto)."""
    device = select_device() if device is None else torch.device(device)
    ckpt = read_checkpoint(path, "cpu")
    meta = ckpt["meta"]
    net = build_model(meta["arch"])
    net.load_state_dict(ckpt["state_dict"])
    net.to(device).eval()
    net.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal activations slow CPU convolutions ~2x
    log.info("loaded %s (voxloc %s, arch %s) on %s", path, meta.get("voxloc_version"), meta["arch"], device)
    return TrainedModel(net=net, meta=meta, device=device)
