"""Rule evaluate_movie: match localizations to ground truth, write the metrics as CSV."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc import evaluate  # noqa: E402
from voxloc.errors import exit_on_error  # noqa: E402

opts = snakemake.params.options
with exit_on_error():  # one line naming the file, in the log and on the console
    evaluate.evaluate_files(
        snakemake.input.locs,
        snakemake.input.truth,
        snakemake.output[0],
        movie=snakemake.wildcards.movie,
        lateral_nm=opts["lateral_tolerance_nm"],
        axial_nm=opts["axial_tolerance_nm"],
    )
