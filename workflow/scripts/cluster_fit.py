"""Cluster fit (gather): one model over the defect features of all shards.

The fit reads only the rows of its seeded subsample (``clustering.max_fit_samples``),
one shard table at a time: memory stays bounded at any number of defects. Also writes
the review template (the automatic cluster names as the editable YAML) that rule
``cluster_review`` copies to the review file on the first run.
"""

import pickle
from pathlib import Path

import yaml

from fiberprep import clustering
from fiberprep import io as fio
from fiberprep import pipeline

REVIEW_HEADER = """\
# fiberprep cluster review: defect type of each cluster of clustering/model.pkl.
# Written once from the automatic names; edit it and rerun: only the labels and what
# follows are redone. Per cluster id: set `type` to one of scratch, pit_dig,
# contamination, chip, other, or replace the entry by `{merge_into: <cluster id>}`.
# `rule` and `size` are for reading only (the naming rule and the fit sample size).
"""

pipeline.log_to(snakemake.log[0])
P = snakemake.params.clustering
features, total = pipeline.sample_rows(
    snakemake.input.features, P["max_fit_samples"], P["seed"], lambda: pipeline.FEATURE_TABLE_COLUMNS
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
# the review file's first version (rule cluster_review copies it once)
body = yaml.safe_dump(clustering.review_template(model), sort_keys=True, width=100)
fio.write_bytes(snakemake.output.review, (REVIEW_HEADER + body).encode("utf-8"))
