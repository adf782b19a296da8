# Shared helpers: config validation, the sample sheet, wildcard constraints, input functions.
import re
import sys
from pathlib import Path

import pandas as pd

# the library lives in src/ beside the workflow: importable without installing it
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.exceptions import WorkflowError

from voxloc import config as vconfig
from voxloc import io as vio
from voxloc.errors import ConfigError

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
CONFIG_SOURCE = ", ".join(str(f) for f in workflow.configfiles) or "config"

try:
    vconfig.validate(config, SCHEMAS / "config.schema.yaml", source=CONFIG_SOURCE)
    for key in ("train_dataset", "val_dataset"):
        if config["train"][key] not in config["simulation"]["datasets"]:
            raise ConfigError(
                f"{CONFIG_SOURCE}: train.{key}: {config['train'][key]!r} is not one of "
                f"simulation.datasets {sorted(config['simulation']['datasets'])}"
            )
    samples = vconfig.load_samples(config["samples"], SCHEMAS / "movies.schema.yaml")
except ConfigError as exc:
    raise WorkflowError(f"voxloc: {exc}") from None

DATASETS = config["simulation"]["datasets"]
DEMO_DIR = config["demo"]["out_dir"]
MOVIES = list(samples.index)
MOVIES_WITH_TRUTH = [m for m in MOVIES if pd.notna(samples.loc[m].get("ground_truth"))]
MODEL = f"results/models/{config['train']['name']}/model.pt"
AFFINE = "results/calibration/affine.yaml"
PSF_CALIBRATION = "results/calibration/psf.yaml"


wildcard_constraints:
    dataset="|".join(DATASETS),
    index=r"\d{4}",
    movie="|".join(re.escape(m) for m in MOVIES),
    chunk=r"\d{4}",


def shard_paths(dataset):
    """All shard files of one dataset of config simulation.datasets."""
    n = DATASETS[dataset]["shards"]
    return [f"results/simulation/{dataset}/shard-{i:04d}.h5" for i in range(n)]


def get_bead_tiffs(wildcards):
    """The bead z-stack TIFF(s) of config calibration.beads: one Z x 4 x H x W file or four."""
    beads = config["calibration"]["beads"]
    if "path" in beads:
        return [beads["path"]]
    return [beads[c] for c in vconfig.PLANE_COLUMNS]


def simulation_psf(wildcards):
    """The bead calibration's psf.yaml when the simulation uses it (psf.source)."""
    return [PSF_CALIBRATION] if config["psf"]["source"] == "calibration" else []


def demo_outputs():
    """Files of the built-in demo data (bead stacks, two movies with ground truth)."""
    cams = [f"camera{k}.tif" for k in range(1, 5)]
    out = [f"{DEMO_DIR}/beads/{c}" for c in cams] + [f"{DEMO_DIR}/beads/truth.yaml"]
    out += [f"{DEMO_DIR}/demo1/{c}" for c in cams] + [
        f"{DEMO_DIR}/demo1/ground_truth.parquet"
    ]
    out += [f"{DEMO_DIR}/demo2/movie.tif", f"{DEMO_DIR}/demo2/ground_truth.parquet"]
    return out


def _sheet(movie, column):
    value = samples.loc[movie].get(column)
    return None if pd.isna(value) else value


def movie_tiffs(wildcards):
    """The TIFF(s) of a movie: one T x 4 x H x W file or the four per-camera files."""
    path = _sheet(wildcards.movie, "path")
    return (
        [path] if path else [_sheet(wildcards.movie, c) for c in vconfig.PLANE_COLUMNS]
    )


def movie_camera(wildcards):
    """Camera offset and gain of a movie: its sample-sheet row, else config localize.camera."""
    default = config["localize"]["camera"]
    values = {k: _sheet(wildcards.movie, k) for k in ("offset_adu", "adu_per_photon")}
    return {k: float(default[k] if v is None else v) for k, v in values.items()}


def ground_truth(wildcards):
    return _sheet(wildcards.movie, "ground_truth")


def localization_chunks(wildcards):
    """The chunk files of a movie, known once its header has been read (checkpoint)."""
    info = checkpoints.movie_info.get(movie=wildcards.movie).output[0]
    n_frames = vio.read_yaml(info)["n_frames"]
    n_chunks = len(vconfig.chunk_ranges(n_frames, config["localize"]["chunk_frames"]))
    return [
        f"results/localizations/{wildcards.movie}/chunk-{c:04d}.parquet"
        for c in range(n_chunks)
    ]


def get_final_output():
    """Everything the default target builds."""
    out = [p for name in DATASETS for p in shard_paths(name)]
    out += demo_outputs()
    out += [AFFINE, PSF_CALIBRATION]
    out += ["results/calibration/affine_qc.png", "results/calibration/psf_qc.png"]
    out += [MODEL]
    for movie in MOVIES:
        out += [
            f"results/localizations/{movie}{ext}"
            for ext in (".parquet", ".hdf5", ".yaml")
        ]
        out += [f"results/render/{movie}.tif", f"results/render/{movie}.png"]
    if MOVIES_WITH_TRUTH:
        out.append("results/evaluation/summary.tsv")
    return out
