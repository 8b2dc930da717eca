"""MaxSim late-interaction scoring: the numpy reference every backend is checked against.

``maxsim(q, d) = sum_i max_j <q_i, d_j>`` for a query ``q`` of shape ``(m, dim)`` and
a page ``d`` of shape ``(n, dim)``. Ragged batches are padded and the padded
positions masked with ``-inf`` before the max, never with zeros: a query token whose
similarities are all negative must keep its true (negative) maximum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pagelens.types import MultiVector


def maxsim(query: MultiVector, page: MultiVector) -> float:
    """Late-interaction score of one query against one page.

    A page with no vectors scores ``-inf`` (nothing can match it).
    """
    if page.shape[0] == 0:
        return float("-inf")
    sims = query.astype(np.float32) @ page.astype(np.float32).T  # (m, n)
    return float(sims.max(axis=1).sum())


def maxsim_matrix(
    queries: Sequence[MultiVector], pages: Sequence[MultiVector]
) -> npt.NDArray[np.float32]:
    """Scores of every query against every page, shape ``(len(queries), len(pages))``.

    Pages are padded to a common length and the padding masked with ``-inf``.
    """
    if not pages:
        return np.zeros((len(queries), 0), dtype=np.float32)
    dim = pages[0].shape[1]
    lengths = np.array([p.shape[0] for p in pages])
    width = max(int(lengths.max()), 1)
    padded = np.zeros((len(pages), width, dim), dtype=np.float32)  # (P, N, dim)
    for i, page in enumerate(pages):
        padded[i, : page.shape[0]] = page
    mask = np.arange(width)[None, :] >= lengths[:, None]  # (P, N), True = padding
    out = np.empty((len(queries), len(pages)), dtype=np.float32)
    for qi, query in enumerate(queries):
        sims = np.einsum("md,pnd->pmn", query.astype(np.float32), padded)  # (P, m, N)
        sims[np.broadcast_to(mask[:, None, :], sims.shape)] = -np.inf
        out[qi] = sims.max(axis=2).sum(axis=1)
    return out


def rank(
    queries: Sequence[MultiVector], pages: Sequence[MultiVector], k: int
) -> list[list[tuple[int, float]]]:
    """Exact top-``k`` pages per query as ``(page index, score)``, best first.

    Ties are broken by the lower page index, so the order is deterministic.
    """
    scores = maxsim_matrix(queries, pages)
    ranked: list[list[tuple[int, float]]] = []
    for row in scores:
        order = np.lexsort((np.arange(row.shape[0]), -row))[:k]
        ranked.append([(int(i), float(row[i])) for i in order])
    return ranked
