"""Peer benchmark: voxloc's network against Picasso's 2D Gaussian fitter on the same movies.

Simulates T x 4 x 256 x 256 movies at two densities (molecules per lateral pixel per frame,
all depths; the paper's training frames have 50 / 64^2 = 0.0122), the paper's noise
(signal + Poisson(10) + N(0, 9)) and the PSF the model was trained with (--psf table2: the
paper's Table 2), stored as uint16 TIFFs of ADU = photons + 100. Both tools read the TIFF
from disk (just written, so from the page cache); frames/s is the wall time from opening the
file to having the localization table in memory, all four planes of every frame.

* voxloc: the library's path (voxloc.localization.movies.open_movie, identity registration as the
  simulation has no camera affine, voxloc.localization.localize.iter_localizations with --model, τ 0.5),
  --threads torch threads; the model is loaded and run once on zeros before the clock.
* Picasso (``picassosr``, extra ``bench``): ``picasso.localize.localize_frames`` with
  ``gausslq``, box 7, plane by plane, one process per group of planes (--threads processes:
  2 = one per plane pair); camera Baseline 100, Sensitivity 1, Gain 1. Min. Net Gradient
  (auto): the 99.9th percentile of the net gradient at the local maxima of background-only
  paper-noise frames (~160: about one noise spot per plane and frame). Numba compiles on a
  warm-up call on two frames before the clock; the pool is forked after it. Picasso puts
  pixel centres at integers (x_nm = (x + 0.5) s) and skips maxima within 3-4 px of the
  border. Merge across planes (a simple baseline, not tuned), inside the clock: fits wider
  than 3 px are dropped; a fit is kept when no narrower fit (width sqrt(sx sy)) of the same
  frame lies within 1 px in any plane; the plane-k drift Δk (Eq. 7) is ignored
  (truth-free); z is the least-squares solution, within slab k of the kept fit's plane k,
  of its width and those of its neighbours within 1 px in planes k ± 1 against the defocus
  curve r(z_j - z) of Eq. 5 (voxloc.physics.psf.defocus_width_nm).

Picasso needs pandas < 3, so it runs in its own interpreter (--picasso-python, default
.venv-bench/bin/python when it exists, else this one):

  python3 -m venv .venv-bench && .venv-bench/bin/pip install -e ".[bench]"
  .venv/bin/python benchmarks/bench_peer.py --frames 100 --out /tmp/peer.tsv

Accuracy: voxloc.evaluation.matching.match_tables / summary at 250 nm lateral, 500 nm axial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import BASELINE_ADU, cpu_label, simulate_movie

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- Picasso side
# (runs in the Picasso interpreter: imports nothing of torch or pandas >= 3)


def _import_voxloc() -> None:
    try:
        import voxloc  # noqa: F401
    except ImportError:  # a venv with Picasso only: use the source tree
        sys.path.insert(0, str(ROOT / "src"))


def _read_plane(movie: str, k: int) -> np.ndarray:
    """Plane k of a T x 4 x H x W TIFF as (T, H, W), memory-mapped where possible."""
    import tifffile

    try:
        return np.array(tifffile.memmap(movie, mode="r")[:, k])
    except ValueError:  # compressed or not contiguous
        with tifffile.TiffFile(movie) as tif:
            n = len(tif.pages)
        return tifffile.imread(movie, key=range(k, n, 4))


def _picasso_planes(task: tuple) -> list[np.ndarray]:
    """Worker: localize planes ``planes`` of the movie with Picasso; one record array each."""
    from picasso import localize

    movie, planes, min_ng, box, camera = task
    out = []
    for k in planes:
        locs = localize.localize_frames(
            _read_plane(movie, k),
            None,
            {"Min. Net Gradient": min_ng, "Box Size": box},
            camera_info=camera,
            fitting_method="gausslq",
            threaded=False,
        )
        rec = np.empty(
            len(locs), dtype=[("frame", "i4"), ("x", "f8"), ("y", "f8"), ("w", "f8"), ("plane", "i2")]
        )
        rec["frame"] = locs["frame"].to_numpy()
        rec["x"], rec["y"] = locs["x"].to_numpy(), locs["y"].to_numpy()
        rec["w"] = np.sqrt(np.abs(locs["sx"].to_numpy() * locs["sy"].to_numpy()))
        rec["plane"] = k
        out.append(rec)
    return out


def auto_min_net_gradient(box: int, quantile: float = 0.999, n_frames: int = 8, size: int = 256) -> float:
    """Net gradient quantile at local maxima of background-only paper-noise frames (ADU)."""
    from picasso import localize

    from voxloc.physics.noise import NoiseModel, add_noise

    rng = np.random.default_rng(12345)
    frames = add_noise(np.zeros((n_frames, size, size), np.float32), NoiseModel(kind="paper"), rng)
    frames = np.clip(np.rint(frames + BASELINE_ADU), 0, 65535).astype(np.uint16)
    ng = np.concatenate([localize.identify_in_frame(f, -np.inf, box)[2] for f in frames])
    return float(np.quantile(ng, quantile))


def merge_planes(fits: np.ndarray, geom: dict, radius_px: float = 1.0, max_width_px: float = 3.0) -> dict:
    """Per frame, keep each fit that no narrower fit (any plane) within ``radius_px`` beats;
    z from the widths of its plane and the neighbouring planes (Eq. 5), within its slab.
    Fits wider than ``max_width_px`` (wider than the PSF anywhere in the z range) are dropped."""
    from scipy.spatial import cKDTree

    from voxloc.physics.psf import defocus_width_nm

    s = geom["px_size_nm"]
    zk = np.asarray(geom["plane_z_nm"])
    edges = np.asarray(geom["z_edges_nm"])
    ok = np.isfinite(fits["x"]) & np.isfinite(fits["y"]) & (fits["w"] > 0) & (fits["w"] < max_width_px)
    fits = fits[ok]
    # frames far apart in x so that one tree serves them all
    shift = fits["frame"].astype(np.float64) * (geom["width_px"] + 10 * radius_px)
    pairs = cKDTree(np.column_stack([fits["x"] + shift, fits["y"]])).query_pairs(
        radius_px, output_type="ndarray"
    )
    a, b = pairs[:, 0], pairs[:, 1]
    a_wins = (fits["w"][a] < fits["w"][b]) | ((fits["w"][a] == fits["w"][b]) & (a < b))
    winner, loser = np.where(a_wins, a, b), np.where(a_wins, b, a)
    keep = np.ones(len(fits), dtype=bool)
    keep[loser] = False
    # widths seen in the planes next to each fit (nearest neighbour plane only; NaN = none)
    nb = np.full((len(fits), 2), np.nan)
    for side, step in enumerate((-1, 1)):
        for i, j in ((winner, loser), (loser, winner)):
            sel = fits["plane"][j] == fits["plane"][i] + step
            np.fmin.at(nb[:, side], i[sel], fits["w"][j][sel])
    kept = fits[keep]
    nb = nb[keep] * s
    k = kept["plane"].astype(int)
    psf = {key: geom["psf"][key] for key in ("r0_nm", "D_nm", "A", "B")}
    # candidate z on a ~5 nm grid across slab k
    t = np.linspace(0.0, 1.0, 81)
    z = edges[k][:, None] + t[None, :] * (edges[k + 1] - edges[k])[:, None]
    cost = (kept["w"][:, None] * s - defocus_width_nm(zk[k][:, None] - z, **psf)) ** 2
    for side, step in enumerate((-1, 1)):
        j = np.clip(k + step, 0, len(zk) - 1)
        have = np.isfinite(nb[:, side]) & (k + step >= 0) & (k + step < len(zk))
        cost += np.where(
            have[:, None],
            (np.nan_to_num(nb[:, side])[:, None] - defocus_width_nm(zk[j][:, None] - z, **psf)) ** 2,
            0,
        )
    best = z[np.arange(len(kept)), np.argmin(cost, axis=1)]
    return {
        "frame": kept["frame"],
        "x_nm": (kept["x"] + 0.5) * s,
        "y_nm": (kept["y"] + 0.5) * s,
        "z_nm": best,
        "n_fits": len(fits),
    }


def picasso_driver(args: argparse.Namespace) -> None:
    """In the Picasso interpreter: warm up, localize the movie, merge, print figures as JSON."""
    import multiprocessing

    _import_voxloc()
    from picasso import localize

    geom = json.loads(args.geometry)
    camera = {
        "Baseline": BASELINE_ADU,
        "Sensitivity": 1.0,
        "Gain": 1.0,
        "Qe": 1.0,
        "Pixelsize": geom["px_size_nm"],
    }
    t0 = time.perf_counter()
    min_ng = (
        auto_min_net_gradient(args.box) if args.min_net_gradient == "auto" else float(args.min_net_gradient)
    )
    localize.localize_frames(
        _read_plane(args.movie, 0)[:2],
        None,
        {"Min. Net Gradient": min_ng, "Box Size": args.box},
        camera_info=camera,
        fitting_method="gausslq",
        threaded=False,
    )
    warmup = time.perf_counter() - t0
    groups = [g.tolist() for g in np.array_split(np.arange(4), min(args.threads, 4))]
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(groups)) as pool:
        parts = pool.map(_picasso_planes, [(args.movie, g, min_ng, args.box, camera) for g in groups])
    fits = np.concatenate([rec for part in parts for rec in part])
    merged = merge_planes(fits, geom)
    seconds = time.perf_counter() - t0
    n_fits = merged.pop("n_fits")
    np.savez(args.result, **merged)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "warmup_s": warmup,
                "min_ng": min_ng,
                "fits": int(n_fits),
                "processes": len(groups),
            }
        )
    )


# --------------------------------------------------------------------------- voxloc side


def run_voxloc(movie: Path, model_path: str, args: argparse.Namespace, settings=None):
    """Localize with voxloc; returns (table, seconds from opening the file to the table).

    With ``settings`` every detection is also fitted (voxloc.fitting, localize.fit: mle) with
    the simulation's microscope and noise, cameras unregistered (the simulation has no
    affine; it has the per-frame plane drift Δk, which no fit knows)."""
    import pandas as pd

    from voxloc.localization.localize import iter_localizations
    from voxloc.localization.movies import open_movie
    from voxloc.localization.resampling import Resampler
    from voxloc.network.model import load_checkpoint, select_device
    from voxloc.runtime import set_compute_threads

    set_compute_threads(args.threads)
    model = load_checkpoint(model_path, select_device(args.device))
    model.predict(np.full((args.batch, 4, args.size, args.size), 10.0, np.float32), batch_frames=args.batch)

    def new_refiner():
        if settings is None:
            return None
        from voxloc.fitting.refine import Refiner
        from voxloc.physics.noise import PixelNoise

        edges = settings.grid.z_edges_nm
        return Refiner(
            settings.physics,
            PixelNoise.from_model(settings.physics.noise),
            [np.eye(3)] * 4,
            (float(edges[0]), float(edges[-1])),
        )

    if settings is not None:  # numba compiles the fit's kernels once per checkout: not timed
        with open_movie(movie, name=movie.stem, offset_adu=BASELINE_ADU, adu_per_photon=1.0) as mov:
            resampler = Resampler([np.eye(3)] * 4, mov.camera_shapes)
            list(iter_localizations(mov, model, resampler, stop=2, tau=args.tau, refiner=new_refiner()))
    t0 = time.perf_counter()
    with open_movie(movie, name=movie.stem, offset_adu=BASELINE_ADU, adu_per_photon=1.0) as mov:
        resampler = Resampler([np.eye(3)] * 4, mov.camera_shapes)
        parts = list(
            iter_localizations(
                mov, model, resampler, tau=args.tau, batch_frames=args.batch, refiner=new_refiner()
            )
        )
    table = pd.concat(parts, ignore_index=True)
    return table, time.perf_counter() - t0


def simulation_settings(model_path: str, psf_source: str, size: int):
    """Paper noise, the model's training PSF and planes (or Table 2), on a size x size grid."""
    import dataclasses

    from voxloc.network.model import read_checkpoint
    from voxloc.physics.microscope import Microscope
    from voxloc.physics.noise import NoiseModel
    from voxloc.physics.psf import TABLE2
    from voxloc.simulation.settings import SimulationSettings
    from voxloc.simulation.shards import settings_from_dict

    meta = read_checkpoint(model_path)["meta"]
    if psf_source == "model" and "simulation" in meta:
        settings = settings_from_dict(meta["simulation"])
    else:
        g = meta["grid"]
        settings = SimulationSettings(Microscope(TABLE2, tuple(g["plane_z_nm"]), g["px_size_nm"]))
    physics = dataclasses.replace(settings.physics, noise=NoiseModel(kind="paper"))
    return dataclasses.replace(settings, physics=physics, height=size, width=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100, help="frames per density (default 100)")
    ap.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.05], help="molecules / px / frame")
    ap.add_argument("--threads", type=int, default=2, help="torch threads; Picasso processes")
    ap.add_argument("--model", default="results/models/quick/model.pt")
    ap.add_argument("--psf", choices=("model", "table2"), default="model", help="PSF of the simulation")
    ap.add_argument("--out", help="also write the table as TSV")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="voxloc frames per batch")
    ap.add_argument("--tau", type=float, default=0.5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--box", type=int, default=7, help="Picasso box size (px)")
    ap.add_argument("--min-net-gradient", default="auto", help="Picasso threshold (ADU), or auto")
    ap.add_argument("--picasso-python", help="interpreter with picassosr (default .venv-bench/bin/python)")
    ap.add_argument("--workdir", help="where the movies go (default: a temp dir, removed)")
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--no-fit", action="store_true", help="voxloc without the per-molecule fit only")
    ap.add_argument("--picasso-driver", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--movie", help=argparse.SUPPRESS)
    ap.add_argument("--geometry", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.picasso_driver:
        picasso_driver(args)
        return
    main_benchmark(args)


def run_picasso(movie: Path, result: Path, geometry: dict, python: str, args: argparse.Namespace):
    """Run the Picasso driver in ``python``; returns (table, its figures)."""
    import pandas as pd

    cmd = [python, __file__, "--picasso-driver", "--movie", str(movie), "--result", str(result)]
    cmd += ["--threads", str(args.threads), "--box", str(args.box), "--geometry", json.dumps(geometry)]
    cmd += ["--min-net-gradient", str(args.min_net_gradient)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        sys.exit(f"voxloc: {python}: the Picasso run failed ({last}); see --picasso-python")
    with np.load(result) as npz:
        table = pd.DataFrame({k: npz[k] for k in npz.files})
    return table, json.loads(out.stdout.strip().splitlines()[-1])


def near_border(truth, grid, px: float = 4.0) -> float:
    """Fraction of true molecules within ``px`` pixels of the frame's edge."""
    x, y = truth["x_nm"].to_numpy() / grid.px_size_nm, truth["y_nm"].to_numpy() / grid.px_size_nm
    return float(np.mean((np.minimum(x, grid.width - x) < px) | (np.minimum(y, grid.height - y) < px)))


def run_density(
    i: int, density: float, settings, geometry: dict, workdir: Path, python: str, args
) -> list[dict]:
    """Simulate one movie, localize it with both tools, one table row per tool."""
    from voxloc.evaluation.matching import match_tables, summary

    movie = workdir / f"peer-{density:g}-{args.frames}x4x{args.size}x{args.size}.tif"
    truth, m = simulate_movie(movie, settings, args.frames, density, args.seed + i)
    tools = {"voxloc": run_voxloc(movie, args.model, args)}
    if not args.no_fit:
        tools["voxloc+fit"] = run_voxloc(movie, args.model, args, settings)
    table, fig = run_picasso(movie, workdir / f"picasso-{density:g}.npz", geometry, python, args)
    tools["picasso"] = (table, fig["seconds"])
    print(
        f"density {density:g} / px / frame = {m} molecules per {args.size}x{args.size} frame "
        f"({near_border(truth, settings.grid):.1%} within 4 px of the border); Picasso: min net gradient "
        f"{fig['min_ng']:.0f}, {fig['fits']} plane fits, {fig['processes']} processes, "
        f"threshold + numba warm-up {fig['warmup_s']:.1f} s (not counted)"
    )
    rows = []
    for tool, (table, seconds) in tools.items():
        s = summary(table, truth, match_tables(table, truth, lateral_nm=250.0, axial_nm=500.0))
        rows.append(
            {
                "density_per_px": density,
                "molecules_per_frame": m,
                "tool": tool,
                "frames": args.frames,
                "frames_per_s": args.frames / seconds,
                "localizations": s.n_est,
                "jaccard": s.jaccard,
                "recall": s.recall,
                "precision": s.precision,
                "rmse_lateral_nm": s.rmse_lateral_nm,
                "rmse_axial_nm": s.rmse_axial_nm,
            }
        )
    return rows


def main_benchmark(args: argparse.Namespace) -> None:
    import pandas as pd

    from voxloc.physics.psf import TABLE2

    if not Path(args.model).is_file():
        sys.exit(
            f"voxloc: {args.model}: no such model file (train one: snakemake results/models/quick/model.pt)"
        )
    bench_py = ROOT / ".venv-bench" / "bin" / "python"
    python = args.picasso_python or (str(bench_py) if bench_py.exists() else sys.executable)
    settings = simulation_settings(args.model, args.psf, args.size)
    g = settings.grid
    geometry = {
        "px_size_nm": g.px_size_nm,
        "plane_z_nm": list(g.plane_z_nm),
        "z_edges_nm": g.z_edges_nm.tolist(),
        "width_px": g.width,
        # Picasso's z comes from its widths on a Gaussian defocus curve: Table 2's when the
        # simulation's PSF is a spline (it has no such curve)
        "psf": (settings.physics.psf if settings.physics.model == "gaussian" else TABLE2).to_dict(),
    }
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="voxloc-peer-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load0 = os.getloadavg()
    rows = []
    try:
        for i, density in enumerate(args.densities):
            rows += run_density(i, density, settings, geometry, workdir, python, args)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    table = pd.DataFrame(rows)
    load1 = os.getloadavg()
    print(
        f"\n{args.size}x{args.size}x4, paper noise, {args.psf} PSF, {args.threads} threads/processes, "
        f"load average {load0[0]:.2f} -> {load1[0]:.2f} on {os.cpu_count()} CPUs ({cpu_label()}); model {args.model}\n"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if args.out:
        from voxloc.io import atomic_output

        with atomic_output(args.out) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
