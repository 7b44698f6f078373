"""Defect types (gather): the per-shard label tables merged into one, sorted by
defect (image id, number), streamed a batch per shard at a time."""

from fiberprep import pipeline

pipeline.log_to(snakemake.log[0])
n = pipeline.merge_sorted_tables(
    list(snakemake.input), snakemake.output[0], ["image_id", "number"]
)
pipeline.log.info("%d defects from %d shards", n, len(snakemake.input))
