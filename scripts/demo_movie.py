"""Rules demo_movie_*: a demo STORM movie of the true microscope and its ground truth.

Layout ``per_camera`` writes one T x H x W TIFF per camera (output ``planes``), layout
``stack`` one T x 4 x H x W TIFF (output ``movie``, axes TCYX).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.simulation import demo, demo_movies

if snakemake.params.layout == "stack":
    outputs = {"path": snakemake.output.movie}
else:
    outputs = {f"plane{k}": path for k, path in enumerate(snakemake.output.planes, start=1)}
microscope = demo.DemoMicroscope.from_config(
    snakemake.params.demo, snakemake.params.px_size_nm, snakemake.input.get("true_psf")
)
demo_movies.write_movie(
    outputs,
    snakemake.output.ground_truth,
    microscope,
    snakemake.params.demo["movies"],
    snakemake.params.seed,
    snakemake.params.name,
)
