"""Rule training_curves: loss, validation voxel Jaccard and RMSE per epoch of a model's log.csv."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc.errors import exit_on_error
from voxloc.network.curves import plot_training

with exit_on_error():
    plot_training(
        snakemake.input[0],
        snakemake.output[0],
        title=f"model {snakemake.wildcards.name}",
        tau=snakemake.params.tau,
    )
