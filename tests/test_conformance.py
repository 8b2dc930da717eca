"""Conformance with colpali-engine itself, on every tiny family (offline, CPU).

The reference is colpali-engine used as its README shows: the family's processor and
model loaded with their own ``from_pretrained``, ``model(**processor.process_images(...))``
and ``model(**processor.process_queries(...))``, rows kept where the attention mask is
set, and ``processor.score_multi_vector`` for scores. pagelens must return those rows
(re-normalised in float32) and score and rank pages as colpali-engine does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

pytest.importorskip("colpali_engine")

import torch  # noqa: E402

from pagelens.encoders.colpali import (  # noqa: E402
    fix_paligemma_attention,
)
from pagelens.scoring import maxsim, maxsim_matrix, rank  # noqa: E402
from pagelens.types import MultiVector  # noqa: E402
from tests.tiny_models import (  # noqa: E402
    FAMILIES,
    build_tiny_checkpoint,
    load_with_reference,
    tiny_pages,
)

# Sizes that give pages of different token counts (Qwen, Idefics3), queries of
# different lengths: both batches are padded.
PAGE_SIZES = [(100, 140), (60, 60), (200, 40)]
QUERIES = ["what is the total revenue in 2020", "fox", "which table shows annual sales growth"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, ...]]:
    """``built(family) -> (pagelens encoder, colpali-engine model, processor)``, cached."""
    root = tmp_path_factory.mktemp("conformance")
    cache: dict[str, tuple[Any, ...]] = {}

    def get(family: str) -> tuple[Any, ...]:
        if family not in cache:
            cache[family] = load_with_reference(build_tiny_checkpoint(family, root / family))
        return cache[family]

    return get


def _reference(model: Any, inputs: Any) -> list[MultiVector]:
    """colpali-engine's vectors: the model's output rows where the attention mask is set."""
    with torch.inference_mode():
        out = model(**inputs)  # (batch, seq, dim), L2-normalised, padding rows zeroed
    keep = inputs["attention_mask"].bool()
    return [o[k].float().numpy() for o, k in zip(out, keep, strict=True)]


def _assert_rows(ours: list[MultiVector], ref: list[MultiVector]) -> None:
    assert [o.shape for o in ours] == [r.shape for r in ref]
    for o, r in zip(ours, ref, strict=True):
        r = r / np.linalg.norm(r, axis=1, keepdims=True)  # pagelens re-normalises in float32
        np.testing.assert_allclose(o, r, atol=ATOL)


def _reference_per_item(model: Any, process: Callable[[list[Any]], Any], items: list[Any]):
    return [_reference(model, process([item]))[0] for item in items]


@pytest.mark.parametrize("family", FAMILIES)
def test_pages_are_colpali_engines_rows(family: str, built) -> None:
    encoder, model, processor = built(family)
    pages = tiny_pages(PAGE_SIZES)
    ours = encoder.encode_pages(pages)
    images = [p.image for p in pages]
    # Each page alone: no padding, so no attention-mask question at all.
    _assert_rows(ours, _reference_per_item(model, processor.process_images, images))
    # The same pages in one padded batch, as colpali-engine batches them.
    _assert_rows(ours, _reference(model, processor.process_images(images)))


@pytest.mark.parametrize("family", FAMILIES)
def test_queries_are_colpali_engines_rows(family: str, built) -> None:
    encoder, model, processor = built(family)
    ours = encoder.encode_queries(QUERIES)
    _assert_rows(ours, _reference_per_item(model, processor.process_queries, QUERIES))
    batched = _reference(model, processor.process_queries(QUERIES))
    if family == "colpali":
        # The one intended difference. PaliGemma attends bidirectionally over the
        # prompt; under transformers 5 an unpadded input gets no mask (bidirectional),
        # but a padded batch gets a causal one, so colpali-engine's query vectors depend
        # on what a query was batched with. pagelens marks the text config non-causal
        # (fix_paligemma_attention): every query gets its unpadded vectors (checked
        # above). With that one change, colpali-engine's own batch agrees too.
        lengths = {len(v) for v in batched}
        assert len(lengths) > 1  # the batch was padded
        assert any(
            not np.allclose(o, b / np.linalg.norm(b, axis=1, keepdims=True), atol=ATOL)
            for o, b in zip(ours, batched, strict=True)
        )
        fix_paligemma_attention(model)
        batched = _reference(model, processor.process_queries(QUERIES))
    _assert_rows(ours, batched)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_and_ranks_match_score_multi_vector(family: str, built) -> None:
    encoder, _, processor = built(family)
    pages = encoder.encode_pages(tiny_pages(PAGE_SIZES + [(80, 120), (40, 90)], seed=5))
    queries = encoder.encode_queries(QUERIES)
    qs = [torch.from_numpy(q) for q in queries]
    ps = [torch.from_numpy(p) for p in pages]

    # Page by page (no padding of pages): the same scores and the same ranking.
    theirs = torch.cat([processor.score_multi_vector(qs, [p], device="cpu") for p in ps], dim=1)
    ours = maxsim_matrix(queries, pages)
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-4)
    for qi, q in enumerate(queries):
        for pi, p in enumerate(pages):
            assert maxsim(q, p) == pytest.approx(float(theirs[qi, pi]), abs=1e-4)
    order = np.argsort(-theirs.numpy(), axis=1, kind="stable")
    assert [[i for i, _ in hits] for hits in rank(queries, pages, k=len(pages))] == order.tolist()

    # All pages at once, colpali-engine zero-pads the shorter pages: a query token whose
    # best similarity on such a page is negative scores 0 there instead (STYLE.md's
    # zero-padding anti-pattern, which pagelens masks with -inf). That is the only
    # difference: colpali-engine's batch equals pagelens' maxima clamped at 0 on the
    # padded pages (the tiny models never produce a negative best match; the hand-made
    # case below does).
    batched = processor.score_multi_vector(qs, ps, device="cpu").numpy()
    longest = max(len(p) for p in pages)
    expected = np.empty_like(ours)
    for qi, q in enumerate(queries):
        for pi, p in enumerate(pages):
            best = (q @ p.T).max(axis=1)  # (m,)
            expected[qi, pi] = (np.maximum(best, 0) if len(p) < longest else best).sum()
    np.testing.assert_allclose(batched, expected, atol=1e-4)


def test_the_zero_padding_difference_on_a_hand_made_case() -> None:
    """Where colpali-engine and pagelens part: a query token with no positive match.

    (The tiny models' vectors never hit it: every best similarity there is positive.)
    """
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    query = np.array([[1.0, 0.0]], dtype=np.float32)  # (1, 2)
    short = np.array([[-1.0, 0.0]], dtype=np.float32)  # best match -1
    long = np.array([[-1.0, 0.0], [-0.6, 0.8]], dtype=np.float32)  # best match -0.6
    theirs = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(query)], [torch.from_numpy(short), torch.from_numpy(long)], device="cpu"
    )
    # colpali-engine pads the short page with a zero row: its score becomes 0, above the
    # long page's true -0.6; pagelens keeps -1 and ranks the long page first.
    np.testing.assert_allclose(theirs.numpy(), [[0.0, -0.6]], atol=1e-6)
    np.testing.assert_allclose(maxsim_matrix([query], [short, long]), [[-1.0, -0.6]], atol=1e-6)
    assert [i for i, _ in rank([query], [short, long], k=2)[0]] == [1, 0]
    # Scored alone, the short page gets its true score from colpali-engine too.
    alone = BaseVisualRetrieverProcessor.score_multi_vector(
        [torch.from_numpy(query)], [torch.from_numpy(short)], device="cpu"
    )
    assert float(alone[0, 0]) == pytest.approx(-1.0)
