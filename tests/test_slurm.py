"""The workflow on a real single-node SLURM gives the same outputs as a local run.

Starts munged, slurmctld and slurmd (``slurm_cluster.py``; installs the Debian
packages with apt-get when missing, skips with the reason when it cannot), runs the
workflow on six generated images once with ``--cores 2`` and once with
``--workflow-profile profiles/slurm``, and compares every output file. The SLURM run
puts all three shard chains into one group job and caps it at the node's size, so it
also checks that a group never asks SLURM for more CPUs than the node has (a job that
did would sit PENDING and the test would time out).

Run: ``make test-slurm`` (``pytest -m slurm``; 7-11 minutes on the 2-core VM under load;
needs root).
"""

from __future__ import annotations

import filecmp
import json
import re
import signal
import subprocess
import sys

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable
from workflow_runs import ROOT, write_config

pytestmark = pytest.mark.slurm

N_IMAGES = 6
TIMEOUT_S = 900
# Job logs differ by nature; per-image cache records also hold timings ("seconds").
NOT_COMPARED = re.compile(r"^logs/")
CACHE_RECORD = re.compile(r"^intermediate/images/[^/]+/[^/]+\.json$")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
            yield running
    except SlurmUnavailable as err:
        pytest.skip(f"no SLURM for this test: {err}")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    subprocess.run(
        [sys.executable, "-m", "fiberprep.synth", "--out", str(out), "--n", str(N_IMAGES),
         "--seed", "1", "--width", "480", "--height", "360"],
        check=True, capture_output=True,
    )
    return out / "images"


def run_snakemake(configfile, *args):
    """Snakemake on the project's workflow; one SIGTERM on timeout (it then cancels its
    SLURM jobs). Returns stdout+stderr; fails the test on a non-zero exit."""
    cmd = [sys.executable, "-m", "snakemake", "--configfile", "config/config.yaml",
           str(configfile), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"snakemake did not finish in {TIMEOUT_S} s:\n{out[-4000:]}")
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{out[-6000:]}"
    return out


def output_files(results):
    return sorted(
        str(p.relative_to(results)) for p in results.rglob("*")
        if p.is_file() and not NOT_COMPARED.search(str(p.relative_to(results)))
    )


def differs(a, b, name):
    """True when two output files differ (cache records: apart from their timings)."""
    if CACHE_RECORD.match(name):
        return ({k: v for k, v in json.loads((a / name).read_text()).items() if k != "seconds"}
                != {k: v for k, v in json.loads((b / name).read_text()).items() if k != "seconds"})
    return not filecmp.cmp(a / name, b / name, shallow=False)


def test_slurm_run_matches_local_run(cluster, images, tmp_path):
    # Both runs write the same results folder (paths are recorded in some outputs):
    # the local run's is moved aside before the SLURM run.
    results = tmp_path / "results"
    cfg = write_config(tmp_path / "config.yaml", images, results)
    review = tmp_path / "results_review.yaml"
    run_snakemake(cfg, "--cores", "2")
    local = tmp_path / "local"
    results.rename(local)
    review.rename(tmp_path / "local_review.yaml")
    log = run_snakemake(
        cfg,
        "--workflow-profile", "profiles/slurm",
        # this node's size as the cap (README: set it to your smallest node)
        "--resources", f"cpus_per_task={cluster.cpus}", f"mem_mb={cluster.mem_mb}",
        # all shard chains in one group job: without the cap it would ask 3 x 2 CPUs
        "--group-components", "shard_chain=3",
        "--latency-wait", "5", "--slurm-init-seconds-before-status-checks", "2",
        "--verbose",
    )

    calls = [line for line in log.splitlines() if line.startswith("sbatch call:")]
    assert calls, "no job went through sbatch"
    cpus = [int(c) for c in re.findall(r"--cpus-per-task=(\d+)", "\n".join(calls))]
    assert cpus and max(cpus) <= cluster.cpus, f"asked {max(cpus)} CPUs of {cluster.cpus}"
    assert any("rule_shard_chain" in c for c in calls), "shard chain was not grouped"
    assert not cluster.jobs(), "SLURM jobs left behind"

    names = output_files(local)
    assert names == output_files(results)
    assert "datasets/image_level/images.parquet" in names
    changed = [n for n in names if differs(local, results, n)]
    assert not changed, f"differ from the local run: {changed}"
    assert filecmp.cmp(tmp_path / "local_review.yaml", review, shallow=False)
