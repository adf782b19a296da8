"""The fit of one network batch's detections: the localization table's fit columns.

:class:`Refiner` holds what stays fixed over a movie (the microscope of the calibration,
the camera's noise, the registrations, the options); calling it on a batch's table (the
network's :data:`voxloc.locs.NETWORK_FIELDS`) and the batch's camera frames (photons,
each camera's own pixels) returns the table with :data:`voxloc.locs.FIT_FIELDS`, the fitted
position in ``x_nm``, ``y_nm``, ``z_nm`` and the network's in ``x_net_nm``... (module docs
of :mod:`voxloc.fitting.mle` and :mod:`voxloc.fitting.windows`).

Neighbours: detections of one frame closer than ``neighbour_nm`` laterally are flagged
``crowded``; with ``crowded_mode`` ``network`` or ``subtract`` they keep the network's
position (photons, background and σ fitted there), with ``alone`` they are fitted alone like
the others; ``subtract`` also models the light of each window's farther neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.fitting.mle import FitOptions, FitResult, fit_windows, z_bounds_nm
from voxloc.fitting.windows import CameraMaps, Windows, cut_windows
from voxloc.locs import FIT_FLAGS, flag_counts
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, PixelNoise
from voxloc.types import FloatArray

__all__ = ["CROWDED_MODES", "Refiner", "crowded", "neighbour_pairs", "fit_physics"]

#: what detections with neighbours get (config ``localize.fit_crowded``): fitted ``alone``,
#: refitted with the neighbours' fitted light ``subtract``-ed (module doc), or the
#: ``network``'s position kept
CROWDED_MODES = ("alone", "subtract", "network")

#: refits of ``subtract``: each one with the neighbours' light of the previous estimates
SUBTRACT_ROUNDS = 2
#: px beyond a window's edge from which another molecule's light is modelled in it
NEIGHBOUR_REACH_PX = 6
#: neighbours whose light a window models, the nearest first
MAX_NEIGHBOURS = 8
#: neighbour windows evaluated at a time
PAIR_CHUNK = 4096


def neighbour_pairs(
    frame: np.ndarray, x_nm: FloatArray, y_nm: FloatArray, distance_nm: float
) -> tuple[np.ndarray, np.ndarray, FloatArray]:
    """Ordered pairs (i, j), i != j, of detections of one frame within ``distance_nm``
    (lateral), both ways, with their distances."""
    n = len(frame)
    if n < 2 or distance_nm <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    # sorted by frame, then x: a neighbour is within the next rows whose x is < d further
    frame = np.asarray(frame, np.int64)
    x = np.asarray(x_nm, np.float64)
    y = np.asarray(y_nm, np.float64)
    order = np.lexsort((x, frame))
    f, xs, ys = frame[order], x[order], y[order]
    first, second, dist = [], [], []
    for lag in range(1, n):
        same = (f[lag:] == f[:-lag]) & (xs[lag:] - xs[:-lag] <= distance_nm)
        if not same.any():
            break
        d = np.hypot(xs[lag:] - xs[:-lag], ys[lag:] - ys[:-lag])
        close = np.flatnonzero(same & (d <= distance_nm))
        first.append(order[close])
        second.append(order[close + lag])
        dist.append(d[close])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    i, j, d = np.concatenate(first), np.concatenate(second), np.concatenate(dist)
    return np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([d, d])


def crowded(frame: np.ndarray, x_nm: FloatArray, y_nm: FloatArray, distance_nm: float) -> np.ndarray:
    """Whether each detection has another one of its frame within ``distance_nm`` (lateral)."""
    out = np.zeros(len(frame), dtype=bool)
    i, _, _ = neighbour_pairs(frame, x_nm, y_nm, distance_nm)
    out[i] = True
    return out


@dataclass
class Refiner:
    """Fits each detection of a batch (module doc); ``counts`` sums the flags over the movie."""

    microscope: Microscope
    noise: PixelNoise
    registrations: Sequence[FloatArray]
    z_range_nm: tuple[float, float]
    options: FitOptions = field(default_factory=FitOptions)
    neighbour_nm: float = 400.0
    crowded_mode: str = "subtract"
    saturation: float | None = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(FIT_FLAGS, 0))
    n_fitted: int = 0

    def __post_init__(self) -> None:
        if self.crowded_mode not in CROWDED_MODES:
            raise ValueError(f"fit_crowded must be one of {CROWDED_MODES}, got {self.crowded_mode!r}")
        self.maps = CameraMaps.from_registrations(self.registrations)
        self.z_bounds = z_bounds_nm(self.microscope, self.z_range_nm)

    def __call__(
        self,
        table: pd.DataFrame,
        cams: Sequence[FloatArray],
        first_frame: int,
        shift_px: FloatArray | None = None,
    ) -> pd.DataFrame:
        """``table``: the network's detections of frames first_frame.. of ``cams`` [(B, H_k, W_k)];
        ``shift_px`` (N, P, 2): see :func:`voxloc.fitting.mle.fit_windows`."""
        out = table.copy()
        x, y, z = (table[c].to_numpy(np.float64) for c in ("x_nm", "y_nm", "z_nm"))
        frame = table["frame"].to_numpy() - first_frame
        near = crowded(frame, x, y, self.neighbour_nm)
        s = self.microscope.px_size_nm
        pos = self.maps.positions_px(x, y, s)
        if shift_px is not None:
            pos = pos + shift_px
        win = cut_windows(cams, frame, pos, self.options.window_px, saturation=self.saturation)
        skip = near if self.crowded_mode in ("network", "subtract") else None
        res = fit_windows(
            self.microscope, self.noise, self.maps, win, x, y, z, z_bounds=self.z_bounds,
            options=self.options, skip=skip, shift_px=shift_px,
        )  # fmt: skip
        if self.crowded_mode == "subtract":
            res = self._subtract_neighbours(res, win, frame, x, y, near, shift_px)
        flags = res.flags | np.where(near, FIT_FLAGS["crowded"], 0).astype(np.int16)
        for axis in "xyz":
            out[f"{axis}_net_nm"] = table[f"{axis}_nm"].astype(np.float32)
        out["x_nm"] = res.theta[:, 0].astype(np.float32)
        out["y_nm"] = res.theta[:, 1].astype(np.float32)
        out["z_nm"] = res.theta[:, 2].astype(np.float32)
        out["photons"] = res.theta[:, 3].astype(np.float32)
        out["bg"] = res.theta[:, 4:].mean(axis=1).astype(np.float32)
        for a, axis in enumerate("xyz"):
            out[f"sigma_{axis}_nm"] = res.sigma_nm[:, a].astype(np.float32)
        out["chi2_dof"] = res.chi2_dof.astype(np.float32)
        out["n_iter"] = res.n_iter.astype(np.int16)
        out["converged"] = res.converged
        out["fit_flags"] = flags.astype(np.int16)
        for name, n in flag_counts(flags).items():
            self.counts[name] += n
        self.n_fitted += len(out)
        return out

    def _subtract_neighbours(self, res: FitResult, win: Windows, frame: np.ndarray, x_net: FloatArray,
                             y_net: FloatArray, skip: np.ndarray,
                             shift_px: FloatArray | None) -> FitResult:  # fmt: skip
        """Refit the detections whose windows other molecules' light reaches, with that light
        (from the current estimates) added to their μ; :data:`SUBTRACT_ROUNDS` times. The
        neighbours' fitted photons and positions stand for their light: a block-coordinate
        ascent of the joint likelihood of a frame's molecules."""
        n = self.options.window_px
        s = self.microscope.px_size_nm
        reach_nm = (n // 2 + NEIGHBOUR_REACH_PX) * s
        i, j, d = neighbour_pairs(frame, x_net, y_net, reach_nm)
        # a close pair's light is one spot to both fits (crowded: network positions); only
        # farther molecules' light is modelled, which the coordinate-wise fits converge on
        far = d > self.neighbour_nm
        i, j, d = i[far], j[far], d[far]
        # the MAX_NEIGHBOURS nearest of each: bounded work where detections are dense
        order = np.lexsort((d, i))
        i, j = i[order], j[order]
        rank = np.arange(len(i)) - np.searchsorted(i, i)
        i, j = i[rank < MAX_NEIGHBOURS], j[rank < MAX_NEIGHBOURS]
        if not len(i):
            return res
        refit = np.unique(i)
        n_iter = res.n_iter.copy()
        for _ in range(SUBTRACT_ROUNDS):
            th = res.theta
            pos = self.maps.positions_px(th[j, 0], th[j, 1], s)
            if shift_px is not None:
                pos = pos + shift_px[j]
            extra = np.zeros(win.data.shape)
            for lo in range(0, len(i), PAIR_CHUNK):  # memory: PAIR_CHUNK windows at a time
                sl = slice(lo, lo + PAIR_CHUNK)
                ii, jj = i[sl], j[sl]
                light, _ = self.microscope.patches(pos[sl, :, 0], pos[sl, :, 1], th[jj, 2], win.origin[ii], n)
                np.add.at(extra, ii, light * th[jj, 3, None, None, None])
            sub = Windows(
                win.data[refit], win.origin[refit], win.mask[refit], win.edge[refit], win.bad[refit]
            )
            again = fit_windows(
                self.microscope, self.noise, self.maps, sub, th[refit, 0], th[refit, 1], th[refit, 2],
                z_bounds=self.z_bounds, options=self.options, extra=extra[refit], skip=skip[refit],
                shift_px=None if shift_px is None else shift_px[refit],
            )  # fmt: skip
            theta = th.copy()
            theta[refit] = again.theta
            sigma, chi2, conv, flags = (
                a.copy() for a in (res.sigma_nm, res.chi2_dof, res.converged, res.flags)
            )
            sigma[refit], chi2[refit], conv[refit], flags[refit] = (
                again.sigma_nm,
                again.chi2_dof,
                again.converged,
                again.flags,
            )
            n_iter[refit] += again.n_iter
            res = FitResult(theta, sigma, chi2, n_iter, conv, flags)
        return res

    def summary(self) -> str:
        """One log line: detections fitted and the count of each flag."""
        parts = ", ".join(f"{name} {n}" for name, n in self.counts.items() if name != "not_fitted")
        return f"{self.n_fitted} detections fitted ({self.noise.likelihood}): {parts}"


def fit_physics(
    physics: Mapping, camera: Mapping, *, psf_yaml: str | Path | None, spline_h5: str | Path | None
) -> tuple[Microscope, PixelNoise]:
    """The fit's microscope and pixel noise for the workflow: the simulation's microscope
    (``physics``: config psf.source, psf.model, table2, planes, pixel, simulation noise; the
    calibration's psf.yaml and psf_spline.h5 with psf.source: calibration) and the camera's
    noise of config ``localize.camera`` (``noise``: simulation, emccd or scmos)."""
    from voxloc.calibration.calibrated import calibrated_microscope

    from_calibration = physics["source"] == "calibration"
    microscope = calibrated_microscope(
        table2=physics["table2"],
        plane_z_nm=physics["plane_z_nm"],
        px_size_nm=physics["px_size_nm"],
        noise=NoiseModel(kind=physics["noise"], **physics["noise_params"]),
        integrate_pixels=physics["integrate_pixels"],
        psf_yaml=psf_yaml if from_calibration else None,
        spline_h5=spline_h5 if from_calibration and physics["model"] == "spline" else None,
    )
    if camera.get("noise", "simulation") == "simulation":
        return microscope, PixelNoise.from_model(microscope.noise)
    return microscope, PixelNoise.from_camera(camera["noise"], camera.get("read_noise_photons", 0.0))
