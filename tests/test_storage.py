"""Backend congruence: the same test bodies run against every store backend.

The numpy MaxSim in pagelens.scoring is the oracle every backend must match.
"""

import numpy as np
import pytest

from pagelens.errors import StoreError
from pagelens.plan import HybridQuery, run_queries
from pagelens.scoring import rank
from pagelens.storage.base import PayloadFilter, PointRecord
from pagelens.storage.edge import EdgeStore
from pagelens.storage.layout import PAGES, POOLED, CollectionSpec, page_point_id, path_prefixes
from pagelens.storage.server import ServerStore

DIM = 16


def _query(store, queries, *, k, candidates, where=None, channel="dense", first_stage="exact"):
    """One channel's top k: the plan of a hybrid query of that channel alone."""
    planned = [
        HybridQuery(
            dense=q if channel == "dense" else None,
            sparse=None,
            text=q if channel == "text" else None,
            candidates=candidates,
            first_stage=first_stage,
            channel_limit=k,
        )
        for q in queries
    ]
    return run_queries(store, planned, k=k, where=where)


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
    store.create(CollectionSpec(dim=DIM, format=1, fp16=fp16))
    pages, points = _corpus(n_pages)
    store.upsert(points)
    store.optimize()
    return pages, points


def test_exact_query_matches_numpy_oracle(make_store):
    store = make_store()
    pages, _ = _fill(store)
    rng = np.random.default_rng(9)
    queries = [_unit(rng.normal(size=(m, DIM))) for m in (1, 3, 6)]
    got = _query(store, queries, k=5, candidates=None)
    want = rank(queries, pages, k=5)
    for hits, ref in zip(got, want, strict=False):
        assert [h.payload["page_number"] for h in hits] == [i for i, _ in ref]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in ref], rtol=1e-4)


def test_two_stage_equals_exact_when_candidates_cover_corpus(make_store):
    store = make_store()
    _fill(store)
    rng = np.random.default_rng(5)
    queries = [_unit(rng.normal(size=(4, DIM))) for _ in range(5)]
    exact = _query(store, queries, k=10, candidates=None)
    two_stage = _query(store, queries, k=10, candidates=30)
    assert [[h.id for h in r] for r in exact] == [[h.id for h in r] for r in two_stage]


def test_fp16_storage_stays_close_to_oracle(make_store):
    store = make_store()
    pages, _ = _fill(store, fp16=True)
    q = [_unit(np.random.default_rng(2).normal(size=(4, DIM)))]
    got = _query(store, q, k=30, candidates=None)[0]
    ref = dict(rank(q, pages, k=30)[0])
    for h in got:
        assert h.score == pytest.approx(ref[h.payload["page_number"]], abs=5e-3)


def test_filters_by_document_and_prefix(make_store):
    store = make_store()
    pages, points = _fill(store)
    q = [_unit(np.random.default_rng(3).normal(size=(2, DIM)))]
    hits = _query(
        store,
        q,
        k=30,
        candidates=None,
        where=PayloadFilter(kind="page", doc_paths=("folder1/doc1.pdf",)),
    )[0]
    assert hits and {h.payload["doc_path"] for h in hits} == {"folder1/doc1.pdf"}
    hits = _query(
        store, q, k=30, candidates=30, where=PayloadFilter(kind="page", path_prefix="folder2/")
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
    hits = _query(store, [_unit(np.ones((1, DIM)))], k=100, candidates=None)[0]
    assert all(h.payload["kind"] == "page" for h in hits)
    store.set_payload(PayloadFilter(doc_sha256=("sha1",)), {"doc_path": "moved.pdf"})
    assert {p["doc_path"] for p in store.scroll(PayloadFilter(doc_sha256=("sha1",)))} == {
        "moved.pdf"
    }
    assert len(list(store.scroll(PayloadFilter(kind="page")))) == 30


def test_points_read_back_with_ids_payloads_and_vectors(make_store):
    store = make_store()
    pages, points = _fill(store, fp16=True)
    store.upsert([PointRecord("00000000-0000-0000-0000-000000000001", {"kind": "document"})])
    ids = list(store.point_ids())
    assert sorted(ids) == sorted([p.id for p in points] + ["00000000-0000-0000-0000-000000000001"])
    unknown = page_point_id("nowhere", 1)
    read = {p.id: p for p in store.retrieve([points[3].id, points[7].id, unknown])}
    assert set(read) == {points[3].id, points[7].id}
    got = read[points[3].id]
    assert got.payload["page_number"] == 3 and set(got.vectors) == {PAGES, POOLED}
    assert got.vectors[PAGES].dtype == np.float32 and got.vectors[PAGES].shape == pages[3].shape
    np.testing.assert_allclose(got.vectors[PAGES], pages[3], atol=1e-3)  # fp16 storage
    np.testing.assert_allclose(got.vectors[POOLED], pages[3][:2], atol=1e-6)
    store.delete_points([points[3].id, points[7].id])
    assert store.count(PayloadFilter(kind="page")) == 28
    assert store.retrieve([points[3].id]) == []


def test_engine_errors_are_store_errors_naming_the_operation(make_store):
    store = make_store()
    _fill(store)
    wrong_dim = PointRecord(
        page_point_id("x", 1), {"kind": "page"}, {PAGES: _unit(np.ones((2, DIM + 3)))}
    )
    with pytest.raises(StoreError, match="cannot write points") as info:
        store.upsert([wrong_dim])
    assert not isinstance(info.value.__cause__, StoreError)  # the engine's own, kept as cause


def test_reopen_keeps_data(make_store, tmp_path, request):
    store = make_store("persist")
    if request.node.callspec.params["make_store"] == "client-memory":
        pytest.skip("in-memory local mode does not persist by design")
    _fill(store)
    store.close()
    again = make_store("persist")
    assert again.exists()
    assert again.count(PayloadFilter(kind="page")) == 30


def test_writes_left_to_a_later_flush_are_seen_at_once_and_kept(make_store, tmp_path, request):
    store = make_store("later")
    store.create(CollectionSpec(dim=DIM, format=1))
    _, points = _corpus()
    store.upsert(points[:20], durable=False)
    store.delete(PayloadFilter(doc_sha256=("sha0",)), durable=False)
    assert store.count(PayloadFilter(kind="page")) == 16  # 4 of sha0 among the first 20
    store.flush()
    store.upsert(points[20:], durable=False)
    if request.node.callspec.params["make_store"] == "client-memory":
        return  # in-memory local mode does not persist by design
    store.close()  # closing persists what no flush did
    again = make_store("later")
    assert again.count(PayloadFilter(kind="page")) == 16 + 10


def test_missing_collection_is_a_clear_error(make_store):
    store = make_store()
    assert not store.exists()
    with pytest.raises(StoreError, match="pagelens index"):
        store.count(PayloadFilter())


_OPEN_IN_CHILD = """
import sys
from pagelens.errors import StoreError
from pagelens.plan import HybridQuery, run_queries
from pagelens.storage.edge import EdgeStore
try:
    EdgeStore(sys.argv[1], wait_s=float(sys.argv[2]), lock_now=sys.argv[3] == "1").close()
except StoreError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


def _open_in_child(folder, wait_s=0.0, lock_now=False):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-c", _OPEN_IN_CHILD, str(folder), str(wait_s), "01"[lock_now]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_edge_folder_is_locked_against_a_second_process(tmp_path):
    first = EdgeStore(tmp_path / "idx")
    first.create(CollectionSpec(dim=DIM, format=1))
    try:
        child = _open_in_child(tmp_path / "idx", wait_s=0.5)
        assert child.returncode == 3, child.stderr
        assert "in use by another pagelens process (waited 0.5 s)" in child.stdout
        assert "--wait SECONDS" in child.stdout
        # in the same process the message says so, not "another process"
        with pytest.raises(StoreError, match="already open in this process"):
            EdgeStore(tmp_path / "idx")
    finally:
        first.close()
    EdgeStore(tmp_path / "idx").close()  # free again once closed
    assert _open_in_child(tmp_path / "idx").stdout.strip() == "opened"


def test_a_waiting_open_gets_the_folder_once_it_is_let_go(tmp_path):
    import threading

    first = EdgeStore(tmp_path / "idx")
    first.create(CollectionSpec(dim=DIM, format=1))
    threading.Timer(1.0, first.close).start()
    child = _open_in_child(tmp_path / "idx", wait_s=30)  # blocks until the timer closes it
    assert child.stdout.strip() == "opened", child.stdout + child.stderr


def test_lock_now_takes_a_new_folder_and_leaves_nothing_if_nothing_was_made(tmp_path):
    store = EdgeStore(tmp_path / "new", lock_now=True)
    assert (tmp_path / "new").is_dir()
    child = _open_in_child(tmp_path / "new", lock_now=True)  # a second run stops at once
    assert child.returncode == 3 and "in use" in child.stdout
    store.close()
    assert not (tmp_path / "new").exists()  # no index made: no folder left behind


def test_edge_open_creates_nothing_until_an_index_is_made(tmp_path):
    store = EdgeStore(tmp_path / "not-yet")
    assert not store.exists() and not (tmp_path / "not-yet").exists()
    store.close()


# -- BM25 and hybrid fusion -----------------------------------------------------------

TEXTS = [  # BM25 scores for "staff revenue" are all distinct: no ties to order
    "annual revenue grew in europe",
    "revenue by region table revenue",
    "staff headcount and hiring plans for next year",
    "the chart of revenue and staff",
    "nothing relevant here at all",
    "europe staff offices",
]


def _fill_text(store):
    from pagelens.bm25 import bm25_documents

    store.create(CollectionSpec(dim=DIM, format=1, fp16=False))
    pages, points = _corpus(len(TEXTS))
    sparse = bm25_documents(TEXTS)
    points = [
        PointRecord(p.id, p.payload, {**p.vectors, "bm25": s})
        for p, s in zip(points, sparse, strict=True)
    ]
    store.upsert(points)
    store.optimize()
    return pages


def _bm25_oracle(query_text):
    """Qdrant's IDF times the stored term weights, by hand."""
    import math

    from pagelens.bm25 import bm25_documents, bm25_queries

    docs = bm25_documents(TEXTS)
    (q,) = bm25_queries([query_text])
    n = len(docs)
    scores = {}
    for i, d in enumerate(docs):
        weights = dict(zip(d.indices, d.values, strict=True))
        s = 0.0
        for term in q.indices:
            df = sum(term in doc.indices for doc in docs)
            if term in weights:
                s += math.log((n - df + 0.5) / (df + 0.5) + 1) * weights[term]
        if s > 0:
            scores[i] = s
    return scores


def test_bm25_channel_matches_hand_computed_idf(make_store):
    from pagelens.bm25 import bm25_queries

    store = make_store()
    _fill_text(store)
    (q,) = bm25_queries(["revenue in europe"])
    (hits,) = run_queries(store, [HybridQuery(dense=None, sparse=q)], k=10)
    want = _bm25_oracle("revenue in europe")
    assert {h.payload["page_number"]: h.score for h in hits} == pytest.approx(want, rel=1e-4)
    assert all(h.channels == ("bm25",) for h in hits)


@pytest.mark.parametrize(
    "weights", [None, {"bm25": 0.0}, {"dense": 1.0, "bm25": 5.0}, {"dense": 2.0}]
)
def test_rrf_fusion_matches_its_formula(make_store, weights):
    from pagelens.bm25 import bm25_queries

    store = make_store()
    pages = _fill_text(store)
    dense = _unit(np.random.default_rng(4).normal(size=(3, DIM)))
    (sparse,) = bm25_queries(["staff revenue"])
    query = HybridQuery(
        dense=dense, sparse=sparse, candidates=None, fusion="rrf", weights=weights, rrf_k=60
    )
    (fused,) = run_queries(store, [query], k=6)
    dense_rank = [i for i, _ in rank([dense], pages, k=6)[0]]
    bm25 = _bm25_oracle("staff revenue")
    sparse_rank = sorted(bm25, key=lambda i: -bm25[i])
    assert len(set(bm25.values())) == len(bm25)  # no ties
    # Qdrant's weighted RRF divides each channel's 1-based rank by its weight:
    # 1 / (k - 1 + rank / w); with w = 1 this is the usual 1 / (k + r), r from 0,
    # and w = 0 silences the channel. A heavier weight raises the channel's share
    # of the score but flattens the differences between its own ranks.
    w_d, w_s = (weights or {}).get("dense", 1.0), (weights or {}).get("bm25", 1.0)
    want: dict[int, float] = {}
    for w, ranked in ((w_d, dense_rank), (w_s, sparse_rank)):
        for r, i in enumerate(ranked):
            want[i] = want.get(i, 0.0) + (w / (w * 59 + r + 1) if w else 0.0)
    assert {h.payload["page_number"]: h.score for h in fused} == pytest.approx(want, rel=1e-4)
    for h in fused:
        expected = tuple(
            c
            for c, ids in (("dense", dense_rank), ("bm25", sparse_rank))
            if h.payload["page_number"] in ids
        )
        assert h.channels == expected


def _dbsf_oracle(channels):
    """Qdrant's distribution-based score fusion, by hand.

    Each channel's result list is scaled so that its mean - 3 sample standard
    deviations maps to 0 and its mean + 3 to 1 (a single result, or a list whose
    scores are all equal, scores 0.5); a point's fused score is the sum over the
    channels that returned it. (qdrant's segment/src/common/score_fusion.rs
    distr_norm, qdrant-client's distribution_based_score_fusion; neither clips,
    and a list of n <= 10 cannot reach 3 sample deviations from its mean.)
    """
    fused: dict[int, float] = {}
    for scores in channels:
        values = np.array(list(scores.values()), dtype=np.float64)
        std = values.std(ddof=1) if len(values) > 1 else 0.0
        for i, score in scores.items():
            norm = 0.5 if std == 0 else (score - (values.mean() - 3 * std)) / (6 * std)
            fused[i] = fused.get(i, 0.0) + norm
    return fused


@pytest.mark.parametrize("query_text", ["staff revenue", "europe", "hiring"])
def test_dbsf_fusion_matches_its_formula(make_store, query_text):
    from pagelens.bm25 import bm25_queries

    store = make_store()
    pages = _fill_text(store)
    dense = _unit(np.random.default_rng(6).normal(size=(3, DIM)))
    (sparse,) = bm25_queries([query_text])
    query = HybridQuery(dense=dense, sparse=sparse, candidates=None, fusion="dbsf")
    (fused,) = run_queries(store, [query], k=len(TEXTS))
    dense_scores = dict(rank([dense], pages, k=len(pages))[0])
    bm25 = _bm25_oracle(query_text)
    want = _dbsf_oracle([dense_scores, bm25])
    assert {h.payload["page_number"]: h.score for h in fused} == pytest.approx(want, rel=1e-4)
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)
    for h in fused:
        expected = tuple(
            c
            for c, ids in (("dense", dense_scores), ("bm25", bm25))
            if h.payload["page_number"] in ids
        )
        assert h.channels == expected


def test_three_channel_dbsf_matches_its_formula(make_store):
    from pagelens.bm25 import bm25_queries

    store = make_store()
    pages, texts = _fill_three(store)
    rng = np.random.default_rng(14)
    dense = _unit(rng.normal(size=(3, DIM)))
    text = _unit(rng.normal(size=(2, TEXT_DIM)))
    (sparse,) = bm25_queries(["staff revenue"])
    query = HybridQuery(dense=dense, sparse=sparse, text=text, candidates=None, fusion="dbsf")
    (fused,) = run_queries(store, [query], k=len(TEXTS))
    channels = [
        dict(rank([dense], pages, k=len(pages))[0]),
        dict(rank([text], texts, k=len(texts))[0]),
        _bm25_oracle("staff revenue"),
    ]
    want = _dbsf_oracle(channels)
    assert {h.payload["page_number"]: h.score for h in fused} == pytest.approx(want, rel=1e-4)


def test_dbsf_fusion_and_bad_options(make_store):
    from pagelens.bm25 import bm25_queries
    from pagelens.errors import PagelensError

    store = make_store()
    _fill_text(store)
    dense = _unit(np.random.default_rng(5).normal(size=(2, DIM)))
    (sparse,) = bm25_queries(["europe"])
    (hits,) = run_queries(store, [HybridQuery(dense=dense, sparse=sparse, fusion="dbsf")], k=6)
    assert len(hits) == 6 and hits[0].score >= hits[-1].score
    with pytest.raises(PagelensError, match="fusion must be one of"):
        run_queries(store, [HybridQuery(dense=dense, sparse=sparse, fusion="sum")], k=3)
    with pytest.raises(PagelensError, match="rrf"):
        query = HybridQuery(dense=dense, sparse=sparse, fusion="dbsf", weights={"bm25": 2})
        run_queries(store, [query], k=3)
    with pytest.raises(PagelensError, match="does not use"):
        query = HybridQuery(dense=dense, sparse=sparse, fusion="rrf", weights={"text": 2})
        run_queries(store, [query], k=3)
    with pytest.raises(PagelensError, match="non-negative"):
        query = HybridQuery(dense=dense, sparse=sparse, fusion="rrf", weights={"bm25": -1})
        run_queries(store, [query], k=3)
    with pytest.raises(PagelensError, match="dense, text or sparse"):
        run_queries(store, [HybridQuery(dense=None, sparse=None)], k=3)


TEXT_DIM = 8  # the text channel's own dimension, unlike the visual one


def _fill_three(store):
    """Pages with visual vectors, text-channel vectors (another dim) and BM25."""
    from pagelens.bm25 import bm25_documents
    from pagelens.storage.layout import TEXT_PAGES, TEXT_POOLED

    store.create(CollectionSpec(dim=DIM, format=1, fp16=False, text_dim=TEXT_DIM))
    pages, points = _corpus(len(TEXTS))
    rng = np.random.default_rng(11)
    texts = [_unit(rng.normal(size=(int(rng.integers(2, 9)), TEXT_DIM))) for _ in TEXTS]
    sparse = bm25_documents(TEXTS)
    points = [
        PointRecord(p.id, p.payload, {**p.vectors, TEXT_PAGES: t, TEXT_POOLED: t[:2], "bm25": s})
        for p, t, s in zip(points, texts, sparse, strict=True)
    ]
    store.upsert(points)
    store.optimize()
    return pages, texts


def test_text_channel_matches_numpy_oracle(make_store):
    store = make_store()
    _, texts = _fill_three(store)
    rng = np.random.default_rng(12)
    queries = [_unit(rng.normal(size=(m, TEXT_DIM))) for m in (1, 4)]
    got = _query(store, queries, k=6, candidates=None, channel="text")
    want = rank(queries, texts, k=6)
    for g, w in zip(got, want, strict=True):
        assert [h.payload["page_number"] for h in g] == [i for i, _ in w]
        assert [h.score for h in g] == pytest.approx([s for _, s in w], rel=1e-5)
    # two-stage with candidates covering the corpus gives the exact answer
    two = _query(store, queries, k=6, candidates=len(texts), channel="text")
    assert [[h.id for h in q] for q in two] == [[h.id for h in q] for q in got]


def test_three_channel_rrf_matches_its_formula(make_store):
    from pagelens.bm25 import bm25_queries

    store = make_store()
    pages, texts = _fill_three(store)
    rng = np.random.default_rng(13)
    dense = _unit(rng.normal(size=(3, DIM)))
    text = _unit(rng.normal(size=(2, TEXT_DIM)))
    (sparse,) = bm25_queries(["staff revenue"])
    weights = {"dense": 0.5, "text": 2.0}  # bm25 left at 1
    query = HybridQuery(
        dense=dense, sparse=sparse, text=text, candidates=None, fusion="rrf", weights=weights
    )
    (fused,) = run_queries(store, [query], k=6)
    ranked = {
        "dense": [i for i, _ in rank([dense], pages, k=6)[0]],
        "text": [i for i, _ in rank([text], texts, k=6)[0]],
    }
    bm25 = _bm25_oracle("staff revenue")
    ranked["bm25"] = sorted(bm25, key=lambda i: -bm25[i])
    want: dict[int, float] = {}
    for name, order in ranked.items():
        w = weights.get(name, 1.0)
        for r, i in enumerate(order):
            want[i] = want.get(i, 0.0) + w / (w * 59 + r + 1)
    assert {h.payload["page_number"]: h.score for h in fused} == pytest.approx(want, rel=1e-4)
    for h in fused:
        found = tuple(c for c, order in ranked.items() if h.payload["page_number"] in order)
        assert h.channels == found


def test_exact_first_stage_scans_every_page(make_store):
    """With candidates = k and pooled = page vectors, an exact first stage is exact search."""
    store = make_store()
    store.create(CollectionSpec(dim=DIM, format=1, fp16=False))
    pages, points = _corpus(40)
    full = [
        PointRecord(p.id, p.payload, {PAGES: v, POOLED: v})
        for p, v in zip(points, pages, strict=True)
    ]
    store.upsert(full)
    store.optimize()
    rng = np.random.default_rng(21)
    queries = [_unit(rng.normal(size=(m, DIM))) for m in (2, 5)]
    got = _query(store, queries, k=3, candidates=3, first_stage="exact")
    for g, w in zip(got, rank(queries, pages, k=3), strict=True):
        assert [h.payload["page_number"] for h in g] == [i for i, _ in w]


def test_first_stage_reaches_the_engine_request(make_store):
    """The first stage's prefetch asks the engine for an exact scan, or not."""
    store = make_store()
    _fill(store)
    sent = []
    if isinstance(store, EdgeStore):
        shard = store._shard

        class Spy:
            def query_batch(self, request):
                sent.extend(r.prefetches[0].params for r in request.queries)
                return shard.query_batch(request)

        store._shard = Spy()
    else:
        client = store._client
        real = client.query_batch_points

        def spy(collection, requests):
            sent.extend(r.prefetch[0].params for r in requests)
            return real(collection, requests=requests)

        client.query_batch_points = spy
    q = _unit(np.random.default_rng(3).normal(size=(2, DIM)))
    try:
        _query(store, [q], k=3, candidates=5, first_stage="exact")
        _query(store, [q], k=3, candidates=5, first_stage="hnsw")
    finally:
        if isinstance(store, EdgeStore):
            store._shard = shard
    assert sent[0].exact is True and sent[1] is None
