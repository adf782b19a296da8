"""Rule fit_psf: bead z-stacks + registration -> PSF of Table 2 and the plane positions."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs and tracebacks go to the rule log
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

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
