"""Shared benchmark helpers: generated cases and instance matching by mask IoU.

Used by ``bench_defects.py`` and the clustering benchmark. A predicted instance
matches a true one when their masks overlap at IoU >= ``min_iou``; matching is
one-to-one and maximises the summed IoU (Hungarian assignment).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import linear_sum_assignment

from fiberprep import synth

import xrender

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "config.yaml"
# Preset name of the renderer written apart from fiberprep.synth (benchmarks/xrender.py).
INDEPENDENT = "independent"


def load_config(path=CONFIG) -> dict:
    """The project config as a dict."""
    return yaml.safe_load(Path(path).read_text())


def folder_bench_args(argv, description, n, preset, out_name, pool=False, folder=False):
    """Options of the benchmarks that run the workflow on a generated folder (``pool``:
    also ``--pool``, distinct images generated when fewer than ``--n``; ``folder``: also
    ``--folder``, an existing folder with truth to score instead of a generated one)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--n", type=int, default=n, help="number of images")
    if pool:
        p.add_argument("--pool", type=int, default=0,
                       help="generate only this many distinct images (0: all N)")
    if folder:
        p.add_argument("--folder", help="score this folder of images/ and truth/ (the "
                       "layout xrender.write_dataset writes, e.g. from another renderer) "
                       "instead of generating one; --n, --seed and --preset are ignored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default=preset, choices=[*sorted(synth.PRESETS), INDEPENDENT],
                   help=f"generator preset, or {INDEPENDENT}: benchmarks/xrender.py")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "bench_out" / out_name))
    return p.parse_args(argv)


def fresh_synth_folder(out, n, seed, preset, cfg) -> Path:
    """Empty ``out`` and generate ``n`` images with truth into ``out/synth``, by
    ``fiberprep.synth`` or, for the preset :data:`INDEPENDENT`, by ``xrender``.

    Returns the folder of the images (``out/synth/images``).
    """
    shutil.rmtree(out, ignore_errors=True)
    if preset == INDEPENDENT:
        xrender.write_dataset(out / "synth", n, seed, cfg)
    else:
        synth.write_dataset(out / "synth", n, seed, cfg["fiber_types"], cfg["criteria"],
                            preset=preset)
    return out / "synth" / "images"


def synth_cases(n, seed, fiber_types, preset="bench", **ranges):
    """Yield ``(image_id, gray float32 [0,1], truth)`` for ``n`` generated images.

    Image ``i`` depends only on ``(seed, i)``, as in ``synth.write_dataset``.
    """
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        spec = synth.random_spec(rng, fiber_types, **{**synth.PRESETS[preset], **ranges})
        image, truth = synth.render(spec, rng)
        yield f"synth_{i:04d}", image.astype(np.float32) / 255.0, truth


def independent_cases(n, seed, cfg):
    """Yield ``(image_id, gray, truth)`` for ``n`` images of ``xrender`` (the renderer
    written apart from fiberprep.synth), decoded by ``fiberprep.io`` from the bytes it
    writes (JPEG, 16-bit and colour included); ``truth`` in the layout of
    :func:`synth_cases` (geometry keys, ``instance_map``, ``zone_map``, ``defects``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            s, gray, inst, zmap, rows, name = xrender.read_back(seed, i, cfg, tmp)
            image_id = xrender.image_id(seed, i)
            truth = {**xrender.truth_row(s, image_id, name, rows), "instance_map": inst,
                     "zone_map": zmap, "defects": rows}
            yield image_id, gray, truth


def iou_matrix(true_map, pred_map):
    """Mask IoU between every true and every predicted instance.

    Returns
    -------
    iou : ndarray, shape (n_true, n_pred)
    true_ids, pred_ids : ndarray
        Instance numbers of the rows and columns.
    """
    true_map = np.asarray(true_map).ravel()
    pred_map = np.asarray(pred_map).ravel()
    true_ids = np.unique(true_map[true_map > 0])
    pred_ids = np.unique(pred_map[pred_map > 0])
    if true_ids.size == 0 or pred_ids.size == 0:
        return np.zeros((true_ids.size, pred_ids.size)), true_ids, pred_ids
    ti = np.searchsorted(true_ids, true_map)
    pi = np.searchsorted(pred_ids, pred_map)
    ti = np.where(true_map > 0, ti + 1, 0)
    pi = np.where(pred_map > 0, pi + 1, 0)
    both = (ti > 0) | (pi > 0)
    nt, npd = true_ids.size + 1, pred_ids.size + 1
    joint = np.bincount(ti[both] * npd + pi[both], minlength=nt * npd).reshape(nt, npd)
    inter = joint[1:, 1:].astype(float)
    area_t = joint[1:, :].sum(1).astype(float)
    area_p = joint[:, 1:].sum(0).astype(float)
    union = area_t[:, None] + area_p[None, :] - inter
    return inter / np.maximum(union, 1.0), true_ids, pred_ids


def match_instances(true_map, pred_map, min_iou=0.2):
    """One-to-one matching of predicted to true instances at mask IoU >= ``min_iou``.

    Returns
    -------
    pandas.DataFrame
        One row per true instance and one per unmatched prediction: ``true``
        (number or 0), ``pred`` (number or 0), ``iou`` (0 when unmatched).
    """
    iou, true_ids, pred_ids = iou_matrix(true_map, pred_map)
    rows = []
    matched_t, matched_p = set(), set()
    if iou.size:
        r, c = linear_sum_assignment(-np.where(iou >= min_iou, iou, 0.0))
        for i, j in zip(r, c):
            if iou[i, j] >= min_iou:
                rows.append((int(true_ids[i]), int(pred_ids[j]), float(iou[i, j])))
                matched_t.add(i)
                matched_p.add(j)
    rows += [(int(t), 0, 0.0) for i, t in enumerate(true_ids) if i not in matched_t]
    rows += [(0, int(p), 0.0) for j, p in enumerate(pred_ids) if j not in matched_p]
    return pd.DataFrame(rows, columns=["true", "pred", "iou"])


def pixel_counts(true_map, pred_map):
    """(true positive, false positive, false negative) defect pixel counts."""
    t, p = np.asarray(true_map) > 0, np.asarray(pred_map) > 0
    return int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())


def f1(tp, fp, fn):
    """F1 from counts (1.0 when there is nothing to find and nothing found)."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
