"""Rule plot_speed_sweep: frames/s against image size, log-log (Fig. 9)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w", buffering=1)
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path

import pandas as pd

from voxloc.evaluation import sweep_plots

table = pd.read_csv(snakemake.input[0], sep="\t")
name = "/".join(Path(snakemake.params.model).parts[-2:])  # e.g. quick/model.pt
title = f"model {name}: localization speed, TIFF on disk → Parquet"
sweep_plots.plot_speed(table, snakemake.output[0], title=title)
