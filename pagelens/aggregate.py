"""Page-to-document aggregation: documents ranked by their best pages.

A document's score is the score of its best page (**max**). Max is the usual
page-to-document rule in visual document retrieval (e.g. the document-level
scores of ViDoRe and M3DocRAG-style pipelines) and the one that keeps a score's
meaning: a long report is not ranked up for holding many middling pages, as a sum
would do, nor down for holding many unrelated ones, as a mean would do. Each
document keeps its best few pages, to show where it matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pagelens.errors import check_whole
from pagelens.types import Hit


@dataclass(frozen=True)
class DocumentHit:
    """One ranked document: its score (its best page's) and its best pages, best first."""

    doc_path: str
    doc_sha256: str
    score: float
    pages: tuple[Hit, ...]
    source: str | None = None

    @property
    def doc(self) -> str:
        """The document's path as the index records it (same as ``doc_path``)."""
        return self.doc_path

    def to_dict(self) -> dict[str, Any]:
        """Return the document and its best pages as plain data for JSON."""
        return {
            "doc_path": self.doc_path,
            "doc_sha256": self.doc_sha256,
            "score": self.score,
            "source": self.source,
            "pages": [
                {"page_number": h.page_number, "score": h.score, "channels": list(h.channels)}
                for h in self.pages
            ],
        }


def rank_documents(hits: Sequence[Hit], *, per_document: int = 3) -> list[DocumentHit]:
    """Rank the documents of one query's page hits by their best page.

    Args:
        hits: page hits of one query (any order; a page listed twice counts once,
            at its best score).
        per_document: best pages kept per document.

    Returns:
        One :class:`DocumentHit` per document (a document is its sha256), best
        first; ties by path. Its pages are its best ``per_document``, best first
        (ties by page number).

    Examples:
        >>> from pagelens.types import Hit
        >>> hits = [Hit("a.pdf", 1, 0.9, "aa"), Hit("b.pdf", 4, 0.7, "bb"),
        ...         Hit("a.pdf", 2, 0.8, "aa")]
        >>> [(d.doc_path, d.score, [h.page_number for h in d.pages]) for d in rank_documents(hits)]
        [('a.pdf', 0.9, [1, 2]), ('b.pdf', 0.7, [4])]

    """
    check_whole("per_document", per_document, 1)
    best: dict[tuple[str, int], Hit] = {}
    for hit in hits:
        key = (hit.doc_sha256, hit.page_number)
        if key not in best or hit.score > best[key].score:
            best[key] = hit
    by_doc: dict[str, list[Hit]] = {}
    for hit in best.values():
        by_doc.setdefault(hit.doc_sha256, []).append(hit)
    docs = []
    for sha, pages in by_doc.items():
        pages.sort(key=lambda h: (-h.score, h.page_number))
        top = pages[0]
        docs.append(
            DocumentHit(
                doc_path=top.doc_path,
                doc_sha256=sha,
                score=top.score,
                pages=tuple(pages[:per_document]),
                source=top.source,
            )
        )
    docs.sort(key=lambda d: (-d.score, d.doc_path, d.doc_sha256))
    return docs
