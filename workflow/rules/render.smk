# Super-resolved renders of a movie's localizations (paper Sect. 4.3, Fig. 11(b)): a 3-D
# histogram of 24 x 24 x 50 nm voxels as a 16-bit ImageJ TIFF, and a depth-coded PNG.


rule render_movie:
    input:
        "results/localizations/{movie}.parquet",
    output:
        tif="results/render/{movie}.tif",
        png="results/render/{movie}.png",
    log:
        "logs/render/{movie}.log",
    benchmark:
        "benchmarks/render/{movie}.tsv"
    conda:
        "../../envs/voxloc.yaml"
    resources:
        # ~150 MB + 10 bytes per voxel, voxels = (W s / px_nm)(H s / px_nm)(z range / z_bin_nm):
        # a 96 x 96 px field is 19 M voxels, ~270 MB (measured); 2000 MB fits ~180 M voxels
        mem_mb=2000,
        runtime=30,
    params:
        render=lookup(dpath="render", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
        plane_z_nm=lookup(dpath="grid/plane_z_nm", within=config),
    script:
        "../../scripts/render_movie.py"
