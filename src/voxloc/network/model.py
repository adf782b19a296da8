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

Inference (:class:`TrainedModel`) runs a copy of the network with every BatchNorm folded into
its convolution, channels-last, at a chosen precision (:data:`PRECISIONS`): ``auto`` is
float16 autocast on CUDA; on the CPU the quantized int8 network (:mod:`voxloc.network.quantize`)
where the CPU has 8-bit dot-product instructions (VNNI, AMX), else bfloat16 where it has
native bfloat16 (AVX512-BF16, AMX), else float32 (issue 8's lever table: int8 costs ~0.3
points of localization Jaccard for 1.8x bfloat16's and 3.4x float32's frames/s). That is
the guess of callers with no batch to time; a chunk job measures instead
(:mod:`voxloc.network.precision`).
Detection thresholds the logits (ĉ > τ ⇔ logit ĉ > log(τ / (1 - τ))), so only the detected
voxels go through the sigmoid and back to the host.

``model.pt`` (and the resumable ``checkpoint.pt``) is a plain dict saved by ``torch.save``
that loads with ``weights_only=True``: tensors plus JSON-like metadata (see
:func:`save_checkpoint`).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from voxloc import provenance
from voxloc.io import atomic_output, to_builtin
from voxloc.network.normalise import normalise
from voxloc.types import FloatArray, IntArray
from voxloc.voxels import VoxelGrid

__all__ = [
    "DEFAULT_ARCH",
    "PRECISIONS",
    "VoxelNet",
    "fold_batchnorm",
    "native_bfloat16",
    "native_int8",
    "resolve_precision",
    "Detections",
    "build_model",
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

#: inference precisions (``localize.precision``), see the module doc
PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")


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


def fold_batchnorm(net: VoxelNet) -> VoxelNet:
    """Copy of an eval-mode network with each BatchNorm folded into the convolution before it
    (w' = w γ / σ, b' = β - μ γ / σ from the running statistics): the same function up to float
    rounding, one pass less over the activations per block."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for block in net.features:
        block[0] = fuse_conv_bn_eval(block[0], block[1])
        block[1] = nn.Identity()
    return net


def _cpu_has(*flags: str) -> bool:
    """Whether Linux's ``/proc/cpuinfo`` lists one of the instruction-set ``flags``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(rf"\b({'|'.join(flags)})\b", text) is not None


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX; Linux ``/proc/cpuinfo``).
    Elsewhere oneDNN emulates bfloat16, which is slower than float32."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
    except (AttributeError, RuntimeError):  # a torch without the query
        return False
    return _cpu_has("avx512_bf16", "amx_bf16")


@functools.cache
def native_int8() -> bool:
    """Whether this CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX) and
    torch has the oneDNN quantized engine: there int8 runs ~1.8x faster than bfloat16 and
    ~3.4x faster than float32 (benchmarks/bench_levers.py). Without VNNI oneDNN's int8 falls
    back to 16-bit pair sums that can saturate, so int8 is not chosen automatically there."""
    if "onednn" not in torch.backends.quantized.supported_engines:
        return False
    return _cpu_has("avx512_vnni", "avx_vnni", "amx_int8")


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision :data:`PRECISIONS` ``auto`` stands for on ``device``; checks the others.
    ``int8`` means quantized on the CPU and float16 on a GPU, so one config serves both."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "float16"
        if device.type != "cpu":
            return "float32"
        return "int8" if native_int8() else "bfloat16" if native_bfloat16() else "float32"
    if precision == "float16" and device.type != "cuda":
        raise ValueError("precision float16 needs a CUDA device (on the CPU: bfloat16, int8 or float32)")
    if precision == "int8" and device.type != "cpu":
        log.info("int8 is for the CPU; on %s the network runs in float16 (mixed precision)", device)
        return "float16"
    return precision


@dataclass
class Detections:
    """Voxels with ĉ > τ of a batch: indices (frame in batch, plane, row, col), ĉ and ζ̂ (N, 3)."""

    t: IntArray
    k: IntArray
    i: IntArray
    j: IntArray
    prob: FloatArray
    zeta: FloatArray


@dataclass
class TrainedModel:
    """A network ready for inference plus everything needed to use it (``meta``).

    ``net`` is the network as trained (float32, eval mode); ``runner`` the copy that inference
    runs (BatchNorm folded, channels-last, at ``precision``; built from ``net`` when omitted).
    """

    net: VoxelNet
    meta: dict[str, Any]
    device: torch.device
    precision: str = "float32"
    runner: nn.Module | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.precision = resolve_precision(self.precision, self.device)
        if self.runner is None:
            self.runner = self._build_runner()

    def _build_runner(self) -> nn.Module:
        if self.precision == "int8":
            from voxloc.network.quantize import calibration_frames, quantize_int8

            calib = torch.from_numpy(normalise(calibration_frames(self.meta), self.normalisation))
            return quantize_int8(self.net, calib)  # folds BN itself (conv + BN + ReLU)
        runner = fold_batchnorm(self.net).to(self.device)
        # channels-last: faster convolutions on the GPU and on the CPU (oneDNN) alike
        return runner.to(memory_format=torch.channels_last)

    @property
    def normalisation(self) -> dict[str, Any]:
        return self.meta["normalisation"]

    def grid(self, height: int, width: int) -> VoxelGrid:
        """The voxel grid of the training data for frames of ``height`` x ``width`` pixels."""
        g = self.meta["grid"]
        return VoxelGrid(int(height), int(width), float(g["px_size_nm"]), tuple(g["plane_z_nm"]))

    def prepare(self, frames_photons: FloatArray | torch.Tensor) -> torch.Tensor:
        """Frames in photons (T, P, H, W) -> normalised network input, channels-last, where the
        frames are (a numpy array: on the host)."""
        x = normalise(frames_photons, self.normalisation)
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        return x.contiguous(memory_format=torch.channels_last)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared input -> logits (N, 4P, H, W) on ``device``, in the precision computed."""
        x = x.to(self.device, non_blocking=True)
        if self.precision in ("bfloat16", "float16"):
            dtype = torch.bfloat16 if self.precision == "bfloat16" else torch.float16
            with torch.autocast(self.device.type, dtype=dtype):
                return self.runner.head(self.runner.features(x))
        if self.precision == "int8":
            return self.runner(x)
        return self.runner.head(self.runner.features(x))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared input (N, P, H, W) -> pre-sigmoid output (N, 4P, H, W), float32, on ``device``."""
        return self._forward(x).float()

    @torch.no_grad()
    def detect(self, x: torch.Tensor, tau: float) -> Detections:
        """Voxels of a prepared batch with ĉ > τ, thresholded on the logits (module doc); only
        these voxels are converted to float32 and sent to the host."""
        out = self._forward(x)
        n, c, h, w = out.shape
        out = out.reshape(n, c // 4, 4, h, w)
        cut = math.inf if tau >= 1 else -math.inf if tau <= 0 else math.log(tau / (1 - tau))
        t, k, i, j = torch.nonzero(out[:, :, 0] > cut, as_tuple=True)
        picked = torch.sigmoid(out[t, k, :, i, j].float()).cpu().numpy()  # (N, 4)
        t, k, i, j = (a.cpu().numpy() for a in (t, k, i, j))
        return Detections(t, k, i, j, picked[:, 0], picked[:, 1:4])

    def predict(self, frames_photons: FloatArray, *, batch_frames: int = 64) -> FloatArray:
        """Frames in photons (T, P, H, W) -> η̂ (T, P, 4, H, W) float32 (normalised here)."""
        frames_photons = np.asarray(frames_photons)
        t, p, h, w = frames_photons.shape
        out = np.empty((t, p, 4, h, w), dtype=np.float32)
        for s in range(0, t, batch_frames):
            logits = self.logits(self.prepare(frames_photons[s : s + batch_frames]))
            eta = torch.sigmoid(logits).cpu().numpy()
            out[s : s + batch_frames] = eta.reshape(-1, p, 4, h, w)
        return out


def save_checkpoint(path: str | Path, net: nn.Module, meta: Mapping[str, Any], **state: Any) -> None:
    """Write ``{"state_dict", "meta", **state}`` atomically (temp file, then rename).

    ``meta`` must hold ``arch``, ``grid`` (px_size_nm, plane_z_nm, z_range_nm), ``psf``,
    ``normalisation`` and ``train`` (the training config); ``voxloc_version``, ``voxloc_source`` and
    ``torch_version`` are added. ``state`` carries resumable training state (optimizer,
    epoch, ...) as tensors or builtin types.
    """
    raw = net.module if hasattr(net, "module") else net
    weights = {k: v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
    meta = to_builtin({**meta, **provenance(), "torch_version": str(torch.__version__)}, finite=True)
    with atomic_output(path) as tmp:
        torch.save({"format": "voxloc-model/1", "state_dict": weights, "meta": meta, **state}, tmp)


def read_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict (tensors mapped to ``device``), safely (weights only)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "voxloc-model/1":
        raise ValueError(f"{path}: not a voxloc model file")
    return ckpt


def load_checkpoint(
    path: str | Path, device: torch.device | str | None = None, precision: str = "auto"
) -> TrainedModel:
    """``model.pt`` -> :class:`TrainedModel` on ``device`` (default auto) at ``precision``
    (:data:`PRECISIONS`; ``auto``: see the module doc)."""
    device = select_device() if device is None else torch.device(device)
    ckpt = read_checkpoint(path, "cpu")
    meta = ckpt["meta"]
    net = build_model(meta["arch"])
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # denormal activations slow CPU convolutions ~2x
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed frame size: cuDNN picks the fastest kernels once
    model = TrainedModel(net=net, meta=meta, device=device, precision=precision)
    log.info(
        "loaded %s (voxloc %s, arch %s) on %s, %s",
        path,
        meta.get("voxloc_version"),
        meta["arch"],
        device,
        model.precision,
    )
    return model
