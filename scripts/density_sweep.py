"""Rule density_sweep: a model's metrics against molecules per simulated frame (Figs. 7-8)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

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
        fit_n_molecules=opts["fit_n_molecules"],
        fit=snakemake.params.fit,
    )
    sweeps.write_density_sweep(result, snakemake.output.table, snakemake.output.errors)
