"""Incremental reruns (issue 2 item 5), checked with ``snakemake --dry-run`` job counts.

One small folder is processed once; each test then asks Snakemake what it would rerun
after one change. The last test adds an image for real and checks that nothing else
moves.
"""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from workflow_runs import CONFIG, generate, planned_jobs, snakemake, write_config

N_IMAGES = 5
PER_IMAGE = {"zones", "defects", "features"}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed folder: config, results, the held-back extra image, shard count."""
    tmp = tmp_path_factory.mktemp("incremental")
    images = generate(tmp / "synth", N_IMAGES + 1, seed=11)
    inputs = tmp / "inputs"
    inputs.mkdir()
    for path in images[:N_IMAGES]:
        shutil.copy2(path, inputs / path.name)
    results = tmp / "results"
    cfg = write_config(tmp / "config.yaml", inputs, results)
    snakemake(cfg, "--cores", "2")
    assert planned_jobs(cfg) == {}, "a finished run must leave nothing to do"
    n_shards = len(list((results / "intermediate" / "zones").glob("shard_*.parquet")))
    return {"tmp": tmp, "cfg": cfg, "inputs": inputs, "results": results,
            "extra": images[N_IMAGES], "n_shards": n_shards}


def override(processed, name, **sections):
    """Config of the processed folder with some section keys changed."""
    return write_config(processed["tmp"] / name, processed["inputs"], processed["results"],
                        **sections)


def test_detection_change_reruns_detection_and_after_not_zones(processed):
    gamma = CONFIG["detection"]["do2mr_gamma"] + 0.5
    jobs = planned_jobs(override(processed, "det.yaml", detection={"do2mr_gamma": gamma}))
    n = processed["n_shards"]
    assert "zones" not in jobs
    assert jobs["defects"] == n and jobs["features"] == n
    assert jobs["cluster_fit"] == 1 and jobs["dataset_shard"] == n
    assert "cluster_review" not in jobs, "the review file belongs to the user"


def test_clustering_change_reruns_only_clustering_and_after(processed):
    seed = CONFIG["clustering"]["seed"] + 1
    jobs = planned_jobs(override(processed, "clu.yaml", clustering={"seed": seed}))
    assert not PER_IMAGE & set(jobs)
    assert jobs["cluster_fit"] == 1
    assert jobs["dataset_shard"] == processed["n_shards"]
    assert "cluster_review" not in jobs


def test_review_edit_reruns_only_labels_and_after(processed):
    review = processed["results"].parent / "results_review.yaml"
    text = review.read_text(encoding="utf-8")
    try:
        review.write_text(text + "# reviewed\n", encoding="utf-8")
        jobs = planned_jobs(processed["cfg"])
    finally:  # the same content again: Snakemake compares checksums, not only mtimes
        review.write_text(text, encoding="utf-8")
    assert jobs.get("dataset_shard") == processed["n_shards"]
    assert not (PER_IMAGE | {"cluster_fit"}) & set(jobs)


def test_added_image_reruns_its_shard_only_and_keeps_other_labels(processed):
    results, inputs, extra = processed["results"], processed["inputs"], processed["extra"]
    before = pd.read_parquet(results / "clustering" / "defect_types.parquet")
    records = sorted((results / "intermediate" / "images").glob("*/*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in records}
    added = inputs / f"a_{extra.name}"  # sorts before every other image
    shutil.copy2(extra, added)
    old = min(p.stat().st_mtime for p in inputs.iterdir()) - 3600
    os.utime(added, (old, old))  # an old mtime must not hide the new file

    refit = planned_jobs(override(processed, "refit.yaml", clustering={"refit": True}))
    assert refit.get("cluster_fit") == 1, "clustering.refit: true refits on new images"

    jobs = planned_jobs(processed["cfg"])
    assert {r: jobs.get(r) for r in PER_IMAGE} == {r: 1 for r in PER_IMAGE}
    assert "cluster_fit" not in jobs, "adding an image must not refit the model"
    assert jobs.get("dataset_shard") == 1, "only the new image's shard is labelled and reassembled"

    snakemake(processed["cfg"], "--cores", "2")
    after = pd.read_parquet(results / "clustering" / "defect_types.parquet")
    new_id = added.stem
    kept = after[after["image_id"] != new_id].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))
    assert {p for p in records if p.stat().st_mtime_ns != stamps[p]} == set(), (
        "per-image intermediates of other images must come from the cache"
    )
    assert (results / "intermediate" / "images" / new_id / "zones.json").exists()
    zarr_log = (results / "logs" / "datasets" / "zarr.log").read_text().splitlines()
    assert zarr_log[-1].endswith(", 1 written"), "the Zarr store rewrites the new image only"

