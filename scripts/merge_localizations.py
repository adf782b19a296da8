"""Rule merge_localizations: chunk Parquets -> one Parquet per movie, plus Picasso HDF5 + YAML."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc import locs
from voxloc.errors import exit_on_error

out = snakemake.output
with exit_on_error():  # one line naming the file, in the log and on the console
    locs.merge_chunk_files(snakemake.input.chunks, out.parquet)
    locs.write_picasso(
        out.parquet,
        out.picasso[0],
        out.picasso[1],
        lateral_precision_nm=snakemake.params.lateral_precision_nm,
    )
