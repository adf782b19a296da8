"""Demo bead z-stacks of the true microscope (:mod:`voxloc.simulation.demo`), and their truth.

The beads lie on the coverslip, at least a margin inside every camera's field; the stage
moves them through the focal planes slice by slice. Some are bright enough to saturate,
two of them form close pairs, the background has a linear slope and each camera has a few
hot pixels: what the bead calibration must cope with on real stacks. Beads are placed at
random a few pixels apart, so the halos of defocused beads overlap their neighbours' (the
spline calibration models them).

Files: one TIFF per camera, Z x H x W uint16 (axes ``ZYX``), and ``truth.yaml``: the true
microscope (PSF, planes, camera, registrations) and every bead, pair, slope and hot pixel.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from voxloc import provenance
from voxloc.io import write_tiff, write_yaml
from voxloc.physics.cameras import N_PLANES
from voxloc.simulation.demo import DemoMicroscope, demo_rng, render_cameras
from voxloc.simulation.simulate import emitter_table
from voxloc.types import FloatArray

__all__ = ["place_beads", "make_bead_stacks", "write_bead_stacks"]

log = logging.getLogger(__name__)

BEAD_MARGIN_PX = 8.0  # beads stay this far from every camera's border (defocused PSF ~6 px)
BEAD_MIN_SEP_PX = 6.0  # between beads that are not a close pair
HOT_PIXEL_ADU = (20000, 65535)


def _inside_all_cameras(microscope: DemoMicroscope, xy_nm: FloatArray, margin_px: float) -> bool:
    q_px = microscope.camera_xy_nm(xy_nm) / microscope.physics.px_size_nm
    size = np.array([microscope.width, microscope.height])
    return bool(np.all((q_px >= margin_px) & (q_px <= size - margin_px)))


def place_beads(
    microscope: DemoMicroscope,
    n_singles: int,
    n_close_pairs: int,
    rng: np.random.Generator,
    *,
    pair_sep_nm: tuple[float, float] = (250.0, 400.0),
    margin_px: float = BEAD_MARGIN_PX,
    min_sep_px: float = BEAD_MIN_SEP_PX,
) -> tuple[FloatArray, list[list[int]]]:
    """Camera-1 bead positions (n, 2) nm: singles first, then the close pairs' two beads.

    Every bead lies at least ``margin_px`` inside every camera's field; groups (a single or
    a pair) are at least ``min_sep_px`` apart; pair partners are U(pair_sep_nm) apart.
    """
    s = microscope.physics.px_size_nm
    lo, hi = margin_px * s, np.array([microscope.width, microscope.height]) * s - margin_px * s
    centres: list[FloatArray] = []
    groups: list[FloatArray] = []
    n_groups, max_tries = n_singles + n_close_pairs, 200 * (n_singles + n_close_pairs + 1)
    tries = 0
    while len(groups) < n_groups:
        tries += 1
        if tries > max_tries:
            raise ValueError(
                f"cannot place {n_singles} + 2 x {n_close_pairs} beads {min_sep_px} px apart in "
                f"{microscope.height} x {microscope.width} px; "
                "reduce demo.beads.n_beads or enlarge demo.frame_size"
            )
        c = rng.uniform(lo, hi)
        if len(groups) >= n_singles:  # a close pair around c
            sep, angle = rng.uniform(*pair_sep_nm), rng.uniform(0.0, math.pi)
            d = 0.5 * sep * np.array([math.cos(angle), math.sin(angle)])
            pts = np.stack([c - d, c + d])
        else:
            pts = c[None]
        far = all(np.hypot(*(c - o)) >= min_sep_px * s for o in centres)
        if far and _inside_all_cameras(microscope, pts, margin_px):
            centres.append(c)
            groups.append(pts)
    xy_nm = np.concatenate(groups) if groups else np.zeros((0, 2))
    pairs = [[n_singles + 2 * i, n_singles + 2 * i + 1] for i in range(n_close_pairs)]
    return xy_nm, pairs


def _saturating_photons(microscope: DemoMicroscope, photons_max: float) -> float:
    """Bead photons whose in-focus peak exceeds 65535 ADU by 50 % even at a pixel corner."""
    phys = microscope.physics
    s = phys.px_size_nm
    # one photon at a pixel corner, in focus of each plane in turn: the faintest peak
    peaks = [
        float(phys.render(np.full((1, phys.n_planes, 2), s), np.array([z]), np.ones(1), (2, 2), dtype=np.float64)[k].max())
        for k, z in enumerate(phys.plane_z_nm)
    ]  # fmt: skip
    peak_adu = min(peaks) * phys.adu_per_photon
    return max(2.0 * photons_max, 1.5 * (65535.0 - phys.noise.baseline_adu) / peak_adu)


def _slope_background(microscope: DemoMicroscope, slope: float, rng: np.random.Generator):
    """Per camera a linear ramp of ``slope`` photons per pixel in a random direction, min 0."""
    yy, xx = np.mgrid[0 : microscope.height, 0 : microscope.width] + 0.5
    angles = rng.uniform(0.0, 360.0, N_PLANES)
    ramps = []
    for a in np.radians(angles):
        ramp = slope * (xx * math.cos(a) + yy * math.sin(a))
        ramps.append(ramp - ramp.min())
    return np.stack(ramps).astype(np.float32), angles


def _hot_pixels(
    microscope: DemoMicroscope, bead_xy_nm: FloatArray, n: int, rng: np.random.Generator
) -> list[list[list[int]]]:
    """Per camera ``n`` [row, col, ADU] hot pixels, at least 4 px from every bead's image."""
    seen_px = microscope.camera_xy_nm(bead_xy_nm) / microscope.physics.px_size_nm  # (n_beads, 4, 2)
    out = []
    for k in range(N_PLANES):
        chosen: list[list[int]] = []
        for _ in range(1000 * (n + 1)):
            if len(chosen) == n:
                break
            i, j = int(rng.integers(microscope.height)), int(rng.integers(microscope.width))
            d = np.hypot(seen_px[:, k, 0] - (j + 0.5), seen_px[:, k, 1] - (i + 0.5))
            if np.all(d >= 4.0) and all((i, j) != (r, c) for r, c, _ in chosen):
                chosen.append([i, j, int(rng.integers(HOT_PIXEL_ADU[0], HOT_PIXEL_ADU[1] + 1))])
        if len(chosen) < n:
            raise ValueError(f"cannot place {n} hot pixels 4 px away from the beads of camera {k + 1}")
        out.append(chosen)
    return out


def make_bead_stacks(
    microscope: DemoMicroscope, bead_cfg: dict, rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Bead z-stacks (Z, 4, H, W) uint16 and their truth (config ``demo.beads``).

    All beads lie on the coverslip; at slice n the stage has moved them to depth
    z = z_start_nm + n z_step_nm. A bead of N photons images as N t_k times plane k's PSF;
    saturated beads are simply bright enough to clip at 65535, close pairs are 250-400 nm
    apart, the background has a linear slope and each camera has a few hot pixels.
    """
    n_beads, n_pairs = int(bead_cfg["n_beads"]), int(bead_cfg["n_close_pairs"])
    n_singles = n_beads - 2 * n_pairs
    if n_singles < int(bead_cfg["n_saturated"]):
        raise ValueError(f"demo.beads: {n_beads} beads leave too few singles for the saturated ones")
    xy_nm, pairs = place_beads(microscope, n_singles, n_pairs, rng)
    p_lo, p_hi = (float(v) for v in bead_cfg["photons"])
    photons = rng.uniform(p_lo, p_hi, n_beads)
    saturated = sorted(int(i) for i in rng.choice(n_singles, int(bead_cfg["n_saturated"]), replace=False))
    photons[saturated] = _saturating_photons(microscope, p_hi)
    # rounded, so the truth file holds what was rendered (to float32 precision) readably
    xy_nm, photons = np.round(xy_nm, 3), np.round(photons, 1)

    n_slices = int(bead_cfg["n_slices"])
    z_start, z_step = float(bead_cfg["z_start_nm"]), float(bead_cfg["z_step_nm"])
    z_slice = z_start + z_step * np.arange(n_slices)
    table = emitter_table(
        np.repeat(np.arange(n_slices), n_beads),
        np.tile(xy_nm[:, 0], n_slices),
        np.tile(xy_nm[:, 1], n_slices),
        np.repeat(z_slice, n_beads),
        np.tile(photons, n_slices),
    )
    slope = float(bead_cfg["background_slope"])
    ramps, slope_deg = _slope_background(microscope, slope, rng)
    log.info("rendering %d bead slices x %d cameras, %d beads", n_slices, N_PLANES, n_beads)
    stack = render_cameras(microscope, table, n_slices, rng, extra_background=ramps)
    hot = _hot_pixels(microscope, xy_nm, int(bead_cfg["n_hot_pixels"]), rng)
    for k, pixels in enumerate(hot):
        for i, j, value in pixels:
            stack[:, k, i, j] = value
    truth = {
        **provenance(),
        "px_size_nm": microscope.physics.px_size_nm,
        "frame_size": [microscope.height, microscope.width],
        "registration_convention": "T_k maps camera-k pixel coords (x=col+0.5, y=row+0.5) to camera 1",
        "registrations": {f"camera{k + 1}": t for k, t in enumerate(microscope.registrations)},
        "psf": microscope.physics.psf_dict(),
        "transmission": list(microscope.physics.transmission),
        "integrate_pixels": microscope.physics.integrate_pixels,
        "plane_z_nm": list(microscope.physics.plane_z_nm),
        "camera": microscope.physics.noise.to_dict(),
        "baseline_adu": microscope.physics.noise.baseline_adu,
        "adu_per_photon": microscope.physics.adu_per_photon,
        "z_start_nm": z_start,
        "z_step_nm": z_step,
        "n_slices": n_slices,
        "beads": {
            "x_nm": xy_nm[:, 0],
            "y_nm": xy_nm[:, 1],
            "photons": photons,
            "saturated": saturated,
            "close_pairs": pairs,
        },
        "background_slope_photons_per_px": slope,
        "background_slope_direction_deg": {f"camera{k + 1}": a for k, a in enumerate(slope_deg)},
        "hot_pixels_row_col_adu": {f"camera{k + 1}": px for k, px in enumerate(hot)},
    }
    return stack, truth


def write_bead_stacks(
    paths: list[str], truth_path: str, microscope: DemoMicroscope, bead_cfg: dict, seed: int
) -> None:
    """Write one Z x H x W uint16 TIFF per camera (axes ``ZYX``) and ``truth.yaml``."""
    if len(paths) != N_PLANES:
        raise ValueError(f"need {N_PLANES} bead stack paths, got {len(paths)}")
    stack, truth = make_bead_stacks(microscope, bead_cfg, demo_rng(seed, "demo-beads"))
    truth["seed"] = int(seed)
    for k, path in enumerate(paths):
        write_tiff(path, np.ascontiguousarray(stack[:, k]), axes="ZYX")
    write_yaml(truth_path, truth)
    log.info("wrote %s and %s", ", ".join(map(str, paths)), truth_path)
