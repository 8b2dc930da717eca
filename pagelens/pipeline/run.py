"""One indexing run: its setup, its state, and the report it ends with.

The single-process job (:func:`pagelens.pipeline.job.index_paths`) and the Ray
pipeline (:func:`pagelens.pipeline.distributed.index_paths_ray`) share all of it:
both pick their settings with :func:`effective_settings`, describe how pages are
made and encoded in a :class:`RunSetup`, admit each document found by the same
rules and count what they commit, skip, replace and prune in a :class:`RunState`,
whose :meth:`RunState.report` is the :class:`IndexReport` either returns. The
stages themselves are in :mod:`pagelens.pipeline.stages`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from pagelens.encoders.base import Encoder, reads_text
from pagelens.errors import InputError, PagelensError
from pagelens.index import DocumentRecord, Index, IndexSettings
from pagelens.pipeline.discover import Discovery, Skipped
from pagelens.pipeline.render import RenderSettings
from pagelens.pipeline.text import TextCache, TextSettings
from pagelens.types import Document, display_path

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RunSetup:
    """How pages are made and encoded in one run: its encoders and its settings.

    ``settings`` are the index's (see :func:`effective_settings`); ``render`` and
    ``text_settings`` say how a document's pages and their text are made.
    """

    encoder: Encoder
    text_encoder: Encoder | None  # the text channel's encoder, beside ``encoder``
    settings: IndexSettings
    render: RenderSettings
    text_settings: TextSettings


def effective_settings(
    index: Index,
    encoder: Encoder,
    settings: IndexSettings | None,
    text_encoder: Encoder | None = None,
) -> IndexSettings:
    """Pick a run's settings: those given, else the index's own, else the defaults.

    An encoder of page text, as the encoder or beside it (the text channel), always
    turns on ``settings.text``, the page text that the index keeps (its pages are
    their text).

    Raises:
        PagelensError: ``text_encoder`` reads page images, or gives one vector per
            page.

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


class RunState:
    """The state of one run over the documents found: what was done, skipped and removed.

    Made before the run writes anything: it reads what the index has committed,
    what an interrupted run left pending (settling what it cannot resume), and the
    pages stored of the documents it resumes. Then :meth:`admit` decides each
    document, :meth:`settle` counts one once its commit record is stored (the commit
    stage: the caller commits) or :meth:`skip` drops it, :meth:`prune` removes
    those whose files are gone, and :meth:`report` ends the run.
    """

    def __init__(
        self, index: Index, how: RunSetup, text_cache: TextCache | None, found: Discovery
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

    def skip(self, doc: Document, exc: InputError) -> None:
        """Note a document that could not be indexed; remove what was stored of it."""
        logger.debug("skipped %s", exc)
        self.skipped.append(Skipped(doc.path, exc.cause))
        self.index.delete_sha(doc.sha256)  # pages of a never-committed version only

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

    def _in_discovery_order(self) -> None:
        """Order what the run reports by discovery, however its stages interleaved.

        A document skipped at admission (a password it lacks) and one skipped at
        its commit (no page could be encoded) are noted as the run gets to them:
        group commits and the Ray pipeline both reorder that.
        """
        order = {d.path: i for i, d in enumerate(self.found.documents)}
        self.indexed.sort(key=lambda p: order.get(p, -1))
        first = len(self.found.skipped)
        self.skipped[first:] = sorted(self.skipped[first:], key=lambda s: order.get(s.path, -1))
        self.page_errors.sort(key=lambda e: (order.get(e.path, -1), e.page_number))

    def prune(self) -> None:
        """Remove the committed documents whose files were not found."""
        seen = {d.sha256 for d in self.found.documents}
        for record in self.committed.values():
            if record.doc_sha256 not in seen and record.doc_sha256 not in self.deleted:
                self.index.delete_sha(record.doc_sha256)
                self.deleted.add(record.doc_sha256)
                self.pruned.append(record.doc_path)

    def report(self, start: float) -> IndexReport:
        """Optimize the index if the run changed it; say what the run did since ``start``."""
        self._in_discovery_order()
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
