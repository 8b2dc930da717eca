"""Find the PDFs under the paths a user gives: by content, deduplicated, in a stable order."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pagelens import progress
from pagelens.errors import InputError
from pagelens.types import Document, display_path

logger = logging.getLogger(__name__)

PDF_MAGIC = b"%PDF-"
SNIFF_BYTES = 1024  # the magic may follow some junk; readers accept it within the first 1 KiB
CHUNK_BYTES = 1 << 20  # hash in 1 MiB chunks
PROGRESS_MIN_FILES = 200  # below this, hashing is quick enough to need no progress bar


@dataclass(frozen=True)
class Skipped:
    """A file that was found but not taken, and why."""

    path: str  # relative to its root, like ``Document.path`` (bad bytes as ``\\xNN``)
    cause: str


@dataclass(frozen=True)
class Discovery:
    """The PDFs to index, in order, and every file passed over."""

    documents: tuple[Document, ...]
    skipped: tuple[Skipped, ...]


@dataclass(frozen=True)
class _Candidate:
    source: str  # absolute path
    path: str  # relative to its root, posix separators
    explicit: bool  # named by the user rather than found in a folder


def discover(paths: Sequence[str | os.PathLike[str]]) -> Discovery:
    """Find the PDF files among ``paths`` (files or folders, searched recursively).

    A file is a PDF when ``%PDF-`` occurs in its first 1024 bytes, whatever its
    name. Folders are walked in sorted order; symlinked folders are followed once
    (no loops). A document reached twice (same sha256) is kept once, first wins.

    Args:
        paths: files and folders, in the order their documents should come.

    Returns:
        The documents found and the files skipped, each with its cause.

    Raises:
        InputError: an input path does not exist (a typo must not pass silently).

    """
    roots = [Path(p) for p in paths]
    for root in roots:  # check every input before any work
        if not root.exists():
            raise InputError(display_path(str(root)), "no such file or directory")

    candidates: list[_Candidate] = []
    skipped: list[Skipped] = []
    for root in roots:
        if root.is_dir():
            candidates.extend(_walk(root, skipped))
        else:
            candidates.append(
                _Candidate(str(root.absolute()), display_path(root.name), explicit=True)
            )

    documents: list[Document] = []
    by_sha: dict[str, Document] = {}
    by_path: dict[str, Document] = {}
    for cand in _progress(candidates):
        doc, cause = _inspect(cand)
        if doc is None:
            skipped.append(Skipped(cand.path, cause))
            continue
        if doc.sha256 in by_sha:
            first = by_sha[doc.sha256]
            logger.info("skipping %s: same content as %s", doc.source, first.source)
            skipped.append(Skipped(doc.path, f"duplicate of {first.path}"))
            continue
        if doc.path in by_path:
            # Two different files would share one name in the index: keep the first.
            first = by_path[doc.path]
            cause = f"another document already has this path (from {first.source})"
            logger.debug("skipping %s: %s", doc.source, cause)
            skipped.append(Skipped(doc.path, cause))
            continue
        by_sha[doc.sha256] = doc
        by_path[doc.path] = doc
        documents.append(doc)

    logger.info("found %d PDF(s); skipped %d file(s)", len(documents), len(skipped))
    return Discovery(documents=tuple(documents), skipped=tuple(skipped))


def _walk(root: Path, skipped: list[Skipped]) -> list[_Candidate]:
    """Regular files under ``root``, sorted by relative path; folders visited once."""
    seen: set[tuple[int, int]] = set()
    found: list[_Candidate] = []

    def visit(folder: Path, rel: tuple[str, ...]) -> None:
        try:
            st = folder.stat()
        except OSError as err:
            skipped.append(
                Skipped(display_path("/".join(rel)) or ".", f"unreadable folder: {err.strerror}")
            )
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            logger.debug("not following %s: folder already visited (symlink loop?)", folder)
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            skipped.append(
                Skipped(display_path("/".join(rel)) or ".", f"unreadable folder: {err.strerror}")
            )
            return
        for entry in entries:
            entry_rel = (*rel, entry.name)
            try:
                is_dir = entry.is_dir()  # follows symlinks; loops are caught by `seen`
            except OSError:
                is_dir = False
            if is_dir:
                visit(Path(entry.path), entry_rel)
            else:
                found.append(
                    _Candidate(
                        os.path.abspath(entry.path),
                        display_path("/".join(entry_rel)),
                        explicit=False,
                    )
                )

    visit(root, ())
    found.sort(key=lambda c: c.path)
    return found


def _inspect(cand: _Candidate) -> tuple[Document | None, str]:
    """Sniff and hash one file: a ``Document``, or ``None`` and the cause to skip it."""
    named_pdf = cand.explicit or cand.path.lower().endswith(".pdf")
    try:
        st = os.stat(cand.source)
        if not stat.S_ISREG(st.st_mode):
            # A FIFO or a device would block or never end: never open one.
            return _skip(cand, "not a regular file", warn=named_pdf)
        if st.st_size == 0:
            return _skip(cand, "empty file", warn=named_pdf)
        digest = hashlib.sha256()
        size = 0
        with open(cand.source, "rb") as f:
            head = f.read(CHUNK_BYTES)
            if PDF_MAGIC not in head[:SNIFF_BYTES]:
                if named_pdf:
                    return _skip(cand, "not a PDF (no %PDF- header)", warn=True)
                return _skip(cand, "not a PDF", warn=False)
            chunk = head
            while chunk:
                digest.update(chunk)
                size += len(chunk)
                chunk = f.read(CHUNK_BYTES)
    except OSError as err:
        return _skip(cand, f"unreadable: {err.strerror or err}", warn=True)
    if size == 0:  # emptied between stat and read
        return _skip(cand, "empty file", warn=named_pdf)
    return Document(cand.source, cand.path, digest.hexdigest(), size), ""


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hash a file's bytes with sha256 (a document's identity), in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _skip(cand: _Candidate, cause: str, *, warn: bool) -> tuple[None, str]:
    # Every skip is in the Discovery the caller reports (the CLI prints each once), so
    # it is only logged at debug level here; ``warn`` marks files named like PDFs.
    logger.debug("skipping %s%s: %s", cand.path, " (a PDF by name)" if warn else "", cause)
    return None, cause


def _progress(items: list[_Candidate]) -> Iterator[_Candidate]:
    """Yield ``items`` under a progress bar, when there are enough to wait for."""
    enabled = len(items) >= PROGRESS_MIN_FILES
    with progress.bar(len(items), "hashing PDFs", "file", enabled=enabled, logger=logger) as bar:
        for item in items:
            yield item
            bar.update(1)
