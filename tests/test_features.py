"""Known answers of features.defect_features / zone_features on drawn shapes."""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from fiberprep.features import (DEFECT_FEATURE_NAMES, FEATURE_DESCRIPTIONS, FEATURE_UNITS,
                                defect_features, zone_features)

GEOMETRY = {"um_per_px": 0.5, "center_x": 200.0, "center_y": 200.0, "cladding_radius_px": 125.0}


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    gray = (0.6 + rng.normal(0, 0.01, (400, 400))).astype(np.float32)
    inst = np.zeros((400, 400), np.uint16)
    cv2.line(inst, (50, 60), (200, 90), 1, 2)           # thin dark line
    cv2.circle(inst, (300, 300), 10, 2, -1)             # dark disc
    cv2.circle(inst, (200, 75), 6, 3, -1)               # bright disc on the cladding edge
    gray[inst == 1] -= 0.3
    gray[inst == 2] -= 0.3
    gray[inst == 3] += 0.3
    zones = np.full((400, 400), 2, np.uint8)
    table = defect_features(gray, inst, zones, pd.DataFrame({"number": [1, 2, 3]}), GEOMETRY)
    return table.set_index("number")


def test_columns_and_units(scene):
    assert list(scene.columns) == DEFECT_FEATURE_NAMES
    assert set(DEFECT_FEATURE_NAMES) <= set(FEATURE_UNITS) and set(DEFECT_FEATURE_NAMES) <= set(FEATURE_DESCRIPTIONS)
    assert {"radius_um", "length_um", "zone"} <= set(FEATURE_UNITS)  # detection columns documented


def test_line_is_elongated(scene):
    line = scene.loc[1]
    assert line.aspect_ratio > 10 and line.eccentricity > 0.99
    assert line.straightness > 0.9 and line.orientation_coherence > 0.6
    assert line.skeleton_length_um == pytest.approx(np.hypot(150, 30) * 0.5, rel=0.1)


def test_disc_is_round_and_dark(scene):
    disc = scene.loc[2]
    assert disc.circularity == pytest.approx(1.0, abs=0.1)
    assert disc.aspect_ratio == pytest.approx(1.0, abs=0.05) and disc.solidity > 0.9
    assert disc.equivalent_diameter_um == pytest.approx(10.0, rel=0.1)
    assert disc.local_contrast == pytest.approx(-0.3, abs=0.02) and disc.local_snr < -10
    assert disc.local_background == pytest.approx(0.6, abs=0.01)


def test_michelson_contrast_ignores_illumination(scene):
    """The dark disc removes half the light (0.3 of 0.6): Michelson -0.3 / 0.9, for a
    dimmer lamp too, while the absolute contrast and the SNR scale with the light."""
    assert scene.loc[2].michelson_contrast == pytest.approx(-1 / 3, abs=0.02)
    assert scene.loc[3].michelson_contrast == pytest.approx(0.3 / 1.5, abs=0.03)
    gray = np.full((120, 120), 0.3, np.float32) + np.random.default_rng(1).normal(0, 0.005, (120, 120)).astype(np.float32)
    inst = np.zeros((120, 120), np.uint16)
    cv2.circle(inst, (60, 60), 10, 1, -1)
    gray[inst == 1] -= 0.15
    dim = defect_features(gray, inst, np.full((120, 120), 2, np.uint8), pd.DataFrame({"number": [1]}),
                          {**GEOMETRY, "center_x": 500.0}).iloc[0]
    assert dim.michelson_contrast == pytest.approx(scene.loc[2].michelson_contrast, abs=0.02)
    assert dim.local_contrast == pytest.approx(scene.loc[2].local_contrast / 2, abs=0.02)


def test_bright_disc_on_edge(scene):
    edge = scene.loc[3]
    assert edge.local_contrast > 0.25
    assert edge.cladding_edge_distance_um < 1.0
    assert scene.loc[2].cladding_edge_distance_um == pytest.approx((141.4 - 10 - 125) * 0.5, abs=1.0)
    # reach beyond the edge: the edge disc straddles it by its radius, the far disc lies outside
    assert edge.cladding_overhang_um == pytest.approx(6 * 0.5, abs=0.6)
    assert scene.loc[2].cladding_overhang_um == pytest.approx((141.4 + 10 - 125) * 0.5, abs=1.0)
    # the edge disc lies half across the edge, the far one wholly beyond it
    assert edge.edge_straddle == pytest.approx(1.0, abs=0.1)
    assert scene.loc[2].edge_straddle == 0.0


def test_edge_distance_follows_an_elliptical_cladding():
    """Non-square pixels draw the cladding as an ellipse (zones: equal-area radius,
    ellipticity 1 - minor/major): a disc on the edge at the end of the major axis is on
    the edge, not (a - R) px beyond it."""
    e, R = 0.1, 100.0
    a = R / np.sqrt(1 - e)                                  # major semi-axis, along x
    geometry = {**GEOMETRY, "cladding_radius_px": R, "cladding_ellipticity": e, "cladding_angle_deg": 0.0}
    inst = np.zeros((400, 400), np.uint16)
    cv2.circle(inst, (int(round(200 + a)), 200), 5, 1, -1)
    gray = np.where(inst > 0, 0.3, 0.6).astype(np.float32)
    row = defect_features(gray, inst, np.full(inst.shape, 2, np.uint8), pd.DataFrame({"number": [1]}),
                          geometry).iloc[0]
    assert row.cladding_edge_distance_um < 0.5
    assert row.edge_straddle == pytest.approx(1.0, abs=0.15)


def test_background_of_a_notch_at_the_edge_is_the_glass_it_breaks():
    """A dark notch inside the cladding edge of a bright fiber: its background ring
    reaches across the edge onto the darker ferrule, but only the glass side counts (a
    two-level ring has the spread of their gap, and the notch looks fainter than it is;
    near the edge the noise-measured SNR of a chip is what tells it from a faint film)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:400, :400]
    r = np.hypot(xx - 200.0, yy - 200.0)
    gray = (np.where(r <= 125.0, 0.7, 0.35) + rng.normal(0, 0.01, r.shape)).astype(np.float32)
    inst = ((np.hypot(xx - 200.0, yy - 75.0) <= 8) & (r <= 125.0)).astype(np.uint16)  # a half disc
    gray[inst == 1] = 0.25
    zones = np.full(inst.shape, 2, np.uint8)
    notch = defect_features(gray, inst, zones, pd.DataFrame({"number": [1]}), GEOMETRY).iloc[0]
    assert notch.local_background == pytest.approx(0.7, abs=0.005)
    assert notch.local_background_std == pytest.approx(0.01, abs=0.003)
    assert notch.michelson_contrast == pytest.approx((0.25 - 0.7) / 0.95, abs=0.02)
    no_edge = {**GEOMETRY, "cladding_radius_px": np.nan}
    mixed = defect_features(gray, inst, zones, pd.DataFrame({"number": [1]}), no_edge).iloc[0]
    assert mixed.local_background_std > 2.5 * notch.local_background_std
    assert mixed.local_snr > 0.5 * notch.local_snr


def test_rim_contrast_tells_soft_hard_and_haloed_edges():
    """Same dark disc (mask = half-depth contour) drawn hard, blurred (oil-like soft
    edge) and with a bright diffraction ring just outside (pit)."""
    yy, xx = np.mgrid[:120, :120]
    r = np.hypot(xx - 60.0, yy - 60.0)
    disc = (r <= 12).astype(np.float32)
    images = {
        "hard": 0.6 - 0.3 * disc,
        "soft": 0.6 - 0.3 * cv2.GaussianBlur(disc, (0, 0), 4.0),
        "halo": 0.6 - 0.3 * disc + 0.15 * ((r > 12) & (r <= 14)),
    }
    rim, halo = {}, {}
    for name, gray in images.items():
        inst = (gray < 0.45).astype(np.uint16)
        row = defect_features(gray.astype(np.float32), inst, np.full((120, 120), 2, np.uint8),
                              pd.DataFrame({"number": [1]}), GEOMETRY)
        rim[name] = float(row.rim_contrast.iloc[0])
        halo[name] = float(row.halo_contrast.iloc[0])
    assert abs(rim["hard"]) < 0.05
    assert rim["soft"] > 0.25
    assert rim["halo"] < -0.3
    # the halo ring is 0.15 brighter than the background around a 0.3-deep disc; a
    # blurred edge only fades towards the background (no opposite-polarity ring)
    assert halo["halo"] == pytest.approx(0.5, abs=0.05)
    assert halo["hard"] == halo["soft"] == 0.0


def test_outline_roughness_ignores_elongation_not_ragged_outlines():
    """A smooth disc and a 3:1 ellipse have near-constant radius in their moment
    ellipse's frame; a ragged blob (five-lobed outline) does not."""
    yy, xx = np.mgrid[:200, :300].astype(np.float32)
    inst = np.zeros((200, 300), np.uint16)
    inst[np.hypot(xx - 50, yy - 50) <= 15] = 1
    inst[((xx - 150) / 30) ** 2 + ((yy - 50) / 10) ** 2 <= 1] = 2
    phi = np.arctan2(yy - 140, xx - 150)
    inst[np.hypot(xx - 150, yy - 140) <= 18 * (1 + 0.3 * np.cos(5 * phi))] = 3
    gray = np.where(inst > 0, 0.3, 0.6).astype(np.float32)
    t = defect_features(gray, inst, np.full(inst.shape, 2, np.uint8),
                        pd.DataFrame({"number": [1, 2, 3]}), GEOMETRY).set_index("number")
    assert t.loc[1, "outline_roughness"] < 0.04 and t.loc[2, "outline_roughness"] < 0.04
    assert t.loc[2, "aspect_ratio"] == pytest.approx(3.0, rel=0.1)
    assert t.loc[3, "outline_roughness"] > 0.15


def test_contrast_variation_tells_fading_line_from_uniform_particle(scene):
    """A uniform disc's spread is only the noise (0.01 of a 0.3 contrast); a scratch
    fading from full depth to nothing along its length spreads by a third of its mean
    depth; a relief groove (dark and bright sides) has a mean near 0 and a large spread."""
    assert scene.loc[2].contrast_variation == pytest.approx(0.01 / 0.3, abs=0.01)
    gray = np.full((100, 200), 0.6, np.float32)
    inst = np.zeros((100, 200), np.uint16)
    inst[48:52, 20:180] = 1                    # fading scratch
    inst[70:76, 20:180] = 2                    # relief groove: dark upper, bright lower half
    gray[48:52, 20:180] -= np.linspace(0.3, 0.0, 160, dtype=np.float32)
    gray[70:73, 20:180] -= 0.2
    gray[73:76, 20:180] += 0.18
    out = defect_features(gray, inst, np.full((100, 200), 2, np.uint8),
                          pd.DataFrame({"number": [1, 2]}), GEOMETRY).set_index("number")
    # uniform ramp 0..0.3: std 0.3 / sqrt(12), mean 0.15
    assert out.loc[1, "contrast_variation"] == pytest.approx(0.3 / np.sqrt(12) / 0.15, rel=0.05)
    assert out.loc[2, "contrast_variation"] > 10 * scene.loc[2].contrast_variation


@pytest.mark.parametrize("blur_px", [0.7, 1.5])
def test_feret_is_the_outline_size_whatever_the_mask(blur_px):
    """A blurred 12 µm (24 px) disc: the half-contrast Feret diameter is its diameter
    for a tight mask, a mask grown by 2 px and a mask with a stray pixel 5 px away
    (both of which inflate the mask's own largest dimension)."""
    n, c = 120, 60.0
    yy, xx = (np.mgrid[0:n * 8, 0:n * 8] + 0.5) / 8 - 0.5  # pixel-centre coordinates, 8x supersampled
    disc = cv2.resize(((xx - c) ** 2 + (yy - c) ** 2 <= 12.0 ** 2).astype(np.float32), (n, n),
                      interpolation=cv2.INTER_AREA)
    gray = 0.7 - 0.3 * cv2.GaussianBlur(disc, (0, 0), blur_px)
    gray += np.random.default_rng(2).normal(0, 0.01, gray.shape).astype(np.float32)
    tight = (disc >= 0.5).astype(np.uint16)
    grown = cv2.dilate(tight, np.ones((5, 5), np.uint8))
    stray = tight.copy()
    stray[60, 60 + 12 + 5] = 1
    zones = np.full((n, n), 2, np.uint8)
    for mask in (tight, grown, stray):
        f = defect_features(gray, mask, zones, pd.DataFrame({"number": [1]}), GEOMETRY).iloc[0]
        assert f.feret_um == pytest.approx(12.0, abs=0.25)  # half a pixel


def _line_image(width_px, relief, blur_px=1.0, n=160):
    """A 6° tilted line of ``width_px`` across an n x n image (8x supersampled), dark, or
    for ``relief`` a shaded groove (dark left flank, bright right flank); its masks."""
    yy, xx = (np.mgrid[0:n * 8, 0:n * 8] + 0.5) / 8 - 0.5
    t = np.deg2rad(6.0)
    across = (xx - n / 2) * np.cos(t) - (yy - n / 2) * np.sin(t)  # signed distance to the axis
    along = np.abs((xx - n / 2) * np.sin(t) + (yy - n / 2) * np.cos(t)) < 0.35 * n
    def cover(sel):
        return cv2.resize(sel.astype(np.float32), (n, n), interpolation=cv2.INTER_AREA)
    inside = along & (np.abs(across) <= width_px / 2)
    shade = -cover(inside & (across < 0)) + cover(inside & (across >= 0)) if relief else -cover(inside)
    gray = 0.6 + 0.25 * cv2.GaussianBlur(shade, (0, 0), blur_px)
    gray += np.random.default_rng(3).normal(0, 0.01, gray.shape).astype(np.float32)
    full = (cover(inside) >= 0.5).astype(np.uint16)
    dark_flank = (cover(inside & (across < 0)) >= 0.5).astype(np.uint16)
    return gray.astype(np.float32), full, dark_flank


@pytest.mark.parametrize("width_px", [6.0, 9.0])
@pytest.mark.parametrize("relief", [False, True])
def test_profile_width_is_the_line_width_whatever_the_mask(width_px, relief):
    """The cross profile's FWHM gives a line's width (0.5 µm/px) from a full mask and
    from a mask of half its width: eroded, or for a shaded groove its dark flank only."""
    gray, full, dark_flank = _line_image(width_px, relief)
    half = dark_flank if relief else cv2.erode(full, np.ones((1, 1 + int(width_px) // 2), np.uint8))
    zones = np.full(gray.shape, 2, np.uint8)
    for mask in (full, half):
        f = defect_features(gray, mask, zones, pd.DataFrame({"number": [1]}),
                            {**GEOMETRY, "center_x": 1000.0}).iloc[0]
        assert f.profile_width_um == pytest.approx(width_px * 0.5, abs=0.35)


def test_profile_width_of_a_thin_line_is_broadened_by_blur_only():
    """A 3 px line blurred by σ = 1 px: FWHM of the blurred profile (~3.4 px)."""
    gray, full, _ = _line_image(3.0, False)
    f = defect_features(gray, full, np.full(gray.shape, 2, np.uint8), pd.DataFrame({"number": [1]}),
                        {**GEOMETRY, "center_x": 1000.0}).iloc[0]
    assert 1.5 <= f.profile_width_um <= 1.5 + 0.5 * 0.6


def test_empty_table():
    out = defect_features(np.zeros((10, 10), np.float32), np.zeros((10, 10), np.uint16),
                          np.ones((10, 10), np.uint8), pd.DataFrame({"number": []}), GEOMETRY)
    assert len(out) == 0 and list(out.columns) == ["number", *DEFECT_FEATURE_NAMES]


def test_zone_features():
    gray = np.full((200, 200), 0.5, np.float32)
    zones = np.zeros((200, 200), np.uint8)
    cv2.circle(zones, (100, 100), 40, 2, -1)
    cv2.circle(zones, (100, 100), 10, 1, -1)
    geo = {"um_per_px": 1.0, "center_x": 100.0, "center_y": 100.0}
    zones_um = {"core": [0, 20], "cladding": [20, 80], "adhesive": [80, 100], "contact": [100, 200]}
    out = zone_features(gray, zones, geo, zones_um).set_index("zone")
    assert list(out.index) == [1, 2]
    assert out.loc[2, "visible_fraction"] == pytest.approx(1.0, abs=0.05)
    assert out.loc[1, "intensity_mean"] == pytest.approx(0.5)
    assert out.loc[1, "entropy"] == 0.0



REAL = Path(__file__).resolve().parents[2] / "shared" / "real_images"


@pytest.mark.real
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/real_images absent")
def test_real_closeup_features_are_finite_and_linear_defects_elongated():
    from fiberprep.defects import detect_defects
    from fiberprep.io import load_image

    cfg = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    gray = load_image(sorted((REAL / "scratch_closeups_512").glob("*"))[0], 40_000_000, 64)[0]
    zones = np.full(gray.shape, 5, np.uint8)  # zones.mode none: one ungraded zone
    geometry = {"um_per_px": cfg["detection"]["default_um_per_px"], "center_x": np.nan,
                "center_y": np.nan, "cladding_radius_px": np.nan}
    inst, table = detect_defects(gray, zones, geometry, cfg["detection"])
    feats = defect_features(gray, inst, zones, table, geometry)
    assert len(feats) == len(table) > 0
    no_edge = ["cladding_edge_distance_um", "cladding_overhang_um", "edge_straddle"]  # no fiber edge: NaN
    assert feats[no_edge].isna().all().all()
    assert np.isfinite(feats.drop(columns=no_edge).to_numpy()).all()
    linear = feats[table["shape_class"].to_numpy() == "linear"]
    assert len(linear) and (linear["aspect_ratio"] > 3).all()


def test_unknown_defect_number_is_named():
    inst = np.zeros((20, 20), np.uint16)
    inst[5:8, 5:8] = 1
    with pytest.raises(ValueError, match=r"\[2\]"):
        defect_features(np.zeros((20, 20), np.float32), inst, np.ones((20, 20), np.uint8),
                        pd.DataFrame({"number": [1, 2]}), GEOMETRY)


def test_defects_at_the_image_border_and_a_bent_line():
    """Crops, texture and gradient boxes clipped by the image border; a bent line is
    less straight than a straight one of the same length."""
    rng = np.random.default_rng(2)
    gray = (0.6 + rng.normal(0, 0.01, (200, 200))).astype(np.float32)
    inst = np.zeros((200, 200), np.uint16)
    inst[:4, :5] = 1                                                  # corner blob
    inst[199, 20:180] = 2                                             # line on the bottom row
    cv2.polylines(inst, [np.array([[20, 60], [80, 100], [140, 60]], np.int32)], False, 3, 2)
    cv2.line(inst, (20, 150), (160, 150), 4, 2)
    gray[inst > 0] -= 0.3
    shapes = ["compact", "linear", "linear", "linear"]
    t = defect_features(gray, inst, np.full((200, 200), 2, np.uint8),
                        pd.DataFrame({"number": [1, 2, 3, 4], "shape_class": shapes}),
                        GEOMETRY).set_index("number")
    assert np.isfinite(t.drop(columns=["rim_contrast"]).to_numpy()).all()
    assert (t["image_compact_defects"] == 1).all()  # the image's one compact defect, for all
    assert t.loc[2, "straightness"] > 0.95 and t.loc[2, "aspect_ratio"] > 50
    assert t.loc[3, "straightness"] < 0.9 < t.loc[4, "straightness"]
    # the chevron rises 40 px over its 120 px span; the straight line not at all
    assert t.loc[3, "skeleton_bend"] == pytest.approx(40 / 120, abs=0.05)
    assert t.loc[4, "skeleton_bend"] < 0.03
    assert t.loc[1, "local_contrast"] == pytest.approx(-0.3, abs=0.02)


def test_bend_radius_of_an_arc_a_straight_line_and_a_speck():
    """The skeleton's radius of curvature: an arc's radius, a straight line's and a
    speck's capped (no curl to see)."""
    gray = np.full((200, 200), 0.6, np.float32)
    inst = np.zeros((200, 200), np.uint16)
    cv2.ellipse(inst, (100, 120), (60, 60), 0, 240, 300, 1, 2)  # 60 px radius, 60 degrees
    cv2.line(inst, (20, 170), (180, 176), 2, 2)
    inst[20:23, 20:23] = 3
    gray[inst > 0] -= 0.3
    t = defect_features(gray, inst, np.full((200, 200), 2, np.uint8),
                        pd.DataFrame({"number": [1, 2, 3]}), GEOMETRY).set_index("number")
    um = GEOMETRY["um_per_px"]
    assert t.loc[1, "bend_radius_um"] == pytest.approx(60 * um, rel=0.15)
    assert t.loc[2, "bend_radius_um"] == t.loc[3, "bend_radius_um"] == 10_000


def test_wiggle_of_a_snaking_line_not_of_an_arc_a_straight_line_or_a_trail_of_beads():
    """The skeleton's distance from the parabola through it: a snaking line's S-bends
    (a fibre of lint) stand out; an arc, a straight line, a trail of beads along the
    same snaking path (several pieces) and two crossing lines (four arms) give none."""
    gray = np.full((240, 240), 0.6, np.float32)
    inst = np.zeros((240, 240), np.uint16)
    cv2.line(inst, (150, 100), (230, 180), 5, 2)
    cv2.line(inst, (150, 180), (230, 100), 5, 2)
    x = np.arange(40, 201)
    snake = np.stack([x, 60 + 8 * np.sin(2 * np.pi * (x - 40) / 80)], axis=1).astype(np.int32)
    cv2.polylines(inst, [snake], False, 1, 2)
    cv2.ellipse(inst, (120, 200), (80, 80), 0, 240, 300, 2, 2)
    cv2.line(inst, (20, 220), (220, 226), 3, 2)
    for cx, cy in snake[::12] + [0, 80]:
        cv2.circle(inst, (int(cx), int(cy)), 2, 4, -1)
    gray[inst > 0] -= 0.3
    t = defect_features(gray, inst, np.full((240, 240), 2, np.uint8),
                        pd.DataFrame({"number": [1, 2, 3, 4, 5]}), GEOMETRY).set_index("number")
    um = GEOMETRY["um_per_px"]
    assert t.loc[1, "skeleton_wiggle_um"] > 4.0 * um  # two S-bends of 8 px amplitude
    assert t.loc[2, "skeleton_wiggle_um"] < 0.7 * um and t.loc[3, "skeleton_wiggle_um"] < 0.7 * um
    assert t.loc[4, "skeleton_wiggle_um"] == t.loc[5, "skeleton_wiggle_um"] == 0.0


def _texture_images():
    """Random, flat-patched and ramped 32-level images (ties between neighbours are
    where interpolation round-off decides an LBP bit)."""
    rng = np.random.default_rng(3)
    for t in range(60):
        h, w = rng.integers(1, 40, 2)
        q = rng.integers(0, rng.integers(1, 33), (h, w))
        if t % 3 == 0:
            q = np.cumsum(rng.random((h, w)) * 0.3, axis=1) + 3 * rng.random()
        yield np.minimum(q, 31).astype(np.uint8)


def test_texture_is_skimages_glcm_and_uniform_lbp():
    """The batched GLCM statistics and LBP histograms equal scikit-image's on each window."""
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    from fiberprep.features import _TEXTURE_NAMES, _texture

    rng = np.random.default_rng(5)
    windows, refs = [], []
    for q in _texture_images():
        lbp = local_binary_pattern(q, 8, 1.0, method="uniform").astype(np.intp)
        pick = rng.random(q.shape) < 0.5
        pick.flat[0] = True
        ys, xs = np.nonzero(pick)
        windows.append((q, ys, xs))
        P = graycomatrix(q, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32,
                         symmetric=True).sum(axis=(2, 3), keepdims=True)
        props = [graycoprops(P, p)[0, 0] if P.any() else 0.0 for p in ("contrast", "homogeneity", "energy")]
        corr = graycoprops(P, "correlation")[0, 0] if np.unique(q).size > 1 and P.any() else 1.0
        refs.append([*props, corr, *(np.bincount(lbp[ys, xs], minlength=10) / ys.size)])
    got = _texture(windows)
    assert got.shape == (len(windows), len(_TEXTURE_NAMES))
    np.testing.assert_allclose(got, np.array(refs), rtol=1e-9, atol=1e-12)


def test_solidity_uses_the_hull_of_the_pixel_squares():
    from fiberprep.features import _shape

    rng = np.random.default_rng(4)
    corners = np.array([[-.5, -.5], [-.5, .5], [.5, -.5], [.5, .5]], np.float32)
    for _ in range(30):
        m = np.zeros((40, 40), np.uint8)
        for _ in range(rng.integers(1, 4)):
            centre, axes = rng.integers(8, 32, 2).tolist(), rng.integers(0, 8, 2).tolist()
            cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        ys, xs = np.nonzero(m)
        pts = np.column_stack([xs, ys]).astype(np.float32)
        hull = cv2.contourArea(cv2.convexHull((pts[:, None] + corners).reshape(-1, 2)))
        solidity = _shape(m, ys.size, ys, xs, 1.0)["solidity"]
        assert solidity == pytest.approx(min(1.0, ys.size / hull), rel=1e-12)


def test_features_do_not_depend_on_the_other_defects_in_the_batch():
    """Texture and edge features are computed for all defects at once, in batches of
    _TEXTURE_BATCH: each defect's row equals the one computed for it alone."""
    from fiberprep.features import _TEXTURE_BATCH

    rng = np.random.default_rng(6)
    gray = (0.6 + rng.normal(0, 0.02, (420, 420))).astype(np.float32)
    inst = np.zeros((420, 420), np.uint16)
    centres = [(x, y) for y in range(8, 412, 16) for x in range(8, 412, 16)]
    assert len(centres) > _TEXTURE_BATCH
    for k, c in enumerate(centres, 1):
        cv2.circle(inst, c, int(rng.integers(1, 6)), k, -1)
    gray[inst > 0] -= 0.2
    zones = np.full(gray.shape, 2, np.uint8)
    table = pd.DataFrame({"number": np.arange(1, len(centres) + 1)})
    everyone = defect_features(gray, inst, zones, table, GEOMETRY).set_index("number")
    for k in (1, _TEXTURE_BATCH + 3, len(centres)):
        alone = defect_features(gray, inst, zones, table[table["number"] == k], GEOMETRY)
        np.testing.assert_allclose(alone.set_index("number").loc[k].to_numpy(),
                                   everyone.loc[k].to_numpy(), rtol=1e-12, equal_nan=True)


def test_small_smooth_outlines_stay_below_the_ragged_limit():
    """Digitised smooth ellipses of at least ``pit_roughness_min_area_px`` pixels are
    less ragged than ``pit_max_member_roughness``: the member rule that sends ragged pits
    to contamination reads the outline only where the pixels resolve it."""
    naming = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())[
        "clustering"]["naming"]
    rng = np.random.default_rng(3)
    inst = np.zeros((400, 400), np.uint16)
    yy, xx = np.mgrid[:400, :400]
    for i in range(64):
        cy, cx = 25 + 50 * (i // 8) + rng.random(), 25 + 50 * (i % 8) + rng.random()
        axes = rng.uniform(2.5, 6.0) * np.array([1.0, rng.uniform(0.6, 1.0)])
        t = rng.uniform(0, np.pi)
        u, v = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t), (yy - cy) * np.cos(t) - (xx - cx) * np.sin(t)
        inst[(u / axes[0]) ** 2 + (v / axes[1]) ** 2 <= 1] = i + 1
    gray = np.where(inst > 0, 0.3, 0.6).astype(np.float32)
    table = defect_features(gray, inst, np.full(inst.shape, 2, np.uint8),
                            pd.DataFrame({"number": np.arange(1, 65)}), GEOMETRY).set_index("number")
    area = pd.Series(np.bincount(inst.ravel(), minlength=65)[1:], index=np.arange(1, 65))
    resolved = table[area.reindex(table.index) >= naming["pit_roughness_min_area_px"]]
    assert len(resolved) >= 40
    assert (resolved["outline_roughness"] < naming["pit_max_member_roughness"]).all()
