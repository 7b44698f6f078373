"""An end-face renderer independent of ``fiberprep.synth``, for benchmarks.

Our own generator's assumptions (edge, light, noise and defect models) are also the ones
the detector was tuned against; this second renderer was written separately from
DOMAIN.md, CONTRACT.md and the real photos, so that ``bench_labels.py --renderer
independent`` shows what a user's images of another kind would score.

Scene in physical µm (non-square pixels make every structure an ellipse): ferrule grain,
glass (cladding, optional core), bevel rim, epoxy ring, bright halo; defects composited
on the reflectance map from coverage rendered 8x8 supersampled (area average, pixel-centre
convention); then optics blur, illumination, Poisson-Gaussian noise, 8/16 bit, RGB tint,
JPEG. Truth in the layout of :func:`fiberprep.synth.write_dataset`:
truth/images.parquet, truth/defects.parquet, truth/zone_masks/<id>.png (uint8),
truth/instance_masks/<id>.png (uint16).
"""
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fiberprep import grading
from fiberprep import io as fio

TYPES = ["sm_pc", "mm_50", "mm_62_5", "mm_105_125", "mm_100_140"]
SIZES = [(640, 480), (800, 600), (1024, 768), (1280, 960), (1920, 1080), (720, 576)]
SS = 4          # fiber supersampling
DSS = 8         # defect supersampling
ZONE_ORDER = ["core", "cladding", "adhesive", "contact"]
CLASS = {"scratch": "scratch", "pit": "pit_dig", "dig": "pit_dig", "dust": "contamination",
         "fibre": "contamination", "oil": "contamination", "chip": "chip"}


def smooth_noise(rng, shape, scale_px):
    """Unit-variance Gaussian noise smoothed over ``scale_px``."""
    n = rng.standard_normal(shape).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), max(scale_px, 0.3))
    return n / max(float(n.std()), 1e-6)


# ----------------------------------------------------------------------------- scene
def scene_spec(rng, i, cfg):
    """Random scene of image ``i``: size, fiber type (zones, criteria), scale, levels, light,
    optics and sensor."""
    w, h = SIZES[i % len(SIZES)] if rng.random() < 0.5 else SIZES[rng.integers(len(SIZES))]
    tname = TYPES[rng.integers(len(TYPES))]
    ft = cfg["fiber_types"][tname]
    core_um, clad_um = ft["core_um"], ft["cladding_um"]
    aspect = 1.0 / (1.0 - rng.uniform(0.06, 0.10)) if (w, h) == (720, 576) else 1.0
    lo = max(0.25, (clad_um + 10) / (0.85 * w), (clad_um + 10) * aspect / (0.85 * h))
    upp_x = rng.uniform(min(lo, 0.8), 0.8) if lo < 0.8 else lo
    upp_y = upp_x / aspect
    rx, ry = 0.5 * clad_um / upp_x, 0.5 * clad_um / upp_y
    mx, my = rx + 6 / upp_x, ry + 6 / upp_y
    cx = np.clip(0.5 * (w - 1) + rng.uniform(-0.2, 0.2) * w, mx, w - 1 - mx)
    cy = np.clip(0.5 * (h - 1) + rng.uniform(-0.2, 0.2) * h, my, h - 1 - my)
    polarity = "dark" if rng.random() < 0.6 else "bright"
    if polarity == "dark":
        ferrule = rng.uniform(0.45, 0.9)
        glass = ferrule * rng.uniform(0.2, 0.75)
    else:
        ferrule = rng.uniform(0.08, 0.4)
        glass = min(0.95, ferrule * rng.uniform(1.4, 3.0))
    core_visible = rng.random() < (0.3 if core_um < 20 else 0.8)
    ang, off = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2.0)
    return {
        "w": w, "h": h, "fiber_type": tname, "zones_um": ft["zones_um"],
        "criteria": cfg["criteria"][ft["criteria"]], "core_um": core_um, "clad_um": clad_um,
        "upp_x": upp_x, "upp_y": upp_y, "cx": float(cx), "cy": float(cy),
        "polarity": polarity, "ferrule": ferrule, "glass": glass,
        "core_visible": bool(core_visible),
        "core_contrast": float(rng.choice([-1, 1]) * rng.uniform(0.04, 0.2)) if core_visible else 0.0,
        "core_dx_um": off * math.cos(ang), "core_dy_um": off * math.sin(ang),
        "illum": str(rng.choice(["coaxial", "ring"])),
        "rim_um": rng.uniform(0.8, 2.5), "rim_amp": rng.uniform(0.1, 0.4),
        "halo": float(rng.uniform(0.05, 0.25)) if polarity == "dark" and rng.random() < 0.6 else 0.0,
        "epoxy": bool(rng.random() < 0.5), "epoxy_um": rng.uniform(1.0, 5.0),
        "epoxy_level": rng.uniform(0.3, 1.4),
        "vignette": rng.uniform(0.0, 0.5) if rng.random() < 0.7 else rng.uniform(0.5, 0.8),
        "vig_cx": rng.uniform(0.2, 0.8), "vig_cy": rng.uniform(0.2, 0.8),
        "hotspot": float(rng.uniform(0.0, 0.5)) if rng.random() < 0.4 else 0.0,
        "blur_kind": str(rng.choice(["gauss", "disk"])),
        "blur_px": rng.uniform(0.3, 2.0),
        "full_well": float(np.exp(rng.uniform(np.log(1000), np.log(20000)))),
        "read_noise": rng.uniform(0.0, 0.006),
        "bits": 16 if rng.random() < 0.25 else 8,
        "rgb": bool(rng.random() < 0.3), "tint": rng.uniform(0.6, 1.0, 3).tolist(),
        "jpeg": int(rng.integers(50, 96)) if rng.random() < 0.4 else 0,
        "grain": rng.uniform(0.003, 0.015),
    }


def render_scene(s, rng):
    """Reflectance map (H, W) float32 before optics."""
    w, h, ux, uy = s["w"], s["h"], s["upp_x"], s["upp_y"]
    R = 0.5 * s["clad_um"]
    img = np.float32(s["ferrule"]) * (1 + s["grain"] * smooth_noise(rng, (h, w), 1.5 / ux))
    reach = R + s["epoxy_um"] + 4.0
    x0, x1 = max(0, int(s["cx"] - reach / ux) - 2), min(w, int(s["cx"] + reach / ux) + 3)
    y0, y1 = max(0, int(s["cy"] - reach / uy) - 2), min(h, int(s["cy"] + reach / uy) + 3)
    sx = ((np.arange((x1 - x0) * SS) + 0.5) / SS - 0.5 + x0 - s["cx"]) * ux
    sy = ((np.arange((y1 - y0) * SS) + 0.5) / SS - 0.5 + y0 - s["cy"]) * uy
    X, Y = np.meshgrid(sx.astype(np.float32), sy.astype(np.float32))
    d = np.sqrt(X * X + Y * Y)
    ref = cv2.resize(img[y0:y1, x0:x1], ((x1 - x0) * SS, (y1 - y0) * SS),
                     interpolation=cv2.INTER_NEAREST)
    if s["halo"]:
        ring = (d >= R) & (d < R + 1.5)
        ref[ring] *= 1 + s["halo"]
    if s["epoxy"]:
        ep = (d >= R) & (d < R + s["epoxy_um"])
        eg = cv2.resize(smooth_noise(rng, (y1 - y0, x1 - x0), 0.5 / ux), ref.shape[::-1])
        lvl = s["epoxy_level"] * min(s["glass"], s["ferrule"])
        ref[ep] = (lvl * (1 + 0.15 * eg))[ep]
    glass = np.full_like(d, s["glass"])
    if s["core_visible"]:
        dc = np.hypot(X - s["core_dx_um"], Y - s["core_dy_um"])
        glass[dc < 0.5 * s["core_um"]] *= 1 + s["core_contrast"]
    sign = 1.0 if s["illum"] == "ring" else -1.0
    glass[(d < R) & (d >= R - s["rim_um"])] *= 1 + sign * s["rim_amp"]
    inside = d < R
    ref[inside] = glass[inside]
    img[y0:y1, x0:x1] = cv2.resize(ref, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return img


def optics_and_sensor(img, s):
    """Optics blur (Gaussian or defocus disk) and illumination (vignetting, hot spot)."""
    w, h = s["w"], s["h"]
    if s["blur_kind"] == "gauss":
        img = cv2.GaussianBlur(img, (0, 0), s["blur_px"])
    else:
        r = max(1.0, 1.5 * s["blur_px"])
        k = int(math.ceil(r)) * 2 + 1
        yy, xx = np.mgrid[:k, :k] - k // 2
        ker = np.clip(r + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)
        img = cv2.filter2D(img, -1, ker / ker.sum())
    rn = np.hypot(np.arange(w)[None] - s["vig_cx"] * w,
                  np.arange(h)[:, None] - s["vig_cy"] * h) / math.hypot(w, h) * 2
    illum = np.clip(1 - s["vignette"] * np.clip(rn, 0, 1.5) ** 2, 0.1, 1).astype(np.float32)
    if s["hotspot"]:
        hx, hy, sig = s["hot_x"] * w, s["hot_y"] * h, s["hot_sig"] * w
        illum = illum + s["hotspot"] * np.exp(
            -((np.arange(w)[None] - hx) ** 2 + (np.arange(h)[:, None] - hy) ** 2) / (2 * sig**2)
        ).astype(np.float32)
    return np.clip(img * illum, 0, 1).astype(np.float32)


def add_noise(img, s, rng):
    """Poisson (shot) and Gaussian (read) sensor noise."""
    fw = s["full_well"]
    img = rng.poisson(img * fw).astype(np.float32) / fw + rng.normal(0, s["read_noise"], img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def encode(img, s):
    """Encoded file bytes and extension: 8- or 16-bit PNG, or JPEG; RGB-tinted or gray."""
    if s["rgb"]:
        img = np.stack([img * t for t in s["tint"][::-1]], axis=-1)
    if s["jpeg"]:
        ok, buf = cv2.imencode(".jpg", np.round(img * 255).astype(np.uint8),
                               [cv2.IMWRITE_JPEG_QUALITY, s["jpeg"]])
        return buf.tobytes(), ".jpg"
    arr = np.round(img * 65535).astype(np.uint16) if s["bits"] == 16 else np.round(img * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    return buf.tobytes(), ".png"


# ----------------------------------------------------------------------------- defects
def blob_radius(rng, n_harm, rough):
    """Random star-shaped outline: theta -> relative radius."""
    amps = rough * rng.uniform(0, 1, n_harm) / np.arange(1, n_harm + 1) ** 0.8
    phases = rng.uniform(0, 2 * np.pi, n_harm)
    ks = np.arange(2, n_harm + 2)

    def f(theta):
        return 1 + sum(a * np.cos(k * theta + p) for a, k, p in zip(amps, ks, phases))
    return f


def sub_grid(s, box_um, ss):
    """Pixel bbox and supersampled physical coords (µm from the fiber centre) of a box."""
    ux, uy = s["upp_x"], s["upp_y"]
    bx0, bx1, by0, by1 = box_um
    x0 = max(0, int(math.floor(s["cx"] + bx0 / ux)) - 1)
    x1 = min(s["w"], int(math.ceil(s["cx"] + bx1 / ux)) + 2)
    y0 = max(0, int(math.floor(s["cy"] + by0 / uy)) - 1)
    y1 = min(s["h"], int(math.ceil(s["cy"] + by1 / uy)) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    sx = ((np.arange((x1 - x0) * ss) + 0.5) / ss - 0.5 + x0 - s["cx"]) * ux
    sy = ((np.arange((y1 - y0) * ss) + 0.5) / ss - 0.5 + y0 - s["cy"]) * uy
    X, Y = np.meshgrid(sx.astype(np.float32), sy.astype(np.float32))
    return (x0, x1, y0, y1), X, Y


def area_avg(a, ss):
    """Average over ``ss`` x ``ss`` blocks (supersampled coverage to pixels)."""
    h, w = a.shape[0] // ss, a.shape[1] // ss
    return a.reshape(h, ss, w, ss).mean(axis=(1, 3)).astype(np.float32)


def blob_mask(X, Y, x, y, r, aspect, angle, outline):
    """Inside of a rotated, stretched star-shaped outline of radius ``r`` at (x, y)."""
    dx, dy = X - x, Y - y
    c, sn = math.cos(angle), math.sin(angle)
    u, v = dx * c + dy * sn, (-dx * sn + dy * c) / aspect
    return np.hypot(u, v) < r * outline(np.arctan2(v, u))


def polyline_coverage(s, pts_um, width_um, strength, ss=DSS):
    """Coverage and strength-weighted coverage of a polyline of physical width."""
    ux, uy = s["upp_x"], s["upp_y"]
    pad = width_um + 2
    box = (pts_um[:, 0].min() - pad, pts_um[:, 0].max() + pad,
           pts_um[:, 1].min() - pad, pts_um[:, 1].max() + pad)
    g = sub_grid(s, box, 1)
    if g is None:
        return None
    (x0, x1, y0, y1), _, _ = g
    shift = 4
    px = ((pts_um[:, 0] / ux + s["cx"] - x0 + 0.5) * ss - 0.5) * (1 << shift)
    py = ((pts_um[:, 1] / uy + s["cy"] - y0 + 0.5) * ss - 0.5) * (1 << shift)
    thick = max(1, int(round(width_um / math.sqrt(ux * uy) * ss)))
    cov = np.zeros(((y1 - y0) * ss, (x1 - x0) * ss), np.float32)
    stren = np.zeros_like(cov)
    P = np.stack([px, py], 1).round().astype(np.int32)
    for k in range(len(P) - 1):
        seg = P[k:k + 2].reshape(-1, 1, 2)
        cv2.polylines(cov, [seg], False, 1.0, thick, cv2.LINE_8, shift)
        cv2.polylines(stren, [seg], False, float(strength[k]), thick, cv2.LINE_8, shift)
    centre = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cpts = np.stack([(pts_um[:, 0] / ux + s["cx"] - x0), (pts_um[:, 1] / uy + s["cy"] - y0)], 1)
    cv2.polylines(centre, [(cpts * 16).round().astype(np.int32).reshape(-1, 1, 2)], False, 1, 1,
                  cv2.LINE_8, 4)
    return (x0, x1, y0, y1), area_avg(cov, ss), area_avg(stren, ss), centre.astype(bool)


def curve_points(x, y, length, angle, curv):
    """Points every ~0.5 µm along an arc of given length, start point and curvature."""
    n = max(2, int(length / 0.5))
    t = np.linspace(0, length, n)
    if abs(curv) < 1e-6:
        xs, ys = x + t * math.cos(angle), y + t * math.sin(angle)
    else:
        th = angle + curv * t
        xs = x + (np.sin(th) - math.sin(angle)) / curv
        ys = y - (np.cos(th) - math.cos(angle)) / curv
    return np.stack([xs, ys], 1)


def random_point(rng, s, zone=None):
    """A point (µm from centre) in a zone band of the true fiber type, inside the frame."""
    zu = s["zones_um"]
    bands = {z: (zu[z][0] / 2, zu[z][1] / 2) for z in ZONE_ORDER}
    ux, uy = s["upp_x"], s["upp_y"]
    fx = (np.array([0, s["w"] - 1]) - s["cx"]) * ux
    fy = (np.array([0, s["h"] - 1]) - s["cy"]) * uy
    bands["ferrule"] = (zu["contact"][1] / 2, math.hypot(max(abs(fx)), max(abs(fy))))
    if zone is None:
        zone = rng.choice(["core", "cladding", "adhesive", "contact", "ferrule"],
                          p=[0.2, 0.3, 0.1, 0.2, 0.2])
    lo, hi = bands[zone]
    for _ in range(50):
        r = math.sqrt(rng.uniform(lo**2, hi**2))
        a = rng.uniform(0, 2 * math.pi)
        x, y = r * math.cos(a), r * math.sin(a)
        if fx[0] + 3 < x < fx[1] - 3 and fy[0] + 3 < y < fy[1] - 3:
            return x, y
    return 0.5 * (lo + hi), 0.0


def make_defect(rng, s):
    """One defect: kind, pixel box, coverage, strength map (relative change), mask."""
    kind = rng.choice(["scratch", "pit", "dust", "oil", "chip"], p=[0.27, 0.22, 0.27, 0.12, 0.12])
    ux, uy = s["upp_x"], s["upp_y"]
    R = 0.5 * s["clad_um"]
    if kind == "dust" and rng.random() < 0.25:
        kind = "fibre"
    if kind == "pit" and rng.random() < 0.4:
        kind = "dig"
    if kind in ("scratch", "fibre"):
        if kind == "scratch":
            length, width = rng.uniform(10, 120), math.exp(rng.uniform(math.log(0.5), math.log(4)))
            curv = 0 if rng.random() < 0.6 else rng.choice([-1, 1]) / rng.uniform(150, 600)
            sign = 1 if rng.random() < 0.55 else -1
            amp = rng.uniform(0.15, 0.7) if sign > 0 else rng.uniform(0.15, 0.55)
            if rng.random() < 0.3:   # crossing the cladding edge
                a = rng.uniform(0, 2 * math.pi)
                r0 = R - rng.uniform(0.3, 0.8) * length
                x, y = r0 * math.cos(a), r0 * math.sin(a)
                ang = a + rng.uniform(-0.5, 0.5)
            else:
                x, y = random_point(rng, s)
                ang = rng.uniform(0, 2 * math.pi)
        else:
            length, width = rng.uniform(10, 35), rng.uniform(1.0, 3.0)
            curv = rng.choice([-1, 1]) / rng.uniform(8, 40)
            sign = -1 if rng.random() < 0.75 else 1
            amp = rng.uniform(0.3, 0.8) if sign < 0 else rng.uniform(0.3, 0.8)
            x, y = random_point(rng, s)
            ang = rng.uniform(0, 2 * math.pi)
        pts = curve_points(x, y, length, ang, curv)
        if kind == "fibre":   # wiggle
            pts = pts + np.stack([np.sin(np.linspace(0, rng.uniform(2, 6), len(pts)))] * 2, 1) \
                * rng.uniform(0.5, 2.0) * np.array([-math.sin(ang), math.cos(ang)])
        dashed = kind == "scratch" and rng.random() < 0.3
        mod = np.ones(len(pts))
        if dashed:
            mod = 0.35 + 0.65 * (np.sin(np.arange(len(pts)) * rng.uniform(0.4, 1.2)) > -0.2)
        res = polyline_coverage(s, pts, width, sign * amp * mod)
        if res is None:
            return None
        box, cov, stren, centre = res
        mask = (cov >= 0.5) | (centre & (cov > 0))
        return {"type": kind, "box": box, "cov": cov, "eff": stren, "mask": mask,
                "length_um": length, "width_um": width, "polarity": "bright" if sign > 0 else "dark",
                "shape": "line", "level": None}
    if kind == "oil":
        size = rng.uniform(15, 80)
        x, y = random_point(rng, s)
        r = size / 2
        g = sub_grid(s, (x - r * 1.6 - 5, x + r * 1.6 + 5, y - r * 1.6 - 5, y + r * 1.6 + 5), 1)
        if g is None:
            return None
        box, X, Y = g
        aspect, angle = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
        outline = blob_radius(rng, 5, 0.5)
        dx, dy = X - x, Y - y
        c, sn = math.cos(angle), math.sin(angle)
        u, v = dx * c + dy * sn, (-dx * sn + dy * c) / aspect
        rel = np.hypot(u, v) / (r * outline(np.arctan2(v, u)))    # 1 at the outline
        soft = rng.uniform(0.1, 0.35)
        alpha = np.clip((1 - rel) / soft + 0.5, 0, 1).astype(np.float32)
        sign = 1 if rng.random() < 0.35 else -1
        amp = rng.uniform(0.04, 0.18)
        eff = sign * amp * alpha * (1 + 0.3 * smooth_noise(rng, alpha.shape, 3 / ux))
        ring = rng.random() < 0.4    # darker drying edge
        if ring:
            eff = eff - rng.uniform(0.05, 0.15) * np.exp(-((rel - 1) / 0.06) ** 2)
        return {"type": "oil", "box": box, "cov": np.ones_like(alpha), "eff": eff.astype(np.float32),
                "mask": alpha >= 0.5, "length_um": np.nan, "width_um": np.nan,
                "polarity": "bright" if sign > 0 else "dark", "shape": "blob", "level": None}
    if kind == "chip":
        size = rng.uniform(5, 25)
        a = rng.uniform(0, 2 * math.pi)
        rc = R + rng.uniform(-0.1, 0.25) * size
        x, y = rc * math.cos(a), rc * math.sin(a)
        rr = size / 2
        g = sub_grid(s, (x - rr * 1.7, x + rr * 1.7, y - rr * 1.7, y + rr * 1.7), DSS)
        if g is None:
            return None
        box, X, Y = g
        m = blob_mask(X, Y, x, y, rr, rng.uniform(0.4, 1.0), a + math.pi / 2 + rng.uniform(-0.4, 0.4),
                      blob_radius(rng, 6, 0.35))
        m &= np.hypot(X, Y) < R
        cov = area_avg(m.astype(np.float32), DSS)
        level = rng.uniform(0.03, 0.25) * max(s["glass"], s["ferrule"])
        return {"type": "chip", "box": box, "cov": cov, "eff": None, "mask": cov >= 0.5,
                "length_um": np.nan, "width_um": np.nan, "polarity": "dark", "shape": "blob",
                "level": level}
    # pit/dig or dust: compact blobs
    if kind in ("pit", "dig"):
        size = rng.uniform(1.5, 5) if kind == "pit" else rng.uniform(4, 15)
        outline = blob_radius(rng, 4, 0.25 if kind == "pit" else 0.45)
        aspect = rng.uniform(0.6, 1.0)
    else:
        size = math.exp(rng.uniform(math.log(2), math.log(30)))
        outline = blob_radius(rng, 9, 0.8)
        aspect = rng.uniform(0.4, 1.0)
    x, y = random_point(rng, s)
    rr = size / 2
    g = sub_grid(s, (x - rr * 2 - 2, x + rr * 2 + 2, y - rr * 2 - 2, y + rr * 2 + 2), DSS)
    if g is None:
        return None
    box, X, Y = g
    angle = rng.uniform(0, math.pi)
    m = blob_mask(X, Y, x, y, rr, aspect, angle, outline)
    if kind == "dust" and rng.random() < 0.4:   # clump of particles
        for _ in range(rng.integers(1, 4)):
            ox, oy = rng.uniform(-rr, rr, 2)
            m |= blob_mask(X, Y, x + ox, y + oy, rr * rng.uniform(0.3, 0.6), rng.uniform(0.5, 1),
                           rng.uniform(0, math.pi), blob_radius(rng, 6, 0.6))
    cov = area_avg(m.astype(np.float32), DSS)
    if kind == "dust" and rng.random() < 0.3:
        sign, amp = 1, rng.uniform(0.3, 1.0)
    else:
        sign, amp = -1, (rng.uniform(0.35, 0.85) if kind != "dust" else rng.uniform(0.25, 0.85))
    eff = sign * amp * np.ones_like(cov)
    extra = None
    if kind in ("pit", "dig") and rng.random() < 0.35:   # bright rim around the pit
        wr = rng.uniform(0.4, 1.0)
        ring = blob_mask(X, Y, x, y, rr + wr, aspect, angle, outline) & ~m
        extra = area_avg(ring.astype(np.float32), DSS) * rng.uniform(0.2, 0.6)
    return {"type": str(kind), "box": box, "cov": cov, "eff": eff, "mask": cov >= 0.5, "rim": extra,
            "length_um": np.nan, "width_um": np.nan, "polarity": "bright" if sign > 0 else "dark",
            "shape": "blob", "level": None}


def composite(ref, d):
    """Apply one defect to the reflectance map in place."""
    x0, x1, y0, y1 = d["box"]
    sub = ref[y0:y1, x0:x1]
    if d.get("rim") is not None:
        sub *= 1 + d["rim"]
    if d["level"] is not None:
        sub[:] = sub * (1 - d["cov"]) + d["level"] * d["cov"]
    else:
        sub *= np.clip(1 + d["eff"] * d["cov"], 0.02, 3)


# ----------------------------------------------------------------------------- truth
def zone_map(s):
    """True IEC zone ids (1-4, 5 beyond) of every pixel."""
    zu = s["zones_um"]
    xs = (np.arange(s["w"]) - s["cx"]) * s["upp_x"]
    ys = (np.arange(s["h"]) - s["cy"]) * s["upp_y"]
    d = np.hypot(xs[None, :], ys[:, None])
    out = np.full(d.shape, 5, np.uint8)
    for zid, name in reversed(list(enumerate(ZONE_ORDER, 1))):
        out[d < zu[name][1] / 2] = zid
    return out


def feret_um(mask, s, off):
    """Largest and smallest extent (µm) of a mask's pixel squares."""
    ys, xs = np.nonzero(mask)
    pts = np.stack([(xs + off[0]) * s["upp_x"], (ys + off[1]) * s["upp_y"]], 1).astype(np.float32)
    if len(pts) == 1:
        return math.sqrt(s["upp_x"] * s["upp_y"]), math.sqrt(s["upp_x"] * s["upp_y"])
    # pixel squares: corners, so one pixel is one pixel wide
    corners = np.concatenate([pts + np.array([dx * s["upp_x"], dy * s["upp_y"]], np.float32) / 2
                              for dx in (-1, 1) for dy in (-1, 1)])
    hull = cv2.convexHull(corners).reshape(-1, 2)
    dmax = float(np.max(np.linalg.norm(hull[:, None] - hull[None], axis=2)))
    (_, _), (a, b), _ = cv2.minAreaRect(hull)
    return dmax, float(min(a, b))


def render(s, rng):
    """Image, instance map, zone map and defect rows of one scene."""
    ref = render_scene(s, rng)
    clean = rng.random() < 0.1
    n = 0 if clean else int(min(10, 1 + rng.poisson(3.5)))
    defs = []
    for _ in range(n * 3):
        if len(defs) >= n:
            break
        d = make_defect(rng, s)
        if d is not None and d["mask"].sum() >= 3:
            defs.append(d)
    before = ref.copy()
    inst = np.zeros((s["h"], s["w"]), np.uint16)
    for k, d in enumerate(defs, 1):
        composite(ref, d)
        x0, x1, y0, y1 = d["box"]
        inst[y0:y1, x0:x1][d["mask"]] = k
    # optics on the scene with and without defects (same illumination), then noise
    final0 = optics_and_sensor(before, s)
    final1 = optics_and_sensor(ref, s)
    noisy = add_noise(final1, s, rng)
    zmap = zone_map(s)
    rows, out = [], np.zeros_like(inst)
    for k, d in enumerate(defs, 1):
        m = inst == k
        if m.sum() < 3 or m.sum() < 0.4 * d["mask"].sum():
            continue
        num = len(rows) + 1
        out[m] = num
        ys, xs = np.nonzero(m)
        big, small = feret_um(m, s, (0, 0))
        zs = sorted(set(zmap[m].tolist()))
        contrast = float((final1[m] - final0[m]).mean())
        level = float(final0[m].mean())
        sigma = math.sqrt(max(level, 1e-4) / s["full_well"] + s["read_noise"] ** 2)
        is_line = d["shape"] == "line"
        rows.append({
            "number": num, "type": d["type"], "class_name": CLASS[d["type"]], "area_px": int(m.sum()),
            "bbox_x": int(xs.min()), "bbox_y": int(ys.min()),
            "bbox_w": int(xs.max() - xs.min() + 1), "bbox_h": int(ys.max() - ys.min() + 1),
            "centroid_x": float(xs.mean()), "centroid_y": float(ys.mean()),
            "size_um": d["width_um"] if d["type"] == "scratch" else big,
            "length_um": d["length_um"] if is_line else big,
            "width_um": d["width_um"] if is_line else small,
            "feret_um": big,
            "zone": int(np.bincount(zmap[m]).argmax()), "zones_touched": ",".join(map(str, zs)),
            "innermost_zone": int(min(z for z in zs)),
            "polarity": d["polarity"], "shape": d["shape"], "contrast": contrast,
            "visibility": abs(contrast) / sigma,
        })
    return noisy, out, zmap, rows


def truth_row(s, image_id, fname, rows):
    """The image's truth row: geometry, scene factors and IEC verdict (config criteria)."""
    a, b = 0.5 * s["clad_um"] / s["upp_x"], 0.5 * s["clad_um"] / s["upp_y"]
    r = math.sqrt(a * b)
    upp = 0.5 * s["clad_um"] / r
    ccx = s["cx"] + s["core_dx_um"] / s["upp_x"]
    ccy = s["cy"] + s["core_dy_um"] / s["upp_y"]
    df = pd.DataFrame(rows, columns=["type", "class_name", "length_um", "width_um", "feret_um",
                                     "innermost_zone"])
    verdict = grading.grade_image(df.assign(type=df["class_name"]), s["criteria"])
    return {
        "image_id": image_id, "file": f"images/{fname}",
        "center_x": s["cx"], "center_y": s["cy"], "cladding_radius_px": r,
        "cladding_ellipticity": 1 - min(a, b) / max(a, b),
        "cladding_angle_deg": 90.0 if b > a else 0.0,
        "core_center_x": ccx, "core_center_y": ccy,
        "core_radius_px": 0.5 * s["core_um"] / upp, "core_visible": s["core_visible"],
        "core_offset_px": math.hypot(ccx - s["cx"], ccy - s["cy"]),
        "core_offset_um": math.hypot(s["core_dx_um"], s["core_dy_um"]),
        "um_per_px": upp, "fiber_type": s["fiber_type"], "polarity": s["polarity"],
        "width": s["w"], "height": s["h"], "is_clean": not rows, "n_defects": len(rows),
        **{f"s_{k}": v for k, v in s.items() if k in (
            "illum", "halo", "epoxy", "vignette", "hotspot", "blur_kind", "blur_px", "full_well",
            "read_noise", "bits", "rgb", "jpeg", "glass", "ferrule", "epoxy_um", "epoxy_level",
            "rim_um", "rim_amp", "core_contrast")},
        "iec_pass": verdict["pass_fail"] == "pass", "iec_failures": "; ".join(verdict["failures"]),
    }


def render_one(seed, i, cfg):
    """Scene, image, instance map, zone map and truth rows of image ``i`` of ``seed``."""
    rng = np.random.default_rng([seed, i, 7])
    s = scene_spec(rng, i, cfg)
    s.update(hot_x=rng.uniform(0.2, 0.8), hot_y=rng.uniform(0.2, 0.8), hot_sig=rng.uniform(0.1, 0.3))
    return (s, *render(s, rng))


def image_id(seed, i):
    """Name of image ``i`` of ``seed`` (as ``write_dataset`` writes it)."""
    return f"xd{seed}_{i:04d}"


def write_one(seed, i, cfg, folder):
    """Render image ``i`` of ``seed`` and write its file (named by :func:`image_id`) into
    ``folder``. Returns ``(scene, instance map, zone map, truth rows, path)``."""
    s, img, inst, zmap, rows = render_one(seed, i, cfg)
    data, ext = encode(img, s)
    path = Path(folder) / f"{image_id(seed, i)}{ext}"
    path.write_bytes(data)
    return s, inst, zmap, rows, path


def read_back(seed, i, cfg, folder):
    """Image ``i`` of ``seed`` as the workflow reads it: written by :func:`write_one` and
    decoded by ``fiberprep.io`` (JPEG, 16-bit and colour included).
    Returns ``(scene, gray, instance map, zone map, truth rows, file name)``."""
    s, inst, zmap, rows, path = write_one(seed, i, cfg, folder)
    gray = fio.load_image(str(path), cfg["io"]["max_pixels"], cfg["io"]["min_side_px"])[0]
    return s, gray, inst, zmap, rows, path.name


def write_dataset(out, n, seed, cfg):
    """Render ``n`` images with truth into ``out`` (images/, truth/); image ``i`` depends
    only on ``(seed, i)``."""
    out = Path(out)
    for sub in ("images", "truth/zone_masks", "truth/instance_masks"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    images, defects = [], []
    for i in range(n):
        s, inst, zmap, rows, path = write_one(seed, i, cfg, out / "images")
        name = image_id(seed, i)
        cv2.imwrite(str(out / "truth/zone_masks" / f"{name}.png"), zmap)
        cv2.imwrite(str(out / "truth/instance_masks" / f"{name}.png"), inst)
        images.append(truth_row(s, name, path.name, rows))
        defects += [{"image_id": name, "defect_id": f"{name}#{r['number']}", **r} for r in rows]
    pd.DataFrame(images).to_parquet(out / "truth/images.parquet")
    pd.DataFrame(defects).to_parquet(out / "truth/defects.parquet")

