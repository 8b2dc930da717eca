"""The indexing job: discover documents, render, encode, pool, store, commit.

A document counts as indexed only once its commit record (a vectorless point
naming the document) is stored, and that record is written after every page. So
a crash, ``kill -9`` or Ctrl-C leaves at most one uncommitted document; the next
run finds its stored pages, renders only the missing ones (page ids are
deterministic, so nothing is duplicated) and commits it. A bad file is skipped and
reported, and nothing already committed is touched.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import astuple, dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm.auto import tqdm

from pagelens.bm25 import bm25_documents
from pagelens.encoders.base import Encoder, reads_text
from pagelens.errors import InputError, PagelensError
from pagelens.index import DocumentRecord, Index, IndexSettings, PageVectors, StoredPage
from pagelens.pipeline.discover import Discovery, Skipped, discover
from pagelens.pipeline.overlap import Inline, PipelineSettings, Sink, Writer
from pagelens.pipeline.render import UNLOADABLE_PAGE, PdfInfo, RenderSettings, probe, render_pages
from pagelens.pipeline.text import PageText, TextCache, TextSettings, extract_text
from pagelens.pooling import ward_pool
from pagelens.progress import bar
from pagelens.types import Document, MultiVector, Page, display_path

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class StageTimes:
    """Seconds spent per stage of the job (render counts only time the encoder waited).

    On the serial path the stages add up to the run's time; see ``waited``.
    """

    render: float = 0.0
    text: float = 0.0
    encode: float = 0.0
    pool: float = 0.0
    store: float = 0.0
    optimize: float = 0.0
    # Overlapped runs: ``store`` is the writer thread's time, spent beside encoding, and
    # ``pool`` the hand-over to the pooling processes plus the writer's wait for them;
    # ``waited`` is what the encoder waited for the writer to catch up (zero when serial).
    waited: float = 0.0


@dataclass(frozen=True)
class PageError:
    """A page that could not be loaded or encoded; its document was kept without it."""

    path: str  # the document, as the index records it
    page_number: int
    cause: str


@dataclass(frozen=True)
class IndexReport:
    """What an indexing run did."""

    indexed: tuple[str, ...]  # documents committed by this run
    unchanged: tuple[str, ...]  # already indexed with the same bytes
    skipped: tuple[Skipped, ...]  # bad or non-PDF files, with their causes
    replaced: tuple[str, ...]  # older versions removed because the file changed
    pruned: tuple[str, ...]  # documents removed because their file is gone
    pages: int  # pages encoded and stored by this run
    seconds: float
    stages: StageTimes = field(default_factory=StageTimes)
    page_errors: tuple[PageError, ...] = ()  # pages stored without vectors, with causes
    # pages of documents an interrupted run left incomplete, whose file changed or went
    removed_incomplete: tuple[str, ...] = ()

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds if self.seconds > 0 else 0.0


def _prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Run ``items`` in a background thread, ``depth`` items ahead.

    Rendering is poppler in subprocesses, so the next batch renders while the
    encoder works on this one. Exceptions are re-raised in the consumer.
    """
    q: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put(("item", item))
            q.put(("end", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(("error", exc))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                assert isinstance(value, BaseException)
                raise value
            yield value  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # drain so the worker can finish
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass


def _batched(pages: Iterable[Page], size: int) -> Iterator[list[Page]]:
    batch: list[Page] = []
    for page in pages:
        batch.append(page)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _encode(encoder: Encoder, pages: Sequence[Page]) -> list[MultiVector | str]:
    """Encode pages; a page the encoder fails on gets the cause instead of vectors.

    An encoder may raise on one page that it cannot take (an extreme aspect ratio,
    a processor limit): a batch that raises is encoded again page by page, so only
    that page is lost. A batch that runs out of memory (GPU or host) is split in
    halves and each half encoded again, down to one page; a page that still does not
    fit gets the cause. Vectors that are not finite, or not ``(n, dim)``, count as a
    failure too: they must never reach the store.
    """
    try:
        out: list[MultiVector | str] = list(encoder.encode_pages(pages))
    except Exception as exc:  # any adapter error; reported per page below
        oom = _out_of_memory(exc)
        if oom and len(pages) > 1:
            half = (len(pages) + 1) // 2
            logger.warning(
                "out of memory encoding %d pages; retrying as %d + %d",
                len(pages),
                half,
                len(pages) - half,
            )
            return _encode(encoder, pages[:half]) + _encode(encoder, pages[half:])
        if len(pages) > 1:
            return [v for page in pages for v in _encode(encoder, [page])]
        what = "out of memory on one page" if oom else "encoder failed"
        return [f"{encoder.spec.family} {what}: {type(exc).__name__}: {exc}"]
    if len(out) != len(pages):
        raise PagelensError(
            f"encoder {encoder.spec.model_id!r} returned {len(out)} results for {len(pages)} pages"
        )
    dim = encoder.spec.dim
    for i, v in enumerate(out):
        if isinstance(v, str):
            continue
        if v.ndim != 2 or v.shape[1] != dim:
            out[i] = f"encoder returned vectors of shape {v.shape}, expected (n, {dim})"
        elif not np.isfinite(v).all():
            out[i] = "encoder returned vectors that are not finite (NaN or infinity)"
    return out


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (torch's OutOfMemoryError, or the message).

    torch is not imported here: an encoder that raised torch's error has loaded it.
    """
    torch = sys.modules.get("torch")
    oom_class = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(oom_class, type) and isinstance(exc, oom_class):
        return True
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


Encoded = dict[int, "MultiVector | str"]  # batch position -> vectors, or the failure's cause


def _encode_batch(
    encoder: Encoder, text_encoder: Encoder | None, batch: Sequence[Page]
) -> tuple[Encoded, Encoded | None]:
    """Encode the pages of a batch that have no error yet, by each encoder.

    Returns the results keyed by batch position (pages of several one-page
    documents share a page number); the text encoder's are ``None`` without one.
    """
    good = [i for i, p in enumerate(batch) if p.error is None]
    pages = [batch[i] for i in good]
    dense = dict(zip(good, _encode(encoder, pages), strict=True))
    text = dict(zip(good, _encode(text_encoder, pages), strict=True)) if text_encoder else None
    return dense, text


def _page_errors(
    batch: Sequence[Page],
    dense: Mapping[int, MultiVector | str],
    text: Mapping[int, MultiVector | str] | None,
) -> dict[int, str | None]:
    """Each batch position's cause of failure (its own, or an encoder's), or ``None``."""
    text = text or {}
    return {i: _first_error(p.error, dense.get(i), text.get(i)) for i, p in enumerate(batch)}


def _page_records(
    batch: Sequence[Page],
    errors: Mapping[int, str | None],
    dense: Mapping[int, PageVectors],
    text: Mapping[int, PageVectors] | None,
    settings: IndexSettings,
    source: str = "",
) -> list[StoredPage]:
    """Build the records of a batch: failed pages (without vectors) first, then the others.

    ``dense`` and ``text`` hold the pooled vectors of the pages without an error
    (see :func:`_pooled`); with ``settings.text`` each good page also gets the BM25
    vector of its text.
    """
    ok = [i for i, error in errors.items() if error is None]
    sparse = bm25_documents([batch[i].text or "" for i in ok]) if settings.text else None
    out = [StoredPage(p, source, error=errors[i]) for i, p in enumerate(batch) if errors[i]]
    for j, i in enumerate(ok):
        out.append(
            StoredPage(
                batch[i],
                source,
                dense=dense[i],
                text=text[i] if text is not None else None,
                sparse=sparse[j] if sparse is not None else None,
            )
        )
    return out


def _hand_over(
    sink: Sink,
    index: Index,
    encoder: Encoder,
    batch: Sequence[Page],
    settings: IndexSettings,
    times: StageTimes,
    source: str = "",
    text_encoder: Encoder | None = None,
) -> list[PageError]:
    """Encode one batch here; pool and store it through ``sink``; return the pages that failed.

    With an :class:`Inline` sink this is the serial path (pooled and stored before
    it returns); with a :class:`Writer`, pooling runs in its processes and storing in
    its thread, in order, while the caller encodes the next batch.
    """
    t0 = time.perf_counter()
    dense, text = _encode_batch(encoder, text_encoder, batch)
    times.encode += time.perf_counter() - t0
    errors = _page_errors(batch, dense, text)
    ok = [i for i, error in errors.items() if error is None]
    factors = (settings.pool_factor, settings.candidate_factor, settings.coarse_factor)
    single = encoder.spec.single
    t1 = time.perf_counter()
    pooling = {i: sink.pool(_pooled, dense[i], factors, single) for i in ok}
    text_pooling = (
        {i: sink.pool(_pooled, text[i], factors) for i in ok} if text is not None else None
    )
    times.pool += time.perf_counter() - t1  # pooled here (serial), or handed to the processes
    sink.submit(_write_batch, index, batch, errors, pooling, text_pooling, settings, source, times)
    return [PageError(batch[i].doc_path, batch[i].page_number, e) for i, e in errors.items() if e]


def _write_batch(
    index: Index,
    batch: Sequence[Page],
    errors: Mapping[int, str | None],
    pooling: Mapping[int, Future[PageVectors]],
    text_pooling: Mapping[int, Future[PageVectors]] | None,
    settings: IndexSettings,
    source: str,
    times: StageTimes,
) -> None:
    """Wait for a batch's pooled vectors, then store its pages (the writer's part)."""
    t0 = time.perf_counter()
    dense = {i: f.result() for i, f in pooling.items()}
    text = {i: f.result() for i, f in text_pooling.items()} if text_pooling is not None else None
    records = _page_records(batch, errors, dense, text, settings, source)
    t1 = time.perf_counter()
    index.add_pages(records, durable=False)  # made durable by the document's commit
    times.pool += t1 - t0
    times.store += time.perf_counter() - t1


def stored_pages(
    batch: Sequence[Page],
    dense: Mapping[int, MultiVector | str],
    text: Mapping[int, MultiVector | str],
    settings: IndexSettings,
    single: bool = False,
    source: str = "",
) -> list[StoredPage]:
    """Pool encoded pages into the records the index stores (no model, no store).

    ``dense`` and ``text`` map positions in ``batch`` to what :func:`_encode` gave
    (``text`` is empty without a text encoder); a page with an error of its own, or
    one its encoders failed on, becomes a record without vectors, its cause kept.
    The distributed job builds its records with this, the same as this job's writer.
    """
    texts = text or None
    errors = _page_errors(batch, dense, texts)
    ok = [i for i, error in errors.items() if error is None]
    factors = (settings.pool_factor, settings.candidate_factor, settings.coarse_factor)
    pooled = {i: _pooled(dense[i], factors, single) for i in ok}
    text_pooled = {i: _pooled(text[i], factors) for i in ok} if texts else None
    return _page_records(batch, errors, pooled, text_pooled, settings, source)


def _first_error(*found: str | MultiVector | None) -> str | None:
    """Pick the first cause among a page's own error and its encoders' results."""
    return next((f for f in found if isinstance(f, str)), None)


def _pooled(
    vectors: MultiVector | str | None, factors: tuple[int, int, int], single: bool = False
) -> PageVectors:
    """Pool one page's vectors for storing: the rerank, candidate and coarse vectors.

    A plain function of its arguments, so that it can run in another process.
    """
    assert vectors is not None and not isinstance(vectors, str)  # failed pages are out
    if single:  # one vector per page: nothing to pool, no candidate vectors
        return PageVectors(vectors, vectors[:0], int(vectors.shape[0]))
    stored, candidates, coarse = ward_pool(vectors, list(factors))
    return PageVectors(stored, candidates, int(vectors.shape[0]), coarse)


def index_paths(
    index: Index,
    encoder: Encoder,
    paths: Sequence[str | Path] | Discovery,
    *,
    settings: IndexSettings | None = None,
    render: RenderSettings | None = None,
    text: TextSettings | None = None,
    text_encoder: Encoder | None = None,
    text_cache: TextCache | None = None,
    prune: bool = False,
    progress: bool = True,
    pipeline: PipelineSettings | None = None,
) -> IndexReport:
    """Index every PDF under ``paths`` (files or folders, recursive).

    Unchanged documents (same sha256) are skipped, changed ones re-indexed (their
    old pages removed once the new version is committed), and with ``prune`` those
    whose files are gone removed. An interrupted run's pages are completed when
    their file is unchanged, else removed. A page that cannot be loaded or encoded
    is stored without vectors and reported in ``page_errors``.

    Args:
        index: the index to write into (created on first use).
        encoder: the page encoder; must match the index's manifest.
        paths: PDF files or folders, or what :func:`discover` found in them.
        settings: pooling settings; ``None`` keeps those of an existing index
            (or the defaults for a new one).
        render: rendering settings.
        text: page-text settings (OCR...), when ``settings.text`` is on.
        text_encoder: a second encoder, of page text (``minilm``): the ``text``
            channel beside ``encoder``'s, fixed when the index is created.
        text_cache: keep page texts (and OCR) for other indexes of the same files.
        prune: remove indexed documents not found under ``paths``.
        progress: show progress bars (only on a terminal).
        pipeline: how pooling and storing overlap encoding (``None``: pooling
            processes that follow the cores; ``PipelineSettings(pool_workers=0)``:
            all in this thread, batch after batch).

    Returns:
        An :class:`IndexReport`; bad files are in ``skipped`` with their causes.

    Raises:
        NothingToIndexError: no PDF was found (and nothing is to be pruned); no
            index is created.

    """
    start = time.perf_counter()
    found = paths if isinstance(paths, Discovery) else discover(paths)
    check_found(found, index, prune=prune)
    settings = _effective(index, encoder, settings, text_encoder)
    index.prepare(encoder.spec, settings, text_encoder.spec if text_encoder else None)
    run = _Run(
        index,
        _Encoding(
            encoder,
            text_encoder,
            settings,
            render or RenderSettings(),
            text or TextSettings(),
            pipeline or PipelineSettings(),
        ),
        text_cache,
        found,
    )
    run.index_all(progress)
    if prune:
        run.prune()
    return run.report(start)


@dataclass(frozen=True)
class _Encoding:
    """How pages are made and encoded in one run."""

    encoder: Encoder
    text_encoder: Encoder | None
    settings: IndexSettings
    render: RenderSettings
    text: TextSettings
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)


def _sink(pipeline: PipelineSettings) -> Inline | Writer:
    """Return the serial path's inline sink, or a writer with its pooling processes."""
    if not pipeline.overlapped:
        return Inline()
    return Writer(workers=pipeline.workers(), depth=pipeline.batches_in_flight)


# Batches of pages rendered ahead of the encoder, across document boundaries: it
# bounds the page images in memory to this many batches (plus the one being encoded;
# poppler's own output waits on disk, see RenderSettings.batch_pages).
RENDER_BATCHES_AHEAD = 2
# Documents marked pending in one write, ahead of the encoder: the embedded engine's
# flush costs the more the larger the index is (every segment is persisted), and a
# search excludes the pending documents by a filter, so the window stays small.
MARK_AHEAD = 32
# Documents committed in one group at most. The writer commits a finished document
# at once when nothing else waits for it; while it is behind (a large index's
# flushes), finished documents wait and are committed together, in two flushes.
COMMIT_GROUP = 32


@dataclass(frozen=True)
class _Begin:
    """A document's pages start (from page ``first``; the earlier ones are stored)."""

    doc: Document
    page_count: int
    first: int


@dataclass(frozen=True)
class _Batch:
    doc: Document
    pages: list[Page]


@dataclass(frozen=True)
class _End:
    """All of a document's missing pages were given: commit it once they are stored."""

    doc: Document
    page_count: int


@dataclass(frozen=True)
class _Failed:
    """A document could not be read (before or after some of its batches)."""

    doc: Document
    error: InputError


_Event = _Begin | _Batch | _End | _Failed


class _Run:
    """The state of one :func:`index_paths` run: what was found, done and skipped."""

    def __init__(
        self, index: Index, how: _Encoding, text_cache: TextCache | None, found: Discovery
    ) -> None:
        self.index, self.how, self.text_cache, self.found = index, how, text_cache, found
        self.committed = {r.doc_sha256: r for r in index.documents()}
        self.pending = index.pending_documents()
        self.removed_incomplete = _clean_incomplete(index, self.pending, self.committed, found)
        # pages an interrupted run stored of documents resumed now (read before any write)
        here = {d.sha256 for d in found.documents}
        self.stored = {
            sha: index.stored_pages(sha)
            for sha in self.pending
            if sha in here and sha not in self.committed
        }
        self.by_path: dict[str, list[DocumentRecord]] = {}
        for record in self.committed.values():
            self.by_path.setdefault(record.doc_path, []).append(record)
        self.times = StageTimes()
        self.skipped = list(found.skipped)
        self.indexed: list[str] = []
        self.unchanged: list[str] = []
        self.replaced: list[str] = []
        self.pruned: list[str] = []
        self.page_errors: list[PageError] = []
        self.pages = 0
        self.deleted: set[str] = set()  # versions removed by this run
        self.sink: Sink = Inline()
        # documents whose pages are all stored, waiting to be committed together
        self.ready: list[tuple[Document, int, int, list[PageError]]] = []

    def index_all(self, progress: bool) -> None:
        """Index every document found; every index write goes through one sink, in order.

        Documents are rendered in a background thread, across document boundaries,
        at most :data:`RENDER_BATCHES_AHEAD` batches ahead of the encoder.
        """
        docs = self.found.documents
        sink = self.sink = _sink(self.how.pipeline)
        try:
            with (
                bar(len(docs), "files", "file", enabled=progress, logger=logger) as files,
                bar(0, "pages", "page", enabled=progress, logger=logger) as pages,
            ):
                todo = [doc for doc in docs if self.to_index(sink, doc)]
                files.update(len(docs) - len(todo))
                self.index_documents(sink, todo, files, pages)
        except BaseException:
            sink.close(raise_error=False)  # keep what was encoded; commit what is whole
            try:
                self.commit_ready()
            except Exception as exc:  # the run's own failure is the one to report
                logger.warning("could not commit the finished documents: %s", exc)
            raise
        sink.close()
        self.commit_ready()
        self.times.waited += sink.waited

    def to_index(self, sink: Sink, doc: Document) -> bool:
        """Whether ``doc`` is to be indexed; a move is written through ``sink``, in order."""
        return self.admit(doc, lambda sha, moved: sink.submit(self.index.move_document, sha, moved))

    def admit(self, doc: Document, move: Callable[[str, Document], object] | None = None) -> bool:
        """Say whether ``doc`` is to be indexed; else note it unchanged (moved) or skipped."""
        known = self.committed.get(doc.sha256)
        if known is not None:
            if known.doc_path != doc.path:  # moved or renamed: same bytes, new path
                (move or self.index.move_document)(doc.sha256, doc)
                logger.info("%s moved to %s", known.doc_path, doc.path)
            self.unchanged.append(doc.path)
            return False
        clash = _other_file(self.by_path.get(doc.path, []), doc)
        if clash is not None:
            self.skipped.append(Skipped(doc.path, _clash_cause(clash)))
            return False
        return True

    def index_documents(
        self, sink: Sink, docs: Sequence[Document], files_bar: tqdm, pages_bar: tqdm
    ) -> None:
        """Encode the rendered batches of ``docs``; mark, store and commit through ``sink``."""
        how, times = self.how, self.times
        events = _prefetch(self.rendered(docs), depth=RENDER_BATCHES_AHEAD)
        position: dict[str, int] = {}
        for i, d in enumerate(docs):
            position.setdefault(d.sha256, i)
        marked: set[str] = set()
        done = 0
        failed: list[PageError] = []
        while True:
            t0 = time.perf_counter()
            event = next(events, None)
            times.render += time.perf_counter() - t0
            if event is None:
                return
            doc = event.doc
            if isinstance(event, _Batch):
                failed += _hand_over(
                    sink,
                    self.index,
                    how.encoder,
                    event.pages,
                    how.settings,
                    times,
                    doc.source,
                    how.text_encoder,
                )
                done += len(event.pages)
                pages_bar.update(len(event.pages))
            elif isinstance(event, _Begin):
                pending_path = self.pending.get(doc.sha256)
                if pending_path is not None and pending_path != doc.path:
                    sink.submit(self.index.move_document, doc.sha256, doc)  # renamed meanwhile
                if doc.sha256 not in marked:  # this one and the next ones, in one write
                    first = position[doc.sha256]
                    window = docs[first : first + MARK_AHEAD]
                    sink.submit(self.index.begin_documents, window)
                    marked.update(d.sha256 for d in window)
                files_bar.set_postfix_str(doc.path[-40:], refresh=False)
                pages_bar.total = (pages_bar.total or 0) + event.page_count
                pages_bar.update(event.first - 1)
                done, failed = 0, []
            elif isinstance(event, _End):
                sink.submit(self.commit, doc, event.page_count, done, failed)
                files_bar.update(1)
            else:
                sink.submit(self.skip, doc, event.error)
                files_bar.update(1)

    def rendered(self, docs: Sequence[Document]) -> Iterator[_Event]:
        """Probe and render each document's missing pages, in batches (in a worker thread).

        A document that cannot be read ends with a :class:`_Failed` event instead of
        an :class:`_End`, after any batches it gave.
        """
        how = self.how
        for doc in docs:
            try:
                info = probe(doc, how.render)
                stored = self.stored.get(doc.sha256, set())
                first = 1
                while first in stored:  # resume after the last contiguous stored page
                    first += 1
                if first > info.page_count:
                    logger.info("%s: all %d pages stored; committing", doc.path, info.page_count)
                elif first > 1:
                    logger.info("%s: resuming at page %d of %d", doc.path, first, info.page_count)
                yield _Begin(doc, info.page_count, first)
                pages = _page_stream(how, doc, info, first, self.times, self.text_cache)
                for batch in _batched(pages, how.render.batch_pages):
                    yield _Batch(doc, batch)
            except InputError as exc:
                yield _Failed(doc, exc)
                continue
            yield _End(doc, info.page_count)

    def skip(self, doc: Document, exc: InputError) -> None:
        """Note a document that could not be indexed; remove what was stored of it."""
        logger.debug("skipped %s", exc)
        self.skipped.append(Skipped(doc.path, exc.cause))
        self.index.delete_sha(doc.sha256)  # pages of a never-committed version only

    def commit(self, doc: Document, page_count: int, done: int, failed: list[PageError]) -> None:
        """Commit a document whose pages are all stored; then drop its older versions.

        Runs in the sink's order, after the document's last page is stored. While
        other writes wait behind it, the document waits too, to be committed with
        the next ones (at most :data:`COMMIT_GROUP`); the run commits the rest at
        its end.
        """
        self.ready.append((doc, page_count, done, failed))
        if self.sink.idle() or len(self.ready) >= COMMIT_GROUP:
            self.commit_ready()

    def commit_ready(self) -> None:
        """Commit the documents waiting, in one group; then drop their older versions."""
        ready, self.ready = self.ready, []
        if not ready:
            return
        outcomes = self.index.commit_many([(doc, page_count) for doc, page_count, _, _ in ready])
        for (doc, page_count, done, failed), outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, InputError):
                self.skip(doc, outcome)
                continue
            for error in failed:
                logger.debug("%s: page %d kept without vectors: %s", *astuple(error))
            logger.debug("committed %s (%d pages)", doc.path, page_count)
            self.settle(doc, done, failed)

    def settle(self, doc: Document, done: int, failed: Sequence[PageError]) -> None:
        """Count a committed document; remove the older version it replaces."""
        self.pages += done
        self.page_errors.extend(failed)
        self.indexed.append(doc.path)
        for old in self.by_path.get(doc.path, []):
            if old.doc_sha256 != doc.sha256:
                self.index.delete_sha(old.doc_sha256)
                self.deleted.add(old.doc_sha256)
                self.replaced.append(f"{old.doc_path} ({old.doc_sha256[:12]})")

    def prune(self) -> None:
        """Remove the committed documents whose files were not found."""
        seen = {d.sha256 for d in self.found.documents}
        for record in self.committed.values():
            if record.doc_sha256 not in seen and record.doc_sha256 not in self.deleted:
                self.index.delete_sha(record.doc_sha256)
                self.deleted.add(record.doc_sha256)
                self.pruned.append(record.doc_path)

    def report(self, start: float) -> IndexReport:
        if self.pages or self.pruned or self.replaced or self.removed_incomplete:
            t0 = time.perf_counter()
            self.index.optimize()
            self.times.optimize = time.perf_counter() - t0
        return IndexReport(
            indexed=tuple(self.indexed),
            unchanged=tuple(self.unchanged),
            skipped=tuple(self.skipped),
            replaced=tuple(self.replaced),
            pruned=tuple(self.pruned),
            pages=self.pages,
            seconds=time.perf_counter() - start,
            stages=self.times,
            page_errors=tuple(self.page_errors),
            removed_incomplete=tuple(self.removed_incomplete),
        )


def check_found(found: Discovery, index: Index, *, prune: bool = False) -> None:
    """Refuse a run that has nothing to do: no PDF found, and nothing to prune.

    Raises:
        NothingToIndexError: before any index is created or model loaded.

    """
    if not found.documents and not (prune and index.exists()):
        raise NothingToIndexError(found)


class NothingToIndexError(PagelensError):
    """No PDF was found under the paths given."""

    def __init__(self, found: Discovery) -> None:
        message = "no PDFs found"
        if found.skipped:
            causes = "; ".join(f"{s.path}: {s.cause}" for s in found.skipped[:5])
            more = len(found.skipped) - 5
            message += f" ({len(found.skipped)} files passed over: {causes}"
            message += f"; and {more} more)" if more > 0 else ")"
        super().__init__(message + "; nothing was indexed and no index was created or changed")
        self.found = found


def _clean_incomplete(
    index: Index,
    pending: dict[str, str],
    committed: dict[str, DocumentRecord],
    found: Discovery,
) -> list[str]:
    """Settle the documents an interrupted run left incomplete.

    One whose file is among ``found`` unchanged (same sha256) is resumed later in
    the run; one committed after all (interrupted just after its commit record)
    only loses its mark; the pages of any other (its file changed, moved away or
    deleted) are removed, so they can never be found by a search.
    """
    here = {d.sha256 for d in found.documents}
    removed = []
    for sha, path in pending.items():
        if sha in committed:
            index.end_document(sha)
        elif sha not in here:
            pages = index.delete_sha(sha)
            logger.info("removed %d pages of %s, left incomplete by an earlier run", pages, path)
            removed.append(path)
    return removed


def _other_file(records: Sequence[DocumentRecord], doc: Document) -> DocumentRecord | None:
    """Find an indexed document at ``doc``'s path from another file, still there.

    Two folders can hold files of the same relative path (``colA/report.pdf`` and
    ``colB/report.pdf`` both index as ``report.pdf``). An older version of the
    same file is replaced; a document whose own file still exists elsewhere is
    another document, and must not be replaced silently.
    """
    for record in records:
        if (
            record.doc_sha256 != doc.sha256
            and record.source
            and record.source != doc.source
            and os.path.exists(record.source)
        ):
            return record
    return None


def _clash_cause(record: DocumentRecord) -> str:
    return (
        f"the index already holds another document under this path, from "
        f"{display_path(record.source)}, which still exists; to index both folders, index "
        "them from their common parent folder (their paths then differ) or into separate "
        "indexes"
    )


def _effective(
    index: Index,
    encoder: Encoder,
    settings: IndexSettings | None,
    text_encoder: Encoder | None = None,
) -> IndexSettings:
    """Pick a run's settings: those given, else the index's own, else the defaults.

    A text encoder, as the encoder or beside it, always gets the page-text channel
    (its pages are their text).
    """
    if text_encoder is not None and not reads_text(text_encoder):
        raise PagelensError(
            f"text encoder {text_encoder.spec.model_id!r} reads page images, not text: "
            "the text channel needs an encoder of page text (e.g. minilm)"
        )
    if text_encoder is not None and text_encoder.spec.single:
        raise PagelensError(
            f"text encoder {text_encoder.spec.model_id!r} gives one vector per page: a "
            "single-vector encoder can be an index's own encoder, not its text channel"
        )
    if settings is None:
        settings = index.manifest.settings if index.manifest else IndexSettings()
    if (reads_text(encoder) or text_encoder is not None) and not settings.text:
        settings = replace(settings, text=True)
    return settings


def _page_stream(
    how: _Encoding,
    doc: Document,
    info: PdfInfo,
    first: int,
    times: StageTimes,
    text_cache: TextCache | None,
) -> Iterator[Page]:
    """Make the pages of ``doc`` from ``first`` on: rendered, with text where it is kept."""
    render = replace(how.render, password=info.password)  # only where the document needs one
    if not how.settings.text:
        return render_pages(doc, info, render, first_page=first)
    t0 = time.perf_counter()
    texts = text_cache.get(doc.sha256, how.text) if text_cache else None
    if texts is None or len(texts) != info.page_count:
        texts = extract_text(doc.source, info.page_count, how.text, password=info.password)
        if text_cache is not None:
            text_cache.put(doc.sha256, how.text, texts)
    times.text += time.perf_counter() - t0
    if reads_text(how.encoder):  # no image needed: the pages are their text
        return _text_pages(doc, info, texts, first)
    return (
        replace(p, text=texts[p.page_number - 1].text, text_source=texts[p.page_number - 1].source)
        for p in render_pages(doc, info, render, first_page=first)
    )


def _text_pages(
    doc: Document, info: PdfInfo, texts: Sequence[PageText], first: int
) -> Iterator[Page]:
    for t in texts[first - 1 :]:
        w_pt, h_pt = info.page_sizes_pt[t.page_number - 1]
        unloadable = (w_pt, h_pt) == (0.0, 0.0)
        yield Page(
            doc_sha256=doc.sha256,
            doc_path=doc.path,
            page_number=t.page_number,
            page_count=info.page_count,
            text=None if unloadable else t.text,
            text_source=None if unloadable else t.source,
            width_pt=w_pt,
            height_pt=h_pt,
            # the same rule as the rendered path's (render_pages)
            error=UNLOADABLE_PAGE if unloadable else None,
        )


def index_pages(
    index: Index,
    encoder: Encoder,
    pages: Iterable[Page],
    *,
    settings: IndexSettings | None = None,
    batch_size: int = 8,
    total: int | None = None,
    progress: bool = True,
    text_encoder: Encoder | None = None,
    pipeline: PipelineSettings | None = None,
) -> IndexReport:
    """Index pages that come as images already (e.g. an evaluation corpus).

    Each page is committed as its own one-page document keyed by ``doc_sha256``;
    pages already committed are skipped, so an interrupted run resumes. A
    ``text_encoder`` encodes each page's ``text`` (pages without text get no
    text-channel vectors). ``pipeline`` is as for :func:`index_paths`.
    """
    start = time.perf_counter()
    settings = _effective(index, encoder, settings, text_encoder)
    index.prepare(encoder.spec, settings, text_encoder.spec if text_encoder else None)
    committed = {r.doc_sha256 for r in index.documents()}
    times = StageTimes()
    indexed: list[str] = []
    unchanged: list[str] = []
    skipped: list[Skipped] = []
    failed: list[PageError] = []
    pages_done = 0
    sink = _sink(pipeline or PipelineSettings())
    try:
        with bar(total, "pages", "page", enabled=progress, logger=logger) as pages_bar:
            new = _new_pages(pages, committed, unchanged, pages_bar)
            for batch in _batched(new, batch_size):
                failed += _hand_over(
                    sink, index, encoder, batch, settings, times, text_encoder=text_encoder
                )
                pages_done += len(batch)
                for page in (p for p in batch if p.page_number == p.page_count):  # a last page
                    sink.submit(_commit_page_document, index, page, skipped, indexed)
                pages_bar.update(len(batch))
    except BaseException:
        sink.close(raise_error=False)  # keep what was encoded; commit what is whole
        raise
    sink.close()
    times.waited += sink.waited
    if indexed:
        t0 = time.perf_counter()
        index.optimize()
        times.optimize = time.perf_counter() - t0
    return IndexReport(
        indexed=tuple(indexed),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
        replaced=(),
        pruned=(),
        pages=pages_done,
        seconds=time.perf_counter() - start,
        stages=times,
        page_errors=tuple(failed),
    )


def _commit_page_document(
    index: Index, page: Page, skipped: list[Skipped], indexed: list[str]
) -> None:
    """Commit the document a corpus page ends; a document with no good page is skipped."""
    doc = Document(source="", path=page.doc_path, sha256=page.doc_sha256, size_bytes=0)
    try:
        index.commit(doc, page.page_count)
    except InputError as exc:
        skipped.append(Skipped(doc.path, exc.cause))
        index.delete_sha(doc.sha256)
        return
    indexed.append(doc.path)


def _new_pages(
    pages: Iterable[Page], committed: set[str], unchanged: list[str], bar: tqdm
) -> Iterator[Page]:
    """Yield the pages whose document is not committed yet; count the others."""
    for page in pages:
        if page.doc_sha256 in committed:
            if page.page_number == 1:
                unchanged.append(page.doc_path)
            bar.update(1)
            continue
        yield page
