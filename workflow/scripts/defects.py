"""Defects shard job: DO2MR/LEI defect instances of each accepted image of one shard."""

import pandas as pd

from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
zones_records = pipeline.accepted_records(
    pd.read_parquet(snakemake.input.zones), snakemake.params.root
)
results = pipeline.run_shard(
    pipeline.defects_image,
    zones_records,
    snakemake.params.stage,
    snakemake.params.root,
    snakemake.threads,
)
pipeline.log.info("defects: %s", pipeline.status_summary([r for r, _ in results]))
fio.write_parquet(
    pipeline.concat_tables([t for _, t in results], lambda: pipeline.DEFECT_TABLE_COLUMNS),
    snakemake.output[0],
)
