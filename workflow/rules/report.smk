from fiberprep import datasets


rule report:
    """Gather: the defect library index (every feature) with one contact sheet per
    type, then the self-contained QC report (summary, geometry, clusters, worst
    images) from it. One job: the report reads the index the same process built (no
    second start-up, no second read of every defect's row). Third of the final gathers
    to start (see dataset_tables)."""
    input:
        library=shard_files(INTER / "datasets" / "library_shard_{shard}.parquet"),
        images=shard_files(INTER / "features" / "images_shard_{shard}.parquet"),
        labels=shard_files(INTER / "datasets" / "labels_shard_{shard}.parquet"),
    output:
        index=R / "defect_library" / "index.parquet",
        csv=R / "defect_library" / "index.csv",
        sheets=[
            R / "defect_library" / "contact_sheets" / f"{name}.png"
            for name in datasets.DEFECT_CLASSES.values()
        ],
        report=R / "qc" / "report.html",
    log:
        LOGS / "report" / "report.log",
    priority: 1
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        library_dir=parent_of(0, "index"),
        library=config["library"],
        report=config["report"],
        split=config["datasets"]["split"],
        qc_dir=parent_of(0, "report"),
        run_info={
            "input_dir": str(INPUT_DIR),
            "fiber_type": config["fiber"]["type"],
            "criteria": ", ".join(
                sorted({config["fiber_types"][n]["criteria"] for n in FIBER_TYPES})
            ),
        },
        code=cache.code_version("report", "library"),
    script:
        "../scripts/report.py"
