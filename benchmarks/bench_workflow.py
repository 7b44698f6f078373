"""Workflow benchmark (issue 2 item 8): in-process time per stage vs the workflow.

Generates N end faces, times each per-image stage in this process (one core, the same
functions and per-image files the shard jobs use, cold cache), then runs the whole
workflow on the same folder with ``snakemake --cores C`` and prints both with the
overhead ratio ``end-to-end / (sum of per-image stage times / C)``.

    python benchmarks/bench_workflow.py --n 20 --cores 2
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, folder_bench_args, fresh_synth_folder, load_config  # noqa: E402

from fiberprep import clustering, pipeline  # noqa: E402
from fiberprep import io as fio  # noqa: E402


def time_stages(inputs: pd.DataFrame, cfg: dict, root: Path) -> pd.DataFrame:
    """Seconds per image of each per-image stage, run in this process."""
    params = pipeline.stage_params(cfg)
    rows = []
    for image in inputs.to_dict("records"):
        row = {"image_id": image["image_id"]}
        start = time.perf_counter()
        fio.load_image(image["source_path"], cfg["io"]["max_pixels"], cfg["io"]["min_side_px"])
        row["decode"] = time.perf_counter() - start
        start = time.perf_counter()
        record = pipeline.zones_image(image, params["zones"], str(root))
        row["zones"] = time.perf_counter() - start
        if record["status"] == "ok":
            start = time.perf_counter()
            pipeline.defects_image(record, params["defects"], str(root))
            row["defects"] = time.perf_counter() - start
            start = time.perf_counter()
            pipeline.features_image(record, params["features"], str(root))
            row["features"] = time.perf_counter() - start
        rows.append(row)
    return pd.DataFrame(rows).fillna(0.0)


def time_clustering(root: Path, cfg: dict) -> float:
    """Seconds to fit, save and assign the cluster model on all defects."""
    tables = [pd.read_parquet(p) for p in sorted(root.glob("images/*/features.parquet"))]
    features = pipeline.concat_tables(tables)
    start = time.perf_counter()
    model = clustering.fit_model(features, cfg["clustering"])
    pickle.dumps(model)
    clustering.assign_clusters(model, features)
    return time.perf_counter() - start


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


def main(argv=None) -> int:
    args = folder_bench_args(argv, __doc__.split("\n")[0], 20, "demo", "workflow")
    cfg = load_config()
    out = Path(args.out)
    images = fresh_synth_folder(out, args.n, args.seed, args.preset, cfg)
    inputs = fio.scan_inputs(images, cfg["extensions"])

    stages = time_stages(inputs, cfg, out / "inprocess")
    cluster_s = time_clustering(out / "inprocess", cfg)
    wall = run_workflow(images, out, args.cores)

    per_image = stages[["zones", "defects", "features"]].sum(axis=1)
    work = float(per_image.sum()) + cluster_s
    ideal = work / args.cores
    sizes = inputs["size_bytes"].sum() / 1e6
    print(f"{args.n} images ({args.preset} preset, {sizes:.1f} MB), --cores {args.cores}\n")
    print("| stage | ms/image (median) | ms/image (mean) |")
    print("|---|---:|---:|")
    for stage in ("decode", "zones", "defects", "features"):
        print(f"| {stage} | {1e3 * stages[stage].median():.0f} | {1e3 * stages[stage].mean():.0f} |")
    print(f"| zones+defects+features | {1e3 * per_image.median():.0f} | {1e3 * per_image.mean():.0f} |")
    print(f"| clustering fit+assign (all) | | {1e3 * cluster_s / args.n:.0f} |")
    print()
    print("| measure | seconds |")
    print("|---|---:|")
    print(f"| in-process work (1 core) | {work:.1f} |")
    print(f"| ideal on {args.cores} cores | {ideal:.1f} |")
    print(f"| workflow end to end, --cores {args.cores} | {wall:.1f} |")
    print(f"| overhead ratio (end-to-end / ideal) | {wall / ideal:.2f} |")
    print("\nzones/defects/features include decoding and writing the per-image files;"
          " dataset assembly, library and report run only in the workflow.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
