"""Documents ranked by their best pages: rank_documents by hand, then through Lens and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pagelens
from pagelens.aggregate import DocumentHit, rank_documents
from pagelens.cli import app
from pagelens.errors import PagelensError
from pagelens.types import Hit
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder


def _hits(*rows: tuple[str, int, float]) -> list[Hit]:
    return [Hit(doc, page, score, doc_sha256=doc * 2) for doc, page, score in rows]


def test_a_document_scores_its_best_page():
    hits = _hits(("b", 1, 0.50), ("a", 3, 0.90), ("b", 7, 0.95), ("a", 1, 0.80), ("c", 2, 0.10))
    docs = rank_documents(hits)
    assert [(d.doc_path, d.score) for d in docs] == [("b", 0.95), ("a", 0.90), ("c", 0.10)]
    assert [h.page_number for h in docs[0].pages] == [7, 1]  # best first
    assert [h.page_number for h in docs[1].pages] == [3, 1]
    assert docs[0].doc == "b" and docs[0].doc_sha256 == "bb"


def test_many_middling_pages_do_not_beat_one_good_page():
    """Max, not sum: a long document of weak pages ranks below one strong page."""
    weak = [("long", p, 0.4) for p in range(1, 21)]
    docs = rank_documents(_hits(*weak, ("short", 1, 0.6)))
    assert [d.doc_path for d in docs] == ["short", "long"]


def test_per_document_keeps_the_best_pages_and_ties_are_stable():
    hits = _hits(("a", 4, 0.5), ("a", 2, 0.7), ("a", 9, 0.5), ("a", 1, 0.2), ("b", 1, 0.7))
    docs = rank_documents(hits, per_document=2)
    assert [d.doc_path for d in docs] == ["a", "b"]  # tie at 0.7: by path
    assert [(h.page_number, h.score) for h in docs[0].pages] == [(2, 0.7), (4, 0.5)]
    assert [len(d.pages) for d in rank_documents(hits, per_document=1)] == [1, 1]


def test_a_page_listed_twice_counts_once_at_its_best():
    docs = rank_documents(_hits(("a", 1, 0.3), ("a", 1, 0.8), ("a", 2, 0.5)))
    assert [(h.page_number, h.score) for h in docs[0].pages] == [(1, 0.8), (2, 0.5)]


def test_no_hits_no_documents_and_bad_per_document():
    assert rank_documents([]) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(PagelensError, match="per_document"):
            rank_documents(_hits(("a", 1, 1.0)), per_document=bad)  # type: ignore[arg-type]


def test_to_dict_is_plain_data():
    (doc,) = rank_documents(_hits(("a", 2, 0.5)))
    assert json.loads(json.dumps(doc.to_dict())) == {
        "doc_path": "a",
        "doc_sha256": "aa",
        "score": 0.5,
        "source": None,
        "pages": [{"page_number": 2, "score": 0.5, "channels": []}],
    }


@pytest.fixture
def three_docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An index of three documents made with the fake encoder (BM25 on, no model)."""
    from pagelens import lens as lens_module

    monkeypatch.setattr(lens_module, "load_encoder", lambda name, **kw: FakeEncoder(model_id=name))
    folder = tmp_path / "pdfs"
    folder.mkdir()
    (folder / "alpha.pdf").write_bytes(
        pf.pdf_bytes(["revenue revenue revenue", "staff", "revenue grew"])
    )
    (folder / "beta.pdf").write_bytes(pf.pdf_bytes(["weather", "revenue once"]))
    (folder / "gamma.pdf").write_bytes(pf.pdf_bytes(["nothing here", "at all"]))
    with pagelens.open(tmp_path / "idx", model="fake-model", text=True) as lens:
        lens.add([folder], progress=False)
    return tmp_path / "idx"


def test_search_documents_aggregates_the_page_search(three_docs):
    with pagelens.open(three_docs) as lens:
        docs = lens.search_documents("revenue", k=2, channels=["bm25"])
        (pages,) = lens.search(["revenue"], channels=["bm25"], k=100)
        with pytest.raises(PagelensError, match="pages"):
            lens.search_documents("revenue", pages=0, channels=["bm25"])
    assert all(isinstance(d, DocumentHit) for d in docs) and len(docs) == 2
    assert [d.doc_path for d in docs] == ["alpha.pdf", "beta.pdf"]
    for d in docs:  # each document's score is its best page's in the page search
        best = max(h.score for h in pages if h.doc_path == d.doc_path)
        assert d.score == pytest.approx(best)
        assert [h.page_number for h in d.pages] == [
            h.page_number for h in pages if h.doc_path == d.doc_path
        ][:3]


def test_cli_search_documents(three_docs, monkeypatch):
    from pagelens import lens as lens_module

    monkeypatch.setattr(lens_module, "load_encoder", lambda name, **kw: FakeEncoder(model_id=name))
    runner = CliRunner()
    args = ["search", "revenue", "--index", str(three_docs), "--channels", "bm25", "--documents"]
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    lines = plain.output.splitlines()
    assert lines[0] == "revenue" and "alpha.pdf" in lines[1] and "beta.pdf" in lines[2]
    assert "pages 1 (" in lines[1] and "3 (" in lines[1]
    out = runner.invoke(app, [*args, "--json", "-k", "1"])
    assert out.exit_code == 0, out.output
    (row,) = json.loads(out.output)["results"]
    assert row["query"] == "revenue" and [d["doc_path"] for d in row["documents"]] == ["alpha.pdf"]


def test_docstring_examples_run():
    import doctest

    import pagelens.aggregate
    import pagelens.explain

    for module in (pagelens.aggregate, pagelens.explain):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__
    assert pagelens.DocumentHit is pagelens.aggregate.DocumentHit
    assert issubclass(pagelens.SourceGoneError, pagelens.InputError)
