"""Stable assignment of images to shards, and the manifest hash of a shard.

Per-image work is batched into a bounded number of shards so that the workflow's DAG
stays small at any folder size: every image id maps to one shard by a hash of the id
alone, so adding or removing other images never moves an image to another shard.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

#: Manifest columns that decide whether a shard's per-image work must be looked at again.
MANIFEST_COLUMNS = ("image_id", "rel_path", "source_path", "size_bytes", "mtime_ns")


def shard_of(image_id: str, n_shards: int) -> int:
    """Shard number of one image id.

    Parameters
    ----------
    image_id : str
        The image id (CONTRACT rule: relative path without extension, sanitised).
    n_shards : int
        Number of shards, >= 1.

    Returns
    -------
    int
        ``blake2b(image_id) mod n_shards``: stable across runs, machines and Python
        versions (unlike ``hash()``), and independent of the other images.

    Examples
    --------
    >>> shard_of("ferrule_001", 64) == shard_of("ferrule_001", 64)
    True
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    digest = hashlib.blake2b(image_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def shard_count(n_images: int, max_shards: int, min_images_per_shard: int) -> int:
    """Number of shards to use for a folder of ``n_images``.

    Every job costs a few seconds of start-up, so a small folder gets few shards: the
    smallest power of two that brings the shards down to ``min_images_per_shard``
    images or fewer on average, capped at ``max_shards``. As the folder grows the count
    only doubles (at most log2(max_shards) times over its life), which splits each shard
    in two; per-image caches make those reruns cheap.

    Examples
    --------
    >>> shard_count(20, 64, 128), shard_count(1000, 64, 128), shard_count(10**5, 64, 128)
    (1, 8, 64)
    """
    wanted = -(-n_images // min_images_per_shard)
    count = 1
    while count < wanted:
        count *= 2
    return min(count, max_shards)


def assign_shards(inputs: pd.DataFrame, n_shards: int) -> pd.DataFrame:
    """Add a ``shard`` column to a table of inputs.

    Parameters
    ----------
    inputs : pandas.DataFrame
        One row per image with at least ``image_id`` (as from ``io.scan_inputs``).
    n_shards : int
        Number of shards.

    Returns
    -------
    pandas.DataFrame
        A copy of ``inputs`` with an int ``shard`` column.
    """
    out = inputs.copy()
    out["shard"] = np.array(
        [shard_of(i, n_shards) for i in out["image_id"]], dtype=np.int64
    )
    return out


def shard_manifests(inputs: pd.DataFrame, n_shards: int) -> dict[str, list[dict]]:
    """The manifest of each non-empty shard: ``{"%03d" % shard: rows}``, each row a
    dict of :data:`MANIFEST_COLUMNS` (plain Python values), sorted by image id.

    Built from column lists, not row by row: at 100 000 images this is part of every
    Snakemake start-up (dry runs included).
    """
    cols = list(MANIFEST_COLUMNS)
    values = [inputs[c].tolist() for c in cols]
    shards: dict[str, list[dict]] = {}
    for k, row in zip((shard_of(i, n_shards) for i in values[0]), zip(*values)):
        shards.setdefault(f"{k:03d}", []).append(dict(zip(cols, row)))
    return {k: sorted(rows, key=lambda r: r["image_id"]) for k, rows in sorted(shards.items())}


def manifest_hash(manifest) -> str:
    """Hash of a shard's manifest: image ids, paths, sizes and modification times.

    Used as a rule parameter, so that an added, removed or replaced image changes the
    parameter of its shard's jobs only, even when the new file carries an old mtime.

    Parameters
    ----------
    manifest : list of dict or pandas.DataFrame
        The shard's rows with the columns of ``MANIFEST_COLUMNS``.

    Returns
    -------
    str
        A 16-hex-digit blake2b digest, independent of row order.
    """
    if isinstance(manifest, pd.DataFrame):
        manifest = manifest.to_dict("records")
    rows = sorted(([r[c] for c in MANIFEST_COLUMNS] for r in manifest), key=lambda r: r[0])
    payload = json.dumps(rows, separators=(",", ":"), default=int).encode("utf-8")
    return hashlib.blake2b(payload, digest_size=8).hexdigest()
