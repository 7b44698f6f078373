"""Synthetic connector end-face images with exact ground truth.

Every later stage is measured against these renders: the fiber geometry (cladding
circle or slight ellipse, core disc and its offset), the IEC 61300-3-35 zone map and
one per-pixel instance mask per defect (scratch, pit, dig, dust, oil smear, edge chip)
are known exactly because the image is drawn from them.

Coordinates follow OpenCV/scikit-image pixel centres: pixel ``(x, y)`` (column, row)
covers ``[x - 0.5, x + 0.5] x [y - 0.5, y + 0.5]``, so the top-left pixel's centre is
``(0, 0)``. All geometry in the truth uses that convention.

The image is built as physics suggests: a reflectance scene (ferrule with grain,
glass disc with an antialiased, optionally blurred edge, optional visible core, epoxy
ring, edge halo, defects), multiplied by the illumination (vignetting, tilt shadow),
blurred by the optics, corrupted by signal-dependent noise, quantised to 8 bits and
optionally JPEG-compressed. The cladding edge profile is an error function of the
signed distance to the true boundary, so its 50 % crossing lies exactly on the
true circle whatever the softness.

Use ``random_spec`` to draw a scene description (a plain dict, reproducible and easy to
tweak), ``render`` to draw it, and ``write_dataset`` (or ``python -m fiberprep.synth``) to
write a folder of images with truth tables and masks. The ranges scenes are drawn from
(``DEFAULT_RANGES``, overridden by a preset of ``PRESETS`` and by keywords) were set
against the real photos: levels, noise and edge width measured on the Dimension scope
and endfaces photos lie inside them (``tests/test_synth.py``, ``real`` marker).

Examples
--------
>>> import numpy as np, yaml
>>> fiber_types = yaml.safe_load(open("config/config.yaml"))["fiber_types"]
>>> rng = np.random.default_rng(0)
>>> spec = random_spec(rng, fiber_types, width=320, height=240)
>>> image, truth = render(spec, rng)
>>> image.shape == truth["instance_map"].shape == (240, 320)
True
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage
from scipy.special import erfc

from fiberprep import grading, zones
from fiberprep.io import write_bytes, write_parquet, write_png

DEFECT_TYPES = ("scratch", "pit", "dig", "dust", "oil", "chip")
"""Synthetic defect types (finer than the dataset classes)."""

DEFECT_CLASS = {
    "scratch": "scratch",
    "pit": "pit_dig",
    "dig": "pit_dig",
    "dust": "contamination",
    "oil": "contamination",
    "chip": "chip",
}
"""Synthetic type -> dataset class name (``datasets.DEFECT_CLASSES``)."""

# Ranges a scene is drawn from. Presets override some of them; callers may override
# any of them by keyword. Sizes are in µm, levels are reflectances in [0, 1], (lo, hi)
# pairs are drawn uniformly unless noted, p_* are per-image probabilities.
DEFAULT_RANGES = {
    # image sizes (width, height) drawn uniformly; fixed by width/height when given
    "sizes": [(640, 480), (800, 600), (1024, 768), (1152, 864), (1280, 960),
              (1600, 1200), (1920, 1080)],
    "width": None,
    "height": None,
    "um_per_px": (0.25, 0.8),  # raised for small images so that the fiber fits
    # the cladding diameter may use at most this fraction of the shorter image side
    "max_fiber_frac": 0.8,
    "fiber_type_names": None,  # catalog keys to draw from; None: every type
    "max_offset_frac": 0.15,  # fiber centre offset, fraction of the width
    "p_ellipse": 0.15,  # slightly elliptical cladding
    "max_ellipticity": 0.01,  # 1 - minor/major
    "p_bright": 0.3,  # bright fiber on darker ferrule
    # reflectance levels; real photos measure ferrule 0.5-0.77 and glass/ferrule 0.35-0.5
    # (Dimension scope) or ~0.7 (endfaces_720x576) for dark fibers, ferrule ~0.13 and
    # glass 0.22 brighter for back-lit bright ones
    "dark_ferrule": (0.5, 0.85),
    "dark_glass_ratio": (0.3, 0.75),  # glass / ferrule
    "bright_ferrule": (0.1, 0.35),
    "bright_glass_step": (0.15, 0.35),  # glass - ferrule
    "p_core_visible_sm": 0.2,  # a visible core: rare on single-mode, usual on multimode
    "p_core_visible_mm": 0.85,
    "max_core_offset_um": 1.5,  # core centre offset from the cladding centre
    "edge_sigma_px": (0.35, 1.0),  # cladding edge softness (Gaussian sigma, px)
    "p_halo": 0.5,  # dark/bright diffraction pair straddling the edge
    "p_edge_line": 0.6,  # dark fibers: thin dark line just inside the edge (coaxial scopes)
    "p_frame": 0.15,  # dark field-stop band along one or two image sides
    "p_epoxy": 0.3,  # thin dark rough epoxy ring outside the glass
    "grain": (0.002, 0.02),  # log-uniform
    "p_tilt": 0.2,  # tilted-probe shadow on one side of the fiber edge
    "vignette": (0.0, 0.3),  # light fall-off at the corners (fraction)
    "p_strong_vignette": 0.25,
    "strong_vignette": (0.4, 0.7),
    "blur_px": (0.0, 0.8),  # optics point spread (Gaussian sigma, px)
    "noise": (0.001, 0.012),  # log-uniform; real photos measure 0.002-0.004
    "p_jpeg": 0.25,  # saved as JPEG (written as .jpg) at a quality in jpeg_quality
    "jpeg_quality": (60, 95),
    "p_clean": 0.2,  # no defect at all
    "n_defects": (1, 10),  # defects per non-clean image (integers, inclusive)
    "type_weights": {"scratch": 3, "pit": 2, "dig": 1.5, "dust": 2, "oil": 1, "chip": 1},
    "p_lint": 0.15,  # a dust particle is a curled fibre (line-shaped contamination)
    "p_dust_at_edge": 0.2,  # a dust particle sits on the fiber edge
    # close-up of the glass with no fiber edge in view (for zones.mode: none)
    "closeup": False,
}

PRESETS = {
    "bench": {},
    "demo": {
        # one connector type, the default config's fiber.type, so that the workflow's
        # zones and grades on the demo follow the same catalog entry as the truth
        "fiber_type_names": ["sm_pc"],
        "p_core_visible_sm": 0.4,
        "sizes": [(640, 480), (640, 480), (800, 600), (800, 600), (1024, 768), (1280, 960)],
        "p_jpeg": 0.15,
        "noise": (0.001, 0.006),
        "p_clean": 0.1,
        "n_defects": (2, 9),
    },
    "clean": {"p_clean": 1.0},
    "closeup": {
        "closeup": True,
        "sizes": [(512, 512)],
        "um_per_px": (0.08, 0.16),
        "n_defects": (1, 6),
        "type_weights": {"scratch": 4, "pit": 1.5, "dig": 1, "dust": 2, "oil": 0.5},
        "p_frame": 0.0,
        "vignette": (0.0, 0.15),
        "p_strong_vignette": 0.0,
    },
}
"""Named range sets: ``bench`` (the varied accuracy benchmark), ``demo`` (the committed
demo input: small, varied, mostly PNG), ``clean`` (no defects) and ``closeup``
(512x512 views inside the glass, no fiber edge, like ``scratch_closeups_512``)."""


def _uniform(rng, lo_hi):
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi))


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_spec(rng: np.random.Generator, fiber_types: dict, **ranges) -> dict:
    """Draw a random scene description.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the same state gives the same spec.
    fiber_types : dict
        The fiber catalog (``config["fiber_types"]``): name -> {cladding_um, core_um,
        zones_um, ...}. Sizes are read from it, never duplicated here.
    **ranges
        Overrides of ``DEFAULT_RANGES`` (or a preset from ``PRESETS``).

    Returns
    -------
    dict
        Plain, JSON-friendly scene description consumed by :func:`render`: image size,
        µm/px, fiber type and sizes, true centre (pixel-centre coordinates), appearance
        knobs and a list of defects (type, position in px, sizes in µm, contrast).
    """
    unknown = set(ranges) - set(DEFAULT_RANGES)
    if unknown:
        raise ValueError(f"unknown synth range(s) {sorted(unknown)}; allowed: {sorted(DEFAULT_RANGES)}")
    r = {**DEFAULT_RANGES, **ranges}
    if bool(r["width"]) != bool(r["height"]):
        raise ValueError("width and height must be given together")
    unknown = set(r["type_weights"]) - set(DEFECT_TYPES)
    if unknown:
        raise ValueError(f"unknown defect type(s) {sorted(unknown)} in type_weights; allowed: {DEFECT_TYPES}")
    names = sorted(r["fiber_type_names"] or fiber_types)
    fiber_type = names[rng.integers(len(names))]
    ft = fiber_types[fiber_type]
    if r["width"] and r["height"]:
        width, height = int(r["width"]), int(r["height"])
    else:
        width, height = r["sizes"][rng.integers(len(r["sizes"]))]
    cladding_um = float(ft["cladding_um"])
    if r["closeup"]:  # the whole frame lies on the glass: no fiber edge in view
        half_diag = 0.5 * np.hypot(width, height)
        upp_max = min(r["um_per_px"][1], (cladding_um / 2 - 3) / half_diag)
        um_per_px = _uniform(rng, (min(r["um_per_px"][0], upp_max), upp_max))
        room = max((cladding_um / 2 - 3) / um_per_px - half_diag, 0.0)  # px the centre may move
        offset, angle = rng.uniform(0, room), rng.uniform(0, 2 * np.pi)
        center_x = (width - 1) / 2 + offset * np.cos(angle)
        center_y = (height - 1) / 2 + offset * np.sin(angle)
    else:  # the fiber fits: cladding diameter <= max_fiber_frac of the shorter side
        upp_min = max(r["um_per_px"][0], cladding_um / (r["max_fiber_frac"] * min(width, height)))
        um_per_px = _uniform(rng, (upp_min, max(r["um_per_px"][1], upp_min)))
        edge_room = cladding_um / 2 / um_per_px + 4.0
        max_dx = min(r["max_offset_frac"] * width, width / 2 - edge_room)
        max_dy = min(r["max_offset_frac"] * width, height / 2 - edge_room)
        center_x = (width - 1) / 2 + rng.uniform(-1, 1) * max(max_dx, 0.0)
        center_y = (height - 1) / 2 + rng.uniform(-1, 1) * max(max_dy, 0.0)
    margin = cladding_um / 2 / um_per_px + 4.0

    is_mm = float(ft["core_um"]) > 20
    core_visible = not r["closeup"] and bool(
        rng.random() < (r["p_core_visible_mm"] if is_mm else r["p_core_visible_sm"]))
    bright = bool(rng.random() < r["p_bright"])
    if bright:  # back-lit look: dark surround, glass brighter, core brighter still
        ferrule_level = _uniform(rng, r["bright_ferrule"])
        cladding_level = min(ferrule_level + _uniform(rng, r["bright_glass_step"]), 0.8)
        core_level = min(cladding_level * _uniform(rng, (1.15, 1.6)), 0.95)
    else:  # coaxial look (Dimension scope): bright ferrule, dark glass
        ferrule_level = _uniform(rng, r["dark_ferrule"])
        cladding_level = ferrule_level * _uniform(rng, r["dark_glass_ratio"])
        core_level = min(cladding_level * (_uniform(rng, (0.85, 0.95)) if rng.random() < 0.6
                                           else _uniform(rng, (1.15, 2.0))), 0.95)
    vignette = (_uniform(rng, r["strong_vignette"]) if rng.random() < r["p_strong_vignette"]
                else _uniform(rng, r["vignette"]))
    ellipticity = _uniform(rng, (0.002, r["max_ellipticity"])) if rng.random() < r["p_ellipse"] else 0.0
    # epoxy ring: its level is this fraction below the darker of glass and ferrule, so
    # the glass edge stays visible as a step (it excludes the edge line and halo)
    epoxy = _uniform(rng, (0.35, 0.7)) if rng.random() < r["p_epoxy"] else 0.0
    core_offset_um = _uniform(rng, (0.0, r["max_core_offset_um"]))
    core_offset_angle = _uniform(rng, (0, 2 * np.pi))
    spec = {
        "width": int(width),
        "height": int(height),
        "closeup": bool(r["closeup"]),
        "um_per_px": um_per_px,
        "fiber_type": fiber_type,
        "cladding_um": cladding_um,
        "core_um": float(ft["core_um"]),
        "zones_um": {k: [float(v[0]), float(v[1])] for k, v in ft["zones_um"].items()},
        "center_x": float(center_x),
        "center_y": float(center_y),
        "ellipticity": ellipticity,
        "ellipse_angle_deg": _uniform(rng, (0, 180)),
        "core_dx_um": core_offset_um * float(np.cos(core_offset_angle)),
        "core_dy_um": core_offset_um * float(np.sin(core_offset_angle)),
        "core_visible": core_visible,
        "core_edge_um": _uniform(rng, (0.3, 3.0)),
        "core_ring": _uniform(rng, (0.02, 0.06)) if core_visible and rng.random() < 0.4 else 0.0,
        "polarity": "bright" if bright else "dark",
        "ferrule_level": ferrule_level,
        "cladding_level": cladding_level,
        "core_level": core_level if core_visible else cladding_level,
        "edge_sigma_px": _uniform(rng, r["edge_sigma_px"]),
        "edge_halo": _uniform(rng, (0.03, 0.12)) if not epoxy and rng.random() < r["p_halo"] else 0.0,
        "edge_line": _uniform(rng, (0.3, 0.8))
        if not (bright or epoxy) and rng.random() < r["p_edge_line"] else 0.0,
        "edge_line_um": _uniform(rng, (0.5, 1.5)),
        "epoxy": epoxy,
        "epoxy_width_um": _uniform(rng, (1.0, 4.0)),
        "grain": _log_uniform(rng, *r["grain"]),
        "tilt_shadow": _uniform(rng, (0.3, 0.7)) if rng.random() < r["p_tilt"] else 0.0,
        "tilt_angle_deg": _uniform(rng, (0, 360)),
        "tilt_length_um": _uniform(rng, (3.0, 12.0)),
        "vignette": vignette,
        "vignette_dx": _uniform(rng, (-0.3, 0.3)) * width,
        "vignette_dy": _uniform(rng, (-0.3, 0.3)) * height,
        "blur_px": _uniform(rng, r["blur_px"]),
        "noise": _log_uniform(rng, *r["noise"]),
        "jpeg_quality": int(rng.integers(r["jpeg_quality"][0], r["jpeg_quality"][1] + 1))
        if rng.random() < r["p_jpeg"] else 0,
        "frame_px": _random_frame(rng, r["p_frame"], width, height, center_x, center_y, margin),
    }
    spec["defects"] = [] if rng.random() < r["p_clean"] else _random_defects(rng, spec, r)
    return spec


def _random_frame(rng, p, width, height, cx, cy, margin) -> list[int]:
    """Widths (px) of a dark field-stop band at the left, top, right and bottom sides,
    never reaching the fiber."""
    frame = [0, 0, 0, 0]
    if rng.random() < p:
        room = [cx - margin, cy - margin, width - 1 - cx - margin, height - 1 - cy - margin]
        for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False):
            frame[side] = int(min(_uniform(rng, (0.005, 0.03)) * width, max(room[side] - 8, 0)))
    return frame


def _random_defects(rng, spec, r) -> list[dict]:
    """Draw defects: type, position (px) and sizes (µm), avoiding blob overlaps."""
    types = list(r["type_weights"])
    weights = np.array([r["type_weights"][t] for t in types], float)
    n = int(rng.integers(r["n_defects"][0], r["n_defects"][1] + 1))
    upp = spec["um_per_px"]
    cx, cy, w, h = spec["center_x"], spec["center_y"], spec["width"], spec["height"]
    clad_r_um = spec["cladding_um"] / 2
    contact_r_um = max(v[1] for v in spec["zones_um"].values()) / 2
    placed: list[tuple[float, float, float]] = []  # blob centre (px) and radius (px)
    defects = []
    for _ in range(20 * n):
        if len(defects) == n:
            break
        kind = types[rng.choice(len(types), p=weights / weights.sum())]
        d = {"type": kind, "angle_deg": _uniform(rng, (0, 180))}
        if kind == "scratch":
            d["width_um"] = _log_uniform(rng, 0.5, 4.0)
            d["length_um"] = _uniform(rng, (25.0, 2.2 * clad_r_um + 60))
            d["bend"] = _uniform(rng, (-0.12, 0.12))  # sagitta / length
            d["polarity"] = "bright" if rng.random() < 0.4 else "dark"
            d["relief"] = bool(rng.random() < 0.3)  # shaded groove: dark and bright sides
            d["bead_um"] = _uniform(rng, (2.0, 6.0)) if rng.random() < 0.25 else 0.0
            d["contrast"] = _uniform(rng, (0.25, 0.6))
            rad_um = _uniform(rng, (0.0, contact_r_um))
        elif kind == "chip":
            d["size_um"] = _uniform(rng, (3.0, 18.0))
            d["irregularity"] = _uniform(rng, (0.05, 0.25))
            d["aspect"] = _uniform(rng, (1.0, 2.0))
            d["polarity"] = "dark"
            d["contrast"] = _uniform(rng, (0.45, 0.8))
            rad_um = clad_r_um + _uniform(rng, (-0.35, 0.05)) * d["size_um"]
        else:
            size_lo, size_hi, irr, asp, soft, contrast, p_bright = {
                "pit": (2.0, 10.0, (0.0, 0.12), (1.0, 1.4), (0.0, 0.0), (0.4, 0.8), 0.0),
                "dig": (5.0, 25.0, (0.12, 0.35), (1.0, 2.2), (0.0, 0.0), (0.4, 0.8), 0.0),
                "dust": (2.0, 40.0, (0.15, 0.45), (1.0, 3.0), (0.0, 0.0), (0.25, 0.7), 0.4),
                "oil": (20.0, 80.0, (0.05, 0.25), (1.0, 2.0), (2.0, 6.0), (0.12, 0.25), 0.3),
            }[kind]
            d["size_um"] = _log_uniform(rng, size_lo, size_hi)
            if kind == "dust" and rng.random() < r["p_lint"]:  # a fibre of lint: a thick curl
                d["width_um"] = _uniform(rng, (1.5, 5.0))
                d["length_um"] = _uniform(rng, (15.0, 35.0))  # size (with width) <= 40 µm
                d["bend"] = _uniform(rng, (-0.35, 0.35))
                d["wiggle"] = _uniform(rng, (0.01, 0.05))
                d["wiggle_cycles"] = _uniform(rng, (0.5, 1.5))
                d["wiggle_phase"] = _uniform(rng, (0, 2 * np.pi))
                d["size_um"] = d["length_um"]
            d["irregularity"] = _uniform(rng, irr)
            d["aspect"] = _uniform(rng, asp)
            d["softness_um"] = _uniform(rng, soft) if soft[1] > 0 else 0.0
            d["polarity"] = "bright" if rng.random() < p_bright else "dark"
            d["contrast"] = _uniform(rng, contrast)
            d["rim"] = _uniform(rng, (0.1, 0.35)) if kind in ("pit", "dig") and rng.random() < 0.5 else 0.0
            # on the glass, on the ferrule (contact zone and beyond) or, for dust, caught
            # at the fiber edge where debris gathers
            if kind == "dust" and rng.random() < r["p_dust_at_edge"]:
                rad_um = clad_r_um + _uniform(rng, (-0.3, 0.5)) * d["size_um"]
            elif rng.random() < 0.5:
                rad_um = _uniform(rng, (0.0, clad_r_um - 0.3 * d["size_um"]))
            else:
                rad_um = _uniform(rng, (clad_r_um + 0.5 * d["size_um"] + 3, 1.4 * contact_r_um))
        phi = _uniform(rng, (0, 2 * np.pi))
        x = cx + rad_um / upp * np.cos(phi)
        y = cy + rad_um / upp * np.sin(phi)
        if spec["closeup"] and kind != "chip":  # anywhere in view
            x, y = rng.uniform(0, w), rng.uniform(0, h)
        if not (0 <= x < w and 0 <= y < h):
            continue
        if kind != "scratch":
            blob_r = 0.5 * d["size_um"] / upp + 2
            if any(np.hypot(x - px, y - py) < blob_r + pr for px, py, pr in placed):
                continue
            placed.append((x, y, blob_r))
        d["x"], d["y"] = float(x), float(y)
        defects.append(d)
    return defects


def _grain(rng, shape, um_per_px, amplitude):
    """Zero-mean ceramic grain of standard deviation ``amplitude``: band-limited noise
    at ~0.7 µm (grains) and ~4 µm (polish unevenness) scales."""
    out = np.zeros(shape, np.float32)
    for scale_um, weight in ((0.7, 0.9), (4.0, 0.15)):
        n = rng.standard_normal(shape, dtype=np.float32)
        n = cv2.GaussianBlur(n, (0, 0), max(scale_um / um_per_px, 0.5))
        out += weight * n / (n.std() + 1e-12)
    return out * (amplitude / np.hypot(0.9, 0.15))


def _ellipse_distance(dx, dy, a, b, angle_rad):
    """First-order signed distance (px) to an ellipse boundary (negative inside)."""
    if a == b:  # a circle: exact and cheap
        return np.hypot(dx, dy) - np.float32(a)
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    u = dx * c + dy * s
    v = -dx * s + dy * c
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    grad = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) / np.maximum(rho, 1e-9)
    return (rho - 1.0) / np.maximum(grad, 1e-9)


def _blob_polygon(rng, d, um_per_px, n_vertices=64):
    """Outline (N x 2, px) of a star-shaped irregular blob from a defect spec."""
    phi = np.linspace(0, 2 * np.pi, n_vertices, endpoint=False)
    radius = np.ones_like(phi)
    for k in range(2, 7):
        amplitude = d["irregularity"] / k**0.7 * rng.uniform(-1, 1)
        radius += amplitude * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    radius = np.clip(radius, 0.35, None)
    r0 = d["size_um"] / 2 / um_per_px
    x = r0 * radius * np.cos(phi) * np.sqrt(d["aspect"])
    y = r0 * radius * np.sin(phi) / np.sqrt(d["aspect"])
    t = np.deg2rad(d["angle_deg"])
    pts = np.stack([x * np.cos(t) - y * np.sin(t), x * np.sin(t) + y * np.cos(t)], 1)
    # scale so that the largest dimension is exactly size_um
    span = _feret(pts)[0]
    return pts * (2 * r0 / span) + [d["x"], d["y"]]


def _feret(pts):
    """(max, min) caliper widths of a point set (px)."""
    t = np.deg2rad(np.arange(0, 180, 1.0))
    proj = pts @ np.stack([np.cos(t), np.sin(t)])
    extent = proj.max(0) - proj.min(0)
    return float(extent.max()), float(extent.min())


def _scratch_path(d, um_per_px, n=40):
    """Centre line (N x 2, px) of a straight or slightly bent scratch, or of a lint fibre."""
    length = d["length_um"] / um_per_px
    s = np.linspace(-0.5, 0.5, n)
    x = s * length
    y = d["bend"] * length * (1 - 4 * s**2)
    if d.get("wiggle"):  # lint curls irregularly
        y = y + d["wiggle"] * length * np.sin(2 * np.pi * d["wiggle_cycles"] * s + d["wiggle_phase"])
    t = np.deg2rad(d["angle_deg"])
    return np.stack([x * np.cos(t) - y * np.sin(t) + d["x"], x * np.sin(t) + y * np.cos(t) + d["y"]], 1)


def _polyline_distance(path, xs, ys):
    """Distance (px) from points to a polyline, the position along it and the side.

    Returns (distance, arc position in [0, 1] by segment, side) with side +1 left of
    the path, -1 right.
    """
    p = np.stack([xs, ys], -1)[:, None, :]
    a, b = path[None, :-1], path[None, 1:]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0, 1)
    dist = np.sqrt(((a + t[..., None] * ab - p) ** 2).sum(-1))
    seg = dist.argmin(1)
    rows = np.arange(len(seg))
    ap = p[:, 0] - a[0, seg]
    cross = ab[0, seg, 0] * ap[:, 1] - ab[0, seg, 1] * ap[:, 0]
    pos = (seg + t[rows, seg]) / (path.shape[0] - 1)
    return dist[rows, seg], pos, np.where(cross >= 0, 1.0, -1.0)


def _defect_coverage(rng, d, spec, shape):
    """Coverage (float, 0..1), mask and bbox offset of one defect, plus its outline sizes.

    Returns (alpha, mask, (x0, y0), (size_um, length_um, width_um)) with alpha/mask
    cropped to the image, or None when the defect falls outside the image. For line
    shapes (scratches, fibrous dust) length is along the curve, size the largest
    dimension; for blobs length = size = the largest and width the smallest caliper.
    """
    upp = spec["um_per_px"]
    h, w = shape
    if "bend" in d:  # a line: scratch or fibrous dust
        path = _scratch_path(d, upp)
        half = d["width_um"] / upp / 2
        pad = half + 3
        x0, y0 = int(np.floor(path[:, 0].min() - pad)), int(np.floor(path[:, 1].min() - pad))
        x1, y1 = int(np.ceil(path[:, 0].max() + pad)), int(np.ceil(path[:, 1].max() + pad))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
        if x1 < x0 or y1 < y0:
            return None
        # candidate pixels: a rasterised fat line, then exact distances
        band = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
        cv2.polylines(band, [np.round(path - [x0, y0]).astype(np.int32)], False, 1,
                      thickness=int(2 * pad) + 1)
        ys, xs = np.nonzero(band)
        dist, pos, side = _polyline_distance(path, xs + x0, ys + y0)
        alpha = np.zeros(band.shape, np.float32)
        mask = np.zeros(band.shape, bool)
        # box-filtered line of width 2*half: coverage of a pixel by the line
        alpha[ys, xs] = np.clip(half + 0.5 - dist, 0, min(1.0, 2 * half))
        mask[ys, xs] = dist <= max(half, 0.5)
        # contrast fades along the scratch (polish lines are rarely uniform); beaded
        # scratches break up into dots and dashes every few µm, as in the close-ups
        fade = 0.6 + 0.4 * np.sin(pos * np.pi * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        if d["type"] != "scratch":  # lint: a uniform particle
            fade = np.ones_like(pos)
        if d.get("bead_um"):
            knots = np.clip(0.3 + 0.9 * rng.standard_normal(int(d["length_um"] / d["bead_um"]) + 2), 0.15, 1)
            fade *= np.interp(pos * (len(knots) - 1), np.arange(len(knots)), knots)
        alpha[ys, xs] *= fade * (side if d.get("relief") else 1.0)
        arc_um = float(np.hypot(*np.diff(path, axis=0).T).sum()) * upp
        return alpha, mask, (x0, y0), (_feret(path)[0] * upp + d["width_um"], arc_um, d["width_um"])
    pts = _blob_polygon(rng, d, upp)
    if d["type"] == "chip":  # keep the part on the glass: project outside points onto the edge
        c = np.array([spec["center_x"], spec["center_y"]])
        rv = pts - c
        rr = np.hypot(rv[:, 0], rv[:, 1])
        r_edge = spec["cladding_um"] / 2 / upp
        pts = np.where((rr > r_edge)[:, None], c + rv * (r_edge / np.maximum(rr, 1e-9))[:, None], pts)
    soft = d.get("softness_um", 0.0) / upp
    rim_px = max(0.8 / upp, 1.0)
    pad = int(np.ceil(3 * max(soft, rim_px) + 3))
    x0, y0 = int(np.floor(pts[:, 0].min())) - pad, int(np.floor(pts[:, 1].min())) - pad
    x1, y1 = int(np.ceil(pts[:, 0].max())) + pad, int(np.ceil(pts[:, 1].max())) + pad
    # coverage = share of 8x8 sub-pixels inside the outline: cv2.fillPoly fills every
    # pixel its outline touches (antialiased or not), which grows a shape by ~0.5 px all
    # round (a 10 px radius disc by 13 % in area), here by 1/16 px
    ss, shift = 8, 4  # supersampling; sub-pixel vertex precision of cv2.fillPoly
    canvas = np.zeros(((y1 - y0 + 1) * ss, (x1 - x0 + 1) * ss), np.uint8)
    fine = (pts - [x0, y0] + 0.5) * ss - 0.5  # pixel-centre coordinates on the fine grid
    cv2.fillPoly(canvas, [np.round(fine * 2**shift).astype(np.int32)], 1, shift=shift)
    cover = cv2.resize(canvas.astype(np.float32), (x1 - x0 + 1, y1 - y0 + 1),
                       interpolation=cv2.INTER_AREA)
    mask = cover >= 0.5
    alpha = cv2.GaussianBlur(cover, (0, 0), soft) if soft > 0 else cover
    if d["type"] in ("dig", "dust"):  # rough interior: uneven depth / particle texture
        tex = cv2.GaussianBlur(rng.standard_normal(cover.shape, dtype=np.float32), (0, 0), 1.0)
        alpha = alpha * np.clip(1 + 0.15 * tex / (tex.std() + 1e-9), 0.5, 1.2)
    if d.get("rim"):  # bright diffraction ring just outside a pit (negative alpha brightens)
        halo = np.clip(cv2.GaussianBlur(cover, (0, 0), rim_px) - cover, 0, None)
        alpha = alpha - d["rim"] / d["contrast"] * halo / max(halo.max(), 1e-6)
    # crop to the image
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if cx1 < cx0 or cy1 < cy0:
        return None
    sl = np.s_[cy0 - y0:cy1 - y0 + 1, cx0 - x0:cx1 - x0 + 1]
    length_px, width_px = _feret(pts)
    return alpha[sl], mask[sl], (cx0, cy0), (length_px * upp, length_px * upp, width_px * upp)


def render(spec: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Draw an end-face image from a scene spec.

    Parameters
    ----------
    spec : dict
        A scene description from :func:`random_spec` (may be edited by hand).
    rng : numpy.random.Generator
        Source of texture, defect outlines and noise (same state -> same image).

    Returns
    -------
    image : ndarray, uint8, (height, width)
        The gray image as a scope would save it (JPEG round trip when
        ``spec["jpeg_quality"]`` > 0; its bytes are in ``truth["jpeg_bytes"]``).
    truth : dict
        Geometry with the keys of ``zones.measure_geometry`` (pixel-centre coordinates:
        pixel (x, y) covers [x-0.5, x+0.5]), plus ``fiber_type``, ``polarity``,
        ``instance_map`` (uint16, 0 none, 1..n), ``zone_map`` (uint8 ``zones.ZONE_IDS``;
        contact and ferrule pixels under the field stop are 0, as ``zones.field_of_view``
        makes them),
        ``defects`` (list of dicts: number, type, class_name, area_px, bbox_x/y/w/h,
        centroid_x/y, size_um = largest dimension, length_um (along the curve for
        lines, else = size_um), width_um (a line's width, else the smallest caliper
        width), zone (id holding most of the area), zones_touched (ids as ``"2,3"``,
        like ``defects.detect_defects``), innermost_zone (id), polarity, shape (line:
        scratches and lint; blob), contrast and visibility (see ``_defect_table``)),
        ``is_clean`` and ``jpeg_bytes``. Sizes are those of the drawn outline, in µm,
        not of the pixel mask.

    Notes
    -----
    A defect's mask holds the pixels whose centre lies inside its outline (antialiased
    coverage >= 0.5); a line's mask holds the pixels within half its width of the
    centre line, and at least those within 0.5 px, so sub-pixel scratches stay
    connected. Scratches are drawn first and the other defects on top, so a blob may
    cut a scratch's mask. Pit rims and relief shading change pixels just outside a
    mask. The true cladding edge is the 50 % point of the glass/outside step (the
    epoxy ring, when present, starts there).
    """
    h, w = spec["height"], spec["width"]
    upp = spec["um_per_px"]
    cx, cy = spec["center_x"], spec["center_y"]
    radius = spec["cladding_um"] / 2 / upp
    e = spec["ellipticity"]
    a = radius / np.sqrt(1 - e)  # semi-axes: equal-area radius sqrt(a b), b / a = 1 - e
    b = radius * np.sqrt(1 - e)
    theta = np.deg2rad(spec["ellipse_angle_deg"])
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    dx, dy = xs - np.float32(cx), ys - np.float32(cy)
    dist = _ellipse_distance(dx, dy, a, b, theta).astype(np.float32)  # px, < 0 on the glass
    inside = (0.5 * erfc(dist / (np.sqrt(2) * spec["edge_sigma_px"]))).astype(np.float32)

    core_cx = cx + spec["core_dx_um"] / upp
    core_cy = cy + spec["core_dy_um"] / upp
    core_r = spec["core_um"] / 2 / upp
    scene = _reflectance(spec, rng, xs, ys, dist, inside, (core_cx, core_cy, core_r))

    # defects, painted into the reflectance: scratches first, the others on top
    instance = np.zeros((h, w), np.uint16)
    sizes = {}
    clean = scene.copy()
    order = sorted(enumerate(spec["defects"], 1), key=lambda nd: nd[1]["type"] != "scratch")
    for number, d in order:
        cov = _defect_coverage(rng, d, spec, (h, w))
        if cov is None:
            continue
        alpha, mask, (x0, y0), dims = cov
        sl = np.s_[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
        k = d["contrast"]
        if d["type"] == "scratch":  # sub-pixel scratches scatter: keep them visible
            k = min(k / min(1.0, d["width_um"] / upp), 0.85)
        if d["polarity"] == "dark":  # negative alpha (relief side, pit rim) brightens
            scene[sl] = scene[sl] * (1 - k * alpha)
        else:
            scene[sl] = scene[sl] + k * alpha * (1 - scene[sl])
        instance[sl][mask] = number
        sizes[number] = dims

    # illumination, optics, sensor
    light = _illumination(spec, xs, ys, dx, dy, dist, inside)
    img = _optics(scene * light, spec["blur_px"])
    effect = img - _optics(clean * light, spec["blur_px"])  # what the defects changed
    # shot + read noise, plus the 8-bit quantisation floor
    sigma = spec["noise"] * np.sqrt(np.clip(img, 0, None) / 0.5 + 0.25)
    img = img + rng.standard_normal((h, w), dtype=np.float32) * sigma
    sigma = np.sqrt(sigma**2 + 1 / (12 * 255**2))
    image = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    jpeg_bytes = None
    if spec["jpeg_quality"]:
        _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, spec["jpeg_quality"]])
        jpeg_bytes = buf.tobytes()
        image = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)

    true_geometry = {"center_x": cx, "center_y": cy, "cladding_ellipticity": e,
                     "cladding_angle_deg": spec["ellipse_angle_deg"]}
    # defects are measured against the geometric zones; the zone map follows the
    # pipeline's rule: contact and ferrule pixels under the dark field stop are outside
    # the analysed area (0)
    instance, defects = _defect_table(
        instance, zones.zone_label_map((h, w), true_geometry, spec["zones_um"], upp),
        effect, sigma, spec, sizes)
    left, top, right, bottom = spec["frame_px"]
    lit = np.ones((h, w), bool)
    lit[:, :left], lit[:top], lit[:, w - right:], lit[h - bottom:] = False, False, False, False
    zone_map = zones.zone_label_map((h, w), true_geometry, spec["zones_um"], upp, field=lit)
    core_offset_px = float(np.hypot(core_cx - cx, core_cy - cy))
    truth = {
        "center_x": float(cx),
        "center_y": float(cy),
        "cladding_radius_px": float(radius),
        "cladding_ellipticity": float(e),
        "cladding_angle_deg": float(spec["ellipse_angle_deg"]) if e else 0.0,
        "core_center_x": float(core_cx),
        "core_center_y": float(core_cy),
        "core_radius_px": float(core_r),
        "core_visible": bool(spec["core_visible"]),
        "core_offset_px": core_offset_px,
        "core_offset_um": core_offset_px * upp,
        "um_per_px": float(upp),
        "fiber_type": spec["fiber_type"],
        "polarity": spec["polarity"],
        "width": w,
        "height": h,
        "instance_map": instance,
        "zone_map": zone_map,
        "defects": defects,
        "is_clean": not defects,
        "jpeg_bytes": jpeg_bytes,
    }
    return image, truth


def _reflectance(spec, rng, xs, ys, dist, inside, core):
    """Reflectance of the clean end face: grained ferrule, glass disc, core, edge
    line, epoxy ring and halo. ``dist`` is the signed distance to the cladding edge
    (px, < 0 on the glass), ``inside`` the glass coverage, ``core`` (cx, cy, r) px."""
    h, w = dist.shape
    upp = spec["um_per_px"]
    ferrule = spec["ferrule_level"] * (1 + _grain(rng, (h, w), upp, spec["grain"]))
    glass = np.float32(spec["cladding_level"])
    if spec["core_visible"]:
        core_d = np.hypot(xs - np.float32(core[0]), ys - np.float32(core[1])) - np.float32(core[2])
        core_in = 0.5 * erfc(core_d / (np.sqrt(2) * max(spec["core_edge_um"] / upp, 0.4)))
        glass = glass + (spec["core_level"] - spec["cladding_level"]) * core_in
        if spec["core_ring"]:
            glass = glass + spec["core_ring"] * np.exp(-0.5 * (core_d * upp / 0.8) ** 2)
    if spec["edge_line"]:  # dark line along the inner side of the edge (coaxial scopes)
        near = 0.5 * erfc((-dist - spec["edge_line_um"] / upp) / (np.sqrt(2) * 0.6))
        glass = glass * (1 - spec["edge_line"] * near)
    if spec["epoxy"]:  # thin, dark, rough epoxy ring from the glass edge outward
        band = 0.5 * erfc((dist - spec["epoxy_width_um"] / upp) / (np.sqrt(2) * spec["edge_sigma_px"]))
        level = min(spec["cladding_level"], spec["ferrule_level"]) * (1 - spec["epoxy"])
        ferrule = ferrule + band * (level * (1 + _grain(rng, (h, w), upp, 0.3)) - ferrule)
    scene = ferrule * (1 - inside) + glass * inside
    if spec["edge_halo"]:  # diffraction-like dark/bright pair straddling the edge
        wpx = max(0.7 / upp, 1.0)
        g = (dist / wpx) * np.exp(0.5 - 0.5 * (dist / wpx) ** 2)
        sign = 1.0 if spec["ferrule_level"] > spec["cladding_level"] else -1.0
        scene = scene + sign * spec["edge_halo"] * spec["ferrule_level"] * g
    return scene


def _illumination(spec, xs, ys, dx, dy, dist, inside):
    """Relative illumination: vignetting, tilted-probe shading next to the fiber edge
    and a dark field stop along some image sides."""
    h, w = dist.shape
    vx, vy = (w - 1) / 2 + spec["vignette_dx"], (h - 1) / 2 + spec["vignette_dy"]
    light = 1 - spec["vignette"] * ((xs - vx) ** 2 + (ys - vy) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    if spec["tilt_shadow"]:
        phi = np.arctan2(dy, dx) - np.deg2rad(spec["tilt_angle_deg"])
        # the ferrule next to the edge is shaded on one side, lit on the other
        side = np.where(np.cos(phi) > 0, np.cos(phi), 0.5 * np.cos(phi))
        reach = np.exp(-np.clip(dist, 0, None) * spec["um_per_px"] / spec["tilt_length_um"])
        light = light * (1 - spec["tilt_shadow"] * side * reach * (1 - inside))
    left, top, right, bottom = spec["frame_px"]
    for sl in (np.s_[:, :left], np.s_[:top, :], np.s_[:, w - right:], np.s_[h - bottom:, :]):
        light[sl] = 0.06  # field stop (empty slices when the width is 0)
    return np.clip(light, 0.05, None)


def _optics(img, blur_px):
    """Lens blur (Gaussian point spread function, sigma in px)."""
    return cv2.GaussianBlur(img, (0, 0), blur_px) if blur_px > 0.05 else img


def round_field_stop(image, center, radius, black=0.03, blur_px=2.0):
    """``image`` (float, 2-D) seen through a scope's round field stop centered at
    ``center`` (x, y): ``black`` beyond ``radius`` px, the edge blurred ``blur_px``.
    Returns the image and the lit fraction of each pixel."""
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    inside = np.hypot(xx - center[0], yy - center[1]) < radius
    lit = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), blur_px)
    return image * lit + black * (1 - lit), lit


def _defect_table(instance, zone_map, effect, sigma, spec, sizes):
    """Renumber visible defects 1..n and measure each against the true zones.

    ``effect`` is the noiseless image minus the same image without defects and
    ``sigma`` the per-pixel noise, both in [0, 1] gray units: ``contrast`` is the mean
    effect over the mask (signed) and ``visibility`` its mean absolute value over the
    mean noise (a per-pixel SNR; relief scratches have contrast ~0 but are visible).
    """
    boxes = ndimage.find_objects(instance)
    numbers = [n for n in sorted(sizes) if n <= len(boxes) and boxes[n - 1] is not None]
    lut = np.zeros(len(spec["defects"]) + 1, np.uint16)
    lut[numbers] = np.arange(1, len(numbers) + 1)
    instance = lut[instance]
    defects = []
    for new, old in enumerate(numbers, 1):
        d = spec["defects"][old - 1]
        box = boxes[old - 1]
        ys, xs = np.nonzero(instance[box] == new)
        ys, xs = ys + box[0].start, xs + box[1].start
        counts = np.bincount(zone_map[ys, xs], minlength=len(zones.ZONE_IDS))
        touched = np.nonzero(counts)[0]
        size_um, length_um, width_um = sizes[old]
        change = effect[ys, xs]
        defects.append({
            "number": new,
            "type": d["type"],
            "class_name": DEFECT_CLASS[d["type"]],
            "area_px": int(len(xs)),
            "bbox_x": int(xs.min()),
            "bbox_y": int(ys.min()),
            "bbox_w": int(xs.max() - xs.min() + 1),
            "bbox_h": int(ys.max() - ys.min() + 1),
            "centroid_x": float(xs.mean()),
            "centroid_y": float(ys.mean()),
            "size_um": float(size_um),
            "length_um": float(length_um),
            "width_um": float(width_um),
            "zone": int(np.argmax(counts)),
            "zones_touched": ",".join(str(int(z)) for z in touched),
            "innermost_zone": int(touched[0]),
            "polarity": d["polarity"],
            "shape": "line" if "bend" in d else "blob",
            "contrast": float(change.mean()),
            "visibility": float(np.abs(change).mean() / sigma[ys, xs].mean()),
        })
    return instance, defects


GEOMETRY_KEYS = ("center_x", "center_y", "cladding_radius_px", "cladding_ellipticity",
                 "cladding_angle_deg", "core_center_x", "core_center_y", "core_radius_px",
                 "core_visible", "core_offset_px", "core_offset_um", "um_per_px",
                 "fiber_type", "polarity", "width", "height")
DEFECT_COLUMNS = ("number", "type", "class_name", "area_px", "bbox_x", "bbox_y", "bbox_w",
                  "bbox_h", "centroid_x", "centroid_y", "size_um", "length_um", "width_um",
                  "zone", "zones_touched", "innermost_zone", "polarity", "shape", "contrast", "visibility")
KNOB_KEYS = ("closeup", "ellipticity", "core_edge_um", "edge_sigma_px", "edge_halo", "edge_line",
             "epoxy", "grain", "tilt_shadow", "vignette", "blur_px", "noise", "jpeg_quality",
             "ferrule_level", "cladding_level", "core_level")


def write_dataset(out_dir, n: int, seed: int, fiber_types: dict, criteria: dict | None = None,
                  preset: str = "bench", **ranges) -> pd.DataFrame:
    """Render ``n`` images with truth into ``out_dir``.

    Writes ``images/<id>.png`` (``.jpg`` for JPEG samples), ``truth/images.parquet``
    (one row per image: geometry, fiber type, is_clean, knobs, and with ``criteria``
    the IEC verdict ``iec_pass`` / ``iec_failures`` of the true defects),
    ``truth/defects.parquet`` (one row per defect with ``image_id`` and ``defect_id``),
    ``truth/instance_masks/<id>.png`` (uint16) and ``truth/zone_masks/<id>.png``
    (uint8 zone ids). Image ``i`` depends only on ``(seed, i)``, the preset and the
    ranges, so a larger ``n`` extends a smaller set.

    Parameters
    ----------
    out_dir : path
        Output folder (created).
    n, seed : int
        Number of images and random seed.
    fiber_types : dict
        The config's fiber catalog.
    criteria : dict, optional
        The config's ``criteria`` section; each image is graded by
        ``grading.grade_image`` with the entry its fiber type names.
    preset : str
        Key of ``PRESETS``.
    **ranges
        Overrides of the preset's ranges (see ``DEFAULT_RANGES``).

    Returns
    -------
    pandas.DataFrame
        The images table.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {sorted(PRESETS)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out = Path(out_dir)
    rows, tables = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        spec = random_spec(rng, fiber_types, **{**PRESETS[preset], **ranges})
        image, truth = render(spec, rng)
        image_id = f"synth_{i:04d}"
        jpeg = truth["jpeg_bytes"] is not None
        name, twin = (f"{image_id}.{ext}" for ext in (("jpg", "png") if jpeg else ("png", "jpg")))
        # a rerun with other ranges may switch the format: never leave both (same image id)
        (out / "images" / twin).unlink(missing_ok=True)
        if jpeg:
            write_bytes(out / "images" / name, truth["jpeg_bytes"])
        else:
            write_png(out / "images" / name, image)
        write_png(out / "truth/instance_masks" / f"{image_id}.png", truth["instance_map"])
        write_png(out / "truth/zone_masks" / f"{image_id}.png", truth["zone_map"])
        table = pd.DataFrame(truth["defects"], columns=DEFECT_COLUMNS)
        row = {"image_id": image_id, "file": f"images/{name}", "preset": preset,
               **{k: truth[k] for k in GEOMETRY_KEYS}, "is_clean": truth["is_clean"],
               "n_defects": len(table), **{k: spec[k] for k in KNOB_KEYS}}
        if criteria is not None:
            verdict = grading.grade_image(table, criteria[fiber_types[spec["fiber_type"]]["criteria"]])
            row["iec_pass"] = verdict["pass_fail"] == "pass"
            row["iec_failures"] = "; ".join(verdict["failures"])
        rows.append(row)
        table.insert(0, "defect_id", [f"{image_id}#{k}" for k in table["number"]])
        table.insert(0, "image_id", image_id)
        tables.append(table)
    images = pd.DataFrame(rows)
    write_parquet(images, out / "truth/images.parquet")
    write_parquet(pd.concat(tables, ignore_index=True), out / "truth/defects.parquet")
    return images


def main(argv=None) -> int:
    """Command line: ``python -m fiberprep.synth --out DIR --n N --seed S``."""
    p = argparse.ArgumentParser(prog="python -m fiberprep.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder (images/ and truth/ inside)")
    p.add_argument("--n", type=int, default=20, help="number of images")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--width", type=int, help="fixed image width (needs --height)")
    p.add_argument("--height", type=int, help="fixed image height (needs --width)")
    p.add_argument("--preset", default="bench", choices=sorted(PRESETS), help="range set")
    p.add_argument("--config", default="config/config.yaml", help="config with the fiber_types catalog")
    args = p.parse_args(argv)
    if (args.width is None) != (args.height is None):
        p.error("--width and --height go together")
    cfg_path = Path(args.config)
    if not cfg_path.is_file():
        p.error(f"config file {cfg_path} not found (pass --config path/to/config.yaml)")
    config = yaml.safe_load(cfg_path.read_text())
    ranges = {"width": args.width, "height": args.height} if args.width else {}
    images = write_dataset(args.out, args.n, args.seed, config["fiber_types"], config.get("criteria"),
                           preset=args.preset, **ranges)
    print(f"wrote {len(images)} images ({int((~images.is_clean).sum())} with defects) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
