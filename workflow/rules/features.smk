rule features:
    """Per shard: features of every defect and zone, and the images' final status."""
    input:
        zones=INTER / "zones" / "shard_{shard}.parquet",
        defects=INTER / "defects" / "shard_{shard}.parquet",
    output:
        defects=INTER / "features" / "shard_{shard}.parquet",
        zones=INTER / "features" / "zones_shard_{shard}.parquet",
        images=INTER / "features" / "images_shard_{shard}.parquet",
    log:
        LOGS / "features" / "shard_{shard}.log",
    conda:
        ENV
    threads: shard_threads
    resources:
        mem_mb=shard_mem_mb,
        runtime=shard_runtime,
    params:
        manifest=shard_manifest,
        stage=STAGE_PARAMS["features"],
        root=parent_of(1),
    script:
        "../scripts/features.py"
