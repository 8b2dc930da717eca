"""pagelens: visual-document retrieval over folders of PDFs.

Importing the package loads no model and opens no file; the pieces live in their
rooms: ``pagelens.index`` (open an index), ``pagelens.pipeline.job`` (index PDFs),
``pagelens.search`` (ask questions), ``pagelens.encoders`` (load a model) and
``pagelens.eval`` (measure).
"""

from pagelens.errors import PagelensError
from pagelens.types import Hit, MultiVector, Page

__all__ = ["Hit", "MultiVector", "Page", "PagelensError"]
