"""The localization table (DECODE's emitter table, Picasso's ``locs``): one row per molecule.

Columns, units in their names: ``frame`` (int32, 0-based), ``x_nm``, ``y_nm``, ``z_nm`` in
camera-1 geometry (pixel (i, j) centred at ((j + 0.5) s, (i + 0.5) s)), ``prob`` (the
network's ĉ, float32) and the voxel indices ``plane``, ``row``, ``col``. Parquet files carry
key-value metadata (pixel size, plane positions, τ, model hash, voxloc version, source
files). Here: the schema, that metadata, merging chunk files, and the export to Picasso's
HDF5 + YAML. The tables are made by :mod:`voxloc.localization.localize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from voxloc import __version__
from voxloc.errors import InputError
from voxloc.io import atomic_output, iter_parquet_batches, write_yaml

__all__ = [
    "LOC_SCHEMA",
    "empty_locs",
    "file_sha256",
    "metadata_bytes",
    "to_arrow",
    "read_locs_metadata",
    "merge_locs",
    "merge_chunk_files",
    "write_picasso",
]

log = logging.getLogger(__name__)

LOC_SCHEMA = pa.schema(
    [
        ("frame", pa.int32()),
        ("x_nm", pa.float32()),
        ("y_nm", pa.float32()),
        ("z_nm", pa.float32()),
        ("prob", pa.float32()),
        ("plane", pa.int16()),
        ("row", pa.int32()),
        ("col", pa.int32()),
    ]
)


def empty_locs() -> pd.DataFrame:
    """A table with the columns and dtypes of :data:`LOC_SCHEMA` and no row."""
    return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in LOC_SCHEMA})


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (the model's, in the metadata), read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def metadata_bytes(metadata: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Parquet key-value metadata: strings as they are, other values as JSON; voxloc's version added."""
    out = {}
    for k, v in {"voxloc_version": __version__, **metadata}.items():
        out[str(k).encode()] = (v if isinstance(v, str) else json.dumps(v)).encode()
    return out


def to_arrow(table: pd.DataFrame) -> pa.Table:
    """A localization table as Arrow, cast to :data:`LOC_SCHEMA` (columns in its order)."""
    return pa.Table.from_pandas(table[LOC_SCHEMA.names], schema=LOC_SCHEMA, preserve_index=False)


def read_locs_metadata(path: str | Path) -> dict[str, Any]:
    """Key-value metadata of a localization Parquet, JSON values decoded."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})".splitlines()[0]) from None
    out = {}
    for k, v in raw.items():
        key = k.decode()
        if key == "pandas":
            continue
        try:
            out[key] = json.loads(v)
        except json.JSONDecodeError:
            out[key] = v.decode()
    return out


def merge_locs(chunks: Sequence[str | Path], path: str | Path, metadata: Mapping[str, Any]) -> int:
    """Concatenate chunk Parquets (in order) into one, streaming row groups; returns the row count."""
    n = 0
    with atomic_output(path) as tmp:
        schema = LOC_SCHEMA.with_metadata(metadata_bytes(metadata))
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in chunks:
                for batch in iter_parquet_batches(pq.ParquetFile(chunk), 1 << 16):
                    writer.write_table(
                        pa.Table.from_batches([batch]).cast(LOC_SCHEMA).replace_schema_metadata(None)
                    )
                    n += batch.num_rows
    return n


def merge_chunk_files(chunks: Sequence[str | Path], path: str | Path) -> int:
    """Merge the chunk Parquets of one movie; metadata from the first chunk (minus its frame range)."""
    if not chunks:
        raise InputError(f"{path}: no chunk to merge")
    meta = read_locs_metadata(chunks[0])
    meta.pop("frame_range", None)
    n = merge_locs(chunks, path, meta)
    log.info("%s: %d localizations from %d chunks", path, n, len(chunks))
    return n


def _iter_tables(path: str | Path, rows: int) -> Iterable[pd.DataFrame]:
    for batch in iter_parquet_batches(pq.ParquetFile(path), rows):
        yield batch.to_pandas()


def write_picasso(
    parquet_path: str | Path,
    hdf5_path: str | Path,
    yaml_path: str | Path,
    *,
    lateral_precision_nm: float,
    rows: int = 1_000_000,
) -> None:
    """Export a localization Parquet to Picasso's ``locs`` HDF5 table plus YAML metadata.

    Picasso puts pixel centres at integer coordinates, so x_px = x_nm / s - 0.5; z stays in
    nm. lpx, lpy (localization precision, px) are the nominal ``lateral_precision_nm`` / s
    (a network gives no per-molecule precision). YAML: Width, Height, Frames, Pixelsize.
    """
    import h5py

    meta = read_locs_metadata(parquet_path)
    s = float(meta["px_size_nm"])
    dtype = np.dtype(
        [
            ("frame", "u4"),
            ("x", "f4"),
            ("y", "f4"),
            ("z", "f4"),
            ("lpx", "f4"),
            ("lpy", "f4"),
            ("prob", "f4"),
        ]
    )
    lp = np.float32(lateral_precision_nm / s)
    with atomic_output(hdf5_path) as tmp, h5py.File(tmp, "w") as h5:
        ds = h5.create_dataset("locs", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(65536,))
        for table in _iter_tables(parquet_path, rows):
            rec = np.empty(len(table), dtype=dtype)
            rec["frame"] = table["frame"].to_numpy()
            rec["x"] = table["x_nm"].to_numpy() / s - 0.5
            rec["y"] = table["y_nm"].to_numpy() / s - 0.5
            rec["z"] = table["z_nm"].to_numpy()
            rec["lpx"] = lp
            rec["lpy"] = lp
            rec["prob"] = table["prob"].to_numpy()
            n = ds.shape[0]
            ds.resize((n + len(rec),))
            ds[n:] = rec
    info = {
        "Generated by": f"voxloc {__version__}",
        "Width": int(meta["width_px"]),
        "Height": int(meta["height_px"]),
        "Frames": int(meta["n_frames"]),
        "Pixelsize": s,
        "Source": str(parquet_path),
        "Threshold tau": float(meta["tau"]),
    }
    write_yaml(yaml_path, info)
