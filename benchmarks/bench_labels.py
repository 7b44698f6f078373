"""End-to-end label accuracy: the workflow's published datasets against exact truth.

Generates a folder (``bench`` preset: every fiber type, SM and MM, vignetting, JPEG,
640x480 to 1920x1080), runs the workflow on it as a user would (``snakemake --cores C``,
default config, ``fiber.type: auto``), then reads only the files of the output contract
and scores them against the generator's truth, as a grader with ground truth would:

- geometry from ``image_labels.parquet`` (center and cladding radius errors);
- zone masks (``zone_masks/*.png``): IoU of every graded zone, share of images >= 0.98;
- instances (``instance_masks/*.png``): one-to-one matching at mask IoU >= 0.2, recall
  by true type, precision;
- defect classes: the class the ``defect_masks`` give a matched instance (majority of its
  pixels) against the true class, with the confusion table, and pixel-level class F1;
- image pass/fail (``image_labels.parquet``) against the generator's IEC verdict, with
  each disagreeing image's failures on both sides and its causes (``bench_cluster.causes``
  on the typed defects of the run's intermediate tables, plus a fiber type other than the
  true one).

    python benchmarks/bench_labels.py --n 60 --seed 0

``--preset independent`` generates the folder with ``xrender.py``, a renderer written
apart from ``fiberprep.synth`` (own light, optics, noise, rim, epoxy and defect models):
the detector and the naming rules were tuned on neither it nor its seeds, so its
figures show what images of another kind score (``make bench-independent``).
``--folder DIR`` scores a folder that already holds ``images/`` and ``truth/`` in that
layout, e.g. from a renderer kept outside the project.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cluster import causes  # noqa: E402
from bench_workflow import run_workflow  # noqa: E402
from common import f1, folder_bench_args, fresh_synth_folder, load_config, match_instances  # noqa: E402

from fiberprep import datasets, zones  # noqa: E402

CLASS_IDS = {name: i for i, name in datasets.DEFECT_CLASSES.items()}


def read_png(path):
    """A mask PNG's stored values (ids of gray or palette PNGs, uint8 or uint16)."""
    return np.asarray(Image.open(path))


def true_class_map(instances, defects):
    """Class id per pixel from a true instance map and its defect table rows."""
    lut = np.zeros(int(instances.max()) + 1, np.uint8)
    for number, name in zip(defects["number"], defects["class_name"]):
        lut[int(number)] = CLASS_IDS[name]
    return lut[instances]


def majority_class(class_map, instances, number):
    """The class most pixels of one predicted instance carry (0 when it has none)."""
    values = class_map[instances == number]
    return int(np.bincount(values).argmax()) if values.size else 0


def score_image(truth_dir, pixel_dir, image_id, true_defects):
    """Zone IoUs, instance matches (with true and predicted classes) and per-class pixel
    counts of one image."""
    true_zones = read_png(truth_dir / "zone_masks" / f"{image_id}.png")
    pred_zones = read_png(pixel_dir / "zone_masks" / f"{image_id}.png")
    ious = {}
    for name in zones.GRADED_ZONES:
        zid = zones.ZONE_IDS[name]
        t, p = true_zones == zid, pred_zones == zid
        union = (t | p).sum()
        ious[name] = float((t & p).sum() / union) if union else np.nan
    true_inst = read_png(truth_dir / "instance_masks" / f"{image_id}.png")
    pred_inst = read_png(pixel_dir / "instance_masks" / f"{image_id}.png")
    pred_cls = read_png(pixel_dir / "defect_masks" / f"{image_id}.png")
    true_cls = true_class_map(true_inst, true_defects)
    matches = match_instances(true_inst, pred_inst)
    by_number = true_defects.set_index("number")
    matches["true_type"] = [by_number.type.get(t, "") if t else "" for t in matches.true]
    matches["true_class"] = [by_number.class_name.get(t, "") if t else "" for t in matches.true]
    matches["pred_class"] = [
        datasets.DEFECT_CLASSES[majority_class(pred_cls, pred_inst, p)] if p else ""
        for p in matches.pred
    ]
    pixels = {
        name: (
            int(((true_cls == cid) & (pred_cls == cid)).sum()),
            int(((true_cls != cid) & (pred_cls == cid)).sum()),
            int(((true_cls == cid) & (pred_cls != cid)).sum()),
        )
        for cid, name in datasets.DEFECT_CLASSES.items()
        if cid
    }
    return ious, matches.assign(image_id=image_id), pixels


def typed_defects(results: Path) -> pd.DataFrame:
    """The run's typed defects (detection, features, types), as its datasets grade them."""
    def read(kind, prefix="shard"):
        return pd.concat([pd.read_parquet(f) for f in sorted(
            (results / "intermediate" / kind).glob(f"{prefix}_*.parquet"))], ignore_index=True)
    return datasets.typed_defects(read("defects"), read("features"), read("labels"))


def disagreements(labels, truth, true_defects, matches, typed, cfg):
    """One text line per image whose pass/fail differs from the truth, with causes."""
    lines = []
    true_pass = truth.loc[labels.index, "iec_pass"].astype(bool)
    for image_id in labels.index[(labels.pass_fail == "pass") != true_pass]:
        t = true_defects[true_defects.image_id == image_id]
        t = t.assign(subtype=t["type"], type=t["class_name"])
        m = matches[(matches.image_id == image_id) & (matches.true > 0) & (matches.pred > 0)]
        true_type, pred_type = truth.loc[image_id, "fiber_type"], labels.loc[image_id, "fiber_type"]
        criteria = cfg["criteria"][cfg["fiber_types"][true_type]["criteria"]]
        why = causes(t, dict(zip(m.pred, m.true)), typed[typed.image_id == image_id], criteria)
        if pred_type != true_type:
            why = f"fiber type {true_type} -> {pred_type}; {why}"
        lines.append(f"  {image_id}  truth: {truth.loc[image_id, 'iec_failures'] or 'pass'} | "
                     f"predicted: {labels.loc[image_id, 'failures'] or 'pass'}\n      causes: {why}")
    return lines


def main(argv=None) -> int:
    args = folder_bench_args(argv, __doc__.split("\n")[0], 60, "bench", "labels", folder=True)
    cfg = load_config()
    out = Path(args.out)
    if args.folder:  # a fresh run: no earlier results nor review file of ``out``
        shutil.rmtree(out / "results", ignore_errors=True)
        (out / "cluster_review.yaml").unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        images = Path(args.folder).resolve() / "images"
        source = f"{sum(1 for _ in images.iterdir())} images of {args.folder}"
    else:
        images = fresh_synth_folder(out, args.n, args.seed, args.preset, cfg)
        source = f"{args.n} images ({args.preset} preset, seed {args.seed})"
    truth_dir = images.parent / "truth"
    wall = run_workflow(images, out, args.cores)
    data = out / "results" / "datasets"
    pixel_dir = data / "pixel_level"
    truth = pd.read_parquet(truth_dir / "images.parquet").set_index("image_id")
    true_defects = pd.read_parquet(truth_dir / "defects.parquet")
    status = pd.read_parquet(data / "image_level" / "images.parquet").set_index("image_id")
    labels = pd.read_parquet(data / "image_level" / "image_labels.parquet").set_index("image_id")

    zone_rows, matches, pixel_sums = [], [], {}
    for image_id in labels.index:
        ious, m, pixels = score_image(
            truth_dir, pixel_dir, image_id, true_defects[true_defects.image_id == image_id]
        )
        zone_rows.append({"image_id": image_id, **ious})
        matches.append(m)
        for name, counts in pixels.items():
            pixel_sums[name] = np.add(pixel_sums.get(name, 0), counts)
    zone_iou = pd.DataFrame(zone_rows).set_index("image_id")
    m = pd.concat(matches, ignore_index=True)
    geo = labels.join(truth.add_suffix("_true"))
    center_err = np.hypot(geo.center_x - geo.center_x_true, geo.center_y - geo.center_y_true)
    radius_err = 100 * (geo.cladding_radius_px / geo.cladding_radius_px_true - 1).abs()
    true_m, pred_m = m[m.true > 0], m[m.pred > 0]
    matched = m[(m.true > 0) & (m.pred > 0)]
    verdict = (labels.pass_fail == "pass") == truth.loc[labels.index, "iec_pass"].astype(bool)

    print(f"{source}; workflow "
          f"--cores {args.cores}: {wall:.0f} s\n")
    rows = [
        ("images accepted", f"{(status.status == 'ok').mean():.3f}"),
        ("center error median / p95 (px)",
         f"{center_err.median():.3f} / {center_err.quantile(0.95):.3f}"),
        ("cladding radius error median / p95 (%)",
         f"{radius_err.median():.3f} / {radius_err.quantile(0.95):.3f}"),
    ]
    for name in zones.GRADED_ZONES:
        iou = zone_iou[name].dropna()
        rows.append((f"zone IoU {name}: median / share >= 0.98",
                     f"{iou.median():.4f} / {(iou >= 0.98).mean():.3f}"))
    rows += [
        ("instance recall (IoU >= 0.2)", f"{(true_m.pred > 0).mean():.3f}"),
        ("instance precision", f"{(pred_m.true > 0).mean():.3f}"),
        ("class accuracy of matched instances",
         f"{(matched.true_class == matched.pred_class).mean():.3f}"),
        ("image pass/fail agreement", f"{verdict.mean():.3f}"),
    ]
    for name, (tp, fp, fn) in pixel_sums.items():
        if tp + fn:
            rows.append((f"pixel F1 {name}", f"{f1(tp, fp, fn):.3f}"))
    print("| figure | value |\n|---|---:|")
    for figure, value in rows:
        print(f"| {figure} | {value} |")
    print("\nRecall by true type:")
    print(true_m.groupby("true_type").pred.agg(n="size", recall=lambda p: (p > 0).mean())
          .round(3).to_string())
    print("\nTrue class (rows) vs class in defect_masks (columns), matched instances:")
    print(pd.crosstab(matched.true_class, matched.pred_class).to_string())
    print("\nImages whose pass/fail differs from the truth:")
    print("\n".join(disagreements(labels, truth, true_defects, m,
                                 typed_defects(out / "results"), cfg)) or "  none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
