"""The Encoder seam: anything that turns pages and queries into multi-vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pagelens.types import MultiVector, Page


@dataclass(frozen=True)
class EncoderSpec:
    """What identifies an encoder's vector space; recorded in every index manifest.

    Two encoders with equal specs produce comparable vectors.
    """

    model_id: str  # hub id or local folder name as given by the user
    revision: str  # hub revision / commit, or a content hash of a local folder
    dim: int
    family: str  # e.g. "colpali", "colqwen2_5", "colidefics3", "minilm"


def reads_text(encoder: object) -> bool:
    """Whether an encoder reads ``Page.text`` rather than ``Page.image``.

    An encoder says so with a class attribute ``reads = "text"``; the default is
    the page image, so visual encoders need not declare anything.
    """
    return getattr(encoder, "reads", "image") == "text"


@runtime_checkable
class Encoder(Protocol):
    """Turns pages and query texts into L2-normalised float32 multi-vectors.

    Text encoders also set a class attribute ``reads = "text"`` (see
    :func:`reads_text`): the indexing job then extracts page text and skips
    rendering.
    """

    @property
    def spec(self) -> EncoderSpec: ...

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        """One ``(n_i, dim)`` float32 array per page, in input order."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        """One ``(m_j, dim)`` float32 array per query text, in input order."""
        ...
