"""Rule simulate_shard: one seeded HDF5 shard of simulated training frames."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # logs and tracebacks go to the rule log
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

from voxloc import config, shards  # noqa: E402

dataset = snakemake.wildcards.dataset
sim = snakemake.params.simulation
settings = config.simulation_settings(snakemake.params.grid, snakemake.params.psf, sim, dataset)
shards.simulate_shard(
    snakemake.output[0],
    sim["datasets"][dataset]["frames_per_shard"],
    settings,
    seed=snakemake.params.seed,
    dataset=dataset,
    index=int(snakemake.wildcards.index),
    compression=None if sim["compression"] == "none" else sim["compression"],
)
