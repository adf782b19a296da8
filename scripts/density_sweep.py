"""Rule density_sweep: a model's metrics against molecules per simulated frame (Figs. 7-8)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs, tracebacks go to the rule log
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc.errors import exit_on_error
from voxloc.evaluation import sweeps

opts = snakemake.params.options
with exit_on_error():  # one line naming the file, in the log and on the console
    result = sweeps.density_sweep(
        snakemake.input.model,
        opts["n_molecules"],
        opts["taus"],
        n_frames=opts["frames"],
        seed=snakemake.params.seed,
        lateral_nm=snakemake.params.tolerances["lateral_tolerance_nm"],
        axial_nm=snakemake.params.tolerances["axial_tolerance_nm"],
        batch_frames=snakemake.params.batch_frames,
        device=snakemake.params.device,
        threads=snakemake.threads,
    )
    sweeps.write_density_sweep(result, snakemake.output.table, snakemake.output.errors)
