# Simulation of training frames (paper Sect. 2, Table 3) into HDF5 shards, one job per shard.


rule simulate_shard:
    input:
        unpack(simulation_psf),
    output:
        "results/simulation/{dataset}/shard-{index}.h5",
    log:
        "logs/simulate/{dataset}/shard-{index}.log",
    benchmark:
        "benchmarks/simulate/{dataset}/shard-{index}.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("simulate_shard")
    resources:
        mem_mb=rule_resource("simulate_shard", "mem_mb"),
        runtime=rule_resource("simulate_shard", "runtime"),
    params:
        grid=config["grid"],
        psf=config["psf"],
        simulation=config["simulation"],
        seed=config["seed"],
    script:
        "../../scripts/simulate_shard.py"
