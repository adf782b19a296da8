# Batch runs over the sample sheet (voxloc.evaluation.run_summary): one table of every movie of the run with
# its frame count, localization count, localization job time and output paths. It is made
# once every movie is done: a rerun after new rows rebuilds it (it lists all movies).


rule run_summary:
    input:
        info=expand("results/movies/{movie}/info.yaml", movie=MOVIES),
        localizations=expand("results/localizations/{movie}.parquet", movie=MOVIES),
        products=run_products,
    output:
        RUN_SUMMARY,
    log:
        "logs/batch/run_summary.log",
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("run_summary")
    resources:
        mem_mb=rule_resource("run_summary", "mem_mb"),
        runtime=rule_resource("run_summary", "runtime"),
    params:
        movies=MOVIES,
        outputs={m: movie_products(m) | {"logs": f"logs/localize/{m}/"} for m in MOVIES},
        chunk_frames=lookup(dpath="localize/chunk_frames", within=config),
        # a function: Snakemake would fill a string's {movie} with wildcards
        benchmark=lambda wildcards: "benchmarks/localize/{movie}/chunk-{chunk}.tsv",
    script:
        "../../scripts/run_summary.py"
