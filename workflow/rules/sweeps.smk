# Density and speed sweeps of the trained model (voxloc.evaluation.sweeps; paper Sect. 4.2, Figs. 7-9):
# metrics against the number of molecules per simulated frame, and localization speed
# against the image size, reading a TIFF from disk and writing Parquet. The plot rules also
# write each sweep's table as an HTML page for the report (voxloc.evaluation.html_tables).


rule density_sweep:
    input:
        model=MODEL,  # {name} is train.name; localize.model when that is given
    output:
        table="results/evaluation/density/{name}.tsv",
        errors="results/evaluation/density/{name}_errors.parquet",
    log:
        "logs/evaluate/density/{name}.log",
    benchmark:
        "benchmarks/evaluate/density/{name}.tsv"
    wildcard_constraints:
        name=config["train"]["name"],
    conda:
        "../../envs/voxloc-torch.yaml"
    threads: rule_threads("density_sweep")
    resources:
        mem_mb=rule_resource("density_sweep", "mem_mb"),
        runtime=rule_resource("density_sweep", "runtime"),
    params:
        options=lookup(dpath="sweeps/density", within=config),
        tolerances=lookup(dpath="evaluate", within=config),
        batch_frames=lookup(dpath="localize/batch_frames", within=config),
        device=lookup(dpath="localize/device", within=config),
        fit=lookup(dpath="localize", within=config),  # fit, fit_window_px, ... (issue 16)
        seed=config["seed"],
    script:
        "../../scripts/density_sweep.py"


rule plot_density_sweep:
    input:
        table="results/evaluation/density/{name}.tsv",
        errors="results/evaluation/density/{name}_errors.parquet",
    output:
        curves=report(
            "results/evaluation/density/{name}_jaccard_rmse.png",
            caption="../report/density_sweep.rst",
            category="4. Evaluation",
            subcategory="Density sweep (Figs. 7-8)",
            labels={"model": "{name}", "figure": "Jaccard and error vs. M"},
        ),
        histograms=report(
            "results/evaluation/density/{name}_error_histograms.png",
            caption="../report/density_errors.rst",
            category="4. Evaluation",
            subcategory="Density sweep (Figs. 7-8)",
            labels={"model": "{name}", "figure": "error histograms"},
        ),
        table=report(
            "results/evaluation/density/{name}.html",
            caption="../report/density_table.rst",
            category="4. Evaluation",
            subcategory="Density sweep (Figs. 7-8)",
            labels={"model": "{name}", "figure": "table"},
        ),
    log:
        "logs/evaluate/density/{name}_plots.log",
    wildcard_constraints:
        name=config["train"]["name"],
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("plot_density_sweep")
    resources:
        mem_mb=rule_resource("plot_density_sweep", "mem_mb"),
        runtime=rule_resource("plot_density_sweep", "runtime"),
    params:
        model=MODEL,
        options=lookup(dpath="sweeps/density", within=config),
        tolerances=lookup(dpath="evaluate", within=config),
    script:
        "../../scripts/plot_density_sweep.py"


rule speed_sweep:
    input:
        model=MODEL,
    output:
        "results/evaluation/speed.tsv",
    log:
        "logs/evaluate/speed.log",
    benchmark:
        "benchmarks/evaluate/speed.tsv"
    conda:
        "../../envs/voxloc-torch.yaml"
    threads: rule_threads("speed_sweep")
    resources:
        mem_mb=rule_resource("speed_sweep", "mem_mb"),
        runtime=rule_resource("speed_sweep", "runtime"),
    params:
        options=lookup(dpath="sweeps/speed", within=config),
        localize=lookup(dpath="localize", within=config),
        seed=config["seed"],
    script:
        "../../scripts/speed_sweep.py"


rule plot_speed_sweep:
    input:
        "results/evaluation/speed.tsv",
    output:
        report(
            "results/evaluation/speed.png",
            caption="../report/speed_sweep.rst",
            category="4. Evaluation",
            subcategory="Speed (Fig. 9)",
        ),
        table=report(
            "results/evaluation/speed.html",
            caption="../report/speed_table.rst",
            category="4. Evaluation",
            subcategory="Speed (Fig. 9)",
        ),
    log:
        "logs/evaluate/speed_plot.log",
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("plot_speed_sweep")
    resources:
        mem_mb=rule_resource("plot_speed_sweep", "mem_mb"),
        runtime=rule_resource("plot_speed_sweep", "runtime"),
    params:
        model=MODEL,
        options=lookup(dpath="sweeps/speed", within=config),
        localize=lookup(dpath="localize", within=config),
    script:
        "../../scripts/plot_speed_sweep.py"
