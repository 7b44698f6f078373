"""Fast exact order statistics on arrays, shared by the per-image stages."""

from __future__ import annotations

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
