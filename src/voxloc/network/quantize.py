"""int8 inference on the CPU: static post-training quantization of a trained VoxelNet.

Each Conv-BN-ReLU block becomes one int8 convolution with a fused ReLU (weights per output
channel, activations per tensor), the head an int8 convolution whose output is turned back
into float32 logits. Activation ranges are calibrated on frames simulated with the model's
own training settings (its ``meta["simulation"]``, a fixed seed), so a model file always
gives the same int8 network, whatever movie or chunk it localizes.

This uses PyTorch's eager-mode quantization (``torch.ao.quantization``, the ``onednn``
engine: full 8-bit activations, fast on CPUs with VNNI instructions). PyTorch marks that API
as deprecated in favour of the separate ``torchao`` package; it still works in torch 2.13
and its deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ENGINE", "QuantizedVoxelNet", "quantize_int8", "calibration_frames", "simulated_frames"]

log = logging.getLogger(__name__)

#: the quantized engine: oneDNN (x86 VNNI / AMX; full-range 8-bit activations)
ENGINE = "onednn"


class QuantizedVoxelNet(nn.Module):
    """VoxelNet features + head between a quantize and a dequantize step: float32 logits out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        import torch.ao.quantization as tq

        self.quant = tq.QuantStub()
        self.features = copy.deepcopy(net.features)
        self.head = copy.deepcopy(net.head)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised frames (N, P, H, W) -> logits (N, 4P, H, W)."""
        return self.dequant(self.head(self.features(self.quant(x))))


def calibration_frames(meta: Mapping[str, Any], n_frames: int = 32, seed: int = 20201103) -> np.ndarray:
    """Frames in photons (T, P, H, W) simulated like the model's training frames (paper noise
    and the default grid when the model file holds no simulation settings)."""
    return simulated_frames(meta, n_frames, seed)[0]


def simulated_frames(meta: Mapping[str, Any], n_frames: int, seed: int) -> tuple[np.ndarray, Any, Any]:
    """:func:`calibration_frames` with their truth: (frames in photons, the emitter table, the
    simulation's voxel grid)."""
    from voxloc.errors import InputError
    from voxloc.physics.microscope import Microscope
    from voxloc.physics.noise import NoiseModel, to_photons
    from voxloc.simulation.settings import SimulationSettings
    from voxloc.simulation.shards import settings_from_dict
    from voxloc.simulation.simulate import simulate_frames

    settings = None
    noise = NoiseModel()
    if "simulation" in meta:
        noise = NoiseModel(**meta["simulation"]["noise"])
        try:
            settings = settings_from_dict(meta["simulation"])
        except InputError as exc:  # e.g. a model reused where its spline PSF file is not
            log.warning("int8 calibration frames with the Table 2 PSF instead: %s", exc)
    if settings is None:
        g = meta["grid"]
        physics = Microscope(
            plane_z_nm=tuple(g["plane_z_nm"]), px_size_nm=float(g["px_size_nm"]), noise=noise
        )
        settings = SimulationSettings(physics, height=64, width=64)
    sim = simulate_frames(n_frames, settings, np.random.default_rng(seed))
    return to_photons(sim.frames, settings.physics.noise), sim.emitters, settings.grid


def quantize_int8(net: nn.Module, calibration: torch.Tensor) -> QuantizedVoxelNet:
    """int8 copy of an eval-mode VoxelNet, activation ranges observed on ``calibration``
    (normalised frames, N x P x H x W). Sets the process's quantized engine to :data:`ENGINE`."""
    import torch.ao.quantization as tq

    if ENGINE not in torch.backends.quantized.supported_engines:
        raise RuntimeError(f"int8 inference needs PyTorch's {ENGINE!r} quantized engine, not built in")
    torch.backends.quantized.engine = ENGINE
    qnet = QuantizedVoxelNet(net).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        for block in qnet.features:
            tq.fuse_modules(block, ["0", "1", "2"], inplace=True)  # conv + BN + ReLU
        qnet.qconfig = tq.get_default_qconfig(ENGINE)
        tq.prepare(qnet, inplace=True)
        with torch.no_grad():
            qnet(calibration)
        tq.convert(qnet, inplace=True)
    return qnet
