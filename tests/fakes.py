"""A fake page encoder: deterministic vectors from pixels and words, no weights.

Pages become one vector per cell of an 8x8 grid: a random vector seeded by the
hash of the cell's pixels, so cells that differ between pages (where the text is)
give different vectors and blank cells give the same one. Queries become one
hash-seeded random vector per word.
It implements the Encoder protocol, so the job and search run their real paths.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from pagelens.encoders.base import EncoderSpec
from pagelens.types import MultiVector, Page


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _seeded(data: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim)


class FakeEncoder:
    def __init__(self, dim: int = 16, grid: int = 8, model_id: str = "fake") -> None:
        self.dim = dim
        self.grid = grid
        # another model computes other vectors: its revision (weights) differs too
        revision = "1" if model_id == "fake" else f"1-{model_id}"
        self._spec = EncoderSpec(model_id=model_id, revision=revision, dim=dim, family="fake")
        self.pages_seen = 0

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        out = []
        for page in pages:
            assert page.image is not None
            img = np.asarray(page.image.convert("L").resize((self.grid * 8, self.grid * 8)))
            cells = img.reshape(self.grid, 8, self.grid, 8).transpose(0, 2, 1, 3)
            rows = [_seeded(cell.tobytes(), self.dim) for cell in cells.reshape(-1, 64)]
            out.append(_unit(np.array(rows)))
            self.pages_seen += 1
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        out = []
        for text in texts:
            rows = []
            for word in text.lower().split():
                rows.append(_seeded(word.encode(), self.dim))
            out.append(_unit(np.array(rows or [np.ones(self.dim)])))
        return out


class FakeTextEncoder:
    """A text encoder: one hash-seeded vector per word of ``Page.text``."""

    reads = "text"

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self._spec = EncoderSpec(model_id="fake-text", revision="1", dim=dim, family="fake-text")
        self.images_seen = 0
        self.pages_seen = 0

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def _encode(self, text: str) -> MultiVector:
        words = text.lower().split()
        if not words:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _unit(np.array([_seeded(w.encode(), self.dim) for w in words]))

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        self.images_seen += sum(p.image is not None for p in pages)
        self.pages_seen += len(pages)
        return [self._encode(p.text or "") for p in pages]

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        return [self._encode(t) for t in texts]
