"""An index: one Store plus the manifest that says how its vectors were made."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pagelens.encoders.base import EncoderSpec
from pagelens.errors import (
    DocumentNotFoundError,
    IndexMismatchError,
    InputError,
    PagelensError,
    PageNotFoundError,
    StoreError,
    check_whole,
)
from pagelens.plan import HybridQuery, run_queries
from pagelens.storage.base import PayloadFilter, PointRecord, ScoredRecord
from pagelens.storage.layout import (
    COUNTED,
    KIND_DOCUMENT,
    KIND_MANIFEST,
    KIND_PAGE,
    KIND_PENDING,
    MANIFEST_FORMAT,
    MANIFEST_POINT_ID,
    READABLE_FORMATS,
    CollectionSpec,
    StoredPage,
    document_point_id,
    page_point,
    path_prefixes,
    pending_point_id,
    source_from_payload,
    source_payload,
)
from pagelens.storage.ledger import Ledger, LedgerEntry, describe, missing_from
from pagelens.storage.store import Store
from pagelens.types import Document, Hit, display_path
from pagelens.version import package_version

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSettings:
    """How page vectors are compressed; fixed per index and recorded in its manifest.

    Attributes:
        pool_factor: Ward pool factor of the stored rerank vectors (1 = no pooling).
            3 kept 98.6% of exact nDCG@5 in the project's measurements at a third
            of the storage.
        candidate_factor: Ward pool factor of the candidate vectors (about 38 for
            a median ColQwen2.5 page), which score the pages the coarse scan
            passes and pick the candidates the rerank scores.
        coarse_factor: Ward pool factor of the coarse vectors (manifest format 4 on;
            about 16 for a ColQwen2.5 page), which the first stage scans before the
            candidate vectors score the pages it passes (benchmarks/README.md,
            "Format 4").
        fp16: store vectors as float16 (measured to change no metric).
        text: extract page text (text layer, OCR where it has none) into the
            payload and a BM25 sparse vector, for hybrid search. Always on for
            text encoders, and for indexes with a second, text encoder.

    """

    pool_factor: int = 3
    candidate_factor: int = 16
    coarse_factor: int = 48
    fp16: bool = True
    text: bool = False

    def __post_init__(self) -> None:
        for name in ("pool_factor", "candidate_factor", "coarse_factor"):
            check_whole(name, getattr(self, name), 1)


@dataclass(frozen=True)
class Manifest:
    """What an index was built with; stored in the index itself.

    ``encoder`` makes the ``dense`` channel; ``text_encoder``, when the index has
    one, makes the ``text`` channel from page text, beside it.
    """

    encoder: EncoderSpec
    settings: IndexSettings
    pagelens_version: str
    created_at: str
    format: int = MANIFEST_FORMAT
    text_encoder: EncoderSpec | None = None

    def collection_spec(self) -> CollectionSpec:
        """Describe the collection an index with this manifest has."""
        return CollectionSpec(
            dim=self.encoder.dim,
            format=self.format,
            fp16=self.settings.fp16,
            text_dim=self.text_encoder.dim if self.text_encoder else None,
            single=self.encoder.single,
        )

    def to_payload(self) -> dict[str, Any]:
        return {"kind": KIND_MANIFEST, **self.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        """Return the manifest as plain data (its payload without the point's kind)."""
        return {
            "format": self.format,
            "encoder": asdict(self.encoder),
            "text_encoder": asdict(self.text_encoder) if self.text_encoder else None,
            "settings": asdict(self.settings),
            "pagelens_version": self.pagelens_version,
            "created_at": self.created_at,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Manifest:
        fmt = payload.get("format")
        if fmt not in READABLE_FORMATS:
            raise IndexMismatchError(
                f"index manifest format {fmt!r} is not supported (this pagelens reads "
                f"formats {', '.join(map(str, READABLE_FORMATS))}); rebuild the index: "
                "`pagelens index PDFS --index NEW_FOLDER`"
            )
        text_encoder = payload.get("text_encoder")
        try:
            return cls(
                encoder=EncoderSpec(**payload["encoder"]),
                text_encoder=EncoderSpec(**text_encoder) if text_encoder else None,
                settings=IndexSettings(**payload["settings"]),
                pagelens_version=payload["pagelens_version"],
                created_at=payload["created_at"],
                format=fmt,
            )
        except (KeyError, TypeError) as exc:
            raise StoreError(f"index manifest is damaged: {exc!r} in {payload!r}") from exc


@dataclass(frozen=True)
class DocumentRecord:
    """A fully indexed document, as its commit record says."""

    doc_path: str
    doc_sha256: str
    page_count: int
    source: str
    vectors: int  # stored rerank vectors, all pages together
    pooled_vectors: int
    text_vectors: int = 0  # the text channel's, if the index has one
    text_pooled_vectors: int = 0
    coarse_vectors: int = 0  # coarse vectors (manifest format 4 on), of each channel
    text_coarse_vectors: int = 0
    failed_pages: int = 0  # pages stored without vectors (they could not be loaded)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> DocumentRecord:
        """Read a commit record; StoreError if it is damaged."""
        try:
            return cls(
                doc_path=str(payload["doc_path"]),
                doc_sha256=str(payload["doc_sha256"]),
                page_count=int(payload["page_count"]),
                source=source_from_payload(payload),
                vectors=int(payload.get("vectors", 0)),
                pooled_vectors=int(payload.get("pooled_vectors", 0)),
                text_vectors=int(payload.get("text_vectors", 0)),
                text_pooled_vectors=int(payload.get("text_pooled_vectors", 0)),
                coarse_vectors=int(payload.get("coarse_vectors", 0)),
                text_coarse_vectors=int(payload.get("text_coarse_vectors", 0)),
                failed_pages=int(payload.get("failed_pages", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"commit record is damaged: {exc!r} in {payload!r}") from exc

    def to_dict(self) -> dict[str, Any]:
        """Return the record as plain data: the wire shape of a document (its field names)."""
        return asdict(self)


def recorded_manifest(payload: dict[str, Any]) -> Manifest | None:
    """Read the manifest a commit record carries (``None`` in records older than that)."""
    data = payload.get("manifest")
    return Manifest.from_payload(data) if isinstance(data, dict) else None


@dataclass(frozen=True)
class IndexInfo:
    """What ``pagelens info`` reports."""

    location: str
    manifest: Manifest | None
    documents: int
    pages: int
    vectors_per_page: float
    pooled_vectors_per_page: float
    bytes_per_page: float  # the vectors' values: rerank + candidate vectors, every channel
    text_vectors_per_page: float = 0.0  # the text channel's rerank vectors (in bytes_per_page)
    coarse_vectors_per_page: float = 0.0  # the dense channel's (manifest format 4 on)
    # everything the embedded index holds on disk (vectors, their engine overhead,
    # payloads, page text, bookkeeping) per page; None for a server's collection
    disk_bytes_per_page: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.manifest is not None:
            out["manifest"] = self.manifest.to_dict()
        return out


class Index:
    """An opened index: the store and its manifest.

    Open one with :meth:`open` (an embedded folder by default, or a server url).
    Index documents with :func:`pagelens.pipeline.job.index_paths` and search with
    :func:`pagelens.search.search`.
    """

    def __init__(
        self,
        store: Store,
        location: str,
        *,
        verify: bool = False,
        ledger_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        """Read the manifest of ``store``, and compare it with its ledger.

        ``ledger_folder``: where the index keeps its ledger
        (:mod:`pagelens.storage.ledger`; an embedded index's folder), ``None``
        for none (a server's collection).

        Raises:
            StoreError: the collection holds points but no readable manifest (a
                different encoder must never be stamped over its vectors), or fewer
                documents or pages than its ledger records (lost to damage); with
                ``verify`` (``pagelens check``) the index opens anyway.

        """
        self.store = store
        self.location = location
        self._manifest: Manifest | None = None
        self._unflushed_pages = False  # pages written with durable=False, not yet flushed
        self._ledger_folder = Path(ledger_folder) if ledger_folder is not None else None
        self._ledger: Ledger | None = None
        if not store.exists():
            self._no_engine(verify)
            return
        try:
            payloads = list(store.scroll(PayloadFilter(kind=KIND_MANIFEST)))
            if payloads:
                try:
                    self._manifest = Manifest.from_payload(payloads[0])
                    store.bind(self._manifest.collection_spec())
                except StoreError as exc:
                    raise StoreError(f"index {location}: {exc}; run `pagelens check`") from exc
            elif store.count(PayloadFilter()):
                raise StoreError(
                    f"index {location} holds points but no manifest (lost to damage?): "
                    "run `pagelens check --repair` to rebuild it from the commit records"
                )
        except StoreError as exc:
            if not verify:
                raise
            logger.debug("opening %s for a check despite: %s", location, exc)
        if self._ledger_folder is not None:
            self._open_ledger(verify)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "pagelens",
        location: str | None = None,
        wait_s: float = 0.0,
        lock_now: bool = False,
        verify: bool = False,
        segment_points: int | None = None,
    ) -> Index:
        """Open (or prepare to create) an index.

        Args:
            path: folder of an embedded index (Qdrant Edge, no server).
            url: a Qdrant server, e.g. ``http://localhost:6333``.
            api_key: the server's API key, if it has one.
            collection: the collection name on a server.
            location: qdrant-client's local mode (``":memory:"``); for tests and
                experiments with the server code path.
            wait_s: seconds to wait for another process that holds an embedded
                folder (one process at a time holds one).
            lock_now: take an embedded folder's lock at once, even before an index
                exists in it (an indexing run, before any work).
            verify: open a possibly damaged index to check it (``pagelens
                check``): always probe an embedded index's files in a child
                process first, and open it even without a readable manifest.
            segment_points: an embedded index seals its appendable segment each so
                many points written (0: never); ``None``: the store's default.

        Exactly one of ``path``, ``url`` and ``location`` must be given.

        """
        given = [n for n, v in (("path", path), ("url", url), ("location", location)) if v]
        if len(given) != 1:
            raise PagelensError(
                f"give exactly one of path, url or location to open an index; got {given or 'none'}"
            )
        if api_key and not url:
            raise PagelensError("api_key is only meaningful with url")
        if segment_points is not None and path is None:
            raise PagelensError("segment_points is only meaningful with path (an embedded index)")
        store: Store
        if path is not None:
            from pagelens.storage.edge import EdgeStore

            edge = EdgeStore(
                path, wait_s=wait_s, lock_now=lock_now, verify=verify, segment_points=segment_points
            )
            store, where = edge, str(Path(path))
        else:
            from pagelens.storage.server import ServerStore

            store = ServerStore(url=url, api_key=api_key, location=location, collection=collection)
            where = f"{url or location}#{collection}"
        try:
            return cls(store, where, verify=verify, ledger_folder=path)
        except PagelensError:
            store.close()  # release the folder's lock
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exists(self) -> bool:
        """Whether an index has been created here (by a first indexing run)."""
        return self.store.exists()

    # -- ledger --------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger | None:
        """The ledger of what the index committed (:mod:`pagelens.storage.ledger`).

        ``None`` for a server's collection, and for an index opened for a check
        (``verify``) before it had one.
        """
        return self._ledger

    def _no_engine(self, verify: bool) -> None:
        """No engine files here: damage if a ledger records documents (files lost)."""
        if self._ledger_folder is None:
            return
        ledger = Ledger.read(self._ledger_folder)
        if ledger is None or not ledger.documents:
            return
        if verify:
            self._ledger = ledger
            return
        raise StoreError(
            f"index {self.location}: {ledger.shortfall(0, 0)}: the engine's files are gone; "
            "restore the folder from a copy, or index the documents into a new folder "
            "(`pagelens check` says the same)"
        )

    def _open_ledger(self, verify: bool) -> None:
        """Read the ledger; unless for a check, settle it with the engine (see its module).

        Only counts are compared while they agree: two exact counts of the engine
        against the ledger's. A check (``verify``) writes nothing here: it compares
        every document, and a repair rewrites the ledger.
        """
        assert self._ledger_folder is not None
        ledger = Ledger.read(self._ledger_folder)
        if verify:
            self._ledger = ledger
            return
        if ledger is None:
            known: set[str] = set()
            ledger = self._build_ledger()
        elif ledger.damage:
            raise StoreError(
                f"index {self.location}: its ledger {ledger.path} is damaged: "
                f"{ledger.damage[0]}; run `pagelens check --repair` to write it again"
            )
        else:
            known = set(ledger.documents)
        self._ledger = ledger
        self._settle(ledger, known)
        ledger.compact_if_grown()

    def _build_ledger(self) -> Ledger:
        """Write a ledger from the engine's manifest and commit records (trusting them)."""
        assert self._ledger_folder is not None
        entries = [_entry(r) for r in self.documents()]
        manifest = self._manifest.to_dict() if self._manifest else None
        ledger = Ledger.create(self._ledger_folder, manifest, entries)
        if entries:  # an index from an earlier release (or a repaired one)
            logger.info(
                "%s: recorded its %d committed documents in a new ledger (%s)",
                self.location,
                len(entries),
                ledger.path.name,
            )
        return ledger

    def rewrite_ledger(self) -> None:
        """Write the ledger again from the engine's commit records (``pagelens check --repair``)."""
        if self._ledger_folder is not None and self.store.exists():
            self._ledger = self._build_ledger()

    def _settle(self, ledger: Ledger, known: set[str]) -> None:
        """Compare the engine with the ledger: refuse what it lost, record what it is ahead by.

        ``known``: the documents the ledger held before this open.
        """
        docs = self.store.count(PayloadFilter(kind=KIND_DOCUMENT))
        pages = self.store.count(PayloadFilter(kind=KIND_PAGE))
        missing = self._reconcile(ledger) if docs != len(ledger.documents) else []
        short = ledger.shortfall(docs, pages)
        if missing or short:
            lost = f" ({describe(missing)} missing)" if missing else ""
            raise StoreError(
                f"index {self.location}: {short or 'documents are missing'}{lost}: index "
                "files are damaged or lost; run `pagelens check` to see what is lost (then "
                "`pagelens check --repair`, and `pagelens index` on the same folders)"
            )
        self._drop_settled_marks(ledger, known)

    def _reconcile(self, ledger: Ledger) -> list[LedgerEntry]:
        """Add the documents the engine committed after the ledger's last line; the missing."""
        records = self.documents()
        missing = missing_from(ledger, (r.doc_sha256 for r in records))
        ahead = [_entry(r) for r in records if not ledger.holds(r.doc_sha256)]
        if ahead and not missing:
            ledger.committed(ahead)
            logger.info(
                "%s: the ledger missed the commit of %s (an interrupted run): recorded",
                self.location,
                describe(ahead),
            )
        return missing

    def _drop_settled_marks(self, ledger: Ledger, known: set[str]) -> None:
        """Remove pending marks of committed documents (they would hide them from searches)."""
        if not self.store.count(PayloadFilter(kind=KIND_PENDING)):
            return
        settled = {s: p for s, p in self.pending_documents().items() if ledger.holds(s)}
        if not settled:
            return
        self._end_documents(tuple(settled), durable=True)
        # a document the ledger held before: its marks were removed, durably, before
        # its commit line was written; the engine brought them back (its log replayed)
        level = logging.WARNING if known.intersection(settled) else logging.INFO
        logger.log(
            level,
            "%s: dropped the pending marks of %d committed documents (%s): brought back "
            "by the engine's write-ahead log, or left by an interrupted run",
            self.location,
            len(settled),
            ", ".join(sorted(settled.values())[:5]),
        )

    # -- manifest ------------------------------------------------------------------
    @property
    def manifest(self) -> Manifest | None:
        return self._manifest

    def prepare(
        self,
        encoder: EncoderSpec,
        settings: IndexSettings,
        text_encoder: EncoderSpec | None = None,
    ) -> Manifest:
        """Check an indexing run against the manifest, creating the index if new.

        Raises:
            IndexMismatchError: the index was built with another encoder, text
                encoder or settings.

        """
        if self._manifest is not None:
            self.check_encoder(encoder)
            built = self._manifest.text_encoder
            if (text_encoder is None) != (built is None) or (
                text_encoder is not None and not text_encoder.same_vectors(built)
            ):
                raise IndexMismatchError(
                    f"index {self.location} was built with "
                    + (f"text encoder {built.model_id!r}" if built else "no text encoder")
                    + "; this run has "
                    + (f"text encoder {text_encoder.model_id!r}" if text_encoder else "none")
                    + ". A text channel is fixed when an index is created: "
                    "use a new index folder to add or change it"
                )
            if settings != self._manifest.settings:
                raise IndexMismatchError(
                    f"index {self.location} was built with {self._manifest.settings}, "
                    f"not {settings}; use a new index folder for other settings"
                )
            return self._manifest
        manifest = Manifest(
            encoder=encoder,
            text_encoder=text_encoder,
            settings=settings,
            pagelens_version=package_version(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        if not self.store.exists():
            self.store.create(manifest.collection_spec())
        self.store.upsert([PointRecord(MANIFEST_POINT_ID, manifest.to_payload())])
        self._manifest = manifest
        self.store.bind(manifest.collection_spec())
        self._record_manifest(manifest)
        return manifest

    def _record_manifest(self, manifest: Manifest) -> None:
        """Write the manifest the engine now holds to the ledger (a new index: a new ledger)."""
        if self._ledger_folder is None:
            return
        if self._ledger is None:
            self._ledger = self._build_ledger()
        else:
            self._ledger.manifest_written(manifest.to_dict())

    def settings_with(self, **changes: Any) -> IndexSettings:
        """Return this index's settings (the defaults for a new one) with ``changes``.

        An existing index refuses other settings when it is written to
        (:meth:`prepare`), naming both.
        """
        base = self._manifest.settings if self._manifest else IndexSettings()
        return replace(base, **changes)

    def check_encoder(self, encoder: EncoderSpec) -> None:
        """Refuse an encoder other than the one the index was built with."""
        if self._manifest is None:
            raise PagelensError(
                f"index {self.location} is empty: nothing is indexed yet "
                "(run `pagelens index` first)"
            )
        built = self._manifest.encoder
        if not encoder.same_vectors(built):
            raise IndexMismatchError(
                f"index {self.location} was built with encoder {built.describe()}; "
                f"refusing encoder {encoder.describe()}. "
                "Search with the encoder the index was built with, or index into a new folder."
            )

    def check_text_encoder(self, encoder: EncoderSpec) -> None:
        """Refuse a text encoder other than the one that made the ``text`` channel."""
        if self._manifest is None:
            raise PagelensError(
                f"index {self.location} is empty: nothing is indexed yet "
                "(run `pagelens index` first)"
            )
        built = self._manifest.text_encoder
        if built is None:
            raise PagelensError(
                f"index {self.location} has no text channel: build an index with a text "
                "encoder (--text-model) to search one"
            )
        if not encoder.same_vectors(built):
            raise IndexMismatchError(
                f"index {self.location} built its text channel with {built.describe()}; "
                f"refusing text encoder {encoder.describe()}"
            )

    # -- documents -----------------------------------------------------------------
    def documents(self) -> list[DocumentRecord]:
        """Commit records of every fully indexed document, sorted by path."""
        if not self.store.exists():
            return []
        try:
            records = [
                DocumentRecord.from_payload(p)
                for p in self.store.scroll(PayloadFilter(kind=KIND_DOCUMENT))
            ]
        except StoreError as exc:
            raise StoreError(f"index {self.location}: {exc}; run `pagelens check`") from exc
        return sorted(records, key=lambda r: r.doc_path)

    def restore_manifest(self, manifest: Manifest) -> None:
        """Write back a lost manifest (``pagelens check --repair``)."""
        self.store.upsert([PointRecord(MANIFEST_POINT_ID, manifest.to_payload())])
        self._manifest = manifest
        self.store.bind(manifest.collection_spec())
        self._record_manifest(manifest)

    # -- pages -------------------------------------------------------------------
    def add_pages(self, pages: Sequence[StoredPage], *, durable: bool = True) -> None:
        """Store pages (their vectors and payloads) in one write; durable on return.

        ``durable=False`` leaves them to be persisted by a later write: at the
        latest, :meth:`commit` of their document makes them durable before it
        writes the commit record. An indexing job writes pages this way, so that
        a document costs the engine two flushes however many pages it has.
        """
        spec = self._manifest.collection_spec() if self._manifest is not None else None
        self.store.upsert([page_point(p, spec) for p in pages], durable=durable)
        self._unflushed_pages = self._unflushed_pages or not durable

    def pages(self, where: PayloadFilter | None = None) -> Iterator[dict[str, Any]]:
        """Payloads of the stored pages (complete documents or not) matching ``where``."""
        base = where or PayloadFilter()
        yield from self.store.scroll(replace(base, kind=KIND_PAGE))

    def count_pages(self, where: PayloadFilter | None = None) -> int:
        """Count the stored pages matching ``where``."""
        base = where or PayloadFilter()
        return self.store.count(replace(base, kind=KIND_PAGE))

    def commit(self, doc: Document, page_count: int) -> int:
        """Write a document's commit record once all its pages are stored.

        The record sums the vector counts of the stored pages and keeps a copy of
        the manifest (``pagelens check --repair`` rebuilds a lost one from it).
        Returns how many of the pages were stored without vectors.

        Raises:
            PagelensError: not every page is stored.
            InputError: no page could be loaded or encoded (nothing is committed,
                so the next run tries the document again).

        """
        outcome = self.commit_many([(doc, page_count)])[0]
        if isinstance(outcome, InputError):
            raise outcome
        return outcome

    def commit_many(self, docs: Sequence[tuple[Document, int]]) -> list[int | InputError]:
        """Commit several documents (as :meth:`commit`) in at most two engine flushes.

        Returns, for each document in order, how many of its pages were stored
        without vectors, or the :class:`InputError` that kept it uncommitted.
        Their pages are made durable first, then their records and their marks'
        removal in one durable write, then the ledger's line (so a pending mark on a
        document the ledger holds is one the engine brought back: see
        :mod:`pagelens.storage.ledger`).

        Raises:
            PagelensError: not every page of one of them is stored (none is committed).

        """
        outcomes: list[int | InputError] = []
        records: list[PointRecord] = []
        for doc, page_count in docs:
            try:
                record = self._record(doc, page_count)
            except InputError as exc:
                outcomes.append(exc)
                continue
            records.append(PointRecord(document_point_id(doc.sha256), record))
            outcomes.append(int(record["failed_pages"]))
        if not records:
            return outcomes
        if self._unflushed_pages:  # the pages durable before the records that vouch for them
            self.store.flush()
            self._unflushed_pages = False
        self.store.upsert(records, durable=False)
        shas = tuple(str(point.payload["doc_sha256"]) for point in records)
        self._end_documents(shas, durable=True)  # the records and the marks' removal
        if self._ledger is not None:  # after the engine: a crash between leaves it ahead
            ledger_entries = [_entry(DocumentRecord.from_payload(dict(r.payload))) for r in records]
            self._ledger.committed(ledger_entries)
        return outcomes

    def _record(self, doc: Document, page_count: int) -> dict[str, Any]:
        """Build the commit record of a document whose pages are all stored (see :meth:`commit`)."""
        counts = dict.fromkeys(COUNTED, 0)
        pages = failed = 0
        causes: list[str] = []
        for payload in self.pages(PayloadFilter(doc_sha256=(doc.sha256,))):
            pages += 1
            if payload.get("error"):
                failed += 1
                causes.append(f"page {payload.get('page_number')}: {payload['error']}")
            for key in COUNTED:
                counts[key] += int(payload.get(key, 0))
        if pages != page_count:
            raise PagelensError(
                f"{doc.path}: {pages} of {page_count} pages stored; refusing to commit"
            )
        if failed == pages:
            cause = "no page could be loaded or encoded: " + "; ".join(causes[:3])
            raise InputError(doc.path, cause)
        return {
            "kind": KIND_DOCUMENT,
            "doc_path": doc.path,
            "doc_sha256": doc.sha256,
            "page_count": page_count,
            "failed_pages": failed,
            "size_bytes": doc.size_bytes,
            **source_payload(doc.source),
            **counts,
            "manifest": self._manifest.to_dict() if self._manifest else None,
        }

    @property
    def has_coarse_vectors(self) -> bool:
        """Whether pages carry coarse vectors for the first stage (manifest format 4 on)."""
        return self._manifest is not None and self._manifest.collection_spec().coarse

    @property
    def has_candidate_graph(self) -> bool:
        """Whether the candidate vectors carry an HNSW graph (manifest format 1)."""
        return self._manifest is not None and self._manifest.collection_spec().candidate_graph

    def optimize(self) -> None:
        """Build what a batch of writes left pending (the candidate vectors' graph)."""
        self.store.optimize()

    def hybrid(
        self, queries: Sequence[HybridQuery], *, k: int, where: PayloadFilter | None = None
    ) -> list[list[ScoredRecord]]:
        """Run engine queries (one or several channels each, fused) over the pages."""
        return run_queries(self.store, queries, k=k, where=where)

    def stored_pages(self, doc_sha256: str) -> set[int]:
        """Page numbers stored for a document (complete or not)."""
        where = PayloadFilter(kind=KIND_PAGE, doc_sha256=(doc_sha256,))
        return {int(p["page_number"]) for p in self.store.scroll(where)}

    def begin_document(self, doc: Document) -> None:
        """Mark a document as being written, before its first page is stored.

        The mark stays until the document's commit record is written (or its pages
        are deleted), so the next run finds a document an interruption left
        incomplete, even when its file has since changed, moved or gone.
        """
        self.begin_documents([doc])

    def begin_documents(self, docs: Sequence[Document]) -> None:
        """Mark several documents at once, in one durable write (see :meth:`begin_document`).

        A mark left on a document the run never reached costs the next run nothing:
        it indexes the file if it is still there, and drops the mark if not.
        """
        marks = [
            PointRecord(
                pending_point_id(doc.sha256),
                {"kind": KIND_PENDING, "doc_path": doc.path, "doc_sha256": doc.sha256},
            )
            for doc in docs
        ]
        self.store.upsert(marks)

    def pending_documents(self) -> dict[str, str]:
        """Documents begun but not committed: ``{sha256: path as recorded}``."""
        if not self.store.exists():
            return {}
        marks = self.store.scroll(PayloadFilter(kind=KIND_PENDING))
        return {str(p["doc_sha256"]): str(p.get("doc_path", "")) for p in marks}

    def end_document(self, doc_sha256: str) -> None:
        """Drop a document's pending mark (its commit record is written)."""
        self._end_documents((doc_sha256,), durable=True)

    def _end_documents(self, doc_sha256s: tuple[str, ...], *, durable: bool) -> None:
        where = PayloadFilter(kind=KIND_PENDING, doc_sha256=doc_sha256s)
        self.store.delete(where, durable=durable)

    def move_document(self, doc_sha256: str, doc: Document) -> None:
        """Record a new path and source file for every point of one document version."""
        payload = {
            "doc_path": doc.path,
            "path_prefixes": path_prefixes(doc.path),
            "source_bytes": None,
            **source_payload(doc.source),
        }
        self.store.set_payload(PayloadFilter(doc_sha256=(doc_sha256,)), payload)
        if self._ledger is not None:
            self._ledger.moved(doc_sha256, doc.path, doc.source)

    def find_document(self, doc: str) -> DocumentRecord:
        """Return the commit record of one fully indexed document.

        ``doc`` is its path as the index records it (``pagelens ls``), its sha256,
        or the absolute path of the indexed file.

        Raises:
            DocumentNotFoundError: the index holds no such (fully indexed) document.

        """
        matches = self._matching(doc)
        if not matches:
            raise self._not_found(doc)
        return matches[0]

    def _matching(self, doc: str) -> list[DocumentRecord]:
        """Every commit record ``doc`` names (see :meth:`find_document`), by path."""
        if not isinstance(doc, str) or not doc:
            raise DocumentNotFoundError(
                f"a document is named by its path, sha256 or file's absolute path, got {doc!r}"
            )
        shown = display_path(doc)
        source = display_path(os.path.abspath(doc)) if os.path.isabs(doc) else None
        return [
            r
            for r in self.documents()
            if shown in (r.doc_path, r.doc_sha256)
            or (source is not None and r.source and display_path(r.source) == source)
        ]

    def _not_found(self, doc: str) -> DocumentNotFoundError:
        return DocumentNotFoundError(
            f"no document {display_path(doc)!r} in index {self.location}: `pagelens ls` lists "
            "the documents as recorded (their paths, relative to the folder indexed); a "
            "document is also named by its sha256 or its file's absolute path"
        )

    def page(self, record: DocumentRecord, page_number: int) -> dict[str, Any]:
        """Return the stored payload of one page of a committed document.

        Raises:
            PageNotFoundError: ``page_number`` is not a whole number from 1 to the
                document's page count, or that page is not stored (damage: run
                ``pagelens check``).

        """
        n = page_number
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= record.page_count:
            raise PageNotFoundError(
                f"page {page_number!r} is not a page of {record.doc_path!r}: it has pages "
                f"1 to {record.page_count}"
            )
        for payload in self.pages(PayloadFilter(doc_sha256=(record.doc_sha256,))):
            if int(payload.get("page_number", 0)) == page_number:
                return payload
        raise PageNotFoundError(
            f"page {page_number} of {record.doc_path!r} is not stored in the index "
            "(run `pagelens check`)"
        )

    def document_pages(self, record: DocumentRecord) -> list[dict[str, Any]]:
        """Return the stored payloads of a document's pages, by page number."""
        pages = self.pages(PayloadFilter(doc_sha256=(record.doc_sha256,)))
        return sorted(pages, key=lambda p: int(p["page_number"]))

    def delete_document(self, doc: str) -> int:
        """Delete a document; returns pages removed.

        ``doc`` names it as for :meth:`find_document`; a document left half-indexed
        (pages but no commit record) is found by its recorded path too.

        Raises:
            DocumentNotFoundError: no such document in the index.

        """
        matches = self._matching(doc)
        if not matches:
            # also catch a half-indexed document (pages but no commit record)
            where = PayloadFilter(doc_paths=(display_path(doc),))
            pages = self.count_pages(where)
            if pages == 0:
                raise self._not_found(doc)
            self.store.delete(where)
            return pages
        removed = 0
        for record in matches:
            removed += self.delete_sha(record.doc_sha256)
        return removed

    def delete_sha(self, doc_sha256: str) -> int:
        """Delete every point of one document version; returns pages removed."""
        pages = self.store.count(PayloadFilter(kind=KIND_PAGE, doc_sha256=(doc_sha256,)))
        if self._ledger is not None and self._ledger.holds(doc_sha256):
            self._ledger.deleted([doc_sha256])  # before the engine: a crash leaves it ahead
        # the commit record goes first: a crash in between leaves an uncommitted
        # document, which the next run cleans up, never a record without pages
        self.store.delete(PayloadFilter(kind=KIND_DOCUMENT, doc_sha256=(doc_sha256,)))
        self.store.delete(PayloadFilter(doc_sha256=(doc_sha256,)))  # pages, pending mark
        return pages

    def info(self) -> IndexInfo:
        """Count the documents, pages and bytes of the index.

        Raises:
            PagelensError: there is no index here at all (a mistyped folder).

        """
        if not self.store.exists():
            raise PagelensError(
                f"no index at {self.location}: `pagelens index PDFS --index {self.location}` "
                "makes one"
            )
        docs = self.documents()
        pages = sum(d.page_count for d in docs)
        counts = {key: sum(int(getattr(d, key)) for d in docs) for key in COUNTED}
        # the vectors' values only; disk_bytes_per_page counts all the rest too
        total = self._manifest.collection_spec().vector_bytes(counts) if self._manifest else 0.0
        per_page = total / pages if pages else 0.0
        return IndexInfo(
            location=self.location,
            manifest=self._manifest,
            documents=len(docs),
            pages=pages,
            vectors_per_page=counts["vectors"] / pages if pages else 0.0,
            pooled_vectors_per_page=counts["pooled_vectors"] / pages if pages else 0.0,
            bytes_per_page=per_page,
            disk_bytes_per_page=_per_page(_disk_bytes(self.location), pages),
            text_vectors_per_page=counts["text_vectors"] / pages if pages else 0.0,
            coarse_vectors_per_page=counts["coarse_vectors"] / pages if pages else 0.0,
        )


def _entry(record: DocumentRecord) -> LedgerEntry:
    """Make the ledger's entry of a committed document."""
    return LedgerEntry(record.doc_sha256, record.doc_path, record.page_count, record.source)


def hit_from_payload(
    payload: Mapping[str, Any], *, score: float = 0.0, channels: tuple[str, ...] = ()
) -> Hit:
    """Make the :class:`~pagelens.types.Hit` of a stored page payload.

    The one place a page's payload (as :func:`~pagelens.storage.layout.page_point`
    lays it out) becomes a hit: for a search's results, a served page image, a page
    to explain.

    Raises:
        StoreError: the payload is not a readable page's (damage brought back a
            deleted or bookkeeping point, or garbled the payload).

    """
    kind = payload.get("kind")
    missing = [key for key in ("doc_path", "page_number", "doc_sha256") if key not in payload]
    if kind != KIND_PAGE or missing:
        what = f"missing {', '.join(missing)}" if missing and kind == KIND_PAGE else f"a {kind!r}"
        raise StoreError(f"a stored point that should be a page is {what} point")
    return Hit(
        doc_path=str(payload["doc_path"]),
        page_number=int(payload["page_number"]),
        score=score,
        doc_sha256=str(payload["doc_sha256"]),
        payload=payload,
        channels=channels,
        source=source_from_payload(payload) or None,
        text=payload.get("text"),
    )


def _per_page(total: float | None, pages: int) -> float | None:
    return total / pages if total is not None and pages else None


def _disk_bytes(location: str) -> float | None:
    """Bytes the files under an embedded index's folder take on disk (None for a server).

    Allocated blocks, not file sizes: the engine's memory-mapped files are sparse.
    """
    folder = Path(location)
    if not folder.is_dir():
        return None
    return float(sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()))
