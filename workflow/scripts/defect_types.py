"""Defect types (gather): concatenate the per-shard label tables, sorted by defect."""

import pandas as pd

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
table = pipeline.concat_tables([pd.read_parquet(p) for p in snakemake.input])
table = table.sort_values(["image_id", "number"], ignore_index=True)
pipeline.log.info("%d defects from %d shards", len(table), len(snakemake.input))
fio.write_parquet(table, snakemake.output[0])
