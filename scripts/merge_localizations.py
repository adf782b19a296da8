"""Rule merge_localizations: chunk Parquets -> one Parquet per movie, plus Picasso HDF5 + YAML and a
ThunderSTORM CSV."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc import exports, locs
from voxloc.errors import exit_on_error

out = snakemake.output
with exit_on_error():  # one line naming the file, in the log and on the console
    locs.merge_chunk_files(snakemake.input.chunks, out.parquet)
    exports.write_picasso(
        out.parquet,
        out.picasso[0],
        out.picasso[1],
        lateral_precision_nm=snakemake.params.lateral_precision_nm,
    )
    exports.write_thunderstorm(out.parquet, out.csv)
