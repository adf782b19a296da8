# Evaluation against ground truth, for every movie of the sample sheet that has one.


rule evaluate_movie:
    input:
        locs="results/localizations/{movie}.parquet",
        truth=ground_truth,
    output:
        "results/evaluation/{movie}.csv",
    log:
        "logs/evaluate/{movie}.log",
    conda:
        "../../envs/voxloc.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        options=lookup(dpath="evaluate", within=config),
    script:
        "../../scripts/evaluate_movie.py"


rule evaluation_summary:
    input:
        expand("results/evaluation/{movie}.csv", movie=MOVIES_WITH_TRUTH),
    output:
        "results/evaluation/summary.tsv",
    log:
        "logs/evaluate/summary.log",
    conda:
        "../../envs/voxloc.yaml"
    script:
        "../../scripts/evaluation_summary.py"
