"""Page text: the PDF text layer, OCR for pages without one, per-page failures."""

from __future__ import annotations

import logging
import shutil
import stat
import zlib
from pathlib import Path

import pytest

from pagelens.errors import InputError, PagelensError
from pagelens.pipeline import text as text_mod
from pagelens.pipeline.text import PageText, TextSettings, extract_text, text_layer_problem

needs_poppler = pytest.mark.skipif(
    shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None,
    reason="poppler-utils is not installed",
)
needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None, reason="tesseract-ocr is not installed"
)

SENTENCE = "The quarterly report shows revenue growth in every region"
SCAN_WORDS = ("INVOICE", "TOTAL", "PAYMENT")


# -- a tiny hand-written PDF builder ------------------------------------------------
#
# A page is a dict: {"text": str} draws Helvetica text (with "pua": True its ToUnicode
# map sends every code to the private-use area: readable glyphs, garbage text layer);
# {"image": PIL image} draws a grayscale image over the whole page; {"broken": True}
# puts a non-page object in the page tree.

PAGE_W, PAGE_H = 612, 396  # half-letter landscape keeps OCR quick

PUA_CMAP = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CMapName /Garbage-UCS def
/CMapType 2 def
1 begincodespacerange
<00> <FF>
endcodespacerange
1 beginbfrange
<20> <7E> <E020>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end"""


def _stream(data: bytes, extra: str = "") -> bytes:
    return b"<< /Length %d %s >>\nstream\n" % (len(data), extra.encode()) + data + b"\nendstream"


def write_pdf(path: Path, pages: list[dict]) -> Path:
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        4: _stream(PUA_CMAP),
        5: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 4 0 R >>",
    }
    kids = []
    next_obj = 6
    for page in pages:
        page_obj, content_obj, image_obj = next_obj, next_obj + 1, next_obj + 2
        next_obj += 3
        kids.append(f"{page_obj} 0 R")
        if page.get("broken"):
            objects[page_obj] = b"(this is not a page)"
            continue
        ops = []
        xobjects = ""
        if "image" in page:
            im = page["image"].convert("L")
            objects[image_obj] = _stream(
                zlib.compress(im.tobytes()),
                f"/Type /XObject /Subtype /Image /Width {im.width} /Height {im.height} "
                "/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
            )
            ops.append(f"q {PAGE_W} 0 0 {PAGE_H} 0 0 cm /Im1 Do Q")
            xobjects = f"/XObject << /Im1 {image_obj} 0 R >>"
        if "text" in page:
            font = "/F2" if page.get("pua") else "/F1"
            y = PAGE_H - 40
            for line in page["text"].split("\n"):
                safe = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                ops.append(f"BT {font} 14 Tf 30 {y} Td ({safe}) Tj ET")
                y -= 22
        objects[content_obj] = _stream("\n".join(ops).encode("latin-1"))
        objects[page_obj] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W} {PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R /F2 5 0 R >> {xobjects} >> "
            f"/Contents {content_obj} 0 R >>"
        ).encode("latin-1")
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>".encode()

    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    size = next_obj
    offsets = {}
    for num in sorted(objects):
        offsets[num] = len(out)
        out += b"%d 0 obj\n" % num + objects[num] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % size
    for num in range(1, size):
        out += b"%010d 00000 n \n" % offsets[num] if num in objects else b"0000000000 65535 f \n"
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref)
    path.write_bytes(bytes(out))
    return path


def _font(size: int):
    from PIL import ImageFont

    for candidate in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "DejaVuSans.ttf",
    ):
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def scan_image(words: tuple[str, ...] = SCAN_WORDS):
    """A white page image (200 dpi of the page size) with big black words."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (PAGE_W * 200 // 72, PAGE_H * 200 // 72), 255)
    draw = ImageDraw.Draw(im)
    font = _font(64)
    for i, word in enumerate(words):
        draw.text((80, 240 + i * 110), word, fill=0, font=font)
    return im


def fake_tesseract(folder: Path, body: str) -> str:
    """A tesseract stand-in that lists 'eng' and runs ``body`` (sh) for OCR calls."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "tesseract"
    exe.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--list-langs" ]; then echo "List of available languages (1):"; '
        "echo eng; exit 0; fi\n" + body + "\n",
        encoding="ascii",
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


# -- the usability heuristic ---------------------------------------------------------


def test_text_layer_problem_accepts_real_text():
    assert text_layer_problem(SENTENCE, 20) is None
    toc = "Contents\n1 Getting Started" + "." * 120 + " 1\n1.1 Wearing the watch" + "." * 90 + " 2"
    assert text_layer_problem(toc, 20) is None  # dot leaders are not garbage
    assert text_layer_problem("Η αναφορά δείχνει αύξηση των εσόδων σε κάθε περιοχή", 20) is None
    assert (
        text_layer_problem("季度报告显示每个地区的收入都在增长，这是好消息。今年的业绩很好", 20)
        is None
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no text layer"),
        ("Page 3", "no text layer"),
        ("\ufffd" * 40 + "abc" * 10, "garbage"),
        ("".join(chr(0xE000 + i % 200) for i in range(60)) + "word" * 5, "garbage"),
        ("".join(chr(1 + i % 8) for i in range(60)) + "word" * 6, "garbage"),  # control codes
        ("!#$%&'()*+,-/:;<=>?@[]^_`{|}~" * 3 + "abcdefghijklmnopqrstuvwxyz", "garbage"),
    ],
)
def test_text_layer_problem_flags_empty_and_garbage(text, expected):
    problem = text_layer_problem(text, 20)
    assert problem is not None and expected in problem


# -- the text layer ----------------------------------------------------------------


@needs_poppler
@pytest.mark.parametrize("mode", ["never", "auto"])
def test_text_layer_is_read_per_page(tmp_path, mode):
    texts = [f"{SENTENCE} number {i}\nsecond line of page {i}" for i in (1, 2, 3)]
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": t} for t in texts])
    pages = extract_text(str(pdf), 3, TextSettings(ocr=mode))
    assert [p.page_number for p in pages] == [1, 2, 3]
    assert all(p.source == "layer" and p.error is None for p in pages)
    assert [p.text for p in pages] == texts


@needs_poppler
def test_never_mode_leaves_pages_without_text_empty(tmp_path):
    pdf = write_pdf(
        tmp_path / "doc.pdf",
        [{"text": SENTENCE}, {"image": scan_image()}, {"text": SENTENCE, "pua": True}],
    )
    pages = extract_text(str(pdf), 3, TextSettings(ocr="never"))
    assert pages[0] == PageText(1, SENTENCE, "layer", None)
    assert pages[1] == PageText(2, "", "none", None)
    assert pages[2] == PageText(3, "", "none", None)  # garbage layer is not passed on


@needs_poppler
def test_broken_page_is_reported_and_the_others_are_read(tmp_path, caplog):
    # Poppler numbers the pages it can load first, so the broken one comes last here
    # (as in its page images): keep it last to make the expectation plain.
    pages_in = [{"text": SENTENCE}, {"text": SENTENCE + " again"}, {"broken": True}]
    pdf = write_pdf(tmp_path / "doc.pdf", pages_in)
    with caplog.at_level(logging.WARNING, logger="pagelens.pipeline.text"):
        pages = extract_text(str(pdf), 3, TextSettings(ocr="never"))
    assert pages[0].text == SENTENCE and pages[1].text == SENTENCE + " again"
    assert pages[2].source == "none" and "cannot load" in pages[2].error
    assert any("doc.pdf: page 3:" in r.getMessage() for r in caplog.records)


@needs_poppler
def test_broken_page_in_auto_mode_is_not_ocred(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", 'echo "fake text"')
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}, {"broken": True}])
    pages = extract_text(str(pdf), 2, TextSettings(tesseract_cmd=exe))
    assert pages[0].source == "layer"
    assert pages[1].source == "none" and "cannot load" in pages[1].error


@needs_poppler
def test_poppler_timeout_is_a_per_page_error(tmp_path):
    fake = tmp_path / "poppler"
    fake.mkdir()
    for tool in ("pdfinfo", "pdftoppm", "pdfimages"):
        (fake / tool).symlink_to(shutil.which(tool))
    (fake / "pdftotext").write_text("#!/bin/sh\nexec sleep 20\n", encoding="ascii")
    (fake / "pdftotext").chmod(0o755)
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}] * 2)
    settings = TextSettings(ocr="never", timeout_s=0.3, poppler_path=str(fake))
    pages = extract_text(str(pdf), 2, settings)
    assert [p.source for p in pages] == ["none", "none"]
    assert all("timed out" in p.error for p in pages)


@needs_poppler
def test_render_and_text_word_poppler_failures_alike(tmp_path):
    """Both run poppler through pagelens.pipeline.poppler: one wording per failure."""
    import hashlib

    from pagelens.pipeline.render import RenderSettings, probe
    from pagelens.types import Document

    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}])
    data = pdf.read_bytes()
    doc = Document(str(pdf), "doc.pdf", hashlib.sha256(data).hexdigest(), len(data))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PagelensError) as rendering:
        probe(doc, RenderSettings(poppler_path=str(empty)))
    with pytest.raises(PagelensError) as reading:
        extract_text(str(pdf), 1, TextSettings(ocr="never", poppler_path=str(empty)))
    assert str(rendering.value) == str(reading.value).replace("'pdftotext'", "'pdfinfo'")
    assert f"'pdfinfo' was not found in {empty}; install poppler-utils" in str(rendering.value)

    hangs = tmp_path / "hangs"
    hangs.mkdir()
    for tool in ("pdfinfo", "pdftotext"):
        (hangs / tool).write_text("#!/bin/sh\nexec sleep 20\n", encoding="ascii")
        (hangs / tool).chmod(0o755)
    with pytest.raises(InputError) as rendering:
        probe(doc, RenderSettings(timeout_s=0.3, poppler_path=str(hangs)))
    settings = TextSettings(ocr="never", timeout_s=0.3, poppler_path=str(hangs))
    (page,) = extract_text(str(pdf), 1, settings)
    assert rendering.value.cause == page.error == "poppler timed out after 0.3 s"


@needs_poppler
def test_encrypted_pdf_needs_its_password(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    plain = write_pdf(tmp_path / "plain.pdf", [{"text": SENTENCE}])
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(plain))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as f:
        writer.write(f)
    with pytest.raises(InputError, match="password is required"):
        extract_text(str(locked), 1, TextSettings(ocr="never"))
    with pytest.raises(InputError, match="wrong password"):
        extract_text(str(locked), 1, TextSettings(ocr="never"), password="nope")
    pages = extract_text(str(locked), 1, TextSettings(ocr="never"), password="secret")
    assert pages[0].text == SENTENCE


def test_missing_file_and_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        extract_text(str(tmp_path / "nope.pdf"), 1)
    with pytest.raises(PagelensError, match="page_count"):
        extract_text(str(tmp_path / "nope.pdf"), 0)
    with pytest.raises(PagelensError, match="auto, never, always"):
        TextSettings(ocr="sometimes")  # type: ignore[arg-type]
    with pytest.raises(PagelensError, match="ocr_lang"):
        TextSettings(ocr_lang="eng; rm -rf /")
    with pytest.raises(PagelensError, match="timeout_s"):
        TextSettings(timeout_s=0)


# -- OCR (real tesseract) ------------------------------------------------------------


def _has_words(text: str, words=SCAN_WORDS) -> bool:
    return all(w.lower() in text.lower() for w in words)


@needs_poppler
@needs_tesseract
def test_scanned_and_empty_layer_pages_are_ocred(tmp_path):
    pdf = write_pdf(
        tmp_path / "doc.pdf",
        [
            {"text": SENTENCE},
            {"image": scan_image()},  # a scan: no text layer at all
            {"image": scan_image(), "text": "          "},  # a text layer of spaces only
        ],
    )
    pages = extract_text(str(pdf), 3, TextSettings(ocr="auto"))
    assert pages[0] == PageText(1, SENTENCE, "layer", None)
    for page in pages[1:]:
        assert page.source == "ocr" and page.error is None
        assert _has_words(page.text), page.text


@needs_poppler
@needs_tesseract
def test_garbage_layer_is_replaced_by_ocr(tmp_path):
    # The glyphs are ordinary Helvetica letters, but the layer maps them to U+E0xx.
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": "INVOICE TOTAL PAYMENT DUE", "pua": True}])
    layer = extract_text(str(pdf), 1, TextSettings(ocr="never"))
    assert layer[0].source == "none"
    (page,) = extract_text(str(pdf), 1, TextSettings(ocr="auto"))
    assert page.source == "ocr" and _has_words(page.text), page.text


@needs_poppler
@needs_tesseract
def test_scan_with_a_stamped_header_is_ocred(tmp_path):
    header = "Case 1:23-cv-00042 Document 7 Filed 01/02/23 Page 1 of 1"
    pdf = write_pdf(tmp_path / "doc.pdf", [{"image": scan_image(), "text": header}])
    (page,) = extract_text(str(pdf), 1, TextSettings(ocr="auto"))
    assert page.source == "ocr" and _has_words(page.text), page.text
    (page,) = extract_text(str(pdf), 1, TextSettings(ocr="auto", scan_max_chars=0))
    assert page == PageText(1, header, "layer", None)


@needs_poppler
@needs_tesseract
def test_always_mode_ocrs_text_pages_too(tmp_path):
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": "INVOICE\nTOTAL\nPAYMENT"}])
    (page,) = extract_text(str(pdf), 1, TextSettings(ocr="always"))
    assert page.source == "ocr" and _has_words(page.text), page.text


# -- OCR failures (fake tesseract) ---------------------------------------------------


@needs_poppler
def test_ocr_failure_is_reported_per_page_and_the_batch_goes_on(tmp_path, caplog):
    exe = fake_tesseract(
        tmp_path / "bin",
        'case "$1" in *p2.pgm) echo "Error: image is corrupt" >&2; exit 1;; esac\n'
        'echo "fake text read from the page image"',
    )
    pdf = write_pdf(tmp_path / "doc.pdf", [{"image": scan_image()}] * 3)
    with caplog.at_level(logging.WARNING, logger="pagelens.pipeline.text"):
        pages = extract_text(str(pdf), 3, TextSettings(tesseract_cmd=exe, ocr_workers=2))
    assert [p.source for p in pages] == ["ocr", "none", "ocr"]
    assert pages[0].text == pages[2].text == "fake text read from the page image"
    assert "image is corrupt" in pages[1].error and pages[1].text == ""
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "doc.pdf: page 2:" in warnings[0]


@needs_poppler
def test_ocr_timeout_is_a_per_page_error(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", "exec sleep 20")
    pdf = write_pdf(tmp_path / "doc.pdf", [{"image": scan_image()}])
    (page,) = extract_text(str(pdf), 1, TextSettings(tesseract_cmd=exe, timeout_s=0.5))
    assert page.source == "none" and "timed out" in page.error


@needs_poppler
def test_failed_ocr_of_a_stamped_scan_keeps_the_layer(tmp_path):
    exe = fake_tesseract(tmp_path / "bin", "exit 3")
    header = "Case 1:23-cv-00042 Document 7 Filed 01/02/23 Page 1 of 1"
    pdf = write_pdf(tmp_path / "doc.pdf", [{"image": scan_image(), "text": header}])
    (page,) = extract_text(str(pdf), 1, TextSettings(tesseract_cmd=exe))
    assert page.source == "layer" and page.text == header
    assert "exit status 3" in page.error


@needs_poppler
def test_missing_tesseract_raises_in_always_mode(tmp_path):
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}])
    settings = TextSettings(ocr="always", tesseract_cmd=str(tmp_path / "no-tesseract"))
    with pytest.raises(PagelensError, match="tesseract-ocr"):
        extract_text(str(pdf), 1, settings)


@needs_poppler
def test_missing_tesseract_warns_once_in_auto_mode(tmp_path, caplog):
    text_mod._warn_once.cache_clear()
    settings = TextSettings(ocr="auto", tesseract_cmd=str(tmp_path / "no-tesseract"))
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}, {"image": scan_image()}])
    with caplog.at_level(logging.WARNING, logger="pagelens.pipeline.text"):
        first = extract_text(str(pdf), 2, settings)
        second = extract_text(str(pdf), 2, settings)
    assert first == second
    assert first[0] == PageText(1, SENTENCE, "layer", None)
    assert first[1].source == "none" and first[1].text == ""
    assert "tesseract-ocr" in first[1].error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tesseract-ocr" in warnings[0]


@needs_tesseract
@needs_poppler
def test_missing_language_data_names_the_package(tmp_path):
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": SENTENCE}])
    with pytest.raises(PagelensError, match="tesseract-ocr-qaa"):
        extract_text(str(pdf), 1, TextSettings(ocr="always", ocr_lang="qaa"))


@needs_poppler
def test_a_short_clean_layer_is_kept(tmp_path):
    # a slide title: fewer letters than min_chars, but real text; never mode keeps it
    pdf = write_pdf(tmp_path / "doc.pdf", [{"text": "Agenda"}])
    (page,) = extract_text(str(pdf), 1, TextSettings(ocr="never"))
    assert page == PageText(1, "Agenda", "layer", None)
