"""The Store seam: where page multi-vectors and their payloads live.

A backend keeps one collection laid out as :mod:`pagelens.storage.layout` says,
and runs the stages of a search as :mod:`pagelens.plan` lays them out: each
backend only translates that plan, and the layout's names, into its engine's
requests and enums. The records it takes and gives are in
:mod:`pagelens.storage.base`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from pagelens.storage.base import PayloadFilter, PointRecord, ScoredRecord, StoredPoint

if TYPE_CHECKING:
    from pagelens.plan import Request
    from pagelens.storage.layout import CollectionSpec


class Store(Protocol):
    """One Qdrant collection, wherever it lives."""

    def exists(self) -> bool:
        """Whether the collection has been created."""
        ...

    def create(self, spec: CollectionSpec) -> None:
        """Create the collection (and payload indexes); error if it exists."""
        ...

    def upsert(self, points: Sequence[PointRecord], *, durable: bool = True) -> None:
        """Insert or replace points; durable when this returns.

        ``durable=False`` skips making this write durable on its own: it is
        applied and visible at once, and persisted with the next durable write,
        :meth:`flush` or :meth:`close`; a crash before then may lose it. The
        embedded engine persists every segment on each durable write, so a
        writer of many small batches asks for durability only where order
        matters (a document's pages before its commit record).
        """
        ...

    def delete(self, where: PayloadFilter, *, durable: bool = True) -> None:
        """Delete every point matching ``where`` (``durable`` as for :meth:`upsert`)."""
        ...

    def flush(self) -> None:
        """Make every write so far durable."""
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

    def point_ids(self) -> Iterator[str]:
        """Ids of every point, read without payloads or vectors (so despite damage to those)."""
        ...

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        """Payloads and dense vectors of the points with these ids (unknown ids left out)."""
        ...

    def delete_points(self, ids: Sequence[str]) -> None:
        """Delete the points with these ids."""
        ...

    def rebuild(self, spec: CollectionSpec, ids: Sequence[str]) -> None:
        """Rewrite the collection with only the points with these ids, in new storage files."""
        ...

    def search(self, requests: Sequence[Request]) -> list[list[ScoredRecord]]:
        """Run a batch of planned requests (:func:`pagelens.plan.plan_queries`) in one call.

        Returns, per request, its points in the engine's order, with their
        payloads where the request asks for them.
        """
        ...

    def bind(self, spec: CollectionSpec) -> None:
        """Tell the store how the collection it opened is laid out (the manifest's spec)."""
        ...

    def optimize(self) -> None:
        """Build pending indexes (HNSW on the candidate vectors) after a batch of writes."""
        ...

    def close(self) -> None:
        """Release the collection (files, locks, connections)."""
        ...
