"""Single-vector encoders: one vector per page, stored plain with an HNSW graph."""

from __future__ import annotations

import numpy as np
import pytest

import pagelens
from pagelens.encoders.base import EncoderSpec
from pagelens.errors import IndexMismatchError, PagelensError
from pagelens.index import Index
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import search
from pagelens.storage.check import check_index
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=30, batch_pages=2)


class FakeSingle(FakeEncoder):
    """The fake page encoder's vectors averaged into one unit vector per page and query."""

    def __init__(self) -> None:
        super().__init__(model_id="fake-single")
        s = self._spec
        self._spec = EncoderSpec(s.model_id, s.revision, s.dim, s.family, single=True)

    @staticmethod
    def _one(v: np.ndarray) -> np.ndarray:
        m = v.mean(axis=0, keepdims=True)
        return (m / np.linalg.norm(m)).astype(np.float32)

    def encode_pages(self, pages):
        return [self._one(v) for v in super().encode_pages(pages)]

    def encode_queries(self, texts):
        return [self._one(v) for v in super().encode_queries(texts)]


@pytest.fixture(params=["edge", "client"])
def index(request, tmp_path):
    edge = request.param == "edge"
    idx = Index.open(tmp_path / "index") if edge else Index.open(location=":memory:")
    yield idx
    idx.close()


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "pdfs"
    root.mkdir()
    for name, prefix in (("a.pdf", "Alpha"), ("b.pdf", "Beta"), ("c.pdf", "Gamma")):
        pf.text_pdf(root / name, 4, prefix=f"{prefix} words here")
    return root


def test_single_vector_search_is_the_dot_product_oracle_on_every_backend(index, corpus):
    enc = FakeSingle()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    info = index.info()
    assert info.vectors_per_page == 1.0 and info.pooled_vectors_per_page == 0.0
    assert info.bytes_per_page == enc.dim * 2  # one fp16 vector
    queries = ["alpha words", "gamma three", "beta"]
    # the oracle: every page's one vector, dotted with the query's
    from pagelens.pipeline.discover import discover
    from pagelens.pipeline.render import probe, render_pages

    vectors = {}
    for doc in discover([corpus]).documents:
        for page in render_pages(doc, probe(doc, RENDER), RENDER):
            vectors[(doc.path, page.page_number)] = enc.encode_pages([page])[0][0]
    for q, qv in zip(queries, enc.encode_queries(queries), strict=True):
        want = sorted(vectors, key=lambda key: -float(vectors[key] @ qv[0]))[:5]
        for candidates in (None, 200, 12):
            [hits] = search(index, enc, [q], k=5, candidates=candidates, channels=["dense"])
            assert [(h.doc_path, h.page_number) for h in hits] == want
            for h in hits:
                oracle = float(vectors[(h.doc_path, h.page_number)] @ qv[0])
                assert h.score == pytest.approx(oracle, abs=2e-3)  # fp16 storage


def test_a_single_vector_index_checks_clean_and_refuses_a_multi_vector_encoder(tmp_path, corpus):
    with Index.open(tmp_path / "idx") as index:
        index_paths(index, FakeSingle(), [corpus], render=RENDER, progress=False)
    with Index.open(tmp_path / "idx", verify=True) as index:
        assert check_index(index).ok
        with pytest.raises(IndexMismatchError, match="fake-single"):
            search(index, FakeEncoder(model_id="fake-single"), ["alpha"], channels=["dense"])


def test_a_single_vector_encoder_is_no_text_channel(tmp_path, corpus):
    class SingleText(FakeSingle):
        reads = "text"

    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(PagelensError, match="single-vector encoder"):
            index_paths(index, FakeEncoder(), [corpus], text_encoder=SingleText(), progress=False)


def test_minilm_mean_is_sentence_transformers_mean_pooling(tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from pagelens.encoders import load_encoder
    from pagelens.encoders.minilm import _model_folder
    from pagelens.types import Page

    enc = load_encoder("minilm-mean", device="cpu")
    assert enc.spec.single and enc.spec.model_id == "minilm-mean"
    text = "Quarterly revenue grew in every region but Europe."
    folder = _model_folder("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    with torch.inference_mode():
        batch = tokenizer([text], return_tensors="pt")
        hidden = model(**batch).last_hidden_state[0]  # [CLS] ... [SEP]
    want = hidden.mean(0).numpy()
    want /= np.linalg.norm(want)
    page = Page(doc_sha256="x", doc_path="x.pdf", page_number=1, page_count=1, text=text)
    [got] = enc.encode_pages([page])
    [query] = enc.encode_queries([text])
    assert got.shape == query.shape == (1, 384)
    assert np.allclose(got[0], want, atol=1e-5) and np.allclose(query[0], want, atol=1e-5)


def test_minilm_mean_through_the_front_door(tmp_path, corpus):
    with pagelens.open(tmp_path / "idx", model="minilm-mean") as lens:
        lens.add([corpus], progress=False)
    with pagelens.open(tmp_path / "idx") as lens:  # the model comes from the manifest
        [hits] = lens.search(["gamma words"], k=3, channels=["dense"])
        assert hits[0].doc_path == "c.pdf"
        with pytest.raises(IndexMismatchError):
            search(lens.index, pagelens.load_encoder("minilm"), ["q"], channels=["dense"])
