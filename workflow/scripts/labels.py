"""Labels of one shard: nearest-centroid cluster of each defect (saved model), defect
type from cluster + review mapping, and severity."""

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
features = pd.read_parquet(snakemake.input.features)
# A shard without defects stores untyped (float) key columns; the merge needs strings.
table = features.reindex(columns=["defect_id", "image_id", "number"]).astype(
    {"defect_id": str, "image_id": str, "number": "int64"}
)
table["cluster"] = clustering.assign_clusters(model, features).astype("int64")
table["type"] = clustering.apply_review(table["cluster"], model, review)
# the feature table holds every detector column (sizes, zones) the severity needs
table = table.join(
    grading.severity(features.assign(type=table["type"]), snakemake.params.severity)
)
table = table.sort_values(["image_id", "number"], ignore_index=True)
pipeline.log.info("%d defects: %s", len(table), table["type"].value_counts().to_dict())
fio.write_parquet(table, snakemake.output[0])
