# Training of the voxel-wise regression network (paper Sect. 3.2, 4.2) on the simulated shards.
#
# Resumable: checkpoint.pt beside model.pt is written every epoch and on SIGTERM. It is not
# a declared output, so Snakemake keeps it when the job fails or is preempted, and a rerun
# (after preemption: `--rerun-incomplete`) continues from it; log.csv is rebuilt from it.


rule train_model:
    input:
        train=shard_paths(config["train"]["train_dataset"]),
        val=shard_paths(config["train"]["val_dataset"]),
        init=config["train"]["init_from"] or [],
    output:
        model="results/models/{name}/model.pt",
        log_csv="results/models/{name}/log.csv",
    log:
        "logs/train/{name}.log",
    benchmark:
        "benchmarks/train/{name}.tsv"
    wildcard_constraints:
        name=config["train"]["name"],
    conda:
        "../../envs/voxloc-torch.yaml"
    threads: rule_threads("train_model")
    resources:
        mem_mb=rule_resource("train_model", "mem_mb"),
        runtime=rule_resource("train_model", "runtime"),
        gpu=1 if config["train"]["gpu"] else 0,
    params:
        train=config["train"],
        seed=config["seed"],
    script:
        "../../scripts/train_model.py"


rule training_curves:
    input:
        "results/models/{name}/log.csv",
    output:
        report(
            "results/models/{name}/training.png",
            caption="../report/training_curves.rst",
            category="3. Training",
        ),
    log:
        "logs/train/{name}-curves.log",
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("training_curves")
    resources:
        mem_mb=rule_resource("training_curves", "mem_mb"),
        runtime=rule_resource("training_curves", "runtime"),
    params:
        tau=lookup(dpath="train/val_tau", within=config),
    script:
        "../../scripts/training_curves.py"
