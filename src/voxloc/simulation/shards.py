"""HDF5 shards of simulated training frames: seeding, writing, reading.

Layout of ``shard-NNNN.h5``:

* ``frames``   (N, P, H, W) float32, one frame per chunk, compressed;
* ``emitters`` compound table (frame int32, x_nm, y_nm, z_nm, photons float32: detected photons summed over the planes), camera-1 nm;
* ``emitter_offsets`` (N + 1,) int64: the emitters of frame t are rows
  ``offsets[t]:offsets[t + 1]`` (the table is sorted by frame), for random access;
* ``drift_nm`` (N, P, 2) float32, the lateral drift Δk of each plane (Eq. 7), Δ1 = 0;
* root attributes: every simulation, PSF and noise parameter (``psf.*``, ``noise.*``,
  ``grid.*``, ``sim.*``), ``settings_json`` (all of them as one JSON document), ``seed``,
  ``seed_entropy``, ``dataset``, ``shard_index``, ``n_frames``, ``voxloc_version``,
  ``voxloc_source``.

Seeds derive from (global seed, dataset name, shard index) through ``numpy.random.SeedSequence``,
so one shard can be re-made on its own and gives identical arrays, and shards differ.

This module is the only code that knows the layout: everything else reads shards through
:func:`read_shard`, :func:`read_settings`, :func:`shard_length`, :func:`shard_attrs` and
:class:`ShardReader` (random access to single frames, as training batches need).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from voxloc import provenance
from voxloc.calibration.spline_files import load_spline_reference
from voxloc.errors import InputError
from voxloc.io import atomic_output
from voxloc.physics.microscope import Microscope
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.simulate import EMITTER_COLUMNS, SimulatedFrames, simulate_frames
from voxloc.types import FloatArray

__all__ = [
    "shard_seed_sequence",
    "simulate_shard",
    "write_shard",
    "read_shard",
    "read_settings",
    "shard_length",
    "shard_attrs",
    "ShardReader",
]

log = logging.getLogger(__name__)

#: frames simulated per step while writing a shard (fixed: part of what a seed reproduces)
SIM_BATCH = 1000
REQUIRED = ("frames", "emitters", "emitter_offsets", "drift_nm")


def shard_seed_sequence(global_seed: int, dataset: str, index: int) -> np.random.SeedSequence:
    """SeedSequence of one shard from (global seed, dataset name, shard index)."""
    name = int.from_bytes(hashlib.sha256(dataset.encode()).digest()[:8], "little")
    return np.random.SeedSequence([int(global_seed), name, int(index)])


def settings_to_dict(settings: SimulationSettings) -> dict:
    """Settings as plain JSON-able data (the inverse of :func:`settings_from_dict`).

    The layout predates :class:`voxloc.physics.microscope.Microscope` and is kept as stored
    in shards and models: the pixel and planes under ``grid``, the pixel sampling under ``sim``;
    ``psf`` is Table 2's parameters or a spline's file reference (:meth:`Microscope.psf_dict`).
    """
    grid, physics = settings.grid, settings.physics
    return {
        "grid": {
            "height": grid.height,
            "width": grid.width,
            "px_size_nm": grid.px_size_nm,
            "plane_z_nm": list(grid.plane_z_nm),
        },
        "psf": physics.psf_dict(),
        "transmission": list(physics.transmission),
        "noise": physics.noise.to_dict(),
        "sim": {
            "n_molecules": list(settings.n_molecules),
            "photons": list(settings.photons_range),
            "drift_max_nm": settings.drift_max_nm,
            "integrate_pixels": physics.integrate_pixels,
        },
    }


def settings_from_dict(d: dict) -> SimulationSettings:
    """Settings from :func:`settings_to_dict`'s data (e.g. a shard's ``settings_json``); a
    spline PSF is read from the file it refers to (InputError if missing or changed)."""
    g = d["grid"]
    s = d["sim"]
    physics = Microscope.from_parts(
        d["psf"],
        plane_z_nm=g["plane_z_nm"],
        px_size_nm=float(g["px_size_nm"]),
        noise=d["noise"],
        integrate_pixels=bool(s["integrate_pixels"]),
        transmission=d.get("transmission"),
        load_spline=load_spline_reference,
    )
    return SimulationSettings(
        physics=physics,
        height=int(g["height"]),
        width=int(g["width"]),
        n_molecules=tuple(int(v) for v in s["n_molecules"]),
        photons_range=tuple(float(v) for v in s["photons"]),
        drift_max_nm=float(s["drift_max_nm"]),
    )


def _create(h5: h5py.File, settings: SimulationSettings, n_frames: int, compression: str | None) -> None:
    g = settings.grid
    h5.create_dataset(
        "frames",
        shape=(n_frames, g.n_planes, g.height, g.width),
        dtype=np.float32,
        chunks=(1, g.n_planes, g.height, g.width) if n_frames else None,
        compression=compression if n_frames else None,
        shuffle=bool(compression) and n_frames > 0,
    )
    h5["frames"].attrs["axes"] = "TPYX"
    h5["frames"].attrs["units"] = "ADU" if settings.physics.noise.kind == "physical" else "photons"
    h5.create_dataset("drift_nm", shape=(n_frames, g.n_planes, 2), dtype=np.float32)
    h5["drift_nm"].attrs["axes"] = "TP(x,y)"
    dtype = np.dtype(list(EMITTER_COLUMNS.items()))
    h5.create_dataset("emitters", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))
    h5["emitters"].attrs["units"] = (
        "frame: index; x_nm, y_nm, z_nm: nm (camera 1); photons: detected photons summed over the planes"
    )


def _append_emitters(ds: h5py.Dataset, table: pd.DataFrame) -> None:
    rec = np.empty(len(table), dtype=ds.dtype)
    for name in ds.dtype.names:
        rec[name] = table[name].to_numpy()
    n = ds.shape[0]
    ds.resize((n + rec.size,))
    ds[n:] = rec


def _write_offsets(h5: h5py.File, n_frames: int) -> None:
    frame = h5["emitters"]["frame"]
    if np.any(np.diff(frame) < 0):
        raise ValueError("emitters must be sorted by frame")
    offsets = np.searchsorted(frame, np.arange(n_frames + 1), side="left").astype(np.int64)
    h5.create_dataset("emitter_offsets", data=offsets)


def _write_attrs(h5: h5py.File, settings: SimulationSettings, extra: dict) -> None:
    d = settings_to_dict(settings)
    for group, values in d.items():
        if not isinstance(values, dict):  # a top-level value (transmission)
            h5.attrs[group] = values
            continue
        for key, value in values.items():
            h5.attrs[f"{group}.{key}"] = value
    h5.attrs["settings_json"] = json.dumps(d)
    for key, value in provenance().items():
        h5.attrs[key] = value
    for key, value in extra.items():
        h5.attrs[key] = value


def write_shard(
    path: str | Path,
    sim: SimulatedFrames,
    settings: SimulationSettings,
    *,
    compression: str | None = "lzf",
    **attrs,
) -> None:
    """Write already simulated frames as a shard (atomically: temp file, then rename)."""
    n_frames = sim.frames.shape[0]
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        _create(h5, settings, n_frames, compression)
        h5["frames"][...] = sim.frames
        h5["drift_nm"][...] = sim.drift_nm
        _append_emitters(h5["emitters"], sim.emitters.sort_values("frame", kind="stable"))
        _write_offsets(h5, n_frames)
        _write_attrs(h5, settings, {"n_frames": n_frames, **attrs})


def simulate_shard(
    path: str | Path,
    n_frames: int,
    settings: SimulationSettings,
    *,
    seed: int,
    dataset: str,
    index: int,
    compression: str | None = "lzf",
) -> None:
    """Simulate ``n_frames`` frames seeded from (seed, dataset, index) into an HDF5 shard.

    Frames are made and written SIM_BATCH at a time, so memory stays small for any shard
    size. The file appears under its final name only when complete.
    """
    seq = shard_seed_sequence(seed, dataset, index)
    rng = np.random.default_rng(seq)
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        _create(h5, settings, n_frames, compression)
        for start in range(0, n_frames, SIM_BATCH):
            n = min(SIM_BATCH, n_frames - start)
            sim = simulate_frames(n, settings, rng)
            h5["frames"][start : start + n] = sim.frames
            h5["drift_nm"][start : start + n] = sim.drift_nm
            sim.emitters["frame"] += start
            _append_emitters(h5["emitters"], sim.emitters)
            log.info("shard %s: %d/%d frames", Path(path).name, start + n, n_frames)
        _write_offsets(h5, n_frames)
        _write_attrs(
            h5,
            settings,
            {
                "n_frames": n_frames,
                "seed": int(seed),
                "seed_entropy": json.dumps([int(v) for v in seq.entropy]),
                "dataset": dataset,
                "shard_index": int(index),
            },
        )


#: what h5py raises for a damaged file: OSError for data it cannot read or decompress
#: ("filter returned failure during read"), RuntimeError for damaged metadata
READ_ERRORS = (OSError, RuntimeError)


def _detail(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0] or exc.__class__.__name__


def _unreadable(path: str | Path, exc: BaseException) -> InputError:
    return InputError(f"{path}: unreadable ({_detail(exc)}); delete it and rerun")


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[None]:
    """Turn h5py's read errors into one InputError line naming the shard (the file is
    damaged: a rerun of the workflow makes it again once it is deleted)."""
    try:
        yield
    except READ_ERRORS as exc:
        raise _unreadable(path, exc) from None


def _open(path: str | Path) -> h5py.File:
    try:
        h5 = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: shard not found") from None
    except READ_ERRORS as exc:
        raise InputError(f"{path}: not a readable HDF5 shard ({_detail(exc)}); delete it and rerun") from None
    try:
        with _reading(path):
            missing = [k for k in REQUIRED if k not in h5]
            has_settings = "settings_json" in h5.attrs
    except InputError:
        h5.close()
        raise
    if missing or not has_settings:
        h5.close()
        what = ", ".join(missing) if missing else "attribute settings_json"
        raise InputError(f"{path}: not a voxloc shard (missing {what})")
    return h5


def shard_length(path: str | Path) -> int:
    """Number of frames in a shard."""
    with _open(path) as h5, _reading(path):
        return int(h5["frames"].shape[0])


def read_settings(path: str | Path) -> SimulationSettings:
    """The simulation settings a shard was made with."""
    with _open(path) as h5, _reading(path):
        return settings_from_dict(json.loads(h5.attrs["settings_json"]))


def read_shard(path: str | Path, start: int = 0, stop: int | None = None) -> SimulatedFrames:
    """Frames [start, stop) of a shard with their emitters (frame renumbered from 0) and drift."""
    with _open(path) as h5, _reading(path):
        n = h5["frames"].shape[0]
        stop = n if stop is None else min(stop, n)
        start = min(start, stop)
        frames = h5["frames"][start:stop]
        drift = h5["drift_nm"][start:stop]
        offsets = h5["emitter_offsets"]
        rec = h5["emitters"][offsets[start] : offsets[stop]]
    table = pd.DataFrame({name: rec[name] for name in EMITTER_COLUMNS})
    table["frame"] -= start
    return SimulatedFrames(frames=frames, emitters=table, drift_nm=drift)


def shard_attrs(path: str | Path) -> dict:
    """Root attributes of a shard as plain Python values."""
    with _open(path) as h5, _reading(path):
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in h5.attrs.items()}


class ShardReader:
    """One shard open for random access by frame: frames, emitters and drift of chosen frames.

    ``n_frames``, ``settings_json`` (the settings as stored), ``settings`` and ``seed_entropy``
    ("" for shards written by :func:`write_shard`) are read when it is made; the HDF5 file is
    opened on first read in each process and kept open until :meth:`close`, and never
    pickled, so a reader can be handed to DataLoader workers (forked or spawned). Indices are
    local frame indices of this shard (integer arrays); the reads are one frame at a time, in
    the order given.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        with _open(self.path) as h5, _reading(self.path):
            self.n_frames = int(h5["frames"].shape[0])
            self.settings_json = str(h5.attrs["settings_json"])
            self.seed_entropy = str(h5.attrs.get("seed_entropy", ""))
        self.settings: SimulationSettings = settings_from_dict(json.loads(self.settings_json))
        self._h5: h5py.File | None = None
        self._pid = -1

    def __getstate__(self) -> dict:  # never pickle the open handle
        state = self.__dict__.copy()
        state["_h5"], state["_pid"] = None, -1
        return state

    def _file(self) -> h5py.File:
        if self._pid != os.getpid():  # a handle inherited through fork is not used
            self._h5, self._pid = None, os.getpid()
        if self._h5 is None:
            self._h5 = _open(self.path)
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def read_frames(self, local: np.ndarray) -> FloatArray:
        """Stored frames (n, P, H, W) float32 (ADU or photons, as the noise model says)."""
        h5 = self._file()
        with _reading(self.path):
            return np.stack([h5["frames"][i] for i in local])

    def read_emitters(self, local: np.ndarray) -> pd.DataFrame:
        """Emitters of the frames (columns of EMITTER_COLUMNS), frame renumbered 0..n-1 in order."""
        h5 = self._file()
        with _reading(self.path):
            offsets = h5["emitter_offsets"]
            recs = [h5["emitters"][offsets[i] : offsets[i + 1]] for i in local]
            rec = np.concatenate(recs) if recs else np.zeros(0, h5["emitters"].dtype)
        table = pd.DataFrame({name: rec[name] for name in EMITTER_COLUMNS})
        table["frame"] = np.repeat(np.arange(len(local)), [r.size for r in recs]).astype(np.int32)
        return table

    def read_drift(self, local: np.ndarray) -> FloatArray:
        """Stored lateral drift Δk (n, P, 2) float32 nm of the frames."""
        h5 = self._file()
        with _reading(self.path):
            return np.stack([h5["drift_nm"][i] for i in local])
