"""QC figure of the measured spline PSF (rule fit_psf_spline): per plane, a bead against the
model at five depths, and over all beads the residual per depth against photon noise.

Rows: planes. Columns: five depths across the spline's z range, each three images of the
brightest bead averaged (its window free of background and neighbours, over its in-focus
light), the spline at the same depth and sub-pixel position, and their difference (x 5), on
one colour scale per depth. Below: the RMS residual of all beads per depth in % of the
model's peak, with the RMS that photon noise alone gives (shot noise of the bead and the
background: residuals on that line are noise, above it model error); the light in the
spline's window relative to focus (the normalisation keeps what defocus takes out of the
window); and the beads averaged per z node.
"""

from __future__ import annotations

import numpy as np

from voxloc.calibration.psf_spline import PlaneBeads, SplineReport
from voxloc.calibration.qc import PLANE_COLOURS, figure_png
from voxloc.physics.spline import SplinePSF, spline_windows
from voxloc.types import FloatArray

__all__ = ["spline_figure", "bead_residuals"]

N_DEPTHS = 5
RESIDUAL_GAIN = 5.0  # the residual images are drawn x this


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _model(psf: SplinePSF, k: int, beads: PlaneBeads) -> FloatArray:
    """The spline of plane k (per photon in the window at focus) at every bead's position and
    slice depth: (n, Z, w, w), w = the beads' window side."""
    n, n_z = beads.z_nm.shape
    h = beads.windows.shape[-1] // 2
    x = np.repeat(beads.xy_px[:, 0], n_z)[:, None].repeat(psf.n_planes, axis=1)
    y = np.repeat(beads.xy_px[:, 1], n_z)[:, None].repeat(psf.n_planes, axis=1)
    _, vals, _ = spline_windows(psf, x, y, beads.z_nm.reshape(-1), half_px=h)
    return vals[:, k].reshape(n, n_z, 2 * h + 1, 2 * h + 1) / psf.transmission[k]


def bead_residuals(psf: SplinePSF, report: SplineReport) -> list[dict[str, FloatArray]]:
    """Per plane: depth (Z,) (the beads' mean), RMS of data - model (Z,) and the RMS photon
    noise would give (Z,), both in % of the model's mean peak, the model's window light at
    the pixel centre (Z,) relative to focus; beads without in-focus light are left out."""
    out = []
    for k, beads in enumerate(report.beads):
        ok = np.isfinite(beads.flux)
        model = _model(psf, k, beads)[ok] * beads.flux[ok, None, None, None]  # photons
        data = beads.windows[ok]
        peak = model.max(axis=(2, 3)).mean(axis=0)
        rms = np.sqrt(((data - model) ** 2).mean(axis=(0, 2, 3)))
        noise = np.sqrt(np.clip(model + beads.background[ok, None, None, None], 0, None).mean(axis=(0, 2, 3)))
        z = beads.z_nm[ok].mean(axis=0)
        inside = (z >= psf.z_range_nm[0]) & (z <= psf.z_range_nm[1])
        x = np.full((len(z), psf.n_planes), float(psf.half_px) + 0.5)
        _, centre, _ = spline_windows(psf, x, x, z)
        light = centre[:, k].sum(axis=(1, 2)) / psf.transmission[k]
        out.append({"z": z[inside], "rms": 100 * rms[inside] / peak[inside],
                    "noise": 100 * noise[inside] / peak[inside], "light": light[inside]})  # fmt: skip
    return out


def spline_figure(psf: SplinePSF, report: SplineReport) -> bytes:
    """The QC figure (module doc) as PNG bytes."""
    plt = _pyplot()
    n_planes = psf.n_planes
    depths = np.linspace(*psf.z_range_nm, N_DEPTHS)
    fig = plt.figure(figsize=(19, 2.0 * n_planes + 4.4))
    grid = fig.add_gridspec(n_planes + 1, 3 * N_DEPTHS, height_ratios=[1.0] * n_planes + [1.9], hspace=0.45,
                            top=0.9, bottom=0.07, left=0.06, right=0.98)  # fmt: skip
    for k, beads in enumerate(report.beads):
        ok = np.flatnonzero(np.isfinite(beads.flux))
        b = ok[np.argmax(beads.flux[ok])]
        model = _model(psf, k, PlaneBeads(beads.xy_px[b : b + 1], beads.z_nm[b : b + 1], beads.background[b : b + 1],
                                          beads.flux[b : b + 1], beads.windows[b : b + 1]))[0]  # fmt: skip
        data = beads.windows[b] / beads.flux[b]
        for j, zt in enumerate(depths):
            s = int(np.argmin(np.abs(beads.z_nm[b] - zt)))
            vmax = max(float(model[s].max()), float(data[s].max()), 1e-12)
            panels = [(data[s], "bead", "magma", 0.0, vmax), (model[s], "spline", "magma", 0.0, vmax),
                      (RESIDUAL_GAIN * (data[s] - model[s]), f"diff x{RESIDUAL_GAIN:g}", "RdBu_r", -vmax, vmax)]  # fmt: skip
            for i, (img, name, cmap, lo, hi) in enumerate(panels):
                ax = fig.add_subplot(grid[k, 3 * j + i])
                ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(name, fontsize=8, pad=2)
                if i == 1:
                    ax.text(0.5, 1.32, f"z = {beads.z_nm[b, s]:.0f} nm (defocus {beads.z_nm[b, s] - psf.plane_z_nm[k]:+.0f})",
                            transform=ax.transAxes, ha="center", fontsize=9)  # fmt: skip
                if i == 0 and j == 0:
                    ax.set_ylabel(
                        f"plane {k + 1}\n{report.n_beads[k]} beads", fontsize=10, color=PLANE_COLOURS[k]
                    )
    res = bead_residuals(psf, report)
    bottom = grid[n_planes, :].subgridspec(1, 3, wspace=0.25)
    axes = [fig.add_subplot(bottom[0, a]) for a in range(3)]
    z_nodes = psf.z0_nm + psf.z_step_nm * np.arange(psf.n_z)
    for k, r in enumerate(res):
        colour = PLANE_COLOURS[k % len(PLANE_COLOURS)]
        axes[0].plot(r["z"], r["rms"], "-", color=colour, label=f"plane {k + 1}")
        axes[0].plot(r["z"], r["noise"], ":", color=colour, lw=1)
        axes[1].plot(r["z"], r["light"], "-", color=colour, label=f"plane {k + 1}")
        axes[2].plot(z_nodes, report.beads_per_z[k], "-", color=colour, label=f"plane {k + 1}")
    for ax in axes:
        for k in range(n_planes):
            ax.axvline(psf.plane_z_nm[k], color=PLANE_COLOURS[k % len(PLANE_COLOURS)], ls="--", lw=0.7)
        ax.set_xlabel("z (nm from plane 1's focus)")
        ax.legend(fontsize=8)
    top = max(float(np.nanpercentile(np.concatenate([r["rms"] for r in res]), 99)), 1.0)
    axes[0].set_ylim(0, 1.2 * top)
    axes[0].set_ylabel("RMS bead - spline (% of peak)")
    axes[0].set_title("residual of all beads per depth (dotted: Poisson noise alone)", fontsize=10)
    axes[1].set_ylim(0, 1.1)
    axes[1].set_ylabel("window light / at focus")
    axes[1].set_title("light in the spline's window (molecule at the pixel centre)", fontsize=10)
    axes[2].set_ylim(0, None)
    axes[2].set_ylabel("beads")
    axes[2].set_title(f"beads averaged per z node (fewest {report.min_beads_per_z})", fontsize=10)
    t = ", ".join(f"{v:.3f}" for v in report.transmission)
    bg = ", ".join(f"{v:.1f}" for v in report.background_photons)
    fig.suptitle(
        f"Spline PSF from beads: z {psf.z_range_nm[0]:.0f}..{psf.z_range_nm[1]:.0f} nm in {psf.z_step_nm:g} nm "
        f"steps, window ±{psf.half_px} px, normalised at each plane's focus; transmission {t}; "
        f"background {bg} photons/px",
        fontsize=11,
    )
    png = figure_png(fig)
    plt.close(fig)
    return png
