"""Dataset exports read back by the libraries that consume them (Pillow, pycocotools,
zarr, pandas), on synthetic end faces with exact instance masks."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
import zarr
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from fiberprep import datasets, library, synth, zones
from fiberprep import io as fio

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


@pytest.fixture(scope="module")
def scenes():
    """Five small synthetic images with defects: (image_id, image, truth)."""
    out = []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        spec = synth.random_spec(rng, CONFIG["fiber_types"], p_clean=0.0, n_defects=(3, 8), width=320, height=240)
        image, truth = synth.render(spec, rng)
        out.append((f"scene_{seed}", image, truth))
    return out


def _typed(truth):
    d = pd.DataFrame(truth["defects"])
    return d["number"].to_numpy(int), d["class_name"].tolist()


def test_mask_pngs_hold_class_ids(scenes):
    for _, _, truth in scenes:
        numbers, types = _typed(truth)
        mask = datasets.defect_class_mask(truth["instance_map"], numbers, types)
        for ids in (mask, truth["zone_map"]):
            data = datasets.encode_png(ids, flat=True)
            assert Image.open(io.BytesIO(data)).mode == "L"  # gray: every reader returns the ids
            np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), ids)
        # every instance pixel carries its defect's class id
        for n, t in zip(numbers, types):
            assert set(np.unique(mask[truth["instance_map"] == n])) <= {datasets.class_id(t)}


@pytest.mark.parametrize("n_instances", [3, 255, 256, 700])
def test_class_mask_equals_indexing_at_any_instance_count(n_instances):
    """The 8-bit LUT path (up to 255 instances) and plain indexing (beyond) give
    the same class ids; a number missing from the table still raises."""
    rng = np.random.default_rng(n_instances)
    inst = rng.integers(0, n_instances + 1, (60, 80)).astype(np.uint16)
    numbers = np.arange(1, n_instances + 1)
    types = rng.choice(["scratch", "pit_dig", "contamination", "chip"], n_instances).tolist()
    lut = datasets.class_lut(numbers, types, n_instances)
    np.testing.assert_array_equal(datasets.apply_class_lut(inst, lut), lut[inst])
    np.testing.assert_array_equal(datasets.defect_class_mask(inst, numbers, types), lut[inst])
    with pytest.raises(IndexError):
        datasets.apply_class_lut(inst, lut[:-1])


def test_palette_png_keeps_indices_and_colours(scenes):
    indices = scenes[0][2]["zone_map"].astype(np.uint8)
    data = datasets.encode_palette_png(indices, datasets.ZONE_COLOURS)
    png = Image.open(io.BytesIO(data))
    assert png.mode == "P"
    np.testing.assert_array_equal(np.asarray(png), indices)
    pal = np.asarray(png.getpalette()[:18]).reshape(6, 3)
    assert [tuple(p) for p in pal] == [datasets.ZONE_COLOURS[k] for k in range(6)]


def test_coco_loads_and_matches_instance_masks(scenes, tmp_path):
    rows, images = [], []
    for iid, image, truth in scenes:
        numbers, types = _typed(truth)
        cats = [datasets.class_id(t) for t in types]
        for ann in datasets.coco_annotations(truth["instance_map"], numbers, cats):
            rows.append({"image_id": iid, "defect_id": f"{iid}#{ann['number']}", **ann})
        images.append({"image_id": iid, "width": image.shape[1], "height": image.shape[0], "split": "train"})
    doc = datasets.coco_document(pd.DataFrame(images), pd.DataFrame(rows), {"version": "test"})
    path = tmp_path / "coco.json"
    fio.write_json(path, doc)
    coco = COCO(str(path))
    assert len(coco.getAnnIds()) == sum(len(t["defects"]) for _, _, t in scenes) > 0
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(datasets.DEFECT_CLASSES.values())
    by_id = {im["id"]: scenes[k] for k, im in enumerate(doc["images"])}
    for ann in coco.loadAnns(coco.getAnnIds()):
        _, _, truth = by_id[ann["image_id"]]
        truth_mask = truth["instance_map"] == int(ann["defect_id"].split("#")[1])
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), truth_mask)
        ys, xs = np.nonzero(truth_mask)
        assert ann["area"] == len(ys) == coco_mask.area(coco.annToRLE(ann))
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_split_is_deterministic_and_stratified():
    ids = [f"img_{k:04d}" for k in range(400)]
    strata = ["fail" if k % 4 == 0 else "pass" for k in range(400)]
    ratios = {"train": 0.7, "val": 0.15, "test": 0.15}
    a = datasets.assign_splits(ids, strata, ratios)
    perm = np.random.default_rng(0).permutation(400)
    b = datasets.assign_splits([ids[i] for i in perm], [strata[i] for i in perm], ratios)
    assert dict(zip(ids, a)) == dict(zip([ids[i] for i in perm], b))
    frame = pd.DataFrame({"stratum": strata, "split": a})
    for _, grp in frame.groupby("stratum"):
        share = grp["split"].value_counts(normalize=True)
        for name, r in ratios.items():
            assert abs(share[name] - r) <= 1.0 / len(grp) + 1e-9
    # a zero ratio empties its split; adding one image moves few others
    assert set(datasets.assign_splits(ids, strata, {"train": 0.8, "val": 0.2, "test": 0})) == {"train", "val"}
    c = datasets.assign_splits(ids + ["img_new"], strata + ["pass"], ratios)
    assert (c[:400] != a).sum() <= 3


def test_yolo_polygons_cover_instances(scenes):
    iid, image, truth = scenes[0]
    numbers, types = _typed(truth)
    lines = datasets.yolo_segments(truth["instance_map"], numbers, [datasets.class_id(t) for t in types])
    assert len(lines) >= len(numbers)
    for line in lines:
        vals = line.split()
        assert int(vals[0]) in datasets.yolo_names()
        xy = np.asarray(vals[1:], float)
        assert len(xy) >= 6 and len(xy) % 2 == 0 and xy.min() >= 0 and xy.max() <= 1


def test_tables_carry_units_and_types(tmp_path):
    frame = pd.DataFrame({"image_id": ["a", "b"], "cladding_radius_px": [100.5, 101.0], "n_scratch": [1, 0],
                          "has_scratch": [True, False], "pass_fail": ["pass", None]})
    fio.write_parquet(datasets.to_arrow(frame, datasets.column_units(frame.columns, {})), tmp_path / "t.parquet")
    schema = pq.read_schema(tmp_path / "t.parquet")
    assert schema.field("cladding_radius_px").metadata[b"unit"] == b"px"
    assert schema.field("n_scratch").metadata[b"unit"] == b"count"
    assert str(schema.field("has_scratch").type) == "bool" and str(schema.field("pass_fail").type) == "string"
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["pass_fail"].isna().tolist() == [False, True]


def test_image_label_row_and_zone_rows(scenes):
    _, _, truth = scenes[1]
    d = pd.DataFrame(truth["defects"]).drop(columns="type").rename(columns={"class_name": "type"})
    d["severity_score"] = np.linspace(0.1, 0.9, len(d))
    d["severity_level"] = "low"
    d["area_um2"] = d["area_px"] * truth["um_per_px"] ** 2
    row = datasets.image_label_row(d, zones.ZONE_NAMES, {"pass_fail": "fail", "failures": ["x"]})
    assert row["n_defects"] == len(d) == sum(row[f"n_{t}"] for t in datasets.DEFECT_CLASSES.values())
    assert row["primary_defect"] == datasets.DEFECT_CLASSES[datasets.class_id(d["type"].iloc[-1])]
    zf = pd.DataFrame({"image_id": "s", "zone": [1, 2, 3, 4, 5]})
    zr = datasets.zone_level_rows(zf, d, None)
    assert zr["n_defects"].sum() == (d["innermost_zone"] > 0).sum()
    largest = d.assign(size=np.fmax(d["length_um"], d["width_um"])).groupby("innermost_zone")["size"].max()
    assert np.allclose(zr.set_index("zone")["largest_defect_um"].reindex(largest.index), largest)
    assert (zr["largest_defect_type"] == "none").sum() == 5 - len(largest)
    assert set(zr["label"]) == {"not_graded"}


def _run_script(tmp_path, name, **spec):
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps({"script": str(ROOT / "workflow" / "scripts" / f"{name}.py"),
                                     "log": str(tmp_path / f"{name}.log"), **spec}))
    subprocess.run([sys.executable, str(ROOT / "tests" / "snakemake_script.py"), str(spec_path)], check=True)
    return (tmp_path / f"{name}.log").read_text()


def _write_pixel_level(scenes, pixel: Path) -> pd.DataFrame:
    """What dataset_shard leaves for dataset_zarr: the display PNG (its colour type)
    and the encoded chunks, one row per chunk file (``image_id``, ``key``, ``path``)."""
    rows = []
    for iid, image, truth in scenes:
        numbers, types = _typed(truth)
        fio.write_png(pixel / "images" / f"{iid}.png", image)
        arrays = {"images": image, "zone_masks": truth["zone_map"], "instance_masks": truth["instance_map"],
                  "defect_masks": datasets.defect_class_mask(truth["instance_map"], numbers, types)}
        key = datasets.content_key(image, truth["instance_map"])
        for name, dtype in datasets.ZARR_ARRAYS.items():
            path = pixel.parent / "chunks" / iid / datasets.ZARR_CHUNK_DIR / f"{name}.zst"
            fio.write_bytes(path, datasets.zarr_chunk(arrays[name].astype(dtype), CONFIG["datasets"]["zarr_zstd_level"]))
            rows.append({"image_id": iid, "status": "ok", "height": image.shape[0], "width": image.shape[1],
                         "key": key, "path": str(path)})
    return pd.DataFrame(rows)


def test_zarr_store_and_readme_loader(scenes, tmp_path, capsys):
    root = tmp_path / "datasets"
    pixel = root / "pixel_level"
    files = _write_pixel_level(scenes, pixel)
    table = files.drop_duplicates("image_id", ignore_index=True).drop(columns="path")
    table["pass_fail"] = "pass"
    table["split"] = datasets.assign_splits(table["image_id"], table["pass_fail"], CONFIG["datasets"]["split"])
    # the shard fragments the store reads: image tables, labels (the split comes from them)
    fio.write_parquet(table[["image_id", "status", "height", "width"]], tmp_path / "images.parquet")
    fio.write_parquet(table[["image_id", "pass_fail"]], tmp_path / "labels.parquet")
    # the published table the README's loader reads
    fio.write_parquet(table[["image_id", "split"]], root / "image_level" / "image_labels.parquet")
    fio.write_parquet(files[["image_id", "key", "path"]], tmp_path / "files.parquet")
    spec = {"input": {"images": [str(tmp_path / "images.parquet")], "labels": [str(tmp_path / "labels.parquet")],
                      "files": [str(tmp_path / "files.parquet")]},
            "output": {"marker": str(pixel / ".dataset.zarr.done")},
            "params": {"pixel_dir": str(pixel), "datasets": CONFIG["datasets"]}}
    log = _run_script(tmp_path, "dataset_zarr", **spec)
    assert f"{len(scenes)} written" in log and (pixel / ".dataset.zarr.done").exists()

    store = zarr.open_group(str(pixel / "dataset.zarr"), mode="r")
    (name, group), = list(store.groups())
    assert name == "h240_w320" and group["images"].chunks == (1, 240, 320)
    for i, iid in enumerate(group.attrs["image_ids"]):
        _, image, truth = next(s for s in scenes if s[0] == iid)
        np.testing.assert_array_equal(group["images"][i], image)
        np.testing.assert_array_equal(group["instance_masks"][i], truth["instance_map"])
        np.testing.assert_array_equal(group["zone_masks"][i], truth["zone_map"])
    assert list(group.attrs["split"]) == table.sort_values("image_id")["split"].tolist()

    # the store's chunks are the shard's bytes, hard-linked
    chunk = Path(files["path"].iloc[0])
    assert chunk.stat().st_nlink == 2 and chunk.read_bytes() == datasets.zarr_chunk(
        scenes[0][1], CONFIG["datasets"]["zarr_zstd_level"])

    # an incremental update rewrites only the image whose key changed
    files.loc[files["image_id"] == table.loc[0, "image_id"], "key"] = "changed"
    fio.write_parquet(files[["image_id", "key", "path"]], tmp_path / "files.parquet")
    (tmp_path / "dataset_zarr.log").unlink()
    assert ", 1 written" in _run_script(tmp_path, "dataset_zarr", **spec)

    # the README's loader example runs as printed, on this dataset
    code = datasets.LOADER_EXAMPLE.replace('root = "results/datasets"', f'root = "{root}"')
    assert len([line for line in datasets.LOADER_EXAMPLE.splitlines() if line.strip()]) <= 10
    exec(compile(code, "loader_example", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in printed) == sorted(table.loc[table["split"] == "train", "image_id"])
    readme = ROOT / "README.md"
    if readme.exists() and "dataset.zarr" in readme.read_text():
        assert datasets.LOADER_EXAMPLE.strip() in readme.read_text()

    # an added image whose id sorts first, then a removed one: the other images stay
    # where they are, so only the added one and the one moved into the gap are written
    ids_before = list(zarr.open_group(str(pixel / "dataset.zarr"))["h240_w320"].attrs["image_ids"])
    first = scenes[1][0].replace("scene", "a_scene")
    files = pd.concat([files, _write_pixel_level([(first, *scenes[1][1:])], pixel)], ignore_index=True)
    table = pd.concat([table, table.iloc[[1]].assign(image_id=first)], ignore_index=True)
    for step, rows in (("added", table), ("removed", table[table["image_id"] != ids_before[0]])):
        fio.write_parquet(rows[["image_id", "status", "height", "width"]], tmp_path / "images.parquet")
        fio.write_parquet(rows[["image_id", "pass_fail"]], tmp_path / "labels.parquet")
        fio.write_parquet(files[files["image_id"].isin(rows["image_id"])][["image_id", "key", "path"]],
                          tmp_path / "files.parquet")
        (tmp_path / "dataset_zarr.log").unlink()
        assert ", 1 written" in _run_script(tmp_path, "dataset_zarr", **spec), step
        group = zarr.open_group(str(pixel / "dataset.zarr"), mode="r")["h240_w320"]
        assert sorted(group.attrs["image_ids"]) == sorted(rows["image_id"]), step
        for i, iid in enumerate(group.attrs["image_ids"]):
            _, image, _ = next(s for s in scenes if s[0] == iid.removeprefix("a_"))
            np.testing.assert_array_equal(group["images"][i], image)
        # the split of the images present now (datasets.image_tables)
        split = dict(zip(rows["image_id"], datasets.assign_splits(rows["image_id"], rows["pass_fail"],
                                                                  CONFIG["datasets"]["split"])))
        assert list(group.attrs["split"]) == [split[i] for i in group.attrs["image_ids"]], step
        assert group["images"].shape[0] == len(rows), step

    # an RGB image turns the group's images RGB: gray ones are expanded there, every
    # position is rewritten, and the shard's chunk files stay as they were
    rgb = np.dstack([scenes[2][1], scenes[3][1], scenes[4][1]])
    files = pd.concat([files, _write_pixel_level([("rgb_scene", rgb, scenes[2][2])], pixel)], ignore_index=True)
    rows = pd.concat([rows, rows.iloc[[0]].assign(image_id="rgb_scene")], ignore_index=True)
    before = {p: Path(p).read_bytes() for p in files["path"]}
    fio.write_parquet(rows[["image_id", "status", "height", "width"]], tmp_path / "images.parquet")
    fio.write_parquet(rows[["image_id", "pass_fail"]], tmp_path / "labels.parquet")
    fio.write_parquet(files[files["image_id"].isin(rows["image_id"])][["image_id", "key", "path"]],
                      tmp_path / "files.parquet")
    for expected in (len(rows), 1):
        (tmp_path / "dataset_zarr.log").unlink()
        assert f", {expected} written" in _run_script(tmp_path, "dataset_zarr", **spec)
        group = zarr.open_group(str(pixel / "dataset.zarr"), mode="r")["h240_w320"]
        assert group["images"].shape == (len(rows), 240, 320, 3)
        for i, iid in enumerate(group.attrs["image_ids"]):
            image = rgb if iid == "rgb_scene" else next(s for s in scenes if s[0] == iid.removeprefix("a_"))[1]
            np.testing.assert_array_equal(group["images"][i], image if image.ndim == 3 else np.dstack([image] * 3))
        assert all(Path(p).read_bytes() == b for p, b in before.items())
        files.loc[files["image_id"] == group.attrs["image_ids"][0], "key"] = "changed again"
        fio.write_parquet(files[files["image_id"].isin(rows["image_id"])][["image_id", "key", "path"]],
                          tmp_path / "files.parquet")


def test_library_patch_and_contact_sheet(scenes):
    _, image, truth = scenes[2]
    d = pd.DataFrame(truth["defects"])
    boxes = datasets.instance_bboxes(truth["instance_map"])
    patches = []
    for n in d["number"]:
        x, y, w, h = boxes[n]
        p = library.extract_patch(image, boxes[n], 8)
        assert p.shape[0] <= h + 16 and p.shape[1] <= w + 16
        assert p.shape[0] == min(y + h + 8, 240) - max(y - 8, 0)
        patches.append(p)
    sheet = library.contact_sheet(patches, [str(n) for n in d["number"]], tile_px=48, columns=4)
    assert sheet.ndim == 3 and sheet.shape[1] == 4 * 52 or len(patches) < 4
    assert library.patch_relpath("scratch", "a#3") == "patches/scratch/a#3.png"
    assert library.patch_relpath("scratch", "a#3", "high") == "patches/scratch/high/a#3.png"


@pytest.mark.slow
def test_workflow_outputs_load_in_their_libraries(tmp_path, capsys):
    """The workflow's own dataset files, with both exports on, read back by Pillow,
    pycocotools, zarr and pandas; a rerun after a type change rewrites one image."""
    sys.path.insert(0, str(ROOT / "tests"))
    from workflow_runs import generate, snakemake, write_config

    results = tmp_path / "results"
    generate(tmp_path / "synth", 6, seed=11)
    cfg = write_config(tmp_path / "config.yaml", tmp_path / "synth" / "images", results,
                       export={"yolo_seg": True, "by_label_folders": True})
    snakemake(cfg, "--cores", "2")
    ds = results / "datasets"
    labels = pd.read_parquet(ds / "image_level" / "image_labels.parquet")
    classes = json.loads((ds / "pixel_level" / "classes.json").read_text())
    coco = COCO(str(ds / "pixel_level" / "coco_instances.json"))
    for img in coco.loadImgs(coco.getImgIds()):
        inst = np.asarray(Image.open(ds / "pixel_level" / "instance_masks" / f"{img['image_id']}.png"))
        cls = np.asarray(Image.open(ds / "pixel_level" / "defect_masks" / f"{img['image_id']}.png"))
        zone = np.asarray(Image.open(ds / "pixel_level" / "zone_masks" / f"{img['image_id']}.png"))
        assert inst.shape == cls.shape == zone.shape == (img["height"], img["width"])
        assert {str(v) for v in np.unique(zone)} <= set(classes["zones"])
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = inst == int(ann["defect_id"].split("#")[1])
            ys, xs = np.nonzero(m)
            assert ann["area"] == m.sum()
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert set(np.unique(cls[m])) == {ann["category_id"]}
        assert img["split"] == labels.set_index("image_id").at[img["image_id"], "split"]
    for r in labels.itertuples():
        assert (ds / "by_label" / "pass_fail" / r.pass_fail / f"{r.image_id}.png").samefile(
            ds / "pixel_level" / "images" / f"{r.image_id}.png")
        assert (ds / "yolo_seg" / "labels" / r.split / f"{r.image_id}.txt").exists()
    readme = (ds / "README.md").read_text()
    assert "## Counts per split" in readme and datasets.LOADER_EXAMPLE.strip() in readme
    capsys.readouterr()  # drop what pycocotools printed
    exec(compile(datasets.LOADER_EXAMPLE.replace('"results/datasets"', f'"{ds}"'), "loader", "exec"), {})
    assert len(capsys.readouterr().out.splitlines()) == (labels["split"] == "train").sum()

    # a reviewed cluster type rewrites the files of the images with that cluster only
    types = pd.read_parquet(results / "clustering" / "defect_types.parquet")
    cluster = types["cluster"].value_counts().index[-1]  # the smallest cluster
    old = types.loc[types["cluster"] == cluster, "type"].iloc[0]
    review_path = results.parent / f"{results.name}_review.yaml"
    review = yaml.safe_load(review_path.read_text(encoding="utf-8"))
    review[int(cluster)] = {"type": "chip" if old != "chip" else "scratch"}
    review_path.write_text(yaml.safe_dump(review), encoding="utf-8")
    for log in (results / "logs" / "datasets").glob("shard_*.log"):
        log.unlink()  # only shards that run again write a log, so count this run alone
    snakemake(cfg, "--cores", "2")
    last = [re.findall(r"datasets: \d+ images, (\d+) rewritten", p.read_text())[-1]
            for p in (results / "logs" / "datasets").glob("shard_*.log")]
    assert sum(map(int, last)) == types.loc[types["cluster"] == cluster, "image_id"].nunique()


def test_files_with_the_same_bytes_share_one_split():
    ids = [f"img_{k:03d}" for k in range(60)]
    sums = [f"sum_{k}" for k in range(60)]
    for a, b in [(0, 30), (1, 31), (2, 32), (5, 50)]:  # a folder copied twice: same bytes, two names
        sums[b] = sums[a]
    images = pd.DataFrame({"image_id": ids, "status": "ok", "reason": "", "checksum": sums, "size_bytes": 100})
    images.loc[59, ["status", "checksum", "size_bytes"]] = ["rejected", "sum_empty", 0]
    images.loc[58, ["status", "checksum", "size_bytes"]] = ["rejected", "sum_empty", 0]
    labels = pd.DataFrame({"image_id": ids[:58], "pass_fail": ["fail" if k % 30 % 3 else "pass" for k in range(58)]})
    ratios = {"train": 0.5, "val": 0.25, "test": 0.25}
    table, lab = datasets.image_tables(images.iloc[::-1], labels, ratios)
    split = dict(zip(lab["image_id"], lab["split"]))
    dup = dict(zip(table["image_id"], table["duplicate_of"]))
    for a, b in [(0, 30), (1, 31), (2, 32), (5, 50)]:
        assert split[ids[a]] == split[ids[b]]
        assert dup[ids[a]] == dup[ids[b]] == ids[a]
    assert pd.isna(dup["img_003"]) and pd.isna(dup["img_058"])  # empty files are not compared
    # without duplicates the split is the plain per-id split
    alone = images.assign(checksum=[f"u{k}" for k in range(60)])
    _, plain = datasets.image_tables(alone, labels, ratios)
    expected = datasets.assign_splits(plain["image_id"], plain["pass_fail"], ratios)
    assert list(plain["split"]) == list(expected) and set(plain["split"]) == set(ratios)
