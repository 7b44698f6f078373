"""Labels of one shard: defect type from cluster + review mapping, and severity."""

import pickle
from pathlib import Path

import pandas as pd
import yaml

from fiberprep import clustering, grading
from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
model = pickle.loads(Path(snakemake.input.model).read_bytes())
review = yaml.safe_load(Path(snakemake.input.review).read_text(encoding="utf-8"))
clusters = pd.read_parquet(snakemake.input.clusters)
# A shard without defects stores untyped (float) key columns; the merge needs strings.
defects = pd.read_parquet(snakemake.input.defects).astype({"defect_id": str})
table = clusters.reindex(columns=["defect_id", "image_id", "number", "cluster"])
table["type"] = clustering.apply_review(table["cluster"], model, review)
sized = defects.drop(columns=["image_id", "number"], errors="ignore").merge(
    table[["defect_id", "type"]], on="defect_id", how="right"
)
table = table.join(grading.severity(sized, snakemake.params.severity))
table = table.sort_values(["image_id", "number"], ignore_index=True)
pipeline.log.info("%d defects: %s", len(table), table["type"].value_counts().to_dict())
fio.write_parquet(table, snakemake.output[0])
