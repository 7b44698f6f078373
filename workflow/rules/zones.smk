rule zones:
    """Per shard: load each image, measure the fiber geometry, label the IEC zones."""
    output:
        INTER / "zones" / "shard_{shard}.parquet",
    log:
        LOGS / "zones" / "shard_{shard}.log",
    conda:
        ENV
    threads: shard_threads
    resources:
        mem_mb=shard_mem_mb,
        runtime=shard_runtime,
    params:
        images=shard_images,
        manifest=shard_manifest,
        stage=STAGE_PARAMS["zones"],
        root=parent_of(1),
    script:
        "../scripts/zones.py"
