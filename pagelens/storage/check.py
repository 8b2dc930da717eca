"""Check an index for damage, and repair what can be repaired (``pagelens check``).

Damage to an index's files does not always fail loudly: flipped bytes in stored
vectors give scores in the thousands, a lost segment leaves commit records whose
pages are gone (so the documents stay "unchanged" for good), a lost manifest
lets another encoder be stamped over the old vectors. :func:`check_index` reads
every point back and compares it with what the commit records promise:

- each committed document has all its pages, and as many vectors as recorded;
- every dense vector has the manifest's dimension, is finite and has a norm near
  1 (vectors are stored L2-normalised; fp16 storage keeps norms within 1e-3);
- no page lacks a commit record (an interrupted run, or a lost record);
- the manifest is there, readable, and agrees with the commit records;
- an embedded index holds every document its ledger records as committed
  (:mod:`pagelens.storage.ledger`), and the ledger reads.

:func:`repair_index` re-queues the damaged documents (deletes their commit
records and pages, so the next ``pagelens index`` run indexes them again) and
the documents the engine lost (the ledger's record of them too), removes orphan
pages and unreadable points, and rebuilds a lost manifest from the copy each
commit record keeps (or the ledger's), or refuses with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from pagelens.errors import PagelensError, StoreError
from pagelens.index import DocumentRecord, Index, Manifest, recorded_manifest
from pagelens.storage.base import StoredPoint
from pagelens.storage.layout import (
    COARSE,
    KIND_DOCUMENT,
    KIND_MANIFEST,
    KIND_PAGE,
    KIND_PENDING,
    MANIFEST_POINT_ID,
    PAGES,
    POOLED,
    document_point_id,
    page_point_id,
    pending_point_id,
)
from pagelens.storage.ledger import Ledger

logger = logging.getLogger(__name__)

# the norms a stored unit vector may have: fp16 storage moves them by ~1e-3;
# damage moves them by orders of magnitude
NORM_RANGE = (0.9, 1.1)
_BATCH = 256  # points read per call


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an index.

    Attributes:
        kind: ``"manifest"``, ``"document"`` (a committed document is damaged),
            ``"lost"`` (a document the ledger records as committed that the
            engine has no commit record of), ``"orphan"`` (pages without a
            commit record), ``"point"`` (a point that cannot be read or tied to
            a document) or ``"ledger"`` (a ledger line that does not read).
        subject: the document path, ``"manifest"``, ``"ledger"`` or the point id.
        cause: what is wrong, in words.
        doc_sha256: the document version concerned, if known.
        point_ids: the points a repair removes.

    """

    kind: str
    subject: str
    cause: str
    doc_sha256: str | None = None
    point_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckReport:
    """What :func:`check_index` found.

    ``repairable`` says whether :func:`repair_index` can fix every problem;
    ``advice`` says what to do (empty when the index is healthy).
    """

    location: str
    documents: int  # commit records read
    pages: int  # page points read
    problems: tuple[Problem, ...]
    repairable: bool
    advice: str
    manifest: Manifest | None = field(default=None, repr=False)  # what a repair restores
    unreadable: tuple[str, ...] = ()  # ids of points the engine failed to read

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "ok": self.ok,
            "documents": self.documents,
            "pages": self.pages,
            "problems": [
                {k: v for k, v in asdict(p).items() if k != "point_ids"} for p in self.problems
            ],
            "unreadable_points": len(self.unreadable),
            "repairable": self.repairable,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_index` did."""

    location: str
    requeued: tuple[str, ...]  # documents removed, to be indexed again by the next run
    orphans: int  # documents' worth of uncommitted pages removed
    points: int  # points removed in all
    manifest_rebuilt: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Page:
    id: str
    doc_sha256: str
    doc_path: str
    page_number: int
    declared: int  # rerank vectors its payload names
    shapes: dict[str, tuple[int, int]]  # dense vector name -> (n, dim)
    damage: list[str]  # non-finite or non-unit vectors


def _batches(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _read(index: Index, ids: Sequence[str]) -> tuple[list[StoredPoint], dict[str, str]]:
    """Read points in batches; a batch that fails is read point by point."""
    points: list[StoredPoint] = []
    unreadable: dict[str, str] = {}
    for batch in _batches(ids, _BATCH):
        try:
            points.extend(index.store.retrieve(batch))
            continue
        except StoreError:
            pass
        for point_id in batch:
            try:
                points.extend(index.store.retrieve([point_id]))
            except StoreError as exc:
                unreadable[point_id] = str(exc.__cause__ or exc)
    return points, unreadable


def _vector_damage(name: str, v: np.ndarray) -> str | None:
    if not np.isfinite(v).all():
        return f"{name} vectors hold non-finite values"
    norms = np.linalg.norm(v, axis=1)
    low, high = NORM_RANGE
    if len(norms) and (norms.min() < low or norms.max() > high):
        return (
            f"{name} vector norms {norms.min():.3g}..{norms.max():.3g} "
            f"(unit vectors are stored; expected {low}..{high})"
        )
    return None


def _page(point: StoredPoint) -> _Page | str:
    """Read a page point, or say why its payload is damaged."""
    p = point.payload
    try:
        sha, number = str(p["doc_sha256"]), int(p["page_number"])
        page = _Page(
            id=point.id,
            doc_sha256=sha,
            doc_path=str(p.get("doc_path", "?")),
            page_number=number,
            declared=int(p.get("vectors", 0)),
            shapes={name: (v.shape[0], v.shape[1]) for name, v in point.vectors.items()},
            damage=[],
        )
    except (KeyError, TypeError, ValueError) as exc:
        return f"page payload is damaged: {exc!r}"
    if point.id != page_point_id(sha, number):
        return f"page payload is damaged: it names page {number} of {sha[:12]}, not this point"
    for name, v in point.vectors.items():
        damage = _vector_damage(name, v)
        if damage:
            page.damage.append(damage)
    return page


def _numbers(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")


def _expected_dims(manifest: Manifest | None) -> dict[str, int]:
    return manifest.collection_spec().expected_dims() if manifest is not None else {}


def _page_faults(page: _Page, dims: dict[str, int]) -> list[str]:
    faults = list(page.damage)
    for name, (_, dim) in sorted(page.shapes.items()):
        if name not in dims and dims:
            faults.append(f"{name} vectors the index does not have")
        elif name in dims and dim != dims[name]:
            faults.append(f"{name} vectors of dimension {dim}, not the manifest's {dims[name]}")
    if page.declared and PAGES not in page.shapes:
        faults.append(f"no {PAGES} vectors ({page.declared} recorded)")
    elif PAGES in page.shapes and page.shapes[PAGES][0] != page.declared:
        faults.append(f"{page.shapes[PAGES][0]} {PAGES} vectors, {page.declared} recorded")
    if page.declared and POOLED not in page.shapes and (POOLED in dims or not dims):
        faults.append(f"no {POOLED} vectors")
    if page.declared and COARSE not in page.shapes and COARSE in dims:
        faults.append(f"no {COARSE} vectors")
    return [f"page {page.page_number}: {f}" for f in faults]


def check_index(index: Index) -> CheckReport:
    """Read every point of an index back and report what is damaged.

    Open the index with ``Index.open(..., verify=True)`` so that a damaged one
    opens at all (and an embedded one is probed for damage that aborts the
    engine).

    Raises:
        PagelensError: there is no index at all.
        StoreError: the index cannot even list its points.

    """
    if not index.store.exists():
        raise PagelensError(f"no index at {index.location}: nothing to check")
    points, unreadable = _read(index, list(index.store.point_ids()))
    scan = _Scan(index.ledger)
    for point in points:
        scan.classify(point)
    scan.place_unreadable(unreadable)
    recorded = bool(index.ledger and index.ledger.documents)
    rebuild = scan.check_manifest(bool(points or unreadable), recorded)
    scan.check_documents(_expected_dims(scan.manifest or rebuild))
    scan.check_ledger()
    scan.report_orphans()
    repairable, advice = _advice(scan, rebuild, index.location)
    return CheckReport(
        location=index.location,
        documents=len(scan.records),
        pages=sum(1 for p in points if p.payload.get("kind") == KIND_PAGE),
        problems=tuple(scan.problems),
        repairable=repairable,
        advice=advice,
        manifest=scan.manifest or rebuild,
        unreadable=tuple(unreadable),
    )


class _Scan:
    """What :func:`check_index` has read, and the problems found so far."""

    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger
        self.problems: list[Problem] = []
        self.manifest: Manifest | None = None
        self.manifest_seen = False
        self.records: dict[str, DocumentRecord] = {}
        self.record_manifests: dict[str, Manifest | None] = {}
        self.pages: dict[str, list[_Page]] = {}
        # marks of documents begun and not committed (see Index.begin_document); alone
        # they are no damage: the next indexing run resumes or removes such a document
        self.pending: dict[str, str] = {}
        self.lost: dict[str, dict[int, str]] = {}  # document -> unreadable page -> its id
        self.damaged_copies = 0  # commit records whose copy of the manifest is unreadable
        self.no_rebuild = ""  # why a lost manifest cannot be rebuilt (check_manifest)

    def _point_problem(self, point_id: str, cause: str) -> None:
        self.problems.append(Problem("point", point_id, cause, None, (point_id,)))

    def classify(self, point: StoredPoint) -> None:
        """File one point under the manifest, the commit records, pages or marks."""
        kind = point.payload.get("kind")
        if kind == KIND_MANIFEST and point.id == MANIFEST_POINT_ID:
            self.manifest_seen = True
            try:
                self.manifest = Manifest.from_payload(dict(point.payload))
            except PagelensError as exc:
                self.problems.append(Problem("manifest", "manifest", str(exc), None, (point.id,)))
        elif kind == KIND_DOCUMENT:
            self._record(point)
        elif kind == KIND_PAGE:
            page = _page(point)
            if isinstance(page, str):
                self._point_problem(point.id, page)
            else:
                self.pages.setdefault(page.doc_sha256, []).append(page)
        elif kind == KIND_PENDING and point.id == pending_point_id(
            str(point.payload.get("doc_sha256"))
        ):
            self.pending[str(point.payload["doc_sha256"])] = point.id
        else:
            self._point_problem(point.id, f"payload is damaged: unknown kind {kind!r}")

    def _record(self, point: StoredPoint) -> None:
        try:
            record = DocumentRecord.from_payload(dict(point.payload))
            if point.id != document_point_id(record.doc_sha256):
                raise StoreError("commit record is damaged: it names another document")
        except StoreError as exc:
            self._point_problem(point.id, str(exc))
            return
        self.records[record.doc_sha256] = record
        try:
            self.record_manifests[record.doc_sha256] = recorded_manifest(dict(point.payload))
        except PagelensError:
            self.record_manifests[record.doc_sha256] = None
            self.damaged_copies += 1

    def place_unreadable(self, unreadable: dict[str, str]) -> None:
        """Tie each point the engine could not read to its document (or the manifest)."""
        owner: dict[str, tuple[str, int]] = {}  # page id -> (document, page number)
        counts = {sha: r.page_count for sha, r in self.records.items()}
        if self.ledger is not None:  # documents whose commit record is lost too
            counts = {s: e.page_count for s, e in self.ledger.documents.items()} | counts
        for sha, page_count in counts.items():
            for number in range(1, page_count + 1):
                owner[page_point_id(sha, number)] = (sha, number)
        for point_id, cause in unreadable.items():
            if point_id == MANIFEST_POINT_ID:
                self.manifest_seen = True
                problem = Problem("manifest", "manifest", f"unreadable: {cause}", None, ())
                self.problems.append(problem)
            elif point_id in owner:
                sha, number = owner[point_id]
                self.lost.setdefault(sha, {})[number] = point_id
            else:
                self._point_problem(point_id, f"unreadable: {cause}")

    def check_manifest(self, anything_stored: bool, recorded: bool) -> Manifest | None:
        """Compare the manifest with the commit records' copies; the one to rebuild, if lost.

        ``recorded``: the ledger records documents (whose points may all be lost).
        """
        copies = {m for m in self.record_manifests.values() if m is not None}
        manifest = self.manifest
        if manifest is None and (anything_stored or recorded):
            if not self.manifest_seen:
                held = "the index holds points"
                if not anything_stored:
                    held = "the ledger records documents"
                self.problems.append(Problem("manifest", "manifest", f"missing: {held}"))
            if len(copies) == 1 and all(m is not None for m in self.record_manifests.values()):
                return copies.pop()
            kept = self._ledger_manifest()
            if kept is not None and copies <= {kept}:
                return kept
            self.no_rebuild = self._why_no_rebuild(copies)
        elif manifest is not None and any(m is not None and m != manifest for m in copies):
            others = sorted({m.encoder.model_id for m in copies if m != manifest})
            cause = (
                f"says encoder {manifest.encoder.model_id!r} with {manifest.settings}; commit "
                f"records say otherwise ({', '.join(others)}): written over by another run?"
            )
            self.problems.append(Problem("manifest", "manifest", cause))
        return None

    def _ledger_manifest(self) -> Manifest | None:
        """Give the manifest the ledger keeps a copy of, if it keeps a readable one."""
        if self.ledger is None or self.ledger.manifest is None:
            return None
        try:
            return Manifest.from_payload(self.ledger.manifest)
        except PagelensError:
            return None

    def check_ledger(self) -> None:
        """Documents the ledger records that the engine lost, and ledger lines that do not read.

        Call after :meth:`check_documents`: a document with its commit record is
        checked against that; one without is lost, with whatever pages remain.
        """
        if self.ledger is None:
            return
        for damage in self.ledger.damage:
            self.problems.append(Problem("ledger", "ledger", damage))
        for sha, entry in sorted(self.ledger.documents.items(), key=lambda kv: kv[1].doc_path):
            if sha in self.records:
                continue
            remains = self.pages.pop(sha, [])
            unread = self.lost.pop(sha, {})
            mark = [self.pending[sha]] if sha in self.pending else []
            ids = (*(p.id for p in remains), *unread.values(), *mark)
            left = f"; {len(remains)} of its pages remain" if remains else ""
            cause = (
                f"lost: recorded in the ledger ({entry.page_count} pages, from "
                f"{entry.source or 'an unrecorded file'}), not in the engine{left}"
            )
            self.problems.append(Problem("lost", entry.doc_path, cause, sha, ids))

    def _why_no_rebuild(self, copies: set[Manifest]) -> str:
        """Say why the commit records cannot give back a lost manifest."""
        damaged = sum(p.kind == "point" for p in self.problems)
        if not self.record_manifests:
            return "no commit record could be read to rebuild it from" + (
                f" ({damaged} points are damaged or unreadable)" if damaged else ""
            )
        if self.damaged_copies:
            return f"{self.damaged_copies} commit records hold a damaged copy of it"
        if len(copies) > 1:
            return "the commit records keep copies that disagree"
        return "the commit records do not all keep a copy of it (indexes built before they did)"

    def check_documents(self, dims: dict[str, int]) -> None:
        """Each committed document against its record: pages, vectors, counts."""
        for sha, record in sorted(self.records.items(), key=lambda kv: kv[1].doc_path):
            stored = self.pages.pop(sha, [])
            unread = self.lost.get(sha, {})
            faults = _document_faults(record, stored, unread, dims)
            if faults:
                ids_of = (document_point_id(sha), *(p.id for p in stored), *unread.values())
                cause = "; ".join(faults)
                self.problems.append(Problem("document", record.doc_path, cause, sha, ids_of))

    def report_orphans(self) -> None:
        """Pages no commit record claims (call after :meth:`check_documents`)."""
        for sha, stored in sorted(self.pages.items()):
            cause = (
                f"{len(stored)} pages without a commit record (a lost record, or an interrupted "
                "run that `pagelens index` would resume)"
            )
            mark = [self.pending[sha]] if sha in self.pending else []
            ids = (*(p.id for p in stored), *mark)
            self.problems.append(Problem("orphan", stored[0].doc_path, cause, sha, ids))


def _document_faults(
    record: DocumentRecord, stored: list[_Page], unread: dict[int, str], dims: dict[str, int]
) -> list[str]:
    faults: list[str] = []
    numbers = {p.page_number for p in stored} | set(unread)
    missing = sorted(set(range(1, record.page_count + 1)) - numbers)
    if unread:
        faults.append(f"pages {_numbers(sorted(unread))} unreadable")
    if missing:
        faults.append(f"{record.page_count - len(missing)} of {record.page_count} pages stored")
        faults.append(f"missing pages {_numbers(missing)}")
    for page in sorted(stored, key=lambda p: p.page_number):
        faults.extend(_page_faults(page, dims))
    total = sum(p.shapes.get(PAGES, (0, 0))[0] for p in stored)
    if not missing and not unread and total != record.vectors:
        faults.append(f"{total} {PAGES} vectors stored, {record.vectors} recorded")
    return faults


def _advice(scan: _Scan, rebuild: Manifest | None, location: str) -> tuple[bool, str]:
    problems, manifest = scan.problems, scan.manifest
    if not problems:
        return True, ""
    if manifest is None and rebuild is None:
        return False, (
            f"the manifest cannot be rebuilt: {scan.no_rebuild or 'it is lost'}; index the "
            "documents into a new folder"
        )
    if any(p.kind == "manifest" for p in problems) and manifest is not None:
        return False, (
            "the manifest disagrees with the commit records, so the stored vectors may come "
            "from two encoders; index the documents into a new folder"
        )
    damaged = sum(p.kind in ("document", "lost") for p in problems)
    then = (
        f", then `pagelens index` on the same folders to index the {damaged} damaged or "
        "lost documents again"
        if damaged
        else ""
    )
    files = _files_to_index(scan)
    return True, f"run `pagelens check --repair` on {location}{then}{files}"


def _files_to_index(scan: _Scan, most: int = 10) -> str:
    """Name the files of the damaged and lost documents, as recorded (to index again)."""
    sources = []
    for problem in scan.problems:
        sha = problem.doc_sha256
        if problem.kind not in ("document", "lost") or sha is None:
            continue
        if sha in scan.records:
            sources.append(scan.records[sha].source or problem.subject)
        elif scan.ledger is not None and sha in scan.ledger.documents:
            sources.append(scan.ledger.documents[sha].source or problem.subject)
    if not sources:
        return ""
    more = f" and {len(sources) - most} more" if len(sources) > most else ""
    return f" (their files: {', '.join(sources[:most])}{more})"


def repair_index(index: Index) -> RepairReport:
    """Check an index, then re-queue damaged documents and rebuild a lost manifest.

    Damaged documents lose their commit record and pages (the next ``pagelens
    index`` run indexes them again); orphan pages and unreadable points are
    removed; a lost manifest is rebuilt from the copy every commit record keeps.
    When the engine failed to read some points, their storage files are damaged
    beyond those points (later writes fail too), so the points kept are copied
    into new files (:meth:`Store.rebuild`).

    Raises:
        PagelensError: the damage cannot be repaired (the reason is the check's
            advice); nothing is changed then.

    """
    report = check_index(index)
    if not report.repairable:
        raise PagelensError(f"index {index.location}: cannot repair: {report.advice}")
    if report.unreadable and report.manifest is not None:
        drop = set(report.unreadable).union(*(p.point_ids for p in report.problems))
        keep = [i for i in index.store.point_ids() if i not in drop]
        index.store.rebuild(report.manifest.collection_spec(), keep)
    rebuilt = False
    if index.manifest is None and report.manifest is not None and report.problems:
        index.restore_manifest(report.manifest)
        rebuilt = True
        logger.info("%s: manifest rebuilt from the copy the index kept", index.location)
    requeued: list[str] = []
    orphans = removed = 0
    for problem in report.problems:
        if problem.kind == "manifest":
            continue
        if problem.doc_sha256 is not None:
            index.delete_sha(problem.doc_sha256)  # pages the check could not see too
        index.store.delete_points(problem.point_ids)
        removed += len(problem.point_ids)
        if problem.kind in ("document", "lost"):
            requeued.append(problem.subject)
            logger.info("%s: removed, to be indexed again (%s)", problem.subject, problem.cause)
        elif problem.kind == "orphan":
            orphans += 1
    if requeued or orphans or removed:
        index.store.optimize()
    if any(p.kind == "ledger" for p in report.problems):
        index.rewrite_ledger()  # from the commit records the repair kept
        logger.info("%s: the ledger was written again from the commit records", index.location)
    return RepairReport(
        location=index.location,
        requeued=tuple(requeued),
        orphans=orphans,
        points=removed,
        manifest_rebuilt=rebuilt,
    )
