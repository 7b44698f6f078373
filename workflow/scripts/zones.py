"""Zones shard job: geometry and IEC zone map of each image of one shard (coreless
images take their folder's fiber type)."""

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
records = pipeline.zones_shard(
    snakemake.params.images,
    snakemake.params.stage,
    snakemake.params.root,
    snakemake.threads,
)
table = pipeline.zones_table(records)
pipeline.log.info("zones: %s", pipeline.status_summary(records))
fio.write_parquet(table, snakemake.output[0])
