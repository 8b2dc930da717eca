"""Server backend: a Qdrant server or cluster through qdrant-client.

The same class serves qdrant-client's local mode (``location=":memory:"`` or a
``path``), which stands in for a server in the tests: one code path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pagelens.errors import StoreError
from pagelens.storage.base import (
    PAGES,
    POOLED,
    CollectionSpec,
    PayloadFilter,
    PointRecord,
    ScoredRecord,
)
from pagelens.storage.edge import _KEYWORD_FIELDS, _as_lists, build_filter
from pagelens.types import MultiVector

logger = logging.getLogger(__name__)


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
    ) -> None:
        from qdrant_client import QdrantClient, models

        given = [name for name, v in (("url", url), ("location", location), ("path", path)) if v]
        if len(given) != 1:
            raise StoreError(f"give exactly one of url, location, path; got {given or 'none'}")
        self._m = models
        self.collection = collection
        try:
            self._client = QdrantClient(
                url=url, api_key=api_key, location=location, path=path, timeout=timeout
            )
            self._exists = self._client.collection_exists(collection)
        except Exception as exc:  # connection errors come in many types
            raise StoreError(f"cannot reach Qdrant at {url or location or path}: {exc}") from exc
        self._local = url is None

    def exists(self) -> bool:
        return self._exists

    def create(self, spec: CollectionSpec) -> None:
        if self._exists:
            raise StoreError(f"collection {self.collection!r} already exists")
        m = self._m
        dtype = m.Datatype.FLOAT16 if spec.fp16 else m.Datatype.FLOAT32
        maxsim = m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM)
        self._client.create_collection(
            self.collection,
            vectors_config={
                PAGES: m.VectorParams(
                    size=spec.dim,
                    distance=m.Distance.DOT,
                    multivector_config=maxsim,
                    datatype=dtype,
                    hnsw_config=m.HnswConfigDiff(m=0, ef_construct=spec.hnsw_ef_construct),
                ),
                POOLED: m.VectorParams(
                    size=spec.dim,
                    distance=m.Distance.DOT,
                    multivector_config=maxsim,
                    datatype=dtype,
                    hnsw_config=m.HnswConfigDiff(
                        m=spec.hnsw_m, ef_construct=spec.hnsw_ef_construct
                    ),
                ),
            },
        )
        if not self._local:  # local mode has no payload indexes (and warns)
            for name in _KEYWORD_FIELDS:
                self._client.create_payload_index(
                    self.collection, name, field_schema=m.PayloadSchemaType.KEYWORD
                )
        self._exists = True

    def close(self) -> None:
        self._client.close()

    def _require(self) -> None:
        if not self._exists:
            raise StoreError(
                f"collection {self.collection!r} does not exist yet (run `pagelens index` first)"
            )

    def upsert(self, points: Sequence[PointRecord]) -> None:
        if not points:
            return
        self._require()
        m = self._m
        self._client.upsert(
            self.collection,
            points=[
                m.PointStruct(
                    id=p.id,
                    vector={name: _as_lists(v) for name, v in p.vectors.items()},
                    payload=dict(p.payload),
                )
                for p in points
            ],
            wait=True,
        )

    def delete(self, where: PayloadFilter) -> None:
        self._require()
        m = self._m
        self._client.delete(
            self.collection,
            points_selector=m.FilterSelector(filter=build_filter(m, where)),
            wait=True,
        )

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        self._require()
        self._client.set_payload(
            self.collection, payload=dict(payload), points=build_filter(self._m, where), wait=True
        )

    def optimize(self) -> None:
        """Do nothing: a server builds its indexes in the background."""

    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        self._require()
        offset = None
        flt = build_filter(self._m, where)
        while True:
            records, offset = self._client.scroll(
                self.collection, scroll_filter=flt, limit=1000, offset=offset, with_payload=True
            )
            for record in records:
                yield dict(record.payload or {})
            if offset is None:
                return

    def count(self, where: PayloadFilter) -> int:
        self._require()
        result = self._client.count(
            self.collection, count_filter=build_filter(self._m, where), exact=True
        )
        return int(result.count)

    def query(
        self,
        queries: Sequence[MultiVector],
        *,
        k: int,
        candidates: int | None,
        where: PayloadFilter | None = None,
    ) -> list[list[ScoredRecord]]:
        self._require()
        m = self._m
        flt = build_filter(m, where)
        requests = []
        for query in queries:
            vectors = _as_lists(query)
            prefetch = None
            if candidates is not None:
                prefetch = [
                    m.Prefetch(query=vectors, using=POOLED, limit=max(candidates, k), filter=flt)
                ]
            requests.append(
                m.QueryRequest(
                    query=vectors,
                    using=PAGES,
                    prefetch=prefetch,
                    filter=flt if candidates is None else None,
                    limit=k,
                    with_payload=True,
                )
            )
        responses = self._client.query_batch_points(self.collection, requests=requests)
        return [
            [ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in r.points]
            for r in responses
        ]
