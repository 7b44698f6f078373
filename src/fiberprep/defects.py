"""Unsupervised defect detection on connector end-face images.

Region defects (pits, digs, dust, oil, chips) are found with a DO2MR-style
difference of min-max ranking filters, scratches with an LEI-style linear
enhancement, both on an illumination-flattened image expressed in units of the
local noise. Candidates are merged into one instance per physical defect and
measured (zone, size in µm, orientation, signed contrast, shape class).

References
----------
Mei, S., Wang, Y., Wen, G., Hu, Y. (2018). Automated inspection of defects in
optical fiber connector end face using novel morphology approaches. Sensors
18(5), 1408. https://doi.org/10.3390/s18051408
"""

from __future__ import annotations

import functools
import math
from itertools import combinations

import cv2
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from skimage.morphology import skeletonize

from fiberprep.stats import lookup, median

COLUMNS = [
    "number", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "centroid_x", "centroid_y",
    "area_px", "area_um2", "zone", "zones_touched", "innermost_zone", "radius_um",
    "angle_deg", "length_um", "width_um", "orientation_deg", "contrast", "shape_class",
    "source",
]

_REGION, _SCRATCH = 1, 2
# Two defects are of opposite polarity (``_polarity``) when the product of theirs is
# below this: one at least half dark, the other at least half bright.
_OPPOSITE = -0.25
# A blob split off a scratch (a pit on its path) is at most this long for its width.
_ROUND = 2.0
# A particle or chip on an edge band is at most this long for its width (a chip is a
# notch along the edge; the residues of an epoxy ring or a misfit are thinner arcs).
_NOTCH = 4.0
# A bead of a scratch (a blob ahead of its end) is at most this many times as thick as the
# line: the scratch's own width, blurred; a wider blob there is a pit or a particle (it
# was 2x or half scratch_max_width_um: generated sets n=100, seeds 7 / 11, recall +0 / +1
# pit, precision unchanged).
_BEAD = 1.5
# ... and a round bead is of the line's kind: their polarities differ by at most this (a
# shaded groove, near 0, breaks into shaded dots; a dark pit at its end is no bead of it).
# Generated sets n=200, seeds 1 / 7 / 11: found +3 / +1 / 0 (pits and a chip beside shaded
# grooves' ends), false detections unchanged; independent 101+202+303 unchanged; real
# photos: two dark dots beside lines of specks (DSCN0040, DSCN0056) their own instances.
_BEAD_POLARITY = 0.75
# A scratch from which this many round widenings split off is dashed or beaded: they are
# stretches of the line, not pits on it.
_DASHES = 3
# A line response lying this much on two or more round blobs, fewer than _DASHES, is
# theirs, not a scratch (a pit beside a particle read as one short line covered 0.81 of
# it). Cached sets (660 + 220 images): ours found +1, false and the rest unchanged; two
# pairs of dark dots on two real photos become two defects each.
_ROW_COVER = 0.7


def detect_defects(gray, zone_map, geometry, params):
    """Find defects in an end-face image and measure each instance.

    Parameters
    ----------
    gray : ndarray of float32, shape (H, W)
        Image in [0, 1]; fiber darker or brighter than the ferrule.
    zone_map : ndarray of uint8, shape (H, W)
        Zone ids (0 outside the analysed area, 1 core ... 5 ferrule beyond contact).
    geometry : dict
        Keys as returned by ``zones.measure_geometry``; used: ``um_per_px``,
        ``center_x``, ``center_y``, ``cladding_radius_px``, ``cladding_ellipticity``,
        ``cladding_angle_deg``, ``core_radius_px``, ``core_visible``. A missing
        or NaN centre/radius (``zones.mode: none``) means the frame has no fiber
        edge: no edge model, NaN radius/angle.
    params : dict
        The ``detection`` section of the config (sizes in µm).

    Returns
    -------
    instance_map : ndarray of uint16, shape (H, W)
        0 for no defect, else the defect's number 1..n.
    table : pandas.DataFrame
        One row per instance, columns ``COLUMNS`` (see docs/architecture.md).
        ``zones_touched`` is a comma-separated string of zone ids (``"2,3"``);
        ``radius_um``/``angle_deg`` locate the centroid around the fiber
        centre; ``angle_deg`` and ``orientation_deg`` (major-axis direction)
        are in image coordinates (x right, y down, degrees clockwise on
        screen); ``contrast`` is the mean of (image - local background) over
        the instance in gray units, negative for dark defects.

    Notes
    -----
    The image is flattened in the log domain (illumination and most defect
    contrasts are multiplicative): one vignetting surface for the field with
    a level per physical region (core, cladding, ferrule), a robust box mean
    per region (in a large core over a graded-index core's reflectance dome,
    when it shows one), and in annuli around the cladding and large core edges robust arc
    means in polar coordinates of what the vignetting surface leaves, which
    remove the edge, epoxy ring, halo and tilt shadow but keep defects that
    break the circle. Residuals are divided by the local noise. DO2MR finds
    region defects at two scales (on the bands along the edges, their textured
    bins included, only strong, compact particles and chips that stand out from
    the band's texture; the pieces of one faint film, which the residual smoothed
    over half a coarse block connects, or which face each other across an edge,
    are joined, and so are a particle's pieces either side of an edge band), LEI finds
    scratches (one label per scratch: crossing ones stay apart, and so do parallel
    ones side by side, which keep a region candidate they cover to themselves; bent
    and faded pieces are followed end to end; a second pass on a high-pass image finds
    lines too thin to stand out of a ferrule's grain at the LEI's resolution); a blob
    thicker than the scratch it lies on, or wider than it at a point of its
    path (a pit on it), or of the opposite polarity (a dark pit on a bright
    scratch), stays its own defect. A large region whose edge is wider than any
    defect's (a swell the background left under a hot spot) is dropped; a region
    instance takes the holes it encloses (a particle or film found as its outline).
    A dust cluster the merge gap joined is split into its particles once cut at half
    height; a piece so cut off that is a tilted probe's shadow along the inside of the
    edge goes (``_drop_split_shades``).
    Region masks are cut where the
    intensity is half way between the local background and the defect's
    core (a blurred step's true edge), lines at half their local peak (of each flank's
    sign for a shaded groove); a line only a few pixels wide at the work resolution at
    half the peak of the unsmoothed residual (``_recut_lines``). Work is restricted
    to the analysed area's bounding box at a resolution no finer than
    ``work_um_per_px``; masks are refined at the input resolution.

    References
    ----------
    Mei et al. (2018), Sensors 18(5), 1408 (DO2MR, LEI).
    """
    gray = np.asarray(gray, dtype=np.float32)
    zone_map = np.asarray(zone_map)
    if gray.ndim != 2 or gray.shape != zone_map.shape:
        raise ValueError(f"gray {gray.shape} and zone_map {zone_map.shape} must be equal 2-D shapes")
    instance_map = np.zeros(gray.shape, np.uint16)
    x0, y0, bw, bh = cv2.boundingRect((zone_map > 0).view(np.uint8))
    if bw == 0:
        return instance_map, _empty_table()
    upp = _um_per_px(geometry, params)
    crop = (slice(y0, y0 + bh), slice(x0, x0 + bw))
    factor = params["work_um_per_px"] / upp
    factor = factor if factor >= 1.25 else 1.0
    log_full = gray[crop] + np.float32(params["log_offset"])
    cv2.log(log_full, dst=log_full)  # (OpenCV's vectorised log: 4x numpy's here)
    zm_full = zone_map[crop]
    lg, zm = _resample(log_full, zm_full, factor)
    lg = _without_line_pattern(lg, zm > 0)
    saturated = _saturated(gray[crop], lg.shape, params)
    wupp = upp * factor
    px = lambda um: um / wupp  # noqa: E731  (µm -> work pixels)
    geo = _work_geometry(geometry, x0, y0, factor)

    regions, edge_band, rings = _physical_regions(zm.shape, geo, px, params)
    regions[zm == 0] = 0  # outside the analysed area (and the field stop: zones.field_of_view)
    textured = np.zeros(zm.shape, bool)
    clipped, near_clipped = _clipped(saturated, regions, px(params["noise_um"]), params["saturation_max_share"])
    bg, sigma, dim, floor = _flatten(lg, regions, rings, textured, clipped, near_clipped, px, params)
    hard_band = edge_band | textured
    regions[dim] = 0
    valid = regions > 0  # the analysed pixels (regions is final from here on)
    outside = ~valid
    resid = lg - bg
    lam = _skew_exponent(resid, sigma, valid & ~edge_band & ~clipped, params)
    # (exp(λ r) - 1) / λ keeps r's slope at 0: sigma stays its noise unit
    z = (np.expm1(np.float32(lam) * resid) / np.float32(lam) if lam else resid) / sigma
    z[outside] = 0.0
    b = int(params["border_px"])  # sensor border rows/columns are often faulty: ignored
    if b > 0:
        z[:b], z[-b:], z[:, :b], z[:, -b:] = 0.0, 0.0, 0.0, 0.0
    seed_ok = valid & ~hard_band & ~clipped

    zs, zscale = _smooth_normalised(z, regions, seed_ok, params["smooth_px"],
                                    px(params["noise_um"]), params["flatten_clip_sigma"], near_clipped)
    # physical floor: a defect must differ from its background by min_contrast
    rel = cv2.GaussianBlur(resid, (0, 0), params["smooth_px"])
    # the linear residual (image / background - 1), smoothed as z: masks are cut on it
    lin = cv2.exp(resid)
    lin -= np.float32(1)
    lin = cv2.GaussianBlur(lin, (0, 0), params["smooth_px"])
    visible = np.abs(rel) >= 0.5 * math.log1p(params["min_contrast"])
    # on the edges only a strong, compact defect may seed (a particle sitting on the edge)
    # 1: the edge band, 2: its textured bins (the arcs' grain is high there)
    bands = edge_band.astype(np.int8)
    bands[textured] = 2
    bands[outside] = 0
    region_mask = _region_candidates(z, zs, regions, seed_ok, bands, rel, lin, floor / sigma, px, params)
    region_mask = _join_film_pieces(region_mask, lin, valid, px, params)
    centre = None if geo is None else (geo["cx"], geo["cy"])
    # a blob wider than any scratch (and the line filter's side lines around it) is
    # no place for a scratch: its outline's line response would join the scratches
    # crossing or passing it into one bent, blob-hugging line
    blob = np.zeros(region_mask.shape, bool)
    reach = _disk(2 * px(params["lei_offset_um"]))
    win = _mask_box(region_mask, reach.shape[0])  # candidates' box
    wide = cv2.morphologyEx(region_mask[win].view(np.uint8), cv2.MORPH_OPEN,
                            _disk(px(params["scratch_max_width_um"])))
    blob[win] = cv2.dilate(wide, reach) > 0
    scratch_labels, widths, line_widths = _scratch_candidates(zs, seed_ok & ~blob, visible, centre, px, params)
    # a speck this far from its background, dark or bright, is no grain (_merge)
    dot = np.abs(rel) >= math.log1p(params["dot_min_contrast"])
    region_mask = _without_runs(region_mask, scratch_labels, zs, px, params)
    labels, source = _merge(region_mask, scratch_labels, widths, line_widths, zs, dot, px, params)
    for ring in rings:  # the cladding's edge, and a large core's
        labels, source = _drop_rings(labels, source, ring, zs, px, params)
    if rings:  # pieces of a broken epoxy ring
        labels, source = _drop_ring_pieces(labels, source, lg, valid, rings[0], px, params)
    labels, source = _join_collinear(labels, source, zs, px, params)
    labels, source = _fill_films(labels, source, lin, valid, px, params)
    labels, source = _join_across_edges(labels, source, lin, regions, hard_band, px, params)
    labels, source = _drop_swells(labels, source, resid, valid, px, params)
    labels = _fill_enclosed(labels, source, valid)
    if labels.max() == 0:
        return instance_map, _empty_table()
    ys, xs = _nonzero(labels)
    k = labels[ys, xs]
    mean_absz = (np.bincount(k, np.abs(zs[ys, xs]), minlength=labels.max() + 1)
                 / np.maximum(np.bincount(k, minlength=labels.max() + 1), 1))[1:]
    if factor != 1.0:
        size = (zm_full.shape[1], zm_full.shape[0])
        bg = cv2.resize(bg, size, interpolation=cv2.INTER_LINEAR)
        sigma = cv2.resize(sigma, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels.astype(np.uint16), size, interpolation=cv2.INTER_NEAREST)
        zscale = cv2.resize(zscale, size, interpolation=cv2.INTER_LINEAR)
        zf = cv2.GaussianBlur((log_full - bg) / sigma, (0, 0), params["smooth_px"]) / zscale
        lin_f = cv2.GaussianBlur(cv2.exp(log_full - bg) - np.float32(1), (0, 0), params["smooth_px"])
        labels = _refine(labels, zf, lin_f, int(math.ceil(factor)), (source & _SCRATCH) > 0,
                         int(math.ceil(px(params["scratch_reach_um"]) * factor)), params)
        band = cv2.resize(hard_band.view(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    else:
        labels = _recut_lines(labels, (source & _SCRATCH) > 0, z, int(math.ceil(px(params["scratch_reach_um"]))),
                              params)
        zf, band, lin_f = zs, hard_band, lin
    labels[zm_full == 0] = 0
    # the particles of a dust cluster that the merge gap joined, apart once cut at half height
    n = max(len(source), len(mean_absz) + 1, int(labels.max()) + 1)
    source = np.r_[source, np.zeros(n - len(source), source.dtype)]
    mean_absz = np.r_[mean_absz, np.zeros(n - 1 - len(mean_absz))]
    ys, xs = _nonzero(labels)
    major, minor = _axes(labels[ys, xs], ys, xs, n)
    # (pieces along a line are a faint scratch's dashes: one defect)
    apart = (source == _REGION) & (major < params["linear_aspect"] * np.maximum(minor, 1.0))
    min_area = params["min_area_um2"] / upp**2
    labels = _without_haze(labels, apart, zf, lin_f, min_area, params)
    labels, parents = _split_apart(labels, apart, zf, band, min_area, params)
    source, mean_absz = np.r_[source, source[parents]], np.r_[mean_absz, mean_absz[parents - 1]]
    if rings and len(parents):
        labels = _drop_split_shades(labels, source, n, _at_scale(rings[0], factor, zm_full.shape), zf,
                                    lambda um: um / upp, params)
    labels = _drop_short_lines(labels, source, params["scratch_min_length_um"] / upp)
    instance_map[crop] = labels
    table = _measure(instance_map, gray, zone_map, geometry, upp, crop, bg, source, mean_absz, params)
    table = _without_lay(table, params)
    # Renumber 1..n in case refinement, cropping or the lay emptied an instance.
    lut = np.zeros(int(instance_map.max()) + 1, np.uint16)
    lut[table["number"].to_numpy()] = np.arange(1, len(table) + 1, dtype=np.uint16)
    instance_map = _relabel(instance_map, lut)
    table["number"] = np.arange(1, len(table) + 1)
    return instance_map, table.reset_index(drop=True)


def _without_line_pattern(lg, valid, sigma=4.0):
    """``lg`` (log image) without the sensor's column and row pattern: each column's
    offset from its neighbours (the median, over every fourth row, of what a Gaussian
    of ``sigma`` px along the row leaves), then each row's, subtracted over ``valid``.

    A column's gain or offset of a few tenths of a % on a smooth, quiet ferrule
    otherwise passes for a scratch all along it (twenty-second renderer: most of its
    false detections). Each offset less three standard errors of its median is
    subtracted (noise alone moves no line); a defect, an edge or the field stop covers
    too few of a column's pixels to move the median, and steep pixels (an edge, a ring,
    a defect: 6 times the median gradient, found at half resolution, and ``sigma`` px
    around) and those outside ``valid`` vote for no offset.
    """
    h, w = lg.shape
    if h < 4 or w < 4 or not valid.any():
        return lg
    half = cv2.resize(lg, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    grad = np.abs(cv2.Sobel(half, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(half, cv2.CV_32F, 0, 1))
    lit = valid[: 2 * (h // 2) : 2, : 2 * (w // 2) : 2]
    if not lit.any():
        return lg
    steep = (grad > 6.0 * float(median(grad[lit][::7]))).view(np.uint8)
    steep = cv2.dilate(steep, _disk(sigma)) > 0
    kernel = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma, cv2.CV_32F)
    one = np.ones((1, 1), np.float32)
    out = lg.copy()
    for axis in (0, 1):  # columns (their offsets along x, from every fourth row), then rows
        if axis == 0:
            sub, kx, ky = out[: 2 * (h // 2) : 4], kernel, one
            flat = valid[: 2 * (h // 2) : 4] & ~steep[::2, np.minimum(np.arange(w) // 2, w // 2 - 1)]
        else:
            sub, kx, ky = np.ascontiguousarray(out[:, : 2 * (w // 2) : 4]), one, kernel
            flat = valid[:, : 2 * (w // 2) : 4] & ~steep[np.minimum(np.arange(h) // 2, h // 2 - 1), ::2]
        high = sub - cv2.sepFilter2D(sub, -1, kx, ky, borderType=cv2.BORDER_REFLECT)
        high[~flat] = 0.0
        n = high.shape[axis]
        offset = np.partition(high, n // 2, axis=axis).take(n // 2, axis=axis)
        # less three standard errors of a median: noise alone moves no line
        error = 1.2533 * _mad_std(high[flat][::7]) / np.sqrt(np.maximum(np.count_nonzero(flat, axis=axis), 1))
        offset = (np.sign(offset) * np.maximum(np.abs(offset) - 3.0 * error, 0.0)).astype(np.float32)
        np.subtract(out, offset[None, :] if axis == 0 else offset[:, None], out=out, where=valid)
    return out


def _saturated(gray, shape, params):
    """Pixels (at the work ``shape``) mostly clipped at the sensor's full scale: within
    ``saturation_tol`` of the image's maximum, itself at least ``saturation_min_level``
    (a file's full scale: a 16-bit image's brightest pixel may lie anywhere above half
    of it), and flat (a 3x3 range of at most one 8-bit level; a colour camera's clipped
    channels leave the gray a little below 1), when at least ``saturation_min_share`` of
    the pixels are. They hold no noise."""
    top = gray.max()
    if top < params["saturation_min_level"]:
        return np.zeros(shape, bool)
    near_top = gray >= top - np.float32(params["saturation_tol"])
    if np.count_nonzero(near_top) < params["saturation_min_share"] * gray.size:
        return np.zeros(shape, bool)
    one = np.ones((3, 3), np.uint8)
    flat = cv2.dilate(gray, one) - cv2.erode(gray, one) <= np.float32(1.5 / 255)
    clipped = near_top & flat
    if np.count_nonzero(clipped) < params["saturation_min_share"] * gray.size:
        return np.zeros(shape, bool)
    if clipped.shape == shape:
        return clipped
    return cv2.resize(clipped.view(np.uint8), shape[::-1], interpolation=cv2.INTER_AREA) > 0


def _clipped(saturated, regions, reach, max_share):
    """``(clipped, near)``: the ``saturated`` pixels of regions at most ``max_share``
    saturated, and the pixels within ``reach`` of them. Clipped pixels hold no noise and
    show no defect; near them a grain shows only where it dips below full scale, too
    little to measure the local noise from, and the region's, measured away from the
    clipping, stands in. A region saturated beyond that (a hot spot's glass, 0.92-0.96
    on the twenty-fourth renderer's) keeps its pixels: what is not clipped there is
    mostly defects, no noise to measure."""
    if not saturated.any():
        return saturated, saturated
    n = int(regions.max()) + 1
    share = np.bincount(regions.ravel(), saturated.ravel(), minlength=n) / np.maximum(
        np.bincount(regions.ravel(), minlength=n), 1)
    clipped = saturated & (lookup(regions, share <= max_share, np.uint8) > 0)
    k = _odd(reach)
    near = cv2.dilate(clipped.view(np.uint8), np.ones((k, k), np.uint8)) > 0
    return clipped, near


def _physical_regions(shape, geo, px, params):
    """Physical regions, the no-seed band on the edges and the edge annuli.

    The IEC zones are not physical boundaries (the cladding edge lies inside
    zone C), so flattening uses the measured edges: region 1 core (when
    visible), 2 cladding, 3 everything outside the glass. Returns
    ``(regions int8, hard_band bool, rings)``; each ring is
    ``(r_lo, edge_radius, r_hi, radius_map, centre, r_full)`` with the radius map
    normalised so that the fitted cladding ellipse (or core circle around
    the core centre) lies at ``edge_radius``; between ``r_lo`` and ``r_full``
    the ring's background blends into the region's (the edge's soft inner rim).
    """
    regions = np.full(shape, 3, np.int8)
    band = np.zeros(shape, bool)
    if geo is None:
        return regions, band, []
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    # float32 throughout (int ogrid minus a float32 would promote every full-size step to float64)
    dx = (np.arange(w, dtype=np.float32) - np.float32(geo["cx"]))[None, :]
    dy = (np.arange(h, dtype=np.float32) - np.float32(geo["cy"]))[:, None]
    e, t = geo["ellipticity"], math.radians(geo["angle_deg"])
    if e > 0:
        a = 2.0 / (2.0 - e)  # semi-axes relative to the mean radius
        c, sn = np.float32(math.cos(t) / a), np.float32(math.sin(t) / a)
        u = dx * c + dy * sn
        v = (dy * c - dx * sn) / np.float32(1 - e)
        r = np.sqrt(u * u + v * v)
    else:
        r = np.sqrt(dx * dx + dy * dy)
    half = px(params["edge_band_um"])
    rc = geo["r_clad"]
    regions[r < rc] = 2
    band |= (r > rc - half) & (r < rc + px(params["epoxy_band_um"]))
    inner, blend = px(params["ring_inner_um"]), px(params["ring_blend_um"])
    rings = [(rc - inner - blend, rc, rc + px(params["ring_outer_um"]), r, (geo["cx"], geo["cy"]),
              rc - inner)]
    if geo["r_core"] is not None:
        rk, kx, ky = geo["r_core"], geo["core_cx"], geo["core_cy"]
        # distance to the core centre, computed in the core's neighbourhood only (inf beyond)
        reach = rk + half + px(params["ring_inner_um"]) + 2
        ys = slice(max(0, int(ky - reach)), max(0, int(ky + reach) + 2))
        xs = slice(max(0, int(kx - reach)), max(0, int(kx + reach) + 2))
        rk_map = np.full(shape, np.inf, np.float32)
        rk_map[ys, xs] = np.sqrt((xx[:, xs] - np.float32(kx)) ** 2 + (yy[ys] - np.float32(ky)) ** 2,
                                 dtype=np.float32)
        box = rk_map[ys, xs]  # (inf beyond it)
        regions[ys, xs][box < rk] = 1
        band[ys, xs] |= np.abs(box - rk) < half
        if rk >= px(params["core_ring_min_um"]):
            # the arcs follow the core's edge, not its middle: arcs near the centre are
            # short, and their robust means would follow a pit or a particle there
            full = max(rk - inner, params["core_ring_min_rel"] * rk)
            rings.append((full - blend, rk, rk + inner, rk_map, (kx, ky), full))
        else:
            band |= np.abs(rk_map - rk) < half + inner
    return regions, band, rings


def _smooth_normalised(z, regions, seed_ok, smooth_px, nk, clip, near_clipped=None):
    """Gaussian-smoothed z divided by its local robust RMS, region by region.

    σ of z is pixel noise; smoothing keeps more of correlated texture
    (ceramic grain) than of white noise, and by an amount that varies over
    the image (where σ sits on the quantisation floor, the grain is below
    it), so the smoothed image gets its own local noise unit: the RMS over
    an ``nk`` box (blocks of the region) of the pixels within ``clip`` times
    the region's IQR σ (defects left out). The floor is the σ that unit
    white noise keeps after the smoothing (1 / (2 sqrt(pi) s)), so
    quantised flat images are not over-amplified. The core, the cladding's
    glass, takes the cladding's IQR σ when smaller (a film over much of a
    core widens the core's own). ``near_clipped``, where too little grain shows to
    measure, the unit is at least the region's. Returns the normalised
    image and the per-pixel divisor.
    """
    zs = cv2.GaussianBlur(z, (0, 0), smooth_px)
    floor = 1.0 / (2.0 * math.sqrt(math.pi) * smooth_px)
    glob = np.maximum(np.nan_to_num(_per_region(zs, regions, seed_ok, _iqr_std), nan=floor), floor)
    if glob.size > 2:  # the core is the cladding's glass: no rougher (a film on it widens its IQR)
        glob[1] = min(glob[1], glob[2])
    w = (seed_ok & (np.abs(zs) < clip * lookup(regions, glob, np.float32))).astype(np.float32)
    q = max(1, int(nk // 8))
    area, back, centres = _block_means(q, zs.shape)
    kn = (_odd(nk / q),) * 2
    box = lambda v: cv2.boxFilter(v, -1, kn, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    sq, den_all, reg = area(zs * zs * w), area(w), centres(regions)  # blocks split by centre region
    scale = np.ones(zs.shape, np.float32)
    for k in _region_ids(regions):
        mk = (reg == k).astype(np.float32)
        num, den = box(sq * mk), box(den_all * mk)
        local = np.where(den > 1e-3, np.sqrt(np.maximum(num, 0) / np.maximum(den, 1e-6)), np.float32(glob[k]))
        _copy_where(scale, back(local.astype(np.float32)), regions == k)
    np.maximum(scale, np.float32(floor), out=scale)
    if near_clipped is not None and near_clipped.any():
        np.maximum(scale, lookup(regions, glob, np.float32), out=scale, where=near_clipped)
    return zs / scale, scale


def _per_region(values, regions, ok, stat, max_n=20000):
    """``stat`` of ``values`` over the ``ok`` pixels of each region id (NaN: too few).

    Computed on an even pixel subsample of each region's bounding box
    (~``max_n`` pixels of the region): statistics, not masks. Returns an
    array indexed by region id.
    """
    out = np.full(int(regions.max()) + 1, np.nan)
    for k in _region_ids(regions):
        m = regions == k
        bx, by, bw, bh = cv2.boundingRect(m.view(np.uint8))
        st = max(1, int(math.sqrt(np.count_nonzero(m) / max_n)))
        win = np.s_[by:by + bh:st, bx:bx + bw:st]
        sel = m[win] & ok[win]
        if np.count_nonzero(sel) > 16:
            out[k] = stat(values[win][sel])
    return out


def _block_means(q, shape):
    """Block-mean, back-interpolation and block-centre sampling functions
    for blocks of q x q pixels.

    The image is padded (reflected) to whole blocks, so block centres fall
    exactly where ``cv2.resize`` puts the coarse pixels when interpolating
    back, and ``INTER_AREA`` takes its fast integer-factor path.
    """
    h, w = shape
    ph, pw = -h % q, -w % q

    def pad(v):
        return cv2.copyMakeBorder(v, 0, ph, 0, pw, cv2.BORDER_REFLECT) if ph or pw else v

    def down(v):
        return cv2.resize(pad(v), ((w + pw) // q, (h + ph) // q), interpolation=cv2.INTER_AREA) if q > 1 else v

    def up(v):
        big = cv2.resize(v, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR) if q > 1 else v
        return big[:h, :w]

    def centres(v):
        return np.ascontiguousarray(pad(v)[q // 2::q, q // 2::q])

    return down, up, centres


def _norm_box(values, weights, ksize):
    """Weighted box mean: box(values * weights) / box(weights), and box(weights)."""
    num = cv2.boxFilter(values * weights, -1, ksize, normalize=True, borderType=cv2.BORDER_REFLECT)
    den = cv2.boxFilter(weights, -1, ksize, normalize=True, borderType=cv2.BORDER_REFLECT)
    return num / np.maximum(den, 1e-6), den


def _robust_box(values, weights, ksize, nk, clip, n_iter=2, cap=None, soft=None, clipped=None):
    """Outlier-resistant local mean and local noise σ of ``values`` (box windows, px).

    Both are smooth, so they are computed on block means (blocks of ~nk/8 px)
    and interpolated back. Blocks deviating more than ``clip`` times the
    blocks' spread from the current estimate are dropped, twice: the MAD (a
    film covering a good part of the region inflates an RMS, which then keeps
    the film in the mean), the RMS of the central 95 % next to the region's
    edge (zero ``weights``; with ``soft``, next to those pixels only), whose soft
    profile the box must follow. σ is
    the RMS of the 3x3 high-pass (var(x - mean9) = 8/9 var(x)) over an ``nk``
    box, pixels beyond ``clip`` of its robust σ left out: pixel noise only,
    so smooth structure the box leaves (a wide smear, a soft core edge) is
    not taken for noise; ``clipped`` pixels (saturated: no noise) are left out of it.
    ``cap`` (MAD, edge spread) bounds the two spreads.
    Returns ``(mean, σ, ok, global σ, (MAD, edge spread))``.
    """
    q = max(1, int(min(ksize, nk) // 8))
    area, back, _ = _block_means(q, values.shape)
    kb, kn = (_odd(ksize / q),) * 2, (_odd(nk / q),) * 2
    hp = values - cv2.blur(values, (3, 3), borderType=cv2.BORDER_REFLECT)
    noisy = weights if clipped is None else weights * ~clipped
    s_hp = max(_robust_std(_sample(hp, noisy > 0)), 1e-5)
    w_hp = noisy * (np.abs(hp) < clip * s_hp)
    ws, wh = area(weights), area(w_hp)
    vs = area(values * weights) / np.maximum(ws, 1e-6)
    hs = area(hp * hp * w_hp) / np.maximum(wh, 1e-6)
    inside = ws > 1e-3
    est = np.full_like(vs, _median(vs[inside]))
    # within two blocks of the region's (soft) edge the box cannot follow its profile:
    # clipped at the blocks' RMS spread there (the MAD would leave the profile out)
    near = ws < 0.999 if soft is None else area(soft.astype(np.float32)) > 1e-3
    edge = cv2.dilate(near.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    for _ in range(n_iter):
        dev = (vs - est)[inside]
        mad = max(_mad_std(dev), 1e-5)
        wide = max(_robust_std(dev), mad)
        if cap is not None:
            mad, wide = min(mad, cap[0]), min(wide, cap[1])
        spread = np.where(edge, np.float32(wide), np.float32(mad))
        est, den = _norm_box(vs, ws * (np.abs(vs - est) < clip * spread), kb)
    var, vden = _norm_box(hs, wh, kn)
    sd = np.sqrt(np.maximum(var, 0) * 9 / 8)
    ok = (den > 1e-3) & (vden > 1e-3)
    # ok (enough support) is nearly everywhere: interpolated only when it is not
    ok = True if ok.all() else back(ok.astype(np.float32)) > 0.999
    return back(est), back(sd), ok, s_hp * math.sqrt(9 / 8), (mad, wide)


def _flatten(lg, regions, rings, band, clipped, near_clipped, px, params):
    """Background and local noise of the log image, region by region.

    One robust polynomial surface over the whole field (vignetting, a
    property of the optics) with one level per physical region
    (reflectance), plus, inside each region (its bounding box only), a
    robust box mean of what they leave (``background_um``) gives the
    illumination, so the bright cladding and darker ferrule are normalised
    separately, image borders are not biased by the box and a small region
    (the core) cannot absorb a smear covering much of it; in a core with its own
    annulus the box follows a graded-index dome (``_dome``). In each annulus of ``rings`` the background is a
    robust mean along arcs (``arc_um``) at fixed radius, which keeps every
    radial structure of the edge (profile, epoxy ring, halo, tilt shadow) in
    the background and leaves defects in the residual. ``band`` (bool) gets
    the annuli's textured bins (see ``_ring_model``). ``clipped`` pixels (at the sensor's
    full scale) count in the background, not in the noise: a hot spot clipped flat would
    leave the grain beside it, below full scale, standing out of no noise at all; and
    ``near_clipped`` the noise is at least its region's away from saturation.
    Returns ``(bg, sigma, dim, floor)``; ``dim``
    marks pixels whose illumination surface is below ``dim_ratio`` times the
    region's median (a vignetted corner): not analysed.
    """
    clip = params["flatten_clip_sigma"]
    k_bg, k_n = px(params["background_um"]), px(params["noise_um"])
    in_ring = np.zeros(lg.shape, bool)
    for _, _, hi, rmap, _, full in rings:
        in_ring |= (rmap >= full) & (rmap < hi)
    bg = np.zeros_like(lg)
    sigma = np.ones_like(lg)
    dim = np.zeros(lg.shape, bool)
    off = np.float32(params["log_offset"])
    # vignetting belongs to the optics: one smooth surface over the whole field, each
    # region its own reflectance (a small glass region cannot absorb a smear on it)
    valid = regions > 0
    fit = valid & ~in_ring
    if np.count_nonzero(fit) < 64:
        fit = valid
    level = np.exp(_robust_surface(lg, fit, params["surface_degree"], clip, regions, offsets_only=True)[1])
    # vignetting is a smooth product: fit it on linear intensity over reflectance (not on a
    # clipped plateau, which would flatten it)
    shape_fit = fit & ~clipped if np.count_nonzero(fit & ~clipped) >= 64 else fit
    vig, const = _robust_surface(lg, shape_fit, params["surface_degree"], clip, np.zeros(regions.shape, np.int8),
                                 transform=lambda v, y, x: (np.exp(v) - off) / level[regions[y, x]])
    vig += np.float32(const[0])
    np.maximum(vig, np.float32(1e-3), out=vig)
    spreads = {}
    region_sd = np.zeros(int(regions.max()) + 1)
    # the core after the cladding: it is the cladding's glass, so its blocks are clipped at
    # no more than the cladding's spreads (a film over a good part of a core widens the
    # core's own, which then keep the film in its mean)
    for k in sorted(_region_ids(regions), key=lambda k: k == 1):
        bx, by, bw, bh = cv2.boundingRect((regions == k).view(np.uint8))
        win = np.s_[by:by + bh, bx:bx + bw]  # the region's box only
        m = regions[win] == k
        w = (m & fit[win]).astype(np.float32)
        if np.count_nonzero(w) < 64:
            w = m.astype(np.float32)
        trend = vig[win] * np.float32(level[k])
        trend += off
        cv2.log(trend, dst=trend)
        if k == 1 and len(rings) > 1:  # a graded-index core's reflectance dome
            _, rk, _, _, (kx, ky), _ = rings[1]
            cols = (np.arange(bx, bx + bw, dtype=np.float32) - np.float32(kx)) / np.float32(rk)
            rows = (np.arange(by, by + bh, dtype=np.float32) - np.float32(ky)) / np.float32(rk)
            b = _dome(lg[win] - trend, w > 0, cols, rows, params["core_dome_fit"])
            if b:
                trend += np.float32(b) * (np.square(rows)[:, None] + np.square(cols)[None, :])
        # too dim to analyse (deep vignetting corner): defect contrast drowns in the floor
        dim[win] |= m & (vig[win] < params["dim_ratio"] * _median(_sample(vig[win], w > 0)))
        # the cladding's one soft edge is the core's (a graded-index core's glow spills
        # over it); at its outer edge the arcs take over, and a film there, clipped at
        # the blocks' RMS spread, would stay in the box mean
        est, sd, ok, s, spreads[k] = _robust_box(lg[win] - trend, w, k_bg, k_n, clip,
                                                 cap=spreads.get(2) if k == 1 else None,
                                                 soft=regions[win] == 1 if k == 2 else None,
                                                 clipped=clipped[win])
        if ok is not True:
            np.copyto(est, np.float32(0), where=~ok)
            np.copyto(sd, np.float32(s), where=~ok)
        est += trend
        _copy_where(bg[win], est, m)
        _copy_where(sigma[win], sd, m)
        region_sd[k] = s
    for ring in rings:
        _ring_model(lg, vig, valid, ring, bg, sigma, band, clipped, px, params)
    if near_clipped.any():
        np.maximum(sigma, lookup(regions, region_sd, np.float32), out=sigma, where=near_clipped)
    # noise floor: 8-bit quantisation seen through the log
    floor = cv2.exp(bg)
    floor += np.float32(1e-3)
    np.divide(np.float32(params["sigma_floor"]), floor, out=floor)
    np.maximum(sigma, floor, out=sigma)
    return bg, sigma, dim, floor


def _dome(values, sel, cols, rows, dome_fit, n_bins=8, max_n=6000):
    """Slope ``b`` of ``values ≈ a + b·ρ²`` over ``sel``; ``cols`` and ``rows`` are the
    columns' and rows' offsets from the core's centre over its radius (so ρ² is theirs
    squared and summed).

    A graded-index core's index, hence its reflectance, falls parabolically from its
    axis to its edge: a dome (or bowl) that no box mean wider than the core follows.
    In each quadrant around the centre a line is fitted to the medians of ``n_bins``
    rings of equal area against their mean ρ² (a defect covering less than half of a
    ring's part does not move its median). A dome is round: every quadrant's line
    must fit its rings within ``dome_fit`` times its rise, and the slopes must agree
    within a factor of two. Otherwise there is no dome (0) and the core keeps its flat
    background: a film over part of the core (it lifts some quadrants only), a soft
    core edge (a step in ρ²), a defect filling a ring, or a real core's central index
    dip, which a parabola would turn into a defect.
    """
    yy, xx = _nonzero(sel)
    if yy.size < 64 * n_bins:
        return 0.0
    step = -(-yy.size // max_n)
    yy, xx = yy[::step], xx[::step]
    u, w, v = cols[xx], rows[yy], values[yy, xx]
    r2 = u * u + w * w
    ring = np.minimum((r2 / max(float(r2.max()), 1e-6) * n_bins).astype(int), n_bins - 1)
    # one group per quadrant and ring: mean ρ², median value (one sort for all groups)
    key = ((u > 0) + 2 * (w > 0)) * n_bins + ring
    count = np.bincount(key, minlength=4 * n_bins)
    mean_r2 = np.bincount(key, r2, minlength=4 * n_bins) / np.maximum(count, 1)
    v_min = v.min()
    ranked = v[np.argsort(key * (float(v.max() - v_min) + 1.0) + (v - v_min))]  # by key, then value
    median_v = ranked[np.minimum(np.cumsum(count) - count + count // 2, ranked.size - 1)]
    slopes = []
    for q in range(4):
        group = np.s_[q * n_bins:(q + 1) * n_bins]
        full = count[group] >= 8
        if full.sum() < n_bins - 1:
            return 0.0
        x, y = mean_r2[group][full], median_v[group][full]
        b, a = np.polyfit(x, y, 1)
        if math.sqrt(np.mean(np.square(y - (a + b * x)))) >= dome_fit * abs(b) * np.ptp(x):
            return 0.0
        slopes.append(b)
    weak, strong = min(slopes, key=abs), max(slopes, key=abs)
    return float(np.mean(slopes)) if weak * strong > 0 and abs(weak) >= 0.5 * abs(strong) else 0.0


def _robust_surface(values, sel, degree, clip, groups, transform=None, max_n=6000, step=8,
                    offsets_only=False):
    """Robust least-squares polynomial surface of ``values`` over ``sel``, plus
    one offset per group id of ``groups``.

    Fitted on an even subsample (its values passed through
    ``transform(values, rows, columns)`` when given), outliers beyond
    ``clip`` σ dropped twice.
    Returns the surface without offsets (evaluated on a grid ``step`` px
    apart and interpolated; None with ``offsets_only``) and the offsets
    indexed by group id.
    """
    h, w = values.shape
    st = max(1, int(math.sqrt(np.count_nonzero(sel) / (4 * max_n))))  # subsample before listing
    yy, xx = _nonzero(sel[::st, ::st])
    yy, xx = yy * st, xx * st
    if yy.size > max_n:
        yy, xx = yy[:: yy.size // max_n], xx[:: xx.size // max_n]
    ids = np.unique(groups[yy, xx])
    level = np.zeros(int(groups.max()) + 1)
    scale = max(h, w) / 2.0
    terms = [(i, j) for i in range(degree + 1) for j in range(degree + 1 - i) if i + j > 0]

    def design(x, y):
        x, y = (x - w / 2) / scale, (y - h / 2) / scale
        xp, yp = [np.ones_like(x)], [np.ones_like(y)]
        for _ in range(degree):
            xp.append(xp[-1] * x)
            yp.append(yp[-1] * y)
        out = np.empty(x.shape + (len(terms),))  # column by column (np.stack on the last axis is slow)
        for t, (i, j) in enumerate(terms):
            np.multiply(xp[i], yp[j], out=out[..., t])
        return out

    g = groups[yy, xx]
    v = values[yy, xx].astype(np.float64)
    if transform is not None:
        v = transform(v, yy, xx)
    if yy.size < 4 * (len(terms) + ids.size):
        for k in ids:
            level[k] = median(v[g == k])
        return np.zeros(values.shape, np.float32), level
    A = np.hstack([design(xx.astype(np.float64), yy.astype(np.float64)),
                   (g[:, None] == ids[None, :]).astype(np.float64)])
    keep = np.ones(v.size, bool)
    n = A.shape[1]
    for _ in range(3):
        Ak = A[keep]  # normal equations: tiny system, no LAPACK thread start-up
        coef = np.linalg.solve(Ak.T @ Ak + 1e-9 * np.eye(n), Ak.T @ v[keep])
        res = v - A @ coef
        keep = np.abs(res) < clip * max(_robust_std(res), 1e-6)
    level[ids] = coef[len(terms):]
    if offsets_only:
        return None, level
    # grid node i sits at pixel (i + 0.5) * step - 0.5, where cv2.resize puts it
    # (one node beyond each border so that interpolation never clamps)
    gy, gx = (np.mgrid[-1:-(-h // step) + 1, -1:-(-w // step) + 1] + 0.5) * step - 0.5
    grid = (design(gx, gy) @ coef[:len(terms)]).astype(np.float32)
    full = cv2.resize(grid, (grid.shape[1] * step, grid.shape[0] * step), interpolation=cv2.INTER_LINEAR)
    return full[step:step + h, step:step + w], level


def _ring_model(lg, vig, valid, ring, bg, sigma, band, clipped, px, params):
    """Robust arc-mean background, noise and textured band in an annulus (in place).

    ``ring`` is (r_lo, edge radius, r_hi, radius map, centre, r_full), at least
    12 sectors; below ``r_full`` the model blends linearly into ``bg``/``sigma``
    (coarse radial bins, no texture band; no blend where the arcs are shorter
    than ``arc_um / 2``). In an annulus the frame border cuts, the arcs model what the
    field's vignetting surface ``vig`` leaves (the edge's radial structure):
    a bin the border truncates does not shift its mean along the
    illumination gradient, and a bin without pixels continues its sector's
    nearest one.
    Bins near the edge whose noise exceeds ``ring_texture_ratio`` times the
    annulus median (the edge misfit, a rough epoxy ring) are set in
    ``band``, where no detection may seed. ``clipped`` pixels count in the means only.

    Pixels are binned by (angular sector of ``arc_um``, radius: steps of
    ``ring_bin_px`` within ``ring_fine_um`` of the edge, ``ring_coarse_um``
    beyond) using their own centres, so the sharp edge profile is reproduced
    without resampling blur; bin means (outliers clipped against the local
    noise) are interpolated bilinearly between bin centres. Beyond
    ``ring_fine_um`` outside the edge (smooth shading only) a bin standing out
    from its neighbours along the arc (``_arc_outliers_to_median``) takes their
    median: a film longer than an arc would otherwise become the background.
    Within it a bin that stands out from its two neighbouring sectors (a
    particle on the edge filling the bin, which the clipping cannot remove),
    by more than a one-bin radial shift changes the all-angle profile there
    (the fit's misfit varies along the edge), takes their median in the
    background only: the noise and the textured band stay the arcs' own.
    """
    r_lo, edge, r_hi, rmap, (cx, cy), r_full = ring
    n_sec = max(12, int(round(math.pi * (r_full + r_hi) / px(params["arc_um"]))))
    if 2 * math.pi * r_lo / n_sec < px(params["arc_um"]) / 2:
        r_lo = r_full  # arcs too short to tell a soft rim from a defect on it: no blend
    bx, by, bw, bh = cv2.boundingRect((rmap < r_hi).view(np.uint8))  # the annulus' box
    rbox = rmap[by:by + bh, bx:bx + bw]
    yy, xx = _nonzero(valid[by:by + bh, bx:bx + bw] & (rbox >= r_lo) & (rbox < r_hi))
    if yy.size < 64:
        return
    yy, xx = yy + by, xx + bx
    # flat indices: np.take / np.put gather and scatter several times faster than (yy, xx)
    flat = yy.astype(np.intp) * lg.shape[1] + xx
    r = np.take(rmap, flat)
    t = np.arctan2(yy - cy, xx - cx)  # sector coordinate, in place (no temporaries)
    t /= 2 * math.pi
    t *= n_sec
    np.mod(t, n_sec, out=t)
    # radial bins: ring_bin_px within ring_fine_um of the edge (its sharp profile),
    # ring_coarse_um beyond (smooth shadow; a tangential scratch cannot fill a bin), and in
    # the blend zone below r_full (a soft rim: a defect there cannot fill a bin either)
    d = r - edge
    fine_px, b, c = px(params["ring_fine_um"]), params["ring_bin_px"], px(params["ring_coarse_um"])
    fine_in = min(fine_px, edge - r_full)
    t_r = np.where(d < -fine_in, (d + fine_in) / c - fine_in / b,
                   np.where(d <= fine_px, d / b, fine_px / b + (d - fine_px) / c))
    # bins (and the noise's groups of 4) start at r_full's first pixel, whatever lies below
    full = r >= r_full  # the annulus proper: its bins, noise and texture as without a blend
    if not full.any():
        full[:] = True
    t0 = t_r[full].min()
    t_r -= t0 - 4 * math.ceil(max(t0 - t_r.min(), 0) / 4)
    rb = np.floor(t_r).astype(np.int64)
    n_r = int(rb.max()) + 1
    # bilinear interpolation between bin centres (sector and radius)
    r0 = np.clip(np.floor(t_r - 0.5).astype(np.int64), 0, n_r - 1)
    r1 = np.minimum(r0 + 1, n_r - 1)
    fr = np.clip(t_r - 0.5 - r0, 0.0, 1.0)
    sec = t.astype(np.int64) % n_sec
    key = sec * n_r + rb
    filled = np.bincount(key, minlength=n_sec * n_r).reshape(n_sec, n_r) > 0
    # an annulus the frame border (or the analysed area) cuts: its arcs model what the
    # field's smooth vignetting leaves (a truncated bin's mean lies off its centre along
    # the illumination gradient); a whole one keeps the image (a film on a core's rim
    # bends the vignetting fit, which must not bend the arcs)
    cut = (filled != filled.any(0)).any()  # some sector lacks a radius the others have
    shade = np.log(np.take(vig, flat)).astype(np.float64) if cut else np.zeros(yy.size)
    v = np.take(lg, flat).astype(np.float64) - shade
    s0 = np.floor(t - 0.5).astype(np.int64) % n_sec
    frac = (t - 0.5) - np.floor(t - 0.5)
    s1 = (s0 + 1) % n_sec
    # bilinear weights of the four bin centres around each pixel, as a sparse matrix
    idx = np.stack([s0 * n_r + r0, s0 * n_r + r1, s1 * n_r + r0, s1 * n_r + r1], 1).ravel()
    wts = np.stack([(1 - frac) * (1 - fr), (1 - frac) * fr, frac * (1 - fr), frac * fr], 1).ravel()
    interp = csr_matrix((wts, idx, np.arange(0, idx.size + 1, 4)), shape=(v.size, n_sec * n_r))
    # noise per sector and radius band (4 bins: more samples); clipping uses it,
    # so a rough epoxy ring is texture, not a crowd of outliers
    key2 = sec * (n_r // 4 + 1) + rb // 4
    size, size2 = n_sec * n_r, n_sec * (n_r // 4 + 1)
    keep = np.ones(v.size)  # weight 1 kept, 0 clipped
    noisy = ~np.take(clipped, flat)
    sd = None
    # bins without pixels (beyond the frame or the analysed area) continue their sector's
    # nearest bin along the radius, as offset from the all-angle profile (the edge profile
    # is the same at every angle, the shading is the sector's): the all-angle mean alone
    # pulls a strongly vignetted sector's outer pixels towards the field's mean level
    near = _nearest_filled(filled)
    rows, nearest = np.arange(n_sec)[:, None], np.maximum(near, 0)
    profile = lambda m, f: np.where(near >= 0, m[rows, nearest] - f[nearest] + f, f).ravel()  # noqa: E731
    # radial bins beyond ring_fine_um outside the edge hold smooth shading only: a sector
    # there standing out from the median of the sectors within ring_shade_um along the
    # arc is a defect filling it (a film longer than arc_um), not shading
    smooth = (np.bincount(rb, d, minlength=n_r) / np.maximum(np.bincount(rb, minlength=n_r), 1)) > fine_px
    half = int((params["ring_shade_um"] / params["arc_um"] - 1) // 2)
    smooth_ok = half >= 1 and n_sec >= 2 * half + 3 and smooth.any()
    for it in range(4):
        cnt = np.bincount(key, keep, minlength=size).reshape(n_sec, n_r)
        tot = np.bincount(key, v * keep, minlength=size).reshape(n_sec, n_r)
        fill = tot.sum(0) / np.maximum(cnt.sum(0), 1)  # all-angle mean profile
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), fill)  # clipped-out bins: all-angle
        if smooth_ok:
            mean[:, smooth] = _arc_outliers_to_median(mean[:, smooth], half, params)
        res = v - interp @ profile(mean, fill)
        s = max(_robust_std(res[full & noisy]) if (full & noisy).any() else 0.0, 1e-5)
        cnt2 = np.bincount(key2, keep * noisy, minlength=size2)
        var2 = np.bincount(key2, res * res * keep * noisy, minlength=size2) / np.maximum(cnt2, 1)
        sd = np.maximum(np.sqrt(np.where(cnt2 > 4, var2, s * s)), 0.5 * s)[key2]
        # first clip against the annulus-wide σ (a chip inflates its bin's σ), then locally
        keep = (np.abs(res) < params["flatten_clip_sigma"] * (s if it == 0 else sd)).astype(np.float64)
    # near the edge: a particle filling a bin (background only, see above)
    if (~smooth).any():
        shift = np.abs(np.diff(fill, prepend=fill[0], append=fill[-1]))  # one-bin shifts
        mean[:, ~smooth] = _arc_outliers_to_median(mean[:, ~smooth], 1, params,
                                                   np.maximum(shift[:-1], shift[1:])[~smooth])
        res = v - interp @ profile(mean, fill)
    # from r_lo to r_full the arcs' model takes over from the region's (no step at r_lo)
    a = np.clip((r - r_lo) / (r_full - r_lo), 0, 1) if r_full > r_lo else np.ones(r.size)
    np.put(bg, flat, a * (v - res + shade) + (1 - a) * np.take(bg, flat))
    np.put(sigma, flat, a * sd + (1 - a) * np.take(sigma, flat))
    # the edge's own footprint (misfit, rough epoxy): noise well above the annulus'
    np.put(band, flat, np.take(band, flat) | (full & (sd > params["ring_texture_ratio"] * _median(sd[full]))
                                               & (np.abs(d) <= fine_px)))


def _arc_outliers_to_median(mean, half, params, tol=0.0):
    """Arc-bin means (sectors x radial bins, circular along axis 0) with the bins
    that stand out from the running median of the ``2 * half + 1`` sectors around
    them (by ``flatten_clip_sigma`` times the robust σ of such deviations, and by
    the ``ring_film_contrast`` of a film, plus ``tol``: per radial bin) replaced by
    that median."""
    med = median(np.stack([np.roll(mean, k, axis=0) for k in range(-half, half + 1)]), axis=0)
    dev = mean - med
    lim = max(params["flatten_clip_sigma"] * _robust_std(dev), math.log1p(params["ring_film_contrast"]))
    return np.where(np.abs(dev) > lim + tol, med, mean)


def _nearest_filled(has):
    """Index along axis 1 of the nearest True of ``has`` in each row (its own where
    True; the lower on a tie), -1 in a row without any."""
    n = has.shape[1]
    j = np.arange(n)
    before = np.maximum.accumulate(np.where(has, j, -1), axis=1)
    after = np.minimum.accumulate(np.where(has, j, 2 * n)[:, ::-1], axis=1)[:, ::-1]
    use_after = (before < 0) | ((after < n) & (after - j < j - before))
    return np.where(use_after & (after < n), after, before)


def _copy_where(dst, src, mask):
    """``np.copyto(dst, src, where=mask)`` for float32 images of one shape (``mask``
    bool) by ``cv2.copyTo``, in place also on a window of a larger image: the same
    values, ~3x faster than NumPy's masked copy."""
    cv2.copyTo(src, mask.view(np.uint8), dst)


def _mask_box(mask, margin):
    """Slices of the bounding box of ``mask`` (bool) widened by ``margin`` px on each
    side, clipped to the image."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return np.s_[max(y - margin, 0):y + h + margin, max(x - margin, 0):x + w + margin]


def _robust_std(x, max_n=10000):
    """σ from the RMS of the central 95 % of deviations from the median.

    Unlike the MAD it stays positive on quantised, nearly flat data; for a
    normal sample it equals σ (0.871 corrects the truncation). Large inputs
    are evenly subsampled.
    """
    x = np.asarray(x).ravel()
    if x.size == 0:
        return 0.0
    x = x[:: max(1, x.size // max_n)].astype(np.float32)  # subsample before converting
    d = np.abs(x - _median(x))
    cut = np.partition(d, int(0.95 * (d.size - 1)))[int(0.95 * (d.size - 1))]
    core = d[d <= cut]
    return float(np.sqrt(np.mean(core * core)) / 0.871)


def _clipped_std(x, n_mads, floor):
    """``_robust_std`` of ``x`` without the values more than ``n_mads`` MAD-σ (at
    least ``floor``) from the median: large defects covering more than the 5 % it
    trims would inflate it (a 30σ pit went unseen beside particles on 16 % of the glass)."""
    x = np.asarray(x).ravel()
    x = x[:: max(1, x.size // 20000)].astype(np.float32)
    m = _median(x)
    return _robust_std(x[np.abs(x - m) <= n_mads * max(_mad_std(x), floor)])


def _mad_std(x):
    """σ from the median absolute deviation (normal-consistent)."""
    x = np.asarray(x).ravel()
    return 1.4826 * float(median(np.abs(x - median(x)))) if x.size else 0.0


def _iqr_std(x, max_n=10000):
    """σ from the interquartile range (robust to defects covering up to a quarter)."""
    x = np.asarray(x).ravel()
    q1, q3 = np.percentile(x[:: max(1, x.size // max_n)].astype(np.float32), [25, 75])
    return float(q3 - q1) / 1.349


def _median(x, max_n=10000):
    """Median (of an even subsample when large)."""
    x = np.asarray(x).ravel()
    return float(median(x[:: max(1, x.size // max_n)])) if x.size else 0.0


def _relabel(labels, lut):
    """``lut[labels]`` computed on the labelled pixels only (``lut[0]`` is 0)."""
    out = np.zeros(labels.shape, lut.dtype)
    ys, xs = _nonzero(labels)
    out[ys, xs] = lut[labels[ys, xs]]
    return out


def _region_ids(regions):
    """Physical region ids (1 core, 2 cladding, 3 outside the glass) present in ``regions``."""
    return [k for k in (1, 2, 3) if (regions == k).any()]


def _skew_exponent(resid, sigma, ok, params):
    """Box-Cox exponent λ that makes the noise of the log residual symmetric (0: none).

    On the log, additive noise that is a good part of the signal is skewed
    (log(1 + n) stretches the dark side), and a camera's gamma stretches it
    further: its dark tail then reaches many σ where the bright one does not,
    and seeds dark specks of noise (a cheap video scope's dim field). Where the
    median local noise σ of the log image is at least ``skew_min_noise``, the
    residual r is mapped by (exp(λ r) - 1) / λ, λ in 0..``skew_max_lambda`` (2 %
    steps of it) chosen so that r's 16, 50 and 84 % quantiles come out symmetric
    (a monotone map carries quantiles with it). Below, the noise is too small
    for the log to skew it, and its quantiles too close to tell λ: 0.
    """
    if np.count_nonzero(ok) < 64 or _median(_sample(sigma, ok)) < params["skew_min_noise"]:
        return 0.0
    hi, mid, lo = np.quantile(_sample(resid, ok), [0.8413, 0.5, 0.1587])
    lams = np.linspace(0.0, params["skew_max_lambda"], 51)[1:, None]
    t = np.expm1(lams * np.array([hi, mid, lo])) / lams
    skew = np.abs(t[:, 0] + t[:, 2] - 2 * t[:, 1]) / np.maximum(t[:, 0] - t[:, 2], 1e-9)
    return float(lams[np.argmin(skew), 0]) if skew.min() < abs(hi + lo - 2 * mid) / max(hi - lo, 1e-9) else 0.0


def _sample(values, sel, max_n=20000):
    """An even subsample (about ``max_n``) of ``values[sel]``, strided before selecting."""
    st = max(1, int(math.sqrt(np.count_nonzero(sel) / max_n)))
    return values[::st, ::st][sel[::st, ::st]]


def _nonzero(mask):
    """Row and column indices (int32) of the non-zero pixels: a flat scan of a
    boolean mask, several times faster than ``np.nonzero`` on 2-D arrays."""
    idx = np.flatnonzero(mask if mask.dtype == bool else mask != 0).astype(np.int32)
    ys = idx // np.int32(mask.shape[1])
    return ys, idx - ys * np.int32(mask.shape[1])


def _disk(diameter):
    """Elliptic structuring element of an odd diameter (px) near ``diameter``."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(diameter),) * 2)


def _within(mask, reach):
    """Pixels within ``reach + 0.5`` px (Euclidean) of the bool ``mask``: its dilation
    by a disk of diameter ``2 reach + 1`` (OpenCV's elliptic element of that size
    differs on a few rim pixels), from an exact distance transform: OpenCV dilates by
    a large disk many times slower."""
    dist = cv2.distanceTransform((~mask).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist <= reach + 0.5


def _odd(n):
    return max(3, int(round(n)) | 1)


def _region_candidates(z, zs, regions, seed_ok, bands, rel, lin, quant, px, params):
    """DO2MR region defects at a fine and a coarse scale, as a boolean mask.

    The max-min residual of the flattened image is median filtered and
    thresholded at median + γ·σ (robust) per physical region; candidates
    that also reach ``seed_sigma`` and whose relative contrast ``rel`` (log
    residual) passes ``min_contrast`` (``coarse_min_contrast`` at the coarse
    scale) seed a hysteresis on |z|, and each
    component is cut half way to its core in the linear residual ``lin``
    (``_edge_cut``: the true edge of a blurred defect), never below
    ``grow_sigma``. ``quant`` is the quantisation
    floor in units of σ (1 where σ is at the floor): block means keep a
    JPEG block's coherent one-level error (half the floor), so the coarse
    scale's noise is never taken below ``quant / 2``. The coarse scale's
    noise unit and DO2MR threshold use the MAD, and the threshold is at most
    that of all regions pooled (a film covering much of a small region, such
    as a core, inflates neither); it seeds only in
    blocks of one physical region and keeps components of at least
    ``coarse_min_area_um2`` that are not line-shaped and whose glass between the fine
    defects is not clean (``_film_between``: a run of parallel scratches darkens its
    block means too). At both scales a film that
    a stronger defect on it took into its component, and whose cut at that
    defect's contrast dropped it, is cut again apart from it (``_films_beside``);
    at the coarse scale only where it is wider than that defect
    (``_wider_than_beside``: a swell's top leaves a narrower flank). ``bands`` (int8)
    marks the edge band (1) and the textured bins of the edge annuli (2), where only
    ``_band_outliers`` may seed.
    """
    seed, grow = params["seed_sigma"], params["grow_sigma"]
    absz = np.abs(zs)
    strong = np.abs(rel) >= math.log1p(params["min_contrast"])
    coarse_floor = math.log1p(params["coarse_min_contrast"])
    cand = (_do2mr(zs, regions, seed_ok, _odd(px(params["do2mr_window_um"])), params, out=seed_ok | (bands > 0))
            & (absz > seed) & strong)
    # on the edge bands: band_seed_factor times the seed level and contrast, compact, and
    # standing out from the band's texture (_band_outliers): on the plain band from the
    # plain band around it, in textured bins from all of the band around them
    blur = max(1, int(round(3 * params["smooth_px"])))
    f_band = params["band_seed_factor"]
    outliers = np.zeros(cand.shape, bool)
    for kind, reference in ((1, bands == 1), (2, bands > 0)):
        on_band = cand & (bands == kind)
        if on_band.any():
            ys, xs = _nonzero(on_band)
            on_band[ys, xs] = (absz[ys, xs] > f_band * seed) & (
                np.abs(rel[ys, xs]) >= math.log1p(f_band * params["min_contrast"]))
            if on_band.any():
                outliers |= _band_outliers(on_band, absz, reference, blur, px, params)
    cand &= bands == 0
    cand |= outliers
    mask = _grow_cut(cand, zs, lin, params, blur)
    gap_px = int(math.ceil(px(params["merge_gap_um"]))) + 1
    films = _films_beside(mask, cand, zs, lin, params, blur, gap_px)
    first = mask  # (the coarse scale's additions make a new mask)
    films_c = np.zeros(mask.shape, bool)
    # Coarse scale: block means over ~coarse_um reveal faint wide smears (oil).
    f = int(round(px(params["coarse_um"])))
    h, w = zs.shape
    if f > 1 and min(h, w) // f >= 8:
        # whole f x f blocks (the < f last rows and columns are left to the fine scale):
        # INTER_AREA's integer-factor path
        small, hc, wc = (w // f, h // f), h // f * f, w // f * f
        down = lambda v: cv2.resize(v[:hc, :wc], small, interpolation=cv2.INTER_AREA)  # noqa: E731
        # blocks all of whose pixels are set (the block minimum)
        block = np.ones((f, f), np.uint8)
        full = lambda m: cv2.erode(m.view(np.uint8), block, anchor=(0, 0))[:hc:f, :wc:f] > 0  # noqa: E731
        dc, qc = down(z), 0.5 * down(quant)
        rc = np.ascontiguousarray(regions[f // 2:hc:f, f // 2:wc:f])
        # seeds only in blocks whose neighbours are analysed too: next to the frame border,
        # the field stop or a dim corner, block means follow the fall-off the surface misses
        inside = cv2.erode(full(regions > 0).view(np.uint8),
                           np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        # ... and of one physical region (next to the core or cladding edge the box
        # background cannot follow the edge's steep radial profile)
        one, rc8 = np.ones((3, 3), np.uint8), rc.view(np.uint8)
        okc = (full(seed_ok) & (inside > 0)
               & (cv2.erode(rc8, one) == cv2.dilate(rc8, one)))
        # noise unit per region: the MAD of the block means (a few smears covering a good
        # part of a small region inflate the RMS, not the MAD), and at least that of their
        # 3x3 high-pass (block noise) where the region is textured at the block scale
        hp = dc - cv2.blur(dc, (3, 3), borderType=cv2.BORDER_REFLECT)
        zc = np.zeros_like(dc)
        for k in _region_ids(rc):
            m = rc == k
            mk = m & okc if (m & okc).any() else m
            s_c = max(_mad_std(dc[mk]), _mad_std(hp[mk]) * math.sqrt(9 / 8), 1e-5)
            zc[m] = dc[m] / np.maximum(qc[m], s_c)
        # (a few wide smears fill a good part of a small region's blocks: the MAD's spread)
        cc = _do2mr(zc, rc, okc, 3, params, _mad_std, pooled=True) & (np.abs(zc) > seed)
        cc &= np.abs(down(rel)) >= coarse_floor
        # the coarse scale is for wide smears: drop components smaller than that, and
        # line-shaped ones (a scratch's own block means: the line filter's job)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(
            _reconstruct(cc, np.abs(zc) > grow).view(np.uint8), connectivity=8)
        small_c = stats[:, cv2.CC_STAT_AREA] * (f / px(1.0)) ** 2 < params["coarse_min_area_um2"]
        ys, xs = _nonzero(lab)
        major, minor = _axes(lab[ys, xs], ys, xs, n)
        small_c |= major >= params["linear_aspect"] * np.maximum(minor, 1.0)
        small_c[0] = True
        cc &= ~small_c[lab]
        if cc.any():
            zc_up = np.zeros((h, w), np.float32)
            zc_up[:hc, :wc] = cv2.resize(zc, (wc, hc), interpolation=cv2.INTER_LINEAR)
            def blocks_up(b):  # a block mask (bool) at the work resolution
                out = np.zeros((h, w), bool)
                out[:hc, :wc] = cv2.resize(b.view(np.uint8), (wc, hc), interpolation=cv2.INTER_NEAREST) > 0
                return out

            cc_up, ok_up = blocks_up(cc), blocks_up(okc)
            coarse = _grow_cut(cc_up & seed_ok, zc_up, lin, params, f)
            coarse = _film_between(coarse, first, lin, blur, coarse_floor)
            # a film too faint for the fine seeds, cut away at the contrast of a particle
            # on it, as the fine films are (its pieces wider than that particle: the
            # flank a swell's top leaves is not), grown only over blocks that may seed
            # (beside the frame border, a dim corner or an edge, block means follow what
            # the surface misses)
            films_c = _wider_than_beside(_films_beside(
                coarse, cc_up & seed_ok, np.where(ok_up, zc_up, np.float32(0)), lin, params, blur, gap_px),
                coarse, gap_px)
            if films.any():
                # (a film the coarse scale found keeps its outline; the pieces are for
                # those it missed)
                n, lab = cv2.connectedComponents(films.view(np.uint8), connectivity=8)
                missed = np.bincount(lab[coarse], minlength=n) < 0.5 * np.bincount(lab.ravel(), minlength=n)
                missed[0] = False
                films = missed[lab]
            mask = mask | coarse
    if films.any():
        # the defects the films lie beside stay apart from them (and from the coarse scale's
        # outline around both)
        mask = (mask | films) & ~_ring_beside(films, first, gap_px)
    if films_c.any():
        mask = (mask | films_c) & ~_ring_beside(films_c, mask & ~films_c, gap_px)
    return mask & (regions > 0)


def _film_between(coarse, fine, lin, blur, floor):
    """The components of ``coarse`` (bool) that are a film: beyond ``blur`` px of the
    ``fine`` scale's defects, three quarters of their pixels keep half the coarse
    ``floor`` in the linear residual ``lin`` (of the component's sign). Where they do
    not, the block means were dark from the fine defects alone (a run of parallel
    scratches, a cluster of specks) and the glass between them is clean: those defects
    stay their own."""
    n, lab = cv2.connectedComponents(coarse.view(np.uint8), connectivity=8)
    if n <= 1:
        return coarse
    near = cv2.dilate(fine.view(np.uint8), _disk(2 * blur + 1)) > 0
    ys, xs = _nonzero(coarse)
    k, v = lab[ys, xs].astype(np.int64), lin[ys, xs]
    sign = np.sign(_label_median(k, v, n))
    off = ~near[ys, xs]
    between = _label_median(k[off], v[off] * sign[k[off]], n, 0.25)
    film = (np.bincount(k[off], minlength=n) == 0) | (between >= 0.5 * floor)
    film[0] = False
    return film[lab]


def _without_runs(region_mask, s_lab, zs, px, params):
    """``region_mask`` less the components that are a run of parallel scratches: two or
    more straight scratches (``s_lab``; minor axis at most twice their width and 2 px)
    lying side by side on it (``_side_by_side`` on ``zs``), within ``scratch_reach_um``
    of which at least ``_ROW_COVER`` of its pixels lie. Such a component, wider than a
    scratch, would take the lines for its flanks (``_merge``); without it each line
    stays its own defect."""
    if s_lab.max() < 2:
        return region_mask
    n, lab, stats, _ = cv2.connectedComponentsWithStats(region_mask.view(np.uint8), connectivity=8)
    wide = np.flatnonzero(np.minimum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
                          > px(params["scratch_max_width_um"])) + 1
    if wide.size == 0:
        return region_mask
    reach = _disk(2 * px(params["scratch_reach_um"]) + 1)
    out = region_mask.copy()
    for i in wide:
        x, y, w, h = stats[i, :4]
        win = np.s_[y:y + h, x:x + w]
        own = lab[win] == i
        sl = np.where(own, s_lab[win], 0)
        ids = np.flatnonzero(np.bincount(sl.ravel()) >= px(params["scratch_min_length_um"]))
        ids = ids[ids > 0]
        if ids.size < 2:
            continue
        m = int(ids.max()) + 1
        pts, ys, xs, k = _label_points(sl, m)
        pol, level = _polarity_and_level(k, zs[win][ys, xs], m)
        pieces = [{**_piece(pts[j], px(params["lei_length_um"])), "pol": pol[j], "level": level[j]} for j in ids]
        # (straight lines: the two arcs of a drying ring's rim lie side by side too)
        pieces = [pc for pc in pieces if pc["minor"] <= 2 * pc["width"] + 2]
        if not any(_side_by_side(a, b, zs[win]) for a, b in combinations(pieces, 2)):
            continue
        near = cv2.dilate((sl > 0).view(np.uint8), reach) > 0
        if (near & own).sum() >= _ROW_COVER * own.sum():
            out[win][own & ~(sl > 0)] = False
    return out


def _wider_than_beside(pieces, kept, gap_px):
    """The components of ``pieces`` (bool) with at least as many pixels as the
    components of ``kept`` within ``gap_px`` + 2 px of them together: a film under
    a particle is wider than the particle."""
    n, lab = cv2.connectedComponents(pieces.view(np.uint8), connectivity=8)
    if n <= 1:
        return pieces
    m, k_lab = cv2.connectedComponents(kept.view(np.uint8), connectivity=8)
    k_area = np.bincount(k_lab.ravel(), minlength=m)
    k_area[0] = 0
    area = np.bincount(lab.ravel(), minlength=n)
    wider = np.zeros(n, bool)
    reach = _disk(2 * (gap_px + 2) + 1)
    for i, box in enumerate(_label_boxes(lab, n)):
        if i == 0 or box is None:
            continue
        win = _widened(box, gap_px + 3, lab.shape)
        near = cv2.dilate((lab[win] == i).view(np.uint8), reach) > 0
        wider[i] = area[i] >= k_area[np.unique(k_lab[win][near])].sum()
    return wider[lab]


def _join_film_pieces(mask, lin, valid, px, params):
    """``mask`` with the pieces of one film joined.

    A faint film comes out in pieces (its half-way cut follows the noise; a core
    edge band splits it). In the linear residual ``lin`` smoothed over half a
    coarse block a film is one region: each piece of at least ``film_piece_um2``
    that is not line-shaped (``linear_aspect``: a scratch's) and whose median
    there reaches ``coarse_min_contrast`` extends, within
    ``film_gap_um``, over the pixels of its sign at least ``mask_level`` of that
    median (its half-way cut at the coarse scale; a strong particle's spread
    halo stays within its blur). Pieces whose extents meet are one film and take
    their extents' pixels. A piece whose median in ``lin`` reaches
    ``film_max_contrast`` is denser than a film (a dig or particle on it): it is
    no film piece, and the extents stay the merge gap off it, so the two stay
    apart (a 14 µm dig on a faint film was taken into it).
    """
    floor = math.log1p(params["coarse_min_contrast"])
    reach = int(math.ceil(px(params["film_gap_um"])))
    box = _mask_box(mask, reach)
    m = np.ascontiguousarray(mask[box])
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.view(np.uint8), connectivity=8)
    if n < 3:
        return mask
    lc = cv2.GaussianBlur(lin[box], (0, 0), px(params["coarse_um"]) / 2)
    ys, xs = _nonzero(m)
    med, fine, film = _film_pieces(lab[ys, xs], ys, xs, n, stats[:, cv2.CC_STAT_AREA], lc, lin[box], floor,
                                   px, params)
    # a particle or dig on the film is denser than a film: its extent stays the merge gap
    # off it (the two stay apart)
    dense = np.abs(fine) >= math.log1p(params["film_max_contrast"])
    dense[0] = False
    ids = np.flatnonzero(film)
    if ids.size < 2:
        return mask
    allowed = valid[box]
    if dense.any():
        gap_px = int(math.ceil(px(params["merge_gap_um"]))) + 1
        allowed = allowed & (cv2.dilate(dense[lab].view(np.uint8), _disk(2 * gap_px + 1)) == 0)
    pieces = []  # each film piece grown over its film (window, mask in it), sign, centre, reach
    for i in ids:
        x, y, bw, bh = stats[i, :4]
        win = np.s_[max(y - reach, 0):y + bh + reach, max(x - reach, 0):x + bw + reach]
        grown = _film_extent(lab[win] == i, lc[win], med[i], allowed[win], reach, floor, params)
        pieces.append({"grown": (win, grown), "sign": np.sign(med[i]),
                       "c": (x + bw / 2, y + bh / 2), "extent": math.hypot(bw, bh) / 2 + reach})
    # pieces of one sign whose extents meet are one film
    root, _ = _link_pieces(pieces, lambda a, b: a["sign"] == b["sign"] and _meet(a["grown"], b["grown"]), 0.0)
    out = mask.copy()
    sub = out[box]
    for p, r in zip(pieces, root):
        if (root == r).sum() >= 2:
            win, e = p["grown"]
            sub[win] |= e
    return out


def _film_pieces(k, ys, xs, n, area, lc, lin, floor, px, params):
    """Medians of the smoothed residual ``lc`` and of the linear residual ``lin`` over
    each label 0..n-1 (``k`` the label of each pixel ``ys, xs``, ``area`` its pixel
    count), and whether it may be a piece of a film: at least ``film_piece_um2``, the
    smoothed median at least ``floor``, both below ``film_max_contrast`` (denser is a
    particle, dig or chip), and not line-shaped (``linear_aspect``: a scratch's piece)."""
    med, fine = _label_median(k, lc[ys, xs], n), _label_median(k, lin[ys, xs], n)
    major, minor = _axes(k, ys, xs, n)
    film = ((area >= px(1.0) ** 2 * params["film_piece_um2"]) & (np.abs(med) >= floor)
            & (np.maximum(np.abs(med), np.abs(fine)) < math.log1p(params["film_max_contrast"]))
            & (major < params["linear_aspect"] * np.maximum(minor, 1.0)))
    film[0] = False
    return med, fine, film


def _film_extent(own, lc, med, valid, reach, floor, params):
    """The extent of a film piece ``own`` (bool, in a window): the ``valid`` pixels
    within ``reach`` px of it where the smoothed residual ``lc`` has the
    sign of its median ``med`` and at least ``mask_level`` of it (never below
    ``floor``), connected to it."""
    level = np.sign(med) * lc >= max(floor, params["mask_level"] * abs(med))
    return _reconstruct(own, level & _within(own, reach) & valid)


def _fill_films(labels, source, lin, valid, px, params):
    """``labels`` and their per-label sources with each faint film instance grown over
    its extent (renumbered 1..k when crumbs joined a film).

    A film is a thin, faint layer: its half-way cut in the fine residual is ragged
    and holed. A region instance (no line found in it) of at least
    ``film_piece_um2``, not line-shaped, whose median residual is below
    ``film_max_contrast`` unsmoothed and smoothed over half a coarse block, and
    keeps at least ``mask_level`` of it there (a layer wider than the smoothing:
    crossing thin lines do not), takes the unlabelled pixels of its extent
    (``_film_extent`` within ``film_gap_um``), and the faint region instances
    lying at least half within it (its crumbs) join it. Denser things (particles, pits,
    chips: higher contrast, sharp edges) keep their own outline. Run after
    ``_drop_rings``: an arc of the fiber's own structure must be judged by its own
    outline, not its extent.
    """
    n = int(labels.max()) + 1
    floor, top = math.log1p(params["coarse_min_contrast"]), math.log1p(params["film_max_contrast"])
    reach = int(math.ceil(px(params["film_gap_um"])))
    box = _mask_box(labels > 0, reach)
    lab = labels[box]
    ys, xs = _nonzero(lab)
    if ys.size == 0:
        return labels, source
    k = lab[ys, xs]
    lc = cv2.GaussianBlur(lin[box], (0, 0), px(params["coarse_um"]) / 2)
    area = np.bincount(k, minlength=n)
    med, fine, film = _film_pieces(k, ys, xs, n, area, lc, lin[box], floor, px, params)
    films = np.flatnonzero(film
                           & (np.abs(med) >= params["mask_level"] * np.abs(fine)) & (source[:n] == _REGION))
    if films.size == 0:
        return labels, source
    out = labels.copy()
    sub = out[box]
    boxes = _label_boxes(lab, n)
    crumb = (source[:n] == _REGION) & (np.abs(fine) < top) & (np.arange(n) > 0)  # (a particle on it is denser)
    into = np.arange(n)
    for i in films:
        win = _widened(boxes[i], reach, lab.shape)
        grown = _film_extent(lab[win] == i, lc[win], med[i], valid[box][win], reach, floor, params)
        sub[win][grown & (sub[win] == 0)] = i
        # region instances mostly within the extent are pieces of the film
        held = np.bincount(lab[win][grown], minlength=n)
        into[np.flatnonzero(crumb & (2 * held >= area) & (np.arange(n) != i))] = into[i]
    while not np.array_equal(into[into], into):  # a film taken into another film
        into = into[into]
    merged = into != np.arange(n)
    if not merged.any():
        return out, source
    return _without(_relabel(out, into.astype(out.dtype)), source, np.r_[merged, np.zeros(len(source) - n, bool)])


def _join_across_edges(labels, source, lin, regions, band, px, params):
    """``labels`` and their per-label sources with the pieces of one film on either
    side of a physical edge joined into one instance (renumbered 1..k).

    A film over the glass (or core) edge dims the two sides by different amounts,
    and the edge band between them seeds nothing (nor does its smoothed residual
    join them, as ``_join_film_pieces`` needs: the band's own profile lies
    between): it comes out as one piece on each side. Two region instances that
    are film-like (at least ``film_piece_um2``, median linear residual below
    ``film_max_contrast`` and nine in ten pixels too: a particle, pit or chip is
    denser), of one sign, lie mostly in different physical regions (``regions``)
    and come within ``film_gap_um`` of each other are one film; the unlabelled
    pixels of the edge ``band`` that their closing over that gap covers join it.
    (A bright drop on the ferrule beside a dark film on the glass are two defects.)
    A denser particle across the edge is joined the same way when a path of its
    sign's residual runs through the band from one piece to the other, at least
    half the weaker piece's half-way level (``mask_level``; the edge model takes up to
    half of a particle's contrast in the band) and ``coarse_min_contrast``: two
    particles facing each other across a clean edge have background between, and
    two along a dark edge only the edge's faint residue.
    """
    n = int(labels.max()) + 1
    ys, xs = _nonzero(labels)
    if n < 3:
        return labels, source
    k = labels[ys, xs]
    area = np.bincount(k, minlength=n)
    fine = _label_median(k, lin[ys, xs], n)
    # each label's physical region (ids 0..3): the one holding most of its pixels
    region = np.bincount(4 * k.astype(np.int64) + regions[ys, xs], minlength=4 * n).reshape(n, 4).argmax(axis=1)
    region_piece = (source[:n] == _REGION) & (np.arange(n) > 0)
    film = ((area >= px(1.0) ** 2 * params["film_piece_um2"])
            & (np.abs(fine) < math.log1p(params["film_max_contrast"])) & region_piece)
    # ... and faint throughout: a particle on the edge has a dense body beside its
    # band-dimmed rest
    for i in np.flatnonzero(film):
        sel = k == i
        film[i] = np.percentile(np.abs(lin[ys[sel], xs[sel]]), 90) < params["film_max_contrast"]
    ids = np.flatnonzero(region_piece)
    if len(np.unique(region[ids])) < 2:
        return labels, source
    reach = int(math.ceil(px(params["film_gap_um"])))
    floor = math.log1p(params["coarse_min_contrast"])
    boxes = _label_boxes(labels, n)
    pieces = []  # each piece: its mask in its box (and widened by the gap, when asked)
    for i in ids:
        r0, c0 = boxes[i]
        pieces.append({"i": i, "own": (boxes[i], labels[boxes[i]] == i),
                       "c": ((c0.start + c0.stop - 1) / 2, (r0.start + r0.stop - 1) / 2),
                       "extent": math.hypot(c0.stop - c0.start, r0.stop - r0.start) / 2})

    def near(a):
        if "near" not in a:
            win = _widened(boxes[a["i"]], reach, labels.shape)
            a["near"] = (win, _within(labels[win] == a["i"], reach))
        return a["near"]

    def bridge(members, win):
        """The unlabelled band pixels of ``win`` on paths of the members' sign's
        residual that connect two or more members."""
        lab = labels[win]
        level = max(floor, 0.5 * params["mask_level"] * np.abs(fine[members]).min())
        path = band[win] & (lab == 0) & (np.sign(fine[members[0]]) * lin[win] >= level)
        _, comp = cv2.connectedComponents((path | np.isin(lab, members)).view(np.uint8), connectivity=8)
        held = np.zeros(comp.max() + 1, np.int64)
        for m in members:
            held[np.unique(comp[lab == m])] += 1
        return path & (held >= 2)[comp]

    def joinable(a, b):
        i, j = a["i"], b["i"]
        if region[i] == region[j] or np.sign(fine[i]) != np.sign(fine[j]) or not _meet(near(a), b["own"]):
            return False
        return (film[i] and film[j]) or bridge([i, j], _widened(_join_boxes(boxes, [i, j]), 1, labels.shape)).any()

    # pieces of one sign in different regions within the gap of each other are one film
    # (or one particle across the edge)
    root, pairs = _link_pieces(pieces, joinable, reach)
    if not pairs:
        return labels, source
    into = np.arange(n)
    out = labels.copy()
    for r in np.unique(root[np.bincount(root, minlength=len(ids))[root] > 1]):
        members = ids[root == r]
        into[members] = members.min()  # the group takes its first label
        win = _widened(_join_boxes(boxes, members), reach, labels.shape)
        closed = ~_within(~_within(np.isin(labels[win], members), reach), reach)  # closing
        if not film[members].all():
            closed &= bridge(members, win)
        out[win][closed & band[win] & (out[win] == 0)] = members.min()
    merged = into != np.arange(n)
    return _without(_relabel(out, into.astype(labels.dtype)), source, np.r_[merged, np.zeros(len(source) - n, bool)])


def _meet(a, b):
    """Whether two masks given as (window slices, mask in it) share a pixel."""
    (wa, ma), (wb, mb) = a, b
    y0, y1 = max(wa[0].start, wb[0].start), min(wa[0].start + ma.shape[0], wb[0].start + mb.shape[0])
    x0, x1 = max(wa[1].start, wb[1].start), min(wa[1].start + ma.shape[1], wb[1].start + mb.shape[1])
    if y0 >= y1 or x0 >= x1:
        return False
    return bool((ma[y0 - wa[0].start:y1 - wa[0].start, x0 - wa[1].start:x1 - wa[1].start]
                 & mb[y0 - wb[0].start:y1 - wb[0].start, x0 - wb[1].start:x1 - wb[1].start]).any())


def _band_outliers(cand, absz, band, blur_px, px, params):
    """Components of ``cand`` (seeds on an edge band) that are particles on the
    edge: compact (the body above half their peak |z| is less than ``_NOTCH``
    times as long as wide: the epoxy ring's and a misfit's residues are thin arcs)
    and standing out from the band's own texture: peak |z| at least
    ``band_texture_factor`` times the largest |z| of the band within
    ``arc_um`` around them (beyond twice ``blur_px`` of the body, and of the
    body of one other component there: two particles side by side). A particle
    on a smooth edge does; a grain of a rough epoxy ring, among its like,
    does not."""
    reach, excl = int(math.ceil(px(params["arc_um"]))), 2 * blur_px
    k = params["band_texture_factor"]
    # in the candidates' box widened by the reach (where the whole image's answer is)
    box = _mask_box(cand, reach)
    out = np.zeros(cand.shape, bool)
    cand, absz, band = cand[box], absz[box], band[box]
    n, lab, stats, _ = cv2.connectedComponentsWithStats(np.ascontiguousarray(cand).view(np.uint8),
                                                        connectivity=8)
    h, w = cand.shape
    keep = np.zeros(n, bool)
    for i in range(1, n):
        x, y, cw, ch = stats[i, :4]
        win = np.s_[max(y - reach, 0):min(y + ch + reach, h), max(x - reach, 0):min(x + cw + reach, w)]
        near = lab[win]
        own = (near == i).astype(np.uint8)
        peak = absz[win][own > 0].max()
        # its body: what joins it above half its peak (an arc of the epoxy ring is long)
        body = _reconstruct(own > 0, absz[win] >= 0.5 * peak)
        ys, xs = _nonzero(body)
        major, minor = _axes(np.zeros(ys.size, np.int64), ys, xs, 1)
        if major[0] >= _NOTCH * max(minor[0], 1.0):
            continue
        d = cv2.distanceTransform(1 - body.view(np.uint8), cv2.DIST_L2, 3)
        around = band[win] & (d > excl) & (d <= reach)
        # one other candidate there is a second particle, not texture (its body and
        # blur are left out); two or more are grains of a rough ring, and stay
        others = (near > 0) & (near != i)
        if others.any() and np.unique(near[others]).size == 1:
            around &= cv2.dilate(others.view(np.uint8), _disk(2 * excl + 1)) == 0
        keep[i] = peak >= k * (absz[win][around].max() if around.any() else 0.0)
    out[box] = keep[lab]
    return out


def _do2mr(zs, regions, seed_ok, win, params, spread=None, pooled=False, out=None):
    """DO2MR: (max - min) ranking residual, median filtered, thresholded per region
    at median + γ·``spread`` (default ``_clipped_std``) of the residual, the core's
    at most the cladding's (the same glass: a scratch, digs or a film covering a
    good part of a small core inflate its own statistics); with ``pooled`` at
    most at the threshold of all regions together (``zs`` is in noise units
    everywhere). The statistics are those of the ``seed_ok`` pixels; the result
    is kept on ``out`` (default ``seed_ok``)."""
    kern = np.ones((win, win), np.uint8)
    res = cv2.medianBlur(cv2.dilate(zs, kern) - cv2.erode(zs, kern), 3)
    floor = params["do2mr_sigma_floor"]

    def stat(v):
        s = spread(v) if spread else _clipped_std(v, params["outlier_mads"], floor)
        return _median(v) + params["do2mr_gamma"] * max(s, floor)

    thr = _per_region(res, regions, seed_ok, stat)
    if thr.size > 2:
        thr[1] = np.fmin(thr[1], thr[2])  # (NaN: a region without statistics)
    if pooled and (seed_ok & (regions > 0)).any():
        thr = np.fmin(thr, stat(_sample(res, seed_ok & (regions > 0))))
    thr = np.nan_to_num(thr, nan=np.inf).astype(np.float32)
    return (seed_ok if out is None else out) & (regions > 0) & (res > lookup(regions, thr, np.float32))


def _reconstruct(seeds, grow, connectivity=8):
    """Connected components of ``grow`` that contain a seed pixel."""
    grow = grow | seeds
    n, lab = cv2.connectedComponents(grow.view(np.uint8), connectivity=connectivity)
    ys, xs = _nonzero(grow)
    k = lab[ys, xs]
    keep = np.zeros(n, bool)
    keep[k[seeds[ys, xs]]] = True
    sel = keep[k]
    out = np.zeros(grow.shape, bool)
    out[ys[sel], xs[sel]] = True
    return out


def _grow_cut(seeds, z, lin, params, inner_px):
    """Components of ``|z| > grow_sigma`` (plus ``seeds``) that hold a seed, each
    cut half way between its core and the background (``_edge_cut``; ``z``
    signed noise units, ``lin`` the linear residual), never below ``grow_sigma``.
    Of what the cut leaves, the parts joined to the component's strong part (above half
    its peak |z|) are kept, and so are dark seeds (``dot_min_contrast``) it cut apart."""
    out = np.zeros(seeds.shape, bool)
    sy, sx = _nonzero(seeds)
    if sy.size == 0:
        return out
    # in the seeds' box widened by a margin; the whole image when a seeded component
    # reaches an inner side of the box (it may continue beyond)
    h, w = seeds.shape
    m = 32
    y0, y1 = max(int(sy.min()) - m, 0), min(int(sy.max()) + m + 1, h)
    x0, x1 = max(int(sx.min()) - m, 0), min(int(sx.max()) + m + 1, w)
    while True:
        box = np.s_[y0:y1, x0:x1]
        grow = seeds[box] | (np.abs(z[box]) > params["grow_sigma"])
        n, lab = cv2.connectedComponents(grow.view(np.uint8), connectivity=8)
        ys, xs = _nonzero(grow)
        k = lab[ys, xs]
        seeded = np.zeros(n, bool)
        seeded[k[seeds[box][ys, xs]]] = True
        on = seeded[k]
        ys, xs, k = ys[on], xs[on], k[on]
        bh, bw = y1 - y0, x1 - x0
        if (bh, bw) == (h, w) or not (((ys == 0) & (y0 > 0)).any() or ((ys == bh - 1) & (y1 < h)).any()
                                      or ((xs == 0) & (x0 > 0)).any() or ((xs == bw - 1) & (x1 < w)).any()):
            break
        y0, y1, x0, x1 = 0, h, 0, w
    ys, xs = ys + y0, xs + x0
    zv, lv = z[ys, xs], lin[ys, xs]
    core, peak = _edge_cut(k, ys, xs, zv, lv, n, inner_px, params)
    sel = _inside(k, zv, lv, core, peak, params)
    # only what joins the defect's strong part (above half its peak |z|): the half-way cut
    # moves its edge, it does not add the faint crumbs around it
    if sel.any():
        y0, x0 = int(ys[sel].min()), int(xs[sel].min())
        box = np.s_[y0:int(ys[sel].max()) + 1, x0:int(xs[sel].max()) + 1]
        # (and a dark seed the half-way cut left apart from it, a pit beside a darker
        # particle: on its own it would have been a defect)
        strong = sel & ((np.abs(zv) >= params["mask_level"] * peak[k])
                        | (seeds[ys, xs] & (lv <= -params["dot_min_contrast"])))
        img, seeds_img = np.zeros(out[box].shape, bool), np.zeros(out[box].shape, bool)
        img[ys[sel] - y0, xs[sel] - x0] = True
        seeds_img[ys[strong] - y0, xs[strong] - x0] = True
        out[box] = _reconstruct(seeds_img, img)
    return out


def _films_beside(kept, seeds, z, lin, params, inner_px, gap_px):
    """Films that a stronger defect on them took into its component and ``_grow_cut``
    cut away at that defect's contrast: the ``seeds`` it left beyond twice ``inner_px``
    of what it ``kept`` grow again without those pixels and a gap of ``gap_px`` (the
    merge gap and one pixel: the two stay apart), each piece cut at its own core.
    A piece stays when it has a body deeper than twice ``inner_px`` beyond that reach:
    a film under a particle or scratch, not the kept defect's skirt. Returns the
    pieces (bool)."""
    if not kept.any():  # (without a kept defect the cut would be the same)
        return np.zeros(kept.shape, bool)
    square = np.ones((4 * inner_px + 1,) * 2, np.uint8)  # within 2 inner_px (Chebyshev)
    near = cv2.dilate(kept.view(np.uint8), square) > 0
    rest = seeds & ~near
    # (no piece can have a body where |z| has none beyond the reach)
    if not rest.any():
        return np.zeros(kept.shape, bool)
    if not (cv2.erode((np.abs(z) > params["grow_sigma"]).view(np.uint8), square) > near).any():
        return np.zeros(kept.shape, bool)
    gap = cv2.dilate(kept.view(np.uint8), _disk(2 * gap_px + 1)) > 0
    more = _grow_cut(rest, np.where(gap, np.float32(0), z), lin, params, inner_px)
    body = (cv2.erode(more.view(np.uint8), square) > 0) & ~near
    return _reconstruct(body, more)


def _ring_beside(pieces, kept, gap_px):
    """The ring of ``gap_px`` around each component of ``kept`` within ``gap_px`` + 2 px
    of ``pieces`` (bool), off both."""
    near = cv2.dilate(pieces.view(np.uint8), _disk(2 * (gap_px + 2) + 1)) > 0
    beside = _reconstruct(near & kept, kept)
    ring = cv2.dilate(beside.view(np.uint8), _disk(2 * gap_px + 1)) > 0
    return ring & ~kept & ~pieces


def _edge_cut(k, ys, xs, z, lin, n, inner_px, params):
    """Core contrast and peak |z| of each label 0..n-1, which place its true edge.

    Blur acts on linear intensity, so the edge of a blurred step lies where
    the intensity is ``mask_level`` (half) of the way from the local
    background to the defect's core (``_inside``), not at half its log
    contrast (inside a dark defect, outside a bright one). The core is the
    median linear residual over the label's interior (pixels above half its
    peak |z| and ``inner_px`` inside that outline, where blur does not
    reach), robust to the noise and texture a maximum follows, or the value
    at the peak when the interior has under 5 pixels (a small blob's
    blurred profile is a peak). ``k, ys, xs``: label and position of each
    pixel; ``z`` signed noise units and ``lin`` the linear residual (image /
    background - 1, smoothed as z) at them. Returns ``(core, peak)``.
    """
    core, peak = np.zeros(n, np.float32), np.zeros(n, np.float32)
    if k.size == 0:
        return core, peak
    absz = np.abs(z)
    np.maximum.at(peak, k, absz)
    first = absz >= params["mask_level"] * peak[k]
    y0, x0 = int(ys.min()), int(xs.min())
    img = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), np.uint8)
    img[ys[first] - y0, xs[first] - x0] = 1
    er = cv2.erode(img, _disk(2 * inner_px + 1), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    inner = first & (er[ys - y0, xs - x0] > 0)
    core = _label_median(k[inner], lin[inner], n)
    small = np.bincount(k[inner], minlength=n) < 5
    core[small] = lin[_label_argmax(k, absz, peak)[small]]
    return core, peak


def _inside(k, z, lin, core, peak, params):
    """Pixels (label ``k``, values ``z``, ``lin``) inside their defect's edge
    (``_edge_cut``): of the core's sign and at least ``mask_level`` of its
    linear contrast; of the opposite sign (a pit's bright rim) at least
    ``mask_level`` x the peak |z|; never below ``grow_sigma``."""
    frac = params["mask_level"]
    c = core[k]
    same = np.where(c >= 0, lin >= frac * c, lin <= frac * c)
    opp = (np.sign(lin) != np.sign(c)) & (np.abs(z) >= frac * peak[k])
    return (same | opp) & (np.abs(z) >= params["grow_sigma"])


def _label_median(k, v, n, q=0.5):
    """Median (or the ``q`` quantile, the mean of its two nearest order statistics) of
    ``v`` per label 0..n-1 (``k`` the label of each value; 0 when empty)."""
    out = np.zeros(n, np.float32)
    if k.size == 0:
        return out
    order = np.lexsort((v, k))
    bounds = np.searchsorted(k[order], np.arange(n + 1))
    cnt = np.diff(bounds)
    has = cnt > 0
    rank = q * (cnt[has] - 1)
    lo = order[bounds[:-1][has] + np.floor(rank).astype(np.int64)]
    hi = order[bounds[:-1][has] + np.ceil(rank).astype(np.int64)]
    out[has] = 0.5 * (v[lo] + v[hi])
    return out


def _label_argmax(k, v, peak):
    """Index (into ``k``/``v``) of a largest ``v`` of each label (``peak``: the
    per-label maxima; 0 for a label without values)."""
    out = np.zeros(peak.size, np.int64)
    at = np.flatnonzero(v == peak[k])
    out[k[at]] = at
    return out


def _flank_level(z, on, kern, params):
    """Level (|z|) a line's pixels must reach: ``mask_level`` of the local peak (the
    maximum over the ``on`` pixels within ``kern``) of the pixel's own sign, where
    that peak is at least ``mask_level`` of the other sign's (the weaker flank of a
    shaded groove is the groove's, not noise beside it), else of the larger one;
    never below ``grow_sigma``. Contrast fades along a scratch: its faint parts
    keep their width."""
    frac = params["mask_level"]
    pos = cv2.dilate(np.where(on, np.maximum(z, 0), 0).astype(np.float32), kern)
    neg = cv2.dilate(np.where(on, np.maximum(-z, 0), 0).astype(np.float32), kern)
    own, other = np.where(z >= 0, pos, neg), np.where(z >= 0, neg, pos)
    return np.maximum(frac * np.where(own >= frac * other, own, other), params["grow_sigma"])


def _recut_lines(labels, line, z, line_reach, params):
    """Thin parts of line instances (``line``, per label) cut again on the unsmoothed
    normalised residual ``z``, at ``mask_level`` of the mean |z| of their medial pixels
    within ``line_reach`` (never below ``grow_sigma``): the smoothing that finds them
    (``smooth_px``) widens a line the optics barely resolve 1.4-1.8x. Thin: within
    reach of a medial pixel at most twice the smoothing's full width at half maximum
    across, and of no wider one (a pit on the line, a groove's wide body keep their
    cut). The medial axis, one-pixel gaps between flanks and enclosed holes stay; an
    instance that would keep under half its pixels keeps them all."""
    on = line[labels]
    if not on.any():
        return labels
    box = _mask_box(on, line_reach)
    lab, on_b, zb = labels[box], on[box], z[box]
    medial = on_b & skeletonize(on_b)
    half = cv2.distanceTransform(on_b.view(np.uint8), cv2.DIST_L2, 3)
    thin = medial & (half <= 2.355 * params["smooth_px"] + 0.5)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * line_reach + 1,) * 2)
    cut = on_b & (cv2.dilate(thin.view(np.uint8), k) > 0) & (cv2.dilate((medial & ~thin).view(np.uint8), k) == 0)
    if not cut.any():
        return labels
    keep = on_b & ~cut
    # the line's peak: the mean |z| of its medial pixels around (a maximum would take the
    # noise's and cut too narrow)
    ridge = np.where(medial, np.abs(zb), 0).astype(np.float32)
    side = (2 * line_reach + 1,) * 2
    peak = cv2.boxFilter(ridge, -1, side, normalize=False) / np.maximum(
        cv2.boxFilter(medial.astype(np.float32), -1, side, normalize=False), 1)
    level = np.maximum(params["mask_level"] * peak, params["grow_sigma"])
    keep |= cut & ((np.abs(zb) >= level) | medial)
    keep |= on_b & _gaps(keep)
    keep |= on_b & _fill_holes(keep)
    n = int(labels.max()) + 1
    weak = np.bincount(lab[keep], minlength=n) < 0.5 * np.bincount(lab[on_b], minlength=n)
    out = labels.copy()
    out[box][on_b & ~keep & ~weak[lab]] = 0
    return out


def _gaps(mask):
    """Pixels of a one-pixel gap in ``mask``: both neighbours along a row, a
    column or a diagonal are set (unlike a closing, it does not fill the
    corners of a thin diagonal line)."""
    m = mask.view(np.uint8)
    out = np.zeros(mask.shape, bool)
    for k in (np.array([[1, 0, 1]], np.uint8), np.array([[1], [0], [1]], np.uint8),
              np.eye(3, dtype=np.uint8) * np.array([1, 0, 1], np.uint8),
              np.fliplr(np.eye(3, dtype=np.uint8)) * np.array([1, 0, 1], np.uint8)):
        out |= cv2.erode(m, k, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return out


def _refine(labels, z, lin, reach, line, line_reach, params):
    """Re-cut upsampled instances at the input resolution (half-way rule).

    ``z`` is the signed normalised image, ``lin`` the linear residual.
    Each instance may grow by ``reach`` pixels. Region instances are cut
    half way to their core (``_edge_cut``); lines (``line``, per label) at
    ``_flank_level`` of the lines within ``line_reach`` pixels, with the
    one-pixel gaps between flanks filled. An instance the fine image does
    not support (faint, found at a coarse scale) keeps its upsampled mask.
    """
    grown = cv2.dilate(labels, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    n = int(labels.max()) + 1
    ys, xs = _nonzero(labels)
    core, peak = _edge_cut(labels[ys, xs], ys, xs, z[ys, xs], lin[ys, xs], n,
                           max(1, int(round(3 * params["smooth_px"]))), params)
    ys, xs = _nonzero(grown)
    g, zv = grown[ys, xs], z[ys, xs]
    keep = _inside(g, zv, lin[ys, xs], core, peak, params)
    if line[1:].any():
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * line_reach + 1,) * 2)
        # the lines' levels, in their box widened by the reach (grow_sigma beyond)
        on = line[labels]
        box = _mask_box(on, line_reach)
        level = np.full(labels.shape, params["grow_sigma"], np.float32)
        level[box] = _flank_level(z[box], on[box], k, params)
        on_line = line[g]
        keep[on_line] = (np.abs(zv) >= level[ys, xs])[on_line]
        # the one-pixel gap between a shaded groove's flanks is the groove's
        kept = np.zeros(labels.shape, bool)
        kept[ys[keep & on_line], xs[keep & on_line]] = True
        gaps = np.zeros(labels.shape, bool)
        gaps[box] = _gaps(kept[box])
        keep |= on_line & gaps[ys, xs]
    # on the grown pixels only (they hold every labelled one)
    lab, fine = labels[ys, xs], np.where(keep, g, 0)
    weak = np.bincount(fine, minlength=n) < 0.5 * np.bincount(lab, minlength=n)
    weak[0] = False
    out = np.zeros(labels.shape, np.uint16)
    out[ys, xs] = np.where(weak[lab], lab, np.where(weak[fine], 0, fine))
    return out


def _scratch_candidates(zs, seed_ok, visible, centre, px, params):
    """LEI scratches: oriented line averages against parallel side lines.

    Runs on |zs| (a shaded groove's dark and bright flanks would cancel in
    a signed average) at ``lei_um_per_px`` (``_lei_strength``: digital
    lines, no image rotation). The max response over orientations, in units
    of its robust spread, is thinned to its ridges (``_ridges``: parallel
    lines stay apart), thresholded with hysteresis and split where
    the line direction turns (``_oriented_components``: crossing scratches
    stay apart); collinear segments are joined into one scratch each.
    Averaged to ``lei_um_per_px``, a line under ~1 µm wide is outshone by a
    ferrule's grain, or on smooth glass sinks under the spread floor: a second
    pass runs the same filter on the high-pass |zs| (``_fine_highpass``) with
    its own floor (``lei_fine_sigma_floor``) and adds its lines beyond the side
    lines' offset of the first pass's; a line found mostly by it must be
    ``lei_fine_min_length_um`` long.
    Returns a label image, one label per scratch: its centre line where
    the image supports it plus the pixels around it above half the line's
    local peak |z|; each label's mean width (pixels per centre-line pixel);
    and its line width, the median local width along the label's medial axis
    (``_line_widths``; the mean where the label keeps no medial pixel), at most
    the mean: a blob the line runs into or passes within reach widens the mean,
    not the median.
    """
    h, w = zs.shape
    f = max(1.0, params["lei_um_per_px"] / (1.0 / px(1.0)))
    chans = (np.abs(zs), zs, _fine_highpass(zs, seed_ok, px(params["lei_fine_um"])))
    if f > 1.05:
        small = (max(8, round(w / f)), max(8, round(h / f)))
        # |zs|, zs and the fine lines' high-pass |zs| in one multi-channel call (the same
        # weights, computed once; cv2.merge/split: numpy's strided channel copies cost more)
        chans = cv2.split(cv2.resize(cv2.merge(chans), small, interpolation=cv2.INTER_AREA))
        okl = cv2.resize(seed_ok.astype(np.uint8), small, interpolation=cv2.INTER_NEAREST) > 0
    else:
        small, okl = (w, h), seed_ok
    zl, zsl, fine = chans
    scale = small[0] / w
    lpx = lambda um: px(um) * scale  # noqa: E731  (µm -> LEI pixels)
    hyst, ori = _lei_lines(zl, okl, lpx, params)
    # thin lines: the same filter on the high-pass, where the first pass found nothing
    # (its lines stay as they are)
    fine_ok = cv2.erode(okl.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    fine_floor = {**params, "lei_sigma_floor": params["lei_fine_sigma_floor"]}
    hyst_f, ori_f = _lei_lines(fine, fine_ok, lpx, fine_floor)
    # within the side lines' offset of a coarse line: that line's echo, not a second line
    hyst_f &= cv2.dilate(hyst.view(np.uint8), _disk(2 * lpx(params["lei_offset_um"]) + 1)) == 0
    hyst |= hyst_f
    ori[hyst_f] = ori_f[hyst_f]
    ori[~hyst] = 0
    centre_l = None if centre is None else ((centre[0] + 0.5) * scale - 0.5, (centre[1] + 0.5) * scale - 0.5)
    lines = _keep_lines(hyst, ori, zsl, centre_l, lpx, params)
    # a line mostly found on the high-pass alone must be longer (grain is short-lived);
    # its pixel count is its length (one-pixel ridges and links)
    n = int(lines.max()) + 1
    length = np.bincount(lines.ravel(), minlength=n)
    drop = (np.bincount(lines[hyst_f], minlength=n) > 0.5 * length) & (
        length < lpx(params["lei_fine_min_length_um"]))
    drop[0] = False
    lines[drop[lines]] = 0
    if not lines.any():
        return np.zeros((h, w), np.uint16), np.zeros(1), np.zeros(1)
    if small != (w, h):
        lines = cv2.resize(lines, (w, h), interpolation=cv2.INTER_NEAREST)
    kern = _disk(2 * px(params["scratch_reach_um"]) + 1)
    # work in the lines' bounding box, widened by the reach
    box = _mask_box(lines > 0, kern.shape[0] // 2)
    labels = np.zeros((h, w), np.uint16)
    lines, absz, visible = lines[box], np.abs(zs[box]), visible[box]
    # centre line where the image supports it (the line filter overshoots the ends)
    centre = skeletonize(lines > 0) & (absz >= params["lei_centre_sigma"]) & visible
    near = cv2.dilate(centre.astype(np.uint8), kern) > 0
    # width: pixels above half the scratch's local peak (contrast fades along it)
    local_peak = cv2.dilate(np.where(centre, absz, 0).astype(np.float32), kern)
    level = np.maximum(params["mask_level"] * local_peak, params["grow_sigma"])
    mask = centre | _reconstruct(centre, near & (absz >= level))
    # each pixel takes the label of a centre line within reach (the larger where two cross)
    centre_lab = np.where(centre, lines, 0).astype(np.uint16)
    reach_lab = cv2.dilate(centre_lab, kern)
    n = int(lines.max()) + 1
    length = np.maximum(np.bincount(centre_lab.ravel(), minlength=n), 1)
    width = np.bincount(np.where(mask, reach_lab, 0).ravel(), minlength=n) / length
    # a shaded groove (relief) has a dark and a bright side whose contrast cancels on the
    # axis: one pixel gaps between the two flanks belong to the scratch
    mask |= near & _gaps(mask)
    labels[box] = np.where(mask, reach_lab, 0)
    line = _line_widths(mask, np.where(skeletonize(mask), reach_lab, 0), n)
    return labels, width, np.where(line > 0, np.minimum(width, line), width)


def _fine_highpass(zs, ok, sigma):
    """|zs - m|, m the Gaussian mean (``sigma`` px) of ``zs`` over the ``ok`` pixels
    (normalised, so that the edge bands outside ``ok`` leave no step): a line
    narrower than ~2 sigma keeps its contrast, a ferrule's wider grain loses it.
    0 outside ``ok``."""
    okf = ok.astype(np.float32)
    out = cv2.GaussianBlur(zs * okf, (0, 0), sigma)
    den = cv2.GaussianBlur(okf, (0, 0), sigma)
    out /= np.maximum(den, np.float32(1e-3), out=den)
    np.subtract(zs, out, out=out)
    np.abs(out, out=out)
    out *= okf
    return out


def _lei_lines(z, valid, lpx, params):
    """LEI strength of ``z`` (``_lei_strength``), thinned to its ridges and cut with
    hysteresis at ``lei_high`` / ``lei_low`` (noise units): ``(mask, orientation index)``."""
    strength, ori = _lei_strength(z, valid, lpx, params)
    strength[~valid] = 0.0
    ridge = _ridges(strength, ori, _n_orientations(params), params["lei_low"])
    return _reconstruct(ridge & (strength > params["lei_high"]), ridge), ori


def _line_widths(mask, medial, n):
    """Median local width (px) of each line 0..n-1 along its medial axis: at a
    pixel of label ``medial`` (the skeleton of ``mask``, labelled), twice its
    distance to the outside of ``mask`` less one (a line of width w has distance
    (w + 1) / 2 there; at least 1 on ``mask``); 0 for a label without medial pixels."""
    dist = cv2.distanceTransform(np.pad(mask, 1).view(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = _nonzero(medial)
    return _label_median(medial[ys, xs].astype(np.int64), 2.0 * dist[ys, xs] - 1.0, n)


def _n_orientations(params):
    """The LEI orientation count: ``lei_orientations`` rounded up to even, so that
    the horizontal and vertical directions are both among them."""
    n = int(params["lei_orientations"])
    return n + n % 2


def _ridges(strength, ori, n_or, low):
    """Pixels of ``strength`` above ``low`` and not below either neighbour
    across their line direction (``ori``: index of ``n_or``, as
    ``_lei_strength``): one-pixel ridges, so that the responses of parallel
    lines a few pixels apart, and the spread of a strong line's response,
    do not fuse into one band."""
    ys, xs = _nonzero(strength > low)
    out = np.zeros(strength.shape, bool)
    t = np.pi * np.arange(n_or) / n_or
    o = ori[ys, xs]  # the normal (-sin, cos) of each direction, rounded to a neighbour
    ny, nx = np.rint(np.cos(t)).astype(np.int32)[o], np.rint(-np.sin(t)).astype(np.int32)[o]
    sp = np.pad(strength, 1)
    out[ys, xs] = strength[ys, xs] >= np.maximum(sp[ys + 1 + ny, xs + 1 + nx], sp[ys + 1 - ny, xs + 1 - nx])
    return out


def _oriented_components(mask, ori, n_or):
    """Connected components of ``mask`` whose neighbouring pixels' line
    orientations (``ori``, index of ``n_or``, smoothed over the mask's
    neighbours) differ by at most one step. Pixels whose neighbours'
    directions disagree (doubled-angle coherence below 0.8: two lines
    crossing at more than ~35 degrees) link nothing.

    Returns ``(labels int32, n)``; a line crossing another keeps its own label.
    """
    out = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return out, 0
    # in the mask's box widened by the smoothing's reach (zeros beyond: the same sums)
    box = _mask_box(mask, 5)
    mask, ori = mask[box], ori[box]
    ys, xs = _nonzero(mask)
    n = ys.size
    h, w = mask.shape
    idx = np.full(mask.shape, -1, np.int64)
    idx[ys, xs] = np.arange(n)
    # the orientation of a faint line jitters: average it (doubled angles) over its neighbours
    t = np.float32(2 * math.pi / n_or) * np.arange(n_or, dtype=np.float32)
    m = mask.astype(np.float32)
    vc, vs = np.zeros_like(m), np.zeros_like(m)
    vc[ys, xs], vs[ys, xs] = np.cos(t)[ori[ys, xs]], np.sin(t)[ori[ys, xs]]
    vc, vs = cv2.GaussianBlur(vc, (0, 0), 1.0), cv2.GaussianBlur(vs, (0, 0), 1.0)
    o = np.round(np.arctan2(vs[ys, xs], vc[ys, xs]) * (n_or / (2 * math.pi))).astype(np.int64) % n_or
    # where two lines cross, the directions around a pixel disagree: it links nothing
    coherent = np.hypot(vc[ys, xs], vs[ys, xs]) >= 0.8 * cv2.GaussianBlur(m, (0, 0), 1.0)[ys, xs]
    rows, cols = [], []
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        y2, x2 = ys + dy, xs + dx
        inside = np.flatnonzero((y2 < h) & (x2 >= 0) & (x2 < w))
        b = idx[y2[inside], x2[inside]]
        a, b = inside[b >= 0], b[b >= 0]
        d = np.abs(o[a] - o[b])
        keep = (np.minimum(d, n_or - d) <= 1) & coherent[a] & coherent[b]
        rows.append(a[keep])
        cols.append(b[keep])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    nc, comp = connected_components(graph, directed=False)
    out[box][ys, xs] = comp + 1
    return out, nc


def _empty_table():
    """The instance table of an image without defects (empty NumPy columns build it
    about 5x faster than empty Series: every clean image pays for it)."""
    return pd.DataFrame({c: np.empty(0, _dtype(c)) for c in COLUMNS})


def _dtype(col):
    if col in ("zones_touched", "shape_class", "source"):
        return "object"
    if col in ("number", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "area_px", "zone", "innermost_zone"):
        return "int64"
    return "float64"


def _um_per_px(geometry, params):
    upp = geometry.get("um_per_px") if geometry else None
    if upp is None or not np.isfinite(upp) or upp <= 0:
        upp = params["default_um_per_px"]
    return float(upp)


def _finite(geometry, key):
    v = geometry.get(key) if geometry else None
    return v is not None and np.isfinite(v)


def _resample(gray, zone_map, factor):
    if factor == 1.0:
        return gray, zone_map
    h, w = gray.shape
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return (cv2.resize(gray, size, interpolation=cv2.INTER_AREA),
            cv2.resize(zone_map, size, interpolation=cv2.INTER_NEAREST))


def _work_geometry(geometry, x0, y0, factor):
    """Fiber centre, radii and ellipse in work-image pixels (None without a fiber)."""
    if not all(_finite(geometry, k) for k in ("center_x", "center_y", "cladding_radius_px")):
        return None
    geo = {
        "cx": (geometry["center_x"] - x0 + 0.5) / factor - 0.5,
        "cy": (geometry["center_y"] - y0 + 0.5) / factor - 0.5,
        "r_clad": geometry["cladding_radius_px"] / factor,
        "r_core": None,
        "ellipticity": float(geometry.get("cladding_ellipticity") or 0.0)
        if _finite(geometry, "cladding_ellipticity") else 0.0,
        "angle_deg": float(geometry["cladding_angle_deg"]) if _finite(geometry, "cladding_angle_deg") else 0.0,
    }
    if geometry.get("core_visible") and _finite(geometry, "core_radius_px"):
        geo["r_core"] = geometry["core_radius_px"] / factor
        core_x = geometry["core_center_x"] if _finite(geometry, "core_center_x") else geometry["center_x"]
        core_y = geometry["core_center_y"] if _finite(geometry, "core_center_y") else geometry["center_y"]
        geo["core_cx"] = (core_x - x0 + 0.5) / factor - 0.5
        geo["core_cy"] = (core_y - y0 + 0.5) / factor - 0.5
    return geo


# Pixels per row strip of the LEI line sums: ~0.5 MB per int16 buffer. Smaller strips
# keep the buffers in a core's L2 cache but multiply the ~150 OpenCV calls per strip,
# whose overhead then dominates (with the shared run sums, 128 K to 512 K px strips time alike).
_LEI_STRIP_PX = 262144
# The line sums run on int16 (half the memory traffic of float32, ~2x faster), in steps
# of 1 / q of the input's unit: q the largest power of two up to _LEI_MAX_STEPS for
# which no sum of the line's samples can exceed the int16 range.
_LEI_MAX_STEPS = 1024


def _lei_strength(z, valid, lpx, params):
    """Max over orientations of the sidelobe-free line contrast / σ.

    ``z`` is a rectified image (|z| of the flattened one: a dark, a bright
    and a shaded groove, whose dark and bright flanks cancel in a signed
    average, are all ridges of it). Each orientation sums
    ``lei_length_um`` worth of samples along a
    digital line (unit steps along the dominant axis, the other coordinate
    rounded: every orientation sums the same number of pixels, so all
    share one noise unit) as a sum of shifted run sums of the padded image
    (``_digital_lines``: runs along an axis or a diagonal, which the
    orientations share; in int16 steps, ``_LEI_MAX_STEPS``), and compares it with the same line
    shifted ``lei_offset_um`` to either side (``_side_contrast``). The noise
    unit is the robust spread of the centre-minus-side difference at
    orientation 0. Returns
    ``(strength, orientation)``: the maximum over orientations in noise
    units and the index i of the first orientation reaching it (uint8, 0
    where no response); orientation i is the line direction 180 i / n
    degrees (clockwise on screen from the x axis), n the (even) number of
    orientations.
    """
    L = _odd(lpx(params["lei_length_um"]))
    off = max(2, int(round(lpx(params["lei_offset_um"]))))
    n_or = _n_orientations(params)
    h, w = z.shape
    half = L // 2
    m = off + 1  # margin of the line image: room for the side shifts
    pad = half + m
    top = float(z.max(initial=0.0)) * L
    q = float(2 ** min(int(math.log2(_LEI_MAX_STEPS)), math.floor(math.log2(32767 / top)))) if top > 0 else 1.0
    zq = (z * np.float32(q) + np.float32(0.5)).astype(np.int16)
    zp = cv2.copyMakeBorder(zq, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    ww = w + 2 * m
    lines = _digital_lines(L, n_or, off)
    # strips of rows, each through all orientations: its buffers stay in the cache
    # (the sums are memory-bound on whole images); the results are the same
    rows = max(8, _LEI_STRIP_PX // w)
    line = np.empty((rows + 2 * m, ww), np.int16)
    run_bufs = {}  # run sums of the strip, by (direction, length)
    resp, high = np.empty((rows, w), np.int16), np.empty((rows, w), np.int16)
    better = np.empty((rows, w), np.uint8)
    best = np.zeros((h, w), np.int16)
    ori = np.zeros((h, w), np.uint8)
    diff = np.empty((h, w), np.int16)
    for y0 in range(0, h, rows):
        n = min(rows, h - y0)
        rs, hi, bt = resp[:n], high[:n], better[:n]
        best_s, ori_s = best[y0:y0 + n], ori[y0:y0 + n]
        strip = zp[y0:y0 + n + 2 * m + 2 * half]
        runs = {}
        for i, (parts, ny, nx) in enumerate(lines):
            views = [_run_sum(strip, d, length, runs, run_bufs)[half + dy:half + dy + n + 2 * m,
                                                                 half + dx:half + dx + ww]
                     for d, length, dy, dx in parts]
            if len(views) == 1:
                ln = views[0]
            else:
                ln = line[: n + 2 * m]
                cv2.add(views[0], views[1], dst=ln)
                for v in views[2:]:  # cv2 adds strided views several times faster than numpy
                    cv2.add(ln, v, dst=ln)
            _side_contrast(ln, m, ny, nx, rs, hi)  # unclamped: best (>= 0) clamps it
            if i == 0:  # for the noise unit: the centre-minus-side difference
                cv2.subtract(ln[m:m + n, m:m + w], ln[m + ny:m + ny + n, m + nx:m + nx + w],
                             dst=diff[y0:y0 + n])
            else:
                # ori = i where resp beats best: i exceeds every index stored so far, so
                # max(ori, min(255 * better, i)) sets exactly those pixels (uint8 cv2 ops:
                # fast); orientation 0 leaves ori at 0
                cv2.compare(rs, best_s, cv2.CMP_GT, dst=bt)
                cv2.max(ori_s, cv2.min(bt, float(i), dst=bt), dst=ori_s)
            cv2.max(best_s, rs, dst=best_s)
    s = max(_robust_std(diff[valid]) / q if valid.any() else 1.0, L * params["lei_sigma_floor"])
    return best.astype(np.float32) * np.float32(1.0 / (s * q)), ori


@functools.lru_cache(maxsize=32)
def _digital_lines(length, n_or, off):
    """Per orientation i (direction 180 i / ``n_or`` degrees) of the LEI: its
    digital line of ``length`` points (unit steps along the dominant axis, the
    other coordinate rounded) as runs (``_line_runs``), and the (dy, dx) shift
    of its side lines, ``off`` pixels along the normal (-sin, cos)."""
    k = np.arange(-(length // 2), length // 2 + 1)
    lines = []
    for i in range(n_or):
        t = math.pi * i / n_or
        c, sn = math.cos(t), math.sin(t)
        if abs(c) >= abs(sn):  # x-dominant: dx = k, dy = round(k tan t)
            steps = zip(np.rint(k * sn / c).astype(int), k)
        else:
            steps = zip(k, np.rint(k * c / sn).astype(int))
        lines.append((_line_runs(steps), int(round(off * c)), int(round(-off * sn))))
    return tuple(lines)


# Unit steps a digital line's runs may follow: along x, along y and the two diagonals.
_RUN_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))


def _line_runs(steps):
    """A digital line's points (``(dy, dx)`` pairs) as few straight runs of unit
    steps as one of ``_RUN_DIRECTIONS`` allows: ``[(direction, length, dy, dx)]``,
    each run from its first point. Its sum is then a sum of a few run sums
    (``_run_sum``), which orientations share, instead of one per point."""
    points = {(int(dy), int(dx)) for dy, dx in steps}
    best = None
    for d in _RUN_DIRECTIONS:
        runs = []
        for p in sorted(points):
            if (p[0] - d[0], p[1] - d[1]) in points:
                continue  # not a run's first point
            length = 1
            while (p[0] + length * d[0], p[1] + length * d[1]) in points:
                length += 1
            runs.append((d, length, p[0], p[1]))
        if best is None or len(runs) < len(best):
            best = runs
    return best


def _run_sum(img, d, length, cache, bufs):
    """Sum of ``length`` samples of ``img`` from each pixel along direction ``d``
    (int16, ``img``'s shape; valid where the run stays inside ``img``), built by
    halving from shorter runs kept in ``cache`` (buffers reused from ``bufs``)."""
    if length == 1:
        return img
    key = (d, length)
    if key not in cache:
        a = length // 2
        first, second = _run_sum(img, d, a, cache, bufs), _run_sum(img, d, length - a, cache, bufs)
        buf = bufs.get(key)
        if buf is None or buf.shape[1] != img.shape[1] or buf.shape[0] < img.shape[0]:
            buf = bufs[key] = np.empty(img.shape, np.int16)
        out = buf[: img.shape[0]]
        h, w = img.shape
        rows = h - (length - 1) * d[0]
        lo, hi = ((length - 1) if d[1] < 0 else 0), (w - (length - 1) if d[1] > 0 else w)
        sy, sx = a * d[0], a * d[1]
        cv2.add(first[:rows, lo:hi], second[sy:sy + rows, lo + sx:hi + sx], dst=out[:rows, lo:hi])
        cache[key] = out
    return cache[key]


def _side_contrast(line, m, ny, nx, out, high):
    """Line contrast against both side lines (``line`` shifted by ±(ny, nx)),
    sidelobe-free, written to ``out`` (``high``: a work buffer of its shape).

    ``line`` has a margin ``m`` around the image (the shape of ``out``).
    The contrast is c - max(a, b), positive only where the centre line is
    above both sides (so a side line lying on a scratch gives no echo, and a
    line along a blob's edge, one side on the blob, gives none); the caller
    takes its maximum with a non-negative running maximum (no clamp here).
    """
    h, w = out.shape
    c = line[m:m + h, m:m + w]
    a = line[m + ny:m + ny + h, m + nx:m + nx + w]
    b = line[m - ny:m - ny + h, m - nx:m - nx + w]
    cv2.subtract(c, cv2.max(a, b, dst=high), dst=out)


def _keep_lines(mask, ori, signed, centre, px, params):
    """Keep elongated segments, join collinear ones across small gaps.

    Segments are the components of ``mask`` of one line direction
    (``_oriented_components``); a dark and a bright one (sign of ``signed``)
    join only as a groove's two flanks (``_groove_sides``). Lines tracing a
    ring around the fiber ``centre`` are dropped (``_concentric``). Returns a uint16 label image,
    one label per joined line (its segments and the links drawn between them).
    """
    n_or = _n_orientations(params)
    lab, n = _oriented_components(mask, ori, n_or)
    out = np.zeros(mask.shape, np.uint16)
    if n == 0:
        return out
    min_len = px(params["scratch_min_length_um"])
    max_w = px(params["scratch_max_width_um"])
    segs = []
    pts, ys, xs, k = _label_points(lab, n + 1)
    pol, level = _polarity_and_level(k, signed[ys, xs], n + 1)
    for i, sl in enumerate(_label_boxes(lab, n + 1)):
        if sl is None or max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < 0.5 * min_len:
            continue
        pc = _piece(pts[i], px(params["lei_length_um"]))
        if pc["length"] >= 0.5 * min_len and pc["length"] >= params["scratch_min_aspect"] * pc["width"]:
            segs.append({**pc, "id": i, "pol": pol[i], "level": level[i]})
    roots, pairs = _link_pieces(segs, lambda a, b: _groove_sides(a, b, max_w) and _continues(
        a, b, px(params["join_gap_um"]), params["join_angle_deg"], 2.0, params["join_touch_angle_deg"]),
        px(params["join_gap_um"]), lines=signed)
    joined = [[j for j in range(len(segs)) if roots[j] == r] for r in np.unique(roots)] if segs else []
    joined = [g for g in joined if sum(segs[j]["length"] for j in g) >= min_len]
    lut = np.zeros(n + 1, np.uint16)
    for k, group in enumerate(joined, start=1):
        lut[[segs[j]["id"] for j in group]] = k
    out = _relabel(lab, lut)
    ring = _concentric(joined, out, segs, centre, px, params) if centre is not None else set()
    for a, b in pairs:
        k = int(out[segs[a]["last"]])
        if k and k not in ring:
            _draw_link(out, segs[a], segs[b], k)
    for k in ring:
        out[out == k] = 0
    return out


def _concentric(groups, labels, segs, centre, px, params):
    """Labels (1-based group numbers) of line groups that together trace a
    ring around ``centre``.

    A group is ring-like when its pixels keep their distance to the centre
    within ``ring_arc_tol_um``; ring-like groups at the same radius whose
    lengths add up to ``ring_arc_min_um`` are the fiber's own concentric
    structure (index-profile or core ring, an edge bevel), not scratches, and
    so is a ring-like group that a circle around the centre fits with less
    than half the residual variance of a straight line (it bends around the
    centre).
    """
    tol = px(params["ring_arc_tol_um"])
    arcs = []
    drop = set()
    for k, pts in enumerate(_label_points(labels, len(groups) + 1)[0]):
        if pts is None:
            continue
        r = np.hypot(pts[:, 0] - centre[0], pts[:, 1] - centre[1])
        lo, hi = np.percentile(r, [5, 95])  # one call: the same order statistics
        if hi - lo <= tol:
            arcs.append((k, float(median(r)), sum(segs[j]["length"] for j in groups[k - 1])))
            if r.var() < 0.5 * np.linalg.eigvalsh(np.cov(pts.T.astype(np.float64)))[0]:
                drop.add(k)
    for k, r0, _ in arcs:
        if sum(length for _, r1, length in arcs if abs(r1 - r0) <= tol) >= px(params["ring_arc_min_um"]):
            drop.add(k)
    return drop


def _piece(pts, reach):
    """Shape of a pixel set (N x 2, x y) seen as a line piece.

    Returns a dict: ``c`` centre, ``d`` principal direction, ``length``
    along it, ``width`` (pixels / length), ``major``/``minor`` axes of the
    equivalent ellipse, ``ends``: for each end (low, high projection) its
    point and outward direction fitted on the pixels within ``reach`` of
    it (follows a bent scratch), ``extent``: the larger of half the major
    axis and the largest distance of a pixel (so of an end) from ``c``,
    and ``last``: one pixel (row, col).
    """
    pts = np.asarray(pts, np.float64)
    c = pts.mean(0)
    cov = _cov2(pts - c) + np.eye(2) / 12 if len(pts) > 2 else np.eye(2) / 12
    evals, evecs = np.linalg.eigh(cov)
    d = evecs[:, 1]
    proj = (pts - c) @ d
    ends = []
    for sign, lim in ((-1.0, proj.min()), (1.0, proj.max())):
        near = pts[np.abs(proj - lim) <= reach]
        t = d
        if len(near) >= 3:
            nc = near - near.mean(0)
            ev, vec = np.linalg.eigh(nc.T @ nc)
            if ev[1] > 4 * max(ev[0], 1e-9):  # clearly elongated: its own direction
                t = vec[:, 1] if vec[:, 1] @ d >= 0 else -vec[:, 1]
        ends.append((pts[np.abs(proj - lim) <= 1.0].mean(0), sign * t))
    length = float(proj.max() - proj.min())
    major = 4 * math.sqrt(max(evals[1], 0))
    return {"c": c, "d": d, "length": length, "width": len(pts) / max(length, 1.0),
            "major": major, "minor": 4 * math.sqrt(max(evals[0], 0)), "ends": ends,
            "extent": max(0.5 * major, math.sqrt(float(((pts - c) ** 2).sum(1).max()))),
            "last": (int(pts[-1, 1]), int(pts[-1, 0]))}


def _cov2(x):
    """``np.cov(x.T)`` of an N x 2 float64 array ``x`` (consumed): NumPy's own steps
    on the same memory layout (bit-identical) without its argument handling, which
    dominates on the few hundred points of a line piece."""
    x = x.T
    x -= x.mean(axis=1)[:, None]
    out = np.dot(x, x.T)
    out *= np.true_divide(1, x.shape[1] - 1)
    return out


def _continues(a, b, gap, max_angle, tol, touch_angle, end_gap=None):
    """Whether line pieces ``a`` and ``b`` (``_piece``) are one line.

    Either an end of each lies within ``tol`` of the other, the line turning there by at
    most ``touch_angle`` (a curled lint fibre, a sharply bent scratch: no straight or
    arc-shaped continuation follows it through its bends, while lines that cross
    continue past each other and do not end there); or an end of each lies within
    ``end_gap`` (default ``gap``) of the other, facing it
    (outward directions opposite within ``max_angle``, and the link between
    the ends continuing both within ``max_angle`` when longer than ``tol``),
    or both ends lie on one circular arc (each turns towards the link by the
    same angle, within ``max_angle / 2``, turning ``2 max_angle`` at most):
    a bent scratch is followed end to end; or both are straight, parallel
    within ``max_angle`` with nearest ends within ``gap``, and each centre
    lies on the other's axis within ``tol`` or 20 % of the distance (the
    two sides of a groove, overlapping pieces).
    """
    cos_max = math.cos(math.radians(max_angle))
    cos_touch = math.cos(math.radians(touch_angle)) - 1e-9  # (90 degrees inclusive)
    end_gap = gap if end_gap is None else end_gap
    half = math.radians(max_angle) / 2
    for p, tp in a["ends"]:
        for q, tq in b["ends"]:
            v = q - p
            dist = math.hypot(*v)
            if dist > end_gap:
                continue
            facing = -float(tp @ tq)  # cosine of the turn from one piece into the other
            if dist <= tol and facing >= cos_touch:
                return True
            if facing >= cos_max and (
                    dist <= tol or (tp @ v >= cos_max * dist and -(tq @ v) >= cos_max * dist)):
                return True
            # a circular arc: the tangent turns by the same angle from p to the chord
            # and from the chord to q
            turn_p = math.atan2(tp[0] * v[1] - tp[1] * v[0], float(tp @ v))
            turn_q = math.atan2(-v[0] * tq[1] + v[1] * tq[0], -float(v @ tq))
            if dist > tol and abs(turn_p - turn_q) <= half and abs(turn_p) + abs(turn_q) <= 4 * half:
                return True
    if abs(float(a["d"] @ b["d"])) < cos_max:
        return False
    if min(math.hypot(*(p - q)) for p, _ in a["ends"] for q, _ in b["ends"]) > gap:
        return False
    v = b["c"] - a["c"]
    lim = max(tol, 0.2 * math.hypot(*v))
    return (abs(v[0] * a["d"][1] - v[1] * a["d"][0]) <= lim
            and abs(v[0] * b["d"][1] - v[1] * b["d"][0]) <= lim)


def _groove_sides(a, b, max_w):
    """False for a dark and a bright line piece (``pol``, ``_polarity``) whose
    centres lie more than ``max_w / 2`` off each other's axis: two scratches,
    not the two flanks of one shaded groove; True otherwise."""
    if a["pol"] * b["pol"] >= _OPPOSITE:
        return True
    v = b["c"] - a["c"]
    off = max(abs(v[0] * a["d"][1] - v[1] * a["d"][0]), abs(v[0] * b["d"][1] - v[1] * b["d"][0]))
    return off <= 0.5 * max_w


def _link_pieces(pieces, joinable, reach, lines=None):
    """Union-find over pieces: returns (root index per piece, joined pairs).

    ``joinable`` is only asked about pairs whose centres lie within ``reach``
    plus both ``extent``s (``_piece``) of each other, which every joinable
    pair must do: ends within ``reach`` of each other, or a centre within
    ``reach`` plus half its major axis of the other's end. With ``lines`` (the
    signed image of line pieces), a piece joinable to two pieces lying side by side
    (``_side_by_side``: two parallel lines) joins only the one nearer its axis (a
    run of parallel polishing scratches stays one line each).
    """
    parent = list(range(len(pieces)))
    c = np.array([p["c"] for p in pieces], np.float64).reshape(-1, 2)
    ext = np.array([p["extent"] for p in pieces], np.float64)
    dist = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
    near = np.triu(dist <= reach + ext[:, None] + ext[None, :], 1)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    pairs = [(int(i), int(j)) for i, j in zip(*np.nonzero(near))  # row by row, as i < j loops
             if joinable(pieces[i], pieces[j])]
    if lines is not None:
        pairs = _one_line_each(pieces, pairs, lines)
    for i, j in pairs:
        parent[find(i)] = find(j)
    return np.array([find(i) for i in range(len(pieces))], np.int64), pairs


def _off_axis(a, b):
    """Distance of ``b``'s centre from ``a``'s axis (``_piece`` dicts)."""
    v = b["c"] - a["c"]
    return abs(v[0] * a["d"][1] - v[1] * a["d"][0])


def _side_by_side(a, b, signed):
    """Whether line pieces ``a`` and ``b`` (``_piece``, ``pol``, ``level``: median
    |``signed``| on them) of one polarity run beside each other as two lines: their
    spans along ``a``'s axis overlap, their centre lines lie farther apart than their
    half widths and a pixel, and midway between their centres ``signed`` (of their
    sign) is below half the fainter one's level: not the two edges of one wide line."""
    if a["pol"] * b["pol"] < _OPPOSITE:
        return False
    ea, eb = ([float((p - a["c"]) @ a["d"]) for p, _ in x["ends"]] for x in (a, b))
    apart = 0.5 * (a["width"] + b["width"]) + 1.0
    if not (min(max(ea), max(eb)) - max(min(ea), min(eb)) > apart
            and min(_off_axis(a, b), _off_axis(b, a)) > apart):
        return False
    x, y = (int(round(v)) for v in 0.5 * (a["c"] + b["c"]))
    mid = float(median(signed[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]))
    return math.copysign(1.0, a["pol"]) * mid < 0.5 * min(a["level"], b["level"])


def _one_line_each(pieces, pairs, signed):
    """``pairs`` less the links of a piece to the partner farther off its axis of
    any two partners lying side by side (``_side_by_side`` on ``signed``)."""
    partners = {}
    for i, j in pairs:
        partners.setdefault(i, []).append(j)
        partners.setdefault(j, []).append(i)
    drop = set()
    for i, js in partners.items():
        for j, k in combinations(js, 2):
            if _side_by_side(pieces[j], pieces[k], signed):
                worse = max((j, k), key=lambda m: _off_axis(pieces[i], pieces[m]))
                drop.add((min(i, worse), max(i, worse)))
    return [p for p in pairs if p not in drop]


def _draw_link(out, sa, sb, value):
    """Draw the shortest link between the ends of two pieces into ``out``."""
    p, q = min(((p, q) for p, _ in sa["ends"] for q, _ in sb["ends"]),
               key=lambda e: math.hypot(*(e[0] - e[1])))
    cv2.line(out, tuple(int(round(v)) for v in p), tuple(int(round(v)) for v in q), int(value), 1)


def _merge(region_mask, s_lab, s_width, s_line_width, zs, dot, px, params):
    """One label per physical defect.

    ``s_lab`` holds one label per scratch, ``s_width`` its mean width and
    ``s_line_width`` its line width (``_scratch_candidates``); region
    candidates closer than ``merge_gap_um`` join. A region candidate lying
    mostly on a scratch, or along it (within ``merge_gap_um``) and fainter
    (the shading beside a groove), is part of it (source "both") unless it is thicker
    (``_thickness``) than three times the scratch's line width or than
    ``scratch_max_width_um``, or round (major/minor below ``_ROUND``) and thicker
    than a bead (``_BEAD`` times the scratch's line width, and 3 px more; unless
    ``_DASHES`` or more such round blobs lie on that scratch: its dashes): then it
    is its own defect (a pit or a particle on the scratch) and keeps its pixels;
    a scratch lying mostly on such a blob and never ``scratch_min_length_um``
    away from it is the blob's flank and is dropped (the blob's thin appendages, off
    the body an opening for the scratch's width keeps, are not the blob here: a
    line-shaped stretch of them twice that length lying mostly along a scratch is
    the scratch's, running out of a film or particle), unless it lies on the blob's
    pixels of the sign opposite to the blob's that are line-shaped (``linear_aspect``)
    and lie mostly on scratches of their sign: those pixels are the scratch's (a dark
    scratch under a bright particle). The part of a candidate on a scratch whose
    polarity (sign of ``zs``, ``_polarity_components``) is opposite to the
    scratch's is another defect too (a dark pit on a bright scratch), unless it is
    a line along the scratch (``linear_aspect``, within ``join_angle_deg``): the
    other flank of a shaded groove. A line response that two or more compact blobs,
    fewer than ``_DASHES``, cover for ``_ROW_COVER`` of its pixels is theirs, not a
    scratch: they stay apart (a pit beside a particle, read as one short line).
    Components under ``min_area_um2`` are dropped (region candidates of at least
    half of it reaching a ``dot`` pixel, off its background by ``dot_min_contrast``
    either way, are kept: a pit or particle below the optics' resolution, blurred small
    but far off the grain),
    and so are scratch-only
    instances that are not elongated (major/minor axis < ``linear_aspect``:
    blob flanks, crescents). A rim taken into a region defect (no scratch in it)
    counts with it, but its pixels within twice ``merge_gap_um`` of the defect are
    left out of the mask (a pit's halo is no pit; a film beyond stays).

    Returns labels 1..n (int32) and, per label, a bit set of the sources
    (1 region, 2 scratch).
    """
    min_area = params["min_area_um2"] * px(1.0) ** 2
    gap = _disk(px(params["merge_gap_um"]))
    n_s = int(s_lab.max()) + 1
    # candidate pixels only (a few % of the image); images of them in their box widened by
    # the gap (where dilations, labels and distances are those of the whole image)
    ys, xs = _nonzero(region_mask | (s_lab > 0))
    if ys.size == 0:
        return np.zeros(region_mask.shape, np.int32), np.zeros(1, np.int8)
    m = gap.shape[0]
    y0, x0 = max(int(ys.min()) - m, 0), max(int(xs.min()) - m, 0)
    box = np.s_[y0:int(ys.max()) + m + 1, x0:int(xs.max()) + m + 1]
    by, bx = ys - y0, xs - x0
    reg = region_mask[ys, xs]
    r_full, n_r, piece, n_p, rim = _polarity_components(region_mask[box], zs[box], gap, by, bx, params["mask_level"])
    s = s_lab[ys, xs].astype(np.int64)
    s = np.where(np.bincount(s, minlength=n_s)[s] >= min_area, s, 0)
    r = np.where(reg, r_full, 0).astype(np.int64)
    r_area = np.bincount(r, minlength=n_r)
    r_dot = np.bincount(r, dot[ys, xs], minlength=n_r) > 0
    r = np.where((r_area[r] >= min_area) | (r_dot[r] & (r_area[r] >= 0.5 * min_area)), r, 0)
    # which scratch each region candidate lies on, and how much of it
    both = (r > 0) & (s > 0)
    on = np.bincount(r[both] * n_s + s[both], minlength=n_r * n_s).reshape(n_r, n_s)
    # ... or along it, within merge_gap_um, and fainter (shading residue beside the groove)
    s_img = np.zeros(region_mask[box].shape, np.uint16)
    s_img[by, bx] = s
    sd = cv2.dilate(s_img, gap)[by, bx].astype(np.int64)
    near = (r > 0) & (sd > 0)
    along = np.bincount(r[near] * n_s + sd[near], minlength=n_r * n_s).reshape(n_r, n_s)
    r_area = np.maximum(r_area, 1)
    v = zs[ys, xs]
    mean_abs = lambda k, n: (np.bincount(k, np.abs(v), minlength=n)  # noqa: E731
                             / np.maximum(np.bincount(k, minlength=n), 1))
    on_it = on.max(1) >= 0.5 * r_area
    best = np.where(on_it, on.argmax(1), along.argmax(1))
    lies = on_it | ((along.max(1) >= 0.5 * r_area) & (mean_abs(r, n_r) <= mean_abs(s, n_s)[best]))
    # ... unless it is wider than the scratch (a pit or dust particle on its path)
    r_img = np.zeros(region_mask[box].shape, np.int32)
    r_img[by, bx] = r
    thick, sw = _thickness(r_img, n_r, by, bx), s_line_width[best]
    wide = thick >= np.minimum(px(params["scratch_max_width_um"]), 3 * sw)
    # ... or a round blob thicker than a bead of it (a particle on a fine scratch)
    r_major, r_minor = _axes(r, ys, xs, n_r)
    round_ = r_major < _ROUND * np.maximum(r_minor, 1.0)
    bead = round_ & (thick > np.maximum(_BEAD * sw, sw + 3))
    # ... unless _DASHES or more of them lie on one scratch: its beads or dashes
    dash = bead & lies & ~wide
    dash &= np.bincount(best[dash], minlength=n_s)[best] >= _DASHES
    wide |= bead & ~dash
    # a line response made of a few round blobs in a row and little else (fewer than
    # _DASHES: a dashed scratch has more) is those blobs' (a pit beside a particle)
    round_[0] = False
    n_on, covered = (on[round_] > 0).sum(0), on[round_].sum(0)
    row = (n_on >= 2) & (n_on < _DASHES) & (covered >= _ROW_COVER * np.maximum(np.bincount(s, minlength=n_s), 1))
    row[0] = False
    if row.any():
        s, sd, lies = np.where(row[s], 0, s), np.where(row[sd], 0, sd), lies & ~row[best]
        on[:, row] = 0
    host = np.where(lies & ~wide, best, 0)
    host[0] = 0
    s_pol = _polarity(s, v, n_s)
    wide[0] = False
    s_area = np.maximum(np.bincount(s, minlength=n_s), 1)
    # the pixels of a blob of the sign opposite to the blob's, line-shaped and lying mostly
    # on scratches of that sign, are those scratches' (a dark scratch under a bright particle)
    half = 2 * r + (v < 0)
    h_sign = np.where(np.arange(2 * n_r) % 2, -1.0, 1.0)
    h_major, h_minor = _axes(half, ys, xs, 2 * n_r)
    lined = (r > 0) & (s > 0)
    h_on = np.bincount(half[lined] * n_s + s[lined], minlength=2 * n_r * n_s).reshape(-1, n_s)
    h_host = h_on.argmax(1)
    adopt = ((np.repeat(host, 2) == 0) & (h_sign * np.repeat(_polarity(r, v, n_r), 2) < _OPPOSITE)
             & (h_major >= params["linear_aspect"] * np.maximum(h_minor, 1.0))
             & (h_on.sum(1) >= 0.5 * np.bincount(half, minlength=2 * n_r))
             & (h_sign * s_pol[h_host] > -_OPPOSITE))
    adopt[:2] = False
    # a line response lying mostly on such a wider blob (not on a part of it those take)
    # and never leaving it by a scratch's length is the blob's flank (a crescent), not a
    # scratch crossing it
    flank = (on[wide].sum(0) >= 0.5 * s_area) & (h_on[adopt].sum(0) < 0.5 * s_area)
    flank[0] = False
    # a blob's body: what an opening for the width of the scratch on it keeps (the region
    # candidate follows a scratch running out of a film or particle: a thin appendage)
    body = _bodies(r, wide & (on[:, 1:].sum(1) > 0), by, bx, s_width[on.argmax(1)])
    # a scratch leaving the blob's body (not the blob) by a scratch's length is no flank
    # if it takes a stretch of the blob's appendages (below); else it is one
    held = np.zeros(n_s, bool)
    if flank.any():
        # distances to the blobs and to their bodies, in the box of those scratches widened
        # by the length
        reach = px(params["scratch_min_length_um"])
        sel = flank[s]
        d = int(math.ceil(reach)) + 1
        by0, bx0 = max(int(ys[sel].min()) - d, 0), max(int(xs[sel].min()) - d, 0)
        shape = (int(ys[sel].max()) + d + 1 - by0, int(xs[sel].max()) + d + 1 - bx0)
        inb = wide[r] & (ys >= by0) & (ys < by0 + shape[0]) & (xs >= bx0) & (xs < bx0 + shape[1])
        away = []
        for part in (inb, inb & body):
            blob = np.full(shape, 255, np.uint8)
            blob[ys[part] - by0, xs[part] - bx0] = 0
            a = np.zeros(n_s, np.float32)
            np.maximum.at(a, s[sel], cv2.distanceTransform(blob, cv2.DIST_L2, 3)[ys[sel] - by0, xs[sel] - bx0])
            away.append(a)
        held = flank & (away[0] < reach) & (away[1] >= reach)
        flank &= away[1] < reach
        s = np.where(flank[s], 0, s)
    # a wide blob's appendages (off its body) are judged after the parts split off below
    tail = np.where(wide[r] & ~body & (r > 0), r, 0)
    along_s = np.where(flank[sd], 0, sd)
    # the part of a hosted candidate of the polarity opposite to its scratch's: its own defect
    p = np.where(r > 0, piece, 0)
    parent = np.zeros(n_p, np.int64)
    parent[p] = r
    # (unless it is a line along the scratch: the other flank of a shaded groove)
    p_major, p_minor, p_angle = _ellipses(p, ys, xs, n_p)
    turn = np.abs(p_angle - _ellipses(s, ys, xs, n_s)[2][host[parent]])
    flank_of = ((p_major >= params["linear_aspect"] * np.maximum(p_minor, 1.0))
                & (np.minimum(turn, np.pi - turn) <= math.radians(params["join_angle_deg"])))
    split = ((host[parent] > 0) & (_polarity(p, v, n_p) * s_pol[host[parent]] < _OPPOSITE)
             & (np.bincount(p, minlength=n_p) >= min_area) & ~flank_of)
    split[0] = False
    if split.any():
        r = np.where(split[p], n_r + p, r)
        host = np.concatenate([host, np.zeros(n_p, host.dtype)])
        n_r += n_p
    if adopt.any():  # (halves of blobs no scratch hosts: the split left them as they were)
        r = np.where(adopt[half], n_r + half, r)
        host = np.concatenate([host, np.where(adopt, h_host, 0)])
        n_r += adopt.size
    # ... lying mostly along a scratch that is no flank of it: that scratch's stretch out
    # of the blob
    tail = (tail > 0) & (tail == r)
    if tail.any():
        r, host, n_r = _split_tails(r, host, n_r, tail, along_s, by, bx, n_s, params["linear_aspect"],
                                      2 * px(params["scratch_min_length_um"]))
    held[host[host > 0]] = False
    if held.any():
        s = np.where(held[s], 0, s)
    r, host, n_r = _split_blobs(r, host, n_r, by, bx, s_width, min_area, _ROUND)
    # final ids: scratch groups 1..n_s-1, standalone region candidates after them
    r_id = np.where(host > 0, host, n_s + np.arange(n_r))
    lab = np.where(r > 0, r_id[r], 0)
    lab = np.where((lab == 0) | (host[r] > 0), np.maximum(lab, s), lab)
    present = np.unique(lab[lab > 0])
    lut = np.zeros(n_s + n_r, np.int64)
    lut[present] = np.arange(1, present.size + 1)
    lab = lut[lab]
    has = lambda m: np.bincount(lab[m & (lab > 0)], minlength=present.size + 1) > 0  # noqa: E731
    src = (has(reg) * _REGION | has(s > 0) * _SCRATCH).astype(np.int8)
    # a line response that is not line-shaped and that no region candidate backs
    # is the flank of a blob, not a scratch
    major, minor = _axes(lab, ys, xs, present.size + 1)
    drop = (src == _SCRATCH) & (major < params["linear_aspect"] * np.maximum(minor, 1.0))
    if drop.any():
        keep = np.flatnonzero(~drop)[1:]
        lut = np.zeros(present.size + 1, np.int64)
        lut[keep] = np.arange(1, keep.size + 1)
        lab, src = lut[lab], np.concatenate([[0], src[keep]]).astype(np.int8)
    out = np.zeros(region_mask.shape, np.int32)
    # a rim absorbed into its defect counts with it, its pixels beside the defect (within
    # twice the merge gap) are no defect's; a film beyond them stays
    cut = rim & (s == 0) & (lab > 0) & (src[lab] == _REGION)
    if cut.any():
        own = np.zeros(region_mask[box].shape, np.uint8)
        own[by[~cut & (lab > 0)], bx[~cut & (lab > 0)]] = 1
        near = cv2.distanceTransform(1 - own, cv2.DIST_L2, 3)[by, bx] <= 2 * px(params["merge_gap_um"])
        cut &= near & (np.bincount(lab[~cut], minlength=src.size) > 0)[lab]
    out[ys, xs] = np.where(cut, 0, lab)
    return out, src


def _open_for_width(img, w):
    """``img`` (uint8) opened by a disk of twice a line's width ``w`` (and 3 px more): what
    is wider than such a line (zero-padded: the image border cuts no disk)."""
    disk = _disk(max(2 * w, w + 3))
    m = disk.shape[0]
    padded = cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=0)
    return cv2.morphologyEx(padded, cv2.MORPH_OPEN, disk)[m:-m, m:-m]


def _bodies(r, cand, ys, xs, width):
    """Whether each candidate pixel ``ys, xs`` (component ``r``) lies in its component's
    body: for the components ``cand`` marks, what an opening by a disk of twice the
    ``width`` of the scratch on it (and 3 px more) keeps when that is at least half of
    it; every pixel of the others."""
    body = np.ones(r.size, bool)
    for i in np.flatnonzero(cand):
        on = np.flatnonzero(r == i)
        y, x = ys[on] - int(ys[on].min()), xs[on] - int(xs[on].min())
        img = np.zeros((int(y.max()) + 1, int(x.max()) + 1), np.uint8)
        img[y, x] = 1
        kept = _open_for_width(img, float(width[i]))[y, x] > 0
        if 2 * np.count_nonzero(kept) >= on.size:  # (a blob thinner than that is all body)
            body[on] = kept
    return body


def _split_tails(r, host, n_r, tail, s, ys, xs, n_s, aspect, min_len):
    """Give the ``tail`` pixels (of wide blobs, outside their bodies) to the scratch
    ``s`` that most of a connected, line-shaped (major/minor at least ``aspect``) stretch
    of them at least ``min_len`` px long lies on: each such stretch becomes a component
    hosted by that scratch. Returns ``(r, host, n_r)``."""
    y0, x0 = int(ys[tail].min()), int(xs[tail].min())
    img = np.zeros((int(ys[tail].max()) + 1 - y0, int(xs[tail].max()) + 1 - x0), np.uint8)
    img[ys[tail] - y0, xs[tail] - x0] = 1
    n, lab = cv2.connectedComponents(img, connectivity=8)
    k = np.zeros(ys.size, np.int64)
    k[tail] = lab[ys[tail] - y0, xs[tail] - x0]
    on = np.bincount(k * n_s + s, minlength=n * n_s).reshape(n, n_s)
    on[:, 0] = 0
    to = on.argmax(1)
    major, minor = _axes(k, ys, xs, n)
    take = ((on.max(1) >= 0.5 * np.bincount(k, minlength=n)) & (major >= aspect * np.maximum(minor, 1.0))
            & (major >= min_len))
    take[0] = False
    if not take.any():
        return r, host, n_r
    r = np.where(take[k], n_r + k, r)
    return r, np.concatenate([host, np.where(take, to, 0)]), n_r + n


def _split_blobs(r, host, n_r, ys, xs, s_width, min_area, aspect):
    """Split the blobs wider than their scratch off the hosted region candidates.

    A pit or a particle on a scratch's path is a local widening of the
    candidate: the part of a component hosted by a scratch (``host``) that
    an opening by a disk of twice the line's width (the larger of the
    scratch's, ``s_width``, and the component's own, the median of its
    medial axis' local width: a ragged groove; and at least 3 px more: the
    width varies along a line) keeps, when of at least ``min_area`` pixels
    and round (major/minor below ``aspect``: not a wider stretch of the
    line), is its own defect, unless ``_DASHES`` or more split off one line (the
    brighter stretches of a dashed or beaded scratch). ``r`` labels the candidate pixels ``ys, xs``
    by component. Returns ``(r, host, n_r)`` with the new components appended.
    """

    def blobs(img, y, x, w):
        """Index arrays (into y, x) of the round parts an opening for width ``w`` keeps."""
        n, lab = cv2.connectedComponents(_open_for_width(img, w), connectivity=8)
        k = lab[y, x]
        major, minor = _axes(k, y, x, n)
        ok = (np.bincount(k, minlength=n) >= min_area) & (major < aspect * np.maximum(minor, 1.0))
        ok[0] = False
        return [np.flatnonzero(k == j) for j in np.flatnonzero(ok)]

    new = []
    for i in np.flatnonzero(host > 0):
        on = np.flatnonzero(r == i)
        if on.size < min_area:
            continue
        y, x = ys[on] - int(ys[on].min()), xs[on] - int(xs[on].min())
        img = np.zeros((int(y.max()) + 1, int(x.max()) + 1), np.uint8)
        img[y, x] = 1
        w = float(s_width[host[i]])
        found = blobs(img, y, x, w)
        if found:
            # the component's own width may be the larger (a ragged groove): a line of
            # width w has distance (w + 1) / 2 to its outside on its medial axis
            padded = np.pad(img, 1)
            dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
            own = 2 * float(median(dist[skeletonize(padded > 0)])) - 1
            if own > w:
                found = blobs(img, y, x, own)
        if len(found) >= _DASHES:  # a row of widenings along one line: its beads or dashes
            continue
        new += [on[j] for j in found]
    if not new:
        return r, host, n_r
    r = r.copy()
    for j, idx in enumerate(new):
        r[idx] = n_r + j
    return r, np.concatenate([host, np.zeros(len(new), host.dtype)]), n_r + len(new)


def _polarity_components(mask, zs, gap, ys, xs, level):
    """Components of ``mask`` dilated by ``gap``, and the same split by the sign
    of ``zs`` (pieces), both sampled at the pixels ``ys, xs``.

    A piece whose peak |z| is below ``level`` times that of the opposite-signed
    piece it touches (the bright rim of a pit, the halo beside a dark scratch)
    belongs to that piece. Returns ``(component, n_components, piece,
    n_pieces, rim)``: labels of each sampled pixel (0 off ``mask``), label counts,
    and whether the pixel lies on such a rim.
    """
    dark = mask & (zs < 0)
    n_a, r_all = cv2.connectedComponents(cv2.dilate(mask.view(np.uint8), gap), connectivity=8)
    n_d, r_dark = cv2.connectedComponents(cv2.dilate(dark.view(np.uint8), gap), connectivity=8)
    n_b, r_bright = cv2.connectedComponents(cv2.dilate((mask & ~dark).view(np.uint8), gap), connectivity=8)
    on = mask[ys, xs]
    comp = np.where(on, r_all[ys, xs], 0)
    lab = np.where(dark[ys, xs], r_dark[ys, xs], r_bright[ys, xs] + n_d)[on]
    n = n_d + n_b
    parent = np.zeros(n, np.int64)
    parent[lab] = comp[on]
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, lab, np.abs(zs[ys, xs][on]))
    top_peak = np.zeros(n_a, np.float32)
    np.maximum.at(top_peak, parent, peak)
    ids = np.arange(n)
    is_top = (peak == top_peak[parent]) & (peak > 0)
    top = np.zeros(n_a, np.int64)
    top[parent[is_top]] = ids[is_top]
    t = top[parent]
    weak = (peak < level * top_peak[parent]) & ((ids >= n_d) != (t >= n_d))
    piece = np.zeros(ys.size, np.int64)
    piece[on] = np.where(weak, t, ids)[lab]
    rim = np.zeros(ys.size, bool)
    rim[on] = weak[lab]
    return comp, n_a, piece, n, rim


def _join_collinear(labels, source, zs, px, params):
    """Join instances that are pieces of one scratch.

    A faint or bead-like scratch breaks into pieces (line segments and small
    blobs along its path). Narrow instances (thickness below
    ``scratch_max_width_um``) join when two elongated ones (length/thickness
    >= ``linear_aspect``) continue each other (``_continues`` with
    ``join_gap_um``, ``join_angle_deg``; ends facing each other may lie
    ``join_line_gap_um`` apart: a scratch whose contrast fades leaves long
    gaps; touching ends where the line turns by at most ``join_touch_angle_deg``:
    a curled lint fibre), or when a blob at most ``_BEAD`` times as thick as a line lies ahead of one of
    its ends, within ``join_gap_um``, on the line's extended path (off it by
    at most both half thicknesses plus half the join angle over the distance)
    and, when elongated, along it, when round, of nearly its polarity
    (``_BEAD_POLARITY``: a dark pit at a shaded groove's end is no bead of it).
    A blob and a line of opposite polarity (``_polarity`` of ``zs``) are different
    defects, and so are a dark and a bright line unless each centre lies
    within half ``scratch_max_width_um`` of the other's axis (the two sides
    of a shaded groove). Beads in a row join too (``_bead_chains``): a scratch
    broken into dots and dashes all along. Returns the renumbered labels and
    per-label sources.
    """
    n = int(labels.max()) + 1
    if n <= 2:
        return labels, source
    max_w, gap = px(params["scratch_max_width_um"]), px(params["join_gap_um"])
    max_angle = params["join_angle_deg"]
    tan_half = math.tan(math.radians(max_angle / 2))
    cos_max = math.cos(math.radians(max_angle))
    pieces = []
    pts, ys, xs, k = _label_points(labels, n)
    thick = _thickness(labels, n, ys, xs)
    pol, level = _polarity_and_level(k, zs[ys, xs], n)
    for i in range(1, n):
        if pts[i] is None or thick[i] >= max_w:
            continue
        pc = _piece(pts[i], px(params["lei_length_um"]))
        pc.update(id=i, thick=thick[i], elong=pc["major"] >= params["linear_aspect"] * thick[i], pol=pol[i],
                  level=level[i])
        pieces.append(pc)

    chained = _bead_chains([pc for pc in pieces if not pc["elong"]], px(params["bead_chain_gap_um"]),
                           cos_max, px(params["scratch_min_length_um"]))

    def joinable(a, b):
        if frozenset((a["id"], b["id"])) in chained:
            return True
        if a["elong"] and b["elong"]:
            if not _groove_sides(a, b, max_w):
                return False
            return _continues(a, b, gap, max_angle, 0.5 * max_w, params["join_touch_angle_deg"],
                              px(params["join_line_gap_um"]))
        if not (a["elong"] or b["elong"]):
            return False
        line, blob = (a, b) if a["elong"] else (b, a)
        if blob["thick"] > _BEAD * line["thick"] or a["pol"] * b["pol"] < _OPPOSITE:
            return False
        # a bead lies on the line's path (its centre within both half thicknesses of
        # the extended axis, plus what half the join angle turns over the distance),
        # an elongated one along it (one flank of a shaded groove may be all that
        # shows), a round one of the line's polarity
        if blob["major"] >= 2 * blob["thick"]:
            if abs(float(blob["d"] @ line["d"])) < cos_max:
                return False
        elif abs(blob["pol"] - line["pol"]) > _BEAD_POLARITY:
            return False
        for p, t in line["ends"]:
            v = blob["c"] - p
            along = float(t @ v)
            lateral = 0.5 * (blob["thick"] + line["thick"]) + tan_half * max(along, 0.0)
            if (math.hypot(*v) <= gap + 0.5 * blob["major"] and along >= -0.5 * max_w
                    and abs(v[0] * t[1] - v[1] * t[0]) <= lateral):
                return True
        return False

    roots, pairs = _link_pieces(pieces, joinable, max(gap, px(params["join_line_gap_um"])), lines=zs)
    if not pairs:
        return labels, source
    root_id = np.arange(n)
    for pc, r in zip(pieces, roots):
        root_id[pc["id"]] = pieces[r]["id"]
    src = np.zeros(n, np.int8)
    np.bitwise_or.at(src, root_id, source)
    keep = np.flatnonzero(root_id == np.arange(n))
    lut = np.zeros(n, labels.dtype)
    lut[keep[1:]] = np.arange(1, keep.size)
    return _relabel(labels, lut[root_id]), src[keep]


def _bead_chains(beads, gap, cos_max, min_length):
    """Pairs of beads (``_piece`` dicts with ``id``, ``thick``, ``pol``) that are links
    of one chain: a bead with a neighbour on each side, both within ``gap`` of it
    (between outlines), the three in line (the turn at the middle one within the
    angle of ``cos_max``), of alike thickness (at most ``_BEAD`` times) and not of
    opposite polarity, an elongated bead lying along the chain; the centres of the
    chain's (linked beads') end beads lie ``min_length`` apart at least, as a scratch's
    ends do. A scratch that breaks up into dots and dashes is such a chain; specks
    side by side are not.

    Returns a set of ``frozenset({id_a, id_b})``.
    """
    pairs = set()
    if len(beads) < 3:
        return pairs
    c = np.array([b["c"] for b in beads], np.float64)
    half = 0.5 * np.array([max(b["major"], b["thick"]) for b in beads])
    dist = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1])
    near = (dist - half[:, None] - half[None, :] <= gap) & ~np.eye(len(beads), dtype=bool)

    def alike(a, b):
        return (max(a["thick"], b["thick"]) <= _BEAD * min(a["thick"], b["thick"])
                and a["pol"] * b["pol"] >= _OPPOSITE)

    def along(b, u):
        return b["major"] < 1.5 * b["thick"] or abs(float(b["d"] @ u)) >= cos_max

    for j, mid in enumerate(beads):
        nbrs = [i for i in np.flatnonzero(near[j]) if alike(mid, beads[i])]
        for x in range(len(nbrs)):
            for y in range(x + 1, len(nbrs)):
                i, k = nbrs[x], nbrs[y]
                u, v = c[i] - c[j], c[k] - c[j]
                u, v = u / dist[i, j], v / dist[k, j]
                if -float(u @ v) >= cos_max and all(along(beads[m], u) for m in (i, j, k)):
                    pairs |= {frozenset((i, j)), frozenset((j, k))}
    if not pairs:
        return pairs
    comp = np.arange(len(beads))  # the chain each bead belongs to
    for a, b in map(tuple, pairs):
        comp[comp == comp[b]] = comp[a]
    chains = {c for c in np.unique(comp) if dist[np.ix_(comp == c, comp == c)].max() >= min_length}
    return {frozenset((beads[a]["id"], beads[b]["id"])) for a, b in map(tuple, pairs) if comp[a] in chains}


def _drop_rings(labels, source, ring, zs, px, params):
    """Remove instances that together trace a ring concentric with the fiber.

    ``ring`` is an edge annulus (``_physical_regions``: the cladding's, or a large
    core's, whose soft rim leaves arcs inside it too). Instances
    whose pixels keep their distance to the centre within
    ``ring_arc_tol_um`` and whose major axes at one radius add up to
    ``ring_arc_min_um`` are the fiber's own concentric structure, and so is
    a line only the line filter found (no region candidate) of at least
    ``scratch_min_length_um`` along the edge annulus (radius within twice
    the tolerance, the annulus widened by as much inward: a bevel or
    roll-off line the polar model leaves), a region instance as long, as thin
    along the ring (``scratch_min_aspect``) and no more than ``ring_arc_max_sigma``
    from its background on average along the inside of the edge (a tilted probe's
    shadow beyond the annulus the arcs flatten), and an
    instance spanning 60 degrees or more around the centre
    within 10 % of its radius (90 within 15 %; in proportion between when no line
    was found in it), and one around the centre (three quarters of
    the directions) that keeps away from it (an annulus: a step in the glass).
    Small region instances near the edge (grains, or pieces drawn out along the ring)
    are a rough epoxy ring's grains when many lie
    at one radius all around it (:func:`_ring_grains`, within ``epoxy_band_um``; more
    of them up to ``ring_grain_far_um``, where a fit that took a bevel rim leaves the
    ring) or at the radius of a ring of arcs found there.
    Returns the renumbered labels and per-label sources.
    """
    r_lo, r_edge, r_hi, rmap, (cx, cy), _ = ring
    n, (k, ys, xs, r), cnt, whole, r_mean, spread, major, absz = _ring_stats(labels, rmap, zs)
    tol = px(params["ring_arc_tol_um"])
    arc = (spread <= tol) & whole
    # a faint line (no region candidate backs it) along the edge annulus, or the
    # bevel just inside it: a looser tolerance
    drop = ((source == _SCRATCH) & (spread <= 2 * tol) & (major >= px(params["scratch_min_length_um"]))
            & (r_mean >= r_lo - 2 * tol) & (r_mean <= r_hi + tol) & whole)
    # a faint region arc along the inside of the edge, as long as a scratch and thin along
    # the ring (a tilted probe's shadow beyond the annulus the arcs flatten), and the
    # pieces at its radius
    shade = _is_shade(source[:n] == _REGION, r_mean, spread, major, absz, ring, tol, px, params) & whole
    drop |= shade
    ringed = np.zeros(n, bool)
    for i in np.flatnonzero(arc & ~drop):
        same = arc & (np.abs(r_mean - r_mean[i]) <= tol)
        ringed[i] = major[same].sum() >= px(params["ring_arc_min_um"])
    drop |= ringed
    arcs = r_mean[ringed | shade]  # radii of the rings of arcs found
    # a thick ring: spans >= 60 degrees around the centre within 10 % of its radius, or
    # >= 90 degrees within 15 % (a crescent along a core's rim); where no line was found in
    # it (a bent scratch is one), in proportion between (a straight scratch that keeps
    # within 10 / 12 / 15 % of its radius spans < 52 / 57 / 64 degrees)
    share = spread / np.maximum(r_mean, 1e-9)
    beyond = np.clip((share - 0.1) / 0.05, 0.0, 1.0)  # 0 at 10 %, 1 at 15 %
    beyond = np.where(source[:n] == _REGION, beyond, beyond > 0)  # a line: 60 or 90 degrees
    wide = np.zeros(n, bool)  # rings around the centre, not arcs of grains or lines
    for i in np.flatnonzero((share <= 0.15) & ~drop & whole):
        on = k == i
        t = np.sort(np.arctan2(ys[on] - cy, xs[on] - cx))
        gaps = np.diff(np.concatenate([t, t[:1] + 2 * np.pi]))
        wide[i] = 2 * np.pi - gaps.max() >= np.pi / 3 + np.pi / 6 * beyond[i]
    # an annulus around the centre (a step in the glass: a core edge the zones did not
    # report): it covers three quarters of the directions but keeps away from the centre
    # (a scratch passing it, merged with defects around it, sees as many directions)
    r_min = np.full(n, np.inf)
    np.minimum.at(r_min, k, r)
    n_dir = 72
    d = ((np.arctan2(ys - cy, xs - cx) + np.pi) * (n_dir / (2 * np.pi))).astype(np.int64) % n_dir
    seen = np.bincount(k * n_dir + d, minlength=n * n_dir).reshape(n, n_dir) > 0
    wide |= (seen.sum(1) >= 0.75 * n_dir) & (r_min >= 0.25 * r_mean) & whole
    drop |= wide
    # a grain, or a piece of the ring drawn out along it (up to twice as long, its radial
    # extent at most half its length)
    grain = px(params["ring_grain_max_um"])
    drawn_out = (major <= 2 * grain) & (spread <= 0.5 * major)
    small = ~drop & (source[:n] == _REGION) & ((major <= grain) | drawn_out) & whole
    off_edge = np.abs(r_mean - r_edge)
    # grains at the radius of a ring of arcs near the edge are more of that ring
    drop |= small & _at_radii(r_mean, arcs, tol) & (off_edge <= px(params["ring_grain_far_um"]))
    ang = _centroid_angles(k, ys, xs, cnt, (cx, cy))
    drop |= _ring_grains(r_mean, ang, small & (off_edge <= px(params["epoxy_band_um"])), tol,
                         params["ring_grain_count"], params["ring_grain_sectors"],
                         params["ring_grain_max_gap_deg"])
    # farther out (a fit that took a bevel rim's inner step leaves the ring's grit a few
    # µm beyond the band): only a ring of many grains nearly all around
    drop |= _ring_grains(r_mean, ang, small & (off_edge <= px(params["ring_grain_far_um"])), tol,
                         params["ring_grain_far_count"], params["ring_grain_far_sectors"], 0.0)
    if wide.any():
        seed = np.abs(zs[ys, xs]) >= params["seed_sigma"]
        labels, source, drop = _off_ring_parts(labels, source, drop, wide, (k, ys, xs, r), d, n_dir, tol, seed,
                                               params["min_area_um2"] * px(1.0) ** 2)
    return _without(labels, source, drop)


def _ring_stats(labels, rmap, zs):
    """Per label 0..n-1 of ``labels`` about an edge annulus' radius map ``rmap``:
    ``(n, (k, ys, xs, r), count, whole, r_mean, spread, major, mean |zs|)``, with each
    labelled pixel's label, position and radius (0 where ``rmap`` is not finite);
    ``whole``: a label (not 0) lying where the map is finite (a core's map is finite
    around the core only: what reaches beyond is no part of its ring); ``spread``: the
    radial extent, the range of a uniform spread with the same variance (a few pixels
    the mask gains at a gap or a corner do not make an arc a line)."""
    n = int(labels.max()) + 1
    ys, xs = _nonzero(labels)
    k, r = labels[ys, xs], rmap[ys, xs].astype(np.float64)
    far = ~np.isfinite(r)
    whole = (np.bincount(k[far], minlength=n) == 0) & (np.arange(n) > 0)
    r[far] = 0.0
    cnt = np.maximum(np.bincount(k, minlength=n), 1)
    r_mean = np.bincount(k, r, minlength=n) / cnt
    spread = np.sqrt(12 * np.maximum(np.bincount(k, r * r, minlength=n) / cnt - r_mean ** 2, 0))
    absz = np.bincount(k, np.abs(zs[ys, xs]), minlength=n) / cnt
    return n, (k, ys, xs, r), cnt, whole, r_mean, spread, _axes(k, ys, xs, n)[0], absz


def _is_shade(region, r_mean, spread, major, absz, ring, tol, px, params):
    """Per label: a faint ``region`` arc along the inside of the ``ring``'s edge (from
    its blend's inner end, less twice ``tol``, out to the edge), as long as a scratch,
    thin along the ring (radial ``spread`` within twice ``tol``, ``scratch_min_aspect``
    times as long) and within ``ring_arc_max_sigma`` of its background (mean ``absz``):
    a tilted probe's shadow beyond the annulus the arcs flatten."""
    r_lo, r_edge = ring[0], ring[1]
    return (region & (spread <= 2 * tol) & (major >= px(params["scratch_min_length_um"]))
            & (major >= params["scratch_min_aspect"] * spread) & (r_mean >= r_lo - 2 * tol)
            & (r_mean <= r_edge) & (absz <= params["ring_arc_max_sigma"]))


def _at_radii(r_mean, radii, tol):
    """Per label: its mean radius within ``tol`` of one of ``radii``."""
    if not radii.size:
        return np.zeros(r_mean.shape, bool)
    return np.abs(r_mean[:, None] - radii[None, :]).min(axis=1) <= tol


def _drop_split_shades(labels, source, first, ring, zs, px, params):
    """``labels`` without the pieces ``_split_apart`` cut off (numbers ``first`` on)
    that are a tilted probe's shadow along the inside of the ``ring``'s edge
    (``_is_shade``: cut out of a larger candidate, the arc was not seen by
    ``_drop_rings``), and without the region pieces up to ``ring_grain_max_um`` long
    at such an arc's radius, within ``ring_grain_far_um`` of the edge (as the grains
    at a ring of arcs in ``_drop_rings``). ``ring`` and ``px`` at the
    labels' resolution; returns the labels (dropped numbers emptied, not renumbered)."""
    if int(labels.max()) < first:
        return labels
    n, _, _, whole, r_mean, spread, major, absz = _ring_stats(labels, ring[3], zs)
    src = np.zeros(n, source.dtype)
    src[:min(n, len(source))] = source[:n]
    region = src == _REGION
    tol = px(params["ring_arc_tol_um"])
    shade = _is_shade(region, r_mean, spread, major, absz, ring, tol, px, params) & whole
    shade[:first] = False
    if not shade.any():
        return labels
    small = region & (major <= px(params["ring_grain_max_um"])) & whole
    drop = shade | (small & _at_radii(r_mean, r_mean[shade], tol)
                    & (np.abs(r_mean - ring[1]) <= px(params["ring_grain_far_um"])))
    return np.where(drop[labels], 0, labels).astype(labels.dtype)


def _off_ring_parts(labels, source, drop, rings, pix, d, n_dir, tol, seed, min_area):
    """Defects merged into a dropped ring (``rings``), given back as instances of
    their own. ``pix`` = ``(k, ys, xs, r)``: each labelled pixel's label, position and
    distance to the centre, ``d`` its direction (of ``n_dir``). The ring's pixels lie
    within ``tol`` of its radial band, the median over its directions of its inner
    and outer radius (what sticks out in a few directions does not widen it); each
    component beyond that reaching ``2 tol`` further out or in (a chip protruding from
    an epoxy ring, a particle its valley touches; not a grain on it) of at least
    ``min_area`` pixels holding a ``seed`` pixel (bool per labelled pixel: it would
    have seeded a candidate of its own) becomes a label of the ring's source. Returns
    the labels, sources and ``drop`` (the new labels kept)."""
    k, ys, xs, r = pix
    n = drop.size
    new_src, labels = list(source[:n]), labels.copy()
    for i in np.flatnonzero(rings):
        on = np.flatnonzero(k == i)
        ri, di = r[on], d[on]
        lo, hi = np.full(n_dir, np.inf), np.full(n_dir, -np.inf)
        np.minimum.at(lo, di, ri)
        np.maximum.at(hi, di, ri)
        seen = np.isfinite(lo)
        band_lo, band_hi = np.median(lo[seen]) - tol, np.median(hi[seen]) + tol
        out = (ri < band_lo) | (ri > band_hi)
        if not out.any():
            continue
        oy, ox, orr, os_ = ys[on[out]], xs[on[out]], ri[out], seed[on[out]]
        y0, x0 = int(oy.min()), int(ox.min())
        img = np.zeros((int(oy.max()) - y0 + 1, int(ox.max()) - x0 + 1), np.uint8)
        img[oy - y0, ox - x0] = 1
        m, comp = cv2.connectedComponents(img, connectivity=8)
        c = comp[oy - y0, ox - x0]
        reach = np.maximum(band_lo - orr, orr - band_hi)
        far = np.zeros(m)
        np.maximum.at(far, c, reach)
        seeded = np.bincount(c, os_, minlength=m) > 0
        parts = np.flatnonzero((far >= 2 * tol) & seeded & (np.bincount(c, minlength=m) >= min_area))
        ids = np.zeros(m, labels.dtype)
        ids[parts] = len(new_src) + np.arange(parts.size)
        kept = ids[c] > 0
        labels[oy[kept], ox[kept]] = ids[c[kept]]
        new_src += [source[i]] * parts.size
    added = len(new_src) - n
    return labels, np.array(new_src, source.dtype), np.concatenate([drop, np.zeros(added, bool)])


def _centroid_angles(k, ys, xs, cnt, centre):
    """Direction (radians) of each label's centroid from ``centre`` (``k, ys, xs``: label
    and position of each pixel, ``cnt`` pixels per label)."""
    n = cnt.size
    return np.arctan2(np.bincount(k, ys, minlength=n) / cnt - centre[1],
                      np.bincount(k, xs, minlength=n) / cnt - centre[0])


def _ring_grains(r_mean, ang, cand, tol, count, sectors, max_gap_deg):
    """Instances (``cand``: small region instances at mean distance ``r_mean`` from the
    centre, their centroids in directions ``ang``) that are the grains of a rough ring:
    at least ``count`` of them at one radius (within ``tol``) covering ``sectors`` of 12
    sectors around the centre, or leaving no gap wider than ``max_gap_deg`` around it
    (a few grains spread all around). Defects do not line up at one radius all around
    the fiber; the grit of an epoxy ring does, and lies inside the measured edge when
    the fit took the ring's outer edge."""
    n = r_mean.size
    drop = np.zeros(n, bool)
    cand = cand & (np.arange(n) > 0)
    if np.count_nonzero(cand) < count:
        return drop
    sector = ((ang + np.pi) * (12 / (2 * np.pi))).astype(np.int64) % 12
    for i in np.flatnonzero(cand):
        if drop[i]:  # already part of a ring found
            continue
        same = cand & (np.abs(r_mean - r_mean[i]) <= tol)
        if np.count_nonzero(same) < count:
            continue
        a = np.sort(ang[same])
        gap = np.diff(a, append=a[0] + 2 * np.pi).max()
        if np.unique(sector[same]).size >= sectors or gap <= np.radians(max_gap_deg):
            drop |= same
    return drop


def _drop_ring_pieces(labels, source, lg, valid, ring, px, params):
    """Remove region instances whose radial profile repeats around the fiber.

    A broken epoxy ring (dashes, blots of adhesive at the edge) is the fiber's own
    concentric structure wherever it shows; the arc model takes a dash longer than its
    running median as background and leaves the shorter ones as instances. Each region
    instance within the annulus of ``ring`` (``_physical_regions``) spanning at most
    ``ring_piece_max_span_deg`` is compared, as the mean log-intensity profile across
    the annulus over its own directions (radial 1 px bins from its radial extent
    widened by half of it), with that profile averaged over as many directions at
    every other direction around the centre. It differs from its flanks (the directions
    beside it) by ``d``; where it lies no farther than ``ring_piece_match`` x ``d``
    from the profile of ``ring_piece_min_share`` more of the other directions than
    match it as well farther in or farther out (a window's height, or half of it within
    the annulus: grain and specks match at any radius), it is a piece of a structure
    seen all around at its radius: a dash among dashes. One that repeats as often but
    also farther out, between flanks that are such a structure, is a gap between two
    dashes. A particle or pit on the edge differs from the edge everywhere else as it
    does from its flanks.
    Returns the renumbered labels and per-label sources.
    """
    r_lo, r_edge, r_hi, rmap, (cx, cy), _ = ring
    n = int(labels.max()) + 1
    ys, xs = _nonzero(labels)
    k, r = labels[ys, xs], rmap[ys, xs]
    cnt = np.maximum(np.bincount(k, minlength=n), 1)
    within = np.bincount(k, (r >= r_lo) & (r < r_hi), minlength=n) / cnt
    cand = (within >= 0.8) & (source[:n] == _REGION) & (np.arange(n) > 0)
    if not cand.any():
        return labels, source
    n_ang = int(np.clip(round(math.pi * r_edge), 90, 1440))  # bins ~2 px of arc
    n_rad = int(math.ceil(r_hi - r_lo))
    bx, by, bw, bh = cv2.boundingRect((rmap < r_hi).view(np.uint8))
    rbox = rmap[by:by + bh, bx:bx + bw]
    yy, xx = _nonzero(valid[by:by + bh, bx:bx + bw] & (rbox >= r_lo) & (rbox < r_hi))
    rad = (rbox[yy, xx] - r_lo).astype(np.int64)

    def direction(dy, dx):
        """Direction bin (of n_ang) of offsets from the centre."""
        return ((np.arctan2(dy, dx) + np.pi) * (n_ang / (2 * np.pi))).astype(np.int64) % n_ang

    key = direction(yy + (by - cy), xx + (bx - cx)) * n_rad + rad
    tot = np.bincount(key, lg[by + yy, bx + xx], minlength=n_ang * n_rad).reshape(n_ang, n_rad)
    num = np.bincount(key, minlength=n_ang * n_rad).reshape(n_ang, n_rad).astype(np.float64)
    span = math.radians(params["ring_piece_max_span_deg"])
    drop = np.zeros(n, bool)
    for i in np.flatnonzero(cand):
        on = k == i
        a = np.unique(direction(ys[on] - cy, xs[on] - cx))
        gaps = np.diff(a, append=a[0] + n_ang)
        start = a[(np.argmax(gaps) + 1) % a.size]  # first bin after the widest gap
        w = int(n_ang - gaps.max() + 1)  # bins the instance spans
        if w * 2 * np.pi / n_ang > span:
            continue
        lo, hi = np.percentile(r[on], [5, 95]) - r_lo
        m = max(2.0, 0.5 * (hi - lo))
        r0, r1 = max(0, int(lo - m)), min(n_rad, int(math.ceil(hi + m)) + 1)
        # the profile over each run of w directions (circular box), the instance's own
        # first, in the radial bins _repeats compares (a window's height in and out)
        lo_bin = max(0, 2 * r0 - r1)
        rows = slice(lo_bin, min(n_rad, 2 * r1 - r0))
        t, c = (_circular_window_sums(v[:, rows], start, w) for v in (tot, num))
        with np.errstate(invalid="ignore", divide="ignore"):
            prof = t / c
        r0, r1 = r0 - lo_bin, r1 - lo_bin
        away = (np.arange(n_ang) > 2 * w) & (np.arange(n_ang) < n_ang - 2 * w)
        dist, full = _profile_distances(prof, prof[0, r0:r1], r0)
        flanks = [j for j in (w + 1, n_ang - w - 1) if full[j]]  # the windows beside it
        if not full[0] or not flanks or (full & away).sum() < 0.5 * n_ang:
            continue
        limit = params["ring_piece_match"] * float(np.mean(dist[flanks]))
        profile = (prof, r0, r1 - r0, away, limit)
        share, chance = _repeats(profile, prof[0, r0:r1])
        # a gap of the ring (the ferrule between two dashes, left bright by an arc model
        # the dashes dominate) repeats with the ferrule farther out; its flanks are the ring
        gap = share >= params["ring_piece_min_share"] and any(
            np.subtract(*_repeats(profile, prof[j, r0:r1])) >= params["ring_piece_min_share"]
            for j in flanks)
        drop[i] = share - chance >= params["ring_piece_min_share"] or gap
    return _without(labels, source, drop)


def _repeats(profile, ref):
    """Share of the directions ``away`` whose profile lies within ``limit`` of ``ref`` at
    its radius (bins from ``r0``), and the larger share farther in or farther out (a
    window's height ``h``, or at least half of it within the annulus): texture (grain,
    specks) matches at any radius, a concentric structure at its own. ``profile`` =
    ``(prof, r0, h, away, limit)``; 1.0 beside when there is no room for it."""
    prof, r0, h, away, limit = profile
    n_rad = prof.shape[1]

    def share(start):
        dist, full = _profile_distances(prof, ref, start)
        return float(np.mean(dist[full & away] <= limit)) if (full & away).any() else 0.0

    starts = {max(0, r0 - h), min(n_rad - h, r0 + h)} - {r0}
    beside = [share(s) for s in starts if abs(s - r0) >= 0.5 * h]
    return share(r0), max(beside, default=1.0)


def _profile_distances(prof, own, r0):
    """RMS distance of each direction's profile (rows of ``prof``, radial bins along
    axis 1) from ``own`` over the bins from ``r0`` on, and whether 70 % of those bins
    hold pixels in both."""
    diff = prof[:, r0:r0 + own.size] - own
    ok = np.isfinite(diff)
    dist = np.sqrt((np.where(ok, diff, 0.0) ** 2).sum(axis=1) / np.maximum(ok.sum(axis=1), 1))
    return dist, ok.mean(axis=1) >= 0.7


def _circular_window_sums(v, start, w):
    """Sums of ``w`` consecutive rows of ``v`` (circular along axis 0), the window of
    output row j starting at input row ``start + j``."""
    n = v.shape[0]
    c = np.cumsum(v[(start + np.arange(n + w)) % n], axis=0)
    c = np.vstack([np.zeros((1, v.shape[1])), c])
    return c[w:w + n] - c[:n]


def _drop_swells(labels, source, resid, valid, px, params):
    """Remove region instances whose outline is an illumination swell, not an edge.

    A defect on the end face (particle, film, pit) changes the image over an edge no
    wider than the optics' blur plus its own softness; a swell the background model
    leaves (under a hot spot, in a vignetted corner) rises over tens of µm. The edge
    width of an instance is its contrast (median of the log residual ``resid`` inside
    it against the ring ``swell_ring_um`` outside it, within ``valid`` and off other
    instances) over the mean gradient of the residual, smoothed over
    ``swell_smooth_um``, on its outline. Instances of at least ``swell_min_area_um2``
    that the line filter did not find, with an edge wider than ``swell_min_edge_um``
    and no plateau inside (the residual's mean slope, half that width in from the
    outline, at least ``swell_min_slope_ratio`` times the outline's: a soft film is
    flat there, a swell keeps rising; or nothing of it that far in), are dropped,
    unless deep and sharp enough for a film: a contrast of ``swell_deep_snr`` times the
    ring's noise (MAD) or more and an edge no wider than ``swell_deep_edge_um`` (a dome
    of oil has no plateau either), this edge's step taken on the smoothed residual too
    (the smoothing lowers a line thinner than it, two crossed scratches found as one
    region, as much as its flanks' slope). An instance whose edge is wider than
    ``swell_tail_min_edge_um`` is dropped, plateau or not, when the residual in the band
    ``swell_tail_um`` outside its outline keeps a share of its contrast (same sign):
    the top of a swell whose flank goes on (under a hot spot the background's clipping
    leaves a flat top), where around a film the residual is zero. The share is the
    first of ``swell_min_tail``, or its second when the edge is wider than the band's
    inner offset (the instance's own soft skirt then reaches into the band).
    Returns the renumbered labels and per-label sources.
    """
    n = int(labels.max()) + 1
    ys, xs = _nonzero(labels)  # (a bincount of the whole image converts every pixel to int64)
    area = np.bincount(labels[ys, xs], minlength=n)
    cand = np.flatnonzero((area >= px(1.0) ** 2 * params["swell_min_area_um2"])
                          & ((source & _SCRATCH) == 0) & (np.arange(n) > 0))
    if cand.size == 0:
        return labels, source
    r_in, r_out = (max(1, round(px(um))) for um in params["swell_ring_um"])
    smooth = max(0.5, px(params["swell_smooth_um"]))
    t_in, t_out = (px(um) for um in params["swell_tail_um"])
    margin = max(r_out + math.ceil(3 * smooth), math.ceil(t_out)) + 2
    boxes = _label_boxes(labels, n)
    k3 = np.ones((3, 3), np.uint8)
    drop = np.zeros(n, bool)
    for i in cand:
        win = _widened(boxes[i], margin, labels.shape)
        inside = (labels[win] == i).view(np.uint8)
        ring = ((cv2.dilate(inside, _disk(2 * r_out + 1)) > 0)
                & ~(cv2.dilate(inside, _disk(2 * r_in + 1)) > 0) & valid[win] & (labels[win] == 0))
        if np.count_nonzero(ring) < 10:
            continue
        r = cv2.GaussianBlur(resid[win], (0, 0), smooth)
        # slope per µm (Sobel with ksize 3 is 8 x the central difference)
        grad = np.hypot(cv2.Sobel(r, cv2.CV_32F, 1, 0), cv2.Sobel(r, cv2.CV_32F, 0, 1)) * (px(1.0) / 8.0)
        slope = grad[(cv2.dilate(inside, k3) > 0) & ~(cv2.erode(inside, k3) > 0)].mean()
        around = resid[win][ring]
        step = float(median(resid[win][inside > 0])) - float(median(around))
        contrast = abs(step)
        width = contrast / max(float(slope), 1e-12)  # µm
        if width <= min(params["swell_min_edge_um"], params["swell_tail_min_edge_um"]):
            continue
        # a film deep in the noise around it keeps a narrower edge than a deep swell; its
        # width from the smoothed residual's own step (the smoothing lowers a line
        # thinner than it as much as its flanks' slope)
        if (contrast >= params["swell_deep_snr"] * _mad_std(around)
                and abs(float(median(r[inside > 0])) - float(median(r[ring])))
                / max(float(slope), 1e-12) <= params["swell_deep_edge_um"]):
            continue
        # the flank of a swell: swell_tail_um outside the outline the residual (zero where
        # the background is right, as around a film) still keeps a share of the contrast
        if width > params["swell_tail_min_edge_um"]:
            out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
            band = (out >= t_in) & (out < t_out) & valid[win] & (labels[win] == 0)
            share = params["swell_min_tail"][int(width > params["swell_tail_um"][0])]
            if (np.count_nonzero(band) >= 10
                    and math.copysign(1.0, step) * float(median(resid[win][band])) >= share * contrast):
                drop[i] = True
                continue
        if width <= params["swell_min_edge_um"]:
            continue
        # a soft film still has a plateau: half the edge width in from the outline (at
        # least the ring's inner offset) it is flat; a swell keeps rising toward its top
        inset = px(max(params["swell_ring_um"][0], width / 2))
        inner = cv2.erode(inside, _disk(2 * inset + 1)) > 0
        # (one thinner than that all along has no plateau at all)
        drop[i] = (np.count_nonzero(inner) < 10
                   or grad[inner].mean() >= params["swell_min_slope_ratio"] * slope)
    return _without(labels, source, drop)


def _fill_enclosed(labels, source, valid):
    """``labels`` with each hole of a region instance (unlabelled ``valid`` pixels it
    encloses, 4-connected, touching no other instance) given to it: a film found as its
    darker rim, a particle as its dark outline, covers what the outline encloses."""
    box = _mask_box(labels > 0, 1)
    lab = labels[box]
    holes = _fill_holes(lab > 0) & (lab == 0)
    if not holes.any():
        return labels
    n, comp, stats, _ = cv2.connectedComponentsWithStats(holes.view(np.uint8), connectivity=4)
    out = labels.copy()
    sub = out[box]
    k3 = np.ones((3, 3), np.uint8)
    for i in range(1, n):
        x, y, w, h = stats[i, :4]
        win = np.s_[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1]
        own = comp[win] == i
        rim = lab[win][(cv2.dilate(own.view(np.uint8), k3) > 0) & ~own]
        ids = np.unique(rim[rim > 0])
        if ids.size == 1 and source[ids[0]] & _REGION and valid[box][win][own].all():
            sub[win][own] = ids[0]
    return out


def _without(labels, source, drop):
    """``labels`` and their per-label ``source`` without the labels ``drop`` marks
    (bool per label, 0 never), renumbered 1..k in order."""
    if not drop.any():
        return labels, source
    keep = np.flatnonzero(~drop)
    lut = np.zeros(drop.size, labels.dtype)
    lut[keep[1:]] = np.arange(1, keep.size)
    return _relabel(labels, lut), source[keep]


def _at_scale(ring, factor, shape):
    """An edge annulus of ``_physical_regions`` at ``factor`` times its resolution,
    on an image of ``shape``: radii scaled, the radius map resized."""
    if factor == 1.0:
        return ring
    r_lo, r_edge, r_hi, rmap, (cx, cy), r_full = ring
    rmap = cv2.resize(rmap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) * np.float32(factor)
    centre = ((cx + 0.5) * factor - 0.5, (cy + 0.5) * factor - 0.5)
    return r_lo * factor, r_edge * factor, r_hi * factor, rmap, centre, r_full * factor


def _without_haze(labels, region, zs, lin, min_area, params):
    """``labels`` without the faint haze that joins a cluster of particles.

    A region instance (``region`` flags, one per number, covering every number of
    ``labels``) holding at least ``cluster_min_particles`` dense parts (``|zs|`` at
    least ``mask_level`` of its 95th percentile and ``diffuse_max_sigma``), each of ``min_area`` px or more and at most
    ``cluster_particle_max_um2`` (specks of dust or polishing slurry, not the denser
    spots of one large particle), whose other pixels keep a median ``|zs|`` of at most
    ``cluster_max_haze`` of the parts' and a median linear residual ``|lin|`` under
    ``coarse_min_contrast`` (fainter than any film: a film under the specks stays) is a
    cluster: the haze between the particles (a residue, their blurred skirts) loses its
    pixels, so that ``_split_apart`` keeps each particle a defect of its own. The parts
    keep a one-pixel rim."""
    flags = region.copy()
    flags[0] = False
    if not flags.any():
        return labels
    max_px = params["cluster_particle_max_um2"] / params["min_area_um2"] * min_area
    out = labels
    for i, box in enumerate(_label_boxes(labels, len(flags))):
        if not flags[i] or box is None:
            continue
        box = _widened(box, 1, labels.shape)
        own = labels[box] == i
        a = np.abs(zs[box])
        level = max(params["diffuse_max_sigma"], params["mask_level"] * float(np.percentile(a[own], 95)))
        _, dense, stats, _ = cv2.connectedComponentsWithStats((own & (a >= level)).view(np.uint8),
                                                              connectivity=8)
        area = stats[1:, cv2.CC_STAT_AREA]
        parts = np.flatnonzero(area >= min_area) + 1
        if parts.size < params["cluster_min_particles"] or area[parts - 1].max() > max_px:
            continue
        core = np.isin(dense, parts)
        haze = own & ~(cv2.dilate(core.view(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        if (not haze.any() or median(a[haze]) > params["cluster_max_haze"] * median(a[core])
                or median(np.abs(lin[box][haze])) >= params["coarse_min_contrast"]):
            continue
        if out is labels:
            out = labels.copy()
        out[box][haze] = 0
    return out


def _split_apart(labels, region, zs, band, min_area, params):
    """``labels`` with each defect ``region`` flags (one flag per number) that lies in two
    or more dense pieces split into them, and the number each new defect came from.

    Pieces apart from each other (``merge_gap_um`` joined them), each of ``min_area`` px
    or more and of mean ``|zs|`` at least ``diffuse_max_sigma``, are distinct particles
    of a cluster of dust, not one defect broken up (a faint film's pieces, a crumb beside
    a dig stay with it); the largest piece keeps the number, the others are numbered
    from ``len(region)`` on. Pieces that the edge ``band`` connects are one particle seen
    either side of it.
    """
    none = (labels, np.zeros(0, np.int64))
    on = region[labels] & (labels > 0)
    if not on.any():
        return none
    # pixels beside another defect's are left out of the connectivity: two particles of
    # one defect do not connect through a third defect they both touch
    lab = labels.astype(np.float32)
    beside = cv2.dilate(lab, None) != lab
    lab[labels == 0] = np.inf
    beside |= cv2.erode(lab, None) != lab
    n, comp = cv2.connectedComponents(((on & ~beside) | band).view(np.uint8), connectivity=8)
    if n <= 2:
        return none
    ys, xs = _nonzero(on & (comp > 0))
    # a piece: the pixels of one defect in one connected component
    own = labels[ys, xs].astype(np.int64)
    keys, piece = np.unique(comp[ys, xs] * len(region) + own, return_inverse=True)
    owner = keys % len(region)
    area = np.bincount(piece)
    dense = (area >= min_area) & (
        np.bincount(piece, np.abs(zs[ys, xs])) >= params["diffuse_max_sigma"] * area)
    # per defect, its dense pieces but the largest become defects of their own
    order = np.lexsort((-area, owner))
    pieces = order[dense[order]]
    first = np.r_[True, owner[pieces][1:] != owner[pieces][:-1]]
    count = np.bincount(owner[pieces], minlength=len(region))
    new = pieces[~first & (count[owner[pieces]] >= 2)]
    if not len(new):
        return none
    lut = np.zeros(len(keys), np.int64)
    lut[new] = len(region) + np.arange(len(new))
    moved = lut[piece]
    labels = labels.copy()
    labels[ys, xs] = np.where(moved > 0, moved, own)
    return labels, owner[new]


def _drop_short_lines(labels, source, min_len):
    """``labels`` without the instances only the line filter found (no region
    candidate backs them) whose major axis or pixel count (a continuous line of
    that length has as many) is below ``min_len`` px once cut at their final
    resolution: crumbs of texture or of an edge, not scratches."""
    ys, xs = _nonzero(labels)
    k = labels[ys, xs]
    n = max(len(source), int(labels.max()) + 1)
    src = np.zeros(n, np.int8)
    src[:len(source)] = source
    short = (_axes(k, ys, xs, n)[0] < min_len) | (np.bincount(k, minlength=n) < min_len)
    drop = (src == _SCRATCH) & short
    drop[0] = False
    if drop.any():
        labels = np.where(drop[labels], 0, labels).astype(labels.dtype)
    return labels


def _polarity(k, v, n):
    """Polarity of each label 0..n-1 (``k`` the label of each value ``v``):
    sum(v) / sum(|v|), -1 dark ... 1 bright (0 for a relief: a shaded groove)."""
    return np.bincount(k, v, minlength=n) / np.maximum(np.bincount(k, np.abs(v), minlength=n), 1e-6)


def _polarity_and_level(k, v, n):
    """Polarity (:func:`_polarity`) and level (median |v|) of each label 0..n-1: the
    ``pol`` and ``level`` of a line piece that :func:`_side_by_side` reads."""
    return _polarity(k, v, n), _label_median(k, np.abs(v), n)


def _thickness(lab, n, ys, xs):
    """Thickness (px) of each label 0..n-1: twice its largest inscribed radius.

    ``ys, xs`` list the labelled pixels. Unlike the ellipse's minor axis it
    does not grow when a line bends. Computed in their box widened by one
    pixel (a ring of background: the same result as on the whole image).
    """
    out = np.zeros(n, np.float32)
    if ys.size == 0:
        return 2 * out + 1
    y0, x0 = max(int(ys.min()) - 1, 0), max(int(xs.min()) - 1, 0)
    f = lab[y0:int(ys.max()) + 2, x0:int(xs.max()) + 2].astype(np.float32)  # exact for labels < 2**24
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    inner = (cv2.dilate(f, cross) == f) & (cv2.erode(f, cross) == f) & (f > 0)
    dist = cv2.distanceTransform(inner.astype(np.uint8), cv2.DIST_L2, 3)
    np.maximum.at(out, lab[ys, xs], dist[ys - y0, xs - x0])
    return 2 * out + 1


def _ellipses(k, ys, xs, n):
    """Equivalent ellipse of each label 0..n-1 (``k`` the label of each pixel ``ys, xs``;
    pixels as unit squares): major and minor axis lengths (px) and the major axis'
    direction (radians, image x right and y down)."""
    cnt = np.maximum(np.bincount(k, minlength=n), 1).astype(np.float64)
    mean = lambda v: np.bincount(k, v, minlength=n) / cnt  # noqa: E731
    x, y = xs.astype(np.float64), ys.astype(np.float64)
    mx, my = mean(x), mean(y)
    a = mean(x * x) - mx * mx + 1 / 12
    c = mean(y * y) - my * my + 1 / 12
    b = mean(x * y) - mx * my
    root = np.sqrt(((a - c) / 2) ** 2 + b * b)
    return (4 * np.sqrt(np.maximum((a + c) / 2 + root, 0)), 4 * np.sqrt(np.maximum((a + c) / 2 - root, 0)),
            0.5 * np.arctan2(2 * b, a - c))


def _axes(k, ys, xs, n):
    """Major and minor axis lengths (px) of each label's equivalent ellipse (``_ellipses``)."""
    return _ellipses(k, ys, xs, n)[:2]


def _label_boxes(labels, n):
    """Bounding box (a pair of slices, like ``ndimage.find_objects``) of each
    label 0..n-1, None for an empty one; from the labelled pixels only."""
    ys, xs = _nonzero(labels)
    k = labels[ys, xs]
    ext = np.full((4, n), -(1 << 40), np.int64)  # -min y, max y, -min x, max x
    for row, v in enumerate((-ys, ys, -xs, xs)):
        np.maximum.at(ext[row], k, v)
    return [(slice(-e[0], e[1] + 1), slice(-e[2], e[3] + 1)) if e[1] >= 0 else None for e in ext.T]


def _join_boxes(boxes, members):
    """The bounding box (slices) of the boxes of ``members``."""
    return tuple(slice(min(boxes[m][a].start for m in members), max(boxes[m][a].stop for m in members))
                 for a in (0, 1))


def _widened(box, margin, shape):
    """A box (pair of slices, as :func:`_label_boxes` gives) widened by ``margin``
    pixels on every side, within an image of ``shape``."""
    return tuple(slice(max(0, s.start - margin), min(size, s.stop + margin)) for s, size in zip(box, shape))


def _label_points(labels, n):
    """Pixels of each label 1..n-1 as (x, y) arrays (None for an empty label)."""
    ys, xs = _nonzero(labels)
    k = labels[ys, xs]
    order = np.argsort(k, kind="stable")
    bounds = np.searchsorted(k[order], np.arange(n + 1))
    pts = np.column_stack([xs[order], ys[order]])
    return [pts[bounds[i]:bounds[i + 1]] if bounds[i + 1] > bounds[i] else None for i in range(n)], ys, xs, k


def _without_lay(table, params):
    """``table`` without the ferrule's lay: when ``lay_min_lines`` or more linear defects
    wholly off the glass (innermost zone 3 or beyond), and ``lay_min_share`` of them, lie
    within ``lay_tol_deg`` of one orientation, those are the machining marks of a brushed
    metal ferrule, not scratches. A face's polishing scratches run a few in a band among
    lines of other angles (real photos: at most 10 together, a third of the lines)."""
    off = ((table["shape_class"] == "linear") & (table["innermost_zone"] >= 3)).to_numpy()
    if np.count_nonzero(off) < params["lay_min_lines"]:
        return table
    theta = table["orientation_deg"].to_numpy()[off]
    near = np.abs((theta[:, None] - theta[None, :] + 90.0) % 180.0 - 90.0) <= params["lay_tol_deg"]
    count = near.sum(1)
    best = int(count.argmax())
    if count[best] < max(params["lay_min_lines"], params["lay_min_share"] * theta.size):
        return table
    lay = np.zeros(len(table), bool)
    lay[np.flatnonzero(off)] = near[best]
    return table[~lay]


def _measure(instance_map, gray, zone_map, geometry, upp, crop, bg, source, mean_absz, params):
    """Per-instance table at input resolution (``bg``: log background of the crop)."""
    has_center = _finite(geometry, "center_x") and _finite(geometry, "center_y")
    cx = geometry["center_x"] if has_center else np.nan
    cy = geometry["center_y"] if has_center else np.nan
    off = np.float32(params["log_offset"])
    gray = gray[crop]
    y0, x0 = crop[0].start, crop[1].start
    lab = instance_map[crop]
    zm = zone_map[crop]
    rows = []
    for n, sl in enumerate(_label_boxes(lab, int(lab.max()) + 1)[1:], start=1):
        if sl is None:
            continue
        sub = lab[sl] == n
        counts = np.bincount(zm[sl][sub], minlength=6)
        counts[0] = 0
        touched = np.nonzero(counts)[0]
        if touched.size == 0:
            continue
        m = cv2.moments(sub.astype(np.uint8), binaryImage=True)
        area = int(m["m00"])
        xcen = m["m10"] / m["m00"] + sl[1].start + x0
        ycen = m["m01"] / m["m00"] + sl[0].start + y0
        # second central moments -> equivalent ellipse (as skimage regionprops)
        a, b, c = m["mu20"] / area, m["mu11"] / area, m["mu02"] / area
        root = math.sqrt(((a - c) / 2) ** 2 + b * b)
        major = 4 * math.sqrt(max((a + c) / 2 + root, 0.0))
        minor = 4 * math.sqrt(max((a + c) / 2 - root, 0.0))
        orient = math.degrees(0.5 * math.atan2(2 * b, a - c)) % 180.0
        src = {1: "region", 2: "scratch", 3: "both"}[int(source[n]) or 1]
        elong = major / max(minor, 1.0)
        if elong >= params["linear_aspect"]:
            step = 1.0 / max(abs(math.cos(math.radians(orient))), abs(math.sin(math.radians(orient))))
            # the medial axis of the outline: gaps and holes (the two flanks of a
            # shaded groove, a ragged edge) would double or branch the skeleton
            full = _fill_holes(cv2.morphologyEx(np.pad(sub, 2).view(np.uint8), cv2.MORPH_CLOSE,
                                                np.ones((3, 3), np.uint8)))[2:-2, 2:-2]
            length_px = max(float(skeletonize(full).sum()) * step, 1.0)
            width_px = np.count_nonzero(full) / length_px
            shape = "linear"
        else:
            length_px = _feret_max(sub)
            width_px = max(minor, 1.0)
            area_um2 = area * upp * upp
            diffuse = (mean_absz[n - 1] < params["diffuse_max_sigma"]
                       and area_um2 >= params["diffuse_min_area_um2"])
            shape = "diffuse" if diffuse else "compact"
        rows.append({
            "number": n,
            "bbox_x": int(sl[1].start + x0), "bbox_y": int(sl[0].start + y0),
            "bbox_w": int(sl[1].stop - sl[1].start), "bbox_h": int(sl[0].stop - sl[0].start),
            "centroid_x": float(xcen), "centroid_y": float(ycen),
            "area_px": area, "area_um2": float(area * upp * upp),
            "zone": int(np.argmax(counts)),
            "zones_touched": ",".join(str(int(t)) for t in touched),
            "innermost_zone": int(touched.min()),
            "radius_um": float(math.hypot(xcen - cx, ycen - cy) * upp),
            "angle_deg": float(math.degrees(math.atan2(ycen - cy, xcen - cx)) % 360.0),
            "length_um": float(length_px * upp), "width_um": float(width_px * upp),
            "orientation_deg": float(orient),
            "contrast": float((gray[sl][sub] - (np.exp(bg[sl][sub]) - off)).mean()),
            "shape_class": shape, "source": src,
        })
    if not rows:
        return _empty_table()
    return pd.DataFrame({c: np.array([r[c] for r in rows], dtype=_dtype(c)) for c in COLUMNS})


def _fill_holes(mask):
    """``mask`` (bool or uint8) with its holes filled: the background that no path
    connects to the image border."""
    outside = np.pad(mask, 1).astype(np.uint8)
    cv2.floodFill(outside, None, (0, 0), 1)
    return (mask > 0) | (outside[1:-1, 1:-1] == 0)


def _feret_max(mask):
    """Largest dimension of a mask: the max Feret diameter of its pixel centres
    plus one pixel (the extreme centres lie half a pixel inside the outline;
    pixel corners would add up to 1.4 px: a fifth of a 3 µm pit at 0.5 µm/px)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.vstack(contours)).reshape(-1, 2).astype(np.float64)
    d = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1).max())) + 1.0
