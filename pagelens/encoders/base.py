"""The Encoder seam: anything that turns pages and queries into multi-vectors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pagelens.types import MultiVector, Page


@dataclass(frozen=True)
class EncoderSpec:
    """What identifies an encoder's vector space; recorded in every index manifest.

    Two encoders are the same (:meth:`same_vectors`) when they compute the same
    vectors: same family, weights and processor files (``revision``: a hub commit,
    or a content hash of a local folder), dimension and ``page_vectors``. Where the
    checkpoint was typed from is not part of it: ``model_id`` is what loads it
    again from any working directory (a hub id, an alias such as ``minilm``, or a
    local folder's absolute path) and ``given`` the name as typed, for information.
    """

    model_id: str
    revision: str  # hub commit hash, or a content hash of the local files
    dim: int
    family: str  # e.g. "colpali", "colqwen2_5", "colidefics3", "minilm"
    page_vectors: str = "all"  # colpali families: every token, or "image" patches only
    given: str = ""  # the model as the user typed it (information only)
    single: bool = False  # one vector per page and query (stored plain, cosine, HNSW)

    def identity(self) -> tuple[str, str, int, str, bool]:
        """Return what the vectors depend on: family, revision, dim, page vectors, single."""
        return (self.family, self.revision, self.dim, self.page_vectors, self.single)

    def same_vectors(self, other: EncoderSpec | None) -> bool:
        """Whether ``other`` computes the same vectors (wherever it was loaded from)."""
        return other is not None and self.identity() == other.identity()

    def describe(self) -> str:
        """Name the encoder and everything that identifies it, for messages."""
        return (
            f"{self.given or self.model_id!r} (family {self.family}, revision {self.revision}, "
            f"dim {self.dim}, page vectors {self.page_vectors})"
        )


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
