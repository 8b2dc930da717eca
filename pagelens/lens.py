"""The front door: one object that remembers an index and the models it was built with.

``pagelens.open(...)`` returns a :class:`Lens`. It delegates every call to the
functional layer (:func:`pagelens.pipeline.job.index_paths`,
:func:`pagelens.search.search`, :class:`pagelens.index.Index`) and owns no logic of
its own beyond remembering what it was opened with and loading each encoder the
first time a call needs it: a BM25-only search loads no model at all.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pagelens.encoders import DEFAULT_MODEL, Encoder, load_encoder
from pagelens.explain import Explanation, check_request, explain
from pagelens.index import DocumentRecord, Index, IndexInfo
from pagelens.search import DENSE, TEXT, SearchOptions, index_channels, merge_options, search
from pagelens.types import Hit

if TYPE_CHECKING:
    from PIL import Image

    from pagelens.aggregate import DocumentHit
    from pagelens.pipeline.job import IndexReport
    from pagelens.pipeline.render import RenderSettings
    from pagelens.pipeline.text import TextCache, TextSettings


def open(  # noqa: A001 - pagelens.open, as the package's front door
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
    pool_factor: int | None = None,
    text: bool | None = None,
    wait_s: float = 0.0,
    lock_now: bool = False,
) -> Lens:
    """Open an index (an embedded folder, or a Qdrant server with ``url``).

    Args:
        path: folder of an embedded index (created by the first :meth:`Lens.add`).
        url: a Qdrant server instead, e.g. ``http://localhost:6333``.
        api_key: the server's API key.
        collection: the collection on the server.
        location: qdrant-client's local mode (``":memory:"``), for tests.
        model: the page encoder (hub id or folder); ``None``: the one the index was
            built with, or ``vidore/colqwen2.5-v0.2`` for a new index.
        text_model: a second encoder, of page text (``"minilm"``); ``None``: the
            index's own, if it has one.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        batch_size: pages or queries per forward pass.
        pool_factor: Ward pool factor of a new index (``None``: the index's, else 3).
        text: keep page text and BM25 in a new index (``None``: the index's, else off).
        wait_s: seconds to wait for another process holding an embedded folder.
        lock_now: take an embedded folder's lock at once (an indexing run).

    Examples:
        >>> import pagelens, tempfile
        >>> with pagelens.open(tempfile.mkdtemp(), model="minilm") as lens:
        ...     lens.documents()
        []

    """
    index = Index.open(
        path,
        url=url,
        api_key=api_key,
        collection=collection,
        location=location,
        wait_s=wait_s,
        lock_now=lock_now,
    )
    return Lens(
        index,
        model=model,
        text_model=text_model,
        device=device,
        batch_size=batch_size,
        pool_factor=pool_factor,
        text=text,
    )


class Lens:
    """An opened index with the models it searches by; close it (or use ``with``)."""

    def __init__(
        self,
        index: Index,
        *,
        model: str | None = None,
        text_model: str | None = None,
        device: str = "auto",
        batch_size: int = 4,
        pool_factor: int | None = None,
        text: bool | None = None,
    ) -> None:
        self.index = index
        self._model, self._text_model = model, text_model
        self._device, self._batch_size = device, batch_size
        self._settings_changes = {"pool_factor": pool_factor, "text": text}
        self._encoders: dict[str, Encoder] = {}

    def __enter__(self) -> Lens:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the index (its folder's lock, or the server connection)."""
        self.index.close()

    # -- models, loaded when first needed ------------------------------------------
    @property
    def model(self) -> str:
        """The page encoder in effect: as given, else the index's, else the default."""
        manifest = self.index.manifest
        return self._model or (manifest.encoder.model_id if manifest else DEFAULT_MODEL)

    @property
    def text_model(self) -> str | None:
        """The text encoder in effect: as given, else the index's (``None``: none)."""
        built = self.index.manifest.text_encoder if self.index.manifest else None
        return self._text_model or (built.model_id if built else None)

    def encoder(self) -> Encoder:
        """Return the page encoder, loaded on first use."""
        return self._load(DENSE, self.model)

    def text_encoder(self) -> Encoder | None:
        """Return the text encoder, loaded on first use (``None``: the index has none)."""
        name = self.text_model
        return self._load(TEXT, name) if name else None

    def _load(self, channel: str, name: str) -> Encoder:
        if channel not in self._encoders:
            self._encoders[channel] = load_encoder(
                name, device=self._device, batch_size=self._batch_size
            )
        return self._encoders[channel]

    # -- the work ------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        render: RenderSettings | None = None,
        text: TextSettings | None = None,
        text_cache: TextCache | str | os.PathLike[str] | None = None,
        prune: bool = False,
        progress: bool = True,
    ) -> IndexReport:
        """Index the PDFs under ``paths``: see :func:`pagelens.pipeline.job.index_paths`.

        The files are found (and a run with nothing to do refused) before any
        model is loaded.
        """
        from pagelens.pipeline.discover import discover
        from pagelens.pipeline.job import check_found, index_paths
        from pagelens.pipeline.text import TextCache

        found = discover(list(paths))
        check_found(found, self.index, prune=prune)
        changes = {k: v for k, v in self._settings_changes.items() if v is not None}
        cache = text_cache
        return index_paths(
            self.index,
            self.encoder(),
            found,
            settings=self.index.settings_with(**changes) if changes else None,
            render=render,
            text=text,
            text_encoder=self.text_encoder(),
            text_cache=cache if cache is None or isinstance(cache, TextCache) else TextCache(cache),
            prune=prune,
            progress=progress,
        )

    def search(
        self, queries: Sequence[str], options: SearchOptions | None = None, **overrides: Any
    ) -> list[list[Hit]]:
        """Answer questions: :func:`pagelens.search.search` with this index's models.

        ``overrides`` are fields of :class:`~pagelens.search.SearchOptions` (``k=5``,
        ``channels=["bm25"]``...); only the encoders of the channels searched load.
        """
        opts = merge_options(options, overrides)
        channels = opts.channels or index_channels(self.index)
        encoder = self.encoder() if DENSE in channels else None
        text_encoder = self.text_encoder() if TEXT in channels else None
        return search(
            self.index, encoder, queries, opts, text_encoder=text_encoder, channels=channels
        )

    def search_documents(
        self,
        query: str,
        *,
        k: int = 10,
        pages: int | None = None,
        per_document: int = 3,
        options: SearchOptions | None = None,
        **overrides: Any,
    ) -> list[DocumentHit]:
        """Rank documents by their best page for one question (page-to-document, max).

        Searches ``pages`` pages (default ``max(100, 10 * k)``; first-stage candidates
        are raised to at least that many) and ranks their documents with
        :func:`pagelens.aggregate.rank_documents`; ``overrides`` are fields of
        :class:`~pagelens.search.SearchOptions` other than ``k``.
        """
        from pagelens.aggregate import rank_documents
        from pagelens.errors import check_whole

        check_whole("k", k, 1)
        pages = max(100, 10 * k) if pages is None else check_whole("pages", pages, 1)
        opts = merge_options(options, {**overrides, "k": pages})
        if opts.candidates is not None and opts.candidates < pages:
            opts = merge_options(opts, {"candidates": pages})
        (hits,) = self.search([query], opts)
        return rank_documents(hits, per_document=per_document)[:k]

    def explain(
        self, doc: str, page: int, query: str, *, channel: str | None = None, dpi: int | None = None
    ) -> Explanation:
        """Show which parts of a page matched which query tokens: see :mod:`pagelens.explain`.

        The request is checked first: a bad one loads no model.
        """
        chosen = check_request(self.index, doc, page, query, channel=channel)
        encoder = self.text_encoder() if chosen == TEXT else self.encoder()
        return explain(self.index, encoder, doc, page, query, channel=chosen, dpi=dpi)

    def documents(self) -> list[DocumentRecord]:
        """List the documents indexed, with their page counts and recorded paths."""
        return self.index.documents()

    def delete(self, doc: str) -> int:
        """Delete a document (its recorded path, sha256, or absolute file path)."""
        return self.index.delete_document(doc)

    def info(self) -> IndexInfo:
        """Count documents, pages and bytes per page; give the manifest."""
        return self.index.info()

    def page_image(self, hit: Hit, *, dpi: int = 100) -> Image.Image:
        """Render a hit's page again from its (checked) source file."""
        from pagelens.pipeline.images import page_image

        return page_image(hit, dpi=dpi)
