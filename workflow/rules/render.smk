# Super-resolved renders of a movie's localizations (paper Sect. 4.3, Fig. 11(b)): a 3-D
# histogram of 24 x 24 x 50 nm voxels as a 16-bit ImageJ TIFF, and a depth-coded PNG; by
# default (render.blur: individual) each localization drawn as a Gaussian of its own fitted
# sigma (Picasso's "individual localization precision"), the TIFF keeping the counts.


rule render_movie:
    input:
        "results/localizations/{movie}.parquet",
    output:
        tif="results/render/{movie}.tif",
        png=report(
            "results/render/{movie}.png",
            caption="../report/render.rst",
            category="5. Renders",
            labels={"movie": "{movie}"},
        ),
    log:
        "logs/render/{movie}.log",
    benchmark:
        "benchmarks/render/{movie}.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("render_movie")
    resources:
        mem_mb=rule_resource("render_movie", "mem_mb"),
        runtime=rule_resource("render_movie", "runtime"),
    params:
        render=lookup(dpath="render", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
        plane_z_nm=lookup(dpath="grid/plane_z_nm", within=config),
    script:
        "../../scripts/render_movie.py"
