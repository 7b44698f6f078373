"""Dataset Zarr: the pixel-level PNGs as one chunked, compressed Zarr v3 store.

One group per image size (``h<H>_w<W>``) holds ``images`` (N,H,W), or (N,H,W,3) once
any of its images is RGB,
``zone_masks``, ``defect_masks`` (uint8) and ``instance_masks`` (uint16), one image
per chunk; attributes ``image_ids`` (the image at each position), ``split`` and
``keys`` (each image's label key). A new group is in id order; later runs keep every
image at its position and put added images into freed or new positions
(``datasets.zarr_slots``), so only positions whose image or key changed are rewritten,
attributes are written after the chunks and the marker file last, so an interrupted
update is redone, never trusted.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from fiberprep import __version__, datasets, pipeline, zones
from fiberprep import io as fio

MASKS = {"zone_masks": np.uint8, "defect_masks": np.uint8, "instance_masks": np.uint16}
BATCH = 16  # images decoded and written together (memory: 16 images' arrays)

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
pixel = Path(sm.params.pixel_dir)
codec = ZstdCodec(level=int(sm.params.datasets["zarr_zstd_level"]))

images = pd.read_parquet(sm.input.images)
images = images[images["status"] == "ok"].sort_values("image_id")
keys = pd.concat([pd.read_parquet(p) for p in sm.input.files]).drop_duplicates("image_id").set_index("image_id")["key"]
images["key"] = images["image_id"].map(keys)


def read(iid: str, rgb: bool) -> dict[str, np.ndarray]:
    """The PNGs of one image: display (RGB when ``rgb``, else gray) and the three masks."""
    def png(kind):
        return (pixel / kind / f"{iid}.png").read_bytes()

    image = datasets.decode_png(png("images"))
    return {"images": cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if rgb and image.ndim == 2 else image,
            "zone_masks": datasets.decode_palette_png(png("zone_masks")),
            "defect_masks": datasets.decode_palette_png(png("defect_masks")),
            "instance_masks": datasets.decode_png(png("instance_masks"))}


def channels(iid: str) -> int:
    """3 for an RGB display PNG, 1 for gray (the IHDR colour type, no decoding)."""
    with open(pixel / "images" / f"{iid}.png", "rb") as f:
        return 3 if f.read(26)[25] in (2, 6) else 1


pool = ThreadPoolExecutor(max(1, int(sm.threads)))
root = zarr.open_group(str(pixel / "dataset.zarr"), mode="a")
groups = {}
for (h, w), grp in images.groupby(["height", "width"], sort=True):
    groups[f"h{int(h)}_w{int(w)}"] = grp
for name in sorted(set(root.group_keys()) - set(groups)):
    del root[name]

n_written = 0
for name, grp in groups.items():
    h, w = int(grp["height"].iloc[0]), int(grp["width"].iloc[0])
    g = root.require_group(name)
    old_ids, old_keys = list(g.attrs.get("image_ids", [])), list(g.attrs.get("keys", []))
    written = dict(zip(old_ids, old_keys))
    # RGB once any image is: only new or changed images need a look at their PNG
    was_rgb = "images" in g and g["images"].ndim == 4
    rgb = was_rgb or any(channels(i) == 3 for i, k in zip(grp["image_id"], grp["key"])
                         if written.get(i) != k)
    if "images" in g and rgb != was_rgb:
        del g["images"]
        old_ids, old_keys, written = [], [], {}
    ids = datasets.zarr_slots(old_ids, grp["image_id"])
    by_id = grp.set_index("image_id")
    n = len(ids)
    shape = (n, h, w, 3) if rgb else (n, h, w)
    for arr, dtype, shp in [("images", np.uint8, shape)] + [(m, t, (n, h, w)) for m, t in MASKS.items()]:
        if arr in g:
            g[arr].resize(shp)
        else:
            g.create_array(arr, shape=shp, chunks=(1, *shp[1:]), dtype=dtype, compressors=codec, fill_value=0)
    todo = [i for i, iid in enumerate(ids)
            if not (i < len(old_ids) and old_ids[i] == iid and written[iid] == by_id.at[iid, "key"])]
    # runs of consecutive positions, BATCH at a time: PNG decoding in threads (OpenCV
    # releases the GIL), one write per array and batch (Zarr compresses its chunks
    # concurrently)
    runs = np.split(np.asarray(todo, int), np.flatnonzero(np.diff(todo) != 1) + 1) if todo else []
    for run in runs:
        for lo in range(0, len(run), BATCH):
            batch = run[lo:lo + BATCH]
            decoded = list(pool.map(lambda i: read(ids[i], rgb), batch))
            for arr in decoded[0]:
                g[arr][batch[0]:batch[-1] + 1] = np.stack([d[arr] for d in decoded])
            n_written += len(batch)
    g.attrs.update({"image_ids": ids, "split": by_id.loc[ids, "split"].tolist(),
                    "keys": by_id.loc[ids, "key"].tolist(), "height": h, "width": w})
root.attrs.update({"fiberprep_version": __version__, "groups": sorted(groups),
                   "classes": datasets.classes_document(zones.ZONE_NAMES)})
pipeline.log.info("dataset.zarr: %d images in %d groups, %d written", len(images), len(groups), n_written)
fio.write_bytes(sm.output.marker, b"complete\n")
