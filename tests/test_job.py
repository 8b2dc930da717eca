"""The indexing job end to end with a fake encoder: incremental runs, bad input, resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pagelens.errors import IndexMismatchError, PagelensError
from pagelens.index import Index, IndexSettings
from pagelens.pipeline import job
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.overlap import PipelineSettings
from pagelens.pipeline.render import RenderSettings
from pagelens.search import SearchFilter, search
from pagelens.types import Document
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=30, batch_pages=2)


def _open(kind, tmp_path):
    if kind == "edge":
        return Index.open(tmp_path / "index")
    return Index.open(location=":memory:")


@pytest.fixture(params=["edge", "client"])
def index(request, tmp_path):
    idx = _open(request.param, tmp_path)
    yield idx
    idx.close()


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "pdfs"
    (root / "sub").mkdir(parents=True)
    pf.text_pdf(root / "a.pdf", 3, prefix="Alpha")
    pf.text_pdf(root / "sub" / "b.pdf", 2, prefix="Beta")
    return root


def _page_ids(index):

    return sorted((p["doc_path"], p["page_number"]) for p in index.pages())


def test_index_then_search(index, corpus):
    enc = FakeEncoder()
    report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    assert sorted(report.indexed) == ["a.pdf", "sub/b.pdf"]
    assert report.pages == 5 and not report.skipped
    info = index.info()
    assert (info.documents, info.pages) == (2, 5)
    # 64 cells pooled by 3: at most 22 vectors (fewer: blank cells are identical vectors)
    assert 1 <= info.vectors_per_page <= 22
    # the compact layout: rerank vectors at 8 bits, candidate and coarse ones at 4, dim 16
    assert 1 <= info.coarse_vectors_per_page <= info.pooled_vectors_per_page
    first_stage = info.pooled_vectors_per_page + info.coarse_vectors_per_page
    want = (info.vectors_per_page + first_stage / 2) * 16
    assert info.bytes_per_page == pytest.approx(want)
    hits = search(index, enc, ["alpha page", "beta"], k=3)
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score
    hit = hits[0][0]
    assert hit.page_id == f"{hit.doc_path}#{hit.page_number}"
    only_b = search(index, enc, ["x"], k=5, filter=SearchFilter(doc_paths=("sub/b.pdf",)))[0]
    assert {h.doc_path for h in only_b} == {"sub/b.pdf"} and len(only_b) == 2
    under_sub = search(index, enc, ["x"], k=5, filter=SearchFilter(path_prefix="sub"))[0]
    assert {h.doc_path for h in under_sub} == {"sub/b.pdf"}


def test_two_stage_equals_exact_through_the_api(index, corpus):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    queries = ["alpha", "beta one", "page three"]
    exact = search(index, enc, queries, k=5, candidates=None)
    two = search(index, enc, queries, k=5, candidates=5)
    for e, t in zip(exact, two, strict=False):
        # the same pages with the same scores (the fake's pages tie, so order may not)
        assert {h.page_id: h.score for h in e} == pytest.approx({h.page_id: h.score for h in t})
        assert [h.score for h in e] == pytest.approx([h.score for h in t])


def test_rerun_is_incremental(index, corpus):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    seen = enc.pages_seen
    again = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    assert again.indexed == () and sorted(again.unchanged) == ["a.pdf", "sub/b.pdf"]
    assert enc.pages_seen == seen  # nothing re-encoded
    assert index.info().pages == 5 and len(_page_ids(index)) == 5


def test_changed_document_replaces_old_pages(index, corpus):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    pf.text_pdf(corpus / "a.pdf", 4, prefix="Gamma")  # same path, new bytes, 4 pages
    report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    assert report.indexed == ("a.pdf",) and len(report.replaced) == 1
    assert index.info().pages == 6
    assert _page_ids(index).count(("a.pdf", 4)) == 1 and len(_page_ids(index)) == 6


def test_prune_and_move(index, corpus):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    (corpus / "sub" / "b.pdf").rename(corpus / "b-moved.pdf")
    seen = enc.pages_seen
    report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    assert enc.pages_seen == seen  # moved, not re-encoded
    assert {r.doc_path for r in index.documents()} == {"a.pdf", "b-moved.pdf"}
    assert ("b-moved.pdf", 2) in _page_ids(index)
    (corpus / "a.pdf").unlink()
    report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    assert report.pruned == ()  # without --prune nothing is removed
    report = index_paths(index, enc, [corpus], render=RENDER, prune=True, progress=False)
    assert report.pruned == ("a.pdf",)
    assert index.info().pages == 2 and len(_page_ids(index)) == 2


def test_bad_files_are_skipped_and_nothing_indexed_is_lost(index, corpus, tmp_path):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    bad = corpus / "bad"
    bad.mkdir()
    pf.empty_file(bad / "empty.pdf")
    pf.truncated_pdf(bad / "truncated.pdf")
    pf.not_a_pdf(bad / "text.pdf")
    pf.encrypted_pdf(bad / "locked.pdf")
    pf.broken_page_pdf(bad / "broken.pdf", 3)
    pf.text_pdf(bad / "good.pdf", 1, prefix="Fine")
    report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
    causes = {s.path: s.cause for s in report.skipped}
    assert set(causes) == {
        "bad/empty.pdf",
        "bad/truncated.pdf",
        "bad/text.pdf",
        "bad/locked.pdf",
    }
    assert "password" in causes["bad/locked.pdf"]
    # one unloadable page costs that page, not the document: its good pages are kept
    assert [(e.path, e.page_number) for e in report.page_errors] == [("bad/broken.pdf", 3)]
    assert "cannot load" in report.page_errors[0].cause
    assert report.indexed == ("bad/broken.pdf", "bad/good.pdf")
    assert index.info().pages == 9
    hits = search(index, enc, ["page"], k=20, filter=SearchFilter(doc_paths=("bad/broken.pdf",)))
    assert sorted(h.page_number for h in hits[0]) == [1, 2]


def test_password_unlocks_an_encrypted_pdf(index, tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    pf.encrypted_pdf(folder / "locked.pdf", 2, password="secret")
    wrong = index_paths(
        index,
        FakeEncoder(),
        [folder],
        render=RenderSettings(dpi=30, password="nope"),
        progress=False,
    )
    assert "wrong password" in wrong.skipped[0].cause
    ok = index_paths(
        index,
        FakeEncoder(),
        [folder],
        render=RenderSettings(dpi=30, password="secret"),
        progress=False,
    )
    assert ok.indexed == ("locked.pdf",) and ok.pages == 2


def test_encoder_mismatch_is_refused(index, corpus):
    index_paths(index, FakeEncoder(), [corpus], render=RENDER, progress=False)
    other = FakeEncoder(model_id="another-model")
    with pytest.raises(IndexMismatchError, match="another-model"):
        index_paths(index, other, [corpus], render=RENDER, progress=False)
    with pytest.raises(IndexMismatchError, match="refusing encoder"):
        search(index, other, ["q"])
    with pytest.raises(IndexMismatchError, match="pool_factor=3"):
        index_paths(
            index,
            FakeEncoder(),
            [corpus],
            settings=IndexSettings(pool_factor=2),
            render=RENDER,
            progress=False,
        )
    assert index.info().pages == 5


def test_search_on_empty_index_is_a_clear_error(index):
    with pytest.raises(PagelensError, match="empty"):
        search(index, FakeEncoder(), ["q"])


class _Interrupt(Exception):
    pass


class _FailingEncoder(FakeEncoder):
    """Dies (like Ctrl-C) once it has encoded ``limit`` pages."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def encode_pages(self, pages):
        if self.pages_seen + len(pages) > self.limit:
            raise KeyboardInterrupt
        return super().encode_pages(pages)


def test_interrupted_run_resumes_without_duplicates(tmp_path, corpus):
    pf.text_pdf(corpus / "long.pdf", 7, prefix="Long")
    with Index.open(tmp_path / "idx") as index:
        failing = _FailingEncoder(limit=6)
        with pytest.raises(KeyboardInterrupt):
            index_paths(index, failing, [corpus], render=RENDER, progress=False)
        assert 0 < failing.pages_seen <= 6
    with Index.open(tmp_path / "idx") as index:
        committed_before = {d.doc_path for d in index.documents()}
        enc = FakeEncoder()
        report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
        assert set(report.indexed) | committed_before == {"a.pdf", "sub/b.pdf", "long.pdf"}
        assert enc.pages_seen == 12 - failing.pages_seen  # only the pages not stored before
        assert index.info().pages == 12
        ids = _page_ids(index)
        assert len(ids) == len(set(ids)) == 12


def _interrupt_mid_document(tmp_path, corpus):
    """Index ``corpus`` with long.pdf (7 pages) cut off after its 4th page."""
    pf.text_pdf(corpus / "long.pdf", 7, prefix="Long")
    with Index.open(tmp_path / "idx") as index:
        # a.pdf (3) and long.pdf come first: the interrupt falls inside long.pdf
        with pytest.raises(KeyboardInterrupt):
            index_paths(index, _FailingEncoder(limit=7), [corpus], render=RENDER, progress=False)
        assert "long.pdf" not in {d.doc_path for d in index.documents()}
        assert any(d == "long.pdf" for d, _ in _page_ids(index))  # pages left behind


def _no_stale_pages(index):
    """Every stored page belongs to a committed document, and the counts agree."""
    docs = {d.doc_sha256: d for d in index.documents()}

    pages = list(index.pages())
    assert {p["doc_sha256"] for p in pages} <= set(docs)
    assert all(p["doc_path"] == docs[p["doc_sha256"]].doc_path for p in pages)
    assert len(pages) == sum(d.page_count for d in docs.values()) == index.info().pages


def test_interrupted_then_changed_document_leaves_no_stale_pages(tmp_path, corpus):
    _interrupt_mid_document(tmp_path, corpus)
    pf.text_pdf(corpus / "long.pdf", 5, prefix="Changed")
    with Index.open(tmp_path / "idx") as index:
        report = index_paths(index, FakeEncoder(), [corpus], render=RENDER, progress=False)
        assert report.removed_incomplete == ("long.pdf",)
        _no_stale_pages(index)
        assert index.info().pages == 3 + 2 + 5
        hits = search(
            index, FakeEncoder(), ["long"], k=20, filter=SearchFilter(doc_paths=("long.pdf",))
        )
        assert sorted(h.page_number for h in hits[0]) == [1, 2, 3, 4, 5]


def test_interrupted_then_deleted_document_is_removed(tmp_path, corpus):
    _interrupt_mid_document(tmp_path, corpus)
    (corpus / "long.pdf").unlink()
    with Index.open(tmp_path / "idx") as index:
        report = index_paths(
            index, FakeEncoder(), [corpus], render=RENDER, prune=True, progress=False
        )
        assert report.removed_incomplete == ("long.pdf",)
        _no_stale_pages(index)
        hits = search(index, FakeEncoder(), ["long"], k=20)[0]
        assert all(h.doc_path != "long.pdf" for h in hits)


def test_interrupted_then_renamed_document_is_completed_under_its_new_path(tmp_path, corpus):
    _interrupt_mid_document(tmp_path, corpus)
    (corpus / "long.pdf").rename(corpus / "sub" / "renamed.pdf")
    with Index.open(tmp_path / "idx") as index:
        enc = FakeEncoder()
        report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
        assert "sub/renamed.pdf" in report.indexed and report.removed_incomplete == ()
        assert enc.pages_seen < 7  # the stored pages were kept, not encoded again
        _no_stale_pages(index)
        only = SearchFilter(doc_paths=("sub/renamed.pdf",))
        hits = search(index, enc, ["long"], k=20, filter=only)[0]
        assert sorted(h.page_number for h in hits) == list(range(1, 8))


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from pagelens.index import Index
    from pagelens.pipeline.job import index_paths
    from pagelens.pipeline.render import RenderSettings
    from tests.fakes import FakeEncoder

    class Slow(FakeEncoder):
        def encode_pages(self, pages):
            out = super().encode_pages(pages)
            print("encoded", self.pages_seen, flush=True)
            time.sleep(0.3)
            return out

    index = Index.open({index!r})
    render = RenderSettings(dpi=30, batch_pages=2)
    index_paths(index, Slow(), [{corpus!r}], render=render, progress=False)
    print("done", flush=True)
    """
)


def test_kill_9_mid_run_then_rerun_completes(tmp_path, corpus):
    pf.text_pdf(corpus / "long.pdf", 9, prefix="Long")
    root = str(Path(__file__).resolve().parents[1])
    script = CHILD.format(root=root, index=str(tmp_path / "idx"), corpus=str(corpus))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.startswith("encoded") and int(line.split()[1]) >= 6:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with Index.open(tmp_path / "idx") as index:
        stored = index.count_pages()
        assert stored < 14
        enc = FakeEncoder()
        index_paths(index, enc, [corpus], render=RENDER, progress=False)
        # what the killed run stored was kept (pooling and storing run behind the
        # encoder, so how much that is depends on timing)
        assert enc.pages_seen == 14 - stored
        assert index.info().pages == 14
        ids = _page_ids(index)
        assert len(ids) == len(set(ids)) == 14


def test_hit_page_image_is_rerendered_and_checked(tmp_path, corpus):
    from pagelens.errors import InputError
    from pagelens.pipeline.images import page_image

    enc = FakeEncoder()
    with Index.open(tmp_path / "idx") as index:
        index_paths(index, enc, [corpus], render=RENDER, progress=False)
        hit = search(index, enc, ["alpha"], k=1, filter=SearchFilter(doc_paths=("a.pdf",)))[0][0]
    image = page_image(hit, dpi=36)
    assert image.mode == "RGB" and image.size == (306, 396)  # letter at 36 dpi
    pf.text_pdf(corpus / "a.pdf", 3, prefix="Changed")
    with pytest.raises(InputError, match="changed since it was indexed"):
        page_image(hit)
    (corpus / "a.pdf").unlink()
    with pytest.raises(InputError, match="no longer exists"):
        page_image(hit)


def _text_corpus(tmp_path):
    root = tmp_path / "texts"
    root.mkdir()
    # lines of over 20 letters: shorter text layers count as none (see TextSettings.min_chars)
    money = ["annual revenue grew in europe", "staff and hiring in the company"]
    misc = ["weather report for the season", "europe offices and their addresses"]
    (root / "money.pdf").write_bytes(pf.pdf_bytes(money))
    (root / "misc.pdf").write_bytes(pf.pdf_bytes(misc))
    pf.image_pdf(root / "scan.pdf", 1)  # no text layer: OCR or nothing
    return root


def test_text_channel_bm25_and_hybrid(index, tmp_path):
    from pagelens.index import IndexSettings

    root = _text_corpus(tmp_path)
    enc = FakeEncoder()
    index_paths(
        index, enc, [root], settings=IndexSettings(text=True), render=RENDER, progress=False
    )
    (bm25,) = search(index, enc, ["revenue"], k=3, channels=("bm25",))
    assert [h.page_id for h in bm25] == ["money.pdf#1"]  # only that page has the word
    assert bm25[0].channels == ("bm25",) and "revenue" in bm25[0].payload["text"]
    (hybrid,) = search(index, enc, ["europe revenue"], k=5, channels=("dense", "bm25"))
    assert {"money.pdf#1", "misc.pdf#2"} <= {h.page_id for h in hybrid}
    assert all(h.channels for h in hybrid)
    assert any("bm25" in h.channels and "dense" in h.channels for h in hybrid)
    (dbsf,) = search(index, enc, ["europe"], k=5, channels=("dense", "bm25"), fusion="dbsf")
    assert len(dbsf) == 5


def test_bm25_needs_text_and_bad_channel_names(index, corpus):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    with pytest.raises(PagelensError, match="no page text"):
        search(index, enc, ["q"], channels=("bm25",))
    with pytest.raises(PagelensError, match="channels must be among"):
        search(index, enc, ["q"], channels=("visual",))


def test_text_encoder_skips_rendering_and_stores_text(index, tmp_path):
    from pagelens.pipeline.text import TextSettings
    from tests.fakes import FakeTextEncoder

    root = _text_corpus(tmp_path)
    enc = FakeTextEncoder()
    report = index_paths(
        index, enc, [root], render=RENDER, text=TextSettings(ocr="never"), progress=False
    )
    assert enc.images_seen == 0 and report.pages == 5
    assert index.manifest.settings.text  # forced on for a text encoder
    (hits,) = search(index, enc, ["staff hiring"], k=1)
    assert hits[0].page_id == "money.pdf#2"
    # the scanned page has no text (OCR off): stored, counted, never found by vectors
    assert index.info().pages == 5
    assert all(h.doc_path != "scan.pdf" for h in search(index, enc, ["scan"], k=5)[0])


def test_visual_and_text_channels_in_one_index(index, tmp_path):
    """A second, text encoder is a channel of the same index, searched like the first."""
    from pagelens.pipeline.text import TextSettings
    from pagelens.storage.base import PayloadFilter
    from pagelens.storage.layout import TEXT_PAGES
    from tests.fakes import FakeTextEncoder

    root = _text_corpus(tmp_path)
    enc, text_enc = FakeEncoder(), FakeTextEncoder(dim=8)  # another dimension than the visual
    index_paths(
        index,
        enc,
        [root],
        render=RENDER,
        text=TextSettings(ocr="never"),
        text_encoder=text_enc,
        progress=False,
    )
    assert enc.pages_seen == 5 and index.manifest.settings.text  # rendered, and text kept
    assert index.manifest.text_encoder == text_enc.spec
    info = index.info()
    assert info.pages == 5 and info.text_vectors_per_page > 0

    # the text channel ranks exactly as an index (same backend) of the text encoder alone
    edge = not index.location.startswith(":memory:")
    alone = Index.open(tmp_path / "alone") if edge else Index.open(location=":memory:")
    index_paths(
        alone, text_enc, [root], render=RENDER, text=TextSettings(ocr="never"), progress=False
    )
    queries = ["staff hiring", "europe offices", "weather season"]
    for candidates in (None, 200):
        got = search(index, enc, queries, k=4, channels=("text",), text_encoder=text_enc,
                     candidates=candidates)  # fmt: skip
        want = search(alone, text_enc, queries, k=4, candidates=candidates, channels=["dense"])
        for g, w in zip(got, want, strict=True):
            assert [h.page_id for h in g] == [h.page_id for h in w]
            assert [h.score for h in g] == pytest.approx([h.score for h in w], rel=1e-5)
            assert all(h.channels == ("text",) for h in g)
    alone.close()

    # the scanned page (no text, OCR off) has visual vectors and no text-channel vectors
    scan = next(iter(index.pages(PayloadFilter(doc_paths=("scan.pdf",)))))
    assert scan["vectors"] > 0 and scan["text_vectors"] == 0
    (hits,) = search(index, enc, ["scan"], k=5, channels=("text",), text_encoder=text_enc)
    assert all(h.doc_path != "scan.pdf" for h in hits)
    assert TEXT_PAGES == "text_pages"

    # three channels fused in one query; each hit names the channels that found it
    (fused,) = search(
        index,
        enc,
        ["annual revenue europe"],
        k=5,
        channels=("dense", "text", "bm25"),
        fusion="rrf",
        weights={"dense": 0.0},  # the fake visual channel ranks noise: silence it
        text_encoder=text_enc,
    )
    assert fused[0].page_id == "money.pdf#1"  # first for both text channels
    assert set(fused[0].channels) == {"dense", "text", "bm25"}
    assert all(set(h.channels) <= {"dense", "text", "bm25"} and h.channels for h in fused)


def test_text_channel_is_fixed_with_the_index(index, tmp_path):
    from pagelens.pipeline.text import TextSettings
    from tests.fakes import FakeTextEncoder

    root = _text_corpus(tmp_path)
    enc, text_enc = FakeEncoder(), FakeTextEncoder(dim=8)
    text = TextSettings(ocr="never")
    with pytest.raises(PagelensError, match="reads page images"):
        index_paths(index, enc, [root], render=RENDER, text_encoder=FakeEncoder(), progress=False)
    index_paths(index, enc, [root], render=RENDER, text=text, text_encoder=text_enc, progress=False)
    with pytest.raises(IndexMismatchError, match="this run has none"):
        index_paths(index, enc, [root], render=RENDER, text=text, progress=False)
    other = FakeTextEncoder(dim=4)
    with pytest.raises(IndexMismatchError, match="text encoder"):
        index_paths(
            index, enc, [root], render=RENDER, text=text, text_encoder=other, progress=False
        )
    with pytest.raises(PagelensError, match="needs the index's text encoder 'fake-text'"):
        search(index, enc, ["q"], channels=("text",))
    with pytest.raises(IndexMismatchError, match="refusing text encoder"):
        search(index, enc, ["q"], channels=("text",), text_encoder=other)


def test_text_channel_needs_an_index_with_one(index, corpus):
    from tests.fakes import FakeTextEncoder

    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)
    with pytest.raises(PagelensError, match="has no text channel"):
        search(index, enc, ["q"], channels=("text",), text_encoder=FakeTextEncoder())
    with pytest.raises(IndexMismatchError, match="no text encoder"):
        index_paths(
            index, enc, [corpus], render=RENDER, text_encoder=FakeTextEncoder(), progress=False
        )


def test_text_cache_serves_a_second_index(tmp_path, monkeypatch):
    """Page texts (and OCR) are read once for every index of the same files."""
    import pagelens.pipeline.stages as stages
    from pagelens.pipeline.text import PageText, TextCache, TextSettings
    from tests.fakes import FakeTextEncoder

    root = _text_corpus(tmp_path)
    calls = []
    real = stages.extract_text

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(stages, "extract_text", counting)
    cache, text = TextCache(tmp_path / "texts"), TextSettings(ocr="never")
    results = []
    for name in ("one", "two"):
        with Index.open(tmp_path / name) as idx:
            index_paths(idx, FakeTextEncoder(), [root], render=RENDER, text=text, text_cache=cache)
            results.append(search(idx, FakeTextEncoder(), ["staff hiring", "europe"], k=3))
    assert len(calls) == 3  # three documents, read for the first index only
    assert [[h.page_id for h in q] for q in results[0]] == [
        [h.page_id for h in q] for q in results[1]
    ]

    # other OCR settings are other texts: read again
    with Index.open(tmp_path / "three") as idx:
        other = TextSettings(ocr="never", min_chars=5)
        index_paths(idx, FakeTextEncoder(), [root], render=RENDER, text=other, text_cache=cache)
    assert len(calls) == 6

    # a page read with an error is not kept, so it is retried; a broken file is a miss
    sha = "0" * 64
    cache.put(sha, text, [PageText(1, "", "none", error="timed out")])
    assert cache.get(sha, text) is None
    cache.put(sha, text, [PageText(1, "words", "layer")])
    assert cache.get(sha, text) == [PageText(1, "words", "layer")]
    next((tmp_path / "texts").glob(f"{sha}-*.json")).write_text("{not json")
    assert cache.get(sha, text) is None


def test_an_unwritable_text_cache_is_reported_and_indexing_goes_on(tmp_path, caplog):
    from pagelens.pipeline.text import TextCache, TextSettings
    from tests.fakes import FakeTextEncoder

    root = _text_corpus(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    cache = TextCache(blocker / "texts")
    with Index.open(tmp_path / "idx") as idx:
        report = index_paths(
            idx,
            FakeTextEncoder(),
            [root],
            render=RENDER,
            text=TextSettings(ocr="never"),
            text_cache=cache,
            progress=False,
        )
        assert len(report.indexed) == 3 and not report.skipped
        assert idx.info().pages == 5
    assert "cannot write the text cache" in caplog.text


def test_the_first_stage_is_an_exact_scan_at_every_size(index, corpus, monkeypatch):
    enc = FakeEncoder()
    index_paths(index, enc, [corpus], render=RENDER, progress=False)  # 5 pages
    seen = []
    real = index.hybrid

    def spy(queries, **kwargs):
        seen.extend(q.first_stage for q in queries)
        return real(queries, **kwargs)

    monkeypatch.setattr(index, "hybrid", spy)
    search(index, enc, ["alpha"], k=2)
    search(index, enc, ["alpha"], k=2, filter=SearchFilter(doc_paths=("a.pdf",)))  # 3 pages
    assert seen == ["exact", "exact"]
    # a new index has no graph on its candidate vectors: asking for one is an error
    with pytest.raises(PagelensError, match="needs a graph on the candidate vectors"):
        search(index, enc, ["alpha"], first_stage="hnsw")
    with pytest.raises(PagelensError, match="first_stage must be"):
        search(index, enc, ["alpha"], first_stage="graph")


def test_two_folders_with_the_same_relative_path_never_replace_each_other(index, tmp_path):
    for name, prefix in (("colA", "Apples"), ("colB", "Bananas")):
        (tmp_path / name).mkdir()
        pf.text_pdf(tmp_path / name / "report.pdf", 2, prefix=prefix)
    index_paths(index, FakeEncoder(), [tmp_path / "colA"], render=RENDER, progress=False)
    second = index_paths(index, FakeEncoder(), [tmp_path / "colB"], render=RENDER, progress=False)
    assert second.indexed == () and second.replaced == ()
    [(path, cause)] = [(s.path, s.cause) for s in second.skipped]
    assert path == "report.pdf" and str(tmp_path / "colA" / "report.pdf") in cause
    assert "common parent folder" in cause
    [doc] = index.documents()
    assert doc.source == str(tmp_path / "colA" / "report.pdf")  # nothing lost silently
    # from the common parent the two paths differ, and both are indexed
    both = index_paths(index, FakeEncoder(), [tmp_path], render=RENDER, progress=False)
    assert both.indexed == ("colB/report.pdf",) and both.unchanged == ("colA/report.pdf",)
    assert [d.doc_path for d in index.documents()] == ["colA/report.pdf", "colB/report.pdf"]


def test_nothing_to_index_creates_no_index(tmp_path):
    from pagelens.pipeline.job import NothingToIndexError

    (tmp_path / "empty").mkdir()
    pf.not_a_pdf(tmp_path / "empty" / "notes.pdf")
    with Index.open(tmp_path / "idx") as index:
        with pytest.raises(NothingToIndexError, match=r"no PDFs found \(1 files passed over"):
            index_paths(index, FakeEncoder(), [tmp_path / "empty"], progress=False)
        assert index.manifest is None and not index.exists()
    assert not (tmp_path / "idx").exists()
    # a later run with the right encoder is not refused by a manifest the typo pinned
    pf.text_pdf(tmp_path / "empty" / "real.pdf", 1)
    with Index.open(tmp_path / "idx") as index:
        report = index_paths(index, FakeEncoder(dim=8), [tmp_path / "empty"], progress=False)
        assert report.indexed == ("real.pdf",)


def test_all_pages_stored_but_not_committed_is_said_plainly(tmp_path, corpus, caplog, monkeypatch):
    def crash_before_commit(*args, **kwargs):
        raise KeyboardInterrupt

    with Index.open(tmp_path / "idx") as index:
        monkeypatch.setattr(index, "commit_many", crash_before_commit)
        with pytest.raises(KeyboardInterrupt):
            index_paths(index, FakeEncoder(), [corpus / "a.pdf"], render=RENDER, progress=False)
        monkeypatch.undo()
        caplog.set_level("INFO", logger="pagelens.pipeline.job")
        enc = FakeEncoder()
        report = index_paths(index, enc, [corpus / "a.pdf"], render=RENDER, progress=False)
    assert report.indexed == ("a.pdf",) and enc.pages_seen == 0
    assert "a.pdf: all 3 pages stored; committing" in caplog.text
    assert "resuming at page 4 of 3" not in caplog.text


class _Durability:
    """A store that records what each write left unflushed, to check the job's order."""

    def __init__(self, store):
        self._store = store
        self.unflushed: list[tuple[str, str]] = []  # (kind, doc sha) written, not yet durable
        self.flushes = 0
        self.broken: list[str] = []
        self.slow = 0.0  # seconds each flush() takes besides (a large index's)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _flushed(self):
        for kind, sha in self.unflushed:
            if kind == "page" and ("pending", sha) in self.unflushed:
                self.broken.append(f"mark of {sha} made durable with its pages, not before")
        self.flushes += 1
        self.unflushed.clear()

    def flush(self):
        self._store.flush()
        self._flushed()
        time.sleep(self.slow)

    def upsert(self, points, *, durable=True):
        for p in points:
            kind, sha = p.payload.get("kind"), p.payload.get("doc_sha256")
            if kind == "document" and ("page", sha) in self.unflushed:
                self.broken.append(f"record of {sha} durable before its pages")
            self.unflushed.append((kind, sha))
        self._store.upsert(points, durable=durable)
        if durable:
            self._flushed()

    def delete(self, where, *, durable=True):
        self._store.delete(where, durable=durable)
        self.unflushed.append(("deleted", where.kind))
        if durable:
            self._flushed()


@pytest.mark.parametrize("ahead", [1, 2, 32])
def test_pages_are_durable_before_their_record_at_two_flushes_a_document(
    tmp_path, corpus, monkeypatch, ahead
):
    """A job flushes a document twice, whatever its pages: its pages, then its record.

    The embedded engine persists every segment on each flush, so the job writes
    pages without one and makes them durable just before the commit record. The
    pending marks go durable before any of their pages, ``MARK_AHEAD`` documents
    in one write; the commit record and its mark's removal go durable in one
    write, before the ledger's line (pagelens.storage.ledger: a mark on a document
    the ledger holds is then one the engine brought back, and is dropped).
    """
    monkeypatch.setattr(job, "MARK_AHEAD", ahead)
    pf.text_pdf(corpus / "long.pdf", 9, prefix="Long")  # 5 batches of RENDER's 2 pages
    with Index.open(tmp_path / "idx") as index:
        recorder = _Durability(index.store)
        index.store = recorder
        serial = PipelineSettings(pool_workers=0)  # each document committed as it ends
        report = index_paths(
            index, FakeEncoder(), [corpus], render=RENDER, progress=False, pipeline=serial
        )
        assert report.pages == 14 and not recorder.broken
        mark_writes = -(-3 // ahead)  # 3 documents
        assert recorder.flushes == 1 + mark_writes + 3 * 2  # the manifest's write first
        assert recorder.unflushed == []  # the last mark's removal with its record


def test_a_writer_behind_commits_finished_documents_together(tmp_path):
    """While writes wait behind it, the writer groups commits: two flushes a group."""
    root = tmp_path / "pdfs"
    root.mkdir()
    for i in range(8):
        pf.text_pdf(root / f"d{i}.pdf", 1, prefix=f"Doc{i}")
    with Index.open(tmp_path / "idx") as index:
        recorder = _Durability(index.store)
        recorder.slow = 0.5  # the encoder and renderer run ahead of the writer
        index.store = recorder
        report = index_paths(index, FakeEncoder(), [root], render=RENDER, progress=False)
        assert report.pages == 8 and len(report.indexed) == 8 and not recorder.broken
        assert recorder.flushes < 1 + 1 + 8 * 2  # some documents were committed together
        assert index.info().documents == 8 and index.pending_documents() == {}


def test_a_mark_left_on_a_committed_document_is_dropped_not_redone(tmp_path, corpus):
    with Index.open(tmp_path / "idx") as index:
        index_paths(index, FakeEncoder(), [corpus], render=RENDER, progress=False)
        a = next(r for r in index.documents() if r.doc_path == "a.pdf")
        index.begin_document(  # as a crash between the record and the mark's removal leaves it
            Document(str(corpus / "a.pdf"), "a.pdf", a.doc_sha256, 0)
        )
        assert index.pending_documents() == {a.doc_sha256: "a.pdf"}
    with Index.open(tmp_path / "idx") as index:
        enc = FakeEncoder()
        report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
        assert enc.pages_seen == 0 and not report.indexed
        assert index.pending_documents() == {} and index.info().pages == 5
