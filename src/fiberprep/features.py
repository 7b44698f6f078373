"""Per-defect and per-zone features for clustering, grading and the datasets.

Every feature is computed only inside a defect's bounding box plus a small margin (the
cross profiles of a line reach three line widths to each side), so the cost grows with
the number and size of defects, not with the image. Shape comes
from OpenCV moments, contours and hulls on each defect's crop (linear in its pixels;
``regionprops`` computes moments over the whole bounding box, which is slow for long
diagonal scratches), texture from scikit-image's GLCM and LBP on a bounded window,
skeletons from scikit-image. Lengths are in µm through the geometry's ``um_per_px``
so features compare across scopes.

References
----------
.. [1] R. M. Haralick, K. Shanmugam, I. Dinstein, "Textural features for image
       classification", IEEE Trans. SMC 3(6), 1973 (GLCM).
.. [2] T. Ojala, M. Pietikäinen, T. Mäenpää, "Multiresolution gray-scale and rotation
       invariant texture classification with local binary patterns", IEEE TPAMI 24(7),
       2002 (uniform LBP).
.. [3] M.-K. Hu, "Visual pattern recognition by moment invariants", IRE Trans. Inf.
       Theory 8(2), 1962.
.. [4] J. Bigun, G. H. Granlund, "Optimal orientation detection of linear symmetry",
       ICCV 1987 (structure-tensor orientation coherence).
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from .stats import median
from .zones import ZONE_NAMES, equal_area_radius2

# scikit-image and SciPy are imported where features are computed: the table jobs that
# only need the feature names and units start without them.

# Width of the local background ring around each defect (µm), at least _RING_MIN_PX px;
# it starts beyond the defect's rim, a band _RIM_UM (at least 1 px) wide just outside
# the mask where blur, soft edges and diffraction halos live.
_RING_UM = 3.0
_RING_MIN_PX = 2
_RIM_UM = 1.0
# Outer reach (µm, at least 2 px) of the 1 px rings in which a halo is looked for.
_HALO_UM = 2.0
# Fewest crop pixels on a defect's side of the cladding edge for its background to be
# taken on that side alone (``_same_side``).
_SIDE_MIN_PX = 20
# Gray levels of the GLCM and of the entropy histogram.
_LEVELS = 32
# Uniform LBP with 8 neighbours at radius 1 has P + 2 = 10 codes.
_LBP_P = 8
_LBP_BINS = _LBP_P + 2
# Side (px) of the window holding the texture (GLCM, LBP) sample of a defect; windows
# whose GLCM statistics are computed together (bounded memory).
_TEXTURE_PX = 48
_TEXTURE_BATCH = 256
_EPS = 1e-6
# A skeleton's bend radius is fitted when it spans this many px and bows by this many µm
# (and 1 px) over its span; a straight one's is capped.
_BEND_MIN_SPAN_PX = 4
_BEND_MIN_SAGITTA_UM = 1.0
_BEND_MAX_RADIUS_UM = 10_000.0
# A mask is one continuous line when one 8-connected piece holds this share of its pixels
# (a beaded scratch trail or merged segments are several pieces).
_WIGGLE_MIN_SHARE = 0.9
# ... and one line when its skeleton has at most two arms this long (a spur can split it).
_BRANCH_MIN_UM = 5.0

# name, unit, description: one table from which FEATURE_UNITS and FEATURE_DESCRIPTIONS
# are built (README feature table, Parquet field metadata).
# Columns of the detect_defects table that are features too (documented here so the
# README table and the Parquet metadata cover every feature; computed by defects.py).
_DETECTION_FEATURES: list[tuple[str, str, str]] = [
    ("area_px", "px", "defect area in pixels"),
    ("area_um2", "µm²", "defect area"),
    ("length_um", "µm", "largest dimension (skeleton length for linear defects)"),
    ("width_um", "µm", "smallest dimension (area / length for linear defects)"),
    ("orientation_deg", "deg", "major-axis direction, image coordinates (y down)"),
    ("contrast", "gray [0,1]", "mean of image - flattened background (negative = dark)"),
    ("radius_um", "µm", "distance of the centroid from the fiber center"),
    ("angle_deg", "deg", "polar angle of the centroid about the fiber center (y down)"),
    ("zone", "id", "zone holding most of the defect (1 core .. 5 ferrule)"),
    ("innermost_zone", "id", "innermost zone the defect touches (IEC judging zone)"),
]

# name, unit, description of the features computed here.
_DEFECT_FEATURES: list[tuple[str, str, str]] = [
    ("equivalent_diameter_um", "µm", "diameter of the disc with the same area"),
    ("major_axis_um", "µm", "major axis of the ellipse with the same second moments"),
    ("minor_axis_um", "µm", "minor axis of that ellipse (at least 1 px)"),
    ("eccentricity", "1", "eccentricity of that ellipse (0 disc, 1 line)"),
    ("aspect_ratio", "1", "major / minor axis"),
    ("solidity", "1", "area / convex hull area (low = irregular)"),
    ("extent", "1", "area / bounding-box area"),
    ("circularity", "1", "4π area / perimeter² (1 = disc)"),
    ("outline_roughness", "1", "spread (CV) of the outline's radius in the frame of the same-moment "
     "ellipse: ~0 smooth oval (pit), high ragged (dust, dig) or curled"),
    *[(f"hu_{i}", "1", f"Hu moment invariant {i}, as -sign·log10|h|") for i in range(1, 8)],
    ("feret_um", "µm", "largest dimension (max Feret diameter, sub-pixel) of the half-contrast "
     "outline: where the contrast to the local background falls to half the defect's (upper "
     "quartile) contrast, within 1 px of the mask; the IEC 61300-3-35 size of a non-scratch defect, "
     "independent of the detector's threshold and of stray mask pixels"),
    ("profile_width_um", "µm", "width of the defect as a line: full width at half maximum of its "
     "|contrast| across the line (profiles along the normals of the skeleton of the closed mask, "
     "8 at a time averaged, background at their ends, the two flanks of a shaded groove "
     "included), median along the line (area / skeleton length for shapes with an aspect ratio "
     "below 2 or where no profile stands out of the noise); the IEC 61300-3-35 size of a "
     "scratch, independent of the detector's threshold"),
    ("skeleton_length_um", "µm", "length of the morphological skeleton"),
    ("straightness", "1", "span of the skeleton along its main axis / its length"),
    ("skeleton_bend", "1", "width of the skeleton across its main axis / its span along it "
     "(0 straight, high bent or wiggly)"),
    ("bend_radius_um", "µm", "radius of curvature of the skeleton (a parabola fitted across its "
     "main axis; 10 000 when it bows by less than 1 µm or 1 px, or spans under 4 px): "
     "a polish scratch runs straight or in a wide arc, a fibre of lint curls"),
    ("skeleton_wiggle_um", "µm", "RMS distance of the skeleton from the parabola fitted across "
     "its main axis, on the mask's main 8-connected piece (0, not measured, when no piece holds 90 % "
     "of the pixels, as in a trail of beads, when its skeleton has more than two arms of 5 µm, "
     "as where scratches cross, or when it spans under 4 px): a fibre of lint snakes, a polish "
     "scratch runs straight or in a wide arc"),
    ("intensity_mean", "gray [0,1]", "mean intensity inside the defect"),
    ("intensity_std", "gray [0,1]", "intensity standard deviation inside the defect"),
    ("intensity_min", "gray [0,1]", "minimum intensity inside the defect"),
    ("intensity_max", "gray [0,1]", "maximum intensity inside the defect"),
    ("contrast_variation", "1", "intensity_std / abs(local_contrast): low = uniform (particles, "
     "pits), high = contrast varying along the defect (fading or relief scratches)"),
    ("local_background", "gray [0,1]", "median intensity of the local background ring (beyond the rim; "
     "on the defect's side of the cladding edge)"),
    ("local_background_std", "gray [0,1]", "robust std (1.4826 MAD) of the background ring"),
    ("local_contrast", "gray [0,1]", "defect mean - local background (negative = dark)"),
    ("local_snr", "1", "local_contrast / local_background_std"),
    ("michelson_contrast", "1", "(defect mean - local background) / (defect mean + local background), "
     "in [-1, 1], independent of the light level: -c / (2 - c) for a defect removing a fraction c"),
    ("rim_contrast", "1", "(mean of the 1 µm rim just outside the defect - local background) / "
     "local_contrast: ~0 hard edge, > 0 soft edge (oil), < 0 opposite-polarity halo (pit)"),
    ("halo_contrast", "1", "strongest opposite-polarity excursion of the mean of 1 px rings up to "
     "2 µm outside the defect, beyond 2 standard errors of that mean, / abs(local_contrast): > 0 a "
     "diffraction halo (bright ring around a dark pit; the cladding edge's bright band counts "
     "too), 0 none"),
    ("glcm_contrast", "1", "GLCM contrast around the defect (32 levels, d=1, 4 directions)"),
    ("glcm_homogeneity", "1", "GLCM homogeneity around the defect"),
    ("glcm_energy", "1", "GLCM energy around the defect"),
    ("glcm_correlation", "1", "GLCM correlation around the defect"),
    *[(f"lbp_{i}", "fraction", f"share of defect pixels with uniform LBP(8,1) code {i}")
      for i in range(_LBP_BINS)],
    ("entropy", "bit", "Shannon entropy of the defect's intensities (32 bins)"),
    ("gradient_mean", "gray/µm", "mean gradient magnitude on the defect boundary"),
    ("edge_sharpness", "1/µm", "gradient_mean / abs(local_contrast): high = sharp, low = diffuse"),
    ("orientation_coherence", "1", "structure-tensor coherence inside the defect (1 = one direction)"),
    ("cladding_edge_distance_um", "µm", "smallest distance of a defect pixel to the cladding edge "
     "(in the fitted cladding ellipse's equal-area metric)"),
    ("cladding_overhang_um", "µm", "how far the defect reaches beyond the cladding edge "
     "(largest radius - cladding radius; < 0: all on the glass)"),
    ("edge_straddle", "1", "2 min(f, 1 - f), f the share of the defect's area beyond the cladding "
     "edge: 0 wholly on the glass or wholly beyond (chips, most defects), 1 half across (debris "
     "caught on the edge)"),
    ("image_compact_defects", "count", "compact defects (the detector's shape_class) in the defect's "
     "image, itself included (NaN when the table has no shape_class): particles come in crowds on "
     "a dirty end face, polishing pits a few at a time"),
]

_ZONE_FEATURES: list[tuple[str, str, str]] = [
    ("zone", "id", "zone id (1 core, 2 cladding, 3 adhesive, 4 contact, 5 ferrule)"),
    ("zone_name", "", "zone name"),
    ("inner_diameter_um", "µm", "inner diameter of the zone"),
    ("outer_diameter_um", "µm", "outer diameter of the zone (NaN: open)"),
    ("area_px", "px", "analysed pixels of the zone in the image"),
    ("area_um2", "µm²", "analysed area of the zone"),
    ("visible_fraction", "1", "analysed area / nominal annulus area"),
    ("intensity_mean", "gray [0,1]", "mean intensity of the zone"),
    ("intensity_std", "gray [0,1]", "intensity standard deviation of the zone"),
    ("gradient_mean", "gray/µm", "mean gradient magnitude in the zone"),
    ("entropy", "bit", "Shannon entropy of the zone's intensities (32 bins)"),
]

FEATURE_UNITS: dict[str, str] = {
    n: u for n, u, _ in _DETECTION_FEATURES + _DEFECT_FEATURES + _ZONE_FEATURES}
FEATURE_DESCRIPTIONS: dict[str, str] = {
    n: d for n, _, d in _DETECTION_FEATURES + _DEFECT_FEATURES}
ZONE_FEATURE_DESCRIPTIONS: dict[str, str] = {n: d for n, _, d in _ZONE_FEATURES}
DEFECT_FEATURE_NAMES: list[str] = [n for n, _, _ in _DEFECT_FEATURES]
_COLUMNS = pd.Index(["number", *DEFECT_FEATURE_NAMES])  # built once (~0.1 ms per build)


def _ring_px(um_per_px: float) -> tuple[int, int]:
    """(rim width, rim + background ring width) in px."""
    rim = max(1, int(round(_RIM_UM / um_per_px)))
    return rim, rim + max(_RING_MIN_PX, int(round(_RING_UM / um_per_px)))


_K3 = np.ones((3, 3), np.uint8)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _skeleton_length_px(skel: np.ndarray) -> float:
    """Length of an 8-connected skeleton: orthogonal steps 1, diagonal steps √2,
    diagonals that short-cut an orthogonal corner not counted twice."""
    s = skel
    h = np.count_nonzero(s[:, :-1] & s[:, 1:])
    v = np.count_nonzero(s[:-1] & s[1:])
    d1 = s[:-1, :-1] & s[1:, 1:] & ~(s[:-1, 1:] | s[1:, :-1])
    d2 = s[:-1, 1:] & s[1:, :-1] & ~(s[:-1, :-1] | s[1:, 1:])
    return float(h + v + np.sqrt(2.0) * (np.count_nonzero(d1) + np.count_nonzero(d2)))


def _nonzero(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D boolean array (several times faster on large arrays)."""
    return np.divmod(np.flatnonzero(a), a.shape[1])


def _axis_parabola(sy: np.ndarray, sx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Coordinates of points along and across their main axis (through their mean), and
    the parabola fitted across it (``np.polyfit`` coefficients; None when they span
    under ``_BEND_MIN_SPAN_PX`` along it)."""
    dx, dy = sx - sx.sum() / sx.size, sy - sy.sum() / sy.size
    theta = 0.5 * np.arctan2(2 * (dx @ dy), dx @ dx - dy @ dy)  # main axis direction
    along, across = dx * np.cos(theta) + dy * np.sin(theta), dy * np.cos(theta) - dx * np.sin(theta)
    coef = np.polyfit(along, across, 2) if np.ptp(along) >= _BEND_MIN_SPAN_PX else None
    return along, across, coef


def _long_branches(skel: np.ndarray, min_px: float) -> int:
    """Number of the skeleton's branches at least ``min_px`` long, cut at its junctions
    (pixels with three or more skeleton neighbours): one or two for a line (a short spur
    can split it), three or more where lines meet or cross."""
    nb = cv2.filter2D(skel.view(np.uint8), cv2.CV_8U, _K3, borderType=cv2.BORDER_CONSTANT)
    junction = skel & (nb >= 4)  # itself and three neighbours
    if not junction.any():
        return 1
    arms = skel & ~(cv2.dilate(junction.view(np.uint8), _K3) > 0)
    n, _, stats, _ = cv2.connectedComponentsWithStats(arms.view(np.uint8), connectivity=8)
    return int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_px))


def _line_wiggle_px(mask: np.ndarray, skel: np.ndarray, along: np.ndarray, across: np.ndarray,
                    coef: np.ndarray, min_px: float) -> float:
    """RMS distance (px) of the skeleton from the parabola ``coef`` fitted across its
    main axis (``along``, ``across``: its points in that frame): what no straight line
    or arc explains (a fibre of lint snakes; a polish scratch runs straight or in a wide
    arc). A mask of several 8-connected pieces is measured on its main piece, refitted,
    when that holds ``_WIGGLE_MIN_SHARE`` of the pixels; 0 (not measured) when none
    does (a trail of beads, merged segments: their layout is no line's shape), when
    the skeleton has more than two arms of ``min_px`` (lines meeting or crossing) or
    the main piece spans under ``_BEND_MIN_SPAN_PX``."""
    n, lab = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    if n > 2:
        areas = np.bincount(lab.ravel(), minlength=n)[1:]
        k = int(np.argmax(areas)) + 1
        if areas[k - 1] < _WIGGLE_MIN_SHARE * areas.sum():
            return 0.0
        skel = skel & (lab == k)
        sy, sx = _nonzero(skel)
        if sy.size < 3:
            return 0.0
        along, across, coef = _axis_parabola(sy, sx)
        if coef is None:
            return 0.0
    if _long_branches(skel, min_px) > 2:  # a junction of lines (crossing scratches): no one line
        return 0.0
    res = across - ((coef[0] * along + coef[1]) * along + coef[2])  # np.polyval's steps
    return float(np.sqrt(np.mean(res * res)))


def _entropy(values: np.ndarray) -> float:
    hist = np.bincount(np.minimum(np.maximum((values * _LEVELS).astype(np.intp), 0), _LEVELS - 1),
                       minlength=_LEVELS)
    p = hist[hist > 0] / values.size
    return float(-(p * np.log2(p)).sum())


# Gray-level grids of the GLCM statistics (symmetric matrix: the marginals coincide).
_GI = np.arange(_LEVELS, dtype=float)
_GD2 = (_GI[:, None] - _GI[None, :]) ** 2


# Level of the padding around the half-contrast region: below any contrast.
_FLOOR = np.finfo(np.float32).min


def _halfmax_feret_px(f: np.ndarray, mask: np.ndarray, reach: np.ndarray) -> float:
    """Max Feret diameter (px) of the outline where ``f`` (signed contrast, > 0 inside
    the defect) crosses half the defect's contrast: the upper quartile of ``f`` on
    ``mask``, its plateau (a textured interior would raise a peak; a mask that takes in
    the blurred rim would lower a median).

    The outline runs around the pixels at or above that half that are connected to
    the mask and lie in ``reach`` (within one pixel of the mask, in no other defect);
    its points are the level crossings between such a pixel and each 4-neighbour
    outside, linearly interpolated (the vertices of the marching-squares contour). NaN
    when the defect has no contrast of its own sign.
    """
    vals = f[mask]
    k = (3 * (vals.size - 1)) // 4
    half = 0.5 * float(np.partition(vals, k)[k])
    if not half > 0:
        return np.nan
    inner = (f >= np.float64(half)) & reach  # (a Python float would be rounded to f's float32)
    n, comp = cv2.connectedComponents(inner.view(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[comp[mask]] = True
    if not keep[1:].all():  # drop the pieces not connected to the mask
        keep[0] = False
        inner = keep[comp]
    region = np.zeros((f.shape[0] + 2, f.shape[1] + 2), bool)
    region[1:-1, 1:-1] = inner
    # outside the region every pixel sits below the level (other defects, the far side);
    # the padding far below it: a crossing towards the padding is at the region's pixel
    level = np.full(region.shape, _FLOOR, np.float32)
    level[1:-1, 1:-1] = np.where(inner, f, np.minimum(f, np.float32(0.999 * half)))
    # level crossings between 4-neighbours a (top / left) and b on either side of the
    # outline, at t = (f_a - half) / (f_a - f_b) in [0, 1] from a
    ys, xs = _nonzero(region[:-1] != region[1:])
    fa = level[ys, xs]
    ty = (fa - half) / (fa - level[ys + 1, xs])
    yy, xx = _nonzero(region[:, :-1] != region[:, 1:])
    fa = level[yy, xx]
    tx = (fa - half) / (fa - level[yy, xx + 1])
    if len(ys) + len(yy) < 2:
        return np.nan
    pts = np.empty((len(ys) + len(yy), 2), np.float32)
    pts[:len(ys), 0], pts[:len(ys), 1] = xs, ys + ty
    pts[len(ys):, 0], pts[len(ys):, 1] = xx + tx, yy
    hull = cv2.convexHull(pts).reshape(-1, 2).astype(np.float64)
    # squared distances of all hull point pairs, dx² + dy² (a sum over a length-2 last
    # axis is several times slower)
    d2 = hull[:, None, 0] - hull[:, 0]
    dy = hull[:, None, 1] - hull[:, 1]
    d2 *= d2
    dy *= dy
    d2 += dy
    return float(np.sqrt(d2.max()))


# Cross profiles of a line: sample step (px), skeleton points averaged per profile,
# profile ends (px) that give its background.
_PROFILE_STEP = 0.5
_PROFILE_GROUP = 8
_PROFILE_END_PX = 2.0
# Widest gap (px) bridged inside the run above half maximum: the zero crossing between
# the dark and bright flanks of a shaded groove, |contrast| < half over ~1 blur σ.
_PROFILE_GAP_PX = 2.0
# Shapes at least this elongated (major / minor axis) are measured as lines.
_LINE_MIN_ASPECT = 2.0


def _profile_width_px(gray: np.ndarray, ys: np.ndarray, xs: np.ndarray, reach: float) -> float:
    """Full width at half maximum (px) of a line's cross profile, median along the line.

    ``ys, xs``: the line's skeleton (image coordinates), ordered along its main axis in
    groups of ``_PROFILE_GROUP`` points; profiles run ``reach`` px to each side along the
    normal of each group (its points' principal axis) and are averaged over the group
    (against noise; a fading line keeps its shape); they take the median of their ends
    as background and are measured on |contrast|: the run above half the peak that holds
    the peak, bridged over gaps of up to ``_PROFILE_GAP_PX`` (the zero crossing between
    the flanks of a shaded groove), ends linearly interpolated. Profiles whose peak is within 3 noise σ of their ends
    are skipped; NaN when none is left.
    """
    if ys.size < 4:
        return np.nan
    # order the points along the main axis, in groups of _PROFILE_GROUP; each group's
    # normal from its own points' principal axis, all pointing to the same side
    dx, dy = xs - xs.mean(), ys - ys.mean()
    axis = 0.5 * np.arctan2(2 * (dx @ dy), dx @ dx - dy @ dy)
    order = np.argsort(dx * np.cos(axis) + dy * np.sin(axis), kind="stable")
    groups = max(len(order) // _PROFILE_GROUP, 1)
    size = len(order) // groups
    gx = xs[order[:groups * size]].reshape(groups, size).astype(np.float64)
    gy = ys[order[:groups * size]].reshape(groups, size).astype(np.float64)
    cx, cy = gx - gx.mean(1, keepdims=True), gy - gy.mean(1, keepdims=True)
    along = 0.5 * np.arctan2(2 * (cx * cy).sum(1), (cx * cx).sum(1) - (cy * cy).sum(1))
    nx, ny = -np.sin(along), np.cos(along)
    flip = np.where(ny * np.cos(axis) - nx * np.sin(axis) < 0, -1.0, 1.0)
    nx, ny = (nx * flip)[:, None, None], (ny * flip)[:, None, None]
    s = np.arange(-reach, reach + _PROFILE_STEP / 2, _PROFILE_STEP, dtype=np.float32)
    mx = (gx[:, :, None] + s * nx).reshape(groups * size, -1).astype(np.float32)
    my = (gy[:, :, None] + s * ny).reshape(groups * size, -1).astype(np.float32)
    prof = cv2.remap(np.ascontiguousarray(gray, np.float32), mx, my, cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)
    p = prof.reshape(groups, size, -1).mean(axis=1)
    ends = p[:, np.abs(s) > reach - _PROFILE_END_PX]
    bg = median(ends, axis=1)[:, None]
    noise = 1.4826 * median(np.abs(ends - bg), axis=1)
    a = np.abs(p - bg)
    peak = a.argmax(axis=1)
    top = a[np.arange(groups), peak]
    half = top[:, None] / 2
    above = a >= half
    # gaps of up to _PROFILE_GAP_PX inside a run closed
    gap = int(round(_PROFILE_GAP_PX / _PROFILE_STEP))
    bridged = cv2.morphologyEx(above.view(np.uint8), cv2.MORPH_CLOSE,
                               np.ones((1, gap + 1), np.uint8)).astype(bool)
    starts = bridged.copy()
    starts[:, 1:] &= ~bridged[:, :-1]
    run = np.cumsum(starts, axis=1) * bridged
    mine = run == run[np.arange(groups), peak][:, None]
    m = a.shape[1]
    lo = mine.argmax(axis=1)
    hi = m - 1 - mine[:, ::-1].argmax(axis=1)
    rows = np.arange(groups)
    # the half level crossed between the run's end samples and their outer neighbours
    out_lo, out_hi = a[rows, np.maximum(lo - 1, 0)], a[rows, np.minimum(hi + 1, m - 1)]
    left = (a[rows, lo] - half[:, 0]) / np.maximum(a[rows, lo] - out_lo, 1e-12)
    right = (a[rows, hi] - half[:, 0]) / np.maximum(a[rows, hi] - out_hi, 1e-12)
    clip = np.minimum(np.maximum(np.stack([left, right]), 0.0), 1.0)  # (np.clip's overhead)
    width = (hi - lo + clip[0] * (lo > 0) + clip[1] * (hi < m - 1)) * _PROFILE_STEP
    ok = top > 3 * noise
    return float(median(width[ok])) if ok.any() else np.nan


_TEXTURE_NAMES = ["glcm_contrast", "glcm_homogeneity", "glcm_energy", "glcm_correlation",
                  *(f"lbp_{i}" for i in range(_LBP_BINS))]
_GLCM_ANGLES = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]


def _texture(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """GLCM statistics and LBP histograms of texture windows.

    ``windows``: ``(q, ys, xs)`` per defect, ``q`` its window (at most ``_TEXTURE_PX``
    on a side) in ``_LEVELS`` gray levels, ``(ys, xs)`` the defect's pixels in it.
    Returns ``(n, len(_TEXTURE_NAMES))``: Haralick contrast, homogeneity, energy and
    correlation of ``skimage.feature.graycomatrix`` summed over four directions (0, 45,
    90, 135 deg) at distance 1, symmetric, normalised (the statistics of all windows at
    once), and the shares of the uniform LBP(8, 1) codes of the defect's pixels
    (``local_binary_pattern`` on the defect's box + 2 px: only their 3 x 3
    neighbourhoods count).
    """
    from skimage.feature import graycomatrix, local_binary_pattern

    n = len(windows)
    P = np.empty((n, _LEVELS, _LEVELS))
    out = np.empty((n, len(_TEXTURE_NAMES)))
    for i, (q, ys, xs) in enumerate(windows):
        P[i] = graycomatrix(q, [1], _GLCM_ANGLES, levels=_LEVELS, symmetric=True).sum(axis=(2, 3))
        y0, x0 = max(ys[0] - 2, 0), max(xs.min() - 2, 0)  # ys sorted
        lbp = local_binary_pattern(q[y0:ys[-1] + 3, x0:xs.max() + 3], _LBP_P, 1.0, method="uniform")
        hist = np.bincount(lbp[ys - y0, xs - x0].astype(np.intp), minlength=_LBP_BINS)[:_LBP_BINS]
        out[i, 4:] = hist / max(ys.size, 1)
    P /= np.maximum(P.sum(axis=(1, 2)), 1.0)[:, None, None]
    marginal = P.sum(axis=2)
    dev = _GI - (marginal @ _GI)[:, None]
    var = np.einsum("ni,ni->n", marginal, dev**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, 3] = np.where(var > _EPS, np.einsum("ni,nij,nj->n", dev, P, dev) / var, 1.0)
    out[:, 0] = (P * _GD2).sum(axis=(1, 2))
    out[:, 1] = (P / (1.0 + _GD2)).sum(axis=(1, 2))
    out[:, 2] = np.sqrt((P * P).sum(axis=(1, 2)))
    return out


_HU_NAMES = [f"hu_{i}" for i in range(1, 8)]


def _shape(m8: np.ndarray, area: int, ys: np.ndarray, xs: np.ndarray, um: float) -> dict:
    """Moment, hull and contour shape features of one binary mask (OpenCV, O(mask)).

    Axes follow skimage's regionprops convention (4·sqrt of the inertia eigenvalues),
    floored at 1 px; the convex hull is that of the pixel squares, so solidity <= 1.
    """
    m = cv2.moments(m8, binaryImage=True)
    a, b, c = m["mu20"] / area, m["mu11"] / area, m["mu02"] / area
    root = np.hypot((a - c) / 2, b)  # eigenvalues of the 2 x 2 inertia tensor
    l1, l2 = (a + c) / 2 + root, max((a + c) / 2 - root, 0.0)
    major, minor = max(4 * np.sqrt(l1), 1.0), max(4 * np.sqrt(l2), 1.0)
    hu = cv2.HuMoments(m).ravel()
    contours, _ = cv2.findContours(m8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    ipts = np.concatenate([c.reshape(-1, 2) for c in contours])
    pts = ipts.astype(np.float32)
    # Outline radius in the frame of the same-moment ellipse (constant on an ellipse).
    theta = 0.5 * np.arctan2(2 * b, a - c)
    dx, dy = pts[:, 0] - m["m10"] / area, pts[:, 1] - m["m01"] / area
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / major
    v = (dy * np.cos(theta) - dx * np.sin(theta)) / minor
    rho = np.hypot(u, v)
    h, w = ys[-1] - ys[0] + 1, xs.max() - xs.min() + 1  # ys sorted
    # hull of the pixel squares = hull of their centres (+) the unit square: its area
    # grows by the centres' extents h - 1 and w - 1 and by 1
    hull = cv2.contourArea(cv2.convexHull(ipts)) + h + w - 1
    return {
        "equivalent_diameter_um": float(np.sqrt(4 * area / np.pi)) * um,
        "major_axis_um": major * um, "minor_axis_um": minor * um,
        "eccentricity": float(np.sqrt(1 - l2 / l1)) if l1 > 0 else 0.0,
        "aspect_ratio": major / minor,
        "solidity": min(1.0, area / max(hull, 1.0)),
        "extent": area / (h * w),
        "circularity": min(1.0, 4 * np.pi * area / max(perimeter, _EPS) ** 2),
        "outline_roughness": float(rho.std() / max(rho.mean(), _EPS)),
        **dict(zip(_HU_NAMES, (-np.sign(hu) * np.log10(np.abs(hu) + 1e-30)).tolist())),
    }


def _crop_features(gray_c, lab_c, zone_c, n, origin, kernels, halo_px, um, gray_full):
    """Features of defect ``n`` from its crop (arrays cut to bbox + margin at ``origin``)
    but texture and cladding edge, with its texture window (:func:`_texture`) and its
    pixels (rows, columns in the image, :func:`_edge_features`); ``kernels``: rim and
    rim + ring discs, ``halo_px``: reach of the halo rings; ``gray_full``: the whole
    image (cross profiles may reach beyond the crop)."""
    mask = lab_c == n
    if not mask.any():
        raise ValueError(f"defect {n} has no pixels in the instance map inside its bbox")
    m8 = mask.view(np.uint8)
    vals = gray_c[mask]
    ys, xs = _nonzero(mask)
    out = _shape(m8, vals.size, ys, xs, um)
    mean = float(vals.mean())
    out.update(intensity_mean=mean, intensity_std=float(vals.std()),
               intensity_min=float(vals.min()), intensity_max=float(vals.max()))
    # Local background: a ring around the defect beyond its rim, excluding other
    # defects and pixels outside the analysed area. Rim, ring and the halo's rings all
    # lie in the ring's outer disc (``around``): only its pixels are gathered.
    free = (lab_c == 0) & (zone_c > 0)
    around = cv2.dilate(m8, kernels[1]).view(bool) & free
    near = cv2.dilate(m8, kernels[0]).view(bool)[around]
    g = gray_c[around]
    bg = g[~near]
    if bg.size:
        bg_med = float(median(bg))
        bg_std = 1.4826 * float(median(np.abs(bg - bg_med)))
    else:
        bg_med, bg_std = np.nan, np.nan
    contrast = mean - bg_med
    signed = np.copysign(max(abs(contrast), 1e-3), contrast)
    # Mean of each 1 px ring outside the defect (distance to its nearest pixel), up to
    # _HALO_UM: a halo is a ring brighter than the background around a dark defect (or
    # darker around a bright one); a plain blurred edge only fades towards it. Only the
    # excursion beyond two standard errors of the ring's mean counts (small specks' rings
    # hold few pixels).
    dist = cv2.distanceTransform(1 - m8, cv2.DIST_L2, cv2.DIST_MASK_5)
    ring_k = np.ceil(dist[around]).astype(np.intp)
    keep = ring_k <= halo_px
    counts = np.bincount(ring_k[keep], minlength=halo_px + 1)[1:]
    sums = np.bincount(ring_k[keep], weights=g[keep], minlength=halo_px + 1)[1:]
    seen = counts >= 3
    if seen.any() and np.isfinite(bg_med):
        excess = (bg_med - sums[seen] / counts[seen]) / signed
        halo = max(float((excess - 2 * bg_std / np.sqrt(counts[seen]) / abs(signed)).max()), 0.0)
    else:
        halo = np.nan
    rim = g[near]
    out.update(local_background=bg_med, local_background_std=bg_std, local_contrast=contrast,
               local_snr=contrast / max(bg_std, 1e-3),
               michelson_contrast=contrast / max(mean + bg_med, 1e-3),
               rim_contrast=(float(rim.mean()) - bg_med) / signed if rim.size else np.nan,
               halo_contrast=halo,
               contrast_variation=out["intensity_std"] / abs(signed))
    # Texture on a window of at most _TEXTURE_PX around a defect pixel near the centroid
    # (bounds the cost of long scratches; the window holds defect and surroundings).
    k = np.argmin((ys - ys.sum() / ys.size) ** 2 + (xs - xs.sum() / xs.size) ** 2)
    h2 = _TEXTURE_PX // 2
    wy = slice(max(ys[k] - h2, 0), ys[k] + h2)
    wx = slice(max(xs[k] - h2, 0), xs[k] + h2)
    q = np.minimum((gray_c[wy, wx] * _LEVELS).astype(np.uint8), _LEVELS - 1)
    # GLCM and LBP (of the defect's pixels in the window) for all defects at once
    window = (q, *_nonzero(mask[wy, wx]))
    from skimage.morphology import skeletonize

    out["entropy"] = _entropy(vals)
    # Gradient on the boundary band (one pixel in and out) and structure tensor, on the
    # defect's box + 2 px (the 3 x 3 Sobel of the band's pixels stays inside it).
    y0, y1, x0, x1 = ys[0], ys[-1], xs.min(), xs.max()
    box = np.s_[max(y0 - 2, 0):y1 + 3, max(x0 - 2, 0):x1 + 3]
    mb, m8b = mask[box], m8[box]
    dil = cv2.dilate(m8b, _K3).view(bool)
    # the half-contrast outline lies within one pixel of the mask: inside the box
    f = np.float32(np.sign(signed)) * (gray_c[box] - np.float32(bg_med))  # contrast of the defect's sign
    out["feret_um"] = (_halfmax_feret_px(f, mb, dil & (free[box] | mb)) * um
                       if np.isfinite(bg_med) else np.nan)
    gx = cv2.Sobel(gray_c[box], cv2.CV_32F, 1, 0, ksize=3)  # 8 x the gradient
    gy = cv2.Sobel(gray_c[box], cv2.CV_32F, 0, 1, ksize=3)
    band = dil & ~cv2.erode(m8b, _K3).view(bool)
    gmean = float(np.hypot(gx[band] / 8.0, gy[band] / 8.0).mean()) / um
    out["gradient_mean"] = gmean
    out["edge_sharpness"] = gmean / max(abs(contrast), 1e-3) if np.isfinite(contrast) else np.nan
    gdx, gdy = gx[dil] / 8.0, gy[dil] / 8.0
    jxx, jyy, jxy = float(gdx @ gdx), float(gdy @ gdy), float(gdx @ gdy)
    out["orientation_coherence"] = float(np.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy + _EPS))
    # Skeleton length and straightness (span along the skeleton's main axis / length).
    tight = np.zeros((y1 - y0 + 3, x1 - x0 + 3), bool)
    tight[1:-1, 1:-1] = mask[y0:y1 + 1, x0:x1 + 1]
    skel = skeletonize(tight)
    length = _skeleton_length_px(skel)
    sy, sx = _nonzero(skel)
    span, across, bend_radius, wiggle = 0.0, 0.0, _BEND_MAX_RADIUS_UM, 0.0
    if sy.size > 1:
        proj, perp, coef = _axis_parabola(sy, sx)
        span, across = float(np.ptp(proj)), float(np.ptp(perp))
        if coef is not None:
            # perp = a proj^2 + ...: curvature 2a at the vertex; a bow over the span of
            # less than a pixel is the staircase of a straight line, of less than
            # _BEND_MIN_SAGITTA_UM no curl
            a = abs(float(coef[0]))
            if a * (0.5 * span) ** 2 >= max(1.0, _BEND_MIN_SAGITTA_UM / um):
                bend_radius = min(um / (2.0 * a), _BEND_MAX_RADIUS_UM)
            wiggle = _line_wiggle_px(tight, skel, proj, perp, coef, _BRANCH_MIN_UM / um)
    out["skeleton_length_um"] = length * um
    out["straightness"] = min(1.0, (span + 1.0) / (length + 1.0))
    out["skeleton_bend"] = across / (span + 1.0)
    out["bend_radius_um"] = bend_radius
    out["skeleton_wiggle_um"] = wiggle * um
    # Width across the line, from the image's profile (skeleton of the closed mask: the
    # two flanks of a shaded groove make one line), reaching 3 mask widths to each side;
    # a shape that is no line (aspect ratio below _LINE_MIN_ASPECT) keeps its mask's width.
    mask_width = vals.size / max(length, 1.0)
    width = np.nan
    if out["aspect_ratio"] >= _LINE_MIN_ASPECT:
        closed = cv2.morphologyEx(tight.view(np.uint8), cv2.MORPH_CLOSE, _K3).view(bool)
        ly, lx = (sy, sx) if np.array_equal(closed, tight) else _nonzero(skeletonize(closed))
        width = _profile_width_px(gray_full, ly + (origin[0] + y0 - 1), lx + (origin[1] + x0 - 1),
                                  max(3.0 * mask_width, 6.0))
    out["profile_width_um"] = (width if np.isfinite(width) else mask_width) * um
    return out, window, (ys + origin[0], xs + origin[1])


def _cladding_radius(x: np.ndarray, y: np.ndarray, geometry: dict) -> np.ndarray:
    """Distance (px) of points from the fiber center in the cladding ellipse's
    equal-area metric: ``cladding_radius_px`` on the fitted edge (as the zone map)."""
    e = geometry.get("cladding_ellipticity", 0.0)
    e = float(e) if e is not None and np.isfinite(e) else 0.0
    t = np.deg2rad(geometry.get("cladding_angle_deg", 0.0) or 0.0)
    return np.sqrt(equal_area_radius2(x - geometry.get("center_x", np.nan),
                                      y - geometry.get("center_y", np.nan), e, t))


def _same_side(zone_c: np.ndarray, mask: np.ndarray, origin: tuple[int, int],
               geometry: dict) -> np.ndarray:
    """The zone crop with the pixels across the cladding edge from most of the defect
    set to 0 (outside the analysed area), so that its local background is the surface
    it lies on: the ring of a chip or a pit at the edge would otherwise mix glass and
    ferrule, and its contrast against their median and their spread (the two levels')
    would make a dark notch look faint. Crops the edge does not cross, and defects
    with fewer than ``_SIDE_MIN_PX`` ring-sized pixels on their side, are unchanged."""
    rc = geometry.get("cladding_radius_px", np.nan)
    if not np.isfinite(rc) or not np.isfinite(geometry.get("center_x", np.nan)):
        return zone_c
    h, w = zone_c.shape
    y0, x0 = origin
    cx, cy = geometry["center_x"] - x0, geometry["center_y"] - y0
    near = np.hypot(min(max(cx, 0), w) - cx, min(max(cy, 0), h) - cy)
    far = np.hypot(max(cx, w - cx), max(cy, h - cy))
    if not (near < rc * 1.05 + 2 and far > rc * 0.95 - 2):  # (an ellipse within 5 %)
        return zone_c
    yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w]
    inside = _cladding_radius(xx.astype(np.float64), yy.astype(np.float64), geometry) <= rc
    side = inside if np.count_nonzero(inside & mask) * 2 >= np.count_nonzero(mask) else ~inside
    if np.count_nonzero(side & ~mask & (zone_c > 0)) < _SIDE_MIN_PX:
        return zone_c
    return np.where(side, zone_c, 0).astype(zone_c.dtype)


_EDGE_NAMES = ["cladding_edge_distance_um", "cladding_overhang_um", "edge_straddle"]


def _edge_features(pixels: list[tuple[np.ndarray, np.ndarray]], geometry: dict) -> np.ndarray:
    """Distance to the cladding edge (chips sit on it) in the cladding ellipse's metric,
    overhang beyond it and straddle of each defect's ``(rows, columns)``, all at once:
    ``(n, len(_EDGE_NAMES))`` (lengths in µm)."""
    size = np.array([len(p[0]) for p in pixels])
    start = np.concatenate([[0], np.cumsum(size[:-1])])
    r = _cladding_radius(np.concatenate([p[1] for p in pixels]),
                         np.concatenate([p[0] for p in pixels]), geometry)
    rc = geometry.get("cladding_radius_px", np.nan)
    um = float(geometry["um_per_px"])
    beyond = (np.add.reduceat((r > rc).astype(np.intp), start) / size if np.isfinite(rc)
              else np.full(len(size), np.nan))
    return np.column_stack([np.minimum.reduceat(np.abs(r - rc), start) * um,
                            (np.maximum.reduceat(r, start) - rc) * um,
                            2.0 * np.minimum(beyond, 1.0 - beyond)])


def defect_features(gray: np.ndarray, instance_map: np.ndarray, zone_map: np.ndarray,
                    defects: pd.DataFrame, geometry: dict) -> pd.DataFrame:
    """Shape, intensity, texture, gradient and edge-distance features of every defect.

    Size, location and zone (``area_um2``, ``length_um``, ``radius_um``, ``zone`` ...)
    are columns of the ``detect_defects`` table and are not repeated here; a defect's
    full feature vector is that table joined with this one on ``number``.

    Parameters
    ----------
    gray : (H, W) float array in [0, 1]
        The analysed image.
    instance_map : (H, W) integer array
        0 for background, else the defect number (``defects.detect_defects``).
    zone_map : (H, W) uint8 array
        Zone ids (``zones.zone_label_map``); 0 = outside the analysed area.
    defects : DataFrame
        Defect table with a ``number`` column; one output row per number, same order.
    geometry : dict
        Fiber geometry with ``um_per_px`` and, when a fiber was found, ``center_x``,
        ``center_y`` and ``cladding_radius_px`` (NaN otherwise:
        ``cladding_edge_distance_um`` is NaN).

    Returns
    -------
    DataFrame
        ``number`` and the columns ``DEFECT_FEATURE_NAMES`` (units in
        ``FEATURE_UNITS``). Lengths in µm, intensities in gray [0, 1].

    Notes
    -----
    The background ring is ``max(2 px, 3 µm)`` wide and starts beyond a ``max(1 px,
    1 µm)`` rim (blur, soft edges and halos are measured there, ``rim_contrast``); it
    excludes other defects, pixels outside the analysed area and pixels across the
    cladding edge from most of the defect (``_same_side``), and is summarised
    robustly (median, 1.4826·MAD). GLCM and LBP use 32 gray levels of the [0, 1] range,
    so texture compares across images, on a window of at most 48 × 48 px centred on the
    defect. The IEC sizes come from the image, not from the mask's pixel count:
    ``feret_um`` from the outline at half the defect's contrast, ``profile_width_um``
    from the half-maximum width of the cross profiles of a line.
    """
    um = float(geometry["um_per_px"])
    numbers = defects["number"].to_numpy(dtype=np.int64)
    cols = DEFECT_FEATURE_NAMES
    if numbers.size == 0:
        return pd.DataFrame(np.empty((0, len(cols) + 1)), columns=_COLUMNS)
    gray = np.asarray(gray, dtype=np.float32)
    lab = np.asarray(instance_map)  # crops compared to a number: no whole-image copy
    if all(c in defects.columns for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
        boxes = np.column_stack([defects[c].to_numpy(np.int64)
                                 for c in ("bbox_y", "bbox_x", "bbox_h", "bbox_w")])
    else:
        from scipy.ndimage import find_objects

        found = find_objects(lab)
        missing = [int(n) for n in numbers if not (0 < n <= len(found) and found[n - 1])]
        if missing:
            raise ValueError(f"defects {missing} are not in the instance map")
        boxes = np.array([(s[0].start, s[1].start, s[0].stop - s[0].start, s[1].stop - s[1].start)
                          for s in (found[n - 1] for n in numbers)])
    rim_px, ring_px = _ring_px(um)
    margin = ring_px + 2
    halo_px = min(max(2, int(round(_HALO_UM / um))), ring_px)
    kernels = (_disc(rim_px), _disc(ring_px))
    H, W = lab.shape
    rows, windows, pixels = [], [], []
    # Python ints: a NumPy int64 number would compare the uint16 instance crop in int64
    for n, (by, bx, bh, bw) in zip(numbers.tolist(), boxes.tolist()):
        y0, y1 = max(by - margin, 0), min(by + bh + margin, H)
        x0, x1 = max(bx - margin, 0), min(bx + bw + margin, W)
        lab_c = lab[y0:y1, x0:x1]
        zone_c = _same_side(zone_map[y0:y1, x0:x1], lab_c == n, (y0, x0), geometry)
        row, window, pix = _crop_features(gray[y0:y1, x0:x1], lab_c, zone_c, n, (y0, x0),
                                          kernels, halo_px, um, gray)
        rows.append(row)
        windows.append(window)
        pixels.append(pix)
    # features computed for all defects at once (texture by batches: bounded memory)
    texture = np.vstack([_texture(windows[i:i + _TEXTURE_BATCH])
                         for i in range(0, len(windows), _TEXTURE_BATCH)])
    batched = np.column_stack([texture, _edge_features(pixels, geometry)]).tolist()
    for row, values in zip(rows, batched):
        row.update(zip(_TEXTURE_NAMES + _EDGE_NAMES, values))
    compact = (float(np.count_nonzero(defects["shape_class"].to_numpy() == "compact"))
               if "shape_class" in defects else np.nan)
    for row in rows:
        row["image_compact_defects"] = compact
    out = pd.DataFrame(np.array([[0.0, *(r[k] for k in cols)] for r in rows]), columns=_COLUMNS)
    out["number"] = numbers  # replacing a column is cheaper than inserting one
    return out


def zone_features(gray: np.ndarray, zone_map: np.ndarray, geometry: dict,
                  zones_um: dict) -> pd.DataFrame:
    """Intensity, texture and geometry of every zone of one image.

    Parameters
    ----------
    gray : (H, W) float array in [0, 1]
    zone_map : (H, W) uint8 array
        Zone ids; 0 = not analysed.
    geometry : dict
        Fiber geometry with ``um_per_px`` (and ``center_x``, ``center_y``).
    zones_um : dict
        ``{core|cladding|adhesive|contact: [inner, outer]}`` diameters in µm, as in the
        fiber catalog. The ferrule zone (5) extends beyond ``contact``.

    Returns
    -------
    DataFrame
        One row per zone present in the map (1..5), columns of ``ZONE_FEATURE_DESCRIPTIONS``.
        ``visible_fraction`` is NaN for the open ferrule zone.
    """
    um = float(geometry["um_per_px"])
    gray = np.asarray(gray, dtype=np.float32)
    # zone id and gray level in one byte: one histogram gives every zone's pixel count and
    # level histogram (zone ids are 0..5, levels 0..31)
    zm = np.asarray(zone_map, dtype=np.uint8)
    level = np.multiply(gray, np.float32(_LEVELS))
    key = np.clip(level, 0, _LEVELS - 1, out=level).astype(np.uint8)
    key += zm * np.uint8(_LEVELS)
    if key.size < 1 << 24:  # OpenCV's float32 counts are exact integers below 2^24
        hist = cv2.calcHist([key], [0], None, [256], [0, 256]).astype(np.int64)
    else:
        hist = np.bincount(key.ravel(), minlength=256)
    hist = hist.ravel()[: 6 * _LEVELS].reshape(6, _LEVELS)
    n = hist.sum(axis=1)
    # NumPy's magnitude, in place: OpenCV's cv2.magnitude rounds differently with its
    # thread count
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    gx *= gx
    gy *= gy
    gx += gy
    magnitude = np.sqrt(gx, out=gx)
    # every zone's box at once: bit z set in a row's (column's) OR where zone z lies on it
    bits = np.left_shift(np.uint8(1), zm)
    row_bits, col_bits = np.bitwise_or.reduce(bits, axis=1), np.bitwise_or.reduce(bits, axis=0)
    # moments of the gray level and mean gradient from OpenCV's masked statistics in each
    # zone's box (several times faster than float64 bincounts over the image); OpenCV 5.0
    # (as pinned) sums masked floats sequentially in double, without IPP, so one channel
    # at a time gives the sums of a two-channel call, ~2x faster (its loop keeps the sums
    # in registers)
    s1, s2, sg = np.zeros(6), np.zeros(6), np.zeros(6)
    for zid in (np.nonzero(n[1:])[0] + 1).tolist():  # zone 0 (not analysed) has no row
        ys, xs = np.flatnonzero(row_bits & (1 << zid)), np.flatnonzero(col_bits & (1 << zid))
        box = np.s_[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        inside = (zm[box] == zid).view(np.uint8)  # (an int64 id would compare in int64: 10x slower)
        mean, std = cv2.meanStdDev(gray[box], mask=inside)
        s1[zid] = mean[0, 0] * n[zid]
        s2[zid] = (std[0, 0] ** 2 + mean[0, 0] ** 2) * n[zid]
        sg[zid] = cv2.mean(magnitude[box], mask=inside)[0] * n[zid]
    rows = []
    for zid in range(1, 6):
        if n[zid] == 0:
            continue
        name = ZONE_NAMES[zid]
        inner, outer = zones_um.get(name, (max(v[1] for v in zones_um.values()), np.nan))
        nominal = np.pi / 4 * (outer**2 - inner**2) if np.isfinite(outer) else np.nan
        area_um2 = n[zid] * um * um
        mean = s1[zid] / n[zid]
        p = hist[zid][hist[zid] > 0] / n[zid]
        rows.append({
            "zone": zid, "zone_name": name,
            "inner_diameter_um": float(inner), "outer_diameter_um": float(outer),
            "area_px": int(n[zid]), "area_um2": float(area_um2),
            "visible_fraction": float(min(area_um2 / nominal, 1.0)) if nominal > 0 else np.nan,
            "intensity_mean": float(mean),
            "intensity_std": float(np.sqrt(max(s2[zid] / n[zid] - mean * mean, 0.0))),
            "gradient_mean": float(sg[zid] / n[zid]) / um,
            "entropy": float(-(p * np.log2(p)).sum()),
        })
    return pd.DataFrame(rows, columns=[c for c, _, _ in _ZONE_FEATURES])
