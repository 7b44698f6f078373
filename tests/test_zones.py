"""Tests of fiberprep.zones: geometry on drawn and generated end faces, zone maps."""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from independent_render import independent_image

from fiberprep import synth, zones
from fiberprep.io import ImageRejected

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
PARAMS = CONFIG["zones"]
TYPES = CONFIG["fiber_types"]
REAL = ROOT.parent / "shared" / "real_images"


def disc_image(
    shape=(480, 640),
    center=(330.3, 250.7),
    radius=100.0,
    inside=0.3,
    outside=0.7,
    stretch_y=1.0,
    noise=0.01,
    seed=0,
    bevel_px=0.0,
    blur=0.8,
    stretch_deg=None,
):
    """Antialiased disc (optionally stretched along y, or along the direction
    ``stretch_deg``) with blur and noise; a dark bevel line ``bevel_px`` wide (60 %
    darker than the disc) just inside its edge."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    dx, dy = xx - center[0], yy - center[1]
    if stretch_deg is not None:  # rotate so that the stretch runs along y
        t = math.radians(stretch_deg)
        dx, dy = dy * math.cos(t) - dx * math.sin(t), dx * math.cos(t) + dy * math.sin(t)
    d = np.hypot(dx, dy / stretch_y) - radius
    if bevel_px:
        inside = inside * (1 - 0.6 * np.clip(d + bevel_px + 0.5, 0, 1))
    img = outside + (inside - outside) * np.clip(0.5 - d, 0, 1)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur)
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("inside,outside,polarity", [(0.3, 0.7, "dark"), (0.8, 0.2, "bright")])
def test_disc_center_radius_and_polarity(inside, outside, polarity):
    geo = zones.measure_geometry(disc_image(inside=inside, outside=outside), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.25
    assert geo["cladding_radius_px"] == pytest.approx(100.0, rel=0.01)
    assert geo["polarity"] == polarity
    assert geo["um_per_px"] == pytest.approx(62.5 / geo["cladding_radius_px"])
    assert geo["um_per_px_source"] == "cladding"
    assert 0.5 <= geo["confidence"] <= 1.0
    assert set(geo) == set(zones.GEOMETRY_KEYS)


def test_calibration_is_used_and_reported():
    geo = zones.measure_geometry(disc_image(), TYPES["sm_pc"], PARAMS, um_per_px=0.625)
    assert geo["um_per_px"] == 0.625 and geo["um_per_px_source"] == "calibration"


def test_off_center_vignetted_fiber():
    img = disc_image(center=(150.2, 300.6), radius=90.0)
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    img = img * (1 - 0.6 * ((xx - w) ** 2 + yy**2) / (w**2 + h**2))
    geo = zones.measure_geometry(img.astype(np.float32), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 150.2, geo["center_y"] - 300.6) < 0.5


def test_non_square_pixels_give_an_ellipse():
    geo = zones.measure_geometry(disc_image(radius=95.0, stretch_y=1.09), TYPES["sm_pc"], PARAMS)
    assert geo["cladding_ellipticity"] == pytest.approx(1 - 1 / 1.09, abs=0.005)
    assert abs(geo["cladding_angle_deg"] - 90) < 2
    assert geo["cladding_radius_px"] == pytest.approx(95.0 * math.sqrt(1.09), rel=0.01)


def _ellipse_image(ellipticity, angle_deg):
    """A dark disc whose edge is an ellipse of ``ellipticity``, major axis at ``angle_deg``."""
    return disc_image(center=(320.3, 240.7), radius=120.0, stretch_y=1 / (1 - ellipticity),
                      stretch_deg=angle_deg)


def test_oblique_ellipse_is_no_fiber_edge():
    # a cladding's non-circularity and an angled polish seen head-on stay under 2 %;
    # non-square pixels stretch along a pixel axis. An oblique ellipse beyond
    # oblique_max_ellipticity is refitted as a circle, which such an edge does not
    # support (fifth-renderer fits of 0.04-0.07 at 14-46 degrees off the axes were 3-12 px
    # off: a halo, a crossing scratch and dirt pulled them)
    for angle in (0, 90):
        geo = zones.measure_geometry(_ellipse_image(0.05, angle), TYPES["sm_pc"], PARAMS)
        assert geo["cladding_ellipticity"] == pytest.approx(0.05, abs=0.002)
    geo = zones.measure_geometry(_ellipse_image(0.02, 30), TYPES["sm_pc"], PARAMS)
    assert geo["cladding_ellipticity"] == pytest.approx(0.02, abs=0.002)
    assert geo["cladding_angle_deg"] == pytest.approx(30, abs=2)
    with pytest.raises(ImageRejected, match="low fit confidence"):
        zones.measure_geometry(_ellipse_image(0.05, 30), TYPES["sm_pc"], PARAMS)


def test_generated_images_within_one_pixel():
    for i in range(3):
        rng = np.random.default_rng([11, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(640, 480)], p_clean=1.0)
        image, truth = synth.render(spec, rng)
        geo = zones.measure_geometry(
            image.astype(np.float32) / 255, TYPES[spec["fiber_type"]], PARAMS
        )
        assert (
            math.hypot(geo["center_x"] - truth["center_x"], geo["center_y"] - truth["center_y"]) < 1
        )
        assert geo["cladding_radius_px"] == pytest.approx(truth["cladding_radius_px"], rel=0.01)


AUTO = {n: TYPES[n] for n in CONFIG["fiber"]["auto_types"]}


@pytest.mark.parametrize("name", CONFIG["fiber"]["auto_types"])
def test_auto_fiber_type_from_the_visible_core(name):
    # the core-to-cladding ratio names the type, and the type's cladding sets the scale
    for i in range(2):
        rng = np.random.default_rng([29, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], p_clean=1.0, fiber_type_names=[name],
                                 p_core_visible_sm=1.0, p_core_visible_mm=1.0)
        image, truth = synth.render(spec, rng)
        geo = zones.measure_geometry(image.astype(np.float32) / 255, AUTO, PARAMS)
        assert geo["fiber_type"] == name and geo["core_visible"]
        assert geo["fiber_type_source"] == "core"
        assert geo["um_per_px"] == pytest.approx(truth["um_per_px"], rel=0.01)


def test_offset_core_is_found_beyond_the_first_search_window():
    # a 50 µm core 1.5 µm off the cladding center at 0.25 µm/px lies 6 px beyond the
    # cladding-centred guess on one side: the refits follow it
    rng = np.random.default_rng(37)
    spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], p_clean=1.0, fiber_type_names=["mm_50"],
                             p_core_visible_mm=1.0, p_frame=0.0)
    spec.update({"um_per_px": 0.25, "core_dx_um": 1.5, "core_dy_um": 0.0, "center_x": 400.0, "center_y": 300.0})
    image, truth = synth.render(spec, rng)
    geo = zones.measure_geometry(image.astype(np.float32) / 255, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_50" and geo["core_visible"]
    assert geo["core_offset_um"] == pytest.approx(truth["core_offset_um"], abs=0.3)
    assert geo["core_radius_px"] == pytest.approx(truth["core_radius_px"], rel=0.05)


@pytest.mark.parametrize("name", ["mm_50", "mm_62_5", "mm_100_140"])
def test_core_3_um_off_center_is_found_and_names_the_type(name):
    # concentricity errors reach 3 µm: 7.5 px at 0.4 µm/px, so along rays from the
    # cladding center the core's step wanders by +-7.5 px and a 2 px step shows on few
    # rays (this scene was typed sm_pc, "default", before the wide baseline)
    rng = np.random.default_rng([53, 2])
    spec = synth.random_spec(rng, TYPES, sizes=[(1024, 768)], p_clean=1.0, fiber_type_names=[name],
                             p_core_visible_mm=1.0, p_frame=0.0)
    angle = rng.uniform(0, 2 * np.pi)
    spec.update({"um_per_px": 0.4, "core_dx_um": 3.0 * math.cos(angle), "core_dy_um": 3.0 * math.sin(angle),
                 "center_x": 512.0, "center_y": 384.0})
    image, truth = synth.render(spec, rng)
    geo = zones.measure_geometry(image.astype(np.float32) / 255, AUTO, PARAMS)
    assert (geo["fiber_type"], geo["fiber_type_source"], geo["core_visible"]) == (name, "core", True)
    assert geo["core_offset_um"] == pytest.approx(truth["core_offset_um"], abs=0.3)


@pytest.mark.parametrize("rel", [0.3, 0.45, 0.55])
def test_pit_at_the_center_is_no_core(rel):
    # a dark pit just under the single-mode core's searched sizes, on a fiber whose core
    # does not show: its edge fit may pull into the search range but its size does not
    rng = np.random.default_rng(41)
    spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], p_clean=1.0, fiber_type_names=["mm_50"],
                             p_core_visible_mm=0.0, p_frame=0.0)
    spec["um_per_px"] = 0.36
    image, truth = synth.render(spec, rng)
    nominal_r = 0.5 * TYPES["sm_pc"]["core_um"] / truth["um_per_px"]
    pit = np.zeros(image.shape, np.float32)
    cv2.circle(pit, (round(truth["center_x"] * 16), round(truth["center_y"] * 16)), int(rel * nominal_r * 16),
               1.0, -1, cv2.LINE_AA, 4)
    img = image.astype(np.float32) / 255 * (1 - 0.6 * cv2.GaussianBlur(pit, (0, 0), 1.0))
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert not geo["core_visible"]


def _disc_with(inner, contrast, blur, seed, cx=330.3, cy=250.7):
    """A 640 x 480 dark disc (0.3 on 0.7, radius 100 px) whose light is raised by
    ``contrast`` inside ``inner(dx, dy)`` (a signed distance in px from the disc's
    center offsets, negative inside; antialiased), blurred by ``blur`` px, noise 0.01."""
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    img = 0.7 - 0.4 * np.clip(0.5 - (np.hypot(xx - cx, yy - cy) - 100.0), 0, 1)
    img *= 1 + contrast * np.clip(0.5 - inner(xx - cx, yy - cy), 0, 1)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), blur)
    img += np.random.default_rng(seed).normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_faint_small_core_off_center_is_found(seed):
    # a single-mode core 7.2 px across the radius, 6 % brighter than the cladding and 1.8 px
    # off its center: its edge points scatter so much that an ellipse through them was
    # more elongated than any core (max_ellipticity) and the core went unseen
    r_core, off = 7.2, (1.5, -1.0)
    img = _disc_with(lambda dx, dy: np.hypot(dx - off[0], dy - off[1]) - r_core, 0.06, 1.2, seed)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert (geo["fiber_type"], geo["core_visible"]) == ("sm_pc", True)
    assert geo["core_radius_px"] == pytest.approx(r_core, rel=0.1)
    assert geo["core_offset_px"] == pytest.approx(math.hypot(*off), abs=1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_sharp_oval_particle_at_the_center_is_no_core(seed):
    # a bright particle 9 x 7 px across the radius on the center of a fiber whose core
    # does not show: a circle fits its outline as well as a faint core's, but its
    # sharp step is no index step (core_circle_max_gradient)
    img = _disc_with(lambda dx, dy: 8.0 * (np.hypot(dx / 9.0, dy / 7.0) - 1.0), 0.8, 1.0, seed)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert not geo["core_visible"]


def _glass_shaded(shade, seed, off=0.0, scale=1.0):
    """A 640 x 480 dark disc (0.3 on 0.7, radius 100 px) whose glass light is multiplied
    by ``shade(rho)`` (rho: px from the point ``off`` px right of its center), blurred
    1.2 px, noise 0.01; ``scale`` times larger (frame and disc; ``rho`` and ``off`` stay
    in units of the 100 px disc)."""
    h, w = round(480 * scale), round(640 * scale)
    yy, xx = (np.mgrid[:h, :w].astype(np.float32) - np.array([10.7, 10.3], np.float32)[:, None, None]) / scale
    rho = np.hypot(xx - 320.0, yy - 240.0)
    img = 0.7 - 0.4 * np.clip((100.5 - rho) * scale, 0, 1)
    img *= np.where(rho < 100.5, shade(np.hypot(xx - 320.0 - off, yy - 240.0)), 1.0)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.2)
    img += np.random.default_rng(seed).normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("name,rise,seed", [("mm_62_5", 0.12, 0), ("mm_62_5", -0.06, 0), ("mm_50", 0.06, 1),
                                            ("mm_50", -0.12, 0), ("mm_62_5", 0.04, 0), ("mm_50", -0.04, 0),
                                            ("mm_50", -0.02, 0)])
def test_graded_index_dome_without_a_step_is_the_core(name, rise, seed):
    # a graded-index core's reflectance falls (or rises) parabolically to its edge and
    # stops there, 2-12 % from the axis (4 %: about the noise of one pixel here; the
    # eighteenth renderer's 2-5 % domes, the twenty-seventh's 1-3 %: the 2 % bowl here
    # rises less than 2 % in the kink's fit, single-mode at the old
    # core_kink_min_rise): no step, a kink. The step search found none
    # (the fiber was typed single-mode by default) or put the edge 17 % inside (a 62.5 µm
    # core typed 50 µm); the kink names the type and sizes it
    r_core = 100.0 * TYPES[name]["core_um"] / TYPES[name]["cladding_um"]
    img = _glass_shaded(lambda rho: 1 + rise * np.clip(1 - (rho / r_core) ** 2, 0, None), seed)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert (geo["fiber_type"], geo["core_visible"]) == (name, True)
    assert geo["core_radius_px"] == pytest.approx(r_core, rel=0.05)


@pytest.mark.parametrize("rise", [0.15, -0.15, 0.1])
def test_graded_index_dome_easing_into_the_glass_is_the_core(rise):
    # a 100 µm core's light that eases into the glass level ((1 - rho^2)^1.5, no slope at
    # its edge) on a cladding 160 px in radius: a polynomial fits the short flat stretch
    # beyond it almost as well as the kink (1.1-1.8 of its residual), which the old
    # core_kink_max_smooth (0.6) took for shading (single-mode or 62.5/125)
    img = _glass_shaded(lambda rho: 1 + rise * np.clip(1 - (rho / 71.4) ** 2, 0, None) ** 1.5, 0, scale=1.6)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert (geo["fiber_type"], geo["core_visible"]) == ("mm_100_140", True)
    strict = zones.measure_geometry(img, AUTO, {**PARAMS, "core_kink_max_smooth": 0.6})
    assert strict["fiber_type"] != "mm_100_140"


def _soft_core_disc(seed, step):
    """A 640 x 480 dark disc (0.3 on 0.7, radius 100 px at (330.3, 250.7)) whose glass
    steps by ``step`` at a 50 µm core's radius (40 px) over a logistic edge 2 px in
    scale (a soft step of ~9 px), blurred 1 px, with row banding of 1 % and noise 0.02."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    rho = np.hypot(xx - 330.3, yy - 250.7)
    glass = 0.3 * (1 + step * 0.5 * (1 - np.tanh((rho - 40.0) / 4.0)))
    img = cv2.GaussianBlur(np.where(rho < 100.0, glass, 0.7).astype(np.float32), (0, 0), 1.0)
    img *= (1 + 0.01 * rng.normal(0, 1, (480, 1))).astype(np.float32)
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_faint_soft_core_under_banding_is_found_on_the_blurred_crop(seed):
    # a 6 % core step with a soft edge under row banding and noise: the angular median
    # shows it, but single rays' edge points scatter over its width and their fit is too
    # weak (the old code, as with no extra blur: single-mode); on the crop blurred by
    # core_soft_sigma_px they line up (twentieth renderer: 16 of 400 fibers typed right)
    img = _soft_core_disc(seed, -0.06)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert (geo["fiber_type"], geo["core_visible"]) == ("mm_50", True)
    assert abs(geo["core_radius_px"] - 40.0) < 2.0
    sharp = zones.measure_geometry(img, AUTO, {**PARAMS, "core_soft_sigma_px": 1e-3})
    assert sharp["fiber_type"] == "sm_pc"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_banding_and_noise_alone_give_no_core(seed):
    # the same disc with no core: the blurred refit finds no core in banding and noise
    geo = zones.measure_geometry(_soft_core_disc(seed, 0.0), AUTO, PARAMS)
    assert (geo["fiber_type"], geo["core_visible"]) == ("sm_pc", False)


@pytest.mark.parametrize("shade", [
    lambda rho: 1 + 0.1 * np.exp(-0.5 * (rho / 45.0) ** 2),  # a broad hot spot
    lambda rho: 1 - 0.15 * np.exp(-0.5 * (rho / 60.0) ** 2),  # a broad shadow
    # flat, then brighter toward the edge: a kink with its slope outside (the mirror image)
    lambda rho: 1 + 0.1 * np.clip((rho**2 - 65.0**2) / (100.0**2 - 65.0**2), 0, None),
])
def test_shading_without_a_kink_is_no_core(shade):
    geo = zones.measure_geometry(_glass_shaded(shade, 0), AUTO, PARAMS)
    assert not geo["core_visible"] and geo["fiber_type"] == "sm_pc"


@pytest.mark.parametrize("rise", [-0.2, 0.2])
def test_film_dome_off_the_centre_is_no_core(rise):
    # an oil film 90 px across, its dome 20 px off the fiber's centre: its radial median
    # ends in a kink too (typed 50/125 without core_kink_max_spread), but not at one
    # radius all around (one 80 px across and 15 px off still passes for a core)
    img = _glass_shaded(lambda rho: 1 + rise * np.clip(1 - (rho / 45.0) ** 2, 0, None), 0, off=20.0)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert not geo["core_visible"] and geo["fiber_type"] == "sm_pc"
    loose = zones.measure_geometry(img, AUTO, {**PARAMS, "core_kink_max_spread": 1e9})
    assert loose["fiber_type"] == "mm_50"


def test_auto_fiber_type_without_a_visible_core_is_the_first_candidate():
    rng = np.random.default_rng(31)
    spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], p_clean=1.0, fiber_type_names=["mm_50"],
                             p_core_visible_mm=0.0)
    image, _ = synth.render(spec, rng)
    geo = zones.measure_geometry(image.astype(np.float32) / 255, AUTO, PARAMS)
    assert geo["fiber_type"] == next(iter(AUTO)) and not geo["core_visible"]
    assert geo["fiber_type_source"] == "default"  # a guess, and the record says so
    plain = zones.measure_geometry(image.astype(np.float32) / 255, TYPES["mm_50"], PARAMS)
    assert plain["fiber_type"] is None and plain["fiber_type_source"] == "config"
    # its folder's type, assumed, is what measuring it as that type alone gives
    alone = zones.measure_geometry(image.astype(np.float32) / 255, {"mm_50": TYPES["mm_50"]}, PARAMS)
    assumed = zones.assume_fiber_type(geo, "mm_50", TYPES["mm_50"])
    assert assumed.pop("fiber_type_source") == "folder" and alone.pop("fiber_type_source") == "config"
    assert assumed == pytest.approx(alone)
    wider = zones.assume_fiber_type(geo, "mm_100_140", TYPES["mm_100_140"])  # a 140 µm cladding
    assert wider["um_per_px"] == pytest.approx(70.0 / geo["cladding_radius_px"])
    assert wider["core_radius_px"] == pytest.approx(50.0 / wider["um_per_px"])


def test_bright_fiber_ends_outside_a_barely_resolved_darker_rim():
    """A bright fiber whose glass darkens in a rim 4.4 px wide just inside its edge
    (coaxial light on a bevel), blurred until the two steps are barely resolved (the
    gradient dips 6 % between them), on a grainy ferrule: the glass ends at the outer
    step (the inner, stronger one was taken when the dip had to reach 20 %)."""
    rng = np.random.default_rng(1)
    h, w, ss, r = 480, 640, 4, 140.0
    yy, xx = (np.mgrid[: h * ss, : w * ss] + 0.5) / ss - 0.5
    d = np.hypot(xx - 321.3, yy - 238.7)
    glass = cv2.resize(np.where(d < r - 4.4, 0.40, np.where(d < r, 0.256, 0.0)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_AREA)
    outside = cv2.resize((d >= r).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    grain = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 1.5)
    img = cv2.GaussianBlur(glass + outside * 0.15 * (1 + 0.05 * grain / grain.std()), (0, 0), 1.43)
    img = np.clip(img + rng.normal(0, 0.004, img.shape), 0, 1).astype(np.float32)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert geo["cladding_radius_px"] == pytest.approx(r, abs=0.6)


def test_a_folder_names_the_type_its_core_typed_images_agree_on():
    rows = (
        [("a", "mm_50", "core")] * 6 + [("a", "mm_62_5", "core"), ("a", "sm_pc", "default")]
        + [("b", "mm_50", "core")] * 4 + [("b", "sm_pc", "default")] * 9  # too few named
        + [("c", "mm_50", "core")] * 4 + [("c", "sm_pc", "core")] * 4  # a mixed folder
        + [("d", "mm_105_125", "ambiguous")] * 8 + [("d", "sm_pc", "default")]  # no core names it
    )
    table = pd.DataFrame(rows, columns=["folder", "fiber_type", "fiber_type_source"])
    assert zones.folder_fiber_types(table, 5, 0.8) == {"a": "mm_50"}
    assert zones.folder_fiber_types(table, 4, 0.8) == {"a": "mm_50", "b": "mm_50"}
    assert zones.folder_fiber_types(table, 5, 0.9) == {}


def _clean_fiber(seed, name, core_contrast=None, **scene):
    """A clean generated fiber of type ``name`` with a visible core (no field stop); the
    core ``core_contrast`` x as bright as the cladding when given."""
    rng = np.random.default_rng(seed)
    spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], p_clean=1.0, fiber_type_names=[name],
                             p_core_visible_mm=1.0, p_frame=0.0)
    spec.update(scene)
    if core_contrast:
        spec["core_level"] = spec["cladding_level"] * core_contrast
    image, truth = synth.render(spec, rng)
    return image.astype(np.float32) / 255, truth


def _annulus(shape, truth, r0, r1):
    """Soft mask of the annulus r0..r1 (fractions of the cladding radius) around the fiber."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    d = np.hypot(xx - truth["center_x"], yy - truth["center_y"]) / truth["cladding_radius_px"]
    mask = ((d >= r0) & (d < r1)).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), 1.5)


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_fiber_type_core_is_the_innermost_strong_step(seed):
    # a brighter ring of the cladding outside a core 8 % under 50/125's nominal size (real
    # 91 µm-core photos show such rings) matches 105/125's core size better, but the core
    # is the innermost strong step
    img, truth = _clean_fiber([43, seed], "mm_50", core_contrast=0.9, um_per_px=0.4,
                              core_um=46.0, core_edge_um=0.5, core_ring=0.0)
    img = img * (1 + 0.12 * _annulus(img.shape, truth, 0.84, 0.93))
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_50" and geo["fiber_type_source"] == "core"
    assert geo["core_radius_px"] == pytest.approx(truth["core_radius_px"], rel=0.03)


def test_auto_fiber_type_ignores_faint_shading_inside_the_core():
    # light falling off toward the center of a core 8 % under 100/140's nominal size puts
    # a soft step at 50/125's core size (real endfaces_720x576 frames): weaker than the
    # core edge, it is no core
    img, truth = _clean_fiber([47, 0], "mm_100_140", core_contrast=1.3, um_per_px=0.4,
                              core_um=0.657 * 140, core_edge_um=0.5, core_ring=0.0)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float32)
    d = np.hypot(xx - truth["center_x"], yy - truth["center_y"]) / truth["cladding_radius_px"]
    img = img * (1 + 0.05 * np.clip((d - 0.375) / 0.05, 0, 1))  # a 5 % ramp around 0.4
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_100_140" and geo["fiber_type_source"] == "core"


def test_auto_fiber_type_step_of_no_type_size_is_no_core():
    # a dark oil blot at the center of a single-mode fiber, 0.3 of the cladding radius:
    # 25 % under 50/125's core, far over 9/125's, so no type's core
    img, truth = _clean_fiber([53, 0], "sm_pc", um_per_px=0.4, p_core_visible_sm=0.0)
    img = img * (1 - 0.3 * _annulus(img.shape, truth, 0.0, 0.3))
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert not geo["core_visible"] and geo["fiber_type_source"] == "default"
    assert geo["fiber_type"] == next(iter(AUTO))


def test_auto_fiber_type_pit_at_the_center_of_a_multimode_core_is_no_core():
    # a dark pit of 9/125's core size at the center of a visible 62.5/125 core: a sharper
    # step than the core's edge and the innermost, but enclosed by the core's strong step
    img, truth = _clean_fiber([61, 0], "mm_62_5", um_per_px=0.4, core_contrast=0.8,
                              core_edge_um=0.5)
    pit = 4.5 / 62.5  # 9 µm diameter, as a fraction of the cladding radius
    img = img * (1 - 0.5 * _annulus(img.shape, truth, 0.0, pit))
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_62_5" and geo["fiber_type_source"] == "core"
    assert geo["core_radius_px"] == pytest.approx(truth["core_radius_px"], rel=0.03)


def test_auto_fiber_type_between_two_types_is_ambiguous():
    # a core of 0.76 x the cladding lies within tolerance of 100/140 (0.714) and of
    # 105/125 (0.84): the nearer is chosen and the record says it was a close call
    img, _ = _clean_fiber([59, 0], "mm_105_125", um_per_px=0.4, core_um=0.76 * 125,
                          core_edge_um=0.5)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_100_140" and geo["fiber_type_source"] == "ambiguous"
    assert geo["core_visible"]


@pytest.mark.parametrize("name", ["mm_105_125", "mm_100_140"])
@pytest.mark.parametrize("core_edge_um", [2.0, 3.0])
def test_soft_large_core_edge_is_no_epoxy_band(name, core_edge_um):
    # a bright large-core fiber at 0.27-0.35 µm/px: the core's soft edge reaches into the
    # 10 µm cladding annulus, a ramp the two-step band model took for the glass with an
    # epoxy band outside it (the radius 9 % short); the glass inside a band is flat
    for upp in (0.27, 0.35):
        img, truth = _clean_fiber([79, 0], name, um_per_px=upp, core_edge_um=core_edge_um,
                                  polarity="bright", ferrule_level=0.3, cladding_level=0.6,
                                  core_level=0.95, core_ring=0.0, edge_line=0.0, epoxy=0.0,
                                  edge_halo=0.0, tilt_shadow=0.0)
        geo = zones.measure_geometry(img, TYPES[name], PARAMS)
        assert geo["cladding_radius_px"] == pytest.approx(truth["cladding_radius_px"], rel=1e-3)


def _rim_shadow(shape, truth, depth, width_um, um_per_px, angle_deg=200.0):
    """Relative light of a tilted probe's shadow across the fiber's edge: ``depth`` darker
    at the edge toward ``angle_deg`` (a cosine lobe, none on the far side), fading over
    ``width_um`` outward and a third of that inward."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    side = np.clip(np.cos(np.arctan2(yy - truth["center_y"], xx - truth["center_x"]) - math.radians(angle_deg)), 0, 1)
    u = (np.hypot(xx - truth["center_x"], yy - truth["center_y"]) - truth["cladding_radius_px"]) * um_per_px / width_um
    return 1 - depth * side ** 1.5 * np.exp(-0.5 * np.square(np.where(u < 0, 3 * u, u)))


@pytest.mark.parametrize("arc_deg, seen", [(360, True), (300, True), (180, False), (120, False)])
def test_a_large_core_step_runs_all_around(arc_deg, seen):
    # a core's step is a property of the glass and shows all around; a tilted probe's
    # shadow darkens one side of the rim (a handheld probe's renderer: 6 single-mode and
    # 62.5 µm fibers typed 105/125 by a crescent whose median step passed for a core's)
    h, w, cx, cy, r = 400, 400, 200.3, 199.6, 150.0
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    phi = np.degrees(np.arctan2(yy - cy, xx - cx)) % 360
    inner = np.clip(r - np.hypot(xx - cx, yy - cy) + 0.5, 0, 1) * (phi < arc_deg)
    img = cv2.GaussianBlur((0.3 + 0.06 * inner).astype(np.float32), (0, 0), 1.5)
    img += np.random.default_rng(0).normal(0, 0.003, img.shape).astype(np.float32)
    fit = {"cx": cx, "cy": cy, "r": r, "shape": (cx, cy, r, r, 0.0)}
    assert zones._step_all_around(img, fit, -1.0, 0.5, PARAMS) is seen


def test_tilt_shadow_inside_the_rim_leaves_a_large_core():
    # a true 105/125 core under a tilted probe's shadow across the rim is still found
    img, truth = _clean_fiber([89, 0], "mm_105_125", um_per_px=0.6, core_contrast=0.85,
                              core_edge_um=0.5, core_ring=0.0)
    geo = zones.measure_geometry(img * _rim_shadow(img.shape, truth, 0.4, 14.0, 0.6), AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_105_125" and geo["core_visible"]


def _dark_fiber_errors(seed, size=(800, 600), **scene):
    """Center error (px) and radius error (%) on a clean generated dark SM fiber."""
    rng = np.random.default_rng(seed)
    spec = synth.random_spec(
        rng, TYPES, sizes=[size], p_clean=1.0, p_bright=0.0, p_frame=0.0,
        fiber_type_names=["sm_pc"],
    )
    spec.update({"epoxy": 0.0, "edge_line": 0.0, "edge_halo": 0.0, "tilt_shadow": 0.0, **scene})
    image, truth = synth.render(spec, rng)
    geo = zones.measure_geometry(image.astype(np.float32) / 255, TYPES["sm_pc"], PARAMS)
    center = math.hypot(geo["center_x"] - truth["center_x"], geo["center_y"] - truth["center_y"])
    return center, 100 * abs(geo["cladding_radius_px"] / truth["cladding_radius_px"] - 1)


def test_tilt_shadow_does_not_pull_the_center():
    # the shaded side's weak, smeared step must not drag the fit toward the shadow
    for i in range(3):
        center, radius = _dark_fiber_errors(
            [41, i], tilt_shadow=0.6, tilt_length_um=4.0, um_per_px=0.6
        )
        assert center < 0.4 and radius < 0.2


def test_coarse_pixels_keep_the_edge_fit_sub_pixel():
    # a 400 µm field on 400x300 px (1.0-1.14 µm/px): the crop around the fiber is fitted
    # upsampled (fit_um_per_px), where the fit's pixel constants hold. A 1 µm dark line
    # inside a blurred edge beside a tilt shadow: fitted at the image's pixels, two of these
    # eight radii were off by 2.7 and 3.0 %
    for i in range(8):
        scene = {"size": (400, 300), "um_per_px": 1.0 + 0.02 * i, "edge_sigma_px": 0.9,
                 "blur_px": 0.5, "edge_line_um": 1.0}
        center, radius = _dark_fiber_errors([73, i], **scene)
        assert center < 0.1 and radius < 0.1
        _, radius = _dark_fiber_errors([73, i], edge_line=0.6, tilt_shadow=0.5,
                                       tilt_length_um=4.0, **scene)
        assert radius < 1.5


def test_smooth_dark_edge_line_is_not_an_epoxy_ring():
    # a resolved dark line inside the edge, JPEG-compressed: its artifacts are no grain
    for i in range(3):
        _, radius = _dark_fiber_errors(
            [43, i], edge_line=0.6, edge_line_um=1.2, um_per_px=0.27, jpeg_quality=60
        )
        assert radius < 0.1


def test_wide_epoxy_ring_under_vignetting_is_not_taken_for_the_glass_edge():
    # vignetting's fall-off outside the ring's outer edge looks like a faint fringe; the
    # ring's valley in the edge profile still marks the glass edge as its inner boundary
    for i in range(6):
        _, radius = _dark_fiber_errors(
            [47, i], epoxy=0.6, epoxy_width_um=3.5, vignette=0.6, vignette_dx=0.0, vignette_dy=0.0
        )
        assert radius < 0.1


@pytest.mark.parametrize("bevel_px", [1.5, 2.0, 3.0])
def test_dark_bevel_line_does_not_push_the_edge_outward(bevel_px):
    # the bevel line's gradient lobe pushes the gradient peak 0.1-0.3 px outward; the
    # glass ends at the line's outer flank
    img = disc_image(inside=0.35, outside=0.7, noise=0.005, bevel_px=bevel_px, blur=0.7)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.08
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.05


def _banded_disc(inside, outside, lo, hi, band_level, grain=0.0, seed=0):
    """disc_image's fiber (radius 100 px, blur 0.7 px, noise 0.005) with a band from
    ``lo`` to ``hi`` px off the glass edge (negative: inside) at ``band_level``, with
    ``grain`` relative texture (rough epoxy)."""
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    rng = np.random.default_rng(seed)
    img = outside + (inside - outside) * np.clip(0.5 - d, 0, 1)
    band = np.clip(0.5 - (d - hi), 0, 1) * np.clip(0.5 + (d - lo), 0, 1)
    level = band_level * (1 + grain * rng.standard_normal(img.shape))
    img = cv2.GaussianBlur((img + (level - img) * band).astype(np.float32), (0, 0), 0.7)
    return np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1).astype(np.float32)


def _stepped_disc(edges, levels, outside, rng=None):
    """A fiber of radius 100 px at (330.3, 250.7): ``levels[i]`` up to ``edges[i]`` px off
    the glass edge (negative: inside; arrays for textured bands), ``outside`` beyond;
    blurred 1 px, noise 0.005."""
    rng = np.random.default_rng(0) if rng is None else rng
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    img = np.select([d < e for e in edges], levels, outside).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1).astype(np.float32)


def _epoxy_grain(level, rng):
    """A rough epoxy ring's reflectance over _stepped_disc's frame: ``level`` with 15 %
    grain about 1 px across."""
    grain = cv2.GaussianBlur(rng.standard_normal((480, 640)).astype(np.float32), (0, 0), 1.0)
    return level * (1 + 0.15 * grain / grain.std())


@pytest.mark.parametrize("ring", [0.56, 0.60])
@pytest.mark.parametrize("width", [6.0, 8.0])
def test_rough_ring_almost_as_bright_as_a_bright_fiber_ends_the_glass_at_its_inner_edge(ring, width):
    # a bright fiber (0.62) in a rough epoxy ring (15 % grain) nearly at its level, then
    # a dark ferrule (0.29): the ring's outer step is the one strong edge; as on dark
    # fibers, a textured band within reach of it is epoxy and the glass ends where the
    # grain starts (the old code looked for rings on dark fibers only: +6..+8 px;
    # nineteenth renderer, fits +7..+9 % off to within 1.3 %)
    rng = np.random.default_rng(0)
    img = _stepped_disc([0.0, width], [0.62, _epoxy_grain(ring, rng)], 0.29, rng)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


def test_dark_epoxy_ring_outside_a_bright_bevel_rim_ends_the_glass_at_the_ring():
    # a dark fiber whose glass brightens in a bevel rim just inside its edge (oblique
    # light), then a dark epoxy ring, then the bright ferrule: the strongest step is the
    # ring's outer edge; the rim between the glass and the ring is no reason to doubt
    # that the ring's inner boundary is the glass edge
    img = _stepped_disc([-4.0, 0.0, 6.0], [0.30, 0.385, 0.19], 0.64)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


def _edge_profile(steps, edges, levels, outside, blur=1.0):
    """A median edge profile at ``steps`` (px from the fitted edge): ``levels[i]`` up to
    ``edges[i]``, ``outside`` beyond, each step an erf of ``blur`` px."""
    out = np.full(steps.shape, float(levels[0]))
    for e, a, b in zip(edges, levels, [*levels[1:], outside]):
        out += (b - a) * 0.5 * (1 + np.vectorize(math.erf)((steps - e) / (math.sqrt(2) * blur)))
    return out


@pytest.mark.parametrize("ring,width", [(0.116, 4.0), (0.23, 8.0)])
@pytest.mark.parametrize("fringe", [False, True])
def test_valley_behind_a_bright_bevel_rim_is_an_epoxy_ring(ring, width, fringe):
    # a dark fiber (0.20) brightening in a bevel rim (0.27) under ring light, then a rough
    # ring before the ferrule (0.39), as an independent renderer draws them: darker than
    # the glass and narrower than a bevel line (4 px against 5: 1.6 µm at 0.4 µm/px), or
    # wider but brighter than the glass (a valley only below the rim). A glass edge has
    # one bevel, so the valley beyond the rim is the ring and the glass ends at its inner
    # edge (the old code took the first for a dark bevel line, the second for glass, and
    # both times the ring's outer edge for the glass's). Under a fringe seen all around
    # the edge, bright-dark-bright is a coaxial scope's diffraction pattern: no ring
    steps = np.arange(-40.0, 23.0, 0.5)
    level = _edge_profile(steps, [-4.5 - width, -width, 0.0], [0.20, 0.27, ring], 0.39, blur=0.8)
    textured = (steps >= -width) & (steps <= 0.0)
    edge = zones._dark_ring(level, textured, textured, steps, 1.0, 20.0, 5.0, 7.5, fringe, PARAMS)
    if fringe:
        assert edge is None
    else:
        assert edge == pytest.approx(-width, abs=0.5)


@pytest.mark.parametrize("rim", [True, False])
def test_shallow_valley_behind_a_bright_bevel_rim_is_still_an_epoxy_ring(rim):
    # ring light: a dark fiber (0.20) brightening in a bevel rim (0.24), a dark epoxy ring
    # (0.12) and a bright ferrule (0.80), blurred (an independent renderer's image whose
    # radius came out +5.6 %). The valley is under a fifth of the ring-to-ferrule step deep,
    # but beyond a bright rim it can be no dark bevel of the glass: it is the ring, and the
    # glass ends at its inner edge. Without the rim so shallow a valley is no ring
    steps = np.arange(-40.0, 23.0, 0.5)
    inside = 0.24 if rim else 0.20
    level = _edge_profile(steps, [-10.0, -6.0, 0.0], [0.20, inside, 0.12], 0.80, blur=1.5)
    textured = (steps >= -6.0) & (steps <= 0.0)
    edge = zones._dark_ring(level, textured, textured, steps, 1.0, 20.0, 5.0, 7.5, False, PARAMS)
    if rim:
        assert edge == pytest.approx(-6.0, abs=0.5)
    else:
        assert edge is None


def test_bright_dark_bright_lines_at_the_edge_are_the_glass_edges_diffraction_pattern():
    # a narrow dark line between a bright line inside and a bright fringe outside, all
    # around (a coaxial scope's glass edge: real_images/dimension_scope_91um_core): the
    # dark line is the glass's own, which ends at its outer flank
    img = _stepped_disc([-5.0, -2.5, 0.0, 2.0], [0.30, 0.385, 0.15, 0.80], 0.64)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


@pytest.mark.parametrize("width", [6.0, 10.0])
def test_plain_dark_epoxy_ring_ends_the_glass_at_its_inner_edge(width):
    # a grainless dark ring (0.12) between a dark fiber (0.30) and the ferrule: its noise,
    # relative to its low level, is texture enough for a ring, not a bevel of the glass
    img = _stepped_disc([0.0, width], [0.30, 0.12], 0.64)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


@pytest.mark.parametrize(
    "levels,outside,width",
    [((0.30, ring), 0.64, w) for ring in (0.15, 0.24, 0.42) for w in (4.5, 6.0, 8.0)]
    + [((0.80, 0.45), 0.05, w) for w in (4.0, 7.0)],
)
def test_smooth_band_darker_than_the_brighter_side_just_outside_it_is_epoxy(levels, outside, width):
    # a grainless band darker than the brighter side, wider than a bevel line (2 µm =
    # 3.2 px here): below a dark fiber's level (a valley) or between its level and the
    # ferrule's (0.42: epoxy reflects more than glass, less than zirconia), or between
    # a bright fiber's and its ferrule's. Its outer step may be the strongest, but the
    # glass ends at its inner one (the old code took the outer step unless the band's
    # noise passed for grain; a dark fiber's band between the levels until 2026-12-07)
    img = _stepped_disc([0.0, width], list(levels), outside)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.3


@pytest.mark.parametrize("ring_end_um", [3.0, 2.0])
def test_smooth_valley_wider_than_any_bevel_line_is_epoxy_under_a_fringe(ring_end_um):
    # the median edge profile of a helper renderer's dark fiber (sixth, seed 601, image
    # 155; 0.625 µm/px here, noise 0.005): the glass (0.345) rolls off over 3 µm into a
    # smooth ring a little darker still, ~5 µm wide at half depth, then the bright ferrule
    # with a faint overshoot. The overshoot passed for a coaxial scope's fringe and the
    # old code took the ring for glass (radius +7 %); no bevel line is so wide
    # (smooth_ring_min_um), so the glass ends at the valley's inner half depth. The
    # renderer's own edge lies at the roll-off's foot (100 px): a bevel inside the glass
    # as dark as the epoxy does not show where it ends
    knots = [(-8, 0.345), (-4, 0.343), (-2.5, 0.27), (-1, 0.192), (0, 0.204),
             (ring_end_um, 0.222), (ring_end_um + 0.75, 0.26), (ring_end_um + 1.5, 0.48),
             (ring_end_um + 2.25, 0.73), (ring_end_um + 2.75, 0.776), (8, 0.765), (9, 0.755)]
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d_um = (np.hypot(xx - 330.3, yy - 250.7) - 100.0) * 0.625
    img = np.interp(d_um, *zip(*knots)).astype(np.float32)
    img += np.random.default_rng(0).normal(0, 0.005, img.shape).astype(np.float32)
    geo = zones.measure_geometry(np.clip(img, 0, 1), TYPES["sm_pc"], PARAMS)
    assert 95.0 < geo["cladding_radius_px"] < 100.0


def test_shallow_smooth_ring_wider_than_any_bevel_line_is_epoxy():
    # the median edge profile of the eleventh renderer's dark fiber (seed 1102, image 44,
    # 0.35 µm/px): the glass (0.26) darkens in a bevel line at its edge, then a smooth
    # epoxy ring (0.15) 4.5 µm wide, an eighth of the ring-to-ferrule step below the
    # glass, then the ferrule (0.85) with a bright fringe. Too shallow for a valley to be
    # a ring, but no bevel line is so wide and no grain marks another edge: the old code
    # took the ring's outer edge (+8.3 %)
    knots = [(-8, 0.26), (-1.5, 0.25), (-1, 0.24), (-0.5, 0.19), (0, 0.19), (0.5, 0.16),
             (1, 0.15), (4, 0.15), (4.5, 0.16), (5, 0.36), (5.5, 0.79), (6, 0.88), (6.5, 0.86),
             (9, 0.85)]
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d_um = (np.hypot(xx - 330.3, yy - 250.7) - 62.5 / 0.35) * 0.35
    img = np.interp(d_um, *zip(*knots)).astype(np.float32)
    img += np.random.default_rng(0).normal(0, 0.005, img.shape).astype(np.float32)
    geo = zones.measure_geometry(np.clip(img, 0, 1), TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] * 0.35 / 62.5 - 1) < 0.02


def test_dark_bevel_line_at_a_shallow_rings_inner_end_is_the_glasss():
    # a dark fiber (0.30), a dark bevel line (0.15) 1.5 px wide at its edge, a grainless
    # epoxy ring (0.25) 8 px wide only a little darker than the glass, the ferrule (0.64):
    # the glass ends at the bevel line's outer flank, not its inner one (old code -2.7 px)
    img = _stepped_disc([-1.5, 0.0, 8.0], [0.30, 0.15, 0.25], 0.64)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 1.5


@pytest.mark.parametrize("seed", [0, 1])
def test_smooth_dark_bevel_before_a_rough_epoxy_ring_ends_the_glass_where_the_grain_starts(seed):
    # a dark fiber (0.255) whose glass darkens in a smooth 6 px bevel (0.17), then a rough
    # epoxy ring (0.20, 15 % grain) 12 px wide, then the ferrule: one valley from the bevel
    # to the ring's outer edge. Its smooth inner part is glass; the old code took the
    # ring's outer edge (+12 px)
    rng = np.random.default_rng(seed)
    img = _stepped_disc([-6.0, 0.0, 12.0], [0.255, 0.17, _epoxy_grain(0.20, rng)], 0.45, rng)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.75


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bore_offset", [8.0, 10.0])
def test_fiber_off_centre_in_its_bore_is_centred_on_the_glass(bore_offset, seed):
    # a dark fiber (0.30) off centre in its bore: a rough epoxy crescent (0.15, 15 %
    # grain) 12 px wide on average, from 12 - offset to 12 + offset px around it, then
    # the ferrule. No window around one circle holds the glass edge on every ray; the
    # old code kept the bore's centre (8 and 10 px off) with about the glass's radius
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    glass = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    bore = np.hypot(xx - 330.3 - bore_offset, yy - 250.7) - 112.0
    img = np.select([glass < 0, bore < 0], [0.30, _epoxy_grain(0.15, rng)], 0.64).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0) + rng.normal(0, 0.005, img.shape).astype(np.float32)
    geo = zones.measure_geometry(np.clip(img, 0, 1), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.75
    assert abs(geo["cladding_radius_px"] - 100.0) < 1.0


@pytest.mark.parametrize("seed", [0, 1])
def test_rough_epoxy_ring_as_bright_as_the_glass_under_a_dimming_ferrule(seed):
    # a dark fiber (0.33) in a rough epoxy ring about as bright (0.345, 15 % grain) 10 px
    # wide, then a ferrule dimming outward (vignetting): its fall-off beside the ring's
    # outer edge passes for a faint fringe, but a textured shelf wider than a bevel line
    # is a ring; the old code took the ring's outer edge (+10 px)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    ferrule = 0.58 - 0.0008 * np.clip(d - 10.0, 0, None)
    img = _stepped_disc([0.0, 10.0], [0.33, _epoxy_grain(0.345, rng)], ferrule, rng)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.75


@pytest.mark.parametrize("rim_px", [3.0, 10.0])
@pytest.mark.parametrize("width,ring", [(8.0, 0.24), (12.0, 0.17), (4.0, 0.24)])
def test_smooth_valley_beyond_a_wide_bright_rim(rim_px, width, ring):
    # a dark fiber (0.20), a bright bevel rim (0.30) ``rim_px`` wide inside its edge, a
    # smooth valley (no grain: the fifth renderer's epoxy) ``width`` px wide, the ferrule
    # (0.39). Wider than a bevel line (5 px) the valley is a ring and the glass ends at
    # its inner edge; narrower it may be a dark bevel of the glass itself (no edge). The
    # glass is judged flat beyond a rim wider than the 3 px the plateau skips (the old
    # code measured a 10 px rim's flank as glass, and called every smooth valley a bevel)
    steps = np.arange(-40.0, 23.0, 0.5)
    level = _edge_profile(steps, [-rim_px - width, -width, 0.0], [0.20, 0.30, ring], 0.39, blur=0.8)
    smooth = np.zeros(steps.shape, bool)
    edge = zones._dark_ring(level, smooth, smooth, steps, 1.0, 20.0, 5.0, 7.5, False, PARAMS)
    if width > 5.0:
        assert edge == pytest.approx(-width, abs=0.5)
    else:
        assert edge is None


@pytest.mark.parametrize("inside,outside", [(0.8, 0.2), (0.3, 0.7)])
@pytest.mark.parametrize("share", [0.4, 0.6])
def test_rim_inside_the_glass_edge_ends_at_its_outer_step(inside, outside, share):
    # a smooth 3 px rim between the glass and outside levels (a dark rim inside a bright
    # fiber, a bright bevel under ring light on a dark one) makes a staircase: the glass
    # ends at the outer step, whichever step is stronger (the inner step's gradient lobe
    # pushes the outer peak out by up to 0.35 px at this blur)
    img = _banded_disc(inside, outside, -3.0, 0.0, inside + share * (outside - inside))
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


@pytest.mark.parametrize("inside,outside", [(0.8, 0.2), (0.3, 0.7)])
@pytest.mark.parametrize("width", [4.5, 6.0])
@pytest.mark.parametrize("edge", ["inner", "outer"])
def test_multimode_core_picks_the_step_of_a_staircase_edge(inside, outside, width, edge):
    # a smooth band wider than a bevel between the glass and outside levels is a bevel
    # rim inside the glass edge or a band outside it alike; a 50 µm core drawn at the
    # 0.40 ratio of the one or the other step says which
    glass_r = 100.0 if edge == "outer" else 100.0 - width
    core = inside + (0.1 if inside < outside else -0.1)
    img = _stepped_disc([0.4 * glass_r - 100.0, -width, 0.0], [core, inside, 0.5], outside)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_50" and geo["fiber_type_source"] == "core"
    assert geo["cladding_radius_px"] == pytest.approx(glass_r, abs=0.3)
    assert geo["um_per_px"] == pytest.approx(62.5 / geo["cladding_radius_px"])


@pytest.mark.parametrize("inside,outside", [(0.8, 0.2), (0.3, 0.7)])
@pytest.mark.parametrize("width", [6.0, 8.0])
def test_multimode_core_far_off_the_fitted_edge_takes_a_weaker_step(inside, outside, width):
    # a band outside the glass whose inner step is a third of its outer one (epoxy of
    # uneven level: the fourth and fifth renderers' fits 6-8 % out): a 50 µm core drawn at
    # the 0.40 ratio of the inner step, over 5 % inside the fitted (outer) one, moves the
    # edge there although the step is weaker than core_ratio_step_share
    glass_r = 100.0 - width
    core = inside + (0.1 if inside < outside else -0.1)
    img = _stepped_disc([0.4 * glass_r - 100.0, -width, 0.0],
                        [core, inside, inside + 0.25 * (outside - inside)], outside)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_50" and geo["fiber_type_source"] == "core"
    assert geo["cladding_radius_px"] == pytest.approx(glass_r, abs=0.3)


@pytest.mark.parametrize("width", [2.5, 3.0, 3.5])
def test_multimode_core_ends_a_dark_fiber_inside_a_thin_epoxy_ring(width):
    # a dark fiber (0.30) ringed by dark epoxy (0.12) 2.5-3.5 px (1.6-2.2 µm) wide outside
    # its edge, then the ferrule (0.64): a ring under bevel_max_um passes for a dark bevel
    # line inside the glass, and the fit ended the glass at its outer side (+2.5 to
    # +3.5 px; all 99 radii over 1 % on the thirty-third and thirty-fourth renderers are
    # such rings). A 50 µm core at the 0.40 ratio of the inner edge puts the glass edge
    # at the ring's falling flank (whose gradient peak the ring's own rising flank, a
    # blur away, pulls inward by up to 0.7 px on the narrowest)
    img = _stepped_disc([-60.0, 0.0, width], [0.38, 0.30, 0.12], 0.64)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["fiber_type"] == "mm_50" and geo["fiber_type_source"] == "core"
    assert geo["cladding_radius_px"] == pytest.approx(100.0, abs=0.75)


@pytest.mark.parametrize("share", [0.05, 0.12])
@pytest.mark.parametrize("width", [4.0, 6.0])
def test_faint_band_inside_a_bright_fibers_edge_is_its_glass(share, width):
    # a bright fiber (0.8) whose glass falls by ``share`` of the step just inside its edge,
    # ``width`` px wide (a bevel): no dark epoxy band outside it (the code before moved
    # the edge to the band's inner step, -4 to -6 %; eighth renderer: 11 fits -3 to -6.6 %)
    img = _banded_disc(0.8, 0.2, -width, 0.0, 0.8 - share * 0.6)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.3


def test_rough_band_outside_the_glass_edge_is_no_rim():
    # the same staircase with the band outside the glass and rough (epoxy grain): the
    # glass edge is the inner step
    img = _banded_disc(0.8, 0.2, 0.0, 3.0, 0.5, grain=0.3)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.3


def _dashed_ring_disc(width, dashes, share, level, vary=0.0):
    """A dark fiber (0.30, radius 100 px at (330.3, 250.7)) on a 0.64 ferrule, ringed by
    ``dashes`` dashes of an epoxy ring at ``level``, ``width`` px wide (``width`` +
    ``vary`` cos(angle): wider on one side), covering ``share`` of the circumference;
    blurred 1 px, noise 0.005."""
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    angle = np.arctan2(yy - 250.7, xx - 330.3)
    dash = np.mod(np.degrees(angle) * dashes / 360.0, 1.0) < share
    glass = np.clip(0.5 - d, 0, 1)
    ring = np.clip(0.5 - (d - width - vary * np.cos(angle)), 0, 1) * dash * (1 - glass)
    img = 0.64 + (0.30 - 0.64) * glass + (level - 0.64) * ring
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    return np.clip(img + np.random.default_rng(0).normal(0, 0.005, img.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("width,dashes,share", [(8.0, 12, 0.5), (12.0, 7, 0.6), (5.0, 18, 0.4)])
def test_broken_ring_as_dark_as_the_glass_ends_it_at_the_gaps_edge(width, dashes, share):
    # a dark fiber (0.30) ringed by dashes of a ring as dark as it (epoxy, ``share`` of
    # the circumference, ``width`` px): rays find the ring's outer step on the dashes and
    # the glass edge in the gaps, neither alone a confident fit
    geo = zones.measure_geometry(_dashed_ring_disc(width, dashes, share, 0.30), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.3
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5
    assert geo["confidence"] >= PARAMS["min_confidence"]


@pytest.mark.parametrize("width,dashes", [(5.0, 9), (7.0, 9), (5.0, 6)])
def test_broken_ring_of_uneven_width_ends_the_glass_at_the_gaps_edge(width, dashes):
    # dashes of a ring darker than the glass (0.15) over half the circle, ``width`` +- 2 px
    # wide around the fiber: the centre of their outer steps lies 1-2 px off the glass's
    # (the code before rejected all three at confidence 0.19-0.27; eighth renderer: 5 of
    # 400 such fibers rejected, 6 fits up to +4.9 %)
    share, vary = 0.5, 2.0
    img = _dashed_ring_disc(width, dashes, share, 0.15, vary=vary)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.3
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5
    assert geo["confidence"] >= PARAMS["min_confidence"]


@pytest.mark.parametrize("width,level", [(2.5, 0.15), (3.0, 0.15), (2.8, 0.20)])
def test_broken_ring_narrower_than_a_bevel_line_ends_the_glass_at_the_gaps_edge(width, level):
    # dashes of a thin ring darker than the glass (``width`` px, under a bevel line's 3.2
    # px here) over half the circle: the glass edge in the gaps and the ring's outer step
    # on the dashes, both sharp circles but closer than a bevel rim's gap; the code before
    # rejected all three at confidence 0.49 (eleventh and eighth renderers: 4 of their
    # fibers, now within 0.1 %)
    geo = zones.measure_geometry(_dashed_ring_disc(width, 9, 0.5, level), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.3
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


def _wandering_ring_disc(seed, glass_level=0.38, ring_level=0.33, ferrule=0.64, rolled=0.4, mean_width=6.8):
    """A fiber (``glass_level``, radius 100 px at (330.3, 250.7)) whose glass darkens by
    ``rolled`` over its last 4 px (a rolled edge) into an epoxy ring (``ring_level``, 8 %
    grain) 6.8 px wide +- 30 % (six random harmonics around the fiber), on a ``ferrule``;
    blurred 1 px, noise 0.005. By default a dark fiber."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 330.3, yy - 250.7) - 100.0
    angle = np.arctan2(yy - 250.7, xx - 330.3)
    k = np.arange(1, 7)[:, None, None]
    wander = (rng.normal(0, 1, (6, 1, 1)) / k * np.sin(k * angle + rng.uniform(0, 2 * np.pi, (6, 1, 1)))).sum(0)
    width = mean_width * (1 + 0.3 * wander / np.abs(wander).max())
    glass = np.clip(0.5 - d, 0, 1)
    roll = np.clip((d + 4.0) / 4.0, 0, 1) * glass
    ring = np.clip(0.5 - (d - width), 0, 1) * (1 - glass)
    grain = cv2.GaussianBlur(rng.normal(0, 1, d.shape).astype(np.float32), (0, 0), 1.5)
    img = (ferrule + (glass_level - ferrule) * glass - glass_level * rolled * roll**2
           + (ring_level * (1 + 0.08 * grain / grain.std()) - ferrule) * ring)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0)
    return np.clip(img + rng.normal(0, 0.005, img.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_glass_inside_a_wandering_ring_ends_at_the_bottom_of_its_rolled_edge(seed):
    # for a fit about to be rejected (its rays on a ring's outer edge, which wanders with
    # the ring's width: no circle), each ray searches inside its own outer edge point for
    # the glass-to-ring step; the glass darkens into its rolled edge and ends at the
    # valley's bottom, where the flat ring begins, not half way down (-2.3 px: thirteenth
    # renderer, 5 of 8 such rejected fibers accepted at -0.8..+2.1 %, three within 0.1 %)
    from fiberprep.zones import _fit_edge, _glass_inside_crescent
    smooth = cv2.GaussianBlur(_wandering_ring_disc(seed), (0, 0), PARAMS["edge_sigma_px"])
    outer = _fit_edge(smooth, (330.3, 250.7, 106.8, 106.8, 0.0), 1.0, 6, PARAMS)
    glass = _glass_inside_crescent(smooth, outer, 1.0, -1.0, 6.0, 12.0, PARAMS, centred=True)
    assert abs(glass["r"] - 100.0) < 0.5
    assert math.hypot(glass["cx"] - 330.3, glass["cy"] - 250.7) < 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bright_fibers_glass_inside_a_wandering_ring_between_the_levels(seed):
    # a bright fiber (0.62) in an epoxy ring darker than the glass and brighter than the
    # ferrule (0.48 on 0.29), whose width wanders: a fit about to be rejected on the
    # ring's outer step (the stronger, falling like the glass's own) gives way to the
    # glass-to-ring step each ray finds inside its own outer edge point (the old code
    # searched it on dark fibers only: nineteenth renderer, 7 of 18 such rejected
    # fibers accepted at -0.9..+0.1 %)
    from fiberprep.zones import _fit_edge, _glass_inside_crescent
    img = _wandering_ring_disc(seed, glass_level=0.62, ring_level=0.48, ferrule=0.29, rolled=0.0)
    smooth = cv2.GaussianBlur(img, (0, 0), PARAMS["edge_sigma_px"])
    outer = _fit_edge(smooth, (330.3, 250.7, 106.8, 106.8, 0.0), -1.0, 6, PARAMS)
    glass = _glass_inside_crescent(smooth, outer, -1.0, -1.0, 6.0, 12.0, PARAMS, centred=True)
    assert abs(glass["r"] - 100.0) < 0.5
    assert math.hypot(glass["cx"] - 330.3, glass["cy"] - 250.7) < 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_accepted_fit_on_a_wandering_rings_outer_edge_gives_way_to_the_sharper_glass_edge(seed):
    # an accepted fit on the ring's outer edge wanders with the ring's width (RMS 0.5-0.7
    # px here); the glass edge inside fits a polished circle within a fraction of that:
    # it is the glass (thirteenth and fourteenth renderers: 6 fits from +1.6..+5.0 % to
    # -1.4..+1.1 %); a sharp fit is left as it is
    from fiberprep.zones import _fit_edge, _sharper_glass_inside
    smooth = cv2.GaussianBlur(_wandering_ring_disc(seed), (0, 0), PARAMS["edge_sigma_px"])
    outer = _fit_edge(smooth, (330.3, 250.7, 106.8, 106.8, 0.0), 1.0, 6, PARAMS)
    assert outer["residual"] >= PARAMS["ring_outer_min_residual_px"]
    glass = _sharper_glass_inside(smooth, outer, 1.0, 1, 12.0, PARAMS)
    assert abs(glass["r"] - 100.0) < 0.5
    assert _sharper_glass_inside(smooth, glass, 1.0, 1, 12.0, PARAMS) is glass


def test_broken_ring_between_the_glass_and_ferrule_levels_ends_it_at_the_gaps_edge():
    # the same with ten dashes (55 % of the circle, 10 px wide) between the glass (0.30)
    # and ferrule (0.64) levels (0.45): rays on the dashes find their outer step, rays in
    # the gaps the glass edge, and the first fit lies between the two on neither (the
    # code before _split_concentric rejected it at confidence 0.08; fifth renderer 502
    # images 87 and 89 at 0.37 and 0.31)
    geo = zones.measure_geometry(_dashed_ring_disc(10.0, 10, 0.55, 0.45), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.3
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5
    assert geo["confidence"] >= PARAMS["min_confidence"]


@pytest.mark.parametrize("name,core_px", [("mm_62_5", 50.0), ("mm_100_140", 71.4)])
def test_core_outshining_a_faint_cladding_edge_is_the_core(name, core_px):
    # a glowing multimode core (0.80) in glass (0.45) only a little brighter than the
    # ferrule (0.37): the core's step is over twice the cladding's, which the type's core
    # ratio still places all round at the cladding radius
    auto = {n: TYPES[n] for n in CONFIG["fiber"]["auto_types"]}
    img = _stepped_disc([core_px - 100.0, 0.0], [0.80, 0.45], 0.37)
    geo = zones.measure_geometry(img, auto, PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5
    assert geo["fiber_type"] == name


def test_no_fiber_is_rejected():
    img = np.random.default_rng(1).normal(0.5, 0.05, (300, 400)).astype(np.float32)
    with pytest.raises(ImageRejected, match="no fiber found"):
        zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)


def test_fiber_edge_mostly_hidden_is_rejected_with_what_was_seen():
    # a fiber whose edge shows on 40 % of the circumference (the rest under a film as
    # bright as the glass): the reason says how much of a circle was seen
    img = disc_image()
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    hidden = np.mod(np.degrees(np.arctan2(yy - 250.7, xx - 330.3)), 360) > 144
    img[hidden & (np.hypot(xx - 330.3, yy - 250.7) > 90)] = 0.3
    reason = r"no fiber found: edges .* cover at most (\d+) %"
    with pytest.raises(ImageRejected, match=reason) as err:
        zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    seen = int(re.search(r"at most (\d+) %", err.value.reason).group(1))
    assert 30 <= seen < 50


def test_two_fibers_are_rejected():
    left = disc_image(shape=(400, 900), center=(220.0, 200.0), radius=90.0)
    right = disc_image(shape=(400, 900), center=(680.0, 200.0), radius=90.0, seed=1)
    img = np.minimum(left, right)
    with pytest.raises(ImageRejected, match="two fibers"):
        zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)


@pytest.mark.parametrize("blur,noise", [(0.8, 0.02), (2.4, 0.02)])
def test_edge_point_spread_predicts_their_scatter(blur, noise):
    # at an SNR where the edge peak stays single, the expected location error of the
    # edge points matches their scatter about the true circle (within the estimator's
    # nonlinearity, which edge_spread_factor covers)
    img = disc_image(inside=0.35, outside=0.45, noise=noise, blur=blur)
    smooth = cv2.GaussianBlur(img, (0, 0), PARAMS["edge_sigma_px"])
    circle = (330.3, 250.7, 100.0, 100.0, 0.0)
    _, rad, strength, valid, prof = zones._ray_edges(smooth, circle, 1.0, 6, 200)
    spread = zones._edge_spread(prof, strength, valid, 1.0)
    scatter = np.sqrt(np.mean((rad[valid] - 100.0) ** 2))
    assert 0.7 < scatter / np.sqrt(np.mean(spread[valid] ** 2)) < 2.0


@pytest.mark.parametrize("seed", [0, 1])
def test_blurred_noisy_edge_on_one_circle_is_accepted(seed):
    # edge points scattered 1.5-2 px by noise on a 2.4 px blur still fix the center
    # (the residual that the noise explains does not lower the confidence)
    img = disc_image(inside=0.35, outside=0.45, noise=0.03, blur=2.4, seed=seed)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert geo["fit_residual_px"] > 1.0
    assert geo["confidence"] > 0.8
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.5
    assert geo["cladding_radius_px"] == pytest.approx(100.0, abs=0.5)


@pytest.mark.parametrize("blur", [0.0, 1.0, 2.5])
def test_noise_forced_to_a_circle_fit_is_low_confidence(blur):
    # past a lowered coarse gate, edge points picked in noise lie on no circle: their
    # residual is not explained by their own (sharp) noise peaks
    noise = np.random.default_rng(2).normal(0, 1, (480, 640)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), blur) if blur else noise
    img = np.clip(0.5 + 0.1 * noise / noise.std(), 0, 1).astype(np.float32)
    params = {**PARAMS, "min_coverage": 0.3, "two_fiber_ratio": 10.0}
    with pytest.raises(ImageRejected, match="no fiber found|low fit confidence") as err:
        zones.measure_geometry(img, TYPES["sm_pc"], params)
    conf = re.search(r"low fit confidence (\d\.\d+)", err.value.reason)
    assert conf is None or float(conf.group(1)) < 0.35


def test_mode_none_labels_the_whole_frame_ferrule():
    geo = zones.measure_geometry(
        np.zeros((50, 60), np.float32), TYPES["sm_pc"], {**PARAMS, "mode": "none"}
    )
    assert math.isnan(geo["center_x"]) and geo["polarity"] == "none"
    labels = zones.zone_label_map((50, 60), geo, TYPES["sm_pc"]["zones_um"], geo["um_per_px"])
    assert labels.dtype == np.uint8 and (labels == zones.ZONE_IDS["ferrule"]).all()
    assert all(
        math.isnan(v)
        for v in zones.zone_visibility((50, 60), geo, TYPES["sm_pc"]["zones_um"], 1.0).values()
    )


def test_zone_label_map_bands():
    geo = {"center_x": 100.0, "center_y": 100.0, "cladding_ellipticity": 0.0}
    zum = TYPES["sm_pc"]["zones_um"]  # diameters; 1 µm/px -> radii 12.5, 57.5, 67.5, 125
    labels = zones.zone_label_map((201, 300), geo, zum, 1.0)
    row = labels[100]
    assert row[100] == 1 and row[100 + 12] == 1 and row[100 + 13] == 2
    assert row[100 + 57] == 2 and row[100 + 58] == 3 and row[100 + 67] == 3 and row[100 + 68] == 4
    assert row[100 + 124] == 4 and row[100 + 125] == 5
    assert zones.ZONE_NAMES[int(row[100 + 125])] == "ferrule"
    no_ferrule = zones.zone_label_map((201, 300), geo, zum, 1.0, ferrule=False)
    assert no_ferrule[100, 100 + 125] == zones.ZONE_IDS["outside"]


def test_zone_visibility_clipped_at_border():
    zum = TYPES["sm_pc"]["zones_um"]
    geo = {"center_x": 70.0, "center_y": 150.0, "cladding_ellipticity": 0.0}
    vis = zones.zone_visibility((300, 400), geo, zum, 1.0)
    assert vis["core"] == pytest.approx(1.0, abs=0.02) and vis["cladding"] == pytest.approx(
        1.0, abs=0.02
    )
    assert 0.5 < vis["contact"] < 0.9


def _edge_strength_ratio(gray, geo, offset_px=0.0):
    """Median gradient magnitude along the fitted cladding ellipse (shifted by offset)."""
    sm = cv2.GaussianBlur(gray, (0, 0), 1.0)
    mag = np.hypot(cv2.Sobel(sm, cv2.CV_32F, 1, 0), cv2.Sobel(sm, cv2.CV_32F, 0, 1))
    e, r = geo["cladding_ellipticity"], geo["cladding_radius_px"]
    a, b = r / math.sqrt(1 - e), r * math.sqrt(1 - e)
    th = math.radians(geo["cladding_angle_deg"])
    t = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    u, v = (a + offset_px) * np.cos(t), (b + offset_px) * np.sin(t)
    x = geo["center_x"] + u * math.cos(th) - v * math.sin(th)
    y = geo["center_y"] + u * math.sin(th) + v * math.cos(th)
    ok = (x >= 0) & (x <= gray.shape[1] - 1) & (y >= 0) & (y <= gray.shape[0] - 1)
    vals = cv2.remap(
        mag, x[ok].astype(np.float32)[None], y[ok].astype(np.float32)[None], cv2.INTER_LINEAR
    )
    return float(np.median(vals)) / float(np.median(mag) + 1e-6)


FIBER_FOLDERS = {
    "dimension_scope_50um_core": "mm_50",
    "dimension_scope_91um_core": "mm_100_140",
    "endfaces_720x576": "mm_100_140",
    "misc_1152x864": "mm_50",
}


# Known failure: an end face under a heavy oil film whose fringes hide the cladding edge
# (the strongest center of symmetry is a fringe pattern's; around the fiber's, the
# cladding edge is among the image's strongest gradients on ~20 % of the circumference,
# and it shows as a change of texture more than of level).
KNOWN_REJECTED = {"DSCN0062.JPG": "oil film hides the cladding edge: rejected, no fiber found"}


def _real_fiber_images():
    if not REAL.is_dir():
        return []
    paths = sorted(
        p
        for folder in FIBER_FOLDERS
        for p in (REAL / folder).iterdir()
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")
    )
    xfail = {n: pytest.mark.xfail(reason=r, strict=True) for n, r in KNOWN_REJECTED.items()}
    return [pytest.param(p, marks=xfail[p.name]) if p.name in xfail else p for p in paths]


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not present")
@pytest.mark.parametrize("path", _real_fiber_images(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_cladding_circle_lies_on_a_strong_edge(path):
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    geo = zones.measure_geometry(gray, TYPES[FIBER_FOLDERS[path.parent.name]], PARAMS)
    on_edge = _edge_strength_ratio(gray, geo)
    assert on_edge > 5.0, f"weak edge under the cladding circle ({on_edge:.1f}x the image median)"
    # the glass just inside is smooth (outside may be an epoxy ring or the ferrule edge)
    assert on_edge > 2.0 * _edge_strength_ratio(gray, geo, -8.0)
    assert geo["field_stop_radius_px"] == 0  # none of these scopes has a round field stop


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not present")
def test_real_auto_type_is_one_per_fiber_and_never_a_wrong_guess_made_certain():
    # endfaces_720x576: frames of one 100/140-class fiber (core 0.65-0.67 of the cladding,
    # some frames with uneven light inside the core); dimension_scope_50um_core: 50/125
    # fibers, one (FT35) whose core hardly shows next to a ring of the glass
    expected = {"endfaces_720x576": "mm_100_140", "dimension_scope_50um_core": "mm_50"}
    for folder, name in expected.items():
        for path in sorted((REAL / folder).glob("*.[jJ][pP][gG]")):
            if path.name in KNOWN_REJECTED:
                continue
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            geo = zones.measure_geometry(gray, AUTO, PARAMS)
            assert (geo["fiber_type"], geo["fiber_type_source"]) == (name, "core") or (
                geo["fiber_type_source"] == "default" and not geo["core_visible"]
            ), (path.name, geo["fiber_type"], geo["fiber_type_source"])


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not present")
def test_real_closeups_without_fiber_are_rejected_and_work_with_mode_none():
    for path in sorted((REAL / "scratch_closeups_512").iterdir()):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        with pytest.raises(ImageRejected, match="no fiber found|low fit confidence"):
            zones.measure_geometry(gray, TYPES["sm_pc"], PARAMS)
        geo = zones.measure_geometry(gray, TYPES["sm_pc"], {**PARAMS, "mode": "none"})
        assert (zones.zone_label_map(gray.shape, geo, TYPES["sm_pc"]["zones_um"], 1.0) == 5).all()


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not present")
def test_real_closeups_forced_to_a_circle_fit_are_low_confidence():
    # with the coarse gate lowered, the scratch and texture edges that the rays pick lie
    # on no circle and are sharp: far more residual than their SNR explains
    params = {**PARAMS, "min_coverage": 0.3, "two_fiber_ratio": 10.0}
    fitted = 0
    for path in sorted((REAL / "scratch_closeups_512").iterdir()):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        with pytest.raises(ImageRejected, match="no fiber found|low fit confidence") as err:
            zones.measure_geometry(gray, TYPES["sm_pc"], params)
        conf = re.search(r"low fit confidence (\d\.\d+)", err.value.reason)
        if conf:
            fitted += 1
            assert float(conf.group(1)) < 0.35, path.name
    assert fitted >= 5


def _band_mask(shape, frame_px):
    """Truth mask of a synthetic field-stop band (left, top, right, bottom widths)."""
    h, w = shape
    left, top, right, bottom = frame_px
    band = np.zeros((h, w), bool)
    band[:, :left], band[:top], band[:, w - right :], band[h - bottom :] = True, True, True, True
    return band


def test_field_stop_band_is_outside_and_fiber_zones_intact():
    seen = 0
    for i in range(40):
        rng = np.random.default_rng([23, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(400, 320)], p_frame=1.0)
        if max(spec["frame_px"]) < 3:  # the band must be wider than the blur to be seen
            continue
        image, truth = synth.render(spec, rng)
        field = zones.field_of_view(image.astype(np.float32) / 255, PARAMS, truth)
        zum = TYPES[spec["fiber_type"]]["zones_um"]
        plain = zones.zone_label_map(image.shape, truth, zum, truth["um_per_px"])
        masked = zones.zone_label_map(image.shape, truth, zum, truth["um_per_px"], field=field)
        band = _band_mask(image.shape, spec["frame_px"])
        # all of it, but where vignetting leaves the ferrule as dark as the band itself
        assert (masked[band] == zones.ZONE_IDS["outside"]).mean() > 0.95
        for zone in ("core", "cladding", "adhesive"):
            assert ((plain == zones.ZONE_IDS[zone]) == (masked == zones.ZONE_IDS[zone])).all()
        # nothing removed beyond the band's blurred edge and margin
        reach = cv2.dilate(band.astype(np.uint8), np.ones((25, 25), np.uint8)) > 0
        assert not (~field & ~reach).any()
        seen += 1
        if seen == 3:
            break
    assert seen == 3


def test_field_of_view_keeps_frames_without_band():
    for i in range(3):
        rng = np.random.default_rng([29, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(400, 320)], p_frame=0.0)
        image, truth = synth.render(spec, rng)
        assert zones.field_of_view(image.astype(np.float32) / 255, PARAMS, truth).all()
    # bright fiber reaching near the top border, on a vignetted ferrule
    img = disc_image(center=(330.3, 150.0), radius=140.0, inside=0.9, outside=0.4)
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    img *= 1 - 0.5 * (np.hypot(xx - 320, yy - 240) / 400) ** 2
    geo = {"center_x": 330.3, "center_y": 150.0, "cladding_radius_px": 140.0, "um_per_px": 0.45}
    assert zones.field_of_view(img, PARAMS, geo).all()


def test_field_of_view_keeps_dark_defects_and_dark_fiber_at_the_border():
    img = disc_image(center=(150.0, 240.0), radius=170.0, inside=0.2, outside=0.7)  # cut at left
    geo = {"center_x": 150.0, "center_y": 240.0, "cladding_radius_px": 170.0, "um_per_px": 0.37}
    cv2.line(img, (639, 100), (560, 60), 0.05, 3)  # dark scratch from the right border
    cv2.circle(img, (400, 2), 6, 0.05, -1)  # dark pit on the top border
    assert zones.field_of_view(img, PARAMS, geo).all()
    # with a band: the band goes, the scratch beyond it stays
    img[:, 630:] = 0.04
    field = zones.field_of_view(img, PARAMS, geo)
    assert not field[:, 630:].any() and field[:, : 630 - PARAMS["fov_margin_px"]].all()


@pytest.mark.parametrize("stop_r", [350.0, 365.0])
def test_field_of_view_leaves_out_the_black_corners_of_a_round_stop(stop_r):
    # a round field stop a little smaller than the frame's half diagonal (400 px) leaves
    # black only in the four corners, too short along the sides for a band; their edges
    # lie on one circle with the black outside it (twentieth renderer: 157 of 205 false
    # detections on the ferrule, a good part in such corners). Vignetting alone is no stop
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    d = np.hypot(xx - 319.5, yy - 239.5)
    lit = 0.7 * (1 - 0.3 * (d / 400) ** 2)
    img = (lit / (1 + np.exp((d - stop_r) / 3)) + 0.02).astype(np.float32)
    field = zones.field_of_view(img, PARAMS)
    assert not field[d > stop_r + 2].any()
    assert field[d < stop_r - 2 * PARAMS["fov_margin_px"] - 4].all()
    assert zones.field_of_view((0.7 * (1 - 0.6 * (d / 400) ** 2)).astype(np.float32), PARAMS).all()


def test_field_of_view_keeps_a_large_dark_defect_in_a_corner():
    # a dig 46 x 66 px in the top left corner runs along 7 % of the top and 14 % of the
    # left side (fov_min_extent_rel 0.2); the running median mirrors a side at its ends
    # and so took a stretch of half that in a corner for a band
    img = disc_image(center=(330.0, 250.0), radius=150.0, inside=0.2, outside=0.7)
    geo = {"center_x": 330.0, "center_y": 250.0, "cladding_radius_px": 150.0, "um_per_px": 0.4}
    cv2.ellipse(img, (10, 20), (36, 46), 0.0, 0.0, 360.0, 0.1, -1)
    assert zones.field_of_view(img, PARAMS, geo).all()
    # a band along a third of the left side from that corner is one
    img[:160, :20] = 0.04
    field = zones.field_of_view(img, PARAMS, geo)
    assert not field[:150, :20].any() and field[200:, :].all()


@pytest.mark.parametrize("inside", [0.62, 0.55])
@pytest.mark.parametrize("frame", [(10, 10, 10, 10), (20, 16, 12, 0)])
def test_fiber_inside_a_black_frame_is_found(inside, frame):
    # a black band along the sides (left, top, right, bottom px): its straight, strong
    # edges took the coarse finder's edge pixels from a fiber edge of 0.8-0.9 contrast
    # ("no fiber found" before, for the frame all around)
    img = disc_image(center=(300.3, 250.7), radius=110.0, inside=inside, outside=0.7)
    band = _band_mask(img.shape, frame)
    img[band] = 0.015
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 300.3, geo["center_y"] - 250.7) < 0.1
    assert abs(geo["cladding_radius_px"] - 110.0) < 0.1


def test_only_a_black_band_ending_in_a_step_is_filled_for_the_coarse_finder():
    img = np.full((96, 128), 0.6, np.float32)
    img[:, :6] = 0.01  # a field stop's band, a sharp step
    img[:, 6] = 0.3
    out = zones._without_black_frame(img, PARAMS["stop_dark_ratio"], 2)
    assert np.allclose(out[:, :9], 0.6) and np.array_equal(out[:, 9:], img[:, 9:])
    # vignetting that fades to black over tens of pixels is no band
    x = np.arange(128, dtype=np.float32)
    faded = np.tile(np.clip(0.01 + 0.6 * (x / 40.0) ** 2, 0, 0.6), (96, 1))
    assert np.array_equal(zones._without_black_frame(faded, PARAMS["stop_dark_ratio"], 2), faded)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("side", ["left", "bottom"])
def test_a_thin_black_strip_along_a_side_is_outside(width, side):
    # a capture card's blanking a few pixels wide: at half resolution a 3 px strip's
    # second row is already half ferrule, so its middle is its first row
    img = disc_image(center=(330.0, 250.0), radius=150.0, inside=0.2, outside=0.7)
    img += np.random.default_rng(width).normal(0, 0.01, img.shape).astype(np.float32)
    geo = {"center_x": 330.0, "center_y": 250.0, "cladding_radius_px": 150.0, "um_per_px": 0.4}
    strip = np.s_[:, :width] if side == "left" else np.s_[-width:, :]
    img[strip] = 0.02
    field = zones.field_of_view(img, PARAMS, geo)
    reach = width + PARAMS["fov_margin_px"] + 2
    near = np.s_[:, :reach] if side == "left" else np.s_[-reach:, :]
    assert not field[strip].any()
    assert field.sum() >= field.size - field[near].size


@pytest.mark.parametrize("layout", [(0.48, 0.0), (0.44, 0.03), (0.40, 0.06)])
def test_circular_field_stop_is_neither_the_fiber_nor_analysed(layout):
    # a scope's round field stop is a bright disc with black around it, larger than the
    # fiber: before, the outermost strong circle, it was taken for the cladding in 31 of
    # these 120 images (95 with zones.um_per_px_range reaching 0.1 µm/px)
    frac, shift = layout
    for i in range(4):
        rng = np.random.default_rng([77, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(800, 600)], um_per_px=(0.3, 0.6), p_frame=0.0)
        image, truth = synth.render(spec, rng)
        center, radius = (400 + shift * 800, 300), frac * 800
        img, _ = synth.round_field_stop(image.astype(np.float32) / 255, center, radius)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        d = np.hypot(xx - center[0], yy - center[1])
        geo = zones.measure_geometry(img, AUTO, PARAMS)
        assert geo["cladding_radius_px"] == pytest.approx(truth["cladding_radius_px"], rel=0.01)
        stop = (geo["field_stop_x"], geo["field_stop_y"], geo["field_stop_radius_px"])
        assert math.hypot(stop[0] - center[0], stop[1] - center[1]) < 0.05 * radius
        assert stop[2] == pytest.approx(radius, rel=0.1)
        field = zones.field_of_view(img, PARAMS, geo)
        assert not field[d > radius + 4].any()  # the black and the stop's blurred rim
        assert field[d < radius - 20].mean() > 0.999  # the lit field


@pytest.mark.parametrize("contrast", [0.08, 0.12])
def test_faint_fiber_off_centre_in_a_round_field_stop_is_found(contrast):
    # a sixth helper renderer's low-contrast fibers sit off centre in a round stop whose
    # black-bordered edge wins the vote and leaves the fiber's faint edge out of the
    # strongest edge pixels: "no fiber found" (5 of its 400 images). The vote is taken
    # again without the edges that border black
    yy, xx = np.mgrid[:600, :800].astype(np.float32)
    img = np.where(np.hypot(xx - 560.0, yy - 250.0) < 90.0, 0.6 * (1 - contrast), 0.6)
    img = np.where(np.hypot(xx - 400.0, yy - 300.0) < 420.0, img, 0.02).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.01, img.shape), 0, 1)
    geo = zones.measure_geometry(img.astype(np.float32), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 560.0, geo["center_y"] - 250.0) < 0.1
    assert geo["cladding_radius_px"] == pytest.approx(90.0, abs=0.2)
    assert geo["field_stop_radius_px"] == pytest.approx(420.0, rel=0.05)  # and the stop


@pytest.mark.parametrize("glass", [0.25, 0.8])
@pytest.mark.parametrize("ratio,offset", [(0.5, 0.0), (0.4, 0.0), (0.68, 12.0), (0.6, 30.0)])
def test_fiber_in_a_handheld_probes_round_field_is_found(glass, ratio, offset):
    # a handheld probe's round bright field (a grainy ferrule at 0.5 on black) around a
    # fiber centred in it at a multimode core's ratio of its radius, or filling it to 1/1.5
    # and more: the fiber was taken for the field's core or the field for the cladding
    # (twenty-first renderer: 53 of 400 fits +35 to +215 %). Glass differs from a ferrule
    # by tens of %, a core from its cladding by a few
    rng = np.random.default_rng(int(100 * ratio + offset))
    yy, xx = np.mgrid[:480, :640].astype(np.float32)
    field_r, fx, fy = 230.0, 322.0, 238.0
    cx, cy, r = fx + offset, fy - 0.5 * offset, ratio * field_r
    ferrule = 0.5 * (1 + 0.03 * cv2.GaussianBlur(rng.normal(0, 1, xx.shape).astype(np.float32), (0, 0), 1.5))
    img = np.where(np.hypot(xx - cx, yy - cy) < r, glass, ferrule)
    img = np.where(np.hypot(xx - fx, yy - fy) < field_r, img, 0.01).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    img = np.clip(img + rng.normal(0, 0.01, img.shape), 0, 1).astype(np.float32)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["cladding_radius_px"] == pytest.approx(r, rel=0.01)
    assert math.hypot(geo["center_x"] - cx, geo["center_y"] - cy) < 0.5


@pytest.mark.parametrize("amp,sigma", [(1.0, 40.0), (2.0, 70.0)])
def test_hot_spot_beside_a_faint_fiber_is_not_the_fiber(amp, sigma):
    # a specular hot spot (a smooth bright blob) beside a faint bright fiber: its wide
    # flank gathers more votes than the fiber's edge. The old code took the hot spot for
    # the fiber or rejected the image (low confidence; "two fibers" on 2 of a sixth helper
    # renderer's 400 images); a circle whose gradient does not fall off past it is no edge
    yy, xx = np.mgrid[:600, :800].astype(np.float32)
    img = 0.25 * (1 + amp * np.exp(-((xx - 600) ** 2 + (yy - 200) ** 2) / (2 * sigma**2)))
    img = np.where(np.hypot(xx - 250.0, yy - 330.0) < 45.0, 0.33, img).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    img = np.clip(img + np.random.default_rng(0).normal(0, 0.01, img.shape), 0, 1)
    geo = zones.measure_geometry(img.astype(np.float32), TYPES["sm_pc"], PARAMS)
    assert math.hypot(geo["center_x"] - 250.0, geo["center_y"] - 330.0) < 0.2
    assert geo["cladding_radius_px"] == pytest.approx(45.0, abs=0.2)


@pytest.mark.parametrize("radius", [210.0, 120.0])
def test_bright_fiber_on_black_ferrule_is_no_field_stop(radius):
    # black all around a bright disc, as beyond a field stop: inside it only the fiber's
    # own core (a 62.5/125 core at half the radius, 20 % or, glowing, 50 % brighter: ours
    # draws 15-60 %) or nothing. A disc under 0.3 of the short side (radius 120 px) is no
    # stop's lit field even around a step as strong as glass on a ferrule
    for core, step in ((None, 0.0), (0.5, 0.12), (0.5, 0.3)):
        img = disc_image(shape=(600, 800), center=(410.2, 290.6), radius=radius, inside=0.6, outside=0.03)
        if core:
            img += disc_image(shape=(600, 800), center=(410.2, 290.6), radius=radius * core,
                              inside=step, outside=0.0, noise=0.0)
        if radius > 150.0 and step > 0.2:
            continue  # as a stop's field around a fiber: undecidable, taken for the stop
        geo = zones.measure_geometry(img, AUTO, PARAMS)
        assert geo["cladding_radius_px"] == pytest.approx(radius, rel=0.01)
        assert geo["field_stop_radius_px"] == 0  # none


def test_dark_epoxy_ring_is_no_field_stop():
    # a bright fiber on a grey ferrule with a dark epoxy ring just outside it steps down
    # to black like a field stop's rim; a faint oil film inside was then taken for the
    # fiber within the stop (ours seed 707 image 50: radius 91 px instead of 184)
    center, radius = (590.4, 600.2), 184.0
    img = disc_image(shape=(960, 1280), center=center, radius=radius, inside=0.55, outside=0.22)
    yy, xx = np.mgrid[:960, :1280]
    d = np.hypot(xx - center[0], yy - center[1])
    img[(d > radius + 1) & (d < radius + 9)] = 0.04  # the epoxy ring
    film = np.hypot(xx - 660.0, yy - 520.0) < 90.0
    img[film] *= 0.8
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    geo = zones.measure_geometry(img, AUTO, PARAMS)
    assert geo["cladding_radius_px"] == pytest.approx(radius, rel=0.01)
    assert geo["polarity"] == "bright" and geo["field_stop_radius_px"] == 0


def test_high_magnification_fiber_filling_the_frame():
    # 0.13-0.17 µm/px (a 125 µm cladding 740-960 px across): before zones.um_per_px_range
    # reached 0.1, these were rejected or measured at their core (-49 %, -17 %, -13 %)
    for i in range(4):
        rng = np.random.default_rng([41, i])
        spec = synth.random_spec(rng, TYPES, sizes=[(1920, 1080)], um_per_px=(0.13, 0.17), p_frame=0.0,
                                 fiber_type_names=["mm_62_5", "mm_105_125", "sm_pc"])
        image, truth = synth.render(spec, rng)
        geo = zones.measure_geometry(image.astype(np.float32) / 255, TYPES[spec["fiber_type"]], PARAMS)
        assert geo["cladding_radius_px"] == pytest.approx(truth["cladding_radius_px"], rel=0.01)
        assert geo["field_stop_radius_px"] == 0  # none


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images not present")
def test_real_field_stop_found_on_video_captures_only():
    for folder in ("endfaces_720x576", "dimension_scope_50um_core", "misc_1152x864"):
        for path in sorted((REAL / folder).iterdir()):
            gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
            field = zones.field_of_view(gray, PARAMS)
            h, w = gray.shape
            depths = [
                int(np.argmax(field[h // 2])),  # left
                int(np.argmax(field[:, w // 2])),  # top
                int(np.argmax(field[h // 2, ::-1])),  # right
                int(np.argmax(field[::-1, w // 2])),  # bottom
            ]
            if path.name.startswith("DSCN"):  # 720x576 video grabs: black left, top, right
                assert all(5 < d < 25 for d in depths[:3]) and depths[3] == 0, (path.name, depths)
                assert (~field).mean() < 0.08
            else:
                assert field.all(), (path.name, depths)


def test_bevel_line_under_a_diffraction_fringe_does_not_push_the_edge_outward():
    # the fringe pair's gradient is even about the edge, the line's lobe is not: without
    # the line model the edge lands 0.15-0.3 % (0.2-0.35 px) outside the glass
    for i in range(3):
        _, radius = _dark_fiber_errors(
            [47, i], edge_line=0.7, edge_line_um=0.8, edge_halo=0.08, um_per_px=0.5,
            edge_sigma_px=0.6, blur_px=0.3,
        )
        assert radius < 0.1


def test_edge_points_on_two_concentric_steps_give_the_outer_one_not_a_rejection(tmp_path):
    # independent renderer, seed 5, image 21: a dark multimode fiber under ring light
    # with a bright bevel rim 2.2 µm wide inside the glass edge and strong vignetting;
    # the rays took the rim's inner step on half the circumference and the glass edge
    # on the other, 5 px apart: one ellipse between them (RMS 2.6 px) was rejected
    from fiberprep import pipeline

    gray, scene, _ = independent_image(CONFIG, 5, 21, tmp_path)
    true_r = scene["clad_um"] / 2 / scene["upp_x"]
    stage = pipeline.stage_params(CONFIG)["zones"]
    geometry, _ = pipeline.measure_zones(gray, stage)
    assert abs(geometry["cladding_radius_px"] / true_r - 1) < 0.005
    assert geometry["confidence"] >= PARAMS["min_confidence"]
    one_edge = dict(stage, zones=dict(stage["zones"], two_edge_min_share=0.5))
    with pytest.raises(ImageRejected, match="low fit confidence"):
        pipeline.measure_zones(gray, one_edge)


def test_fit_inside_rejects_fits_that_leave_the_box():
    """The lobe fits' least squares: a Gaussian is recovered inside its box, and a fit
    whose best centre lies outside the box is rejected, not clamped to the bound."""
    x = np.arange(-6.0, 6.0, 0.25)
    data = 2.0 * np.exp(-0.5 * ((x - 0.7) / 1.3) ** 2)

    def gauss(p):
        u = (x - p[1]) / p[2]
        e = np.exp(-0.5 * u * u)
        jac = np.column_stack([e, p[0] * e * u / p[2], p[0] * e * u * u / p[2]])
        return p[0] * e - data, jac

    fit = zones._fit_inside(gauss, [1.0, 0.0, 1.0], [0.0, -2.0, 0.3], [np.inf, 2.0, 4.0])
    assert fit is not None
    np.testing.assert_allclose(fit, [2.0, 0.7, 1.3], atol=1e-6)
    assert zones._fit_inside(gauss, [1.0, 0.0, 1.0], [0.0, -2.0, 0.3], [np.inf, 0.5, 4.0]) is None


@pytest.mark.parametrize("glass,ferrule,chamfer,line", [
    (0.45, 0.75, 0.75, 0.45), (0.45, 0.75, 0.7, 0.4), (0.7, 0.35, 0.37, 0.2)])
@pytest.mark.parametrize("gap", [40.0, 60.0])
@pytest.mark.parametrize("width", [4.0, 8.0])
def test_bore_chamfer_line_beyond_the_glass_is_no_fiber_edge(glass, ferrule, chamfer, line, gap, width):
    # a ferrule's bore chamfer: a dark line all round, 40-60 px (20-40 µm) beyond the glass
    # edge, the ferrule on both sides of it. Outermost and as strong as the glass edge in
    # the log image, it won the coarse vote (+40 to +64 % here before; the twenty-second
    # renderer's fits +30..+66 %)
    img = _stepped_disc([0.0, gap, gap + width], [glass, chamfer, line], ferrule)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.3
    assert math.hypot(geo["center_x"] - 330.3, geo["center_y"] - 250.7) < 0.2


@pytest.mark.parametrize("name", ["mm_105_125", "mm_100_140"])
def test_large_cores_dark_cladding_annulus_is_no_chamfer_line(name):
    # a large core about as bright as the ferrule in a darker cladding annulus: the annulus
    # is a line at the coarse scale, but the core's step leads down into it, not out of
    # ferrule; the fiber is the annulus's outer edge
    q = TYPES[name]["core_um"] / TYPES[name]["cladding_um"]
    img = _stepped_disc([-100.0 * (1 - q), 0.0], [0.6, 0.35], 0.55)
    geo = zones.measure_geometry(img, {n: TYPES[n] for n in CONFIG["fiber"]["auto_types"]}, PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5


@pytest.mark.parametrize("band", [7.0, 9.0])
def test_band_between_the_levels_wider_than_any_bevel_is_epoxy_under_a_halo(band):
    # a dark fiber (0.28) in an epoxy band between its level and the ferrule's (0.40 on
    # 0.72) 4.4-5.6 µm wide, with a bright halo beyond the band's outer step: the halo
    # made that step the glass edge (twenty-first renderer: 5-6 % too large on 21 of 400
    # fibers); a staircase wider than any bevel line is a band whatever lies outside it
    img = _stepped_disc([0.0, band, band + 3.0], [0.28, 0.40, 0.80], 0.72)
    geo = zones.measure_geometry(img, TYPES["sm_pc"], PARAMS)
    assert abs(geo["cladding_radius_px"] - 100.0) < 0.5
