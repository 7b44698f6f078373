"""Known answers of features.defect_features / zone_features on drawn shapes."""

import cv2
import numpy as np
import pandas as pd
import pytest

from fiberprep.features import (DEFECT_FEATURE_NAMES, FEATURE_DESCRIPTIONS, FEATURE_UNITS,
                                defect_features, zone_defect_summary, zone_features)

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


def test_bright_disc_on_edge(scene):
    edge = scene.loc[3]
    assert edge.local_contrast > 0.25
    assert edge.cladding_edge_distance_um < 1.0
    assert scene.loc[2].cladding_edge_distance_um == pytest.approx((141.4 - 10 - 125) * 0.5, abs=1.0)


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


def test_zone_defect_summary():
    zones = pd.DataFrame({"image_id": ["a", "a", "b"], "zone": [1, 2, 2], "area_px": [100, 1000, 1000]})
    defects = pd.DataFrame({"image_id": ["a", "a", "b"], "zone": [2, 2, 2],
                            "type": ["scratch", "pit_dig", "chip"], "area_px": [10, 20, 7],
                            "length_um": [30.0, 3.0, 5.0], "severity_score": [0.5, 0.2, 0.9]})
    out = zone_defect_summary(zones, defects).set_index(["image_id", "zone"])
    assert out.loc[("a", 1), "n_defects"] == 0 and out.loc[("a", 1), "largest_defect_um"] == 0
    assert out.loc[("a", 2), ["n_scratch", "n_pit_dig", "n_chip"]].tolist() == [1, 1, 0]
    assert out.loc[("a", 2), "area_fraction_pit_dig"] == pytest.approx(0.02)
    assert out.loc[("b", 2), "worst_severity"] == 0.9 and out.loc[("a", 2), "largest_defect_um"] == 30
