"""The Store seam: where page multi-vectors and their payloads live.

Every backend keeps one collection with two named multi-vectors, both compared
with MaxSim over dot products of L2-normalised vectors:

- ``pages``: the page vectors at the index's pool factor, used for the exact
  rerank. No HNSW graph is built on them (``m=0``): a graph over hundreds of
  vectors per point costs minutes per thousand pages and the rerank only ever
  scores a few hundred candidates.
- ``pooled``: a small Ward-pooled view of the page (tens of vectors) with an HNSW
  graph, from which the first stage draws candidates.

Besides pages the collection holds vectorless bookkeeping points: one per fully
indexed document (the commit record of that document) and one manifest.
Qdrant types never leave a backend; callers see numpy arrays and plain dicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pagelens.types import MultiVector

PAGES = "pages"
POOLED = "pooled"

KIND_PAGE = "page"
KIND_DOCUMENT = "document"
KIND_MANIFEST = "manifest"

_NAMESPACE = uuid.UUID("6f1c2d2a-4b7e-5d0c-9a51-7e3f0c1a2b90")


def page_point_id(doc_sha256: str, page_number: int) -> str:
    """Deterministic point id of a page: re-indexing the same bytes upserts in place."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:{page_number}"))


def document_point_id(doc_sha256: str) -> str:
    """Point id of a document's commit record."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:document"))


MANIFEST_POINT_ID = str(uuid.uuid5(_NAMESPACE, "manifest"))


@dataclass(frozen=True)
class CollectionSpec:
    """How the collection is laid out; fixed when it is created."""

    dim: int
    fp16: bool = True  # fp16 storage: measured to change no metric (project notes)
    hnsw_m: int = 16  # graph degree for the ``pooled`` vectors
    hnsw_ef_construct: int = 100


@dataclass(frozen=True)
class PointRecord:
    """A point to upsert: vectors by name (each float32 ``(n, dim)``), and payload."""

    id: str
    payload: Mapping[str, Any]
    vectors: Mapping[str, MultiVector] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredRecord:
    """A point returned by a query."""

    id: str
    score: float
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class PayloadFilter:
    """Conditions on page payloads; all given conditions must hold.

    ``path_prefix`` matches a folder prefix of the document path (``"reports/2023"``
    matches ``reports/2023/q1.pdf``) or the exact document path.
    """

    kind: str | None = None
    doc_paths: tuple[str, ...] | None = None
    doc_sha256: tuple[str, ...] | None = None
    path_prefix: str | None = None


def path_prefixes(doc_path: str) -> list[str]:
    """Every folder prefix of a posix path, and the path itself.

    ``"a/b/c.pdf"`` gives ``["a", "a/b", "a/b/c.pdf"]``; stored in the payload so a
    prefix filter is a plain keyword match on every backend.
    """
    parts = doc_path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


class Store(Protocol):
    """One Qdrant collection, wherever it lives."""

    def exists(self) -> bool:
        """Whether the collection has been created."""
        ...

    def create(self, spec: CollectionSpec) -> None:
        """Create the collection (and payload indexes); error if it exists."""
        ...

    def upsert(self, points: Sequence[PointRecord]) -> None:
        """Insert or replace points; durable when this returns."""
        ...

    def delete(self, where: PayloadFilter) -> None:
        """Delete every point matching ``where``."""
        ...

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        """Overwrite the given payload keys on every point matching ``where``."""
        ...

    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        """Payloads of every point matching ``where``."""
        ...

    def count(self, where: PayloadFilter) -> int:
        """Exact number of points matching ``where``."""
        ...

    def query(
        self,
        queries: Sequence[MultiVector],
        *,
        k: int,
        candidates: int | None,
        where: PayloadFilter | None = None,
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` pages per query by MaxSim on ``pages``.

        With ``candidates`` set, the first stage draws that many candidates by
        MaxSim on ``pooled`` (HNSW) and only those are reranked; ``None`` scores
        every page exactly.
        """
        ...

    def optimize(self) -> None:
        """Build pending indexes (HNSW on ``pooled``) after a batch of writes."""
        ...

    def close(self) -> None:
        """Release the collection (files, locks, connections)."""
        ...
