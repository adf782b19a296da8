"""Rule localize_chunk: frames [start, stop) of a quad-plane movie -> one Parquet chunk."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc import (
    config,
    io,
)
from voxloc.calibration import files
from voxloc.errors import exit_on_error
from voxloc.fitting import refine
from voxloc.localization import localize

opts = snakemake.params.options
physics = snakemake.params.physics
with exit_on_error():  # one line naming the file, in the log and on the console; no chunk written
    microscope = camera_noise = None
    if opts["fit"] == "mle":  # the fit's physics: the simulation's microscope, the camera's noise
        microscope, camera_noise = refine.fit_physics(
            physics,
            opts["camera"],
            psf_yaml=snakemake.input.psf,
            spline_h5=snakemake.input.get("spline"),
        )
    n_frames = io.read_yaml(snakemake.input.info)["n_frames"]
    start, stop = config.chunk_ranges(n_frames, opts["chunk_frames"])[int(snakemake.wildcards.chunk)]
    localize.run_chunk(
        snakemake.input.movie,
        snakemake.input.model,
        files.load_affine(snakemake.input.affine),
        snakemake.output[0],
        name=snakemake.wildcards.movie,
        start=start,
        stop=stop,
        options=localize.LocalizeOptions.from_config(opts, threads=snakemake.threads),
        psf_calibration=snakemake.input.psf,
        spline_calibration=snakemake.input.get("spline"),
        microscope=microscope,
        camera_noise=camera_noise,
        **snakemake.params.camera,
    )
