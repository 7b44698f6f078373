"""Workflow scale benchmark (issue 7): 1 000 to 100 000 images.

The folders hold a small pool of generated end faces under many names (hard links, so
100 000 images take the disk space of the pool; each name is a separate image to the
workflow and is processed as one). For each size it measures and prints:

* dry run: wall time and peak memory (max RSS) of ``snakemake -n``, and jobs planned;
* end to end (``--end-to-end`` sizes): wall time of ``snakemake --cores C`` on a fresh
  results folder, and the overhead ratio = end-to-end / ideal. The ideal is the
  product work of the run done in one Python process, divided by C: for every image,
  decode once, zones, defects, features and its dataset files (PNGs, masks, overlay,
  patches, Zarr chunks, COCO; ``bench_workflow.reference_images``, measured on the
  pool images just before and just after the run, the mean times N / pool), plus the
  gather work on N images' defects (cluster fit, assign, types, severity;
  ``bench_workflow.reference_labels``), in a process with the allocator settings every
  job has (``pipeline.keep_freed_memory``: without them the reference pays ~13 ms of
  page faults per image that the jobs do not, and the ratio would flatter the
  workflow). Everything else
  the workflow does is overhead: job start-up and imports, the per-image cache, shard
  tables, Snakemake itself, and the gathered tables, library and report (small, and
  done once). Three readings: wall (end-to-end / ideal, a quiet machine), in-run
  (the per-image seconds the run itself recorded in its cache records, same load as
  the run, + the gather reference) and CPU (CPU seconds of the whole process tree /
  CPU seconds of the reference: the least sensitive to other load);
* a run cut off (a session's end at 100 000 images) continues with ``--resume``: each
  end-to-end run saves its progress (``run_N.json`` in ``--out``) every 5 s, and its
  time is the sum of its segments (``end_to_end``);
* add one image (``--add-one`` sizes, after their end-to-end run): jobs planned by
  rule, and wall time of the run that processes it, against the full run;
* threads (issue 7 item 4): one shard of ``--thread-images`` images through zones ->
  defects -> features in this process as a shard job runs it, with 1 and ``--cores``
  workers: throughput ratio;
* job memory: peak RSS of each job (script process + pool workers) in a run on the
  real photos (``--memory-folder``; the generated pool when absent), for the
  ``mem_mb`` of ``profiles/slurm``;
* gather memory (issue 7 item 5, issue 8 item 6): feature and defect shard tables of
  ``--gather-defects`` defects (each size in turn, resampled from the pool's own
  defects over ``--gather-shards`` shards), then the gather rules (cluster_fit, then
  defect_types on the shards' label tables, which the dataset_shard jobs would write:
  here this process writes them, ``pipeline.label_defects``) run by Snakemake on them;
  peak RSS of each job and the time of the two runs.

    python benchmarks/bench_scale.py                      # make bench-scale (hours)
    python benchmarks/bench_scale.py --sizes 1000 --end-to-end 1000 --add-one 1000 \
        --gather-defects 200000 --memory-folder ''        # a shorter check

Timings depend on the machine's load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import psutil  # a Snakemake dependency
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_workflow import STEPS, reference_images, reference_labels  # noqa: E402
from common import ROOT, load_config  # noqa: E402

from fiberprep import io as fio  # noqa: E402
from fiberprep import pipeline, sharding, synth  # noqa: E402

SIZE = {"width": 480, "height": 360}  # small frames that still hold a 125 µm cladding


def run_measured(cmd: list[str], log: Path, watch=None, **kwargs) -> dict:
    """Run ``cmd`` (in the project folder), logging to ``log``; wall seconds, CPU
    seconds (user + system, whole process tree: less sensitive to a loaded machine than
    wall time), peak RSS (MB) of the largest process in the tree, and exit code.
    ``watch(pid, start, stop)``, when given, runs in a thread while the command does
    (``stop``: a ``threading.Event`` set when it has ended)."""
    with open(log, "w", encoding="utf-8") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        stop = threading.Event()
        watcher = watch and threading.Thread(target=watch, args=(proc.pid, start, stop), daemon=True)
        if watcher:
            watcher.start()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stop.set()
        if watcher:
            watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024, "rc": proc.returncode}


def snakemake(cfg: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "config/config.yaml",
            str(cfg), *args]


def job_counts(log: Path) -> dict[str, int]:
    """Jobs by rule from Snakemake's "Job stats" table (empty when nothing to do)."""
    table = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\n\s*total", log.read_text(), re.S)
    if table is None:
        return {}
    return {rule: int(n) for rule, n in (line.split() for line in table.group(1).splitlines())}


def checked(result: dict, log: Path, what: str) -> dict:
    if result["rc"] != 0:
        sys.exit(f"{what} failed (exit {result['rc']}); see {log}:\n"
                 + log.read_text()[-3000:])
    return result


def recorded_seconds(results: Path) -> float:
    """Sum of the per-image seconds the run itself recorded (``seconds`` in each
    image's zones, defects, features and datasets record): the in-process work under
    the run's own load."""
    total = 0.0
    for record in (results / "intermediate" / "images").glob("*/*.json"):
        if record.stem in ("zones", "defects", "features", "datasets"):
            total += json.loads(record.read_text()).get("seconds", 0.0)
    return total


def reference_per_image(work: Path, cfg: dict) -> tuple[pd.DataFrame, pd.DataFrame, float, float]:
    """The reference on the pool images (``bench_workflow.reference_images``): per-image
    seconds by step, the feature table, and the mean wall and CPU seconds per image."""
    steps, features, _ = reference_images(
        fio.scan_inputs(work / "pool" / "images", cfg["extensions"]), cfg, work / "reference")
    return (steps, features, float(steps[list(STEPS)].sum(axis=1).mean()),
            float(steps[[f"cpu_{s}" for s in STEPS]].sum(axis=1).mean()))


def reference_gather(features: pd.DataFrame, pool: int, n: int, cfg: dict) -> dict:
    """Wall and CPU seconds of the reference's gather work on the defects of ``n``
    images: the pool's feature rows repeated to n / pool times their number."""
    rows = round(len(features) * n / pool)
    table = pd.concat([features] * -(-n // pool), ignore_index=True).iloc[:rows]
    return reference_labels(table, cfg)[1]


def make_folder(folder: Path, pool: list[Path], n: int) -> None:
    """Exactly ``n`` names for the pool images (hard links), ``img_000000`` ... in
    ``folder`` (files a previous run added are removed)."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"img_{i:06d}{pool[i % len(pool)].suffix}" for i in range(n)}
    for extra in [p for p in folder.iterdir() if p.name not in wanted]:
        extra.unlink()
    have = {p.name for p in folder.iterdir()}
    for i in range(n):
        src = pool[i % len(pool)]
        name = f"img_{i:06d}{src.suffix}"
        if name not in have:
            os.link(src, folder / name)


SHARDS: dict = {}  # {"shards": n} when --shards is given: every run's config carries it


def write_config(path: Path, inputs: Path, results: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump({
        "input_dir": str(inputs), "results_dir": str(results),
        "cluster_review": str(results.parent / f"{results.name}_review.yaml"), **SHARDS,
        **overrides}))
    return path


def dry_run(cfg: Path, log: Path) -> dict:
    """A dry run's wall and CPU seconds, jobs by rule, and Snakemake's own peak memory
    (``max_rss_mb``: its high-water RSS, :func:`snakemake_hwm`; the child's ``ru_maxrss``
    would count the pages it shared with this process between fork and exec)."""
    peak = [0.0]
    result = checked(run_measured(snakemake(cfg, "--dry-run", "--cores", "2"), log,
                                  watch=lambda pid, start, stop: snakemake_hwm(pid, stop, peak)),
                     log, "dry run")
    result["max_rss_mb"] = peak[0]
    result["jobs"] = job_counts(log)
    return result


def snakemake_hwm(pid: int, stop: threading.Event, peak: list[float]) -> None:
    """Until ``stop``, every 20 ms: the high-water RSS (``VmHWM``, MB) of process ``pid``
    once it runs Snakemake (after its exec), kept as ``peak[0]``. The mark only rises, so
    a sample misses at most the growth of the process's last 20 ms."""
    while not stop.is_set():
        try:
            if b"snakemake" in Path(f"/proc/{pid}/cmdline").read_bytes():
                status = Path(f"/proc/{pid}/status").read_text()
                kb = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
                if kb:
                    peak[0] = max(peak[0], int(kb.group(1)) / 1024)
        except OSError:
            return
        stop.wait(0.02)


HEARTBEAT_S = 5.0  # how often a running end-to-end segment saves its progress


def end_to_end(cfg: Path, cores: int, log: Path, state: dict | None = None,
               state_path: Path | None = None) -> dict:
    """Wall and CPU seconds of ``snakemake --cores`` on the config's folder.

    With ``state`` (a dict saved to ``state_path`` as JSON) the run is one segment of a
    run that may be cut off (a session's end) and resumed: every ``HEARTBEAT_S`` the
    segment's wall seconds so far and its process tree's CPU seconds are saved, so a
    segment killed outright still counts up to its last heartbeat (at most
    ``HEARTBEAT_S`` of it is lost). A resumed run first
    releases the cut-off run's lock and reruns its incomplete jobs; the shard jobs skip
    every image whose per-image cache record is complete. The run's time is then the sum
    of its segments, each restart's overhead included: an upper bound of one
    uninterrupted run. Returns the totals and the number of segments.
    """
    if state is None:
        return checked(run_measured(snakemake(cfg, "--cores", str(cores)), log), log, "run")
    segments = state.setdefault("segments", [])
    args = ["--cores", str(cores)]
    if segments:
        unlock = log.with_name(f"{log.stem}_unlock.log")
        checked(run_measured(snakemake(cfg, "--unlock"), unlock), unlock, "unlock")
        args.append("--rerun-incomplete")
        log = log.with_name(f"{log.stem}_{len(segments)}{log.suffix}")
    segment = {"log": log.name, "seconds": 0.0, "cpu_seconds": 0.0, "done": False}
    segments.append(segment)

    def save():
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_path)

    def heartbeat(pid, start, stop):
        while not stop.wait(HEARTBEAT_S):
            cpu = _tree_cpu_seconds(pid)
            segment["seconds"] = time.perf_counter() - start
            segment["cpu_seconds"] = cpu if cpu is not None else segment["cpu_seconds"]
            save()

    save()
    run = checked(run_measured(snakemake(cfg, *args), log, watch=heartbeat), log, "run")
    segment.update(seconds=run["seconds"], cpu_seconds=run["cpu_seconds"], done=True)
    state["done"] = True
    save()
    return {"seconds": sum(g["seconds"] for g in segments),
            "cpu_seconds": sum(g["cpu_seconds"] for g in segments),
            "segments": len(segments)}


def _tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds so far of process ``pid`` and all its descendants: each live process's
    own and its ended (reaped) children's. None when ``pid`` has ended."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:  # ended since listed: its parent has (or will) count it
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def unfinished_run(state_path: Path) -> dict | None:
    """The saved state of an end-to-end run that was cut off, else None."""
    if not state_path.exists():
        return None
    state = json.loads(state_path.read_text())
    return None if state.get("done") else state


def threads_speedup(work: Path, pool: list[Path], n: int, cores: int, cfg: dict) -> dict:
    """Seconds for one shard's zones -> defects -> features (``pipeline.run_chain``: the
    three stage jobs' pools, in order) over ``n`` images,
    with ``cores`` workers and with 1, in a fresh process: wall seconds, CPU seconds
    (the same with and without the pool when it adds no work; under other load the
    wall ratio falls short of what the CPU figures allow) and the wall speedup."""
    folder = work / "threads_inputs"
    make_folder(folder, pool, n)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
        seconds = fresh.submit(_time_shard_chain, work, folder, (cores, 1), cfg).result()
    return {"images": n, "seconds_1": seconds[1][0], f"seconds_{cores}": seconds[cores][0],
            "cpu_seconds_1": seconds[1][1], f"cpu_seconds_{cores}": seconds[cores][1],
            "speedup": seconds[1][0] / seconds[cores][0]}


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _time_shard_chain(work: Path, folder: Path, workers: tuple, cfg: dict) -> dict:
    pipeline.keep_freed_memory()  # as a job's log_to does
    pipeline.one_math_thread()
    images = fio.scan_inputs(folder, cfg["extensions"]).to_dict("records")
    params = pipeline.stage_params(cfg)
    for modules in pipeline.STAGE_MODULES.values():  # imported before either timing (job start-up)
        for module in modules:
            importlib.import_module(module)
    seconds = {}
    for threads in workers:
        root = str(work / f"threads_{threads}")
        shutil.rmtree(root, ignore_errors=True)
        start, cpu = time.perf_counter(), _cpu_seconds()
        pipeline.run_chain(images, params, root, threads)
        seconds[threads] = (time.perf_counter() - start, _cpu_seconds() - cpu)
        shutil.rmtree(root, ignore_errors=True)
    return seconds


def peak_job_memory(cmd: list[str], log_path: Path) -> tuple[dict[str, float], dict]:
    """Run ``cmd`` (a Snakemake run) and sample, every 0.1 s, the memory of each job:
    the RSS summed over its script process and that process's children (the shard
    pool's workers), what SLURM counts against ``--mem``. Returns the peak MB by script
    name (the rule's name for this workflow's scripts) and the run's wall/CPU figures."""
    peaks: dict[str, float] = {}
    with open(log_path, "w", encoding="utf-8") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        top = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = top.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for job in tree:
                try:
                    script = next((a for a in job.cmdline() if "/.snakemake/scripts/" in a), None)
                    if script is None:
                        continue
                    rss = job.memory_info().rss + sum(
                        c.memory_info().rss for c in job.children(recursive=True))
                except psutil.Error:
                    continue
                name = Path(script).name.split(".", 1)[1].removesuffix(".py")
                peaks[name] = max(peaks.get(name, 0.0), rss / 2**20)
            time.sleep(0.1)
    if proc.returncode != 0:
        sys.exit(f"run failed; see {log_path}:\n" + log_path.read_text()[-3000:])
    return dict(sorted(peaks.items())), {"seconds": time.perf_counter() - start}


def job_memory(work: Path, folder: Path, cores: int) -> dict[str, float]:
    """Peak memory (MB) of each kind of job in a fresh run on ``folder``."""
    results = work / "memory_results"
    shutil.rmtree(results, ignore_errors=True)
    cfg = write_config(work / "memory.yaml", folder, results, threads_per_shard=cores)
    Path(yaml.safe_load(cfg.read_text())["cluster_review"]).unlink(missing_ok=True)
    return peak_job_memory(snakemake(cfg, "--cores", str(cores)), work / "memory.log")[0]


FIT_RULES = ["cluster_settings", "cluster_fit", "cluster_review"]
GATHER_RULES = [*FIT_RULES, "defect_types"]


def gather_memory(work: Path, pool: list[Path], feats: pd.DataFrame, n_defects: int,
                  n_shards: int) -> dict:
    """Peak memory of each gather job on ``n_defects`` defects in ``n_shards`` shards.

    A folder of 2 048 image names (hard links to the pool) gets feature and defect
    shard tables of ``n_defects`` rows resampled from the pool's own defects
    (``feats``: the reference's feature table); then Snakemake runs only the gather rules
    on them (``--allowed-rules``), one job at a time, and each job's peak RSS is
    sampled. Few shards keep the run short and make each per-shard job large.
    """
    base = work / f"gather_{n_defects}"
    shutil.rmtree(base, ignore_errors=True)
    inputs = work / "gather_inputs"
    make_folder(inputs, pool, 2048)
    results = base / "results"
    inter = results / "intermediate"
    if feats.empty:
        sys.exit("the pool images have no defects; cannot resample")
    scanned = fio.scan_inputs(inputs, load_config()["extensions"])
    shards = sharding.assign_shards(scanned, n_shards)
    rng = np.random.default_rng(0)
    per_image = -(-n_defects // len(scanned))
    total = 0
    for shard, rows in shards.groupby("shard"):
        ids = np.sort(rows["image_id"].to_numpy())
        n = min(per_image * len(ids), n_defects - total)
        f = feats.iloc[rng.integers(0, len(feats), n)].reset_index(drop=True)
        f["image_id"] = ids[np.arange(n) // per_image]
        f["number"] = np.arange(n) % per_image + 1
        f["defect_id"] = [f"{i}#{k}" for i, k in zip(f["image_id"], f["number"])]
        fio.write_parquet(f[pipeline.DEFECT_TABLE_COLUMNS], inter / "defects" / f"shard_{shard:03d}.parquet")
        fio.write_parquet(f, inter / "features" / f"shard_{shard:03d}.parquet")
        total += n
    del f
    conf = write_config(base / "gather.yaml", inputs, results, shards=n_shards,
                        min_images_per_shard=1)
    review = yaml.safe_load(conf.read_text())["cluster_review"]
    model = results / "clustering" / "model.pkl"
    peaks, fit = peak_job_memory(
        snakemake(conf, "--cores", "1", "--allowed-rules", *FIT_RULES, "--", str(model), review),
        base / "gather_fit.log")
    # the per-shard label tables the dataset_shard jobs write (each reads one shard)
    fitted = pickle.loads(model.read_bytes())
    reviewed = yaml.safe_load(Path(review).read_text(encoding="utf-8"))
    for path in sorted((inter / "features").glob("shard_*.parquet")):
        fio.write_parquet(pipeline.label_defects(pd.read_parquet(path), fitted, reviewed,
                                                 load_config()["severity"]),
                          inter / "labels" / path.name)
    merged, run = peak_job_memory(
        snakemake(conf, "--cores", "1", "--allowed-rules", "defect_types", "--",
                  str(results / "clustering" / "defect_types.parquet")),
        base / "gather.log")
    peaks.update(merged)
    return {"defects": total, "shards": int(shards["shard"].nunique()),
            "seconds": fit["seconds"] + run["seconds"],
            "peak_mb": {k: v for k, v in peaks.items() if k in GATHER_RULES}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000],
                   help="folder sizes for the dry run")
    p.add_argument("--end-to-end", type=int, nargs="*", default=[1000, 10000],
                   help="sizes also run end to end (and used for --add-one)")
    p.add_argument("--add-one", type=int, nargs="*", default=[1000, 10000],
                   help="sizes (run end to end) to which one image is added")
    p.add_argument("--pool", type=int, default=24, help="distinct generated images")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--shards", type=int, default=None,
                   help="override the config's shards (default: as configured)")
    p.add_argument("--thread-images", type=int, default=128,
                   help="images of the one-shard threads check (0: skip)")
    p.add_argument("--gather-defects", type=int, nargs="*", default=[200_000, 1_000_000],
                   help="defect counts of the gather memory check (none: skip)")
    p.add_argument("--gather-shards", type=int, default=16,
                   help="shards of the gather memory check")
    p.add_argument("--memory-folder", default=str(ROOT.parent / "shared" / "real_images"),
                   help="folder whose run measures each job's peak memory (the real "
                        "photos when present, else the generated pool; '' skips it)")
    p.add_argument("--out", default=str(ROOT / "bench_out" / "scale"))
    p.add_argument("--resume", action="store_true",
                   help="continue an end-to-end run that was cut off (its results and "
                        "saved state kept in --out); its time is the sum of the segments")
    args = p.parse_args(argv)
    pipeline.keep_freed_memory()  # as in every job: the reference measures the same allocator
    pipeline.one_math_thread()  # ... and one BLAS thread
    cfg = load_config()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "pool" / "images").is_dir():
        synth.write_dataset(work / "pool", args.pool, args.seed, cfg["fiber_types"],
                            cfg["criteria"], **SIZE)
    pool = sorted((work / "pool" / "images").iterdir())

    steps, features, per_image_s, per_image_cpu = reference_per_image(work, cfg)
    report = {"pool_images": len(pool), "per_image_ms": 1e3 * per_image_s,
              "per_image_cpu_ms": 1e3 * per_image_cpu,
              "per_image_steps_ms": {s: 1e3 * float(steps[s].mean()) for s in STEPS},
              "cores": args.cores, "shards": args.shards or cfg["shards"], "sizes": {}}
    if args.shards:
        SHARDS["shards"] = args.shards
    print(f"in-process per-image time: {1e3 * per_image_s:.0f} ms (CPU {1e3 * per_image_cpu:.0f} ms): "
          + ", ".join(f"{s} {v:.0f}" for s, v in report["per_image_steps_ms"].items()), flush=True)

    for n in sorted(set(args.sizes) | set(args.end_to_end)):
        row = report["sizes"][n] = {}
        inputs = work / f"inputs_{n}"
        make_folder(inputs, pool, n)
        results = work / f"results_{n}"
        conf = write_config(work / f"config_{n}.yaml", inputs, results)
        state_path = work / f"run_{n}.json"
        state = unfinished_run(state_path) if args.resume and n in args.end_to_end else None
        if state is None:  # a fresh run: its dry run on an empty results folder
            shutil.rmtree(results, ignore_errors=True)
            Path(yaml.safe_load(conf.read_text())["cluster_review"]).unlink(missing_ok=True)
            dry = dry_run(conf, work / f"dry_{n}.log")
            row["dry_run"] = {"seconds": dry["seconds"], "cpu_seconds": dry["cpu_seconds"],
                              "max_rss_mb": dry["max_rss_mb"], "jobs": sum(dry["jobs"].values())}
        else:
            row["dry_run"] = state["dry_run"]
            print(f"{n} images: resuming the run cut off after {len(state['segments'])} "
                  f"segment(s)", flush=True)
        dry = row["dry_run"]
        print(f"{n} images: dry run {dry['seconds']:.1f} s (CPU {dry['cpu_seconds']:.1f} s), "
              f"{dry['max_rss_mb']:.0f} MB, {dry['jobs']} jobs", flush=True)
        if n not in args.end_to_end:
            continue
        # the reference right before and right after this run: the mean of the two
        # follows a machine whose speed drifts (this VM's reference moved 206 -> 168 ms
        # over one 1 000-image run; a reading from before an earlier, shorter run would
        # be stale), and both are printed
        if state is None:
            *_, before_s, before_cpu = reference_per_image(work, cfg)
            state = {"dry_run": row["dry_run"], "reference_before": [before_s, before_cpu]}
        before_s, before_cpu = state["reference_before"]
        run = end_to_end(conf, args.cores, work / f"run_{n}.log", state, state_path)
        *_, after_s, after_cpu = reference_per_image(work, cfg)
        gather = reference_gather(features, len(pool), n, cfg)
        ideal = (n * (before_s + after_s) / 2 + gather["wall"]) / args.cores
        in_run = (recorded_seconds(results) + gather["wall"]) / args.cores
        cpu_ref = n * (before_cpu + after_cpu) / 2 + gather["cpu"]
        print(f"reference per image after the run: {1e3 * after_s:.0f} ms (CPU "
              f"{1e3 * after_cpu:.0f} ms); before: {1e3 * before_s:.0f} ms (CPU "
              f"{1e3 * before_cpu:.0f} ms)", flush=True)
        row["end_to_end"] = {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"],
                             "segments": run["segments"],
                             "reference_ms_before": 1e3 * before_s,
                             "reference_ms_after": 1e3 * after_s,
                             "reference_cpu_ms_after": 1e3 * after_cpu,
                             "ideal_seconds": ideal, "gather_seconds": gather["wall"],
                             "overhead_ratio": run["seconds"] / ideal,
                             "ideal_seconds_in_run": in_run,
                             "overhead_ratio_in_run": run["seconds"] / in_run,
                             "reference_cpu_seconds": cpu_ref,
                             "cpu_ratio": run["cpu_seconds"] / cpu_ref}
        cut = f" in {run['segments']} segments (resumed)" if run["segments"] > 1 else ""
        print(f"{n} images: end to end {run['seconds']:.0f} s{cut}, ideal {ideal:.0f} s "
              f"(ratio {run['seconds'] / ideal:.2f}); per-image times recorded in the run "
              f"/ cores {in_run:.0f} s (ratio {run['seconds'] / in_run:.2f}); CPU "
              f"{run['cpu_seconds']:.0f} s against {cpu_ref:.0f} s (ratio "
              f"{run['cpu_seconds'] / cpu_ref:.2f})", flush=True)
        if n in args.add_one:
            os.link(pool[0], inputs / f"added_{n}{pool[0].suffix}")
            plan = dry_run(conf, work / f"add_dry_{n}.log")
            added = end_to_end(conf, args.cores, work / f"add_run_{n}.log")
            row["add_one"] = {"seconds": added["seconds"], "jobs": plan["jobs"],
                              "fraction_of_full": added["seconds"] / run["seconds"]}
            print(f"{n} images + 1: {added['seconds']:.1f} s "
                  f"({100 * added['seconds'] / run['seconds']:.1f} % of the full run), "
                  f"jobs {plan['jobs']}", flush=True)

    if args.memory_folder:
        memory_folder = Path(args.memory_folder)
        if not memory_folder.is_dir():
            memory_folder = work / "pool" / "images"
        report["job_memory"] = {"folder": str(memory_folder),
                                "peak_mb": job_memory(work, memory_folder, args.cores)}
        print(f"job memory: {report['job_memory']}", flush=True)
    if args.thread_images:
        report["threads"] = threads_speedup(work, pool, args.thread_images, args.cores, cfg)
        print(f"threads: {report['threads']}", flush=True)
    if args.gather_defects:
        report["gather"] = [gather_memory(work, pool, features, n, args.gather_shards)
                            for n in args.gather_defects]
        print(f"gather: {report['gather']}", flush=True)
    shutil.rmtree(work / "reference", ignore_errors=True)

    (work / "scale.json").write_text(json.dumps(report, indent=2))
    print_tables(report)
    return 0


def print_tables(report: dict) -> None:
    """The figures as Markdown tables (README performance section)."""
    c = report["cores"]
    steps = ", ".join(f"{k} {v:.0f}" for k, v in report["per_image_steps_ms"].items())
    print(f"\nIn-process per-image product work (1 core, {report['pool_images']} distinct "
          f"480x360 images): {report['per_image_ms']:.0f} ms ({steps}); shards: "
          f"{report['shards']}\n")
    print(f"| images | dry run wall (s) | dry run CPU (s) | dry run peak MB | jobs "
          f"| end to end --cores {c} (s) | ideal (s) | overhead ratio | ratio (in-run times) "
          "| CPU ratio | add one image (s) | % of full run | jobs planned to add one |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, row in sorted(report["sizes"].items()):
        dry, e2e, add = row["dry_run"], row.get("end_to_end"), row.get("add_one")
        cells = [f"{n:,}", f"{dry['seconds']:.1f}", f"{dry['cpu_seconds']:.1f}",
                 f"{dry['max_rss_mb']:.0f}", str(dry["jobs"])]
        cells += ([f"{e2e['seconds']:.0f}", f"{e2e['ideal_seconds']:.0f}",
                   f"{e2e['overhead_ratio']:.2f}", f"{e2e['overhead_ratio_in_run']:.2f}",
                   f"{e2e['cpu_ratio']:.2f}"] if e2e else ["", "", "", "", ""])
        cells += ([f"{add['seconds']:.1f}", f"{100 * add['fraction_of_full']:.1f}",
                   ", ".join(f"{k} {v}" for k, v in add["jobs"].items())] if add else ["", "", ""])
        print("| " + " | ".join(cells) + " |")
    if "threads" in report:
        t = report["threads"]
        print(f"\nOne shard of {t['images']} images, zones -> defects -> features: "
              f"{t['seconds_1']:.1f} s with 1 thread, {t[f'seconds_{c}']:.1f} s with {c}: "
              f"{t['speedup']:.2f}x (CPU {t['cpu_seconds_1']:.1f} s and "
              f"{t[f'cpu_seconds_{c}']:.1f} s)")
    if "job_memory" in report:
        m = report["job_memory"]
        print(f"\nPeak memory per job (script + pool workers, {c} workers) on {m['folder']}:")
        print("| job | peak MB |\n|---|---:|")
        for name, mb in m["peak_mb"].items():
            print(f"| {name} | {mb:.0f} |")
    if "gather" in report:
        rules = [r for r in GATHER_RULES if any(r in g["peak_mb"] for g in report["gather"])]
        print("\nGather jobs on generated defect tables (peak RSS MB per job, one job at a "
              "time):")
        print("| defects | shards | run s | " + " | ".join(rules) + " |")
        print("|---:|---:|---:|" + "---:|" * len(rules))
        for g in report["gather"]:
            print(f"| {g['defects']:,} | {g['shards']} | {g['seconds']:.0f} | "
                  + " | ".join(f"{g['peak_mb'].get(r, float('nan')):.0f}" for r in rules) + " |")


if __name__ == "__main__":
    sys.exit(main())
