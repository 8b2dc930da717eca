import hashlib
import math
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from pagelens.errors import InputError, PagelensError
from pagelens.pipeline.render import PdfInfo, RenderSettings, page_dpi, probe, render_pages
from pagelens.types import Document
from tests import pdf_factory as pf

FAST = RenderSettings(dpi=36, timeout_s=30.0)  # letter page: 306 x 396 px


def _doc(path: Path) -> Document:
    data = path.read_bytes()
    return Document(str(path), path.name, hashlib.sha256(data).hexdigest(), len(data))


def _is_blank(image: Image.Image | None) -> bool:
    assert image is not None
    lo, _ = image.convert("L").getextrema()
    return lo > 200


# --- probe and render: good inputs -------------------------------------------------


def test_probe_reads_page_count_and_sizes(tmp_path: Path) -> None:
    path = pf.text_pdf(tmp_path / "doc.pdf", 3, sizes=[(612, 792), (300, 400), (595, 842)])
    info = probe(_doc(path), FAST)
    assert info == PdfInfo(3, ((612.0, 792.0), (300.0, 400.0), (595.0, 842.0)))


def test_render_yields_every_page_in_order_with_its_record(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 3))

    pages = list(render_pages(doc, probe(doc, FAST), FAST))

    assert [p.page_number for p in pages] == [1, 2, 3]
    for p in pages:
        assert (p.doc_sha256, p.doc_path, p.page_count) == (doc.sha256, "doc.pdf", 3)
        assert (p.width_pt, p.height_pt) == (612.0, 792.0)
        assert p.image is not None
        assert p.image.mode == "RGB"
        assert p.image.size == (306, 396)  # 612 * 36 / 72, 792 * 36 / 72
        assert not _is_blank(p.image)  # the text was drawn


def test_batches_and_threads_do_not_change_pages(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 5))
    info = probe(doc, FAST)
    one_go = RenderSettings(dpi=36, threads=1, batch_pages=8)
    split = RenderSettings(dpi=36, threads=2, batch_pages=2)

    a = [p.image.tobytes() for p in render_pages(doc, info, one_go)]
    b = [p.image.tobytes() for p in render_pages(doc, info, split)]

    assert len(a) == 5
    assert a == b
    assert len(set(a)) == 5  # each page shows its own text


def test_first_page_resumes_mid_document(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 5))
    info = probe(doc, FAST)
    settings = RenderSettings(dpi=36, batch_pages=2)
    full = {p.page_number: p.image.tobytes() for p in render_pages(doc, info, settings)}

    resumed = list(render_pages(doc, info, settings, first_page=4))

    assert [p.page_number for p in resumed] == [4, 5]
    assert [p.image.tobytes() for p in resumed] == [full[4], full[5]]
    assert list(render_pages(doc, info, settings, first_page=6)) == []


def test_first_page_below_one_is_rejected(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 1))
    with pytest.raises(PagelensError, match="first_page.*0"):
        list(render_pages(doc, probe(doc, FAST), FAST, first_page=0))


def test_rotated_page_reports_size_after_rotation(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "rot.pdf", 1, sizes=[(300, 400)], rotations=[90]))

    info = probe(doc, FAST)
    (page,) = render_pages(doc, info, FAST)

    assert info.page_sizes_pt == ((400.0, 300.0),)
    assert (page.width_pt, page.height_pt) == (400.0, 300.0)
    assert page.image.size == (200, 150)


def test_image_only_pdf_renders(tmp_path: Path) -> None:
    doc = _doc(pf.image_pdf(tmp_path / "scan.pdf", 2, size_px=(144, 72)))  # 2 x 1 inch

    pages = list(render_pages(doc, probe(doc, FAST), FAST))

    assert [p.image.size for p in pages] == [(72, 36), (72, 36)]
    assert not _is_blank(pages[0].image)


def test_encrypted_pdf_renders_with_the_password(tmp_path: Path) -> None:
    doc = _doc(pf.encrypted_pdf(tmp_path / "locked.pdf", 2))
    settings = RenderSettings(dpi=36, password="secret")

    pages = list(render_pages(doc, probe(doc, settings), settings))

    assert len(pages) == 2
    assert not _is_blank(pages[0].image)


# --- the pixel cap -----------------------------------------------------------------


def test_page_dpi_keeps_requested_dpi_when_page_fits() -> None:
    assert page_dpi(612, 792, RenderSettings(dpi=150)) == 150.0  # 1275 x 1650 px


def test_page_dpi_lowers_dpi_to_fit_the_cap() -> None:
    # 720 pt = 10 in; 100 x 100 px fit 10 000 pixels exactly at 10 dpi.
    assert page_dpi(720, 720, RenderSettings(dpi=150, max_pixels=10_000)) == 10.0


def test_page_dpi_accounts_for_rounding_up_to_whole_pixels() -> None:
    settings = RenderSettings(dpi=150, max_pixels=1_000)
    dpi = page_dpi(100, 70, settings)
    assert math.ceil(100 * dpi / 72) * math.ceil(70 * dpi / 72) <= 1_000
    assert math.ceil(100 * (dpi + 0.01) / 72) * math.ceil(70 * (dpi + 0.01) / 72) > 1_000


def test_giant_page_is_downscaled_to_the_pixel_cap(tmp_path: Path) -> None:
    doc = _doc(pf.giant_pdf(tmp_path / "giant.pdf"))  # 200 x 200 in: 30 000 px a side at 150 dpi
    settings = RenderSettings(dpi=150, max_pixels=1_000_000)

    (page,) = render_pages(doc, probe(doc, settings), settings)

    w, h = page.image.size
    assert w * h <= 1_000_000
    assert w * h >= 0.99 * 1_000_000  # downscaled, not shrunk to nothing
    assert (page.width_pt, page.height_pt) == (14400.0, 14400.0)


def test_cap_applies_per_page_within_one_batch(tmp_path: Path) -> None:
    sizes = [(612, 792), (14400, 14400), (612, 792)]
    doc = _doc(pf.text_pdf(tmp_path / "mixed.pdf", 3, sizes=sizes))
    settings = RenderSettings(dpi=36, max_pixels=250_000)

    pages = list(render_pages(doc, probe(doc, settings), settings))

    assert [p.image.size for p in pages] == [(306, 396), (500, 500), (306, 396)]


# --- bad inputs: each names the file and the cause ---------------------------------


def test_truncated_pdf_is_reported_as_corrupt(tmp_path: Path) -> None:
    doc = _doc(pf.truncated_pdf(tmp_path / "cut.pdf"))

    with pytest.raises(InputError) as info:
        probe(doc, FAST)

    assert info.value.path == "cut.pdf"
    assert info.value.cause.startswith("corrupt PDF: ")
    assert "xref" in info.value.cause  # poppler's own words follow
    assert str(info.value).startswith("cut.pdf: corrupt PDF")


def test_non_pdf_is_reported_as_corrupt(tmp_path: Path) -> None:
    doc = _doc(pf.not_a_pdf(tmp_path / "fake.pdf"))

    with pytest.raises(InputError) as info:
        probe(doc, FAST)

    assert info.value.path == "fake.pdf"
    assert info.value.cause.startswith("corrupt PDF: ")


def test_encrypted_pdf_without_password_asks_for_one(tmp_path: Path) -> None:
    doc = _doc(pf.encrypted_pdf(tmp_path / "locked.pdf"))

    with pytest.raises(InputError) as info:
        probe(doc, FAST)

    assert info.value.path == "locked.pdf"
    assert info.value.cause == "encrypted PDF: a password is required (pass --password)"


def test_encrypted_pdf_with_wrong_password(tmp_path: Path) -> None:
    doc = _doc(pf.encrypted_pdf(tmp_path / "locked.pdf"))

    with pytest.raises(InputError) as info:
        probe(doc, RenderSettings(password="guess"))

    assert info.value.path == "locked.pdf"
    assert info.value.cause == "encrypted PDF: wrong password"


def test_pdf_without_pages(tmp_path: Path) -> None:
    path = tmp_path / "nopages.pdf"
    path.write_bytes(pf.pdf_bytes([]))

    with pytest.raises(InputError) as info:
        probe(_doc(path), FAST)

    assert info.value.path == "nopages.pdf"
    assert info.value.cause == "PDF has no pages"


def test_unloadable_page_is_reported_and_the_pages_around_it_rendered(tmp_path: Path) -> None:
    doc = _doc(pf.broken_page_pdf(tmp_path / "broken.pdf", 3))
    info = probe(doc, FAST)  # pdfinfo still counts the page, size 0 x 0
    assert info.page_count == 3
    assert info.page_sizes_pt[2] == (0.0, 0.0)

    pages = list(render_pages(doc, info, FAST))

    assert [p.page_number for p in pages] == [1, 2, 3]
    assert [p.image is not None for p in pages] == [True, True, False]
    assert [p.error for p in pages] == [None, None, "poppler cannot load this page"]


def test_page_poppler_writes_no_image_for(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 2))
    info = probe(doc, FAST)
    bin_dir = pf.fake_poppler(tmp_path / "bin", hang=())
    (bin_dir / "pdftoppm").write_text("#!/bin/sh\necho 'Some poppler error' >&2\nexit 0\n")

    pages = list(render_pages(doc, info, RenderSettings(dpi=36, poppler_path=str(bin_dir))))

    assert [p.image for p in pages] == [None, None]
    assert pages[0].error == "poppler produced no image (exit status 0): Some poppler error"


def test_one_page_poppler_fails_on_costs_only_that_page(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 4))
    info = probe(doc, FAST)
    bin_dir = pf.fake_poppler(tmp_path / "bin", hang=())
    real = shutil.which("pdftoppm")
    # fails any call whose range holds page 2 (as poppler does on a page it crashes on)
    (bin_dir / "pdftoppm").write_text(
        "#!/bin/sh\n"
        "f=$4; l=$6\n"
        'if [ "$f" -le 2 ] && [ "$l" -ge 2 ]; then echo "Syntax Error" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    settings = RenderSettings(dpi=36, batch_pages=4, threads=1, poppler_path=str(bin_dir))

    pages = list(render_pages(doc, info, settings))

    assert [p.page_number for p in pages] == [1, 2, 3, 4]
    assert [p.image is not None for p in pages] == [True, False, True, True]
    assert pages[1].error == "poppler produced no image (exit status 1): Syntax Error"


def test_pdfinfo_hang_times_out(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 1))
    bin_dir = pf.fake_poppler(tmp_path / "bin", hang=("pdfinfo",))
    settings = RenderSettings(timeout_s=0.5, poppler_path=str(bin_dir))

    with pytest.raises(InputError) as err:
        probe(doc, settings)

    assert err.value.path == "doc.pdf"
    assert err.value.cause == "poppler timed out after 0.5 s"


def test_pdftoppm_hang_times_out(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 3))
    bin_dir = pf.fake_poppler(tmp_path / "bin", hang=("pdftoppm",))
    settings = RenderSettings(dpi=36, timeout_s=0.5, poppler_path=str(bin_dir))
    info = probe(doc, settings)  # the real pdfinfo answers

    with pytest.raises(InputError) as err:
        list(render_pages(doc, info, settings))

    assert err.value.path == "doc.pdf"
    assert "timed out after 0.5 s" in err.value.cause


def test_missing_poppler_names_the_package(tmp_path: Path) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 1))
    empty = tmp_path / "nothing"
    empty.mkdir()

    with pytest.raises(PagelensError, match="poppler-utils"):
        probe(doc, RenderSettings(poppler_path=str(empty)))


# --- resources and settings --------------------------------------------------------


def test_abandoned_render_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 6))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    settings = RenderSettings(dpi=36, batch_pages=2, threads=2)

    pages = render_pages(doc, probe(doc, settings), settings)
    next(pages)
    assert list(scratch.iterdir())  # batches ahead are waiting on disk
    pages.close()

    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dpi", 0),
        ("dpi", True),
        ("max_pixels", -1),
        ("threads", 0),
        ("batch_pages", 0),
        ("timeout_s", 0),
        ("timeout_s", float("nan")),
    ],
)
def test_bad_settings_are_rejected_naming_the_value(field: str, value: object) -> None:
    with pytest.raises(PagelensError, match=f"{field}.*{value!r}"):
        RenderSettings(**{field: value})  # type: ignore[arg-type]


def test_missing_poppler_path_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(PagelensError, match="poppler_path"):
        RenderSettings(poppler_path=str(tmp_path / "absent"))


def test_plan_cuts_batches_per_dpi_and_feeds_every_thread() -> None:
    from pagelens.pipeline.render import _plan

    letter, giant = (612.0, 792.0), (14400.0, 14400.0)
    ten = PdfInfo(10, (letter,) * 10)
    settings = RenderSettings(dpi=150, batch_pages=4, threads=2)
    spans = [(c.first, c.last) for c in _plan(ten, list(range(1, 11)), settings)]
    assert spans == [(1, 4), (5, 8), (9, 10)]

    short = RenderSettings(dpi=150, batch_pages=8, threads=2)  # 5 pages, 2 workers
    assert [(c.first, c.last) for c in _plan(ten, [1, 2, 3, 4, 5], short)] == [(1, 3), (4, 5)]
    # a page left out (unloadable) splits a chunk: pdftoppm takes ranges
    assert [(c.first, c.last) for c in _plan(ten, [1, 2, 4, 5], short)] == [(1, 2), (4, 5)]

    mixed = PdfInfo(4, (letter, giant, letter, letter))
    chunks = _plan(mixed, [1, 2, 3, 4], RenderSettings(dpi=150, batch_pages=8, threads=1))
    assert [(c.first, c.last) for c in chunks] == [(1, 1), (2, 2), (3, 4)]
    assert [c.dpi for c in chunks] == [150.0, 10.0, 150.0]  # 2000 px a side fits 4 M pixels


def test_render_folders_of_dead_processes_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess

    from pagelens.pipeline import render

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    stale = scratch / f"pagelens-render-{dead.pid}-abc"
    (stale / "c0").mkdir(parents=True)
    (stale / "c0" / "p-1.ppm").write_bytes(b"P6\n1 1\n255\n\0\0\0")
    mine = scratch / f"pagelens-render-{os.getpid()}-abc"
    mine.mkdir()
    other = scratch / "unrelated-123-abc"
    other.mkdir()
    render._sweep_stale_temp_dirs.cache_clear()

    doc = _doc(pf.text_pdf(tmp_path / "doc.pdf", 1))
    list(render_pages(doc, probe(doc, FAST), FAST))

    assert not stale.exists()
    assert mine.exists()
    assert other.exists()
