"""Shard glue: stable shards, manifest hashes, cache keys, per-image chains, the pool."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import fiberprep
from fiberprep import cache, defects, features, pipeline, sharding, synth, zones
from fiberprep import io as fio
from workflow_runs import CONFIG, generate

PARAMS = pipeline.stage_params(CONFIG)


def test_shard_of_is_stable_and_in_range():
    assert sharding.shard_of("synth_0000", 64) == sharding.shard_of("synth_0000", 64)
    assert sharding.shard_of("synth_0000", 64) == 55  # fixed for ever: ids keep their shard
    shards = {sharding.shard_of(f"img_{i}", 8) for i in range(200)}
    assert shards == set(range(8))
    with pytest.raises(ValueError):
        sharding.shard_of("x", 0)


def test_manifest_hash_sees_added_and_touched_images_not_order():
    rows = pd.DataFrame({"image_id": ["a", "b"], "rel_path": ["a.png", "b.png"],
                         "source_path": ["/in/a.png", "/in/b.png"],
                         "size_bytes": [10, 20], "mtime_ns": [1, 2]})
    h = sharding.manifest_hash(rows)
    assert sharding.manifest_hash(rows.iloc[::-1]) == h
    assert sharding.manifest_hash(rows.assign(mtime_ns=[1, 3])) != h
    assert sharding.manifest_hash(rows.iloc[:1]) != h
    manifests = sharding.shard_manifests(rows.iloc[::-1], 1)
    assert manifests == {"000": rows.to_dict("records")}  # plain rows, sorted by id
    assert sharding.manifest_hash(manifests["000"]) == h


def test_stage_key_covers_upstream_params_and_code():
    key = cache.stage_key("zones", "abc", {"x": 1})
    assert cache.stage_key("zones", "abc", {"x": 1}) == key
    assert cache.stage_key("zones", "abd", {"x": 1}) != key
    assert cache.stage_key("zones", "abc", {"x": 2}) != key
    assert cache.stage_key("defects", "abc", {"x": 1}) != key
    version = cache.code_version("zones")
    assert version.startswith(fiberprep.__version__ + "+")
    assert cache.code_version("zones", "defects") != version


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Two generated images and a text file named .png, as scan_inputs rows."""
    tmp = tmp_path_factory.mktemp("chain")
    generate(tmp, 2, seed=3)
    (tmp / "images" / "broken.png").write_text("not an image")
    return fio.scan_inputs(tmp / "images", CONFIG["extensions"]).to_dict("records")


def run_chain(manifest, root, threads=1):
    """The shard chain in one process: zones table, (defects record, table) and (features
    record, defect table, zone table) of each image the zones stage accepted."""
    zones_records, found, measured = pipeline.run_chain(manifest, PARAMS, root, threads)
    return pipeline.zones_table(zones_records), found, measured


def test_chain_rejects_bad_files_and_measures_good_ones(manifest, tmp_path):
    table, found, feats = run_chain(manifest, str(tmp_path))
    status = table.set_index("image_id")["status"]
    assert status["broken"] == "rejected"
    assert table.set_index("image_id").loc["broken", "reason"]
    assert not (tmp_path / "images" / "broken" / pipeline.ARRAY_FILES["zone_map"]).exists()
    for record, defects_table, zone_table in feats:
        assert record["status"] == "ok"
        assert (defects_table["defect_id"]
                == defects_table["image_id"] + "#" + defects_table["number"].astype(str)).all()
        assert {"area_um2", "solidity"} <= set(defects_table.columns)
        assert set(zone_table["image_id"]) == {record["image_id"]}


def test_second_run_comes_from_the_cache(manifest, tmp_path, monkeypatch):
    first = run_chain(manifest, str(tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("recomputed a cached image")

    monkeypatch.setattr(zones, "measure_geometry", fail)
    monkeypatch.setattr(defects, "detect_defects", fail)
    monkeypatch.setattr(features, "defect_features", fail)
    monkeypatch.setattr(fio, "load_image", fail)  # a cached image is not even decoded
    second = run_chain(manifest, str(tmp_path))
    pd.testing.assert_frame_equal(first[0], second[0])
    for (_, a), (_, b) in zip(first[1], second[1]):
        pd.testing.assert_frame_equal(a, b)


def test_later_stages_read_the_display_the_zones_stage_kept(manifest, tmp_path, monkeypatch):
    """Only the zones stage decodes an 8-bit input: the later stages take the gray image
    from its display copy (exactly ``io.to_gray`` of it), and give what decoding gives."""
    decoded = run_chain(manifest, str(tmp_path / "decoded"))
    root = str(tmp_path / "kept")
    records = [r for r in pipeline.run_shard(pipeline.zones_image, manifest, PARAMS["zones"], root, 1)
               if r["status"] == "ok"]
    for r in records:
        gray, display, _ = fio.load_image(r["source_path"], 10**9, 16)
        kept, info, from_copy = pipeline.load_display(r, root, CONFIG["io"])
        assert from_copy and info is r and np.array_equal(kept, display)
        assert np.array_equal(pipeline._load_gray(r, root, PARAMS["defects"]), gray)

    def fail(*args, **kwargs):
        raise AssertionError("a later stage decoded the input")

    monkeypatch.setattr(fio, "load_image", fail)
    found = pipeline.run_shard(pipeline.defects_image, records, PARAMS["defects"], root, 1)
    measured = pipeline.run_shard(pipeline.features_image, records, PARAMS["features"], root, 1)
    for (_, a), (_, b) in zip(decoded[1], found):
        pd.testing.assert_frame_equal(a, b)
    for (_, a, _), (_, b, _) in zip(decoded[2], measured):
        pd.testing.assert_frame_equal(a, b)


def test_coreless_images_take_their_folders_type_once_and_give_it_back(tmp_path):
    """A coreless multimode fiber (typed sm_pc, a guess) takes the type the cores of
    its folder's other images name; a folder naming none keeps the guess. The settled
    record and zone map are written once, and again only when the folder changes."""
    rng = np.random.default_rng(5)
    for folder, name, visible in [("lot1", "named0", 1), ("lot1", "named1", 1), ("lot1", "named2", 1),
                                  ("lot1", "coreless", 0), ("lot2", "alone", 0)]:
        spec = synth.random_spec(rng, CONFIG["fiber_types"], sizes=[(640, 480)], p_clean=1.0, p_frame=0.0,
                                 fiber_type_names=["mm_50"], p_core_visible_mm=float(visible))
        (tmp_path / "in" / folder).mkdir(parents=True, exist_ok=True)
        fio.write_png(tmp_path / "in" / folder / f"{name}.png", synth.render(spec, rng)[0])
    rows = fio.scan_inputs(tmp_path / "in", CONFIG["extensions"]).to_dict("records")
    params = {**PARAMS["zones"], "folder_type": {"min_images": 3, "min_share": 0.8}}
    root = str(tmp_path / "inter")

    def types(records):
        return {r["rel_path"]: (r["geometry"]["fiber_type"], r["geometry"]["fiber_type_source"]) for r in records}

    def stored(record):
        folder = cache.image_dir(root, record["image_id"])
        gray = fio.load_image(record["source_path"], 10**9, 16)[0]
        assert cache.read_record(folder / "zones.json") == record
        zone_map = cache.read_array(folder / pipeline.ARRAY_FILES["zone_map"])
        assert np.array_equal(zone_map, pipeline._zone_map(gray, record["geometry"], params))
        return (folder / "zones.json").stat().st_mtime_ns

    records = pipeline.zones_shard(rows, params, root)
    assert types(records) == {**{f"lot1/named{i}.png": ("mm_50", "core") for i in range(3)},
                              "lot1/coreless.png": ("mm_50", "folder"), "lot2/alone.png": ("sm_pc", "default")}
    settled = next(r for r in records if r["rel_path"] == "lot1/coreless.png")
    measured = settled["measured"]
    assert settled["geometry"] == zones.assume_fiber_type(measured["geometry"], "mm_50", CONFIG["fiber_types"]["mm_50"])
    assert settled["key"] != measured["key"]  # its later stages run again
    written = stored(settled)
    assert pipeline.zones_shard(rows, params, root) == records and stored(settled) == written
    # two of its folder's named images gone: too few name the type, the guess is back
    alone = [r for r in rows if r["rel_path"] not in ("lot1/named0.png", "lot1/named1.png")]
    back = next(r for r in pipeline.zones_shard(alone, params, root) if r["rel_path"] == "lot1/coreless.png")
    assert types([back]) == {"lot1/coreless.png": ("sm_pc", "default")}
    assert back["key"] == measured["key"] and "measured" not in back
    stored(back)


def test_a_missing_display_copy_or_a_16_bit_input_is_decoded_again(manifest, tmp_path):
    src = next(m for m in manifest if m["image_id"] != "broken")
    gray8 = fio.load_image(src["source_path"], 10**9, 16)[1]
    deep = tmp_path / "deep.png"  # 16-bit: the gray image is not the display's
    noise = np.random.default_rng(0).integers(0, 256, gray8.shape, dtype=np.uint16)
    fio.write_png(deep, gray8.astype(np.uint16) * 256 + noise)
    rows = fio.scan_inputs(tmp_path, CONFIG["extensions"]).to_dict("records") + [src]
    root = str(tmp_path / "inter")
    for r in pipeline.run_shard(pipeline.zones_image, rows, PARAMS["zones"], root, 1):
        assert r["status"] == "ok"
        gray, display, _ = fio.load_image(r["source_path"], 10**9, 16)
        if r["bit_depth"] == 8:
            (cache.image_dir(root, r["image_id"]) / pipeline.DISPLAY_CHUNK).unlink()
        else:
            assert not np.array_equal(fio.to_gray(display), gray)
        assert np.array_equal(pipeline._load_gray(r, root, PARAMS["defects"]), gray)
        kept, _, from_copy = pipeline.load_display(r, root, CONFIG["io"])
        assert np.array_equal(kept, display) and from_copy == (r["bit_depth"] == 16)


def test_detection_change_recomputes_defects_not_zones(manifest, tmp_path, monkeypatch):
    run_chain(manifest, str(tmp_path))
    changed = {**PARAMS, "defects": {**PARAMS["defects"], "defects": {
        **PARAMS["defects"]["defects"], "do2mr_gamma": PARAMS["defects"]["defects"]["do2mr_gamma"] + 0.5}}}
    zones_records = sorted((tmp_path / "images").glob("*/zones.json"))
    stamps = [p.stat().st_mtime_ns for p in zones_records]

    def fail(*args, **kwargs):
        raise AssertionError("recomputed the zones of a cached image")

    monkeypatch.setattr(zones, "measure_geometry", fail)
    _, found, measured = pipeline.run_chain(manifest, changed, str(tmp_path))
    assert found and all(r["status"] == "ok" for r, _ in found)
    assert all(r["status"] == "ok" for r, _, _ in measured)
    assert [p.stat().st_mtime_ns for p in zones_records] == stamps


def test_internal_error_is_a_rejection_with_traceback_and_retried(manifest, tmp_path,
                                                                   monkeypatch, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(defects, "detect_defects", boom)
    with caplog.at_level(logging.ERROR, logger="fiberprep"):
        table, found, feats = run_chain(manifest, str(tmp_path))
    assert found and all(r["reason"] == "internal error: RuntimeError: boom" for r, _ in found)
    assert all(r["key"] is None for r, _ in found)
    assert "Traceback" in caplog.text
    final = pipeline.final_images_table(table, [r for r, _, _ in feats])
    assert set(final["status"]) == {"rejected"}
    monkeypatch.undo()
    _, found, _ = run_chain(manifest, str(tmp_path))
    assert all(r["status"] == "ok" for r, _ in found), "failures are not cached"


def test_pool_gives_the_same_results_as_one_process(manifest, tmp_path):
    one = run_chain(manifest, str(tmp_path / "one"), threads=1)
    two = run_chain(manifest, str(tmp_path / "two"), threads=2)
    pd.testing.assert_frame_equal(one[0], two[0], check_exact=True)
    for (_, *a), (_, *b) in zip(one[2], two[2]):
        for table_a, table_b in zip(a, b):
            pd.testing.assert_frame_equal(table_a, table_b, check_exact=True)


@pytest.mark.parametrize("seed", [1, 3])
def test_results_do_not_depend_on_opencv_threads(tmp_path, seed):
    """Local runs, pool workers and SLURM jobs give OpenCV different thread counts; each
    stage's output must be the same bit for bit (OpenCV splits some element-wise
    functions into stripes whose SIMD bodies and scalar tails round differently)."""
    import cv2

    path = generate(tmp_path, 1, seed)[0]
    gray = fio.load_image(path, PARAMS["zones"]["io"]["max_pixels"], PARAMS["zones"]["io"]["min_side_px"])[0]
    runs = []
    before = cv2.getNumThreads()
    try:
        for n in (1, 3, 8):
            cv2.setNumThreads(n)
            geometry, zone_map = pipeline.measure_zones(gray, PARAMS["zones"])
            instances, table = pipeline.find_defects(gray, zone_map, geometry, PARAMS["defects"], "x")
            runs.append((geometry, zone_map, instances, table, *pipeline.measure_features(
                gray, zone_map, instances, table, geometry, PARAMS["features"], "x")))
    finally:
        cv2.setNumThreads(before)
    first = runs[0]
    for other in runs[1:]:
        assert other[0] == first[0]
        for a, b in zip(first[1:3], other[1:3]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(first[3:], other[3:]):
            pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_concat_tables_keeps_dtypes_next_to_empty_tables():
    full = pd.DataFrame({"image_id": ["a"], "number": [1], "area_um2": [2.5]})
    out = pipeline.concat_tables([pd.DataFrame(), full.iloc[:0].astype(object), full])
    assert out["number"].dtype == "int64" and out["area_um2"].dtype == "float64"
    assert list(pipeline.concat_tables([pd.DataFrame()]).columns) == ["image_id"]
    empty = pipeline.concat_tables([pd.DataFrame()], pipeline.DEFECT_TABLE_COLUMNS)
    assert {"defect_id", "number", "length_um"} <= set(empty.columns) and not len(empty)


@pytest.fixture
def shard_tables(tmp_path):
    """Seven label-like shard tables, each sorted by (image_id, number), with an image
    in one shard only (as the hash sharding makes them); one shard has no rows."""
    rng = np.random.default_rng(1)
    paths = []
    for k in range(7):
        n = 0 if k == 3 else int(rng.integers(1, 400))
        ids = [f"img_{i:05d}" for i in rng.choice(np.arange(k, 3000, 7), n)]
        f = pd.DataFrame({"image_id": ids, "number": rng.integers(1, 40, n), "x": rng.random(n)})
        f = f.drop_duplicates(["image_id", "number"]).sort_values(["image_id", "number"])
        paths.append(tmp_path / f"shard_{k:03d}.parquet")
        (f if n else pd.DataFrame({"image_id": []})).to_parquet(paths[-1], index=False)
    return paths, pipeline.concat_tables([pd.read_parquet(p) for p in paths])


@pytest.mark.parametrize("batch_rows", [1, 7, 100_000])
def test_merge_sorted_tables_streams_to_the_sorted_concatenation(shard_tables, tmp_path, batch_rows):
    paths, whole = shard_tables
    out = tmp_path / "merged.parquet"
    n = pipeline.merge_sorted_tables(paths, out, ["image_id", "number"], batch_rows)
    expected = whole.sort_values(["image_id", "number"], ignore_index=True)
    assert n == len(expected)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected)
    assert pipeline.merge_sorted_tables(paths[3:4], out, ["image_id"]) == 0
    assert list(pd.read_parquet(out).columns) == ["image_id"]


def test_sample_rows_picks_the_rows_fit_model_would(shard_tables):
    paths, whole = shard_tables
    sample, total = pipeline.sample_rows(paths, 50, seed=3)
    picked = np.sort(np.random.default_rng(3).choice(len(whole), 50, replace=False))
    assert total == len(whole)
    pd.testing.assert_frame_equal(sample.reset_index(drop=True),
                                  whole.iloc[picked].reset_index(drop=True))
    everything, _ = pipeline.sample_rows(paths, 10**6, seed=3)
    pd.testing.assert_frame_equal(everything.reset_index(drop=True), whole)
    empty, total = pipeline.sample_rows(paths[3:4], 50, seed=3, columns=["image_id", "x"])
    assert total == 0 and not len(empty)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")
def test_keep_freed_memory_spares_the_page_faults_of_each_image():
    """Allocating and freeing a 480x360 image's worth of temporaries again and again
    faults in fresh pages each time by default, and almost never with the settings."""
    code = (
        "import resource, sys, numpy as np; from fiberprep import pipeline\n"
        "ok = pipeline.keep_freed_memory() if sys.argv[1] == '1' else True\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(50):\n"
        "    a = np.ones((360, 480), np.float32) * 2.0; b = a + 1.0; del a, b\n"
        "print(ok, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    faults = {}
    for setting in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", code, setting], capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == "True"
        faults[setting] = int(out[1])
    if faults["0"] <= 50 * 100:  # ~170 pages per 675 kB array, faulted in each time
        pytest.skip(f"malloc kept the freed pages by default here ({faults['0']} faults)")
    assert faults["1"] < faults["0"] / 10


def test_jobs_run_one_blas_thread(tmp_path):
    """A job process (log_to) limits BLAS to one thread: the shard pools are the
    parallelism, and OpenBLAS's threads only spin on the small fits."""
    code = ("import sys; from fiberprep import pipeline; from threadpoolctl import threadpool_info\n"
            "pipeline.log_to(sys.argv[1])\n"
            "print(max(i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'))\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "job.log")], capture_output=True,
                         text=True, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "2"})
    assert out.stdout.strip() == "1"
