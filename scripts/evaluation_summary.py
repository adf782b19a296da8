"""Rule evaluation_summary: one table of the per-movie metrics."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.evaluation import evaluate, html_tables

with exit_on_error():
    evaluate.collect_summaries(snakemake.input, snakemake.output[0])
    html_tables.write_html_table(snakemake.output[0], snakemake.output.html, "summary")
