"""Training batches streamed from HDF5 shards (Aritake et al. 2020, Sect. 4.2).

:class:`ShardBatches` is a map-style dataset whose items are whole batches, keyed by
(epoch, global frame indices): it reads the shards through one
:class:`voxloc.simulation.shards.ShardReader` each (files opened lazily in each process, one
handle per DataLoader worker), reads only the frames of the batch, and encodes their targets with
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

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from voxloc.errors import InputError
from voxloc.network.normalise import normalise
from voxloc.physics.noise import add_noise, to_photons
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import ShardReader, read_settings
from voxloc.simulation.simulate import expected_frames, sample_drift
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

    Inputs are normalised photons (:func:`voxloc.network.normalise.normalise`); the shards'
    files are opened on first use in each process (fork-safe, see ShardReader).
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
        self.readers = [ShardReader(p) for p in self.paths]
        self.settings: list[SimulationSettings] = [r.settings for r in self.readers]
        self.grid: VoxelGrid = check_compatible(self.paths).grid
        self.starts = np.concatenate([[0], np.cumsum([r.n_frames for r in self.readers])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def close(self) -> None:
        for reader in self.readers:
            reader.close()

    def _read(self, shard: int, local: np.ndarray, epoch: int) -> tuple[FloatArray, pd.DataFrame]:
        """Frames (photons) and emitters (frame renumbered 0..n-1) of frames ``local`` of a shard."""
        reader = self.readers[shard]
        table = reader.read_emitters(local)
        settings = self.settings[shard]
        if self.resample == "none" or epoch == 0:
            return to_photons(reader.read_frames(local), settings.physics.noise), table
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
            drift = self.readers[shard].read_drift(local)
        signal = expected_frames(table, drift, settings)
        frames = np.stack([add_noise(signal[n], settings.physics.noise, r) for n, r in enumerate(rngs)])
        return to_photons(frames, settings.physics.noise)

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
