"""Rule simulate_shard: one seeded HDF5 shard of simulated training frames."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.simulation import shards
from voxloc.simulation.settings import calibrated_settings

dataset = snakemake.wildcards.dataset
sim = snakemake.params.simulation
with exit_on_error():  # one line naming the file, in the log and on the console
    # the bead calibration's PSF (Gaussian or spline), planes and transmission
    # (psf.source: calibration), else the config's
    settings = calibrated_settings(
        snakemake.params.grid,
        snakemake.params.psf,
        sim,
        dataset,
        psf_yaml=snakemake.input.get("psf"),
        spline_h5=snakemake.input.get("spline"),
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
