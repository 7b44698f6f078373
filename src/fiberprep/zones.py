"""Fiber finding, sub-pixel end-face geometry and IEC 61300-3-35 zone maps.

The cladding edge is found in two stages. A coarse finder votes along the
intensity gradient of a downscaled, log-flattened image (fast radial symmetry,
both polarities at once), so vignetting, dirt and an off-centre fiber do not
matter. Then edge points are located with sub-pixel precision along rays from
the coarse center (signed gradient peak with parabolic interpolation), edge
points on chips and dirt are rejected by iterative trimming around a direct
least-squares ellipse fit (a circle is the special case; 720x576 video captures
have non-square pixels and show the fiber as an ellipse). On dark fibers a
textured epoxy ring just outside the glass is recognised, and the glass edge
inside it is fitted instead of the ring's stronger outer edge (behind a bright
bevel rim any dip is a ring: a glass edge has one bevel); without a ring
(and without a diffraction fringe, where the edge is not a blurred step), a
dark bevel line just inside the glass edge is modelled with the edge: the
gradient of the median edge-aligned profile is fitted with two opposite
Gaussian lobes of the blur width, and the glass ends at the outer lobe. Under
a fringe that follows the whole edge, the line's lobe is fitted to the odd part
of that gradient about the glass edge instead (the step and the fringe pair are
even about it, whatever their shapes). On either polarity, a smooth or rough band
darker than the glass and wider than a bevel line just outside the fitted edge is
epoxy: two blurred steps are fitted to the edge profile and the glass ends at the
inner one (:func:`_inside_band`). The core is
measured the same way inside the cladding when the radial intensity profile
shows it; a multimode core that names its type also says where the glass ends
(its radius over the type's core-to-cladding ratio), which picks the other step of
a staircase edge when the fitted one is off it (:func:`_core_ratio_edge`). Zone
maps follow the fitted cladding ellipse.

Coordinates are pixel centers: (0, 0) is the center of the top-left pixel,
x to the right, y down.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np
from scipy.special import ndtr

from fiberprep.io import ImageRejected
from fiberprep.stats import lookup, median

# SciPy and scikit-image are imported by the few fits that use them: the table jobs that
# need only the zone names start without them.

ZONE_IDS: dict[str, int] = {
    "outside": 0,
    "core": 1,
    "cladding": 2,
    "adhesive": 3,
    "contact": 4,
    "ferrule": 5,
}
ZONE_NAMES: dict[int, str] = {v: k for k, v in ZONE_IDS.items()}
# IEC zones in the order they nest outward from the fiber center.
GRADED_ZONES = ("core", "cladding", "adhesive", "contact")
# Reason of an image without a fiber edge: what was seen, then what it may be.
NO_FIBER = (
    "no fiber found: {seen} (a close-up with no fiber edge in view needs zones.mode: none; "
    "an edge under oil or dirt needs cleaning; a cladding larger or smaller than "
    "zones.um_per_px_range allows is not searched)"
)

# A round field stop around the fiber (measure_geometry; 0 when none).
FIELD_STOP_KEYS = ("field_stop_x", "field_stop_y", "field_stop_radius_px")
GEOMETRY_KEYS = (
    "center_x",
    "center_y",
    "cladding_radius_px",
    "cladding_ellipticity",
    "cladding_angle_deg",
    "core_center_x",
    "core_center_y",
    "core_radius_px",
    "core_visible",
    "core_offset_px",
    "core_offset_um",
    "um_per_px",
    "um_per_px_source",
    "fit_residual_px",
    "confidence",
    "polarity",
    "fiber_type",
    "fiber_type_source",
    *FIELD_STOP_KEYS,
)


def measure_geometry(gray, fiber_type, params, um_per_px=None):
    """Measure the fiber's cladding and core circles with sub-pixel precision.

    Parameters
    ----------
    gray : ndarray, float32, shape (H, W)
        End-face image in [0, 1].
    fiber_type : dict
        Entry of the config's fiber catalog (uses ``cladding_um`` and ``core_um``),
        or candidates ``{name: entry}``: the fiber is the candidate whose nominal
        core, at the scale its own cladding gives, is nearest the measured core
        (so the core-to-cladding ratio picks SM 9/125, MM 50/125, 100/140 or
        105/125 without a setting; :func:`_match_fiber_type`); the first when no
        core of a candidate's size shows.
    params : dict
        The config's ``zones`` section.
    um_per_px : float or None
        Scope calibration. None derives it from the measured cladding diameter
        and the (chosen) type's ``cladding_um``.

    Returns
    -------
    dict
        The keys of ``GEOMETRY_KEYS``. The cladding is an ellipse: center, the
        equal-area radius ``cladding_radius_px`` (sqrt of the semi-axes' product),
        ``cladding_ellipticity`` (1 - minor/major) and the major axis angle
        ``cladding_angle_deg`` (from +x toward +y, [0, 180)). ``polarity`` is
        ``"dark"`` when the fiber is darker than the ferrule, ``"bright"``
        otherwise. ``fiber_type`` is the chosen candidate's name (``None`` for a
        plain catalog entry); ``fiber_type_source`` says how it was chosen:
        ``"config"`` (one type given), ``"core"`` (the core's size fits it alone),
        ``"ambiguous"`` (another candidate fits it nearly as well; the nearer is chosen) or
        ``"default"`` (no core of a candidate's size: the first, a guess; the zones
        stage may then give it its folder's type, :func:`folder_fiber_types`, as
        source ``"folder"``). ``core_visible`` is
        False when no core edge was measured; the core circle is then the
        nominal core centered on the cladding. With ``params["mode"] == "none"``
        no fiber is searched: circle keys are NaN, ``polarity`` is ``"none"``,
        and :func:`zone_label_map` makes the whole frame one zone.
        ``field_stop_x``, ``field_stop_y``, ``field_stop_radius_px``: a round field
        stop around the fiber (a coarse circle; 0 when none), whose black
        :func:`field_of_view` leaves out. All lengths are in
        the image's pixels, also when a coarse image's crop was fitted upsampled
        (``fit_um_per_px``).

    Raises
    ------
    fiberprep.io.ImageRejected
        ``"no fiber found"``, ``"two fibers"`` or ``"low fit confidence 0.31"``.

    References
    ----------
    .. [1] G. Loy and A. Zelinsky, "Fast radial symmetry for detecting points of
       interest", IEEE TPAMI 25(8), 2003 (coarse gradient voting).
    .. [2] R. Halir and J. Flusser, "Numerically stable direct least squares
       fitting of ellipses", WSCG 1998 (``cv2.fitEllipseDirect``).
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"gray must be 2-D, got shape {gray.shape}")
    types = {None: fiber_type} if "cladding_um" in fiber_type else dict(fiber_type)
    first = next(iter(types))
    mode = params.get("mode", "fiber")
    if mode == "none":
        source = "config" if len(types) == 1 else "default"
        geo = _no_fiber_geometry(um_per_px, params["frame_um_per_px"])
        return {**geo, "fiber_type": first, "fiber_type_source": source}
    if mode != "fiber":
        raise ValueError(f"zones.mode must be 'fiber' or 'none', got {mode!r}")

    clad_r_um = 0.5 * float(types[first]["cladding_um"])
    clad_r_ums = [0.5 * float(t["cladding_um"]) for t in types.values()]
    upp_lo, upp_hi = (um_per_px, um_per_px) if um_per_px else params["um_per_px_range"]
    r_lo, r_hi = min(clad_r_ums) / upp_hi, max(clad_r_ums) / upp_lo
    r_tol = params["radius_tolerance"]
    r_range = (r_lo * (1 - r_tol), min(r_hi * (1 + r_tol), 0.5 * max(gray.shape)))
    if r_range[1] < r_range[0]:
        raise ImageRejected(
            f"no fiber found: frame too small for a cladding radius of "
            f"{r_range[0]:.0f} px or more"
        )
    core_ratios = [float(t["core_um"]) / float(t["cladding_um"]) for t in types.values()]
    cx, cy, r, polarity, stop = _coarse_circle(gray, r_range, core_ratios, params)

    # edges are located on a smoothed crop around the fiber (offset x0, y0), upsampled
    # k times when the scope's pixels are coarser than fit_um_per_px
    pad = r * (1 + 2 * params["search_rel"]) + 2 * params["search_min_px"]
    x0, y0 = max(0, math.floor(cx - pad)), max(0, math.floor(cy - pad))
    crop = gray[y0 : math.ceil(cy + pad) + 1, x0 : math.ceil(cx + pad) + 1]
    k = max(1, math.ceil((um_per_px or clad_r_um / r) / params["fit_um_per_px"] - 1e-9))
    if k > 1:
        crop = cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
    smooth = cv2.GaussianBlur(crop, (0, 0), params["edge_sigma_px"])
    upp_given = float(um_per_px) / k if um_per_px else None
    coarse = ((cx - x0 + 0.5) * k - 0.5, (cy - y0 + 0.5) * k - 0.5, r * k)
    # an epoxy band is looked for at most 60 % of the narrowest cladding annulus in,
    # clear of a large core's edge
    annulus_um = min(0.5 * (float(t["cladding_um"]) - float(t["core_um"])) for t in types.values())
    band_um = min(params["epoxy_max_um"], 0.6 * annulus_um)
    for two_edges in (False, True):  # the second pass only for a fit to be rejected
        clad = _fit_cladding(smooth, coarse, polarity, clad_r_um, upp_given, band_um, params, two_edges)
        clad = _inside_band(smooth, clad, polarity, clad_r_um, upp_given, band_um, params)
        clad = _in_image_px(clad, k)
        confidence = _confidence(clad, params)
        if confidence >= params["min_confidence"]:
            break
    upp_guess = upp_given or clad_r_um / clad["r"]
    band = band_um / upp_guess
    glass = None
    if polarity == "bright" and confidence < params["min_confidence"]:
        # a fit to be rejected: the glass edge inside an epoxy ring darker than the glass
        # and brighter than the ferrule, whose outer step (the stronger) wanders with
        # the ring's width
        glass = _glass_inside_crescent(smooth, clad, -1.0, -1.0, 0.5 * band, band, params, centred=True)
    elif polarity == "dark":  # the glass edge in the gaps of a broken ring as dark as it
        gap = max(params["two_edge_min_gap_px"], params["bevel_max_um"] / upp_guess)
        glass = _glass_inside_broken_ring(smooth, clad, 1.0, gap, band, params)
        if glass is None and confidence < params["min_confidence"]:
            # a fit to be rejected: a broken ring narrower than a bevel line
            glass = _glass_inside_broken_ring(smooth, clad, 1.0, params["two_edge_min_gap_px"], band, params,
                                              close=True)
        if glass is None and confidence < params["min_confidence"]:
            # a fit to be rejected: the glass edge inside a ring whose outer edge wanders
            glass = _glass_inside_crescent(smooth, clad, 1.0, -1.0, 0.5 * band, band, params, centred=True)
    if glass is not None:
        glass = _in_image_px(glass, k)
        glass_confidence = _confidence(glass, params)
        if glass_confidence >= params["min_confidence"]:
            clad, confidence = glass, glass_confidence
    if confidence >= params["min_confidence"]:
        clad = _sharper_glass_inside(smooth, clad, 1.0 if polarity == "dark" else -1.0, k,
                                     band_um / (upp_given or clad_r_um / clad["r"]), params)
        confidence = _confidence(clad, params)
    if confidence < params["min_confidence"]:
        raise ImageRejected(
            f"low fit confidence {confidence:.2f}: a circular edge supports the cladding fit on "
            f"{100 * clad['inlier_frac']:.0f} % of its circumference with an RMS residual of "
            f"{clad['residual']:.1f} px, {clad['excess']:.1f} px beyond what its edge noise "
            f"explains (an edge hidden by oil or dirt, chipped or out of the frame, or edges "
            f"on no circle; zones.min_confidence is {params['min_confidence']})"
        )

    name, core, upp, type_source = _match_fiber_type(smooth, clad, types, upp_given, params)
    core_um, clad_um = float(types[name]["core_um"]), float(types[name]["cladding_um"])
    # (a kink's radius is not precise enough to move the edge by: core_ratio_tolerance)
    if type_source == "core" and core_um >= params["core_ratio_min_um"] and not core.get("kink"):
        moved = _core_ratio_edge(smooth, clad, core["r"] * clad_um / core_um, polarity, params)
        if moved is not clad:
            clad, upp = moved, upp_given or 0.5 * clad_um / moved["r"]
    upp *= k  # µm per image pixel
    upp_source = "calibration" if upp_given else "cladding"
    core_offset = math.hypot(core["cx"] - clad["cx"], core["cy"] - clad["cy"]) / k

    def to_image(v, offset):
        """A coordinate of the (upsampled) crop in the image's pixels."""
        return (v + 0.5) / k - 0.5 + offset

    return {
        "center_x": to_image(clad["cx"], x0),
        "center_y": to_image(clad["cy"], y0),
        "cladding_radius_px": clad["r"] / k,
        "cladding_ellipticity": clad["ellipticity"],
        "cladding_angle_deg": clad["angle_deg"],
        "core_center_x": to_image(core["cx"], x0),
        "core_center_y": to_image(core["cy"], y0),
        "core_radius_px": core["r"] / k,
        "core_visible": core["visible"],
        "core_offset_px": core_offset,
        "core_offset_um": core_offset * upp,
        "um_per_px": upp,
        "um_per_px_source": upp_source,
        "fit_residual_px": clad["residual"],
        "confidence": confidence,
        "polarity": polarity,
        "fiber_type": name,
        "fiber_type_source": type_source,
        **dict(zip(FIELD_STOP_KEYS, stop or (0.0,) * 3)),
    }


def _match_fiber_type(smooth, clad, types, upp_given, params):
    """Name, core circle, µm/px and type source of the candidate fiber type that fits.

    Each distinct candidate (core and cladding size) searches a core around its
    nominal radius at the scale its cladding gives. A step found there is a core
    only when its center lies within ``type_core_offset_um`` of the cladding's
    (fibers are made with their core concentric to a few µm; an oil blot off
    the center is not) and, with several candidates, when its radius is within
    ``type_core_tolerance`` of a candidate's nominal core at that candidate's
    scale, plus ``type_core_edge_um`` (the edge of a small core is located to
    about that): a pit, a blot or a ring in the glass that fits no type is no
    core. Of the matching steps, the core is the innermost one at least
    ``type_step_share`` as strong as the strongest: a faint shading inside the
    core (uneven light) is weaker, rings of the cladding lie outside the core.
    A matching step more than ``type_enclose_ratio`` times as wide whose fit is a
    whole circle (``type_enclose_min_confidence``; the edge of an oil blot is not)
    encloses it: the inner one is then a pit or blot at the centre of a multimode
    core (however much sharper), and the core is chosen among the enclosing steps
    alike (multimode cores differ by at most 2.1x among themselves, a single-mode
    core is 5.5x smaller than the smallest).
    The type is the candidate nearest that core (in units of its tolerance);
    ``"ambiguous"`` when another candidate fits it too and is less than twice as
    far. Without a core the first candidate is kept with its nominal core
    (``"default"``); a single candidate is ``"config"``. A kink where a dome or bowl
    of the glass level ends (:func:`_core_kink`: a graded-index core, whose steps the
    search finds well inside its edge or not at all) is the core, before any step,
    when it fits a candidate.
    """
    distinct = {}
    for name, t in types.items():
        distinct.setdefault((float(t["core_um"]), float(t["cladding_um"])), name)
    fits, expected, cores = {}, {}, []

    def matches(core):
        """(deviation in units of the tolerance, name) of the candidates it fits, best first."""
        tol, edge_um = params["type_core_tolerance"], params["type_core_edge_um"]
        dev = {n: abs(core["r"] - r) / (tol * r + edge_um / u) for n, (r, u) in expected.items()}
        return sorted((d, n) for n, d in dev.items() if d <= 1.0)

    def kink():
        """The core where a dome or bowl of the glass ends, when it fits a candidate."""
        core = _core_kink(smooth, clad, params)
        return [core] if core is not None and matches(core) else []

    for (core_um, clad_um), name in distinct.items():
        upp = upp_given or 0.5 * clad_um / clad["r"]
        expected[name] = (0.5 * core_um / upp, upp)
        core = _measure_core(smooth, clad, *expected[name], params, fits)
        offset_um = math.hypot(core["cx"] - clad["cx"], core["cy"] - clad["cy"]) * upp
        if core["visible"] and offset_um > params["type_core_offset_um"]:
            core = {"cx": clad["cx"], "cy": clad["cy"], "r": expected[name][0], "visible": False}
        if len(distinct) == 1:
            return name, (kink() or [core])[0], upp, "config"
        if core["visible"] and all(abs(c["r"] - core["r"]) > 0.5 for c in cores):
            cores.append(core)

    cores = kink() or [c for c in cores if matches(c)]
    if not cores:
        name = next(iter(distinct.values()))
        r, upp = expected[name]
        return name, {"cx": clad["cx"], "cy": clad["cy"], "r": r, "visible": False}, upp, "default"

    def innermost_strong(cores):
        strongest = max(c["strength"] for c in cores)
        return min((c for c in cores if c["strength"] >= params["type_step_share"] * strongest),
                   key=lambda c: c["r"])

    core = innermost_strong(cores)
    outer = [c for c in cores if c["r"] > params["type_enclose_ratio"] * core["r"]
             and c["confidence"] >= params["type_enclose_min_confidence"]]
    core = innermost_strong(outer) if outer else core
    near = matches(core)
    name = near[0][1]
    close = len(near) > 1 and near[1][0] < 2.0 * near[0][0]
    return name, core, expected[name][1], "ambiguous" if close else "core"


def folder_fiber_types(table, min_images, min_share):
    """The fiber type each folder's coreless images take, from its typed images.

    A folder of end faces is one product, as a rule; the core shows on some of its
    images and names their type, and on the others (no core in view: type source
    ``"default"``, the first candidate, a guess) the type the folder's named ones
    agree on is a far better guess. A folder names a type when at least
    ``min_images`` of its images had it named by their core (source ``"core"``)
    and at least ``min_share`` of those agree; a mixed folder names none.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per image: ``folder``, ``fiber_type``, ``fiber_type_source``.
    min_images : int
        Fewest core-typed images a folder needs.
    min_share : float
        Share of them that must agree, in (0.5, 1].

    Returns
    -------
    dict
        ``{folder: type name}`` of the folders that name a type.
    """
    named = table[table["fiber_type_source"] == "core"]
    out = {}
    for folder, types in named.groupby("folder")["fiber_type"]:
        counts = types.value_counts()
        if len(types) >= min_images and counts.iloc[0] >= min_share * len(types):
            out[folder] = counts.index[0]
    return out


def assume_fiber_type(geometry, name, fiber_type):
    """The geometry of a fiber measured with no core in view, as fiber type ``name``.

    What :func:`measure_geometry` gives when ``name`` is the first candidate: the
    scale from the type's cladding (unless calibrated), the type's nominal core on
    the cladding center; the type source becomes ``"folder"``.
    """
    if geometry["um_per_px_source"] == "calibration":
        upp = geometry["um_per_px"]
    else:
        upp = 0.5 * float(fiber_type["cladding_um"]) / geometry["cladding_radius_px"]
    return {
        **geometry,
        "core_center_x": geometry["center_x"],
        "core_center_y": geometry["center_y"],
        "core_radius_px": 0.5 * float(fiber_type["core_um"]) / upp,
        "core_visible": False,
        "core_offset_px": 0.0,
        "core_offset_um": 0.0,
        "um_per_px": upp,
        "fiber_type": name,
        "fiber_type_source": "folder",
    }


def zone_label_map(shape, geometry, zones_um, um_per_px, ferrule=True, field=None):
    """Label every pixel with its IEC 61300-3-35 zone id (``ZONE_IDS``).

    Parameters
    ----------
    shape : tuple of int
        Image (H, W).
    geometry : dict
        Output of :func:`measure_geometry`. A NaN ``center_x`` (``mode: none``)
        labels the whole frame ferrule (5): analysed, not graded.
    zones_um : dict
        Zone name -> [inner, outer] diameter in µm (``core``, ``cladding``,
        ``adhesive``, ``contact``), centered on the cladding center.
    um_per_px : float
        Scale used to convert the diameters.
    ferrule : bool
        Whether pixels beyond the contact zone are analysed (5) or not (0).
    field : ndarray of bool, shape (H, W), optional
        Illuminated field of view (:func:`field_of_view`). Contact and ferrule
        pixels outside it (the scope's dark field-stop band) become 0; the
        glass and adhesive zones (1-3), located by the fit, are kept.

    Returns
    -------
    ndarray, uint8, shape (H, W)
        A pixel belongs to the zone whose [inner, outer) radius band holds the
        distance of its center from the fiber center, measured in the cladding
        ellipse's metric (a circle when ``cladding_ellipticity`` is 0).
    """
    labels = _zone_bands(shape, geometry, zones_um, um_per_px, ferrule)
    if field is not None:
        if field.shape != labels.shape:
            raise ValueError(f"field has shape {field.shape}, expected {labels.shape}")
        if not field.all():  # (most frames show no field stop)
            labels[~field & (labels >= ZONE_IDS["contact"])] = ZONE_IDS["outside"]
    return labels


def field_of_view(gray, params, geometry=None):
    """Mask of the illuminated field: everything but a dark field-stop band.

    Scopes and video grabbers often leave a black band along some image sides
    (the field stop, or the capture card's blanking). It is far darker than
    the ferrule just inside it, starts at the image border and runs along a
    large part of a side, unlike dark defects, which touch the border over a
    short stretch. For each side, the ferrule level is a high percentile of a
    strip just beyond the deepest possible band, per position along the side,
    so vignetting does not matter. The band is found at half resolution (its
    edge to a pixel, within ``fov_margin_px``). With ``geometry``, the glass
    and epoxy are left out of that level (a bright fiber near the border does
    not make the ferrule next to it look dark) and never belong to the band
    (nor a dark fiber cut by the border); :func:`zone_label_map` keeps zones
    1-3 anyway. A circular field stop that :func:`measure_geometry` found
    (``field_stop_*`` of ``geometry``) leaves out the black beyond it
    (``_beyond_stop``).

    Parameters
    ----------
    gray : ndarray, float32, shape (H, W)
        End-face image in [0, 1].
    params : dict
        The config's ``zones`` section: ``fov_dark_ratio`` (band pixels are
        darker than this fraction of the ferrule level), ``fov_max_depth_rel``
        (deepest band, fraction of the image size across the side),
        ``fov_min_extent_rel`` (shortest stretch along a side, fraction of its
        length) and ``fov_margin_px`` (blurred, sharpening-ringed band edge);
        ``epoxy_max_um`` widens the glass left out of the ferrule level.
    geometry : dict, optional
        Output of :func:`measure_geometry`; None or a NaN center (``mode:
        none``) uses every pixel for the ferrule level.

    Returns
    -------
    ndarray of bool, shape (H, W)
        True inside the illuminated field; all True when no band is found.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"gray must be 2-D, got shape {gray.shape}")
    h, w = gray.shape
    field = np.ones((h, w), bool)
    if min(h, w) < 4:
        return field
    # the band is found at half resolution (2x2 means; the band's edge to +-1 px)
    even = gray[: h - h % 2, : w - w % 2]
    small = cv2.resize(even, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    glass = np.zeros(small.shape, bool)  # the glass and epoxy: never field stop
    if geometry is not None and np.isfinite(geometry.get("center_x", np.nan)):
        e = geometry.get("cladding_ellipticity", 0.0)
        e = float(e) if np.isfinite(e) else 0.0
        r = geometry["cladding_radius_px"] + params["epoxy_max_um"] / geometry["um_per_px"]
        cx, cy, reach = geometry["center_x"], geometry["center_y"], r / math.sqrt(1.0 - e) + 1.0
        x0, x1 = max(0, math.floor((cx - reach) / 2)), min(w // 2, math.ceil((cx + reach) / 2) + 1)
        y0, y1 = max(0, math.floor((cy - reach) / 2)), min(h // 2, math.ceil((cy + reach) / 2) + 1)
        if x0 < x1 and y0 < y1:  # the glass's bounding box; half-res pixel centers
            d2 = equal_area_radius2(
                np.float32(2 * np.arange(x0, x1) + 0.5 - cx)[None, :],
                np.float32(2 * np.arange(y0, y1) + 0.5 - cy)[:, None],
                e,
                math.radians(geometry.get("cladding_angle_deg", 0.0)),
            )
            glass[y0:y1, x0:x1] = d2 < r * r
    # each side seen as the top rows of a view (left, top, right, bottom); only a strip
    # of two maximum depths (+ blur support) along it is read
    views = (
        (small.T, glass.T, field.T),
        (small, glass, field),
        (small[:, ::-1].T, glass[:, ::-1].T, field[:, ::-1].T),
        (small[::-1], glass[::-1], field[::-1]),
    )
    margin = params["fov_margin_px"]
    for img, fiber, out in views:
        max_depth = max(1, int(params["fov_max_depth_rel"] * img.shape[0]))
        if 2 * max_depth + margin / 2 >= img.shape[0]:
            continue
        rows = 2 * max_depth + 2
        strip = cv2.GaussianBlur(np.ascontiguousarray(img[:rows]), (0, 0), 0.5)[: 2 * max_depth]
        near = fiber[: 2 * max_depth]
        lvl = np.where(near, np.float32(np.nan), strip) if near.any() else strip
        depth = _stop_depth(strip, lvl, max_depth, max(1, round(margin / 2)), params)
        # back to full resolution: two columns per half-res one, the odd last repeats
        half = np.minimum(np.arange(out.shape[1]) // 2, len(depth) - 1)
        reach = np.where(depth > 0, 2 * depth + margin, 0)[half]
        top = int(reach.max())
        out[:top][np.arange(top)[:, None] < reach] = False
    corners = _dark_corners(small, glass | ~field[: h - h % 2 : 2, : w - w % 2 : 2], params)
    if corners.any():  # back to full resolution, widened by the blurred edge
        big = cv2.resize(corners.view(np.uint8), (w - w % 2, h - h % 2), interpolation=cv2.INTER_NEAREST)
        m = int(params["fov_margin_px"])
        big = cv2.dilate(big, _disc(m))
        field[: h - h % 2, : w - w % 2] &= big == 0
    if geometry is not None and geometry.get("field_stop_radius_px", 0.0) > 0:
        field &= ~_beyond_stop(gray, geometry, params)
    return field


def _dark_corners(small, skip, params):
    """The black corners a round field stop cuts off the frame (bool, like ``small``).

    A stop a little smaller than the frame's diagonal leaves black only in corners,
    too short along the sides for a band (:func:`_stop_depth`). A corner is black when
    its pixel lies in a region darker than ``fov_dark_ratio`` x the field's level (the
    75th percentile off ``skip``: the glass, and what bands already took) that ends in a
    step (its inside, ``fov_margin_px`` in from its edge, is darker than
    ``fov_dark_ratio`` x the level just beyond that edge: a vignetted corner fades),
    when two or more such corners' edges lie on one circle larger than half the frame's
    short side, with them outside it (a dark defect in a corner lies inside its own
    outline, and one black corner alone is left in the field).
    """
    from skimage.measure import CircleModel

    out = np.zeros(small.shape, bool)
    ok = ~skip
    if not ok.any():
        return out
    level = float(np.percentile(small[::4, ::4][ok[::4, ::4]], 75)) if ok[::4, ::4].any() else float(
        np.percentile(small[ok], 75))
    dark = (cv2.GaussianBlur(small, (0, 0), 0.5) < params["fov_dark_ratio"] * level) & ok
    if not (dark[0, 0] or dark[0, -1] or dark[-1, 0] or dark[-1, -1]):
        return out
    _, lab = cv2.connectedComponents(dark.view(np.uint8), connectivity=8)
    m = max(1, round(params["fov_margin_px"] / 2))  # half-resolution px
    disc = _disc(m)
    regions, rims = [], []
    for k in {int(lab[y, x]) for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1))} - {0}:
        region = (lab == k).view(np.uint8)
        inside = cv2.erode(region, disc, borderType=cv2.BORDER_REPLICATE) > 0
        beyond = (cv2.dilate(region, disc) > 0) & ~(region > 0) & ok
        if not (inside.any() and beyond.any()) or float(median(small[inside])) >= params["fov_dark_ratio"] * float(
                median(small[beyond])):
            continue
        regions.append(region > 0)
        rims.append(np.column_stack(np.nonzero(_stop_rim(region))[::-1]))
    if len(regions) < 2:  # one black corner may be a dark defect's
        return out
    arc = CircleModel.from_estimate(np.concatenate(rims).astype(np.float64))
    if not arc or arc.radius < 0.5 * min(small.shape):
        return out
    for region in regions:
        ry, rx = np.nonzero(region)
        if np.mean(np.hypot(rx - arc.center[0], ry - arc.center[1]) > arc.radius) > 0.9:
            out |= region
    return out


def _beyond_stop(gray, geometry, params):
    """Pixels beyond the circular field stop that :func:`measure_geometry` found
    (``field_stop_*``, a coarse circle).

    The black is what lies outside 0.9 of its radius and is darker than
    ``fov_dark_ratio`` x the field's median level just inside (0.8-0.9 of its
    radius), off the glass and epoxy, in pieces that reach past 1.05 of it (a dark
    defect near the stop's edge stays in the field). A circle fitted (RANSAC, 2 px)
    to the black's inner edge off the frame border places the stop's edge to a pixel,
    also where it runs along or out of the frame border. Pixels beyond it, or within
    ``fov_margin_px`` of the black or the fitted edge (the blurred rim), are out.
    """
    from skimage.measure import CircleModel, ransac

    cx, cy, r = (geometry[k] for k in FIELD_STOP_KEYS)
    d = _distance(gray.shape, cx, cy)
    ring = gray[(d >= 0.8 * r) & (d < 0.9 * r)]
    level = float(median(ring if ring.size else gray.ravel()))
    dark = cv2.GaussianBlur(gray, (0, 0), 1.0) < params["fov_dark_ratio"] * level
    # the glass and epoxy (a dark fiber near the stop's edge) are never beyond it
    e = float(geometry.get("cladding_ellipticity", 0.0) or 0.0)
    glass_r = (geometry["cladding_radius_px"] + params["epoxy_max_um"] / geometry["um_per_px"]) / math.sqrt(1 - e)
    dark &= _distance(gray.shape, geometry["center_x"], geometry["center_y"]) > glass_r
    n, lab = cv2.connectedComponents((dark & (d > 0.9 * r)).view(np.uint8))
    outer = np.zeros(n, bool)  # the black reaching out past the stop (not a dark defect)
    outer[np.unique(lab[d > 1.05 * r])] = True
    outer[0] = False
    beyond = outer[lab].view(np.uint8)
    m = int(params["fov_margin_px"])
    out = cv2.dilate(beyond, _disc(m)) > 0
    ys, xs = np.nonzero(_stop_rim(beyond))
    if xs.size < 20:
        return out
    fit, inliers = ransac(np.column_stack([xs, ys]).astype(np.float64), CircleModel, min_samples=3,
                          residual_threshold=2.0, max_trials=100, rng=0)
    if fit is None or inliers.mean() < 0.5 or abs(fit.radius - r) > 0.2 * r:
        return out  # the black's edge is no circle near the stop's: the black alone
    return out | (_distance(gray.shape, *fit.center) > fit.radius - m)


def _stop_rim(black):
    """The inner rim (uint8) of a black region (uint8 mask) beyond a field stop, less the
    frame's border rows and columns: the frame border is no edge of the stop."""
    rim = black - cv2.erode(black, np.ones((3, 3), np.uint8))
    rim[[0, -1]], rim[:, [0, -1]] = 0, 0
    return rim


def _disc(radius):
    """Elliptical structuring element (uint8) reaching ``radius`` px from its centre."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _distance(shape, cx, cy):
    """Distance (float32) of every pixel center of an image of ``shape`` from (cx, cy)."""
    h, w = shape
    return _hypot32(np.arange(w, dtype=np.float32)[None, :] - np.float32(cx),
                    np.arange(h, dtype=np.float32)[:, None] - np.float32(cy))


def _hypot32(x, y):
    """``np.hypot`` of float32 arrays ``x``, ``y`` (broadcast), bit for bit as glibc's
    hypotf computes it (the float64 root of the exact float64 sum of squares, rounded
    once; identical on 54 million test pairs), in about half the time."""
    d = np.square(x, dtype=np.float64) + np.square(y, dtype=np.float64)
    return np.sqrt(d, out=d).astype(np.float32)


def _stop_depth(img, lvl, max_depth, margin, params):
    """Depth (rows) of the field-stop band at the top of ``img``, per column.

    ``img`` (smoothed) and ``lvl`` hold the first ``2 * max_depth`` rows of a side;
    ``margin`` (rows) is the blur of the band's edge.

    A column's dark run starts at row 0 and ends at the first pixel that is
    glass (NaN in ``lvl``) or brighter than ``fov_dark_ratio`` x the ferrule
    level: the 75th percentile of ``lvl`` in the rows from one to two maximum
    depths, median-smoothed along the side (columns without ferrule there take
    the side's median). A run counts only when it ends in a step (its middle
    is darker than ``fov_dark_ratio`` x the ferrule just beyond its blurred
    end), so strong vignetting in the corners is not a field stop. A running
    median over twice ``fov_min_extent_rel`` of the side keeps only runs that
    extend along the side, and caps every column at its neighbours' depth, so
    a dark defect crossing the band is not cut out beyond the band; columns
    dark over the whole strip (where another side's band crosses) take that
    depth.
    """
    from scipy.ndimage import median_filter

    n_rows, n_cols = img.shape
    below = lvl[max_depth : 2 * max_depth]
    # every level is a percentile of these rows, so at most their largest value: where no
    # pixel above them is darker than the ratio x that, no column has a dark run
    # (NaN, the fiber, compares False: never dark)
    if not (np.fmax.reduce(below, axis=None) * params["fov_dark_ratio"] > lvl[:max_depth]).any():
        return np.zeros(n_cols, int)
    k = 2 * int(params["fov_min_extent_rel"] * n_cols) + 1
    strip = np.sort(below, axis=0)  # NaN sorts last
    n_valid = (~np.isnan(strip)).sum(axis=0)
    seen = n_valid > 0
    if not seen.any():
        return np.zeros(n_cols, int)
    q75 = (0.75 * (np.maximum(n_valid, 1) - 1)).astype(int)
    level = np.take_along_axis(strip, q75[None, :], axis=0)[0]
    level[~seen] = median(level[seen])
    level = median_filter(level, size=k, mode="mirror")
    dark = img[:max_depth] < params["fov_dark_ratio"] * level[None, :]
    dark &= ~np.isnan(lvl[:max_depth])  # the fiber is never field stop
    full = dark.all(axis=0)  # no end in the strip: a band along the next side, or shade
    run = np.where(full, 0, np.argmin(dark, axis=0))
    # a field stop ends in a step, vignetting fades: the run's middle (of rows 0 to
    # run - 1; a two-row run's second row is already the blurred edge) must also be
    # darker than fov_dark_ratio x the pixel just beyond the blurred run end
    cols = np.arange(n_cols)
    beyond = img[np.minimum(run + margin, n_rows - 1), cols]
    run[img[np.maximum(run - 1, 0) // 2, cols] >= params["fov_dark_ratio"] * beyond] = 0
    # a stretch of dark runs (with the columns dark all through) shorter than
    # fov_min_extent_rel of the side is a defect or the fiber: the running median below
    # mirrors the side at its ends, which doubles a stretch in a corner
    along = np.flatnonzero(np.diff(np.r_[0, ((run > 0) | full).view(np.int8), 0]))
    for a, b in zip(along[::2], along[1::2]):
        if b - a < params["fov_min_extent_rel"] * n_cols:
            run[a:b] = 0
    if not run.any():  # (and the running median of no run is none)
        return run
    cap = median_filter(run, size=k, mode="mirror")
    return np.where(full, cap, np.minimum(run, cap))


def _zone_bands(shape, geometry, zones_um, um_per_px, ferrule):
    """Zone ids by elliptical distance from the fiber center (see zone_label_map)."""
    h, w = int(shape[0]), int(shape[1])
    if not np.isfinite(geometry["center_x"]):
        return np.full((h, w), ZONE_IDS["ferrule"], np.uint8)
    base = ZONE_IDS["ferrule"] if ferrule else ZONE_IDS["outside"]
    labels = np.full((h, w), base, np.uint8)
    outer_px = [0.5 * zones_um[name][1] / um_per_px for name in GRADED_ZONES]
    e = geometry.get("cladding_ellipticity", 0.0)
    e = float(e) if np.isfinite(e) else 0.0
    reach = outer_px[-1] / math.sqrt(1.0 - e) + 1.0  # farthest labelled pixel
    cx, cy = geometry["center_x"], geometry["center_y"]
    x0, x1 = max(0, math.floor(cx - reach)), min(w, math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(h, math.ceil(cy + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return labels
    d2 = equal_area_radius2(
        np.float32(np.arange(x0, x1) - cx)[None, :],
        np.float32(np.arange(y0, y1) - cy)[:, None],
        e,
        math.radians(geometry.get("cladding_angle_deg", 0.0)),
    )
    r2 = [np.float32(r * r) for r in outer_px]
    band = (d2 >= r2[0]).view(np.uint8)  # number of zone outer radii at or inside the pixel
    for t in r2[1:]:
        band += d2 >= t
    ids = [ZONE_IDS[name] for name in GRADED_ZONES] + [base]
    labels[y0:y1, x0:x1] = lookup(band, ids, np.uint8)
    return labels


def zone_visibility(shape, geometry, zones_um, um_per_px, field=None):
    """Fraction of each IEC zone's annulus that lies inside the image.

    Parameters
    ----------
    shape, geometry, zones_um, um_per_px, field
        As for :func:`zone_label_map` (with ``field``, inside the illuminated field).

    Returns
    -------
    dict of str to float
        Zone name -> visible pixel count / annulus area (clipped to [0, 1]),
        for ``core``, ``cladding``, ``adhesive`` and ``contact``; NaN for every
        zone when no fiber was located (``mode: none``).
    """
    if not np.isfinite(geometry["center_x"]):
        return {name: float("nan") for name in GRADED_ZONES}
    labels = zone_label_map(shape, geometry, zones_um, um_per_px, field=field)
    counts = np.bincount(labels.ravel(), minlength=len(ZONE_IDS))
    out = {}
    for name in GRADED_ZONES:
        r_in, r_out = (0.5 * d / um_per_px for d in zones_um[name])
        area = math.pi * (r_out**2 - r_in**2)
        out[name] = float(min(1.0, counts[ZONE_IDS[name]] / area)) if area > 0 else 1.0
    return out


def equal_area_radius2(dx, dy, e, theta):
    """Squared elliptical distance from the fiber center, in equal-area radius units.

    ``dx`` (columns) and ``dy`` (rows) are offsets from the center, as arrays that
    broadcast (the result has their dtype: float32 grids stay float32). The
    cladding ellipse (ellipticity e = 1 - minor/major, major axis at angle
    theta, radians) maps to the circle of radius ``cladding_radius_px``, so zone
    diameters in µm scale the measured fiber shape (non-square pixels).
    """
    if e == 0.0:
        return dx * dx + dy * dy
    c, s, k = math.cos(theta), math.sin(theta), 1.0 - e
    a = c * c * k + s * s / k
    b = 2 * c * s * (k - 1 / k)
    d = s * s * k + c * c / k
    # a dx^2 + b dx dy + d dy^2 with the full-size passes in place
    out = np.multiply(dx, dy, dtype=np.result_type(dx, dy, b))
    out *= b
    out += a * (dx * dx)
    out += d * (dy * dy)
    return out


def _no_fiber_geometry(um_per_px, assumed_um_per_px):
    """Geometry for ``zones.mode: none``: no circles, the whole frame is one zone.

    With no calibration there is no cladding to derive a scale from, so the
    configured ``frame_um_per_px`` is used and the source says ``assumed``.
    """
    nan = float("nan")
    geo = dict.fromkeys(GEOMETRY_KEYS, nan)
    geo.update(
        dict.fromkeys(FIELD_STOP_KEYS, 0.0),
        core_visible=False,
        confidence=1.0,
        polarity="none",
        um_per_px=float(um_per_px or assumed_um_per_px),
        um_per_px_source="calibration" if um_per_px else "assumed",
    )
    return geo


def _coarse_circle(gray, r_range, core_ratios, params):
    """Coarse center, radius and polarity by gradient voting on a small image.

    Every strong-gradient pixel votes for centers along its gradient line at
    all radii of ``r_range``, toward the darker side (dark disc) and toward the
    brighter side (bright disc); the log image removes multiplicative
    vignetting. A black band along the frame (a straight field stop, a grabber's
    blanking) is filled first (``_without_black_frame``): its long, strong edges
    would take the ``edge_fraction`` of edge pixels from a fainter fiber edge. The
    radius is read from the sector coverage of radially aligned edge pixels around
    the best center: among the concentric edges (core, cladding, fringes) the
    outermost strong one is the cladding.

    A bright disc with black around it (``_black_outside``) may be the scope's
    circular field stop with the fiber inside it (``_fiber_within``); when the fiber
    wins the vote, a stop around it is looked for where black lies well beyond it
    (``_stop_around``). Returns ``(cx, cy, r, polarity, stop)`` in the image's
    pixels, ``stop`` the field stop's ``(cx, cy, r)`` or None.
    """
    h, w = gray.shape
    scale = min(1.0, params["coarse_size_px"] / max(h, w))
    small = cv2.resize(
        gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    small = _without_black_frame(small, params["stop_dark_ratio"], 2)
    log = cv2.GaussianBlur(np.log(small + params["log_offset"]), (0, 0), 1.0)
    gx = cv2.Sobel(log, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(log, cv2.CV_32F, 0, 1, ksize=3)
    mag = _hypot32(gx, gy)
    edges = _strong_edges(gx, gy, mag, params["edge_fraction"])
    radii = np.arange(max(2.0, r_range[0] * scale), r_range[1] * scale + 1.0, dtype=np.float32)
    try:
        cx, cy, (r, polarity, _) = _strongest_circle(*edges, radii, params, core_ratios=core_ratios)
    except ImageRejected:
        # a round field stop wider than any fiber can win the vote with its strong edge and
        # leave a faint fiber's edge out of the strongest edge pixels: vote again without
        # the edges that border black (the stop is looked for on all of them, below)
        black = small < params["stop_dark_ratio"] * float(median(small))
        if not black.any():
            raise
        near = cv2.dilate(black.view(np.uint8), np.ones((7, 7), np.uint8)) > 0
        lit = _strong_edges(gx, gy, np.where(near, np.float32(0), mag), params["edge_fraction"])
        cx, cy, (r, polarity, _) = _strongest_circle(*lit, radii, params, core_ratios=core_ratios)
    inner = _step_inside_line(log, edges, cx, cy, r, radii, params)
    if inner is not None:
        r, polarity = inner
    stop = None
    if polarity == "bright" and _black_outside(small, cx, cy, r, params):
        fiber = _fiber_within((cx, cy, r), log, edges, radii, core_ratios, params)
        if fiber is not None:
            stop, (cx, cy, (r, polarity, _)) = (cx, cy, r), fiber
    else:
        stop = _stop_around((cx, cy, r), small, edges, params)
    to_image = lambda v: (v + 0.5) / scale - 0.5  # noqa: E731  (small -> full pixel centers)
    if stop is not None:
        stop = (to_image(stop[0]), to_image(stop[1]), stop[2] / scale)
    return to_image(cx), to_image(cy), r / scale, polarity, stop


def _step_inside_line(log, edges, cx, cy, r, radii, params):
    """``(radius, polarity)`` of the fiber's step inside a line ring at the coarse edge
    ``r`` (small-image px, around ``(cx, cy)``), or None when that edge is a step.

    A ferrule's bore chamfer shows as a dark or bright line all round, 20-40 µm beyond
    the glass: as long as the glass edge and outermost, it takes the coarse vote. A line
    leaves the same level on both sides (its depth, from the median radial profile of
    the ``log`` image, at least twice the level change across it), the glass edge is a
    step between two materials: the strongest edge (``_radius_at``) inside
    ``line_step_max_ratio`` of ``r`` whose level change is ``line_step_min_change`` or
    more and three times the line's, and whose outer level is the line's inner one
    (within 0.3 of its change: ferrule between them), is the fiber. (A large core's
    step changes the level by a few % only; the dark cladding annulus of a 105/125
    fiber is a line, but the core's step inside it leads down into it.)
    """
    radial = _radial_profile(log, cx, cy, 1.25 * r)
    if radial is None:
        return None
    rho, p = radial
    level = functools.partial(_level_beside, radial)
    reach = 0.06 * r + 2.0
    near = np.nonzero(np.abs(rho - r) <= reach)[0]
    mid = 0.5 * (level(r - reach, -1) + level(r + reach, 1))
    at = float(rho[near[np.argmax(np.abs(p[near] - mid))]])  # the line's extreme
    inside, outside = level(at, -1), level(at, 1)
    ext = float(p[rho == at][0])
    net = abs(outside - inside)
    if min(abs(ext - inside), abs(ext - outside)) < 2.0 * net or (ext - inside) * (ext - outside) <= 0:
        return None
    xs, ys = edges[:2]
    limit = params["line_step_max_ratio"] * r
    within = np.hypot(xs - cx, ys - cy) < limit
    step, _ = _radius_at(xs[within], ys[within], *edges[2:], cx, cy, radii[radii < limit], params)
    if step is None or step[0] < 6.0:
        return None
    beyond = level(step[0], 1)
    change = _step_change(radial, step[0])
    if change < max(params["line_step_min_change"], 3.0 * net) or abs(beyond - inside) > 0.3 * change:
        return None
    return step[0], step[1]


def _radial_profile(img, cx, cy, r_max):
    """``(rho, level)``: the median of ``img`` over 96 rays from ``(cx, cy)`` at radii
    ``rho`` = 0 .. ``r_max`` in 0.5 px steps (rays that leave the frame left out), or
    None when fewer than a quarter of the rays stay in it."""
    rho = np.arange(0.0, r_max, 0.5, dtype=np.float32)
    _, cos, sin = _ray_angles(96)
    mx = (cx + cos[:, None] * rho[None]).astype(np.float32)
    my = (cy + sin[:, None] * rho[None]).astype(np.float32)
    prof = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=np.nan)
    shown = np.isfinite(prof).all(axis=1)
    return (rho, median(prof[shown], axis=0)) if shown.sum() >= 24 else None


def _level_beside(radial, at, side):
    """Median level of a :func:`_radial_profile` 3-6 px beside the radius ``at`` on
    ``side`` (+1 outside, -1 inside)."""
    rho, p = radial
    return float(median(p[(side * (rho - at) >= 3) & (side * (rho - at) <= 6)]))


def _step_change(radial, at):
    """Level change of a :func:`_radial_profile` across the radius ``at``."""
    return abs(_level_beside(radial, at, 1) - _level_beside(radial, at, -1))


def _strong_edges(gx, gy, mag, fraction):
    """``(xs, ys, gx, gy, mag)`` of the ``fraction`` of pixels with the strongest gradient."""
    n_edge = max(1, int(fraction * mag.size))
    thr = np.partition(mag.ravel(), mag.size - n_edge)[mag.size - n_edge]
    ys, xs = np.nonzero(mag > thr)
    return xs, ys, gx, gy, mag


def _without_black_frame(img, ratio, blur_px):
    """``img`` with each black band along a side (rows or columns from the border with
    under 10 % of their pixels at ``ratio`` times the image's median or above, ending
    in a step) and ``blur_px`` beyond it (its blurred edge) filled with the first row
    (column) past them: the band leaves no edge. ``img`` itself when no side starts
    black. A fiber or dark defect at the border leaves its row brighter than that."""
    level = ratio * float(np.median(img[::4, ::4]))
    sides = (img[0], img[-1], img[:, 0], img[:, -1])
    if all(np.count_nonzero(v >= level) >= 0.1 * v.size for v in sides):
        return img  # (the common case, cheaply)
    out = img.copy()
    lit = img >= level
    for axis, view in ((1, out), (0, out.T)):
        black = np.count_nonzero(lit, axis=axis) < 0.1 * img.shape[axis]
        n = len(black)
        if black.all():
            return img
        top = int(np.argmin(black))
        bottom = int(np.argmin(black[::-1]))
        # a band ends in a step: lit at twice the level blur_px past its last black row
        # (vignetting fades out slowly)
        if top and top + blur_px < n and np.median(view[top + blur_px]) >= 2 * level:
            view[: top + blur_px] = view[top + blur_px]
        end = n - bottom - blur_px - 1
        if bottom and end >= 0 and np.median(view[end]) >= 2 * level:
            view[end + 1:] = view[end]
    return out


def _fiber_within(disc, log, edges, radii, core_ratios, params):
    """The fiber inside the bright disc ``(cx, cy, r)`` if the disc is a field stop, else
    None. ``edges``: xs, ys, gx, gy, mag of the small image.

    In a disc of ``stop_min_rel`` of the frame's short side or more (a field stop lights
    most of the frame; a glowing fiber on a black ferrule, whose core may step by tens
    of % too, is a fraction of it), a fiber is a clear step: a circle 10 px or more
    inside the disc's edge whose step changes the ``log`` level by
    ``stop_fiber_min_change`` or more (a core differs from its cladding by a few %,
    glass from a ferrule by tens of %), the strongest of
    the strongest edges within the disc (the stop's black rim, far stronger in the log
    image, takes most of the image's strongest pixels from a faint fiber's edge) or of
    the image's strongest edges there. A fainter circle of those is the fiber when it
    lies within 1/1.5 of the disc's radius (a stop leaves the ferrule around the fiber
    in view; closer concentric edges are the fiber's own, an epoxy band or a core)
    and is no core of it (``_core_of``).
    """
    cx, cy, r = disc
    xs, ys, gx, gy, mag = edges
    lit_field = r >= params["stop_min_rel"] * min(log.shape)  # as wide as a stop's field

    def clear_step(fiber):
        """Whether ``fiber`` is a clear step (its ferrule side read 3-6 px out)."""
        if not lit_field or math.hypot(fiber[0] - cx, fiber[1] - cy) + fiber[2][0] + 10.0 > r:
            return False
        radial = _radial_profile(log, fiber[0], fiber[1], fiber[2][0] + 7.0)
        return radial is not None and _step_change(radial, fiber[2][0]) >= params["stop_fiber_min_change"]

    reach = r * (1 - 3 * params["coarse_radius_rel"]) - 2
    inside = _distance(mag.shape, cx, cy) < reach
    lit = _strong_edges(gx, gy, np.where(inside, mag, np.float32(0)), params["edge_fraction"])
    fiber = _circle_or_none(*lit, radii, params)
    if fiber is not None and clear_step(fiber):
        return fiber
    within = np.hypot(xs - cx, ys - cy) < reach
    fiber = _circle_or_none(xs[within], ys[within], gx, gy, mag, radii, params)
    if fiber is None or clear_step(fiber):
        return fiber
    if fiber[2][0] > r / 1.5 or _core_of(fiber, disc, core_ratios, params):
        return None
    return fiber


def _stop_around(fiber, small, edges, params):
    """A field stop around the fiber circle ``(cx, cy, r)`` of the small image, or None.

    Looked for only where the image beyond 1.5 radii holds black (its 2nd percentile
    below ``stop_dark_ratio`` of its median): the strongest circle of the edges
    there, at any radius up to beyond the frame's corners and covering
    ``min_coverage`` of its part inside the frame, enclosing the fiber, a bright
    disc with black around it (``_black_outside``).
    """
    cx, cy, r = fiber
    far = small[_distance(small.shape, cx, cy) > 1.5 * r]
    if far.size <= 100 or _percentile_reaches(far, 2, params["stop_dark_ratio"] * median(far)):
        return None
    xs, ys = edges[:2]
    beyond = np.hypot(xs - cx, ys - cy) > 1.5 * r
    wide = np.arange(1.5 * r, 0.6 * math.hypot(*small.shape) + 1.0, dtype=np.float32)
    out = _circle_or_none(xs[beyond], ys[beyond], *edges[2:], wide, params, in_frame=True)
    if out is None:
        return None
    sx, sy, (sr, polarity, _) = out
    enclosed = math.hypot(sx - cx, sy - cy) + r < sr
    if polarity == "bright" and enclosed and _black_outside(small, sx, sy, sr, params):
        return sx, sy, sr
    return None


def _percentile_reaches(a, q, level):
    """``np.percentile(a, q) >= level`` for an array ``a`` without NaN, mostly from the two
    order statistics that it interpolates between (NumPy partitions at both at once, several
    times slower than at one and the maximum below it)."""
    i = math.floor((a.size - 1) * (q / 100))
    part = np.partition(a, i + 1)
    if part[i + 1] < level:
        return False
    if part[: i + 1].max() >= level:
        return True
    return bool(np.percentile(a, q) >= level)


def _circle_or_none(xs, ys, gx, gy, mag, radii, params, in_frame=False):
    """``_strongest_circle`` of these edge pixels, or None where it finds none."""
    try:
        return _strongest_circle(xs, ys, gx, gy, mag, radii, params, in_frame)
    except ImageRejected:
        return None


def _strongest_circle(xs, ys, gx, gy, mag, radii, params, in_frame=False, core_ratios=()):
    """Center of the strongest radial symmetry of the edge pixels ``xs, ys`` and its
    cladding edge (``_radius_at``, ``in_frame`` and ``core_ratios`` passed on): ``(cx, cy, (radius,
    polarity, strength))`` in small-image pixels. Raises ``ImageRejected`` when no
    edge covers enough of a circle around it, or when a second, as strong fiber lies
    beside it."""
    if len(xs) < 20:
        raise ImageRejected(NO_FIBER.format(seen="no edges"))
    hs, ws = mag.shape
    m = mag[ys, xs]
    # every third radius votes: the 1.5 px blur below closes the 3 px gaps along the
    # gradient line (at a third of the cost; the fitted circles moved by 0.01 px at most)
    voting = radii[::3]
    # one row of votes per radius: neighbouring edge pixels vote near each other, which
    # the counts' memory favours (the order does not change the counts: float64 sums of
    # a few thousand float32 weights are exact while these span less than 1e5)
    wgt = np.tile(np.sqrt(m).astype(np.float64), len(voting))
    # votes are counted on the image padded by `off` (no vote reaches farther) and
    # those outside the image are dropped: the pixel nearest to each vote, the edge
    # pixel's own index plus or minus the rounded offset along the gradient
    off = int(radii[-1]) + 2
    wp = ws + 2 * off
    step = np.rint(voting[:, None] * (gy[ys, xs] / m)[None, :]).astype(np.int32)
    step *= wp
    step += np.rint(voting[:, None] * (gx[ys, xs] / m)[None, :]).astype(np.int32)
    own = ((ys + off) * wp + xs + off).astype(np.int32)[None, :]
    acc = []
    for vote in (np.subtract, np.add):  # subtract: center toward darker side (dark disc)
        idx = vote(own, step)
        a = np.bincount(idx.ravel(), wgt, minlength=(hs + 2 * off) * wp).reshape(-1, wp)
        a = a[off : off + hs, off : off + ws].astype(np.float32)
        acc.append(cv2.GaussianBlur(a, (0, 0), 1.5))
    acc = np.maximum(acc[0], acc[1])
    peaks = []
    for _ in range(2):
        iy, ix = np.unravel_index(int(np.argmax(acc)), acc.shape)
        peaks.append((float(acc[iy, ix]), float(ix), float(iy)))
        cv2.circle(acc, (int(ix), int(iy)), int(max(2, radii[0])), 0.0, -1)

    first, coverage = _radius_at(xs, ys, gx, gy, mag, peaks[0][1], peaks[0][2], radii, params, in_frame,
                                 core_ratios)
    if first is None:
        seen = (
            f"edges concentric with the strongest center of symmetry cover at most "
            f"{100 * coverage:.0f} % of a circle ({100 * params['min_coverage']:.0f} % needed)"
        )
        raise ImageRejected(NO_FIBER.format(seen=seen))
    # a hot spot's smooth flank is no fiber's edge: beside it, the circle with a step is the
    # fiber, however many votes the hot spot's wide flank gathered
    step = _step_edge(mag, peaks[0][1], peaks[0][2], first[0])
    rival = peaks[1][0] >= params["two_fiber_ratio"] * peaks[0][0]
    if rival or not step:
        second, _ = _radius_at(xs, ys, gx, gy, mag, peaks[1][1], peaks[1][2], radii, params, in_frame,
                               core_ratios)
        dist = math.hypot(peaks[1][1] - peaks[0][1], peaks[1][2] - peaks[0][2])
        if second is not None and dist > 0.9 * (first[0] + second[0]):  # side by side, not nested
            second_step = _step_edge(mag, peaks[1][1], peaks[1][2], second[0])
            if second_step and not step:
                return peaks[1][1], peaks[1][2], second
            if rival and second_step == step and second[2] >= params["two_fiber_ratio"] * first[2]:
                raise ImageRejected("two fibers")
    return peaks[0][1], peaks[0][2], first


def _step_edge(mag, cx, cy, r):
    """Whether the circle ``(cx, cy, r)`` of the gradient magnitude ``mag`` is a step's
    edge: the median gradient over its in-frame part, ring by ring, falls beyond it
    (``max(4, 0.3 r)`` px out) below a quarter of its peak within 1 px of it. A smooth
    bright or dark blob (a hot spot) keeps most of its gradient there."""
    _, cos, sin = _ray_angles(64)

    def ring(rr):
        x, y = cx + rr * cos, cy + rr * sin
        inside = (x >= 0) & (x <= mag.shape[1] - 1) & (y >= 0) & (y <= mag.shape[0] - 1)
        if not inside.any():
            return 0.0
        v = cv2.remap(mag, x[inside].astype(np.float32)[None], y[inside].astype(np.float32)[None],
                      cv2.INTER_LINEAR)
        return float(median(v.ravel()))

    peak = max(ring(r + d) for d in (-1.0, 0.0, 1.0))
    return ring(r + max(4.0, 0.3 * r)) < 0.25 * peak


def _black_outside(small, cx, cy, r, params):
    """Whether the bright disc ``(cx, cy, r)`` of ``small`` has black around it, behind
    a step: along the radius, within the coarse edge's spread, the median of a 1 px
    ring falls below ``stop_dark_ratio`` times that of the ring 6 px further in (a
    field stop, or a very dark ferrule; vignetting fades over tens of pixels), and the
    median of all beyond the spread stays below that ratio of the disc's rim (a dark
    epoxy ring is a step too, with a brighter ferrule past it)."""
    d = _distance(small.shape, cx, cy) - r
    reach = math.ceil(3 * params["coarse_radius_rel"] * r) + 2  # the coarse edge's spread
    near = np.abs(d) < reach + 3.5
    ring, level = np.rint(d[near]).astype(int) + reach + 3, small[near]
    count = np.bincount(ring, minlength=2 * reach + 7)
    profile = np.array([median(level[ring == i]) if n >= 5 else np.nan for i, n in enumerate(count)])
    with np.errstate(invalid="ignore"):
        step = (profile[6:] < params["stop_dark_ratio"] * profile[:-6]).any()
    if not step:
        return False
    # the black holds beyond the edge: a dark epoxy ring around a fiber is a step too,
    # with the ferrule brighter again past it
    beyond = small[d > reach + 3.5]
    rim = level[ring < 3]
    return beyond.size < 20 or rim.size < 5 or median(beyond) < params["stop_dark_ratio"] * median(rim)


def _core_of(fiber, disc, core_ratios, params):
    """Whether the circle ``fiber`` (as ``_strongest_circle`` returns it) may be the
    core of the bright disc ``(cx, cy, r)``: centered within ``coarse_radius_rel`` of
    the disc's radius plus 2 small pixels and within ``type_core_tolerance`` of one of
    the ``core_ratios`` of its radius."""
    fx, fy, (fr, _, _) = fiber
    cx, cy, r = disc
    if math.hypot(fx - cx, fy - cy) > params["coarse_radius_rel"] * r + 2:
        return False
    tol = params["type_core_tolerance"]
    return any(abs(fr / r - q) <= tol * q for q in core_ratios)


def _radius_at(xs, ys, gx, gy, mag, cx, cy, radii, params, in_frame=False, core_ratios=()):
    """Radius and polarity of the cladding edge around a coarse center.

    Returns ``(edge, coverage)``: ``edge`` is ``(radius, polarity, strength)`` in
    small-image pixels, or None when no concentric edge covers ``min_coverage`` of
    the circumference (``in_frame``: of its part inside the frame, at least a
    quarter); ``coverage`` is the largest coverage of any radius. A multimode core's
    step can outshine the cladding's (a glowing core, glass about as bright as the
    ferrule): an edge all round at the radius one of ``core_ratios`` (at most
    ``outshone_core_max_ratio``, beyond an epoxy ring and halo) makes the strongest edge
    its core, within ``type_core_tolerance``, of its polarity (a halo or a dark ring
    around a bright fiber is the opposite step) and at least
    ``outshone_cladding_edge_ratio`` as strong, is the cladding.
    """
    n_sect = 64
    dx, dy = xs - cx, ys - cy
    d = np.hypot(dx, dy)
    ok = d > 1.0
    m = mag[ys, xs]
    cos_a = (gx[ys, xs] * dx + gy[ys, xs] * dy) / (m * np.maximum(d, 1e-6))
    sector = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * n_sect).astype(int) % n_sect
    # radius bins of constant relative width, so an ellipse (non-square pixels)
    # falls in one bin +-1 like a circle does
    step = math.log1p(params["coarse_radius_rel"])
    n_bins = int(math.log(radii[-1] / radii[0]) / step) + 1
    rbin = np.floor(np.log(np.maximum(d, 1e-6) / radii[0]) / step).astype(int)
    ok &= (rbin >= 0) & (rbin < n_bins)
    centers = radii[0] * np.exp((np.arange(n_bins) + 0.5) * step)
    min_cos = math.cos(math.radians(params["coarse_align_deg"]))
    best, seen = [], 0.0
    for polarity, sel in (("dark", cos_a > min_cos), ("bright", cos_a < -min_cos)):
        sel &= ok
        grid = np.zeros((n_bins + 2, n_sect), np.float32)
        # on the flat grid: ufunc.at's fast path for one index array
        np.maximum.at(grid.ravel(), (rbin[sel] + 1) * n_sect + sector[sel], m[sel])
        grid = np.maximum(np.maximum(grid[:-2], grid[1:-1]), grid[2:])  # +-1 bin
        coverage = np.count_nonzero(grid, axis=1) / n_sect
        if in_frame:
            phi = (np.arange(n_sect) + 0.5) * (2 * np.pi / n_sect) - np.pi
            at_x = cx + centers[:, None] * np.cos(phi)[None, :]  # each bin's sector centers
            at_y = cy + centers[:, None] * np.sin(phi)[None, :]
            shown = (at_x >= 0) & (at_x < mag.shape[1]) & (at_y >= 0) & (at_y < mag.shape[0])
            n_shown = shown.sum(axis=1)
            coverage = np.where(n_shown >= n_sect // 4,
                                ((grid > 0) & shown).sum(axis=1) / np.maximum(n_shown, 1), 0.0)
        strength = grid.mean(axis=1)
        seen = max(seen, float(coverage.max()))
        for i in np.nonzero(coverage >= params["min_coverage"])[0]:
            best.append((float(centers[i]), polarity, float(strength[i])))
    if not best:
        return None, seen
    top = max(s for _, _, s in best)
    strong = [b for b in best if b[2] >= params["outer_edge_ratio"] * top]
    outer = max(b[0] for b in strong)
    group = [b for b in strong if b[0] >= outer * (1 - params["edge_group_rel"])]
    edge = max(group, key=lambda b: b[2])
    cladding = [
        b for b in best for q in core_ratios
        if q <= params["outshone_core_max_ratio"]
        and b[1] == edge[1]
        and abs(b[0] * q / edge[0] - 1) <= params["type_core_tolerance"]
        and b[2] >= params["outshone_cladding_edge_ratio"] * top
    ]
    return max(cladding or [edge], key=lambda b: b[2]), seen


def _ellipse_radius(shape, phi):
    """Distance from the center to the ellipse ``(cx, cy, a, b, theta)`` at angles phi."""
    _, _, a, b, th = shape
    return a * b / np.hypot(b * np.cos(phi - th), a * np.sin(phi - th))


def _n_rays(r, fewest, params):
    """Number of rays around a circle of radius ``r`` (px): ``ray_spacing_px`` apart at
    that radius, at least ``fewest`` and at most ``max_rays``."""
    return int(min(max(2 * math.pi * r / params["ray_spacing_px"], fewest), params["max_rays"]))


@functools.lru_cache(maxsize=128)
def _ray_angles(n_rays):
    """Angles of ``n_rays`` rays evenly around the circle, their cosines and sines
    (read-only, shared by every ray search with that many rays)."""
    phi = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)
    out = phi, np.cos(phi), np.sin(phi)
    for a in out:
        a.flags.writeable = False
    return out


def _ray_edges(smooth, shape, sign, half_width, n_rays, offsets=None):
    """Sub-pixel edge radius along rays from the center of an ellipse ``shape``.

    Each ray is sampled at 1 px steps within ``half_width`` of the ellipse (moved
    ``offsets`` px along each ray when given: a window per ray); the
    edge is the peak of the signed central-difference gradient (``sign`` +1:
    brighter outside), refined by a parabola through the peak and its
    neighbours. Returns (angles, radii, strengths, valid, profiles); rays
    leaving the image or peaking at the window's end are invalid.
    """
    h, w = smooth.shape
    cx, cy = shape[0], shape[1]
    phi, cos, sin = _ray_angles(n_rays)
    steps = np.arange(-half_width, half_width + 1, dtype=np.float64)
    rr = _ellipse_radius(shape, phi)[:, None] + steps[None, :]
    if offsets is not None:
        rr += offsets[:, None]
    mx = (cx + rr * cos[:, None]).astype(np.float32)
    my = (cy + rr * sin[:, None]).astype(np.float32)
    inside = ((mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)).all(axis=1)
    prof = cv2.remap(smooth, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grad = sign * (prof[:, 2:] - prof[:, :-2]) * 0.5
    k = np.argmax(grad, axis=1)
    row = np.arange(n_rays)
    kc = np.minimum(np.maximum(k, 1), grad.shape[1] - 2)
    g0, g1, g2 = grad[row, kc - 1], grad[row, kc], grad[row, kc + 1]
    curv = g0 - 2 * g1 + g2
    delta = np.where(curv < 0, 0.5 * (g0 - g2) / np.where(curv < 0, curv, -1.0), 0.0)
    radius = rr[row, kc + 1] + np.minimum(np.maximum(delta, -0.5), 0.5)
    valid = inside & (k == kc) & (g1 > 0)
    return phi, radius, g1, valid, prof


def _ray_points(smooth, shape, sign, half, n_rays, params, offsets=None):
    """Edge points (N x 2) on ``n_rays`` rays around the ellipse ``shape``
    (:func:`_ray_edges`, window ``half`` px, moved by ``offsets``), their radii and
    expected scatter (:func:`_edge_spread`); maxima weaker than ``min_edge_ratio`` of
    the median are noise or a gap in the edge, not the edge itself, and left out.
    None when fewer than 12 rays hold an edge."""
    phi, rad, strength, valid, prof = _ray_edges(smooth, shape, sign, half, n_rays, offsets)
    if valid.sum() < 12:
        return None
    spread = _edge_spread(prof, strength, valid, sign)
    valid &= strength >= params["min_edge_ratio"] * median(strength[valid])
    phi, rad, spread = phi[valid], rad[valid], spread[valid]
    return np.column_stack([shape[0] + rad * np.cos(phi), shape[1] + rad * np.sin(phi)]), rad, spread


def _edge_spread(prof, strength, valid, sign):
    """Expected location error (px) of each ray's edge point from its edge SNR
    (:func:`_ray_edges` outputs), to first order: noise n on the profile moves the
    parabola's vertex by 0.5 (n0 - n2) / curvature. The noise of g0 - g2 is read
    robustly off the differences of neighbouring rays (which cross the edge alike)
    within 6 px of the window's centre; the curvature of a blurred step of gradient
    peak g1 is g1 / s^2, its width s (at least 1 px) = step / (g1 sqrt(2 pi))
    (medians over up to 128 rays). Invalid rays get inf.
    """
    n_rays, n_steps = prof.shape
    spread = np.full(n_rays, np.inf)
    rows = np.arange(0, n_rays, max(1, n_rays // 128))
    rows = rows[valid[rows] & valid[(rows + 1) % n_rays]]
    if not len(rows):
        return spread
    mid = n_steps // 2
    near = prof[:, max(0, mid - 8) : mid + 9]
    near = near[rows] - near[(rows + 1) % n_rays]
    d2 = near[:, 2:-2] - 0.5 * (near[:, :-4] + near[:, 4:])  # of g0 - g2
    noise = 1.4826 * median(np.abs(d2)) / math.sqrt(2)
    step = median(sign * (prof[rows, -1] - prof[rows, 0]))
    width = max(1.0, step / (median(strength[rows]) * math.sqrt(2 * math.pi)))
    spread[valid] = 0.5 * noise * width**2 / strength[valid]
    return spread


def _robust_ellipse(pts, rad, tol, iterations, circle=False):
    """Ellipse fit with iterative rejection of outlying edge points.

    Starts from the points whose radius is near the median (so chips and dirt
    off the edge do not seed the fit), then alternates a direct least-squares
    ellipse fit (``circle``: a least-squares circle, ``skimage.measure.CircleModel``)
    and rejection beyond ``max(tol, 3 robust sigma)``, at most
    ``iterations`` times, until the kept points no longer change.
    Returns (ellipse ``(cx, cy, a, b, theta)``, inlier mask) or (None, None).
    """
    dev = np.abs(rad - median(rad))
    keep = dev <= max(tol, 3.0 * 1.4826 * median(dev))
    shape = None
    origin = pts.mean(axis=0)  # float32 fit on centered points keeps 1e-4 px precision
    local = (pts - origin).astype(np.float32)
    if circle:
        from skimage.measure import CircleModel
    for _ in range(iterations):
        if keep.sum() < 12:
            return None, None
        if circle:
            model = CircleModel.from_estimate(local[keep].astype(np.float64))
            if not model:
                return None, None
            (ex, ey), w = model.center, 2.0 * model.radius
            h, angle = w, 0.0
        else:
            (ex, ey), (w, h), angle = cv2.fitEllipseDirect(local[keep])
        if not (all(map(math.isfinite, (ex, ey, w, h, angle))) and w > 0 and h > 0):
            return None, None
        shape = (ex + origin[0], ey + origin[1], 0.5 * w, 0.5 * h, math.radians(angle))
        res = np.abs(_radial_residuals(shape, pts))
        kept, keep = keep, res <= max(tol, 3.0 * 1.4826 * median(res[keep]))
        if np.array_equal(kept, keep):  # the same points: the same fit again
            break
    return shape, keep


def _radial_residuals(shape, pts):
    """Signed distance of points from an ellipse ``(cx, cy, a, b, theta)`` along rays
    from its center.

    Equals the orthogonal distance to first order in the ellipticity, and is
    vectorized.
    """
    dx, dy = pts[:, 0] - shape[0], pts[:, 1] - shape[1]
    return np.hypot(dx, dy) - _ellipse_radius(shape, np.arctan2(dy, dx))


def _half_width(r, rel, params):
    """Ray search half-width (px): ``rel`` of the radius, at least ``search_min_px``."""
    return int(math.ceil(max(params["search_min_px"], rel * r)))


def _fit_edge(smooth, shape, sign, half, params, two_edges=False, circle=False, cladding=True,
              offsets=None):
    """Sub-pixel edge points around an ellipse guess and their robust fit.

    Returns a dict with the fitted ellipse ``shape``, equal-area radius ``r``,
    ellipticity, major-axis angle, RMS residual, its ``excess`` over the edge
    points' expected scatter (``edge_spread_factor`` x :func:`_edge_spread`) and
    inlier fraction (of all rays); None when too few edge points remain or the
    fit is more elliptical than ``max_ellipticity``. ``two_edges``: a fit below
    ``min_confidence`` may be one of two concentric edges (:func:`_one_of_two_edges`).
    ``circle``: a circle is fitted instead of an ellipse; ``cladding``: an oblique
    ellipse (:func:`_oblique`) is refitted as a circle (a core may be one).
    ``offsets``: each ray's window moved by that many px (one per ray of ``shape``).
    """
    r = math.sqrt(shape[2] * shape[3])
    n_rays = _n_rays(r, 90, params)
    found = _ray_points(smooth, shape, sign, half, n_rays, params, offsets)
    if found is None:
        return None
    pts, rad, spread = found
    tol = max(params["inlier_px"], params["inlier_rel"] * r)
    fitted, inl = _robust_ellipse(pts, rad, tol, params["fit_iterations"], circle)
    if fitted is not None and cladding and not circle and _oblique(fitted, params):
        fitted, inl = _robust_ellipse(pts, rad, tol, params["fit_iterations"], True)
    if fitted is None:
        return None
    if _ellipticity(fitted) > params["max_ellipticity"]:
        return None
    res = _radial_residuals(fitted, pts[inl])
    fit = _edge_fit_dict(fitted, res, spread[inl], inl.sum() / n_rays, params)
    if two_edges and _confidence(fit, params) < params["min_confidence"]:
        fit = _one_of_two_edges(pts, spread, fitted, inl, tol, n_rays, params) or fit
    return fit


def _oblique(shape, params):
    """Whether the ellipse ``shape`` is more elliptical than ``oblique_max_ellipticity``
    with its axes more than ``oblique_axis_tol_deg`` off the pixel axes: no fiber looks
    so (a cladding's non-circularity and an angled polish seen head-on stay under 2 %;
    non-square pixels stretch along a pixel axis), the points of a crossing scratch,
    dirt or a halo pulled it."""
    off = abs((math.degrees(shape[4]) + 45.0) % 90.0 - 45.0)
    return _ellipticity(shape) > params["oblique_max_ellipticity"] and off > params["oblique_axis_tol_deg"]


def _ellipticity(shape):
    """1 - minor / major of an ellipse ``(cx, cy, a, b, theta)``."""
    return 1.0 - min(shape[2], shape[3]) / max(shape[2], shape[3])


def _edge_fit_dict(fitted, res, spread, inlier_frac, params):
    """The :func:`_fit_edge` result of an ellipse ``fitted`` to edge points with radial
    residuals ``res`` and expected scatter ``spread``."""
    ex, ey, a, b, th = (float(v) for v in fitted)
    angle = th if a >= b else th + math.pi / 2
    return {
        "shape": (ex, ey, a, b, th),
        "cx": ex,
        "cy": ey,
        "r": math.sqrt(a * b),
        "ellipticity": _ellipticity(fitted),
        "angle_deg": math.degrees(angle) % 180.0,
        "residual": float(np.sqrt(np.mean(res**2))),
        # the part of the residual that the edge points' SNR does not explain
        "excess": float(
            np.sqrt(max(0.0, np.mean(res**2 - (params["edge_spread_factor"] * spread) ** 2)))
        ),
        "inlier_frac": float(inlier_frac),
    }


def _one_of_two_edges(pts, spread, fitted, inl, tol, n_rays, params):
    """The fit of one of two concentric edges that a poor fit's points straddle.

    A bevel rim or a ring beside the glass edge gives two steps of the same sign a few
    px apart; when their strengths cross around the fiber (vignetting), the rays pick
    one or the other and a single ellipse runs between them, a residual no edge noise
    explains. When the fit's inliers cover ``two_edge_min_support`` of the rays (an edge
    all around, not edges on no circle) and their residuals split into two groups (the
    best threshold between them), each of at least ``two_edge_min_share`` of the points
    and each on a concentric ellipse (centres within ``inlier_px``, points within
    ``inlier_px`` RMS of it) at least ``two_edge_min_gap_px`` apart, the outer group is
    fitted alone (a bevel rim's outer step ends the glass; an epoxy ring's outer step is
    moved in later, as on any fit, by ``_epoxy_shift``); the inner one supports the same
    centre, so both count as inliers. None otherwise."""
    if inl.sum() < params["two_edge_min_support"] * n_rays:
        return None
    res = _radial_residuals(fitted, pts)
    order = np.sort(res[inl])
    n = order.size
    share = params["two_edge_min_share"]
    lo, hi = max(int(share * n), 1), min(int((1 - share) * n), n - 1)
    if hi <= lo:
        return None
    # the threshold of the largest between-group variance (Otsu on the residuals)
    k = np.arange(lo, hi + 1)
    csum = np.cumsum(order)
    m_in, m_out = csum[k - 1] / k, (csum[-1] - csum[k - 1]) / (n - k)
    cut = order[k[np.argmax(k * (n - k) * (m_out - m_in) ** 2)] - 1]
    groups = [inl & (res <= cut), inl & (res > cut)]
    fits, res_g = _concentric_fits(pts, groups, fitted, tol, params)
    if not fits:
        return None
    (inner, _), (outer, _) = fits
    if math.sqrt(outer[2] * outer[3]) - math.sqrt(inner[2] * inner[3]) < params["two_edge_min_gap_px"]:
        return None
    support = sum(int(keep.sum()) for _, keep in fits)
    return _edge_fit_dict(outer, res_g[1], spread[groups[1]][fits[1][1]], support / n_rays, params)


def _group_fit(pts, shape, tol, params):
    """``_robust_ellipse`` of edge points ``pts``, their radii taken from the centre of
    ``shape``."""
    return _robust_ellipse(pts, np.hypot(*(pts - shape[:2]).T), tol, params["fit_iterations"])


def _concentric_fits(pts, groups, shape, tol, params, centre_tol=None):
    """Robust ellipse fits (``_robust_ellipse``, radii from the centre of ``shape``) of
    each group (bool masks) of edge points ``pts`` and their inliers' radial residuals:
    ``([(ellipse, inliers), ...], [residuals, ...])``, or ``(None, None)`` unless every
    fit is an ellipse within ``max_ellipticity``, their centres lie within
    ``centre_tol`` px (default ``inlier_px``) of each other and each group within
    ``inlier_px`` RMS of its own fit (one edge's concentric steps)."""
    fits = [_group_fit(pts[g], shape, tol, params) for g in groups]
    if any(f is None or _ellipticity(f) > params["max_ellipticity"] for f, _ in fits):
        return None, None
    res_g = [_radial_residuals(f, pts[g][keep]) for (f, keep), g in zip(fits, groups)]
    (a, _), (b, _) = fits
    if (math.hypot(a[0] - b[0], a[1] - b[1]) > (centre_tol or params["inlier_px"])
            or max(np.sqrt(np.mean(x**2)) for x in res_g) > params["inlier_px"]):
        return None, None
    return fits, res_g


def _glass_inside_broken_ring(smooth, fit, sign, gap, band, params, close=False):
    """The glass edge of a dark fiber whose edge a broken dark ring partly covers.

    A ring as dark as the glass or darker (epoxy, a tilt shadow) hides the glass edge
    where it lies, and rays there find its outer step; in its gaps they find the glass
    edge, up to ``band`` px further in (a broken ring's dashes can outnumber its gaps, so
    the fit may be either edge, or lie between the two). The points of rays searched
    ``band`` px either side of ``fit`` are grouped two ways: on ``fit`` and on one
    concentric ellipse more than ``gap`` px (wider than a bevel rim, whose outer step
    ends the glass) and up to ``band`` px inside or outside it; and split between two
    concentric edges (:func:`_split_concentric`). When each group holds at least
    ``two_edge_min_share`` of the points, together ``two_edge_min_support`` of the rays,
    each within ``inlier_px`` RMS of its own fit and the two centres within twice
    ``inlier_px`` (a ring's outer edge wanders where its width varies around the fiber),
    the inner group's fit is the glass edge, supported by both. None otherwise.
    ``close`` (for a fit about to be rejected): the two edges may lie closer than a bevel
    line and their centres as far apart as the ring is wide (a broken ring off centre in
    the bore), but are told apart only as sharp circles, each group within an eighth of
    their separation RMS (eleventh, eighth and ninth renderers: 15 of 50 rejected fibers
    accepted, 11 within 1 %, 3 within 2.4 %, one +19 % on a fillet's two edges).
    """
    r = fit["r"]
    n_rays = _n_rays(r, 90, params)
    tol = max(params["inlier_px"], params["inlier_rel"] * r)
    found = _ray_points(smooth, fit["shape"], sign, int(math.ceil(band + tol)) + 1, n_rays, params)
    if found is None:
        return None
    pts, _, spread = found
    res = _radial_residuals(fit["shape"], pts)
    inside, outside = (res < -gap) & (res >= -band - tol), (res > gap) & (res <= band + tol)
    for split in (False, True):  # (the split only when the first grouping fails)
        groups = (_split_concentric(pts, res, fit["shape"], tol, band + tol, params) if split
                  else [np.abs(res) <= tol, inside if inside.sum() >= outside.sum() else outside])
        if groups is None:
            continue
        n = sum(int(g.sum()) for g in groups)
        if (n < params["two_edge_min_support"] * n_rays
                or min(g.sum() for g in groups) < params["two_edge_min_share"] * n):
            continue
        # (a ring's outer edge wanders where its width varies around the fiber)
        fits, res_g = _concentric_fits(pts, groups, fit["shape"], tol, params,
                                       centre_tol=band + tol if close else 2.0 * params["inlier_px"])
        if not fits:
            continue
        radii = [math.sqrt(f[2] * f[3]) for f, _ in fits]
        if not gap < abs(radii[0] - radii[1]) <= band + tol:
            continue
        if close and max(np.sqrt(np.mean(x**2)) for x in res_g) > abs(radii[0] - radii[1]) / 8:
            continue
        glass = int(radii[1] < radii[0])
        support = sum(int(keep.sum()) for _, keep in fits)
        (shape, keep), inliers = fits[glass], groups[glass]
        return _edge_fit_dict(shape, res_g[glass], spread[inliers][keep], support / n_rays, params)
    return None


def _split_concentric(pts, res, shape, tol, reach, params):
    """Edge points within ``reach`` px of the ellipse ``shape`` (their radial residuals
    ``res``) split between two concentric edges: starting inside / outside it, each
    point goes to the nearer of the two groups' robust fits until none moves (at most
    ten times: a start far between the edges took six). A fit between two edges (rays
    taking a ring's outer step where it is the stronger, at a broken ring's dashes or
    an uneven ring's wide parts, and the glass edge elsewhere) lies on neither. Returns
    the two groups (bool masks), or None when a group is too small to fit."""
    near = np.abs(res) <= reach
    outer = res > 0
    for _ in range(10):
        fits = []
        for g in (near & ~outer, near & outer):
            if g.sum() < 12:
                return None
            f, _ = _group_fit(pts[g], shape, tol, params)
            if f is None:
                return None
            fits.append(f)
        moved = np.abs(_radial_residuals(fits[1], pts)) < np.abs(_radial_residuals(fits[0], pts))
        if np.array_equal(moved[near], outer[near]):
            break
        outer = moved
    return [near & ~outer, near & outer]


def _settled_fit(smooth, shape, sign, half, params, circle=False, cladding=True):
    """``_fit_edge`` (of a ``circle``, of the ``cladding``) repeated around its previous
    fit (from ``shape``) until the center and the equal-area radius move less than
    0.5 px, at most ``search_passes`` times: a guess off the edge leaves part of it
    outside the search window. The last fit, or None when the first one fails."""
    fit = None
    for _ in range(params["search_passes"]):
        again = _fit_edge(smooth, shape, sign, half, params, circle=circle, cladding=cladding)
        if again is None:
            break
        x, y, a, b = shape[:4]
        fit, shape = again, again["shape"]
        if math.hypot(fit["cx"] - x, fit["cy"] - y) < 0.5 and abs(fit["r"] - math.sqrt(a * b)) < 0.5:
            break
    return fit


def _fit_cladding(smooth, coarse, polarity, clad_r_um, um_per_px, band_um, params, two_edges=False):
    """Sub-pixel cladding ellipse from the coarse circle ``(cx, cy, r)``.

    Wide ray searches until the center settles, a narrow refining search, the
    outer step of a rim when the edge is a staircase (:func:`_rim_outer_step`), then
    where the edge shows no diffraction fringe, the glass edge inside an epoxy ring
    when there is one (inside a crescent of varying width when the concentric refit
    fails, :func:`_glass_inside_crescent`), else outside a bevel line (lobe fit);
    under a fringe all around the edge, outside a bevel line (odd-part fit). A ring
    is looked for up to ``epoxy_max_um`` inside the edge of a dark fiber, ``band_um``
    of a bright one (whose large core's step falls outward like the ring's two).
    ``two_edges``: the refining fit may take the outer of two concentric edges
    (``_fit_edge``).
    """
    cx, cy, r = coarse
    sign = 1.0 if polarity == "dark" else -1.0
    # the coarse center of an ellipse (non-square pixels) can be off by a few % of
    # the radius: search widely around successive fits until the center settles
    half = _half_width(r, params["search_rel"], params)
    clad = _settled_fit(smooth, (cx, cy, r, r, 0.0), sign, half, params)
    if clad is None:
        raise ImageRejected(NO_FIBER.format(seen="no edge to fit along rays across the circle"))
    clad = (
        _fit_edge(smooth, clad["shape"], sign, _half_width(r, params["refine_rel"], params), params,
                  two_edges)
        or clad
    )
    upp_guess = um_per_px or clad_r_um / clad["r"]
    band = (params["epoxy_max_um"] if polarity == "dark" else band_um) / upp_guess
    bevel = params["bevel_max_um"] / upp_guess
    # profiles aligned on each ray's own edge point, so that a wavy edge does not
    # pass for texture
    steps = np.arange(-2.0 * band, band + 3.0, 0.5)
    prof = _aligned_profiles(smooth, clad, sign, steps, params)
    rim = _rim_outer_step(smooth, clad, sign, prof, steps, bevel, params)
    if rim is not clad:
        clad, prof = rim, _aligned_profiles(smooth, rim, sign, steps, params)
    ring = _epoxy_shift(prof, steps, sign, band, params["epoxy_min_um"] / upp_guess, params)
    if ring is None:  # a fringe: the glass edge, unless a bevel line pushed it out
        reach = params["halo_reach_um"] / upp_guess
        if not _fringe_all_around(prof, steps, sign, band, reach, params):
            return clad
        x0 = _fringe_line(smooth, clad, sign, params["bevel_max_um"] / upp_guess, params)
        return clad if x0 is None else _grown(clad, x0)
    shift, glass_sign = ring
    if not shift:
        # the glass ends at the outer flank of a dark bevel line just inside its edge
        lobes = _edge_lobes(smooth, clad, sign, params["bevel_max_um"] / upp_guess, params)
        return _grown(clad, lobes[0]) if lobes else clad
    # a resolved ring's lobes fix the blur width themselves; a narrow one's do not
    lobes = _edge_lobes(smooth, clad, sign, shift, params, free_width=True) or _edge_lobes(
        smooth, clad, sign, shift, params
    )
    if lobes is not None and lobes[0] - lobes[1] < 4.0 * lobes[2]:  # lobes overlap
        return _grown(clad, lobes[1])
    inner = _grown(clad, -shift)
    # a window that stays clear of the ring's outer edge
    half = int(np.clip(math.ceil(0.6 * shift), 3, params["search_min_px"]))
    refit = glass_sign and _fit_edge(smooth, inner["shape"], glass_sign, half, params)
    if glass_sign and (not refit or _confidence(refit, params) < params["min_confidence"]):
        refit = _glass_inside_crescent(smooth, clad, sign, glass_sign, shift, band, params)
    # a faint glass-to-ring step refits weakly on rays: the ring, found on the median
    # profile, still places the glass edge
    if not refit:
        return inner
    return refit if _confidence(refit, params) >= params["min_confidence"] else inner


def _sharper_glass_inside(smooth, fit, sign, k, band, params):
    """``fit`` (residuals in image px, the crop ``k`` times finer; ``sign`` of its step, +1
    brighter outside: a dark fiber), or the glass edge inside it, darker outside
    (:func:`_glass_inside_crescent`, up to ``band`` px in) when
    ``fit`` wanders by ``ring_outer_min_residual_px`` RMS or more and that edge fits
    within ``ring_inner_residual_share`` of its residual, confidently: an epoxy ring's
    outer edge wanders with the ring's width, the polished glass is the sharper circle."""
    if fit["residual"] < params["ring_outer_min_residual_px"]:
        return fit
    inner = _glass_inside_crescent(smooth, fit, sign, -1.0, 0.5 * band, band, params, centred=True)
    if inner is None:
        return fit
    inner = _in_image_px(inner, k)
    if inner["residual"] > params["ring_inner_residual_share"] * fit["residual"]:
        return fit
    return inner if _confidence(inner, params) >= params["min_confidence"] else fit


def _in_image_px(fit, k):
    """``fit`` with its residuals in the image's pixels (the crop's over ``k``)."""
    return {**fit, "residual": fit["residual"] / k, "excess": fit["excess"] / k}


def _glass_inside_crescent(smooth, outer, sign, glass_sign, shift, band, params, centred=False):
    """The glass edge inside an epoxy ring whose width varies around the fiber.

    A fiber off centre in its bore sits in a crescent of epoxy, between no width and
    twice its median width ``shift`` (px) around it: no window around one circle holds
    the glass edge on every ray. Here each ray searches, for the strongest
    ``glass_sign`` step (glass to ring), from 1 px to ``2 shift + 2`` px (at most
    ``band``) inside its own outer edge point (``sign``, the ring to the ferrule).
    The :func:`_fit_edge` result when its centre is more than ``inlier_px`` off the
    outer edge's (a concentric ring's glass edge is the narrow refit's, whose window
    holds fewer other steps), else None. ``centred`` (for a fit about to be rejected:
    its rays on a ring's outer edge, which wanders with the ring's width and so lies
    on no circle): the fit wherever its centre lies, moved out to the bottom of the
    valley just outside it when there is one (a glass darkening into its rolled edge
    ends there, where the flat ring begins).
    """
    phi, at = _edge_points(smooth, outer, sign, params)
    half = int(math.ceil(0.5 * min(2.0 * shift + 2.0, band)))
    offsets = at - _ellipse_radius(outer["shape"], phi) - (half + 1)
    fit = _fit_edge(smooth, outer["shape"], glass_sign, half, params, offsets=offsets)
    off_centre = fit and math.hypot(fit["cx"] - outer["cx"], fit["cy"] - outer["cy"])
    if fit and centred:
        # the glass darkens into its rolled edge: it ends at the bottom of the valley
        # between its step and the ring's outer one, where the ring, flat, begins
        steps = np.arange(0.0, half + 0.5, 0.5)
        level = median(_aligned_profiles(smooth, fit, glass_sign, steps, params), axis=0)
        v = glass_sign * level
        j = int(np.argmax(v))
        return _grown(fit, _vertex(steps, v, j, 0.5)) if 0 < j < steps.size - 1 else fit
    return fit if off_centre and off_centre > params["inlier_px"] else None


def _inside_band(smooth, fit, polarity, clad_r_um, um_per_px, band_um, params):
    """``fit`` moved to the inner step of an epoxy band just outside the glass, if one shows.

    Epoxy reflects more than glass and less than zirconia, and often lies in shadow: a
    ring darker than the brighter side (a valley or a step between the glass and
    the ferrule level, on a dark fiber or a bright one) can make the edge two steps
    whose outer one is the strongest, and texture alone does not tell a smooth ring
    from glass. Two blurred steps (:func:`_two_steps`) are fitted to the
    median edge-aligned profile; when the fitted edge is the outer step, the band
    between them is wider than a bevel line (``bevel_max_um``, with 0.5 px for the
    fit's scatter) and within ``band_um``, its level differs from the glass's and the
    outside's by ``band_level_share`` of the whole step (on a bright fiber it lies at
    least ``epoxy_level_share`` of the step below the glass: a shoulder just under the
    glass level is the glass's bevel), the glass beyond ``band_um`` is
    flat (varying by under a quarter of the band's depth: a large core's soft edge,
    reaching into the narrow cladding annulus, is not), and two steps explain the
    profile 5x better than one, the glass ends at the inner step. A bright diffraction
    fringe outside the edge (coaxial scopes) marks the fitted edge as the glass edge.
    """
    sign = 1.0 if polarity == "dark" else -1.0
    upp = um_per_px or clad_r_um / fit["r"]
    band, bevel = band_um / upp, params["bevel_max_um"] / upp
    steps = np.arange(-math.ceil(band) - 4.0, math.ceil(band) + 6.0, 0.5)
    level = _edge_level(smooth, fit, sign, steps, params)
    far = steps >= steps[-1] - 3.0
    fringe = _fringe_shares(level[None], steps, sign, far, params["halo_reach_um"] / upp)[0]
    v = sign * level  # the outside is high
    beyond = v[steps <= -band]  # the glass inside the band's reach
    glass, outside = float(median(beyond)), float(median(v[far]))
    # the band's side of the edge, past the fitted step's own blurred flank (2 px)
    inner = (steps > -band) & (steps < -min(bevel, 2.0))
    if not inner.any() or np.abs(v[inner] - glass).max() < params["band_level_share"] * abs(
        outside - glass
    ):
        return fit
    # under a fringe, a band no wider than any bevel line is the glass's own staircase
    if fringe >= params["halo_min_share"]:
        bevel = max(bevel, params["smooth_ring_min_um"] / upp)
    (g, b, f), (e0, e1), gain = _two_steps(v, steps, band)
    distinct = min(abs(b - g), abs(f - b)) >= params["band_level_share"] * abs(f - g)
    if sign < 0:  # epoxy is dark: a band on a bright fiber barely below it is glass (a bevel)
        distinct = distinct and abs(b - g) >= params["epoxy_level_share"] * abs(f - g)
    # the glass inside the band is flat (a large core's soft edge keeps rising there)
    flat = np.ptp(beyond) < 0.25 * abs(b - g)
    if (
        flat
        and abs(e1) <= 1.5
        and -band <= e0 <= -0.5
        and e1 - e0 - 0.5 > bevel
        and distinct
        and sign * b < max(sign * g, sign * f)
        and gain >= 5.0
    ):
        return _grown(fit, e0)
    return fit


def _core_ratio_edge(smooth, fit, r_core, polarity, params):
    """``fit`` moved to the other step of a staircase edge where its core puts the glass edge.

    A multimode fiber's core and cladding are made to a fixed diameter ratio, so a
    core measured to a fraction of a pixel says where the glass ends (``r_core``: the
    core's radius over the type's ratio). When the edge is a staircase of two steps
    (a bevel rim inside the glass edge, a smooth band outside it), the fits above
    choose one by the band's look alone; the core picks the other when the fitted
    edge is more than ``core_ratio_tolerance`` off ``r_core`` and the other step lies
    within half of that from it: a peak of the signed gradient of the median
    edge-aligned profile at least ``core_ratio_step_share`` of the strongest one
    between them (``core_ratio_weak_share`` where the two disagree by more than
    ``core_ratio_weak_tolerance``), the band between the steps lying between the glass
    and the outside levels (to a tenth of the whole step). A ring beyond the glass's
    level, away from the outside's (epoxy darker than a dark fiber, a fringe brighter
    than a bright one), lies outside the glass: an edge fitted at its outer edge moves
    inward to its inner flank (the peak of the negated gradient; a thin ring passes for
    a bevel line in the fits above), never outward across it. Real cores differ from
    their nominal ratio by several % (``type_core_tolerance``), so only a strong step is
    taken.
    """
    tol = params["core_ratio_tolerance"]
    target = r_core - fit["r"]
    if abs(target) <= tol * r_core:
        return fit
    sign = 1.0 if polarity == "dark" else -1.0
    lo, hi = min(0.0, target), max(0.0, target)
    steps = np.arange(lo - 4.0, hi + 4.01, 0.25)
    level = median(_aligned_profiles(smooth, fit, sign, steps, params), axis=0)
    grad = sign * np.gradient(level, steps)
    glass = float(median(level[(steps >= lo - 4.0) & (steps <= lo - 2.0)]))
    outside = float(median(level[steps >= hi + 2.0]))
    step = sign * (outside - glass)
    band = sign * (level[(steps >= lo) & (steps <= hi)] - glass)
    if step <= 0 or band.max() > 1.1 * step:
        return fit
    if band.min() < -0.1 * step:
        # a ring beyond the glass's level, away from the outside's (a dark fiber's epoxy,
        # a bright fiber's fringe), lies outside the glass: its outer edge is no glass
        # edge, and the glass ends at its inner flank (a thin ring taken for a bevel line)
        if target >= 0:
            return fit
        grad = -grad
    inner = np.arange(1, len(steps) - 1)
    peaks = inner[(grad[1:-1] >= grad[:-2]) & (grad[1:-1] >= grad[2:])]
    peaks = peaks[np.abs(steps[peaks] - target) <= 0.5 * tol * r_core]
    # a weaker step where the core disagrees with the fitted edge by more
    weak = abs(target) > params["core_ratio_weak_tolerance"] * r_core
    share = params["core_ratio_weak_share"] if weak else params["core_ratio_step_share"]
    peaks = peaks[grad[peaks] >= share * grad.max()]
    if not len(peaks):
        return fit
    return _grown(fit, _vertex(steps, grad, int(peaks[np.argmax(grad[peaks])]), 0.25))


def _two_steps(v, x, reach, widths=(0.7, 1.0, 1.4, 2.0, 2.8, 4.0)):
    """Best fit of two blurred steps to the profile ``v`` at ``x``.

    The model is ``g`` up to ``e0``, ``b`` up to ``e1``, ``f`` beyond, each step an
    erf of one of ``widths`` (px); one step lies within 1.5 px of 0 (the fitted edge),
    the other within ``reach`` px. The levels are solved linearly for every pair of
    step positions on a 0.5 px grid (variable projection), then on a 0.1 px grid
    around the best pair.

    Returns
    -------
    (g, b, f), (e0, e1), gain
        Levels, step positions (px) and how many times smaller the residual is than
        that of the best single step.
    """
    centers = np.arange(-math.ceil(reach), math.ceil(reach) + 0.5, 0.5)
    near = np.nonzero(np.abs(centers) <= 1.5)[0]
    i, j = np.meshgrid(np.arange(len(centers)), near, indexing="ij")
    pairs = np.r_[np.c_[i.ravel(), j.ravel()], np.c_[j.ravel(), i.ravel()]]
    pairs = pairs[centers[pairs[:, 0]] < centers[pairs[:, 1]]]
    (_, _, (e0, e1), width), single = _best_step_pair(v, x, centers, pairs, widths)
    fine = np.arange(-0.5, 0.51, 0.1)
    centers = np.r_[e0 + fine, e1 + fine]
    i, j = np.meshgrid(np.arange(len(fine)), len(fine) + np.arange(len(fine)), indexing="ij")
    pairs = np.c_[i.ravel(), j.ravel()]
    scales = np.array([0.8, 0.9, 1.0, 1.12, 1.25])
    (rss, (g, d0, d1), (e0, e1), _), _ = _best_step_pair(v, x, centers, pairs, width * scales)
    return (float(g), float(g + d0), float(g + d0 + d1)), (float(e0), float(e1)), single / max(rss, 1e-12)


def _best_step_pair(v, x, centers, pairs, widths):
    """The pair of step ``centers`` (rows of ``pairs``) and blur of ``widths`` whose
    two-step model fits ``v`` best: ``(rss, levels, (e0, e1), width)``, and the least
    single-step residual over those widths."""
    best, single = (np.inf, None, None, None), np.inf
    for width in widths:
        rss, c, rss1 = _step_pairs_rss(v, x, centers, pairs, width)
        single = min(single, float(rss1.min()))
        k = int(np.argmin(rss))
        if rss[k] < best[0]:
            best = (float(rss[k]), c[k], centers[pairs[k]], width)
    return best, single


def _step_pairs_rss(v, x, centers, pairs, s):
    """Residual sums and levels ``(g, b - g, f - b)`` of the two-step model for each pair
    of step ``centers`` in ``pairs`` at blur ``s``, and the single-step residuals."""
    from scipy.special import ndtr

    phi = ndtr((x[None, :] - centers[:, None]) / s)
    n, sv, vv = float(len(x)), float(v.sum()), float(v @ v)
    sp, pv, pp = phi.sum(1), phi @ v, phi @ phi.T
    a, b = pairs[:, 0], pairs[:, 1]
    gram = np.empty((len(pairs), 3, 3))
    gram[:, 0, 0] = n
    gram[:, 0, 1] = gram[:, 1, 0] = sp[a]
    gram[:, 0, 2] = gram[:, 2, 0] = sp[b]
    gram[:, 1, 1], gram[:, 2, 2] = pp[a, a], pp[b, b]
    gram[:, 1, 2] = gram[:, 2, 1] = pp[a, b]
    rhs = np.stack([np.full(len(pairs), sv), pv[a], pv[b]], -1)
    c = np.linalg.solve(gram + 1e-9 * np.eye(3), rhs[..., None])[..., 0]
    # one step: levels g and f - g
    det = n * np.diag(pp) - sp**2
    g1 = (np.diag(pp) * sv - sp * pv) / np.maximum(det, 1e-12)
    d1 = (n * pv - sp * sv) / np.maximum(det, 1e-12)
    rss1 = vv - g1 * sv - d1 * pv
    return vv - np.einsum("ki,ki->k", c, rhs), c, rss1


def _rim_outer_step(smooth, fit, sign, prof, steps, reach, params):
    """``fit`` moved to the outer step of a rim along the glass edge, if one shows.

    A bevel rim just inside the glass edge, between the glass and the outside
    levels, makes the edge a staircase of two steps of the fiber's polarity; the
    fitted edge is the stronger one. The glass ends at the outer step: a second
    peak of the signed gradient of the median edge-aligned profile, within
    ``reach`` (+1 px of blur) outside the fitted edge, at least ``rim_step_share``
    of the fitted step's peak and resolved from it (the median gradient rises from
    its dip between them to the outer peak by more than 3 standard errors of the
    rays' rise: a barely resolved step of a blurred rim counts, a wobble of one
    blurred step does not), where the level between the steps leaves at
    least ``rim_step_share`` of the whole step to the outer one and the band is
    smooth glass (its texture nearer the glass's than the outside's: rough epoxy
    is no rim). The edge is then refitted on rays in a window that stays clear
    of the inner step. ``prof``: the edge-aligned ray profiles
    (:func:`_aligned_profiles`) at ``steps`` (0.5 px apart, from 3 px inside to
    ``reach`` + 4 px outside the fitted edge or farther).
    """
    near = (steps >= -3.0) & (steps <= reach + 4.5)
    prof, steps = prof[:, near], steps[near]
    level = median(prof, axis=0)
    grad = sign * np.gradient(level, steps)
    k = int(np.argmax(grad))
    if grad[k] <= 0:
        return fit
    inner = np.arange(1, len(steps) - 1)
    peaks = inner[(grad[2:] < grad[1:-1]) & (grad[1:-1] >= grad[:-2])]
    peaks = peaks[
        (peaks > k)
        & (steps[peaks] <= reach + 1.0)
        & (grad[peaks] >= params["rim_step_share"] * grad[k])
    ]
    outside, glass = level[-1], level[0]
    dips = [k + int(np.argmin(grad[k:j])) for j in peaks]
    # the dip is real when the rays' gradients rise from it to the peak beyond their
    # scatter: 3 standard errors of the median (1.25 sigma / sqrt(n))
    ray_grad = sign * np.gradient(prof, steps, axis=1)

    def resolved(j, d):
        rise = ray_grad[:, j] - ray_grad[:, d]
        return grad[j] - grad[d] > 3.0 * 1.25 * np.std(rise) / math.sqrt(len(rise))

    steps_ok = [
        (j, d)
        for j, d in zip(peaks, dips)
        if resolved(j, d)
        and sign * (outside - level[d]) >= params["rim_step_share"] * sign * (outside - glass)
    ]
    if not steps_ok:
        return fit
    # texture beyond what edge waviness explains, at the glass, the outside and the
    # rims' middles
    middles = [d for _, d in steps_ok]
    cols = np.r_[np.nonzero(steps <= -2.0)[0], len(steps) - 4 : len(steps), middles]
    texture, slope = _relative_texture(prof[:, cols], level[cols], np.gradient(level, steps)[cols], params)
    texture -= slope * params["edge_waviness_px"]
    n_glass = len(cols) - 4 - len(steps_ok)
    smooth_max = 0.5 * (median(texture[:n_glass]) + median(texture[n_glass : n_glass + 4]))
    rims = [j for (j, _), t in zip(steps_ok, texture[n_glass + 4 :]) if t <= smooth_max]
    if not rims:
        return fit
    at = _vertex(steps, grad, rims[-1], 0.5)
    moved = _grown(fit, at)
    half = int(0.5 * (at - steps[k]))
    refit = half >= 2 and _fit_edge(smooth, moved["shape"], sign, half, params)
    if not refit or _confidence(refit, params) < params["min_confidence"]:
        return moved
    return refit


def _vertex(steps, g, j, spacing):
    """Sub-sample position of the peak ``g[j]`` of a profile at ``steps``, ``spacing``
    apart: the vertex of the parabola through it and its two neighbours."""
    g0, g1, g2 = g[j - 1], g[j], g[j + 1]
    return steps[j] + 0.5 * spacing * (g0 - g2) / min(g0 - 2 * g1 + g2, -1e-12)


def _grown(fit, d):
    """``fit`` with both semi-axes of its ellipse grown by ``d`` px."""
    cx, cy, a, b, th = fit["shape"]
    return {**fit, "shape": (cx, cy, a + d, b + d, th), "r": math.sqrt((a + d) * (b + d)),
            "edge_points": {}}


def _relative_texture(prof, level, gradient, params):
    """Texture across rays (median absolute ray-to-ray difference of ``prof``'s columns)
    and radial slope (``gradient`` of the median ``level``), both relative to the level:
    grain is a reflectance variation, so a dark rough ring shows as much relative
    texture as a bright one."""
    rel = 1.0 / np.maximum(level, params["log_offset"])
    return median(np.abs(np.diff(prof, axis=0)), axis=0) * rel, np.abs(gradient) * rel


def _epoxy_shift(prof, steps, sign, band_px, min_px, params):
    """Width of a rough epoxy ring just inside the fitted edge, if there is one.

    A fiber often sits in a rough epoxy ring whose outer edge (to the ferrule) is
    stronger than the glass edge (on a bright fiber, a ring nearly at the glass
    level). When the strongest edge carries
    a bright diffraction fringe within ``halo_reach_um`` on its outer side
    (coaxial scopes), it is the glass edge, unless the ring's rough run holds a
    shelf wider than a bevel line (``bevel_max_um``: a fall-off of the ferrule
    beside a ring passes for a faint fringe). Epoxy is
    textured, glass is smooth: along the circle, the intensity difference
    between neighbouring rays is the texture, compared with that of the glass
    further in (floored
    by a share of the ferrule's: JPEG flattens smooth glass). Texture beyond
    what the radial gradient explains (edge waviness), of at least
    ``epoxy_min_texture`` of the local level, that starts at least ``min_px``
    inside the fitted edge and reaches to within ``epoxy_gap_px`` of it marks
    the ring (its blurred flanks need half the texture ratio) when it reaches a shelf
    under a quarter as steep as the edge (JPEG ringing and noise on a blurred edge's
    flank are no ring); its inner
    boundary (half crossing of the intensity from the glass to the ring level,
    or of the texture when the ring is about as bright as the glass) is the
    glass edge. ``prof`` holds the edge-aligned ray profiles (:func:`_aligned_profiles`)
    at ``steps`` = -2 ``band_px`` .. ``band_px`` + 3 px in 0.5 px steps.

    Returns
    -------
    tuple of float or None
        None when the edge carries a fringe (and no ring shelf wider than a bevel
        line), else ``(shift, sign)``: how far inside
        the fitted edge the glass edge lies (px; 0 when no ring), and the polarity
        of the glass-to-epoxy step (+1 brighter outside, -1 darker; 0 when that
        step is too weak to locate the edge on rays).
    """
    level = median(prof, axis=0)
    texture, slope = _relative_texture(prof, level, np.gradient(level, 0.5), params)
    glass = steps < -band_px
    # reference texture: the smooth glass, floored by a share of the ferrule's texture
    # (JPEG flattens smooth glass, so its texture alone can be ~0)
    ferrule = steps > 0.5 * band_px + 3.0
    base = max(
        float(median(texture[glass])),
        params["epoxy_ferrule_share"] * float(median(texture[ferrule])),
    )
    excess = texture - base - slope * params["edge_waviness_px"]
    # epoxy grain modulates the reflectance by several %; a smooth line only shows noise
    # and JPEG artifacts, which can still be many times the JPEG-flattened glass's
    grain = texture >= params["epoxy_min_texture"]
    ratio, floor = params["epoxy_texture_ratio"], max(base, 1e-4)
    rough = grain & (excess > (ratio - 1.0) * floor)
    px_per_um = min_px / params["epoxy_min_um"]
    # a bright diffraction fringe just outside (coaxial scopes) marks the strongest edge
    # as the glass edge itself, unless a dark ring or a textured shelf wider than a bevel
    # line lies inside it
    reach = params["halo_reach_um"] * px_per_um
    fringe = _fringe_shares(level[None], steps, sign, ferrule, reach)[0] >= params["halo_min_share"]
    ring = (level, texture >= ratio * base, rough, steps, sign, band_px,
            params["bevel_max_um"] * px_per_um, params["smooth_ring_min_um"] * px_per_um,
            fringe and _fringe_all_around(prof, steps, sign, band_px, reach, params), params)
    edge = _dark_ring(*ring)
    if edge is not None:
        return _glass_step(edge, level, prof, steps, glass, min_px, params)

    def no_rough_ring(answer):
        """``answer``, unless a smooth valley too shallow for a ring but wider than any
        bevel line is one: no rough run marks another glass edge."""
        wide = _dark_ring(*ring, shallow=True)
        return answer if wide is None else _glass_step(wide, level, prof, steps, glass, min_px, params)

    no_ring = None if fringe else (0.0, 0.0)
    ferrule_level = float(median(level[ferrule]))
    flank = grain & (excess > (0.5 * ratio - 1.0) * floor)  # a thin ring's blurred flanks
    # the rough run that ends near the fitted edge (whose own slope masks texture)
    near = np.nonzero(rough & ~glass & (steps >= -params["epoxy_gap_px"]) & (steps <= 0))[0]
    if not len(near):
        return no_rough_ring(no_ring)
    k = last = int(near.max())
    top = float(median(texture[max(0, k - 2) : k + 1]))
    while k > 0 and rough[k - 1] and not glass[k - 1]:
        k -= 1
    # a ring, not one textured sample: with its flanks, the run spans two samples
    k0, k1 = k, last
    while steps[k1 + 1] <= 0 and flank[k1 + 1]:
        k1 += 1
    while k0 > 0 and flank[k0 - 1] and not glass[k0 - 1]:
        k0 -= 1
    # and grain on a shelf (under a quarter of the edge's slope) unless it is twice as rough:
    # faint noise or JPEG ringing on the steep flank of a blurred edge alone is no ring
    faint = excess[k : last + 1].max() <= (2.0 * ratio - 1.0) * floor
    shelf = slope[k : last + 1] <= 0.25 * slope[steps <= 0].max()
    if glass[k] or k1 - k0 < 1 or (faint and not shelf.any()):
        return no_rough_ring(no_ring)
    if fringe and 0.5 * shelf.sum() < params["bevel_max_um"] * px_per_um:
        return no_rough_ring(None)
    # the ring's inner boundary: where the intensity leaves the glass level toward the
    # ring's (JPEG spreads texture past it); where the ring is as bright as the glass,
    # where the texture reaches half its ring level
    glass_level = float(median(level[max(0, k - 6) : max(1, k - 2)]))  # 1-3 px inside
    ring_level = float(median(level[k : last + 1]))
    if abs(ring_level - glass_level) >= params["epoxy_level_share"] * abs(
        ferrule_level - glass_level
    ):
        curve, half = np.abs(level - glass_level), 0.5 * abs(ring_level - glass_level)
    else:
        curve, half = texture, 0.5 * (base + top)
    j = k + int(np.argmax(curve[k : last + 1]))  # half crossing inward of the ring's extreme
    while j > 0 and curve[j] >= half:
        j -= 1
    c0, c1 = curve[j], curve[j + 1]
    edge = steps[j] + 0.5 * float(np.clip((half - c0) / (c1 - c0) if c1 != c0 else 0.5, 0, 1))
    return _glass_step(edge, level, prof, steps, glass, min_px, params)


# A valley beyond a bright bevel rim is a ring at this share of the depth a valley needs
# otherwise (epoxy_level_share of the ring-to-ferrule step): the rim rules out a dark
# bevel line of the glass (independent renderer: 1 of 180 radii +5.6 -> +0.9 %, none
# worse at 0.5 or 0.3; the real photos' radii unchanged).
_RIM_RING_DEPTH = 0.5


def _dark_ring(level, textured, rough, steps, sign, band_px, wide_px, smooth_px, fringe, params,
               shallow=False):
    """Glass edge (step, px, < 0) inside a dark ring at the fitted edge, or None.

    Epoxy darker than both the glass and the ferrule is a valley in the edge profile
    ``level``, and then no diffraction fringe outside the fitted edge can make that
    edge the glass's: the fringe belongs to the ring's outer edge. The valley is the
    lowest point within ``band_px`` inside the edge, or, when the glass there is lower
    still, the dip between the edge's flank and a brighter top inside it. A valley at
    least ``epoxy_level_share`` of the ring-to-ferrule step deep, wider at half depth
    than a bevel line (``wide_px``), that rises back to glass within ``band_px`` of the
    edge is a ring. Glass: over half ``band_px`` from 3 px past its inward half-depth
    crossing (or, where a bright bevel rim fills that, from a bevel line farther in),
    flat in the inner half (varying by under a quarter of the depth) and never back
    down to half depth. (A multimode cladding, darker than core and
    ferrule, is wider than the band, and the core's blurred edge is not flat.)
    A bright bevel rim (ring light), rising ``epoxy_level_share`` of the depth above
    the glass within ``wide_px`` + 3 px inside the valley, bounds the glass: a glass
    edge has one bevel, so the valley beyond it is a ring however narrow, even when no
    darker than the glass and at ``_RIM_RING_DEPTH`` of the depth needed otherwise. Not
    so under ``fringe``, a bright fringe all around outside: bright, dark and bright
    lines are the diffraction pattern of a coaxial scope's glass edge. Epoxy is rough:
    when the valley from that crossing to its floor is mostly ``textured``
    (:func:`_epoxy_shift`'s texture ratio over the glass), the crossing is the glass
    edge; so is it beyond a bright rim when the valley is wider at half depth than a
    bevel line (a smooth ring: a glass edge has one bevel), and when it is wider than
    ``smooth_px``, wider than any bevel line. Otherwise a smooth stretch
    there is a dark bevel of the glass itself, and the glass ends where a ``rough`` run
    (texture beyond the slope's share) starts before the fitted edge (None when none
    does: a bevel alone). ``shallow`` (asked when no rough run marks a ring): a smooth
    valley wider than ``smooth_px``, no bevel line, is a ring down to ``_RIM_RING_DEPTH``
    of the depth needed otherwise, and a dark bevel line at its inner end is the glass's
    (:func:`_beyond_bevel_dip`; eighth and eleventh renderers' dark fibers in epoxy a
    tenth of the step darker than the glass: +5..+7.5 % -> within 2 %).
    """
    v = sign * level  # the ring is low
    inner = np.nonzero((steps >= -band_px) & (steps <= 0))[0]
    j = int(inner[np.argmin(v[inner])])
    # down the fitted edge's flank to the nearest dip, then up to the top inside it: when
    # the glass inside that top is the lowest, the ring (if any) is that dip
    k = int(inner[-1])
    while k > inner[0] and v[k - 1] <= v[k]:
        k -= 1
    dip = top = k
    while top > inner[0] and v[top - 1] >= v[top]:
        top -= 1
    if j < top:
        j = dip
    outward_max = float(v[j:].max())
    inward = inner[inner < j]
    if not len(inward):
        return None
    depth = float(v[inward].max()) - float(v[j])
    need = params["epoxy_level_share"] * (outward_max - float(v[j]))
    if depth < _RIM_RING_DEPTH * need:
        return None
    half = float(v[j]) + 0.5 * depth
    k0, k1 = j, j
    while k0 > inner[0] and v[k0 - 1] < half:
        k0 -= 1
    while k1 + 1 < len(v) and v[k1 + 1] < half:
        k1 += 1
    def glass_from(x):
        """The glass over half ``band_px`` inward from ``x`` and its inner half, or None
        where that half is not flat (a core's blurred edge keeps rising)."""
        plateau = v[(steps <= x) & (steps >= x - 0.5 * band_px)]
        flat = plateau[: len(plateau) // 2]
        return None if len(plateau) < 8 or np.ptp(flat) > 0.25 * depth else (plateau, flat)

    rim = v[(steps >= steps[k0] - 3.0 - wide_px) & (steps < steps[k0])]
    glass = glass_from(steps[k0] - 3.0)  # from 3 px inside the crossing
    if glass is None:
        # the glass beyond a bright bevel rim just inside the crossing (its flank is no glass)
        glass = glass_from(steps[k0] - 3.0 - wide_px)
        if glass is None or rim.max() - float(median(glass[1])) < params["epoxy_level_share"] * depth:
            return None
    plateau, flat = glass
    # a bright bevel rim (ring light) between the glass and the valley bounds the glass: a
    # glass edge has one bevel, so the valley beyond the rim is the ring, however narrow
    # and even when no darker than the glass
    bright_rim = not fringe and rim.max() - float(median(flat)) >= params["epoxy_level_share"] * depth
    width = steps[k1] - steps[k0] + 0.5
    # only a rim, or (``shallow``) a width no bevel line has, lets a shallow valley be a ring
    if depth < need and not (bright_rim or (shallow and width > smooth_px)):
        return None
    # else the glass is never as low as the ring, and a valley narrower than a bevel line
    # may be a dark bevel of the glass itself
    if not bright_rim and (plateau.min() < half or width < wide_px):
        return None
    a, b = float(v[k0 - 1]), float(v[k0])
    edge = float(steps[k0 - 1] + 0.5 * (a - half) / (a - b))
    if depth < need and not bright_rim:  # a shallow ring (``shallow``)
        return _beyond_bevel_dip(v[k0 : k1 + 1], steps[k0 : k1 + 1], wide_px, depth, edge)
    if textured[(steps >= edge) & (steps <= steps[j])].mean() >= 0.5:
        return edge
    # beyond a bright rim, a smooth valley wider than a bevel line is no bevel of the glass;
    # nor is one wider than any bevel line, fringe or not
    if (bright_rim and width > wide_px) or width > smooth_px:
        return edge
    start = np.nonzero(rough[:-1] & rough[1:] & (steps[:-1] >= edge) & (steps[:-1] <= 0))[0]
    return float(steps[start[0]] - 0.25) if len(start) else None


def _beyond_bevel_dip(valley, x, wide_px, depth, edge):
    """The glass edge in a shallow ring's ``valley`` (low values, at steps ``x``) whose
    inner edge lies at ``edge``: a dip under ``wide_px`` wide at the valley's inner end,
    a quarter of the valley's ``depth`` darker than the ring's shelf beyond it (the outer
    half of the valley), is the glass's dark bevel line, and the glass ends where the
    profile rises half way from it to that shelf; else ``edge``."""
    shelf = float(median(valley[len(valley) // 2 :]))
    i = int(np.argmin(np.where(x <= x[0] + wide_px, valley, np.inf)))
    if shelf - valley[i] < 0.25 * depth:
        return edge
    half = 0.5 * (float(valley[i]) + shelf)
    up = np.nonzero(valley[i:] >= half)[0]
    if not len(up):
        return edge
    j = i + int(up[0])
    a, b = float(valley[j - 1]), float(valley[j])
    return float(x[j - 1] + (x[j] - x[j - 1]) * (half - a) / (b - a))


def _glass_step(edge, level, prof, steps, glass, min_px, params):
    """:func:`_epoxy_shift`'s answer for a glass edge at ``edge`` px from the fitted
    one: the shift, and the sign of the glass-to-ring step where it stands out of
    the glass's ray-to-ray noise (0 where it does not)."""
    if edge > -min_px:
        return 0.0, 0.0
    i = int(np.argmin(np.abs(steps - edge)))
    step = float(np.gradient(level, 0.5)[i])
    noise = 1.4826 * float(median(np.abs(np.diff(prof[:, glass], axis=1))))
    strong = abs(step) > params["core_min_snr"] * noise / math.sqrt(prof.shape[0])
    return -edge, float(np.sign(step)) if strong else 0.0


def _fringe_shares(levels, steps, sign, ferrule, reach):
    """Height of a bright fringe within ``reach`` px (at least 3) outside the edge, as a
    share of the edge step, on each row of ``levels`` (edge-aligned profiles at
    ``steps``; ``ferrule``: the steps on the ferrule plateau)."""
    far = median(levels[:, ferrule], axis=1)
    inside = sign * levels[:, (steps <= 0) & (steps > -4.0)]
    after = sign * levels[:, (steps > 0) & (steps <= max(3.0, reach))]
    step = np.abs(far - sign * inside.min(axis=1))
    return (after.max(axis=1) - sign * far) / np.maximum(step, 1e-6)


def _fringe_all_around(prof, steps, sign, band_px, reach, params, n_sectors=8):
    """Whether the edge's fringe shows in three quarters of ``n_sectors`` sectors of
    the circumference (:func:`_epoxy_shift`'s profiles and test): a diffraction
    fringe follows the whole edge, a bright rim on one side (oblique light, a
    tilted probe) does not."""
    levels = np.stack([median(p, axis=0) for p in np.array_split(prof, n_sectors)])
    shares = _fringe_shares(levels, steps, sign, steps > 0.5 * band_px + 3.0, reach)
    return _percentile_reaches(shares, 25, params["halo_min_share"])


def _aligned_profiles(smooth, fit, sign, steps, params):
    """Intensity profiles along rays at ``steps`` (px) from each ray's own edge point
    (sub-pixel gradient peak near the fitted ellipse; the ellipse where there is none)."""
    phi, at = _edge_points(smooth, fit, sign, params)
    _, cos, sin = _ray_angles(len(phi))
    rr = at[:, None] + steps[None, :]
    mx = (fit["cx"] + rr * cos[:, None]).astype(np.float32)
    my = (fit["cy"] + rr * sin[:, None]).astype(np.float32)
    return cv2.remap(smooth, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _edge_points(smooth, fit, sign, params):
    """Angles of :func:`_aligned_profiles`' rays and each ray's edge radius. Kept in
    ``fit`` (``"edge_points"``, by sign; :func:`_grown` starts afresh): several
    profiles are read around one fit."""
    memo = fit.setdefault("edge_points", {})
    if sign not in memo:
        n_rays = _n_rays(fit["r"], 90, params)
        phi, at, _, valid, _ = _ray_edges(smooth, fit["shape"], sign, 3, n_rays)
        memo[sign] = phi, np.where(valid, at, _ellipse_radius(fit["shape"], phi))
    return memo[sign]


def _edge_level(smooth, fit, sign, steps, params):
    """Median edge-aligned profile at ``steps`` (px from the fitted edge, outward)."""
    return median(_aligned_profiles(smooth, fit, sign, steps, params), axis=0)


def _edge_gradient(smooth, fit, sign, steps, params):
    """Median edge-aligned profile at ``steps`` (px from the fitted edge, outward), its
    signed gradient and the index of the gradient's peak."""
    level = _edge_level(smooth, fit, sign, steps, params)
    grad = sign * np.gradient(level, steps)
    return level, grad, int(np.argmax(grad))


def _fit_inside(f, start, lo, hi, **options):
    """Least-squares parameters of ``f(p) -> (residuals, Jacobian)`` from ``start``,
    or None when the fit fails or ends outside or on the box [lo, hi].

    The box is a validity check, not a constraint (a fit that needs a bound is
    rejected), so the unbounded Levenberg-Marquardt of MINPACK serves: a third
    of the bounded trust-region solver's time. The lobe fits have local minima,
    and about one in five of them settles in another one than the bounded
    solver did; cladding radii on 680 generated and 90 real images stayed as
    accurate (the real ones within 0.05 %).
    """
    from scipy.optimize import least_squares

    fun, jac = _fun_and_jac(f)
    res = least_squares(fun, start, jac=jac, method="lm", x_scale="jac", **options)
    x, lo, hi = res.x, np.asarray(lo, float), np.asarray(hi, float)
    if not res.success or (x <= lo + 1e-3).any() or (x >= hi - 1e-3).any():
        return None
    return x


def _fun_and_jac(f):
    """``fun`` and ``jac`` for ``least_squares`` from ``f(p) -> (residuals, Jacobian)``:
    it asks for the Jacobian at the point whose residuals it just had, so ``f`` runs
    once for both (it is evaluated again only for another point)."""
    last = [None, None]

    def fun(p):
        last[:] = np.array(p), f(p)
        return last[1][0]

    def jac(p):
        if last[0] is None or not np.array_equal(p, last[0]):
            fun(p)
        return last[1][1]

    return fun, jac


def _edge_lobes(smooth, fit, sign, reach, params, free_width=False):
    """The strong edge and the far edge of a thin dark band along it, by a lobe fit.

    A dark band along the strongest edge (a bevel line just inside the glass,
    or a thin epoxy ring just outside it) puts a gradient lobe of the opposite
    sign next to the edge's own; when the band is only a few blur widths wide,
    the lobes push each other's peaks apart, so neither the fitted edge (the
    gradient peak) nor a peak on the band's far step is where its step is.
    The gradient of the median edge-aligned profile is fitted with two
    Gaussians of opposite signs and one width, the optics' blur. Unless
    ``free_width``, that width is measured on the outer flank of the edge's
    own lobe, away from the band: when the band is narrower than about two
    blur widths, a free width trades with the band's depth and the edge
    position, and such fits do not settle.

    Parameters
    ----------
    reach : float
        Expected distance (px) of the band's far edge inside the fitted edge; it
        is searched up to 3 px farther.

    Returns
    -------
    tuple of float or None
        ``(outer, inner, sigma)``: offsets (px) of the strong edge and of the band's
        far edge from the fitted edge, and the blur sigma (px); None when a fit
        does not converge inside its bounds, the lobes are not resolved or the
        profile shows no band darker than the plateau beyond it.
    """
    steps = np.arange(-reach - 6.0, 5.0, 0.25)
    level, grad, k = _edge_gradient(smooth, fit, sign, steps, params)
    if grad[k] <= 0:
        return None

    def gauss(x, p):
        """Gaussian p = (amplitude, center, sigma) at x, and its Jacobian columns."""
        u = (x - p[1]) / p[2]
        e = np.exp(-0.5 * u * u)
        return p[0] * e, np.column_stack([e, p[0] * e * u / p[2], p[0] * e * u * u / p[2]])

    if free_width:
        sigma = 1.0
    else:  # the outer flank: from the peak outward while above 5 % of the peak
        below = np.nonzero(grad[k:] < 0.05 * grad[k])[0]
        flank = np.arange(k, k + (int(below[0]) if len(below) else len(grad) - k))
        if len(flank) < 4:
            return None
        xf, gf = steps[flank], grad[flank]

        def lobe(p):
            """Residuals of one Gaussian on the flank, and their Jacobian."""
            g, j = gauss(xf, p)
            return g - gf, j

        outer = _fit_inside(lobe, [grad[k], steps[k], 1.0],
                            [0.0, steps[k] - 2.0, 0.3], [np.inf, steps[k] + 2.0, 4.0])
        if outer is None:
            return None
        sigma = float(outer[2])

    def model(p):
        """p = (x0, x1, a0, a1[, sigma]): the edge's lobe minus the band's far lobe."""
        sg = p[4] if free_width else sigma
        (g0, j0), (g1, j1) = gauss(steps, (p[2], p[0], sg)), gauss(steps, (p[3], p[1], sg))
        jac = [j0[:, 1], -j1[:, 1], j0[:, 0], -j1[:, 0], j0[:, 2] - j1[:, 2]]
        return g0 - g1 - grad, np.column_stack(jac[: len(p)])

    k1 = int(np.argmin(np.abs(steps + reach)))
    lo = np.array([-2.0, -reach - 3.0, 0.0, 0.0, 0.3])
    hi = np.array([2.0, -0.2, np.inf, np.inf, 4.0])
    start = [0.0, -reach, grad[k], max(-grad[k1], 1e-4), sigma]
    n = 5 if free_width else 4
    lo, hi = lo[:n], hi[:n]
    x = _fit_inside(model, np.clip(start[:n], lo + 1e-6, hi - 1e-6), lo, hi, max_nfev=100)
    if x is None:
        return None
    x0, x1 = x[:2]
    sigma = float(x[4]) if free_width else sigma
    # lobes much closer than the blur are one edge's reshaped gradient (a derivative of
    # a Gaussian: real edges are not Gaussian steps), not a band
    if x0 - x1 < 0.5 * sigma:
        return None
    # and the band dips below the plateau on its far side by a visible share of the step
    # (signed levels: the near side of the strong edge is the lower one)
    signed = sign * level
    far = signed[steps < x1 - 2.0 * sigma]
    band = signed[(steps >= x1 - sigma) & (steps <= x0)]
    if not len(far) or not len(band):
        return None
    plateau = float(median(far))
    step = float(median(signed[steps > 3.0])) - plateau
    if plateau - float(band.min()) < params["halo_min_share"] * step:
        return None
    return float(x0), float(x1), sigma


def _fringe_line(smooth, fit, sign, reach, params):
    """Offset (px) of the glass edge from the fitted edge when that edge carries a
    diffraction fringe and a dark bevel line lies just inside it.

    The blurred step and a fringe pair straddling the edge (dark inside, bright
    outside) both add gradient profiles that are even about the edge, whatever
    their shapes; the line's far flank adds a lobe of the opposite sign on the
    inner side only, which pushes the gradient peak (the fitted edge) outward.
    So the odd part of the gradient of the median edge-aligned profile about
    the true edge x0 is the odd part of that lobe alone: x0 and the lobe's
    position (searched up to ``reach`` + 3 px inside), height and width are
    fitted to it, and the fringe's shape never enters the model.

    Returns None when the fit ends at a bound or the lobe is not resolved (its
    distance from the edge under its width: a line that narrow trades with the
    edge position).
    """
    steps = np.arange(-reach - 8.0, 8.0, 0.25)
    _, grad, k = _edge_gradient(smooth, fit, sign, steps, params)
    if grad[k] <= 0:
        return None
    t = np.arange(0.25, reach + 5.0, 0.25)  # distances from x0 of the compared samples
    curv = np.gradient(grad, steps)

    def odd_residual(p):
        """Residual of the odd part (in units of the peak gradient) and its Jacobian."""
        x0, x1, a1, s1 = p
        odd = np.interp(x0 + t, steps, grad) - np.interp(x0 - t, steps, grad)
        d_odd = np.interp(x0 + t, steps, curv) - np.interp(x0 - t, steps, curv)
        u_in, u_out = (x0 - t - x1) / s1, (x0 + t - x1) / s1
        e_in, e_out = np.exp(-0.5 * u_in**2), np.exp(-0.5 * u_out**2)
        lobe = e_in - e_out
        d_pos = (e_in * u_in - e_out * u_out) / s1  # d lobe / d x1 = -d lobe / d x0
        d_s1 = (e_in * u_in**2 - e_out * u_out**2) / s1
        jac = np.column_stack([d_odd + a1 * d_pos, -a1 * d_pos, -lobe, -a1 * d_s1])
        return (odd - a1 * lobe) / grad[k], jac / grad[k]

    x_peak = float(steps[k])
    # the lobe pushes the peak outward, by less than the blur width
    lo = np.array([x_peak - 1.0, x_peak - reach - 3.0, 0.0, 0.3])
    hi = np.array([x_peak + 0.25, x_peak - 0.2, np.inf, 4.0])
    # the fit has local minima: the line's lobe starts at the strongest negative
    # gradient inside the peak (its far flank, when resolved), else at ``reach``
    window = np.nonzero((steps >= lo[1]) & (steps <= hi[1]))[0]
    if not len(window):  # the peak at the profile's inner end: no edge
        return None
    k1 = window[np.argmin(grad[window])]
    x1_start = float(steps[k1]) if grad[k1] < 0 else x_peak - reach
    start = np.clip([x_peak, x1_start, 0.1 * grad[k], 1.0], lo + 1e-6, hi - 1e-6)
    # x0 to 1e-4 px and better
    x = _fit_inside(odd_residual, start, lo, hi, xtol=1e-4, ftol=1e-6, max_nfev=100)
    if x is None or x[0] - x[1] < x[3]:
        return None
    return float(x[0])


def _confidence(fit, params):
    """Confidence in [0, 1]: fraction of the circumference that supports the fit
    (rays outside the image count as unsupported), lowered by the RMS residual
    beyond the scatter the edge points' SNR explains (``excess``, a chi-square-like
    test: blurred, noisy edge points on one circle score high, sharp edges on no
    circle low)."""
    sharp = math.exp(-fit["excess"] / params["residual_scale_px"])
    return float(min(max(fit["inlier_frac"] * sharp, 0.0), 1.0))


def _measure_core(smooth, clad, nominal_r, upp, params, fits=None):
    """Core circle from the radial profile, or the nominal core if not visible.

    The median over all angles of the rays' steps shows the core as the
    strongest step within ``core_search_rel`` of the nominal core radius
    (:func:`_core_step`): across 2 px, else across +-``core_offset_um`` (a core
    off the cladding's center; its fit must then reach ``core_wide_min_confidence``);
    when that step stands out from the angular scatter, edge points along rays
    are fitted like the cladding edge, starting where the median level steps (again
    on the crop blurred by ``core_soft_sigma_px`` when that fit is too weak).
    ``fits`` (a dict) keeps the edge fits (and whether each is a circle) by starting
    radius (px) and sign, so searches for several nominal cores fit a step once.
    """
    cx, cy, r_clad = clad["cx"], clad["cy"], clad["r"]
    nominal = {"cx": cx, "cy": cy, "r": float(nominal_r), "visible": False}
    lo, hi = (f * nominal_r for f in params["core_search_rel"])
    hi = min(hi, params["core_max_rel"] * r_clad)
    if hi - lo < 3 or lo < params["core_min_px"]:
        return nominal
    phi, cos, sin = _ray_angles(_n_rays(hi, 64, params))
    # a core off the cladding's center (concentricity, up to core_offset_um) moves its
    # step along the rays from that center by up to as much: when no step shows over
    # a 2 px baseline, the step over +-h px is looked for
    h = int(min(max(round(params["core_offset_um"] / upp), 1), max(1.0, 0.25 * nominal_r)))
    for base in sorted({1, h}):
        margin = 3 if base == 1 else 2 + 3 * base
        radii = np.arange(max(1.0, lo - margin), hi + margin + 1)
        prof = _concentric_profiles(smooth, clad, radii, (phi, cos, sin))
        step = _core_step(prof, base, radii, lo, hi, params)
        if step is not None:
            break
    else:
        return nominal
    # the wide baseline also lets weak features through (a scratch along a chord), whose
    # edge points are noise picks spread over the search window: their fit must be as
    # coherent as core_wide_min_confidence
    min_conf = params["core_wide_min_confidence"] if base > 1 else 0.0
    r_step, sign, strength = step[0] / r_clad, step[1], step[2]
    _, _, a, b, th = clad["shape"]
    guess = (cx, cy, a * r_step, b * r_step, th)
    fits = {} if fits is None else fits
    key = (round(r_step * r_clad), sign)
    half = _half_width(r_step * r_clad, params["refine_rel"], params)
    if key not in fits:
        # the guess is centred on the cladding: a core offset from it, or whose profile
        # peak the angular median smeared, lies partly outside the window, so refit
        # around each fit until it settles. The edge points of a small, faint core
        # scatter by a good share of its radius: an ellipse through them can be more
        # elongated than any core (max_ellipticity), a circle is not. Only for a faint
        # step (core_circle_max_gradient: a particle's sharp edge points are precise, and
        # an elongated fit through them is no core), and the looser model must fit as
        # coherently as a cladding edge (min_confidence)
        fit = _settled_core_fit(smooth, guess, key[1], half, params)
        circle = fit is None and strength <= params["core_circle_max_gradient"]
        if circle:
            fit = _settled_core_fit(smooth, guess, key[1], half, params, circle=True)
        fits[key] = fit, circle
    fit, circle = fits[key]
    if circle:
        min_conf = max(min_conf, params["min_confidence"])

    def weak(f):
        return f is None or f["inlier_frac"] < params["core_min_inliers"] or _confidence(f, params) < min_conf

    if weak(fit):
        # a faint core with a soft edge: single rays' edge points scatter over its width
        # (grain, banding), on the crop blurred to about that width they line up
        soft_key = (*key, "soft")
        if soft_key not in fits:
            soft = cv2.GaussianBlur(smooth, (0, 0), params["core_soft_sigma_px"])
            fits[soft_key] = _settled_core_fit(soft, guess, key[1], half, params)
        fit = fits[soft_key] or fit
    # a fit that left the searched sizes found something else (a pit near the center)
    if weak(fit) or not lo <= fit["r"] <= hi:
        return nominal
    # near the glass edge a tilted probe's shadow darkens one side of the rim: a crescent
    # whose median step around the circle passes for a large core's, which shows all around
    if fit["r"] >= params["core_shade_min_rel"] * r_clad and not _step_all_around(smooth, fit, sign, upp, params):
        return nominal
    return {"cx": fit["cx"], "cy": fit["cy"], "r": fit["r"], "visible": True, "strength": strength,
            "confidence": _confidence(fit, params)}


def _step_all_around(smooth, fit, sign, upp, params, n_sectors=8):
    """Whether the step of the edge ``fit`` (``sign`` +1: brighter outside) shows in three
    quarters of ``n_sectors`` sectors around it at ``core_sector_share`` of the strongest
    sector's: the level ``core_sector_um`` outside the edge less that as far inside,
    median per sector. A core's step is a property of the glass and runs all around (true
    large cores, generated and real, show it in 6 to 8 of 8 sectors); a shadow follows
    the light's direction (2 to 4 of 8)."""
    d = max(2.0, params["core_sector_um"] / upp)
    rays = _ray_angles(_n_rays(fit["r"], 64, params))
    inside, outside = _concentric_profiles(smooth, fit, np.array([fit["r"] - d, fit["r"] + d]), rays)
    sectors = np.array([median(part) for part in np.array_split(sign * (outside - inside), n_sectors)])
    top = float(sectors.max())
    return top > 0 and _percentile_reaches(sectors / top, 25, params["core_sector_share"])


def _settled_core_fit(image, guess, sign, half, params, circle=False):
    """A core's edge fit (:func:`_fit_edge`, of a ``circle`` or an ellipse) from the
    ellipse ``guess``, refitted around itself until it settles (:func:`_settled_fit`);
    None when the first fit fails."""
    first = _fit_edge(image, guess, sign, half, params, circle=circle, cladding=False)
    return first and (_settled_fit(image, first["shape"], sign, half, params, circle, cladding=False) or first)


def _core_kink(smooth, clad, params):
    """A core seen where a rise or fall of the glass level ends, centred on the
    cladding: a core dict (as :func:`_measure_core`'s, with ``kink`` True) or None.

    A graded-index core reflects more or less light toward its axis: a dome or bowl
    that ends at the core's edge in a kink, with little or no step. Its gradient peaks
    there only as the slope's end, so :func:`_core_step` puts it well inside or
    misses it. The angular median of the glass's radial profile (``core_kink_range_rel``
    of the cladding radius, widened by 0.05 either side; at most 192 samples) is fitted
    at each radius R within that range (at each sample, then a quarter sample around
    the best) by a smooth field ``a + b rho^2`` plus a step at R, blurred by each of
    ``core_kink_step_blur_px`` (a step-index core's soft edge is a blurred step, whose
    outer half a sharp step would leave to the hinge), and a hinge ``c (R^2 - rho^2)``
    inside it. The best fit is a
    core's edge when the hinge carries more of the change than the step, rises or falls
    by at least ``core_kink_min_rise`` of the glass level, the fit explains at least
    ``core_kink_min_explained`` of what the smooth field leaves, its residual is at
    most ``core_kink_max_smooth`` of an even polynomial's (degree 6: a broad shading of
    the light bends too, but has no kink), and the level bends outside R at most
    ``core_kink_max_outer_bend`` as much as inside (flat glass ending in a bright rim or
    a dark bevel near the edge is the mirror image: a kink with the slope outside), and
    the kinks of the quadrants' own profiles, but the farthest, lie within
    ``core_kink_max_spread`` of R (a film's dome off the centre ends in a kink too).
    """
    r_clad = clad["r"]
    lo, hi = (f * r_clad for f in params["core_kink_range_rel"])
    span = hi - lo + 0.1 * r_clad
    radii = np.linspace(lo - 0.05 * r_clad, hi + 0.05 * r_clad, min(int(span) + 1, 192))
    spacing = radii[1] - radii[0]  # px: 1, or finer than 1.5 % of the cladding radius
    prof = _concentric_profiles(smooth, clad, radii, _ray_angles(_n_rays(radii[0], 64, params)))
    level = median(prof, axis=1)
    rho = radii / r_clad
    q = np.linalg.qr(np.column_stack([np.ones_like(rho), rho**2]))[0]  # the smooth field
    v = level - q @ (q.T @ level)
    # each blur at every sample's radius, then a quarter sample around each blur's best
    blurs = np.asarray(params["core_kink_step_blur_px"], np.float64)
    grid, offsets = np.arange(lo, hi + 1e-9, spacing), np.arange(-1.0, 1.01, 0.25) * spacing
    rss = _kink_fits(rho, v, q, np.tile(grid, len(blurs)) / r_clad, np.repeat(blurs, len(grid)) / r_clad)[0]
    big_r = (grid[np.argmin(rss.reshape(len(blurs), -1), axis=1)][:, None] + offsets[None, :]).ravel()
    blur = np.repeat(blurs, len(offsets))
    rss, a_step, a_hinge = _kink_fits(rho, v, q, big_r / r_clad, blur / r_clad)
    k = int(np.argmin(rss))
    rss, a_step, a_hinge, r_core, blur = rss[k], a_step[k], a_hinge[k], big_r[k] / r_clad, blur[k] / r_clad
    glass = max(abs(float(median(level))), 1e-6)
    rise = abs(a_hinge) * r_core**2
    explained = 1.0 - rss / max(float(v @ v), 1e-300)
    if (rise <= abs(a_step) or rise < params["core_kink_min_rise"] * glass
            or explained < params["core_kink_min_explained"]):
        return None  # (most fibers: the costlier tests below are left out)
    poly = np.column_stack([np.ones_like(rho), rho**2, rho**4, rho**6])
    rss_poly = float(((level - poly @ np.linalg.lstsq(poly, level, rcond=None)[0]) ** 2).sum())
    step, hinge = (p[0] for p in _kink_parts(rho, np.array([r_core]), np.array([blur])))
    # the level's curvature outside the core (the smooth field's) and inside it
    bend_out = float(q[:, 1] @ (level - a_step * step - a_hinge * hinge)) / float(q[:, 1] @ rho**2)
    bend_in = bend_out - a_hinge
    if (rss > params["core_kink_max_smooth"] * rss_poly
            or abs(bend_out) > params["core_kink_max_outer_bend"] * abs(bend_in)):
        return None
    # each quadrant's own kink, at the same blur within the same range: how far the
    # second farthest lies (one quadrant may hold a defect)
    off = []
    for cols in np.array_split(np.arange(prof.shape[1]), 4):
        lv = median(prof[:, cols], axis=1)
        rq = _kink_fits(rho, lv - q @ (q.T @ lv), q, grid / r_clad, np.full(len(grid), blur))[0]
        off.append(abs(grid[int(np.argmin(rq))] / r_clad - r_core) / r_core)
    if sorted(off)[-2] > params["core_kink_max_spread"]:
        return None
    return {"cx": clad["cx"], "cy": clad["cy"], "r": r_core * r_clad, "visible": True, "kink": True,
            "strength": 2.0 * rise / r_core / r_clad / glass, "confidence": explained}


def _concentric_profiles(smooth, clad, radii, rays):
    """``smooth`` sampled along ``rays`` (angles, cosines, sines: :func:`_ray_angles`)
    from the cladding's centre at ``radii`` (px along the ray that crosses the
    cladding ellipse at ``clad["r"]``): one row per radius, one column per ray, so that
    medians over the rays run along rows."""
    phi, cos, sin = rays
    rr = (radii / clad["r"])[:, None] * _ellipse_radius(clad["shape"], phi)[None, :]
    mx = (clad["cx"] + rr * cos[None, :]).astype(np.float32)
    my = (clad["cy"] + rr * sin[None, :]).astype(np.float32)
    return cv2.remap(smooth, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _kink_parts(rho, big_r, blur):
    """A step down at each radius of ``big_r`` blurred by the matching ``blur`` (a
    Gaussian's sigma; 0: sharp) and a hinge ``(R^2 - rho^2)`` inside it, sampled at
    ``rho`` (all in cladding radii): two arrays of shape (len(big_r), len(rho))."""
    d = big_r[:, None] - rho[None, :]
    sharp = blur[:, None] <= 0
    step = np.where(sharp, d > 0, ndtr(d / np.where(sharp, 1.0, blur[:, None])))
    return step, np.clip(big_r[:, None] ** 2 - rho[None, :] ** 2, 0.0, None)


def _kink_fits(rho, v, q, big_r, blur):
    """Least-squares step and hinge (:func:`_kink_parts`) at each radius of ``big_r``
    (with its ``blur``) fitted to ``v``, the profile less its smooth field (``q``: the
    field's orthonormal basis): residual sums of squares and both amplitudes, arrays
    over ``big_r``."""
    step, hinge = _kink_parts(rho, big_r, blur)
    step -= (step @ q) @ q.T  # what the smooth field leaves of each
    hinge -= (hinge @ q) @ q.T
    ss, sh, hh = (step * step).sum(1), (step * hinge).sum(1), (hinge * hinge).sum(1)
    sv, hv = step @ v, hinge @ v
    det = np.maximum(ss * hh - sh * sh, 1e-300)
    a_step, a_hinge = (hh * sv - sh * hv) / det, (ss * hv - sh * sv) / det
    return float(v @ v) - (a_step * sv + a_hinge * hv), a_step, a_hinge


def _core_step(prof, h, radii, lo, hi, params):
    """The core's step on ray profiles ``prof`` (one row per radius of ``radii``, px, one
    column per ray), read over +-h samples: ``(radius, sign, strength)`` or None.

    The step is the strongest peak, within [lo, hi], of the median over rays of
    half the level change across +-h (a step that keeps growing past the range's
    ends, the glass edge's roll-off, a larger core's step or illumination falling
    off from the center, is no core of this size). It must stand out from the
    rays' scatter (``core_min_snr`` standard errors) and be a step of some contrast
    (``core_min_rel_gradient`` of the glass level), not a faint shading the scatter
    of a clean image lets through. Its radius is where the median level steps
    (where half the rays have passed their step, whatever the core's offset), and
    its strength the median level's gradient there relative to the level, which
    must reach ``core_min_rel_gradient`` too (an edge, not a broad shading).
    """
    grad = (prof[2 * h :] - prof[: -2 * h]) * 0.5
    med = median(grad, axis=1)
    strength = np.abs(med)
    at = radii[h:-h]
    peak = np.zeros(len(med), bool)
    peak[1:-1] = (strength[1:-1] >= strength[:-2]) & (strength[1:-1] >= strength[2:])
    idx = np.nonzero(peak & (at >= lo) & (at <= hi))[0]
    if not len(idx):
        return None
    k = int(idx[np.argmax(strength[idx])])
    spread = 1.4826 * float(median(np.abs(grad[k] - med[k]))) / math.sqrt(grad.shape[1])
    level = max(abs(float(median(prof[k + h]))), 1e-6)
    if abs(med[k]) < max(params["core_min_snr"] * max(spread, 1e-6),
                         params["core_min_rel_gradient"] * level):
        return None
    sign = float(np.sign(med[k]))
    if h == 1:
        return float(radii[k + 1]), sign, abs(float(med[k])) / level
    # over the wide baseline, a smooth fall-off of the light (vignetting) steps too: a
    # step rises by more than twice what the median level does over +-h beside it
    c = k + h  # the step's center sample
    lv = median(prof[max(0, c - 3 * h) : c + 3 * h + 1], axis=1)
    j = min(c, 3 * h)
    beside = max(sign * (lv[j - h] - lv[max(0, j - 3 * h)]), sign * (lv[-1] - lv[j + h]), 0.0)
    if sign * (lv[j + h] - lv[j - h]) < 2.0 * beside:
        return None
    slope = sign * np.gradient(lv[j - h : j + h + 1])
    i = int(np.argmax(slope))
    if slope[i] < params["core_min_rel_gradient"] * level:  # a broad shading, no edge
        return None
    return float(radii[c - h + i]), sign, float(slope[i]) / level
