"""Localization of quad-plane movies with a trained network (Aritake et al. 2020, Sect. 3.2).

Per batch of frames: read the cameras (ADU -> photons), map cameras 2-4 onto camera 1's
grid (:class:`voxloc.localization.resampling.Resampler`), run the network (η̂ = g(y; θ), Eq. 9),
keep the voxels with ĉ > τ and decode their offsets ζ̂ to nm (:func:`voxloc.voxels.decode`).
Localizations from voxels that no camera-k pixel covers are dropped.

The tables (one row per molecule, units in the column names) and their Parquet metadata,
merging and Picasso export: :mod:`voxloc.locs`.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

from voxloc.io import atomic_output
from voxloc.localization.movies import Movie
from voxloc.localization.resampling import Resampler
from voxloc.locs import LOC_SCHEMA, RowGroupWriter, empty_locs, encode_metadata, file_sha256, to_arrow
from voxloc.voxels import voxel_table

if TYPE_CHECKING:
    import torch

    from voxloc.network.model import TrainedModel

T = TypeVar("T")

__all__ = [
    "localize_frames",
    "iter_localizations",
    "prefetched",
    "resolve_batch_frames",
    "LocalizeOptions",
    "run_chunk",
    "check_model_psf",
    "locs_metadata",
]

log = logging.getLogger(__name__)


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", mininterval=30, file=sys.stderr, smoothing=0.1)


def _prepared_batches(
    movie: Movie, model: TrainedModel, resampler: Resampler, start: int, stop: int, batch_frames: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first frame, network input) per batch: read, registered onto camera 1, normalised."""
    for first, cams in movie.batches(start, stop, batch_frames):
        yield first, model.prepare(resampler(cams))


def _raw_batches(
    movie: Movie, start: int, stop: int, batch_frames: int, pin: bool
) -> Iterator[tuple[int, list]]:
    """(first frame, per-camera raw frames as CPU tensors) per batch, in page-locked memory
    when ``pin`` (copies to the GPU then run asynchronously)."""
    import torch

    for s in range(start, stop, batch_frames):
        tensors = []
        for raw in movie.read_raw(s, min(s + batch_frames, stop)):
            if (raw.dtype.kind in "ui" and raw.dtype.itemsize > 2) or raw.dtype.kind not in "uif":
                raw = raw.astype(np.float32)  # types torch has few kernels for
            t = torch.from_numpy(raw)
            tensors.append(t.pin_memory() if pin else t.contiguous())
        yield s, tensors


def _device_batches(
    movie: Movie,
    model: TrainedModel,
    resampler: Resampler,
    start: int,
    stop: int,
    batch_frames: int,
    prefetch: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """The GPU path of :func:`_prepared_batches`: a background thread only reads raw frames
    (``prefetch`` batches ahead); ADU -> photons, registration and normalisation run on the
    model's device (:meth:`Resampler.to_torch`), where they cost little next to the network."""
    on_device = resampler.to_torch(model.device)
    pin = model.device.type == "cuda"
    for first, raw in prefetched(_raw_batches(movie, start, stop, batch_frames, pin), prefetch):
        cams = [movie.photons(r.to(model.device, non_blocking=True)) for r in raw]
        yield first, model.prepare(on_device(cams))


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead (0: in this thread).

    Reading and registering the next batches (numpy, which releases the GIL) then overlaps the
    network. The queue is bounded, so memory stays flat; an exception in the thread is raised
    here, and leaving the loop early stops the thread.
    """
    if depth <= 0:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put((done, exc))

    thread = threading.Thread(target=work, name="voxloc-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def resolve_batch_frames(batch_frames: int | str, device: torch.device) -> int:
    """``auto``: 8 frames on the CPU (the activations of 4-16 frames of 256 x 256 x 4 stay in
    cache, benchmarks/bench_levers.py), 64 on a GPU (on an H200 at least as fast as 128:
    3,210 against 2,010-2,390 frames/s over three runs, with 1.9 GB peak RSS instead of
    2.3-2.5 GB; benchmarks/gpu.sh)."""
    if batch_frames == "auto":
        return 8 if device.type == "cpu" else 64
    if isinstance(batch_frames, str) or int(batch_frames) < 1:
        raise ValueError(f"batch_frames must be a positive integer or 'auto', got {batch_frames!r}")
    return int(batch_frames)


def iter_localizations(
    movie: Movie,
    model: TrainedModel,
    resampler: Resampler,
    *,
    start: int = 0,
    stop: int | None = None,
    tau: float = 0.5,
    batch_frames: int | str = "auto",
    prefetch: int = 2,
    device_input: bool | None = None,
) -> Iterator[pd.DataFrame]:
    """Localize frames [start, stop) of an open movie batch by batch: one table per batch,
    one row per molecule (module doc). Nothing accumulates, so memory stays flat.

    ``prefetch`` batches are read ahead in a background thread (:func:`prefetched`) while
    the network runs; 0 does everything in this thread. On the CPU that thread also
    registers and normalises them; with ``device_input`` (default: when the model runs on a
    GPU) it only reads, and the rest runs on the model's device (:func:`_device_batches`).
    """
    stop = movie.n_frames if stop is None else min(stop, movie.n_frames)
    batch_frames = resolve_batch_frames(batch_frames, model.device)
    if device_input is None:
        device_input = model.device.type != "cpu"
    grid = model.grid(resampler.height, resampler.width)
    n, t0 = 0, time.perf_counter()
    if device_input:
        batches = _device_batches(movie, model, resampler, start, stop, batch_frames, prefetch)
    else:
        batches = prefetched(_prepared_batches(movie, model, resampler, start, stop, batch_frames), prefetch)
    with _progress(stop - start, movie.name) as bar:
        for first, x in batches:
            d = model.detect(x, tau)
            locs = voxel_table(d.t, d.k, d.i, d.j, d.zeta, d.prob, grid, frame_offset=first)
            covered = resampler.coverage[locs["plane"], locs["row"], locs["col"]]
            n += int(covered.sum())
            bar.update(x.shape[0])
            yield locs[covered].reset_index(drop=True)
    dt = time.perf_counter() - t0
    log.info(
        "%s: frames %d-%d: %d localizations, %.1f frames/s (%s, %s, batch %d)",
        movie.name,
        start,
        stop - 1,
        n,
        (stop - start) / max(dt, 1e-9),
        model.device,
        model.precision,
        batch_frames,
    )


def localize_frames(movie: Movie, model: TrainedModel, resampler: Resampler, **options: Any) -> pd.DataFrame:
    """All localizations of frames [start, stop) as one table (see :func:`iter_localizations`)."""
    parts = list(iter_localizations(movie, model, resampler, **options))
    return pd.concat(parts, ignore_index=True) if parts else empty_locs()


def check_model_psf(
    meta: Mapping[str, Any],
    psf: Mapping[str, float],
    plane_z_nm: Sequence[float],
    *,
    source: str,
    spline_sha256: str | None = None,
) -> list[str]:
    """Warnings when a model was trained for another PSF or other planes than the current
    calibration (Gaussian: r0, D off by > 5 %; spline: another psf_spline.h5, by SHA-256,
    ``spline_sha256`` that of the current one; a plane off by > 50 nm)."""
    warnings = []
    trained = meta.get("psf") or {}
    if trained.get("model") == "spline" and spline_sha256 is not None:
        if trained.get("sha256") and trained["sha256"] != spline_sha256:
            warnings.append(
                f"{source}: model trained for the spline PSF of another calibration "
                f"({trained.get('file')}, SHA-256 {trained['sha256'][:12]}, now {spline_sha256[:12]})"
            )
    for key in ("r0_nm", "D_nm"):
        if key in trained and key in psf and abs(trained[key] - psf[key]) > 0.05 * abs(psf[key]):
            warnings.append(
                f"{source}: model trained for {key} = {trained[key]:.1f}, calibration says {psf[key]:.1f}"
            )
    planes = (meta.get("grid") or {}).get("plane_z_nm")
    if planes is not None and len(planes) == len(plane_z_nm):
        off = max(abs(a - b) for a, b in zip(planes, plane_z_nm, strict=True))
        if off > 50:
            warnings.append(
                f"{source}: model planes {planes} differ from calibrated {list(plane_z_nm)} by {off:.0f} nm"
            )
    return warnings


@dataclass(frozen=True)
class LocalizeOptions:
    """How :func:`run_chunk` localizes: the network's settings of the ``localize:`` config
    section (defaults as in workflow/schemas/config.schema.yaml) and its CPU threads.

    ``tau`` is the threshold τ on ĉ; ``batch_frames`` the network's batch
    (:func:`resolve_batch_frames`); ``device`` ``auto``, ``cpu`` or ``cuda``; ``precision``
    the network's arithmetic (:data:`voxloc.network.model.PRECISIONS`); ``prefetch`` the
    number of batches read ahead in a background thread (:func:`iter_localizations`), 0 =
    off; ``threads`` the CPU threads of the network (None: torch's default, one per core of
    the machine; the rule passes its own).
    """

    tau: float = 0.5
    batch_frames: int | str = "auto"
    device: str = "auto"
    precision: str = "auto"
    prefetch: int = 2
    threads: int | None = None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], *, threads: int | None = None) -> LocalizeOptions:
        """The options of config ``localize`` (its other keys, such as ``chunk_frames``,
        ``camera`` or ``model``, are for other code and ignored), with the rule's ``threads``."""
        keys = {f.name for f in fields(cls)} - {"threads"}
        return cls(**{k: v for k, v in cfg.items() if k in keys}, threads=threads)


def run_chunk(
    movie_paths: Sequence[str | Path],
    model_path: str | Path,
    registrations: Sequence[np.ndarray],
    out_path: str | Path,
    *,
    name: str,
    start: int,
    stop: int,
    offset_adu: float,
    adu_per_photon: float,
    options: LocalizeOptions | None = None,
    psf_calibration: str | Path | None = None,
    spline_calibration: str | Path | None = None,
) -> int:
    """Localize frames [start, stop) of a movie into one Parquet chunk; returns its row count.

    The movie's camera gives ``offset_adu`` and ``adu_per_photon``; ``options``
    (:class:`LocalizeOptions`, default: its defaults) say how the network runs. With a
    prefetch the localization runs in a second background thread too, so that writing
    Parquet overlaps the next batch.

    With ``psf_calibration`` (psf.yaml of the bead calibration, and ``spline_calibration``, its
    psf_spline.h5) a model trained for another PSF or other plane positions is reported as a
    warning in the log.
    """
    import torch

    from voxloc.localization.movies import open_movie
    from voxloc.network.model import load_checkpoint, select_device

    opts = options if options is not None else LocalizeOptions()
    if opts.threads is not None:
        torch.set_num_threads(max(1, int(opts.threads)))
    model = load_checkpoint(model_path, select_device(opts.device), opts.precision)
    if psf_calibration is not None:
        from voxloc.calibration.files import load_psf

        psf, planes = load_psf(psf_calibration)
        sha = None
        if spline_calibration is not None:
            from voxloc.io import file_sha256

            sha = file_sha256(spline_calibration)
        for warning in check_model_psf(
            model.meta, psf.to_dict(), planes, source=str(model_path), spline_sha256=sha
        ):
            log.warning("%s", warning)
    _limit_heap_fragmentation()
    n = 0
    with open_movie(movie_paths, name=name, offset_adu=offset_adu, adu_per_photon=adu_per_photon) as movie:
        resampler = Resampler(list(registrations), movie.camera_shapes)
        meta = locs_metadata(model, model_path, movie, tau=opts.tau)
        schema = LOC_SCHEMA.with_metadata(encode_metadata({**meta, "frame_range": [start, stop]}))
        # stream each batch's table into the Parquet file, gathered into row groups of ~1 M
        # rows (RowGroupWriter): memory does not grow with the chunk
        with atomic_output(out_path) as tmp, RowGroupWriter(tmp, schema) as writer:
            batches = iter_localizations(
                movie,
                model,
                resampler,
                start=start,
                stop=stop,
                tau=opts.tau,
                batch_frames=opts.batch_frames,
                prefetch=opts.prefetch,
            )
            for table in prefetched(batches, opts.prefetch):
                writer.write_table(to_arrow(table))
                n += len(table)
    return n


def _limit_heap_fragmentation() -> None:
    """Pin glibc's mmap threshold at 64 MiB: one batch's arrays (the network's activations
    for 8 frames of 256 x 256 x 4 take 32-64 MiB) are reused from the heap, larger ones are
    mapped and unmapped. No-op off glibc.

    A chunk once grew to 10 GB on a 30,000-frame movie: it kept every batch's table, and
    those small long-lived blocks between the heap's batch arrays kept freed space from
    returning to the system. Tables are now streamed out batch by batch, so nothing
    long-lived sits between them. The threshold was then pinned at 1 MiB, which mapped and
    faulted in every array afresh each batch and cost 35-40 % of the CPU speed (54 against
    88-94 frames/s; glibc's own dynamic threshold gave 75-86) for 0.1 GB less memory.
    """
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        try:
            ctypes.CDLL(libc_name).mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD
        except (OSError, AttributeError):
            pass


def locs_metadata(model: TrainedModel, model_path: str | Path, movie: Movie, *, tau: float) -> dict[str, Any]:
    """The key-value metadata of a localization file."""
    height, width = movie.camera_shapes[0]
    grid = model.grid(height, width)
    edges = grid.z_edges_nm
    return {
        "px_size_nm": grid.px_size_nm,
        "plane_z_nm": list(grid.plane_z_nm),
        "z_range_nm": [float(edges[0]), float(edges[-1])],
        "tau": tau,
        "precision": model.precision,
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "sources": movie.sources,
        "n_frames": movie.n_frames,
        "width_px": width,
        "height_px": height,
        "coordinates": "camera 1; pixel (i, j) centre at ((j + 0.5) s, (i + 0.5) s)",
    }
