"""Tests of the synthetic generator: its truth must be exact, or every benchmark lies."""

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from fiberprep import synth

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
SMALL = {"width": 320, "height": 240}


@pytest.fixture(scope="module")
def fiber_types():
    return yaml.safe_load(CONFIG.read_text())["fiber_types"]


def _plain_spec(fiber_types, seed=0, **overrides):
    """A clean, noiseless, unlit scene: only the disc and its soft edge."""
    spec = synth.random_spec(np.random.default_rng(seed), fiber_types, p_clean=1.0, **SMALL)
    spec.update(noise=0.0, vignette=0.0, epoxy=0.0, edge_halo=0.0, grain=0.0, tilt_shadow=0.0,
                jpeg_quality=0, core_visible=False, core_level=spec["cladding_level"],
                ellipticity=0.0, blur_px=0.0, edge_line=0.0, frame_px=[0, 0, 0, 0])
    spec.update(overrides)
    return spec


def test_masks_match_image(fiber_types):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        spec = synth.random_spec(rng, fiber_types, p_clean=0.0, n_defects=(3, 6), **SMALL)
        image, truth = synth.render(spec, rng)
        assert image.dtype == np.uint8 and image.shape == (240, 320)
        assert truth["instance_map"].shape == image.shape and truth["instance_map"].dtype == np.uint16
        assert truth["zone_map"].shape == image.shape and truth["zone_map"].dtype == np.uint8
        assert set(np.unique(truth["zone_map"])) <= {1, 2, 3, 4, 5}
        numbers = [d["number"] for d in truth["defects"]]
        assert numbers == list(range(1, len(numbers) + 1))
        assert set(np.unique(truth["instance_map"])) == {0, *numbers}
        for d in truth["defects"]:
            pixels = truth["instance_map"] == d["number"]
            assert d["area_px"] == pixels.sum()
            touched = np.unique(truth["zone_map"][pixels])
            assert d["zones_touched"] == ",".join(map(str, touched))
            assert d["innermost_zone"] == touched[0]
            assert d["class_name"] == synth.DEFECT_CLASS[d["type"]]
            assert d["size_um"] >= d["width_um"] > 0


@pytest.mark.parametrize("polarity", ["dark", "bright"])
def test_disc_centre_and_radius_are_exact(fiber_types, polarity):
    spec = _plain_spec(fiber_types, seed=3 if polarity == "dark" else 5,
                       edge_sigma_px=1.2, polarity=polarity)
    if polarity == "bright":
        spec.update(ferrule_level=0.2, cladding_level=0.6, core_level=0.6)
    image, truth = synth.render(spec, np.random.default_rng(0))
    f, g = spec["ferrule_level"], spec["cladding_level"]
    glass = np.clip((image.astype(float) / 255 - f) / (g - f), 0, 1)  # glass coverage
    glass[glass < 0.02] = 0  # 8-bit rounding of the flat levels would bias the moments
    glass[glass > 0.98] = 1
    total = glass.sum()
    ys, xs = np.indices(image.shape)
    assert (glass * xs).sum() / total == pytest.approx(truth["center_x"], abs=0.05)
    assert (glass * ys).sum() / total == pytest.approx(truth["center_y"], abs=0.05)
    assert np.sqrt(total / np.pi) == pytest.approx(truth["cladding_radius_px"], abs=0.1)


def test_edge_half_crossing_on_true_circle(fiber_types):
    spec = _plain_spec(fiber_types, seed=4, edge_sigma_px=0.8, blur_px=0.8)
    image, truth = synth.render(spec, np.random.default_rng(0))
    f, g = spec["ferrule_level"] * 255, spec["cladding_level"] * 255
    cx, cy, r = truth["center_x"], truth["center_y"], truth["cladding_radius_px"]
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        s = np.arange(r - 6, r + 6, 0.05)
        profile = cv2.remap(image.astype(np.float32), (cx + s * np.cos(angle)).astype(np.float32)[None],
                            (cy + s * np.sin(angle)).astype(np.float32)[None], cv2.INTER_LINEAR)[0]
        crossing = s[np.argmin(np.abs(profile - (f + g) / 2))]
        assert crossing == pytest.approx(r, abs=0.3)


def test_deterministic(fiber_types):
    out = []
    for _ in range(2):
        rng = np.random.default_rng(11)
        spec = synth.random_spec(rng, fiber_types, p_clean=0.0, **SMALL)
        out.append((spec, *synth.render(spec, rng)))
    assert out[0][0] == out[1][0]
    assert np.array_equal(out[0][1], out[1][1])
    assert np.array_equal(out[0][2]["instance_map"], out[1][2]["instance_map"])
    assert out[0][2]["defects"] == out[1][2]["defects"]


def test_every_defect_type_appears(fiber_types):
    seen = set()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        spec = synth.random_spec(rng, fiber_types, p_clean=0.0, n_defects=(6, 10), **SMALL)
        seen |= {d["type"] for d in synth.render(spec, rng)[1]["defects"]}
    assert seen == set(synth.DEFECT_TYPES)


def test_clean_preset_has_no_defects(fiber_types):
    rng = np.random.default_rng(2)
    spec = synth.random_spec(rng, fiber_types, **{**synth.PRESETS["clean"], **SMALL})
    image, truth = synth.render(spec, rng)
    assert truth["is_clean"] and not truth["defects"] and not truth["instance_map"].any()


def test_unknown_range_is_named(fiber_types):
    with pytest.raises(ValueError, match="noize"):
        synth.random_spec(np.random.default_rng(0), fiber_types, noize=0.1)


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "ds"
    subprocess.run([sys.executable, "-m", "fiberprep.synth", "--out", str(out), "--n", "3",
                    "--seed", "5", "--width", "320", "--height", "240", "--config", str(CONFIG)],
                   check=True, capture_output=True)
    images = pd.read_parquet(out / "truth" / "images.parquet")
    defects = pd.read_parquet(out / "truth" / "defects.parquet")
    assert list(images.image_id) == ["synth_0000", "synth_0001", "synth_0002"]
    for row in images.itertuples():
        img = cv2.imread(str(out / row.file), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(out / "truth/instance_masks" / f"{row.image_id}.png"), cv2.IMREAD_UNCHANGED)
        zones = cv2.imread(str(out / "truth/zone_masks" / f"{row.image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert img.shape == inst.shape == zones.shape == (240, 320)
        assert inst.dtype == np.uint16 and zones.dtype == np.uint8
        mine = defects[defects.image_id == row.image_id]
        assert len(mine) == row.n_defects == inst.max()
    assert {"center_x", "cladding_radius_px", "fiber_type", "is_clean", "um_per_px",
            "iec_pass"} <= set(images.columns)
    assert images.loc[images.is_clean, "iec_pass"].all()
    assert {"defect_id", "type", "class_name", "size_um", "innermost_zone"} <= set(defects.columns)


def test_jpeg_bytes_decode_to_returned_image(fiber_types):
    rng = np.random.default_rng(9)
    spec = synth.random_spec(rng, fiber_types, p_jpeg=1.0, **SMALL)
    image, truth = synth.render(spec, rng)
    decoded = cv2.imdecode(np.frombuffer(truth["jpeg_bytes"], np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(decoded, image)


REAL = Path(__file__).resolve().parents[2] / "shared" / "real_images"


def _levels(gray):
    """(dark class median, bright class median, noise) of a uint8 photo: Otsu split of
    the smoothed central region, noise as the robust std of a high-pass on the bright
    class."""
    h, w = gray.shape
    smooth = cv2.GaussianBlur(gray, (0, 0), 2)
    centre = smooth[h // 6:-h // 6, w // 6:-w // 6]
    t, _ = cv2.threshold(centre, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    bright = smooth > t + 10
    high = gray.astype(float) - cv2.GaussianBlur(gray.astype(float), (0, 0), 1.0)
    noise = 1.4826 * np.median(np.abs(high[bright] - np.median(high[bright])))
    return np.median(centre[centre < t - 10]) / 255, np.median(centre[centre > t + 10]) / 255, noise / 255


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not available")
def test_generator_levels_cover_real_coaxial_photos():
    """Dark-fiber photos (Dimension scope, endfaces) must lie inside the generator's ranges."""
    r = synth.DEFAULT_RANGES
    files = sorted((REAL / "dimension_scope_50um_core").glob("*.jpg"))[:8]
    files += sorted((REAL / "dimension_scope_91um_core").glob("*.jpg"))[:4]
    files += sorted((REAL / "endfaces_720x576").glob("DSCN001*.JPG"))
    assert files
    for f in files:
        gray = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        glass, ferrule, noise = _levels(gray)
        assert r["dark_ferrule"][0] <= ferrule <= r["dark_ferrule"][1], f.name
        assert r["dark_glass_ratio"][0] <= glass / ferrule <= r["dark_glass_ratio"][1], f.name
        assert noise <= r["noise"][1], f.name


def test_closeup_has_no_fiber_edge_in_view(fiber_types):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        spec = synth.random_spec(rng, fiber_types, **synth.PRESETS["closeup"])
        image, truth = synth.render(spec, rng)
        h, w = image.shape
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float)
        reach = np.hypot(corners[:, 0] - truth["center_x"], corners[:, 1] - truth["center_y"]).max()
        assert reach < truth["cladding_radius_px"] - 1
        assert not truth["core_visible"]


def test_ellipse_axes_from_moments(fiber_types):
    spec = _plain_spec(fiber_types, seed=6, ellipticity=0.01, ellipse_angle_deg=30.0)
    image, truth = synth.render(spec, np.random.default_rng(0))
    f, g = spec["ferrule_level"], spec["cladding_level"]
    glass = np.clip((image.astype(float) / 255 - f) / (g - f), 0, 1)
    glass[glass < 0.02] = 0
    glass[glass > 0.98] = 1
    m = cv2.moments(glass.astype(np.float32))
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
    minor, major = np.sqrt(np.linalg.eigvalsh(cov))
    assert 1 - minor / major == pytest.approx(truth["cladding_ellipticity"], abs=0.002)
    assert 2 * np.sqrt(minor * major) == pytest.approx(truth["cladding_radius_px"], rel=0.002)


def test_defect_sizes_follow_the_physics(fiber_types):
    """Sizes in µm stay within the ranges of the issue, whatever the µm/px."""
    bounds = {"pit": (2, 10), "dig": (5, 25), "dust": (2, 40), "oil": (20, 80), "chip": (0.5, 18)}
    for seed in range(8):
        rng = np.random.default_rng(seed)
        spec = synth.random_spec(rng, fiber_types, p_clean=0.0, n_defects=(8, 10), **SMALL)
        for d in synth.render(spec, rng)[1]["defects"]:
            if d["type"] == "scratch":
                assert 0.5 <= d["width_um"] <= 4.0
            else:
                lo, hi = bounds[d["type"]]
                assert lo - 1e-6 <= d["size_um"] <= hi + 1e-6, d
