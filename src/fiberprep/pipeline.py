"""Per-image stages run by the shard jobs: load -> zones -> defects -> features.

The ``zones``, ``defects`` and ``features`` jobs of a shard each call :func:`run_shard`
with their stage function (:func:`zones_image`, :func:`defects_image`,
:func:`features_image`) and the shard's images. A stage function handles one image: it
checks the per-image cache (:mod:`fiberprep.cache`), computes what is missing with the
pure stage functions (:func:`measure_zones`, :func:`find_defects`,
:func:`measure_features`), writes the per-image intermediates and returns the image's
record (and table rows). :func:`run_chain` runs the three jobs' work of one shard in one
process (tests, benchmarks).
A bad image never stops the shard: ``io.ImageRejected`` from any stage becomes
``status = rejected`` with its reason, and any other exception becomes ``rejected`` with
reason ``internal error: ...`` and its traceback in the job's log. Images are processed
by a pool of ``threads`` forked processes (OpenCV/NumPy work does not share a GIL across
processes, so a 16-core job keeps 16 cores busy).

Every job of the workflow imports this module (most only for its table helpers), so
the analysis modules (SciPy, scikit-image) are imported only where they are used.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import logging
import multiprocessing
import os
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fiberprep import cache, datasets
from fiberprep import io as fio

log = logging.getLogger("fiberprep")
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"

#: Columns of a zones shard table before the geometry keys (``zones.measure_geometry``).
IMAGE_COLUMNS = [
    "image_id",
    "source_path",
    "rel_path",
    "status",
    "reason",
    "checksum",
    "size_bytes",
    "width",
    "height",
    "format",
]

#: Files of the per-image arrays in an image's cache folder (``cache.write_array``).
ARRAY_FILES = {"zone_map": "zone_map.npy.zst", "instance_map": "instance_map.npy.zst"}

#: The decoded 8-bit display image, kept by the zones stage in an image's cache folder
#: as its ``dataset.zarr`` chunk (``datasets.zarr_chunk`` at ``DISPLAY_LEVEL``), so the
#: later stages read it instead of decoding the input again and the dataset step does
#: not encode it again (with ``datasets.zarr_zstd_level`` equal to ``DISPLAY_LEVEL``).
DISPLAY_CHUNK = f"{datasets.ZARR_CHUNK_DIR}/images.zst"
DISPLAY_LEVEL = 1

#: Modules each per-image stage imports (its own and the libraries it imports where it
#: uses them), imported by :func:`run_shard` before its workers fork (so no worker imports
#: them again, and a job imports only its stage's: SciPy's optimize alone costs ~0.2 s).
#: Without a pool the stage functions import them on first use, so a job whose images
#: are all cached imports none (0.2-0.3 s CPU per zones, defects or features job).
STAGE_MODULES = {
    "zones": ("fiberprep.zones", "scipy.ndimage", "scipy.optimize"),
    "defects": ("fiberprep.defects",),
    "features": ("fiberprep.features", "scipy.ndimage", "skimage.feature.texture"),
    "dataset_files": ("fiberprep.grading", "fiberprep.library", "fiberprep.report"),
}


def __getattr__(name: str) -> list[str]:
    """``DEFECT_TABLE_COLUMNS`` (columns of the defects shard tables) and
    ``FEATURE_TABLE_COLUMNS`` (those + defect features), computed on first use: they
    come from :mod:`fiberprep.defects` and :mod:`fiberprep.features`, which most jobs
    importing this module never need."""
    if name == "DEFECT_TABLE_COLUMNS":
        from fiberprep import defects

        return ["image_id", "defect_id", *defects.COLUMNS]
    if name == "FEATURE_TABLE_COLUMNS":
        from fiberprep import features

        return [*__getattr__("DEFECT_TABLE_COLUMNS"), *features.DEFECT_FEATURE_NAMES]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fiber_type_names(fiber: dict) -> list[str]:
    """Fiber types an image may be, from the config's ``fiber`` section: the set type,
    or with ``type: auto`` the candidates ``auto_types`` (the first is the fallback)."""
    return list(fiber["auto_types"]) if fiber["type"] == "auto" else [fiber["type"]]


def stage_params(config: dict) -> dict[str, dict]:
    """Parameters of each per-image stage, from the whole config: everything the
    stage's cache key must cover (its config sections and its code version).

    Returns
    -------
    dict
        ``{"zones": ..., "defects": ..., "features": ...}``: the ``params`` argument of
        :func:`zones_image`, :func:`defects_image` and :func:`features_image` (and the
        whole dict that of :func:`run_chain`).
    """
    types = {n: config["fiber_types"][n] for n in fiber_type_names(config["fiber"])}
    return {
        "zones": {
            "code": cache.code_version("pipeline", "cache", "io", "stats", "zones"),
            "io": config["io"],
            "fiber_types": types,
            "um_per_px": config["calibration"]["um_per_px"],
            "folder_type": config["fiber"].get("folder_type"),
            "zones": config["zones"],
        },
        "defects": {
            "code": cache.code_version("stats", "defects"),
            "io": config["io"],
            "defects": config["detection"],
        },
        "features": {
            "code": cache.code_version("stats", "features"),
            "io": config["io"],
            "zones_um": {n: t["zones_um"] for n, t in types.items()},
            "features": config.get("features", {}),
        },
    }


def log_to(path: str | os.PathLike) -> None:
    """Send this process's stderr (Python and C level) and logging to a log file.

    Every job script calls it first, after its imports, so library warnings, tracebacks
    and the output of pool workers all land in the job's ``log:`` file. It also freezes
    the objects those imports created (``gc.freeze``): the garbage collector then never
    scans them again, which spares each job ~0.1-0.15 s CPU of collections when the
    interpreter shuts down with pandas and SciPy loaded. And it keeps freed memory in
    the process for the next image (:func:`keep_freed_memory`).
    """
    stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (lives with the process)
    os.dup2(stream.fileno(), 2)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format=LOG_FORMAT, force=True)
    gc.freeze()
    keep_freed_memory()
    one_math_thread()


def one_math_thread() -> None:
    """Limit BLAS and OpenMP to one thread in this process (threadpoolctl).

    The parallelism is the shard jobs and their pools. OpenBLAS's own threads only
    spin-wait on the small least-squares fits of the zones and features: with them, one
    shard of 128 images through zones, defects and features took 25.0 CPU s with one
    worker, and two workers ran it only 1.13x faster; with one thread, 17.9 CPU s and
    2.01x. Pool workers fork with the limit; forkserver ones set it themselves.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


#: glibc ``mallopt`` settings (parameter number: value) of :func:`keep_freed_memory`:
#: M_MMAP_THRESHOLD 32 MiB (glibc's own dynamic ceiling), M_TRIM_THRESHOLD 256 MiB,
#: M_TOP_PAD 16 MiB.
MALLOC_SETTINGS = {-3: 32 * 2**20, -1: 256 * 2**20, -2: 16 * 2**20}


def keep_freed_memory() -> bool:
    """Let glibc's allocator reuse freed memory instead of returning it to the system.

    By default glibc maps each array above a few hundred kB afresh and unmaps it when
    freed, and trims the heap whenever 128 kB lie free at its top, so every image's
    temporaries fault in new zeroed pages again: 6 000 page faults and ~13 ms of system
    time per 480x360 image, ~35 ms per 1152x864 photo (10-15 % of the per-image work).
    With these settings the pages stay in the process (``bench_scale`` measures its
    reference with them too); the peak memory does not grow (334 MB either way on the
    1152x864 photos). Pool workers fork with them. Returns False where there is no
    glibc ``mallopt`` (nothing changed).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in MALLOC_SETTINGS.items())


def _rejection(image_id: str, stage: str, err: BaseException, key: str) -> tuple[str, str | None]:
    """Reason for a failed stage and the record's cache key: ``key`` for a rejection
    (the same input gives the same verdict), ``None`` after an internal error (logged
    with its traceback, and retried on the next run)."""
    if isinstance(err, fio.ImageRejected):
        return err.reason, key
    log.error(
        "%s: %s stage failed\n%s",
        image_id,
        stage,
        "".join(traceback.format_exception(err)),
    )
    return f"internal error: {type(err).__name__}: {err}", None


def measure_zones(gray: np.ndarray, params: dict) -> tuple[dict, np.ndarray]:
    """Geometry and IEC zone map of one decoded image (pure; the zones stage).

    ``params`` as the ``zones`` entry of :func:`stage_params`. Raises
    ``io.ImageRejected`` when no fiber (or no confident fit) is found.
    """
    from fiberprep import zones

    geometry = zones.measure_geometry(gray, params["fiber_types"], params["zones"], params["um_per_px"])
    return geometry, _zone_map(gray, geometry, params)


def _zone_map(gray: np.ndarray, geometry: dict, params: dict) -> np.ndarray:
    """IEC zone map of one decoded image with its geometry (its fiber type's zones)."""
    from fiberprep import zones

    return zones.zone_label_map(
        gray.shape,
        geometry,
        params["fiber_types"][geometry["fiber_type"]]["zones_um"],
        geometry["um_per_px"],
        ferrule=params["zones"]["analyse_ferrule"],
        field=zones.field_of_view(gray, params["zones"], geometry),
    )


def find_defects(
    gray: np.ndarray, zone_map: np.ndarray, geometry: dict, params: dict, image_id: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """Instance map and defect table (``image_id``, ``defect_id`` first) of one image
    (pure; the defects stage). ``params`` as the ``defects`` entry of :func:`stage_params`."""
    from fiberprep import defects

    instance_map, table = defects.detect_defects(gray, zone_map, geometry, params["defects"])
    return instance_map, _with_ids(table, image_id)


def measure_features(
    gray: np.ndarray,
    zone_map: np.ndarray,
    instance_map: np.ndarray,
    defect_rows: pd.DataFrame,
    geometry: dict,
    params: dict,
    image_id: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-defect table (``defect_rows`` joined with every defect feature) and per-zone
    table (``image_id`` first) of one image (pure; the features stage). ``params`` as
    the ``features`` entry of :func:`stage_params`."""
    from fiberprep import features

    measured = features.defect_features(gray, instance_map, zone_map, defect_rows, geometry)
    if len(defect_rows) and defect_rows["number"].is_unique:
        # one measured row per number, in the same order: the left join is a side-by-side
        # concatenation (~2.5x faster than pandas' merge)
        extra = measured.drop(columns=[c for c in measured if c in defect_rows])
        defect_table = pd.concat([defect_rows.reset_index(drop=True), extra], axis=1)
    else:
        defect_table = defect_rows.merge(
            measured.drop(columns=[c for c in measured if c in defect_rows and c != "number"]),
            on="number",
            how="left",
        )
    zone_table = features.zone_features(gray, zone_map, geometry, params["zones_um"][geometry["fiber_type"]])
    zone_table.insert(0, "image_id", image_id)
    return defect_table, zone_table


def cached_display(zones_record: dict, root: str) -> np.ndarray | None:
    """The display image the zones stage kept (:data:`DISPLAY_CHUNK`), or None when
    it is missing or unreadable (then the input is decoded again)."""
    h, w = zones_record.get("height"), zones_record.get("width")
    try:
        data = datasets.zarr_chunk_array(
            (cache.image_dir(root, zones_record["image_id"]) / DISPLAY_CHUNK).read_bytes(), np.uint8, (-1,))
        return data.reshape((h, w) if data.size == h * w else (h, w, 3))
    except (OSError, ValueError, RuntimeError, TypeError):
        return None


def load_display(zones_record: dict, root: str, io_params: dict) -> tuple[np.ndarray, dict, bool]:
    """The display image of an accepted image and its load info (``io.load_image``):
    the zones stage's copy and its record when there are both, else the input decoded
    again. The flag tells which (True: the copy, whose bytes are the images chunk)."""
    display = cached_display(zones_record, root) if "bit_depth" in zones_record else None
    if display is not None:
        return display, zones_record, True
    _, display, info = _decode_again(zones_record, io_params)
    return display, info, False


def _decode_again(zones_record: dict, io_params: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """``io.load_image`` of the image's input, for a later stage without the kept copy."""
    return fio.load_image(zones_record["source_path"], io_params["max_pixels"], io_params["min_side_px"])


def _load_gray(zones_record: dict, root: str, params: dict) -> np.ndarray:
    """The analysis image of an accepted image for a later stage: from the zones stage's
    display copy when the input is 8-bit (the gray image is then exactly
    ``io.to_gray`` of it), else the input decoded again. Reading the copy takes 0.3 ms
    for a 480x360 PNG input (decoding it 1.2-1.6 ms) and ~1 ms for a 1152x864 JPEG
    photo (decoding it 3-9 ms)."""
    if zones_record.get("bit_depth") == 8:
        display = cached_display(zones_record, root)
        if display is not None:
            return fio.to_gray(display)
    return _decode_again(zones_record, params["io"])[0]


def zones_image(image: dict, params: dict, root: str) -> dict:
    """Zones stage of one image: load, measure geometry, label the IEC zones.

    Parameters
    ----------
    image : dict
        Manifest row: ``image_id, rel_path, source_path, size_bytes, mtime_ns``.
    params : dict
        ``io`` (``max_pixels``, ``min_side_px``), ``fiber_types`` (catalog entries
        of the types an image may be, :func:`fiber_type_names`),
        ``um_per_px`` (configured scale or ``None``) and ``zones`` (zone finder).
    root : str
        ``<results_dir>/intermediate``.

    Returns
    -------
    dict
        The image's zones record: manifest fields, ``checksum``, ``status``, ``reason``,
        ``key``, image info (``width, height, format, ...``) and ``geometry``. Writes
        ``zone_map.npy.zst`` and :data:`DISPLAY_CHUNK` (when ok) and ``zones.json``.
    """
    folder = cache.image_dir(root, image["image_id"])
    record = {k: image[k] for k in ("image_id", "rel_path", "source_path", "size_bytes")}
    try:
        record["checksum"] = fio.file_checksum(image["source_path"])
    except fio.ImageRejected as err:  # missing, unreadable, link loop, pipe
        return {**record, "checksum": "", "status": "rejected", "key": None,
                "reason": err.reason, "geometry": {}}
    key = cache.stage_key("zones", record["checksum"], params)
    cached = cache.read_record(folder / "zones.json")
    # a record that took its folder's type keeps its measurement's key under "measured"
    if cached is not None and cached.get("measured", cached).get("key") == key:
        return cached
    start = time.perf_counter()
    try:
        gray, display, info = fio.load_image(
            image["source_path"], params["io"]["max_pixels"], params["io"]["min_side_px"]
        )
        geometry, zone_map = measure_zones(gray, params)
        cache.write_array(folder / ARRAY_FILES["zone_map"], zone_map)
        fio.write_bytes(folder / DISPLAY_CHUNK, datasets.zarr_chunk(display, DISPLAY_LEVEL))
        record.update(info, status="ok", reason="", key=key, geometry=geometry)
    except Exception as err:  # noqa: BLE001 (one image never stops the shard)
        reason, key = _rejection(image["image_id"], "zones", err, key)
        record.update(status="rejected", reason=reason, key=key, geometry={})
    record["seconds"] = round(time.perf_counter() - start, 4)
    cache.write_record(folder / "zones.json", record)
    return record


def zones_shard(images: list, params: dict, root: str, threads: int = 1) -> list[dict]:
    """The zones job of one shard: :func:`zones_image` for each image, then the
    images with no core in view take their folder's fiber type (:func:`settle_fiber_types`).

    Returns
    -------
    list of dict
        The final zones records of ``images``, in order.
    """
    records = run_shard(zones_image, images, params, root, threads)
    return settle_fiber_types(records, params, root, threads)


def settle_fiber_types(records: list[dict], params: dict, root: str, threads: int = 1) -> list[dict]:
    """Give each accepted image with no core in view (type source ``"default"``) the
    type its folder's images name (``zones.folder_fiber_types`` over the shard's
    images of each folder, by their measured types; ``params["folder_type"]``:
    ``min_images``, ``min_share``, or ``None``: never).

    The zone map and ``zones.json`` of an image whose type changes (or changes back)
    are written again, from the measured geometry (``zones.assume_fiber_type``); its
    key then chains the type, so its later stages run again. The measurement stays
    in the record (``measured``: key and geometry), so that it is never repeated.
    Shards are large random samples of the folder (half of ``min_images_per_shard``
    images or more on average), so a shard's images of a folder name the folder's type.
    """
    from pathlib import PurePosixPath

    from fiberprep import zones

    setting = params.get("folder_type")
    ok = [r for r in records if r["status"] == "ok"]
    if not ok or not setting or len(params["fiber_types"]) < 2:
        return records
    measured = [r.get("measured", r)["geometry"] for r in ok]
    folders = [PurePosixPath(r["rel_path"]).parent.as_posix() for r in ok]
    table = pd.DataFrame({"folder": folders, "fiber_type": [g["fiber_type"] for g in measured],
                          "fiber_type_source": [g["fiber_type_source"] for g in measured]})
    named = zones.folder_fiber_types(table, setting["min_images"], setting["min_share"])
    todo = []
    for record, geometry, folder in zip(ok, measured, folders):
        target = named.get(folder) if geometry["fiber_type_source"] == "default" else None
        target = None if target == geometry["fiber_type"] else target
        current = record["geometry"]["fiber_type"] if "measured" in record else None
        if target != current:
            todo.append((record, target))
    if not todo:
        return records
    settled = {r["image_id"]: r for r in run_shard(_settle_image, todo, params, root, threads)}
    return [settled.get(r["image_id"], r) for r in records]


def _settle_image(item: tuple[dict, str | None], params: dict, root: str) -> dict:
    """One image of :func:`settle_fiber_types`: its record and zone map as fiber type
    ``target`` (``None``: as measured), written."""
    from fiberprep import zones

    record, target = item
    measured = record.get("measured", record)
    settled = {k: v for k, v in record.items() if k != "measured"}
    settled.update(key=measured["key"], geometry=measured["geometry"])
    if target is not None:
        geometry = zones.assume_fiber_type(measured["geometry"], target, params["fiber_types"][target])
        settled.update(key=cache.stage_key("zones", measured["key"], {"fiber_type": target}),
                       geometry=geometry, measured={"key": measured["key"], "geometry": measured["geometry"]})
    folder = cache.image_dir(root, record["image_id"])
    gray = _load_gray(settled, root, params)
    cache.write_array(folder / ARRAY_FILES["zone_map"], _zone_map(gray, settled["geometry"], params))
    cache.write_record(folder / "zones.json", settled)
    return settled


def defects_image(zones_record: dict, params: dict, root: str) -> tuple[dict, pd.DataFrame]:
    """Defects stage of one accepted image: DO2MR/LEI detection into instances.

    Parameters
    ----------
    zones_record : dict
        The image's zones record (status ok).
    params : dict
        ``io`` (for decoding) and ``defects`` (detector parameters).
    root : str
        ``<results_dir>/intermediate``.

    Returns
    -------
    record : dict
        ``image_id, status, reason, key, n_defects``; written as ``defects.json``.
    table : pandas.DataFrame
        ``detect_defects`` rows with ``image_id`` and ``defect_id`` first; written as
        ``defects.pkl`` next to ``instance_map.npy.zst``.
    """
    image_id = zones_record["image_id"]
    folder = cache.image_dir(root, image_id)
    key = cache.stage_key("defects", zones_record["key"], params)
    cached = cache.read_record(folder / "defects.json")
    if cached is not None and cached.get("key") == key:
        return cached, cache.read_table(folder / "defects.pkl")
    start = time.perf_counter()
    record = {"image_id": image_id}
    try:
        instance_map, table = find_defects(
            _load_gray(zones_record, root, params),
            cache.read_array(folder / ARRAY_FILES["zone_map"]),
            zones_record["geometry"],
            params,
            image_id,
        )
        cache.write_array(folder / ARRAY_FILES["instance_map"], instance_map)
        cache.write_table(folder / "defects.pkl", table)
        record.update(status="ok", reason="", key=key, n_defects=len(table))
    except Exception as err:  # noqa: BLE001
        reason, key = _rejection(image_id, "defects", err, key)
        record.update(status="rejected", reason=reason, key=key, n_defects=0)
        table = pd.DataFrame()
    record["seconds"] = round(time.perf_counter() - start, 4)
    cache.write_record(folder / "defects.json", record)
    return record, table


def features_image(
    zones_record: dict, params: dict, root: str
) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Features stage of one accepted image: per-defect and per-zone features.

    Parameters
    ----------
    zones_record : dict
        The image's zones record (status ok).
    params : dict
        ``io`` (for decoding), ``zones_um`` (zone diameters by fiber type) and
        ``features`` (feature parameters).
    root : str
        ``<results_dir>/intermediate``.

    Returns
    -------
    record : dict
        ``image_id, status, reason, key, n_defects``; written as ``features.json``.
        ``rejected`` when the defects stage rejected the image.
    defect_table : pandas.DataFrame
        One row per defect: the ``defects.pkl`` columns (``image_id, defect_id,
        number`` first, then the detector's measurements) followed by every
        ``features.defect_features`` column; written as ``features.pkl``. This is
        the table clustering, the library and the datasets read.
    zone_table : pandas.DataFrame
        ``features.zone_features`` rows with ``image_id`` first; written as
        ``zone_features.pkl``.
    """
    image_id = zones_record["image_id"]
    folder = cache.image_dir(root, image_id)
    upstream = cache.read_record(folder / "defects.json") or {}
    if upstream.get("status") != "ok":
        reason = upstream.get("reason", "internal error: defects stage left no record")
        return {"image_id": image_id, "status": "rejected", "reason": reason,
                "key": None, "n_defects": 0}, pd.DataFrame(), pd.DataFrame()
    key = cache.stage_key("features", upstream["key"], params)
    cached = cache.read_record(folder / "features.json")
    if cached is not None and cached.get("key") == key:
        return (cached, cache.read_table(folder / "features.pkl"),
                cache.read_table(folder / "zone_features.pkl"))
    start = time.perf_counter()
    record = {"image_id": image_id}
    try:
        defect_table, zone_table = measure_features(
            _load_gray(zones_record, root, params),
            cache.read_array(folder / ARRAY_FILES["zone_map"]),
            cache.read_array(folder / ARRAY_FILES["instance_map"]),
            cache.read_table(folder / "defects.pkl"),
            zones_record["geometry"],
            params,
            image_id,
        )
        cache.write_table(folder / "features.pkl", defect_table)
        cache.write_table(folder / "zone_features.pkl", zone_table)
        record.update(status="ok", reason="", key=key, n_defects=len(defect_table))
    except Exception as err:  # noqa: BLE001
        reason, key = _rejection(image_id, "features", err, key)
        record.update(status="rejected", reason=reason, key=key, n_defects=0)
        defect_table, zone_table = pd.DataFrame(), pd.DataFrame()
    record["seconds"] = round(time.perf_counter() - start, 4)
    cache.write_record(folder / "features.json", record)
    return record, defect_table, zone_table


def run_chain(images: list, params: dict, root: str, threads: int = 1) -> tuple[list, list, list]:
    """One shard's zones, defects and features jobs in this process, in order, as the
    workflow runs them (each stage over all images, then the next): tests, benchmarks.

    Returns
    -------
    tuple
        The zones records of ``images``, then the :func:`defects_image` and
        :func:`features_image` results of the images the zones stage accepted.
    """
    zones_records = zones_shard(images, params["zones"], root, threads)
    accepted = [r for r in zones_records if r["status"] == "ok"]
    found = run_shard(defects_image, accepted, params["defects"], root, threads)
    measured = run_shard(features_image, accepted, params["features"], root, threads)
    return zones_records, found, measured


def label_defects(features: pd.DataFrame, model: dict, review: dict | None, severity: dict) -> pd.DataFrame:
    """Cluster (nearest centroid of the saved model), defect type (cluster + review
    mapping) and severity of every defect of a feature table (pure).

    Returns
    -------
    pandas.DataFrame
        ``defect_id, image_id, number, cluster, type`` and the ``grading.severity``
        columns, sorted by ``image_id, number``: one shard's part of
        ``clustering/defect_types.parquet``.
    """
    from fiberprep import clustering, grading

    # A shard without defects stores untyped (float) key columns; the merge needs strings.
    table = features.reindex(columns=["defect_id", "image_id", "number"]).astype(
        {"defect_id": str, "image_id": str, "number": "int64"}
    )
    table["cluster"] = clustering.assign_clusters(model, features).astype("int64")
    table["type"] = clustering.apply_review(table["cluster"], model, review)
    # the feature table holds every detector column (sizes, zones) the severity needs
    table = table.join(grading.severity(features.assign(type=table["type"]), severity))
    return table.sort_values(["image_id", "number"], ignore_index=True)


def dataset_image(
    display: np.ndarray,
    zone_map: np.ndarray,
    instance_map: np.ndarray,
    defects: pd.DataFrame,
    params: dict,
    source_png: bytes | None = None,
    encoded: tuple[str, ...] = (),
) -> dict:
    """The per-image dataset files of one accepted image, encoded (pure).

    Parameters
    ----------
    display : numpy.ndarray
        The 8-bit display image (``io.load_image``).
    zone_map, instance_map : numpy.ndarray
        The image's zone map and instance map.
    defects : pandas.DataFrame
        The image's typed defects: ``number``, ``type`` and ``bbox_x, bbox_y, bbox_w,
        bbox_h`` (one patch per row, in row order).
    params : dict
        ``png`` (zlib level), ``margin`` (patch margin, px), ``zarr`` (Zstandard level
        of the ``dataset.zarr`` chunks, ``None``: no chunks) and ``yolo`` (bool).
    source_png : bytes, optional
        The input file when it already is the display PNG (written as it is).
    encoded : tuple of str, optional
        Zarr arrays whose chunk is on disk already (e.g. ``images``, kept by the zones
        stage as :data:`DISPLAY_CHUNK`): not encoded again.

    Returns
    -------
    dict
        PNG bytes ``image``, ``zone_mask``, ``defect_mask`` (8-bit gray ids),
        ``instance_mask`` (uint16), ``overlay`` (QC); ``patches`` (PNG bytes per row
        of ``defects``), ``chunks`` (``{array: bytes}``, ``datasets.zarr_chunk``; not those ``encoded``),
        ``coco`` (``datasets.coco_annotations``) and ``yolo`` (segment lines).
    """
    from fiberprep import library, report

    inst = instance_map.astype(np.uint16, copy=False)
    numbers, types = defects["number"].to_numpy(int), defects["type"].tolist()
    lut = datasets.class_lut(numbers, types, int(inst.max(initial=0)))
    cats = lut[numbers] if len(numbers) else []
    class_mask = datasets.apply_class_lut(inst, lut)
    level = params["png"]
    arrays = {"images": display, "zone_masks": zone_map, "defect_masks": class_mask,
              "instance_masks": inst}
    return {
        "image": source_png if source_png is not None else datasets.encode_png(display, level),
        "zone_mask": datasets.encode_png(zone_map.astype(np.uint8, copy=False), level, flat=True),
        "defect_mask": datasets.encode_png(class_mask.astype(np.uint8, copy=False), level, flat=True),
        "instance_mask": datasets.encode_png(inst, level, flat=True),
        "overlay": report.overlay_png(display, zone_map, inst, lut, level),
        "patches": [
            datasets.encode_png(library.extract_patch(display, box, params["margin"]), level)
            for box in defects[["bbox_x", "bbox_y", "bbox_w", "bbox_h"]].to_numpy()
        ],
        "chunks": {
            a: datasets.zarr_chunk(np.asarray(arrays[a], dtype), params["zarr"])
            for a, dtype in datasets.ZARR_ARRAYS.items() if a not in encoded
        } if params["zarr"] is not None else {},
        "coco": datasets.coco_annotations(inst, numbers, cats),
        "yolo": datasets.yolo_segments(inst, numbers, cats) if params["yolo"] else [],
    }


def dataset_files_image(item: tuple[dict, pd.DataFrame], params: dict, root: str) -> dict:
    """Dataset stage of one accepted image: its IEC grade and label row, and its
    pixel-level files, overlay, patches and ``dataset.zarr`` chunks written again only
    when its label key (the defects stage key, the defects' numbers, types and
    severities, the rendering parameters and code) differs from the one in
    ``datasets.json`` or a file is missing: an incremental run rewrites only what changed.

    Parameters
    ----------
    item : tuple
        The image's row of the shard's images table (``image_id``, ``source_path``,
        ``fiber_type``, geometry) and its typed defects (``datasets.typed_defects``).
    params : dict
        ``graded`` (bool), ``criteria`` ({fiber type: criteria entry}),
        ``geometry_columns``, ``label`` (what the label key covers besides the
        defects: ``png``, ``margin``, ``zarr``, ``code``), ``render``
        (:func:`dataset_image`'s params), ``io`` and the output folders ``datasets_dir``,
        ``library_dir`` and ``qc_dir``.
    root : str
        ``<results_dir>/intermediate``.

    Returns
    -------
    dict
        ``label`` (the image-level row), ``zone_grade`` (``grading.zone_verdicts``
        rows with ``image_id``, or ``None`` when not graded), ``coco`` and ``yolo`` (annotations,
        kept in the record so an unchanged image is not read), ``files`` (every path)
        and ``key``, ``written`` (bool).
    """
    from pathlib import Path

    from fiberprep import grading, library, zones

    img, d = item
    iid = img["image_id"]
    folder = cache.image_dir(root, iid)
    zone_grade = None
    if params["graded"]:
        criteria = params["criteria"][img["fiber_type"]]  # the criteria of the image's fiber type
        zone_grade = grading.zone_verdicts(d, criteria)
        grade = grading.grade_image(d, criteria, zone_grade)
        for row in zone_grade:
            row["image_id"] = iid
    else:
        grade = {"pass_fail": "not_graded", "failures": []}
    label = {"image_id": iid, **{c: img[c] for c in params["geometry_columns"]},
             **datasets.image_label_row(d, zones.ZONE_NAMES, grade), "failures": "; ".join(grade["failures"])}

    out_ds, out_lib = Path(params["datasets_dir"]), Path(params["library_dir"])
    # the defects' columns as lists, each read once (iterating a column of a small
    # frame costs more than the work per defect here)
    numbers, ids, types, levels = (d[c].tolist() for c in ("number", "defect_id", "type", "severity_level"))
    patch_paths = [out_lib / library.patch_relpath(t, i) for i, t in zip(ids, types)]
    # each patch also under its severity (a hard link), for browsing
    patch_links = [out_lib / library.patch_relpath(t, i, s) for i, t, s in zip(ids, types, levels)]
    targets = {
        "image": out_ds / "pixel_level" / "images" / f"{iid}.png",
        "zone_mask": out_ds / "pixel_level" / "zone_masks" / f"{iid}.png",
        "defect_mask": out_ds / "pixel_level" / "defect_masks" / f"{iid}.png",
        "instance_mask": out_ds / "pixel_level" / "instance_masks" / f"{iid}.png",
        "overlay": Path(params["qc_dir"]) / "overlays" / f"{iid}.png",
    }
    chunks = ({a: folder / datasets.ZARR_CHUNK_DIR / f"{a}.zst" for a in datasets.ZARR_ARRAYS}
              if params["render"]["zarr"] is not None else {})
    files = [*targets.values(), *patch_paths, *patch_links, *chunks.values()]
    paths = [str(p) for p in files]
    # the defects stage key chains the input checksum, the zones key and both stages'
    # parameters and code: it identifies the zone and instance maps without hashing them
    upstream = cache.read_record(folder / "defects.json") or {}
    labelled = [[int(n), str(t), str(s)] for n, t, s in zip(numbers, types, levels)]
    key = datasets.content_key(upstream.get("key"), labelled, params["label"], params["render"]["yolo"])
    record = cache.read_record(folder / "datasets.json") or {}
    written = record.get("key") != key or not all(p.exists() for p in files)
    if written:
        start = time.perf_counter()
        # the display image the zones stage kept (its bytes are the images chunk)
        zones_record = cache.read_record(folder / "zones.json") or {"image_id": iid, "source_path": img["source_path"]}
        display, info, kept = load_display(zones_record, root, params["io"])
        # an input that already is the 8-bit PNG we would write is copied as it is
        source = Path(img["source_path"]).read_bytes() if datasets.is_display_png(info, display) else None
        maps = [cache.read_array(folder / ARRAY_FILES[m]) for m in ("zone_map", "instance_map")]
        encoded = ("images",) if kept and params["render"]["zarr"] == DISPLAY_LEVEL else ()
        out = dataset_image(display, *maps, d, params["render"], source, encoded)
        for name, path in targets.items():
            fio.write_bytes(path, out[name])
        for path, link, data in zip(patch_paths, patch_links, out["patches"]):
            fio.write_bytes(path, data)
            fio.link_or_copy(path, link)
        # the arrays as dataset.zarr chunks: dataset_zarr links these files into the store
        for a, path in chunks.items():
            if a not in encoded:
                fio.write_bytes(path, out["chunks"][a])
        record = {"key": key, "files": paths, "coco": out["coco"], "yolo": out["yolo"],
                  "seconds": round(time.perf_counter() - start, 4)}
        cache.write_record(folder / "datasets.json", record)
    return {"label": label, "zone_grade": zone_grade, "coco": record["coco"], "yolo": record["yolo"],
            "files": paths, "key": key, "written": written}


def _with_ids(table: pd.DataFrame, image_id: str) -> pd.DataFrame:
    """Prefix a per-defect table (keyed by ``number``) with image_id and defect_id."""
    table = table.drop(columns=["image_id", "defect_id"], errors="ignore")
    ids = [f"{image_id}#{int(n)}" for n in table["number"]] if len(table) else []
    return pd.concat(
        [pd.DataFrame({"image_id": [image_id] * len(table), "defect_id": ids},
                      index=table.index), table],
        axis=1,
    ).reset_index(drop=True)


def _init_worker() -> None:
    """Pool worker set-up: log lines to stderr (the job's log, fd 2, inherited) like the
    parent, and one OpenCV thread per process (the pool is the parallelism)."""
    import cv2

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format=LOG_FORMAT)
    cv2.setNumThreads(1)
    keep_freed_memory()  # forked workers have it already; forkserver ones do not
    one_math_thread()


def run_shard(stage_func, items: list, params: dict, root: str, threads: int) -> list:
    """Run a per-image function over a shard's images, in a pool of ``threads`` processes.

    Parameters
    ----------
    stage_func : callable
        ``f(item, params, root)``: :func:`zones_image`, :func:`defects_image` or
        :func:`features_image`.
    items : list
        Manifest rows (or records), sorted by image id.
    params : dict
        Passed to every call.
    root : str
        ``<results_dir>/intermediate``.
    threads : int
        Worker processes; 1 (or a single image) runs in this process.

    Returns
    -------
    list
        The function's results, in the order of ``items``.
    """
    workers = max(1, min(int(threads), len(items)))
    if workers == 1:  # in this process; OpenCV's own threads stay within the job's cores
        with _opencv_threads(max(1, int(threads))):
            return [stage_func(item, params, root) for item in items]
    modules = STAGE_MODULES.get(stage_func.__name__.removesuffix("_image"), ())
    if not all(m in sys.modules for m in modules):
        for module in modules:
            importlib.import_module(module)
        gc.freeze()  # the new modules' objects, as in log_to (forked workers share them)
    # The workers fork from this process after it has imported the stage modules, so a
    # job imports the scientific stack once. Forking is safe while this process runs no
    # thread of its own: a shard job's per-image cache is plain files (no Zarr event
    # loop), OpenCV's thread pool is stopped here (a forked copy of a pool that has run
    # hangs), and the executor forks every worker before its manager thread starts. A
    # process that has started Python threads (e.g. Zarr's event loop) gets its workers
    # from a forkserver instead.
    if threading.active_count() == 1:
        context = multiprocessing.get_context("fork")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(list(modules))
    log.info("%d images, %d %s workers", len(items), workers, context.get_start_method())
    with _opencv_threads(1), _main_not_rerun(), ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker
    ) as pool:
        return list(pool.map(stage_func, items, [params] * len(items), [root] * len(items)))


@contextlib.contextmanager
def _opencv_threads(n: int):
    """OpenCV's thread count set to ``n`` for the duration, then restored."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


@contextlib.contextmanager
def _main_not_rerun():
    """Hide ``__main__.__file__`` while a pool starts: forkserver workers would
    otherwise run the calling script (a Snakemake script) again as ``__mp_main__``."""
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


def zones_table(records: list[dict]) -> pd.DataFrame:
    """Zones shard table: one row per image, ``IMAGE_COLUMNS`` then geometry keys.

    Rejected images keep their row (status, reason) with NaN geometry.
    """
    rows = [
        {**{c: r.get(c) for c in IMAGE_COLUMNS}, **(r.get("geometry") or {})}
        for r in records
    ]
    table = pd.DataFrame(rows, columns=IMAGE_COLUMNS) if not rows else pd.DataFrame(rows)
    extra = sorted(c for c in table.columns if c not in IMAGE_COLUMNS)
    return table.loc[:, IMAGE_COLUMNS + extra].sort_values("image_id", ignore_index=True)


def final_images_table(zones_shard: pd.DataFrame, stage_records: list[dict]) -> pd.DataFrame:
    """Zones shard table with the final status: images a later stage rejected are
    marked rejected with that stage's reason."""
    table = zones_shard.copy()
    failed = {r["image_id"]: r["reason"] for r in stage_records if r["status"] != "ok"}
    hit = table["image_id"].isin(list(failed))
    table.loc[hit, "status"] = "rejected"
    table.loc[hit, "reason"] = table.loc[hit, "image_id"].map(failed)
    return table


def concat_tables(tables: list[pd.DataFrame], columns=("image_id",)) -> pd.DataFrame:
    """Concatenate per-image or per-shard tables.

    Tables without rows are left out (their columns may carry no dtype, which would
    turn numeric columns into objects); when every table is empty, the first one with
    columns is returned, else an empty frame with ``columns``, so readers always find
    the columns they expect. ``columns`` may be a function returning them (e.g.
    ``lambda: pipeline.DEFECT_TABLE_COLUMNS``), called only then: those lists import
    the detector's module, 0.2-0.3 s CPU in a job that otherwise never needs it.
    """
    filled = [t for t in tables if len(t)]
    if filled:
        return pd.concat(filled, ignore_index=True)
    shaped = [t for t in tables if len(t.columns)]
    if shaped:
        return shaped[0]
    return pd.DataFrame(columns=list(columns() if callable(columns) else columns))


def write_published_table(frame: pd.DataFrame, parquet_path, units: dict[str, str]) -> None:
    """A published table: Parquet with each column's unit in its field metadata
    (``datasets.column_units`` from ``units``), and its CSV twin (``.csv`` beside it),
    both written from the one Arrow table."""
    table = datasets.to_arrow(frame, datasets.column_units(frame.columns, units))
    fio.write_parquet(table, parquet_path)
    fio.write_csv(table, os.path.splitext(parquet_path)[0] + ".csv")


def read_image_tables(image_paths: list, label_paths: list, ratios: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``datasets.image_tables`` of the per-shard image tables and label fragments at
    these paths: the images and image labels with their split."""
    return datasets.image_tables(
        pd.concat([pd.read_parquet(p) for p in image_paths], ignore_index=True),
        concat_tables([pd.read_parquet(p) for p in label_paths]),
        ratios,
    )


def sample_rows(paths: list, n: int, seed: int, columns=("image_id",)) -> tuple[pd.DataFrame, int]:
    """A seeded random sample of ``n`` rows of the concatenation of Parquet tables,
    read one table at a time (gather steps never hold every table at once).

    The rows are those that ``np.random.default_rng(seed).choice(total, n,
    replace=False)`` picks from :func:`concat_tables` of all tables, in their order:
    the draw ``clustering.fit_model`` makes, so fitting on the sample equals fitting on
    the whole collection. Row counts come from the files' metadata.

    Returns
    -------
    sample : pandas.DataFrame
        The picked rows (all columns); ``columns`` (or a function returning them, as for
        :func:`concat_tables`) shape it when nothing is picked.
    total : int
        Rows in all tables.
    """
    counts = [pq.ParquetFile(p).metadata.num_rows for p in paths]
    total = sum(counts)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, min(int(n), total), replace=False))
    bounds = np.cumsum([0, *counts])
    parts = []
    for path, lo, hi in zip(paths, bounds[:-1], bounds[1:]):
        rows = picked[(picked >= lo) & (picked < hi)] - lo
        parts.append(pq.read_table(path).take(rows).to_pandas() if len(rows) else pd.DataFrame())
    if not parts or not any(len(t) for t in parts):
        parts = [pq.read_table(p).slice(0, 0).to_pandas() for p in paths[:1]]
    return concat_tables(parts, columns), total


def merge_sorted_tables(paths: list, out_path, keys: list[str], batch_rows: int | None = None) -> int:
    """Merge Parquet tables each sorted by ``keys`` into one sorted table, streaming.

    Every table is read ``batch_rows`` at a time (default: 2**17 rows shared by all
    tables, at least 1024 each); memory holds about one batch per table, so a gather
    over many shards stays bounded whatever the total. The first key must
    take each value in one table only (an image id lives in one shard): rows below the
    smallest last-read first key of the unfinished tables are final and are written.
    Tables without rows are skipped (their columns may be untyped); when all are empty
    the first is copied. Written atomically.

    Returns
    -------
    int
        Rows written.
    """
    files = [pq.ParquetFile(p) for p in paths]
    filled = [f for f in files if f.metadata.num_rows]
    if not filled:
        fio.write_parquet(pq.read_table(paths[0]) if paths else pa.table({}), out_path)
        return 0
    schema = filled[0].schema_arrow
    batch_rows = batch_rows or max(1024, 2**17 // len(filled))
    readers = [f.iter_batches(batch_rows) for f in filled]
    buffers: list = [None] * len(filled)
    live = set(range(len(filled)))
    order = [(k, "ascending") for k in keys]
    first = keys[0]

    def refill(i):
        batch = next(readers[i], None)
        if batch is None:
            live.discard(i)
            return
        table = pa.Table.from_batches([batch]).cast(schema)
        buffers[i] = table if buffers[i] is None else pa.concat_tables([buffers[i], table])

    def writer(tmp):
        written = 0
        with pq.ParquetWriter(tmp, schema) as out:
            for i in range(len(filled)):
                refill(i)
            while True:
                if live:
                    bound = min(buffers[i][first][-1].as_py() for i in live)
                    take = [pc.less(buffers[i][first], bound) for i in range(len(filled))]
                else:
                    take = [None] * len(filled)
                parts = []
                for i, mask in enumerate(take):
                    if buffers[i] is None:
                        continue
                    parts.append(buffers[i] if mask is None else buffers[i].filter(mask))
                    buffers[i] = None if mask is None else buffers[i].filter(pc.invert(mask))
                piece = pa.concat_tables(parts).sort_by(order)
                if piece.num_rows:
                    out.write_table(piece)
                    written += piece.num_rows
                if not live:
                    return written
                for i in [i for i in live if buffers[i][first][-1].as_py() == bound]:
                    refill(i)

    result = []
    fio.write_atomic(out_path, lambda tmp: result.append(writer(tmp)))
    return result[0]


def accepted_records(zones_shard: pd.DataFrame, root: str) -> list[dict]:
    """Zones records (geometry and cache key) of a shard's accepted images, by id."""
    ids = zones_shard.loc[zones_shard["status"] == "ok", "image_id"].sort_values()
    return [cache.read_record(cache.image_dir(root, i) / "zones.json") for i in ids]


def status_summary(records: list[dict]) -> str:
    """One log line: how many images were accepted and why others were rejected."""
    rejected = [f"{r['image_id']}: {r['reason']}" for r in records if r["status"] != "ok"]
    text = f"{len(records) - len(rejected)} ok, {len(rejected)} rejected"
    return "; ".join([text, *rejected])
