"""Similarity maps of visual encoders, on tiny random-init checkpoints; explain()'s errors.

The maps come from colpali-engine's ``get_similarity_maps_from_embeddings`` over the
adapter's ``patch_grid``; every test checks them against a plain numpy MaxSim over
the same vectors, and the grid against the processor's own token layout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("colpali_engine")

import pagelens  # noqa: E402
from pagelens.encoders.colpali import ColPaliEngineEncoder  # noqa: E402
from pagelens.errors import (  # noqa: E402
    DocumentNotFoundError,
    EncoderError,
    InputError,
    PagelensError,
    PageNotFoundError,
    SourceChangedError,
    SourceGoneError,
)
from pagelens.explain import Explanation, explain  # noqa: E402
from pagelens.pipeline.images import page_image  # noqa: E402
from pagelens.types import Hit, Page  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402
from tests.tiny_models import build_tiny_checkpoint, tiny_image  # noqa: E402

QUERY = "what is the total revenue in 2020"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``indexed(family) -> root``: a 2-page PDF indexed with the tiny checkpoint, once."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            root = tmp_path_factory.mktemp(family)
            (root / "pdfs").mkdir()
            pf.text_pdf(root / "pdfs" / "a.pdf", 2, prefix="Total revenue 2020")
            folder = build_tiny_checkpoint(family, root / "model")
            with pagelens.open(root / "idx", model=str(folder), device="cpu") as lens:
                lens.add([root / "pdfs"], progress=False)
            made[family] = root
        return made[family]

    return get


def _hit(lens: pagelens.Lens, page: int) -> Hit:
    """The page as a search would return it (its payload names the source file)."""
    (record,) = lens.documents()
    payload = next(
        p for p in lens.index.pages() if p["page_number"] == page and p["doc_path"] == "a.pdf"
    )
    return Hit("a.pdf", page, 0.0, record.doc_sha256, payload=payload)


@pytest.mark.parametrize("family", ["colpali", "colqwen2", "colidefics3"])
def test_maps_are_maxsim_over_the_patch_grid(indexed, family):
    root = indexed(family)
    with pagelens.open(root / "idx", device="cpu") as lens:
        encoder = lens.encoder()
        assert isinstance(encoder, ColPaliEngineEncoder)
        e = explain(lens.index, encoder, "a.pdf", 2, QUERY)  # the functional layer: no Lens
        # the oracle: the same vectors, scored by numpy
        image = page_image(_hit(lens, 2), dpi=150)
        page = Page("x" * 64, "a.pdf", 2, 2, image=image)
        grid, shape = encoder.patch_grid(page)
        (query,) = encoder.encode_queries([QUERY])
    rows, cols = shape
    assert e.kind == "heatmap" and e.channel == "dense" and e.grid == (rows, cols)
    assert grid.shape == (rows * cols, encoder.spec.dim)
    sims = (query @ grid.T).reshape(len(query), rows, cols)  # (m, rows, cols)
    assert len(e.maps) == len(query) == len(e.query_tokens)
    for j, m in enumerate(e.maps):
        assert np.asarray(m.similarity).shape == (rows, cols)
        np.testing.assert_allclose(m.similarity, sims[j], atol=1e-5)
        assert m.best == np.unravel_index(np.argmax(sims[j]), (rows, cols))
        assert m.score == pytest.approx(sims[j].max(), abs=1e-5)
    assert e.score == pytest.approx(sims.max(axis=(1, 2)).sum(), abs=1e-4)
    # the query tokens name the question's words, and the added ones are marked
    assert [m.token for m in e.maps] == e.query_tokens
    assert "revenue" in "".join(m.token for m in e.maps if not m.special)
    assert e.maps[-1].special  # the augmentation padding colpali-engine appends
    json.dumps(e.to_dict())  # plain data


@pytest.mark.parametrize("family", ["colpali", "colqwen2", "colidefics3"])
def test_the_grid_holds_the_image_patch_vectors(indexed, family):
    """The grid's vectors are the ones encode_pages keeps with page_vectors="image"."""
    root = indexed(family)
    with pagelens.open(root / "idx", device="cpu") as lens:
        encoder = lens.encoder()
    assert isinstance(encoder, ColPaliEngineEncoder)
    page = Page("x" * 64, "p.pdf", 1, 1, image=tiny_image(100, 140, seed=3))
    grid, (rows, cols) = encoder.patch_grid(page)
    encoder.page_vectors = "image"
    try:
        (image_tokens,) = encoder.encode_pages([page])  # (n, dim), sequence order
    finally:
        encoder.page_vectors = "all"
    inputs = encoder._processor.process_images([page.image])
    if family == "colpali":  # a fixed square: 32 px / 8 px patches in the tiny config
        assert (rows, cols) == (4, 4)
        np.testing.assert_allclose(grid, image_tokens, atol=1e-6)
    elif family == "colqwen2":  # Qwen: the processor's grid of merged patches
        _, h, w = inputs["image_grid_thw"][0].tolist()
        merge = encoder._processor.image_processor.merge_size
        assert (rows, cols) == (h // merge, w // merge) and rows > cols  # a portrait page
        np.testing.assert_allclose(grid, image_tokens, atol=1e-6)
    else:  # Idefics3: 2 x 2 tiles of 2 x 2 tokens, then the global view (left out)
        assert (rows, cols) == (4, 4) and len(image_tokens) == 20
        laid = grid.reshape(rows, cols, -1)
        for k, (r, c) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):  # tiles in token order
            tile = image_tokens[4 * k : 4 * k + 4].reshape(2, 2, -1)
            np.testing.assert_allclose(laid[r : r + 2, c : c + 2], tile, atol=1e-6)


def test_a_single_vector_model_has_no_map(tmp_path):
    from pagelens.encoders import load_encoder

    encoder = load_encoder(str(build_tiny_checkpoint("bipali", tmp_path / "m")), device="cpu")
    page = Page("x" * 64, "p.pdf", 1, 1, image=tiny_image(40, 40, seed=0))
    with pytest.raises(EncoderError, match="one vector.*no patch grid"):
        encoder.patch_grid(page)  # type: ignore[attr-defined]


def test_unknown_document_and_bad_pages(indexed):
    root = indexed("colpali")
    with pagelens.open(root / "idx", device="cpu") as lens:
        with pytest.raises(DocumentNotFoundError, match="no document 'b.pdf'"):
            lens.explain("b.pdf", 1, QUERY)
        for page in (0, 3, -1, True, "1", 1.0):
            with pytest.raises(PageNotFoundError, match="pages 1 to 2"):
                lens.explain("a.pdf", page, QUERY)  # type: ignore[arg-type]
        sha = lens.documents()[0].doc_sha256
        assert lens.explain(sha, 1, QUERY).doc_path == "a.pdf"  # a document by its sha256 too
        with pytest.raises(PagelensError, match="empty"):
            lens.explain("a.pdf", 1, "   ")
        with pytest.raises(PagelensError, match="no text channel"):
            lens.explain("a.pdf", 1, QUERY, channel="text")
        with pytest.raises(PagelensError, match="channel must be"):
            lens.explain("a.pdf", 1, QUERY, channel="bm25")
        with pytest.raises(PagelensError, match="dpi must be a whole number >= 1, got 0"):
            lens.explain("a.pdf", 1, QUERY, dpi=0)


def test_a_moved_or_changed_source_is_refused(indexed):
    root = indexed("colpali")
    src = root / "pdfs" / "a.pdf"
    original = src.read_bytes()
    with pagelens.open(root / "idx", device="cpu") as lens:
        moved = src.with_name("moved.pdf")
        src.rename(moved)
        try:
            with pytest.raises(SourceGoneError, match="no longer exists") as gone:
                lens.explain("a.pdf", 1, QUERY)
            assert isinstance(gone.value, InputError)
            src.write_bytes(original.replace(b"Total revenue", b"Total expense"))
            with pytest.raises(SourceChangedError, match="changed since it was indexed"):
                lens.explain("a.pdf", 1, QUERY)
        finally:
            src.write_bytes(original)
            moved.unlink()
        assert isinstance(lens.explain("a.pdf", 1, QUERY), Explanation)
