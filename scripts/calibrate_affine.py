"""Rule calibrate_affine: bead z-stacks -> affine registration of cameras 2-4 onto camera 1."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.calibration import calibrate
from voxloc.calibration.options import BeadOptions, CalibrationOptions
from voxloc.errors import exit_on_error

with exit_on_error():  # one line, in the log and on the console; no output is written
    calibrate.calibrate_affine(
        list(snakemake.input.stacks),
        BeadOptions.from_config(snakemake.params.beads),
        CalibrationOptions.from_config(snakemake.params.calibration),
        snakemake.params.px_size_nm,
        snakemake.output.affine,
        snakemake.output.qc,
    )
