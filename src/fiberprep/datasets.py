"""Dataset assembly: class masks, palettes, splits, COCO, YOLO and table schemas.

Every function here is pure: it turns the per-image intermediates (zone map,
instance map, typed defect table) into the arrays, encoded files (bytes),
records and Arrow schemas that the dataset writers in ``workflow/scripts``
put on disk. Class ids are fixed by :data:`DEFECT_CLASSES` and the zone ids of
``fiberprep.zones`` so that every export of a run agrees.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections import Counter

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
from numcodecs import Zstd
from pycocotools import mask as coco_mask

from fiberprep.stats import lookup

#: Defect class id -> type name (0 = no defect). Cluster type names map onto these.
DEFECT_CLASSES: dict[int, str] = {
    1: "scratch",
    2: "pit_dig",
    3: "contamination",
    4: "chip",
    5: "other",
}
#: Type name -> class id.
DEFECT_CLASS_IDS: dict[str, int] = {name: cid for cid, name in DEFECT_CLASSES.items()}
#: Display colours (RGB) of the defect classes; also used for overlays and plots.
DEFECT_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (230, 25, 75),
    2: (60, 180, 75),
    3: (255, 200, 25),
    4: (0, 130, 200),
    5: (245, 130, 48),
}
#: Display colours (RGB) of the zone ids (0 outside .. 5 ferrule).
ZONE_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (0, 0, 0),
    1: (255, 64, 64),
    2: (64, 200, 64),
    3: (255, 220, 0),
    4: (64, 128, 255),
    5: (150, 150, 150),
}
#: Split names in the order their ratios are cumulated.
SPLITS: tuple[str, ...] = ("train", "val", "test")


def class_id(type_name: str) -> int:
    """Class id of a defect type name; names outside :data:`DEFECT_CLASSES` are "other"."""
    return DEFECT_CLASS_IDS.get(str(type_name), DEFECT_CLASS_IDS["other"])


def classes_document(zone_names: dict[int, str]) -> dict:
    """Content of ``classes.json``: zone and defect ids with names and colours.

    Parameters
    ----------
    zone_names : dict[int, str]
        Zone id -> name, as defined by ``fiberprep.zones``.

    Returns
    -------
    dict
        ``{"zones": {id: {"name", "colour"}}, "defects": {id: {"name", "colour"}}}``
        with string keys (JSON) and ``#rrggbb`` colours; ``color`` repeats ``colour``
        for readers that spell it the American way.
    """

    def entry(name, rgb):
        hex_rgb = "#%02x%02x%02x" % rgb
        return {"name": name, "colour": hex_rgb, "color": hex_rgb}

    defects = {"0": entry("none", DEFECT_COLOURS[0])}
    defects.update({str(c): entry(n, DEFECT_COLOURS[c]) for c, n in DEFECT_CLASSES.items()})
    zones = {str(z): entry(n, ZONE_COLOURS.get(z, (255, 255, 255))) for z, n in sorted(zone_names.items())}
    return {"zones": zones, "defects": defects}


def palette(colours: dict[int, tuple[int, int, int]]) -> list[int]:
    """Flat 768-entry PNG palette (ids without a colour stay black)."""
    pal = np.zeros((256, 3), np.uint8)
    for cid, rgb in colours.items():
        pal[cid] = rgb
    return pal.ravel().tolist()


def class_lut(numbers, type_names, n_max: int | None = None) -> np.ndarray:
    """Lookup table instance number -> defect class id (uint8).

    Parameters
    ----------
    numbers : array-like of int
        Instance numbers (values of the instance map).
    type_names : array-like of str
        Defect type of each instance.
    n_max : int, optional
        Largest value of the instance map (the table covers 0..n_max).
    """
    numbers = np.asarray(numbers, dtype=np.int64)
    size = int(max(numbers.max(initial=0), n_max or 0)) + 1
    lut = np.zeros(size, np.uint8)
    lut[numbers] = [class_id(t) for t in type_names]
    return lut


def defect_class_mask(instance_map: np.ndarray, numbers, type_names) -> np.ndarray:
    """Per-pixel defect class ids (uint8) from an instance map and the instance types."""
    return apply_class_lut(instance_map, class_lut(numbers, type_names, int(instance_map.max(initial=0))))


def apply_class_lut(instance_map: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[instance_map]`` (uint8 class ids); with at most 255 instances by
    ``stats.lookup`` on the map as 8 bits, about 2.5x faster than indexing a whole
    uint16 image."""
    if lut.size > 256 or int(instance_map.max(initial=0)) >= lut.size:
        return lut[instance_map]  # (raises on a number the table lacks)
    return lookup(instance_map.astype(np.uint8), lut, np.uint8)


def encode_png(array: np.ndarray, compression: int = 1, flat: bool = False) -> bytes:
    """PNG bytes of a uint8/uint16 gray or uint8 RGB array.

    The PNG row filter and zlib strategy are fixed by content instead of searched
    per row: ``flat`` (masks: long runs of one id) writes unfiltered rows with
    run-length coding, 3-4x faster than OpenCV's default at the same size; photos
    use the "sub" filter with Huffman-only coding, ~2x faster for ~10 % more bytes.
    """
    arr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if flat:
        row_filter, strategy = cv2.IMWRITE_PNG_FILTER_NONE, cv2.IMWRITE_PNG_STRATEGY_RLE
    else:
        row_filter, strategy = cv2.IMWRITE_PNG_FILTER_SUB, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, int(compression), cv2.IMWRITE_PNG_STRATEGY,
                                         strategy, cv2.IMWRITE_PNG_FILTER, row_filter])
    if not ok:
        raise ValueError(f"PNG encoding failed for an array {array.shape} {array.dtype}")
    return buf.tobytes()


def is_display_png(info: dict, display: np.ndarray) -> bool:
    """True when the input file already is the 8-bit gray/RGB PNG of ``display``
    (``io.load_image`` info), so the dataset can copy its bytes instead of encoding."""
    return (info.get("format") == "PNG" and info.get("bit_depth") == 8 and info.get("mode") in ("L", "RGB")
            and display.shape[:2] == (info.get("height"), info.get("width"))
            and display.ndim == (2 if info["mode"] == "L" else 3))


def decode_png(data: bytes) -> np.ndarray:
    """Array of PNG bytes written by :func:`encode_png`: gray or RGB uint8, or uint16
    (palette PNGs come back as RGB)."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("not a PNG OpenCV can decode")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB) if arr.ndim == 3 else arr


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_palette_png(indices: np.ndarray, colours: dict[int, tuple[int, int, int]], compression: int = 1) -> bytes:
    """PNG bytes of a uint8 index image in palette mode (colour type 3), for overlays.

    OpenCV writes the 8-bit gray PNG, whose pixel data is byte-for-byte that of an
    8-bit palette PNG; the header's colour type is switched to palette and a PLTE
    chunk inserted (PNG spec, ISO/IEC 15948). One byte per pixel instead of three.
    """
    gray = encode_png(np.ascontiguousarray(indices, dtype=np.uint8), compression)
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    ihdr = bytearray(gray[16 : 16 + 13])
    ihdr[9] = 3  # colour type: palette
    return (gray[:8] + _png_chunk(b"IHDR", bytes(ihdr)) + _png_chunk(b"PLTE", bytes(palette(colours)))
            + gray[ihdr_end:])


def content_key(*parts) -> str:
    """Stable sha256 of arrays, tables and JSON-able values (the label hash).

    Used to decide whether an image's dataset files must be rewritten: the key
    changes when a mask, a defect's type/severity or a relevant parameter changes.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype.str}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, pd.DataFrame):
            h.update(",".join(map(str, part.columns)).encode())
            h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


#: Arrays of ``dataset.zarr`` (one image per chunk) and their dtypes; ``images`` is
#: (H, W) or, in a group holding any RGB image, (H, W, 3).
ZARR_ARRAYS: dict[str, type] = {"images": np.uint8, "zone_masks": np.uint8, "defect_masks": np.uint8,
                                "instance_masks": np.uint16}
#: Folder (in an image's intermediate folder) of its encoded Zarr chunks, ``<array>.zst``.
ZARR_CHUNK_DIR = "zarr_chunks"


def zarr_chunk(array: np.ndarray, level: int) -> bytes:
    """One image's chunk exactly as a Zarr v3 array with the ``bytes`` (little endian)
    and ``zstd`` codecs (``zarr.codecs.ZstdCodec(level)``, no checksum) stores it, so a
    shard job that holds the array encodes it once and the store takes the bytes as
    they are, without decoding a PNG or compressing again."""
    return Zstd(level=int(level), checksum=False).encode(
        np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")))


def zarr_chunk_array(data: bytes, dtype, shape) -> np.ndarray:
    """Inverse of :func:`zarr_chunk` (``shape`` of the image, without the chunk's
    leading 1)."""
    return np.frombuffer(Zstd().decode(data), dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def zarr_slots(old_ids: list[str], ids) -> list[str]:
    """Image id at each position of a Zarr group after an update, so that an
    incremental run rewrites only the positions whose image changed.

    Images still present keep their position; new ids (in sorted order) fill the
    positions of removed images, then are appended; when more were removed than added,
    the last images move into the remaining gaps. A new group is in id order.

    Examples
    --------
    >>> zarr_slots([], ["b", "a"])
    ['a', 'b']
    >>> zarr_slots(["a", "c", "d"], ["a", "b", "d", "e"])
    ['a', 'b', 'd', 'e']
    >>> zarr_slots(["a", "b", "c", "d"], ["b", "d"])
    ['d', 'b']
    """
    wanted = set(ids)
    slots = [i if i in wanted else None for i in old_ids]
    new = iter(sorted(wanted - set(old_ids)))
    slots = [s if s is not None else next(new, None) for s in slots] + list(new)
    while None in slots:
        last = slots.pop()
        if last is not None:
            slots[slots.index(None)] = last
    return slots


def split_fraction(image_id: str) -> float:
    """Uniform number in [0, 1) from the sha256 of an image id (platform independent)."""
    return int(hashlib.sha256(image_id.encode()).hexdigest()[:15], 16) / float(16**15)


def assign_splits(image_ids, strata, ratios: dict[str, float]) -> np.ndarray:
    """Deterministic train/val/test split, stratified by ``strata``.

    Within each stratum the images are ordered by :func:`split_fraction` of their
    id and cut at the cumulative ``ratios``, so every stratum (e.g. pass / fail)
    gets the configured proportions and the result depends only on the set of ids,
    never on the order of the input or on a random state. Adding images can move
    only images at the cut points of their stratum.

    Parameters
    ----------
    image_ids : array-like of str
    strata : array-like
        Stratum of each image (e.g. ``pass_fail``); missing values form a stratum.
    ratios : dict[str, float]
        Split name -> fraction (normalised to sum 1); names from :data:`SPLITS`.

    Returns
    -------
    numpy.ndarray of str (object), one split name per image.
    """
    names = [s for s in SPLITS if ratios.get(s, 0) > 0]
    if not names:
        raise ValueError(f"datasets.split: no positive ratio among {list(SPLITS)}: {ratios}")
    weights = np.array([ratios[s] for s in names], float)
    edges = np.cumsum(weights / weights.sum())
    ids = pd.Series(list(image_ids), dtype=object)
    frame = pd.DataFrame(
        {
            "u": [split_fraction(i) for i in ids],
            "id": ids,
            "stratum": pd.Series(list(strata), dtype=object).fillna("__missing__").astype(str),
        }
    )
    out = np.empty(len(frame), dtype=object)
    for _, grp in frame.groupby("stratum", sort=True):
        order = grp.sort_values(["u", "id"]).index.to_numpy()
        position = (np.arange(len(order)) + 0.5) / len(order)
        idx = np.minimum(np.searchsorted(edges, position, side="right"), len(names) - 1)
        out[order] = np.array(names, dtype=object)[idx]
    return out


#: Columns of ``image_level/images.parquet`` (those present), in order.
IMAGE_TABLE_COLUMNS = ("image_id", "rel_path", "source_path", "status", "reason", "size_bytes",
                       "width", "height", "format", "checksum", "duplicate_of", "split")


def duplicate_of(image_ids, checksums) -> np.ndarray:
    """For each file, the smallest id of the files with the same content (its checksum),
    or None when no other file has it (the first of a group points to itself).

    >>> duplicate_of(["b", "a", "c"], ["x", "x", None]).tolist()
    ['a', 'a', None]
    """
    frame = pd.DataFrame({"id": list(image_ids), "sum": list(checksums)}, dtype=object)
    groups = frame.dropna().groupby("sum")["id"]
    first = frame["sum"].map(groups.min()[groups.size() > 1])
    return np.array([v if isinstance(v, str) else None for v in first], dtype=object)


def image_tables(images: pd.DataFrame, labels: pd.DataFrame,
                 ratios: dict[str, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The image-level tables from the shards' concatenated fragments (pure): every
    input with its ``status``, ``duplicate_of`` and ``split``, and the labels of the
    accepted images with their ``split``, both sorted by ``image_id``. The dataset
    tables, the Zarr store and the report each build them from the same fragments, so
    none of them waits for another.

    The split is :func:`assign_splits` stratified by ``pass_fail``, drawn once per
    content: files with the same bytes under several names (a scope folder copied
    twice) share the split of the first of them, so no picture is in train and test.
    ``duplicate_of`` names, for a file whose bytes another file also holds, the
    smallest id of those files (empty otherwise; empty files are not compared).

    Parameters
    ----------
    images : pandas.DataFrame
        The features stage's image tables of all shards.
    labels : pandas.DataFrame
        The dataset shard jobs' image labels of all shards (possibly no rows).
    ratios : dict[str, float]
        The config's ``datasets.split``.
    """
    table = images.sort_values("image_id", ignore_index=True)
    content = (table["checksum"].where(table["size_bytes"] > 0) if "checksum" in table
               else [None] * len(table))
    table["duplicate_of"] = duplicate_of(table["image_id"], content)
    labels = labels.sort_values("image_id", ignore_index=True) if len(labels) else labels.copy()
    if len(labels):
        first = table.set_index("image_id")["duplicate_of"].dropna()
        group = labels["image_id"].map(lambda i: first.get(i, i))
        lead = ~group.duplicated()
        drawn = assign_splits(group[lead], labels.loc[lead, "pass_fail"], ratios)
        split = group.map(dict(zip(group[lead], drawn))).to_numpy()
    else:
        split = np.array([], dtype=object)
    labels.insert(1, "split", split)
    table["split"] = table["image_id"].map(dict(zip(labels["image_id"], labels["split"])))
    table = table[[c for c in IMAGE_TABLE_COLUMNS if c in table.columns]]
    # pixel sizes stay integers; rows rejected before decoding have none (null, not NaN)
    return table.astype({c: "Int64" for c in ("width", "height") if c in table.columns}), labels


def _column_rle(instance_map: np.ndarray, number: int, bbox: tuple[int, int, int, int]) -> list[int]:
    """Uncompressed COCO RLE counts of one instance, computed on its bbox columns only."""
    h, w = instance_map.shape
    x, y, bw, bh = bbox
    strip = np.zeros((h, bw), bool)
    strip[y : y + bh] = instance_map[y : y + bh, x : x + bw] == number
    flat = strip.ravel(order="F")
    change = np.flatnonzero(np.diff(flat.view(np.int8))) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(bounds)
    if flat[0]:
        runs = np.concatenate(([0], runs))
    runs[0] += x * h
    tail = (w - x - bw) * h
    if not flat[-1]:
        runs[-1] += tail
    elif tail:
        runs = np.concatenate((runs, [tail]))
    return runs.tolist()


def instance_bboxes(instance_map: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Pixel-tight ``(x, y, w, h)`` of every instance number present in the map.

    One pass over the labelled pixels in numpy (``scipy.ndimage.find_objects`` gives
    the same, but importing scipy.ndimage costs the per-shard jobs more than this).
    """
    ys, xs = np.nonzero(instance_map)
    if ys.size == 0:
        return {}
    labels = instance_map[ys, xs]
    order = np.argsort(labels, kind="stable")
    labels, ys, xs = labels[order], ys[order], xs[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    x0, x1 = np.minimum.reduceat(xs, starts), np.maximum.reduceat(xs, starts)
    y0, y1 = np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)
    return {int(n): (int(a), int(b), int(c - a + 1), int(d - b + 1))
            for n, a, b, c, d in zip(labels[starts], x0, y0, x1, y1)}


def coco_annotations(instance_map: np.ndarray, numbers, category_ids) -> list[dict]:
    """COCO instance annotations (compressed RLE, area, bbox) of one image.

    Parameters
    ----------
    instance_map : numpy.ndarray of uint16
        0 background, n = defect number.
    numbers, category_ids : array-like of int
        Defect numbers to export and their COCO category (defect class id).

    Returns
    -------
    list of dict
        One per instance present in the map: ``number``, ``category_id``,
        ``segmentation`` (``{"size": [h, w], "counts": str}``), ``area``,
        ``bbox`` ([x, y, w, h], pixel-tight), ``iscrowd`` = 0. The caller adds
        ``id`` and ``image_id``.

    References
    ----------
    Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014
    (data format, https://cocodataset.org/#format-data).
    """
    h, w = instance_map.shape
    boxes = instance_bboxes(instance_map)
    anns = []
    for n, cat in zip(np.asarray(numbers, int), np.asarray(category_ids, int)):
        if n not in boxes:
            continue
        rle = coco_mask.frPyObjects({"size": [h, w], "counts": _column_rle(instance_map, n, boxes[n])}, h, w)
        anns.append(
            {
                "number": int(n),
                "category_id": int(cat),
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": int(coco_mask.area(rle)),
                "bbox": [int(v) for v in coco_mask.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return anns


def coco_categories() -> list[dict]:
    """COCO categories from :data:`DEFECT_CLASSES` (id = class id)."""
    return [{"id": c, "name": n, "supercategory": "defect"} for c, n in DEFECT_CLASSES.items()]


def coco_document(images: pd.DataFrame, annotations: pd.DataFrame, info: dict) -> dict:
    """Whole COCO instances document.

    Parameters
    ----------
    images : pandas.DataFrame
        Accepted images in dataset order: ``image_id``, ``width``, ``height``,
        ``split``. COCO image ids are 1-based positions in this order.
    annotations : pandas.DataFrame
        Rows of :func:`coco_annotations` plus ``image_id`` (string) and
        ``defect_id``, any order.
    info : dict
        COCO ``info`` block (version, description).
    """
    coco_ids = {iid: k for k, iid in enumerate(images["image_id"], start=1)}
    imgs = [
        {
            "id": coco_ids[r.image_id],
            "file_name": f"images/{r.image_id}.png",
            "width": int(r.width),
            "height": int(r.height),
            "image_id": r.image_id,
            "split": r.split,
        }
        for r in images.itertuples(index=False)
    ]
    anns = []
    if len(annotations):
        ordered = annotations[annotations["image_id"].isin(coco_ids)].copy()
        ordered["_img"] = ordered["image_id"].map(coco_ids)
        ordered = ordered.sort_values(["_img", "number"])
        keys = ["defect_id", "number", "category_id", "segmentation", "area", "bbox", "iscrowd"]
        for k, rec in enumerate(ordered[keys + ["_img"]].to_dict("records"), start=1):
            img = rec.pop("_img")
            anns.append({"id": k, "image_id": int(img), **rec})
    return {"info": info, "images": imgs, "annotations": anns, "categories": coco_categories()}


def yolo_segments(instance_map: np.ndarray, numbers, class_ids) -> list[str]:
    """YOLO segmentation label lines of one image.

    One line per connected part of each instance: ``<class> x1 y1 x2 y2 ...`` with
    the class index 0-based (class id - 1) and coordinates normalised by width and
    height; parts whose outer contour has fewer than 3 points are dropped.
    """
    h, w = instance_map.shape
    boxes = instance_bboxes(instance_map)
    lines = []
    for n, cid in zip(np.asarray(numbers, int), np.asarray(class_ids, int)):
        if n not in boxes:
            continue
        x, y, bw, bh = boxes[n]
        crop = (instance_map[y : y + bh, x : x + bw] == n).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x, y))
        for c in contours:
            pts = c.reshape(-1, 2).astype(float)
            if len(pts) < 3:
                continue
            pts = (pts + 0.5) / [w, h]
            coords = " ".join(f"{v:.6f}" for v in np.clip(pts, 0, 1).ravel())
            lines.append(f"{cid - 1} {coords}")
    return lines


def yolo_names() -> dict[int, str]:
    """YOLO class index (0-based) -> name."""
    return {c - 1: n for c, n in DEFECT_CLASSES.items()}


def image_label_row(defects: pd.DataFrame, zone_names: dict[int, str], grade: dict) -> dict:
    """Image-level labels of one accepted image (without its geometry).

    Parameters
    ----------
    defects : pandas.DataFrame
        The image's defects with ``type``, ``innermost_zone`` (zone id) and
        ``severity_score``.
    zone_names : dict[int, str]
        Zone id -> name.
    grade : dict
        ``grading.grade_image`` result (``pass_fail``, ``failures``).

    Returns
    -------
    dict
        ``pass_fail``, ``n_failures``, ``n_defects``, ``has_<type>`` and
        ``n_<type>`` per class, ``n_zone_<zone>`` per zone, ``primary_defect``
        (type of the defect with the highest severity score, "none" without
        defects).
    """
    # plain Python on the few rows: pandas' per-call cost was most of this per image
    types = [DEFECT_CLASSES[class_id(t)] for t in defects["type"]] if len(defects) else []
    row = {
        "pass_fail": grade.get("pass_fail"),
        "n_failures": len(grade.get("failures", []) or []),
        "n_defects": len(defects),
    }
    counts = Counter(types)
    for name in DEFECT_CLASSES.values():
        row[f"has_{name}"] = counts[name] > 0
        row[f"n_{name}"] = counts[name]
    zone_counts = Counter(defects["innermost_zone"].tolist()) if len(defects) else Counter()
    for zid, zname in sorted(zone_names.items()):
        if zid:
            row[f"n_zone_{zname}"] = zone_counts[zid]
    if types:
        scores = np.nan_to_num(defects["severity_score"].to_numpy(float), nan=-np.inf)
        row["primary_defect"] = types[int(scores.argmax())]
    else:
        row["primary_defect"] = "none"
    return row


_ARROW_TYPES = {
    "b": pa.bool_(),
    "i": pa.int64(),
    "u": pa.int64(),
    "f": pa.float64(),
}


_INFERRED_TYPES = {
    "integer": pa.int64(),
    "floating": pa.float64(),
    "mixed-integer-float": pa.float64(),
    "boolean": pa.bool_(),
}


def arrow_schema(frame: pd.DataFrame, units: dict[str, str], types: dict[str, pa.DataType] | None = None) -> pa.Schema:
    """Explicit Arrow schema of a table, with units in the field metadata.

    Columns named in ``types`` get that type; the others get int64 / float64 /
    bool / string from their pandas dtype. Every field with a known unit carries
    ``{"unit": ...}`` metadata (``FEATURE_UNITS`` style: "px", "um", "um2", "deg",
    "1" for dimensionless).
    """
    types = types or {}
    fields = []
    for col in frame.columns:
        if col in types:
            typ = types[col]
        elif frame[col].dtype.kind in _ARROW_TYPES:
            typ = _ARROW_TYPES[frame[col].dtype.kind]
        else:  # object columns (e.g. after concatenating empty fragments): by content
            typ = _INFERRED_TYPES.get(pd.api.types.infer_dtype(frame[col], skipna=True), pa.string())
        meta = {"unit": units[col]} if col in units else None
        fields.append(pa.field(col, typ, metadata=meta))
    return pa.schema(fields)


def to_arrow(frame: pd.DataFrame, units: dict[str, str], types: dict[str, pa.DataType] | None = None) -> pa.Table:
    """Arrow table of ``frame`` under :func:`arrow_schema` (no pandas index)."""
    schema = arrow_schema(frame, units, types)
    cols = {}
    for field in schema:
        s = frame[field.name]
        if pa.types.is_string(field.type):
            s = s.astype(object).where(s.notna(), None).map(lambda v: v if v is None else str(v))
        cols[field.name] = pa.array(s.tolist() if pa.types.is_string(field.type) else s, type=field.type, from_pandas=True)
    return pa.table(cols, schema=schema)


def typed_defects(defects: pd.DataFrame, features: pd.DataFrame, types: pd.DataFrame) -> pd.DataFrame:
    """One table per defect: detection columns, every feature, cluster, type, severity.

    Feature columns replace detection columns of the same name (they are the
    documented ones, with units), except ``zone``, which keeps the detector's
    meaning. Defects missing from ``types`` get type "other" and no severity.

    Parameters
    ----------
    defects : pandas.DataFrame
        ``detect_defects`` rows with ``image_id``, ``defect_id``.
    features : pandas.DataFrame
        ``defect_features`` rows with ``defect_id``.
    types : pandas.DataFrame
        ``clustering/defect_types``: ``defect_id``, ``cluster``, ``type``,
        ``severity_score``, ``severity_level``.
    """
    feat = features.drop(columns=["image_id", "number", "zone"], errors="ignore")
    base = defects.drop(columns=[c for c in feat.columns if c != "defect_id"], errors="ignore")
    out = base.merge(feat, on="defect_id", how="left")
    lab = types[["defect_id", "cluster", "type", "severity_score", "severity_level"]]
    out = out.drop(columns=[c for c in lab.columns if c != "defect_id"], errors="ignore")
    out = out.merge(lab, on="defect_id", how="left")
    out["type"] = out["type"].fillna("other").map(lambda t: DEFECT_CLASSES[class_id(t)])
    out["severity_level"] = out["severity_level"].fillna("unknown")
    return out.sort_values(["image_id", "number"], kind="stable").reset_index(drop=True)


def zone_level_rows(zone_features: pd.DataFrame, defects: pd.DataFrame, zone_grades: pd.DataFrame | None) -> pd.DataFrame:
    """Region-level rows: zone features plus the defects of each zone by type.

    One image's tables, or many images' at once when every table has ``image_id``
    (rows are then matched on image and zone; a shard job calls it once).

    Parameters
    ----------
    zone_features : pandas.DataFrame
        ``features.zone_features`` rows (``image_id``, ``zone`` ...).
    defects : pandas.DataFrame
        The typed defects (:func:`typed_defects`); a defect counts in the innermost
        zone it touches, as IEC 61300-3-35 judges it.
    zone_grades : pandas.DataFrame or None
        ``grading.zone_verdicts`` rows (``zone``, ``pass_fail``, ``failures``, and
        ``image_id`` for many images); None when the images are not graded.

    Returns
    -------
    pandas.DataFrame
        ``zone_features`` columns (same rows and order), ``n_defects``, ``n_<type>``
        and ``area_um2_<type>`` per class, ``worst_severity_score``,
        ``worst_severity_level``, ``largest_defect_um`` (largest dimension of the
        zone's largest defect, NaN without defects), ``largest_defect_type``, and
        ``label`` (pass | fail for graded zones, "not_graded" otherwise) with
        ``failures``.
    """
    out = zone_features.reset_index(drop=True)
    zcol = "innermost_zone" if "innermost_zone" in defects.columns else "zone"
    keys = ["image_id"] if "image_id" in out.columns and "image_id" in defects.columns else []
    names = list(DEFECT_CLASSES.values())
    rows = out[keys + ["zone"]].astype({"zone": "int64"})
    if len(defects):
        d = defects[keys + [zcol, "type", "area_um2", "length_um", "width_um", "severity_score", "severity_level"]]
        d = d.rename(columns={zcol: "zone"}).astype({"zone": "int64"})
        d = d.assign(largest_um=np.fmax(d["length_um"].astype(float), d["width_um"].astype(float)))
        by_type = d.groupby(keys + ["zone", "type"])
        counts = by_type.size().unstack(fill_value=0).reindex(columns=names, fill_value=0)
        areas = by_type["area_um2"].sum().unstack(fill_value=0.0).reindex(columns=names, fill_value=0.0)
        scored = d.dropna(subset=["severity_score"])
        worst = scored.loc[scored.groupby(keys + ["zone"])["severity_score"].idxmax(),
                           keys + ["zone", "severity_score", "severity_level"]]
        sized = d.dropna(subset=["largest_um"])
        largest = sized.loc[sized.groupby(keys + ["zone"])["largest_um"].idxmax(),
                            keys + ["zone", "largest_um", "type"]].rename(columns={"type": "largest_type"})
        per_zone = (counts.add_prefix("n_").join(areas.add_prefix("area_um2_")).reset_index()
                    .merge(worst, on=keys + ["zone"], how="left")
                    .merge(largest, on=keys + ["zone"], how="left"))
        stats = rows.merge(per_zone, on=keys + ["zone"], how="left")
    else:
        stats = rows.assign(**{f"n_{t}": 0 for t in names}, **{f"area_um2_{t}": 0.0 for t in names},
                            severity_score=np.nan, severity_level=None, largest_um=np.nan, largest_type=None)
    n_cols = [f"n_{t}" for t in names]
    stats[n_cols] = stats[n_cols].fillna(0).astype(int)
    out["n_defects"] = stats[n_cols].sum(axis=1).to_numpy()
    for t in names:
        out[f"n_{t}"] = stats[f"n_{t}"].to_numpy()
    for t in names:
        out[f"area_um2_{t}"] = stats[f"area_um2_{t}"].fillna(0.0).astype(float).to_numpy()
    out["worst_severity_score"] = stats["severity_score"].astype(float).to_numpy()
    out["worst_severity_level"] = pd.Series(stats["severity_level"].fillna("none").to_numpy(), dtype=object)
    out["largest_defect_um"] = stats["largest_um"].astype(float).to_numpy()
    out["largest_defect_type"] = pd.Series(stats["largest_type"].fillna("none").to_numpy(), dtype=object)
    if zone_grades is not None and len(zone_grades):
        gkeys = [k for k in keys if k in zone_grades.columns] + ["zone"]
        g = rows.merge(zone_grades[gkeys + ["pass_fail", "failures"]].astype({"zone": "int64"}),
                       on=gkeys, how="left")
        out["label"] = g["pass_fail"].fillna("not_graded").to_numpy()
        out["failures"] = g["failures"].fillna("").to_numpy()
    else:
        out["label"] = "not_graded"
        out["failures"] = ""
    return out


_SUFFIX_UNITS = (("_um2", "µm²"), ("_px", "px"), ("_um", "µm"), ("_deg", "deg"), ("_score", "1"))


def column_units(columns, known: dict[str, str]) -> dict[str, str]:
    """Unit of each column: from ``known`` (e.g. ``features.FEATURE_UNITS``), else
    from the name's suffix (``_px``, ``_um``, ``_um2``, ``_deg``; ``um_per_px`` is
    µm/px, ``n_*`` counts are "count"); columns without a unit are left out."""
    units = {}
    for col in columns:
        if col in known and known[col]:
            units[col] = known[col]
        elif col == "um_per_px":
            units[col] = "µm/px"
        elif col.startswith("n_"):
            units[col] = "count"
        elif col.startswith("area_um2_"):
            units[col] = "µm²"
        else:
            unit = next((u for s, u in _SUFFIX_UNITS if col.endswith(s)), None)
            if unit:
                units[col] = unit
    return units


#: The README's loader example (also in the project README; a test runs it).
LOADER_EXAMPLE = '''import numpy as np, pandas as pd, zarr

root = "results/datasets"
labels = pd.read_parquet(f"{root}/image_level/image_labels.parquet")
train = set(labels.loc[labels["split"] == "train", "image_id"])
store = zarr.open_group(f"{root}/pixel_level/dataset.zarr", mode="r")
for _, group in store.groups():  # one group per image size, one image per chunk
    for i, image_id in enumerate(group.attrs["image_ids"]):
        if image_id in train:
            image, zones, defects = (np.asarray(group[k][i]) for k in ("images", "zone_masks", "defect_masks"))
            print(image_id, image.shape, np.unique(zones), np.bincount(defects.ravel(), minlength=6))
'''

_FILES_DOC = """\
| file | what it holds |
|---|---|
| `pixel_level/images/<image_id>.png` | the input as 8-bit gray or RGB, same size as the masks |
| `pixel_level/zone_masks/<image_id>.png` | uint8 gray PNG, pixel = zone id (table below) |
| `pixel_level/defect_masks/<image_id>.png` | uint8 gray PNG, pixel = defect class id (0 none) |
| `pixel_level/instance_masks/<image_id>.png` | uint16 PNG, pixel = defect number in the image; `defect_id = "<image_id>#<number>"` |
| `pixel_level/classes.json` | zone and defect class ids -> name, colour |
| `pixel_level/coco_instances.json` | every defect as a COCO instance: RLE mask, bbox, area, category = defect class id; images carry `image_id` and `split` |
| `pixel_level/dataset.zarr/` | Zarr v3: one group per image size (`h<H>_w<W>`) with arrays `images`, `zone_masks`, `defect_masks`, `instance_masks` (one image per chunk, zstd); group attributes `image_ids` (the image at each position: a new store is in id order, later runs fill freed positions and append), `split` |
| `region_level/zone_features.parquet` (+ `.csv`) | one row per (image, zone): zone geometry, intensity, texture, gradient; defect counts and areas by type (a defect counts in the innermost zone it touches); worst severity; largest defect (size, type); `label` = IEC pass/fail of the zone (`not_graded` for the ferrule) |
| `image_level/images.parquet` (+ `.csv`) | one row per input file: `image_id`, source path, `status` (ok / rejected), `reason`, size, format, checksum, `duplicate_of` (the first id of files with the same bytes), `split` |
| `image_level/image_labels.parquet` (+ `.csv`) | one row per accepted image: geometry, `pass_fail` (IEC 61300-3-35), `failures`, `has_<type>`, `n_<type>`, `n_zone_<zone>`, `primary_defect`, `split` |
| `inputs.sha256` | checksum of every input file (`sha256sum -c` format, paths relative to the input folder) |
| `../defect_library/index.parquet` (+ `.csv`) | one row per defect with every feature, cluster, type, severity and its patch path |
| `../defect_library/patches/<type>/<defect_id>.png` | padded crops (also linked as `<type>/<severity>/<defect_id>.png`) |
| `../defect_library/contact_sheets/<type>.png` | montage of a type's patches, most severe first |
| `../qc/overlays/<image_id>.png`, `../qc/report.html` | QC overlays (zone boundaries, defect outlines by type) and the run report |

Parquet columns carry their unit in the field metadata (`unit`); the CSV files hold
the same rows. The split is deterministic: images are ordered by a hash of their id
within each pass/fail stratum and cut at the configured ratios; files with the same
bytes (`duplicate_of`) share one split.
"""


def readme_text(labels: pd.DataFrame, coco: dict, classes: dict, config: dict, version: str,
                inputs_digest: str, n_inputs: int, n_rejected: int, exports: list[str]) -> str:
    """Markdown of ``datasets/README.md``: files, class ids, counts, config, provenance.

    Parameters
    ----------
    labels : pandas.DataFrame
        Image labels with ``split`` and ``pass_fail``.
    coco : dict
        The COCO document (instances counted per category and split).
    classes : dict
        :func:`classes_document` output.
    config : dict
        The run's configuration (embedded as JSON).
    version : str
        fiberprep version.
    inputs_digest : str
        sha256 of ``inputs.sha256``.
    n_inputs, n_rejected : int
        Input files and rejected ones.
    exports : list of str
        Extra export folders written (``yolo_seg``, ``by_label``).
    """
    lines = ["# fiberprep dataset", "",
             f"Written by fiberprep {version} from {n_inputs} input files ({n_rejected} rejected, see "
             "`image_level/images.parquet`). Input checksums: `inputs.sha256` "
             f"(sha256 of that list: `{inputs_digest}`).", "", "## Files", "", _FILES_DOC]
    if exports:
        lines += ["Extra exports: " + ", ".join(f"`{e}/`" for e in exports) + ".", ""]
    lines += ["## Class ids", "", "| mask | id | name | colour |", "|---|---|---|---|"]
    for kind in ("zones", "defects"):
        lines += [f"| {kind} | {k} | {v['name']} | `{v['colour']}` |" for k, v in classes[kind].items()]
    splits = [s for s in SPLITS if s in set(labels.get("split", []))]
    lines += ["", "## Counts per split", "", "| | " + " | ".join(splits) + " | total |",
              "|---|" + "---|" * (len(splits) + 1)]

    def row(name, counts):
        return f"| {name} | " + " | ".join(str(int(counts.get(s, 0))) for s in splits) + f" | {int(sum(counts.values()))} |"

    lines.append(row("images", labels["split"].value_counts().to_dict() if len(labels) else {}))
    for pf in sorted(set(labels.get("pass_fail", []))):
        lines.append(row(f"images {pf}", labels.loc[labels["pass_fail"] == pf, "split"].value_counts().to_dict()))
    img_split = {im["id"]: im["split"] for im in coco["images"]}
    ann = pd.DataFrame([(a["category_id"], img_split[a["image_id"]]) for a in coco["annotations"]], columns=["cat", "split"])
    for cat in coco["categories"]:
        sel = ann[ann["cat"] == cat["id"]]
        lines.append(row(f"{cat['name']} instances (class {cat['id']})", sel["split"].value_counts().to_dict()))
    lines += ["", "## Loading (train split)", "", "```python", LOADER_EXAMPLE.rstrip(), "```", "",
              "## Configuration of this run", "", "```json",
              json.dumps(config, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)
