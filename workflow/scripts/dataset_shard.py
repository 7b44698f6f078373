"""Dataset shard job: per-image dataset files of one shard, and its table fragments.

For each accepted image it writes the pixel-level PNGs (image, zone mask, defect
mask with palettes, uint16 instance mask), the QC overlay, the defect patches and
(with ``datasets.zarr``) the four arrays as encoded ``dataset.zarr`` chunks, but only
when the image's label key (input checksum, masks, defect types and severities,
parameters, fiberprep version) differs from the one recorded in
``intermediate/images/<id>/datasets.json`` or a file is missing: an incremental run
rewrites only what changed. The record also keeps the image's COCO/YOLO annotations,
so an unchanged image is not even read; the table fragments (labels, zone level,
library index, annotations, file list) are rebuilt from tables every time.

First it labels the shard's defects (``pipeline.label_defects``: nearest-centroid
cluster of the saved model, type from the review file, severity) and writes them as
the shard's part of ``clustering/defect_types.parquet``.
"""

import pickle
import time
from pathlib import Path

import pandas as pd
import yaml

from fiberprep import cache, datasets, grading, library, pipeline, zones
from fiberprep import io as fio

pipeline.log_to(snakemake.log[0])
log = pipeline.log
P = snakemake.params
zone_names = zones.ZONE_NAMES
root = Path(P.root)
out_ds, out_lib, out_qc = Path(P.datasets_dir), Path(P.library_dir), Path(P.qc_dir)
png_level = int(P.datasets["png_compression"])
margin = int(P.library["margin_px"])

images = pd.read_parquet(snakemake.input.images)
accepted = images[images["status"] == "ok"].sort_values("image_id")
wanted = set(accepted["image_id"])
detected = pd.read_parquet(snakemake.input.defects)
feats = pd.read_parquet(snakemake.input.features)
zone_feats = pd.read_parquet(snakemake.input.zone_features)
model = pickle.loads(Path(snakemake.input.model).read_bytes())
review = yaml.safe_load(Path(snakemake.input.review).read_text(encoding="utf-8"))
types = pipeline.label_defects(feats, model, review, P.severity)
log.info("%d defects: %s", len(types), types["type"].value_counts().to_dict())
fio.write_parquet(types, snakemake.output.types)
if len(detected) and wanted:
    detected = detected[detected["image_id"].isin(wanted)]
    typed = datasets.typed_defects(detected, feats, types)
else:
    typed = pd.DataFrame(columns=["image_id", "defect_id", "number", "type", "cluster", "severity_score",
                                  "severity_level", "zone", "innermost_zone", "area_um2", "length_um",
                                  "width_um", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
# the per-image loop sees only the columns it uses (pandas row access costs per column)
BOX = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
slim = typed[[c for c in ["image_id", "defect_id", "number", "type", "severity_score", "severity_level", "zone",
                          "innermost_zone", "length_um", "width_um", "feret_um", "profile_width_um", *BOX] if c in typed.columns]]
by_image = dict(tuple(slim.groupby("image_id"))) if len(slim) else {}
graded = P.zones_mode != "none"
geometry_cols = [c for c in zones.GEOMETRY_KEYS if c in accepted.columns]
zarr_level = int(P.datasets["zarr_zstd_level"]) if P.datasets["zarr"] else None
label_params = {"png": png_level, "margin": margin, "zarr": zarr_level, "code": P.code}
render = {"png": png_level, "margin": margin, "zarr": zarr_level, "yolo": bool(P.export["yolo_seg"])}

labels, zone_grades, coco, yolo, files = [], [], [], {}, []
n_written = 0
for img in accepted.to_dict("records"):
    iid = img["image_id"]
    folder = cache.image_dir(root, iid)
    d = by_image.get(iid, slim.iloc[:0])

    if graded:
        criteria = P.criteria[img["fiber_type"]]  # the criteria of the image's fiber type
        zone_grade = grading.grade_zones(d, criteria)
        grade = grading.grade_image(d, criteria, zone_grade)
        zone_grades.append(zone_grade.assign(image_id=iid))
    else:
        grade = {"pass_fail": "not_graded", "failures": []}
    labels.append({"image_id": iid, **{c: img[c] for c in geometry_cols},
                   **datasets.image_label_row(d, zone_names, grade), "failures": "; ".join(grade["failures"])})

    patch_paths = {i: out_lib / library.patch_relpath(t, i) for i, t in zip(d["defect_id"], d["type"])}
    # each patch also under its severity (a hard link), for browsing
    patch_links = [out_lib / library.patch_relpath(t, i, s)
                   for i, t, s in zip(d["defect_id"], d["type"], d["severity_level"])]
    targets = {
        "image": out_ds / "pixel_level" / "images" / f"{iid}.png",
        "zone_mask": out_ds / "pixel_level" / "zone_masks" / f"{iid}.png",
        "defect_mask": out_ds / "pixel_level" / "defect_masks" / f"{iid}.png",
        "instance_mask": out_ds / "pixel_level" / "instance_masks" / f"{iid}.png",
        "overlay": out_qc / "overlays" / f"{iid}.png",
    }
    chunks = {a: folder / datasets.ZARR_CHUNK_DIR / f"{a}.zst" for a in datasets.ZARR_ARRAYS} if zarr_level else {}
    all_paths = list(targets.values()) + list(patch_paths.values()) + patch_links + list(chunks.values())
    # the defects stage key chains the input checksum, the zones key and both stages'
    # parameters and code: it identifies the zone and instance maps without hashing them
    upstream = cache.read_record(folder / "defects.json") or {}
    labelled = [[int(n), str(t), str(s)] for n, t, s in zip(d["number"], d["type"], d["severity_level"])]
    key = datasets.content_key(upstream.get("key"), labelled, label_params, bool(P.export["yolo_seg"]))
    record = cache.read_record(folder / "datasets.json") or {}
    if record.get("key") != key or not all(p.exists() for p in all_paths):
        start = time.perf_counter()
        # the display image the zones stage kept (its bytes are the images chunk)
        zones_record = cache.read_record(folder / "zones.json") or {"image_id": iid, "source_path": img["source_path"]}
        display, info, kept = pipeline.load_display(zones_record, root, P.io)
        # an input that already is the 8-bit PNG we would write is copied as it is
        source = Path(img["source_path"]).read_bytes() if datasets.is_display_png(info, display) else None
        maps = [cache.read_array(folder / pipeline.ARRAY_FILES[m]) for m in ("zone_map", "instance_map")]
        encoded = ("images",) if kept and zarr_level == pipeline.DISPLAY_LEVEL else ()
        out = pipeline.dataset_image(display, *maps, d, render, source, encoded)
        for name, path in targets.items():
            fio.write_bytes(path, out[name])
        for path, link, data in zip(patch_paths.values(), patch_links, out["patches"]):
            fio.write_bytes(path, data)
            fio.link_or_copy(path, link)
        # the arrays as dataset.zarr chunks: dataset_zarr links these files into the store
        for a, path in chunks.items():
            if a not in encoded:
                fio.write_bytes(path, out["chunks"][a])
        record = {"key": key, "files": [str(p) for p in all_paths], "coco": out["coco"], "yolo": out["yolo"],
                  "seconds": round(time.perf_counter() - start, 4)}
        cache.write_record(folder / "datasets.json", record)
        n_written += 1
    # COCO and YOLO annotations are kept in the record: unchanged images need no arrays
    coco += [{"image_id": iid, "defect_id": f"{iid}#{a['number']}", **a} for a in record["coco"]]
    if P.export["yolo_seg"]:
        yolo[iid] = record["yolo"]
    files += [{"image_id": iid, "key": key, "path": str(p)} for p in all_paths]

log.info("datasets: %d images, %d rewritten", len(accepted), n_written)
lab_table = pd.DataFrame(labels)
fio.write_parquet(lab_table, snakemake.output.labels)
zone_rows = zone_feats[zone_feats["image_id"].isin(wanted)].sort_values("image_id", kind="stable") \
    if len(zone_feats) else zone_feats
fio.write_parquet(datasets.zone_level_rows(zone_rows, typed, pd.concat(zone_grades) if zone_grades else None)
                  if len(zone_rows) else pd.DataFrame({"image_id": []}), snakemake.output.zones)
fio.write_parquet(library.library_index(typed, images) if len(typed) else typed, snakemake.output.library)
fio.write_json(snakemake.output.annotations, {"coco": coco, "yolo": yolo}, compact=True)
fio.write_parquet(pd.DataFrame(files, columns=["image_id", "key", "path"]), snakemake.output.files)
