"""TODO docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from voxloc.errors import ConfigError
from voxloc.physics.noise import NoiseModel
from voxloc.physics.psf import TABLE2, PSFParams
from voxloc.voxels import VoxelGrid


@dataclass(frozen=True)
class SimulationSettings:
    """Everything that defines the distribution of simulated frames (Table 3 defaults)."""

    grid: VoxelGrid = field(default_factory=lambda: VoxelGrid(64, 64))
    psf: PSFParams = TABLE2
    noise: NoiseModel = field(default_factory=NoiseModel)
    n_molecules: tuple[int, int] = (50, 50)  # M per frame, inclusive range (fixed if equal)
    weight_range: tuple[float, float] = (0.3, 1.0)
    drift_max_nm: float = 48.0  # |Δk,x|, |Δk,y| <= this for planes 2..P
    integrate_pixels: bool = False  # average the PSF over the pixel instead of sampling it

    def __post_init__(self) -> None:
        lo, hi = self.n_molecules
        if not 0 <= lo <= hi:
            raise ValueError(f"n_molecules must satisfy 0 <= min <= max, got {self.n_molecules}")
        wl, wh = self.weight_range
        if not 0 <= wl <= wh:
            raise ValueError(f"weight_range must satisfy 0 <= min <= max, got {self.weight_range}")
        if self.drift_max_nm < 0:
            raise ValueError("drift_max_nm must be >= 0")


def simulation_settings(
    grid_cfg: Mapping,
    psf_cfg: Mapping,
    sim_cfg: Mapping,
    dataset: str | None = None,
    *,
    psf: PSFParams | None = None,
    plane_z_nm: tuple[float, ...] | None = None,
) -> SimulationSettings:
    """SimulationSettings from the validated ``grid``, ``psf`` and ``simulation`` sections.

    ``psf`` and ``plane_z_nm`` override the config (e.g. with a bead calibration);
    ``dataset`` applies that dataset's overrides (``n_molecules``).
    """
    n_mol = sim_cfg["n_molecules"]
    if dataset is not None:
        datasets = sim_cfg["datasets"]
        if dataset not in datasets:
            raise ConfigError(f"config: simulation.datasets has no dataset {dataset!r}")
        n_mol = datasets[dataset].get("n_molecules", n_mol)
    try:
        return _settings(grid_cfg, psf_cfg, sim_cfg, n_mol, psf, plane_z_nm)
    except ValueError as exc:
        raise ConfigError(f"config: {exc}") from None


def _settings(grid_cfg, psf_cfg, sim_cfg, n_mol, psf, plane_z_nm) -> SimulationSettings:
    from voxloc.physics.noise import NoiseModel
    from voxloc.physics.psf import PSFParams
    from voxloc.simulation.settings import SimulationSettings
    from voxloc.voxels import VoxelGrid

    height, width = sim_cfg["frame_size"]
    return SimulationSettings(
        grid=VoxelGrid(
            int(height),
            int(width),
            float(grid_cfg["px_size_nm"]),
            tuple(plane_z_nm if plane_z_nm is not None else grid_cfg["plane_z_nm"]),
        ),
        psf=psf if psf is not None else PSFParams.from_dict(psf_cfg["table2"]),
        noise=NoiseModel(kind=sim_cfg["noise"], **sim_cfg["noise_params"]),
        n_molecules=(int(n_mol[0]), int(n_mol[1])),
        weight_range=(float(sim_cfg["weight_range"][0]), float(sim_cfg["weight_range"][1])),
        drift_max_nm=float(sim_cfg["drift_max_nm"]),
        integrate_pixels=bool(psf_cfg["integrate_pixels"]),
    )
