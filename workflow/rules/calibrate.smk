# Bead calibration at the head of the chain (voxloc.calibration.calibrate, Aritake et al. 2020 Sect. 2.2,
# 4.1): the affine registration of cameras 2-4 onto camera 1, then the PSF of Table 2 and the
# measured plane positions, then the measured spline PSF (voxloc.calibration.spline_calibrate,
# issue 15). Inputs: the bead z-stacks of config `calibration.beads` (get_bead_tiffs in
# common.smk). `config` is validated by common.smk.


rule calibrate_affine:
    input:
        stacks=get_bead_tiffs,
    output:
        affine="results/calibration/affine.yaml",
        qc=report(
            "results/calibration/affine_qc.png",
            caption="../report/affine_qc.rst",
            category="1. Bead calibration",
        ),
    log:
        "logs/calibration/affine.log",
    benchmark:
        "benchmarks/calibration/affine.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("calibrate_affine")
    resources:
        mem_mb=rule_resource("calibrate_affine", "mem_mb"),
        runtime=rule_resource("calibrate_affine", "runtime"),
    params:
        beads=lookup(dpath="calibration/beads", within=config),
        calibration=lookup(dpath="calibration", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/calibrate_affine.py"


rule fit_psf:
    input:
        stacks=get_bead_tiffs,
        affine="results/calibration/affine.yaml",
    output:
        psf="results/calibration/psf.yaml",
        qc=report(
            "results/calibration/psf_qc.png",
            caption="../report/psf_qc.rst",
            category="1. Bead calibration",
        ),
    log:
        "logs/calibration/psf.log",
    benchmark:
        "benchmarks/calibration/psf.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("fit_psf")
    resources:
        mem_mb=rule_resource("fit_psf", "mem_mb"),
        runtime=rule_resource("fit_psf", "runtime"),
    params:
        beads=lookup(dpath="calibration/beads", within=config),
        calibration=lookup(dpath="calibration", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/fit_psf.py"


rule fit_psf_spline:
    input:
        stacks=get_bead_tiffs,
        affine="results/calibration/affine.yaml",
        psf="results/calibration/psf.yaml",
    output:
        spline="results/calibration/psf_spline.h5",
        qc=report(
            "results/calibration/psf_spline_qc.png",
            caption="../report/psf_spline_qc.rst",
            category="1. Bead calibration",
        ),
    log:
        "logs/calibration/psf_spline.log",
    benchmark:
        "benchmarks/calibration/psf_spline.tsv"
    conda:
        "../../envs/voxloc.yaml"
    threads: rule_threads("fit_psf_spline")
    resources:
        mem_mb=rule_resource("fit_psf_spline", "mem_mb"),
        runtime=rule_resource("fit_psf_spline", "runtime"),
    params:
        beads=lookup(dpath="calibration/beads", within=config),
        calibration=lookup(dpath="calibration", within=config),
        px_size_nm=lookup(dpath="grid/px_size_nm", within=config),
    script:
        "../../scripts/fit_psf_spline.py"
