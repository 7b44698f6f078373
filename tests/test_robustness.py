"""Nothing crashes, nothing is lost (issue 8).

- Property tests feed random images and random geometries to every per-image stage
  (zones -> defects -> features): each returns a result or raises ``io.ImageRejected``.
- ``slow``: the workflow on a read-only folder of every bad input of ``bad_inputs.py``:
  each file gets a row in ``images.parquet``, usable ones are processed, inputs unchanged.
- ``slow``: SIGKILL during per-image work and during dataset assembly, then a rerun,
  gives the outputs of an uninterrupted run; two runs (``--cores 2`` and ``--cores 1``)
  give byte-identical outputs.
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import workflow_runs as wr
from bad_inputs import write_bad_inputs
from test_pipeline import run_chain
from fiberprep import defects, features, zones
from fiberprep import io as fio
from fiberprep.io import ImageRejected

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
FIBER = CONFIG["fiber_types"]["sm_pc"]


@st.composite
def end_faces(draw):
    """Small gray images from plausible to hostile: fibers anywhere (also cut by the
    frame), either polarity, noise, blobs, lines, clipping, flat frames, pure noise."""
    kind = draw(st.sampled_from(["fiber", "fiber", "fiber", "noise", "flat", "steps"]))
    low = 128 if kind == "fiber" else 24  # room for a cladding of 125 µm at ~1 µm/px
    h, w = draw(st.integers(low, 200)), draw(st.integers(low, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    if kind == "flat":
        img = np.full((h, w), draw(st.floats(0, 1)), np.float32)
    elif kind == "noise":
        img = rng.random((h, w), dtype=np.float32)
    elif kind == "steps":
        img = (rng.integers(0, 4, (4, 4)).astype(np.float32) / 3).repeat(
            math.ceil(h / 4), 0).repeat(math.ceil(w / 4), 1)[:h, :w]
    else:
        r = draw(st.floats(45.0, 75.0))
        cx, cy = draw(st.floats(0.2, 0.8)) * w, draw(st.floats(0.2, 0.8)) * h
        inside = draw(st.floats(0, 1))
        outside = float(np.clip(inside + draw(st.sampled_from([-1, 1])) * draw(st.floats(0.1, 0.8)),
                                0, 1))
        img = np.where(np.hypot(xx - cx, yy - cy) < r, inside, outside).astype(np.float32)
        for _ in range(draw(st.integers(0, 6))):
            bx, by, br = rng.random() * w, rng.random() * h, 1 + rng.random() * 6
            img[np.hypot(xx - bx, yy - by) < br] = rng.random()
        if draw(st.booleans()):
            angle = rng.random() * math.pi
            d = np.abs((xx - w / 2) * math.sin(angle) - (yy - h / 2) * math.cos(angle))
            img[d < 1] = rng.random()
        img += rng.normal(0, draw(st.floats(0, 0.1)), (h, w)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


@st.composite
def geometries(draw, shape):
    """Geometry dicts as zones.measure_geometry returns them, with arbitrary values,
    including the no-fiber geometry of ``zones.mode: none`` (NaN circle)."""
    h, w = shape
    upp = draw(st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    if draw(st.booleans()):
        return zones.measure_geometry(np.zeros(shape, np.float32), FIBER,
                                      {**CONFIG["zones"], "mode": "none"}, upp)
    cx, cy = draw(st.floats(-0.5, 1.5)) * w, draw(st.floats(-0.5, 1.5)) * h
    r = draw(st.floats(1.0, 2.0 * max(h, w)))
    core_r = draw(st.floats(0.5, r))
    return {
        "center_x": cx, "center_y": cy, "cladding_radius_px": r,
        "cladding_ellipticity": draw(st.floats(0, 0.3)),
        "cladding_angle_deg": draw(st.floats(0, 179.9)),
        "core_center_x": cx, "core_center_y": cy, "core_radius_px": core_r,
        "core_visible": draw(st.booleans()), "core_offset_px": 0.0, "core_offset_um": 0.0,
        "um_per_px": upp, "um_per_px_source": "calibration", "fit_residual_px": 0.1,
        "confidence": 0.9, "polarity": draw(st.sampled_from(["dark", "bright"])),
    }


def _downstream(gray, geometry):
    """Zone map, defects and features for one geometry; checks what each returns."""
    upp = geometry["um_per_px"]
    zone_map = zones.zone_label_map(gray.shape, geometry, FIBER["zones_um"], upp)
    assert zone_map.shape == gray.shape and zone_map.dtype == np.uint8
    try:
        instance_map, table = defects.detect_defects(gray, zone_map, geometry,
                                                     CONFIG["detection"])
    except ImageRejected as err:
        assert err.reason
        return
    assert instance_map.shape == gray.shape and instance_map.dtype == np.uint16
    assert set(np.unique(instance_map[instance_map > 0])) == set(table["number"])
    try:
        feats = features.defect_features(gray, instance_map, zone_map, table, geometry)
        assert list(feats["number"]) == list(table["number"])
        zone_rows = features.zone_features(gray, zone_map, geometry, FIBER["zones_um"])
        assert isinstance(zone_rows, pd.DataFrame)
    except ImageRejected as err:
        assert err.reason


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(end_faces(), st.sampled_from([None, 1.0]))
def test_zones_then_later_stages_on_random_images(gray, um_per_px):
    try:
        geometry = zones.measure_geometry(gray, FIBER, CONFIG["zones"], um_per_px)
    except ImageRejected as err:
        assert err.reason
        return
    assert set(zones.GEOMETRY_KEYS) <= set(geometry)
    assert geometry["cladding_radius_px"] > 0 and geometry["um_per_px"] > 0
    _downstream(gray, geometry)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_later_stages_on_random_images_and_geometries(data):
    gray = data.draw(end_faces())
    _downstream(gray, data.draw(geometries(gray.shape)))


@pytest.mark.parametrize("shape", [(1, 1), (1, 50), (50, 1), (3, 3)])
def test_stages_on_degenerate_shapes(shape):
    gray = np.full(shape, 0.5, np.float32)
    with pytest.raises(ImageRejected):
        zones.measure_geometry(gray, FIBER, CONFIG["zones"], None)
    geometry = zones.measure_geometry(gray, FIBER, {**CONFIG["zones"], "mode": "none"}, 0.5)
    _downstream(gray, geometry)


def test_close_up_without_calibration():
    gray = np.full((96, 96), 0.7, np.float32)
    gray[40:48, 40:48] = 0.1  # a pit, so there is a defect to measure
    geometry = zones.measure_geometry(gray, FIBER, {**CONFIG["zones"], "mode": "none"}, None)
    assert geometry["um_per_px"] == CONFIG["zones"]["frame_um_per_px"]
    assert geometry["um_per_px_source"] == "assumed"
    _downstream(gray, geometry)


# ----------------------------------------------------------------------------- chain


def test_per_image_chain_on_every_bad_input(tmp_path):
    """The shard jobs' chain (no Snakemake): a record per file, the expected reason for
    each unusable one, no internal error at any stage."""
    expected = write_bad_inputs(tmp_path / "in")
    manifest = fio.scan_inputs(tmp_path / "in", CONFIG["extensions"]).to_dict("records")
    table, found, feats = run_chain(manifest, str(tmp_path / "intermediate"))
    rows = table.set_index(table["image_id"].map({m["image_id"]: m["rel_path"]
                                                  for m in manifest}))
    assert sorted(rows.index) == sorted(expected)
    for rel, expect in expected.items():
        status, reason = rows.loc[rel, "status"], rows.loc[rel, "reason"]
        if expect == "ok":  # loads; the zone finder may still see no fiber in it
            assert status == "ok" or "fiber" in reason or "confidence" in reason, (rel, reason)
        else:
            assert status == "rejected" and expect in reason.lower(), (rel, reason)
    assert (rows["status"] == "ok").sum() >= 10
    later = [record for record, *_ in feats] + [record for record, _ in found]
    assert [r for r in later if r["status"] != "ok"] == []


# ----------------------------------------------------------------------------- workflow


def _checksums(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Checksum (of readable regular files), mode and mtime of every entry under a
    folder, links not followed."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = Path(dirpath, name)
            st_ = path.lstat()
            digest = ""
            if stat.S_ISREG(st_.st_mode) and os.access(path, os.R_OK):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(folder))] = (digest, st_.st_mode, st_.st_mtime_ns)
    return out


def _set_read_only(folder: Path, read_only: bool) -> None:
    for dirpath, dirnames, names in os.walk(folder):
        for name in dirnames + names:
            path = Path(dirpath, name)
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            if path.name == "locked.png":
                continue
            mode = path.stat().st_mode
            path.chmod(mode & ~0o222 if read_only else mode | 0o200)
    folder.chmod(0o555 if read_only else 0o755)


@pytest.mark.slow
def test_bad_inputs_end_to_end_on_read_only_folder(tmp_path):
    inputs = tmp_path / "in"
    expected = write_bad_inputs(inputs / "bad", with_huge=True)
    for image in wr.generate(tmp_path / "gen", 2, seed=3):
        (inputs / image.name).write_bytes(image.read_bytes())
    _set_read_only(inputs, True)
    before = _checksums(inputs)
    try:
        config = wr.write_config(tmp_path / "config.yaml", inputs, tmp_path / "results",
                                 shards=1)  # few jobs: this test is about the files
        wr.snakemake(config, "--cores", "2")
    finally:
        after = _checksums(inputs)
        _set_read_only(inputs, False)
    assert after == before  # nothing written, moved, touched or added

    images = pd.read_parquet(tmp_path / "results/datasets/image_level/images.parquet")
    scanned = fio.scan_inputs(inputs, CONFIG["extensions"])
    assert sorted(images["image_id"]) == sorted(scanned["image_id"])  # a row per file
    by_path = images.set_index(images["image_id"].map(
        dict(zip(scanned["image_id"], scanned["rel_path"]))))
    assert not by_path["reason"].fillna("").str.contains("internal error").any(), \
        by_path.loc[by_path["reason"].fillna("").str.contains("internal error"), "reason"]
    for rel, expect in expected.items():
        row = by_path.loc[f"bad/{rel}"]
        if expect == "ok":  # loads; the zone finder may still find no fiber in it
            assert row["status"] == "ok" or "fiber" in row["reason"] or "confidence" in \
                row["reason"], (rel, row["reason"])
        else:
            assert row["status"] == "rejected" and expect in row["reason"].lower(), \
                (rel, row["reason"])
    synthetic = images[~images["image_id"].str.startswith("bad_")]
    assert (synthetic["status"] == "ok").all(), synthetic[["image_id", "reason"]]
    masks = tmp_path / "results/datasets/pixel_level/zone_masks"
    for image_id in images.loc[images["status"] == "ok", "image_id"]:
        source = scanned.set_index("image_id").loc[image_id, "source_path"]
        gray, _, _ = fio.load_image(source, CONFIG["io"]["max_pixels"],
                                    CONFIG["io"]["min_side_px"])
        mask = masks / f"{image_id}.png"
        assert mask.is_file(), image_id
        assert np.asarray(Image.open(mask)).shape == gray.shape  # gray PNG of ids


# ----------------------------------------------------------------------------- slow


def _outputs(results: Path) -> dict[str, str]:
    """sha256 of every output file of a run, by relative path.

    Excluded: logs, hidden temporary names, and in the cache (``intermediate/``) the
    JSON records (they carry timings) and the dataset writers' file lists (absolute
    paths). The run's own folder (in the config copy in ``datasets/README.md``) is
    replaced by a placeholder, as runs differ in it.
    """
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results)
        if rel.parts[0] == "logs" or any(p.startswith(".") for p in rel.parts):
            continue
        if rel.parts[0] == "intermediate" and (rel.suffix == ".json" or "datasets" in rel.parts):
            continue
        if path.is_file():
            data = path.read_bytes().replace(str(results).encode(), b"<results_dir>")
            out[str(rel)] = hashlib.sha256(data).hexdigest()
    return out


def _differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@pytest.fixture(scope="module")
def forty(tmp_path_factory):
    """40 generated images and the outputs of one uninterrupted run (--cores 2)."""
    base = tmp_path_factory.mktemp("forty")
    inputs = base / "in"
    inputs.mkdir()
    for image in wr.generate(base / "gen", 40, seed=8):
        (inputs / image.name).write_bytes(image.read_bytes())
    config = wr.write_config(base / "ref.yaml", inputs, base / "ref")
    wr.snakemake(config, "--cores", "2")
    return base, inputs, _outputs(base / "ref")


def _kill_when(config: Path, ready, timeout_s: float = 900) -> None:
    """Start the workflow, SIGKILL its whole process group once ``ready()`` holds."""
    cmd = wr.snakemake_command(config, "--cores", "2")
    with open(config.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (exit {proc.returncode}) before the kill point; "
                            f"see {config.with_suffix('.log')}")
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail("kill point not reached in time")
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _resume(config: Path) -> None:
    """What a user does after a killed run: unlock, rerun (incomplete jobs again)."""
    wr.snakemake(config, "--unlock")
    wr.snakemake(config, "--cores", "2", "--rerun-incomplete")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["per_image", "assembly"])
def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(forty, stage):
    base, inputs, reference = forty
    results = base / f"killed_{stage}"
    config = wr.write_config(base / f"killed_{stage}.yaml", inputs, results)
    if stage == "per_image":
        def ready():
            images = results / "intermediate" / "images"
            return images.is_dir() and len(list(images.glob("*/defects.json"))) >= 3
    else:
        def ready():
            masks = results / "datasets" / "pixel_level" / "zone_masks"
            return masks.is_dir() and len(list(masks.glob("*.png"))) >= 3
    _kill_when(config, ready)
    _resume(config)
    assert _differences(reference, _outputs(results)) == []


@pytest.mark.slow
def test_two_runs_one_and_two_cores_are_byte_identical(forty):
    base, inputs, reference = forty
    config = wr.write_config(base / "again.yaml", inputs, base / "again")
    wr.snakemake(config, "--cores", "1")  # jobs run one at a time, each on one core
    assert _differences(reference, _outputs(base / "again")) == []


def _write_rejected_folder(folder: Path) -> None:
    """Inputs a user may start with that all get rejected: empty, not an image, flat."""
    folder.mkdir(parents=True)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("scope export log\n")
    Image.fromarray(np.full((240, 320), 128, np.uint8)).save(folder / "flat.png")


@pytest.mark.slow
def test_a_folder_of_rejected_inputs_gives_tables_with_their_columns(tmp_path):
    _write_rejected_folder(tmp_path / "in")
    config = wr.write_config(tmp_path / "config.yaml", tmp_path / "in", tmp_path / "results", shards=1)
    wr.snakemake(config, "--cores", "1")
    images = pd.read_parquet(tmp_path / "results/datasets/image_level/images.parquet")
    assert len(images) == 3 and (images["status"] == "rejected").all()
    labels = pd.read_parquet(tmp_path / "results/datasets/image_level/image_labels.parquet")
    assert len(labels) == 0
    assert {"center_x", "cladding_radius_px", "um_per_px", "pass_fail", "primary_defect", "split",
            "n_scratch", "n_zone_core"} <= set(labels.columns)
    zone_level = pd.read_parquet(tmp_path / "results/datasets/region_level/zone_features.parquet")
    assert len(zone_level) == 0
    assert {"image_id", "split", "zone", "area_um2", "n_scratch", "worst_severity_level", "label"} <= set(zone_level.columns)


@pytest.mark.slow
def test_images_added_after_a_run_without_defects_are_typed(tmp_path):
    _write_rejected_folder(tmp_path / "in")
    config = wr.write_config(tmp_path / "config.yaml", tmp_path / "in", tmp_path / "results", shards=1)
    wr.snakemake(config, "--cores", "1")
    for image in wr.generate(tmp_path / "gen", 3, seed=5):
        (tmp_path / "in" / image.name).write_bytes(image.read_bytes())
    wr.snakemake(config, "--cores", "1")
    index = pd.read_parquet(tmp_path / "results/defect_library/index.parquet")
    assert len(index) and index["cluster"].notna().all()
