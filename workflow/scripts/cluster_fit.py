"""Cluster fit (gather): one model over the defect features of all shards."""

import pickle
from pathlib import Path

import pandas as pd

from fiberprep import clustering
from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
features = pipeline.concat_tables([pd.read_parquet(p) for p in snakemake.input.features])
previous_path = Path(snakemake.params.previous)
previous = pickle.loads(previous_path.read_bytes()) if previous_path.exists() else None
model = clustering.fit_model(features, snakemake.params.clustering, previous=previous)
pipeline.log.info(
    "fitted %d clusters on %d of %d defects", len(model["sizes"]), model["fit_rows"], len(features)
)
blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
fio.write_bytes(snakemake.output.model, blob)
# Kept beside the model: the next fit (refit or new parameters) matches its clusters to it.
fio.write_bytes(previous_path, blob)
fio.write_json(
    snakemake.output.summary,
    {
        "method": model["method"],
        "fit_rows": model["fit_rows"],
        "silhouette": {str(k): v for k, v in model["silhouette"].items()},
        "clusters": {
            str(c): {
                "type": model["names"][c]["type"],
                "rule": model["names"][c]["rule"],
                "size": model["sizes"][c],
                "centroid": model["centroids_raw"][c],
            }
            for c in sorted(model["sizes"])
        },
    },
)
