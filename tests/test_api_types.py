"""The Python API takes only the types its signatures say, and a closed index says it is closed."""

from __future__ import annotations

import pytest

import pagelens
from pagelens.errors import IndexClosedError, PagelensError, StoreError
from pagelens.index import Index, hit_from_payload
from pagelens.search import SearchFilter, SearchOptions, search
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder


@pytest.fixture(autouse=True)
def fake_models(monkeypatch):
    from pagelens import lens as lens_module

    monkeypatch.setattr(lens_module, "load_encoder", lambda name, **_: FakeEncoder(model_id=name))


@pytest.fixture(params=["edge", "client"])
def lens(request, tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 2, prefix="Alpha revenue")
    pf.text_pdf(folder / "b.pdf", 1, prefix="Beta")
    if request.param == "edge":
        opened = pagelens.open(tmp_path / "idx", model="fake", text=True)
    else:
        opened = pagelens.open(location=":memory:", model="fake", text=True)
    opened.add([folder], progress=False)
    yield opened
    opened.close()


def test_a_string_where_a_filter_is_wanted_is_refused_by_name(lens):
    with pytest.raises(PagelensError, match=r"filter must be a SearchFilter.*'a\.pdf' \(str\)"):
        search(lens.index, FakeEncoder(model_id="fake"), ["revenue"], filter="a.pdf")
    with pytest.raises(PagelensError, match="filter must be a SearchFilter"):
        lens.search(["revenue"], filter="a.pdf")
    with pytest.raises(PagelensError, match="filter must be a SearchFilter"):
        SearchOptions(filter={"doc_paths": ["a.pdf"]})  # type: ignore[arg-type]


@pytest.mark.parametrize("given", ["a.pdf", b"a.pdf", 7, {"a.pdf"}])
def test_doc_paths_must_be_a_list_of_paths_not_a_string_to_iterate(given):
    with pytest.raises(PagelensError, match="doc_paths must be a list of document paths"):
        SearchFilter(doc_paths=given)
    with pytest.raises(PagelensError, match="doc_paths must hold strings"):
        SearchFilter(doc_paths=["a.pdf", 3])
    with pytest.raises(PagelensError, match="path_prefix must be a string"):
        SearchFilter(path_prefix=["reports"])


def test_a_list_of_paths_still_filters(lens):
    flt = SearchFilter(doc_paths=["a.pdf"])
    assert flt.doc_paths == ("a.pdf",)
    [hits] = lens.search(["revenue"], k=5, filter=flt)
    assert hits and {h.doc_path for h in hits} == {"a.pdf"}


def test_a_closed_lens_and_index_say_they_are_closed(lens):
    index = lens.index
    lens.close()
    for call in (
        lambda: lens.search(["revenue"]),
        lambda: lens.info(),
        lambda: index.info(),
        lambda: index.documents(),
        lambda: search(index, FakeEncoder(model_id="fake"), ["revenue"]),
    ):
        with pytest.raises(IndexClosedError, match="the index is closed; open it again"):
            call()
    lens.close()  # closing twice is harmless


def test_a_closed_index_folder_opens_again(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 1, prefix="Alpha")
    with pagelens.open(tmp_path / "idx", model="fake") as lens:
        lens.add([folder], progress=False)
    with Index.open(tmp_path / "idx") as index:
        assert index.info().pages == 1


@pytest.mark.parametrize(
    ("payload", "cause"),
    [
        ({"kind": "document", "doc_path": "a.pdf", "doc_sha256": "ab"}, "a 'document' point"),
        ({"kind": "pending", "doc_sha256": "ab"}, "a 'pending' point"),
        ({"kind": "page", "doc_path": "a.pdf", "doc_sha256": "ab"}, "missing page_number"),
        ({}, "a None point"),
    ],
)
def test_a_point_that_is_not_a_page_never_becomes_a_hit(payload, cause):
    """Damage can bring back deleted or bookkeeping points as search results."""
    with pytest.raises(StoreError, match=f"should be a page is {cause}"):
        hit_from_payload(payload, score=0.5)
    hit = hit_from_payload(
        {"kind": "page", "doc_path": "a.pdf", "doc_sha256": "ab", "page_number": 2}
    )
    assert (hit.doc_path, hit.page_number) == ("a.pdf", 2)
