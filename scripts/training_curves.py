"""Rule training_curves: loss, validation voxel Jaccard and RMSE per epoch of a model's log.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.network.curves import plot_training

with exit_on_error():
    plot_training(
        snakemake.input[0],
        snakemake.output[0],
        title=f"model {snakemake.wildcards.name}",
        tau=snakemake.params.tau,
    )
