"""Zone and geometry benchmark on generated end faces (issue 3).

Prints center and cladding radius errors, core offset and radius errors (visible cores),
zone-mask IoU of cladding and contact (median, 5th percentile, minimum, share
>= 0.98) of the zone map the pipeline writes (field of view applied) against the
true map (same rule, true field stop), the acceptance rate against the issue's
targets, the share of images given the right fiber type (zones), a breakdown by
scene type and by true fiber type (whose cladding zone may be a band only 5 µm wide:
large-core 105/125), and the median time of ``measure_geometry`` + ``zone_label_map`` per
1280x960 image on one core. Images get the fiber types of the config, as in the
workflow (``fiber.type: auto``: the type is measured); ``--true-type`` gives each
its true type (geometry alone). ``--coarse`` draws the images at 0.8-1.2 µm/px on
320x240 to 640x480 px (a 250-770 µm field: small scopes' frames) instead of the
issue's 0.25-0.8 µm/px on 640x480 to 1920x1080; ``--fine`` at 0.12-0.25 µm/px (high
magnification: the fiber fills the frame). ``--field-stop`` shows each image through
a round field stop (black beyond it; 0.48 / 0.45 / 0.42 of the long side across,
0 / 5 / 10 % of the width off centre, in turn), whose black the true zone map leaves
out of the contact and ferrule zones as the pipeline's rule does.

    python benchmarks/bench_zones.py --n 200 --seed 3
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
from common import load_config, synth_cases  # noqa: E402

from fiberprep import pipeline, synth, zones  # noqa: E402
from fiberprep.io import ImageRejected  # noqa: E402


def zone_iou(true_map, pred_map, zone_id):
    """Mask IoU of one zone id."""
    t, p = true_map == zone_id, pred_map == zone_id
    union = (t | p).sum()
    return float((t & p).sum() / union) if union else 1.0


def pipeline_zone_map(gray, geo, fiber_type, params):
    """The zone map as ``pipeline`` writes it (field of view, analysed ferrule)."""
    return zones.zone_label_map(
        gray.shape,
        geo,
        fiber_type["zones_um"],
        geo["um_per_px"],
        ferrule=params["analyse_ferrule"],
        field=zones.field_of_view(gray, params, geo),
    )


def fiber_types(cfg, truth, true_type):
    """Catalog entries measure_geometry gets: the image's true type, or the workflow's
    candidates (``fiber.type``, ``auto``: ``auto_types``)."""
    if true_type:
        return {truth["fiber_type"]: cfg["fiber_types"][truth["fiber_type"]]}
    return {n: cfg["fiber_types"][n] for n in pipeline.fiber_type_names(cfg["fiber"])}


def same_zones(cfg, a, b):
    """Whether two catalog types give the same zones (sm_pc and sm_apc do)."""
    ta, tb = cfg["fiber_types"][a], cfg["fiber_types"][b]
    return all(ta[k] == tb[k] for k in ("cladding_um", "core_um", "zones_um"))


COARSE = {"um_per_px": (0.8, 1.2), "sizes": [(320, 240), (400, 300), (480, 360), (640, 480)]}
FINE = {"um_per_px": (0.12, 0.25)}
# Round field stops: (diameter / long side, centre shift / width).
STOPS = ((0.48, 0.0), (0.45, 0.05), (0.42, 0.1))


def behind_round_stop(gray, truth, layout):
    """``gray`` seen through a round field stop (``layout`` as ``STOPS``;
    ``synth.round_field_stop``) and the truth with the contact and ferrule zones
    beyond it outside."""
    frac, shift = layout
    h, w = gray.shape
    gray, lit = synth.round_field_stop(gray, ((0.5 + shift) * w, 0.5 * h), frac * max(h, w))
    zone_map = truth["zone_map"].copy()
    zone_map[(lit < 0.5) & (zone_map >= zones.ZONE_IDS["contact"])] = zones.ZONE_IDS["outside"]
    return gray, {**truth, "zone_map": zone_map}


def evaluate(n, seed, cfg, true_type=False, ranges=None, stops=False):
    """One row per generated image: truth knobs and measurement errors (``stops``:
    each image seen through a round field stop, ``behind_round_stop``)."""
    rows = []
    for i, (image_id, gray, truth) in enumerate(synth_cases(n, seed, cfg["fiber_types"], **(ranges or {}))):
        if stops:
            gray, truth = behind_round_stop(gray, truth, STOPS[i % len(STOPS)])
        types = fiber_types(cfg, truth, true_type)
        row = {
            "image_id": image_id,
            "fiber_type": truth["fiber_type"],
            "polarity": truth["polarity"],
            "core_visible_true": truth["core_visible"],
            "width": truth["width"],
            "ellipticity_true": truth["cladding_ellipticity"],
        }
        try:
            geo = zones.measure_geometry(gray, types, cfg["zones"], None)
        except ImageRejected as exc:
            rows.append({**row, "accepted": False, "reason": exc.reason})
            continue
        pred = pipeline_zone_map(gray, geo, types[geo["fiber_type"]], cfg["zones"])
        upp = truth["um_per_px"]
        true_off = np.array(
            [truth["core_center_x"] - truth["center_x"], truth["core_center_y"] - truth["center_y"]]
        )
        off = np.array(
            [geo["core_center_x"] - geo["center_x"], geo["core_center_y"] - geo["center_y"]]
        )
        rows.append(
            {
                **row,
                "accepted": True,
                "reason": "",
                "center_err_px": float(
                    np.hypot(
                        geo["center_x"] - truth["center_x"], geo["center_y"] - truth["center_y"]
                    )
                ),
                "radius_err_pct": 100
                * abs(geo["cladding_radius_px"] / truth["cladding_radius_px"] - 1),
                "ellipticity_err": abs(geo["cladding_ellipticity"] - truth["cladding_ellipticity"]),
                "core_visible": geo["core_visible"],
                "core_offset_err_um": float(np.hypot(*(off - true_off)) * upp),
                "core_radius_err_pct": 100
                * abs(geo["core_radius_px"] / truth["core_radius_px"] - 1),
                "iou_cladding": zone_iou(truth["zone_map"], pred, zones.ZONE_IDS["cladding"]),
                "iou_contact": zone_iou(truth["zone_map"], pred, zones.ZONE_IDS["contact"]),
                "confidence": geo["confidence"],
                "stop_found": geo["field_stop_radius_px"] > 0,
                "polarity_ok": geo["polarity"] == truth["polarity"],
                "type_ok": same_zones(cfg, geo["fiber_type"], truth["fiber_type"]),
                "type_source": geo["fiber_type_source"],
            }
        )
    return pd.DataFrame(rows)


def time_per_image(n, seed, cfg, true_type=False):
    """Median ms of measure_geometry + zone_label_map on 1280x960 images, one thread.

    Returns (wall ms, CPU ms): on a shared machine the wall time includes waiting
    for a core, the process CPU time does not.
    """
    cv2.setNumThreads(1)
    pipeline.one_math_thread()  # as in every job
    times, cpu = [], []
    for _, gray, truth in synth_cases(n, seed, cfg["fiber_types"], width=1280, height=960):
        types = fiber_types(cfg, truth, true_type)
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            geo = zones.measure_geometry(gray, types, cfg["zones"], None)
            pipeline_zone_map(gray, geo, types[geo["fiber_type"]], cfg["zones"])
        except ImageRejected:
            pass
        times.append(1000 * (time.perf_counter() - start))
        cpu.append(1000 * (time.process_time() - start_cpu))
    return float(np.median(times)), float(np.median(cpu))


def summary(df, ms):
    """The issue's figures against their targets."""
    ok = df[df.accepted]
    vis = ok[ok.core_visible_true & ok.core_visible]
    measured = ok[ok.type_source == "core"]
    q = lambda s, p: float(np.percentile(s, p)) if len(s) else float("nan")  # noqa: E731
    rows = [
        ("images", len(df), "", ""),
        ("accepted (%)", 100 * df.accepted.mean(), ">= 99", 100 * df.accepted.mean() >= 99),
        (
            "center error median (px)",
            q(ok.center_err_px, 50),
            "<= 0.25",
            q(ok.center_err_px, 50) <= 0.25,
        ),
        ("center error p95 (px)", q(ok.center_err_px, 95), "<= 1", q(ok.center_err_px, 95) <= 1),
        (
            "radius error median (%)",
            q(ok.radius_err_pct, 50),
            "<= 0.3",
            q(ok.radius_err_pct, 50) <= 0.3,
        ),
        ("radius error p95 (%)", q(ok.radius_err_pct, 95), "<= 1", q(ok.radius_err_pct, 95) <= 1),
        (
            "core offset error median (µm, visible)",
            q(vis.core_offset_err_um, 50),
            "<= 0.5",
            q(vis.core_offset_err_um, 50) <= 0.5,
        ),
        ("core radius error median (%, visible)", q(vis.core_radius_err_pct, 50), "", ""),
        ("core radius error p95 (%, visible)", q(vis.core_radius_err_pct, 95), "", ""),
        ("core found when visible (%)", 100 * ok[ok.core_visible_true].core_visible.mean(), "", ""),
        (
            "core claimed when invisible (%)",
            100 * ok[~ok.core_visible_true].core_visible.mean(),
            "",
            "",
        ),
    ]
    for zone in ("cladding", "contact"):
        iou = ok[f"iou_{zone}"]
        rows += [
            (f"zone IoU {zone} median", q(iou, 50), "", ""),
            (f"zone IoU {zone} p5", q(iou, 5), "", ""),
            (f"zone IoU {zone} min", iou.min(), ">= 0.98", iou.min() >= 0.98),
            (f"zone IoU {zone} >= 0.98 (%)", 100 * (iou >= 0.98).mean(), "100", (iou >= 0.98).all()),
        ]
    rows += [
        ("round field stop found (%)", 100 * ok.stop_found.mean(), "", ""),
        ("polarity correct (%)", 100 * ok.polarity_ok.mean(), "", ""),
        ("fiber type (zones) correct (%)", 100 * ok.type_ok.mean(), "", ""),
        ("... where the core shows (%)", 100 * ok[ok.core_visible_true].type_ok.mean(), "", ""),
        ("... where measured (source core) (%)", 100 * measured.type_ok.mean(), "", ""),
        *((f"type source {s} (%)", 100 * (ok.type_source == s).mean(), "", "")
          for s in ("config", "core", "ambiguous", "default")),
        ("ms / image 1280x960, 1 core (median wall)", ms[0], "<= 20", ms[0] <= 20),
        ("ms / image 1280x960, 1 core (median CPU)", ms[1], "<= 20", ms[1] <= 20),
    ]
    return pd.DataFrame(rows, columns=["figure", "value", "target", "met"])


def by_fiber_type(ok, cfg):
    """Per true fiber type: type right, radius error p95, core radius error median and
    p95 (visible cores found), cladding / contact zone IoU (minimum, share >= 0.98), the
    cladding zone's radial width (µm) and the IoU a 0.1 % radius error costs it."""
    by = ok.groupby("fiber_type").agg(
        n=("type_ok", "size"),
        type_right=("type_ok", "mean"),
        radius_p95_pct=("radius_err_pct", lambda s: s.quantile(0.95)),
        cladding_min=("iou_cladding", "min"),
        cladding_ok=("iou_cladding", lambda s: (s >= 0.98).mean()),
        contact_min=("iou_contact", "min"),
        contact_ok=("iou_contact", lambda s: (s >= 0.98).mean()),
    )
    core = ok[ok.core_visible_true & ok.core_visible].groupby("fiber_type").core_radius_err_pct
    by = by.join(core.median().rename("core_median_pct")).join(core.quantile(0.95).rename("core_p95_pct"))
    inner, outer = (by.index.map({name: t["zones_um"]["cladding"][i] / 2
                                  for name, t in cfg["fiber_types"].items()}) for i in (0, 1))
    return by.assign(band_um=outer - inner, loss_per_0_1pct=0.001 * (outer + inner) / (outer - inner))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="generated images (>= 200 for the issue)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--n-time", type=int, default=20, help="1280x960 images timed")
    p.add_argument("--dump", help="write the per-image table to this parquet file")
    p.add_argument("--true-type", action="store_true",
                   help="give each image its true fiber type (default: as configured, "
                        "fiber.type auto chooses among auto_types)")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--coarse", action="store_true",
                       help="0.8-1.2 µm/px on 320x240 to 640x480 images")
    scale.add_argument("--fine", action="store_true", help="0.12-0.25 µm/px")
    p.add_argument("--field-stop", action="store_true",
                   help="each image seen through a round field stop")
    args = p.parse_args(argv)
    cfg = load_config()
    ranges = COARSE if args.coarse else FINE if args.fine else None
    df = evaluate(args.n, args.seed, cfg, args.true_type, ranges, args.field_stop)
    ms = time_per_image(args.n_time, args.seed + 1000, cfg, args.true_type)
    if args.dump:
        df.to_parquet(args.dump, index=False)
    pd.set_option("display.width", 160)
    print(summary(df, ms).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    ok = df[df.accepted]
    print("\nby scene (median center px / radius % / accepted %):")
    by = df.groupby(["polarity", "core_visible_true"]).agg(
        n=("accepted", "size"), accepted=("accepted", "mean")
    )
    by["center_px"] = ok.groupby(["polarity", "core_visible_true"]).center_err_px.median()
    by["radius_pct"] = ok.groupby(["polarity", "core_visible_true"]).radius_err_pct.median()
    print(by.to_string(float_format=lambda v: f"{v:.3f}"))
    print("\nby true fiber type (band_um: the cladding zone's radial width; loss_per_0.1pct: the"
          "\ncladding IoU a 0.1 % radius error costs, moving both of the band's borders):")
    print(by_fiber_type(ok, cfg).to_string(float_format=lambda v: f"{v:.3f}"))
    rejected = df[~df.accepted]
    if len(rejected):
        print("\nrejected:", "; ".join(f"{r.image_id} ({r.reason})" for r in rejected.itertuples()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
