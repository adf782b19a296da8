"""Rule plot_density_sweep: Jaccard and error against M (Fig. 7) and error histograms (Fig. 8)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

import pandas as pd

from voxloc.errors import exit_on_error
from voxloc.evaluation import html_tables, sweep_plots

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
    html_tables.write_html_table(
        snakemake.input.table, snakemake.output.table, "density", title=f"Density sweep of model {name}"
    )
