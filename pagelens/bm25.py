"""BM25 term weights of page and query text, as Qdrant sparse vectors.

Tokenisation is Qdrant's own BM25 model (``qdrant_edge.Bm25``, the same code the
Qdrant server runs for its BM25 inference): Unicode word boundaries, lower-cased,
English stopwords dropped, no stemming (the variant measured at nDCG@5 0.345 on
mmlongbench-dev in the project notes). A document's vector holds its terms'
saturated, length-normalised frequencies; the IDF is applied by the engine at query
time (``Modifier.IDF``), so it always reflects the pages currently stored. Both store
backends get their vectors from here, so they score alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pagelens.storage.base import SparseVector


@dataclass(frozen=True)
class Bm25Settings:
    """BM25 parameters (recorded in the index manifest)."""

    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 256.0  # tokens; a page of mmlongbench-dev averages about this
    language: str = "english"
    stemming: bool = False


@lru_cache(maxsize=4)
def _model(settings: Bm25Settings) -> Any:
    import qdrant_edge as qe

    config = qe.Bm25Config(
        k=settings.k1,
        b=settings.b,
        avg_len=settings.avg_len,
        language=settings.language,
        stemmer=None if settings.stemming else qe.DisabledStemmer(),  # None: the language's
    )
    return qe.Bm25(config)


def _convert(v: Any) -> SparseVector:
    return SparseVector(tuple(v.indices), tuple(float(x) for x in v.values))


def bm25_documents(
    texts: Sequence[str], settings: Bm25Settings | None = None
) -> list[SparseVector]:
    """One sparse vector per page text (empty text gives an empty vector)."""
    model = _model(settings or Bm25Settings())
    return [_convert(model.embed_document(t)) for t in texts]


def bm25_queries(texts: Sequence[str], settings: Bm25Settings | None = None) -> list[SparseVector]:
    """One sparse vector per query (each distinct term weighted 1)."""
    model = _model(settings or Bm25Settings())
    return [_convert(model.embed_query(t)) for t in texts]
