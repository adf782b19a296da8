"""voxloc: 3D SMLM for quad-plane microscopes by voxel-wise regression (Aritake et al. 2020)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voxloc")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0+src"

__all__ = []
