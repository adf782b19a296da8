"""The demo's "true microscope" and the camera images it records.

There is no real data here, so the pipeline makes its own from a description of the
microscope kept in config (``demo.microscope``). This true microscope deliberately differs
from the nominal one the pipeline assumes, as a real one does: its PSF is a few percent off
Table 2, its focal planes are not exactly 400 nm apart, cameras 2-4 are misregistered by
known affine maps (one of them mirrored, as behind one more beam-splitter reflection), and
the cameras add photon, EM-gain and read noise, an offset and a gain, and write 16-bit
integers. Later stages read the files exactly as real ones; the truth written beside them
says how close they got. The bead z-stacks are made by :mod:`voxloc.simulation.demo_beads`,
the STORM movies by :mod:`voxloc.simulation.demo_movies`.

Image formation (Eqs. 3-6 plus a camera): camera k sees a molecule at camera-1 position p
(pixel coordinates, see :mod:`voxloc.localization.resampling`) at T_k^-1 p, T_k being its camera-k ->
camera-1 registration; the expected photons per pixel are the PSF of Eq. 4 for plane k
(:func:`voxloc.physics.psf.render_planes`, the one PSF implementation) plus background, and
:func:`voxloc.physics.noise.add_noise` turns them into ADU, rounded and clipped to uint16.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from voxloc.physics.cameras import N_PLANES, affine_matrix, apply_affine
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, add_noise
from voxloc.physics.psf import PSFParams
from voxloc.simulation.simulate import padded_emitters
from voxloc.types import FloatArray

__all__ = ["DemoMicroscope", "demo_rng", "render_cameras"]


def demo_rng(seed: int, key: str) -> np.random.Generator:
    """Generator of one demo item: SeedSequence([seed, crc32(key)]), so reruns are bit-identical."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


@dataclass(frozen=True, eq=False)
class DemoMicroscope:
    """The true microscope: its physics and its cameras' registrations and frame size.

    ``physics`` is the PSF (Table 2 form), focal planes, pixel size and camera noise;
    ``registrations[k]`` is the 3 x 3 matrix T_k mapping camera-k pixel coordinates onto
    camera-1 ones (T_1 = identity); all cameras are ``height`` x ``width`` pixels.
    """

    physics: Microscope
    registrations: tuple[FloatArray, ...]
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.physics.n_planes != N_PLANES or len(self.registrations) != N_PLANES:
            raise ValueError(f"the demo microscope has {N_PLANES} planes and {N_PLANES} cameras")
        if not np.allclose(self.registrations[0], np.eye(3)):
            raise ValueError("camera 1 defines the coordinates: its registration must be the identity")

    @classmethod
    def from_config(cls, demo_cfg: dict, px_size_nm: float) -> DemoMicroscope:
        """From config section ``demo`` (``frame_size`` and ``microscope``).

        The PSF is point-sampled at the pixel centres, as in Eq. 4.
        """
        mic = demo_cfg["microscope"]
        height, width = (int(v) for v in demo_cfg["frame_size"])
        camera = dict(mic["camera"])
        noise = NoiseModel(kind=camera.pop("noise", "physical"), **camera)
        registrations = tuple(
            affine_matrix(
                height=height,
                width=width,
                flip=c.get("flip", "none"),
                rotation_deg=float(c.get("rotation_deg", 0.0)),
                scale=float(c.get("scale", 1.0)),
                shift_px=tuple(float(v) for v in c.get("shift_px", (0.0, 0.0))),
            )
            for c in mic["cameras"]
        )
        physics = Microscope(
            psf=PSFParams.from_dict(mic["psf"]),
            plane_z_nm=tuple(float(z) for z in mic["plane_z_nm"]),
            px_size_nm=float(px_size_nm),
            noise=noise,
        )
        return cls(physics=physics, registrations=registrations, height=height, width=width)

    def camera_xy_nm(self, xy_nm: FloatArray) -> FloatArray:
        """Camera-1 positions (..., 2) nm -> where each camera sees them, (..., 4, 2) nm."""
        s = self.physics.px_size_nm
        p_px = np.asarray(xy_nm, dtype=np.float64) / s
        seen = [apply_affine(np.linalg.inv(t), p_px) for t in self.registrations]
        return np.stack(seen, axis=-2) * s


def render_cameras(
    microscope: DemoMicroscope,
    emitters: pd.DataFrame,
    n_frames: int,
    rng: np.random.Generator,
    extra_background: FloatArray | None = None,
    *,
    batch_frames: int = 64,
) -> np.ndarray:
    """Camera images (T, 4, H, W) uint16 of an emitter table in camera-1 nm (Eqs. 3-6).

    ``extra_background`` (photons, broadcast to (4, H, W)) is added to the expected image
    before the noise, on top of the noise model's constant background λ. Frames are
    rendered ``batch_frames`` at a time, so only the output is held in memory.
    """
    h, w = microscope.height, microscope.width
    xy, z, weight = padded_emitters(emitters, n_frames)
    out = np.empty((n_frames, N_PLANES, h, w), dtype=np.uint16)
    for s in range(0, n_frames, batch_frames):
        e = min(s + batch_frames, n_frames)
        # (B, M, 4, 2): plane k seen by camera k
        photons = microscope.physics.render(microscope.camera_xy_nm(xy[s:e]), z[s:e], weight[s:e], (h, w))
        if extra_background is not None:
            photons += np.asarray(extra_background, dtype=np.float32)
        adu = add_noise(photons, microscope.physics.noise, rng)
        out[s:e] = np.clip(np.rint(adu), 0, 65535)
    return out
