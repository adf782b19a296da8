"""The demo's "true microscope" and the camera images it records.

There is no real data here, so the pipeline makes its own from a description of the
microscope kept in config (``demo.microscope``). This true microscope deliberately differs
from the nominal one the pipeline assumes, as a real one does: its PSF is that of an ideal
1.49-NA oil objective imaging into water (``psf_model: vectorial``,
:mod:`voxloc.physics.vectorial`, tabulated once into ``true_psf.h5`` by
:func:`write_true_psf`), which follows the Gaussian of Table 2 only near focus (or, with
``psf_model: gaussian``, a Gaussian a few percent off Table 2: the paper's setting), its
focal planes are not exactly 400 nm apart, the cameras receive unequal shares of the light
(``transmission``), cameras 2-4 are misregistered by known affine maps (one of them
mirrored, as behind one more beam-splitter reflection), and the cameras add photon, EM-gain
and read noise, an offset and a gain, and write 16-bit integers. Later stages read the files exactly as real ones; the truth written beside them
says how close they got. The bead z-stacks are made by :mod:`voxloc.simulation.demo_beads`,
the STORM movies by :mod:`voxloc.simulation.demo_movies`.

Image formation (Eqs. 3-6 plus a camera): camera k sees a molecule at camera-1 position p
(pixel coordinates, see :mod:`voxloc.localization.resampling`) at T_k^-1 p, T_k being its camera-k ->
camera-1 registration; the expected photons per pixel are N t_k times the PSF of plane k
(:meth:`voxloc.physics.microscope.Microscope.render`, the one PSF interface) plus background, and
:func:`voxloc.physics.noise.add_noise` turns them into ADU, rounded and clipped to uint16.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voxloc.physics.cameras import N_PLANES, affine_matrix, apply_affine
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel, add_noise
from voxloc.physics.psf import PSFParams
from voxloc.physics.spline import SplinePSF
from voxloc.simulation.simulate import padded_emitters
from voxloc.types import FloatArray

__all__ = ["DemoMicroscope", "demo_rng", "render_cameras", "true_psf", "write_true_psf", "uses_true_psf"]

#: depth margin (nm) of the tabulated true PSF beyond the beads' and molecules' depths
TRUE_PSF_MARGIN_NM = 100.0


def uses_true_psf(demo_cfg: dict) -> bool:
    """Whether the demo's true microscope renders through a tabulated PSF file (vectorial)."""
    return demo_cfg["microscope"].get("psf_model", "vectorial") == "vectorial"


def true_psf(demo_cfg: dict, px_size_nm: float) -> SplinePSF:
    """The vectorial PSF of ``demo.microscope`` tabulated over every depth the demo renders
    (the beads' stage range and the movies' z range, plus a margin)."""
    from voxloc.physics.vectorial import vectorial_spline_psf

    mic, beads, movies = demo_cfg["microscope"], demo_cfg["beads"], demo_cfg["movies"]
    bz = float(beads["z_start_nm"]) + float(beads["z_step_nm"]) * np.array([0, int(beads["n_slices"]) - 1])
    mz = np.asarray(movies["z_range_nm"], dtype=np.float64)
    lo = float(min(bz.min(), mz.min())) - TRUE_PSF_MARGIN_NM
    hi = float(max(bz.max(), mz.max())) + TRUE_PSF_MARGIN_NM
    v = mic["vectorial"]
    t = np.asarray(mic["transmission"], dtype=np.float64)
    return vectorial_spline_psf(
        plane_z_nm=tuple(float(z) for z in mic["plane_z_nm"]),
        px_size_nm=float(px_size_nm),
        half_px=int(v["half_px"]),
        z_range_nm=(lo, hi),
        z_step_nm=float(v["z_step_nm"]),
        na=float(v["na"]),
        wavelength_nm=float(v["wavelength_nm"]),
        n_immersion=float(v["n_immersion"]),
        n_sample=float(v["n_sample"]),
        transmission=t / t.sum(),
    )


def write_true_psf(path: str | Path, demo_cfg: dict, px_size_nm: float) -> None:
    """Tabulate :func:`true_psf` into ``path`` (HDF5, atomically), read by
    :meth:`DemoMicroscope.from_config` and, through the ground truth, by the evaluation."""
    from voxloc.calibration.spline_files import save_spline_psf

    save_spline_psf(path, true_psf(demo_cfg, px_size_nm), source="demo true microscope (vectorial)",
                    vectorial=dict(demo_cfg["microscope"]["vectorial"]))  # fmt: skip


def demo_rng(seed: int, key: str) -> np.random.Generator:
    """Generator of one demo item: SeedSequence([seed, crc32(key)]), so reruns are bit-identical."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))


@dataclass(frozen=True, eq=False)
class DemoMicroscope:
    """The true microscope: its physics and its cameras' registrations and frame size.

    ``physics`` is the PSF (vectorial, tabulated, or Table 2 form), focal planes, pixel
    size, the cameras' transmission and noise;
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
    def from_config(
        cls, demo_cfg: dict, px_size_nm: float, true_psf_h5: str | Path | None = None
    ) -> DemoMicroscope:
        """From config section ``demo`` (``frame_size`` and ``microscope``) and, for the
        vectorial PSF, the file :func:`write_true_psf` made (``true_psf_h5``).

        The Gaussian PSF is point-sampled at the pixel centres, as in Eq. 4.
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
        t = np.asarray(mic.get("transmission", [1.0] * N_PLANES), dtype=np.float64)
        extra: dict = {}
        if uses_true_psf(demo_cfg):
            if true_psf_h5 is None:
                raise ValueError("the vectorial demo microscope needs its tabulated PSF (true_psf_h5)")
            from voxloc.calibration.spline_files import load_spline_psf
            from voxloc.io import file_sha256

            psf = load_spline_psf(true_psf_h5, expect_planes=N_PLANES, expect_grid={"px_size_nm": px_size_nm})
            extra = {"psf_file": str(true_psf_h5), "psf_sha256": file_sha256(true_psf_h5)}
        else:
            psf = PSFParams.from_dict(mic["psf"])
        physics = Microscope(
            psf=psf,
            plane_z_nm=tuple(float(z) for z in mic["plane_z_nm"]),
            px_size_nm=float(px_size_nm),
            noise=noise,
            transmission=tuple(t / t.sum()),
            **extra,
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
    xy, z, photons = padded_emitters(emitters, n_frames)
    out = np.empty((n_frames, N_PLANES, h, w), dtype=np.uint16)
    for s in range(0, n_frames, batch_frames):
        e = min(s + batch_frames, n_frames)
        # (B, M, 4, 2): plane k seen by camera k
        image = microscope.physics.render(microscope.camera_xy_nm(xy[s:e]), z[s:e], photons[s:e], (h, w))
        if extra_background is not None:
            image += np.asarray(extra_background, dtype=np.float32)
        adu = add_noise(image, microscope.physics.noise, rng)
        out[s:e] = np.clip(np.rint(adu), 0, 65535)
    return out
