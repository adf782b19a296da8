"""Rule speed_sweep: localization frames/s against image size, TIFF read to Parquet (Fig. 9)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs, progress bars, tracebacks
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

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
