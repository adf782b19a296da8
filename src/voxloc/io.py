"""Small file helpers shared by every writer: atomic outputs, YAML, TIFF, Parquet batches.

Parquet tables with voxloc's key-value metadata are written by :mod:`voxloc.locs`
(:func:`voxloc.locs.write_parquet`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
import yaml

from voxloc.errors import InputError, os_problem
from voxloc.runtime import remove_stale_temps, temp_path

__all__ = [
    "file_sha256",
    "atomic_output",
    "iter_parquet_batches",
    "to_builtin",
    "write_yaml",
    "read_yaml",
    "write_tiff",
]


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The temporary file is ``.<name>.tmp<pid>`` (:func:`voxloc.runtime.temp_path`). On any
    exception, SIGTERM in a rule job included (:mod:`voxloc.runtime`), it is removed, so no
    half-written output is left and an existing ``path`` is untouched; those of earlier
    writers that were killed (SIGKILL leaves them) are removed before writing, where their
    pid is no live process. A permission or disk-full OSError that names no file, or the
    temporary one (pyarrow's, h5py's), is given ``path`` as its filename, so that
    :func:`voxloc.errors.user_message` names the output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path, dead_only=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if os_problem(exc) and _names_no_file_or(exc.filename, tmp):
            exc.filename = str(path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _names_no_file_or(filename: object, tmp: Path) -> bool:
    """An OSError's filename is None or the temporary file (by name: tifffile resolves links)."""
    if filename is None:
        return True
    return isinstance(filename, str | bytes | os.PathLike) and Path(os.fsdecode(filename)).name == tmp.name


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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (how a file referenced from metadata is recognised)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
