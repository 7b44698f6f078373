"""Cluster settings: the parameters the cluster model depends on, as a file."""

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
fio.write_json(
    snakemake.output[0],
    {
        "clustering": snakemake.params.clustering,
        "per_image_stage_params": snakemake.params.upstream,
        "code": snakemake.params.code,
    },
)
