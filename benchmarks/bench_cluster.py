"""Clustering, naming and IEC grading benchmark on generated end faces (issue 5).

For true defects matched by detection (mask IoU >= 0.2, ``common.match_instances``):
adjusted Rand index vs the true class of the named types (the clusters merged by their
automatic names, as a review merges them: the figure the issue's ARI target is read
on), of the raw cluster ids (k clusters, several per type) and of the clusters named by
their majority true class (the best accuracy any naming of the same clusters reaches: the gap
to it is the naming rules', the rest the clustering's), type accuracy after
automatic naming with the confusion tables (by class and by the generator's finer
type); image-level IEC pass/fail agreement with the truth verdict
(``grading.grade_image`` on the true defects), with each disagreeing image's failures
on both sides and its causes (true defects missed, typed or measured differently,
detections without a true partner, see :func:`causes`); the defects the member rules of
``clustering.assign_clusters`` moved away from their nearest cluster, by true type; feature extraction CPU ms per
defect; and the clustering time of 200 000 generated feature rows (bootstrapped from
the measured ones with multiplicative jitter).

    python benchmarks/bench_cluster.py --n 150 --seed 5
    python benchmarks/bench_cluster.py --detections truth   # truth masks as detections
    python benchmarks/bench_cluster.py --cache /tmp/det_s5.pkl.gz  # frozen detections

``--cache`` stores the detections (instance maps and tables) on the first run and reads
them back on later runs, so feature and naming changes are compared on the same
detections while the detector changes.
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_config, match_instances, synth_cases  # noqa: E402

from fiberprep import clustering, grading, pipeline  # noqa: E402
from fiberprep.zones import ZONE_IDS  # noqa: E402
from fiberprep.defects import detect_defects  # noqa: E402
from fiberprep.features import defect_features  # noqa: E402

CLASSES = ["scratch", "pit_dig", "contamination", "chip", "other"]


def truth_table(truth) -> pd.DataFrame:
    """The true defects as a detect_defects-like table (class as type)."""
    t = pd.DataFrame(truth["defects"], columns=["number", "type", "class_name", "length_um", "width_um",
                                                "innermost_zone", "zone", "bbox_x", "bbox_y", "bbox_w", "bbox_h"])
    t["subtype"], t["type"] = t["type"], t["class_name"]
    return t.astype({c: np.int64 for c in ["number", "innermost_zone", "zone", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]})


def frozen_detections(path, n, seed):
    """{image_id: (instance map, table)} cached at ``path`` for (n, seed), or None."""
    if path is None or not Path(path).exists():
        return None
    with gzip.open(path, "rb") as f:
        cache = pickle.load(f)
    if (cache["n"], cache["seed"]) != (n, seed):
        raise ValueError(f"{path} holds detections of n={cache['n']} seed={cache['seed']}")
    return cache["detections"]


def collect(n, seed, cfg, detections, cache=None):
    """Features of every detected defect, truth class of matched ones, per-image data.

    ``cache``: path of frozen detections (read when present, else written).
    """
    feats, images = [], []
    n_defects, seconds = 0, 0.0
    frozen = frozen_detections(cache, n, seed) if detections == "detected" else None
    fresh = {}
    for image_id, gray, truth in synth_cases(n, seed, cfg["fiber_types"]):
        zm, geo = truth["zone_map"], truth
        true_t = truth_table(truth)
        if detections == "truth":
            inst, table = truth["instance_map"], true_t.drop(columns=["type", "class_name", "subtype"])
        elif frozen is not None:
            inst, table = frozen[image_id]
        else:
            inst, table = detect_defects(gray, zm, geo, cfg["detection"])
            fresh[image_id] = (inst, table)
        t0 = time.process_time()
        f = defect_features(gray, inst, zm, table, geo)
        seconds += time.process_time() - t0
        n_defects += len(f)
        m = match_instances(truth["instance_map"], inst, 0.2)
        pairs = {int(p): int(t) for t, p in zip(m["true"], m["pred"]) if t and p}
        f = table.merge(f, on="number")
        f["image_id"] = image_id
        true_of = f["number"].map(pairs)
        f["true_class"] = true_of.map(dict(zip(true_t["number"], true_t["class_name"])))
        f["true_subtype"] = true_of.map(dict(zip(true_t["number"], true_t["subtype"])))
        f["true_size_um"] = true_of.map(dict(zip(true_t["number"], grading.defect_size_um(true_t))))
        feats.append(f)
        criteria = cfg["criteria"][cfg["fiber_types"][truth["fiber_type"]]["criteria"]]
        verdict = grading.grade_image(true_t, criteria)
        images.append({"image_id": image_id, "criteria": criteria, "truth_pass": verdict["pass_fail"],
                       "truth_failures": "; ".join(verdict["failures"]), "truth": true_t, "pairs": pairs})
    if cache is not None and fresh:
        with gzip.open(cache, "wb", compresslevel=3) as f:
            pickle.dump({"n": n, "seed": seed, "detections": fresh}, f)
    return pd.concat(feats, ignore_index=True), pd.DataFrame(images), 1000 * seconds / max(n_defects, 1)


_LETTER = {ZONE_IDS[k]: v for k, v in grading.ZONE_LETTERS.items()}
_KEY = {v: k for k, v in ZONE_IDS.items()}


def _crosses(a, b, criteria, zone, scratch):
    """Whether a size band edge of the zone's rules lies between sizes ``a`` and ``b``."""
    rules = (criteria.get("zones", {}).get(_KEY.get(zone)) or {}).get("scratches" if scratch else "defects")
    edges = [e for r in rules or [] for e in ([r["over_um"]] if "over_um" in r else r["size_um"]) if e]
    return any(min(a, b) <= e < max(a, b) for e in edges)


def causes(truth, pairs, pred, criteria):
    """What can make an image's grade differ: each graded true defect that detection
    missed or that is judged differently (scratch or not, zone, IEC size across a band
    edge of the criteria), and each graded detection without a true partner."""
    out = []
    pred = pred.assign(size=grading.defect_size_um(pred)).set_index("number")
    partner = {t: p for p, t in pairs.items()}
    for r, size in zip(truth.itertuples(), grading.defect_size_um(truth)):
        zone = _LETTER.get(r.innermost_zone)
        what = f"{r.subtype} #{r.number} {size:.1f} µm"
        if r.number not in partner:
            if zone:
                out.append(f"missed {what} zone {zone}")
            continue
        d = pred.loc[partner[r.number]]
        pzone = _LETTER.get(d.innermost_zone)
        if not (zone or pzone):
            continue
        if (d.type == "scratch") != (r.type == "scratch"):
            out.append(f"{what} typed {d.type}")
        elif _crosses(size, d["size"], criteria, d.innermost_zone, d.type == "scratch"):
            out.append(f"{what} measured {d['size']:.1f}")
        if pzone != zone:
            out.append(f"{what} zone {zone or '-'} -> {pzone or '-'}")
    for n, d in pred.drop(index=list(pairs), errors="ignore").iterrows():
        if d.innermost_zone in _LETTER:
            out.append(f"extra {d.type} #{n} {d['size']:.1f} µm zone {_LETTER[d.innermost_zone]}")
    return "; ".join(out) or "-"


def grade_images(images, defects):
    """Predicted (pass/fail, failures text) per image from the typed detected defects."""
    by_image = dict(tuple(defects.groupby("image_id")))
    empty = defects.iloc[:0]
    grades = [grading.grade_image(by_image.get(r.image_id, empty), r.criteria) for r in images.itertuples()]
    return [g["pass_fail"] for g in grades], ["; ".join(g["failures"]) for g in grades]


def clustering_time(features, params, n_rows, seed):
    """Seconds to fit and to assign ``n_rows`` rows bootstrapped from ``features``."""
    rng = np.random.default_rng(seed)
    rows = features.iloc[rng.integers(len(features), size=n_rows)].reset_index(drop=True)
    cols = params["features"]
    rows[cols] = rows[cols] * np.exp(rng.normal(0, 0.05, (n_rows, len(cols))))
    t0 = time.perf_counter()
    model = clustering.fit_model(rows, params)
    t1 = time.perf_counter()
    clustering.assign_clusters(model, rows)
    return t1 - t0, time.perf_counter() - t1  # wall clock: sklearn may use both cores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=150, help="generated images")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--detections", choices=["detected", "truth"], default="detected",
                   help="defects from fiberprep.defects (truth zones) or the truth masks")
    p.add_argument("--cache", help="file of frozen detections (read if present, else written)")
    p.add_argument("--rows", type=int, default=200_000, help="rows of the clustering timing (0: skip)")
    args = p.parse_args(argv)
    cfg = load_config()
    params = cfg["clustering"]
    cv2.setNumThreads(1)  # one core, as in the workflow's pool workers (CPU time, not wall)
    pipeline.one_math_thread()  # ... and one BLAS thread, as every job and worker has
    feats, images, ms = collect(args.n, args.seed, cfg, args.detections, args.cache)
    model = clustering.fit_model(feats, params)
    feats["cluster"] = clustering.assign_clusters(model, feats)
    feats["type"] = clustering.apply_review(feats["cluster"], model, None)
    nearest = model["cluster_ids"][clustering._nearest(clustering._transform(model, feats), model["centroids"])]
    feats["nearest_type"] = clustering.apply_review(nearest, model, None)
    images["pred_pass"], images["pred_failures"] = grade_images(images, feats)
    m = feats[feats["true_class"].notna()]
    sil = ", ".join(f"{k}: {v:.2f}" for k, v in model["silhouette"].items())
    print(f"cluster benchmark: {args.n} images (seed {args.seed}, {args.detections} defects), "
          f"{len(feats)} defects, {len(m)} matched to a true defect, {len(model['sizes'])} clusters"
          + (f" (silhouette {sil})" if sil else ""))
    for c in sorted(model["names"]):
        print(f"  cluster {c:2d}  n={model['sizes'][c]:5d}  {model['names'][c]['rule']}")
    print("\nconfusion (rows: true class, columns: named type), matched defects")
    print(pd.crosstab(m["true_class"], m["type"]).reindex(columns=[c for c in CLASSES if c in set(m["type"])]).to_string())
    print("\nconfusion by generator type (rows) and named type (columns)")
    print(pd.crosstab(m["true_subtype"], m["type"]).to_string())
    print("\ntrue class per cluster")
    print(pd.crosstab(m["cluster"], m["true_class"]).to_string())
    moved = m[m["type"] != m["nearest_type"]]
    print(f"\nmoved by the member rules (clustering.assign_clusters): {len(moved)} matched defects; "
          "rows: type of the nearest cluster -> type, columns: generator type")
    if len(moved):
        print(pd.crosstab((moved["nearest_type"] + " -> " + moved["type"]).rename("moved"),
                          moved["true_subtype"]).to_string())
    acc = float((m["type"] == m["true_class"]).mean())
    agree = float((images["pred_pass"] == images["truth_pass"]).mean())
    print(f"\nARI named types vs true class     {adjusted_rand_score(m['true_class'], m['type']):.3f}  "
          "(target >= 0.75; clusters merged by their names)")
    print(f"ARI raw cluster ids vs true class {adjusted_rand_score(m['true_class'], m['cluster']):.3f}  "
          f"({len(model['sizes'])} clusters, several per type)")
    majority = m.groupby("cluster")["true_class"].agg(lambda t: t.mode().iloc[0])
    best = m["cluster"].map(majority)
    print(f"ARI clusters named by their majority true class {adjusted_rand_score(m['true_class'], best):.3f}, "
          f"accuracy {float((best == m['true_class']).mean()):.3f}  (the best accuracy any naming "
          "of these clusters reaches)")
    print(f"ARI of pure clusters, one per generator type (6), vs true class "
          f"{adjusted_rand_score(m['true_class'], m['true_subtype']):.3f}  (what perfect raw clusters reach)")
    print(f"type accuracy after naming        {acc:.3f}  (target >= 0.85)")
    print(f"image pass/fail agreement         {agree:.3f}  (target >= 0.95; truth fails "
          f"{int((images['truth_pass'] == 'fail').sum())} of {len(images)})")
    print(pd.crosstab(images["truth_pass"], images["pred_pass"]).rename_axis(
        index="truth", columns="predicted").to_string())
    by_image = dict(tuple(feats.groupby("image_id")))
    for r in images[images["pred_pass"] != images["truth_pass"]].itertuples():
        why = causes(r.truth, r.pairs, by_image.get(r.image_id, feats.iloc[:0]), r.criteria)
        print(f"  {r.image_id}  truth {r.truth_pass}: {r.truth_failures or '-'} | predicted "
              f"{r.pred_pass}: {r.pred_failures or '-'}\n      causes: {why}")
    print(f"feature extraction                {ms:.2f} CPU ms / defect (target <= 2)")
    if args.rows:
        fit_s, assign_s = clustering_time(feats, params, args.rows, args.seed)
        print(f"clustering {args.rows} rows       fit {fit_s:.1f} s + assign {assign_s:.1f} s (target <= 60)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
