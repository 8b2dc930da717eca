"""A generator of hostile inputs: the files a real share holds and a careful user fears.

Each builder writes files into a folder and returns what a correct indexing run
must make of them (:class:`Expect`), so one test can run the whole corpus through
the job and check every file's fate. Classes covered:

- bad names: bytes that are not UTF-8 (Latin-1), newline, tab, terminal escapes;
- extreme page sizes: slivers (14400 x 3 pt), a 1 x 1 pt page, the 14400 pt giant;
- unloadable pages: a page tree entry poppler cannot load, first or last;
- owner-only encryption: print/copy limits, no user password (opens without one);
- broken files: empty, truncated, not a PDF, user-password encrypted.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from tests import pdf_factory as pf

# names as raw bytes: a Latin-1 "é", controls a line-based output would break on, an
# escape sequence a terminal would obey, and UTF-8 that must pass unchanged
BAD_NAMES: tuple[bytes, ...] = (
    b"caf\xe9.pdf",
    b"r\xe9sum\xe9 \xff.pdf",
    b"new\nline.pdf",
    b"tab\there.pdf",
    b"esc\x1b[31mred\x1b[0m.pdf",
    "ünïcödé-文書.pdf".encode(),
    b"-starts-with-dash.pdf",
)

# (width, height) in points: PDF's own limits are 3 and 14400
EXTREME_SIZES: tuple[tuple[float, float], ...] = (
    (14400.0, 3.0),
    (3.0, 14400.0),
    (1.0, 1.0),
    (14400.0, 14400.0),
    (3.0, 3.0),
)


@dataclass(frozen=True)
class Expect:
    """What indexing must make of one file.

    ``pages`` is how many pages must be searchable; ``failed`` the page numbers
    that must be reported (kept without vectors); ``skip`` a phrase the skip cause
    must hold, for a file that must be skipped whole.
    """

    pages: int = 0
    failed: tuple[int, ...] = ()
    skip: str | None = None


def owner_only_pdf(path: Path, n_pages: int = 2) -> Path:
    """A PDF encrypted with an owner password only: it opens without a password."""
    from pypdf import PdfReader, PdfWriter

    data = pf.pdf_bytes([f"Owner {i}" for i in range(1, n_pages + 1)])
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password="", owner_password="owner-only", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


def write_bad_names(folder: Path) -> dict[str, Expect]:
    """One good two-page PDF per name of :data:`BAD_NAMES`; keys are the names as str."""
    out = {}
    for i, raw in enumerate(BAD_NAMES):
        target = os.path.join(os.fsencode(folder), raw)
        with open(target, "wb") as f:
            f.write(pf.pdf_bytes([f"Named {i} one", f"Named {i} two"]))
        out[os.fsdecode(raw)] = Expect(pages=2)
    return out


def write_extreme_sizes(folder: Path) -> dict[str, Expect]:
    """One PDF per size of :data:`EXTREME_SIZES`, each page beside a normal page."""
    out = {}
    for w, h in EXTREME_SIZES:
        name = f"size-{w:g}x{h:g}.pdf"
        (folder / name).write_bytes(pf.pdf_bytes(["Tiny", "Normal"], sizes=[(w, h), pf.LETTER]))
        out[name] = Expect(pages=2)
    return out


def write_unloadable_pages(folder: Path) -> dict[str, Expect]:
    """PDFs with pages poppler cannot load; the other pages must be kept.

    Poppler skips a page-tree entry that is not a page, so the pages after it move
    up one place and the last page is the one that cannot be loaded.
    """
    (folder / "broken-middle.pdf").write_bytes(
        pf.pdf_bytes(["One", "Two", "Three", "Four"], broken_pages=[2])
    )
    pf.broken_page_pdf(folder / "broken-last.pdf", 3)
    (folder / "broken-only.pdf").write_bytes(pf.pdf_bytes(["Only"], broken_pages=[1]))
    return {
        "broken-middle.pdf": Expect(pages=3, failed=(4,)),
        "broken-last.pdf": Expect(pages=2, failed=(3,)),
        "broken-only.pdf": Expect(skip="no page could be loaded"),
    }


def write_encrypted(folder: Path) -> dict[str, Expect]:
    """An owner-only PDF (must index, with or without --password) and a locked one."""
    owner_only_pdf(folder / "owner-only.pdf", 2)
    pf.encrypted_pdf(folder / "locked.pdf", 2, password="secret")
    return {
        "owner-only.pdf": Expect(pages=2),
        "locked.pdf": Expect(skip="password"),
    }


def write_broken_files(folder: Path) -> dict[str, Expect]:
    """Files no reader can take: each must be skipped with its cause."""
    pf.empty_file(folder / "empty.pdf")
    pf.truncated_pdf(folder / "truncated.pdf")
    pf.not_a_pdf(folder / "text.pdf")
    return {
        "empty.pdf": Expect(skip="empty"),
        "truncated.pdf": Expect(skip="corrupt"),
        "text.pdf": Expect(skip="not a PDF"),
    }


def write_hostile_corpus(folder: Path) -> dict[str, Expect]:
    """Every class above in one folder; keys are file names as Python reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Expect] = {}
    for builder in (
        write_bad_names,
        write_extreme_sizes,
        write_unloadable_pages,
        write_encrypted,
        write_broken_files,
    ):
        out.update(builder(folder))
    return out
