"""Analyse shard job: zones -> defects -> features of every image of one shard.

Writes the shard tables of the three stages: zones (one row per image), defects and
features (one row per defect), zone features, and the images with their final status.
"""

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
P = snakemake.params
results = pipeline.run_shard(pipeline.analyse_image, P.images, P.stages, P.root, snakemake.threads)
zones_records = [r[0] for r in results]
zones_table = pipeline.zones_table(zones_records)
fio.write_parquet(zones_table, snakemake.output.zones)
analysed = [r for r in results if r[1] is not None]
pipeline.log.info("zones: %s", pipeline.status_summary(zones_records))
pipeline.log.info("defects: %s", pipeline.status_summary([r[1] for r in analysed]))
fio.write_parquet(
    pipeline.concat_tables([r[2] for r in analysed], pipeline.DEFECT_TABLE_COLUMNS),
    snakemake.output.defects,
)
features_records = [r[3] for r in analysed]
pipeline.log.info("features: %s", pipeline.status_summary(features_records))
fio.write_parquet(
    pipeline.concat_tables([r[4] for r in analysed], pipeline.FEATURE_TABLE_COLUMNS),
    snakemake.output.features,
)
fio.write_parquet(pipeline.concat_tables([r[5] for r in analysed]), snakemake.output.zone_features)
fio.write_parquet(
    pipeline.final_images_table(zones_table, features_records), snakemake.output.images
)
