"""Search: rank pages for a batch of questions by MaxSim late interaction.

Two-stage by default: the ``pooled`` vectors (Ward, pool factor 16) give
``candidates`` pages through their HNSW graph, and those are reranked by exact
MaxSim on the stored page vectors. ``candidates=None`` scores every page exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pagelens.encoders.base import Encoder
from pagelens.errors import PagelensError
from pagelens.index import Index
from pagelens.storage.base import KIND_PAGE, PayloadFilter
from pagelens.types import Hit, MultiVector

DEFAULT_CANDIDATES = 200


@dataclass(frozen=True)
class SearchFilter:
    """Restrict a search to some documents.

    Attributes:
        doc_paths: only these documents (paths as indexed).
        path_prefix: only documents under this folder prefix (or this exact path).

    """

    doc_paths: tuple[str, ...] | None = None
    path_prefix: str | None = None


def _where(filter: SearchFilter | None) -> PayloadFilter:
    if filter is None:
        return PayloadFilter(kind=KIND_PAGE)
    return PayloadFilter(kind=KIND_PAGE, doc_paths=filter.doc_paths, path_prefix=filter.path_prefix)


def search_vectors(
    index: Index,
    queries: Sequence[MultiVector],
    *,
    k: int = 10,
    candidates: int | None = DEFAULT_CANDIDATES,
    filter: SearchFilter | None = None,
) -> list[list[Hit]]:
    """Rank pages for already-encoded queries (each float32 ``(m, dim)``).

    Returns:
        One list of at most ``k`` hits per query, best first.

    """
    if k < 1:
        raise PagelensError(f"k must be >= 1, got {k!r}")
    if candidates is not None and candidates < 1:
        raise PagelensError(f"candidates must be >= 1 or None for exact search, got {candidates!r}")
    if not queries:
        return []
    results = index.store.query(queries, k=k, candidates=candidates, where=_where(filter))
    return [
        [
            Hit(
                doc_path=str(r.payload["doc_path"]),
                page_number=int(r.payload["page_number"]),
                score=r.score,
                doc_sha256=str(r.payload["doc_sha256"]),
                payload=r.payload,
            )
            for r in records
        ]
        for records in results
    ]


def search(
    index: Index,
    encoder: Encoder,
    queries: Sequence[str],
    *,
    k: int = 10,
    candidates: int | None = DEFAULT_CANDIDATES,
    filter: SearchFilter | None = None,
) -> list[list[Hit]]:
    """Answer a batch of questions with the pages that best match each.

    Args:
        index: an index built with ``encoder``.
        encoder: the same encoder the index was built with (else IndexMismatchError).
        queries: question texts.
        k: hits per question.
        candidates: first-stage candidates per question; ``None`` for exact search.
        filter: restrict to some documents.

    Returns:
        One ranked list of :class:`~pagelens.types.Hit` per question.

    """
    index.check_encoder(encoder.spec)
    if isinstance(queries, str):
        raise PagelensError("queries must be a list of strings, not one string")
    vectors = encoder.encode_queries(list(queries))
    return search_vectors(index, vectors, k=k, candidates=candidates, filter=filter)
