"""Rule render_movie: a localization Parquet -> 16-bit ImageJ TIFF and depth-coded PNG.

:class:`RenderOptions` holds the ``render`` section of the config; :func:`render_movie`
histograms the table (:mod:`voxloc.render.volume`), blurs it, and writes both images
(:mod:`voxloc.render.tiff`, :mod:`voxloc.render.png`), each atomically.

Two blurs (``blur``). ``individual`` (the default; Picasso's "individual localization
precision"): each localization a 3-D Gaussian of its own fitted σ, floored at
``min_blur_nm`` (Picasso's minimum blur), those without a σ (``localize.fit: none``) with
``blur_sigma_nm`` (:func:`voxloc.render.volume.accumulate_gaussians_3d`). ``fixed``: one
Gaussian of ``blur_sigma_nm`` for all (default one render pixel: a single localization
becomes a spot of ~3 x 3 pixels rather than one faint pixel). Either way the PNG shows the
blurred render and the TIFF keeps the counts of the 3-D histogram unless ``blur_tiff``:
then the TIFF is the blurred volume too (the PNG its projection), so that PNG and TIFF
always show the same render when ``blur_tiff`` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from voxloc.render.png import depth_coded_rgb, write_depth_png
from voxloc.render.precision import IndividualBlur
from voxloc.render.tiff import write_render_tiff
from voxloc.render.volume import Rendered, blur, render_parquet
from voxloc.types import FloatArray, IntArray

__all__ = ["BLURS", "RenderOptions", "render_movie"]

log = logging.getLogger(__name__)

#: values of config ``render.blur``
BLURS = ("fixed", "individual")


@dataclass(frozen=True)
class RenderOptions:
    """How a movie is rendered: the ``render:`` config section (defaults as in
    workflow/schemas/config.schema.yaml).

    ``px_nm`` x ``px_nm`` x ``z_bin_nm`` voxels; ``blur``: ``individual`` (each
    localization a Gaussian of its own σ, at least ``min_blur_nm`` = (lateral, axial) nm;
    ``blur_sigma_nm`` where it has no σ) or ``fixed`` (one Gaussian of ``blur_sigma_nm`` =
    (lateral, axial) sigmas, 0 = off: the PNG's lateral blur, a blur along z not changing a
    projection along z); ``blur_tiff``: the TIFF is the blurred volume too (else the
    counts); ``chunk_rows`` localizations read at a time; the PNG's ``scale_bar_nm`` (None:
    a 1-2-5 length near a fifth of the width), depth ``colormap``, brightness
    ``saturation_percentile`` and ``gamma``.
    """

    px_nm: float = 24.0
    z_bin_nm: float = 50.0
    blur: str = "individual"
    min_blur_nm: tuple[float, float] = (12.0, 25.0)
    blur_sigma_nm: tuple[float, float] = (24.0, 25.0)
    blur_tiff: bool = False
    chunk_rows: int = 1_000_000
    scale_bar_nm: float | None = 1000.0
    colormap: str = "turbo"
    saturation_percentile: float = 99.5
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if self.blur not in BLURS:
            raise ValueError(f"render blur must be one of {', '.join(BLURS)}, got {self.blur!r}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RenderOptions:
        """The options of config ``render`` (ValueError naming keys it does not know)."""
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f"unknown render option(s): {sorted(unknown)}")
        opts = dict(cfg)
        for key in ("blur_sigma_nm", "min_blur_nm"):
            if key in opts:
                opts[key] = tuple(float(v) for v in opts[key])
        return cls(**opts)


def render_movie(
    parquet_path: str | Path,
    tiff_path: str | Path,
    png_path: str | Path,
    *,
    options: RenderOptions | None = None,
    z_range_nm: tuple[float, float] | None = None,
    px_size_nm: float | None = None,
    field_nm: tuple[float, float] | None = None,
) -> Rendered:
    """Parquet of localizations -> 16-bit ImageJ TIFF (Z, Y, X) and depth-coded PNG.

    ``options`` (:class:`RenderOptions`, default: its defaults) say how. ``z_range_nm``,
    ``px_size_nm`` and ``field_nm`` are fallbacks for a Parquet without that metadata (see
    :func:`render_parquet`).
    """
    opts = options if options is not None else RenderOptions()
    px_nm, z_bin_nm = opts.px_nm, opts.z_bin_nm
    individual = opts.blur == "individual"
    rendered = render_parquet(
        parquet_path,
        px_nm=px_nm,
        z_bin_nm=z_bin_nm,
        field_nm=field_nm,
        z_range_nm=z_range_nm,
        px_size_nm=px_size_nm,
        chunk_rows=opts.chunk_rows,
        individual=IndividualBlur(opts.min_blur_nm, opts.blur_sigma_nm) if individual else None,
    )
    sigma_xy, sigma_z = (float(v) for v in opts.blur_sigma_nm)
    n_rendered = rendered.n_rows - rendered.n_dropped
    if individual:
        return _write_individual(parquet_path, tiff_path, png_path, rendered, opts)
    volume: FloatArray | IntArray = rendered.counts
    png_blur_px = sigma_xy / px_nm  # the PNG's lateral blur of the projection (pixels)
    tiff_blur = "0,0"
    if opts.blur_tiff and (sigma_xy > 0 or sigma_z > 0):
        start = time.perf_counter()
        volume = blur(rendered.counts, sigma_xy, sigma_z, px_nm=px_nm, z_bin_nm=z_bin_nm)
        png_blur_px, tiff_blur = 0.0, f"{sigma_xy:g},{sigma_z:g}"  # the PNG is of the blurred volume
        log.info(
            "blurred with sigma %g nm (xy), %g nm (z) in %.1f s",
            sigma_xy,
            sigma_z,
            time.perf_counter() - start,
        )
    write_render_tiff(
        tiff_path,
        volume,
        px_nm,
        z_bin_nm,
        z_min_nm=rendered.z_range_nm[0],
        info={
            "source": Path(parquet_path).name,
            "n_localizations": n_rendered,
            "n_dropped": rendered.n_dropped,
            "blur": "fixed" if tiff_blur != "0,0" else "none",
            "blur_sigma_nm": tiff_blur,
        },
    )
    rgb = depth_coded_rgb(
        volume,
        rendered.z_centres_nm,
        z_range_nm=rendered.z_range_nm,
        colormap=opts.colormap,
        saturation_percentile=opts.saturation_percentile,
        gamma=opts.gamma,
        blur_px=png_blur_px,
    )
    caption = [Path(parquet_path).stem, f"{n_rendered:,} localizations"]
    if tiff_blur != "0,0":
        caption.append(f"blur σ {sigma_xy:g}/{sigma_z:g} nm")
    elif sigma_xy > 0:
        caption.append(f"blur σ {sigma_xy:g} nm")
    write_depth_png(
        png_path,
        rgb,
        rendered.z_range_nm,
        px_nm,
        opts.scale_bar_nm,
        colormap=opts.colormap,
        caption=caption,
    )
    return rendered


def _write_individual(
    parquet_path: str | Path,
    tiff_path: str | Path,
    png_path: str | Path,
    rendered: Rendered,
    opts: RenderOptions,
) -> Rendered:
    """The TIFF and PNG of ``blur: individual``: the PNG the projection of the
    individual-precision volume (no further blur), the TIFF that volume with ``blur_tiff``,
    else the counts."""
    assert rendered.density is not None
    n_rendered = rendered.n_rows - rendered.n_dropped
    (min_xy, min_z), (sigma_xy, sigma_z) = opts.min_blur_nm, opts.blur_sigma_nm
    info: dict[str, object] = {
        "source": Path(parquet_path).name,
        "n_localizations": n_rendered,
        "n_dropped": rendered.n_dropped,
        "blur": "none",
        "blur_sigma_nm": "0,0",
    }
    if opts.blur_tiff:
        info.update(
            blur="individual",
            blur_sigma_nm="per localization",
            min_blur_nm=f"{min_xy:g},{min_z:g}",
            fallback_sigma_nm=f"{sigma_xy:g},{sigma_z:g}",
            n_fallback=rendered.n_fallback,
        )
    write_render_tiff(
        tiff_path,
        rendered.density if opts.blur_tiff else rendered.counts,
        opts.px_nm,
        opts.z_bin_nm,
        z_min_nm=rendered.z_range_nm[0],
        info=info,
    )
    rgb = depth_coded_rgb(
        rendered.density,
        rendered.z_centres_nm,
        z_range_nm=rendered.z_range_nm,
        colormap=opts.colormap,
        saturation_percentile=opts.saturation_percentile,
        gamma=opts.gamma,
    )
    caption = [
        Path(parquet_path).stem,
        f"{n_rendered:,} localizations",
        f"blur σ: each its own, ≥ {min_xy:g}/{min_z:g} nm",
    ]
    if rendered.n_fallback:
        caption.append(f"{rendered.n_fallback:,} without σ: {sigma_xy:g}/{sigma_z:g} nm")
    write_depth_png(
        png_path,
        rgb,
        rendered.z_range_nm,
        opts.px_nm,
        opts.scale_bar_nm,
        colormap=opts.colormap,
        caption=caption,
    )
    return rendered
