"""Cluster assign (per shard): nearest-centroid cluster of each defect, saved model."""

import pickle
from pathlib import Path

import pandas as pd

from fiberprep import clustering
from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
model = pickle.loads(Path(snakemake.input.model).read_bytes())
features = pd.read_parquet(snakemake.input.features)
table = features.reindex(columns=["defect_id", "image_id", "number"]).astype(
    {"defect_id": str, "image_id": str, "number": "int64"}
)
table["cluster"] = clustering.assign_clusters(model, features).astype("int64")
fio.write_parquet(table, snakemake.output[0])
