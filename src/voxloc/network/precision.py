"""Which arithmetic ``localize.precision: auto`` runs the network in on a CPU: measured, not
guessed from the CPU's flags (issue 21).

The CPU flags said int8 only where the CPU has 8-bit dot products (VNNI, AMX), but fbgemm's
int8 kernels are fast on AVX2 too (2.4x float32 on an AVX2-only EPYC), and bfloat16 without
native support is slower than float32. So each candidate (:data:`CPU_CANDIDATES`) is timed
on the movie's own first batch, and kept when it is as good as float32:

- its voxel Jaccard against the truth, on :data:`CHECK_FRAMES` frames simulated like the
  model's training frames (:func:`voxloc.network.quantize.simulated_frames`, the same frames
  for every candidate: a paired comparison), is at most :data:`MAX_JACCARD_LOSS` below
  float32's (the issue's bound). Not agreement with float32's voxels: on the demo's model,
  int8 and float32 share only 94 % of the movie's detected voxels, but the others are
  voxels with ĉ near τ, gained and lost alike, which cost int8 ~0.3 points of Jaccard;
- on the movie's batch the ζ̂ of the voxels both detect differ by at most
  :data:`MAX_ZETA_RMS` of a voxel, RMS (int8: ~0.010, ~2 nm laterally, where the
  network's own error is 30-60 nm, and the per-molecule fit moves on from there).

The fastest kept one wins; a candidate must beat a more precise one by :data:`MIN_GAIN` to
replace it, so that timing noise does not flip between precisions. The choice is kept in a
file beside the model (:func:`auto_precision`), keyed by the CPU, torch, the threads, the
batch's shape, τ and the model's SHA-256: every later chunk of that machine type takes it
without timing, so the chunks of a movie, and a rerun, are computed alike. On a GPU
``auto`` stays float16 (mixed precision), as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxloc.io import atomic_output
from voxloc.network.model import Detections, TrainedModel
from voxloc.types import FloatArray

__all__ = [
    "CPU_CANDIDATES",
    "CHECK_FRAMES",
    "MAX_JACCARD_LOSS",
    "MAX_ZETA_RMS",
    "MIN_GAIN",
    "Trial",
    "agreement",
    "auto_precision",
    "cpu_flags",
    "cpu_name",
    "measure_precision",
]

log = logging.getLogger(__name__)

#: the CPU's candidates, most precise first
CPU_CANDIDATES = ("float32", "bfloat16", "int8")
#: simulated frames of the accuracy check
CHECK_FRAMES = 64
#: voxel Jaccard (against the truth) a candidate may lose to float32
MAX_JACCARD_LOSS = 0.005
#: RMS difference of ζ̂ (fraction of a voxel side, each axis) on the voxels both detect
MAX_ZETA_RMS = 0.02
#: a less precise candidate must be this much faster (frames/s ratio - 1) to be chosen
MIN_GAIN = 0.1
#: choices kept beside a model (one per machine type, frame shape, threads...): the newest
CACHE_ENTRIES = 64


@dataclass(frozen=True)
class Trial:
    """One candidate: frames/s on the batch, its voxel Jaccard against the truth on the
    simulated frames (and float32's), the share of float32's voxels of the batch it detects
    alike, and the RMS ζ̂ difference there."""

    precision: str
    frames_per_s: float
    jaccard: float
    jaccard_float32: float
    shared_voxels: float
    zeta_rms: float

    @property
    def agrees(self) -> bool:
        return self.jaccard >= self.jaccard_float32 - MAX_JACCARD_LOSS and self.zeta_rms <= MAX_ZETA_RMS

    def __str__(self) -> str:
        verdict = "kept" if self.agrees else "rejected"
        return (
            f"{self.precision} {self.frames_per_s:.1f} frames/s (simulated voxel Jaccard {self.jaccard:.4f} "
            f"against float32's {self.jaccard_float32:.4f}; movie voxels shared {self.shared_voxels:.3f}, "
            f"ζ RMS {self.zeta_rms:.4f}: {verdict})"
        )


def agreement(ref: Detections, other: Detections) -> tuple[float, float]:
    """Voxel Jaccard of two detections of one batch, and the RMS ζ̂ difference (per axis, in
    voxel sides) on the voxels both found (0 when none)."""

    def keys(d: Detections) -> np.ndarray:
        return np.stack([d.t, d.k, d.i, d.j], axis=1).astype(np.int64)

    a, b = keys(ref), keys(other)
    if not len(a) and not len(b):
        return 1.0, 0.0
    both, ia, ib = _intersect_rows(a, b)
    jaccard = both / (len(a) + len(b) - both)
    if not both:
        return jaccard, 0.0
    diff = ref.zeta[ia] - other.zeta[ib]
    return float(jaccard), float(np.sqrt(np.mean(diff**2)))


def _intersect_rows(a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Rows common to two integer arrays (N, 4) of unique rows: count and their indices."""
    span = np.maximum(a.max(axis=0, initial=0), b.max(axis=0, initial=0)) + 1
    code_a = np.ravel_multi_index(a.T, span)
    code_b = np.ravel_multi_index(b.T, span)
    _, ia, ib = np.intersect1d(code_a, code_b, assume_unique=True, return_indices=True)
    return len(ia), ia, ib


def _time(model: TrainedModel, x: torch.Tensor, tau: float, repeats: int) -> tuple[float, Detections]:
    """Best frames/s of ``repeats`` runs after a warm-up, and the detections."""
    d = model.detect(x, tau)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        d = model.detect(x, tau)
        best = min(best, time.perf_counter() - t0)
    return x.shape[0] / max(best, 1e-9), d


def _truth_jaccard(model: TrainedModel, frames: FloatArray, truth: np.ndarray, tau: float) -> float:
    """Voxel Jaccard of the model's detections (ĉ > τ) against the true voxels (T, P, H, W)."""
    d = model.detect(model.prepare(frames), tau)
    found = np.zeros(truth.shape, bool)
    found[d.t, d.k, d.i, d.j] = True
    tp = np.sum(found & truth)
    return float(tp / max(np.sum(found | truth), 1))


def measure_precision(
    model: TrainedModel, frames_photons: FloatArray, tau: float, *, repeats: int = 2
) -> tuple[TrainedModel, list[Trial]]:
    """The model at the precision chosen (module doc) and every candidate's trial.

    ``model`` is the float32 model on a CPU; ``frames_photons`` (B, P, H, W) a batch of the
    movie registered onto camera 1 (what the network will see)."""
    from voxloc.network.quantize import simulated_frames
    from voxloc.voxels import encode

    if model.device.type != "cpu" or model.precision != "float32":
        raise ValueError("measure_precision starts from the float32 model on a CPU")
    sim, emitters, grid = simulated_frames(model.meta, CHECK_FRAMES, seed=20211221)
    truth = encode(emitters, CHECK_FRAMES, grid).targets[:, :, 0] > 0.5
    x = model.prepare(frames_photons)
    fps, ref = _time(model, x, tau, repeats)
    j32 = _truth_jaccard(model, sim, truth, tau)
    models = {"float32": model}
    trials = [Trial("float32", fps, j32, j32, 1.0, 0.0)]
    for precision in CPU_CANDIDATES[1:]:
        try:
            candidate = TrainedModel(net=model.net, meta=model.meta, device=model.device, precision=precision)
            fps, d = _time(candidate, x, tau, repeats)
        except RuntimeError as exc:  # a build without the kernels for this precision
            log.info("precision %s not measured: %s", precision, exc)
            continue
        models[precision] = candidate
        shared, zeta_rms = agreement(ref, d)
        trials.append(
            Trial(precision, fps, _truth_jaccard(candidate, sim, truth, tau), j32, shared, zeta_rms)
        )
    chosen = trials[0]
    for trial in trials[1:]:
        if trial.agrees and trial.frames_per_s > chosen.frames_per_s * (1 + MIN_GAIN):
            chosen = trial
    return models[chosen.precision], trials


def cpu_name() -> str:
    """The CPU model (Linux: /proc/cpuinfo), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str] | None:
    """The CPU's instruction-set flags (Linux: /proc/cpuinfo, lscpu's ``Flags``), None when
    they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    m = re.search(r"^flags\s*:(.*)$", text, re.M)
    return set((m.group(1) if m else "").split())


def _cpu_flags() -> str:
    """A short digest of the CPU's instruction-set flags (two CPUs of one name may differ)."""
    flags = cpu_flags()
    if flags is None:
        return ""
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


def _read_entries(cache: Path | None) -> list[dict[str, Any]]:
    """The choices kept in ``cache`` (none when it is missing or unreadable)."""
    if cache is None or not cache.exists():
        return []
    try:
        entries = json.loads(cache.read_text()).get("entries", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def auto_precision(
    model: TrainedModel, frames_photons: FloatArray, tau: float, *, cache: Path | None, model_sha256: str
) -> tuple[TrainedModel, str]:
    """``auto`` on a CPU: the precision measured before on this machine type (``cache``, a
    JSON file beside the model holding one entry per key: the speed sweep's frame sizes do
    not overwrite a movie's), else measured now (:func:`measure_precision`) and added there.
    Returns the model at that precision and a line for the log."""
    key: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_flags": _cpu_flags(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "frames": [int(v) for v in np.shape(frames_photons)],
        "tau": float(tau),
        "model_sha256": model_sha256,
    }
    entries = _read_entries(cache)
    for known in entries:
        if known.get("key") == key and known.get("precision") in CPU_CANDIDATES:
            chosen = known["precision"]
            if chosen != "float32":
                model = TrainedModel(net=model.net, meta=model.meta, device=model.device, precision=chosen)
            return model, f"{chosen} (measured before on this machine type: {cache})"
    chosen_model, trials = measure_precision(model, frames_photons, tau)
    line = f"{chosen_model.precision}; " + "; ".join(map(str, trials))
    if cache is not None:
        record = {"key": key, "precision": chosen_model.precision, "trials": [asdict(t) for t in trials]}
        entries = [e for e in entries if e.get("key") != key][-(CACHE_ENTRIES - 1) :] + [record]
        try:
            with atomic_output(cache) as tmp:
                Path(tmp).write_text(json.dumps({"entries": entries}, indent=1) + "\n")
        except OSError as exc:
            log.warning("%s: not written (%s); the next chunk measures again", cache, exc)
    return chosen_model, line
