"""Server backend: a Qdrant server or cluster through qdrant-client.

The same class serves qdrant-client's local mode (``location=":memory:"`` or a
``path``), which stands in for a server in the tests: one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pagelens.errors import PagelensError, StoreError, check_whole
from pagelens.storage.base import (
    BM25,
    COARSE_VECTORS,
    DENSE,
    DENSE_VECTORS,
    PAGES,
    CollectionSpec,
    HybridQuery,
    PayloadFilter,
    PointRecord,
    ScoredRecord,
    SparseVector,
    StoredPoint,
    channel_weights,
    coarse_query_vectors,
    dense_layout,
    dense_queries,
    engine_errors,
    hybrid_records,
    plan_hybrid,
)
from pagelens.storage.edge import _KEYWORD_FIELDS, _as_lists, _records, build_filter, stored_point
from pagelens.types import MultiVector

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSpec:
    """How a collection spreads over a Qdrant cluster; given when it is created.

    ``None`` leaves a setting to the server (one shard per node, one replica, a
    write consistency of one).
    """

    shards: int | None = None  # shard_number
    replicas: int | None = None  # replication_factor: copies of each shard
    write_consistency: int | None = None  # replicas that must acknowledge a write

    def __post_init__(self) -> None:
        for name in ("shards", "replicas", "write_consistency"):
            if getattr(self, name) is not None:
                check_whole(name, getattr(self, name), 1)
        if self.write_consistency and self.write_consistency > (self.replicas or 1):
            raise PagelensError(
                f"write_consistency {self.write_consistency} exceeds the replicas "
                f"({self.replicas or 1}): a write could never be acknowledged"
            )


class ServerStore:
    """One collection on a Qdrant server (``url``) or in qdrant-client's local mode."""

    def __init__(
        self,
        *,
        url: str | None = None,
        api_key: str | None = None,
        location: str | None = None,
        path: str | None = None,
        collection: str = "pagelens",
        timeout: int = 60,
        cluster: ClusterSpec | None = None,
    ) -> None:
        from qdrant_client import QdrantClient, models

        given = [name for name, v in (("url", url), ("location", location), ("path", path)) if v]
        if len(given) != 1:
            raise StoreError(f"give exactly one of url, location, path; got {given or 'none'}")
        self._m = models
        self.collection = collection
        self.cluster = cluster or ClusterSpec()
        self.location = f"{url or location or path}#{collection}"
        try:
            self._client = QdrantClient(
                url=url, api_key=api_key, location=location, path=path, timeout=timeout
            )
            self._exists = self._client.collection_exists(collection)
        except Exception as exc:  # connection errors come in many types
            hint = (
                "; is a Qdrant server running there? `docker compose up -d` in the pagelens "
                "checkout starts one on localhost:6333"
                if url
                else ""
            )
            raise StoreError(
                f"cannot reach Qdrant at {url or location or path}: {exc}{hint}"
            ) from exc
        self._local = url is None

    def exists(self) -> bool:
        return self._exists

    def create(self, spec: CollectionSpec) -> None:
        if self._exists:
            raise StoreError(f"{self.location}: collection {self.collection!r} already exists")
        m = self._m
        dtype, rerank_dtype, candidate_dtype = (
            getattr(m.Datatype, name.upper()) for name in spec.datatypes()
        )
        graph_m, on_disk = spec.candidate_graph_m, spec.on_disk
        maxsim = m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
        vectors = {}
        for rerank, candidates, coarse, dim in dense_layout(spec):
            if spec.single and rerank == PAGES:  # one plain vector per page, with a graph
                vectors[rerank] = m.VectorParams(
                    size=dim,
                    distance=m.Distance.DOT,
                    datatype=dtype,
                    hnsw_config=m.HnswConfigDiff(
                        m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct
                    ),
                )
                continue
            vectors[rerank] = m.VectorParams(
                size=dim,
                distance=m.Distance.DOT,
                on_disk=on_disk,
                multivector_config=maxsim,
                datatype=rerank_dtype,
                hnsw_config=m.HnswConfigDiff(m=0, ef_construct=spec.hnsw_ef_construct),
            )
            for name in [candidates] if coarse is None else [candidates, coarse]:
                vectors[name] = m.VectorParams(
                    size=dim,
                    distance=m.Distance.DOT,
                    on_disk=spec.first_stage_on_disk,
                    multivector_config=maxsim,
                    datatype=candidate_dtype,
                    hnsw_config=m.HnswConfigDiff(m=graph_m, ef_construct=spec.hnsw_ef_construct),
                )
        with engine_errors(self.location, "create the collection"):
            self._client.create_collection(
                self.collection,
                vectors_config=vectors,
                sparse_vectors_config={BM25: m.SparseVectorParams(modifier=m.Modifier.IDF)},
                shard_number=self.cluster.shards,
                replication_factor=self.cluster.replicas,
                write_consistency_factor=self.cluster.write_consistency,
                on_disk_payload=on_disk,
            )
            if not self._local:  # local mode has no payload indexes (and warns)
                for name in _KEYWORD_FIELDS:
                    self._client.create_payload_index(
                        self.collection, name, field_schema=m.PayloadSchemaType.KEYWORD
                    )
        self._exists = True

    def close(self) -> None:
        with engine_errors(self.location, "close the connection"):
            self._client.close()

    def _require(self) -> None:
        if not self._exists:
            raise StoreError(
                f"{self.location}: collection {self.collection!r} does not exist yet "
                "(run `pagelens index` first)"
            )

    def upsert(self, points: Sequence[PointRecord], *, durable: bool = True) -> None:
        # a server writes each change to its write-ahead log before it acknowledges it
        if not points:
            return
        self._require()
        m = self._m
        structs = [
            m.PointStruct(
                id=p.id,
                vector={name: self._vector(v) for name, v in p.vectors.items()},
                payload=dict(p.payload),
            )
            for p in points
        ]
        with engine_errors(self.location, "write points"):
            self._client.upsert(self.collection, points=structs, wait=True)

    def _vector(self, v: MultiVector | SparseVector) -> Any:
        if isinstance(v, SparseVector):
            return self._m.SparseVector(indices=list(v.indices), values=list(v.values))
        return _as_lists(v)

    def delete(self, where: PayloadFilter, *, durable: bool = True) -> None:
        self._require()
        m = self._m
        selector = m.FilterSelector(filter=build_filter(m, where))
        with engine_errors(self.location, "delete points"):
            self._client.delete(self.collection, points_selector=selector, wait=True)

    def flush(self) -> None:
        """Nothing to do: each write was acknowledged once the server had logged it."""

    def delete_points(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        self._require()
        selector = self._m.PointIdsList(points=list(ids))
        with engine_errors(self.location, "delete points"):
            self._client.delete(self.collection, points_selector=selector, wait=True)

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        self._require()
        flt = build_filter(self._m, where)
        with engine_errors(self.location, "write payloads"):
            self._client.set_payload(self.collection, payload=dict(payload), points=flt, wait=True)

    def rebuild(self, spec: CollectionSpec, ids: Sequence[str]) -> None:
        """Refuse: a server's storage is the server's to repair."""
        raise StoreError(
            f"{self.location}: the server could not read some points; pagelens does not "
            "rebuild a server's collection: restore it from a Qdrant snapshot, or index "
            "into a new collection"
        )

    def optimize(self) -> None:
        """Do nothing: a server builds its indexes in the background."""

    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        self._require()
        offset = None
        flt = build_filter(self._m, where)
        while True:
            with engine_errors(self.location, "read payloads"):
                records, offset = self._client.scroll(
                    self.collection, scroll_filter=flt, limit=1000, offset=offset, with_payload=True
                )
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return

    def count(self, where: PayloadFilter) -> int:
        self._require()
        flt = build_filter(self._m, where)
        with engine_errors(self.location, "count points"):
            result = self._client.count(self.collection, count_filter=flt, exact=True)
        return int(result.count)

    def point_ids(self) -> Iterator[str]:
        self._require()
        offset = None
        while True:
            with engine_errors(self.location, "list point ids"):
                records, offset = self._client.scroll(
                    self.collection, limit=1000, offset=offset, with_payload=False
                )
            for record in records:
                yield str(record.id)
            if offset is None:
                return

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        self._require()
        with engine_errors(self.location, "read points"):
            records = self._client.retrieve(
                self.collection, ids=list(ids), with_payload=True, with_vectors=True
            )
        return [stored_point(r.id, r.payload, r.vector) for r in records]

    def _dense(
        self,
        query: MultiVector,
        limit: int,
        candidates: int | None,
        flt: Any,
        channel: str,
        first_stage: str = "exact",
        single: bool = False,
        coarse: int | None = None,
        coarse_query: int | None = None,
    ) -> dict[str, Any]:
        """Build a dense channel: MaxSim on its rerank vectors, two-stage through its candidates."""
        m = self._m
        rerank, pooled = DENSE_VECTORS[channel]
        if single:  # one vector: candidates from its graph (or a scan), scored as they come
            flat = _as_lists(query.reshape(1, -1))[0]
            exact = candidates is None or first_stage == "exact"
            stage1 = m.Prefetch(
                query=flat,
                using=rerank,
                limit=max(candidates or 0, limit),
                filter=flt,
                params=m.SearchParams(exact=True) if exact else None,
            )
            return {"query": flat, "using": rerank, "prefetch": [stage1]}
        vectors = _as_lists(query)
        if candidates is None:
            return {"query": vectors, "using": rerank, "filter": flt}
        limit = max(candidates, limit)
        exact = m.SearchParams(exact=True)
        if coarse is not None:  # the coarse scan brings pages for the candidate vectors
            stage0 = m.Prefetch(
                query=_as_lists(coarse_query_vectors(query, coarse_query)),
                using=COARSE_VECTORS[channel],
                limit=max(coarse, limit),
                filter=flt,
                params=exact,
            )
            stage1 = m.Prefetch(query=vectors, using=pooled, limit=limit, prefetch=[stage0])
            return {"query": vectors, "using": rerank, "prefetch": [stage1]}
        stage1 = m.Prefetch(
            query=vectors,
            using=pooled,
            limit=limit,
            filter=flt,
            params=exact if first_stage == "exact" else None,
        )
        return {"query": vectors, "using": rerank, "prefetch": [stage1]}

    def _channels(self, query: HybridQuery, flt: Any) -> list[dict[str, Any]]:
        m = self._m
        out = [
            self._dense(
                v,
                query.channel_limit,
                query.candidates,
                flt,
                name,
                query.first_stage,
                single=query.single and name == DENSE,
                coarse=query.coarse,
                coarse_query=query.coarse_query,
            )
            for name, v in dense_queries(query)
        ]
        if query.sparse is not None:
            sparse = m.SparseVector(
                indices=list(query.sparse.indices), values=list(query.sparse.values)
            )
            out.append({"query": sparse, "using": BM25, "filter": flt})
        return out

    def query(
        self,
        queries: Sequence[MultiVector],
        *,
        k: int,
        candidates: int | None,
        where: PayloadFilter | None = None,
        channel: str = DENSE,
        first_stage: str = "exact",
    ) -> list[list[ScoredRecord]]:
        self._require()
        m = self._m
        flt = build_filter(m, where)
        requests = [
            m.QueryRequest(
                **self._dense(q, k, candidates, flt, channel, first_stage),
                limit=k,
                with_payload=True,
            )
            for q in queries
        ]
        with engine_errors(self.location, "search"):
            responses = self._client.query_batch_points(self.collection, requests=requests)
        return [_records(r.points) for r in responses]

    def hybrid(
        self, queries: Sequence[HybridQuery], *, k: int, where: PayloadFilter | None = None
    ) -> list[list[ScoredRecord]]:
        self._require()
        m = self._m
        flt = build_filter(m, where)

        def build(query: HybridQuery) -> tuple[Any, list[Any]]:
            channels = self._channels(query, flt)
            own = [
                m.QueryRequest(**c, limit=query.channel_limit, with_payload=False) for c in channels
            ]
            if len(channels) == 1:
                return m.QueryRequest(**channels[0], limit=k, with_payload=True), own
            fusion = (
                m.RrfQuery(rrf=m.Rrf(k=query.rrf_k, weights=channel_weights(query)))
                if query.fusion == "rrf"
                else m.FusionQuery(fusion=m.Fusion.DBSF)
            )
            prefetch = [m.Prefetch(**c, limit=query.channel_limit) for c in channels]
            fused = m.QueryRequest(prefetch=prefetch, query=fusion, limit=k, with_payload=True)
            return fused, own

        requests, layout = plan_hybrid(queries, build)
        with engine_errors(self.location, "search"):
            responses = self._client.query_batch_points(self.collection, requests=requests)
        return hybrid_records([_records(r.points) for r in responses], layout)
