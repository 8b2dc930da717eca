"""The query plan: the stages of a search as data, the same for every backend.

A search asks for :class:`HybridQuery` objects (one per question: which
channels, how many candidates, which fusion); :func:`plan_queries` lays each out
as engine requests built of :class:`Stage` and :class:`Fusion` nodes, and a
:class:`~pagelens.storage.store.Store` translates those nodes into its engine's
own requests (Qdrant Edge's ``Query``/``Prefetch``, qdrant-client's
``QueryRequest``/``Prefetch``) and runs them in one batch. Which stage scans
what, with which question vectors and limits, is decided here alone.

A dense channel in stages (indexes since manifest format 4)::

    rerank   MaxSim(question, pages)            top `limit`
      <- candidates MaxSim(question, pooled)    top max(candidates, limit)
        <- coarse MaxSim(pooled question, coarse), exact scan, top max(coarse, ...)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from pagelens.errors import PagelensError
from pagelens.pooling import pool_query
from pagelens.storage.base import PayloadFilter, ScoredRecord, SparseVector
from pagelens.storage.layout import BM25, CHANNEL_VECTORS, DENSE, TEXT
from pagelens.types import MultiVector

FUSIONS = ("dbsf", "rrf")
FIRST_STAGES = ("exact", "hnsw")


@dataclass(frozen=True)
class HybridQuery:
    """One query over several channels, fused by the engine.

    Attributes:
        dense: query multi-vector for MaxSim on ``pages`` (two-stage through
            ``pooled`` when ``candidates`` is set), or ``None`` to leave it out.
        sparse: query BM25 vector, or ``None`` to leave it out.
        text: query multi-vector of the text encoder, for MaxSim on ``text_pages``
            (two-stage through ``text_pooled``), or ``None`` to leave it out.
        candidates: first-stage candidates of each dense channel; ``None`` = exact.
        first_stage: how candidates are drawn from the pooled vectors: ``"exact"``
            (a scan of every page's pooled vectors) or ``"hnsw"`` (their graph, in
            indexes that have one).
        coarse: pages the coarse vectors pass to the candidate stage (indexes of
            manifest format 4 on), or ``None`` for no coarse stage: the candidate
            vectors then score every page.
        coarse_query: the coarse stage scores pages with the query's tokens
            Ward-pooled into at most this many summed vectors
            (:func:`pagelens.pooling.pool_query`); ``None`` = with every token.
        channel_limit: results each channel contributes to the fusion.
        fusion: ``"rrf"`` (reciprocal rank fusion) or ``"dbsf"`` (Qdrant's
            distribution-based score fusion: scores normalised per channel, summed).
        weights: RRF weight per channel name (``{"dense": 1, "bm25": 2}``); a
            channel left out weighs 1; ``None`` = equal.
        rrf_k: the RRF constant.
        single: the dense channel holds one vector per page (``dense`` is (1, dim)).

    """

    dense: MultiVector | None
    sparse: SparseVector | None
    text: MultiVector | None = None
    candidates: int | None = 200
    first_stage: str = "exact"
    coarse: int | None = None
    coarse_query: int | None = None
    channel_limit: int = 100
    fusion: str = "dbsf"
    weights: Mapping[str, float] | None = None
    rrf_k: int = 60
    single: bool = False


@dataclass(frozen=True)
class Stage:
    """Score points by one named vector and keep the best ``limit``.

    ``vector`` is the question as that named vector takes it: ``(n, dim)`` for a
    multi-vector (MaxSim), ``(dim,)`` for a plain vector, or a sparse vector.
    Without ``inputs`` the stage scores every point ``where`` admits (``exact``:
    by a full scan, not a graph); with them, only the points they bring
    (Qdrant's prefetch).
    """

    using: str
    vector: MultiVector | SparseVector
    limit: int
    where: PayloadFilter | None = None
    exact: bool = False
    inputs: tuple[Stage, ...] = ()


@dataclass(frozen=True)
class Fusion:
    """Fuse the results of several channels' stages (``"rrf"`` or ``"dbsf"``)."""

    method: str
    inputs: tuple[Stage, ...]
    limit: int
    rrf_k: int = 60
    weights: tuple[float, ...] | None = None  # RRF weights, in ``inputs`` order


@dataclass(frozen=True)
class Request:
    """One engine request: a stage or a fusion, with or without payloads."""

    root: Stage | Fusion
    with_payload: bool


# (request of the fused results, [(channel, request of its own results)]) per query
Slots = list[tuple[int, list[tuple[str, int]]]]


@dataclass(frozen=True)
class Plan:
    """A batch of engine requests for some queries, and which answers which."""

    requests: tuple[Request, ...]
    slots: Slots

    def records(self, results: Sequence[list[ScoredRecord]]) -> list[list[ScoredRecord]]:
        """Fused records per query, each marked with the channels whose own results held it."""
        out = []
        for start, channels in self.slots:
            found = {name: {r.id for r in results[i]} for name, i in channels}
            out.append(
                [
                    ScoredRecord(
                        r.id,
                        r.score,
                        r.payload,
                        tuple(n for n, ids in found.items() if r.id in ids),
                    )
                    for r in results[start]
                ]
            )
        return out


class Searchable(Protocol):
    """What runs a plan: a :class:`~pagelens.storage.store.Store`."""

    def search(self, requests: Sequence[Request]) -> list[list[ScoredRecord]]: ...


def check_hybrid(query: HybridQuery) -> None:
    """Reject a hybrid query whose options contradict each other."""
    used = channel_names(query)
    if not used:
        raise PagelensError("a hybrid query needs a dense, text or sparse vector")
    if query.fusion not in FUSIONS:
        raise PagelensError(f"fusion must be one of {FUSIONS}, got {query.fusion!r}")
    check_first_stage(query.first_stage)
    if query.weights is not None:
        if query.fusion != "rrf":
            raise PagelensError("channel weights apply to fusion='rrf' only")
        unused = sorted(set(query.weights) - set(used))
        if unused:
            raise PagelensError(f"weights name channels {unused} that this query does not use")
        if any(not w >= 0 for w in query.weights.values()):
            raise PagelensError(f"weights must be non-negative numbers, got {dict(query.weights)}")
    if query.channel_limit < 1:
        raise PagelensError(f"channel_limit must be >= 1, got {query.channel_limit!r}")


def check_first_stage(first_stage: str) -> None:
    """Reject an unknown first-stage method."""
    if first_stage not in FIRST_STAGES:
        raise PagelensError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}")


def dense_queries(query: HybridQuery) -> list[tuple[str, MultiVector]]:
    """List the dense channels a hybrid query uses, with their query vectors, in order."""
    given = ((DENSE, query.dense), (TEXT, query.text))
    return [(name, v) for name, v in given if v is not None]


def channel_names(query: HybridQuery) -> list[str]:
    """Name the channels a hybrid query uses, in the order their stages are built."""
    names = [name for name, _ in dense_queries(query)]
    return names + [BM25] if query.sparse is not None else names


def dense_stage(
    query: HybridQuery, channel: str, vectors: MultiVector, limit: int, where: PayloadFilter | None
) -> Stage:
    """Lay out one dense channel's stages, the last keeping ``limit`` pages (module docstring)."""
    names = CHANNEL_VECTORS[channel]
    candidates = query.candidates
    if query.single and channel == DENSE:  # one vector: candidates from its graph or a scan
        flat = vectors.reshape(-1)
        exact = candidates is None or query.first_stage == "exact"
        found = Stage(names.rerank, flat, max(candidates or 0, limit), where, exact)
        return Stage(names.rerank, flat, limit, inputs=(found,))
    if candidates is None:  # the oracle: every page on its rerank vectors
        return Stage(names.rerank, vectors, limit, where)
    kept = max(candidates, limit)
    if query.coarse is not None:  # the coarse scan brings pages for the candidate vectors
        coarse_q = (
            vectors if query.coarse_query is None else pool_query(vectors, query.coarse_query)
        )
        scan = Stage(names.coarse, coarse_q, max(query.coarse, kept), where, exact=True)
        found = Stage(names.candidates, vectors, kept, inputs=(scan,))
    else:
        exact = query.first_stage == "exact"
        found = Stage(names.candidates, vectors, kept, where, exact)
    return Stage(names.rerank, vectors, limit, inputs=(found,))


def channel_stages(query: HybridQuery, where: PayloadFilter | None) -> list[Stage]:
    """Each channel's last stage, keeping ``channel_limit`` results, in channel order."""
    limit = query.channel_limit
    stages = [dense_stage(query, name, v, limit, where) for name, v in dense_queries(query)]
    if query.sparse is not None:
        stages.append(Stage(BM25, query.sparse, limit, where))
    return stages


def plan_queries(
    queries: Sequence[HybridQuery], *, k: int, where: PayloadFilter | None = None
) -> Plan:
    """Lay out one batch of engine requests for hybrid queries.

    Each query gets its fused request (``k`` results with payloads) and, when it
    has several channels, one request per channel (their own top
    ``channel_limit``, ids only): one round trip answers the fusion and tells
    which channel found what.
    """
    requests: list[Request] = []
    slots: Slots = []
    for query in queries:
        check_hybrid(query)
        stages = channel_stages(query, where)
        names = channel_names(query)
        start = len(requests)
        if len(stages) == 1:  # the fused results are the channel's own: no second request
            requests.append(Request(replace(stages[0], limit=k), with_payload=True))
            slots.append((start, [(names[0], start)]))
            continue
        weights = None
        if query.weights is not None:
            weights = tuple(float(query.weights.get(name, 1.0)) for name in names)
        fused = Fusion(query.fusion, tuple(stages), k, query.rrf_k, weights)
        requests.append(Request(fused, with_payload=True))
        slots.append((start, [(n, start + 1 + i) for i, n in enumerate(names)]))
        requests.extend(Request(stage, with_payload=False) for stage in stages)
    return Plan(tuple(requests), slots)


def run_queries(
    store: Searchable,
    queries: Sequence[HybridQuery],
    *,
    k: int,
    where: PayloadFilter | None = None,
) -> list[list[ScoredRecord]]:
    """Plan the queries, run them on ``store`` in one batch, and mark each hit's channels."""
    plan = plan_queries(queries, k=k, where=where)
    return plan.records(store.search(plan.requests))
