"""Small PDFs, good and bad, written into a folder for tests.

Every function writes one file and returns its path. Text pages are written by
hand (a few objects and an xref table) so that they carry a real text layer
without any PDF library; only :func:`encrypted_pdf` needs ``pypdf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LETTER = (612.0, 792.0)  # points


def pdf_bytes(
    texts: Sequence[str],
    *,
    sizes: Sequence[tuple[float, float]] | None = None,
    rotations: Sequence[int] | None = None,
    broken_pages: Sequence[int] = (),
) -> bytes:
    """A PDF with one page per text (Helvetica, 24 pt, near the top left).

    Args:
        texts: one line of ASCII text per page.
        sizes: (width, height) MediaBox per page in points; letter by default.
        rotations: ``/Rotate`` per page (0, 90, 180, 270); 0 by default.
        broken_pages: 1-based page numbers whose page-tree entry points to an
            object that is not a page. Poppler skips such an entry, so later
            pages move up one place and the *last* page cannot be loaded:
            ``pdfinfo`` still counts it (from ``/Count``) with size 0 x 0, and
            ``pdftoppm`` silently repeats the previous page's bitmap for it.
    """
    n = len(texts)
    sizes = list(sizes) if sizes is not None else [LETTER] * n
    rotations = list(rotations) if rotations is not None else [0] * n
    if not (len(sizes) == len(rotations) == n):
        raise ValueError("texts, sizes and rotations must have the same length")

    # Object numbers: 1 catalog, 2 page tree, 3 font, then (page, content) pairs.
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    }
    kids = []
    for i, (text, (w, h), rot) in enumerate(zip(texts, sizes, rotations, strict=True)):
        page_obj, content_obj = 4 + 2 * i, 5 + 2 * i
        kids.append(f"{page_obj} 0 R")
        if i + 1 in broken_pages:
            objects[page_obj] = b"(this is not a page)"
            continue
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 24 Tf 36 {h - 60:.2f} Td ({safe}) Tj ET".encode("ascii")
        objects[content_obj] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
        objects[page_obj] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:.2f} {h:.2f}] /Rotate {rot} "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_obj} 0 R >>"
        ).encode("ascii")
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {n} >>".encode("ascii")

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    size = max(objects) + 1
    offsets = [0] * size
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n" % size
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        if num in objects:
            out += b"%010d 00000 n \n" % offsets[num]
        else:
            out += b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    return bytes(out)


def text_pdf(
    path: Path,
    n_pages: int = 3,
    *,
    prefix: str = "Page",
    sizes: Sequence[tuple[float, float]] | None = None,
    rotations: Sequence[int] | None = None,
) -> Path:
    """A valid PDF of ``n_pages`` pages reading ``"<prefix> <i>"`` (1-based)."""
    texts = [f"{prefix} {i}" for i in range(1, n_pages + 1)]
    path.write_bytes(pdf_bytes(texts, sizes=sizes, rotations=rotations))
    return path


def image_pdf(path: Path, n_pages: int = 2, *, size_px: tuple[int, int] = (200, 260)) -> Path:
    """A scanned-like PDF: image-only pages written by Pillow (no text layer)."""
    from PIL import Image, ImageDraw

    images = []
    for i in range(n_pages):
        im = Image.new("RGB", size_px, "white")
        ImageDraw.Draw(im).text((10, 10), f"scan {i + 1}", fill="black")
        images.append(im)
    images[0].save(path, "PDF", resolution=72.0, save_all=True, append_images=images[1:])
    return path


def giant_pdf(path: Path, *, inches: float = 200.0) -> Path:
    """One square page of ``inches`` x ``inches`` (200 in = 14 400 pt, PDF's own limit)."""
    side = inches * 72.0
    path.write_bytes(pdf_bytes(["Giant"], sizes=[(side, side)]))
    return path


def empty_file(path: Path) -> Path:
    """A zero-byte file."""
    path.write_bytes(b"")
    return path


def truncated_pdf(path: Path, n_pages: int = 3) -> Path:
    """A valid text PDF cut in half: no xref, no trailer, half its objects."""
    data = pdf_bytes([f"Page {i}" for i in range(1, n_pages + 1)])
    path.write_bytes(data[: len(data) // 2])
    return path


def not_a_pdf(path: Path) -> Path:
    """A plain-text file (give it a ``.pdf`` name to test content sniffing)."""
    path.write_text("This is a plain text file, not a PDF.\n", encoding="utf-8")
    return path


def encrypted_pdf(path: Path, n_pages: int = 2, *, password: str = "secret") -> Path:
    """A text PDF encrypted with user password ``password`` (RC4-128, no extra deps)."""
    import io

    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(
        clone_from=PdfReader(io.BytesIO(pdf_bytes([f"Page {i}" for i in range(1, n_pages + 1)])))
    )
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    with path.open("wb") as f:
        writer.write(f)
    return path


def broken_page_pdf(path: Path, n_pages: int = 3) -> Path:
    """A PDF whose last page poppler cannot load; the pages before it are fine."""
    texts = [f"Page {i}" for i in range(1, n_pages + 1)]
    path.write_bytes(pdf_bytes(texts, broken_pages=[n_pages]))
    return path


def fake_poppler(
    folder: Path, *, hang: Sequence[str] = ("pdfinfo", "pdftoppm"), sleep_s: float = 30.0
) -> Path:
    """A folder of ``pdfinfo``/``pdftoppm`` stand-ins; those named in ``hang`` sleep.

    The others run the real tool from PATH. Pass the folder as ``poppler_path``
    to test timeouts without a pathological PDF.
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("pdfinfo", "pdftoppm"):
        exe = folder / name
        if name in hang:
            # exec: the timeout's kill reaches the sleeping process itself, no orphan.
            body = f"exec sleep {sleep_s:g}"
        else:
            real = shutil.which(name)
            if real is None:
                raise FileNotFoundError(f"{name} is not on PATH")
            body = f'exec "{real}" "$@"'
        exe.write_text(f"#!/bin/sh\n{body}\n", encoding="ascii")
        exe.chmod(0o755)
    return folder


def placed_text_pdf(
    path: Path, lines: Sequence[tuple[str, float, float]], *, size: tuple[float, float] = LETTER
) -> Path:
    """One page with each ``(text, x, y)`` line of ASCII written at ``(x, y)`` points.

    ``x`` is from the left edge and ``y`` from the top edge to the line's baseline
    (Helvetica, 24 pt), so a test knows where each word lies on the page.
    """
    w, h = size
    ops = []
    for text, x, y in lines:
        safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"BT /F1 24 Tf {x:.2f} {h - y:.2f} Td ({safe}) Tj ET")
    stream = "\n".join(ops).encode("ascii")
    objects = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        4: (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w:.2f} {h:.2f}] "
            "/Resources << /Font << /F1 3 0 R >> >> /Contents 5 0 R >>"
        ).encode("ascii"),
        5: b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
    }
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n"
    out += b"".join(b"%010d 00000 n \n" % offsets[num] for num in range(1, 6))
    out += b"trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % xref
    path.write_bytes(bytes(out))
    return path
