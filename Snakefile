# fiberprep: labelled datasets from fiber-optic connector end-face images.
# Run: snakemake --cores all [--config input_dir=/some/folder results_dir=/some/out]


from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/zones.smk"
include: "workflow/rules/defects.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
