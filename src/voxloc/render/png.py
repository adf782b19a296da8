"""Depth-colour-coded PNG of a rendered volume (hue = z, brightness = density), with a z
colour bar and a scale bar, as the 3-D renders of Aritake et al. 2020, Fig. 11(b)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from voxloc.io import atomic_output
from voxloc.types import FloatArray, IntArray

__all__ = [
    "DEPTH_COLORMAP_RANGES",
    "depth_colormap",
    "depth_coded_rgb",
    "nice_scale_bar_nm",
    "write_depth_png",
]

log = logging.getLogger(__name__)

#: part of a colormap used for depth: skips ends that are too dark on black or that wrap
DEPTH_COLORMAP_RANGES: dict[str, tuple[float, float]] = {
    "turbo": (0.1, 0.93),
    "jet": (0.1, 0.9),
    "hsv": (0.0, 0.8),
    "gist_rainbow": (0.0, 0.85),
    "rainbow": (0.05, 1.0),
    "viridis": (0.15, 1.0),
    "plasma": (0.15, 0.95),
    "cividis": (0.15, 1.0),
}
#: a depth PNG smaller than this (pixels, longer side) is enlarged by a whole factor
MIN_PNG_IMAGE_PX = 256


def depth_colormap(name: str = "turbo"):
    """The part of matplotlib colormap ``name`` used for depth (see DEPTH_COLORMAP_RANGES)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    try:
        base = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {name!r}") from None
    lo, hi = DEPTH_COLORMAP_RANGES.get(name, (0.0, 1.0))
    return ListedColormap(base(np.linspace(lo, hi, 256)), name=f"{name}_depth")


def depth_coded_rgb(
    volume: FloatArray | IntArray,
    z_centres_nm: FloatArray,
    *,
    z_range_nm: tuple[float, float] | None = None,
    colormap: str = "turbo",
    saturation_percentile: float = 99.5,
    gamma: float = 1.0,
) -> np.ndarray:
    """Depth-coded image (Y, X, 3) uint8 of a (Z, Y, X) density volume.

    Hue: the density-weighted mean z of each lateral pixel on ``colormap`` over
    ``z_range_nm`` (default: the volume's extent). Brightness: the projected density,
    saturating at ``saturation_percentile`` of the non-empty pixels, then ``** gamma``.
    """
    volume = np.asarray(volume)
    z_centres = np.asarray(z_centres_nm, dtype=np.float64)
    if volume.ndim != 3 or volume.shape[0] != z_centres.size:
        raise ValueError(f"volume (Z, Y, X) and {z_centres.size} z centres do not match: {volume.shape}")
    density = np.zeros(volume.shape[1:], dtype=np.float64)
    z_sum = np.zeros_like(density)
    for zc, plane in zip(z_centres, volume, strict=True):  # slice by slice, small temporaries
        plane = plane.astype(np.float64)
        density += plane
        z_sum += zc * plane
    if z_range_nm is None:
        step = z_centres[1] - z_centres[0] if z_centres.size > 1 else 1.0
        z_range_nm = (z_centres[0] - step / 2, z_centres[-1] + step / 2)
    z0, z1 = z_range_nm
    occupied = density > 0
    mean_z = np.where(occupied, z_sum / np.where(occupied, density, 1.0), z0)
    t = np.clip((mean_z - z0) / (z1 - z0), 0.0, 1.0)
    colour = depth_colormap(colormap)(t)[..., :3]
    saturation = float(np.percentile(density[occupied], saturation_percentile)) if occupied.any() else 1.0
    brightness = np.clip(density / max(saturation, 1e-12), 0.0, 1.0) ** gamma
    return np.rint(colour * brightness[..., None] * 255).astype(np.uint8)


def nice_scale_bar_nm(width_nm: float, fraction: float = 0.2) -> float:
    """The largest 1-2-5 x 10^k length (nm) not above ``fraction`` of ``width_nm``."""
    target = max(width_nm * fraction, 1e-9)
    exp = math.floor(math.log10(target))
    return max(m * 10.0**exp for m in (1, 2, 5) if m * 10.0**exp <= target)


def _text_width_px(text: str, size_pt: float, dpi: float) -> float:
    """Width of ``text`` drawn by Agg in the default font, in pixels."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties

    width, _, _ = RendererAgg(1, 1, dpi).get_text_width_height_descent(
        text, FontProperties(size=size_pt), ismath=False
    )
    return float(width)


def _length_label(length_nm: float) -> str:
    return f"{length_nm / 1000:g} µm" if length_nm >= 1000 else f"{length_nm:g} nm"


# ----------------------------------------------------------------------------- files


def write_depth_png(
    path: str | Path,
    rgb: np.ndarray,
    z_range_nm: tuple[float, float],
    px_nm: float,
    scale_bar_nm: float | None = 1000.0,
    *,
    colormap: str = "turbo",
    caption: Iterable[str] = (),
) -> tuple[int, int]:
    """Write a depth-coded image atomically as an RGB PNG with a z colour bar and a scale bar.

    The image is drawn 1:1 (one image pixel = one PNG pixel; enlarged by a whole factor if
    under MIN_PNG_IMAGE_PX) at the top left on black; the
    colour bar (z in nm, same ``colormap`` as :func:`depth_coded_rgb`) and the ``caption``
    lines go to a panel on the right. The scale bar (``None``: a 1-2-5 length near a fifth
    of the width) is burnt into the bottom right of the image. Returns the PNG's (H, W).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from PIL import Image, PngImagePlugin

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (Y, X, 3) uint8, got {rgb.shape} {rgb.dtype}")
    # small renders are enlarged by a whole factor (nearest neighbour) to stay legible
    zoom = max(1, math.ceil(MIN_PNG_IMAGE_PX / max(rgb.shape[:2])))
    if zoom > 1:
        rgb = np.repeat(np.repeat(rgb, zoom, axis=0), zoom, axis=1)
    h, w = rgb.shape[:2]
    dpi = 100.0
    font_pt = float(np.clip(max(h, w) / 55.0, 8.0, 24.0))
    font_px = font_pt * dpi / 72.0
    caption = [f"{px_nm:g} nm pixels" + (f" (shown x{zoom})" if zoom > 1 else ""), *caption]
    caption_w = max(_text_width_px(line, 0.8 * font_pt, dpi) for line in caption)
    panel_w = int(math.ceil(max(8.5 * font_px, caption_w + 1.6 * font_px)))
    fig_h = max(h, int(round((16.5 + 1.4 * len(caption)) * font_px)))
    fig_w = w + panel_w

    # scale bar, burnt in: bottom right, a margin of ~4% of the image
    width_nm = w * px_nm / zoom
    if scale_bar_nm is None or scale_bar_nm <= 0 or scale_bar_nm > 0.6 * width_nm:
        if scale_bar_nm:
            log.warning("scale bar of %g nm does not fit a %.0f nm wide image", scale_bar_nm, width_nm)
        scale_bar_nm = nice_scale_bar_nm(width_nm)
    bar_len = max(1, int(round(scale_bar_nm / px_nm * zoom)))
    bar_th = max(2, int(round(font_px / 4)))
    margin = max(2, int(round(0.04 * min(h, w))))
    image = rgb.copy()
    bar_r1, bar_c1 = h - margin, w - margin
    image[max(0, bar_r1 - bar_th) : bar_r1, max(0, bar_c1 - bar_len) : bar_c1] = 255

    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="black")
    fig.figimage(image, xo=0, yo=fig_h - h, origin="upper", resize=False)
    fig.text(
        (bar_c1 - bar_len / 2) / fig_w,
        (fig_h - bar_r1 + bar_th + 0.3 * font_px) / fig_h,
        _length_label(scale_bar_nm),
        color="white",
        fontsize=font_pt,
        ha="center",
        va="bottom",
    )
    # colour bar: in the panel, top aligned with the image, 60% of the figure tall
    bar_w_px = 1.1 * font_px
    cb_h = 0.6 * fig_h
    top = fig_h - 1.5 * font_px
    cax = fig.add_axes(
        (
            (w + 1.6 * font_px) / fig_w,
            (top - cb_h) / fig_h,
            bar_w_px / fig_w,
            cb_h / fig_h,
        )
    )
    mappable = ScalarMappable(norm=Normalize(*z_range_nm), cmap=depth_colormap(colormap))
    cbar = fig.colorbar(mappable, cax=cax)
    cbar.set_label("z (nm)", color="white", fontsize=font_pt)
    cbar.ax.tick_params(colors="white", labelsize=0.85 * font_pt)
    cbar.outline.set_edgecolor("white")
    y = (top - cb_h - 2.5 * font_px) / fig_h
    for line in caption:
        fig.text((w + 0.8 * font_px) / fig_w, y, line, color="0.8", fontsize=0.8 * font_pt, va="top")
        y -= 1.4 * font_px / fig_h

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    png = np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "voxloc")
    info.add_text(
        "Description",
        f"depth-coded render: {px_nm:g} nm pixels, z {z_range_nm[0]:g}..{z_range_nm[1]:g} nm ({colormap}), "
        f"scale bar {_length_label(scale_bar_nm)}",
    )
    with atomic_output(path) as tmp:
        Image.fromarray(png, mode="RGB").save(tmp, format="PNG", pnginfo=info)
    log.info("%s: %d x %d RGB", path, png.shape[1], png.shape[0])
    return png.shape[0], png.shape[1]
