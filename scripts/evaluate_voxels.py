"""Rule evaluate_voxels: the paper's Tables 4-5 (voxel confusion matrix, adjacency breakdown)
of a trained model on the validation shards, one row per threshold τ."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

import logging

import torch

from voxloc.errors import exit_on_error
from voxloc.evaluation import html_tables
from voxloc.evaluation.voxel_metrics import evaluate_shards
from voxloc.io import atomic_output
from voxloc.network.model import load_checkpoint, select_device

torch.set_num_threads(snakemake.threads)
with exit_on_error():
    model = load_checkpoint(snakemake.input.model, select_device(snakemake.params.device))
    table = evaluate_shards(snakemake.input.shards, model.predict, snakemake.params.taus)
    with atomic_output(snakemake.output[0]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4g")
    logging.info("voxel metrics of %s:\n%s", snakemake.input.model, table.to_string(index=False))
    html_tables.write_html_table(
        snakemake.output[0],
        snakemake.output.html,
        "voxels",
        title=f"Voxel classification of model {snakemake.wildcards.name} on the validation shards (Tables 4-5)",
    )
