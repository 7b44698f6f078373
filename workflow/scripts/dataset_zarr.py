"""Dataset Zarr: the pixel-level PNGs as one chunked, compressed Zarr v3 store.

One group per image size (``h<H>_w<W>``) holds ``images`` (N,H,W) or (N,H,W,3),
``zone_masks``, ``defect_masks`` (uint8) and ``instance_masks`` (uint16), one image
per chunk, images ordered by id; attributes ``image_ids``, ``split`` and ``keys``
(each image's label key). Only positions whose image or key changed are rewritten,
attributes are written after the chunks and the marker file last, so an interrupted
update is redone, never trusted.
"""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from fiberprep import __version__, datasets, pipeline, zones
from fiberprep import io as fio

MASKS = {"zone_masks": np.uint8, "defect_masks": np.uint8, "instance_masks": np.uint16}

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
pixel = Path(sm.params.pixel_dir)
codec = ZstdCodec(level=int(sm.params.datasets["zarr_zstd_level"]))

images = pd.read_parquet(sm.input.images)
images = images[images["status"] == "ok"].sort_values("image_id")
keys = pd.concat([pd.read_parquet(p) for p in sm.input.files]).drop_duplicates("image_id").set_index("image_id")["key"]
images["key"] = images["image_id"].map(keys)


def read(iid: str) -> dict[str, np.ndarray]:
    """The PNGs of one image: display (RGB or gray) and the three masks (ids)."""
    def png(kind):
        return (pixel / kind / f"{iid}.png").read_bytes()

    return {"images": datasets.decode_png(png("images")),
            "zone_masks": datasets.decode_palette_png(png("zone_masks")),
            "defect_masks": datasets.decode_palette_png(png("defect_masks")),
            "instance_masks": datasets.decode_png(png("instance_masks"))}


def channels(iid: str) -> int:
    """3 for an RGB display PNG, 1 for gray (the IHDR colour type, no decoding)."""
    with open(pixel / "images" / f"{iid}.png", "rb") as f:
        return 3 if f.read(26)[25] in (2, 6) else 1


root = zarr.open_group(str(pixel / "dataset.zarr"), mode="a")
groups = {}
for (h, w), grp in images.groupby(["height", "width"], sort=True):
    groups[f"h{int(h)}_w{int(w)}"] = grp
for name in sorted(set(root.group_keys()) - set(groups)):
    del root[name]

n_written = 0
for name, grp in groups.items():
    ids, n = grp["image_id"].tolist(), len(grp)
    h, w = int(grp["height"].iloc[0]), int(grp["width"].iloc[0])
    rgb = any(channels(i) == 3 for i in ids)
    shape = (n, h, w, 3) if rgb else (n, h, w)
    g = root.require_group(name)
    old_ids, old_keys = list(g.attrs.get("image_ids", [])), list(g.attrs.get("keys", []))
    if "images" in g and g["images"].shape[1:] != shape[1:]:
        del g["images"]
        old_ids, old_keys = [], []
    for arr, dtype, shp in [("images", np.uint8, shape)] + [(m, t, (n, h, w)) for m, t in MASKS.items()]:
        if arr in g:
            g[arr].resize(shp)
        else:
            g.create_array(arr, shape=shp, chunks=(1, *shp[1:]), dtype=dtype, compressors=codec, fill_value=0)
    for i, (iid, key) in enumerate(zip(ids, grp["key"])):
        if i < len(old_ids) and old_ids[i] == iid and old_keys[i] == key:
            continue
        data = read(iid)
        if rgb and data["images"].ndim == 2:
            data["images"] = cv2.cvtColor(data["images"], cv2.COLOR_GRAY2RGB)
        for arr, value in data.items():
            g[arr][i] = value
        n_written += 1
    g.attrs.update({"image_ids": ids, "split": grp["split"].tolist(), "keys": grp["key"].tolist(),
                    "height": h, "width": w})
root.attrs.update({"fiberprep_version": __version__, "groups": sorted(groups),
                   "classes": datasets.classes_document(zones.ZONE_NAMES)})
pipeline.log.info("dataset.zarr: %d images in %d groups, %d written", len(images), len(groups), n_written)
fio.write_bytes(sm.output.marker, b"complete\n")
