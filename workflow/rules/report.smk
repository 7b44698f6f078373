rule report:
    """The self-contained QC report (summary, geometry, clusters, worst images)."""
    input:
        images=R / "datasets" / "image_level" / "images.parquet",
        labels=R / "datasets" / "image_level" / "image_labels.parquet",
        index=R / "defect_library" / "index.parquet",
    output:
        R / "qc" / "report.html",
    log:
        LOGS / "report" / "report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        report=config["report"],
        library_dir=parent_of(0, "index", of="input"),
        qc_dir=parent_of(0),
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
