import math

import numpy as np
import pytest

from pagelens.errors import PagelensError
from pagelens.pooling import pool_pages, ward_pool


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_factor_one_is_identity():
    v = _unit(np.random.default_rng(0).normal(size=(5, 4))).astype(np.float32)
    (out,) = ward_pool(v, [1])
    np.testing.assert_array_equal(out, v)


def test_two_obvious_clusters_by_hand():
    # two tight groups: pooling 4 vectors by 2 must give the two group directions
    v = np.array([[1, 0.01], [1, -0.01], [0.01, 1], [-0.01, 1]], dtype=np.float32)
    (out,) = ward_pool(_unit(v).astype(np.float32), [2])
    assert out.shape == (2, 2)
    got = sorted(map(tuple, np.round(out, 3)))
    assert got == [(0.0, 1.0), (1.0, 0.0)]


@pytest.mark.parametrize("n,factor", [(10, 3), (7, 2), (100, 16), (1, 4), (5, 8)])
def test_shapes_and_unit_norm(n, factor):
    v = _unit(np.random.default_rng(n).normal(size=(n, 8))).astype(np.float32)
    (out,) = ward_pool(v, [factor])
    assert out.dtype == np.float32
    assert out.shape == (math.ceil(n / factor), 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_one_linkage_serves_several_factors():
    v = _unit(np.random.default_rng(3).normal(size=(40, 8))).astype(np.float32)
    a, b = ward_pool(v, [2, 8])
    assert a.shape[0] == 20 and b.shape[0] == 5
    np.testing.assert_allclose(pool_pages([v], 8)[0], b)


def test_empty_page_and_bad_factor():
    empty = np.zeros((0, 8), dtype=np.float32)
    assert ward_pool(empty, [3])[0].shape == (0, 8)
    with pytest.raises(PagelensError, match="pool factor"):
        ward_pool(empty, [0])
