"""Density and speed sweeps of a trained model (Aritake et al. 2020, Sect. 4.2, Figs. 7-9).

Density sweep (Figs. 7, 8): frames simulated as the model's training frames (same grid,
PSF, noise, photons and drift, from the settings stored in ``model.pt``) but with a fixed
number M of molecules per frame, for each M of a list; the network runs once per frame and
its output is thresholded at each τ. Per (M, τ): the voxel confusion counts and Jaccard of
Table 4 (:func:`voxloc.evaluation.voxel_metrics.confusion` against the encoded targets), and the
localization metrics of :func:`voxloc.evaluation.matching.summary` (matching within the tolerances),
with the standard deviation of the error per axis (the error bars of Fig. 7b). The error of
every matched pair (estimate - truth) is kept for the histograms of Fig. 8.

Speed sweep (Fig. 9): for each image size S a T x 4 x S x S uint16 TIFF of simulated
frames is written to disk, then localized with the workflow's own code path
(:func:`voxloc.localization.localize.run_chunk`: open the file, read, convert to photons, register with
identity matrices, run the network, decode, write Parquet), timed from the call to the closed
Parquet file. One warm-up batch is localized first and not timed.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from voxloc.errors import ConfigError, InputError
from voxloc.evaluation.matching import MatchResult, match_tables, matched_errors, summary
from voxloc.evaluation.voxel_metrics import confusion
from voxloc.io import atomic_output, write_tiff
from voxloc.localization.localize import LocalizeOptions, resolve_batch_frames, run_chunk
from voxloc.locs import write_parquet
from voxloc.network.model import TrainedModel, load_checkpoint, read_checkpoint, select_device
from voxloc.network.precision import cpu_name
from voxloc.physics.noise import adu_per_photon, to_photons
from voxloc.runtime import set_compute_threads
from voxloc.simulation.settings import SimulationSettings
from voxloc.simulation.shards import settings_from_dict, shard_seed_sequence
from voxloc.simulation.simulate import simulate_frames
from voxloc.voxels import VoxelGrid, decode, encode

__all__ = [
    "DENSITY_M",
    "density_per_um2",
    "training_settings",
    "error_table",
    "error_spread",
    "density_sweep",
    "write_tsv",
    "write_density_sweep",
    "write_speed_movie",
    "speed_frames",
    "speed_sweep",
]

log = logging.getLogger(__name__)

#: the paper's densities (Fig. 7): M = 10, 20, ..., 100 molecules per 64 x 64 x 4 frame
DENSITY_M = tuple(range(10, 101, 10))
#: frames simulated and run through the network at a time (fixed: part of what a seed reproduces)
SIM_BLOCK = 100
#: camera baseline of the speed-sweep movies when the training noise model gives none (ADU)
SPEED_OFFSET_ADU = 100.0


def density_per_um2(n_molecules: float, grid: VoxelGrid) -> float:
    """Molecules per µm² of the frame's field of view (H W s², s the lateral voxel size)."""
    return float(n_molecules) / (grid.height * grid.width * (grid.px_size_nm / 1000.0) ** 2)


def training_settings(meta: Mapping[str, Any], *, source: str = "model") -> SimulationSettings:
    """The simulation settings of a model's training frames (``meta["simulation"]`` of model.pt)."""
    if "simulation" not in meta:
        raise InputError(f"{source}: the model stores no simulation settings (trained by an older voxloc?)")
    return settings_from_dict(meta["simulation"])


def error_table(est: pd.DataFrame, truth: pd.DataFrame, match: MatchResult) -> pd.DataFrame:
    """One row per matched pair: frame, the true z and photons, and the error estimate - truth
    per axis (dx_nm, dy_nm, dz_nm), the quantities of Figs. 7b and 8."""
    t = truth.iloc[match.true_index]
    out = {
        "frame": t["frame"].to_numpy(np.int32),
        "z_true_nm": t["z_nm"].to_numpy(np.float32),
        "photons": (t["photons"] if "photons" in t else pd.Series(np.nan, index=t.index)).to_numpy(
            np.float32
        ),
    }
    d = matched_errors(est, truth, match).astype(np.float32)
    for a, axis in enumerate("xyz"):
        out[f"d{axis}_nm"] = d[:, a]
    return pd.DataFrame(out)


def error_spread(errors: pd.DataFrame) -> dict[str, float]:
    """Sample standard deviation of the error per axis (sd_x_nm, ...; the error bars of Fig. 7b)."""
    return {
        f"sd_{a}_nm": float(errors[f"d{a}_nm"].std(ddof=1)) if len(errors) > 1 else float("nan")
        for a in "xyz"
    }


def _density_point(
    model: TrainedModel,
    settings: SimulationSettings,
    m: int,
    taus: Sequence[float],
    n_frames: int,
    rng: np.random.Generator,
    *,
    lateral_nm: float,
    axial_nm: float,
    batch_frames: int,
    refiner=None,
) -> tuple[list[dict], list[pd.DataFrame]]:
    """Rows of the density table and matched errors for one M (all τ from one network pass);
    with a ``refiner`` also the fitted detections' metrics (:mod:`voxloc.evaluation.density_fit`)."""
    from voxloc.evaluation import density_fit

    fixed = dataclasses.replace(settings, n_molecules=(m, m))
    grid = settings.grid
    counts = {tau: dict.fromkeys(("tp", "fp", "fn", "tn"), 0) for tau in taus}
    found: dict[float, list[pd.DataFrame]] = {tau: [] for tau in taus}
    fitted: dict[float, list[pd.DataFrame]] = {tau: [] for tau in taus}
    truths, collisions = [], 0
    for start in range(0, n_frames, SIM_BLOCK):
        n = min(SIM_BLOCK, n_frames - start)
        sim = simulate_frames(n, fixed, rng)
        enc = encode(sim.emitters, n, grid)
        collisions += enc.n_collisions
        photons = to_photons(sim.frames, settings.physics.noise)
        out = model.predict(photons, batch_frames=batch_frames)
        sim.emitters["frame"] += start
        truths.append(sim.emitters)
        for tau in taus:
            for key, value in confusion(enc.targets, out, tau).items():
                if key != "jaccard":
                    counts[tau][key] += value
            found[tau].append(decode(out, grid, tau, frame_offset=start))
            if refiner is not None:
                fitted[tau].append(
                    density_fit.fit_block(refiner, found[tau][-1], photons, sim.drift_nm, start)
                )
    truth = pd.concat(truths, ignore_index=True)
    rows, errors = [], []
    for tau in taus:
        est = pd.concat(found[tau], ignore_index=True)
        match = match_tables(est, truth, lateral_nm=lateral_nm, axial_nm=axial_nm)
        err = error_table(est, truth, match)
        c = counts[tau]
        denom = c["tp"] + c["fp"] + c["fn"]
        rows.append(
            {
                "n_molecules": m,
                "density_per_um2": density_per_um2(m, grid),
                "tau": tau,
                "frames": n_frames,
                **{f"voxel_{k}": v for k, v in c.items()},
                "voxel_jaccard": c["tp"] / denom if denom else float("nan"),  # as confusion()
                "voxel_collisions": collisions,
                **summary(est, truth, match).to_dict(),
                **error_spread(err),
                **dict.fromkeys(density_fit.FIT_COLUMNS, float("nan")),
            }
        )
        if refiner is not None:
            rows[-1].update(
                density_fit.fit_metrics(
                    pd.concat(fitted[tau], ignore_index=True),
                    truth,
                    settings,
                    lateral_nm=lateral_nm,
                    axial_nm=axial_nm,
                )
            )
        errors.append(err.assign(n_molecules=np.int32(m), tau=np.float32(tau)))
    return rows, errors


@dataclasses.dataclass
class DensitySweep:
    table: pd.DataFrame  # one row per (M, τ)
    errors: pd.DataFrame  # one row per matched pair: n_molecules, tau, frame, ..., dx/dy/dz_nm


def density_sweep(
    model_path: str | Path,
    n_molecules: Sequence[int] = DENSITY_M,
    taus: Sequence[float] = (0.5, 0.9),
    *,
    n_frames: int = 100,
    seed: int = 0,
    lateral_nm: float = 250.0,
    axial_nm: float = 500.0,
    batch_frames: int | str = "auto",
    device: str = "auto",
    threads: int | None = None,
    settings: SimulationSettings | None = None,
    fit_n_molecules: Sequence[int] = (),
    fit: Mapping[str, Any] | None = None,
) -> DensitySweep:
    """Voxel and localization metrics against M molecules per frame (Fig. 7) and the matched
    errors (Fig. 8); see the module doc. ``settings`` default to the model's training frames;
    each M draws its frames from its own seed (seed, "density_sweep", M), the same for all τ.
    For the M in ``fit_n_molecules`` the detections are also fitted
    (:mod:`voxloc.evaluation.density_fit`; ``fit``: the ``localize`` config's fit keys, none
    with ``fit: none``), the fit's columns NaN for the others."""
    if n_frames < 1 or not n_molecules or not taus:
        raise ValueError("density_sweep needs n_frames >= 1 and at least one M and one τ")
    _set_threads(threads)
    model = load_checkpoint(model_path, select_device(device))
    batch_frames = resolve_batch_frames(batch_frames, model.device)
    settings = settings or training_settings(model.meta, source=str(model_path))
    grid = model.grid(settings.grid.height, settings.grid.width)
    if grid != settings.grid:
        log.warning("%s: model grid %s differs from the simulation grid %s", model_path, grid, settings.grid)
    rows, errors = [], []
    options = dict(lateral_nm=lateral_nm, axial_nm=axial_nm, batch_frames=batch_frames)
    refiner = None
    if fit_n_molecules and (fit or {}).get("fit", "mle") == "mle":
        from voxloc.evaluation.density_fit import sweep_refiner

        edges = grid.z_edges_nm
        refiner = sweep_refiner(settings, (float(edges[0]), float(edges[-1])), fit or {})
    for m in n_molecules:
        rng = np.random.default_rng(shard_seed_sequence(seed, "density_sweep", int(m)))
        fit = refiner if int(m) in {int(v) for v in fit_n_molecules} else None
        r, e = _density_point(
            model, settings, int(m), [float(t) for t in taus], n_frames, rng, **options, refiner=fit
        )
        rows += r
        errors += e
        for row in r:
            values = (row[k] for k in ("n_molecules", "tau", "voxel_jaccard", "jaccard", "rmse_lateral_nm"))
            log.info("M = %d, τ = %g: voxel Jaccard %.3f, Jaccard %.3f, RMSE lateral %.1f nm", *values)
            if np.isfinite(row["jaccard_fit"]):
                log.info(
                    "  with the fit: Jaccard %.3f, RMSE lateral %.1f, axial %.1f nm; RMSE / CRLB x %.2f, y %.2f, z %.2f",
                    *(row[k] for k in ("jaccard_fit", "rmse_lateral_fit_nm", "rmse_axial_fit_nm")),
                    *(row[f"rmse_to_crlb_{a}_fit"] for a in "xyz"),
                )
    err = pd.concat(errors, ignore_index=True)
    first = ["n_molecules", "tau"]
    return DensitySweep(pd.DataFrame(rows), err[first + [c for c in err.columns if c not in first]])


def write_tsv(table: pd.DataFrame, path: str | Path) -> None:
    """A sweep table as tab-separated text (atomically)."""
    with atomic_output(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def write_density_sweep(result: DensitySweep, table_tsv: str | Path, errors_parquet: str | Path) -> None:
    """The density table as TSV and the matched errors as Parquet (both atomically)."""
    write_parquet(errors_parquet, result.errors, units="dx_nm, dy_nm, dz_nm: estimate - truth (nm)")
    write_tsv(result.table, table_tsv)


def write_speed_movie(
    path: str | Path, settings: SimulationSettings, n_frames: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Simulate ``n_frames`` frames and write them as a T x 4 x H x W uint16 TIFF in ADU.

    Returns (offset_adu, adu_per_photon) to read it back: a ``physical`` noise model's
    baseline and gain, else photons + SPEED_OFFSET_ADU (gain 1), rounded.
    """
    noise = settings.physics.noise
    if noise.kind == "physical":
        offset, gain, add = noise.baseline_adu, adu_per_photon(noise), 0.0
    else:
        offset, gain, add = SPEED_OFFSET_ADU, 1.0, SPEED_OFFSET_ADU
    g = settings.grid
    movie = np.empty((n_frames, g.n_planes, g.height, g.width), dtype=np.uint16)
    block = max(1, min(SIM_BLOCK, SIM_BLOCK * 64 * 64 // (g.height * g.width)))  # bounded memory
    for start in range(0, n_frames, block):
        frames = simulate_frames(min(block, n_frames - start), settings, rng).frames
        movie[start : start + len(frames)] = np.clip(np.rint(frames + add), 0, 65535)
    write_tiff(path, movie, axes="TCYX")
    return float(offset), float(gain)


def speed_frames(sizes_px: Sequence[int], frames: Sequence[int]) -> list[int]:
    """Frames per image size: one count per size (ConfigError naming the keys otherwise)."""
    if len(frames) != len(sizes_px):
        raise ConfigError(
            f"config: sweeps.speed.frames has {len(frames)} values for {len(sizes_px)} sizes_px"
        )
    return [int(f) for f in frames]


def _set_threads(threads: int | None) -> None:
    """torch's and numba's threads (the rule's threads); None leaves their defaults."""
    set_compute_threads(threads)


def _device_info(device: str) -> dict[str, Any]:
    dev = select_device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
    return {"device": dev.type, "device_name": name, "threads": torch.get_num_threads()}


def _speed_point(
    model_path: str | Path,
    base: SimulationSettings,
    size: int,
    n_frames: int,
    seed: int,
    tmp: Path,
    **options,
) -> dict[str, Any]:
    """One row of the speed table: write the S x S movie at the training density, localize
    one batch untimed (warm-up), then time run_chunk from the call (model loading, opening
    the TIFF) to the closed Parquet file."""
    m = max(1, round(float(np.mean(base.n_molecules)) * size**2 / (base.height * base.width)))
    sized = dataclasses.replace(base, height=size, width=size, n_molecules=(m, m))
    rng = np.random.default_rng(shard_seed_sequence(seed, "speed_sweep", size))
    movie = tmp / f"movie-{size}.tif"
    offset, gain = write_speed_movie(movie, sized, n_frames, rng)
    opts = dict(
        name=f"speed-{size}", offset_adu=offset, adu_per_photon=gain, options=LocalizeOptions(**options)
    )
    eye = [np.eye(3)] * sized.grid.n_planes
    t0 = time.perf_counter()
    run_chunk([movie], model_path, eye, tmp / "warmup.parquet", start=0, stop=options["batch_frames"], **opts)
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = run_chunk([movie], model_path, eye, tmp / f"locs-{size}.parquet", start=0, stop=n_frames, **opts)
    seconds = time.perf_counter() - t0
    log.info("S = %d: %d frames in %.2f s, %.1f frames/s", size, n_frames, seconds, n_frames / seconds)
    return {
        "size_px": size,
        "frames": n_frames,
        "molecules_per_frame": m,
        "movie_mb": movie.stat().st_size / 1e6,
        "seconds": seconds,
        "frames_per_s": n_frames / seconds,
        "localizations": n,
        "localizations_per_s": n / seconds,
        "warmup_s": warmup,
    }


def speed_sweep(
    model_path: str | Path,
    sizes_px: Sequence[int] = (16, 32, 64, 128, 256),
    frames: Sequence[int] = (512, 256, 128, 64, 32),
    *,
    batch_frames: int | str = "auto",
    tau: float = 0.5,
    device: str = "auto",
    threads: int | None = None,
    seed: int = 0,
    workdir: str | Path | None = None,
) -> pd.DataFrame:
    """Localization speed against image size (Fig. 9), one row per size; see the module doc.

    Each S x S movie holds the training density (mean M of the training frames per
    H x W, scaled to S x S). It is written to a temporary directory (under ``workdir``,
    default $TMPDIR) and read back from there, so from the page cache rather than the disk.
    """
    frames = speed_frames(sizes_px, frames)
    _set_threads(threads)
    base = training_settings(read_checkpoint(model_path)["meta"], source=str(model_path))
    batch_frames = resolve_batch_frames(batch_frames, select_device(device))
    info = {"batch_frames": batch_frames, **_device_info(device)}
    # the network's speed (Fig. 9): the per-molecule fit's is measured by benchmarks/bench_peer.py
    options = dict(tau=tau, batch_frames=batch_frames, device=device, fit="none")
    with tempfile.TemporaryDirectory(prefix="voxloc-speed-", dir=workdir) as tmp:
        rows = [
            {**_speed_point(model_path, base, int(size), n, seed, Path(tmp), **options), **info}
            for size, n in zip(sizes_px, frames, strict=True)
        ]
    return pd.DataFrame(rows)
