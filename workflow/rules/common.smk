# Shared helpers: config validation, the sample sheet, wildcard constraints, input functions.
import os
import re
import sys
from pathlib import Path

import pandas as pd

# the library lives in src/ beside the workflow: importable without installing it, here and
# in the rule scripts, which Snakemake starts with this process's sys.path appended to their
# own, also in a conda env under --use-conda (see envs/voxloc.yaml)
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from voxloc import config as vconfig
from voxloc import io as vio
from voxloc.errors import ConfigError
from voxloc.physics.cameras import PLANE_COLUMNS

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"


def config_layers():
    """Where `config` came from, as Snakemake merged it (later ones win): the Snakefile's
    configfile (config/config.yaml, when present), each --configfile, then --config."""
    settings = workflow.config_settings
    cli = [Path(f) for f in settings.configfiles]
    own = [f for f in workflow.configfiles if Path(f).absolute() not in cli]
    if settings.replace_workflow_config:
        own = []
    layers = [(str(f), load_configfile(f)) for f in [*own, *cli]]
    if settings.config:
        layers.append(("--config", dict(settings.config)))
    return layers


CONFIG_LAYERS = config_layers()
CONFIG_SOURCE = ", ".join(name for name, _ in CONFIG_LAYERS) or "config"


def config_origin(*path):
    """The config file (or --config) that set the key at `path`."""
    return vconfig.origin(CONFIG_LAYERS, path, CONFIG_SOURCE)


try:
    vconfig.validate(
        config,
        SCHEMAS / "config.schema.yaml",
        source=CONFIG_SOURCE,
        layers=CONFIG_LAYERS,
    )
    for key in ("train_dataset", "val_dataset"):
        if config["train"][key] not in config["simulation"]["datasets"]:
            raise ConfigError(
                f"{config_origin('train', key)}: train.{key}: {config['train'][key]!r} is "
                f"not one of simulation.datasets {sorted(config['simulation']['datasets'])}"
            )
    _density, _speed = config["sweeps"]["density"], config["sweeps"]["speed"]
    if len(_speed["frames"]) != len(_speed["sizes_px"]):
        raise ConfigError(
            f"{config_origin('sweeps', 'speed', 'frames')}: sweeps.speed.frames: "
            f"{len(_speed['frames'])} values for {len(_speed['sizes_px'])} sizes_px "
            "(give one per size)"
        )
    if not set(_density["histogram_n_molecules"] or []) <= set(_density["n_molecules"]):
        _hist = config_origin("sweeps", "density", "histogram_n_molecules")
        _n = config_origin("sweeps", "density", "n_molecules")
        raise ConfigError(
            f"{_hist}: sweeps.density.histogram_n_molecules "
            f"{_density['histogram_n_molecules']}: each must be one of "
            f"sweeps.density.n_molecules {_density['n_molecules']}"
            + ("" if _n == _hist else f" (set in {_n})")
        )
    samples = vconfig.load_samples(config["samples"], SCHEMAS / "movies.schema.yaml")
except ConfigError as exc:
    raise WorkflowError(f"voxloc: {exc}") from None

DATASETS = config["simulation"]["datasets"]
DEMO_DIR = config["demo"]["out_dir"]
MOVIES = list(samples.index)
MOVIES_WITH_TRUTH = [m for m in MOVIES if pd.notna(samples.loc[m].get("ground_truth"))]
# a model trained earlier for this microscope (localize.model) or the one this run trains
TRAIN = not config["localize"]["model"]
MODEL = (
    config["localize"]["model"] or f"results/models/{config['train']['name']}/model.pt"
)
AFFINE = "results/calibration/affine.yaml"
PSF_CALIBRATION = "results/calibration/psf.yaml"
PSF_SPLINE = "results/calibration/psf_spline.h5"
RUN_SUMMARY = "results/run_summary.tsv"


wildcard_constraints:
    dataset="|".join(DATASETS),
    index=r"\d{4}",
    movie="|".join(re.escape(m) for m in MOVIES),
    chunk=r"\d{4}",


#: the schema's per-rule resources (config/config.yaml is not loaded when -d points elsewhere)
_SCHEMA = vconfig.load_schema(SCHEMAS / "config.schema.yaml")
RULE_RESOURCES = _SCHEMA["properties"]["resources"]["properties"]


def rule_resource(rule, key):
    """threads, mem_mb or runtime (minutes) of a rule's jobs (the SLURM executor submits with
    these): config resources.<rule>.<key>, else the schema's entry for the rule, else
    resources.default.<key>."""
    given = config["resources"]
    shipped = RULE_RESOURCES.get(rule, {}).get("default", {})
    for entry in (given.get(rule, {}), shipped, given["default"]):
        if key in entry:
            return entry[key]


def rule_threads(rule):
    """Threads of a rule's jobs from config resources (SLURM: --cpus-per-task)."""
    return rule_resource(rule, "threads")


def shard_paths(dataset):
    """All shard files of one dataset of config simulation.datasets."""
    n = DATASETS[dataset]["shards"]
    return [f"results/simulation/{dataset}/shard-{i:04d}.h5" for i in range(n)]


def get_bead_tiffs(wildcards):
    """The bead z-stack TIFF(s) of config calibration.beads: one Z x 4 x H x W file or four."""
    beads = config["calibration"]["beads"]
    if "path" in beads:
        return [beads["path"]]
    return [beads[c] for c in PLANE_COLUMNS]


def simulation_psf(wildcards):
    """The bead calibration's files the simulation uses (psf.source, psf.model): psf.yaml
    (planes, transmission, the Gaussian) and, for the spline, psf_spline.h5."""
    if config["psf"]["source"] != "calibration":
        return {}
    files = {"psf": PSF_CALIBRATION}
    if config["psf"]["model"] == "spline":
        files["spline"] = PSF_SPLINE
    return files


def localize_psf(wildcards):
    """The spline PSF the chunks check the model against (psf.model: spline)."""
    return {"spline": PSF_SPLINE} if config["psf"]["model"] == "spline" else {}


def crlb_physics():
    """The pipeline's physics for the Cramér-Rao bound when the ground truth does not carry
    its generator's (the PSF comes from the bead calibration with psf.source: calibration).
    """
    sim = config["simulation"]
    return {
        "source": config["psf"]["source"],
        "model": config["psf"]["model"],
        "table2": config["psf"]["table2"],
        "plane_z_nm": config["grid"]["plane_z_nm"],
        "px_size_nm": config["grid"]["px_size_nm"],
        "integrate_pixels": config["psf"]["integrate_pixels"],
        "noise": sim["noise"],
        "noise_params": sim["noise_params"],
    }


def demo_true_psf(wildcards):
    """The tabulated vectorial PSF of the demo's true microscope, if it has one."""
    if config["demo"]["microscope"]["psf_model"] != "vectorial":
        return {}
    return {"true_psf": f"{config['demo']['out_dir']}/true_psf.h5"}


def demo_files():
    """Files of the built-in demo data (bead stacks, two movies with ground truth), by the
    rule of demo.smk that makes them."""
    cams = [f"camera{k}.tif" for k in range(1, 5)]
    return {
        "demo_beads": [f"{DEMO_DIR}/beads/{c}" for c in cams]
        + [f"{DEMO_DIR}/beads/truth.yaml"],
        "demo_movie_per_camera": [f"{DEMO_DIR}/demo1/{c}" for c in cams]
        + [f"{DEMO_DIR}/demo1/ground_truth.parquet"],
        "demo_movie_stack": [
            f"{DEMO_DIR}/demo2/movie.tif",
            f"{DEMO_DIR}/demo2/ground_truth.parquet",
        ],
    }


def _sheet(movie, column):
    value = samples.loc[movie].get(column)
    return None if pd.isna(value) else value


#: sample-sheet columns that name files (see workflow/schemas/movies.schema.yaml)
SHEET_FILE_COLUMNS = ["path", *PLANE_COLUMNS, "ground_truth"]
_DEMO_FILES = {
    os.path.abspath(f): r for r, files in demo_files().items() for f in files
}


def _absent(path):
    """A file of the sample sheet that is not there and that no rule makes (the demo's)."""
    return not os.path.exists(path) and os.path.abspath(path) not in _DEMO_FILES


def _present(paths):
    return [p for p in paths if not _absent(p)]


def demo_outputs():
    """Files of the built-in demo data the config uses: those of each demo rule one of
    whose files the sample sheet or calibration.beads names (config/config.yaml does).
    """
    named = [*get_bead_tiffs(None)]
    named += [_sheet(m, c) for m in MOVIES for c in SHEET_FILE_COLUMNS]
    used = {_DEMO_FILES.get(os.path.abspath(f)) for f in named if f}
    return [f for rule, files in demo_files().items() if rule in used for f in files]


def _missing_message(movie):
    """The one line for a sheet row whose files are not there, or None."""
    absent = [p for c in SHEET_FILE_COLUMNS if (p := _sheet(movie, c)) and _absent(p)]
    if absent:
        return f"{config['samples']} row {movie}: {', '.join(absent)}: no such file"


#: movie -> the one line naming its sheet files that are not there. The first job of such a
#: movie (movie_info) fails with this line, the other movies run: the input functions below
#: leave such files out, so that Snakemake can plan the jobs of every movie.
MISSING = {m: msg for m in MOVIES if (msg := _missing_message(m))}
if MISSING and workflow.is_main_process:
    for _msg in MISSING.values():
        logger.warning(
            f"voxloc: warning: {_msg} (this movie's jobs will fail, the others run)"
        )


def movie_tiffs(wildcards):
    """The TIFF(s) of a movie: one T x 4 x H x W file or the four per-camera files (those
    that are there: see MISSING)."""
    path = _sheet(wildcards.movie, "path")
    paths = [path] if path else [_sheet(wildcards.movie, c) for c in PLANE_COLUMNS]
    return _present(paths)


def movie_info_params(wildcards):
    """Rule movie_info's camera offset and gain of the movie, and `missing`, the line that
    fails the job, when files of its sheet row are not there."""
    params = movie_camera(wildcards)
    if wildcards.movie in MISSING:
        params["missing"] = MISSING[wildcards.movie]
    return params


def movie_camera(wildcards):
    """Camera offset and gain of a movie: its sample-sheet row, else config localize.camera."""
    default = config["localize"]["camera"]
    values = {k: _sheet(wildcards.movie, k) for k in ("offset_adu", "adu_per_photon")}
    return {k: float(default[k] if v is None else v) for k, v in values.items()}


def ground_truth(wildcards):
    """The movie's ground truth (nothing when it is not there: see MISSING)."""
    path = _sheet(wildcards.movie, "ground_truth")
    return path if path and not _absent(path) else []


def localization_chunks(wildcards):
    """The chunk files of a movie, known once its header has been read (checkpoint)."""
    info = checkpoints.movie_info.get(movie=wildcards.movie).output[0]
    n_frames = vio.read_yaml(info)["n_frames"]
    n_chunks = len(vconfig.chunk_ranges(n_frames, config["localize"]["chunk_frames"]))
    return [
        f"results/localizations/{wildcards.movie}/chunk-{c:04d}.parquet"
        for c in range(n_chunks)
    ]


def movie_products(movie):
    """Output column -> path of one movie's finished products (the summary's path columns)."""
    out = {
        "localizations": f"results/localizations/{movie}.parquet",
        "picasso": f"results/localizations/{movie}.hdf5",
        "thunderstorm": f"results/localizations/{movie}.csv",
        "render_tif": f"results/render/{movie}.tif",
        "render_png": f"results/render/{movie}.png",
        "evaluation": (
            f"results/evaluation/{movie}.csv" if movie in MOVIES_WITH_TRUTH else ""
        ),
    }
    return out


def run_products(wildcards):
    """Every movie's products: the summary comes after all of them."""
    return [p for m in MOVIES for p in movie_products(m).values() if p]


def get_final_output():
    """Everything the default target builds (the demo data where the config uses it)."""
    out = demo_outputs()
    out += [AFFINE, PSF_CALIBRATION]
    out += ["results/calibration/affine_qc.png", "results/calibration/psf_qc.png"]
    if config["psf"]["model"] == "spline":
        out += [PSF_SPLINE, "results/calibration/psf_spline_qc.png"]
    if TRAIN:  # else localize.model: no simulation, no training
        out += [p for name in DATASETS for p in shard_paths(name)]
        out += [MODEL]
        name = config["train"]["name"]
        out += [
            f"results/models/{name}/training.png",
            f"results/evaluation/voxels/{name}.tsv",
        ]
    for movie in MOVIES:
        out += [
            f"results/localizations/{movie}{ext}"
            for ext in (".parquet", ".hdf5", ".yaml", ".csv")
        ]
        out += [f"results/render/{movie}.tif", f"results/render/{movie}.png"]
    if MOVIES_WITH_TRUTH:
        out.append("results/evaluation/summary.tsv")
    density = f"results/evaluation/density/{config['train']['name']}"
    out += [
        f"{density}{s}" for s in (".tsv", "_jaccard_rmse.png", "_error_histograms.png")
    ]
    out += ["results/evaluation/speed.tsv", "results/evaluation/speed.png"]
    out.append(RUN_SUMMARY)
    return out
