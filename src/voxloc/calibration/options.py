"""The ``calibration:`` config section as typed options: :class:`BeadOptions` (the bead
stacks, ``calibration.beads``), :class:`CalibrationOptions` (detection, matching and the
PSF fit) and :class:`SplineOptions` (the spline PSF, ``calibration.spline``).

The schema (workflow/schemas/config.schema.yaml) is the single source of the defaults; it
fills them in at validation. The field defaults below repeat the schema's, for callers that
build options by hand (the tests check that they agree). Values are kept as the config
gives them (a number may be an int): the calibration converts them where it uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

__all__ = ["BeadOptions", "CalibrationOptions", "SplineOptions"]

#: keys of ``calibration.beads`` naming the stack's files (the rules' inputs, not options)
BEAD_FILE_KEYS = ("path", "plane1", "plane2", "plane3", "plane4")


def _options(cls: type, section: Mapping[str, Any], where: str, ignore: tuple[str, ...]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = set(section) - known - set(ignore)
    if unknown:
        raise ValueError(f"unknown {where} option(s): {sorted(unknown)}")
    return {k: v for k, v in section.items() if k in known}


@dataclass(frozen=True)
class BeadOptions:
    """``calibration.beads``: the camera's ADU scale and the stage positions of the slices.

    Defaults as in workflow/schemas/config.schema.yaml; ``offset_adu``, ``adu_per_photon`` and
    ``z_step_nm`` are required there and here.
    """

    offset_adu: float  # camera offset (baseline), ADU
    adu_per_photon: float  # camera gain
    z_step_nm: float  # stage step between slices (negative if the stage moves down)
    z_start_nm: float = 0.0  # bead depth at slice 0
    n_slices: int | None = None  # if given, the stacks must have this many slices
    saturation_adu: float = 65535  # pixels at or above this are saturated

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> BeadOptions:
        """From the validated ``calibration.beads`` section (its file keys are ignored)."""
        return cls(**_options(cls, section, "calibration.beads", BEAD_FILE_KEYS))


@dataclass(frozen=True)
class CalibrationOptions:
    """``calibration`` less its ``beads`` and ``spline``: detection, matching, registration and PSF fit.

    Defaults as in workflow/schemas/config.schema.yaml.
    """

    flip: tuple[str, ...] = ("auto", "auto", "auto")  # cameras 2-4 relative to camera 1
    min_beads: int = 4  # per camera, per camera pair and for the PSF
    detect_snr: float = 10.0  # detection threshold (robust sigmas)
    min_snr: float = 5.0  # a slice counts when the fitted peak is >= min_snr x the noise
    match_tolerance_px: float = 3.0  # bead matching radius after the coarse registration
    ransac_threshold_nm: float = 100.0  # RANSAC inlier residual of the affine fit
    per_bead_z_offset: bool = True  # fit one height per bead besides the plane positions

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> CalibrationOptions:
        """From the validated ``calibration`` section (its ``beads`` are :class:`BeadOptions`, its
        ``spline`` :class:`SplineOptions`)."""
        opts = _options(cls, section, "calibration", ("beads", "spline"))
        if "flip" in opts:
            opts["flip"] = tuple(opts["flip"])
        return cls(**opts)


@dataclass(frozen=True)
class SplineOptions:
    """``calibration.spline``: the measured spline PSF (rule fit_psf_spline).

    Defaults as in workflow/schemas/config.schema.yaml; None: ``z_range_nm`` the longest range
    the beads cover, ``smooth_z_nm`` max(slice step, z_step_nm / 2), ``min_beads``
    ``calibration.min_beads``.
    """

    half_px: int = 8  # the spline's grid covers ±(half_px + 1) px, its windows ±half_px
    z_step_nm: float = 20.0  # spacing of the z nodes
    z_range_nm: tuple[float, float] | None = None  # molecule depths (sample frame)
    smooth_z_nm: float | None = None  # σ of the kernel regression along z
    min_beads: int | None = None  # fewest usable beads per plane and z node

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SplineOptions:
        """From the validated ``calibration.spline`` section."""
        opts = _options(cls, section, "calibration.spline", ())
        if opts.get("z_range_nm") is not None:
            opts["z_range_nm"] = tuple(opts["z_range_nm"])
        return cls(**opts)
