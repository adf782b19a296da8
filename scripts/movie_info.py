"""Checkpoint movie_info: open a movie (validating it) and record its frame count and shapes."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc import io
from voxloc.errors import exit_on_error
from voxloc.localization import movies

with exit_on_error():  # one line naming the file, in the log and on the console
    with movies.open_movie(
        snakemake.input.movie, name=snakemake.wildcards.movie, **snakemake.params.camera
    ) as m:
        info = {
            "movie": m.name,
            "n_frames": m.n_frames,
            "camera_shapes": m.camera_shapes,
            "sources": m.sources,
        }
    io.write_yaml(snakemake.output[0], info)
