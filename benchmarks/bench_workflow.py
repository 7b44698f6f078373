"""Workflow benchmark (issue 2 item 8): in-process time per step vs the workflow.

Generates N end faces, does their product work in this process (one core: the pure
functions the workflow's jobs call, see :func:`reference_images`), then runs the whole
workflow on the same folder with ``snakemake --cores C`` and prints both with the
overhead ratio ``end-to-end / (in-process work / C)``.

    python benchmarks/bench_workflow.py --n 20 --cores 2
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, folder_bench_args, fresh_synth_folder, load_config  # noqa: E402

from fiberprep import clustering, grading, pipeline  # noqa: E402
from fiberprep import io as fio  # noqa: E402


class Clock:
    """Wall and CPU seconds of the steps of the reference, summed by step."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, step: str):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall[step] = self.wall.get(step, 0.0) + time.perf_counter() - wall
        self.cpu[step] = self.cpu.get(step, 0.0) + time.process_time() - cpu


def reference_images(inputs: pd.DataFrame, cfg: dict, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The per-image product work of the workflow done in this process, timed per image.

    What one Python process needs to produce the workflow's outputs of these images,
    without a workflow: decode each image once; zones, defects and features
    (``pipeline.measure_zones``, ``find_defects``, ``measure_features``, the pure
    functions the stage jobs call); then, with each defect's type and severity
    (:func:`reference_labels`), the image's IEC grade and its dataset files
    (``pipeline.dataset_image``: PNGs, masks, overlay, patches, Zarr chunks, COCO),
    written under ``out``. No per-image cache is read or written (that is workflow
    overhead, paid for incremental runs).

    Returns
    -------
    seconds : pandas.DataFrame
        One row per image: wall seconds of ``decode``, ``zones``, ``defects``,
        ``features``, ``datasets`` and their ``cpu_`` twins (process time).
    features : pandas.DataFrame
        The feature table of all defects (as the ``features`` jobs write it).
    labels : dict
        Wall and CPU seconds of :func:`reference_labels` on ``features``.
    """
    params = pipeline.stage_params(cfg)
    io = cfg["io"]
    level = int(cfg["datasets"]["png_compression"])
    render = {"png": level, "margin": int(cfg["library"]["margin_px"]),
              "zarr": int(cfg["datasets"]["zarr_zstd_level"]) if cfg["datasets"]["zarr"] else None,
              "yolo": bool(cfg["export"]["yolo_seg"])}
    analysed, clocks = [], []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core, as in the workflow's pool workers
    for image in inputs.to_dict("records"):
        clock = Clock()
        iid = image["image_id"]
        try:
            with clock("decode"):
                gray, display, _ = fio.load_image(image["source_path"], io["max_pixels"], io["min_side_px"])
            with clock("zones"):
                geometry, zone_map = pipeline.measure_zones(gray, params["zones"])
            with clock("defects"):
                inst, table = pipeline.find_defects(gray, zone_map, geometry, params["defects"], iid)
            with clock("features"):
                feats, _ = pipeline.measure_features(gray, zone_map, inst, table, geometry,
                                                     params["features"], iid)
        except fio.ImageRejected:
            continue
        analysed.append((iid, display, zone_map, inst, feats, geometry["fiber_type"]))
        clocks.append(clock)
    features = pipeline.concat_tables([a[4] for a in analysed], pipeline.FEATURE_TABLE_COLUMNS)
    typed, labels = reference_labels(features, cfg)
    by_image = dict(tuple(typed.groupby("image_id"))) if len(typed) else {}
    for (iid, display, zone_map, inst, feats, fiber_type), clock in zip(analysed, clocks):
        with clock("datasets"):
            d = by_image.get(iid, typed.iloc[:0])
            criteria = cfg["criteria"][cfg["fiber_types"][fiber_type]["criteria"]]
            grading.grade_image(d, criteria, grading.zone_verdicts(d, criteria))
            files = pipeline.dataset_image(display, zone_map, inst, d, render)
            for name in ("image", "zone_mask", "defect_mask", "instance_mask", "overlay"):
                fio.write_bytes(out / name / f"{iid}.png", files[name])
            for k, data in enumerate(files["patches"]):
                fio.write_bytes(out / "patches" / f"{iid}_{k}.png", data)
            for a, data in files["chunks"].items():
                fio.write_bytes(out / "chunks" / f"{iid}_{a}.zst", data)
    cv2.setNumThreads(threads)
    rows = [{"image_id": a[0], **c.wall, **{f"cpu_{k}": v for k, v in c.cpu.items()}}
            for a, c in zip(analysed, clocks)]
    return pd.DataFrame(rows), features, labels


def reference_labels(features: pd.DataFrame, cfg: dict) -> tuple[pd.DataFrame, dict]:
    """The gather work of the reference: fit the cluster model on all defects, assign
    each its cluster, type (automatic names) and severity. Returns the typed table and
    ``{"wall": s, "cpu": s}``."""
    wall, cpu = time.perf_counter(), time.process_time()
    model = clustering.fit_model(features, cfg["clustering"])
    pickle.dumps(model)
    typed = features.assign(cluster=clustering.assign_clusters(model, features))
    typed["type"] = clustering.apply_review(typed["cluster"], model, None)
    typed = typed.join(grading.severity(typed, cfg["severity"]))
    return typed, {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def run_workflow(images: Path, out: Path, cores: int) -> float:
    """Wall-clock seconds of a fresh ``snakemake --cores`` run on ``images``."""
    cfg = out / "config.yaml"
    cfg.write_text(yaml.safe_dump({
        "input_dir": str(images), "results_dir": str(out / "results"),
        "cluster_review": str(out / "cluster_review.yaml")}))
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile",
           "config/config.yaml", str(cfg)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"workflow failed:\n{done.stderr[-3000:]}")
    return seconds


STEPS = ("decode", "zones", "defects", "features", "datasets")


def main(argv=None) -> int:
    args = folder_bench_args(argv, __doc__.split("\n")[0], 20, "demo", "workflow")
    cfg = load_config()
    out = Path(args.out)
    images = fresh_synth_folder(out, args.n, args.seed, args.preset, cfg)
    inputs = fio.scan_inputs(images, cfg["extensions"])

    steps, _, labels = reference_images(inputs, cfg, out / "reference")
    wall = run_workflow(images, out, args.cores)

    per_image = steps[list(STEPS)].sum(axis=1)
    work = float(per_image.sum()) + labels["wall"]
    ideal = work / args.cores
    sizes = inputs["size_bytes"].sum() / 1e6
    print(f"{args.n} images ({args.preset} preset, {sizes:.1f} MB), --cores {args.cores}\n")
    print("| step (in process, one core) | ms/image (median) | ms/image (mean) |")
    print("|---|---:|---:|")
    for step in STEPS:
        print(f"| {step} | {1e3 * steps[step].median():.0f} | {1e3 * steps[step].mean():.0f} |")
    print(f"| all per-image steps | {1e3 * per_image.median():.0f} | {1e3 * per_image.mean():.0f} |")
    print(f"| cluster fit, assign, types, severity (all) | | {1e3 * labels['wall'] / args.n:.0f} |")
    print()
    print("| measure | seconds |")
    print("|---|---:|")
    print(f"| in-process work (1 core) | {work:.1f} |")
    print(f"| ideal on {args.cores} cores | {ideal:.1f} |")
    print(f"| workflow end to end, --cores {args.cores} | {wall:.1f} |")
    print(f"| overhead ratio (end-to-end / ideal) | {wall / ideal:.2f} |")
    print("\nThe in-process work decodes each image once and writes only the final per-image"
          " files; the workflow also keeps the per-image cache and writes the gathered"
          " tables, library and report.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
