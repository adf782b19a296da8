"""Rule demo_beads: the demo bead z-stacks of the true microscope, one TIFF per camera."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs, tracebacks
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc.simulation import demo, demo_beads

microscope = demo.DemoMicroscope.from_config(snakemake.params.demo, snakemake.params.px_size_nm)
demo_beads.write_bead_stacks(
    list(snakemake.output.stacks),
    snakemake.output.truth,
    microscope,
    snakemake.params.demo["beads"],
    snakemake.params.seed,
)
