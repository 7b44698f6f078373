"""Per-image, per-stage cache used by the shard jobs.

Each stage of an image leaves its arrays (Zarr), its table (Parquet) and, written
last, a small JSON record carrying the stage's cache key. A shard job skips an image
whose record carries the key it would compute now, so rerunning a shard (because one
image was added to it) recomputes that image only. The key chains the input checksum,
every upstream stage's key, this stage's parameters and the fiberprep version, so a
parameter or code-version change invalidates exactly what it affects. Because the
record is written after the data files, an interrupted write is never trusted.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from fiberprep import __version__
from fiberprep import io as fio


def stage_key(stage: str, upstream: str, params: dict) -> str:
    """Cache key of one stage of one image.

    Parameters
    ----------
    stage : str
        Stage name (``zones``, ``defects``, ``features``).
    upstream : str
        The input file's checksum for the first stage, else the upstream stage's key.
    params : dict
        Every parameter the stage reads (config sub-dicts).

    Returns
    -------
    str
        A 32-hex-digit blake2b digest of the above and ``fiberprep.__version__``.
    """
    payload = json.dumps(
        [__version__, stage, upstream, params],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).hexdigest()


def image_dir(root: str | Path, image_id: str) -> Path:
    """Folder of one image's intermediates: ``<root>/images/<image_id>``."""
    return Path(root) / "images" / image_id


def read_record(path: str | Path) -> dict | None:
    """Read a stage record; ``None`` when missing or unreadable (so: recompute)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_record(path: str | Path, record: dict) -> None:
    """Write a stage record atomically (after the files it vouches for)."""
    fio.write_json(path, record)


def write_array(path: str | Path, name: str, array: np.ndarray) -> None:
    """Write one 2-D array as a Zarr store (one chunk; replaced whole, atomically)."""

    def writer(tmp):
        root = zarr.open_group(str(tmp), mode="w")
        root.create_array(name, data=np.ascontiguousarray(array), chunks=array.shape)

    fio.write_atomic(path, writer)


def read_array(path: str | Path, name: str) -> np.ndarray:
    """Read one array written by :func:`write_array`."""
    return zarr.open_group(str(path), mode="r")[name][...]


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Write one per-image table as Parquet, atomically."""
    fio.write_parquet(table, path)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read one per-image table written by :func:`write_table`."""
    return pd.read_parquet(path)


def code_version(*modules: str) -> str:
    """Version of the code a stage runs: fiberprep's version and its modules' source.

    Part of the stage parameters, so a changed algorithm (even without a version bump,
    as during development) reruns its stage and misses its cache, and nothing else.

    Parameters
    ----------
    *modules : str
        Module names within fiberprep (e.g. ``"zones"``).

    Returns
    -------
    str
        ``"<version>+<16 hex digits>"``.
    """
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(modules):
        # find_spec locates the source without importing it (the workflow calls this
        # while parsing; importing clustering or report would cost seconds there)
        digest.update(Path(importlib.util.find_spec(f"fiberprep.{name}").origin).read_bytes())
    return f"{__version__}+{digest.hexdigest()}"
