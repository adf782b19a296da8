"""Rule plot_speed_sweep: frames/s against image size, log-log (Fig. 9)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

import pandas as pd

from voxloc.evaluation import html_tables, sweep_plots

table = pd.read_csv(snakemake.input[0], sep="\t")
name = "/".join(Path(snakemake.params.model).parts[-2:])  # e.g. quick/model.pt
title = f"model {name}: localization speed, TIFF on disk → Parquet"
sweep_plots.plot_speed(table, snakemake.output[0], title=title)
html_tables.write_html_table(
    snakemake.input[0], snakemake.output.table, "speed", title=f"Localization speed of model {name}"
)
