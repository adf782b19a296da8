"""QC figures of the bead calibration: bead positions before and after registration, and
the widths per plane against the fitted defocus curve (the paper's Fig. 2)."""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from voxloc.physics.cameras import N_PLANES, apply_affine
from voxloc.physics.psf import TABLE2, PSFParams, defocus_width_nm

if TYPE_CHECKING:
    from voxloc.calibration.beads import BeadStack
    from voxloc.calibration.psf_fit import PSFCalibration
    from voxloc.calibration.registration import CameraRegistration

log = logging.getLogger(__name__)


def figure_png(fig) -> bytes:
    """A matplotlib figure as PNG bytes (rendered before any output is written)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


# ---------------------------------------------------------------------------- QC figures

PLANE_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _arrow_magnification(max_px: float, width_px: int) -> float:
    """A round factor (1, 2, 5 x 10^k) drawing the largest residual about 6 % of the frame long."""
    if not max_px > 0:
        return 1.0
    raw = 0.06 * width_px / max_px
    exp = math.floor(math.log10(raw))
    return max(m * 10.0**exp for m in (1, 2, 5) if m * 10.0**exp <= raw)


def affine_figure(stack: BeadStack, regs: Sequence[CameraRegistration], px_size_nm: float) -> bytes:
    """QC of the registration: bead positions of cameras 2-4 before (raw) and after T_k,
    over camera 1's, with the residuals magnified."""
    plt = _pyplot()
    height, width = stack.shape
    fig, axes = plt.subplots(2, N_PLANES - 1, figsize=(4.2 * (N_PLANES - 1), 8.6), squeeze=False)
    ref_all = stack.cameras[0].mean_xy_px()
    for col, (k, reg) in enumerate(zip(range(2, N_PLANES + 1), regs, strict=True)):
        raw_all = stack.cameras[k - 1].mean_xy_px()
        ax = axes[0, col]
        ax.plot(*ref_all.T, "o", mfc="none", mec="k", ms=7, label="camera 1")
        ax.plot(*raw_all.T, "x", color="tab:red", ms=6, label=f"camera {k} (raw)")
        for a, b in zip(reg.ref_xy, reg.mov_xy, strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], "-", color="0.6", lw=0.6)
        ax.set_title(f"camera {k} before: flip {reg.flip}, {reg.n_detected} detected")
        mapped = apply_affine(reg.matrix, reg.mov_xy)
        res_nm = (mapped - reg.ref_xy) * px_size_nm
        ax = axes[1, col]
        ax.plot(*reg.ref_xy.T, "o", mfc="none", mec="k", ms=7, label="camera 1")
        ax.plot(*mapped.T, "+", color="tab:blue", ms=7, label=f"T{k} (camera {k})")
        mag = _arrow_magnification(np.abs(res_nm).max() / px_size_nm, width)  # residuals drawn x mag
        ax.quiver(
            *reg.ref_xy.T, res_nm[:, 0] / px_size_nm * mag, res_nm[:, 1] / px_size_nm * mag,
            angles="xy", scale_units="xy", scale=1, color="tab:red", width=0.004,
        )  # fmt: skip
        ax.set_title(
            f"after: {reg.n_inliers}/{reg.n_matched} inliers, rms {reg.residual_rms_nm:.1f} nm, "
            f"max {reg.max_residual_nm:.1f} nm\n(red arrows: residuals x {mag:g})",
            fontsize=10,
        )
        for ax in axes[:, col]:
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_aspect("equal")
            ax.set_xlabel("x (px)")
            ax.set_ylabel("y (px)")
            ax.legend(loc="lower right", fontsize=7)
    fig.suptitle("Bead registration of cameras 2-4 onto camera 1 (affine, RANSAC)")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png


def psf_figure(cal: PSFCalibration, reference: PSFParams = TABLE2) -> bytes:
    """QC of the PSF fit: the paper's Fig. 2 (observed widths vs depth and the fitted
    defocus curve), widths per plane vs stage position, and the residuals."""
    plt = _pyplot()
    c, p = cal.curve, cal.psf
    bead, plane, zi = np.nonzero(np.isfinite(cal.width_nm))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2))
    lim = np.nanmax(np.abs(c.defocus_nm)) * 1.05
    x = np.linspace(-lim, lim, 400)
    curve = defocus_width_nm(x, r0_nm=p.r0_nm, D_nm=p.D_nm, A=p.A, B=p.B)
    ax = axes[0]
    for k in range(N_PLANES):
        sel = (plane == k) & c.inlier
        ax.plot(
            -c.defocus_nm[sel],
            c.width_nm[sel],
            "o",
            mfc="none",
            ms=3.5,
            color=PLANE_COLOURS[k],
            alpha=0.6,
            label=f"plane {k + 1}",
        )
    ax.plot(-c.defocus_nm[~c.inlier], c.width_nm[~c.inlier], "x", color="0.5", ms=4, label="outliers")
    ax.plot(-x, curve, "-", color="red", lw=2, label="fitted defocus curve (Eq. 5)")
    ref = defocus_width_nm(x, r0_nm=reference.r0_nm, D_nm=reference.D_nm, A=reference.A, B=reference.B)
    ax.plot(-x, ref, "--", color="0.3", lw=1, label="Table 2")
    ax.set_xlabel("depth x3 = z_bead - z_plane (nm)")
    ax.set_ylabel("width w (nm)")
    ax.set_title(
        f"Fig. 2: r0 = {p.r0_nm:.1f} nm, D = {p.D_nm:.1f} nm, A = {p.A:.2e}, B = {p.B:.2e}", fontsize=10
    )
    ax.legend(fontsize=8)
    ax = axes[1]
    z_fine = np.linspace(cal.z_nm.min(), cal.z_nm.max(), 400)
    for k in range(N_PLANES):
        sel = plane == k
        z_pt = cal.z_nm[zi[sel]] + c.bead_offset_nm[bead[sel]]
        ax.plot(z_pt, c.width_nm[sel], "o", mfc="none", ms=3, color=PLANE_COLOURS[k], alpha=0.5)
        fitted = defocus_width_nm(c.focus_nm[k] - z_fine, r0_nm=p.r0_nm, D_nm=p.D_nm, A=p.A, B=p.B)
        ax.plot(
            z_fine,
            fitted,
            "-",
            color=PLANE_COLOURS[k],
            label=f"plane {k + 1}: z = {cal.plane_z_nm[k]:.0f} nm",
        )
        ax.axvline(c.focus_nm[k], color=PLANE_COLOURS[k], ls=":", lw=1)
    ax.set_ylim(0, min(np.nanmax(cal.width_nm) * 1.2, 4 * p.r0_nm * 3))
    ax.set_xlabel("bead depth z (stage, nm)")
    ax.set_ylabel("width w (nm)")
    ax.set_title(
        f"{cal.counts['used']} beads, {cal.n_points} widths; planes relative to plane 1", fontsize=10
    )
    ax.legend(fontsize=8)
    ax = axes[2]
    for k in range(N_PLANES):
        sel = (plane == k) & c.inlier
        ax.plot(-c.defocus_nm[sel], c.residual_nm[sel], ".", ms=3, color=PLANE_COLOURS[k], alpha=0.6)
    ax.axhline(0, color="k", lw=0.8)
    rms = float(np.sqrt(np.mean(c.residual_nm[c.inlier] ** 2)))
    ax.set_xlabel("depth x3 (nm)")
    ax.set_ylabel("observed - fitted width (nm)")
    ax.set_title(f"residuals: rms {rms:.2f} nm, {int((~c.inlier).sum())} outliers", fontsize=10)
    fig.suptitle("PSF calibration from beads (Aritake et al. 2020, Eqs. 4-6)")
    fig.tight_layout()
    png = figure_png(fig)
    plt.close(fig)
    return png
