import numpy as np
import pytest

from pagelens.scoring import maxsim, maxsim_matrix, rank


def test_maxsim_by_hand():
    q = np.array([[1, 0], [0, 1]], dtype=np.float32)
    d = np.array([[0.5, 0.5], [1, 0]], dtype=np.float32)
    # token 1: max(0.5, 1) = 1; token 2: max(0.5, 0) = 0.5
    assert maxsim(q, d) == pytest.approx(1.5)


def test_padding_is_masked_not_zero():
    # every similarity of the query token is negative: its true max is -0.5, not 0
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    short = np.array([[-0.5, 0.1]], dtype=np.float32)
    long = np.array([[-0.9, 0.0], [-0.8, 0.0], [-0.7, 0.0]], dtype=np.float32)
    scores = maxsim_matrix([q], [short, long])
    assert scores[0, 0] == pytest.approx(-0.5)
    assert scores[0, 1] == pytest.approx(-0.7)


def test_matrix_matches_pairwise_and_empty_page():
    rng = np.random.default_rng(0)
    queries = [rng.normal(size=(m, 8)).astype(np.float32) for m in (1, 4)]
    pages = [rng.normal(size=(n, 8)).astype(np.float32) for n in (3, 1, 7)]
    pages.append(np.zeros((0, 8), dtype=np.float32))
    scores = maxsim_matrix(queries, pages)
    for i, q in enumerate(queries):
        for j, d in enumerate(pages):
            assert scores[i, j] == pytest.approx(maxsim(q, d), rel=1e-5)
    assert np.isneginf(scores[:, 3]).all()


def test_rank_orders_and_breaks_ties_by_index():
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    pages = [
        np.array([[0.2, 0]], np.float32),
        np.array([[0.9, 0]], np.float32),
        np.array([[0.2, 0]], np.float32),
    ]
    assert [i for i, _ in rank([q], pages, k=3)[0]] == [1, 0, 2]
