"""Severity per defect and IEC 61300-3-35 pass/fail per zone and per image.

The acceptance criteria are data (``criteria:`` in config/config.yaml), one entry per
edition and fiber class, so a user can follow another edition or an in-house table
without touching code. An entry looks like::

    edition: IEC 61300-3-35 Ed. 2.0 (2015)
    source: ...
    zones:
      cladding:                       # zone key as in fiber_types.*.zones_um
        scratches:                    # size = width (µm)
          - {over_um: 3, max_count: 0}            # none wider than 3 µm
        defects:                      # size = largest dimension (µm)
          - {size_um: [2, 5], max_count: 5}       # at most 5 of 2-5 µm (inclusive)
          - {over_um: 5, max_count: 0}            # none larger than 5 µm

A rule counts the scratches (or defects) whose size lies in ``size_um`` (closed
interval) or exceeds ``over_um`` (strictly) and fails when the count is above
``max_count``. Sizes without a rule have no limit; a zone without rules has no limit.

Following the standard's worked examples, a defect touching several zones is judged
in the innermost one (``innermost_zone`` column, else ``zone``); a defect's size is
its largest dimension (``feret_um``, else ``length_um``), a scratch's size its width
(``profile_width_um``, else ``width_um``) (:func:`defect_size_um`);
"defects" are every type except scratches (pits, digs, chips, contamination, other).

References
----------
.. [1] IEC 61300-3-35:2015, Fibre optic interconnecting devices and passive
       components - Basic test and measurement procedures - Part 3-35: Examinations
       and measurements - Visual inspection of fibre optic connectors and fibre-stub
       transceivers, Ed. 2.0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .zones import GRADED_ZONES, ZONE_IDS

# Letters of the standard's tables for the graded zones (core A ... contact D).
ZONE_LETTERS: dict[str, str] = dict(zip(GRADED_ZONES, "ABCD"))
SCRATCH = "scratch"


def _judged_zone(defects: pd.DataFrame) -> np.ndarray:
    col = "innermost_zone" if "innermost_zone" in defects else "zone"
    return np.nan_to_num(defects[col].to_numpy(dtype=float, na_value=np.nan), nan=0.0).astype(np.int64)


def _is_scratch(defects: pd.DataFrame) -> np.ndarray:
    # (numpy on the column's values: a pandas comparison costs ~0.3 ms per image's table)
    return defects["type"].to_numpy() == SCRATCH


def defect_size_um(defects: pd.DataFrame, is_scratch: np.ndarray | None = None) -> np.ndarray:
    """IEC size of each defect: width for scratches, largest dimension otherwise
    (``is_scratch``: which rows are scratches, when the caller has it).

    Where :mod:`fiberprep.features` measured them, the width is the cross profile's
    full width at half maximum (``profile_width_um``) and the largest dimension the
    half-contrast outline's Feret diameter (``feret_um``); else ``width_um`` and the
    larger of ``length_um`` and ``width_um`` (the detector's mask, or a truth table's
    outline).
    """
    def measured(column, fallback):
        if column not in defects:
            return fallback
        value = defects[column].to_numpy(float)
        return np.where(np.isfinite(value), value, fallback)

    width = defects["width_um"].to_numpy(float)
    largest = measured("feret_um", np.fmax(defects["length_um"].to_numpy(float), width))
    scratch = _is_scratch(defects) if is_scratch is None else is_scratch
    return np.where(scratch, measured("profile_width_um", width), largest)


def _fmt(x: float) -> str:
    return f"{x:g}"


def _rule_band(rule: dict) -> tuple[float, float, bool, str]:
    """(low, high, low_inclusive, text) of a rule's size band."""
    if "over_um" in rule:
        return float(rule["over_um"]), np.inf, False, f"> {_fmt(rule['over_um'])} µm"
    lo, hi = rule["size_um"]
    hi = np.inf if hi is None else float(hi)
    if np.isinf(hi):
        text = "of any size" if lo <= 0 else f"≥ {_fmt(lo)} µm"
    else:
        text = f"≤ {_fmt(hi)} µm" if lo <= 0 else f"{_fmt(lo)}–{_fmt(hi)} µm"
    return float(lo), hi, True, text


def _check(sizes: np.ndarray, rules: list[dict], noun: str, letter: str) -> list[str]:
    failures = []
    for rule in rules or []:
        lo, hi, lo_incl, band = _rule_band(rule)
        inside = ((sizes >= lo) if lo_incl else (sizes > lo)) & (sizes <= hi)
        n, allowed = int(inside.sum()), rule.get("max_count")
        if allowed is not None and n > allowed:
            what = noun if n == 1 else noun + ("es" if noun.endswith("ch") else "s")
            limit = ", none allowed" if allowed == 0 else f" > {allowed} allowed"
            failures.append(f"zone {letter}: {n} {what} {band}{limit}")
    return failures


def zone_verdicts(defects: pd.DataFrame, criteria: dict) -> list[dict]:
    """IEC pass/fail of each graded zone (A-D) of one image, as plain rows (a table per
    image cost more than the grading; the workflow makes one of a shard's rows).

    Parameters
    ----------
    defects : DataFrame
        The image's defects with ``type``, ``length_um``, ``width_um`` (and
        ``feret_um``, ``profile_width_um`` when measured) and ``innermost_zone`` (or
        ``zone``).
    criteria : dict
        One entry of the config's ``criteria:`` section (see module docstring).

    Returns
    -------
    list of dict
        One per graded zone: ``zone`` (id), ``zone_letter``, ``n_scratches``,
        ``n_defects``, ``pass_fail`` (pass | fail) and ``failures`` (``"; "``-joined
        texts such as ``zone B: 6 defects 2–5 µm > 5 allowed``; empty when passing).
    """
    zone = _judged_zone(defects)
    is_scratch = _is_scratch(defects)
    size = defect_size_um(defects, is_scratch)
    rules = criteria.get("zones", {})
    rows = []
    for key in GRADED_ZONES:
        zid, letter = ZONE_IDS[key], ZONE_LETTERS[key]
        z = rules.get(key) or {}
        in_zone = zone == zid
        fails = (_check(size[in_zone & is_scratch], z.get("scratches"), "scratch", letter)
                 + _check(size[in_zone & ~is_scratch], z.get("defects"), "defect", letter))
        rows.append({"zone": zid, "zone_letter": letter,
                     "n_scratches": int((in_zone & is_scratch).sum()),
                     "n_defects": int((in_zone & ~is_scratch).sum()),
                     "pass_fail": "fail" if fails else "pass", "failures": "; ".join(fails)})
    return rows


def grade_image(defects: pd.DataFrame, criteria: dict, zones: list[dict] | None = None) -> dict:
    """IEC 61300-3-35 pass/fail of one image from its typed defects.

    Parameters
    ----------
    defects, criteria
        As in :func:`zone_verdicts`.
    zones : list of dict, optional
        :func:`zone_verdicts` of the same image, when the caller already has them.

    Returns
    -------
    dict
        ``pass_fail`` (pass | fail), ``failures`` (list of texts naming each failing
        criterion, innermost zone first), ``zones`` ({letter: pass | fail}) and
        ``criteria`` (the entry's edition text).
    """
    zones = zone_verdicts(defects, criteria) if zones is None else zones
    failures = [t for z in zones if z["failures"] for t in z["failures"].split("; ")]
    return {"pass_fail": "fail" if failures else "pass", "failures": failures,
            "zones": {z["zone_letter"]: z["pass_fail"] for z in zones},
            "criteria": criteria.get("edition", "")}


def severity(defects: pd.DataFrame, params: dict) -> pd.DataFrame:
    """Severity score in [0, 1) and level (low | medium | high) of each defect.

    The score grows with size relative to a reference size, weighted by type and by
    the zone the defect is judged in (core matters most, ferrule least)::

        score = 1 - exp(-type_weight · zone_weight · size_um / reference_um)

    with ``size_um`` the IEC size (scratch width, else largest dimension).

    Parameters
    ----------
    defects : DataFrame
        ``type``, ``length_um``, ``width_um`` (and ``feret_um``, ``profile_width_um``
        when measured), ``innermost_zone`` (or ``zone``).
    params : dict
        The config's ``severity:`` section: ``reference_um``, ``type_weights``
        ({type: w}, unknown types weigh ``type_weights['other']``), ``zone_weights``
        ({zone id: w}, zone 0 weighs 0) and ``levels`` ({medium: s, high: s}
        score thresholds).

    Returns
    -------
    DataFrame
        ``severity_score`` and ``severity_level``, indexed like ``defects``.
    """
    tw = params["type_weights"]
    zw = {int(k): float(v) for k, v in params["zone_weights"].items()}
    w_type = defects["type"].map(lambda t: tw.get(t, tw["other"])).to_numpy(float)
    w_zone = np.array([zw.get(z, 0.0) for z in _judged_zone(defects)])
    size = np.nan_to_num(defect_size_um(defects))
    score = 1.0 - np.exp(-w_type * w_zone * size / float(params["reference_um"]))
    lv = params["levels"]
    level = np.where(score >= lv["high"], "high", np.where(score >= lv["medium"], "medium", "low"))
    return pd.DataFrame({"severity_score": score, "severity_level": level}, index=defects.index)
