"""Defect detection benchmark on generated end faces (issue 4).

Prints instance recall by type and by size, precision (match at mask IoU >= 0.2),
false detections per clean image and along the cladding edge, pixel F1, the
width_um error of matched scratches and the median detection time per 1280x960
image on one core.

    python benchmarks/bench_defects.py --n 200 --seed 1
    python benchmarks/bench_defects.py --renderer independent --zones measured --n 60 --seed 101
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    f1, independent_cases, load_config, match_instances, pixel_counts, synth_cases)

from fiberprep import pipeline, zones  # noqa: E402
from fiberprep.defects import detect_defects  # noqa: E402

SIZE_BINS = [0, 20, 100, 1000, np.inf]
SIZE_LABELS = ["<20 px", "20-100 px", "100-1000 px", ">=1000 px"]


def zone_input(gray, truth, cfg, mode):
    """Zone map and geometry: the truth's, or measured by fiberprep.zones.

    As in the workflow, the scope's dark field stop (``zones.field_of_view``)
    is left out of the contact and ferrule zones.
    """
    ft = cfg["fiber_types"][truth["fiber_type"]]
    geo = truth if mode == "truth" else zones.measure_geometry(gray, ft, cfg["zones"], None)
    field = zones.field_of_view(gray, cfg["zones"], geo)
    zm = zones.zone_label_map(gray.shape, geo, ft["zones_um"], geo["um_per_px"], field=field)
    return zm, geo


def edge_hits(pred_map, numbers, truth, band_um=5.0):
    """Predicted instances (of ``numbers``) with a pixel within band_um of the cladding edge."""
    if not numbers:
        return 0
    h, w = pred_map.shape
    yy, xx = np.ogrid[:h, :w]
    r = np.hypot(xx - truth["center_x"], yy - truth["center_y"])
    near = np.abs(r - truth["cladding_radius_px"]) * truth["um_per_px"] < band_um
    return len(set(np.unique(pred_map[near])) & set(numbers))


def evaluate(n, seed, cfg, zones_mode, dump=None, renderer="synth"):
    params = cfg["detection"]
    rows, per_image = [], []
    tp = fp = fn = 0
    cases = (independent_cases(n, seed, cfg) if renderer == "independent"
             else synth_cases(n, seed, cfg["fiber_types"]))
    for image_id, gray, truth in cases:
        try:
            zm, geo = zone_input(gray, truth, cfg, zones_mode)
        except Exception as exc:  # a rejected image counts as all missed
            print(f"{image_id}: zones failed ({exc})", file=sys.stderr)
            zm, geo = None, None
        if zm is None:
            pred = np.zeros(gray.shape, np.uint16)
        else:
            pred, table = detect_defects(gray, zm, geo, params)
        m = match_instances(truth["instance_map"], pred, 0.2)
        width = dict(zip(table["number"], table["width_um"])) if zm is not None else {}
        size = dict(zip(table["number"], np.fmax(table["length_um"], table["width_um"]))) if zm is not None else {}
        types = {d["number"]: d for d in truth["defects"]}
        for r in m.itertuples():
            if r.true:
                d = types[r.true]
                rows.append({"image_id": image_id, "type": d["type"], "area_px": d["area_px"],
                             "found": r.pred > 0, "iou": r.iou, "width_um": d["width_um"],
                             "width_pred_um": width.get(r.pred, np.nan), "size_um": d["size_um"],
                             "size_pred_um": size.get(r.pred, np.nan)})
        false_numbers = [int(p) for p in m.loc[m.true == 0, "pred"]]
        a, b, c = pixel_counts(truth["instance_map"], pred)
        tp, fp, fn = tp + a, fp + b, fn + c
        per_image.append({"image_id": image_id, "is_clean": truth["is_clean"],
                          "n_pred": int(pred.max()), "n_false": len(false_numbers),
                          "edge_false": edge_hits(pred, false_numbers, truth),
                          "missed": int(((m.true > 0) & (m.pred == 0)).sum())})
        if dump is not None and (false_numbers or per_image[-1]["missed"]):
            _overlay(Path(dump) / f"{image_id}.png", gray, truth["instance_map"], pred)
    return pd.DataFrame(rows), pd.DataFrame(per_image), (tp, fp, fn)


def _overlay(path, gray, true_map, pred_map):
    """Truth outlines green, detections red."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vis = cv2.cvtColor((np.clip(gray, 0, 1) * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for m, col in ((true_map, (0, 255, 0)), (pred_map, (0, 0, 255))):
        cnt, _ = cv2.findContours((m > 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(vis, cnt, -1, col, 1)
    cv2.imwrite(str(path), vis)


def timing(n, seed, cfg):
    """Median wall and CPU ms per 1280x960 image (detection only, truth zones, one thread).

    CPU time (process_time) is the fairer figure on a shared machine. As in every
    workflow job (``pipeline.log_to``), freed memory stays in the process
    (``pipeline.keep_freed_memory``): otherwise each image's large temporaries fault
    in fresh pages, system time the workflow never pays.
    """
    cv2.setNumThreads(1)
    pipeline.keep_freed_memory()
    pipeline.one_math_thread()
    wall, cpu = [], []
    for _, gray, truth in synth_cases(n, seed + 1000, cfg["fiber_types"], width=1280, height=960):
        t0, c0 = time.perf_counter(), time.process_time()
        detect_defects(gray, truth["zone_map"], truth, cfg["detection"])
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200, help="generated images")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--zones", choices=["truth", "measured"], default="truth",
                   help="zone map from the truth (detection alone) or from fiberprep.zones")
    p.add_argument("--timing-n", type=int, default=15, help="1280x960 images timed (0: skip)")
    p.add_argument("--dump", help="folder for overlays of images with misses or false detections")
    p.add_argument("--renderer", choices=["synth", "independent"], default="synth",
                   help="fiberprep.synth (bench preset) or benchmarks/xrender.py, a renderer "
                        "written apart from it (its images decoded as the workflow reads them)")
    args = p.parse_args(argv)
    cfg = load_config()
    t, img, (tp, fp, fn) = evaluate(args.n, args.seed, cfg, args.zones, args.dump, args.renderer)
    print(f"defect benchmark: {args.n} {args.renderer} images (seed {args.seed}, zones {args.zones}), "
          f"{len(t)} true defects, {int(img.is_clean.sum())} clean images")
    t["size"] = pd.cut(t["area_px"], SIZE_BINS, labels=SIZE_LABELS, right=False)
    print("\nrecall by type")
    print(t.groupby("type")["found"].agg(["mean", "size"]).rename(
        columns={"mean": "recall", "size": "n"}).to_string(float_format="%.3f"))
    print("\nrecall by area")
    print(t.groupby("size", observed=False)["found"].agg(["mean", "size"]).rename(
        columns={"mean": "recall", "size": "n"}).to_string(float_format="%.3f"))
    n_pred = int(img.n_pred.sum())
    clean = img[img.is_clean]
    print(f"\nrecall overall            {t.found.mean():.3f}")
    print(f"recall area >= 20 px      {t.loc[t.area_px >= 20, 'found'].mean():.3f}")
    print(f"precision                 {1 - img.n_false.sum() / max(n_pred, 1):.3f}"
          f"  ({int(img.n_false.sum())} false of {n_pred})")
    print(f"false per clean image     {clean.n_false.mean() if len(clean) else float('nan'):.3f}")
    print(f"clean images with a false detection on the cladding edge  "
          f"{int((clean.edge_false > 0).sum())} of {len(clean)}")
    print(f"pixel F1                  {f1(tp, fp, fn):.3f}")
    print(f"mean IoU of matches       {t.loc[t.found, 'iou'].mean():.3f}")
    sc = t.type == "scratch"
    hit = t.found & (t.iou >= 0.5)  # a pair at IoU > 0.5 is the only one either can have
    print(f"scratches: mean IoU of matches {t.loc[t.found & sc, 'iou'].mean():.3f}  "
          f"recall at IoU >= 0.5  overall {hit.mean():.3f}  scratches {hit[sc].mean():.3f}")
    s = t[t.found & (t.type == "scratch")]
    err = (s.width_pred_um - s.width_um).abs()
    print(f"scratch width_um abs error (matched, n={len(s)})  median {err.median():.2f}  p90 "
          f"{err.quantile(0.9):.2f}  bias {(s.width_pred_um - s.width_um).median():+.2f}")
    b = t[t.found & (t.type != "scratch")]
    rel = (b.size_pred_um / b.size_um - 1).groupby(b.type)
    print("size (largest dimension) relative error of matched non-scratches, median / p90 abs:  "
          + "  ".join(f"{k} {v.median():+.1%} / {v.abs().quantile(0.9):.0%}" for k, v in rel))
    if args.timing_n:
        wall, cpu = timing(args.timing_n, args.seed, cfg)
        print(f"median ms / 1280x960 image (1 thread)  wall {wall:.0f}  cpu {cpu:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
