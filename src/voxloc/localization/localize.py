"""Localization of quad-plane movies with a trained network (Aritake et al. 2020, Sect. 3.2).

Per batch of frames: read the cameras (ADU -> photons), map cameras 2-4 onto camera 1's
grid (:class:`voxloc.localization.resampling.Resampler`), run the network (η̂ = g(y; θ), Eq. 9),
keep the voxels with ĉ > τ and decode their offsets ζ̂ to nm (:func:`voxloc.voxels.decode`).
Localizations from voxels that no camera-k pixel covers are dropped. With ``localize.fit:
mle`` each detection is then refined in the cameras' own pixels (:mod:`voxloc.fitting`).

The tables (one row per molecule, units in the column names): :mod:`voxloc.locs`; their
metadata: :mod:`voxloc.localization.provenance`; exports: :mod:`voxloc.exports`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from voxloc.io import atomic_output
from voxloc.localization.movies import Movie
from voxloc.localization.provenance import check_model_psf, locs_metadata
from voxloc.localization.resampling import Resampler
from voxloc.locs import LOC_SCHEMA, RowGroupWriter, empty_locs, encode_metadata, to_arrow, with_network_only
from voxloc.runtime import limit_heap_fragmentation, prefetched, set_compute_threads
from voxloc.voxels import voxel_table

if TYPE_CHECKING:
    import torch

    from voxloc.fitting.refine import Refiner
    from voxloc.network.model import TrainedModel
    from voxloc.physics.microscope import Microscope
    from voxloc.physics.noise import PixelNoise


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
) -> Iterator[tuple[int, torch.Tensor, list]]:
    """(first frame, network input, the cameras' own frames in photons) per batch: read,
    registered onto camera 1, normalised."""
    for first, cams in movie.batches(start, stop, batch_frames):
        yield first, model.prepare(resampler(cams)), cams


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
    host_cams: bool = False,
) -> Iterator[tuple[int, torch.Tensor, list | None]]:
    """The GPU path of :func:`_prepared_batches`: a background thread only reads raw frames
    (``prefetch`` batches ahead); ADU -> photons, registration and normalisation run on the
    model's device (:meth:`Resampler.to_torch`), where they cost little next to the network.
    With ``host_cams`` the cameras' frames in photons are also given as numpy arrays (for
    the per-molecule fit), else None."""
    on_device = resampler.to_torch(model.device)
    pin = model.device.type == "cuda"
    for first, raw in prefetched(_raw_batches(movie, start, stop, batch_frames, pin), prefetch):
        cams = [movie.photons(r.to(model.device, non_blocking=True)) for r in raw]
        host = [movie.photons(r.numpy()) for r in raw] if host_cams else None
        yield first, model.prepare(on_device(cams)), host


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
    refiner: Refiner | None = None,
) -> Iterator[pd.DataFrame]:
    """Localize frames [start, stop) of an open movie batch by batch: one table per batch,
    one row per molecule (module doc). Nothing accumulates, so memory stays flat.

    With a ``refiner`` (:class:`voxloc.fitting.refine.Refiner`) every detection is fitted in
    the cameras' own pixels and the table has the fit's columns; without, the network's
    position is copied into them (:func:`voxloc.locs.with_network_only`).

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
        batches = _device_batches(
            movie, model, resampler, start, stop, batch_frames, prefetch, host_cams=refiner is not None
        )
    else:
        batches = prefetched(_prepared_batches(movie, model, resampler, start, stop, batch_frames), prefetch)
    fit_s = 0.0
    with _progress(stop - start, movie.name) as bar:
        for first, x, cams in batches:
            d = model.detect(x, tau)
            locs = voxel_table(d.t, d.k, d.i, d.j, d.zeta, d.prob, grid, frame_offset=first)
            covered = resampler.coverage[locs["plane"], locs["row"], locs["col"]]
            locs = locs[covered].reset_index(drop=True)
            n += len(locs)
            if refiner is not None:
                t_fit = time.perf_counter()
                locs = refiner(locs, cams, first)
                fit_s += time.perf_counter() - t_fit
            else:
                locs = with_network_only(locs)
            bar.update(x.shape[0])
            yield locs
    dt = time.perf_counter() - t0
    if refiner is not None:
        log.info("%s: %s; %.1f s of %.1f in the fit", movie.name, refiner.summary(), fit_s, dt)
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


def _measured_precision(
    model: TrainedModel,
    model_path: str | Path,
    movie: Movie,
    resampler: Resampler,
    start: int,
    stop: int,
    opts: LocalizeOptions,
) -> TrainedModel:
    """``precision: auto`` on a CPU: measured on the chunk's first batch, or as measured before
    on this machine type (kept beside the model; :mod:`voxloc.network.precision`), logged."""
    from voxloc.io import file_sha256
    from voxloc.network.precision import auto_precision

    batch = resolve_batch_frames(opts.batch_frames, model.device)
    _, cams = next(movie.batches(start, min(stop, movie.n_frames, start + batch), batch))
    path = Path(model_path)
    chosen, line = auto_precision(
        model, resampler(cams), opts.tau, cache=path.with_name(path.stem + ".precision.json"),
        model_sha256=file_sha256(path),
    )  # fmt: skip
    log.info("%s: precision auto -> %s", movie.name, line)
    return chosen


def localize_frames(movie: Movie, model: TrainedModel, resampler: Resampler, **options: Any) -> pd.DataFrame:
    """All localizations of frames [start, stop) as one table (see :func:`iter_localizations`)."""
    parts = list(iter_localizations(movie, model, resampler, **options))
    return pd.concat(parts, ignore_index=True) if parts else empty_locs()


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

    ``fit`` is ``mle`` (every detection refined by :mod:`voxloc.fitting`) or ``none``;
    ``fit_window_px`` the window side per camera, ``fit_max_iter`` the iteration cap,
    ``fit_neighbour_nm`` the distance below which detections are ``crowded`` and
    ``fit_crowded`` what they get (:data:`voxloc.fitting.refine.CROWDED_MODES`), ``fit_second``
    whether single fits are searched for a molecule the network missed (:mod:`voxloc.fitting.second`).
    """

    tau: float = 0.5
    batch_frames: int | str = "auto"
    device: str = "auto"
    precision: str = "auto"
    prefetch: int = 2
    threads: int | None = None
    fit: str = "mle"
    fit_window_px: int = 9
    fit_max_iter: int = 30
    fit_neighbour_nm: float = 400.0
    fit_crowded: str = "joint"
    fit_second: bool = True

    def __post_init__(self) -> None:
        if self.fit not in ("mle", "none"):
            raise ValueError(f"localize.fit must be mle or none, got {self.fit!r}")

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
    microscope: Microscope | None = None,
    camera_noise: PixelNoise | None = None,
) -> int:
    """Localize frames [start, stop) of a movie into one Parquet chunk; returns its row count.

    The movie's camera gives ``offset_adu`` and ``adu_per_photon``; ``options``
    (:class:`LocalizeOptions`, default: its defaults) say how the network runs. With a
    prefetch the localization runs in a second background thread too, so that writing
    Parquet overlaps the next batch.

    With ``psf_calibration`` (psf.yaml of the bead calibration, and ``spline_calibration``, its
    psf_spline.h5) a model trained for another PSF or other plane positions is reported as a
    warning in the log.

    With ``options.fit`` ``mle``, every detection is fitted (:mod:`voxloc.fitting`) with the
    ``microscope`` of the calibration (PSF, planes, transmission) and the camera's noise
    ``camera_noise`` (:class:`voxloc.physics.noise.PixelNoise`), both required then.
    """

    from voxloc.fitting.mle import FitOptions
    from voxloc.fitting.refine import Refiner
    from voxloc.fitting.windows import saturation_photons
    from voxloc.localization.movies import open_movie
    from voxloc.network.model import load_checkpoint, select_device

    opts = options if options is not None else LocalizeOptions()
    set_compute_threads(opts.threads)
    device = select_device(opts.device)
    measure = opts.precision == "auto" and device.type == "cpu"
    model = load_checkpoint(model_path, device, "float32" if measure else opts.precision)
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
    limit_heap_fragmentation()
    n = 0
    with open_movie(movie_paths, name=name, offset_adu=offset_adu, adu_per_photon=adu_per_photon) as movie:
        resampler = Resampler(list(registrations), movie.camera_shapes)
        if measure:
            model = _measured_precision(model, model_path, movie, resampler, start, stop, opts)
        meta = locs_metadata(model, model_path, movie, tau=opts.tau)
        refiner = None
        if opts.fit == "mle":
            if microscope is None or camera_noise is None:
                raise ValueError(
                    "localize.fit: mle needs the calibration's microscope and the camera's noise"
                )
            edges = model.grid(*movie.camera_shapes[0]).z_edges_nm
            refiner = Refiner(
                microscope=microscope,
                noise=camera_noise,
                registrations=list(registrations),
                z_range_nm=(float(edges[0]), float(edges[-1])),
                options=FitOptions(window_px=opts.fit_window_px, max_iter=opts.fit_max_iter),
                neighbour_nm=opts.fit_neighbour_nm,
                crowded_mode=opts.fit_crowded,
                second=opts.fit_second,
                saturation=saturation_photons(movie.files[0].dtype, movie.offset_adu, movie.adu_per_photon),
            )
            meta["fit"] = {
                "method": "mle",
                "likelihood": refiner.noise.likelihood,
                "psf": microscope.psf_dict() if microscope.model == "spline" else microscope.model,
                "window_px": opts.fit_window_px,
                "max_iter": opts.fit_max_iter,
                "neighbour_nm": opts.fit_neighbour_nm,
                "crowded": opts.fit_crowded,
                "second": opts.fit_second,
            }
        else:
            meta["fit"] = {"method": "none"}
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
                refiner=refiner,
            )
            for table in prefetched(batches, opts.prefetch):
                writer.write_table(to_arrow(table))
                n += len(table)
    return n
