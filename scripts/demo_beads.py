"""Rule demo_beads: the demo bead z-stacks of the true microscope, one TIFF per camera."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.simulation import demo, demo_beads

microscope = demo.DemoMicroscope.from_config(
    snakemake.params.demo, snakemake.params.px_size_nm, snakemake.input.get("true_psf")
)
demo_beads.write_bead_stacks(
    list(snakemake.output.stacks),
    snakemake.output.truth,
    microscope,
    snakemake.params.demo["beads"],
    snakemake.params.seed,
)
