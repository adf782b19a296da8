"""The physics of one quad-plane microscope, bundled: PSF, focal planes, pixel, camera noise.

A :class:`Microscope` says how molecules become an expected image and the expected image a
recorded one (Eqs. 3-7): the PSF of Eqs. 4-6 (:class:`voxloc.physics.psf.PSFParams`), the
positions z_k of the P focal planes (nm, plane 1 first), the lateral pixel size s (nm, in
the sample: also the voxel size of the network's grid), the noise model ε of Eq. 3
(:class:`voxloc.physics.noise.NoiseModel`), and whether the PSF is point-sampled at the pixel
centres (Eq. 4, the default) or averaged over each pixel.

It is the one description of these shared by the simulator's settings
(``voxloc.simulation.settings.SimulationSettings.physics``), the demo's true microscope
(``voxloc.simulation.demo.DemoMicroscope.physics``, which adds the cameras' registrations and
frame size) and the Cramér-Rao bound (:mod:`voxloc.physics.crlb`). A ground-truth Parquet
carries it as key-value metadata (:meth:`Microscope.metadata`, read back by
:meth:`Microscope.from_metadata`), so that the bound is computed for the physics that made
the data. The defaults are the nominal microscope of the paper: Table 2, planes 400 nm
apart, 192 nm pixels, the ``paper`` noise of Table 3.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from voxloc.physics.noise import NoiseModel, signal_gain
from voxloc.physics.psf import TABLE2, PSFParams, render_planes
from voxloc.types import FloatArray

__all__ = ["NOMINAL_PLANE_Z_NM", "Microscope"]

#: focal planes of the nominal microscope (nm from plane 1)
NOMINAL_PLANE_Z_NM = (0.0, 400.0, 800.0, 1200.0)


@dataclass(frozen=True)
class Microscope:
    """PSF (Eqs. 4-6), focal planes, pixel size and noise (Eq. 3) of a microscope (module doc)."""

    psf: PSFParams = TABLE2
    plane_z_nm: tuple[float, ...] = NOMINAL_PLANE_Z_NM
    px_size_nm: float = 192.0
    noise: NoiseModel = field(default_factory=NoiseModel)
    integrate_pixels: bool = False  # average the PSF over the pixel instead of sampling it

    def __post_init__(self) -> None:
        object.__setattr__(self, "plane_z_nm", tuple(float(z) for z in self.plane_z_nm))

    @property
    def n_planes(self) -> int:
        return len(self.plane_z_nm)

    @property
    def adu_per_photon(self) -> float:
        """Mean recorded units above the baseline per photon: ADU/photon for the ``physical``
        noise model, 1 for the others (which record photons)."""
        return signal_gain(self.noise)

    def render(
        self,
        xy_nm: FloatArray,
        z_nm: FloatArray,
        weight: FloatArray,
        shape: tuple[int, int],
        *,
        dtype: type = np.float32,
    ) -> FloatArray:
        """Expected image (..., P, H, W) of molecules seen by plane k at ``xy_nm`` (..., M, P, 2)
        with depths and weights (..., M): :func:`voxloc.physics.psf.render_planes` for this
        microscope's PSF, planes, pixel and pixel sampling."""
        return render_planes(
            xy_nm,
            z_nm,
            weight,
            self.psf,
            np.asarray(self.plane_z_nm),
            shape,
            self.px_size_nm,
            integrate=self.integrate_pixels,
            dtype=dtype,
        )

    def metadata(self) -> dict[str, str]:
        """Parquet key-value metadata (JSON strings) that :meth:`from_metadata` reads back.

        The pixel size is not among them: every voxloc Parquet that needs it carries its own
        ``px_size_nm`` key (e.g. :func:`voxloc.simulation.demo_movies.write_ground_truth`).
        """
        return {
            "psf": json.dumps(self.psf.to_dict()),
            "plane_z_nm": json.dumps([float(z) for z in self.plane_z_nm]),
            "noise": json.dumps(self.noise.to_dict()),
            "integrate_pixels": json.dumps(bool(self.integrate_pixels)),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str]) -> Microscope:
        """The microscope of Parquet metadata written with :meth:`metadata` plus ``px_size_nm``
        (``integrate_pixels`` may be absent: false). Raises KeyError, ValueError or TypeError
        on missing or malformed values."""
        return cls(
            psf=PSFParams.from_dict(json.loads(meta["psf"])),
            plane_z_nm=tuple(float(z) for z in json.loads(meta["plane_z_nm"])),
            px_size_nm=float(meta["px_size_nm"]),
            noise=NoiseModel(**json.loads(meta["noise"])),
            integrate_pixels=bool(json.loads(meta.get("integrate_pixels", "false"))),
        )
