"""Rule simulate_shard: one seeded HDF5 shard of simulated training frames."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.calibration import files
from voxloc.simulation import shards
from voxloc.simulation.settings import simulation_settings

dataset = snakemake.wildcards.dataset
sim = snakemake.params.simulation
# the bead calibration's PSF and plane positions (psf.source: calibration), else the config's
psf, planes = files.load_psf(snakemake.input.psf[0]) if snakemake.input.psf else (None, None)
settings = simulation_settings(
    snakemake.params.grid, snakemake.params.psf, sim, dataset, psf=psf, plane_z_nm=planes
)
shards.simulate_shard(
    snakemake.output[0],
    sim["datasets"][dataset]["frames_per_shard"],
    settings,
    seed=snakemake.params.seed,
    dataset=dataset,
    index=int(snakemake.wildcards.index),
    compression=None if sim["compression"] == "none" else sim["compression"],
)
