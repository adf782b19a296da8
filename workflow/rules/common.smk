# Shared helpers: config validation, the sample sheet, wildcard constraints, input functions.
import sys
from pathlib import Path

# the library lives in src/ beside the workflow: importable without installing it
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.exceptions import WorkflowError

from voxloc import config as vconfig
from voxloc.errors import ConfigError

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
CONFIG_SOURCE = ", ".join(str(f) for f in workflow.configfiles) or "config"

try:
    vconfig.validate(config, SCHEMAS / "config.schema.yaml", source=CONFIG_SOURCE)
    samples = vconfig.load_samples(config["samples"], SCHEMAS / "movies.schema.yaml")
except ConfigError as exc:
    raise WorkflowError(f"voxloc: {exc}") from None

DATASETS = config["simulation"]["datasets"]
DEMO_DIR = config["demo"]["out_dir"]


wildcard_constraints:
    dataset="|".join(DATASETS),
    index=r"\d{4}",
    movie="|".join(samples.index),


def shard_paths(dataset):
    """All shard files of one dataset of config simulation.datasets."""
    n = DATASETS[dataset]["shards"]
    return [f"results/simulation/{dataset}/shard-{i:04d}.h5" for i in range(n)]


def demo_outputs():
    """Files of the built-in demo data (bead stacks, two movies with ground truth)."""
    cams = [f"camera{k}.tif" for k in range(1, 5)]
    out = [f"{DEMO_DIR}/beads/{c}" for c in cams] + [f"{DEMO_DIR}/beads/truth.yaml"]
    out += [f"{DEMO_DIR}/demo1/{c}" for c in cams] + [
        f"{DEMO_DIR}/demo1/ground_truth.parquet"
    ]
    out += [f"{DEMO_DIR}/demo2/movie.tif", f"{DEMO_DIR}/demo2/ground_truth.parquet"]
    return out


def get_final_output():
    """Everything the default target builds."""
    out = [p for name in DATASETS for p in shard_paths(name)]
    out += demo_outputs()
    return out
