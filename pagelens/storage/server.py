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
from pagelens.plan import Fusion, Request, Stage
from pagelens.storage.base import (
    PayloadFilter,
    PointRecord,
    ScoredRecord,
    SparseVector,
    StoredPoint,
    build_filter,
    check_open,
    engine_errors,
    paged,
    scored_records,
    stored_point,
    vector_list,
)
from pagelens.storage.layout import BM25, KEYWORD_FIELDS, CollectionSpec, VectorSpec
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
        self._closed = False
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
        check_open(self._closed, self.location)
        return self._exists

    def create(self, spec: CollectionSpec) -> None:
        check_open(self._closed, self.location)
        if self._exists:
            raise StoreError(f"{self.location}: collection {self.collection!r} already exists")
        m = self._m
        vectors = {v.name: self._vector_params(v) for v in spec.vectors()}
        with engine_errors(self.location, "create the collection"):
            self._client.create_collection(
                self.collection,
                vectors_config=vectors,
                sparse_vectors_config={BM25: m.SparseVectorParams(modifier=m.Modifier.IDF)},
                shard_number=self.cluster.shards,
                replication_factor=self.cluster.replicas,
                write_consistency_factor=self.cluster.write_consistency,
                on_disk_payload=spec.payload_on_disk,
            )
            if not self._local:  # local mode has no payload indexes (and warns)
                for name in KEYWORD_FIELDS:
                    self._client.create_payload_index(
                        self.collection, name, field_schema=m.PayloadSchemaType.KEYWORD
                    )
        self._exists = True

    def _vector_params(self, v: VectorSpec) -> Any:
        """qdrant-client's parameters of one named vector of the layout."""
        m = self._m
        return m.VectorParams(
            size=v.dim,
            distance=m.Distance.DOT,
            on_disk=v.on_disk,
            datatype=getattr(m.Datatype, v.datatype.upper()),
            multivector_config=(
                m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM) if v.multi else None
            ),
            hnsw_config=m.HnswConfigDiff(m=v.hnsw_m, ef_construct=v.hnsw_ef_construct),
        )

    def bind(self, spec: CollectionSpec) -> None:
        """Nothing to do: a server lays out segments itself."""

    def close(self) -> None:
        self._closed = True
        with engine_errors(self.location, "close the connection"):
            self._client.close()

    def _require(self) -> None:
        check_open(self._closed, self.location)
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
        return vector_list(v)

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
        for record in self._scroll(where, True, "read payloads"):
            yield dict(record.payload or {})

    def _scroll(self, where: PayloadFilter | None, payload: bool, doing: str) -> Iterator[Any]:
        self._require()
        flt = build_filter(self._m, where)

        def fetch(offset: Any) -> Any:
            with engine_errors(self.location, doing):
                return self._client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=1000,
                    offset=offset,
                    with_payload=payload,
                    with_vectors=False,
                )

        yield from paged(fetch)

    def count(self, where: PayloadFilter) -> int:
        self._require()
        flt = build_filter(self._m, where)
        with engine_errors(self.location, "count points"):
            result = self._client.count(self.collection, count_filter=flt, exact=True)
        return int(result.count)

    def point_ids(self) -> Iterator[str]:
        for record in self._scroll(None, False, "list point ids"):
            yield str(record.id)

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        self._require()
        with engine_errors(self.location, "read points"):
            records = self._client.retrieve(
                self.collection, ids=list(ids), with_payload=True, with_vectors=True
            )
        return [stored_point(r.id, r.payload, r.vector) for r in records]

    def search(self, requests: Sequence[Request]) -> list[list[ScoredRecord]]:
        self._require()
        m = self._m
        batch = [
            m.QueryRequest(**self._node(r.root), limit=r.root.limit, with_payload=r.with_payload)
            for r in requests
        ]
        with engine_errors(self.location, "search"):
            responses = self._client.query_batch_points(self.collection, requests=batch)
        return [scored_records(r.points) for r in responses]

    def _node(self, node: Stage | Fusion) -> dict[str, Any]:
        """qdrant-client's fields of a planned stage or fusion (pagelens.plan)."""
        m = self._m
        inputs = [m.Prefetch(**self._node(s), limit=s.limit) for s in node.inputs] or None
        if isinstance(node, Fusion):
            if node.method == "rrf":
                weights = list(node.weights) if node.weights is not None else None
                query: Any = m.RrfQuery(rrf=m.Rrf(k=node.rrf_k, weights=weights))
            else:
                query = m.FusionQuery(fusion=m.Fusion.DBSF)
            return {"query": query, "prefetch": inputs}
        return {
            "query": self._vector(node.vector),
            "using": node.using,
            "filter": build_filter(m, node.where),
            "params": m.SearchParams(exact=True) if node.exact else None,
            "prefetch": inputs,
        }
