# Built-in demo data from the "true microscope" of config `demo` (voxloc.simulation.demo): bead z-stacks
# and two STORM movies, one per input layout, rendered through the true microscope's PSF: the
# vectorial PSF of an ideal 1.49-NA objective tabulated once (rule demo_true_psf), or the
# Gaussian of demo.microscope.psf. `config` is validated by the Snakefile.


rule demo_true_psf:
    output:
        f"{config['demo']['out_dir']}/true_psf.h5",
    log:
        "logs/demo/true_psf.log",
    benchmark:
        "benchmarks/demo/true_psf.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("demo_true_psf")
    resources:
        mem_mb=rule_resource("demo_true_psf", "mem_mb"),
        runtime=rule_resource("demo_true_psf", "runtime"),
    params:
        demo=lookup(dpath="demo", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/demo_true_psf.py"


rule demo_beads:
    input:
        unpack(demo_true_psf),
    output:
        stacks=expand(
            "{out}/beads/camera{k}.tif", out=config["demo"]["out_dir"], k=[1, 2, 3, 4]
        ),
        truth=f"{config['demo']['out_dir']}/beads/truth.yaml",
    log:
        "logs/demo/beads.log",
    benchmark:
        "benchmarks/demo/beads.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("demo_beads")
    resources:
        mem_mb=rule_resource("demo_beads", "mem_mb"),
        runtime=rule_resource("demo_beads", "runtime"),
    params:
        demo=lookup(dpath="demo", within=config),
        seed=lookup(dpath="seed", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/demo_beads.py"


rule demo_movie_per_camera:
    input:
        unpack(demo_true_psf),
    output:
        planes=expand(
            "{out}/demo1/camera{k}.tif", out=config["demo"]["out_dir"], k=[1, 2, 3, 4]
        ),
        ground_truth=f"{config['demo']['out_dir']}/demo1/ground_truth.parquet",
    log:
        "logs/demo/demo1.log",
    benchmark:
        "benchmarks/demo/demo1.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("demo_movie_per_camera")
    resources:
        mem_mb=rule_resource("demo_movie_per_camera", "mem_mb"),
        runtime=rule_resource("demo_movie_per_camera", "runtime"),
    params:
        name="demo1",
        layout="per_camera",
        demo=lookup(dpath="demo", within=config),
        seed=lookup(dpath="seed", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/demo_movie.py"


rule demo_movie_stack:
    input:
        unpack(demo_true_psf),
    output:
        movie=f"{config['demo']['out_dir']}/demo2/movie.tif",
        ground_truth=f"{config['demo']['out_dir']}/demo2/ground_truth.parquet",
    log:
        "logs/demo/demo2.log",
    benchmark:
        "benchmarks/demo/demo2.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("demo_movie_stack")
    resources:
        mem_mb=rule_resource("demo_movie_stack", "mem_mb"),
        runtime=rule_resource("demo_movie_stack", "runtime"),
    params:
        name="demo2",
        layout="stack",
        demo=lookup(dpath="demo", within=config),
        seed=lookup(dpath="seed", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/demo_movie.py"
