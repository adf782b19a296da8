# Localization of every movie of the sample sheet: header check (checkpoint), frame chunks
# as separate jobs, merge to one Parquet plus Picasso's HDF5 + YAML and ThunderSTORM's CSV.


checkpoint movie_info:
    input:
        movie=movie_tiffs,
    output:
        "results/movies/{movie}/info.yaml",
    log:
        "logs/localize/{movie}/info.log",
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("movie_info")
    resources:
        mem_mb=rule_resource("movie_info", "mem_mb"),
        runtime=rule_resource("movie_info", "runtime"),
    params:
        row=movie_info_params,  # camera offset, gain; the sheet's files not there
    script:
        "../../scripts/movie_info.py"


rule localize_chunk:
    input:
        unpack(localize_psf),
        movie=movie_tiffs,
        info="results/movies/{movie}/info.yaml",
        model=MODEL,
        affine=AFFINE,
        psf=PSF_CALIBRATION,
    output:
        "results/localizations/{movie}/chunk-{chunk}.parquet",
    log:
        "logs/localize/{movie}/chunk-{chunk}.log",
    benchmark:
        "benchmarks/localize/{movie}/chunk-{chunk}.tsv"
    conda:
        "../../envs/voxloc-torch.yaml"
    threads: rule_threads("localize_chunk")
    resources:
        mem_mb=rule_resource("localize_chunk", "mem_mb"),
        runtime=rule_resource("localize_chunk", "runtime"),
        gpu=1 if config["localize"]["gpu"] else 0,
    params:
        options=lookup(dpath="localize", within=config),
        camera=movie_camera,
        physics=crlb_physics(),  # the fit's microscope: as the simulation's (psf.source)
    script:
        "../../scripts/localize_chunk.py"


rule merge_localizations:
    input:
        chunks=localization_chunks,
    output:
        parquet="results/localizations/{movie}.parquet",
        picasso=multiext("results/localizations/{movie}", ".hdf5", ".yaml"),
        csv="results/localizations/{movie}.csv",  # ThunderSTORM
    log:
        "logs/localize/{movie}/merge.log",
    benchmark:
        "benchmarks/localize/{movie}/merge.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("merge_localizations")
    resources:
        mem_mb=rule_resource("merge_localizations", "mem_mb"),
        runtime=rule_resource("merge_localizations", "runtime"),
    params:
        lateral_precision_nm=lookup(
            dpath="localize/picasso_lateral_precision_nm", within=config
        ),
    script:
        "../../scripts/merge_localizations.py"
