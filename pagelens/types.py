"""The nouns every room shares: pages, hits and the multi-vector type.

A page or query embedding is a float32 array of shape ``(n_vectors, dim)``;
a batch is a plain list of them (ragged: ``n_vectors`` differs per item).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pagelens.wire import snippet

if TYPE_CHECKING:
    from PIL import Image

MultiVector = npt.NDArray[np.float32]
"""One page or query: float32, shape ``(n_vectors, dim)``."""


@dataclass(frozen=True)
class Document:
    """A PDF found on disk, identified by the sha256 of its bytes."""

    source: str  # absolute path on this machine
    path: str  # path relative to the indexed root (what the index records)
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class Page:
    """One page of a document, as encoders take it.

    ``image`` is the rendered screenshot (RGB); ``text`` is the page's text when
    a text channel extracted it, else ``None``.
    """

    doc_sha256: str
    doc_path: str
    page_number: int  # 1-based, as a PDF viewer shows it
    page_count: int
    image: Image.Image | None = None
    text: str | None = None
    text_source: str | None = None  # "layer", "ocr" or "none" when text was extracted
    width_pt: float = 0.0  # page size in PDF points (1/72 inch)
    height_pt: float = 0.0
    # why this page could not be loaded or encoded; such a page carries no image and
    # is stored without vectors (see pagelens.pipeline.job)
    error: str | None = None


@dataclass(frozen=True)
class Hit:
    """One ranked search result.

    ``source`` is the file the page came from (where the index records one) and
    ``text`` the page's text (where the index holds page text); ``payload`` is all
    the index stored for the page. The repr leaves payload and text out.
    """

    doc_path: str
    page_number: int
    score: float
    doc_sha256: str
    payload: Mapping[str, Any] = field(default_factory=dict, repr=False)
    channels: tuple[str, ...] = ()  # the channels ("dense", "bm25") whose results held it
    source: str | None = None
    text: str | None = field(default=None, repr=False)

    @property
    def page_id(self) -> str:
        """``<doc path>#<page number>``: the corpus-id form evaluation sets use."""
        return f"{self.doc_path}#{self.page_number}"

    def to_dict(self, *, query: str | None = None) -> dict[str, Any]:
        """Return the hit as plain data, in the wire format (:mod:`pagelens.wire`).

        ``snippet`` is a piece of the page's text (``None`` without text), cut
        around the first word of ``query`` the page holds, else from its start.
        ``payload`` and the full ``text`` are left out.

        Examples:
            >>> hit = Hit("a.pdf", 2, 0.75, "ab12", channels=("dense",), text="Total revenue")
            >>> hit.to_dict()
            {'doc_path': 'a.pdf', 'page_number': 2, 'score': 0.75, 'doc_sha256': 'ab12', ...}
            >>> hit.to_dict()["channels"], hit.to_dict()["snippet"]
            (['dense'], 'Total revenue')

        """
        return {
            "doc_path": self.doc_path,
            "page_number": self.page_number,
            "score": self.score,
            "doc_sha256": self.doc_sha256,
            "channels": list(self.channels),
            "source": self.source,
            "snippet": snippet(self.text, query),
        }


def display_path(path: str) -> str:
    r"""Write each byte of ``path`` that is not UTF-8 as ``\xNN``.

    Python hands undecodable file-name bytes over as lone surrogates; this is the
    form an index records and prints for such a name (``caf\xe9.pdf``), and the
    form a user types to name it. Valid names come back unchanged.
    """
    try:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name holds (made in Python): \udNNN
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
