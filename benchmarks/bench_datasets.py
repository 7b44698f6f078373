"""Dataset assembly benchmark (issue 6 item 7): the downstream rules alone, at scale.

Generates N end faces, writes the per-image intermediates the upstream stages would
leave (zone and instance maps, defect and feature tables) from the generator's ground
truth, and a cluster model and review file that give every defect its true type (the
feature tables carry one tight, well-separated blob per true type in the clustering
features; each cluster is reviewed as its blob's type), so only assembly is timed
(``dataset_shard`` labels with them), then runs the assembly rules
(``dataset_shard``, ``dataset_tables``, ``dataset_zarr``,
``report`` with the library index) with ``snakemake --cores C --allowed-rules ...``:

With ``--pool P`` only P images are generated and the folder holds N names for them
(hard links; every name is an image of its own to the workflow).

1. a full assembly (every file written),
2. an incremental one after the review retyped the smallest cluster (the images with a
   defect in it must be rewritten, every other image's files left alone).

    python benchmarks/bench_datasets.py --n 1000 --cores 2
"""

from __future__ import annotations

import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, folder_bench_args, fresh_synth_folder, load_config  # noqa: E402

from fiberprep import cache, clustering, pipeline, sharding  # noqa: E402
from fiberprep import io as fio  # noqa: E402

RULES = ["dataset_shard", "dataset_tables", "dataset_zarr", "report"]


def fake_upstream(synth_dir: Path, results: Path, cfg: dict, review_path: Path) -> pd.DataFrame:
    """Intermediates of every image from the generator's truth (what zones, defects,
    features and the cluster fit would write if they were exact). Returns the defect
    types."""
    inter = results / "intermediate"
    truth = pd.read_parquet(synth_dir / "truth" / "images.parquet").set_index("image_id")
    defects = pd.read_parquet(synth_dir / "truth" / "defects.parquet")
    scanned = fio.scan_inputs(synth_dir / "images", cfg["extensions"])
    n_shards = sharding.shard_count(len(scanned), cfg["shards"], cfg["min_images_per_shard"])
    inputs = sharding.assign_shards(scanned, n_shards)
    upp = defects["image_id"].map(truth["um_per_px"])
    defects["area_um2"] = defects["area_px"] * upp**2
    defects = defects.rename(columns={"class_name": "cluster_type"}).drop(columns=["type"])
    defects = truth_blobs(defects, cfg["clustering"])
    fake_clustering(defects, cfg["clustering"], results / "clustering" / "model.pkl", review_path)
    for shard, rows in inputs.groupby("shard"):
        k = f"{shard:03d}"
        images = rows.drop(columns=["shard", "mtime_ns"]).assign(status="ok", reason="", format="PNG")
        images["checksum"] = [fio.file_checksum(p) for p in images["source_path"]]
        geo = truth.loc[images["image_id"], ["center_x", "center_y", "cladding_radius_px", "core_radius_px",
                                            "core_offset_px", "core_offset_um", "um_per_px", "width", "height",
                                            "fiber_type"]]
        images = pd.concat([images.reset_index(drop=True), geo.reset_index(drop=True)], axis=1)
        # the type the zones stage may give (an APC truth is graded as the first candidate)
        names = pipeline.fiber_type_names(cfg["fiber"])
        images["fiber_type"] = images["fiber_type"].where(images["fiber_type"].isin(names), names[0])
        fio.write_parquet(images, inter / "features" / f"images_shard_{k}.parquet")
        sel = defects[defects["image_id"].isin(images["image_id"])].drop(columns=["cluster_type"])
        fio.write_parquet(sel, inter / "defects" / f"shard_{k}.parquet")
        fio.write_parquet(sel, inter / "features" / f"shard_{k}.parquet")
        zone_rows = []
        for r in images.itertuples():
            folder = cache.image_dir(inter, r.image_id)
            zone_map = cv2.imread(str(synth_dir / "truth" / "zone_masks" / f"{r.image_id}.png"), cv2.IMREAD_UNCHANGED)
            inst = cv2.imread(str(synth_dir / "truth" / "instance_masks" / f"{r.image_id}.png"), cv2.IMREAD_UNCHANGED)
            cache.write_array(folder / pipeline.ARRAY_FILES["zone_map"], zone_map)
            cache.write_array(folder / pipeline.ARRAY_FILES["instance_map"], inst)
            cache.write_record(folder / "defects.json", {"image_id": r.image_id, "status": "ok", "key": r.checksum})
            counts = np.bincount(zone_map.ravel(), minlength=6)
            zone_rows += [{"image_id": r.image_id, "zone": z, "area_px": int(counts[z])} for z in range(1, 6) if counts[z]]
        fio.write_parquet(pd.DataFrame(zone_rows), inter / "features" / f"zones_shard_{k}.parquet")
    return defects


def replicate(pool: Path, out: Path, n: int) -> None:
    """A generated folder of ``n`` images from a pool of generated ones: image ``i`` is
    pool image ``i mod P`` under the id ``rep_<i>`` (files hard-linked, truth rows
    copied with the new ids), so a large assembly needs only P images generated."""
    truth = pd.read_parquet(pool / "truth" / "images.parquet")
    defects = pd.read_parquet(pool / "truth" / "defects.parquet")
    files = {p.stem: p for p in (pool / "images").iterdir()}
    ids = truth["image_id"].tolist()
    rows, drows = [], []
    for i in range(n):
        src, new = ids[i % len(ids)], f"rep_{i:05d}"
        for kind, path in (("images", files[src]),
                           ("truth/zone_masks", pool / "truth" / "zone_masks" / f"{src}.png"),
                           ("truth/instance_masks", pool / "truth" / "instance_masks" / f"{src}.png")):
            (out / kind).mkdir(parents=True, exist_ok=True)
            os.link(path, out / kind / f"{new}{path.suffix}")
        rows.append(truth[truth["image_id"] == src].assign(image_id=new, file=f"{new}{files[src].suffix}"))
        d = defects[defects["image_id"] == src].assign(image_id=new)
        drows.append(d.assign(defect_id=[f"{new}#{k}" for k in d["number"]]))
    fio.write_parquet(pd.concat(rows, ignore_index=True), out / "truth" / "images.parquet")
    fio.write_parquet(pd.concat(drows, ignore_index=True), out / "truth" / "defects.parquet")


def truth_blobs(defects: pd.DataFrame, params: dict) -> pd.DataFrame:
    """``defects`` with every clustering feature set to a tight blob per true type:
    type ``i`` (of the sorted names) at ``0.5 (i + 1)`` with a spread of 0.01, values
    that no configured transform saturates (the scaler would blow up the noise of a
    saturated column)."""
    codes = defects["cluster_type"].map({t: i for i, t in enumerate(sorted(set(defects["cluster_type"])))})
    rng = np.random.default_rng(0)
    blobs = {f: 0.5 * (codes.to_numpy() + 1) + rng.normal(0, 0.01, len(defects)) for f in params["features"]}
    return defects.drop(columns=[f for f in blobs if f in defects]).assign(**blobs)


def fake_clustering(defects: pd.DataFrame, params: dict, model_path: Path, review_path: Path) -> None:
    """A cluster model fitted on the truth blobs (``clustering.fit_model``) and a review
    file naming each cluster after its blob's true type."""
    model = clustering.fit_model(defects, params)
    found = pd.DataFrame({"cluster": clustering.assign_clusters(model, defects), "type": defects["cluster_type"]})
    review = {int(c): {"type": rows["type"].mode().iloc[0]} for c, rows in found.groupby("cluster")}
    fio.write_bytes(model_path, pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    fio.write_bytes(review_path, yaml.safe_dump(review).encode("utf-8"))


def run(results: Path, images: Path, cores: int, cfg_path: Path) -> tuple[float, float]:
    """Wall-clock and CPU (user + system, all processes) seconds of one ``snakemake``
    run of the assembly rules. CPU seconds do not grow when other work shares the
    machine; wall-clock seconds do."""
    targets = [results / "datasets" / "README.md", results / "defect_library" / "index.parquet",
               results / "qc" / "report.html", results / "datasets" / "pixel_level" / ".dataset.zarr.done"]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", "config/config.yaml",
           str(cfg_path), "--allowed-rules", *RULES, "--", *map(str, targets)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"workflow failed:\n{done.stderr[-4000:]}")
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def rewritten(results: Path) -> int:
    """Images whose dataset files the last run wrote (from the shard logs)."""
    total = 0
    for log in (results / "logs" / "datasets").glob("shard_*.log"):
        hits = re.findall(r"datasets: \d+ images, (\d+) rewritten", log.read_text())
        total += int(hits[-1]) if hits else 0
    return total


def main(argv=None) -> int:
    args = folder_bench_args(argv, __doc__.split("\n")[0], 1000, "bench", "datasets",
                             pool=True)
    cfg = load_config()
    out = Path(args.out)
    start = time.perf_counter()
    if args.pool and args.pool < args.n:
        shutil.rmtree(out, ignore_errors=True)
        fresh_synth_folder(out / "pool", args.pool, args.seed, args.preset, cfg)
        replicate(out / "pool" / "synth", out / "synth", args.n)
    else:
        fresh_synth_folder(out, args.n, args.seed, args.preset, cfg)
    results = out / "results"
    review = out / "cluster_review.yaml"
    defects = fake_upstream(out / "synth", results, cfg, review)
    prep = time.perf_counter() - start
    cfg_path = out / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"input_dir": str(out / "synth" / "images"), "results_dir": str(results),
                                        "cluster_review": str(out / "cluster_review.yaml")}))
    for log in (results / "logs").rglob("*.log"):
        log.unlink()

    full, full_cpu = run(results, out / "synth" / "images", args.cores, cfg_path)
    n_full = rewritten(results)
    for log in (results / "logs").rglob("*.log"):
        log.unlink()
    types = pd.concat(map(pd.read_parquet, sorted((results / "intermediate" / "labels").glob("*.parquet"))))
    wrong = (types["type"] != types["defect_id"].map(dict(zip(defects["defect_id"], defects["cluster_type"])))).sum()
    if wrong:
        print(f"warning: the fake clustering gave {wrong} of {len(types)} defects another type than the truth")
    cluster = int(types["cluster"].value_counts().index[-1])  # the smallest cluster
    old = types.loc[types["cluster"] == cluster, "type"].iloc[0]
    entries = yaml.safe_load(review.read_text())
    entries[cluster] = {"type": "chip" if old != "chip" else "scratch"}
    review.write_text(yaml.safe_dump(entries))
    expected = types.loc[types["cluster"] == cluster, "image_id"].nunique()
    incr, incr_cpu = run(results, out / "synth" / "images", args.cores, cfg_path)
    n_incr = rewritten(results)

    mpix = sum(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).size for f in sorted((out / "synth" / "images").iterdir())) / 1e6
    pool = f", {args.pool} distinct" if args.pool and args.pool < args.n else ""
    print(f"{args.n} images ({args.preset} preset{pool}, {mpix:.0f} Mpixel, {len(types)} defects), "
          f"--cores {args.cores}; set-up (generation + fake upstream) {prep:.0f} s\n")
    load = os.getloadavg()[0]
    print("| run | wall s | wall ms/image | CPU s | CPU ms/image | images rewritten |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, wall, cpu, n in (("full assembly", full, full_cpu, n_full),
                               (f"after one cluster retyped ({expected} images to rewrite)", incr, incr_cpu,
                                n_incr)):
        print(f"| {name} | {wall:.1f} | {1e3 * wall / args.n:.0f} | {cpu:.1f} | {1e3 * cpu / args.n:.0f} | {n} |")
    print(f"\n1-minute load average at the end: {load:.1f} on {os.cpu_count()} cores "
          "(wall-clock figures grow with other work on the machine, CPU figures do not)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
