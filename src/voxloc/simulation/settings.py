"""What defines the distribution of simulated training frames (Sect. 2, Table 3).

A :class:`SimulationSettings` is the microscope that images the frames
(:class:`voxloc.physics.microscope.Microscope`: PSF, focal planes, pixel size, transmission,
noise, pixel sampling), the frame size in pixels, and how each frame is drawn: the number M of
molecules (uniform over an inclusive range), their brightness (detected photons summed over
the P planes, uniform over a range) and the lateral drift bound d of planes 2..P (Eq. 7).
The paper's weights w ∈ [0.3, 1] with a' of Table 2 are photons P w a' / s² ∈ [1,628, 5,425]
(:func:`voxloc.physics.psf.photons_per_plane`). The voxel grid of the targets (:attr:`SimulationSettings.grid`)
follows from the frame size and the microscope's pixel and planes, so it is not stored apart.

The settings travel with the frames: every HDF5 shard stores them
(:func:`voxloc.simulation.shards.settings_to_dict`) and a trained model keeps those of its
training frames, from which the density and speed sweeps simulate more frames of the same
kind. :func:`simulation_settings` builds them from the validated config sections ``grid``,
``psf`` and ``simulation``, optionally with the bead-calibrated PSF (Gaussian or spline),
planes and transmission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from voxloc.errors import ConfigError
from voxloc.physics.microscope import Microscope
from voxloc.physics.noise import NoiseModel
from voxloc.physics.spline import SplinePSF
from voxloc.voxels import VoxelGrid

__all__ = ["SimulationSettings", "simulation_settings", "calibrated_settings"]


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that defines the distribution of simulated frames (Table 3 defaults)."""

    physics: Microscope = field(default_factory=Microscope)
    height: int = 64  # frame size in pixels
    width: int = 64
    n_molecules: tuple[int, int] = (50, 50)  # M per frame, inclusive range (fixed if equal)
    photons_range: tuple[float, float] = (1627.6, 5425.3)  # N, summed over planes (w 0.3-1)
    drift_max_nm: float = 48.0  # |Δk,x|, |Δk,y| <= this for planes 2..P

    def __post_init__(self) -> None:
        _ = self.grid  # the planes must make a voxel grid (VoxelGrid: strictly increasing)
        lo, hi = self.n_molecules
        if not 0 <= lo <= hi:
            raise ValueError(f"n_molecules must satisfy 0 <= min <= max, got {self.n_molecules}")
        wl, wh = self.photons_range
        if not 0 <= wl <= wh:
            raise ValueError(f"photons must satisfy 0 <= min <= max, got {self.photons_range}")
        if self.drift_max_nm < 0:
            raise ValueError("drift_max_nm must be >= 0")

    @property
    def grid(self) -> VoxelGrid:
        """The voxel grid of the frames: their size, the microscope's pixel and planes."""
        return VoxelGrid(self.height, self.width, self.physics.px_size_nm, self.physics.plane_z_nm)


def simulation_settings(
    grid_cfg: Mapping,
    psf_cfg: Mapping,
    sim_cfg: Mapping,
    dataset: str | None = None,
    *,
    physics: Microscope | None = None,
) -> SimulationSettings:
    """SimulationSettings from the validated ``grid``, ``psf`` and ``simulation`` sections.

    ``physics`` replaces the config's microscope (e.g. the bead calibration's, see
    :func:`calibrated_settings`); ``dataset`` applies that dataset's overrides
    (``n_molecules``).
    """
    n_mol = sim_cfg["n_molecules"]
    if dataset is not None:
        datasets = sim_cfg["datasets"]
        if dataset not in datasets:
            raise ConfigError(f"config: simulation.datasets has no dataset {dataset!r}")
        n_mol = datasets[dataset].get("n_molecules", n_mol)
    try:
        if physics is None:
            physics = _microscope(grid_cfg, psf_cfg, sim_cfg)
        return _settings(sim_cfg, n_mol, physics)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None


def calibrated_settings(
    grid_cfg: Mapping,
    psf_cfg: Mapping,
    sim_cfg: Mapping,
    dataset: str | None = None,
    *,
    psf_yaml: str | None = None,
    spline_h5: str | None = None,
) -> SimulationSettings:
    """:func:`simulation_settings` with the bead calibration's microscope
    (:func:`voxloc.calibration.calibrated.calibrated_microscope`: psf.yaml's planes,
    transmission and Gaussian, or the spline of ``spline_h5``). A spline whose z range does
    not cover the simulated molecules' depths is an InputError naming its file."""
    from voxloc.calibration.spline_files import check_z_coverage

    physics = _microscope(grid_cfg, psf_cfg, sim_cfg, psf_yaml=psf_yaml, spline_h5=spline_h5)
    settings = simulation_settings(grid_cfg, psf_cfg, sim_cfg, dataset, physics=physics)
    if isinstance(physics.psf, SplinePSF):
        check_z_coverage(physics.psf, settings.grid.extent_nm[2], spline_h5)
    return settings


def _microscope(grid_cfg: Mapping, psf_cfg: Mapping, sim_cfg: Mapping, **files: str | None) -> Microscope:
    """:func:`voxloc.calibration.calibrated.calibrated_microscope` of the config and the
    calibration ``files`` (psf_yaml, spline_h5; none: Table 2 and the nominal planes)."""
    from voxloc.calibration.calibrated import calibrated_microscope

    return calibrated_microscope(
        table2=psf_cfg["table2"],
        plane_z_nm=grid_cfg["plane_z_nm"],
        px_size_nm=float(grid_cfg["px_size_nm"]),
        noise=NoiseModel(kind=sim_cfg["noise"], **sim_cfg["noise_params"]),
        integrate_pixels=bool(psf_cfg["integrate_pixels"]),
        **files,
    )


def _settings(sim_cfg: Mapping, n_mol, physics: Microscope) -> SimulationSettings:
    height, width = sim_cfg["frame_size"]
    return SimulationSettings(
        physics=physics,
        height=int(height),
        width=int(width),
        n_molecules=(int(n_mol[0]), int(n_mol[1])),
        photons_range=(float(sim_cfg["photons"][0]), float(sim_cfg["photons"][1])),
        drift_max_nm=float(sim_cfg["drift_max_nm"]),
    )
