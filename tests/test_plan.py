"""The stored layout and the query plan: one owner each, translated alike by both backends."""

import json
import threading

import numpy as np
import pytest

from pagelens.plan import Fusion, HybridQuery, Stage, plan_queries
from pagelens.pooling import pool_query
from pagelens.serve.locking import LockedStore
from pagelens.storage.base import PayloadFilter, SparseVector
from pagelens.storage.edge import EdgeStore
from pagelens.storage.layout import (
    BYTES_PER_VALUE,
    FORMATS,
    MANIFEST_FORMAT,
    CollectionSpec,
)
from pagelens.storage.server import ServerStore

DIM, TEXT_DIM = 8, 6


def _unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _query(n=5, seed=0):
    return _unit(np.random.default_rng(seed).normal(size=(n, DIM)))


def test_a_staged_dense_query_is_planned_coarse_then_candidates_then_rerank():
    q = _query(9)
    where = PayloadFilter(doc_paths=("a.pdf",))
    query = HybridQuery(q, None, candidates=30, coarse=300, coarse_query=3, channel_limit=10)
    plan = plan_queries([query], k=10, where=where)
    (request,) = plan.requests
    rerank = request.root
    assert isinstance(rerank, Stage) and request.with_payload
    assert (rerank.using, rerank.limit, rerank.where, rerank.exact) == ("pages", 10, None, False)
    (candidates,) = rerank.inputs
    assert (candidates.using, candidates.limit, candidates.where) == ("pooled", 30, None)
    (coarse,) = candidates.inputs
    assert (coarse.using, coarse.limit, coarse.where, coarse.exact) == ("coarse", 300, where, True)
    assert coarse.inputs == ()
    # the coarse stage scans with the question pooled; the others with every token
    np.testing.assert_array_equal(coarse.vector, pool_query(q, 3))
    assert len(coarse.vector) == 3
    np.testing.assert_array_equal(candidates.vector, q)
    np.testing.assert_array_equal(rerank.vector, q)


def test_an_exact_query_scores_every_page_on_its_rerank_vectors():
    (request,) = plan_queries([HybridQuery(_query(), None, candidates=None)], k=7).requests
    assert isinstance(request.root, Stage)
    assert (request.root.using, request.root.limit, request.root.inputs) == ("pages", 7, ())


def test_a_fused_query_has_one_fused_request_and_one_per_channel():
    sparse = SparseVector((1, 5), (0.5, 0.25))
    text = _unit(np.ones((2, TEXT_DIM)))
    query = HybridQuery(
        _query(), sparse, text=text, candidates=None, fusion="rrf", weights={"bm25": 2}
    )
    plan = plan_queries([query, HybridQuery(_query(), None, candidates=None)], k=4)
    fused, dense, text_own, bm25, alone = plan.requests
    assert isinstance(fused.root, Fusion) and fused.with_payload and fused.root.limit == 4
    assert fused.root.weights == (1.0, 1.0, 2.0)  # dense, text, bm25
    assert [s.using for s in fused.root.inputs] == ["pages", "text_pages", "bm25"]
    assert [r.root.using for r in (dense, text_own, bm25)] == ["pages", "text_pages", "bm25"]
    assert not any(r.with_payload for r in (dense, text_own, bm25))
    assert plan.slots == [(0, [("dense", 1), ("text", 2), ("bm25", 3)]), (4, [("dense", 4)])]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_both_backends_create_the_vectors_the_layout_names(fmt, tmp_path):
    """Names, datatypes and on-disk choices come from the layout alone, on either engine."""
    spec = CollectionSpec(dim=DIM, format=fmt, text_dim=TEXT_DIM)
    want = {v.name: (v.datatype, bool(v.on_disk), v.multi) for v in spec.vectors()}
    edge = EdgeStore(tmp_path / "edge")
    edge.create(spec)
    edge.close()
    config = json.loads((tmp_path / "edge" / "qdrant-edge" / "edge_config.json").read_text())
    got = {
        name: (
            str(v["datatype"]).lower(),
            bool(v.get("on_disk")),
            v.get("multivector_config") is not None,
        )
        for name, v in config["vectors"].items()
    }
    assert got == want
    client = ServerStore(path=str(tmp_path / "client"))
    client.create(spec)
    params = client._client.get_collection("pagelens").config.params.vectors
    got = {
        name: (str(v.datatype.value).lower(), bool(v.on_disk), v.multivector_config is not None)
        for name, v in params.items()
    }
    client.close()
    assert got == want


def test_the_layout_of_today_and_of_a_single_vector_index():
    spec = CollectionSpec(dim=DIM)
    assert spec.format == MANIFEST_FORMAT
    assert [v.name for v in spec.vectors()] == ["pages", "pooled", "coarse"]
    single = CollectionSpec(dim=DIM, single=True, text_dim=TEXT_DIM)
    names = {v.name: v for v in single.vectors()}
    assert not names["pages"].multi and names["pages"].hnsw_m > 0
    assert set(names) == {"pages", "text_pages", "text_pooled", "text_coarse"}
    assert single.expected_dims() == {
        "pages": DIM,
        "text_pages": TEXT_DIM,
        "text_pooled": TEXT_DIM,
        "text_coarse": TEXT_DIM,
    }


def test_vector_bytes_count_each_vector_in_its_own_datatype():
    spec = CollectionSpec(dim=DIM, format=6, text_dim=TEXT_DIM)
    counts = {"vectors": 10, "pooled_vectors": 4, "coarse_vectors": 2, "text_vectors": 3}
    want = (10 * BYTES_PER_VALUE["turbo8"] + 6 * BYTES_PER_VALUE["turbo4"]) * DIM
    want += 3 * BYTES_PER_VALUE["turbo8"] * TEXT_DIM
    assert spec.vector_bytes(counts) == want
    old = CollectionSpec(dim=DIM, format=1, fp16=False)
    assert old.vector_bytes({"vectors": 10, "pooled_vectors": 4}) == 14 * 4 * DIM


class _Probe:
    """A store stand-in that records whether its caller held the lock."""

    def __init__(self, lock_of):
        self.lock_of = lock_of
        self.held = []

    def count(self, where):
        self.held.append(self.lock_of()._is_owned())
        return 3

    def point_ids(self):
        self.held.append(self.lock_of()._is_owned())
        yield from ("a", "b")

    def a_method_added_later(self, x, *, y):
        self.held.append(self.lock_of()._is_owned())
        return x + y


def test_a_locked_store_runs_every_method_under_its_lock():
    holder = {}
    probe = _Probe(lambda: holder["locked"]._lock)
    locked = LockedStore(probe)
    holder["locked"] = locked
    assert isinstance(locked._lock, type(threading.RLock()))
    assert locked.count(PayloadFilter()) == 3
    assert locked.a_method_added_later(1, y=2) == 3  # not listed anywhere by hand
    ids = locked.point_ids()
    assert probe.held == [True, True, True]  # the generator was read out under the lock
    assert not locked._lock._is_owned() and list(ids) == ["a", "b"]
