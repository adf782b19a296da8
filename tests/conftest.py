"""Helpers shared by tests of several stages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def _corrupt_middle(path: Path) -> list[int]:
    """Overwrite 4 KiB in the middle of a shard, all inside the frames' compressed chunks (as
    a disk or copy error might); returns the frames whose chunks were hit."""
    import h5py

    size = path.stat().st_size
    with h5py.File(path) as h5:
        ds = h5["frames"]
        chunks = [ds.id.get_chunk_info(i) for i in range(ds.id.get_num_chunks())]
    start, stop = size // 2 - 2048, size // 2 + 2048
    assert min(c.byte_offset for c in chunks) <= start and stop <= max(c.byte_offset + c.size for c in chunks)
    hit = [c.chunk_offset[0] for c in chunks if c.byte_offset < stop and start < c.byte_offset + c.size]
    with open(path, "r+b") as fh:
        fh.seek(start)
        fh.write(np.random.default_rng(0).bytes(stop - start))
    return hit


@pytest.fixture
def corrupt_middle() -> Callable[[Path], list[int]]:
    """:func:`_corrupt_middle`: damage a finished shard as a disk error would."""
    return _corrupt_middle
