# Localization of every movie of the sample sheet: header check (checkpoint), frame chunks
# as separate jobs, merge to one Parquet plus Picasso's HDF5 + YAML.


checkpoint movie_info:
    input:
        movie=movie_tiffs,
    output:
        "results/movies/{movie}/info.yaml",
    log:
        "logs/localize/{movie}/info.log",
    conda:
        "../../envs/voxloc.yaml"
    resources:
        mem_mb=500,
        runtime=10,
    params:
        camera=movie_camera,
    script:
        "../../scripts/movie_info.py"


rule localize_chunk:
    input:
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
    threads: 2
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        options=lookup(dpath="localize", within=config),
        camera=movie_camera,
    script:
        "../../scripts/localize_chunk.py"


rule merge_localizations:
    input:
        chunks=localization_chunks,
    output:
        parquet="results/localizations/{movie}.parquet",
        picasso=multiext("results/localizations/{movie}", ".hdf5", ".yaml"),
    log:
        "logs/localize/{movie}/merge.log",
    conda:
        "../../envs/voxloc.yaml"
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        lateral_precision_nm=lookup(
            dpath="localize/picasso_lateral_precision_nm", within=config
        ),
    script:
        "../../scripts/merge_localizations.py"
