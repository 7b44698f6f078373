rule defects:
    """Per shard: DO2MR region defects and LEI scratches, merged into instances."""
    input:
        zones=INTER / "zones" / "shard_{shard}.parquet",
    output:
        INTER / "defects" / "shard_{shard}.parquet",
    log:
        LOGS / "defects" / "shard_{shard}.log",
    conda:
        ENV
    threads: shard_threads
    resources:
        mem_mb=shard_mem_mb,
        runtime=shard_runtime,
    params:
        manifest=shard_manifest,
        stage=STAGE_PARAMS["defects"],
        root=parent_of(1),
    script:
        "../scripts/defects.py"
