"""Render PDF pages to RGB images with poppler, in bounded memory and bounded time.

``probe`` asks ``pdfinfo`` for the page count and every page's size; ``render_pages``
runs ``pdftoppm`` batch by batch, lowering the resolution of any page that would
exceed ``max_pixels``. Every poppler call has a timeout, and every failure is an
:class:`~pagelens.errors.InputError` that names the file and the cause.

Poppler is called directly (not through pdf2image): ``pdfinfo -box`` gives the
per-page sizes the pixel cap needs, and each call's exit status, stderr and
timeout stay in hand.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pagelens.errors import InputError, PagelensError, check_whole
from pagelens.pipeline import poppler
from pagelens.pipeline.cores import available_cores
from pagelens.types import Document, Page

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

_MEDIABOX = re.compile(
    r"^Page\s+(\d+)\s+MediaBox:\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)\s*$", re.M
)
_ROTATION = re.compile(r"^Page\s+(\d+)\s+rot:\s+(-?\d+)\s*$", re.M)
_PAGES = re.compile(r"^Pages:\s+(\d+)\s*$", re.M)
_PPM_NAME = re.compile(r"^p-0*(\d+)\.ppm$")  # pdftoppm names pages <prefix>-<n, 0-padded>
_TMP_PREFIX = "pagelens-render-"  # + "<pid>-": a folder whose process died can be swept
_TMP_NAME = re.compile(rf"^{_TMP_PREFIX}(\d+)-")
UNLOADABLE_PAGE = "poppler cannot load this page"  # the cause of a page pdfinfo gives no size


def default_render_threads() -> int:
    """``pdftoppm`` processes by default: all cores but two, at least 2 and at most 16.

    Rendering is the costliest CPU stage (80-330 CPU ms per 150-dpi page, against
    about 35 for pooling and 3 for storing: benchmarks/README.md), so it gets the
    cores but the encoder's thread and one for pooling and storing.
    """
    return max(2, min(16, available_cores() - 2))


@dataclass(frozen=True)
class RenderSettings:
    """How pages are rendered.

    Attributes:
        dpi: requested resolution; lowered per page to respect ``max_pixels``.
        max_pixels: most pixels (width * height) of one rendered page, so that a
            giant page is downscaled instead of exhausting memory.
        timeout_s: limit for each poppler call (one ``pdfinfo``, or one batch), in seconds.
        password: the user password of encrypted PDFs (passed to poppler's command
            line, as pdf2image does: visible to local users in the process list).
        threads: ``pdftoppm`` processes run side by side, one batch each; by
            default all cores but two, 2 to 16 (:func:`default_render_threads`).
        batch_pages: pages per ``pdftoppm`` call. Up to ``threads`` batches are
            rendered ahead of the consumer and wait on disk as PPM files; memory
            holds only the page being yielded.
        poppler_path: folder holding ``pdfinfo`` and ``pdftoppm``; ``None`` uses PATH.

    """

    dpi: int = 150
    max_pixels: int = 4_000_000
    timeout_s: float = 120.0
    password: str | None = None
    threads: int = field(default_factory=lambda: default_render_threads())
    batch_pages: int = 8
    poppler_path: str | None = None

    def __post_init__(self) -> None:
        for name in ("dpi", "max_pixels", "threads", "batch_pages"):
            check_whole(name, getattr(self, name), 1)
        poppler.check_settings(self.timeout_s, self.poppler_path)


@dataclass(frozen=True)
class PdfInfo:
    """What ``pdfinfo`` says of a document.

    ``page_sizes_pt[i]`` is page ``i + 1``'s (width, height) in points as rendered
    (MediaBox, after ``/Rotate``); ``(0.0, 0.0)`` marks a page poppler cannot load.
    ``password`` is the password the document needed to open: ``None`` when it
    opened without one (unencrypted, or restricted only by an owner password).
    """

    page_count: int
    page_sizes_pt: tuple[tuple[float, float], ...]
    password: str | None = None


def probe(doc: Document, settings: RenderSettings) -> PdfInfo:
    """Read the page count and page sizes of ``doc``.

    A password in ``settings`` is tried only when the document does not open
    without one: most encrypted PDFs carry only an owner password (print or copy
    limits), and poppler refuses a user password that is not theirs.

    Raises:
        InputError: the PDF is corrupt, encrypted without (or with a wrong)
            password, has no pages, or poppler timed out.

    """
    args = ["-f", "1", "-l", str(2**31 - 1), "-box"]  # pdfinfo clamps -l to the page count
    proc = _pdfinfo(doc, [*args, doc.source], settings)
    err = proc.stderr.decode("utf-8", "replace")
    password = None
    if proc.returncode != 0 and "Incorrect password" in err and settings.password is not None:
        password = settings.password
        proc = _pdfinfo(doc, [*args, "-upw", password, doc.source], settings)
        err = proc.stderr.decode("utf-8", "replace")
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0 or not _PAGES.search(out):
        raise InputError(doc.path, poppler.open_failure("pdfinfo", err, settings.password))

    page_count = int(_PAGES.findall(out)[-1])  # the last: a crafted title cannot shadow it
    if page_count == 0:
        raise InputError(doc.path, "PDF has no pages")
    boxes = {int(m[0]): m[1:] for m in _MEDIABOX.findall(out)}
    rotations = {int(n): int(r) for n, r in _ROTATION.findall(out)}
    sizes = []
    for n in range(1, page_count + 1):
        x1, y1, x2, y2 = (float(v) for v in boxes.get(n, ("0", "0", "0", "0")))
        w, h = abs(x2 - x1), abs(y2 - y1)
        if w == 0 or h == 0:  # no box: poppler could not load this page
            sizes.append((0.0, 0.0))
            continue
        if rotations.get(n, 0) % 180 == 90:
            w, h = h, w
        sizes.append((w, h))
    return PdfInfo(page_count=page_count, page_sizes_pt=tuple(sizes), password=password)


def render_pages(
    doc: Document, info: PdfInfo, settings: RenderSettings, *, first_page: int = 1
) -> Generator[Page, None, None]:
    """Render the pages of ``doc`` from ``first_page`` on, in order.

    Pages are rendered in batches of ``settings.batch_pages``, one ``pdftoppm``
    process per batch, up to ``settings.threads`` batches ahead of the consumer
    (their files wait on disk; memory holds the page being yielded). Each image
    is RGB, fully loaded, and at most ``max_pixels`` large.

    A page poppler cannot load (``pdfinfo`` gives it no size) or renders no image
    for is yielded without an image, its ``error`` naming the cause, and the pages
    after it are rendered as usual: one bad page does not cost the document.

    Args:
        doc: the document.
        info: what :func:`probe` returned for it.
        settings: resolution, limits and password.
        first_page: 1-based page to start from (a resumed job skips stored pages).

    Raises:
        InputError: ``page <n>: <cause>`` when poppler times out; the pages before
            it have been yielded.

    """
    check_whole("first_page", first_page, 1)
    numbers = range(first_page, info.page_count + 1)
    loadable = [n for n in numbers if info.page_sizes_pt[n - 1] != (0.0, 0.0)]
    settings = replace(settings, password=info.password)  # only where the document needs it
    with _Pipeline(doc, settings, _plan(info, loadable, settings)) as pipeline:
        images = pipeline.images()
        for n in numbers:
            w_pt, h_pt = info.page_sizes_pt[n - 1]
            page = Page(
                doc_sha256=doc.sha256,
                doc_path=doc.path,
                page_number=n,
                page_count=info.page_count,
                width_pt=w_pt,
                height_pt=h_pt,
            )
            if (w_pt, h_pt) == (0.0, 0.0):
                # pdftoppm would silently repeat the previous page's bitmap for this page
                yield replace(page, error=UNLOADABLE_PAGE)
                continue
            got, image, error = next(images)
            if got != n:  # pragma: no cover - the pipeline yields the planned pages in order
                raise PagelensError(f"{doc.path}: rendered page {got} where {n} was due")
            yield replace(page, image=image, error=error)


def page_dpi(width_pt: float, height_pt: float, settings: RenderSettings) -> float:
    """Return the requested dpi, lowered so the page fits in ``settings.max_pixels``.

    ``pdftoppm`` rounds each side up to whole pixels, so the fit is checked on
    ``ceil(side * dpi / 72)``.
    """

    def pixels(d: float) -> int:
        return math.ceil(width_pt * d / 72) * math.ceil(height_pt * d / 72)

    dpi = float(settings.dpi)
    if pixels(dpi) <= settings.max_pixels:
        return dpi
    dpi = math.floor(72 * math.sqrt(settings.max_pixels / (width_pt * height_pt)) * 1000) / 1000
    while dpi > 0.001 and pixels(dpi) > settings.max_pixels:
        dpi = round(dpi - 0.001, 3)
    return dpi


@dataclass(frozen=True)
class _Chunk:
    """Pages ``first..last`` rendered by one ``pdftoppm`` call at one dpi."""

    first: int
    last: int
    dpi: float


def _plan(info: PdfInfo, numbers: list[int], settings: RenderSettings) -> list[_Chunk]:
    """Cut runs of consecutive ``numbers`` into chunks of one dpi, ``batch_pages`` at most.

    A short document is cut into ``threads`` chunks so that every worker has one.
    """
    size = min(settings.batch_pages, max(1, math.ceil(len(numbers) / settings.threads)))
    chunks: list[_Chunk] = []
    for n in numbers:
        dpi = page_dpi(*info.page_sizes_pt[n - 1], settings)
        prev = chunks[-1] if chunks else None
        if prev and prev.dpi == dpi and prev.last == n - 1 and prev.last - prev.first + 1 < size:
            chunks[-1] = _Chunk(prev.first, n, dpi)
        else:
            chunks.append(_Chunk(n, n, dpi))
    return chunks


@dataclass(frozen=True)
class _Outcome:
    returncode: int
    stderr: str
    timed_out: bool


class _Pipeline:
    """Runs ``pdftoppm`` on chunks, ``threads`` at a time, ahead of the consumer.

    Closing it (also when the consumer abandons the generator) kills the
    processes still running and deletes every temporary file.
    """

    def __init__(self, doc: Document, settings: RenderSettings, chunks: list[_Chunk]) -> None:
        self._doc = doc
        self._settings = settings
        self._chunks = chunks
        _sweep_stale_temp_dirs()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        self._pool = ThreadPoolExecutor(max_workers=settings.threads)
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._closed = True
            for proc in self._procs:
                proc.kill()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._tmp.cleanup()

    def images(self) -> Iterator[tuple[int, Image.Image | None, str | None]]:
        """``(page number, image, None)``, or ``(page number, None, cause)``, in page order.

        A page missing from a batch's output is rendered again on its own, so one
        bad page neither hides the others of its batch nor gets their cause.

        Raises:
            InputError: poppler timed out.

        """
        ahead: deque[tuple[_Chunk, str, Future[_Outcome]]] = deque()
        todo = iter(enumerate(self._chunks))
        while True:
            while len(ahead) <= self._settings.threads:  # keep every worker busy
                nxt = next(todo, None)
                if nxt is None:
                    break
                i, chunk = nxt
                folder = os.path.join(self._tmp.name, f"c{i}")
                os.mkdir(folder)
                ahead.append((chunk, folder, self._pool.submit(self._run, chunk, folder)))
            if not ahead:
                return
            chunk, folder, future = ahead.popleft()
            outcome = future.result()
            files = self._outputs(chunk, folder, outcome)
            for n in range(chunk.first, chunk.last + 1):
                if n not in files and chunk.first != chunk.last:
                    one = _Chunk(n, n, chunk.dpi)
                    retry = os.path.join(folder, f"p{n}")
                    os.mkdir(retry)
                    outcome = self._run(one, retry)
                    files.update(self._outputs(one, retry, outcome))
                if n not in files:
                    cause = poppler.message(outcome.stderr)
                    yield (
                        n,
                        None,
                        f"poppler produced no image (exit status {outcome.returncode})"
                        + (f": {cause}" if cause else ""),
                    )
                    continue
                yield n, self._load(files[n]), None

    def _outputs(self, chunk: _Chunk, folder: str, outcome: _Outcome) -> dict[int, str]:
        """Find the page images a ``pdftoppm`` call wrote, by page number."""
        if outcome.timed_out:
            raise InputError(
                self._doc.path,
                f"page {chunk.first}: {poppler.timed_out(self._settings.timeout_s)}",
            )
        files = {}
        for name in os.listdir(folder):
            m = _PPM_NAME.match(name)
            if m and outcome.returncode == 0:
                files[int(m[1])] = os.path.join(folder, name)
        return files

    def _load(self, path: str) -> Image.Image:
        from PIL import Image

        image: Image.Image = Image.open(path)
        image.load()  # reads the pixels and closes the file
        os.unlink(path)
        if image.mode != "RGB":
            image = image.convert("RGB")
        return _fit(image, self._settings.max_pixels)

    def _run(self, chunk: _Chunk, folder: str) -> _Outcome:
        """One ``pdftoppm`` call, in a worker thread; writes ``<folder>/p-<n>.ppm``."""
        args = ["-r", f"{chunk.dpi:.3f}", "-f", str(chunk.first), "-l", str(chunk.last)]
        if self._settings.password is not None:
            args += ["-upw", self._settings.password]
        args += [self._doc.source, f"{folder}/p"]
        with self._lock:
            if self._closed:
                return _Outcome(-1, "cancelled", False)
            proc = poppler.start("pdftoppm", args, poppler_path=self._settings.poppler_path)
            self._procs.add(proc)
        try:
            try:
                _, stderr = proc.communicate(timeout=self._settings.timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                return _Outcome(proc.returncode, "", True)
            return _Outcome(proc.returncode, stderr.decode("utf-8", "replace"), False)
        finally:
            with self._lock:
                self._procs.discard(proc)


@functools.cache
def _sweep_stale_temp_dirs() -> None:
    """Delete render folders left by killed processes (``kill -9`` skips all cleanup).

    Runs once per process; a folder is removed only when the process that made
    it no longer exists.
    """
    base = tempfile.gettempdir()
    try:
        entries = list(os.scandir(base))
    except OSError:
        return
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        pid = int(m[1])
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logger.debug("removing %s, left by process %d", entry.path, pid)
            shutil.rmtree(entry.path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _fit(image: Image.Image, max_pixels: int) -> Image.Image:
    """Safety net behind ``page_dpi``: shrink an image that still exceeds the cap."""
    if image.width * image.height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (image.width * image.height))
    size = (max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale)))
    logger.debug("downscaling a %dx%d render to %dx%d", image.width, image.height, *size)
    return image.resize(size)


def _pdfinfo(
    doc: Document, args: list[str], settings: RenderSettings
) -> subprocess.CompletedProcess[bytes]:
    """Run ``pdfinfo`` with the timeout; a timeout is an ``InputError`` on ``doc``."""
    try:
        return poppler.run(
            "pdfinfo", args, timeout_s=settings.timeout_s, poppler_path=settings.poppler_path
        )
    except poppler.PopplerTimeout as err:
        raise InputError(doc.path, str(err)) from err
