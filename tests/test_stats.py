"""fiberprep.stats.median must give exactly np.median's value."""

import numpy as np
import pytest

from fiberprep.stats import median


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("shape", "axis"),
    [((7,), None), ((8,), None), ((1,), None), ((2,), None), ((5, 6), None),
     ((421, 33), 0), ((420, 33), 0), ((30, 12), 1), ((30, 11), -1), ((3, 4, 5), 1)],
)
def test_median_equals_numpy_bit_for_bit(shape, axis, dtype):
    rng = np.random.default_rng(sum(shape))
    a = rng.normal(size=shape).astype(dtype)
    a.flat[::3] = a.flat[0]  # ties, as in quantised images
    want, got = np.median(a, axis=axis), median(a, axis)
    assert np.asarray(got).dtype == np.asarray(want).dtype
    assert np.array_equal(got, want)


@pytest.mark.parametrize("n", [7, 8])
def test_median_of_integers_is_numpys_float(n):
    a = np.arange(n, dtype=np.int64)[::-1] * 3
    want, got = np.median(a), median(a)
    assert np.asarray(got).dtype == np.asarray(want).dtype and got == want


def test_median_of_no_values_is_nan():
    assert np.isnan(median(np.zeros(0)))
    assert np.isnan(median(np.zeros((3, 0)), axis=1)).all()
