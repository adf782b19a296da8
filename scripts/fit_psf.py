"""Rule fit_psf: bead z-stacks + registration -> PSF of Table 2 and the plane positions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.calibration import calibrate
from voxloc.calibration.options import BeadOptions, CalibrationOptions
from voxloc.errors import exit_on_error

with exit_on_error():  # one line, in the log and on the console; no output is written
    calibrate.fit_psf(
        list(snakemake.input.stacks),
        snakemake.input.affine,
        BeadOptions.from_config(snakemake.params.beads),
        CalibrationOptions.from_config(snakemake.params.calibration),
        snakemake.params.px_size_nm,
        snakemake.output.psf,
        snakemake.output.qc,
    )
