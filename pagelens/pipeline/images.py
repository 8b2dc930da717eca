"""Page images for display, re-rendered on demand from the indexed file.

The index stores no images: a 150-dpi page screenshot is 100-500 KB as PNG,
several times the page's vectors, and a thumbnail too small to read a table is of
little use. A hit records the file it came from (``source``) and its sha256, so the
page is rendered again when asked for, at whatever resolution the caller wants,
and a file that changed or vanished since indexing is reported instead of shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pagelens.errors import InputError, SourceChangedError, SourceGoneError
from pagelens.pipeline.discover import file_sha256
from pagelens.pipeline.render import RenderSettings, probe, render_pages
from pagelens.storage.layout import source_from_payload
from pagelens.types import Document, Hit, display_path

if TYPE_CHECKING:
    from PIL import Image


def page_image(hit: Hit, *, dpi: int = 100, password: str | None = None) -> Image.Image:
    """Render the page a hit points to.

    Raises:
        SourceGoneError: the source file is no longer there (an :class:`InputError`).
        SourceChangedError: its bytes changed since indexing (an :class:`InputError`).
        InputError: the index records no source, or the page cannot be rendered.

    """
    path = source_file(hit)
    doc = Document(
        source=str(path), path=hit.doc_path, sha256=hit.doc_sha256, size_bytes=path.stat().st_size
    )
    settings = RenderSettings(dpi=dpi, password=password, batch_pages=1, threads=1)
    info = probe(doc, settings)
    pages = render_pages(doc, info, settings, first_page=hit.page_number)
    try:
        page = next(pages)
    finally:
        pages.close()  # stop rendering the pages after it
    if page.image is None:
        raise InputError(
            display_path(str(path)), f"page {hit.page_number}: {page.error or 'no image'}"
        )
    return page.image


def source_file(hit: Hit) -> Path:
    """Return the file a hit's page came from, checked to hold the bytes that were indexed.

    Raises:
        SourceGoneError: the file is no longer there (an :class:`InputError`).
        SourceChangedError: its sha256 is not the one indexed (an :class:`InputError`).
        InputError: the index records no source file for the page.

    """
    source = source_from_payload(hit.payload)
    if not source:
        raise InputError(hit.doc_path, "the index records no source file for this page")
    path = Path(source)
    shown = display_path(source)
    if not path.is_file():
        raise SourceGoneError(shown, "file no longer exists (moved? re-run `pagelens index`)")
    if file_sha256(path) != hit.doc_sha256:
        raise SourceChangedError(
            shown, "file changed since it was indexed (re-run `pagelens index`)"
        )
    return path
