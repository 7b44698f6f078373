"""Running the workflow from tests: small generated folders, configs, dry-run job counts.

Shared by ``test_workflow.py`` and ``test_incremental.py`` (and any test that needs a
processed folder). Every run writes only under the test's tmp folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from fiberprep import synth

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text(encoding="utf-8"))
SIZE = {"width": 480, "height": 360}  # small, with room for a 125 µm cladding


def generate(folder: Path, n: int, seed: int) -> list[Path]:
    """Write ``n`` small synthetic end faces (with truth) under ``folder``."""
    synth.write_dataset(folder, n, seed, CONFIG["fiber_types"], CONFIG["criteria"], **SIZE)
    return sorted((folder / "images").iterdir())


def write_config(path: Path, input_dir: Path, results_dir: Path, **sections) -> Path:
    """A config file overriding the folders (and, per section, some keys)."""
    cfg = {
        "input_dir": str(input_dir),
        "results_dir": str(results_dir),
        "cluster_review": str(results_dir.parent / f"{results_dir.name}_review.yaml"),
        "shards": 3,
        "min_images_per_shard": 1,
        "threads_per_shard": 2,
    }
    for section, values in sections.items():
        cfg[section] = {**CONFIG[section], **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def snakemake_command(configfile: Path, *args: str) -> list[str]:
    """Snakemake on the project's workflow with ``configfile`` on top of the default.

    The working directory (``.snakemake/``: locks, metadata, incomplete markers) is the
    config file's folder, so runs of concurrent tests never share it.
    """
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(Path(configfile).parent),
            "--configfile", str(ROOT / "config" / "config.yaml"), str(configfile), *args]


def snakemake(configfile: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` and return its output."""
    cmd = snakemake_command(configfile, *args)
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def planned_jobs(configfile: Path) -> dict[str, int]:
    """Jobs a dry run would execute, by rule (``{}`` when nothing is to be done)."""
    done = snakemake(configfile, "--dry-run")
    text = done.stdout + done.stderr
    table = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\n\s*total", text, re.S)
    if table is None:
        return {}
    return {rule: int(n) for rule, n in (line.split() for line in table.group(1).splitlines())}
