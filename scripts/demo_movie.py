"""Rules demo_movie_*: a demo STORM movie of the true microscope and its ground truth.

Layout ``per_camera`` writes one T x H x W TIFF per camera (output ``planes``), layout
``stack`` one T x 4 x H x W TIFF (output ``movie``, axes TCYX).
"""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs, tracebacks
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc.simulation import demo, demo_movies

if snakemake.params.layout == "stack":
    outputs = {"path": snakemake.output.movie}
else:
    outputs = {f"plane{k}": path for k, path in enumerate(snakemake.output.planes, start=1)}
microscope = demo.DemoMicroscope.from_config(snakemake.params.demo, snakemake.params.px_size_nm)
demo_movies.write_movie(
    outputs,
    snakemake.output.ground_truth,
    microscope,
    snakemake.params.demo["movies"],
    snakemake.params.seed,
    snakemake.params.name,
)
