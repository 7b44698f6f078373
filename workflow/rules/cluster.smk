localrules:
    cluster_settings,
    cluster_review,


rule cluster_settings:
    """What the cluster model depends on besides the defects: clustering parameters,
    per-image stage parameters (hash) and code. A file, so that a change reaches
    cluster_fit, whose defect inputs are ancient (Snakemake never checks the params of
    a job downstream of rerunning jobs through ancient inputs only). Written by the
    shell (a Python job would spend ~0.6 s CPU starting up to write 300 bytes), first
    (priority: beside the shards' zones jobs, not alone before cluster_fit) and on the
    submitting host (no cluster job for it); written to a temporary name and renamed,
    as every writer is."""
    output:
        R / "clustering" / "settings.json",
    log:
        LOGS / "clustering" / "cluster_settings.log",
    priority: 50
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    params:
        settings=json.dumps(
            {
                "clustering": config["clustering"],
                "per_image_stage_params": UPSTREAM_PARAMS,
                "code": CLUSTER_CODE,
            },
            sort_keys=True,
        ),
    shell:
        "(printf '%s\\n' {params.settings:q} > {output:q}.tmp && mv {output:q}.tmp {output:q}) 2> {log:q}"


rule cluster_fit:
    """Gather: fit the cluster model on the defects of all images (once; adding images
    does not refit unless clustering.refit)."""
    input:
        settings=R / "clustering" / "settings.json",
        features=fit_inputs,
    output:
        model=R / "clustering" / "model.pkl",
        summary=R / "clustering" / "clusters.json",
        review=R / "clustering" / "review_template.yaml",
    log:
        LOGS / "clustering" / "cluster_fit.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        clustering=config["clustering"],
        previous=R / "clustering" / "previous_model.pkl",
    script:
        "../scripts/cluster_fit.py"


rule cluster_review:
    """First run only: cluster_fit's review template (the automatic cluster names) as
    the editable review file. Its input is ancient, so a refit never overwrites it. A
    copy by the shell on the submitting host: no Python start-up (~0.6 s CPU) between
    cluster_fit and the dataset_shard jobs; written to a temporary name and renamed."""
    input:
        ancient(R / "clustering" / "review_template.yaml"),
    output:
        REVIEW,
    log:
        LOGS / "clustering" / "cluster_review.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    shell:
        "(cp {input:q} {output:q}.tmp && mv {output:q}.tmp {output:q}) 2> {log:q}"


rule defect_types:
    """Gather: the labels of all shards as one table (a concatenation only)."""
    input:
        shard_files(INTER / "labels" / "shard_{shard}.parquet"),
    output:
        R / "clustering" / "defect_types.parquet",
    log:
        LOGS / "clustering" / "defect_types.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        shards=SHARD_SET,
    script:
        "../scripts/defect_types.py"
