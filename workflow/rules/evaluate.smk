# Evaluation against ground truth (voxloc.evaluation.evaluate, voxloc.physics.crlb, voxloc.evaluation.voxel_metrics):
# per movie with a ground truth in the sample sheet, the localization-level metrics and the
# Cramér-Rao bound, and the same per 100 nm bin of true z with its figure
# (voxloc.evaluation.depth, from the per-molecule table: the bound is computed once), and the
# calibration of the fit's reported sigma against the observed errors (voxloc.evaluation.
# uncertainty: coverage at 1 and 2 sigma, calibration curve, error / sigma histogram; built
# with the movie's metrics, so the default target has it); on the validation shards, the
# voxel-level Tables 4-5 of the paper. Each table is also written as
# an HTML page (voxloc.evaluation.html_tables), which the report shows on the page; the TSV
# stays for download.


rule evaluate_movie:
    input:
        unpack(simulation_psf),
        locs="results/localizations/{movie}.parquet",
        truth=ground_truth,
    output:
        metrics="results/evaluation/{movie}.csv",
        molecules="results/evaluation/{movie}.molecules.parquet",
        depth="results/evaluation/{movie}_depth.tsv",
        depth_png=report(
            "results/evaluation/{movie}_depth.png",
            caption="../report/evaluate_depth.rst",
            category="4. Evaluation",
            subcategory="Depth",
            labels={"movie": "{movie}"},
        ),
        sigma="results/evaluation/{movie}_sigma.tsv",
        sigma_png=report(
            "results/evaluation/{movie}_sigma.png",
            caption="../report/evaluate_sigma.rst",
            category="4. Evaluation",
            subcategory="Uncertainty",
            labels={"movie": "{movie}"},
        ),
    log:
        "logs/evaluate/{movie}.log",
    benchmark:
        "benchmarks/evaluate/{movie}.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("evaluate_movie")
    resources:
        mem_mb=rule_resource("evaluate_movie", "mem_mb"),
        runtime=rule_resource("evaluate_movie", "runtime"),
    params:
        options=lookup(dpath="evaluate", within=config),
        physics=crlb_physics(),
    script:
        "../../scripts/evaluate_movie.py"


rule evaluation_summary:
    input:
        expand("results/evaluation/{movie}.csv", movie=MOVIES_WITH_TRUTH),
    output:
        report(
            "results/evaluation/summary.tsv",
            caption="../report/evaluation_summary.rst",
            category="4. Evaluation",
            subcategory="Movies",
        ),
        html=report(
            "results/evaluation/summary.html",
            caption="../report/evaluation_summary.rst",
            category="4. Evaluation",
            subcategory="Movies",
        ),
    log:
        "logs/evaluate/summary.log",
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("evaluation_summary")
    resources:
        mem_mb=rule_resource("evaluation_summary", "mem_mb"),
        runtime=rule_resource("evaluation_summary", "runtime"),
    script:
        "../../scripts/evaluation_summary.py"


rule evaluate_voxels:
    input:
        model="results/models/{name}/model.pt",
        shards=shard_paths(config["train"]["val_dataset"]),
    output:
        report(
            "results/evaluation/voxels/{name}.tsv",
            caption="../report/evaluate_voxels.rst",
            category="4. Evaluation",
            subcategory="Voxels (Tables 4-5)",
        ),
        html=report(
            "results/evaluation/voxels/{name}.html",
            caption="../report/evaluate_voxels.rst",
            category="4. Evaluation",
            subcategory="Voxels (Tables 4-5)",
        ),
    log:
        "logs/evaluate/voxels-{name}.log",
    benchmark:
        "benchmarks/evaluate/voxels-{name}.tsv"
    conda:
        "../../envs/voxloc-torch.yaml"
    threads: rule_threads("evaluate_voxels")
    resources:
        mem_mb=rule_resource("evaluate_voxels", "mem_mb"),
        runtime=rule_resource("evaluate_voxels", "runtime"),
    params:
        taus=lookup(dpath="evaluate/voxel_taus", within=config),
        device=lookup(dpath="localize/device", within=config),
    script:
        "../../scripts/evaluate_voxels.py"
