"""Page text for the text channel: the PDF's text layer, and OCR where it has none.

The text layer comes from poppler's ``pdftotext`` (reading order, not ``-layout``),
one call for the whole document, split on form feeds. Pages without a usable layer
are rendered with ``pdftoppm`` (grayscale) and read by the ``tesseract`` binary.

When is a text layer usable? (:func:`text_layer_problem`; whitespace ignored):

* it has at least ``min_chars`` letters or digits;
* at most 10% of its characters are U+FFFD, private-use glyphs, control or
  unassigned code points (what fonts without a Unicode map come out as);
* after collapsing runs of one repeated character (dot leaders, rules), at least
  half of its characters are letters or digits.

In ``"auto"`` mode a page is also read by OCR when it looks like a scan with a
stamp: one or more images cover at least 80% of it and its layer has fewer than
``scan_max_chars`` letters or digits (e.g. court filings whose only text layer is
the docket header). The OCR text replaces that layer only when it holds more letters
and digits.

Failures are per page: a page whose text cannot be read gets ``error`` set (and a
logged warning naming file and page); the other pages go on. Only a document that
cannot be opened at all raises :class:`~pagelens.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pagelens import progress
from pagelens.errors import InputError, PagelensError, check_whole
from pagelens.pipeline import poppler

logger = logging.getLogger(__name__)

OcrMode = Literal["auto", "never", "always"]
TextSource = Literal["layer", "ocr", "none"]
_OCR_MODES = ("auto", "never", "always")

_MAX_BAD_FRACTION = 0.1  # U+FFFD, private use, control, unassigned
_MIN_ALNUM_FRACTION = 0.5  # after collapsing repeated-character runs
_SCAN_COVERAGE = 0.8  # image area / page area above which a page may be a scan
_OCR_MAX_PIXELS = 20_000_000  # a huge page is OCR'd at a lower dpi (see ocr_dpi)
_REPEATS = re.compile(r"(.)\1{2,}", re.S)
_PAGE_SIZE = re.compile(r"^Page\s+(\d+)\s+size:\s+([\d.]+)\s+x\s+([\d.]+)", re.M)
# Whitespace that may separate words; the C0 separators U+001C..U+001F count as control.
_SPACE = {c for c in map(chr, range(0x3001)) if c.isspace()} - {chr(c) for c in range(0x1C, 0x20)}


@dataclass(frozen=True)
class TextSettings:
    """How page text is obtained.

    Attributes:
        ocr: ``"auto"`` OCRs pages without a usable text layer, ``"never"`` only
            reads the layer, ``"always"`` OCRs every page and ignores the layer.
        ocr_lang: tesseract language(s), e.g. ``"eng"`` or ``"eng+deu"``.
        ocr_dpi: resolution of the page images given to tesseract.
        min_chars: a page with fewer letters/digits counts as having no text layer.
        timeout_s: limit, in seconds, for each call of an external tool.
        scan_max_chars: in ``"auto"`` mode, a page mostly covered by images with
            fewer letters/digits than this is OCR'd too; 0 turns that off.
        ocr_workers: tesseract processes run side by side (each uses one core).
        poppler_path: folder holding the poppler tools; ``None`` uses PATH.
        tesseract_cmd: the tesseract executable, a name on PATH or a path.

    """

    ocr: OcrMode = "auto"
    ocr_lang: str = "eng"
    ocr_dpi: int = 200
    min_chars: int = 20
    timeout_s: float = 120.0
    scan_max_chars: int = 200
    ocr_workers: int = 1
    poppler_path: str | None = None
    tesseract_cmd: str = "tesseract"

    def __post_init__(self) -> None:
        if self.ocr not in _OCR_MODES:
            raise PagelensError(f"ocr must be one of {', '.join(_OCR_MODES)}; got {self.ocr!r}")
        if not re.fullmatch(r"[A-Za-z_]+(\+[A-Za-z_]+)*", self.ocr_lang or ""):
            raise PagelensError(
                f"ocr_lang must be tesseract language codes joined by '+', e.g. 'eng' or "
                f"'eng+deu'; got {self.ocr_lang!r}"
            )
        for name, low in (
            ("ocr_dpi", 1),
            ("min_chars", 0),
            ("scan_max_chars", 0),
            ("ocr_workers", 1),
        ):
            check_whole(name, getattr(self, name), low)
        poppler.check_settings(self.timeout_s, self.poppler_path)


@dataclass(frozen=True)
class PageText:
    """The text of one page and where it came from.

    ``source`` is ``"layer"`` (the PDF's text), ``"ocr"`` (tesseract; ``text`` may be
    empty when the page holds no legible text) or ``"none"`` (no usable text;
    ``text`` is empty). ``error`` says why text could not be read, else ``None``; a
    page with an error may still carry its text layer.
    """

    page_number: int  # 1-based
    text: str
    source: TextSource
    error: str | None = None


class TextCache:
    """Page texts kept on disk, per document content and the settings that shape them.

    OCR costs about 0.8 CPU-s per page (mmlongbench-dev, one core), and a document's
    text does not depend on the index it goes into: a new index of the same files
    (another model or pool factor, an evaluation sweep) reads the texts back from
    here. A document is cached only when every page was read without error, so a
    timeout or a missing tool is retried next time; an unreadable cache file counts
    as absent. Tool versions are not part of the key: clear the folder after
    upgrading poppler or tesseract.
    """

    FORMAT = 1

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def _path(self, doc_sha256: str, settings: TextSettings) -> Path:
        shaping = {  # what changes the text; tool paths, timeouts and workers do not
            "format": self.FORMAT,
            "ocr": settings.ocr,
            "ocr_lang": settings.ocr_lang,
            "ocr_dpi": settings.ocr_dpi,
            "min_chars": settings.min_chars,
            "scan_max_chars": settings.scan_max_chars,
        }
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
        return self.folder / f"{doc_sha256}-{digest}.json"

    def get(self, doc_sha256: str, settings: TextSettings) -> list[PageText] | None:
        """Return the cached texts of a document, or ``None``."""
        path = self._path(doc_sha256, settings)
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            return [PageText(**row) for row in rows]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            logger.warning("ignoring unreadable text cache file %s: %s", path, exc)
            return None

    def put(self, doc_sha256: str, settings: TextSettings, texts: Sequence[PageText]) -> None:
        """Keep a document's texts, unless a page had an error.

        A cache that cannot be written (no space, no permission) is reported and
        skipped: it only saves work, so the indexing run goes on without it.
        """
        if any(t.error for t in texts):
            return
        path = self._path(doc_sha256, settings)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps([asdict(t) for t in texts]), encoding="utf-8")
            os.replace(tmp, path)  # atomic: a reader sees the old file or the whole new one
        except OSError as exc:
            logger.warning("cannot write the text cache %s: %s", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def usable_chars(text: str) -> int:
    """Count the letters and digits of ``text`` (any script)."""
    return sum(1 for c in text if c.isalnum())


def text_layer_problem(text: str, min_chars: int) -> str | None:
    """Say why a page's text layer is unusable, or return ``None`` if it is usable.

    See the module docstring for the rules.
    """
    chars = [c for c in text if c not in _SPACE]
    alnum = sum(1 for c in chars if c.isalnum())
    if alnum < min_chars:
        return f"no text layer ({alnum} letters/digits < {min_chars})"
    bad = sum(1 for c in chars if _is_bad(c))
    if bad > _MAX_BAD_FRACTION * len(chars):
        return f"garbage text layer ({bad} of {len(chars)} characters unmapped or control)"
    collapsed = _REPEATS.sub(r"\1", "".join(chars))
    ratio = sum(1 for c in collapsed if c.isalnum()) / len(collapsed)
    if ratio < _MIN_ALNUM_FRACTION:
        return f"garbage text layer (only {ratio:.0%} letters/digits)"
    return None


def extract_text(
    pdf_path: str,
    page_count: int,
    settings: TextSettings | None = None,
    *,
    password: str | None = None,
) -> list[PageText]:
    """Read the text of pages ``1..page_count`` of a PDF, with OCR as ``settings`` ask.

    Args:
        pdf_path: the PDF on disk.
        page_count: its number of pages (from :func:`pagelens.pipeline.render.probe`).
        settings: OCR mode and limits; defaults to ``TextSettings()``.
        password: the user password of an encrypted PDF.

    Returns:
        One :class:`PageText` per page, in page order.

    Raises:
        InputError: the file is missing, or poppler cannot open it (corrupt,
            wrong or missing password).
        PagelensError: a required tool is missing: poppler, or tesseract (or its
            language data) when ``ocr="always"``.

    """
    settings = settings or TextSettings()
    if isinstance(page_count, bool) or not isinstance(page_count, int) or page_count < 1:
        raise PagelensError(f"page_count must be a positive integer, got {page_count!r}")
    if not os.path.isfile(pdf_path):
        raise InputError(pdf_path, "no such file")
    job = _Job(pdf_path, page_count, settings, password)
    return job.run()


class _Job:
    """One document's extraction; holds the arguments every step needs."""

    def __init__(
        self, path: str, page_count: int, settings: TextSettings, password: str | None
    ) -> None:
        self.path = path
        self.n = page_count
        self.settings = settings
        self.password = password

    def run(self) -> list[PageText]:
        s = self.settings
        numbers = range(1, self.n + 1)
        if s.ocr == "always":
            self._require_tesseract()
            ocr = self._ocr(list(numbers))
            return [self._from_ocr(n, ocr[n], fallback=None) for n in numbers]

        result, to_ocr, layer_errors = self._judge_layer(self._text_layer())
        if s.ocr == "never":
            return [result[n] for n in numbers]

        candidates = [
            n
            for n, page in result.items()
            if page.source == "layer" and usable_chars(page.text) < s.scan_max_chars
        ]
        for n in self._scan_like(candidates):
            logger.debug("%s: page %d: looks scanned; OCR", self.path, n)
            to_ocr[n] = result[n].text
        if to_ocr:
            self._ocr_into(result, to_ocr, layer_errors)
        return [result[n] for n in numbers]

    def _judge_layer(
        self, layer: dict[int, tuple[str | None, str | None]]
    ) -> tuple[dict[int, PageText], dict[int, str | None], dict[int, str]]:
        """Keep each usable text layer; pick the pages ``"auto"`` mode OCRs.

        Returns ``(result, to_ocr, layer_errors)``: the pages settled, the pages to
        OCR (each with the layer text kept if OCR fails or finds less), and why a
        page's layer could not be read.
        """
        s = self.settings
        result: dict[int, PageText] = {}
        to_ocr: dict[int, str | None] = {}  # page -> layer text kept if OCR fails or is poorer
        layer_errors: dict[int, str] = {}
        for n in range(1, self.n + 1):
            text, error = layer[n]
            if text is None:
                layer_errors[n] = error or "no text"
                if s.ocr == "auto":
                    to_ocr[n] = None
                else:
                    result[n] = self._failed(n, layer_errors[n], fallback=None)
                continue
            problem = text_layer_problem(text, s.min_chars)
            # a short but clean layer (a slide title) is kept unless OCR finds more;
            # a garbage layer is never kept
            short = (
                problem is not None
                and any(c not in _SPACE for c in text)
                and text_layer_problem(text, 0) is None  # clean, only short
            )
            if problem is None:
                result[n] = PageText(n, text, "layer")
            elif s.ocr == "auto":
                logger.debug("%s: page %d: %s; OCR", self.path, n, problem)
                to_ocr[n] = text if short else None
            elif short:
                result[n] = PageText(n, text, "layer")
            else:
                logger.debug("%s: page %d: %s", self.path, n, problem)
                result[n] = PageText(n, "", "none")
        return result, to_ocr, layer_errors

    def _ocr_into(
        self,
        result: dict[int, PageText],
        to_ocr: dict[int, str | None],
        layer_errors: dict[int, str],
    ) -> None:
        """OCR the pages of ``to_ocr`` and settle each of them in ``result``."""
        problem = self._tesseract_problem()
        if problem is not None:
            _warn_once(f"{problem}; pages without a usable text layer get no text")
        ocr = self._ocr(sorted(to_ocr)) if problem is None else {}
        for n, kept in to_ocr.items():
            if n in layer_errors:
                cause = ocr[n][1] if n in ocr else problem
                if n in ocr and ocr[n][0] is not None:
                    result[n] = PageText(n, ocr[n][0] or "", "ocr")
                else:
                    error = f"text layer: {layer_errors[n]}; OCR: {cause}"
                    result[n] = self._failed(n, error, fallback=None)
            elif n not in ocr:  # no tesseract: keep what the layer gave
                result[n] = result.get(n) or PageText(n, "", "none", problem)
            else:
                result[n] = self._from_ocr(n, ocr[n], fallback=kept)

    # -- text layer ------------------------------------------------------------------

    def _text_layer(self) -> dict[int, tuple[str | None, str | None]]:
        """``page -> (text, error)`` from pdftotext; text is ``None`` on failure."""
        proc, error = self._pdftotext(1, self.n)
        if proc is not None and proc.returncode == 1:
            raise InputError(
                self.path, poppler.open_failure("pdftotext", proc.stderr, self.password)
            )
        if proc is not None and proc.returncode == 0:
            parts = proc.stdout.decode("utf-8", "replace").split("\f")
            if len(parts) == self.n + 1 and not parts[-1].strip():
                return {n: (_clean(parts[n - 1]), None) for n in range(1, self.n + 1)}
            # A page poppler cannot load is skipped silently: find it page by page.
            logger.debug(
                "%s: pdftotext gave %d pages of %d; reading page by page",
                self.path,
                len(parts) - 1,
                self.n,
            )
        else:
            logger.debug("%s: pdftotext failed (%s); reading page by page", self.path, error)
        out: dict[int, tuple[str | None, str | None]] = {}
        for n in range(1, self.n + 1):
            proc, error = self._pdftotext(n, n)
            if proc is None:
                out[n] = (None, error)
            elif proc.returncode != 0:
                out[n] = (None, poppler.failure("pdftotext", proc))
            else:
                text = proc.stdout.decode("utf-8", "replace")
                if "\f" not in text:
                    out[n] = (None, "poppler cannot load this page")
                else:
                    out[n] = (_clean(text.split("\f")[0]), None)
        return out

    def _pdftotext(
        self, first: int, last: int
    ) -> tuple[subprocess.CompletedProcess[bytes] | None, str | None]:
        args = ["-enc", "UTF-8", "-f", str(first), "-l", str(last)]
        args += self._password_args()
        return self._poppler("pdftotext", [*args, self.path, "-"])

    # -- scans ---------------------------------------------------------------------

    def _scan_like(self, candidates: Sequence[int]) -> list[int]:
        """Keep the candidate pages whose images cover at least ``_SCAN_COVERAGE`` of them."""
        if not candidates or self.settings.scan_max_chars == 0:
            return []
        first, last = min(candidates), max(candidates)
        sizes = self._page_sizes(first, last)
        args = ["-list", "-f", str(first), "-l", str(last), *self._password_args(), self.path]
        proc, error = self._poppler("pdfimages", args)
        if proc is None or proc.returncode != 0:
            logger.debug("%s: pdfimages failed (%s); no scan detection", self.path, error)
            return []
        covered: dict[int, float] = {}
        for line in proc.stdout.decode("utf-8", "replace").splitlines()[2:]:
            cols = line.split()
            # page num type width height color comp bpc enc interp object ID x-ppi y-ppi ...
            if len(cols) < 14 or cols[2] != "image":
                continue
            try:
                page, w, h = int(cols[0]), int(cols[3]), int(cols[4])
                xppi, yppi = float(cols[12]), float(cols[13])
            except ValueError:
                continue
            if xppi <= 0 or yppi <= 0 or page not in sizes:
                continue
            area_pt = (w / xppi * 72) * (h / yppi * 72)
            page_w, page_h = sizes[page]
            if page_w > 0 and page_h > 0:
                covered[page] = covered.get(page, 0.0) + area_pt / (page_w * page_h)
        return [n for n in candidates if covered.get(n, 0.0) >= _SCAN_COVERAGE]

    def _page_sizes(self, first: int, last: int) -> dict[int, tuple[float, float]]:
        """``page -> (width, height)`` in points; ``(0, 0)`` for a page poppler cannot load."""
        args = ["-f", str(first), "-l", str(last), *self._password_args(), self.path]
        proc, _ = self._poppler("pdfinfo", args)
        if proc is None or proc.returncode != 0:
            return {}
        out = proc.stdout.decode("utf-8", "replace")
        return {int(m[1]): (float(m[2]), float(m[3])) for m in _PAGE_SIZE.finditer(out)}

    # -- OCR -----------------------------------------------------------------------

    def _tesseract_problem(self) -> str | None:
        """Why tesseract cannot OCR in ``ocr_lang`` here, or ``None`` if it can."""
        return tesseract_problem(self.settings.tesseract_cmd, self.settings.ocr_lang)

    def _require_tesseract(self) -> None:
        problem = self._tesseract_problem()
        if problem is not None:
            raise PagelensError(problem)

    def _ocr(self, numbers: list[int]) -> dict[int, tuple[str | None, str | None]]:
        """``page -> (text, error)`` by tesseract, ``settings.ocr_workers`` pages at a time."""
        sizes = self._page_sizes(min(numbers), max(numbers))
        exe = shutil.which(self.settings.tesseract_cmd) or self.settings.tesseract_cmd
        with tempfile.TemporaryDirectory(prefix="pagelens-ocr-") as tmp:

            def one(n: int) -> tuple[str | None, str | None]:
                return self._ocr_page(n, sizes.get(n), exe, tmp)

            name = os.path.basename(self.path)
            bar = progress.bar(len(numbers), f"OCR {name}", "page", logger=logger, leave=False)
            with bar, ThreadPoolExecutor(max_workers=self.settings.ocr_workers) as pool:
                out = {}
                for n, res in zip(numbers, pool.map(one, numbers), strict=True):
                    out[n] = res
                    bar.update(1)
        return out

    def _ocr_page(
        self, n: int, size: tuple[float, float] | None, exe: str, tmp: str
    ) -> tuple[str | None, str | None]:
        s = self.settings
        if size == (0.0, 0.0):
            return None, "poppler cannot load this page"
        dpi = ocr_dpi(s.ocr_dpi, size)
        stem = os.path.join(tmp, f"p{n}")
        args = ["-r", f"{dpi:g}", "-gray", "-f", str(n), "-l", str(n), "-singlefile"]
        proc, error = self._poppler("pdftoppm", [*args, *self._password_args(), self.path, stem])
        image = stem + ".pgm"
        try:
            if proc is None:
                return None, error
            if proc.returncode != 0 or not os.path.isfile(image):
                return None, poppler.failure("pdftoppm", proc)
            env = {**os.environ, "OMP_THREAD_LIMIT": "1"}  # 1 thread: ~6x faster per page
            cmd = [exe, image, "stdout", "-l", s.ocr_lang, "--dpi", f"{dpi:g}"]
            try:
                ocr = subprocess.run(
                    cmd, capture_output=True, timeout=s.timeout_s, env=env, check=False
                )
            except subprocess.TimeoutExpired:
                return None, f"tesseract timed out after {s.timeout_s:g} s"
            except OSError as err:
                return None, f"tesseract could not run: {err}"
            if ocr.returncode != 0:
                return None, poppler.failure("tesseract", ocr)
            return _clean(ocr.stdout.decode("utf-8", "replace")), None
        finally:
            if os.path.exists(image):
                os.unlink(image)

    def _from_ocr(
        self, n: int, ocr: tuple[str | None, str | None], *, fallback: str | None
    ) -> PageText:
        text, error = ocr
        if text is None:
            return self._failed(n, f"OCR failed: {error}", fallback=fallback)
        if fallback is not None and usable_chars(text) <= usable_chars(fallback):
            return PageText(n, fallback, "layer")
        return PageText(n, text, "ocr")

    # -- helpers -------------------------------------------------------------------

    def _failed(self, n: int, error: str, *, fallback: str | None) -> PageText:
        logger.warning("%s: page %d: %s", self.path, n, error)
        if fallback is not None:
            return PageText(n, fallback, "layer", error)
        return PageText(n, "", "none", error)

    def _password_args(self) -> list[str]:
        return [] if self.password is None else ["-upw", self.password]

    def _poppler(
        self, tool: str, args: list[str]
    ) -> tuple[subprocess.CompletedProcess[bytes] | None, str | None]:
        """Run a poppler tool: ``(process, None)``, or ``(None, cause)`` on a timeout."""
        s = self.settings
        try:
            return poppler.run(tool, args, timeout_s=s.timeout_s, poppler_path=s.poppler_path), None
        except poppler.PopplerTimeout as err:
            return None, str(err)


def _is_bad(c: str) -> bool:
    return c == "\ufffd" or unicodedata.category(c) in ("Co", "Cc", "Cn", "Cs")


def _clean(text: str) -> str:
    """Strip trailing spaces on each line and blank lines at both ends."""
    return "\n".join(line.rstrip() for line in text.replace("\f", "").splitlines()).strip("\n")


def ocr_dpi(dpi: float, page_size_pt: tuple[float, float] | None) -> float:
    """Pick the resolution to OCR a page at: ``dpi``, lower for a page too large for it.

    A page whose image at ``dpi`` would exceed :data:`_OCR_MAX_PIXELS` is OCR'd at
    the (whole) dpi that fits; a page of unknown or empty size keeps ``dpi``. The
    explanation's word boxes (:func:`pagelens.pipeline.words.ocr_words`) use the
    same rule, so that they are the words the index read.
    """
    dpi = float(dpi)
    if page_size_pt is None or page_size_pt[0] * page_size_pt[1] <= 0:
        return dpi
    w, h = page_size_pt
    if w * h * (dpi / 72) ** 2 > _OCR_MAX_PIXELS:
        return math.floor(72 * math.sqrt(_OCR_MAX_PIXELS / (w * h)))
    return dpi


def tesseract_problem(cmd: str, lang: str) -> str | None:
    """Why ``cmd`` cannot OCR ``lang`` (binary or language data missing), else ``None``."""
    exe = shutil.which(cmd)
    if exe is None:
        return (
            f"tesseract ({cmd!r}) was not found; install the Debian/Ubuntu package "
            "tesseract-ocr (or set tesseract_cmd)"
        )
    known, error = _tesseract_langs(exe)
    if error is not None:
        return error
    missing = [code for code in lang.split("+") if code not in known]
    if missing:
        packages = ", ".join(f"tesseract-ocr-{c.replace('_', '-').lower()}" for c in missing)
        return (
            f"tesseract ({exe}) has no language data for {'+'.join(missing)!r} "
            f"(installed: {', '.join(sorted(known)) or 'none'}); install {packages} "
            "(Debian/Ubuntu)"
        )
    return None


@functools.lru_cache(maxsize=16)
def _tesseract_langs(exe: str) -> tuple[frozenset[str], str | None]:
    """List the languages of ``exe --list-langs``: ``(codes, None)`` or ``(empty, cause)``."""
    try:
        proc = subprocess.run([exe, "--list-langs"], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return frozenset(), f"tesseract ({exe}) does not run: {err}"
    if proc.returncode != 0:
        return frozenset(), poppler.failure(f"tesseract ({exe}) --list-langs", proc)
    # tesseract 4/5 print a header line naming the folder, then one code a line.
    listed = proc.stdout.decode("utf-8", "replace").splitlines()[1:]
    return frozenset(line.strip() for line in listed if line.strip()), None


@functools.lru_cache(maxsize=32)
def _warn_once(message: str) -> None:
    logger.warning("%s", message)
