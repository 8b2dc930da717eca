"""A fake page encoder: deterministic vectors from pixels and words, no weights.

Pages become one vector per 8x8 grid cell (the cell's mean colour through a fixed
random projection); queries one vector per word (a hash-seeded random vector).
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


class FakeEncoder:
    def __init__(self, dim: int = 16, grid: int = 8, model_id: str = "fake") -> None:
        self.dim = dim
        self.grid = grid
        self._proj = np.random.default_rng(0).normal(size=(3, dim))
        self._bias = np.random.default_rng(1).normal(size=(grid * grid, dim))
        self._spec = EncoderSpec(model_id=model_id, revision="1", dim=dim, family="fake")
        self.pages_seen = 0

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        out = []
        for page in pages:
            assert page.image is not None
            img = np.asarray(page.image.convert("RGB").resize((self.grid * 4, self.grid * 4)))
            cells = img.reshape(self.grid, 4, self.grid, 4, 3).mean(axis=(1, 3)).reshape(-1, 3)
            out.append(_unit(cells / 255.0 @ self._proj + 0.3 * self._bias))
            self.pages_seen += 1
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        out = []
        for text in texts:
            rows = []
            for word in text.lower().split():
                seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                rows.append(np.random.default_rng(seed).normal(size=self.dim))
            out.append(_unit(np.array(rows or [np.ones(self.dim)])))
        return out
