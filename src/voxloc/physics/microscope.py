"""The physics of one quad-plane microscope, bundled: PSF, focal planes, pixel, camera noise.

A :class:`Microscope` says how molecules become an expected image and the expected image a
recorded one (Eqs. 3-7): the PSF, either the Gaussian of Eqs. 4-6
(:class:`voxloc.physics.psf.PSFParams`, model ``gaussian``) or a measured cubic spline
(:class:`voxloc.physics.spline.SplinePSF`, model ``spline``), the positions z_k of the P
focal planes (nm, plane 1 first), the lateral pixel size s (nm, in the sample: also the voxel
size of the network's grid), the planes' transmission t_k (the share of a molecule's detected
photons that reaches camera k, sum 1), the noise model ε of Eq. 3
(:class:`voxloc.physics.noise.NoiseModel`), and whether the Gaussian is point-sampled at the
pixel centres (Eq. 4, the default) or averaged over each pixel (the spline is a
pixel-integrated PSF already).

Photometry is the same under both models: a molecule of N photons (summed over the planes)
gives N t_k photons to plane k, spread by the PSF of that plane (for the Gaussian at any
defocus; for the spline as measured, less what leaves its window). The paper's weights are
N = P w a' / s² (:func:`voxloc.physics.psf.photons_per_plane`).

It is the one description of these shared by the simulator's settings
(``voxloc.simulation.settings.SimulationSettings.physics``), the demo's true microscope
(``voxloc.simulation.demo.DemoMicroscope.physics``, which adds the cameras' registrations and
frame size) and the Cramér-Rao bound (:mod:`voxloc.physics.crlb`). A ground-truth Parquet
carries it as key-value metadata (:meth:`Microscope.metadata`, read back by
:meth:`Microscope.from_metadata`), so that the bound is computed for the physics that made
the data; a spline PSF is carried by reference (its file and SHA-256, ``psf_file``), as its
coefficients are too large for metadata. The defaults are the nominal microscope of the paper:
Table 2, planes 400 nm apart, 192 nm pixels, equal transmission, the ``paper`` noise of
Table 3.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from voxloc.physics._patch_kernels import PatchModel, patch_model, patches
from voxloc.physics.noise import NoiseModel, signal_gain
from voxloc.physics.psf import TABLE2, PSFParams, render_planes
from voxloc.physics.spline import SplinePSF, render_spline_planes
from voxloc.types import FloatArray

__all__ = ["NOMINAL_PLANE_Z_NM", "PSF_MODELS", "Microscope"]

#: the PSF models a Microscope can hold (config ``psf.model``)
PSF_MODELS = ("gaussian", "spline")

#: focal planes of the nominal microscope (nm from plane 1)
NOMINAL_PLANE_Z_NM = (0.0, 400.0, 800.0, 1200.0)


@dataclass(frozen=True)
class Microscope:
    """PSF, focal planes, pixel size, transmission and noise (Eq. 3) of a microscope (module doc).

    ``transmission`` None means: equal shares for the Gaussian, the spline's own measured
    ratios for a spline (given explicitly, it replaces them). ``psf_file`` / ``psf_sha256``
    say where a spline PSF was read from (:meth:`metadata` writes them).
    """

    psf: PSFParams | SplinePSF = TABLE2
    plane_z_nm: tuple[float, ...] = NOMINAL_PLANE_Z_NM
    px_size_nm: float = 192.0
    noise: NoiseModel = field(default_factory=NoiseModel)
    integrate_pixels: bool = False  # Gaussian: average over the pixel instead of sampling it
    transmission: tuple[float, ...] | None = None
    psf_file: str = ""
    psf_sha256: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plane_z_nm", tuple(float(z) for z in self.plane_z_nm))
        n = len(self.plane_z_nm)
        t = self.transmission
        if isinstance(self.psf, SplinePSF):
            if self.psf.n_planes != n:
                raise ValueError(f"the spline PSF has {self.psf.n_planes} planes, the microscope {n}")
            if abs(self.psf.px_size_nm - float(self.px_size_nm)) > 1e-6 * self.px_size_nm:
                raise ValueError(
                    f"the spline PSF has {self.psf.px_size_nm:g} nm pixels, the microscope {self.px_size_nm:g}"
                )
            if t is None:
                t = tuple(float(v) for v in self.psf.transmission)
            elif not np.allclose(t, self.psf.transmission, rtol=0, atol=1e-12):
                # keep the spline and the microscope on one set of shares
                object.__setattr__(self, "psf", dataclasses.replace(self.psf, transmission=np.asarray(t)))
        elif not isinstance(self.psf, PSFParams):
            raise TypeError(f"psf must be PSFParams or SplinePSF, got {type(self.psf).__name__}")
        if t is None:
            t = (1.0 / n,) * n
        t = tuple(float(v) for v in t)
        if len(t) != n or min(t) < 0 or not np.isclose(sum(t), 1.0, rtol=0, atol=1e-6):
            raise ValueError(f"transmission must be {n} shares >= 0 that sum to 1, got {t}")
        object.__setattr__(self, "transmission", t)

    @property
    def model(self) -> str:
        """The PSF model: ``gaussian`` (Eqs. 4-6) or ``spline`` (measured from beads)."""
        return "spline" if isinstance(self.psf, SplinePSF) else "gaussian"

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
        photons: FloatArray,
        shape: tuple[int, int],
        *,
        dtype: type = np.float32,
    ) -> FloatArray:
        """Expected image (..., P, H, W) in photons of molecules seen by plane k at ``xy_nm``
        (..., M, P, 2) with depths and photons summed over the planes (..., M; 0 = padding):
        :func:`voxloc.physics.psf.render_planes` or
        :func:`voxloc.physics.spline.render_spline_planes` for this microscope's PSF."""
        if isinstance(self.psf, SplinePSF):
            return render_spline_planes(xy_nm, z_nm, photons, self.psf, shape, dtype=dtype)
        return render_planes(
            xy_nm,
            z_nm,
            photons,
            self.psf,
            np.asarray(self.plane_z_nm),
            shape,
            self.px_size_nm,
            transmission=np.asarray(self.transmission),
            integrate=self.integrate_pixels,
            dtype=dtype,
        )

    def patches(
        self,
        x_px: FloatArray,
        y_px: FloatArray,
        z_nm: FloatArray,
        origin: FloatArray,
        n: int,
        *,
        derivatives: bool = False,
    ) -> tuple[FloatArray, FloatArray | None]:
        """Expected images per detected photon on fixed windows of side ``n`` starting at pixel
        ``origin`` (N, P, 2) = (column, row) of each plane, for molecules that plane k sees at
        (``x_px``, ``y_px``)[m, k] px at depth ``z_nm`` (N,): (N, P, n, n), transmission
        included, no background; with ``derivatives`` also d/dx_nm, d/dy_nm (of plane k's
        position) and d/dz_nm, (N, P, 3, n, n). The per-molecule fitter's model
        (compiled: :mod:`voxloc.physics._patch_kernels`);
        the same function as :meth:`render`."""
        return patches(self.patch_model(n), x_px, y_px, z_nm, origin, n, derivatives=derivatives)

    def patch_model(self, n: int) -> PatchModel:
        """The PSF in the form of the compiled window kernels (:mod:`voxloc.physics._patch_kernels`),
        for windows of side up to ``n``; a spline's is kept with it."""
        if isinstance(self.psf, SplinePSF):
            model = self.psf._patch.get(n)
            if model is None:
                model = self.psf._patch[n] = patch_model(
                    self.psf, np.asarray(self.plane_z_nm), np.asarray(self.transmission),
                    self.px_size_nm, False, n,
                )  # fmt: skip
            return model
        return patch_model(
            self.psf, np.asarray(self.plane_z_nm), np.asarray(self.transmission), self.px_size_nm,
            self.integrate_pixels, n,
        )  # fmt: skip

    def psf_dict(self) -> dict:
        """The PSF as JSON-able data: Table 2 parameters, or a spline's file reference."""
        if isinstance(self.psf, SplinePSF):
            if not self.psf_file:
                raise ValueError("a spline PSF is stored by reference: the Microscope needs its psf_file")
            # the path as given (relative to the working directory, which may move) and as an
            # absolute path (for readers elsewhere); the SHA-256 tells the file that was used
            absolute = os.path.abspath(self.psf_file)
            return {"model": "spline", "file": self.psf_file, "abs_file": absolute, "sha256": self.psf_sha256}
        return self.psf.to_dict()

    def metadata(self) -> dict[str, str]:
        """Parquet key-value metadata (JSON strings) that :meth:`from_metadata` reads back.

        The pixel size is not among them: every voxloc Parquet that needs it carries its own
        ``px_size_nm`` key (e.g. :func:`voxloc.simulation.demo_movies.write_ground_truth`).
        """
        return {
            "psf": json.dumps(self.psf_dict()),
            "plane_z_nm": json.dumps([float(z) for z in self.plane_z_nm]),
            "noise": json.dumps(self.noise.to_dict()),
            "integrate_pixels": json.dumps(bool(self.integrate_pixels)),
            "transmission": json.dumps(list(self.transmission)),
        }

    @classmethod
    def from_metadata(
        cls, meta: Mapping[str, str], *, load_spline: Callable[[Mapping], SplinePSF] | None = None
    ) -> Microscope:
        """The microscope of Parquet metadata written with :meth:`metadata` plus ``px_size_nm``
        (``integrate_pixels`` and ``transmission`` may be absent: false, equal). A spline
        reference (:meth:`psf_dict`) is read with ``load_spline(reference)`` (e.g.
        :func:`voxloc.calibration.spline_files.load_spline_reference`). Raises KeyError,
        ValueError or TypeError on missing or malformed values."""
        psf_d = json.loads(meta["psf"])
        return cls.from_parts(
            psf_d,
            plane_z_nm=json.loads(meta["plane_z_nm"]),
            px_size_nm=float(meta["px_size_nm"]),
            noise=json.loads(meta["noise"]),
            integrate_pixels=bool(json.loads(meta.get("integrate_pixels", "false"))),
            transmission=json.loads(meta["transmission"]) if "transmission" in meta else None,
            load_spline=load_spline,
        )

    @classmethod
    def from_parts(
        cls,
        psf: Mapping,
        *,
        plane_z_nm,
        px_size_nm: float,
        noise: Mapping,
        integrate_pixels: bool = False,
        transmission=None,
        load_spline: Callable[[Mapping], SplinePSF] | None = None,
    ) -> Microscope:
        """A microscope from JSON-able parts (:meth:`psf_dict`, planes, pixel, noise dict)."""
        extra: dict = {}
        if psf.get("model") == "spline":
            if load_spline is None:
                raise ValueError(f"a spline PSF ({psf.get('file')}) needs a loader here")
            model = load_spline(psf)
            extra = {"psf_file": str(psf["file"]), "psf_sha256": str(psf.get("sha256", ""))}
        else:
            model = PSFParams.from_dict(dict(psf))
        return cls(
            psf=model,
            plane_z_nm=tuple(float(z) for z in plane_z_nm),
            px_size_nm=float(px_size_nm),
            noise=NoiseModel(**noise),
            integrate_pixels=bool(integrate_pixels),
            transmission=None if transmission is None else tuple(float(v) for v in transmission),
            **extra,
        )
