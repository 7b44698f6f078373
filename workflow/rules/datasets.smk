rule dataset_shard:
    """Per shard: the labels of its defects (nearest-centroid cluster of the saved
    model, type from the review file, severity), then (in a pool of its threads) the
    pixel-level PNGs, overlays and patches of the images whose labels changed (content
    hash), and the shard's table fragments."""
    input:
        images=INTER / "features" / "images_shard_{shard}.parquet",
        defects=INTER / "defects" / "shard_{shard}.parquet",
        features=INTER / "features" / "shard_{shard}.parquet",
        zone_features=INTER / "features" / "zones_shard_{shard}.parquet",
        model=R / "clustering" / "model.pkl",
        review=REVIEW,
    output:
        types=INTER / "labels" / "shard_{shard}.parquet",
        labels=INTER / "datasets" / "labels_shard_{shard}.parquet",
        zones=INTER / "datasets" / "zones_shard_{shard}.parquet",
        library=INTER / "datasets" / "library_shard_{shard}.parquet",
        annotations=INTER / "datasets" / "annotations_shard_{shard}.json",
        files=INTER / "datasets" / "files_shard_{shard}.parquet",
    log:
        LOGS / "datasets" / "shard_{shard}.log",
    conda:
        ENV
    threads: shard_threads
    resources:
        mem_mb=shard_mem_mb,
        runtime=shard_runtime,
    params:
        manifest=shard_manifest,
        code=cache.code_version(
            "datasets", "library", "report", "grading", "pipeline", "clustering"
        ),
        severity=config["severity"],
        root=parent_of(1),
        datasets_dir=str(R / "datasets"),
        library_dir=str(R / "defect_library"),
        qc_dir=str(R / "qc"),
        datasets=config["datasets"],
        library=config["library"],
        export=config["export"],
        io=config["io"],
        criteria=CRITERIA,
        zones_mode=config["zones"]["mode"],
    script:
        "../scripts/dataset_shard.py"


rule dataset_tables:
    """Gather: image- and region-level tables with the split, COCO, classes, the
    dataset README, input checksums and the optional exports. The four final gathers
    start longest first (priority: dataset_zarr, dataset_tables, report, then
    defect_types; at 100 000 images 86, 50 and 45 s): two cores then finish them
    together instead of the longest running alone at the end."""
    input:
        images=shard_files(INTER / "features" / "images_shard_{shard}.parquet"),
        labels=shard_files(INTER / "datasets" / "labels_shard_{shard}.parquet"),
        zones=shard_files(INTER / "datasets" / "zones_shard_{shard}.parquet"),
        annotations=shard_files(INTER / "datasets" / "annotations_shard_{shard}.json"),
        files=shard_files(INTER / "datasets" / "files_shard_{shard}.parquet"),
    output:
        images=R / "datasets" / "image_level" / "images.parquet",
        labels=R / "datasets" / "image_level" / "image_labels.parquet",
        zones=R / "datasets" / "region_level" / "zone_features.parquet",
        coco=R / "datasets" / "pixel_level" / "coco_instances.json",
        classes=R / "datasets" / "pixel_level" / "classes.json",
        checksums=R / "datasets" / "inputs.sha256",
        readme=R / "datasets" / "README.md",
    log:
        LOGS / "datasets" / "tables.log",
    priority: 2
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        shards=SHARD_SET,
        code=cache.code_version("datasets"),
        datasets_dir=parent_of(1, "images"),
        library_dir=str(R / "defect_library"),
        qc_dir=str(R / "qc"),
        datasets=config["datasets"],
        export=config["export"],
        config=canonical(config),
    script:
        "../scripts/dataset_tables.py"


rule dataset_zarr:
    """Gather: the pixel-level dataset as one Zarr v3 store (changed images only; the
    shard jobs encoded the chunks). The longest gather: first (see dataset_tables)."""
    input:
        images=shard_files(INTER / "features" / "images_shard_{shard}.parquet"),
        labels=shard_files(INTER / "datasets" / "labels_shard_{shard}.parquet"),
        files=shard_files(INTER / "datasets" / "files_shard_{shard}.parquet"),
    output:
        marker=R / "datasets" / "pixel_level" / ".dataset.zarr.done",
    log:
        LOGS / "datasets" / "zarr.log",
    priority: 3
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        pixel_dir=parent_of(0, "marker"),
        datasets=config["datasets"],
        code=cache.code_version("datasets"),
    script:
        "../scripts/dataset_zarr.py"
