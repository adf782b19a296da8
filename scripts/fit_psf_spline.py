"""Rule fit_psf_spline: bead z-stacks + registration + PSF fit -> the measured spline PSF."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.calibration.options import BeadOptions, CalibrationOptions, SplineOptions
from voxloc.calibration.spline_calibrate import fit_psf_spline
from voxloc.errors import exit_on_error

with exit_on_error():  # one line, in the log and on the console; no output is written
    calibration = snakemake.params.calibration
    fit_psf_spline(
        list(snakemake.input.stacks),
        snakemake.input.affine,
        snakemake.input.psf,
        BeadOptions.from_config(snakemake.params.beads),
        CalibrationOptions.from_config(calibration),
        SplineOptions.from_config(calibration["spline"]),
        snakemake.params.px_size_nm,
        snakemake.output.spline,
        snakemake.output.qc,
    )
