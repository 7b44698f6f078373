"""Defect library: padded patches, their index and per-type contact sheets.

A patch is the display image cropped to a defect's bounding box grown by a margin
(clipped at the frame), so a person or a classifier sees the defect with its
surroundings. Patches are filed ``patches/<type>/<defect_id>.png`` (the output
contract), each also linked as ``patches/<type>/<severity>/<defect_id>.png`` for
browsing by severity.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

#: Leading columns of ``defect_library/index.parquet`` (every feature follows).
INDEX_COLUMNS: list[str] = [
    "defect_id", "image_id", "number", "source_path", "zone", "type", "cluster",
    "severity_score", "severity_level", "bbox_x", "bbox_y", "bbox_w", "bbox_h",
    "centroid_x", "centroid_y", "area_px", "area_um2", "length_um", "width_um",
    "contrast", "patch",
]


def patch_relpath(type_name: str, defect_id: str, severity_level: str | None = None) -> str:
    """Path of a patch inside ``defect_library/``: ``patches/<type>/<id>.png``, or with
    ``severity_level`` its link ``patches/<type>/<severity>/<id>.png``."""
    folder = f"patches/{type_name}" if severity_level is None else f"patches/{type_name}/{severity_level}"
    return f"{folder}/{defect_id}.png"


def patch_window(bbox, margin_px: int, shape) -> tuple[slice, slice]:
    """Row and column slices of a bbox ``(x, y, w, h)`` grown by ``margin_px``, clipped."""
    x, y, w, h = (int(v) for v in bbox)
    rows = slice(max(y - margin_px, 0), min(y + h + margin_px, shape[0]))
    cols = slice(max(x - margin_px, 0), min(x + w + margin_px, shape[1]))
    return rows, cols


def extract_patch(display: np.ndarray, bbox, margin_px: int) -> np.ndarray:
    """Copy of the display image around one defect (see :func:`patch_window`)."""
    rows, cols = patch_window(bbox, margin_px, display.shape)
    return display[rows, cols].copy()


def library_index(defects: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """The library index: one row per defect, contract columns first, then every feature.

    Parameters
    ----------
    defects : pandas.DataFrame
        Detection table merged with features and ``clustering/defect_types``
        (``defect_id``, ``image_id``, ``type``, ``cluster``, ``severity_*`` ...).
    images : pandas.DataFrame
        ``image_id`` -> ``source_path``.

    Returns
    -------
    pandas.DataFrame sorted by ``image_id`` and ``number`` with a ``patch`` column
    (path relative to ``defect_library/``).
    """
    out = defects.merge(images[["image_id", "source_path"]], on="image_id", how="left")
    out["patch"] = [patch_relpath(t, d) for t, d in zip(out["type"], out["defect_id"])]
    lead = [c for c in INDEX_COLUMNS if c in out.columns]
    rest = [c for c in out.columns if c not in lead]
    return out[lead + rest].sort_values(["image_id", "number"], kind="stable").reset_index(drop=True)


def _tile(patch: np.ndarray, tile_px: int) -> np.ndarray:
    """Patch scaled to fit a ``tile_px`` square (aspect kept, nearest-neighbour when
    enlarging so pixels stay visible), centred on a dark background, as RGB."""
    rgb = patch if patch.ndim == 3 else cv2.cvtColor(patch, cv2.COLOR_GRAY2RGB)
    h, w = rgb.shape[:2]
    scale = tile_px / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    small = cv2.resize(rgb, (nw, nh), interpolation=interp)
    tile = np.full((tile_px, tile_px, 3), 24, np.uint8)
    y0, x0 = (tile_px - nh) // 2, (tile_px - nw) // 2
    tile[y0 : y0 + nh, x0 : x0 + nw] = small
    return tile


def contact_sheet(patches: list[np.ndarray], captions: list[str] | None = None, tile_px: int = 96,
                  columns: int = 10, frame_colours: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Montage of patches on a grid, for browsing a defect type or a cluster.

    Parameters
    ----------
    patches : list of numpy.ndarray
        Gray or RGB uint8 crops of any size.
    captions : list of str, optional
        Short text drawn under each tile.
    tile_px : int
        Side of a tile.
    columns : int
        Tiles per row (fewer when there are fewer patches).
    frame_colours : list of RGB tuples, optional
        Colour of a 2 px frame around each tile (e.g. by severity or type).

    Returns
    -------
    numpy.ndarray
        RGB uint8 image (a 1-tile blank sheet when ``patches`` is empty).
    """
    n = max(len(patches), 1)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    cap_h = 14 if captions else 0
    cell_h, cell_w = tile_px + cap_h + 4, tile_px + 4
    sheet = np.full((rows * cell_h, cols * cell_w, 3), 255, np.uint8)
    for k, patch in enumerate(patches):
        r, c = divmod(k, cols)
        y, x = r * cell_h + 2, c * cell_w + 2
        tile = _tile(patch, tile_px)
        if frame_colours:
            cv2.rectangle(tile, (0, 0), (tile_px - 1, tile_px - 1), tuple(int(v) for v in frame_colours[k]), 2)
        sheet[y : y + tile_px, x : x + tile_px] = tile
        if captions:
            cv2.putText(sheet, str(captions[k])[: max(4, tile_px // 6)], (x, y + tile_px + cap_h - 3),
                        cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet
