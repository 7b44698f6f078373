"""Cluster fit (gather): one model over the defect features of all shards.

The fit reads only the rows of its seeded subsample (``clustering.max_fit_samples``),
one shard table at a time: memory stays bounded at any number of defects.
"""

import pickle
from pathlib import Path

from fiberprep import clustering
from fiberprep import io as fio
from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
P = snakemake.params.clustering
features, total = pipeline.sample_rows(
    snakemake.input.features, P["max_fit_samples"], P["seed"], pipeline.FEATURE_TABLE_COLUMNS
)
previous_path = Path(snakemake.params.previous)
previous = pickle.loads(previous_path.read_bytes()) if previous_path.exists() else None
model = clustering.fit_model(features, P, previous=previous)
pipeline.log.info(
    "fitted %d clusters on %d of %d defects", len(model["sizes"]), model["fit_rows"], total
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
