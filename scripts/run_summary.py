"""Rule run_summary: one row per movie of the sample sheet (frames, localizations, time, outputs)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.evaluation import run_summary

p = snakemake.params
with exit_on_error():
    rows = [
        run_summary.summarize_movie(
            movie, info, locs, chunk_frames=p.chunk_frames, benchmark=p.benchmark, outputs=p.outputs[movie]
        )
        for movie, info, locs in zip(
            p.movies, snakemake.input.info, snakemake.input.localizations, strict=True
        )
    ]
    run_summary.write_run_summary(rows, snakemake.output[0])
