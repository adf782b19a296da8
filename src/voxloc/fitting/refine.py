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
the others; ``subtract`` also models the light of each window's farther neighbours: at the
network's positions, with their photons fitted there (one linear solve each), added to μ
before the fit; then the windows whose neighbours' light changed enough once they are
fitted are refitted with it (:meth:`Refiner._refit`). ``joint`` (the default) does what
``subtract`` does and fits each close pair as one and as two emitters
(:mod:`voxloc.fitting.groups`): two molecules keep both rows with the joint fit, one
molecule found twice keeps its more probable row; groups of three to six are fitted by
backward elimination (:mod:`voxloc.fitting.clusters`). On the density sweep's frames (Table
2 PSF, 64 x 64 px, 100 frames) pairs took the RMSE / CRLB of x/y/z from 2.05/1.90/1.79 to
1.35/1.29/1.55 at 10 molecules a frame and from 3.19/3.18/3.07 to 2.19/2.23/2.40 at 50,
and the localization Jaccard from 0.906 to 0.939 and from 0.882 to 0.921 (the duplicates
were false positives; bounds with N and b known, :mod:`voxloc.physics.crlb`). With
``second`` (the default, ``joint`` only) every single-emitter fit is then searched for a
molecule the network missed beside it (:mod:`voxloc.fitting.second`): two emitters add a
row flagged ``found`` (no network position). With both, at 50 a frame: Jaccard 0.945 and
RMSE / CRLB 1.95/1.98/1.82 (N and b unknown); on the demo movies the Jaccard went from
0.813 / 0.848 to 0.844 / 0.871.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.fitting.clusters import close_groups, fit_groups
from voxloc.fitting.groups import close_pairs, fit_pairs, member_others
from voxloc.fitting.mle import FitOptions, FitResult, fit_windows, others_light, z_bounds_nm
from voxloc.fitting.neighbours import crowded, neighbour_pairs
from voxloc.fitting.second import SCORE_GATE, fit_second, residual_peaks
from voxloc.fitting.windows import CameraMaps, Windows, cut_windows
from voxloc.locs import FIT_FLAGS, flag_counts
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, PixelNoise
from voxloc.types import FloatArray

__all__ = ["CROWDED_MODES", "Refiner", "crowded", "neighbour_pairs", "fit_physics"]

#: a window is refitted with its neighbours' fitted light when that light changed by this
#: much (Σ Δ² / Var) from the light of its first fit: fitted values then move < 0.1 σ
REFIT_TOL = 0.01

#: what detections with neighbours get (config ``localize.fit_crowded``): fitted ``alone``,
#: fitted with the farther neighbours' light ``subtract``-ed (module doc), the
#: ``network``'s position kept, or close pairs fitted ``joint``-ly as one or two emitters
CROWDED_MODES = ("alone", "subtract", "network", "joint")

#: px beyond a window's edge from which another molecule's light is modelled in it
NEIGHBOUR_REACH_PX = 6
#: neighbours whose light a window models, the nearest first
MAX_NEIGHBOURS = 8


@dataclass
class Refiner:
    """Fits each detection of a batch (module doc); ``counts`` sums the flags over the movie."""

    microscope: Microscope
    noise: PixelNoise
    registrations: Sequence[FloatArray]
    z_range_nm: tuple[float, float]
    options: FitOptions = field(default_factory=FitOptions)
    neighbour_nm: float = 400.0
    crowded_mode: str = "joint"
    saturation: float | None = None
    counts: dict = field(default_factory=lambda: dict.fromkeys(FIT_FLAGS, 0))
    n_fitted: int = 0
    duplicates: int = 0
    #: search each isolated window for a molecule the network missed (:mod:`voxloc.fitting.second`)
    second: bool = True
    found: int = 0

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
        skip = near if self.crowded_mode in ("network", "subtract", "joint") else None
        others = self._others(frame, x, y) if self.crowded_mode in ("subtract", "joint") else None
        extra = None
        if others is not None:
            # the neighbours' light from the network's positions and their photons there
            # (fitted at them, a single linear solve), so the first fit is not pulled by it
            at_net = fit_windows(
                self.microscope, self.noise, self.maps, win, x, y, z, z_bounds=self.z_bounds,
                options=self.options, skip=np.ones(len(x), bool), shift_px=shift_px,
            )  # fmt: skip
            extra = np.zeros(win.data.shape)
            extra[others[0]], _ = others_light(
                self.microscope, self.noise, self.maps, at_net.theta, others, win, shift_px=shift_px
            )
        res = fit_windows(
            self.microscope, self.noise, self.maps, win, x, y, z, z_bounds=self.z_bounds,
            options=self.options, skip=skip, extra=extra, shift_px=shift_px,
        )  # fmt: skip
        paired = duplicate = np.zeros(len(x), bool)
        joint = paired
        if self.crowded_mode == "joint":
            res, paired, duplicate, joint = self._pairs(res, table, cams, frame, others, shift_px)
        if others is not None:
            res = self._refit(res, win, others, extra[others[0]], near | paired, shift_px, paired, duplicate)
        found = None
        if self.crowded_mode == "joint" and self.second:
            alone = (~near | (paired & ~joint)) & ~duplicate
            res, found = self._second(res, win, others, alone, duplicate, shift_px)
        flags = res.flags | np.where(near, FIT_FLAGS["crowded"], 0).astype(np.int16)
        flags |= np.where(joint, FIT_FLAGS["joint"], 0).astype(np.int16)
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
        if found is not None:
            out, duplicate = self._with_found(out, duplicate, *found)
            flags = out["fit_flags"].to_numpy()
        out = out[~duplicate].reset_index(drop=True)
        for name, n in flag_counts(flags[~duplicate]).items():
            self.counts[name] += n
        self.n_fitted += len(out)
        self.duplicates += int(duplicate.sum())
        return out

    def _others(self, frame: np.ndarray, x_net: FloatArray, y_net: FloatArray):
        """The molecules whose light reaches each window: (rows, ptr, others), row r's
        neighbours others[ptr[r]:ptr[r + 1]], the :data:`MAX_NEIGHBOURS` nearest; None if none.
        A close pair's light is one spot to both fits (``crowded``: network positions); only
        farther molecules' light is modelled, which the coordinate-wise fits converge on."""
        s = self.microscope.px_size_nm
        reach_nm = (self.options.window_px // 2 + NEIGHBOUR_REACH_PX) * s
        i, j, d = neighbour_pairs(frame, x_net, y_net, reach_nm)
        far = d > self.neighbour_nm
        i, j, d = i[far], j[far], d[far]
        order = np.lexsort((d, i))
        i, j = i[order], j[order]
        rank = np.arange(len(i)) - np.searchsorted(i, i)
        i, j = i[rank < MAX_NEIGHBOURS], j[rank < MAX_NEIGHBOURS]
        if not len(i):
            return None
        rows, ptr = np.unique(i, return_index=True)
        return rows, np.append(ptr, len(i)), j

    def _refit(self, res: FitResult, win: Windows, others: tuple, given: FloatArray, skip: np.ndarray,
               shift_px: FloatArray | None, frozen: np.ndarray, dark: np.ndarray) -> FitResult:  # fmt: skip
        """Refit, once, the detections whose neighbours' light, now from their fitted positions
        and photons, changed by Σ Δ² / Var(b) >= :data:`REFIT_TOL` from the light ``given``
        to their first fit (Var at the fitted background, a lower bound of Var(μ)): one more
        step of block-coordinate ascent of the frame's joint likelihood. Below the tolerance
        a refit would move no fitted value by more than sqrt(REFIT_TOL) of its σ
        (Cauchy-Schwarz in the Fisher metric), so it is not done. ``frozen`` detections (the
        pairs' fits) are not refitted; ``dark`` ones (duplicates) give no light."""
        rows = others[0]
        th = res.theta
        lit = th.copy()
        lit[dark, 3] = 0.0
        light, change = others_light(
            self.microscope, self.noise, self.maps, lit, others, win, given, shift_px
        )
        again = np.flatnonzero((change >= REFIT_TOL) & ~frozen[rows])
        if not len(again):
            return res
        refit = rows[again]
        new = fit_windows(
            self.microscope, self.noise, self.maps, win, th[refit, 0], th[refit, 1], th[refit, 2],
            z_bounds=self.z_bounds, options=self.options, extra=light[again], skip=skip[refit],
            shift_px=None if shift_px is None else shift_px[refit], rows=refit,
        )  # fmt: skip
        out = res.copy()
        out.theta[refit], out.sigma_nm[refit], out.chi2_dof[refit] = new.theta, new.sigma_nm, new.chi2_dof
        out.converged[refit], out.flags[refit], out.nll[refit] = new.converged, new.flags, new.nll
        out.n_iter[refit] += new.n_iter
        return out

    def _pairs(self, res: FitResult, table: pd.DataFrame, cams: Sequence[FloatArray], frame: np.ndarray,
               others: tuple | None, shift_px: FloatArray | None):  # fmt: skip
        """``joint``: the close pairs fitted as one or two emitters (:mod:`voxloc.fitting.groups`);
        returns the result with their rows and the masks of paired, duplicate and two-emitter
        detections."""
        n = len(table)
        xyz = table[["x_nm", "y_nm", "z_nm"]].to_numpy(np.float64)
        prob = table["prob"].to_numpy(np.float64)
        i, j, _ = neighbour_pairs(frame, xyz[:, 0], xyz[:, 1], self.neighbour_nm)
        pairs = close_pairs(i, j, n)
        paired, duplicate, joint = (np.zeros(n, bool) for _ in range(3))
        out = res.copy()
        common = {"z_bounds": self.z_bounds, "options": self.options, "neighbour_nm": self.neighbour_nm,
                  "saturation": self.saturation, "shift_px": shift_px}  # fmt: skip
        if len(pairs):
            pf = fit_pairs(self.microscope, self.noise, self.maps, cams, frame, xyz, prob, pairs, res.theta,
                           others, **common)  # fmt: skip
            for e in range(2):
                self._take(out, pairs[:, e], pf.theta[:, e], pf.sigma_nm[:, e], pf.chi2_dof[:, e],
                           pf.n_iter[:, e], pf.converged[:, e], pf.flags[:, e])  # fmt: skip
            paired[pairs.ravel()] = True
            single = np.flatnonzero(~pf.two)
            duplicate[pairs[single, 1 - pf.keep[single]]] = True
            joint[pairs[pf.two].ravel()] = True
        groups = close_groups(i, j, prob)
        if len(groups):
            gf = fit_groups(self.microscope, self.noise, self.maps, cams, frame, xyz, groups, out.theta, others,
                            **common)  # fmt: skip
            fitted = np.isfinite(gf.theta[..., :4]).all(axis=-1) & gf.kept
            done = np.isfinite(gf.theta[:, 0, :4]).all(axis=-1)  # the group's first fit
            for e in range(groups.shape[1]):
                take = fitted[:, e] & done
                rows = groups[take, e]
                self._take(out, rows, gf.theta[take, e], gf.sigma_nm[take, e], gf.chi2_dof[take, e],
                           gf.n_iter[take, e], gf.converged[take, e], gf.flags[take, e])  # fmt: skip
                paired[rows] = True
                joint[rows] = (gf.flags[take, e] & FIT_FLAGS["joint"]) > 0
                dark = done & (groups[:, e] >= 0) & ~gf.kept[:, e]
                duplicate[groups[dark, e]] = True
                paired[groups[dark, e]] = True
        return out, paired, duplicate, joint

    @staticmethod
    def _take(out: FitResult, rows: np.ndarray, theta: FloatArray, sigma: FloatArray, chi2: FloatArray,
              n_iter: np.ndarray, converged: np.ndarray, flags: np.ndarray) -> None:  # fmt: skip
        """Rows ``rows`` of ``out`` take a pair's or a group's fit."""
        out.theta[rows], out.sigma_nm[rows], out.chi2_dof[rows] = theta, sigma, chi2
        out.n_iter[rows], out.converged[rows], out.flags[rows] = n_iter, converged, flags

    def _second(self, res: FitResult, win: Windows, others: tuple | None, alone: np.ndarray,
                dark: np.ndarray, shift_px: FloatArray | None):  # fmt: skip
        """The single-emitter fits whose residual holds a second molecule (module doc of
        :mod:`voxloc.fitting.second`): the result with their two-emitter fits, and the found
        molecules (parent rows, θ (F, 4 + P), σ (F, 3), χ²/dof, iterations, convergence,
        flags), or None."""
        # a diverged fit is searched too: a second molecule may have pulled it away
        ok = alone & np.isfinite(res.theta[:, :4]).all(axis=1)
        rows = np.flatnonzero(ok)
        light = self._fitted_light(res.theta, win, others, rows, dark, shift_px)
        at, score = residual_peaks(
            self.microscope, self.noise, self.maps, win, res.theta, rows, light, shift_px
        )
        gated = score > SCORE_GATE
        rows, at, light = rows[gated], at[gated], light[gated]
        if not len(rows):
            return res, None
        two, both, flags = fit_second(
            self.microscope, self.noise, self.maps, win, res.theta, rows, at, z_bounds=self.z_bounds,
            options=self.options, extra=light, shift_px=shift_px,
        )  # fmt: skip
        if not two.any():
            return res, None
        parent = rows[two]
        th = both.theta[two]
        out = res.copy()
        out.theta[parent] = np.concatenate([th[:, :4], th[:, 8:]], axis=1)
        out.sigma_nm[parent], out.chi2_dof[parent] = both.sigma_nm[two, 0], both.chi2_dof[two]
        out.n_iter[parent] += both.n_iter[two].astype(np.int16)
        out.converged[parent] = True
        out.flags[parent] = flags[two] | FIT_FLAGS["joint"]
        found = (parent, np.concatenate([th[:, 4:8], th[:, 8:]], axis=1), both.sigma_nm[two, 1],
                 both.chi2_dof[two], both.n_iter[two], np.ones(len(parent), bool),
                 flags[two] | FIT_FLAGS["joint"] | FIT_FLAGS["found"])  # fmt: skip
        return out, found

    def _fitted_light(self, theta: FloatArray, win: Windows, others: tuple | None, rows: np.ndarray,
                      dark: np.ndarray, shift_px: FloatArray | None) -> FloatArray:  # fmt: skip
        """The light (R, P, n, n) of the farther neighbours on the windows of detections
        ``rows``, at their fitted θ (``dark`` ones, the duplicates, give none)."""
        n, p = win.data.shape[-1], self.maps.n_planes
        if others is None or not len(rows):
            return np.zeros((len(rows), p, n, n))
        _, ptr, nbr = member_others(rows[:, None], others)  # each row a group of one
        lit = theta.copy()
        lit[dark, 3] = 0.0
        out, _ = others_light(
            self.microscope, self.noise, self.maps, lit, (rows, ptr, nbr), win, shift_px=shift_px
        )
        return out

    def _with_found(self, out: pd.DataFrame, duplicate: np.ndarray, parent: np.ndarray, theta: FloatArray,
                    sigma: FloatArray, chi2: FloatArray, n_iter: np.ndarray, converged: np.ndarray,
                    flags: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:  # fmt: skip
        """The table with a row after each parent for the molecule found beside it: the
        parent's frame, voxel and ``prob``, no network position (NaN ``*_net_nm``)."""
        new = out.iloc[parent].copy()
        for a, axis in enumerate("xyz"):
            new[f"{axis}_nm"] = theta[:, a].astype(np.float32)
            new[f"{axis}_net_nm"] = np.float32(np.nan)
            new[f"sigma_{axis}_nm"] = sigma[:, a].astype(np.float32)
        new["photons"] = theta[:, 3].astype(np.float32)
        new["bg"] = theta[:, 4:].mean(axis=1).astype(np.float32)
        new["chi2_dof"] = chi2.astype(np.float32)
        new["n_iter"] = n_iter.astype(np.int16)
        new["converged"] = converged
        new["fit_flags"] = flags.astype(np.int16)
        order = np.argsort(np.concatenate([np.arange(len(out)), parent + 0.5]), kind="stable")
        merged = pd.concat([out, new], ignore_index=True).iloc[order].reset_index(drop=True)
        self.found += len(parent)
        return merged, np.concatenate([duplicate, np.zeros(len(parent), bool)])[order]

    def summary(self) -> str:
        """One log line: detections fitted and the count of each flag."""
        parts = ", ".join(f"{name} {n}" for name, n in self.counts.items() if name != "not_fitted")
        line = f"{self.n_fitted} detections fitted ({self.noise.likelihood}): {parts}"
        if self.crowded_mode == "joint":
            line += f"; {self.duplicates} duplicates removed"
            line += f"; {self.found} molecules found beside another" if self.second else ""
        return line


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
