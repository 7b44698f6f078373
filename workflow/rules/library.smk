from fiberprep import datasets


rule library_index:
    """Gather: the defect library index (every feature) and one contact sheet per type."""
    input:
        library=shard_files(INTER / "datasets" / "library_shard_{shard}.parquet"),
        images=R / "datasets" / "image_level" / "images.parquet",
    output:
        index=R / "defect_library" / "index.parquet",
        csv=R / "defect_library" / "index.csv",
        sheets=[
            R / "defect_library" / "contact_sheets" / f"{name}.png"
            for name in datasets.DEFECT_CLASSES.values()
        ],
    log:
        LOGS / "library" / "index.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        library_dir=parent_of(0, "index"),
        library=config["library"],
        code=cache.code_version("library"),
    script:
        "../scripts/library_index.py"
