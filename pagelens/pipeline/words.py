"""Where each word of a page is: boxes for highlighting the words a query matched.

Two sources, as for page text (:mod:`pagelens.pipeline.text`): a page whose text
came from the PDF's text layer takes its words from poppler's
``pdftotext -bbox-layout``; a page that was OCR'd takes them from tesseract's
``tsv`` output, on the page rendered as the OCR step renders it (``pdftoppm``,
grayscale, at ``TextSettings.ocr_dpi``). Boxes are fractions of the page's width
and height, origin at its top left, so they fit a page image of any resolution.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from pagelens.errors import InputError, PagelensError
from pagelens.pipeline import poppler
from pagelens.pipeline.text import TextSettings, ocr_dpi, tesseract_problem

_PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">')
_WORD = re.compile(
    r'<word xMin="([-\d.]+)" yMin="([-\d.]+)" xMax="([-\d.]+)" yMax="([-\d.]+)">(.*?)</word>', re.S
)


@dataclass(frozen=True)
class Word:
    """One word of a page and its box, in fractions of the page (0..1, top left origin)."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float


def layer_words(
    pdf_path: str, page: int, settings: TextSettings | None = None, *, password: str | None = None
) -> list[Word]:
    """Read the words of one page's text layer with ``pdftotext -bbox-layout``, in reading order.

    Raises:
        InputError: poppler cannot open the file or read the page.
        PagelensError: poppler is not installed.

    """
    s = settings or TextSettings()
    args = ["-bbox-layout", "-enc", "UTF-8", "-f", str(page), "-l", str(page)]
    args += [] if password is None else ["-upw", password]
    proc = poppler.run(
        "pdftotext", [*args, pdf_path, "-"], timeout_s=s.timeout_s, poppler_path=s.poppler_path
    )
    if proc.returncode != 0:
        raise InputError(pdf_path, poppler.open_failure("pdftotext", proc.stderr, password))
    out = proc.stdout.decode("utf-8", "replace")
    size = _PAGE.search(out)
    if size is None:
        raise InputError(pdf_path, f"page {page}: pdftotext gave no page")
    width, height = float(size[1]), float(size[2])
    if width <= 0 or height <= 0:
        raise InputError(pdf_path, f"page {page}: poppler cannot load this page")
    return [
        _word(
            html.unescape(m[5]), float(m[1]), float(m[2]), float(m[3]), float(m[4]), width, height
        )
        for m in _WORD.finditer(out)
        if m[5].strip()
    ]


def ocr_words(
    pdf_path: str,
    page: int,
    settings: TextSettings | None = None,
    *,
    page_size_pt: tuple[float, float] | None = None,
    password: str | None = None,
) -> list[Word]:
    """OCR one page with tesseract and return its words (``tsv`` output), in reading order.

    ``page_size_pt`` (the page's size in points) lowers the resolution of a huge
    page as the OCR step does, so that the words are those the index read.

    Raises:
        InputError: poppler cannot render the page, or tesseract fails on it.
        PagelensError: poppler or tesseract (or its language data) is missing.

    """
    s = settings or TextSettings()
    problem = tesseract_problem(s.tesseract_cmd, s.ocr_lang)
    if problem is not None:
        raise PagelensError(problem)
    dpi = ocr_dpi(s.ocr_dpi, page_size_pt)
    with tempfile.TemporaryDirectory(prefix="pagelens-words-") as tmp:
        stem = os.path.join(tmp, "page")
        args = ["-r", f"{dpi:g}", "-gray", "-f", str(page), "-l", str(page), "-singlefile"]
        args += [] if password is None else ["-upw", password]
        proc = poppler.run(
            "pdftoppm", [*args, pdf_path, stem], timeout_s=s.timeout_s, poppler_path=s.poppler_path
        )
        image = stem + ".pgm"
        if proc.returncode != 0 or not os.path.isfile(image):
            raise InputError(pdf_path, f"page {page}: {poppler.failure('pdftoppm', proc)}")
        exe = shutil.which(s.tesseract_cmd) or s.tesseract_cmd
        cmd = [exe, image, "stdout", "-l", s.ocr_lang, "--dpi", f"{dpi:g}", "tsv"]
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            ocr = subprocess.run(
                cmd, capture_output=True, timeout=s.timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise InputError(pdf_path, f"page {page}: tesseract timed out") from err
        if ocr.returncode != 0:
            raise InputError(pdf_path, f"page {page}: {poppler.failure('tesseract', ocr)}")
    return tsv_words(ocr.stdout.decode("utf-8", "replace"))


def tsv_words(tsv: str) -> list[Word]:
    """Read tesseract's ``tsv`` output: the words (level 5), boxes in fractions of the page.

    The page's size is its level-1 row's; a file without one gives no words.
    """
    width = height = 0.0
    words: list[Word] = []
    for line in tsv.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) < 12 or not cols[0].isdigit():
            continue
        level = int(cols[0])
        left, top, w, h = (float(c) for c in cols[6:10])
        if level == 1:
            width, height = w, h
        elif level == 5 and cols[11].strip() and width > 0 and height > 0:
            words.append(_word(cols[11], left, top, left + w, top + h, width, height))
    return words


def _word(text: str, x0: float, y0: float, x1: float, y1: float, w: float, h: float) -> Word:
    def frac(v: float, size: float) -> float:
        return min(max(v / size, 0.0), 1.0)

    return Word(text, frac(x0, w), frac(y0, h), frac(x1, w), frac(y1, h))


def align_words(text: str, words: list[Word]) -> list[tuple[int, int] | None]:
    """Find each word in ``text`` in order: its ``(start, end)`` there, or ``None``.

    The index holds a page's text as extracted (reading order, lines and blank
    lines); the boxes come from a second read of the same page. Each word is
    looked for a short way past the previous one, so a word that reads otherwise
    in the two (or comes in another order) is left without a span instead of
    throwing the rest off.
    """
    spans: list[tuple[int, int] | None] = []
    pos = 0
    for word in words:
        start = text.find(word.text, pos, pos + len(word.text) + _ALIGN_SLACK)
        if start < 0:
            spans.append(None)
            continue
        end = start + len(word.text)
        spans.append((start, end))
        pos = end
    return spans


_ALIGN_SLACK = 64  # characters between two words: spaces, line breaks, a dropped glyph
