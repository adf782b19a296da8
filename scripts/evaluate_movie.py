"""Rule evaluate_movie: match localizations to ground truth, write the metrics (with the
Cramér-Rao bound, with and without the per-molecule fit) as CSV, the per-molecule table as
Parquet and, from it, the accuracy per bin of true z and the calibration of the reported σ
as TSV and PNG."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent / "src"))  # the workflow's own library, first
from voxloc.runtime import rule_script

rule_script(snakemake)  # log, log format, SIGTERM, stale temporary files: see voxloc.runtime

from voxloc.errors import exit_on_error
from voxloc.evaluation import depth, evaluate, uncertainty

opts = snakemake.params.options
physics = snakemake.params.physics
with exit_on_error():  # one line naming the file, in the log and on the console
    crlb_model = None
    if opts["crlb"]:
        crlb_model = evaluate.crlb_model_from_config(
            psf_yaml=snakemake.input.get("psf"),
            spline_h5=snakemake.input.get("spline"),
            table2=physics["table2"],
            plane_z_nm=physics["plane_z_nm"],
            px_size_nm=physics["px_size_nm"],
            noise={"kind": physics["noise"], **physics["noise_params"]},
            integrate_pixels=physics["integrate_pixels"],
        )
    evaluate.evaluate_files(
        snakemake.input.locs,
        snakemake.input.truth,
        snakemake.output.metrics,
        movie=snakemake.wildcards.movie,
        lateral_nm=opts["lateral_tolerance_nm"],
        axial_nm=opts["axial_tolerance_nm"],
        crlb_model=crlb_model,
        crlb=opts["crlb"],
        molecules_out=snakemake.output.molecules,
    )
    depth.write_depth(
        snakemake.output.molecules,
        snakemake.output.depth,
        snakemake.output.depth_png,
        bin_nm=opts["depth_bin_nm"],
        movie=snakemake.wildcards.movie,
    )
    uncertainty.write_sigma(
        snakemake.output.molecules,
        snakemake.output.sigma,
        snakemake.output.sigma_png,
        n_bins=opts.get("sigma_bins", uncertainty.DEFAULT_BINS),
        movie=snakemake.wildcards.movie,
    )
