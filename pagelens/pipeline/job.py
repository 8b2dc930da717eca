"""The indexing job: discover documents, render, encode, pool, store, commit.

This is the single-process job: one thread renders ahead, this one encodes, and
pooling processes and a writer thread pool and store beside it (see
:mod:`pagelens.pipeline.overlap`). The stages are :mod:`pagelens.pipeline.stages`'
functions and the run's bookkeeping is :class:`pagelens.pipeline.run.RunState`,
shared with the Ray pipeline (:mod:`pagelens.pipeline.distributed`).

A document counts as indexed only once its commit record (a vectorless point
naming the document) is stored, and that record is written after every page. So
a crash, ``kill -9`` or Ctrl-C leaves at most one uncommitted document; the next
run finds its stored pages, renders only the missing ones (page ids are
deterministic, so nothing is duplicated) and commits it. A bad file is skipped and
reported, and nothing already committed is touched.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from pagelens.encoders.base import Encoder
from pagelens.errors import InputError, PagelensError
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.discover import Discovery, Skipped, discover
from pagelens.pipeline.overlap import Inline, PipelineSettings, Sink, Writer
from pagelens.pipeline.render import RenderSettings, probe
from pagelens.pipeline.run import (  # IndexReport, PageError, StageTimes: the job's own API too
    IndexReport,
    PageError,
    RunSetup,
    RunState,
    StageTimes,
    effective_settings,
)
from pagelens.pipeline.stages import (
    encode_batch,
    page_errors,
    page_records,
    page_stream,
    pool_factors,
    pool_page,
    store_pages,
)
from pagelens.pipeline.text import TextCache, TextSettings
from pagelens.progress import bar
from pagelens.storage.layout import PageVectors
from pagelens.types import Document, Page

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
    dense, text_channel = encode_batch(encoder, text_encoder, batch)
    times.encode += time.perf_counter() - t0
    errors = page_errors(batch, dense, text_channel)
    ok = [i for i, error in errors.items() if error is None]
    factors = pool_factors(settings)
    single = encoder.spec.single
    t1 = time.perf_counter()
    dense_pooling = {i: sink.pool(pool_page, dense[i], factors, single) for i in ok}
    text_pooling = (
        {i: sink.pool(pool_page, text_channel[i], factors) for i in ok}
        if text_channel is not None
        else None
    )
    times.pool += time.perf_counter() - t1  # pooled here (serial), or handed to the processes
    sink.submit(
        _write_batch, index, batch, errors, dense_pooling, text_pooling, settings, source, times
    )
    return [PageError(batch[i].doc_path, batch[i].page_number, e) for i, e in errors.items() if e]


def _write_batch(
    index: Index,
    batch: Sequence[Page],
    errors: Mapping[int, str | None],
    dense_pooling: Mapping[int, Future[PageVectors]],
    text_pooling: Mapping[int, Future[PageVectors]] | None,
    settings: IndexSettings,
    source: str,
    times: StageTimes,
) -> None:
    """Wait for a batch's pooled vectors, then store its pages (the writer's part)."""
    t0 = time.perf_counter()
    dense = {i: f.result() for i, f in dense_pooling.items()}
    text_channel = (
        {i: f.result() for i, f in text_pooling.items()} if text_pooling is not None else None
    )
    records = page_records(batch, errors, dense, text_channel, settings, source)
    t1 = time.perf_counter()
    store_pages(index, records)  # made durable by the document's commit
    times.pool += t1 - t0
    times.store += time.perf_counter() - t1


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
    settings = effective_settings(index, encoder, settings, text_encoder)
    index.prepare(encoder.spec, settings, text_encoder.spec if text_encoder else None)
    how = RunSetup(
        encoder, text_encoder, settings, render or RenderSettings(), text or TextSettings()
    )
    run = _Run(index, how, text_cache, found, pipeline or PipelineSettings())
    run.index_all(progress)
    if prune:
        run.prune()
    return run.report(start)


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


class _Run(RunState):
    """One :func:`index_paths` run: its state, and the loop that renders, encodes and commits."""

    def __init__(
        self,
        index: Index,
        how: RunSetup,
        text_cache: TextCache | None,
        found: Discovery,
        pipeline: PipelineSettings,
    ) -> None:
        super().__init__(index, how, text_cache, found)
        self.pipeline = pipeline
        self.sink: Sink = Inline()
        # documents whose pages are all stored, waiting to be committed together
        self.ready: list[tuple[Document, int, int, list[PageError]]] = []

    def index_all(self, progress: bool) -> None:
        """Index every document found; every index write goes through one sink, in order.

        Documents are rendered in a background thread, across document boundaries,
        at most :data:`RENDER_BATCHES_AHEAD` batches ahead of the encoder.
        """
        docs = self.found.documents
        sink = self.sink = _sink(self.pipeline)
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
                pages = page_stream(how, doc, info, first, self.times, self.text_cache)
                for batch in _batched(pages, how.render.batch_pages):
                    yield _Batch(doc, batch)
            except InputError as exc:
                yield _Failed(doc, exc)
                continue
            yield _End(doc, info.page_count)

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
    settings = effective_settings(index, encoder, settings, text_encoder)
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
