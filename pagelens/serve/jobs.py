"""Indexing jobs of a served index: one at a time, in a background thread.

A job indexes the files found under server-side paths one document at a time,
each through :func:`pagelens.pipeline.job.index_paths` (so every guarantee of an
indexing run holds: a document counts once its commit record is written, bad
files are skipped with their cause). Between documents and between page batches
the job checks whether it was cancelled; a document cancelled half-way has its
stored pages removed, so nothing of it stays behind.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagelens.encoders.base import Encoder, EncoderSpec
from pagelens.errors import PagelensError
from pagelens.lens import Lens
from pagelens.pipeline.discover import Discovery, discover
from pagelens.pipeline.job import NothingToIndexError, index_paths
from pagelens.pipeline.text import TextSettings
from pagelens.types import MultiVector, Page

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"


class JobBusyError(PagelensError):
    """An indexing job is already running on this index."""


class _Cancelled(BaseException):
    """Raised inside the job's encoder call to stop a document between batches.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that the indexing job's
    per-page error handling, which catches ``Exception``, lets it through.
    """


@dataclass
class Job:
    """One indexing job and its progress (read by ``GET /jobs/{id}``)."""

    id: str
    paths: tuple[str, ...]
    state: str = QUEUED
    files_total: int = 0
    files_done: int = 0
    pages: int = 0
    current: str | None = None
    indexed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    page_errors: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def to_dict(self) -> dict[str, Any]:
        seconds = self.seconds()
        return {
            "id": self.id,
            "state": self.state,
            "paths": list(self.paths),
            "files_total": self.files_total,
            "files_done": self.files_done,
            "pages": self.pages,
            "pages_per_second": round(self.pages / seconds, 3) if seconds > 0 else 0.0,
            "seconds": round(seconds, 3),
            "current": self.current,
            "indexed": list(self.indexed),
            "unchanged": len(self.unchanged),
            "skipped": list(self.skipped),
            "page_errors": list(self.page_errors),
            "error": self.error,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
        }


class _Counting:
    """The job's view of an encoder: counts the pages it encodes, stops when cancelled."""

    def __init__(self, encoder: Encoder, job: Job) -> None:
        self._encoder, self._job = encoder, job
        self.reads = getattr(encoder, "reads", "image")  # see pagelens.encoders.reads_text

    @property
    def spec(self) -> EncoderSpec:
        return self._encoder.spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        if self._job.cancel.is_set():
            raise _Cancelled
        out = self._encoder.encode_pages(pages)
        self._job.pages += len(pages)
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        return self._encoder.encode_queries(texts)


class JobManager:
    """Runs indexing jobs on a served lens, one at a time, and keeps their records."""

    def __init__(self, lens: Lens, *, keep: int = 50) -> None:
        self._lens = lens
        self._keep = keep
        self._jobs: dict[str, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, paths: Sequence[str], *, text: TextSettings | None = None) -> Job:
        """Start indexing ``paths`` (files or folders on this machine) in the background.

        ``text`` says how page text is read (OCR...) where the index keeps it.

        Raises:
            PagelensError: a path does not exist (naming it), or no path was given.
            JobBusyError: a job is still running.

        """
        if not paths:
            raise PagelensError("paths must name at least one file or folder on the server")
        for p in paths:
            if not Path(p).exists():
                raise PagelensError(f"{p}: no such file or directory on the server")
        with self._lock:
            running = [j for j in self._jobs.values() if j.state in (QUEUED, RUNNING)]
            if running:
                raise JobBusyError(
                    f"job {running[0].id} is still {running[0].state}: one indexing job "
                    "runs at a time (cancel it with DELETE /jobs/{id}, or wait)"
                )
            job = Job(id=str(next(self._ids)), paths=tuple(str(p) for p in paths))
            self._jobs[job.id] = job
            for old in list(self._jobs)[: -self._keep]:
                del self._jobs[old]
            self._thread = threading.Thread(
                target=self._run, args=(job, text), name=f"pagelens-job-{job.id}", daemon=True
            )
            self._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job | None:
        """Ask a job to stop (at its next page batch); returns it, or ``None``."""
        job = self._jobs.get(job_id)
        if job is not None and job.state in (QUEUED, RUNNING):
            job.cancel.set()
        return job

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the running job's thread (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel a running job and wait for it to stop."""
        for job in self._jobs.values():
            job.cancel.set()
        self.wait(timeout)

    # -- the job's thread ------------------------------------------------------------
    def _run(self, job: Job, text: TextSettings | None) -> None:
        job.state, job.started = RUNNING, time.time()
        try:
            found = discover(list(job.paths))
            job.skipped.extend({"path": s.path, "cause": s.cause} for s in found.skipped)
            if not found.documents:
                raise NothingToIndexError(found)
            job.files_total = len(found.documents)
            encoder = _Counting(self._lens.encoder(), job)
            text_encoder = self._lens.text_encoder()
            for doc in found.documents:
                if job.cancel.is_set():
                    break
                job.current = doc.path
                try:
                    report = index_paths(
                        self._lens.index,
                        encoder,
                        Discovery((doc,), ()),
                        text=text,
                        text_encoder=text_encoder,
                        progress=False,
                    )
                except _Cancelled:
                    # the document was not committed: remove what of it was stored
                    self._lens.index.delete_sha(doc.sha256)
                    break
                job.indexed.extend(report.indexed)
                job.unchanged.extend(report.unchanged)
                job.skipped.extend({"path": s.path, "cause": s.cause} for s in report.skipped)
                job.page_errors.extend(
                    {"path": e.path, "page": e.page_number, "cause": e.cause}
                    for e in report.page_errors
                )
                job.files_done += 1
            job.state = CANCELLED if job.cancel.is_set() else DONE
        except PagelensError as exc:
            job.state, job.error = FAILED, str(exc)
        except Exception as exc:  # a bug or an engine failure: reported in the job, logged
            logger.exception("indexing job %s failed", job.id)
            job.state, job.error = FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            job.current, job.finished = None, time.time()
