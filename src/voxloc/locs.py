"""The localization table (DECODE's emitter table, Picasso's ``locs``): one row per molecule.

Columns, units in their names: ``frame`` (int32, 0-based), ``x_nm``, ``y_nm``, ``z_nm`` in
camera-1 geometry (pixel (i, j) centred at ((j + 0.5) s, (i + 0.5) s)), ``prob`` (the
network's ĉ, float32) and the voxel indices ``plane``, ``row``, ``col``. Parquet files carry
key-value metadata (pixel size, plane positions, τ, model hash, voxloc version, source
files). Here: the schema, merging chunk files, the export to Picasso's HDF5 + YAML, and the
Parquet key-value metadata of every voxloc table (localizations, ground-truth emitters,
matched molecules, sweep errors): one encoder, :func:`encode_metadata` (strings as they
are, other values as JSON, voxloc's version added), one decoder, :func:`decode_metadata`
(JSON values decoded, or with ``raw`` the strings as stored), and :func:`write_parquet`
for tables written from pandas. Localization tables are streamed through
:class:`RowGroupWriter`, which gathers the small tables of each network batch into row groups
of ~1 M rows (at most 64 MiB), so that a long movie's file has few row groups while memory
holds at most one row group. The localization tables are made by
:mod:`voxloc.localization.localize`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from voxloc import provenance
from voxloc.errors import InputError
from voxloc.io import atomic_output, iter_parquet_batches, to_builtin

__all__ = [
    "LOC_SCHEMA",
    "NETWORK_FIELDS",
    "FIT_FIELDS",
    "FIT_FLAGS",
    "flag_counts",
    "with_network_only",
    "empty_locs",
    "file_sha256",
    "encode_metadata",
    "decode_metadata",
    "read_metadata",
    "metadata_json",
    "write_parquet",
    "to_arrow",
    "ROW_GROUP_ROWS",
    "ROW_GROUP_BYTES",
    "RowGroupWriter",
    "merge_locs",
    "merge_chunk_files",
]

log = logging.getLogger(__name__)

#: the network's columns: position, ĉ and the detecting voxel
NETWORK_FIELDS = [
    ("frame", pa.int32()),
    ("x_nm", pa.float32()),
    ("y_nm", pa.float32()),
    ("z_nm", pa.float32()),
    ("prob", pa.float32()),
    ("plane", pa.int16()),
    ("row", pa.int32()),
    ("col", pa.int32()),
]

#: the per-molecule fit's columns (:mod:`voxloc.fitting`): the network's own position, the
#: fitted photons (summed over the planes) and background (photons / pixel, mean of the
#: planes), the square root of the CRLB at the estimate, χ² per degree of freedom, the
#: iterations, convergence and :data:`FIT_FLAGS`. With ``localize.fit: none`` the network's
#: position is copied, the fitted values are NaN and ``fit_flags`` says ``not_fitted``.
FIT_FIELDS = [
    ("x_net_nm", pa.float32()),
    ("y_net_nm", pa.float32()),
    ("z_net_nm", pa.float32()),
    ("photons", pa.float32()),
    ("bg", pa.float32()),
    ("sigma_x_nm", pa.float32()),
    ("sigma_y_nm", pa.float32()),
    ("sigma_z_nm", pa.float32()),
    ("chi2_dof", pa.float32()),
    ("n_iter", pa.int16()),
    ("converged", pa.bool_()),
    ("fit_flags", pa.int16()),
]

LOC_SCHEMA = pa.schema(NETWORK_FIELDS + FIT_FIELDS)

#: bits of the ``fit_flags`` column
FIT_FLAGS = {
    "edge": 1,  # the window of some camera reached past its edge: those pixels left out
    "saturated": 2,  # saturated pixels in the window: left out
    "max_iter": 4,  # the iteration cap came before convergence: the last estimate is kept
    "diverged": 8,  # the fit left its bounds or failed: the network's position is kept
    "crowded": 16,  # another detection of the frame is closer than localize.fit_neighbour_nm
    "not_fitted": 32,  # localize.fit: none
    "joint": 64,  # crowded, fitted with its close neighbour as two emitters (fit_crowded: joint)
    "found": 128,  # found by the fit beside the row before it (its frame, voxel, prob), no *_net_nm
}


def flag_counts(flags: np.ndarray) -> dict[str, int]:
    """How many rows carry each bit of :data:`FIT_FLAGS` (for the chunk log)."""
    flags = np.asarray(flags)
    return {name: int(np.count_nonzero(flags & bit)) for name, bit in FIT_FLAGS.items()}


def with_network_only(table: pd.DataFrame) -> pd.DataFrame:
    """A network table (:data:`NETWORK_FIELDS`) with the fit's columns of ``localize.fit:
    none``: the network's position copied, no fitted value, flag ``not_fitted``."""
    out = table.copy()
    n = len(out)
    for axis in "xyz":
        out[f"{axis}_net_nm"] = out[f"{axis}_nm"].astype(np.float32)
    for name in ("photons", "bg", "sigma_x_nm", "sigma_y_nm", "sigma_z_nm", "chi2_dof"):
        out[name] = np.full(n, np.nan, np.float32)
    out["n_iter"] = np.zeros(n, np.int16)
    out["converged"] = np.zeros(n, bool)
    out["fit_flags"] = np.full(n, FIT_FLAGS["not_fitted"], np.int16)
    return out


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


# ------------------------------------------------------------ key-value metadata


def encode_metadata(metadata: Mapping[str, Any]) -> dict[bytes, bytes]:
    """Parquet key-value metadata: ``voxloc_version`` and ``voxloc_source`` first
    (:func:`voxloc.provenance`), then ``metadata`` in its order (its own values of those keys,
    e.g. a chunk's in a merge, win); strings as they are, other values as JSON (numpy values
    as plain Python first).

    A string that is itself JSON (e.g. ``json.dumps([0.0, 400.0])``) is stored as it is, so
    it reads back as the same value.
    """
    out = {}
    for k, v in {**provenance(), **metadata}.items():
        out[str(k).encode()] = (v if isinstance(v, str) else json.dumps(to_builtin(v))).encode()
    return out


def _json_or_str(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def decode_metadata(metadata: Mapping[bytes, bytes] | None, *, raw: bool = False) -> dict[str, Any]:
    """The key-value metadata of a Parquet schema (``schema.metadata``) as a dict.

    Values are JSON-decoded where they are JSON (a number, a list, ``true``...) and kept as
    strings otherwise; with ``raw``, all are the strings as stored. pandas' own entry
    (``pandas``, its record of the DataFrame's columns) is left out. Bytes that are not
    UTF-8 are replaced (U+FFFD), so a stray entry never makes a file unreadable.
    """
    out: dict[str, Any] = {}
    for k, v in (metadata or {}).items():
        key = k.decode(errors="replace")
        if key == "pandas":
            continue
        text = v.decode(errors="replace")
        out[key] = text if raw else _json_or_str(text)
    return out


def read_metadata(path: str | Path, *, raw: bool = False) -> dict[str, Any]:
    """:func:`decode_metadata` of a Parquet file (read from its footer only); InputError
    naming the file when it is not a readable Parquet file."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})".splitlines()[0]) from None
    return decode_metadata(schema.metadata, raw=raw)


def metadata_json(metadata: Mapping[str, str], key: str, path: str | Path) -> Any:
    """One value of raw metadata (:func:`decode_metadata` with ``raw``) that must be JSON,
    decoded; InputError naming the file and the key when it is not."""
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, TypeError) as exc:
        raise InputError(f"{path}: metadata {key}={metadata[key]!r} is not valid JSON ({exc})") from None


def write_parquet(path: str | Path, table: pd.DataFrame, **metadata: Any) -> None:
    """Write a pandas table atomically as Parquet (no index), with pandas' schema record and
    :func:`encode_metadata` of ``metadata`` as the file's key-value metadata."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = {**(arrow.schema.metadata or {}), **encode_metadata(metadata)}
    with atomic_output(path) as tmp:
        pq.write_table(arrow.replace_schema_metadata(meta), tmp)


# ------------------------------------------------------------ localization tables


def to_arrow(table: pd.DataFrame) -> pa.Table:
    """A localization table as Arrow, cast to :data:`LOC_SCHEMA` (columns in its order)."""
    return pa.Table.from_pandas(table[LOC_SCHEMA.names], schema=LOC_SCHEMA, preserve_index=False)


#: rows per Parquet row group of the localization files (pyarrow's own default maximum) ...
ROW_GROUP_ROWS = 1 << 20
#: ... or fewer, so that a row group holds at most this many bytes in memory (Arrow)
ROW_GROUP_BYTES = 64 << 20


class RowGroupWriter:
    """A :class:`pyarrow.parquet.ParquetWriter` that gathers the tables written to it into row
    groups of ``max_rows`` rows or ``max_bytes`` bytes of Arrow memory, whichever is fewer
    (defaults :data:`ROW_GROUP_ROWS`, :data:`ROW_GROUP_BYTES`; 1 M localizations are 30 MB).

    One network batch gives a few hundred rows: written one by one, they made a row group
    each, tens of thousands for a long movie, slow to read and with a footer that grows with
    the movie. Here at most one row group's rows are held (plus the table being added), so
    memory stays flat with the movie's length. Rows are written in the order they come;
    :meth:`close` (or leaving the ``with`` block without an exception) writes the rest.
    """

    def __init__(
        self,
        where: str | Path,
        schema: pa.Schema,
        *,
        max_rows: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.max_rows = int(max_rows or ROW_GROUP_ROWS)
        self.max_bytes = int(max_bytes or ROW_GROUP_BYTES)
        if self.max_rows < 1 or self.max_bytes < 1:
            raise ValueError(f"row groups need max_rows, max_bytes >= 1, got {max_rows}, {max_bytes}")
        self.schema = schema
        self._writer = pq.ParquetWriter(where, schema)
        self._buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self._buffered_bytes = 0
        self.rows_written = 0

    def _group_rows(self) -> int:
        """Rows per row group: max_rows, or fewer where the buffered rows are wide."""
        if not self.buffered_rows or not self._buffered_bytes:
            return self.max_rows
        per_row = self._buffered_bytes / self.buffered_rows
        return max(1, min(self.max_rows, int(self.max_bytes // per_row)))

    def write_table(self, table: pa.Table) -> None:
        """Add ``table`` (the writer's schema, metadata aside); write each full row group."""
        if not table.num_rows:
            return
        self._buffer.append(table.replace_schema_metadata(self.schema.metadata))
        self.buffered_rows += table.num_rows
        self._buffered_bytes += table.nbytes
        group = self._group_rows()
        if self.buffered_rows >= group:
            self._flush(self.buffered_rows // group * group, group)

    def _flush(self, n_rows: int, group: int) -> None:
        """Write the first ``n_rows`` buffered rows in row groups of ``group`` rows."""
        table = pa.concat_tables(self._buffer)  # no copy: the chunks stay as they are
        self._writer.write_table(table.slice(0, n_rows), row_group_size=group)
        self.rows_written += n_rows
        rest = table.slice(n_rows)
        self._buffer = [rest] if rest.num_rows else []
        self.buffered_rows = rest.num_rows
        self._buffered_bytes = rest.nbytes if rest.num_rows else 0

    def close(self) -> None:
        """Write the buffered rows as the last row group and close the file."""
        if self.buffered_rows:
            self._flush(self.buffered_rows, self.buffered_rows)
        self._writer.close()

    def __enter__(self) -> RowGroupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # the file is abandoned (atomic_output removes it): no need to write the rest
            self._buffer, self.buffered_rows = [], 0
            self._writer.close()


def merge_locs(
    chunks: Sequence[str | Path],
    path: str | Path,
    metadata: Mapping[str, Any],
    *,
    row_group_rows: int | None = None,
) -> int:
    """Concatenate chunk Parquets (in order) into one, streaming: the chunks are read 64 k
    rows at a time and written in row groups of :class:`RowGroupWriter` (``row_group_rows``,
    default :data:`ROW_GROUP_ROWS`); returns the row count."""
    with atomic_output(path) as tmp:
        schema = LOC_SCHEMA.with_metadata(encode_metadata(metadata))
        with RowGroupWriter(tmp, schema, max_rows=row_group_rows) as writer:
            for chunk in chunks:
                for batch in iter_parquet_batches(pq.ParquetFile(chunk), 1 << 16):
                    writer.write_table(pa.Table.from_batches([batch]).cast(LOC_SCHEMA))
        n = writer.rows_written
    return n


def merge_chunk_files(chunks: Sequence[str | Path], path: str | Path) -> int:
    """Merge the chunk Parquets of one movie; metadata from the first chunk (minus its frame range)."""
    if not chunks:
        raise InputError(f"{path}: no chunk to merge")
    meta = read_metadata(chunks[0])
    meta.pop("frame_range", None)
    n = merge_locs(chunks, path, meta)
    log.info("%s: %d localizations from %d chunks", path, n, len(chunks))
    return n
