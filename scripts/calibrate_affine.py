"""Rule calibrate_affine: bead z-stacks -> affine registration of cameras 2-4 onto camera 1."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs and tracebacks go to the rule log
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

from voxloc import calibrate  # noqa: E402
from voxloc.errors import VoxlocError  # noqa: E402

try:
    calibrate.calibrate_affine(
        list(snakemake.input.stacks),
        snakemake.params.beads,
        snakemake.params.calibration,
        snakemake.params.px_size_nm,
        snakemake.output.affine,
        snakemake.output.qc,
    )
except VoxlocError as exc:  # one line, in the log and on the console; no output is written
    logging.getLogger("voxloc").error("%s", exc)
    print(f"voxloc: {exc}", file=sys.__stderr__)
    sys.exit(1)
