"""Rule train_model: simulated shards -> results/models/{name}/model.pt and log.csv (resumable)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

import logging
import os
import signal

# one BLAS thread, set before numpy loads: torch has the cores, and OpenBLAS threads spinning
# beside it halve the speed of the per-epoch re-simulation of frames (measured 150 -> 65 fps)
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

from voxloc.network import train

try:
    train.train_model(
        snakemake.input.train,
        snakemake.input.val,
        snakemake.output.model,
        snakemake.output.log_csv,
        snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
    )
except train.Preempted as exc:  # SIGTERM: checkpoint.pt written; a rerun resumes from it
    logging.getLogger("train_model").warning("%s", exc)
    sys.exit(128 + signal.SIGTERM)
