"""Affine registration of cameras 2-4 onto camera 1 (Aritake et al. 2020, Sect. 4.1).

Coordinates are continuous pixel coordinates (x, y) = (column, row) in which pixel (i, j)
has its centre at (j + 0.5, i + 0.5), i.e. positions in nm divided by the pixel size.
A registration is a 3 x 3 homogeneous matrix T_k that maps camera-k coordinates onto
camera-1 coordinates: (x1, y1, 1)^T = T_k (xk, yk, 1)^T; T_1 is the identity.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from voxloc.network.normalise import row_median
from voxloc.physics.cameras import apply_affine
from voxloc.types import FloatArray

__all__ = ["Resampler", "TorchResampler"]


class Resampler:
    """Maps the frames of cameras 2-4 onto camera 1's pixel grid (bilinear interpolation).

    Output pixel (i, j) of plane k takes camera k at T_k^{-1}(j + 0.5, i + 0.5). Output
    pixels whose source point falls outside camera k (a registration that leaves part of
    the field uncovered, or cameras of different sizes) are *uncovered*: they are filled
    with the median of that camera's frame (its background level), so the network sees
    plain background there, and ``coverage`` (P, H, W) marks them False so callers can drop
    localizations from uncovered areas. Points within half a pixel of a camera's edge take
    the edge pixels (clamped).
    """

    def __init__(self, matrices: list[FloatArray], camera_shapes: list[tuple[int, int]]) -> None:
        if len(matrices) != len(camera_shapes):
            raise ValueError("one registration matrix per camera is needed")
        self.height, self.width = camera_shapes[0]
        self.camera_shapes = [tuple(s) for s in camera_shapes]
        yy, xx = np.mgrid[0 : self.height, 0 : self.width]
        p1 = np.stack([xx.ravel() + 0.5, yy.ravel() + 0.5], axis=-1)
        self._plans: list[tuple | None] = []
        coverage = []
        for m, (h, w) in zip(matrices, camera_shapes, strict=True):
            m = np.asarray(m, dtype=np.float64)
            if np.allclose(m, np.eye(3)) and (h, w) == (self.height, self.width):
                self._plans.append(None)  # identity: copy
                coverage.append(np.ones((self.height, self.width), dtype=bool))
                continue
            q = apply_affine(np.linalg.inv(m), p1)
            u, v = q[:, 0] - 0.5, q[:, 1] - 0.5  # array coordinates of camera k
            covered = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
            u = np.clip(u, 0, w - 1)
            v = np.clip(v, 0, h - 1)
            j0 = np.minimum(np.floor(u).astype(np.int64), max(w - 2, 0))
            i0 = np.minimum(np.floor(v).astype(np.int64), max(h - 2, 0))
            fx = (u - j0).astype(np.float32)
            fy = (v - i0).astype(np.float32)
            j1 = np.minimum(j0 + 1, w - 1)
            i1 = np.minimum(i0 + 1, h - 1)
            idx = np.stack([i0 * w + j0, i0 * w + j1, i1 * w + j0, i1 * w + j1], axis=1)
            wts = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
            # bilinear interpolation as a sparse (H W) x (h w) matrix, 4 weights per row:
            # one sparse product per batch, ~5x faster than four gathers
            rows = np.repeat(np.arange(idx.shape[0]), 4)
            shape = (self.height * self.width, h * w)
            matrix = sparse.csr_matrix((wts.ravel(), (rows, idx.ravel())), shape=shape, dtype=np.float32)
            self._plans.append((matrix, covered, idx, wts))  # idx, wts: for to_torch
            coverage.append(covered.reshape(self.height, self.width))
        self.coverage = np.stack(coverage)

    def __call__(self, frames: list[FloatArray]) -> FloatArray:
        """Per-camera batches [(B, H_k, W_k)] -> registered (B, P, H, W) float32."""
        b = frames[0].shape[0]
        out = np.empty((b, len(frames), self.height, self.width), dtype=np.float32)
        for k, (src, plan) in enumerate(zip(frames, self._plans, strict=True)):
            if plan is None:
                out[:, k] = src
                continue
            matrix, covered = plan[:2]
            flat = src.reshape(b, -1)
            acc = np.asarray((matrix @ flat.T).T, dtype=np.float32)  # (H W, h w) @ (h w, B)
            if not covered.all():
                acc[:, ~covered] = row_median(flat)[:, None]
            out[:, k] = acc.reshape(b, self.height, self.width)
        return out

    def to_torch(self, device: Any) -> TorchResampler:
        """The same resampling as torch operations on ``device`` (the GPU path of localization)."""
        return TorchResampler(self, device)


class TorchResampler:
    """:class:`Resampler` on a torch device: per resampled camera, a gather of the four
    bilinear neighbours of each output pixel and their weights, and the median fill of
    uncovered pixels (:func:`voxloc.network.normalise.row_median`). Same values as the numpy path up to
    float32 rounding; ``coverage`` stays the host array."""

    def __init__(self, resampler: Resampler, device: Any) -> None:
        import torch

        self.height, self.width = resampler.height, resampler.width
        self.coverage = resampler.coverage
        self._plans: list[tuple | None] = []
        for plan in resampler._plans:
            if plan is None:
                self._plans.append(None)
                continue
            _, covered, idx, wts = plan
            self._plans.append(
                (
                    torch.as_tensor(idx, device=device),
                    torch.as_tensor(wts, device=device),
                    None if covered.all() else torch.as_tensor(~covered, device=device),
                )
            )

    def __call__(self, frames: list[Any]) -> Any:
        """Per-camera float32 tensors [(B, H_k, W_k)] -> registered (B, P, H, W)."""
        import torch

        b = frames[0].shape[0]
        out = []
        for src, plan in zip(frames, self._plans, strict=True):
            if plan is None:
                out.append(src)
                continue
            idx, wts, uncovered = plan
            flat = src.reshape(b, -1)
            acc = (flat[:, idx] * wts).sum(dim=-1)  # (B, H W, 4) -> (B, H W)
            if uncovered is not None:
                acc = torch.where(uncovered, row_median(flat)[:, None], acc)
            out.append(acc.reshape(b, self.height, self.width))
        return torch.stack(out, dim=1)
