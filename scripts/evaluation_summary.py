"""Rule evaluation_summary: one table of the per-movie metrics."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from voxloc.evaluation import evaluate

evaluate.collect_summaries(snakemake.input, snakemake.output[0])
