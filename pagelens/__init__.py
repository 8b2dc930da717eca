"""pagelens: visual-document retrieval over folders of PDFs.

Start with one import::

    import pagelens

    with pagelens.open("my-index", model="vidore/colqwen2.5-v0.2") as lens:
        lens.add(["pdfs/"])
    with pagelens.open("my-index") as lens:  # the model comes from the index
        hits = lens.search(["question"], k=5)

Importing the package loads no model and opens no file (torch, transformers and
Qdrant load on first use). The functional layer stays public for advanced use:
``pagelens.index`` (open an index), ``pagelens.pipeline.job`` (index PDFs),
``pagelens.search`` (ask questions), ``pagelens.encoders`` (load a model),
``pagelens.explain`` (what on a page matched: its function ``explain`` is not
re-exported, so as not to shadow the module; ``Lens.explain`` calls it),
``pagelens.aggregate`` (documents ranked by their best pages) and ``pagelens.eval``
(measure).
"""

from pagelens.aggregate import DocumentHit, rank_documents
from pagelens.encoders import load_encoder
from pagelens.errors import (
    DocumentNotFoundError,
    EncoderError,
    IndexMismatchError,
    InputError,
    MissingExtraError,
    PagelensError,
    PageNotFoundError,
    SourceChangedError,
    SourceGoneError,
    StoreError,
)
from pagelens.explain import Explanation, TokenMap, WordBox
from pagelens.index import IndexSettings
from pagelens.lens import Lens, open
from pagelens.search import NoMatchError, SearchFilter, SearchOptions
from pagelens.types import Hit, MultiVector, Page


def __getattr__(name: str) -> str:
    if name == "__version__":  # read from the installed metadata when asked, not on import
        from pagelens.version import package_version

        return package_version()
    raise AttributeError(f"module 'pagelens' has no attribute {name!r}")


__all__ = [
    "DocumentHit",
    "DocumentNotFoundError",
    "EncoderError",
    "Explanation",
    "Hit",
    "IndexMismatchError",
    "IndexSettings",
    "InputError",
    "Lens",
    "MissingExtraError",
    "MultiVector",
    "NoMatchError",
    "Page",
    "PageNotFoundError",
    "PagelensError",
    "SearchFilter",
    "SearchOptions",
    "SourceChangedError",
    "SourceGoneError",
    "StoreError",
    "TokenMap",
    "WordBox",
    "load_encoder",
    "open",
    "rank_documents",
]
