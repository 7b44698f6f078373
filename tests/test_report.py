"""QC overlays and the HTML report, rendered by headless Chromium (Debian's package;
the browser tests skip when /usr/bin/chromium is absent)."""

import base64
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from fiberprep import datasets, library, report, synth, zones
from fiberprep.features import DEFECT_FEATURE_NAMES

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)")


@pytest.fixture(scope="module")
def run():
    """A small run's report inputs built from synthetic end faces (one rejected input)."""
    rng = np.random.default_rng(7)
    images, labels, rows, patches, overlays = [], [], [], {}, {}
    for k in range(6):
        spec = synth.random_spec(rng, CONFIG["fiber_types"], p_clean=0.2, n_defects=(2, 9), width=320, height=240)
        image, truth = synth.render(spec, rng)
        iid = f"img_{k}"
        d = pd.DataFrame(truth["defects"], columns=["number", "class_name", "area_px", "length_um", "width_um",
                                                     "bbox_x", "bbox_y", "bbox_w", "bbox_h", "innermost_zone"])
        d = d.rename(columns={"class_name": "type"}).assign(image_id=iid)
        d["defect_id"] = [f"{iid}#{n}" for n in d["number"]]
        d["area_um2"] = d["area_px"] * truth["um_per_px"] ** 2
        d["equivalent_diameter_um"] = np.sqrt(4 * d["area_um2"] / np.pi)
        d["contrast"] = rng.normal(0, 0.1, len(d))
        d["major_axis_um"], d["minor_axis_um"] = d["length_um"], d["width_um"]
        d["eccentricity"] = np.sqrt(1 - (d["width_um"] / d["length_um"]).clip(0, 1) ** 2)
        d["cluster"] = d["type"].map(datasets.class_id) - 1
        d["severity_score"] = rng.random(len(d))
        d["severity_level"] = np.where(d["severity_score"] > 0.5, "high", "low")
        if len(d):
            rows.append(d)
        lut = datasets.class_lut(d["number"], d["type"], int(truth["instance_map"].max()))
        overlays[iid] = report.overlay(image, truth["zone_map"], truth["instance_map"], lut)
        for r in d.itertuples():
            patches[r.defect_id] = library.extract_patch(image, (r.bbox_x, r.bbox_y, r.bbox_w, r.bbox_h), 8)
        grade = {"pass_fail": "fail" if len(d) > 4 else "pass", "failures": ["zone B: test"] if len(d) > 4 else []}
        labels.append({"image_id": iid, "split": "train", **{g: truth[g] for g in ("cladding_radius_px", "core_offset_um", "um_per_px")},
                       **datasets.image_label_row(d, zones.ZONE_NAMES, grade), "failures": "; ".join(grade["failures"])})
        images.append({"image_id": iid, "rel_path": f"{iid}.png", "status": "ok", "reason": ""})
    images.append({"image_id": "broken", "rel_path": "broken.jpg", "status": "rejected", "reason": "truncated JPEG"})
    index = pd.concat(rows, ignore_index=True)
    return pd.DataFrame(images), pd.DataFrame(labels), index, patches, overlays


def test_overlay_draws_zones_and_defects_in_their_colours(run):
    rng = np.random.default_rng(3)
    spec = synth.random_spec(rng, CONFIG["fiber_types"], p_clean=0.0, n_defects=(3, 5), width=320, height=240)
    image, truth = synth.render(spec, rng)
    d = pd.DataFrame(truth["defects"])
    lut = datasets.class_lut(d["number"], d["class_name"], int(truth["instance_map"].max()))
    out = report.overlay(image, truth["zone_map"], truth["instance_map"], lut)
    assert out.shape == (*image.shape, 3) and out.dtype == np.uint8
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    for cls in set(lut[d["number"]]):
        assert datasets.DEFECT_COLOURS[int(cls)] in colours
    assert datasets.ZONE_COLOURS[2] in colours  # the cladding boundary
    untouched = (truth["instance_map"] == 0) & (truth["zone_map"] == cv2.erode(truth["zone_map"], np.ones((5, 5))))
    untouched &= truth["zone_map"] == cv2.dilate(truth["zone_map"], np.ones((5, 5)))
    np.testing.assert_array_equal(out[untouched][:, 0], image[untouched])


def test_report_is_self_contained(run):
    images, labels, index, patches, overlays = run
    page = report.render_report(images, labels, index, patches, overlays, CONFIG["report"], {"input_dir": "x"},
                                DEFECT_FEATURE_NAMES, zones.ZONE_NAMES)
    assert "truncated JPEG" in page and "<svg" in page
    assert not re.search(r'src=["\'](?!data:)', page), "every picture is embedded"
    uris = re.findall(r"data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)", page)
    assert len(uris) >= 6
    for u in uris:
        assert cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_UNCHANGED) is not None
    defect_ids, image_ids = report.report_selection(index, labels, CONFIG["report"], DEFECT_FEATURE_NAMES)
    assert set(defect_ids) <= set(index["defect_id"]) and image_ids[0] in set(labels.loc[labels["pass_fail"] == "fail", "image_id"])


def _chromium(args, cwd):
    return subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--hide-scrollbars", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


@needs_chromium
def test_report_renders_in_chromium_without_console_errors(run, tmp_path):
    images, labels, index, patches, overlays = run
    page = tmp_path / "report.html"
    page.write_text(report.render_report(images, labels, index, patches, overlays, CONFIG["report"], {"input_dir": "x"},
                                DEFECT_FEATURE_NAMES, zones.ZONE_NAMES))
    # the check sees console errors: a page with one is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    assert _console_errors(_chromium(["--dump-dom", bad.as_uri()], tmp_path).stderr)

    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,3000", page.as_uri()], tmp_path)
    assert not _console_errors(res.stderr), res.stderr
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (3000, 1280)
    assert img.std() > 20, "the page is not blank"


def test_rejected_reasons_group_by_kind_and_duplicates_are_listed(run):
    images, labels, index, patches, overlays = run
    more = pd.DataFrame([
        {"image_id": f"close_{k}", "rel_path": f"close_{k}.bmp", "status": "rejected",
         "reason": f"no fiber found: edges cover at most {30 + k} % of a circle (50 % needed)"} for k in range(3)]
        + [{"image_id": "weak", "rel_path": "weak.png", "status": "rejected",
            "reason": "low fit confidence 0.18: an edge supports 66 % of the fit"}])
    images = pd.concat([images, more], ignore_index=True)
    images["duplicate_of"] = np.where(images["image_id"].isin(["img_0", "img_1"]), "img_0", None)
    page = report.render_report(images, labels, index, patches, overlays, CONFIG["report"], {"input_dir": "x"},
                                DEFECT_FEATURE_NAMES, zones.ZONE_NAMES)
    summary = page.split("<h2>Rejected inputs</h2>")[1].split("</table>")[0]
    rows = re.findall(r"<tr>\s*<td>([^<]*)</td>\s*<td>(\d+)</td>", summary)
    assert dict(rows) == {"no fiber found": "3", "low fit confidence": "1", "truncated JPEG": "1"}
    assert "Duplicate files" in page and "2 files hold the same bytes" in page
