"""colpali-engine's single-vector (Bi*) twins, run for real on tiny checkpoints (offline, CPU).

Each Bi* family encodes a page or query to one ``(1, dim)`` unit float32 vector: the
model's own pooled output (mean over the attention mask for BiPali and BiModernVBert,
the last, left-padded position for the BiQwen*, BiGemma3 and BiIdefics3 ones). The reference is
colpali-engine as its README shows: ``model(**processor.process_images(...))`` and
``model(**processor.process_queries(...))`` give ``(batch, dim)``, scored with
``processor.score_single_vector``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("colpali_engine")

import torch  # noqa: E402

from pagelens.encoders import load_encoder  # noqa: E402
from pagelens.encoders.colpali import (  # noqa: E402
    detect_family,
    fix_paligemma_attention,
)
from pagelens.errors import EncoderError  # noqa: E402
from pagelens.index import Index  # noqa: E402
from pagelens.pipeline.job import index_paths  # noqa: E402
from pagelens.pipeline.render import RenderSettings  # noqa: E402
from pagelens.search import search  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    BI_FAMILIES,
    build_tiny_checkpoint,
    load_with_reference,
    tiny_pages,
)

PAGE_SIZES = [(100, 140), (60, 60), (200, 40)]  # different token counts: a padded batch
QUERIES = ["what is the total revenue in 2020", "fox", "which table shows annual sales growth"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, ...]]:
    """``built(family) -> (folder, pagelens encoder, colpali-engine model, processor)``."""
    root = tmp_path_factory.mktemp("bi")
    cache: dict[str, tuple[Any, ...]] = {}

    def get(family: str) -> tuple[Any, ...]:
        if family not in cache:
            folder = build_tiny_checkpoint(family, root / family)
            cache[family] = (folder, *load_with_reference(folder))
        return cache[family]

    return get


def _reference(model: Any, inputs: Any) -> np.ndarray:
    tensors = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.inference_mode():
        out = model(**tensors)  # (batch, dim)
    assert out.ndim == 2 and out.shape[0] == len(tensors["input_ids"])
    return out.float().numpy()


def _assert_unit_singles(vectors: list[np.ndarray], count: int, dim: int) -> None:
    assert len(vectors) == count
    for v in vectors:
        assert v.dtype == np.float32 and v.shape == (1, dim) and v.flags.c_contiguous
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("family", BI_FAMILIES)
def test_pages_and_queries_are_one_unit_vector(family: str, built) -> None:
    folder, encoder, _, _ = built(family)
    spec = encoder.spec
    assert spec.single and spec.family == family and spec.dim == 32
    _assert_unit_singles(encoder.encode_pages(tiny_pages(PAGE_SIZES)), 3, spec.dim)
    _assert_unit_singles(encoder.encode_queries(QUERIES), 3, spec.dim)
    # Batching changes nothing (the processors pad on the left; "last" pooling holds).
    one = load_encoder(str(folder), device="cpu", batch_size=1)
    for a, b in zip(
        one.encode_pages(tiny_pages(PAGE_SIZES)),
        encoder.encode_pages(tiny_pages(PAGE_SIZES)),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, atol=ATOL)
    for a, b in zip(one.encode_queries(QUERIES), encoder.encode_queries(QUERIES), strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL)


@pytest.mark.parametrize("family", BI_FAMILIES)
def test_vectors_and_scores_are_colpali_engines(family: str, built) -> None:
    _, encoder, model, processor = built(family)
    pages = tiny_pages(PAGE_SIZES)
    images = [p.image for p in pages]
    ours_p = np.concatenate(encoder.encode_pages(pages))  # (3, dim)
    ours_q = np.concatenate(encoder.encode_queries(QUERIES))  # (3, dim)
    each_p = np.concatenate([_reference(model, processor.process_images([i])) for i in images])
    each_q = np.concatenate([_reference(model, processor.process_queries([q])) for q in QUERIES])
    np.testing.assert_allclose(ours_p, each_p, atol=ATOL)
    np.testing.assert_allclose(ours_q, each_q, atol=ATOL)
    if family == "bipali":
        # As for ColPali (tests/test_conformance.py): a padded PaliGemma batch gets a
        # causal mask unless the text config is marked non-causal, as pagelens does.
        fix_paligemma_attention(model)
    np.testing.assert_allclose(
        ours_p, _reference(model, processor.process_images(images)), atol=ATOL
    )
    ref_q = _reference(model, processor.process_queries(QUERIES))
    np.testing.assert_allclose(ours_q, ref_q, atol=ATOL)
    scores = processor.score_single_vector(
        list(torch.from_numpy(ours_q)), list(torch.from_numpy(ours_p))
    )
    np.testing.assert_allclose(ours_q @ ours_p.T, scores.float().numpy(), atol=ATOL)


@pytest.mark.parametrize("edge", [True, False], ids=["edge", "client"])
@pytest.mark.parametrize("family", ["biqwen2_5", "biidefics3", "bimodernvbert", "bipali"])
def test_a_bi_index_ranks_like_the_dot_product_oracle(family: str, edge: bool, built, tmp_path):
    _, encoder, _, _ = built(family)
    corpus = tmp_path / "pdfs"
    corpus.mkdir()
    for name, prefix in (("a.pdf", "Alpha"), ("b.pdf", "Beta"), ("c.pdf", "Gamma")):
        pf.text_pdf(corpus / name, 3, prefix=f"{prefix} words here")
    render = RenderSettings(dpi=30, batch_pages=2)
    index = Index.open(tmp_path / "index") if edge else Index.open(location=":memory:")
    try:
        index_paths(index, encoder, [corpus], render=render, progress=False)
        info = index.info()
        assert info.vectors_per_page == 1.0
        from pagelens.pipeline.discover import discover
        from pagelens.pipeline.render import probe, render_pages

        vectors = {}
        for doc in discover([corpus]).documents:
            for page in render_pages(doc, probe(doc, render), render):
                vectors[(doc.path, page.page_number)] = encoder.encode_pages([page])[0][0]
        for q, qv in zip(QUERIES, encoder.encode_queries(QUERIES), strict=True):
            oracle = {key: float(v @ qv[0]) for key, v in vectors.items()}
            [hits] = search(index, encoder, [q], k=5, channels=["dense"])
            want = sorted(oracle, key=lambda key: -oracle[key])[:5]
            # Random tiny weights put pages within fp16 resolution of one another (the
            # stored vectors are fp16): the hits must be the oracle's top scores, in
            # order, to that tolerance; tied pages may swap.
            for h in hits:
                assert h.score == pytest.approx(oracle[(h.doc_path, h.page_number)], abs=2e-3)
            assert [h.score for h in hits] == pytest.approx([oracle[k] for k in want], abs=2e-3)
    finally:
        index.close()


def test_bi_checkpoints_get_their_family_and_the_rest_are_refused() -> None:
    for model_type, arch, name in [
        ("paligemma", "BiPali", "bipali"),
        ("qwen2_vl", "BiQwen2", "biqwen2"),
        ("qwen2_5_vl", "BiQwen2_5", "biqwen2_5"),
        ("qwen3_vl", "BiQwen3", "biqwen3"),
        ("qwen3_5", "BiQwen3_5", "biqwen3_5"),
        ("gemma3", "BiGemma3", "bigemma3"),
        ("idefics3", "BiIdefics3", "biidefics3"),
        ("modernvbert", "BiModernVBert", "bimodernvbert"),
    ]:
        family = detect_family({"model_type": model_type, "architectures": [arch]})
        assert family.name == name and family.single and family.head is None
    for model_type, arch in [
        ("paligemma", "BiPaliProj"),  # a projection head BiPali would drop
        ("qwen2_vl", "BiQwen2_5"),  # a class of another backbone
    ]:
        with pytest.raises(EncoderError, match="single-vector"):
            detect_family({"model_type": model_type, "architectures": [arch]})
    multi = detect_family({"model_type": "qwen2_5_vl", "architectures": ["ColQwen2_5"]})
    assert multi.name == "colqwen2_5" and not multi.single


def test_image_page_vectors_are_refused_for_a_bi_family(built) -> None:
    folder = built("biidefics3")[0]
    with pytest.raises(EncoderError, match="page_vectors"):
        load_encoder(str(folder), device="cpu", page_vectors="image")


def test_a_bi_checkpoint_in_a_different_folder_name(built, tmp_path: Path) -> None:
    """The family comes from config.json, never the folder's name."""
    import shutil

    folder = tmp_path / "colqwen2.5-looking-name"
    shutil.copytree(built("biqwen2_5")[0], folder)
    assert load_encoder(str(folder), device="cpu").spec.family == "biqwen2_5"
