"""QC overlays and the self-contained HTML report of a run.

Overlays draw the zone boundaries and every defect outline (coloured by zone and by
defect type, palettes of :mod:`fiberprep.datasets`) onto the display image. The
report is one HTML file with every picture embedded (PNG/JPEG data URIs) and every
plot drawn as inline SVG, so it opens anywhere without the results folder and
without a plotting library.
"""

from __future__ import annotations

import base64
import html
import re

import cv2
import numpy as np
import pandas as pd

from fiberprep import datasets, library


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def _disc(line_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * line_px + 1, 2 * line_px + 1))


#: Label values of :func:`overlay_labels`: zone boundaries are ZONE_BASE + zone id,
#: defect outlines DEFECT_BASE + defect class id (0 = nothing drawn).
ZONE_BASE, DEFECT_BASE = 128, 144
#: Palette of overlay PNGs of gray images: 128 gray levels, then the overlay colours.
OVERLAY_PALETTE: dict[int, tuple[int, int, int]] = {
    **{i: (round(i * 255 / 127),) * 3 for i in range(128)},
    **{ZONE_BASE + z: c for z, c in datasets.ZONE_COLOURS.items()},
    **{DEFECT_BASE + k: c for k, c in datasets.DEFECT_COLOURS.items()},
}
_OVERLAY_LUT = np.array([OVERLAY_PALETTE.get(i, (0, 0, 0)) for i in range(256)], np.uint8)


def overlay_labels(zone_map: np.ndarray, instance_map: np.ndarray, class_lut: np.ndarray,
                   line_px: int | None = None) -> np.ndarray:
    """What a QC overlay draws, as a uint8 label map.

    Parameters
    ----------
    zone_map : numpy.ndarray of uint8
        Zone ids; every boundary between zones is drawn (both sides) as
        ``ZONE_BASE + zone id``.
    instance_map : numpy.ndarray of uint16
        Defect numbers; the inner rim of each defect is drawn as ``DEFECT_BASE +``
        its class (``class_lut[number]``, see :func:`datasets.class_lut`).
    line_px : int, optional
        Line width on each side of an edge; default 1 px per 500 px of the shorter
        side, at least 1.

    Returns
    -------
    numpy.ndarray of uint8, 0 where nothing is drawn.
    """
    lw = line_px or max(1, round(min(zone_map.shape) / 500))
    out = np.zeros(zone_map.shape, np.uint8)
    zone_edge = cv2.dilate(zone_map, _disc(lw)) != cv2.erode(zone_map, _disc(lw))
    out[zone_edge] = ZONE_BASE + zone_map[zone_edge]
    if instance_map.any():
        inst = instance_map.astype(np.uint16, copy=False)
        edge = (inst != cv2.erode(inst, _disc(lw))) & (inst > 0)
        lut = np.zeros(max(int(inst.max()) + 1, len(class_lut)), np.uint8)
        lut[: len(class_lut)] = class_lut
        out[edge] = DEFECT_BASE + lut[inst[edge]]
    return out


def overlay(display: np.ndarray, zone_map: np.ndarray, instance_map: np.ndarray, class_lut: np.ndarray,
            line_px: int | None = None) -> np.ndarray:
    """Display image (uint8 gray or RGB) with zone boundaries and defect outlines
    (:func:`overlay_labels`) drawn in the zone and defect colours; RGB uint8."""
    labels = overlay_labels(zone_map, instance_map, class_lut, line_px)
    rgb = cv2.cvtColor(display, cv2.COLOR_GRAY2RGB) if display.ndim == 2 else display.copy()
    drawn = labels > 0
    rgb[drawn] = _OVERLAY_LUT[labels[drawn]]
    return rgb


def overlay_png(display: np.ndarray, zone_map: np.ndarray, instance_map: np.ndarray, class_lut: np.ndarray,
                compression: int = 1) -> bytes:
    """PNG bytes of the QC overlay.

    A gray image gives a palette PNG (:data:`OVERLAY_PALETTE`): the image quantised
    to 128 gray levels, invisible to the eye, plus the overlay colours, at one byte
    per pixel instead of three, so the file is written ~3x faster than RGB.
    """
    if display.ndim == 3:
        return datasets.encode_png(overlay(display, zone_map, instance_map, class_lut), compression)
    labels = overlay_labels(zone_map, instance_map, class_lut)
    indices = np.where(labels > 0, labels, display >> 1)
    return datasets.encode_palette_png(indices, OVERLAY_PALETTE, compression)


def data_uri(image: np.ndarray, fmt: str = ".png", quality: int = 85) -> str:
    """``data:`` URI of an RGB or gray uint8 image (PNG, or JPEG for photos)."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, arr, params)
    if not ok:
        raise ValueError(f"cannot encode {image.shape} as {fmt}")
    mime = "image/jpeg" if fmt == ".jpg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def fit_width(image: np.ndarray, max_px: int) -> np.ndarray:
    """Image scaled down (area interpolation) so its width is at most ``max_px``."""
    h, w = image.shape[:2]
    if w <= max_px:
        return image
    return cv2.resize(image, (max_px, max(1, round(h * max_px / w))), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- SVG plots
_W, _H, _L, _B, _T = 380, 220, 48, 36, 24  # plot size and left/bottom/top margins (px)


def _svg_frame(title: str, xlabel: str, body: str, ymax: float | None, legend: str = "") -> str:
    """Axes, title and labels around a plot body; no y ticks when ``ymax`` is None."""
    ticks = "".join(
        f'<line x1="{_L - 4}" x2="{_L}" y1="{y:.1f}" y2="{y:.1f}" stroke="#444"/>'
        f'<text x="{_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:g}</text>'
        for v, y in ((ymax * f, _H - _B - f * (_H - _B - _T)) for f in (0, 0.5, 1))
    ) if ymax is not None else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'font-family="sans-serif" role="img"><title>{html.escape(title)}</title>'
        f'<text x="{_W / 2}" y="14" text-anchor="middle" font-size="12" font-weight="bold">{html.escape(title)}</text>'
        f'{body}<line x1="{_L}" x2="{_L}" y1="{_T}" y2="{_H - _B}" stroke="#444"/>'
        f'<line x1="{_L}" x2="{_W - 8}" y1="{_H - _B}" y2="{_H - _B}" stroke="#444"/>{ticks}'
        f'<text x="{(_L + _W) / 2}" y="{_H - 4}" text-anchor="middle" font-size="11">{html.escape(xlabel)}</text>'
        f"{legend}</svg>"
    )


def svg_histogram(values, title: str, xlabel: str, bins: int = 30) -> str:
    """Inline SVG histogram of the finite values (a note when there are none)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return _svg_frame(title, xlabel, f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" font-size="11">no data</text>', 1)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(v, bins=bins, range=(lo, hi))
    ymax = max(int(counts.max()), 1)
    pw, ph = _W - _L - 8, _H - _B - _T
    bw = pw / len(counts)
    bars = "".join(
        f'<rect x="{_L + k * bw:.1f}" y="{_H - _B - c / ymax * ph:.1f}" width="{max(bw - 1, 0.5):.1f}" '
        f'height="{c / ymax * ph:.1f}" fill="#4c78a8"><title>{edges[k]:.4g}–{edges[k + 1]:.4g}: {c}</title></rect>'
        for k, c in enumerate(counts)
    )
    xt = "".join(
        f'<text x="{_L + f * pw:.1f}" y="{_H - _B + 13}" text-anchor="{anchor}" font-size="10">{lo + f * (hi - lo):.4g}</text>'
        for f, anchor in ((0, "start"), (0.5, "middle"), (1, "end"))
    )
    return _svg_frame(title, xlabel, bars + xt, ymax)


def _legend(items: list[tuple[str, str]]) -> str:
    return "".join(
        f'<rect x="{_W - 110}" y="{_T + 14 * k}" width="10" height="10" fill="{c}"/>'
        f'<text x="{_W - 96}" y="{_T + 9 + 14 * k}" font-size="10">{html.escape(str(n))}</text>'
        for k, (n, c) in enumerate(items)
    )


def svg_stacked_bars(table: pd.DataFrame, colours: dict[str, str], title: str, xlabel: str) -> str:
    """Inline SVG stacked bar chart: one bar per row of ``table``, one colour per column."""
    totals = table.sum(axis=1).to_numpy(float) if len(table) else np.zeros(0)
    ymax = max(float(totals.max(initial=0)), 1.0)
    pw, ph = _W - _L - 120, _H - _B - _T
    bw = pw / max(len(table), 1)
    body = []
    for k, (label, row) in enumerate(table.iterrows()):
        y = _H - _B
        for col, val in row.items():
            h = val / ymax * ph
            if val > 0:
                body.append(f'<rect x="{_L + k * bw + 2:.1f}" y="{y - h:.1f}" width="{max(bw - 4, 1):.1f}" height="{h:.1f}" '
                            f'fill="{colours.get(col, "#888")}"><title>{html.escape(f"{label} / {col}: {val:g}")}</title></rect>')
            y -= h
        body.append(f'<text x="{_L + (k + 0.5) * bw:.1f}" y="{_H - _B + 13}" text-anchor="middle" font-size="10">{html.escape(str(label))}</text>')
    legend = _legend([(c, colours.get(c, "#888")) for c in table.columns])
    return _svg_frame(title, xlabel, "".join(body), ymax, legend)


def svg_scatter(xy: np.ndarray, groups, colours: dict, title: str, tips=None) -> str:
    """Inline SVG scatter plot of 2-D points coloured by group (e.g. cluster)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    groups = list(groups)
    pw, ph = _W - _L - 120, _H - _B - _T
    if len(xy):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        pos = (xy - lo) / span
    else:
        pos = xy
    tips = tips if tips is not None else [""] * len(xy)
    dots = "".join(
        f'<circle cx="{_L + 4 + p[0] * (pw - 8):.1f}" cy="{_H - _B - 4 - p[1] * (ph - 8):.1f}" r="2.5" '
        f'fill="{colours.get(g, "#888")}" fill-opacity="0.75"><title>{html.escape(str(t))}</title></circle>'
        for p, g, t in zip(pos, groups, tips)
    )
    legend = _legend([(g, colours.get(g, "#888")) for g in sorted(set(groups), key=str)][:12])
    return _svg_frame(title, "PC 1 (horizontal) · PC 2 (vertical)", dots, None, legend)


# ------------------------------------------------------------------- defect embedding
def feature_matrix(index: pd.DataFrame, feature_names) -> np.ndarray:
    """Standardised matrix of the numeric defect features ``feature_names``
    (``features.DEFECT_FEATURE_NAMES``; NaN -> column median, constant columns
    dropped), rows in ``index`` order."""
    cols = [c for c in feature_names if c in index.columns and c != "zone"]
    x = index[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float) if cols else np.zeros((len(index), 0))
    x = x[:, np.isfinite(x).any(axis=0)] if len(x) else x
    if x.size == 0:
        return np.zeros((len(index), 0))
    med = np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0)
    x = np.where(np.isfinite(x), x, med)
    x = x[:, x.std(axis=0) > 0]
    return (x - x.mean(axis=0)) / x.std(axis=0)


def embedding_2d(x: np.ndarray) -> np.ndarray:
    """First two principal components of a standardised feature matrix (zeros when
    there are too few defects or features).

    Computed by one SVD in numpy (signs fixed so each component's largest loading
    is positive): the same projection as ``sklearn.decomposition.PCA``, without
    importing scikit-learn into the per-shard jobs that draw overlays.

    References
    ----------
    Pearson, "On lines and planes of closest fit to systems of points in space",
    Philosophical Magazine 2(11), 1901.
    """
    if x.shape[0] < 3 or x.shape[1] < 2:
        return np.zeros((x.shape[0], 2))
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(axis=1)])[:, None]
    return centred @ vt.T


def cluster_representatives(x: np.ndarray, clusters, n: int) -> dict:
    """Per cluster, row positions of the ``n`` members closest to and farthest from
    the cluster centroid in the standardised feature space."""
    clusters = np.asarray(clusters)
    out = {}
    for c in sorted(set(clusters.tolist()), key=str):
        rows = np.flatnonzero(clusters == c)
        if x.shape[1]:
            d = np.linalg.norm(x[rows] - x[rows].mean(axis=0), axis=1)
        else:
            d = np.zeros(len(rows))
        order = rows[np.lexsort((rows, d))]
        out[c] = {"closest": order[:n].tolist(), "farthest": order[::-1][:n].tolist() if len(order) > n else []}
    return out


def worst_images(labels: pd.DataFrame, n: int) -> list[str]:
    """Ids of the ``n`` worst accepted images: failing first, then by number of failed
    criteria, of defects, and by id (deterministic)."""
    if not len(labels):
        return []
    order = labels.assign(_fail=(labels["pass_fail"] == "fail").astype(int)).sort_values(
        ["_fail", "n_failures", "n_defects", "image_id"], ascending=[False, False, False, True])
    return order["image_id"].head(n).tolist()


def index_columns(feature_names) -> list[str]:
    """The columns of ``defect_library/index.parquet`` that :func:`report_selection`
    and :func:`render_report` read, so a report loads only these of every defect."""
    return list(dict.fromkeys(["defect_id", "cluster", "type", "zone", "innermost_zone", "patch",
                               *feature_names, *_PROFILE]))


def report_selection(index: pd.DataFrame, labels: pd.DataFrame, params: dict,
                     feature_names) -> tuple[list[str], list[str]]:
    """Defect ids whose patches and image ids whose overlays the report embeds."""
    worst = worst_images(labels, int(params["worst_images"]))
    if not len(index):
        return [], worst
    reps = cluster_representatives(feature_matrix(index, feature_names), index["cluster"].astype(str),
                                   int(params["montage_size"]))
    rows = sorted({r for v in reps.values() for r in v["closest"] + v["farthest"]})
    return index["defect_id"].iloc[rows].tolist(), worst


# ------------------------------------------------------------------------------ HTML
_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1280px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f2f2f2}.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;overflow-wrap:anywhere}
.fail{color:#b00020;font-weight:bold}.pass{color:#1b5e20}.muted{color:#777;font-size:12px}img{max-width:100%}
.kpi{display:inline-block;margin-right:24px;font-size:14px}.kpi b{font-size:22px;display:block}
"""


def _table(frame: pd.DataFrame, max_rows: int | None = None) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    note = f'<p class="muted">{len(frame) - len(shown)} more rows in the tables.</p>' if len(shown) < len(frame) else ""
    return shown.to_html(index=False, escape=True, border=0, na_rep="", float_format=lambda v: f"{v:.3g}") + note


def reason_kind(reason: str) -> str:
    """The kind of a reject reason: its text before the first ``:``, without the
    measured number or the decoder's remark in brackets that ends it, so that reasons
    differing only in values group.

    >>> reason_kind("low fit confidence 0.18: a circular edge supports ...")
    'low fit confidence'
    >>> reason_kind("corrupt or truncated PNG data, cannot decode (PNG input buffer is incomplete)")
    'corrupt or truncated PNG data, cannot decode'
    """
    head = re.sub(r"\s*\([^()]*\)$", "", str(reason).split(":", 1)[0])
    return re.sub(r"\s*[-+]?\d[\d.]*$", "", head) or str(reason)


def _pass_class(frame_html: str) -> str:
    return frame_html.replace("<td>fail</td>", '<td class="fail">fail</td>').replace("<td>pass</td>", '<td class="pass">pass</td>')


def render_report(images: pd.DataFrame, labels: pd.DataFrame, index: pd.DataFrame,
                  patches: dict[str, np.ndarray], overlays: dict[str, np.ndarray], params: dict,
                  run_info: dict, feature_names, zone_names: dict[int, str]) -> str:
    """The run's QC report as one self-contained HTML page.

    Parameters
    ----------
    images : pandas.DataFrame
        ``image_level/images.parquet`` (every input, ``status``, ``reason``, ``split``).
    labels : pandas.DataFrame
        ``image_level/image_labels.parquet`` (accepted images).
    index : pandas.DataFrame
        ``defect_library/index.parquet`` (every defect with features, cluster, type).
    patches, overlays : dict
        Arrays for the ids chosen by :func:`report_selection`.
    params : dict
        The config's ``report:`` section.
    run_info : dict
        ``version``, ``input_dir``, ``fiber_type`` and other lines for the header.
    feature_names : list of str
        Defect features of the embedding and cluster montages
        (``features.DEFECT_FEATURE_NAMES``).
    zone_names : dict
        Zone id -> name (``zones.ZONE_NAMES``).

    Returns
    -------
    str
        HTML text.
    """
    accepted = images[images["status"] == "ok"]
    rejected = images[images["status"] != "ok"]
    n_fail = int((labels["pass_fail"] == "fail").sum()) if len(labels) else 0
    parts = [f"<h1>fiberprep QC report</h1><p class='muted'>{html.escape(' · '.join(f'{k}: {v}' for k, v in run_info.items()))}</p>"]
    kpis = [("inputs", len(images)), ("accepted", len(accepted)), ("rejected", len(rejected)),
            ("defects", len(index)), ("fail (IEC)", n_fail), ("pass (IEC)", len(labels) - n_fail)]
    parts.append("<div>" + "".join(f'<span class="kpi"><b>{v}</b>{k}</span>' for k, v in kpis) + "</div>")

    parts.append("<h2>Rejected inputs</h2>")
    if len(rejected):
        kinds = rejected.assign(kind=rejected["reason"].map(reason_kind))
        reasons = (kinds.groupby("kind").agg(images=("reason", "size"), example=("reason", "first"))
                   .reset_index().sort_values(["images", "kind"], ascending=[False, True]))
        parts.append(_table(reasons.rename(columns={"kind": "reason"}))
                     + _table(rejected[["image_id", "rel_path", "reason"]], int(params["max_table_rows"])))
    else:
        parts.append("<p>None: every input was accepted.</p>")
    dups = images[images["duplicate_of"].notna()] if "duplicate_of" in images.columns else images.iloc[:0]
    if len(dups):
        parts.append(f"<h2>Duplicate files</h2><p>{len(dups)} files hold the same bytes as another "
                     f"file ({dups['duplicate_of'].nunique()} pictures); the files of a picture share "
                     "one split.</p>" + _table(dups[["image_id", "rel_path", "duplicate_of", "status"]],
                                               int(params["max_table_rows"])))

    parts.append("<h2>Geometry</h2><div class='grid'>")
    for col, unit in (("cladding_radius_px", "px"), ("core_offset_um", "µm"), ("um_per_px", "µm/px")):
        if col in labels.columns:
            parts.append(svg_histogram(labels[col], col, unit))
    parts.append("</div>")

    parts.append("<h2>Defects by type and zone</h2><div class='grid'>")
    type_names = list(datasets.DEFECT_CLASSES.values())
    colours = {n: _hex(datasets.DEFECT_COLOURS[c]) for c, n in datasets.DEFECT_CLASSES.items()}
    if len(index):
        zone_col = "innermost_zone" if "innermost_zone" in index.columns else "zone"
        by = pd.crosstab(index[zone_col], index["type"]).reindex(columns=[t for t in type_names if t in set(index["type"])] + sorted(set(index["type"]) - set(type_names)), fill_value=0)
        by.index = [zone_names.get(int(z), str(z)) for z in by.index]
        by = by.rename_axis(index="zone", columns=None)
        parts.append(svg_stacked_bars(by, colours, "defects per zone", "zone (innermost touched)"))
        parts.append("<div>" + _table(by.reset_index()) + "</div>")
    else:
        parts.append("<p>No defects found.</p>")
    parts.append("</div>")

    if len(index):
        x = feature_matrix(index, feature_names)
        emb = embedding_2d(x)
        cluster_type = index.groupby(index["cluster"].astype(str))["type"].agg(lambda t: t.value_counts().index[0])
        cluster_type = cluster_type.to_dict()  # (a Series look-up per defect cost 0.6 s at 39 000)
        cl = [f"{c} {cluster_type[c]}" for c in index["cluster"].astype(str)]
        palette = _cluster_colours(sorted(set(cl)))
        keep = _subsample(len(index), int(params["max_points"]))
        tips = [f"{d} · cluster {c} · {t}" for d, c, t in zip(index["defect_id"], cl, index["type"])]
        parts.append("<h2>Defect embedding (PCA of standardised features)</h2>")
        parts.append(svg_scatter(emb[keep], [cl[k] for k in keep], palette, f"{len(index)} defects, coloured by cluster"
                                 + (f" ({len(keep)} shown)" if len(keep) < len(index) else ""), [tips[k] for k in keep]))
        parts.append("<h2>Clusters</h2>")
        parts.append(_cluster_sections(index, x, patches, params, palette))

    parts.append("<h2>Worst images</h2><div class='grid'>")
    shown = [i for i in worst_images(labels, int(params["worst_images"])) if i in overlays]
    for iid in shown:
        row = labels.set_index("image_id").loc[iid]
        img = fit_width(overlays[iid], int(params["overlay_width_px"]))
        parts.append(f"<div class='card' style='max-width:{img.shape[1]}px'><img alt='{html.escape(iid)}' src='{data_uri(img, '.jpg')}'>"
                     f"<div><b>{html.escape(iid)}</b> · <span class='{row['pass_fail']}'>{html.escape(str(row['pass_fail']))}</span>"
                     f" · {int(row['n_defects'])} defects · primary {html.escape(str(row['primary_defect']))}</div>"
                     f"<div class='muted'>{html.escape(str(row.get('failures', '')))}</div></div>")
    if not shown:
        parts.append("<p>No accepted images.</p>")
    parts.append("</div>")

    parts.append("<h2>Pass / fail (IEC 61300-3-35)</h2>")
    if len(labels):
        cols = [c for c in ["image_id", "pass_fail", "split", "n_defects", "primary_defect", "failures"] if c in labels.columns]
        order = labels.loc[labels["image_id"].isin(worst_images(labels, len(labels)))].set_index("image_id").loc[worst_images(labels, len(labels))].reset_index()
        parts.append(_pass_class(_table(order[cols], int(params["max_table_rows"]))))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fiberprep QC report</title>"
            f"<style>{_CSS}</style></head><body>" + "".join(parts) + "</body></html>\n")


def _cluster_colours(names: list[str]) -> dict[str, str]:
    """Distinct colours for cluster names (golden-angle hues, deterministic)."""
    out = {}
    for k, name in enumerate(names):
        hsv = np.uint8([[[int(k * 0.618034 * 180) % 180, 200, 210]]])
        out[name] = _hex(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
    return out


def _subsample(n: int, max_points: int) -> list[int]:
    """Evenly spaced row positions (all rows when ``n <= max_points``)."""
    if n <= max_points:
        return list(range(n))
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(int)).tolist()


_PROFILE = ["area_um2", "length_um", "width_um", "equivalent_diameter_um", "eccentricity", "contrast", "circularity", "severity_score"]


def _cluster_sections(index: pd.DataFrame, x: np.ndarray, patches: dict, params: dict, palette: dict) -> str:
    reps = cluster_representatives(x, index["cluster"].astype(str), int(params["montage_size"]))
    prof_cols = [c for c in _PROFILE if c in index.columns]
    profile = index[prof_cols].apply(pd.to_numeric, errors="coerce").groupby(index["cluster"].astype(str)).median()
    out = []
    for c, sel in reps.items():
        members = index[index["cluster"].astype(str) == c]
        types = members["type"].value_counts()
        head = (f"<h3><span style='color:{palette.get(f'{c} {types.index[0]}', '#888')}'>■</span> cluster {html.escape(c)}: "
                f"{html.escape(str(types.index[0]))} · {len(members)} defects</h3>")
        body = []
        for what in ("closest", "farthest"):
            ids = [index["defect_id"].iloc[r] for r in sel[what]]
            ps = [patches[i] for i in ids if i in patches]
            if ps:
                sheet = library.contact_sheet(ps, tile_px=int(params["tile_px"]), columns=int(params["montage_size"]))
                body.append(f"<div><div class='muted'>{what} to the centroid</div><img alt='cluster {html.escape(c)} {what}' src='{data_uri(sheet)}'></div>")
        prof = profile.loc[[c]].reset_index() if c in profile.index else pd.DataFrame()
        out.append("<div class='card'>" + head + "<div class='grid'>" + "".join(body) + "</div>" + _table(prof) + "</div>")
    return "".join(out)
