"""The ledger: what an embedded index has committed, recorded outside the engine.

Damage to the engine's files can be silent: a lost segment folder takes documents
with it and the engine opens as if they had never been indexed; flipped bytes in
its write-ahead log make it replay old writes (pending marks beside the commit
records that settled them, so every search excludes those documents). The ledger
is a small journal beside the engine's folder (``INDEX/ledger.jsonl``) that the
engine never writes, so :class:`~pagelens.index.Index` can compare the two on
opening and ``pagelens check`` can name what the engine lost.

Format: one event per line, ``CRC JSON`` with ``CRC`` the CRC-32 of the JSON text
in 8 hex digits. The first line is ``{"event": "ledger", "format": 1}``; then

- ``{"event": "manifest", "manifest": {...}}``: the index's manifest (as
  ``Manifest.to_dict``), written when the index is made or its manifest restored;
- ``{"event": "commit", "documents": [{"sha256", "path", "pages", "source"}]}``:
  documents committed, one line per group the index commits together;
- ``{"event": "delete", "sha256": [...]}``: documents about to be deleted;
- ``{"event": "move", "sha256", "path", "source"}``: a document's new path.

Each append is one write, flushed and ``fsync``'d; the folder is ``fsync``'d when
the file is made, so a commit costs one small write whatever the index's size.
:meth:`Ledger.compact` rewrites the whole file (temporary file, ``fsync``,
``os.replace``) once it holds :data:`COMPACT_FACTOR` times more records than live
documents. Reading is tolerant of a crash mid-append: a last line that is torn
(no newline, or a CRC that does not match) is ignored, and cut off before the next
append; a line elsewhere that does not read is damage (:attr:`Ledger.damage`).

Ordering (crash safety): the engine is never behind the ledger unless damaged.

- A commit line is written *after* the engine has made the commit records durable
  (and the removal of the documents' pending marks with them): a crash between
  leaves the engine ahead, and the next open adds those documents to the ledger.
- A delete line is written *before* the engine deletes: a crash between leaves the
  engine ahead again (the document still there), reconciled the same way.
- So a document the ledger holds that the engine has no commit record for (or
  fewer pages in all than the ledger records) is damage, which opening reports and
  ``pagelens check`` names; a pending mark on a document the ledger holds is one
  the engine brought back, and is dropped on opening.

An index without a ledger (written by an earlier release) gets one built from its
commit records on the first open that can write. A server collection
(:class:`~pagelens.storage.server.ServerStore`) has no ledger.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagelens.errors import StoreError

logger = logging.getLogger(__name__)

LEDGER_NAME = "ledger.jsonl"
LEDGER_FORMAT = 1
# rewrite the journal once it holds this many records per live document (and at
# least _COMPACT_MIN), or more than COMPACT_LINES lines: reading costs about 8 us a
# line, so one line of many documents reads faster than many lines of one
COMPACT_FACTOR = 4
_COMPACT_MIN = 256
COMPACT_LINES = 128


@dataclass(frozen=True)
class LedgerEntry:
    """A committed document as the ledger records it."""

    doc_sha256: str
    doc_path: str
    page_count: int
    source: str = ""  # the indexed file's absolute path, as the file system names it

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.doc_sha256,
            "path": self.doc_path,
            "pages": self.page_count,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        pages = data["pages"]
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
            raise ValueError(f"page count {pages!r}")
        return cls(str(data["sha256"]), str(data["path"]), pages, str(data.get("source", "")))


def _line(event: Mapping[str, Any]) -> bytes:
    """One journal line: the event's CRC-32 and its JSON (ASCII: any file name survives)."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return f"{zlib.crc32(body.encode('ascii')):08x} {body}\n".encode("ascii")


def _event(raw: bytes) -> dict[str, Any]:
    """Read one journal line (without its newline); ValueError if it is damaged."""
    crc, _, body = raw.partition(b" ")
    if len(crc) != 8 or f"{zlib.crc32(body):08x}".encode() != crc:
        raise ValueError("its checksum does not match")
    event = json.loads(body.decode("ascii"))
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ValueError("not an event")
    return event


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Ledger:
    """The journal of one index folder, read into the documents it holds now.

    Read one with :meth:`read`, start one with :meth:`create`; the index appends
    to it with :meth:`committed`, :meth:`deleted`, :meth:`moved` and
    :meth:`manifest_written`.
    """

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LEDGER_NAME
        self.documents: dict[str, LedgerEntry] = {}  # sha256 -> the live entry
        self.manifest: dict[str, Any] | None = None  # the last manifest recorded
        self.damage: list[str] = []  # lines that do not read, in words
        self.records = 0  # documents, deletions and moves recorded in all
        self.lines = 0  # lines that read
        self._good_end = 0  # bytes up to the end of the last line that reads
        # appends one at a time (a server's jobs and deletions run in several threads)
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------------------
    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> Ledger | None:
        """Read the ledger in ``folder``; ``None`` if it has none.

        Raises:
            StoreError: the file cannot be read at all (an OSError).

        """
        ledger = cls(Path(folder))
        try:
            data = ledger.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{ledger.path}: cannot read the ledger: {exc}") from exc
        ledger._replay(data)
        return ledger

    def _replay(self, data: bytes) -> None:
        """Apply every line of ``data`` in order; note damaged lines, skip a torn last one.

        A line is torn when nothing that reads follows it: a crash cut the append
        short before its ``fsync`` returned, so the engine never did what it records.
        """
        complete = data.count(b"\n")  # lines with their newline; the rest is a torn tail
        parts = data.split(b"\n")
        for number, raw in enumerate(parts, start=1):
            if number > complete and not raw:
                break
            try:
                if number > complete:
                    raise ValueError("no newline")
                event = _event(raw)
                if (number == 1) != (event.get("event") == "ledger"):
                    raise ValueError("the header must be the first line, and only there")
                if number == 1 and event.get("format") != LEDGER_FORMAT:
                    raise ValueError(
                        f"written in format {event.get('format')!r}, not {LEDGER_FORMAT}"
                    )
                self._apply(event)
                self.lines += 1
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                if not any(parts[number:]):  # the last line: torn by a crash mid-append
                    logger.info("%s: ignoring a torn last line (%s)", self.path, exc)
                    break
                self.damage.append(f"line {number} is damaged ({exc})")
            self._good_end += len(raw) + 1

    def _apply(self, event: Mapping[str, Any]) -> None:
        kind = event["event"]
        if kind == "commit":
            entries = [LedgerEntry.from_dict(d) for d in event["documents"]]
            self.documents.update((e.doc_sha256, e) for e in entries)
            self.records += len(entries)
        elif kind == "delete":
            shas = [str(s) for s in event["sha256"]]
            for sha in shas:
                self.documents.pop(sha, None)
            self.records += len(shas)
        elif kind == "move":
            old = self.documents.get(str(event["sha256"]))
            if old is not None:
                path, source = str(event["path"]), str(event["source"])
                self.documents[old.doc_sha256] = LedgerEntry(
                    old.doc_sha256, path, old.page_count, source
                )
            self.records += 1
        elif kind == "manifest":
            manifest = event["manifest"]
            self.manifest = dict(manifest) if isinstance(manifest, Mapping) else None
        elif kind != "ledger":
            raise ValueError(f"unknown event {kind!r}")

    @property
    def pages(self) -> int:
        """Pages of the documents the ledger holds, all together."""
        return sum(e.page_count for e in self.documents.values())

    def holds(self, doc_sha256: str) -> bool:
        """Whether the ledger records this document version as committed."""
        return doc_sha256 in self.documents

    # -- writing -------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike[str],
        manifest: Mapping[str, Any] | None,
        entries: Iterable[LedgerEntry] = (),
    ) -> Ledger:
        """Write a new ledger holding ``manifest`` and ``entries`` (replacing any file)."""
        ledger = cls(Path(folder))
        ledger.manifest = dict(manifest) if manifest is not None else None
        ledger.documents = {e.doc_sha256: e for e in entries}
        ledger.compact()
        return ledger

    def compact(self) -> None:
        """Rewrite the file with the live documents only (atomically: temp file, replace).

        Called while nothing else writes (on opening, or by a repair).
        """
        events: list[Mapping[str, Any]] = [{"event": "ledger", "format": LEDGER_FORMAT}]
        if self.manifest is not None:
            events.append({"event": "manifest", "manifest": self.manifest})
        if self.documents:
            docs = [e.to_dict() for e in sorted(self.documents.values(), key=_by_path)]
            events.append({"event": "commit", "documents": docs})
        data = b"".join(_line(e) for e in events)
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(temp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, self.path)
            _fsync_folder(self.path.parent)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write the ledger: {exc}") from exc
        self.damage, self.records, self._good_end = [], len(self.documents), len(data)
        self.lines = len(events)

    def compact_if_grown(self) -> bool:
        """Compact the journal if it has grown (see :data:`COMPACT_FACTOR`); whether it did."""
        grown = self.records > max(_COMPACT_MIN, COMPACT_FACTOR * len(self.documents))
        if self.damage or not (grown or self.lines > COMPACT_LINES):
            return False
        logger.debug(
            "%s: compacting %d records to %d", self.path, self.records, len(self.documents)
        )
        try:
            self.compact()
        except StoreError as exc:  # the journal as it was still reads: only slower
            logger.warning("%s", exc)
            return False
        return True

    def _append(self, event: Mapping[str, Any]) -> None:
        """Append one event durably (cutting off a torn last line first); hold the lock.

        Raises:
            StoreError: the file cannot be written (the engine is then ahead of the
                ledger, which the next open reconciles).

        """
        line = _line(event)
        if self._good_end == 0:  # nothing of the file reads: start it again
            line = _line({"event": "ledger", "format": LEDGER_FORMAT}) + line
        try:
            with open(self.path, "r+b") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > self._good_end:  # a torn line a crash left: not ours to keep
                    fh.truncate(self._good_end)
                    fh.seek(self._good_end)
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write the ledger: {exc}") from exc
        self._good_end += len(line)
        self.lines += 1

    def committed(self, entries: Sequence[LedgerEntry]) -> None:
        """Record documents whose commit records the engine has made durable."""
        if not entries:
            return
        with self._lock:
            self._append({"event": "commit", "documents": [e.to_dict() for e in entries]})
            self.documents.update((e.doc_sha256, e) for e in entries)
            self.records += len(entries)

    def deleted(self, doc_sha256s: Sequence[str]) -> None:
        """Record documents about to be deleted from the engine."""
        if not doc_sha256s:
            return
        with self._lock:
            self._append({"event": "delete", "sha256": list(doc_sha256s)})
            for sha in doc_sha256s:
                self.documents.pop(sha, None)
            self.records += len(doc_sha256s)

    def moved(self, doc_sha256: str, doc_path: str, source: str) -> None:
        """Record a document's new path (the engine has already recorded it)."""
        with self._lock:
            old = self.documents.get(doc_sha256)
            if old is None:
                return
            event = {"event": "move", "sha256": doc_sha256, "path": doc_path, "source": source}
            self._append(event)
            self.documents[doc_sha256] = LedgerEntry(doc_sha256, doc_path, old.page_count, source)
            self.records += 1

    def manifest_written(self, manifest: Mapping[str, Any]) -> None:
        """Record the manifest the engine now holds."""
        with self._lock:
            self._append({"event": "manifest", "manifest": dict(manifest)})
            self.manifest = dict(manifest)

    # -- comparing with the engine ----------------------------------------------------
    def shortfall(self, documents: int, pages: int) -> str | None:
        """Say what the engine lacks, if it holds fewer documents or pages than recorded."""
        if documents >= len(self.documents) and pages >= self.pages:
            return None
        return (
            f"the ledger records {len(self.documents)} documents and {self.pages} pages; "
            f"the engine holds {documents} and {pages}"
        )


def _by_path(entry: LedgerEntry) -> tuple[str, str]:
    return (entry.doc_path, entry.doc_sha256)


def missing_from(ledger: Ledger, committed: Iterable[str]) -> list[LedgerEntry]:
    """Give the documents the ledger holds that are not among the ``committed`` sha256s."""
    have = set(committed)
    return sorted((e for s, e in ledger.documents.items() if s not in have), key=_by_path)


def describe(entries: Sequence[LedgerEntry], most: int = 5) -> str:
    """Name documents by their recorded paths (the first ``most``)."""
    names = ", ".join(e.doc_path for e in entries[:most])
    return names + (f" and {len(entries) - most} more" if len(entries) > most else "")
