"""Small file helpers shared by every writer: atomic outputs, YAML, Parquet, TIFF."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import yaml

from voxloc.errors import InputError

__all__ = [
    "atomic_output",
    "iter_parquet_batches",
    "to_builtin",
    "write_yaml",
    "read_yaml",
    "write_tiff",
    "write_parquet",
]


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    On any exception the temporary file is removed, so no half-written output is left and
    an existing ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def to_builtin(value: object, *, finite: bool = False) -> object:
    """Plain Python data (dict, list, str, int, float) from numpy arrays/scalars, tuples and
    str subclasses, for YAML, JSON or ``torch.load(weights_only=True)``; with ``finite``,
    NaN and infinities become None."""
    if isinstance(value, dict):
        return {str(k): to_builtin(v, finite=finite) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_builtin(v, finite=finite) for v in value]
    if isinstance(value, np.ndarray):
        return to_builtin(value.tolist(), finite=finite)
    if isinstance(value, np.generic):
        return to_builtin(value.item(), finite=finite)
    if isinstance(value, float) and finite and not np.isfinite(value):
        return None
    if isinstance(value, str):
        return str(value)
    return value


def write_yaml(path: str | Path, data: dict) -> None:
    """Write a YAML document atomically (numpy values converted to plain Python)."""
    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(to_builtin(data), sort_keys=False))


def read_yaml(path: str | Path) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def write_tiff(path: str | Path, data: np.ndarray, *, axes: str, **kwargs) -> None:
    """Write an image stack atomically as a (Big)TIFF, always 'minisblack' (never RGB).

    tifffile would store an axis of length 3 or 4 as colour samples unless told otherwise;
    quad-plane frames have exactly such an axis.
    """
    import tifffile

    bigtiff = data.nbytes > 2**31
    with atomic_output(path) as tmp:
        tifffile.imwrite(
            tmp, data, photometric="minisblack", metadata={"axes": axes}, bigtiff=bigtiff, **kwargs
        )


def write_parquet(path: str | Path, table: pd.DataFrame, **metadata: object) -> None:
    """Write a table atomically as Parquet, with ``metadata`` (and the voxloc version) stored
    as the file's key-value metadata (values as strings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from voxloc import __version__

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    extra = {"voxloc_version": __version__, **metadata}
    meta.update({str(k).encode(): str(v).encode() for k, v in extra.items()})
    with atomic_output(path) as tmp:
        pq.write_table(arrow.replace_schema_metadata(meta), tmp)


def iter_parquet_batches(pf, batch_rows: int, columns: list[str] | None = None):
    """Record batches of an open ``pyarrow.parquet.ParquetFile``, one row group after another.

    Arrow decodes a whole row group at a time, and iter_batches over the whole file keeps
    earlier row groups allocated until the end (seen with pyarrow 26.0.1), so memory would
    grow with the file: hence one reader per row group.
    """
    for group in range(pf.num_row_groups):
        yield from pf.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group])


def open_tiff(path: Path) -> tifffile.TiffFile:
    """Open a TIFF, or raise a one-line InputError naming it (missing, unreadable, empty)."""
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise InputError(f"{path}: not a readable TIFF ({exc})".splitlines()[0]) from None
    if not tif.series:
        tif.close()
        raise InputError(f"{path}: TIFF holds no image series")
    return tif
