"""Cluster review file: written once from the automatic names, then owned by the user."""

import pickle
from pathlib import Path

import yaml

from fiberprep import clustering
from fiberprep import io as fio
from fiberprep import pipeline

HEADER = """\
# fiberprep cluster review: defect type of each cluster of clustering/model.pkl.
# Written once from the automatic names; edit it and rerun: only the labels and what
# follows are redone. Per cluster id: set `type` to one of scratch, pit_dig,
# contamination, chip, other, or replace the entry by `{merge_into: <cluster id>}`.
# `rule` and `size` are for reading only (the naming rule and the fit sample size).
"""

pipeline.log_to(snakemake.log[0])
model = pickle.loads(Path(snakemake.input[0]).read_bytes())
body = yaml.safe_dump(clustering.review_template(model), sort_keys=True, width=100)
fio.write_bytes(snakemake.output[0], (HEADER + body).encode("utf-8"))
