"""Depth-colour-coded PNG of a rendered volume (hue = z, brightness = density), with a z
colour bar and a scale bar, as the 3-D renders of Aritake et al. 2020, Fig. 11(b).

The scale bar goes to the corner of the image with the least signal (:func:`scale_bar_corner`),
or below the image where every corner holds data, so that it never hides localizations."""

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
    "scale_bar_corner",
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
#: corners of the image tried for the scale bar; on equal signal the first wins
SCALE_BAR_CORNERS = ("bottom right", "bottom left", "top right", "top left")
#: a pixel is "lit" when its brightest channel reaches this level (of 255) ...
LIT_LEVEL = 32
#: ... and a corner is free for the scale bar when at most this fraction of the pixels
#: under the bar and its label are lit (else the bar goes below the image)
FREE_CORNER_LIT_FRACTION = 0.01


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
    blur_px: float = 0.0,
) -> np.ndarray:
    """Depth-coded image (Y, X, 3) uint8 of a (Z, Y, X) density volume.

    Hue: the density-weighted mean z of each lateral pixel on ``colormap`` over
    ``z_range_nm`` (default: the volume's extent). Brightness: the projected density,
    saturating at ``saturation_percentile`` of the non-empty pixels, then ``** gamma``.

    ``blur_px`` > 0: a lateral Gaussian blur of that sigma (pixels, mode 'reflect' as
    :func:`voxloc.render.volume.blur`) applied to the projected density and to its z
    moment: the same image as projecting the laterally blurred volume, without a copy of
    the volume.
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
    if blur_px < 0:
        raise ValueError(f"blur_px must be >= 0, got {blur_px}")
    if blur_px > 0:
        from scipy.ndimage import gaussian_filter

        density = gaussian_filter(density, blur_px, mode="reflect")
        z_sum = gaussian_filter(z_sum, blur_px, mode="reflect")
        # the filter's rounding leaves ~1e-17 where there was nothing: that stays empty
        density[density < 1e-9 * max(float(density.max()), 1e-300)] = 0.0
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


def _corner_box(corner: str, shape: tuple[int, int], box: tuple[int, int], margin: int) -> tuple[int, int]:
    """Top-left (row, col) of a box (height, width) ``margin`` pixels inside ``corner``."""
    (h, w), (bh, bw) = shape, box
    row = margin if corner.startswith("top") else h - margin - bh
    col = margin if corner.endswith("left") else w - margin - bw
    return max(0, row), max(0, col)


def scale_bar_corner(rgb: np.ndarray, box: tuple[int, int], margin: int) -> str | None:
    """The corner of the image ``rgb`` (Y, X, 3) where a scale bar with its label, a box of
    ``box`` = (height, width) pixels ``margin`` pixels from the edges, covers the least
    signal: the fewest lit pixels (:data:`LIT_LEVEL`), then the least summed brightness,
    then the first of :data:`SCALE_BAR_CORNERS`. None when no corner is free
    (:data:`FREE_CORNER_LIT_FRACTION`) or the box does not fit: the bar then goes below
    the image."""
    h, w = rgb.shape[:2]
    bh, bw = box
    if bh + 2 * margin > h or bw + 2 * margin > w:
        return None
    bright = rgb.max(axis=2)
    scores = []
    for corner in SCALE_BAR_CORNERS:
        r, c = _corner_box(corner, (h, w), box, margin)
        region = bright[r : r + bh, c : c + bw]
        scores.append((int(np.count_nonzero(region >= LIT_LEVEL)), int(region.sum(dtype=np.int64)), corner))
    n_lit, _, corner = min(scores, key=lambda t: (t[0], t[1], SCALE_BAR_CORNERS.index(t[2])))
    return corner if n_lit <= FREE_CORNER_LIT_FRACTION * bh * bw else None


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
    of the width) is burnt into the corner of the image with the least signal
    (:func:`scale_bar_corner`), or into a black strip below the image when every corner
    holds data. Returns the PNG's (H, W).
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
    h_img, w = rgb.shape[:2]
    dpi = 100.0
    font_pt = float(np.clip(max(h_img, w) / 55.0, 8.0, 24.0))
    font_px = font_pt * dpi / 72.0
    caption = [f"{px_nm:g} nm pixels" + (f" (shown x{zoom})" if zoom > 1 else ""), *caption]
    caption_w = max(_text_width_px(line, 0.8 * font_pt, dpi) for line in caption)
    panel_w = int(math.ceil(max(8.5 * font_px, caption_w + 1.6 * font_px)))

    # scale bar, burnt in: a margin of ~4% of the image, in the freest corner or below
    width_nm = w * px_nm / zoom
    if scale_bar_nm is None or scale_bar_nm <= 0 or scale_bar_nm > 0.6 * width_nm:
        if scale_bar_nm:
            log.warning("scale bar of %g nm does not fit a %.0f nm wide image", scale_bar_nm, width_nm)
        scale_bar_nm = nice_scale_bar_nm(width_nm)
    label = _length_label(scale_bar_nm)
    bar_len = max(1, int(round(scale_bar_nm / px_nm * zoom)))
    bar_th = max(2, int(round(font_px / 4)))
    margin = max(2, int(round(0.04 * min(h_img, w))))
    label_h = int(math.ceil(1.5 * font_px))  # text and its gap above the bar
    box = (label_h + bar_th, int(math.ceil(max(bar_len, _text_width_px(label, font_pt, dpi) + 2))))
    corner = scale_bar_corner(rgb, box, margin)
    if corner is None:  # every corner holds data: a black strip below the image
        strip = np.zeros((box[0] + 2 * margin, w, 3), np.uint8)
        image = np.concatenate([rgb, strip], axis=0)
        corner, where = "bottom right", "below the image"
    else:
        image = rgb.copy()
        where = corner
    h = image.shape[0]
    box_r, box_c = _corner_box(corner, (h, w), box, margin)
    bar_r1 = box_r + box[0]
    bar_c1 = box_c + (box[1] + bar_len) // 2  # the bar centred under its label
    image[max(0, bar_r1 - bar_th) : bar_r1, max(0, bar_c1 - bar_len) : bar_c1] = 255
    # the colour bar is 60% of the figure tall; below it 2.5 + 1.4 per caption line + 0.5 font
    # heights, above it 1.5: the figure is tall enough for every caption line
    fig_h = max(h, int(math.ceil((4.5 + 1.4 * len(caption)) * font_px / 0.4)))
    fig_w = w + panel_w

    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="black")
    fig.figimage(image, xo=0, yo=fig_h - h, origin="upper", resize=False)
    fig.text(
        (bar_c1 - bar_len / 2) / fig_w,
        (fig_h - bar_r1 + bar_th + 0.3 * font_px) / fig_h,
        label,
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
        f"scale bar {label} ({where})",
    )
    with atomic_output(path) as tmp:
        Image.fromarray(png, mode="RGB").save(tmp, format="PNG", pnginfo=info)
    log.info("%s: %d x %d RGB, scale bar %s %s", path, png.shape[1], png.shape[0], label, where)
    return png.shape[0], png.shape[1]
