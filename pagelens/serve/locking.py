"""One index, several threads: the store and the encoders, each called by one at a time.

A served index is used by the request threads (searches, page views) and by an
indexing job's thread at once. Neither Qdrant Edge's Python binding nor a
tokenizer or torch module documents calls from two threads as safe, so every
store call and every encoder call holds a lock while it runs. The job writes a
batch of pages per store call and encodes a batch per encoder call, so a search
waits at most for one batch of the job, never for a whole document.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from pagelens.encoders.base import Encoder, EncoderSpec
from pagelens.errors import PagelensError
from pagelens.index import Index
from pagelens.lens import Lens
from pagelens.search import DENSE, TEXT
from pagelens.storage.store import Store
from pagelens.types import MultiVector, Page


class LockedStore:
    """A :class:`~pagelens.storage.store.Store` whose calls run one at a time.

    Every method of the wrapped store is called under one lock, whatever the
    protocol grows to hold. A method that returns an iterator (``scroll``,
    ``point_ids``) is read out whole under the lock and handed out after, so an
    abandoned iteration can never keep the lock held.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.RLock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                result = attr(*args, **kwargs)
                return iter(list(result)) if isinstance(result, Iterator) else result

        return locked


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
        # the same folder's ledger: jobs and deletions the server runs are recorded
        locked = Index(LockedStore(index.store), index.location, ledger_folder=path)
    except PagelensError:
        index.close()
        raise
    return ServedLens(
        locked, model=model, text_model=text_model, device=device, batch_size=batch_size
    )
