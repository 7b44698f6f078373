"""Dataset gather: the image- and region-level tables with the split, COCO, classes,
the run's README and input checksums, the optional exports, and removal of per-image
files of images that are no longer in the dataset."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from fiberprep import __version__, datasets, pipeline, zones
from fiberprep import io as fio
from fiberprep.features import FEATURE_UNITS


def rebuild_folder(folder: Path, entries: dict[Path, Path | str]) -> None:
    """Make ``folder`` hold exactly ``entries`` (relative path -> source file or text),
    writing only entries that differ (a link to a rewritten image, a changed text)."""
    wanted = {folder / rel for rel in entries}
    if folder.exists():
        for p in folder.rglob("*"):
            if p.is_file() and p not in wanted:
                p.unlink()
    for rel, src in entries.items():
        dst = folder / rel
        if isinstance(src, str):
            data = src.encode("utf-8")
            if not (dst.is_file() and dst.stat().st_size == len(data) and dst.read_bytes() == data):
                fio.write_bytes(dst, data)
        elif not (dst.exists() and dst.samefile(src)):
            fio.link_or_copy(src, dst)


def prune(folders: list[Path], keep: set[str]) -> int:
    """Delete files under ``folders`` that no shard claims (removed or rejected images).
    Walked as strings (``os.walk``): a Path per file, as ``rglob`` makes, costs more than
    the look-up."""
    n = 0
    for folder in folders:
        for parent, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(parent, name)
                if name.endswith(".png") and path not in keep:
                    os.unlink(path)
                    n += 1
    return n


sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
P = sm.params
out = Path(P.datasets_dir)

images, labels = pipeline.read_image_tables(sm.input.images, sm.input.labels, P.datasets["split"])
split_of = dict(zip(labels["image_id"], labels["split"]))
zone_level = pipeline.concat_tables([pd.read_parquet(p) for p in sm.input.zones])
files = pd.concat([pd.read_parquet(p) for p in sm.input.files], ignore_index=True)
fragments = [json.loads(Path(p).read_text(encoding="utf-8")) for p in sm.input.annotations]
coco_rows = pd.DataFrame([a for f in fragments for a in f["coco"]])
yolo = {k: v for f in fragments for k, v in f["yolo"].items()}

zone_level.insert(1, "split", zone_level["image_id"].map(split_of).astype(object))

for frame, path in ((images, sm.output.images), (labels, sm.output.labels), (zone_level, sm.output.zones)):
    pipeline.write_published_table(frame, path, FEATURE_UNITS)

accepted = images[images["status"] == "ok"]
coco = datasets.coco_document(accepted, coco_rows, {"description": "fiberprep defect instances",
                                                     "version": __version__})
# one line: Python's C encoder (the indented form runs in pure Python: 3.4 s at 10 000 images)
fio.write_json(sm.output.coco, coco, compact=True)
classes = datasets.classes_document(zones.ZONE_NAMES)
fio.write_json(sm.output.classes, classes)

listing = "".join(f"{c}  {r}\n" for c, r in zip(images["checksum"].fillna(""), images["rel_path"]) if c)
fio.write_bytes(sm.output.checksums, listing.encode("utf-8"))
digest = hashlib.sha256(listing.encode("utf-8")).hexdigest()

exports = []
pixel = out / "pixel_level"
if P.export["yolo_seg"]:
    # no "path:" key: Ultralytics then resolves the split folders next to data.yaml
    entries = {"data.yaml": "".join(f"{s}: images/{s}\n" for s in datasets.SPLITS)
               + "names:\n" + "".join(f"  {k}: {v}\n" for k, v in datasets.yolo_names().items())}
    for iid, s in split_of.items():
        entries[f"images/{s}/{iid}.png"] = pixel / "images" / f"{iid}.png"
        entries[f"labels/{s}/{iid}.txt"] = "".join(line + "\n" for line in yolo.get(iid, []))
    rebuild_folder(out / "yolo_seg", entries)
    exports.append("yolo_seg")
if P.export["by_label_folders"]:
    entries = {}
    for r in labels.itertuples():
        src = pixel / "images" / f"{r.image_id}.png"
        entries[f"pass_fail/{r.pass_fail}/{r.image_id}.png"] = src
        entries[f"primary_defect/{r.primary_defect}/{r.image_id}.png"] = src
    rebuild_folder(out / "by_label", entries)
    exports.append("by_label")
for name in {"yolo_seg", "by_label"} - set(exports):
    shutil.rmtree(out / name, ignore_errors=True)

fio.write_bytes(sm.output.readme, datasets.readme_text(
    labels, coco, classes, P.config, __version__, digest, len(images),
    int((images["status"] != "ok").sum()), exports).encode("utf-8"))

removed = prune([pixel / d for d in ("images", "zone_masks", "defect_masks", "instance_masks")]
                + [Path(P.qc_dir) / "overlays", Path(P.library_dir) / "patches"], set(files["path"]))
pipeline.log.info("datasets: %d images (%d accepted), %d annotations, %d stale files removed",
                  len(images), len(accepted), len(coco["annotations"]), removed)
