"""Hostile input end to end: no file stops a batch, every file's fate is reported."""

from __future__ import annotations

import numpy as np
import pytest

from pagelens.index import Index
from pagelens.pipeline.images import page_image
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import SearchFilter, search
from pagelens.types import display_path
from tests import hostile
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=20, batch_pages=4)


@pytest.fixture(params=["edge", "client"])
def index(request, tmp_path):
    idx = (
        Index.open(tmp_path / "index")
        if request.param == "edge"
        else Index.open(location=":memory:")
    )
    yield idx
    idx.close()


def _searchable_pages(index, enc, doc_path):
    hits = search(index, enc, ["named page"], k=50, filter=SearchFilter(doc_paths=(doc_path,)))
    return sorted(h.page_number for h in hits[0])


def test_every_hostile_file_is_indexed_or_skipped_with_its_cause(index, tmp_path):
    expected = hostile.write_hostile_corpus(tmp_path / "hostile")
    enc = FakeEncoder()

    report = index_paths(index, enc, [tmp_path / "hostile"], render=RENDER, progress=False)

    skipped = {s.path: s.cause for s in report.skipped}
    failed = {(e.path, e.page_number) for e in report.page_errors}
    for name, want in expected.items():
        shown = display_path(name)
        if want.skip is not None:
            assert want.skip in skipped[shown], (name, skipped.get(shown))
            continue
        assert shown in report.indexed, name
        assert _searchable_pages(index, enc, shown) == [
            n for n in range(1, want.pages + len(want.failed) + 1) if n not in want.failed
        ], name
        assert {n for p, n in failed if p == shown} == set(want.failed), name
    assert len(report.indexed) + len(skipped) == len(expected)

    again = index_paths(index, FakeEncoder(), [tmp_path / "hostile"], render=RENDER, progress=False)
    assert again.indexed == () and len(again.unchanged) == len(report.indexed)


def test_a_password_is_sent_only_to_files_that_need_one(index, tmp_path):
    (tmp_path / "enc").mkdir()
    hostile.write_encrypted(tmp_path / "enc")
    report = index_paths(
        index,
        FakeEncoder(),
        [tmp_path / "enc"],
        render=RenderSettings(dpi=20, password="secret"),
        progress=False,
    )
    assert sorted(report.indexed) == ["locked.pdf", "owner-only.pdf"] and not report.skipped
    assert report.pages == 4


def test_a_name_that_is_not_utf8_is_searchable_deletable_and_renders(index, tmp_path):
    folder = tmp_path / "latin1"
    folder.mkdir()
    hostile.write_bad_names(folder)
    enc = FakeEncoder()
    index_paths(index, enc, [folder], render=RENDER, progress=False)
    shown = "caf\\xe9.pdf"  # each bad byte as \xNN: what info prints and users type

    assert shown in {d.doc_path for d in index.documents()}
    hits = search(index, enc, ["named"], k=2, filter=SearchFilter(doc_paths=(shown,)))[0]
    assert {h.doc_path for h in hits} == {shown}
    assert page_image(hits[0], dpi=20).size[0] > 0  # the raw bytes find the file again
    assert index.delete_document(shown) == 2
    assert shown not in {d.doc_path for d in index.documents()}


class _QwenLikeEncoder(FakeEncoder):
    """Refuses pages beyond 200:1, as Qwen2-VL's processor does."""

    def encode_pages(self, pages):
        for page in pages:
            w, h = page.image.size
            if max(w, h) / min(w, h) > 200:
                raise ValueError(f"absolute aspect ratio must be smaller than 200, got {w / h}")
        return super().encode_pages(pages)


class _NanEncoder(FakeEncoder):
    """Returns NaN vectors for the second page of every document."""

    def encode_pages(self, pages):
        out = super().encode_pages(pages)
        return [
            np.full_like(v, np.nan) if p.page_number == 2 else v
            for p, v in zip(pages, out, strict=True)
        ]


def test_an_encoder_error_on_one_page_costs_only_that_page(index, tmp_path):
    folder = tmp_path / "sizes"
    folder.mkdir()
    (folder / "sliver.pdf").write_bytes(
        hostile.pf.pdf_bytes(["a", "sliver", "c"], sizes=[(612, 792), (14400, 3), (612, 792)])
    )
    report = index_paths(
        index, _QwenLikeEncoder(), [folder], render=RenderSettings(dpi=72), progress=False
    )
    assert report.indexed == ("sliver.pdf",)
    [error] = report.page_errors
    assert error.page_number == 2 and "aspect ratio must be smaller than 200" in error.cause
    assert _searchable_pages(index, FakeEncoder(), "sliver.pdf") == [1, 3]


def test_nan_vectors_never_reach_the_store(index, tmp_path):
    folder = tmp_path / "nan"
    folder.mkdir()
    hostile.pf.text_pdf(folder / "doc.pdf", 3)
    report = index_paths(index, _NanEncoder(), [folder], render=RENDER, progress=False)
    assert [(e.page_number, "not finite" in e.cause) for e in report.page_errors] == [(2, True)]
    hits = search(index, FakeEncoder(), ["page"], k=10, candidates=None)[0]
    assert sorted(h.page_number for h in hits) == [1, 3]
    assert all(np.isfinite(h.score) for h in hits)
