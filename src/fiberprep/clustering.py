"""Unsupervised defect types: clustering of defect features, naming, review and matching.

All defects of all images are clustered together in a scaled (and optionally
PCA-reduced) feature space. The fit runs on a bounded, seeded random subsample so its
cost does not grow with the collection; every defect is then assigned to the nearest
centroid (unless the defect's own features rule out that cluster's type), which is
also how defects of images added later are labelled without moving old ones. Clusters
are named by readable rules over their centroid in the original, named features, and an
engineer's review mapping (cluster -> type, merges) is applied on top. A refit is
matched to the previous model by centroid (Hungarian assignment) so cluster ids, and
hence reviewed names, stay put.

The model is a plain dict of NumPy arrays and Python values, so the per-shard
``dataset_shard`` jobs assign defects without importing scikit-learn (about 1 s of start-up
per job): ``feature_names``, ``transforms``, ``scaler`` ({``center``, ``scale``} of the
fitted scikit-learn scaler), ``pca`` (``None`` or {``mean``, ``components``}),
``centroids`` (model space),
``cluster_ids`` (id of each centroid row), ``centroids_raw`` ({cluster:
{feature: median}} over every numeric feature), ``sizes``, ``silhouette`` ({k: score}),
``names`` ({cluster: {type, rule}}) and ``params``.

References
----------
.. [1] P. J. Rousseeuw, "Silhouettes: a graphical aid to the interpretation and
       validation of cluster analysis", J. Comput. Appl. Math. 20, 1987.
.. [2] R. J. G. B. Campello, D. Moulavi, J. Sander, "Density-based clustering based on
       hierarchical density estimates", PAKDD 2013 (HDBSCAN).
.. [3] H. W. Kuhn, "The Hungarian method for the assignment problem", Naval Res.
       Logist. Q. 2, 1955.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .datasets import DEFECT_CLASSES

# scikit-learn and SciPy are imported by the functions that fit or match models.
METHODS = ("kmeans", "agglomerative", "hdbscan")
TRANSFORMS = ("log", "near", "tanh")
# Rounds of the member rules in assign_clusters (a moved defect is checked again where it lands).
_MOVE_ROUNDS = 3


def _transform_column(x: np.ndarray, kind: str, c: float) -> np.ndarray:
    """One feature column through a ``transforms`` entry ``[kind, c]``."""
    if kind == "log":                # decades -> units; signed values keep their sign
        return np.sign(x) * np.log10(1.0 + np.abs(x) / c)
    if kind == "near":               # proximity: 1 at 0, 0 far away or absent (NaN)
        return np.nan_to_num(np.exp(-np.abs(x) / c), nan=0.0)
    if kind == "tanh":               # signed, saturating beyond about c
        return np.tanh(x / c)
    raise ValueError(f"clustering.transforms: unknown kind {kind!r}; allowed: {', '.join(TRANSFORMS)}")


def _matrix(model: dict, features: pd.DataFrame) -> np.ndarray:
    """Raw feature matrix through the model's per-feature ``transforms`` (NaN kept
    except where the transform defines it)."""
    missing = [c for c in model["feature_names"] if c not in features]
    if missing:
        raise ValueError(f"features table lacks clustering features {missing}")
    X = features[model["feature_names"]].to_numpy(dtype=float, copy=True)
    # Models saved before ``transforms`` existed carry ``log_features`` ({name: c}).
    transforms = model.get("transforms") or {
        f: ("log", c) for f, c in model.get("log_features", {}).items()}
    for j, name in enumerate(model["feature_names"]):
        if name in transforms:
            kind, c = transforms[name]
            X[:, j] = _transform_column(X[:, j], kind, float(c))
    return X


def _scaled(model: dict, features: pd.DataFrame) -> np.ndarray:
    """Transforms and scaling; missing values become the centre (0)."""
    scaler = model["scaler"]
    if not isinstance(scaler, dict):  # models saved with the scikit-learn scaler object
        scaler = {"center": getattr(scaler, "center_", getattr(scaler, "mean_", None)),
                  "scale": scaler.scale_}
    X = _matrix(model, features) - scaler["center"]
    X /= scaler["scale"]
    return np.nan_to_num(X, nan=0.0, posinf=0.0, neginf=0.0)


def _transform(model: dict, features: pd.DataFrame) -> np.ndarray:
    """Features -> model space: :func:`_scaled`, then the optional PCA."""
    X = _scaled(model, features)
    pca = model["pca"]
    return X if pca is None else (X - pca["mean"]) @ pca["components"].T


def _distances(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each row of ``X`` to each centroid, up to a
    per-row constant (enough to rank the centroids)."""
    return (centroids**2).sum(axis=1) - 2.0 * X @ centroids.T


def _nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Row index of the nearest centroid (Euclidean) of each row of ``X``."""
    return np.argmin(_distances(X, centroids), axis=1)


def _estimator(method: str, k: int | None, params: dict):
    from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans

    if method == "kmeans":
        return KMeans(n_clusters=k, n_init=int(params["n_init"]), random_state=int(params["seed"]))
    if method == "agglomerative":
        return AgglomerativeClustering(n_clusters=k, linkage=params["linkage"])
    return HDBSCAN(min_cluster_size=int(params["min_cluster_size"]), copy=True)


def _choose_k(X: np.ndarray, method: str, params: dict, rng) -> tuple[int, dict[int, float]]:
    """k with the best silhouette over ``k_range`` on a subsample."""
    from sklearn.metrics import silhouette_score

    n = min(len(X), int(params["silhouette_samples"]))
    Xs = X[rng.choice(len(X), n, replace=False)] if n < len(X) else X
    lo, hi = params["k_range"]
    scores = {}
    for k in range(int(lo), min(int(hi), n - 1) + 1):
        labels = _estimator(method, k, params).fit_predict(Xs)
        scores[k] = float(silhouette_score(Xs, labels)) if len(set(labels)) > 1 else -1.0
    if not scores:                   # fewer defects than k_range: one cluster per defect
        return min(int(lo), len(X)), scores
    return max(scores, key=scores.get), scores


def fit_model(features: pd.DataFrame, params: dict, previous: dict | None = None) -> dict:
    """Fit scaler, optional PCA and the clustering on a seeded subsample of defects.

    Parameters
    ----------
    features : DataFrame
        Defect features (``features.defect_features`` rows of all images).
    params : dict
        The config's ``clustering:`` section: ``method`` (kmeans | agglomerative |
        hdbscan), ``features``, ``transforms`` ({name: [log | near | tanh, scale]}),
        ``scaler`` (standard | robust), ``pca_components``
        (null, int or variance fraction), ``k`` (int or ``auto``), ``k_range``,
        ``silhouette_samples``, ``max_fit_samples``, ``n_init``, ``linkage``,
        ``min_cluster_size``, ``seed`` and ``naming`` (rules of :func:`name_clusters`).
    previous : dict, optional
        A previously fitted model: the new clusters are matched to its clusters
        (:func:`match_clusters`) and keep their ids (so a reviewed type stays with
        its cluster); their automatic names are their own.

    Returns
    -------
    dict
        The model (see module docstring). Cluster ids are 0..k-1 ordered by size,
        largest first (without ``previous``).
    """
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import RobustScaler, StandardScaler

    method = params["method"]
    if method not in METHODS:
        raise ValueError(f"clustering.method={method!r}; allowed: {', '.join(METHODS)}")
    rng = np.random.default_rng(int(params["seed"]))
    n_fit = min(len(features), int(params["max_fit_samples"]))
    idx = np.sort(rng.choice(len(features), n_fit, replace=False))
    sample = features.iloc[idx]
    model = {
        "method": method, "feature_names": list(params["features"]),
        "transforms": dict(params.get("transforms") or {}), "params": dict(params),
        "scaler": None, "pca": None, "silhouette": {},
    }
    if len(sample) == 0:             # no defect anywhere yet: a model without clusters
        model.update(centroids=np.zeros((0, len(model["feature_names"]))),
                     cluster_ids=np.zeros(0, np.int64), centroids_raw={}, sizes={},
                     fit_rows=0, names={})
        return model
    # A feature no defect has (no fiber edge anywhere in a collection of close-ups,
    # zones.mode none) gets NaN statistics, so it scales to 0 for every defect: ignored.
    scaler = {"robust": RobustScaler, "standard": StandardScaler}[params["scaler"]]()
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        scaler.fit(_matrix(model, sample))
    center = scaler.center_ if params["scaler"] == "robust" else scaler.mean_
    model["scaler"] = {"center": center, "scale": scaler.scale_}
    X = _scaled(model, sample)
    if params.get("pca_components"):
        pca = PCA(n_components=params["pca_components"], random_state=int(params["seed"])).fit(X)
        model["pca"] = {"mean": pca.mean_, "components": pca.components_}
        X = _transform(model, sample)
    k, scores = None, {}
    if method != "hdbscan":
        k = params["k"]
        if k == "auto":
            k, scores = _choose_k(X, method, params, rng)
        k = min(int(k), len(X))
    if len(X) < 2 or (method == "hdbscan" and len(X) <= int(params["min_cluster_size"])):
        labels = np.zeros(len(X), int)   # too few defects to split: one cluster
    else:
        labels = _estimator(method, k, params).fit_predict(X)
    ids = [c for c in np.unique(labels) if c >= 0]
    if not ids:                      # HDBSCAN found only noise: one cluster
        labels, ids = np.zeros(len(X), int), [0]
    centroids = np.stack([X[labels == c].mean(axis=0) for c in ids])
    # Every fit row (HDBSCAN noise included) goes to its nearest centroid: the sample the
    # clusters are summarised and named on (assign_clusters adds the member rules).
    labels = _nearest(X, centroids)
    order = np.argsort(-np.bincount(labels, minlength=len(ids)), kind="stable")
    centroids = centroids[order]
    labels = np.argsort(order)[labels]
    model["centroids"] = centroids
    model["cluster_ids"] = np.arange(len(ids))
    model["silhouette"] = scores
    _summarise(model, sample, labels)
    model["names"] = name_clusters(model)
    _add_rule_chips(model, X, sample, labels)
    if previous is not None:
        model = relabel(model, match_clusters(previous, model))
    return model


def _add_rule_chips(model: dict, X: np.ndarray, sample: pd.DataFrame, labels: np.ndarray) -> None:
    """One more cluster, named chip, of the fit rows the chip member rules claim, when
    the clusters hold no chip and at least ``naming.chip_min_members`` rows meet them
    (:func:`_rule_chips`).

    Chips are a small share of a folder's defects and lie in shape space among pits
    and scratches: the clustering can leave them without a cluster of their own, and
    then the member rules of :func:`assign_clusters` that send a notch or a crescent at
    the edge to a chip cluster have none to send it to. Their rows (``X``: the fit
    sample transformed, ``labels``: its clusters) form the new cluster; its centroid is
    their mean, the others are summarised and named again without them.
    """
    types = np.array([model["names"][int(c)]["type"] for c in model["cluster_ids"]])
    if (types == "chip").any():
        return
    rows = _rule_chips(model, sample, types, labels)
    n_min = int(model["params"]["naming"]["chip_min_members"])
    if rows.sum() < max(n_min, 1):
        return
    chip = len(model["cluster_ids"])
    labels = np.where(rows, chip, labels)
    model["centroids"] = np.vstack([model["centroids"], X[rows].mean(axis=0)])
    model["cluster_ids"] = np.arange(chip + 1)
    _summarise(model, sample, labels)
    model["names"] = name_clusters(model)
    if model["names"][chip]["type"] != "chip":
        model["names"][chip] = {"type": "chip", "rule": f"chip: {int(rows.sum())} defects meeting "
                                "the member rules (a notch or crescent at the edge), no chip cluster"}


def _summarise(model: dict, sample: pd.DataFrame, labels: np.ndarray) -> None:
    """Store cluster sizes and raw-feature medians (every numeric column)."""
    numeric = sample.select_dtypes("number")
    med = numeric.groupby(labels).median()
    model["centroids_raw"] = {int(c): {k: float(v) for k, v in row.items()}
                              for c, row in med.iterrows()}
    model["sizes"] = {int(c): int(n) for c, n in zip(*np.unique(labels, return_counts=True))}
    model["fit_rows"] = int(len(sample))


def _column(features: pd.DataFrame, name: str) -> np.ndarray:
    """A feature column as floats (NaN for every row when the table lacks it)."""
    return features[name].to_numpy(float) if name in features else np.full(len(features), np.nan)


def _chip_gap(naming: dict) -> float:
    """Farthest a chip's member lies from the edge (µm); models saved before
    ``chip_max_gap_um`` existed: the centroid limit."""
    return float(naming.get("chip_max_gap_um", naming["chip_max_edge_distance_um"]))


def _rule_chips(model: dict, features: pd.DataFrame, types: np.ndarray, near: np.ndarray) -> np.ndarray:
    """Rows the chip member rules claim for a chip cluster (``types`` of the clusters,
    ``near`` each row's nearest cluster): a dark notch breaking the edge from inside,
    nearest to a non-chip cluster (a folder's chip cluster can form around pits beside
    the edge), and a dark crescent along the edge, inside it, of a scratch cluster or,
    as dark as a notch, of a contamination cluster (glass broken off along the edge,
    elongated but no scratch: a scratch crosses the edge or runs apart; no particle:
    one on the edge straddles it)."""
    naming, col, gap = model["params"]["naming"], lambda f: _column(features, f), _chip_gap(model["params"]["naming"])
    with np.errstate(invalid="ignore"):
        notch = (types[near] != "chip") & np.logical_and.reduce(
            [_cmp(col(f), op, float(t)) for f, op, t in _chip_conditions(naming, gap)]
        )
        if "chip_crescent_max_angle_deg" not in naming:
            return notch
        across = np.radians(col("orientation_deg") - col("angle_deg"))
        notch_dark = np.logical_and.reduce([_cmp(col(f), op, float(t)) for f, op, t in _chip_dark(naming)])
        dark = np.where(types[near] == "scratch", col("local_snr") < 0,
                        (types[near] == "contamination") & notch_dark)
        crescent = (dark
                    & (np.abs(np.sin(across)) >= np.cos(np.radians(float(naming["chip_crescent_max_angle_deg"]))))
                    & (col("cladding_edge_distance_um") <= gap)
                    & (col("cladding_overhang_um") <= float(naming["chip_max_overhang_um"]))
                    & (col("length_um") <= float(naming["chip_crescent_max_length_um"])))
    return notch | crescent


def _member_moves(model: dict, features: pd.DataFrame, types: np.ndarray,
                  near: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """Defects whose nearest cluster's automatic type their own features rule out, or
    that are plainly another type: [(rows, type of the clusters they go to instead, or
    "" for any other type)]."""
    naming = model["params"]["naming"]

    def col(name):
        return _column(features, name)

    with np.errstate(invalid="ignore"):
        chip, pit, scratch = (types[near] == t for t in ("chip", "pit_dig", "scratch"))
        debris = chip & (col("cladding_overhang_um") > float(naming["chip_max_overhang_um"]))
        apart = chip & ~debris & ~(col("cladding_edge_distance_um") <= _chip_gap(naming))
        moves = [(debris, "contamination"), (apart, "")]
        if "scratch_min_member_line_aspect_ratio" in naming:
            # (before the moves to a given type: "" excludes the type a row has when it moves)
            compact = scratch & (col("aspect_ratio") < float(naming["scratch_min_member_line_aspect_ratio"]))
            moves.append((compact, ""))
        if "pit_max_member_aspect_ratio" in naming:
            elongated = pit & (col("aspect_ratio") > float(naming["pit_max_member_aspect_ratio"]))
            moves.append((elongated, "contamination"))
        if "pit_max_member_diameter_um" in naming:
            wide = pit & (col("equivalent_diameter_um") > float(naming["pit_max_member_diameter_um"]))
            moves.append((wide, "contamination"))
        if "pit_max_member_snr" in naming:
            bright = pit & (col("local_snr") > float(naming["pit_max_member_snr"]))
            moves.append((bright, "contamination"))
        if "pit_roughness_min_area_px" in naming:
            ragged = pit & (col("outline_roughness") > float(naming["pit_max_member_roughness"])) & (
                col("area_px") >= float(naming["pit_roughness_min_area_px"]))
            moves.append((ragged, "contamination"))
        # (a model saved before pit_max_member_crowd existed: no image is a crowd)
        crowded = col("image_compact_defects") >= float(naming.get("pit_max_member_crowd", np.inf))
        moves.append((pit & crowded, "contamination"))
        if "pit_min_member_solidity" in naming and (types == "pit_dig").any():
            # a contamination cluster named so for its median solidity alone mixes holes
            # and particles: its dark, compact, smooth, solid and evenly dark members are holes,
            # unless they lie among a crowd (the rule above would send them back: the rounds
            # would end on whichever rule ran last)
            mixed = np.array([t == "contamination" and _pit_but_for_solidity(
                model["centroids_raw"].get(int(c), {}), naming) for c, t in zip(model["cluster_ids"], types)])
            hole = (mixed[near] & ~crowded & (col("local_snr") <= float(naming["pit_max_snr"]))
                    & (col("aspect_ratio") <= float(naming["pit_max_member_aspect_ratio"]))
                    & (col("outline_roughness") <= float(naming["pit_max_member_roughness"]))
                    & (col("solidity") >= float(naming["pit_min_member_solidity"]))
                    & (col("contrast_variation") <= float(naming["pit_max_member_contrast_variation"]))
                    & (col("equivalent_diameter_um") <= float(naming["pit_max_diameter_um"])))
            moves.append((hole, "pit_dig"))
        if "scratch_max_member_width_um" in naming:
            wide = scratch & (col("width_um") > float(naming["scratch_max_member_width_um"]))
            moves.append((wide, "contamination"))
        if "scratch_min_member_bend_radius_um" in naming:
            # (a model with the thin-line rule below has this key too)
            curls = col("bend_radius_um") < float(naming["scratch_min_member_bend_radius_um"])
            if "scratch_max_member_wiggle_um" in naming:
                curls |= col("skeleton_wiggle_um") > float(naming["scratch_max_member_wiggle_um"])
            if "scratch_max_bent_wiggle_um" in naming:
                # a line that bends and snakes too: a polish scratch's arc is smooth
                curls |= (col("bend_radius_um") < float(naming["scratch_max_bent_radius_um"])) & (
                    col("skeleton_wiggle_um") > float(naming["scratch_max_bent_wiggle_um"]))
            moves.append((scratch & curls, "contamination"))
        if "scratch_min_member_aspect_ratio" in naming and (types == "scratch").any():
            thin_line = (~scratch & ~chip
                         & (col("aspect_ratio") >= float(naming["scratch_min_member_aspect_ratio"]))
                         & (col("skeleton_length_um") >= float(naming["scratch_min_length_um"]))
                         & (col("width_um") <= float(naming["scratch_max_member_width_um"]))
                         & ~curls)
            moves.append((thin_line, "scratch"))
    if (types == "chip").any():
        moves.append((_rule_chips(model, features, types, near), "chip"))
    return moves


def assign_clusters(model: dict, features: pd.DataFrame) -> np.ndarray:
    """Cluster id of each defect: its nearest model centroid, unless its own features
    rule out the automatic type of that cluster (the physical conditions of
    :func:`name_clusters` that hold for every member, not only for the median).

    - A chip is glass broken out of the cladding edge: a defect nearest to a chip
      cluster that lies farther than ``naming.chip_max_gap_um`` from the edge (a pit or
      particle near it; the cluster's median may lie up to ``chip_max_edge_distance_um``
      away) goes to its nearest non-chip cluster, and one reaching more than
      ``chip_max_overhang_um`` beyond the edge (debris caught on it) to its nearest
      contamination cluster.
    - Conversely, a dark notch breaking the edge from inside (every chip condition of
      :func:`name_clusters` met by the defect itself, within ``chip_max_gap_um`` of the
      edge) goes to its nearest chip cluster when the model has one: a folder's chip
      cluster can form around pits beside the edge, far from the notches themselves.
      So does a dark defect of a scratch cluster, or one of a contamination cluster as
      dark as a notch (``chip_max_snr``, ``chip_max_michelson``), lying along the edge, inside it (its axis
      within ``naming.chip_crescent_max_angle_deg`` of the edge's tangent, at most
      ``chip_crescent_max_length_um`` long): a crescent of glass broken off along the
      edge, where a scratch would cross it or run apart from it.
    - A pit or dig is a compact hole: a defect of a pit_dig cluster more elongated than
      ``naming.pit_max_member_aspect_ratio`` is a particle (or lint) and goes to its
      nearest contamination cluster; so does one wider than
      ``naming.pit_max_member_diameter_um`` (``equivalent_diameter_um``): a cluster named
      pit_dig for its median can hold the smaller half of a folder's films, whose larger
      half, wider than any pit, would carry the name to most of their pixels.
    - A pit's outline is a smooth fracture: a defect of a pit_dig cluster of at least
      ``naming.pit_roughness_min_area_px`` pixels whose outline is more ragged than
      ``naming.pit_max_member_roughness`` (``outline_roughness``) is a particle and goes
      to its nearest contamination cluster; so does one brighter than its surroundings
      (``local_snr`` above ``naming.pit_max_member_snr``: a hole is dark under
      bright-field light).
    - Polishing pits come a few at a time, particles in crowds on a dirty end face: a
      defect of a pit_dig cluster whose image holds at least ``naming.pit_max_member_crowd``
      compact defects (``image_compact_defects``) goes to its nearest contamination
      cluster (a dark speck of dust and a pit look alike once a few pixels wide).
    - Conversely, a contamination cluster named so for its median solidity alone (every
      other pit condition met) mixes holes and particles: a member of it that is
      clearly dark, compact, smooth, no wider than a pit, at least
      ``naming.pit_min_member_solidity`` solid and evenly dark (``contrast_variation`` at
      most ``naming.pit_max_member_contrast_variation``: no textured or light-centred
      particle) goes to its nearest pit_dig cluster, when the model has one.
    - A scratch is a thin polish groove: a defect of a scratch cluster wider than
      ``naming.scratch_max_member_width_um`` is a particle, lint or film lying on the
      glass and goes to its nearest contamination cluster; so does one that curls,
      bending tighter than ``naming.scratch_min_member_bend_radius_um``
      (``bend_radius_um``) or snaking, as one piece, farther than
      ``naming.scratch_max_member_wiggle_um`` from any arc (``skeleton_wiggle_um``), or
      both bending tighter than ``naming.scratch_max_bent_radius_um`` and snaking farther
      than ``naming.scratch_max_bent_wiggle_um``: a fibre of lint (a polish scratch runs
      straight or in a smooth, wide arc).
    - Conversely, a thin, long line that neither curls nor snakes so is a scratch: a
      defect of a non-scratch, non-chip cluster with an aspect ratio of at least
      ``naming.scratch_min_member_aspect_ratio`` that meets the scratch length, width
      and bend conditions goes to its nearest scratch cluster (none when the model has
      no scratch cluster). A folder's clusters can mix faint or short scratches with
      particles of the same size and brightness.

    (Nearest cluster of another type when the model has no contamination cluster.)
    A defect a rule moves is checked again by the rules of the cluster it lands in (a
    particle leaving a chip cluster for a scratch one may be too wide for a scratch),
    for up to ``_MOVE_ROUNDS`` rounds.
    Without these rules, edge debris and pits near the edge join the chip clusters (the
    edge features dominate their distances; a few large ones outweigh the small chips'
    pixels in the published class masks), and dark elongated particles the pit clusters.

    Assignment depends only on the saved model and the row itself, so adding images
    never moves defects already assigned.
    """
    if len(features) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(model["centroids"]) == 0:
        raise ValueError("the clustering model has no clusters (it was fitted without "
                         "defects): refit it (clustering.refit: true)")
    dist = _distances(_transform(model, features), model["centroids"])
    near = np.argmin(dist, axis=1)
    types = np.array([model["names"].get(int(c), {}).get("type") for c in model["cluster_ids"]])
    # a moved defect may break the rules of the cluster it lands in (a particle far from
    # the edge leaving a chip cluster for its nearest other one, a scratch cluster): the
    # rules run again on the defects the last round moved
    check = np.ones(len(near), bool)
    for _ in range(_MOVE_ROUNDS):
        before = near.copy()
        for rows, dest in _member_moves(model, features, types, near):
            rows &= check
            if not rows.any():
                continue
            allowed = types == dest
            if not allowed.any():        # no cluster of that type: any other type
                allowed = ~np.isin(types, np.unique(types[near[rows]]))
            if allowed.any():
                cand = np.flatnonzero(allowed)
                near[rows] = cand[np.argmin(dist[np.ix_(rows, cand)], axis=1)]
        check = near != before
        if not check.any():
            break
    return model["cluster_ids"][near].astype(np.int64)


def _cmp(value, op: str, threshold: float):
    """``value op threshold`` for op ``">="`` or ``"<="`` (scalars or arrays; NaN: False)."""
    return value >= threshold if op == ">=" else value <= threshold


def _chip_conditions(naming: dict, edge_um: float) -> list[tuple[str, str, float]]:
    """The chip rule (feature, op, threshold): within ``edge_um`` of the cladding edge,
    notch-shaped, dark and not beyond the edge (see :func:`name_clusters`)."""
    return [("cladding_edge_distance_um", "<=", edge_um),
            ("aspect_ratio", "<=", naming["chip_max_aspect_ratio"]),
            ("solidity", ">=", naming["chip_min_solidity"]),
            *_chip_dark(naming),
            ("cladding_overhang_um", "<=", naming["chip_max_overhang_um"])]


def _chip_dark(naming: dict) -> list[tuple[str, str, float]]:
    """The chip rule's darkness conditions: a notch scatters the light away (local SNR)
    and is as dark as what it opens onto (Michelson contrast; models saved before
    ``chip_max_michelson`` existed: SNR alone)."""
    dark = [("local_snr", "<=", naming["chip_max_snr"])]
    if "chip_max_michelson" in naming:
        dark.append(("michelson_contrast", "<=", naming["chip_max_michelson"]))
    return dark


def _pit_conditions(naming: dict, solidity_op: str = ">=") -> list[tuple[str, str, float]]:
    """The pit_dig rule of :func:`name_clusters`: small, compact, solid and clearly
    dark (``solidity_op`` "<=": all but the solidity, which fails)."""
    return [("equivalent_diameter_um", "<=", naming["pit_max_diameter_um"]),
            ("aspect_ratio", "<=", naming["pit_max_aspect_ratio"]),
            ("solidity", solidity_op, naming["contamination_max_solidity"]),
            ("local_snr", "<=", naming["pit_max_snr"])]


def _pit_but_for_solidity(c: dict, naming: dict) -> bool:
    """Centroid ``c`` meets every pit_dig condition of :func:`name_clusters` but the
    solidity one, with a sharp edge (no oil-like cluster)."""
    return _rule(c, [("edge_sharpness", ">=", naming["diffuse_max_edge_sharpness"]),
                     *_pit_conditions(naming, "<=")])[0]


def _rule(c: dict, conditions: list[tuple[str, str, float]]) -> tuple[bool, str]:
    """All conditions (feature, op, threshold) hold on centroid ``c``; readable text."""
    ok = all(np.isfinite(c.get(f, np.nan)) and _cmp(c[f], op, t) for f, op, t in conditions)
    text = " and ".join(f"{f}={c.get(f, np.nan):.3g} {op} {t:g}" for f, op, t in conditions)
    return ok, text


def name_clusters(model: dict) -> dict[int, dict]:
    """Name each cluster by rules over its centroid in named raw features.

    Rules, first match wins (thresholds in ``params['naming']``, physical units; the
    centroid is the median of the cluster's fit rows):

    1. chip: at the cladding edge (``cladding_edge_distance_um`` small) and not
       beyond it (``cladding_overhang_um`` small: a chip is missing glass, dust on the
       edge straddles it), notch-shaped (``aspect_ratio`` small, ``solidity`` high)
       and dark (``local_snr`` negative and ``michelson_contrast`` well below 0:
       broken glass scatters light away, a film on the glass only dims it);
    2. scratch: elongated and long (``aspect_ratio``, ``skeleton_length_um`` large);
    3. contamination, oil-like: diffuse edge (``edge_sharpness`` low: the intensity
       change is spread over several µm, as for oil films and smears);
    4. pit_dig: small, compact and clearly dark (``equivalent_diameter_um`` small,
       ``aspect_ratio`` small, ``solidity`` above the irregularity limit of rule 5: a
       hole in the glass has a closed, convex outline; ``local_snr`` strongly
       negative). The zone is not
       required to be glass: the ceramic ferrule has pits too (and the synthetic
       benchmark draws them on both), and the features table carries no zone;
    5. contamination, dust-like: sharp-edged but bright or faint (``local_snr``
       above the pit level) or irregular (``solidity`` low), any zone;
    6. contamination, large: compact but wider than any pit (``equivalent_diameter_um``
       above the pit limit), however faint or sharp: a particle or a film whose median
       misses rules 3 and 5 by a hair would otherwise be named other;
    7. contamination, elongated: more elongated than a pit (``aspect_ratio`` above the
       pit limit) but no line (rule 2): a particle or a piece of lint. With rules 6 and
       7 every cluster with finite features gets one of the four types;
    8. other.

    Returns
    -------
    dict
        {cluster id: {"type": name, "rule": text with the centroid values}}.
    """
    p = model["params"]["naming"]
    dust = " (dust-like: sharp edge, bright or irregular)"
    checks = [  # (type, conditions, what the rule means, appended to its text)
        ("chip", _chip_conditions(p, p["chip_max_edge_distance_um"]), ""),
        ("scratch", [("aspect_ratio", ">=", p["scratch_min_aspect_ratio"]),
                     ("skeleton_length_um", ">=", p["scratch_min_length_um"])], ""),
        ("contamination", [("edge_sharpness", "<=", p["diffuse_max_edge_sharpness"])],
         " (oil-like: diffuse edge)"),
        ("pit_dig", _pit_conditions(p), ""),
        ("contamination", [("local_snr", ">=", p["pit_max_snr"])], dust),
        ("contamination", [("solidity", "<=", p["contamination_max_solidity"])], dust),
        ("contamination", [("equivalent_diameter_um", ">=", p["pit_max_diameter_um"])],
         " (larger than any pit: a particle or film)"),
        ("contamination", [("aspect_ratio", ">=", p["pit_max_aspect_ratio"])],
         " (elongated, no line: a particle or lint)"),
    ]
    names = {}
    for cid, c in model["centroids_raw"].items():
        names[cid] = {"type": "other", "rule": "other: no rule matched"}
        for kind, cond, meaning in checks:
            ok, text = _rule(c, cond)
            if ok:
                names[cid] = {"type": kind, "rule": f"{kind}: {text}{meaning}"}
                break
    return names


def match_clusters(old_model: dict, new_model: dict) -> dict[int, int]:
    """Map the new model's cluster ids onto the old model's ids.

    Centroids of both models (raw-feature medians) are compared in the old model's
    scaled feature space and paired by minimum total distance (Hungarian algorithm,
    :func:`scipy.optimize.linear_sum_assignment`). New clusters left without a partner
    (more clusters than before) get fresh ids after the old ones.

    Returns
    -------
    dict
        {new cluster id: id to use}.
    """
    from scipy.optimize import linear_sum_assignment

    old_ids = sorted(old_model["centroids_raw"])
    new_ids = sorted(new_model["centroids_raw"])
    if not old_ids or not new_ids:
        return {n: n for n in new_ids}

    def space(m):
        return _scaled(old_model, pd.DataFrame.from_dict(m["centroids_raw"], orient="index"))

    A, B = space(old_model), space(new_model)
    cost = np.linalg.norm(B[:, None, :] - A[None, :, :], axis=2)
    rows, cols = linear_sum_assignment(cost)
    mapping = {new_ids[r]: old_ids[c] for r, c in zip(rows, cols)}
    fresh = max(old_ids) + 1
    for n in new_ids:
        if n not in mapping:
            mapping[n], fresh = fresh, fresh + 1
    return mapping


def relabel(model: dict, mapping: dict[int, int]) -> dict:
    """Renumber a model's clusters (``mapping`` new -> id).

    The names stay those the naming rules gave each cluster's own centroid: a matched
    cluster of a refit may differ in kind from the old one (a small change of the
    defects can regroup them), and an old automatic name on it would mislabel it.
    """
    out = dict(model)
    out["cluster_ids"] = np.array([mapping[int(c)] for c in model["cluster_ids"]])
    for key in ("centroids_raw", "sizes", "names"):
        out[key] = {mapping[c]: v for c, v in model[key].items()}
    return out


def review_template(model: dict) -> dict[int, dict]:
    """Initial review mapping from the automatic names: {cluster: {type, rule, size}}.

    The workflow writes it as ``config/cluster_review.yaml`` on the first run; the user
    then edits ``type`` (rename) or writes ``merge_into: <cluster>`` (merge).
    """
    return {int(c): {"type": v["type"], "rule": v["rule"], "size": int(model["sizes"].get(c, 0))}
            for c, v in sorted(model["names"].items())}


def review_types(model: dict, review: dict | None) -> dict[int, str]:
    """Resolve the review mapping into {cluster id: type name}.

    Parameters
    ----------
    model : dict
        Fitted model; clusters missing from the review keep their automatic names,
        and so do entries left as written: a ``{"type", "rule"}`` entry whose type is
        the one its rule named (the template's automatic name, unedited). After a
        refit the automatic names are those of the new clusters, and only a person's
        choices carry over.
    review : dict or None
        {cluster: type name | {"type": name} | {"merge_into": other cluster}}; merges
        may chain.

    Raises
    ------
    ValueError
        On an unknown type name, an unknown merge target or a merge cycle.
    """
    allowed = set(DEFECT_CLASSES.values())
    entries = {int(c): v for c, v in (review or {}).items()}
    ids = sorted(set(model["names"]) | set(entries))

    def resolve(c, seen=()):
        if c in seen:
            raise ValueError(f"cluster review: merge cycle {[*seen, c]}")
        v = entries.get(c, model["names"].get(c))
        if v is None:
            raise ValueError(f"cluster review: merge_into {c} names no cluster")
        if isinstance(v, dict) and "merge_into" in v:
            return resolve(int(v["merge_into"]), (*seen, c))
        if _unedited(v) and c in model["names"]:
            v = model["names"][c]
        t = v["type"] if isinstance(v, dict) else v
        if t not in allowed:
            raise ValueError(f"cluster review: cluster {c} type {t!r}; allowed: {sorted(allowed)}")
        return t

    return {c: resolve(c) for c in ids}


def _unedited(entry) -> bool:
    """Whether a review entry still holds the automatic name its rule gave."""
    return (isinstance(entry, dict) and "rule" in entry
            and str(entry["rule"]).split(":", 1)[0] == entry.get("type"))


def apply_review(clusters, model: dict, review: dict | None) -> np.ndarray:
    """Type name of each defect from its cluster id and the review mapping."""
    types = review_types(model, review)
    return np.array([types.get(int(c), "other") for c in np.asarray(clusters)], dtype=object)
