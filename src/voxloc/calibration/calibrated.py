"""The pipeline's own microscope: the bead calibration's PSF, planes and transmission.

One place turns the calibration's files and the config into the
:class:`voxloc.physics.microscope.Microscope` that the simulation and the evaluation's
Cramér-Rao bound use (config ``psf.model`` and ``psf.source``):

* ``psf.source: calibration``: the planes and the cameras' transmission of psf.yaml, and the
  PSF: the Table 2 fit of psf.yaml (``gaussian``) or the spline of psf_spline.h5
  (``spline``, referenced by file and SHA-256);
* ``psf.source: table2``: ``psf.table2`` with ``grid.plane_z_nm`` and equal transmission.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from voxloc.calibration.files import load_psf, load_transmission
from voxloc.errors import InputError
from voxloc.io import file_sha256
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import PSFParams

__all__ = ["calibrated_microscope"]


def calibrated_microscope(
    *,
    table2: Mapping[str, float],
    plane_z_nm: Sequence[float],
    px_size_nm: float,
    noise: NoiseModel,
    integrate_pixels: bool = False,
    psf_yaml: str | Path | None = None,
    spline_h5: str | Path | None = None,
) -> Microscope:
    """The microscope of the calibration files given (module doc); InputError naming the
    file when the spline disagrees with psf.yaml or the run (planes, pixel size)."""
    from voxloc.calibration.spline_files import load_spline_psf

    if psf_yaml:
        psf, planes = load_psf(psf_yaml)
        transmission: tuple[float, ...] | None = load_transmission(psf_yaml)
    else:
        psf, planes, transmission = PSFParams.from_dict(dict(table2)), tuple(plane_z_nm), None
    extra: dict = {}
    if spline_h5:
        psf = load_spline_psf(
            spline_h5,
            expect_planes=len(planes),
            expect_grid={"px_size_nm": px_size_nm},
            expect_plane_z_nm=planes if psf_yaml else None,
        )
        transmission = None  # the spline's own measured shares
        extra = {"psf_file": str(spline_h5), "psf_sha256": file_sha256(spline_h5)}
    if not (psf_yaml or spline_h5):  # the config's microscope: a ValueError is the config's
        return Microscope(
            psf, tuple(float(z) for z in planes), float(px_size_nm), noise, bool(integrate_pixels)
        )
    try:
        return Microscope(
            psf=psf,
            plane_z_nm=tuple(float(z) for z in planes),
            px_size_nm=float(px_size_nm),
            noise=noise,
            integrate_pixels=bool(integrate_pixels),
            transmission=transmission,
            **extra,
        )
    except ValueError as exc:
        raise InputError(f"{spline_h5 or psf_yaml}: {exc}") from None
