"""Dataset shard job: per-image dataset files of one shard, and its table fragments.

First it labels the shard's defects (``pipeline.label_defects``: nearest-centroid
cluster of the saved model, type from the review file, severity) and writes them as
the shard's part of ``clustering/defect_types.parquet``. Then, in a pool of the job's
threads, each accepted image is graded and its pixel-level PNGs, QC overlay, defect
patches and ``dataset.zarr`` chunks are written when its label key changed
(``pipeline.dataset_files_image``). The table fragments (labels, zone level, library
index, annotations, file list) are rebuilt from tables every time.
"""

import pickle
from pathlib import Path

import pandas as pd
import yaml

from fiberprep import datasets, library, pipeline, zones
from fiberprep import io as fio
from fiberprep.features import ZONE_FEATURE_DESCRIPTIONS

pipeline.log_to(snakemake.log[0])
log = pipeline.log
P = snakemake.params
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
# each image's work sees only the columns it uses (pandas row access costs per column)
BOX = ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]
slim = typed[[c for c in ["image_id", "defect_id", "number", "type", "severity_score", "severity_level", "zone",
                          "innermost_zone", "length_um", "width_um", "feret_um", "profile_width_um", *BOX] if c in typed.columns]]
by_image = dict(tuple(slim.groupby("image_id"))) if len(slim) else {}
zarr_level = int(P.datasets["zarr_zstd_level"]) if P.datasets["zarr"] else None
params = {
    "graded": P.zones_mode != "none",
    "criteria": P.criteria,
    "geometry_columns": [c for c in zones.GEOMETRY_KEYS if c in accepted.columns],
    "label": {"png": png_level, "margin": margin, "zarr": zarr_level, "code": P.code},
    "render": {"png": png_level, "margin": margin, "zarr": zarr_level, "yolo": bool(P.export["yolo_seg"])},
    "io": P.io, "datasets_dir": str(out_ds), "library_dir": str(out_lib), "qc_dir": str(out_qc),
}
items = [(img, by_image.get(img["image_id"], slim.iloc[:0])) for img in accepted.to_dict("records")]
done = pipeline.run_shard(pipeline.dataset_files_image, items, params, P.root, snakemake.threads)
labels = [r["label"] for r in done]
zone_grades = [row for r in done if r["zone_grade"] for row in r["zone_grade"]]
# COCO and YOLO annotations are kept in the records: unchanged images need no arrays
coco = [{"image_id": r["label"]["image_id"], "defect_id": f"{r['label']['image_id']}#{a['number']}", **a}
        for r in done for a in r["coco"]]
yolo = {r["label"]["image_id"]: r["yolo"] for r in done} if P.export["yolo_seg"] else {}
files = [{"image_id": r["label"]["image_id"], "key": r["key"], "path": p} for r in done for p in r["files"]]
n_written = sum(r["written"] for r in done)

log.info("datasets: %d images, %d rewritten", len(accepted), n_written)
# no accepted image: no rows, but the columns, for readers that select them
no_defects = pd.DataFrame(columns=["type", "innermost_zone", "severity_score"])
lab_table = pd.DataFrame(labels) if labels else pd.DataFrame(columns=[
    "image_id", *zones.GEOMETRY_KEYS, *datasets.image_label_row(no_defects, zones.ZONE_NAMES, {}), "failures"])
fio.write_parquet(lab_table, snakemake.output.labels)
zone_rows = zone_feats[zone_feats["image_id"].isin(wanted)].sort_values("image_id", kind="stable") \
    if len(zone_feats) else pd.DataFrame(columns=["image_id", *ZONE_FEATURE_DESCRIPTIONS])
fio.write_parquet(datasets.zone_level_rows(zone_rows, typed, pd.DataFrame(zone_grades) if zone_grades else None),
                  snakemake.output.zones)
fio.write_parquet(library.library_index(typed, images) if len(typed) else typed, snakemake.output.library)
fio.write_json(snakemake.output.annotations, {"coco": coco, "yolo": yolo}, compact=True)
fio.write_parquet(pd.DataFrame(files, columns=["image_id", "key", "path"]), snakemake.output.files)
