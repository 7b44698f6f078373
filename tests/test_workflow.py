"""The workflow end to end on a freshly generated folder, checked against the contract.

Also: the config schema and the checks that stop a run before any job, and the conda
environment's pins. Dataset-file details are checked in the datasets tests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from workflow_runs import CONFIG, ROOT, generate, planned_jobs, snakemake, write_config

N_IMAGES = 4
NOT_AN_IMAGE = "notes from the scope.png"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A processed folder of generated images plus one text file named .png."""
    tmp = tmp_path_factory.mktemp("workflow")
    inputs = tmp / "inputs"
    inputs.mkdir()
    for path in generate(tmp / "synth", N_IMAGES, seed=5):
        shutil.copy2(path, inputs / path.name)
    (inputs / NOT_AN_IMAGE).write_text("not an image\n", encoding="utf-8")
    results = tmp / "results"
    cfg = write_config(tmp / "config.yaml", inputs, results)
    snakemake(cfg, "--cores", "2")
    images = pd.read_parquet(results / "datasets" / "image_level" / "images.parquet")
    return {"cfg": cfg, "inputs": inputs, "results": results, "images": images,
            "ok": images[images["status"] == "ok"]}


CONTRACT_FILES = [
    "clustering/defect_types.parquet",
    "clustering/model.pkl",
    "clustering/clusters.json",
    "datasets/pixel_level/classes.json",
    "datasets/pixel_level/coco_instances.json",
    "datasets/region_level/zone_features.parquet",
    "datasets/image_level/images.parquet",
    "datasets/image_level/image_labels.parquet",
    "datasets/image_level/image_labels.csv",
    "defect_library/index.parquet",
    "defect_library/index.csv",
    "qc/report.html",
]
PER_IMAGE_FILES = [
    "datasets/pixel_level/images/{}.png",
    "datasets/pixel_level/zone_masks/{}.png",
    "datasets/pixel_level/defect_masks/{}.png",
    "datasets/pixel_level/instance_masks/{}.png",
    "qc/overlays/{}.png",
]


def test_every_contract_file_is_written(run):
    missing = [f for f in CONTRACT_FILES if not (run["results"] / f).is_file()]
    assert missing == []
    assert len(run["ok"]) >= N_IMAGES - 1, run["images"][["image_id", "reason"]]
    for image_id in run["ok"]["image_id"]:
        for pattern in PER_IMAGE_FILES:
            assert (run["results"] / pattern.format(image_id)).is_file()


def test_csv_twins_hold_the_parquet_values(run):
    for name in ("datasets/image_level/image_labels", "datasets/region_level/zone_features",
                 "defect_library/index"):
        table = pd.read_parquet(run["results"] / f"{name}.parquet")
        text = pd.read_csv(run["results"] / f"{name}.csv", keep_default_na=False, na_values=[""])
        assert list(text.columns) == list(table.columns) and len(text) == len(table), name
        for col in table.columns:
            if pd.api.types.is_numeric_dtype(table[col]) and not pd.api.types.is_bool_dtype(table[col]):
                np.testing.assert_allclose(text[col].to_numpy(float), table[col].to_numpy(float, na_value=np.nan),
                                           rtol=1e-15, err_msg=f"{name}: {col}")
            else:
                assert text[col].fillna("").astype(str).tolist() == table[col].fillna("").astype(str).tolist(), col


def test_every_input_has_one_row_and_bad_ones_a_reason(run):
    images = run["images"]
    assert sorted(images["rel_path"]) == sorted(p.name for p in run["inputs"].iterdir())
    bad = images.set_index("rel_path").loc[NOT_AN_IMAGE]
    assert bad["status"] == "rejected" and bad["reason"]
    bad_id = bad["image_id"]
    types = pd.read_parquet(run["results"] / "clustering" / "defect_types.parquet")
    assert bad_id not in set(types["image_id"])
    assert not (run["results"] / "datasets/pixel_level/images" / f"{bad_id}.png").exists()
    # sizes are integers, null (not NaN) where the file could not be decoded
    table = pq.read_table(run["results"] / "datasets/image_level/images.parquet")
    assert table.schema.field("width").type == pa.int64() and table["width"].null_count == 1


def test_classes_name_and_colour_every_id(run):
    classes = json.loads((run["results"] / "datasets/pixel_level/classes.json").read_text())
    for kind in ("zones", "defects"):
        assert all(re.fullmatch("#[0-9a-f]{6}", c["colour"]) and c["name"]
                   for c in classes[kind].values())


def test_masks_have_the_input_size(run):
    for row in run["ok"].itertuples():
        for pattern in PER_IMAGE_FILES[:4]:
            mask = cv2.imread(str(run["results"] / pattern.format(row.image_id)),
                              cv2.IMREAD_UNCHANGED)
            assert mask.shape[:2] == (row.height, row.width), pattern
            if "masks" in pattern:  # single channel: OpenCV returns the ids, not colours
                assert mask.ndim == 2, pattern


def test_defect_ids_agree_across_masks_labels_library_and_coco(run):
    R = run["results"]
    types = pd.read_parquet(R / "clustering" / "defect_types.parquet")
    index = pd.read_parquet(R / "defect_library" / "index.parquet")
    coco = json.loads((R / "datasets/pixel_level/coco_instances.json").read_text())
    coco_ids = {a["defect_id"] for a in coco["annotations"]}
    assert set(types["defect_id"]) == set(index["defect_id"]) == coco_ids
    assert (types["defect_id"] == types["image_id"] + "#" + types["number"].astype(str)).all()
    for image_id in run["ok"]["image_id"]:
        mask = cv2.imread(str(R / f"datasets/pixel_level/instance_masks/{image_id}.png"),
                          cv2.IMREAD_UNCHANGED)
        in_mask = {f"{image_id}#{n}" for n in np.unique(mask) if n}
        assert in_mask == set(types.loc[types["image_id"] == image_id, "defect_id"])
    # patches at the contract's patches/<type>/<defect_id>.png, linked under their severity
    library = R / "defect_library"
    for row in index.itertuples():
        assert row.patch == f"patches/{row.type}/{row.defect_id}.png"
        patch = library / row.patch
        assert patch.samefile(library / "patches" / row.type / row.severity_level / f"{row.defect_id}.png")


def test_labels_table_columns(run):
    types = pd.read_parquet(run["results"] / "clustering" / "defect_types.parquet")
    assert list(types.columns) == ["defect_id", "image_id", "number", "cluster", "type",
                                   "severity_score", "severity_level"]
    summary = json.loads((run["results"] / "clustering" / "clusters.json").read_text())
    assert set(types["cluster"].astype(str)) <= set(summary["clusters"])


def test_label_defects_gives_the_run_s_types_and_follows_the_review(run):
    """The labels the dataset_shard jobs wrote are pipeline.label_defects of the saved
    model, the review file and the feature tables; a review entry retypes its cluster."""
    from fiberprep import pipeline

    results = run["results"]
    model = pd.read_pickle(results / "clustering" / "model.pkl")
    review = yaml.safe_load((results.parent / "results_review.yaml").read_text(encoding="utf-8"))
    feats = pipeline.concat_tables([pd.read_parquet(p) for p in sorted(
        (results / "intermediate" / "features").glob("shard_*.parquet"))])
    types = pd.read_parquet(results / "clustering" / "defect_types.parquet")
    labelled = pipeline.label_defects(feats, model, review, CONFIG["severity"])
    pd.testing.assert_frame_equal(labelled, types)
    cluster = int(types["cluster"].iloc[0])
    retyped = pipeline.label_defects(feats, model, {**review, cluster: {"type": "chip"}},
                                     CONFIG["severity"])
    hit = retyped["cluster"] == cluster
    assert (retyped.loc[hit, "type"] == "chip").all()
    pd.testing.assert_frame_equal(retyped[~hit], labelled[~hit])


def test_finished_run_has_nothing_left_to_do(run):
    assert planned_jobs(run["cfg"]) == {}


def test_every_job_wrote_its_log_without_decoder_floods(run):
    logs = list((run["results"] / "logs").rglob("*.log"))
    assert logs
    for log in logs:
        assert log.read_text(encoding="utf-8").count("Corrupt JPEG data") <= 1, log


def test_folder_of_only_bad_files_still_finishes(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.png").write_text("not an image")
    (inputs / "b.jpg").write_bytes(b"")
    results = tmp_path / "results"
    snakemake(write_config(tmp_path / "config.yaml", inputs, results), "--cores", "2")
    images = pd.read_parquet(results / "datasets" / "image_level" / "images.parquet")
    assert set(images["status"]) == {"rejected"} and images["reason"].str.len().min() > 0
    assert len(pd.read_parquet(results / "clustering" / "defect_types.parquet")) == 0
    index = pd.read_parquet(results / "defect_library" / "index.parquet")
    assert len(index) == 0 and {"defect_id", "type", "split", "bbox_x", "patch"} <= set(index.columns)


REAL = ROOT.parent / "shared" / "real_images"


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not available")
def test_real_scope_jpegs_go_through_the_chain_without_decoder_noise(tmp_path, capfd):
    from fiberprep import pipeline
    from fiberprep import io as fio

    folder = REAL / "dimension_scope_50um_core"
    rows = fio.scan_inputs(folder, CONFIG["extensions"]).head(3).to_dict("records")
    params = pipeline.stage_params(CONFIG)
    records = pipeline.run_shard(pipeline.zones_image, rows, params["zones"],
                                 str(tmp_path), 1)
    assert "Corrupt JPEG" not in capfd.readouterr().err
    assert [r["image_id"] for r in records] == [r["image_id"] for r in rows]
    assert not any(r["reason"].startswith("internal error") for r in records)
    assert sum(r["status"] == "ok" for r in records) >= 2, [r["reason"] for r in records]


# --------------------------------------------------------------- config and environment


def schema():
    return yaml.safe_load((ROOT / "config" / "schema.yaml").read_text(encoding="utf-8"))


def test_schema_accepts_the_config_and_refuses_unknown_or_wrong_keys():
    validator = jsonschema.Draft202012Validator(schema())
    assert [e.message for e in validator.iter_errors(CONFIG)] == []
    for bad in ({**CONFIG, "shardz": 3}, {**CONFIG, "shards": "many"},
                {**CONFIG, "io": {**CONFIG["io"], "max_pixel": 1}},
                {**CONFIG, "io": {**CONFIG["io"], "min_side_px": -5}}):
        assert list(validator.iter_errors(bad)), bad


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"input_dir": "/nonexistent/folder"}, r"input_dir: folder not found"),
        ({"input_dir": "/etc/passwd"}, r"input_dir: not a folder: /etc/passwd"),
        ({"shards": "many"}, r"config key shards: 'many' is not of type 'integer'"),
        ({"fiber": {"type": "sm_pcc"}}, r"fiber.type: unknown type 'sm_pcc'"),
        ({"io": {"min_side_px": -1}}, r"config key io.min_side_px: -1 is less than"),
    ],
)
def test_bad_config_stops_before_any_job_with_one_line(tmp_path, override, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cfg = write_config(tmp_path / "config.yaml", inputs, tmp_path / "results")
    data = yaml.safe_load(cfg.read_text())
    for key, value in override.items():
        data[key] = {**CONFIG[key], **value} if isinstance(value, dict) else value
    cfg.write_text(yaml.safe_dump(data))
    done = snakemake(cfg, "--dry-run", check=False)
    assert done.returncode != 0
    assert re.search(message, done.stdout + done.stderr), done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


def test_a_config_key_given_twice_stops_before_any_job(tmp_path):
    """A key written twice in the config file (an edit that missed the key's first line)
    stops the run with both lines named, instead of running on the later value."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    cfg = write_config(tmp_path / "config.yaml", inputs, tmp_path / "results")
    text = cfg.read_text()
    cfg.write_text(text + "shards: 3\n")
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("shards:"))
    done = snakemake(cfg, "--dry-run", check=False)
    assert done.returncode != 0
    assert f"key shards is given twice (lines {first} and {len(text.splitlines()) + 1})" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("results_in_inputs", "message"),
    [(True, "lies inside input_dir"), (False, "no image files")],
    ids=["results-inside-inputs", "empty-input-folder"],
)
def test_unusable_folders_are_refused_before_any_job(tmp_path, results_in_inputs, message):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    results = (inputs if results_in_inputs else tmp_path) / "results"
    cfg = write_config(tmp_path / "config.yaml", inputs, results)
    done = snakemake(cfg, "--dry-run", check=False)
    assert done.returncode != 0 and message in done.stdout + done.stderr
    assert not results.exists()


@pytest.mark.parametrize(("cores", "cap", "threads"), [(2, 2, 1), (12, 2, 2), (12, 8, 4)])
def test_shard_jobs_share_the_cores_among_the_shards(run, tmp_path, cores, cap, threads):
    # the 5 files fall in 3 shards: --cores 12 leaves 4 cores to each shard job (unless
    # threads_per_shard caps it); --cores 2 runs shard jobs side by side, one core each
    cfg = write_config(tmp_path / "config.yaml", run["inputs"], tmp_path / "results",
                       shards=4, threads_per_shard=cap)
    done = snakemake(cfg, "--dry-run", "--cores", str(cores))
    jobs = [b for b in done.stdout.split("\n[") if re.search(r"rule (zones|defects|features):", b)]
    assert len(jobs) == 3 * 3
    for body in jobs:
        found = re.search(r"threads: (\d+)", body)
        assert (int(found.group(1)) if found else 1) == threads


def test_review_file_defaults_to_one_per_results_folder(run, tmp_path):
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["cluster_review"]
    results = tmp_path / "results"
    cfg = write_config(tmp_path / "config.yaml", run["inputs"], results, cluster_review=default)
    done = snakemake(cfg, "--dry-run", "--cores", "2")
    assert f"output: {results / 'cluster_review.yaml'}" in done.stdout


def test_conda_env_pins_match_pyproject():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "fiberprep.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(project["dependencies"])


def test_profile_schedules_greedily():
    profile = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert profile["scheduler"] == "greedy"
    assert "input" not in profile["rerun-triggers"]
