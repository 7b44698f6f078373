rule analyse:
    """Per shard: load each image once, then zones (geometry, IEC zone map), defects
    (DO2MR region defects and LEI scratches, merged into instances) and features of
    every defect and zone, each stage cached per image."""
    output:
        zones=INTER / "zones" / "shard_{shard}.parquet",
        defects=INTER / "defects" / "shard_{shard}.parquet",
        features=INTER / "features" / "shard_{shard}.parquet",
        zone_features=INTER / "features" / "zones_shard_{shard}.parquet",
        images=INTER / "features" / "images_shard_{shard}.parquet",
    log:
        LOGS / "analyse" / "shard_{shard}.log",
    conda:
        ENV
    threads: config["threads_per_shard"]
    resources:
        mem_mb=shard_mem_mb,
        runtime=shard_runtime,
    params:
        images=shard_images,
        manifest=shard_manifest,
        stages=STAGE_PARAMS,
        root=parent_of(1, "zones"),
    script:
        "../scripts/analyse.py"
