"""Rule demo_true_psf: the vectorial PSF of the demo's true microscope, tabulated as a spline."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.simulation import demo

demo.write_true_psf(snakemake.output[0], snakemake.params.demo, snakemake.params.px_size_nm)
