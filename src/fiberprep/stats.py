"""Fast exact array primitives shared by the per-image stages: order statistics and
table lookup."""

from __future__ import annotations

import cv2
import numpy as np


def median(a, axis=None):
    """``np.median(a, axis)`` of NaN-free values: the same value, several times faster.

    One partition of a contiguous copy at the upper middle; for an even count the
    lower middle is the largest value below it (NumPy partitions at both, in place
    along a strided axis, and checks for NaN). NaN where there are no values.
    """
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.inexact):
        a = a.astype(np.float64)  # as NumPy: the median of integers is a float
    a = a.ravel() if axis is None else np.ascontiguousarray(np.moveaxis(a, axis, -1))
    n = a.shape[-1]
    if n == 0:
        return np.full(a.shape[:-1], np.nan)[()]
    k = n // 2
    part = np.partition(a, k, axis=-1)
    upper = part[..., k]
    if n % 2:
        return upper
    return (part[..., :k].max(axis=-1) + upper) / 2


def lookup(index, values, dtype):
    """``values[index]`` as ``dtype`` for an 8-bit ``index`` (uint8, int8 or bool array,
    values below ``len(values)``) by ``cv2.LUT``: several times faster than NumPy
    indexing on a whole image."""
    table = np.zeros(256, dtype)
    table[: len(values)] = values
    return cv2.LUT(np.ascontiguousarray(index).view(np.uint8), table)
