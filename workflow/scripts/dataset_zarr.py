"""Dataset Zarr: the pixel-level arrays as one chunked, compressed Zarr v3 store.

One group per image size (``h<H>_w<W>``) holds ``images`` (N,H,W), or (N,H,W,3) once
any of its images is RGB,
``zone_masks``, ``defect_masks`` (uint8) and ``instance_masks`` (uint16), one image
per chunk; attributes ``image_ids`` (the image at each position), ``split`` and
``keys`` (each image's label key). A new group is in id order; later runs keep every
image at its position and put added images into freed or new positions
(``datasets.zarr_slots``), so only positions whose image or key changed are rewritten.
The shard jobs left each image's chunks encoded (``datasets.zarr_chunk``, listed in
their file tables): a rewritten position gets them as hard links (a copy across file
systems) at its chunk key, nothing is decoded or compressed here, except a gray image
in a group that holds RGB ones. Attributes are written after the chunks and the
marker file last, so an interrupted update is redone, never trusted.
"""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import zarr
from zarr.codecs import ZstdCodec

from fiberprep import __version__, datasets, pipeline, zones
from fiberprep import io as fio

sm = snakemake  # noqa: F821 (set by Snakemake)
pipeline.log_to(sm.log[0])
pixel = Path(sm.params.pixel_dir)
codec = ZstdCodec(level=int(sm.params.datasets["zarr_zstd_level"]))

images, _ = pipeline.read_image_tables(sm.input.images, sm.input.labels, sm.params.datasets["split"])
images = images[images["status"] == "ok"]
files = pd.concat([pd.read_parquet(p) for p in sm.input.files])
keys = files.drop_duplicates("image_id").set_index("image_id")["key"]
images["key"] = images["image_id"].map(keys)
# only the chunk files (.zst) become paths: the PNGs are most of the list
chunks = files[files["path"].str.endswith(".zst")]
chunk_of = {(i, p.stem): p for i, p in zip(chunks["image_id"], chunks["path"].map(Path))
            if p.parent.name == datasets.ZARR_CHUNK_DIR}


def channels(iid: str) -> int:
    """3 for an RGB display PNG, 1 for gray (the IHDR colour type, no decoding)."""
    with open(pixel / "images" / f"{iid}.png", "rb") as f:
        return 3 if f.read(26)[25] in (2, 6) else 1


def chunk_file(arr: zarr.Array, i: int) -> Path:
    """The file of position ``i`` of ``arr`` (one image per chunk) in the store."""
    key = arr.metadata.chunk_key_encoding.encode_chunk_key((i,) + (0,) * (arr.ndim - 1))
    return pixel / "dataset.zarr" / arr.path / key


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
    for arr, dtype in datasets.ZARR_ARRAYS.items():
        shp = (n, h, w, 3) if rgb and arr == "images" else (n, h, w)
        if arr in g:
            g[arr].resize(shp)
        else:
            g.create_array(arr, shape=shp, chunks=(1, *shp[1:]), dtype=dtype, compressors=codec, fill_value=0)
    arrays = {arr: g[arr] for arr in datasets.ZARR_ARRAYS}
    for i, iid in enumerate(ids):
        if i < len(old_ids) and old_ids[i] == iid and written[iid] == by_id.at[iid, "key"]:
            continue
        for arr, a in arrays.items():
            src = chunk_of[(iid, arr)]
            if a.ndim == 4 and channels(iid) == 1:  # a gray image in an RGB group
                gray = datasets.zarr_chunk_array(src.read_bytes(), np.uint8, (h, w))
                # Zarr writes files in place: drop a hard link first, never write through it
                chunk_file(a, i).unlink(missing_ok=True)
                a[i] = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
            else:
                fio.link_or_copy(src, chunk_file(a, i))
        n_written += 1
    g.attrs.update({"image_ids": ids, "split": by_id.loc[ids, "split"].tolist(),
                    "keys": by_id.loc[ids, "key"].tolist(), "height": h, "width": w})
root.attrs.update({"fiberprep_version": __version__, "groups": sorted(groups),
                   "classes": datasets.classes_document(zones.ZONE_NAMES)})
pipeline.log.info("dataset.zarr: %d images in %d groups, %d written", len(images), len(groups), n_written)
fio.write_bytes(sm.output.marker, b"complete\n")
