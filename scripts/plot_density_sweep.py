"""Rule plot_density_sweep: Jaccard and error against M (Fig. 7) and error histograms (Fig. 8)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path

import pandas as pd

from voxloc.errors import exit_on_error
from voxloc.evaluation import sweep_plots

opts = snakemake.params.options
tol = snakemake.params.tolerances
name = "/".join(Path(snakemake.params.model).parts[-2:])  # e.g. quick/model.pt
with exit_on_error():  # one line naming the problem, in the log and on the console
    table = pd.read_csv(snakemake.input.table, sep="\t")
    errors = pd.read_parquet(snakemake.input.errors)
    title = f"model {name}: {opts['frames']} simulated frames per M"
    sweep_plots.plot_density(table, snakemake.output.curves, title=title)
    sweep_plots.plot_error_histograms(
        errors,
        snakemake.output.histograms,
        sweep_plots.histogram_molecules(opts["n_molecules"], opts["histogram_n_molecules"]),
        lateral_nm=tol["lateral_tolerance_nm"],
        axial_nm=tol["axial_tolerance_nm"],
        title=f"model {name}: error of matched localizations",
    )
