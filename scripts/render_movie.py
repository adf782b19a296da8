"""Rule render_movie: localizations (Parquet) -> 3-D render (16-bit ImageJ TIFF) + depth-coded PNG."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.render import movie
from voxloc.voxels import VoxelGrid

opts = snakemake.params.render
# fallbacks for a Parquet without px_size_nm / z_range_nm metadata: the nominal grid
grid = VoxelGrid(1, 1, snakemake.params.px_size_nm, tuple(snakemake.params.plane_z_nm))
with exit_on_error():  # one line naming the file, in the log and on the console
    movie.render_movie(
        snakemake.input[0],
        snakemake.output.tif,
        snakemake.output.png,
        options=movie.RenderOptions.from_config(opts),
        z_range_nm=(float(grid.z_edges_nm[0]), float(grid.z_edges_nm[-1])),
        px_size_nm=grid.px_size_nm,
    )
