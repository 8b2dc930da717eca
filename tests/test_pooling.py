import math

import numpy as np
import pytest

from pagelens.errors import PagelensError
from pagelens.pooling import pool_pages, pool_query, ward_pool


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


def test_a_pooled_query_sums_its_clusters_by_hand():
    # two tight pairs of tokens and a lone one: three clusters, each the sum of its tokens
    q = _unit(np.array([[1, 0.01], [1, -0.01], [0.01, 1], [-0.01, 1], [-1, 0]])).astype(np.float32)
    out = pool_query(q, 3)
    assert out.shape == (3, 2)
    got = sorted(map(tuple, np.round(out, 3)))
    assert got == [(-1.0, 0.0), (0.0, 2.0), (2.0, 0.0)]
    np.testing.assert_array_equal(pool_query(q, 5), q)  # no fewer clusters: unchanged
    np.testing.assert_array_equal(pool_query(q, 9), q)
    with pytest.raises(PagelensError, match="query clusters"):
        pool_query(q, 0)


def test_a_pooled_query_scores_a_page_at_most_what_its_tokens_do():
    """max_d (sum_q q) . d <= sum_q max_d q . d: the coarse stage never over-scores a page."""
    rng = np.random.default_rng(4)
    for _ in range(20):
        q = _unit(rng.normal(size=(int(rng.integers(2, 30)), 16))).astype(np.float32)
        page = _unit(rng.normal(size=(int(rng.integers(1, 20)), 16))).astype(np.float32)
        full = float((q @ page.T).max(axis=1).sum())
        for k in (1, 3, 6):
            short = pool_query(q, k)
            assert len(short) == min(k, len(q))
            np.testing.assert_allclose(short.sum(axis=0), q.sum(axis=0), atol=1e-5)
            assert float((short @ page.T).max(axis=1).sum()) <= full + 1e-5
