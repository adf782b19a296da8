"""Super-resolved renders of localizations (Aritake et al. 2020, Sect. 4.3, Fig. 11(b)).

Localizations (camera-1 nm; z in nm from plane 1's focal plane) are binned into a 3-D
histogram of ``px_nm`` x ``px_nm`` x ``z_bin_nm`` voxels over the whole camera-1 field
and the target z range: 24 x 24 x 50 nm, i.e. 8x super-resolution laterally for 192 nm
camera pixels, as in the paper. Bin (k, i', j') covers

    x ∈ [j' px, (j' + 1) px),  y ∈ [i' px, (i' + 1) px),  z ∈ [z_min + k dz, z_min + (k + 1) dz)

so a localization at the centre of camera pixel (i, j), x = (j + 1/2) s, y = (i + 1/2) s,
lands in super-resolved pixel (8i + 4, 8j + 4), and one at its top-left corner in (8i, 8j).
Localizations outside the field [0, W s) x [0, H s) or the z range (or not finite) are
dropped and counted.

Outputs: the (optionally blurred) volume as a 16-bit ImageJ hyperstack (axes ZYX, voxel
size in µm; counts stored as is when they fit, else scaled with the factor recorded), and a
depth-colour-coded PNG (hue = density-weighted mean z, brightness = projected density)
with a z colour bar and a scale bar. The Parquet is read in chunks of rows, so memory
depends on the size of the render, not on the number of localizations.

Two blurs: ``fixed``, one Gaussian for the whole volume (:func:`blur`); ``individual``,
each localization a Gaussian of its own σ (:mod:`voxloc.render.precision`), accumulated
chunk by chunk into :attr:`Rendered.density` beside the counts by :func:`render_parquet`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxloc.errors import InputError
from voxloc.io import iter_parquet_batches
from voxloc.locs import decode_metadata, metadata_json
from voxloc.render.grid import histogram_shape, in_grid
from voxloc.render.precision import SIGMA_COLUMNS, IndividualBlur, accumulate_gaussians_3d
from voxloc.types import FloatArray, IntArray

__all__ = [
    "COLUMNS",
    "Rendered",
    "histogram_shape",
    "histogram_3d",
    "accumulate_histogram_3d",
    "render_parquet",
    "blur",
]

log = logging.getLogger(__name__)

#: columns read from a localization table
COLUMNS = ("x_nm", "y_nm", "z_nm")


# ------------------------------------------------------------------------ histograms


def accumulate_histogram_3d(
    counts: IntArray,
    x_nm: FloatArray,
    y_nm: FloatArray,
    z_nm: FloatArray,
    *,
    field_nm: tuple[float, float],
    z_range_nm: tuple[float, float],
    px_nm: float = 24.0,
    z_bin_nm: float = 50.0,
) -> int:
    """Add localizations to ``counts`` (Z, Y, X) in place; return how many were dropped.

    Dropped: outside [0, width) x [0, height) x [z_min, z_max) or not finite. ``counts``
    must be C-contiguous with :func:`histogram_shape` of the same arguments.
    """
    shape = histogram_shape(field_nm=field_nm, z_range_nm=z_range_nm, px_nm=px_nm, z_bin_nm=z_bin_nm)
    if counts.shape != shape or not counts.flags.c_contiguous:
        raise ValueError(f"counts must be a C-contiguous array of shape {shape}, got {counts.shape}")
    nz, ny, nx = shape
    x = np.asarray(x_nm, dtype=np.float64)
    y = np.asarray(y_nm, dtype=np.float64)
    z = np.asarray(z_nm, dtype=np.float64)
    if not x.shape == y.shape == z.shape or x.ndim != 1:
        raise ValueError(f"x, y, z must be 1-D of one length, got {x.shape}, {y.shape}, {z.shape}")
    inside = in_grid(x, y, z, field_nm, z_range_nm)
    n_dropped = int(x.size - np.count_nonzero(inside))
    if n_dropped:
        x, y, z = x[inside], y[inside], z[inside]
    index_dtype = np.int32 if counts.size < 2**31 else np.int64
    # all non-negative here, so truncation is floor; min() guards rounding up at the far edge
    col = np.minimum((x / px_nm).astype(index_dtype), nx - 1)
    row = np.minimum((y / px_nm).astype(index_dtype), ny - 1)
    slab = np.minimum(((z - z_range_nm[0]) / z_bin_nm).astype(index_dtype), nz - 1)
    flat = (slab * ny + row) * nx + col
    # sorting first keeps the scattered adds cache-friendly (several x faster than np.add.at)
    voxel, n = np.unique(flat, return_counts=True)
    counts.reshape(-1)[voxel] += n.astype(counts.dtype)
    return n_dropped


def histogram_3d(
    x_nm: FloatArray,
    y_nm: FloatArray,
    z_nm: FloatArray,
    *,
    field_nm: tuple[float, float],
    z_range_nm: tuple[float, float],
    px_nm: float = 24.0,
    z_bin_nm: float = 50.0,
) -> IntArray:
    """Counts (Z, Y, X) uint32 of localizations in px_nm x px_nm x z_bin_nm bins (see module doc)."""
    shape = histogram_shape(field_nm=field_nm, z_range_nm=z_range_nm, px_nm=px_nm, z_bin_nm=z_bin_nm)
    counts = np.zeros(shape, dtype=np.uint32)
    accumulate_histogram_3d(
        counts, x_nm, y_nm, z_nm, field_nm=field_nm, z_range_nm=z_range_nm, px_nm=px_nm, z_bin_nm=z_bin_nm
    )
    return counts


# ---------------------------------------------------------------------- from Parquet


@dataclass
class Rendered:
    """A 3-D render and where it lies: voxel (k, i, j) starts at (j px, i px, z_min + k dz) nm."""

    counts: IntArray  # (Z, Y, X) uint32 localizations per voxel
    px_nm: float
    z_bin_nm: float
    field_nm: tuple[float, float]  # (width, height) of the camera-1 field
    z_range_nm: tuple[float, float]
    n_rows: int = 0
    n_dropped: int = 0
    metadata: dict[str, str] = field(default_factory=dict)  # the Parquet's key-value metadata, raw
    # the individual blur (render_parquet's ``individual``), else None: (Z, Y, X) float32,
    # each rendered localization a Gaussian of total 1
    density: FloatArray | None = None
    n_fallback: int = 0  # rendered rows drawn with the fallback sigma on some axis (no finite σ)
    n_floored: int = 0  # rendered rows whose σ was raised to min_blur_nm on some axis

    @property
    def z_edges_nm(self) -> FloatArray:
        return self.z_range_nm[0] + self.z_bin_nm * np.arange(self.counts.shape[0] + 1)

    @property
    def z_centres_nm(self) -> FloatArray:
        return self.z_range_nm[0] + self.z_bin_nm * (np.arange(self.counts.shape[0]) + 0.5)


def _z_range_from(
    meta: Mapping[str, str], path: Path, z_range_nm: tuple[float, float] | None
) -> tuple[tuple[float, float], str]:
    """z range: metadata z_range_nm, else slab edges of metadata plane_z_nm, else the argument."""
    if "z_range_nm" in meta:
        z0, z1 = (float(v) for v in metadata_json(meta, "z_range_nm", path))
        source = "metadata z_range_nm"
    elif "plane_z_nm" in meta:
        from voxloc.voxels import VoxelGrid

        edges = VoxelGrid(1, 1, plane_z_nm=tuple(metadata_json(meta, "plane_z_nm", path))).z_edges_nm
        z0, z1 = float(edges[0]), float(edges[-1])
        source = "metadata plane_z_nm"
    elif z_range_nm is not None:
        z0, z1 = (float(v) for v in z_range_nm)
        source = "argument"
    else:
        raise InputError(f"{path}: no z_range_nm or plane_z_nm metadata, and no z range given")
    if not z1 > z0:
        raise InputError(f"{path}: empty z range [{z0}, {z1}) nm ({source})")
    return (z0, z1), source


def _field_from(
    pf,
    meta: Mapping[str, str],
    path: Path,
    field_nm: tuple[float, float] | None,
    px_size_nm: float | None,
) -> tuple[tuple[float, float], str]:
    """Field: metadata width_px/height_px x px_size_nm, else the argument, else the columns'
    maxima (Parquet statistics) rounded up to whole camera pixels."""
    s = float(meta["px_size_nm"]) if "px_size_nm" in meta else px_size_nm
    if "width_px" in meta and "height_px" in meta and s is not None:
        return (int(meta["width_px"]) * s, int(meta["height_px"]) * s), "metadata width_px, height_px"
    if field_nm is not None:
        return (float(field_nm[0]), float(field_nm[1])), "argument"
    maxima = []
    for name in ("x_nm", "y_nm"):
        col = pf.schema_arrow.get_field_index(name)
        hi = []
        for g in range(pf.metadata.num_row_groups):
            st = pf.metadata.row_group(g).column(col).statistics
            if st is None or not st.has_min_max:
                raise InputError(
                    f"{path}: no width_px/height_px metadata, no field given, no column statistics"
                )
            hi.append(float(st.max))
        maxima.append(max(hi, default=0.0))
    unit = s if s else 1.0
    width, height = (max(1, math.floor(m / unit) + 1) * unit for m in maxima)
    return (width, height), "data extent (no width_px/height_px metadata): check the field"


def render_parquet(
    path: str | Path,
    *,
    px_nm: float = 24.0,
    z_bin_nm: float = 50.0,
    field_nm: tuple[float, float] | None = None,
    z_range_nm: tuple[float, float] | None = None,
    px_size_nm: float | None = None,
    chunk_rows: int = 1_000_000,
    individual: IndividualBlur | None = None,
) -> Rendered:
    """Histogram (Z, Y, X) of a localization Parquet, read ``chunk_rows`` rows at a time.

    Field and z range come from the file's key-value metadata (``width_px``,
    ``height_px``, ``px_size_nm``; ``z_range_nm`` or ``plane_z_nm``) and fall back to the
    arguments; the field, as a last resort, to the data extent. Memory: the counts volume,
    ~50 bytes per chunk row and one decoded row group (12 bytes per row), whatever the
    number of rows.

    ``individual``: also the individual-precision render, ``density``
    (:func:`accumulate_gaussians_3d`, sigmas from :data:`SIGMA_COLUMNS` by
    :meth:`IndividualBlur.sigmas_nm`; a table without them gets the fallback for all):
    a float32 volume more and ~20 MB of temporaries (64 k rows drawn at a time); per chunk
    row about as much as the histogram (measured ~56 bytes at 1 M rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})".splitlines()[0]) from None
    missing = [c for c in COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    meta = decode_metadata(pf.schema_arrow.metadata, raw=True)
    z_range, z_source = _z_range_from(meta, path, z_range_nm)
    field_size, field_source = _field_from(pf, meta, path, field_nm, px_size_nm)
    shape = histogram_shape(field_nm=field_size, z_range_nm=z_range, px_nm=px_nm, z_bin_nm=z_bin_nm)
    log.info(
        "%s: %d rows; field %.0f x %.0f nm (%s), z [%.0f, %.0f) nm (%s) -> %d x %d x %d voxels "
        "(%g x %g x %g nm, %.0f MB of counts)",
        path,
        pf.metadata.num_rows,
        *field_size,
        field_source,
        *z_range,
        z_source,
        *shape,
        px_nm,
        px_nm,
        z_bin_nm,
        np.prod(shape) * 4 / 1e6,
    )
    largest_group = max((pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)), default=0)
    if largest_group > 4_000_000:
        log.warning(
            "%s: row groups of up to %d rows are decoded whole (%.0f MB); write smaller ones",
            path,
            largest_group,
            largest_group * 12 / 1e6,
        )
    if field_source.startswith("data extent"):
        log.warning("%s: field taken from the data extent, %.0f x %.0f nm", path, *field_size)
    out = Rendered(np.zeros(shape, dtype=np.uint32), px_nm, z_bin_nm, field_size, z_range, metadata=meta)
    columns = list(COLUMNS)
    if individual is not None:
        out.density = np.zeros(shape, dtype=np.float32)
        sigma_columns = [c for c in SIGMA_COLUMNS if c in pf.schema_arrow.names]
        columns += sigma_columns
        if len(sigma_columns) < len(SIGMA_COLUMNS):
            log.warning(
                "%s: no column(s) %s: drawn with the fixed sigma(s) %g nm (lateral), %g nm (axial)",
                path,
                ", ".join(c for c in SIGMA_COLUMNS if c not in sigma_columns),
                *individual.fallback_sigma_nm,
            )
        sigma_sums = np.zeros(3)
    z_seen = [np.inf, -np.inf]
    start = time.perf_counter()
    geometry = {"field_nm": field_size, "z_range_nm": z_range, "px_nm": px_nm, "z_bin_nm": z_bin_nm}
    try:
        for batch in iter_parquet_batches(pf, int(chunk_rows), columns):
            x, y, z = (batch.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS)
            out.n_rows += len(z)
            out.n_dropped += accumulate_histogram_3d(out.counts, x, y, z, **geometry)
            if individual is not None:
                nan = np.full(len(z), np.nan)
                raw = [
                    batch.column(c).to_numpy(zero_copy_only=False) if c in columns else nan
                    for c in SIGMA_COLUMNS
                ]
                sx, sy, sz, fell_back, floored = individual.sigmas_nm(*raw)
                inside = in_grid(np.asarray(x), np.asarray(y), np.asarray(z), field_size, z_range)
                out.n_fallback += int(np.count_nonzero(fell_back & inside))
                out.n_floored += int(np.count_nonzero(floored & inside))
                sigma_sums += [float(np.sum(a[inside])) for a in (sx, sy, sz)]
                accumulate_gaussians_3d(out.density, x, y, z, sx, sy, sz, **geometry)
            if len(z) and np.isfinite(z).any():
                z_seen = [min(z_seen[0], float(np.nanmin(z))), max(z_seen[1], float(np.nanmax(z)))]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: cannot read rows ({exc})".splitlines()[0]) from None
    seconds = time.perf_counter() - start
    if individual is not None:
        n_in = max(out.n_rows - out.n_dropped, 1)
        log.info(
            "%s: individual blur, mean sigma %.1f, %.1f, %.1f nm (x, y, z) drawn; %d localizations "
            "floored at min_blur_nm %g, %g nm; %d without a finite sigma drawn with %g, %g nm",
            path,
            *(sigma_sums / n_in),
            out.n_floored,
            *individual.min_blur_nm,
            out.n_fallback,
            *individual.fallback_sigma_nm,
        )
    log.info(
        "%s: rendered %d of %d localizations in %.1f s (%.2g rows/s); data z [%.0f, %.0f] nm",
        path,
        out.n_rows - out.n_dropped,
        out.n_rows,
        seconds,
        out.n_rows / max(seconds, 1e-9),
        *z_seen,
    )
    if out.n_dropped:
        log.warning(
            "%s: dropped %d localizations (%.2f%%) outside the field, the z range or not finite",
            path,
            out.n_dropped,
            100 * out.n_dropped / out.n_rows,
        )
    return out


# ------------------------------------------------------------------ volume processing


def blur(
    volume: FloatArray | IntArray,
    sigma_nm_xy: float,
    sigma_nm_z: float,
    *,
    px_nm: float = 24.0,
    z_bin_nm: float = 50.0,
) -> FloatArray:
    """Gaussian blur (Z, Y, X) -> float32, sigmas in nm (0 = none along that axis).

    Mode 'reflect': the tails that would leave the volume are folded back, so the total is
    preserved (counts stay counts). Done axis by axis in place: one float32 copy of memory.
    """
    from scipy.ndimage import gaussian_filter1d

    if sigma_nm_xy < 0 or sigma_nm_z < 0:
        raise ValueError(f"blur sigmas must be >= 0 nm, got {sigma_nm_xy}, {sigma_nm_z}")
    out = np.array(volume, dtype=np.float32, copy=True)
    sigmas = (sigma_nm_z / z_bin_nm, sigma_nm_xy / px_nm, sigma_nm_xy / px_nm)
    for axis, sigma in enumerate(sigmas):
        if sigma > 0:
            gaussian_filter1d(out, sigma, axis=axis, output=out, mode="reflect")
    return out


# ------------------------------------------------------------------------ TIFF


# ------------------------------------------------------------------------ the rule
