import hashlib
import json
import math
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# fiberprep is imported from this workflow's src/, here and in every job (also in
# --sdm conda environments, which hold its dependencies but not the package).
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(
    PYTHONPATH=os.pathsep.join([SRC, *filter(None, [os.environ.get("PYTHONPATH")])])
)
# Every job runs BLAS on one thread (pipeline.one_math_thread); started with one, OpenBLAS
# does not spin up a thread per core while NumPy loads (~0.1 s CPU per job).
os.environ.update(OPENBLAS_NUM_THREADS="1")

from fiberprep import cache, pipeline, sharding
from fiberprep import io as fio


def config_error(err):
    """One line naming the config key and what was expected, from a schema error."""
    cause = err.__context__
    if not hasattr(cause, "absolute_path"):
        return str(err).splitlines()[0]
    key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
    return f"config key {key}: {cause.message}"


for path in workflow.configfiles:
    repeated = fio.repeated_keys(Path(path).read_text())
    if repeated:
        key, first, again = repeated[0]
        raise WorkflowError(
            f"config file {path}: key {key} is given twice (lines {first} and {again}); "
            "the later would silently win: keep one"
        )
try:
    validate(config, schema="../../config/schema.yaml")
except WorkflowError as err:
    raise WorkflowError(config_error(err)) from None

INPUT_DIR = Path(config["input_dir"]).absolute()
R = Path(config["results_dir"])
REVIEW = config["cluster_review"].replace("{results_dir}", str(R))
INTER = R / "intermediate"
LOGS = R / "logs"

if not INPUT_DIR.is_dir():
    problem = "not a folder" if INPUT_DIR.exists() else "folder not found"
    raise WorkflowError(f"config key input_dir: {problem}: {INPUT_DIR}")
if R.absolute().resolve().is_relative_to(INPUT_DIR.resolve()):
    raise WorkflowError(
        f"config key results_dir: {R} lies inside input_dir {INPUT_DIR}; "
        "inputs are never written, choose an output folder outside it"
    )
# The fiber types an image may be (one, or the candidates of fiber.type: auto).
FIBER_TYPES = pipeline.fiber_type_names(config["fiber"])
TYPE_KEY = "fiber.auto_types" if config["fiber"]["type"] == "auto" else "fiber.type"
for name in FIBER_TYPES:
    if name not in config["fiber_types"]:
        raise WorkflowError(
            f"config key {TYPE_KEY}: unknown type {name!r}, "
            f"expected one of {sorted(config['fiber_types'])}"
        )
    if config["fiber_types"][name]["criteria"] not in config["criteria"]:
        raise WorkflowError(
            f"config key fiber_types.{name}.criteria: unknown criteria "
            f"{config['fiber_types'][name]['criteria']!r}, "
            f"expected one of {sorted(config['criteria'])}"
        )
CRITERIA = {
    n: config["criteria"][config["fiber_types"][n]["criteria"]] for n in FIBER_TYPES
}

# The folder is scanned once; every image id maps to a fixed shard (stable hash).
SCANNED = fio.scan_inputs(INPUT_DIR, config["extensions"])
if SCANNED.empty:
    raise WorkflowError(
        f"config key input_dir: no image files ({' '.join(config['extensions'])}) "
        f"found in {INPUT_DIR}"
    )
MANIFESTS = sharding.shard_manifests(
    SCANNED,
    sharding.shard_count(
        len(SCANNED), config["shards"], config["min_images_per_shard"]
    ),
)
SHARDS = sorted(MANIFESTS)
SHARD_SET = hashlib.blake2b(",".join(SHARDS).encode(), digest_size=8).hexdigest()


wildcard_constraints:
    shard=r"\d{3}",


# Parameters of each per-image stage: what its cache key and its jobs' params cover.
STAGE_PARAMS = pipeline.stage_params(config)
# Clustering refits when the defects it was fitted on are defined differently.
UPSTREAM_PARAMS = hashlib.blake2b(
    json.dumps(STAGE_PARAMS, sort_keys=True, default=str).encode(), digest_size=8
).hexdigest()
CLUSTER_CODE = cache.code_version("clustering")
ENV = "../../envs/fiberprep.yaml"


def shard_images(wildcards):
    """Manifest rows of one shard (plain dicts, passed to the shard job)."""
    return MANIFESTS[wildcards.shard]


# Hashed once per shard: every per-shard job of every stage asks for it.
MANIFEST_HASHES = {k: sharding.manifest_hash(rows) for k, rows in MANIFESTS.items()}


def shard_manifest(wildcards):
    """Hash of one shard's manifest: a changed image reruns only its shard."""
    return MANIFEST_HASHES[wildcards.shard]


def canonical(value):
    """``value`` with every mapping's keys in sorted order: a rule's params then do not
    depend on where a key was set (``--config`` moves it first), and a run started with
    ``--config`` leaves nothing to do for one started without it."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value, key=str)}
    return value


def parent_of(level, key=0, of="output"):
    """Param function: the folder ``level`` levels above one output (or input) file of
    the job (0 = the file's own folder), e.g. ``<results_dir>/intermediate`` for
    ``.../intermediate/zones/shard_k.parquet``. Derived from the job's files, so it
    stays right wherever Snakemake maps paths (remote storage)."""

    def param(wildcards, input, output):
        files = output if of == "output" else input
        path = getattr(files, key) if isinstance(key, str) else files[key]
        return str(Path(path).parents[level])

    return param


def shard_threads(wildcards):
    """Workers of one shard job: on a local run the cores each shard gets when all
    shards run at once (at least 1, at most threads_per_shard), so a few shards still
    fill a big machine and many shards run side by side (each job's start-up then
    overlaps another job's work); on a cluster threads_per_shard."""
    cap = config["threads_per_shard"]
    cores = workflow.resource_settings.cores
    if not workflow.local_exec or workflow.remote_exec or cores in (None, sys.maxsize):
        return cap
    return max(1, min(cap, cores // len(SHARDS)))


def shard_runtime(wildcards, threads):
    """Minutes for one shard job: 10 plus 5 s per image per worker."""
    return 10 + math.ceil(len(MANIFESTS[wildcards.shard]) * 5 / 60 / threads)


def shard_mem_mb(wildcards, threads):
    """Per-image work needs under 1 GB at 1920x1080; one image per worker."""
    return 1000 * threads


def shard_files(pattern):
    """One path per non-empty shard: ``pattern`` with ``{shard}`` filled in."""
    return [str(pattern).format(shard=s) for s in SHARDS]


def fit_inputs(wildcards):
    """Feature tables the cluster fit reads.

    With ``clustering.refit`` every shard's table, so new images refit the model.
    Otherwise the tables are ``ancient`` (newer tables do not refit), and once a model
    exists only the tables present now are inputs: an image added to a previously
    empty shard brings a table that does not exist yet, which Snakemake would treat as
    a reason to refit even when ancient. A model fitted without any defect (every
    image rejected or clean) is no model: new tables refit it.
    """
    paths = shard_files(INTER / "features" / "shard_{shard}.parquet")
    summary = R / "clustering" / "clusters.json"
    if config["clustering"]["refit"] or (
        summary.exists() and not json.loads(summary.read_text())["clusters"]
    ):
        return paths
    if (R / "clustering" / "model.pkl").exists():
        paths = [p for p in paths if Path(p).exists()] or paths
    return [ancient(p) for p in paths]


def final_outputs():
    """The final targets: the labels, datasets, defect library and QC report."""
    zarr = [R / "datasets" / "pixel_level" / ".dataset.zarr.done"]
    return [
        R / "clustering" / "defect_types.parquet",
        R / "datasets" / "image_level" / "images.parquet",
        R / "datasets" / "image_level" / "image_labels.parquet",
        R / "datasets" / "region_level" / "zone_features.parquet",
        R / "datasets" / "pixel_level" / "coco_instances.json",
        R / "defect_library" / "index.parquet",
        R / "qc" / "report.html",
        *(zarr if config["datasets"]["zarr"] else []),
    ]
