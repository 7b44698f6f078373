"""Features shard job: per-defect and per-zone features, and each image's final status."""

import pandas as pd

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
zones_shard = pd.read_parquet(snakemake.input.zones)
results = pipeline.run_shard(
    pipeline.features_image,
    pipeline.accepted_records(zones_shard, snakemake.params.root),
    snakemake.params.stage,
    snakemake.params.root,
    snakemake.threads,
)
records = [r for r, _, _ in results]
pipeline.log.info("features: %s", pipeline.status_summary(records))
fio.write_parquet(
    pipeline.concat_tables([d for _, d, _ in results], lambda: pipeline.FEATURE_TABLE_COLUMNS),
    snakemake.output.defects,
)
fio.write_parquet(pipeline.concat_tables([z for _, _, z in results]), snakemake.output.zones)
fio.write_parquet(
    pipeline.final_images_table(zones_shard, records), snakemake.output.images
)
