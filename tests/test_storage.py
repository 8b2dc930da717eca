"""Backend congruence: the same test bodies run against every store backend.

The numpy MaxSim in pagelens.scoring is the oracle every backend must match.
"""

import numpy as np
import pytest

from pagelens.errors import StoreError
from pagelens.scoring import rank
from pagelens.storage.base import (
    PAGES,
    POOLED,
    CollectionSpec,
    PayloadFilter,
    PointRecord,
    page_point_id,
    path_prefixes,
)
from pagelens.storage.edge import EdgeStore
from pagelens.storage.server import ServerStore

DIM = 16


def _unit(v):
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(params=["edge", "client-memory", "client-path"])
def make_store(request, tmp_path):
    stores = []

    def make(sub="a"):
        if request.param == "edge":
            store = EdgeStore(tmp_path / sub)
        elif request.param == "client-memory":
            store = ServerStore(location=":memory:")
        else:
            store = ServerStore(path=str(tmp_path / sub))
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()


def _corpus(n_pages=30, seed=0):
    rng = np.random.default_rng(seed)
    pages = [_unit(rng.normal(size=(int(rng.integers(3, 12)), DIM))) for _ in range(n_pages)]
    points = []
    for i, v in enumerate(pages):
        doc = f"folder{i % 3}/doc{i % 5}.pdf"
        payload = {
            "kind": "page",
            "doc_path": doc,
            "doc_sha256": f"sha{i % 5}",
            "path_prefixes": path_prefixes(doc),
            "page_number": i,
        }
        points.append(
            PointRecord(page_point_id(f"sha{i % 5}", i), payload, {PAGES: v, POOLED: v[:2]})
        )
    return pages, points


def _fill(store, fp16=False, n_pages=30):
    store.create(CollectionSpec(dim=DIM, fp16=fp16))
    pages, points = _corpus(n_pages)
    store.upsert(points)
    store.optimize()
    return pages, points


def test_exact_query_matches_numpy_oracle(make_store):
    store = make_store()
    pages, _ = _fill(store)
    rng = np.random.default_rng(9)
    queries = [_unit(rng.normal(size=(m, DIM))) for m in (1, 3, 6)]
    got = store.query(queries, k=5, candidates=None)
    want = rank(queries, pages, k=5)
    for hits, ref in zip(got, want, strict=False):
        assert [h.payload["page_number"] for h in hits] == [i for i, _ in ref]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in ref], rtol=1e-4)


def test_two_stage_equals_exact_when_candidates_cover_corpus(make_store):
    store = make_store()
    _fill(store)
    rng = np.random.default_rng(5)
    queries = [_unit(rng.normal(size=(4, DIM))) for _ in range(5)]
    exact = store.query(queries, k=10, candidates=None)
    two_stage = store.query(queries, k=10, candidates=30)
    assert [[h.id for h in r] for r in exact] == [[h.id for h in r] for r in two_stage]


def test_fp16_storage_stays_close_to_oracle(make_store):
    store = make_store()
    pages, _ = _fill(store, fp16=True)
    q = [_unit(np.random.default_rng(2).normal(size=(4, DIM)))]
    got = store.query(q, k=30, candidates=None)[0]
    ref = dict(rank(q, pages, k=30)[0])
    for h in got:
        assert h.score == pytest.approx(ref[h.payload["page_number"]], abs=5e-3)


def test_filters_by_document_and_prefix(make_store):
    store = make_store()
    pages, points = _fill(store)
    q = [_unit(np.random.default_rng(3).normal(size=(2, DIM)))]
    hits = store.query(
        q, k=30, candidates=None, where=PayloadFilter(kind="page", doc_paths=("folder1/doc1.pdf",))
    )[0]
    assert hits and {h.payload["doc_path"] for h in hits} == {"folder1/doc1.pdf"}
    hits = store.query(
        q, k=30, candidates=30, where=PayloadFilter(kind="page", path_prefix="folder2/")
    )[0]
    want = {
        p.payload["page_number"] for p in points if p.payload["doc_path"].startswith("folder2/")
    }
    assert {h.payload["page_number"] for h in hits} == want


def test_upsert_is_idempotent_and_delete_counts(make_store):
    store = make_store()
    _, points = _fill(store)
    store.upsert(points)  # same ids again: no duplicates
    assert store.count(PayloadFilter(kind="page")) == 30
    store.delete(PayloadFilter(doc_sha256=("sha0",)))
    assert store.count(PayloadFilter(kind="page")) == 24
    assert store.count(PayloadFilter(doc_sha256=("sha0",))) == 0


def test_vectorless_records_scroll_and_set_payload(make_store):
    store = make_store()
    _fill(store)
    store.upsert(
        [
            PointRecord(
                "00000000-0000-0000-0000-000000000001", {"kind": "document", "doc_path": "x.pdf"}
            )
        ]
    )
    assert [p["doc_path"] for p in store.scroll(PayloadFilter(kind="document"))] == ["x.pdf"]
    # a vectorless point never shows up in a vector query
    hits = store.query([_unit(np.ones((1, DIM)))], k=100, candidates=None)[0]
    assert all(h.payload["kind"] == "page" for h in hits)
    store.set_payload(PayloadFilter(doc_sha256=("sha1",)), {"doc_path": "moved.pdf"})
    assert {p["doc_path"] for p in store.scroll(PayloadFilter(doc_sha256=("sha1",)))} == {
        "moved.pdf"
    }
    assert len(list(store.scroll(PayloadFilter(kind="page")))) == 30


def test_reopen_keeps_data(make_store, tmp_path, request):
    store = make_store("persist")
    if request.node.callspec.params["make_store"] == "client-memory":
        pytest.skip("in-memory local mode does not persist by design")
    _fill(store)
    store.close()
    again = make_store("persist")
    assert again.exists()
    assert again.count(PayloadFilter(kind="page")) == 30


def test_missing_collection_is_a_clear_error(make_store):
    store = make_store()
    assert not store.exists()
    with pytest.raises(StoreError, match="pagelens index"):
        store.count(PayloadFilter())


def test_edge_folder_is_locked_against_a_second_process(tmp_path):
    first = EdgeStore(tmp_path / "idx")
    first.create(CollectionSpec(dim=DIM))
    try:
        with pytest.raises(StoreError, match="in use"):
            EdgeStore(tmp_path / "idx")
    finally:
        first.close()
    EdgeStore(tmp_path / "idx").close()  # free again once closed


def test_edge_open_creates_nothing_until_an_index_is_made(tmp_path):
    store = EdgeStore(tmp_path / "not-yet")
    assert not store.exists() and not (tmp_path / "not-yet").exists()
    store.close()
