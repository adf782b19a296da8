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


@pytest.fixture(scope="session")
def gaussian_spline() -> Callable:
    """Builds the spline through the pixel-integrated Table 2 Gaussian at its nodes (planes
    0-1200 nm, 192 nm pixels, nodes -300 .. 1500 nm every 20 nm, per-z sum 1), ±``half`` px."""
    from voxloc.physics.psf import TABLE2, render_planes
    from voxloc.physics.spline import SplinePSF

    planes, px, z0, dz, nz = (0.0, 400.0, 800.0, 1200.0), 192.0, -300.0, 20.0, 91

    def build(half: int = 8) -> SplinePSF:
        r = half + 1
        side = 2 * r + 1
        z = z0 + dz * np.arange(nz)
        xy = np.full((nz, 1, len(planes), 2), (r + 0.5) * px)
        img = render_planes(xy, z[:, None], np.ones((nz, 1)), TABLE2, np.array(planes), (side, side), px,
                            integrate=True, dtype=np.float64)  # fmt: skip
        return SplinePSF.from_samples(img.transpose(1, 0, 2, 3), z0_nm=z0, z_step_nm=dz, px_size_nm=px,
                                      plane_z_nm=planes)  # fmt: skip

    return build
