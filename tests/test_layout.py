"""The compact stored layout (manifest format 6) against float twins and the oracle.

New indexes store rerank vectors in Qdrant's 8-bit TurboQuant storage, on disk,
and 4-bit candidate and coarse vectors without a graph, mapped from disk too
(format 5 held those in RAM; format 4 stored them in 8 bits; format 2 stored
candidates as float16; format 3 had no coarse vectors, and scanned every page's
candidates). The embedded store seals a segment each few thousand points, so that
its search pool scans segments in parallel.
These tests pin what that costs and what it keeps, on every backend:

- exact search (``candidates=None``) on the compact layout against a numpy MaxSim
  oracle over the float vectors, and against the same pages in a float index
  (format 1): the tolerance is stated where it is asserted;
- the staged first stage (a scan of coarse vectors with the pooled question, then
  the candidate vectors of the pages it passes) against the same stages in numpy,
  for formats 4, 5 and 6;
- an index sealed into segments answers as the same pages in one segment do, and
  an index made before segments is not sealed;
- two-stage search equals exact search when the candidates cover the corpus;
- a server's collection of format 2 or 3 is searched as those formats were; an
  unknown format is refused with how to rebuild.

Embedded indexes that earlier releases really wrote, one set per manifest format,
are opened and searched in test_legacy_fixtures.py. Here ``_legacy`` has today's
code lay out an older format's collection: a float twin (format 1 with fp16 off),
a server's collection (no fixture holds one), or the layout of a format that a
repair rebuilds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pagelens.encoders.base import EncoderSpec
from pagelens.errors import IndexMismatchError, PagelensError
from pagelens.index import Index, IndexSettings, Manifest
from pagelens.plan import HybridQuery
from pagelens.pooling import pool_query, ward_pool
from pagelens.search import COARSE_PER_CANDIDATE, COARSE_QUERY_VECTORS, search_vectors
from pagelens.storage.base import PointRecord
from pagelens.storage.layout import MANIFEST_FORMAT, MANIFEST_POINT_ID, PageVectors, StoredPage
from pagelens.types import Document, Page

DIM = 32
N_PAGES = 60
SPEC = EncoderSpec("synthetic", "0", DIM, "synthetic")
# Turbo8 stores each value in 8 bits after a fixed rotation: a query token's MaxSim
# moves by at most about 1% of a unit dot product (measured: 0.007 over 20 tokens at
# dim 128), so a page's score over 8 query tokens moves by well under this.
SCORE_ATOL = 0.05
# Turbo4 (the first stage's vectors since manifest format 5) stores 4 bits a value:
# the pages it swaps at a stage's cut scored within 0.06 of it over 8 query tokens,
# and within 0.03 of a unit query vector's, in the tests below (0.19 with the wrong
# query vectors)
STAGE_ATOL = 0.1


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _pages(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    topics = _unit(rng.normal(size=(40, DIM)))
    out = []
    for _ in range(N_PAGES):
        chosen = rng.choice(len(topics), size=int(rng.integers(12, 40)))
        out.append(_unit(topics[chosen] + 0.3 * rng.normal(size=(len(chosen), DIM))))
    return out


def _queries(pages: list[np.ndarray], n: int = 12) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(pages), n)
    return [
        _unit(pages[p][rng.integers(0, len(pages[p]), 8)] + 0.2 * rng.normal(size=(8, DIM)))
        for p in picks
    ]


def _oracle(query: np.ndarray, pages: list[np.ndarray]) -> np.ndarray:
    """MaxSim of one query against every page, -inf masking by construction."""
    return np.array([float((query @ p.T).max(axis=1).sum()) for p in pages])


def _open(kind: str, folder: Path) -> Index:
    return Index.open(folder) if kind == "edge" else Index.open(location=":memory:")


def _legacy(index: Index, settings: IndexSettings, fmt: int = 1) -> None:
    """Lay out ``index`` in an older manifest format, as today's code creates that format.

    What earlier releases really wrote is in tests/fixtures/legacy (test_legacy_fixtures).
    """
    manifest = Manifest(SPEC, settings, "0.1.0", "2026-11-30T00:00:00+00:00", format=fmt)
    index.store.create(manifest.collection_spec())
    index.restore_manifest(manifest)


def _fill(index: Index, pages: list[np.ndarray], settings: IndexSettings) -> None:
    stored = []
    for i, v in enumerate(pages):
        factors = [settings.pool_factor, settings.candidate_factor, settings.coarse_factor]
        rerank, cand, coarse = ward_pool(v, factors)
        page = Page(f"sha{i // 10}", f"doc{i // 10}.pdf", i % 10 + 1, 10)
        stored.append(StoredPage(page, dense=PageVectors(rerank, cand, v.shape[0], coarse)))
    index.add_pages(stored)
    for d in range(len(pages) // 10):
        index.commit(Document(f"/data/doc{d}.pdf", f"doc{d}.pdf", f"sha{d}", 1), 10)
    index.optimize()


def _ranking(index: Index, queries: list[np.ndarray], **options) -> list[list[tuple[str, float]]]:
    hits = search_vectors(index, queries, k=10, **options)
    return [[(h.page_id, h.score) for h in row] for row in hits]


@pytest.fixture(params=["edge", "client"])
def kind(request):
    return request.param


def test_compact_exact_search_matches_the_oracle_and_the_float_twin(kind, tmp_path):
    pages = _pages()
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4)
    compact = _open(kind, tmp_path / "compact")
    compact.prepare(SPEC, settings)
    spec = compact.manifest.collection_spec()
    assert compact.manifest.format == MANIFEST_FORMAT == 6
    assert spec.coarse and spec.segmented and not spec.candidate_graph
    assert spec.datatype("pages") == "turbo8" and spec.datatype("pooled") == "turbo4"
    assert spec.layout.first_stage_on_disk
    _fill(compact, pages, settings)
    twin = _open(kind, tmp_path / "float")
    _legacy(twin, IndexSettings(pool_factor=1, candidate_factor=4, fp16=False))
    _fill(twin, pages, settings)

    ids = [f"doc{i // 10}.pdf#{i % 10 + 1}" for i in range(N_PAGES)]
    got = _ranking(compact, queries, candidates=None)
    ref = _ranking(twin, queries, candidates=None)
    overlap = []
    for q, row, twin_row in zip(queries, got, ref, strict=True):
        oracle = dict(zip(ids, _oracle(q, pages), strict=True))
        for page_id, score in row:  # every compact score is the float MaxSim, within 8 bits
            assert score == pytest.approx(oracle[page_id], abs=SCORE_ATOL)
        for page_id, score in twin_row:  # the float twin is the oracle to float32
            assert score == pytest.approx(oracle[page_id], abs=1e-4)
        # a page in one top-10 and not the other was within the tolerance of the cut
        tenth = sorted(oracle.values(), reverse=True)[9]
        for page_id in {p for p, _ in row} ^ {p for p, _ in twin_row}:
            assert abs(oracle[page_id] - tenth) <= 2 * SCORE_ATOL
        overlap.append(len({p for p, _ in row} & {p for p, _ in twin_row}) / 10)
    assert np.mean(overlap) >= 0.9  # the recall tolerance of the 8-bit layout, stated
    compact.close()
    twin.close()


def test_two_stage_equals_exact_when_the_candidates_cover_the_corpus(kind, tmp_path):
    pages = _pages(seed=3)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=2, candidate_factor=8)
    index = _open(kind, tmp_path / "idx")
    index.prepare(SPEC, settings)
    _fill(index, pages, settings)
    assert _ranking(index, queries, candidates=N_PAGES) == _ranking(index, queries, candidates=None)
    # and with fewer candidates every hit still carries its exact rerank score
    every = search_vectors(index, queries, k=N_PAGES, candidates=None)
    for row, full in zip(_ranking(index, queries, candidates=20), every, strict=True):
        exact = {h.page_id: h.score for h in full}
        for page_id, score in row:
            assert score == pytest.approx(exact[page_id], abs=1e-6)
    index.close()


@pytest.mark.parametrize("fmt", [4, 5, 6])
def test_the_staged_first_stage_picks_what_the_same_stages_in_numpy_pick(kind, fmt, tmp_path):
    """Coarse scan with the pooled query, top 10 x C pages; their candidates, top C; as numpy.

    Formats 5 and 6 (today's) hold the first stage's vectors in 4 bits, format 4 in 8 bits.
    """
    pages = _pages(seed=13)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    index = _open(kind, tmp_path / "staged")
    _legacy(index, settings, fmt)
    _fill(index, pages, settings)
    assert index.has_coarse_vectors
    assert (index.manifest.collection_spec().datatype("coarse") == "turbo4") == (fmt >= 5)
    ids = [f"doc{i // 10}.pdf#{i % 10 + 1}" for i in range(N_PAGES)]
    pooled = [ward_pool(v, [settings.candidate_factor, settings.coarse_factor]) for v in pages]
    assert all(len(c) < len(p) for p, c in pooled)  # fewer vectors: a coarser view
    c = 2  # the coarse stage passes 20 of the 60 pages: it decides something
    passed_n = COARSE_PER_CANDIDATE * c
    found = []
    # k = candidates: every candidate comes back, so the answer is the stages' pick
    for q, row in zip(queries, search_vectors(index, queries, k=c, candidates=c), strict=True):
        short = pool_query(q, COARSE_QUERY_VECTORS)
        assert len(short) < len(q)  # the coarse stage scans with fewer query vectors
        coarse = dict(zip(ids, _oracle(short, [cv for _, cv in pooled]), strict=True))
        first = dict(zip(ids, _oracle(q, [pv for pv, _ in pooled]), strict=True))
        passed = sorted(coarse, key=lambda p: -coarse[p])[:passed_n]
        want = sorted(passed, key=lambda p: -first[p])[:c]
        got = {h.page_id for h in row}
        found.append(len(set(want) & got) / c)
        coarse_cut, cut = coarse[passed[-1]], first[want[-1]]
        for page_id in got ^ set(want):  # a swap only near one stage's cut, within 4 bits
            near = min(abs(coarse[page_id] - coarse_cut), abs(first[page_id] - cut))
            assert near <= 2 * STAGE_ATOL
    assert np.mean(found) >= 0.9  # the 4-bit first stage's recall tolerance, stated
    info = index.info()
    assert 1 <= info.coarse_vectors_per_page < info.pooled_vectors_per_page
    # 8-bit rerank vectors; candidate and coarse vectors in 4 bits (formats 5, 6) or 8
    first_stage = info.pooled_vectors_per_page + info.coarse_vectors_per_page
    bits = 4 if fmt >= 5 else 8
    assert info.bytes_per_page == pytest.approx(
        (info.vectors_per_page + first_stage * bits / 8) * DIM
    )
    index.close()


def test_the_coarse_stage_scans_with_the_pooled_query(kind, tmp_path):
    """The pages the coarse stage passes are those numpy passes with the pooled query."""
    pages = _pages(seed=17)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    index = _open(kind, tmp_path / "pooled")
    index.prepare(SPEC, settings)
    _fill(index, pages, settings)
    ids = [f"doc{i // 10}.pdf#{i % 10 + 1}" for i in range(N_PAGES)]
    coarse_vectors = [ward_pool(v, [settings.coarse_factor])[0] for v in pages]
    n = 15  # pass 15 pages and keep them all: what comes back is the coarse stage's pass
    differs = 0
    for q in queries:
        (got,) = index.hybrid(
            [HybridQuery(q, None, candidates=n, coarse=n, coarse_query=1, channel_limit=n)], k=n
        )
        short = pool_query(q, 1)
        assert short.shape == (1, DIM)
        assert np.allclose(short[0], q.sum(axis=0), atol=1e-5)  # one cluster: the sum
        pooled = dict(zip(ids, _oracle(short, coarse_vectors), strict=True))
        full = dict(zip(ids, _oracle(q, coarse_vectors), strict=True))
        want = sorted(pooled, key=lambda p: -pooled[p])[:n]
        cut = pooled[want[-1]]
        passed = {f"{r.payload['doc_path']}#{r.payload['page_number']}" for r in got}
        for page_id in passed ^ set(want):  # a swap only near the cut, within 4 bits
            gap = abs(pooled[page_id] - cut) / np.linalg.norm(short)
            assert gap <= STAGE_ATOL
        differs += set(want) != set(sorted(full, key=lambda p: -full[p])[:n])
    assert differs  # the pooled query passes other pages than the full one would
    index.close()


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_server_collection_of_format_2_or_3_answers_as_the_oracle_does(fmt):
    """Formats 2 (fp16 candidates) and 3 search as they did on a server: no coarse stage.

    Embedded indexes of these formats, as their releases wrote them, are
    test_legacy_fixtures' format-2 and format-3.
    """
    pages = _pages(seed=9)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4)
    index = Index.open(location=":memory:")
    _legacy(index, settings, fmt)
    _fill(index, pages, settings)
    spec = index.manifest.collection_spec()
    assert index.manifest.format == fmt and not spec.candidate_graph
    assert spec.datatype("pooled") == ("turbo8" if fmt == 3 else "float16")
    assert not index.has_candidate_graph
    assert not spec.coarse and not index.has_coarse_vectors
    ids = [f"doc{i // 10}.pdf#{i % 10 + 1}" for i in range(N_PAGES)]
    # what the first stage scans: each page's candidate vectors, in float here
    cands = [ward_pool(v, [settings.candidate_factor])[0] for v in pages]
    found = []
    # k = candidates: every candidate comes back, so the answer is the first stage's pick
    hits = search_vectors(index, queries, k=20, candidates=20)
    for q, row in zip(queries, hits, strict=True):
        first = dict(zip(ids, _oracle(q, cands), strict=True))
        want = sorted(first, key=lambda p: -first[p])[:20]
        got = {h.page_id for h in row}
        found.append(len(set(want) & got) / 20)
        cut = first[want[-1]]
        for page_id in got ^ set(want):  # a swap only near the 20th candidate's score
            assert abs(first[page_id] - cut) <= 2 * SCORE_ATOL
    assert np.mean(found) >= 0.9  # the first stage's tolerance, as the rerank's above
    info = index.info()
    candidate_bytes = 1 if fmt == 3 else 2
    assert info.bytes_per_page == pytest.approx(
        (info.vectors_per_page + info.pooled_vectors_per_page * candidate_bytes) * DIM
    )
    index.close()


def test_a_new_index_has_no_graph_to_walk(tmp_path):
    with Index.open(tmp_path / "new") as index:
        index.prepare(SPEC, IndexSettings())
        _fill(index, _pages()[:10], IndexSettings())
        assert not index.has_candidate_graph
        with pytest.raises(PagelensError, match="needs a graph on the candidate vectors"):
            search_vectors(index, _queries(_pages())[:1], first_stage="hnsw")


@pytest.mark.parametrize("factor", [0, -3, 2.5, "48"])
def test_a_coarse_factor_that_is_not_a_whole_number_is_refused(factor):
    with pytest.raises(PagelensError, match="coarse_factor"):
        IndexSettings(coarse_factor=factor)


def test_an_unknown_format_is_refused_with_how_to_rebuild(tmp_path):
    folder = tmp_path / "future"
    with Index.open(folder) as index:
        index.prepare(SPEC, IndexSettings())
        payload = {**index.manifest.to_payload(), "format": 99}
        index.store.upsert([PointRecord(MANIFEST_POINT_ID, payload)])
    with pytest.raises(IndexMismatchError, match=r"format 99 is not supported.*rebuild"):
        Index.open(folder)


def test_a_document_is_searchable_once_it_commits(kind, tmp_path):
    """Pages of a document still being written (pending mark) are not answers yet."""
    pages = _pages(seed=7)[:20]
    settings = IndexSettings(pool_factor=1, candidate_factor=4)
    index = _open(kind, tmp_path / "idx")
    index.prepare(SPEC, settings)
    _fill(index, pages[:10], settings)  # doc0, committed
    late = Document("/data/doc1.pdf", "doc1.pdf", "sha1", 1)
    index.begin_document(late)
    stored = []
    for i, v in enumerate(pages[10:]):
        rerank, cand = ward_pool(v, [1, 4])
        page = Page("sha1", "doc1.pdf", i + 1, 10)
        stored.append(StoredPage(page, dense=PageVectors(rerank, cand, v.shape[0])))
    index.add_pages(stored)
    query = [_unit(pages[12][:8])]  # a question about a page of the pending document
    for candidates in (None, 200):
        (hits,) = search_vectors(index, query, k=20, candidates=candidates)
        assert {h.doc_path for h in hits} == {"doc0.pdf"}
    index.commit(late, 10)
    index.end_document("sha1")
    (hits,) = search_vectors(index, query, k=1)
    assert (hits[0].doc_path, hits[0].page_number) == ("doc1.pdf", 3)
    index.close()


class _Shard:
    """The engine's shard, but its optimize fails as Qdrant Edge words the failure."""

    def __init__(self, shard, message: str) -> None:
        self._shard, self._message = shard, message

    def optimize(self) -> None:
        raise Exception(self._message)  # what Qdrant Edge raises

    def __getattr__(self, name):
        return getattr(self._shard, name)


def test_an_index_the_engine_has_no_room_to_optimize_is_kept_and_searchable(tmp_path, caplog):
    """At 300k pages the engine asked for 22.6 GiB free to optimize a 12 GB index."""
    pages = _pages(seed=11)
    settings = IndexSettings(pool_factor=1, candidate_factor=4)
    with Index.open(tmp_path / "idx") as index:
        index.prepare(SPEC, settings)
        real = index.store._shard
        index.store._shard = _Shard(
            real,
            "Service runtime error: Not enough space available for optimization, "
            "needed: 22.64 GiB, available: 21.08 GiB",
        )
        _fill(index, pages, settings)  # ends in optimize(): a warning, not a failure
        assert "not optimized" in caplog.text and "22.64 GiB" in caplog.text
        ids = [f"doc{i // 10}.pdf#{i % 10 + 1}" for i in range(N_PAGES)]
        query = _queries(pages)[0]
        oracle = dict(zip(ids, _oracle(query, pages), strict=True))
        (row,) = _ranking(index, [query], candidates=None)
        assert len(row) == 10
        for page_id, score in row:  # every page is there, scored as the oracle scores it
            assert score == pytest.approx(oracle[page_id], abs=SCORE_ATOL)
        tenth = sorted(oracle.values(), reverse=True)[9]
        assert min(oracle[p] for p, _ in row) >= tenth - 2 * SCORE_ATOL
        # any other failure of the engine still stops the run, named
        index.store._shard = _Shard(real, "Service runtime error: segment is broken")
        with pytest.raises(PagelensError, match="cannot optimize the index: .*segment is broken"):
            index.optimize()
        index.store._shard = real


def _on_disk(kind: str, index: Index, folder: Path) -> dict[str, bool]:
    """Which named vectors the engine maps from disk, as each backend was configured."""
    if kind == "edge":
        config = json.loads((folder / "qdrant-edge" / "edge_config.json").read_text())
        return {k: bool(v.get("on_disk")) for k, v in config["vectors"].items()}
    store = index.store
    params = store._client.get_collection(store.collection).config.params.vectors
    return {k: bool(v.on_disk) for k, v in params.items()}


@pytest.mark.parametrize("fmt", [5, 6])
def test_the_first_stage_is_mapped_from_disk_since_format_6(kind, fmt, tmp_path):
    """Format 6 maps the candidate and coarse vectors as the rerank vectors; 5 held them in RAM.

    Both backends are configured alike from the one CollectionSpec.
    """
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    index = _open(kind, tmp_path / "idx")
    _legacy(index, settings, fmt)
    assert _on_disk(kind, index, tmp_path / "idx") == {
        "pages": True,
        "pooled": fmt >= 6,
        "coarse": fmt >= 6,
    }
    index.close()


def test_search_options_set_the_coarse_stages_query_vectors(kind, tmp_path):
    """``coarse_query_vectors`` reaches the coarse stage; a bad value is refused up front."""
    from pagelens.search import SearchOptions

    pages = _pages(seed=37)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    index = _open(kind, tmp_path / "idx")
    index.prepare(SPEC, settings)
    _fill(index, pages, settings)
    c = 2  # k = candidates: every candidate comes back, so the answer is the stages' pick
    for clusters in (1, None):
        got = search_vectors(index, queries, k=c, candidates=c, coarse_query_vectors=clusters)
        coarse = COARSE_PER_CANDIDATE * c
        plans = [
            HybridQuery(
                q, None, candidates=c, coarse=coarse, coarse_query=clusters, channel_limit=c
            )
            for q in queries
        ]
        want = index.hybrid(plans, k=c)
        for row, records in zip(got, want, strict=True):
            ids = {f"{r.payload['doc_path']}#{r.payload['page_number']}" for r in records}
            assert {h.page_id for h in row} == ids
    assert SearchOptions().coarse_query_vectors == COARSE_QUERY_VECTORS
    for bad in (0, -1, 2.5, True):
        with pytest.raises(PagelensError, match="coarse_query_vectors .* got"):
            SearchOptions(coarse_query_vectors=bad)
    index.close()


def _segments(index: Index) -> int:
    """Segments of an embedded index, the empty appendable one included."""
    return int(index.store._shard.info().segments_count)


def _fill_in_runs(index: Index, pages: list[np.ndarray], settings: IndexSettings) -> None:
    """Store a document at a time, as an indexing job writes them; then optimize."""
    factors = [settings.pool_factor, settings.candidate_factor, settings.coarse_factor]
    for d in range(len(pages) // 10):
        stored = []
        for i in range(10 * d, 10 * d + 10):
            rerank, cand, coarse = ward_pool(pages[i], factors)
            page = Page(f"sha{d}", f"doc{d}.pdf", i % 10 + 1, 10)
            stored.append(StoredPage(page, dense=PageVectors(rerank, cand, len(pages[i]), coarse)))
        index.add_pages(stored)
        index.commit(Document(f"/data/doc{d}.pdf", f"doc{d}.pdf", f"sha{d}", 1), 10)
    index.optimize()


def test_an_index_sealed_into_segments_answers_as_one_segment_does(tmp_path, monkeypatch):
    """The embedded store seals a segment each SEGMENT_POINTS points, for the search pool.

    Segments change where pages live, not what a search finds: exact search, the
    staged first stage and two-stage search return the pages and scores of the same
    pages written into one segment.
    """
    import pagelens.storage.edge as edge

    pages = _pages(seed=19)
    queries = _queries(pages)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    monkeypatch.setattr(edge, "SEAL_MIN_KB", 1)  # these pages are far smaller than real ones
    monkeypatch.setattr(edge, "SEGMENT_POINTS", 10**9)
    one = Index.open(tmp_path / "one")
    one.prepare(SPEC, settings)
    _fill_in_runs(one, pages, settings)
    monkeypatch.setattr(edge, "SEGMENT_POINTS", 15)  # a document and its commit record
    many = Index.open(tmp_path / "many")
    many.prepare(SPEC, settings)
    _fill_in_runs(many, pages, settings)
    assert _segments(one) == 2  # the optimized segment and a new empty appendable one
    assert _segments(many) >= 4
    for options in ({"candidates": None}, {"candidates": 2}, {"candidates": 20}):
        got, want = _ranking(many, queries, **options), _ranking(one, queries, **options)
        assert [[p for p, _ in row] for row in got] == [[p for p, _ in row] for row in want]
        for row, ref in zip(got, want, strict=True):
            assert [s for _, s in row] == pytest.approx([s for _, s in ref], abs=1e-5)
    one.close()
    many.close()


def test_segment_points_is_the_embedded_index_knob(tmp_path, monkeypatch):
    """``Index.open(path, segment_points=...)``: 0 never seals, a few seal often."""
    import pagelens.storage.edge as edge

    monkeypatch.setattr(edge, "SEAL_MIN_KB", 1)  # these pages are far smaller than real ones
    pages = _pages(seed=31)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    segments = {}
    for every in (0, 15):
        with Index.open(tmp_path / f"idx{every}", segment_points=every) as index:
            index.prepare(SPEC, settings)
            _fill_in_runs(index, pages, settings)
            segments[every] = _segments(index)
    assert segments[0] == 2  # one segment, optimized at the end, and a new empty appendable
    assert segments[15] >= 4
    with pytest.raises(PagelensError, match="segment_points .* got -1"):
        Index.open(tmp_path / "bad", segment_points=-1)
    with pytest.raises(PagelensError, match="segment_points is only meaningful with path"):
        Index.open(location=":memory:", segment_points=0)


def test_an_index_made_before_segments_is_not_sealed(tmp_path, monkeypatch):
    """Formats before 6 keep the engine's merge settings: it would merge each seal back."""
    import pagelens.storage.edge as edge

    pages = _pages(seed=23)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    monkeypatch.setattr(edge, "SEAL_MIN_KB", 1)
    with Index.open(tmp_path / "idx") as index:
        _legacy(index, settings, 5)
    config_path = tmp_path / "idx" / "qdrant-edge" / "edge_config.json"
    config = json.loads(config_path.read_text())
    assert not (config.get("optimizers") or {}).get("default_segment_number")
    monkeypatch.setattr(edge, "SEGMENT_POINTS", 15)
    calls = []
    with Index.open(tmp_path / "idx") as index:  # the format is read back from the manifest
        real = index.store.optimize
        monkeypatch.setattr(index.store, "optimize", lambda: calls.append(1) or real())
        _fill_in_runs(index, pages, settings)
        assert len(calls) == 1  # the run's own optimize() at its end, no seal before it
        (row,) = _ranking(index, _queries(pages)[:1], candidates=None)
        assert len(row) == 10
        # nor does a repair's rebuild seal it: the fresh shard keeps one segment
        index.store.rebuild(index.manifest.collection_spec(), list(index.store.point_ids()))
        assert _segments(index) == 1
        assert _ranking(index, _queries(pages)[:1], candidates=None) == [row]


def test_an_index_of_format_6_is_sealed_as_it_grows(tmp_path, monkeypatch):
    """The twin of the test above: the same run on today's format seals segments."""
    import pagelens.storage.edge as edge

    pages = _pages(seed=23)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    monkeypatch.setattr(edge, "SEAL_MIN_KB", 1)
    with Index.open(tmp_path / "idx") as index:
        index.prepare(SPEC, settings)
    config_path = tmp_path / "idx" / "qdrant-edge" / "edge_config.json"
    config = json.loads(config_path.read_text())
    assert config["optimizers"]["default_segment_number"] == edge.MAX_SEGMENTS
    monkeypatch.setattr(edge, "SEGMENT_POINTS", 15)
    calls = []
    with Index.open(tmp_path / "idx") as index:
        real = index.store.optimize
        monkeypatch.setattr(index.store, "optimize", lambda: calls.append(1) or real())
        _fill_in_runs(index, pages, settings)
        assert len(calls) > 1


@pytest.mark.parametrize("room", [True, False])
def test_a_rebuild_seals_segments_as_writes_do_and_a_refusal_for_room_is_a_warning(
    room, tmp_path, monkeypatch, caplog
):
    """``check --repair`` copies the points into a fresh shard, sealed as upsert() seals."""
    import pagelens.storage.edge as edge

    pages = _pages(seed=29)
    settings = IndexSettings(pool_factor=1, candidate_factor=4, coarse_factor=12)
    monkeypatch.setattr(edge, "SEAL_MIN_KB", 1)
    with Index.open(tmp_path / "idx") as index:
        index.prepare(SPEC, settings)
        _fill_in_runs(index, pages, settings)
        want = _ranking(index, _queries(pages), candidates=None)
        monkeypatch.setattr(edge, "SEGMENT_POINTS", 15)
        store = index.store
        if not room:  # the fresh shard's optimize fails as the engine words no room
            create = store._create_shard
            message = "Not enough space available for optimization, needed: 9 GiB"
            monkeypatch.setattr(store, "_create_shard", lambda *a: _Shard(create(*a), message))
        store.rebuild(index.manifest.collection_spec(), list(store.point_ids()))
        # 256 points a batch: these ~70 are sealed once, into a segment and a new appendable
        assert _segments(index) == (2 if room else 1)
        assert ("not optimized" in caplog.text) == (not room)
        got = _ranking(index, _queries(pages), candidates=None)
        assert [[p for p, _ in row] for row in got] == [[p for p, _ in row] for row in want]
