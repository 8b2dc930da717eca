"""Documents and page images of a served index, with a disk cache of rendered pages.

A page image is rendered again from the document's source file
(:meth:`pagelens.lens.Lens.page_image`), after checking that the file is still
there and still holds the bytes that were indexed (sha256): a moved file is a
:class:`~pagelens.errors.SourceGoneError`, a changed one a
:class:`~pagelens.errors.SourceChangedError`, never the wrong page. Rendered PNGs
are kept in a folder, least recently used first out once the folder holds more
than its byte cap.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
from pathlib import Path

from pagelens.errors import SourceChangedError, SourceGoneError
from pagelens.index import Index, hit_from_payload
from pagelens.lens import Lens
from pagelens.pipeline.discover import file_sha256
from pagelens.storage.layout import source_from_payload
from pagelens.types import Hit, display_path

logger = logging.getLogger(__name__)


def page_hit(index: Index, doc: str, page: int) -> Hit:
    """Make a :class:`~pagelens.types.Hit` for one page of a document (as a search gives).

    ``doc`` is the document's sha256 (or its path as recorded).

    Raises:
        DocumentNotFoundError: no such document.
        PageNotFoundError: the document has no such page.

    """
    return hit_from_payload(index.page(index.find_document(doc), page))


class PageImages:
    """Render pages from their checked source files, keeping PNGs in an LRU folder.

    Args:
        lens: the served index.
        folder: where rendered PNGs are kept (``None``: a temporary folder).
        max_bytes: the folder's cap; the least recently used images go first.

    """

    def __init__(
        self, lens: Lens, folder: str | os.PathLike[str] | None, *, max_bytes: int
    ) -> None:
        self._lens = lens
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="pagelens-pages-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # source file -> (size, mtime_ns, sha256) of its last hash: a file whose size
        # and mtime are unchanged is not hashed again for every thumbnail
        self._hashed: dict[str, tuple[int, int, str]] = {}

    def check_source(self, hit: Hit) -> None:
        """Check that a page's source file is where it was and holds the same bytes.

        Raises:
            SourceGoneError: the file is gone from its recorded path.
            SourceChangedError: its bytes differ from those indexed.

        """
        source = source_from_payload(hit.payload)
        shown = display_path(source) if source else hit.doc_path
        if not source or not os.path.isfile(source):
            raise SourceGoneError(
                shown,
                f"the file of {hit.doc_path} is no longer there (moved or deleted); "
                "index it again where it is now",
            )
        st = os.stat(source)
        known = self._hashed.get(source)
        if known is None or known[:2] != (st.st_size, st.st_mtime_ns):
            known = (st.st_size, st.st_mtime_ns, file_sha256(source))
            self._hashed[source] = known
        if known[2] != hit.doc_sha256:
            raise SourceChangedError(
                shown,
                f"the file changed since {hit.doc_path} was indexed (sha256 "
                f"{known[2][:12]}, indexed {hit.doc_sha256[:12]}); index it again",
            )

    def png(self, hit: Hit, dpi: int) -> bytes:
        """Return the page as PNG bytes, from the cache or rendered now."""
        self.check_source(hit)
        path = self.folder / f"{hit.doc_sha256}-{hit.page_number}-{dpi}.png"
        with self._lock:
            if path.is_file():
                os.utime(path)  # most recently used
                return path.read_bytes()
        image = self._lens.page_image(hit, dpi=dpi)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False)
        data = buffer.getvalue()
        with self._lock:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
            self._evict(keep=path)
        return data

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used images until the folder is under its cap.

        ``keep`` (the image just made) stays, even when it alone is over the cap.
        """
        files = []
        for p in self.folder.glob("*.png"):
            st = p.stat()
            files.append((st.st_mtime_ns, st.st_size, p))
        total = sum(size for _, size, _ in files)
        for _, size, p in sorted(files):
            if total <= self.max_bytes:
                break
            if p == keep:
                continue
            p.unlink(missing_ok=True)
            total -= size
            logger.debug("page image cache: dropped %s", p.name)

    def cached_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.png"))
