"""Rule speed_sweep: localization frames/s against image size, TIFF read to Parquet (Fig. 9)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.evaluation import sweeps

opts = snakemake.params.options
loc = snakemake.params.localize
with exit_on_error():  # one line naming the file, in the log and on the console
    table = sweeps.speed_sweep(
        snakemake.input.model,
        opts["sizes_px"],
        opts["frames"],
        batch_frames=loc["batch_frames"],
        tau=loc["tau"],
        device=loc["device"],
        threads=snakemake.threads,
        seed=snakemake.params.seed,
    )
    sweeps.write_tsv(table, snakemake.output[0])
