"""Training batches streamed from HDF5 shards (Aritake et al. 2020, Sect. 4.2).

:class:`ShardBatches` is a map-style dataset whose items are whole batches, keyed by
(epoch, global frame indices): it opens the shards lazily in each process (one h5py handle
per DataLoader worker), reads only the frames of the batch, and encodes their targets with
:func:`voxloc.voxels.encode`. Nothing is held in memory beyond one batch per worker.

:class:`EpochBatches` is the sampler: a permutation of all frames drawn from (seed, epoch)
(the paper shuffles every epoch), cut into batches, optionally starting part-way through an
epoch. Since every random draw depends on (seed, epoch, frame) only, a batch is the same
whatever the number of workers or the point at which a run was resumed.

Optional re-simulation (``resample``): from epoch 1 on, frames are rendered again from
their stored noise-free parameters (emitters, and the drift Δk unless it is re-drawn)
with new noise, seeded per (seed, epoch, shard, frame), as the authors' code re-draws
its data. Epoch 0 uses the stored frames.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch

from voxloc.errors import InputError
from voxloc.network.normalise import normalise
from voxloc.physics.noise import add_noise, to_photons
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import read_settings, settings_from_dict
from voxloc.simulation.simulate import EMITTER_COLUMNS, expected_frames, sample_drift
from voxloc.types import FloatArray
from voxloc.voxels import VoxelGrid, encode

__all__ = ["RESAMPLE", "BatchKey", "EpochBatches", "ShardBatches", "check_compatible"]

log = logging.getLogger(__name__)

RESAMPLE = ("none", "noise", "noise_and_drift")
_SALT_SHUFFLE = 0x5348  # keeps the shuffling stream apart from the noise streams
_SALT_NOISE = 0x4E4F


def check_compatible(paths: Sequence[str | Path]) -> SimulationSettings:
    """Settings of the first shard; raises InputError if another shard has another grid."""
    first = read_settings(paths[0])
    g0 = first.grid
    for p in paths[1:]:
        g = read_settings(p).grid
        if (g.height, g.width, g.px_size_nm, g.plane_z_nm) != (
            g0.height,
            g0.width,
            g0.px_size_nm,
            g0.plane_z_nm,
        ):
            raise InputError(f"{p}: voxel grid {g} differs from {paths[0]}'s {g0}; use one grid per model")
    return first


@dataclass(frozen=True)
class BatchKey:
    """One batch: its epoch (seeds the re-simulation) and global frame indices."""

    epoch: int
    frames: tuple[int, ...]


class EpochBatches(torch.utils.data.Sampler):
    """Batches of one epoch: a (seed, epoch)-seeded permutation, from batch ``start`` on."""

    def __init__(
        self, n_frames: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True, start: int = 0
    ) -> None:
        self.n_frames, self.batch_size, self.start = int(n_frames), int(batch_size), int(start)
        self.epoch = int(epoch)
        if shuffle:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), self.epoch, _SALT_SHUFFLE]))
            self.order = rng.permutation(self.n_frames)
        else:
            self.order = np.arange(self.n_frames)

    @staticmethod
    def n_batches(n_frames: int, batch_size: int) -> int:
        return -(-int(n_frames) // int(batch_size))

    def __len__(self) -> int:
        return max(self.n_batches(self.n_frames, self.batch_size) - self.start, 0)

    def __iter__(self) -> Iterator[BatchKey]:
        for b in range(self.start, self.n_batches(self.n_frames, self.batch_size)):
            chunk = self.order[b * self.batch_size : (b + 1) * self.batch_size]
            yield BatchKey(self.epoch, tuple(int(i) for i in chunk))


class ShardBatches(torch.utils.data.Dataset):
    """Map-style dataset over shards: ``ds[BatchKey]`` -> (inputs (B, P, H, W), targets (B, P, 4, H, W)).

    Inputs are normalised photons (:func:`voxloc.network.normalise.normalise`); h5py handles are
    opened on first use in each process (fork-safe).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        normalisation: Mapping[str, Any],
        *,
        resample: str = "none",
        seed: int = 0,
    ) -> None:
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {RESAMPLE}, got {resample!r}")
        if not paths:
            raise InputError("no shards given")
        self.paths = [str(p) for p in paths]
        self.normalisation = dict(normalisation)
        self.resample, self.seed = resample, int(seed)
        self.settings: list[SimulationSettings] = []
        lengths = []
        for p in self.paths:
            with h5py.File(p, "r") as h5:
                lengths.append(int(h5["frames"].shape[0]))
                self.settings.append(settings_from_dict(json.loads(h5.attrs["settings_json"])))
        self.grid: VoxelGrid = check_compatible(self.paths).grid
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self._files: dict[int, h5py.File] = {}
        self._pid = -1

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict:  # never pickle open handles (spawned workers)
        state = self.__dict__.copy()
        state["_files"], state["_pid"] = {}, -1
        return state

    def _file(self, shard: int) -> h5py.File:
        if self._pid != os.getpid():
            self._files, self._pid = {}, os.getpid()
        if shard not in self._files:
            self._files[shard] = h5py.File(self.paths[shard], "r")
        return self._files[shard]

    def close(self) -> None:
        for h5 in self._files.values():
            h5.close()
        self._files = {}

    def _read(self, shard: int, local: np.ndarray, epoch: int) -> tuple[FloatArray, pd.DataFrame]:
        """Frames (photons) and emitters (frame renumbered 0..n-1) of frames ``local`` of a shard."""
        h5 = self._file(shard)
        offsets = h5["emitter_offsets"]
        recs = [h5["emitters"][offsets[i] : offsets[i + 1]] for i in local]
        rec = np.concatenate(recs) if recs else np.zeros(0, h5["emitters"].dtype)
        table = pd.DataFrame({name: rec[name] for name in EMITTER_COLUMNS})
        table["frame"] = np.repeat(np.arange(local.size), [r.size for r in recs]).astype(np.int32)
        settings = self.settings[shard]
        if self.resample == "none" or epoch == 0:
            frames = np.stack([h5["frames"][i] for i in local])
            return to_photons(frames, settings.noise), table
        return self._simulate(shard, local, epoch, table, settings), table

    def _simulate(
        self, shard: int, local: np.ndarray, epoch: int, table: pd.DataFrame, settings: SimulationSettings
    ) -> FloatArray:
        rngs = [
            np.random.default_rng(np.random.SeedSequence([self.seed, epoch, shard, int(i), _SALT_NOISE]))
            for i in local
        ]
        if self.resample == "noise_and_drift":
            p = settings.grid.n_planes
            drift = np.concatenate([sample_drift(1, p, settings.drift_max_nm, r) for r in rngs])
        else:
            drift = np.stack([self._file(shard)["drift_nm"][i] for i in local])
        signal = expected_frames(table, drift, settings)
        frames = np.stack([add_noise(signal[n], settings.noise, r) for n, r in enumerate(rngs)])
        return to_photons(frames, settings.noise)

    def __getitem__(self, key: BatchKey) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(key.frames, dtype=np.int64)
        shard_of = np.searchsorted(self.starts, idx, side="right") - 1
        frames = np.empty((idx.size, self.grid.n_planes, self.grid.height, self.grid.width), np.float32)
        targets = np.empty((idx.size, self.grid.n_planes, 4, self.grid.height, self.grid.width), np.float32)
        for shard in np.unique(shard_of):
            pos = np.flatnonzero(shard_of == shard)
            local = idx[pos] - self.starts[shard]
            photons, table = self._read(int(shard), local, key.epoch)
            frames[pos] = normalise(photons, self.normalisation)
            targets[pos] = encode(table, local.size, self.grid).targets
        return torch.from_numpy(frames), torch.from_numpy(targets)
