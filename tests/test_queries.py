"""Bad queries and filters: one rule for every channel and encoder, a PagelensError naming it."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.errors import PagelensError
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import NoMatchError, SearchFilter, search
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small index with page text (dense + bm25), on qdrant-client's local mode."""
    root = tmp_path_factory.mktemp("q")
    (root / "pdfs").mkdir()
    pf.text_pdf(root / "pdfs" / "a.pdf", 2, prefix="Alpha")
    index = Index.open(location=":memory:")
    enc = FakeEncoder()
    index_paths(
        index,
        enc,
        [root / "pdfs"],
        settings=IndexSettings(text=True),
        render=RenderSettings(dpi=20),
        progress=False,
    )
    yield index, enc
    index.close()


@pytest.mark.parametrize("channels", [("dense",), ("bm25",), ("dense", "bm25")])
@pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
def test_an_empty_query_is_named_on_every_channel(built, channels, bad):
    index, enc = built
    with pytest.raises(PagelensError, match=r"query 2 is empty"):
        search(index, enc, ["alpha", bad], channels=channels)


def test_an_invalid_utf8_query_is_refused(built):
    index, enc = built
    argv_like = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python reads $'caf\xe9'
    with pytest.raises(PagelensError, match=r"query 1 is not valid UTF-8 text \(caf\\xe9\)"):
        search(index, enc, [argv_like])
    with pytest.raises(PagelensError, match="query 1 is not valid UTF-8"):
        search(index, enc, ["\ud800 lone"], channels=("bm25",))


@pytest.mark.parametrize(
    ("queries", "match"),
    [
        ("one string", "queries must be a list of strings, got str"),
        (b"bytes", "queries must be a list of strings, got bytes"),
        (None, "queries must be a list of strings, got NoneType"),
        ([None], "query 1 must be a string, got NoneType"),
        (["ok", 123], "query 2 must be a string, got int"),
        ([b"bytes"], "query 1 must be a string, got bytes"),
    ],
)
def test_queries_of_the_wrong_type_are_refused(built, queries, match):
    index, enc = built
    with pytest.raises(PagelensError, match=match):
        search(index, enc, queries)


@pytest.mark.parametrize("k", [2.5, None, "5", 0, True])
def test_k_must_be_a_whole_number(built, k):
    index, enc = built
    with pytest.raises(PagelensError, match="k must be a whole number >= 1"):
        search(index, enc, ["alpha"], k=k)
    with pytest.raises(PagelensError, match="k must be a whole number >= 1"):
        search(index, enc, ["alpha"], k=k, channels=("dense", "bm25"))


@pytest.mark.parametrize("candidates", [-5, 0, 2.5])
def test_candidates_are_checked_on_every_path(built, candidates):
    index, enc = built
    for channels in [("dense",), ("dense", "bm25")]:
        with pytest.raises(PagelensError, match="candidates"):
            search(index, enc, ["alpha"], candidates=candidates, channels=channels)


class _NanQueries(FakeEncoder):
    def encode_queries(self, texts):
        return [np.full((2, self.dim), np.nan, dtype=np.float32) for _ in texts]


def test_nan_query_vectors_never_reach_the_store(built):
    index, _ = built
    with pytest.raises(PagelensError, match=r"query 1 .*no usable vectors"):
        search(index, _NanQueries(), ["alpha"])


@pytest.mark.parametrize(
    "flt",
    [SearchFilter(doc_paths=("typo.pdf",)), SearchFilter(path_prefix="nowhere")],
)
def test_a_filter_that_names_nothing_says_so(built, flt):
    index, enc = built
    with pytest.raises(NoMatchError, match="no indexed page matches the filter"):
        search(index, enc, ["alpha"], filter=flt)
    assert search(index, enc, ["alpha"], filter=SearchFilter(doc_paths=("a.pdf",)))[0]


def test_minilm_refuses_an_empty_query_in_a_batch(tmp_path):
    from pagelens.encoders import load_encoder

    enc = load_encoder("minilm", device="cpu")
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 2, prefix="Alpha")
    with Index.open(tmp_path / "idx") as index:
        index_paths(index, enc, [folder], progress=False)
        assert search(index, enc, ["alpha"], k=1)[0]
        for channels in [("dense",), ("bm25",), ("dense", "bm25")]:
            with pytest.raises(PagelensError, match="query 2 is empty"):
                search(index, enc, ["alpha", " "], channels=channels)
