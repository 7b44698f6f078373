"""IEC 61300-3-35 grading with the criteria of config/config.yaml, and severity."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

import numpy as np

from fiberprep.grading import defect_size_um, grade_image, severity, zone_verdicts

CONFIG = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
SM_PC = CONFIG["criteria"]["iec_61300_3_35_ed2_sm_pc"]
SM_APC = CONFIG["criteria"]["iec_61300_3_35_ed2_sm_apc"]
MM = CONFIG["criteria"]["iec_61300_3_35_ed2_mm"]


def table(*rows):
    """Defects as (type, length_um, width_um, innermost_zone)."""
    return pd.DataFrame(rows, columns=["type", "length_um", "width_um", "innermost_zone"])


def test_every_fiber_type_has_criteria():
    for ft in CONFIG["fiber_types"].values():
        assert ft["criteria"] in CONFIG["criteria"]


def test_six_defects_of_3um_in_zone_b_fail_sm_pc():
    grade = grade_image(table(*[("pit_dig", 3.0, 2.5, 2)] * 6), SM_PC)
    assert grade["pass_fail"] == "fail"
    assert grade["failures"] == ["zone B: 6 defects 2–5 µm > 5 allowed"]
    assert grade["zones"] == {"A": "pass", "B": "fail", "C": "pass", "D": "pass"}


def test_five_defects_of_3um_and_small_ones_pass():
    rows = [("pit_dig", 3.0, 2.5, 2)] * 5 + [("contamination", 1.5, 1.0, 2)] * 20
    assert grade_image(table(*rows), SM_PC)["pass_fail"] == "pass"


def test_core_zone_allows_nothing():
    grade = grade_image(table(("contamination", 1.0, 1.0, 1)), SM_PC)
    assert grade["failures"] == ["zone A: 1 defect of any size, none allowed"]


def test_scratch_size_is_its_width():
    long_thin = table(("scratch", 100.0, 2.0, 2))
    wide = table(("scratch", 10.0, 4.0, 2))
    assert grade_image(long_thin, SM_PC)["pass_fail"] == "pass"
    assert grade_image(wide, SM_PC)["failures"] == ["zone B: 1 scratch > 3 µm, none allowed"]
    two = grade_image(table(*[("scratch", 10.0, 4.0, 2)] * 2), SM_PC)
    assert two["failures"] == ["zone B: 2 scratches > 3 µm, none allowed"]
    # APC variant: no scratch limit in B, 4 thin scratches allowed in A
    assert grade_image(wide, SM_APC)["pass_fail"] == "pass"
    assert grade_image(table(*[("scratch", 20.0, 1.0, 1)] * 4), SM_APC)["pass_fail"] == "pass"
    assert grade_image(table(*[("scratch", 20.0, 1.0, 1)] * 5), SM_APC)["pass_fail"] == "fail"


def test_defect_size_is_largest_dimension_and_zone_is_innermost():
    # 12 x 4 µm chip touching B and C is judged in B by its 12 µm
    grade = grade_image(table(("chip", 12.0, 4.0, 2)), SM_PC)
    assert grade["failures"] == ["zone B: 1 defect > 5 µm, none allowed"]
    assert grade_image(table(("chip", 12.0, 4.0, 3)), SM_PC)["pass_fail"] == "pass"


def test_feature_sizes_when_measured():
    """feret_um (features) is the size of pits, chips, debris and profile_width_um that
    of a scratch; a defect without them (NaN) keeps its mask's sizes."""
    d = table(("pit_dig", 5.6, 3.0, 1), ("scratch", 40.0, 2.0, 2), ("contamination", 6.0, 2.0, 2))
    d["feret_um"] = [4.8, 39.0, np.nan]
    assert list(defect_size_um(d)) == [4.8, 2.0, 6.0]
    # a scratch's size: its cross profile's width where measured (here wider than 3 µm)
    d["profile_width_um"] = [3.0, 3.4, 2.0]
    assert list(defect_size_um(d)) == [4.8, 3.4, 6.0]
    assert grade_image(d.iloc[1:2], SM_PC)["failures"] == ["zone B: 1 scratch > 3 µm, none allowed"]
    # multimode zone A: at most 4 defects <= 5 µm, none larger; the stray-pixel-inflated
    # mask (5.6 µm) would fail the pit
    assert grade_image(d.iloc[:1], MM)["pass_fail"] == "pass"
    assert grade_image(d.iloc[:1].drop(columns="feret_um"), MM)["pass_fail"] == "fail"


def test_contact_zone_and_ferrule():
    assert grade_image(table(("contamination", 11.0, 5.0, 4)), SM_PC)["pass_fail"] == "fail"
    assert grade_image(table(("contamination", 500.0, 50.0, 5)), SM_PC)["pass_fail"] == "pass"


def test_multimode_bands():
    rows = [("pit_dig", 7.0, 6.0, 2)] * 5
    assert grade_image(table(*rows), MM)["pass_fail"] == "pass"
    assert grade_image(table(*rows * 2), MM)["failures"] == ["zone B: 10 defects 5–10 µm > 5 allowed"]
    assert grade_image(table(*[("pit_dig", 4.0, 4.0, 1)] * 5), MM)["failures"] == [
        "zone A: 5 defects ≤ 5 µm > 4 allowed"]


def test_no_defects_pass_and_zone_table():
    assert grade_image(table(), SM_PC) == {
        "pass_fail": "pass", "failures": [], "zones": dict.fromkeys("ABCD", "pass"),
        "criteria": SM_PC["edition"]}
    zones = zone_verdicts(table(("scratch", 30.0, 1.0, 2), ("pit_dig", 3.0, 3.0, 2)), SM_PC)
    assert [z["zone_letter"] for z in zones] == list("ABCD")
    assert [(z["n_scratches"], z["n_defects"]) for z in zones if z["zone_letter"] == "B"] == [(1, 1)]


def test_severity_grows_with_size_and_zone():
    d = table(("pit_dig", 2.0, 2.0, 2), ("pit_dig", 20.0, 10.0, 2), ("pit_dig", 2.0, 2.0, 5),
              ("pit_dig", 20.0, 10.0, 1))
    s = severity(d, CONFIG["severity"])
    score = s["severity_score"].to_numpy()
    assert score[1] > score[0] > score[2] and score[3] > score[1]
    assert ((score >= 0) & (score < 1)).all()
    assert s["severity_level"].tolist()[3] == "high" and s["severity_level"].tolist()[2] == "low"


def test_severity_uses_zone_column_when_no_innermost():
    d = table(("scratch", 30.0, 3.0, 1)).rename(columns={"innermost_zone": "zone"})
    assert severity(d, CONFIG["severity"])["severity_level"].iloc[0] == "high"


@pytest.mark.parametrize("dtype", ["Int64", "float64", "object"])
def test_a_defect_without_a_zone_is_not_graded(dtype):
    # a missing zone (null in any column type a reader may give) is no graded zone
    d = table(("pit_dig", 30.0, 30.0, 1), ("pit_dig", 30.0, 30.0, 1))
    d["innermost_zone"] = pd.Series([1, None], dtype=dtype)
    grade = grade_image(d, SM_PC)
    assert grade["failures"] == ["zone A: 1 defect of any size, none allowed"]
