# voxloc: 3D SMLM for quad-plane microscopes by voxel-wise regression (Aritake et al. 2020).
#
#   snakemake --cores 8                      # laptop / workstation
#   snakemake --cores 8 --use-conda          # with the per-rule conda envs
#   snakemake --configfile config/paper.yaml # the paper's scale (Table 3)


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/localize.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/sweeps.smk"
include: "workflow/rules/batch.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
