"""Rule evaluate_voxels: the paper's Tables 4-5 (voxel confusion matrix, adjacency breakdown)
of a trained model on the validation shards, one row per threshold τ."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch

from voxloc.errors import exit_on_error
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
