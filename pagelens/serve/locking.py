"""One index, several threads: the store and the encoders, each called by one at a time.

A served index is used by the request threads (searches, page views) and by an
indexing job's thread at once. Neither Qdrant Edge's Python binding nor a
tokenizer or torch module documents calls from two threads as safe, so every
store call and every encoder call holds a lock while it runs. The job writes a
batch of pages per store call and encodes a batch per encoder call, so a search
waits at most for one batch of the job, never for a whole document.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pagelens.encoders.base import Encoder, EncoderSpec
from pagelens.errors import PagelensError
from pagelens.index import Index
from pagelens.lens import Lens
from pagelens.search import DENSE, TEXT
from pagelens.storage.base import (
    CollectionSpec,
    HybridQuery,
    PayloadFilter,
    PointRecord,
    ScoredRecord,
    Store,
    StoredPoint,
)
from pagelens.types import MultiVector, Page


class LockedStore:
    """A :class:`~pagelens.storage.base.Store` whose calls run one at a time.

    ``scroll`` and ``point_ids`` read everything under the lock and then hand it
    out, so an abandoned iteration can never keep the lock held.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.RLock()

    def exists(self) -> bool:
        with self._lock:
            return self._store.exists()

    def create(self, spec: CollectionSpec) -> None:
        with self._lock:
            self._store.create(spec)

    def upsert(self, points: Sequence[PointRecord], *, durable: bool = True) -> None:
        with self._lock:
            self._store.upsert(points, durable=durable)

    def delete(self, where: PayloadFilter, *, durable: bool = True) -> None:
        with self._lock:
            self._store.delete(where, durable=durable)

    def flush(self) -> None:
        with self._lock:
            self._store.flush()

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        with self._lock:
            self._store.set_payload(where, payload)

    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        with self._lock:
            found = list(self._store.scroll(where))
        return iter(found)

    def count(self, where: PayloadFilter) -> int:
        with self._lock:
            return self._store.count(where)

    def point_ids(self) -> Iterator[str]:
        with self._lock:
            found = list(self._store.point_ids())
        return iter(found)

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        with self._lock:
            return self._store.retrieve(ids)

    def delete_points(self, ids: Sequence[str]) -> None:
        with self._lock:
            self._store.delete_points(ids)

    def rebuild(self, spec: CollectionSpec, ids: Sequence[str]) -> None:
        with self._lock:
            self._store.rebuild(spec, ids)

    def query(
        self,
        queries: Sequence[MultiVector],
        *,
        k: int,
        candidates: int | None,
        where: PayloadFilter | None = None,
        channel: str = DENSE,
        first_stage: str = "exact",
    ) -> list[list[ScoredRecord]]:
        with self._lock:
            return self._store.query(
                queries,
                k=k,
                candidates=candidates,
                where=where,
                channel=channel,
                first_stage=first_stage,
            )

    def hybrid(
        self, queries: Sequence[HybridQuery], *, k: int, where: PayloadFilter | None = None
    ) -> list[list[ScoredRecord]]:
        with self._lock:
            return self._store.hybrid(queries, k=k, where=where)

    def optimize(self) -> None:
        with self._lock:
            self._store.optimize()

    def close(self) -> None:
        with self._lock:
            self._store.close()


class LockedEncoder:
    """An :class:`~pagelens.encoders.base.Encoder` whose calls run one at a time."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()
        self.reads = getattr(encoder, "reads", "image")  # see pagelens.encoders.reads_text

    @property
    def spec(self) -> EncoderSpec:
        return self._encoder.spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        with self._lock:
            return self._encoder.encode_pages(pages)

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        with self._lock:
            return self._encoder.encode_queries(texts)

    def __getattr__(self, name: str) -> Any:
        """Hand out the encoder's other methods (``query_tokens``, ``patch_grid``...) locked."""
        found = getattr(self._encoder, name)
        if not callable(found):
            return found

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return found(*args, **kwargs)

        return locked


class ServedLens(Lens):
    """A :class:`~pagelens.lens.Lens` shared by threads: locked store, locked encoders.

    Open one with :func:`open_served`. Each encoder loads once (under a lock, so a
    search and a job asking at the same moment do not load it twice).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._load_lock = threading.Lock()
        self._locked: dict[str, LockedEncoder] = {}

    def encoder(self) -> Encoder:
        with self._load_lock:
            if DENSE not in self._locked:
                self._locked[DENSE] = LockedEncoder(super().encoder())
            return self._locked[DENSE]

    def text_encoder(self) -> Encoder | None:
        if self.text_model is None:
            return None
        with self._load_lock:
            if TEXT not in self._locked:
                inner = super().text_encoder()
                assert inner is not None  # text_model is set
                self._locked[TEXT] = LockedEncoder(inner)
            return self._locked[TEXT]


def open_served(
    path: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    collection: str = "pagelens",
    location: str | None = None,
    model: str | None = None,
    text_model: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
) -> ServedLens:
    """Open an index to serve: as :func:`pagelens.open`, its store and encoders locked.

    An embedded folder's lock is taken at once (the serving process owns the index,
    even before a first job creates it).
    """
    index = Index.open(
        path,
        url=url,
        api_key=api_key,
        collection=collection,
        location=location,
        lock_now=path is not None,
    )
    try:
        locked = Index(LockedStore(index.store), index.location)
    except PagelensError:
        index.close()
        raise
    return ServedLens(
        locked, model=model, text_model=text_model, device=device, batch_size=batch_size
    )
