"""Checkpoint movie_info: open a movie (validating it) and record its frame count and shapes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc import io
from voxloc.errors import InputError, exit_on_error
from voxloc.localization import movies

camera = dict(snakemake.params.row)  # offset_adu, adu_per_photon
missing = camera.pop("missing", None)  # files of the sheet row that are not there
with exit_on_error():  # one line naming the file, in the log and on the console
    if missing:
        raise InputError(missing)
    with movies.open_movie(snakemake.input.movie, name=snakemake.wildcards.movie, **camera) as m:
        info = {
            "movie": m.name,
            "n_frames": m.n_frames,
            "camera_shapes": m.camera_shapes,
            "sources": m.sources,
        }
    io.write_yaml(snakemake.output[0], info)
