"""The Store seam: where page multi-vectors and their payloads live.

Every backend keeps one collection with two named multi-vectors per dense
channel, compared with MaxSim over dot products of L2-normalised vectors:

- ``pages``: the page vectors at the index's pool factor, used for the rerank. No
  HNSW graph is built on them (``m=0``): a graph over hundreds of vectors per
  point costs minutes per thousand pages and the rerank only ever scores a few
  hundred candidates. In the compact layout (:attr:`CollectionSpec.compact`) they
  are 8-bit TurboQuant vectors memory-mapped from disk.
- ``pooled``: a small Ward-pooled view of the page (tens of vectors), from which
  the first stage draws candidates by an exact scan: 8-bit TurboQuant without a
  graph in the compact layout (fp16 in indexes of manifest format 2); float32 with
  an HNSW graph in indexes of manifest format 1.
- ``coarse``: a still smaller Ward-pooled view (a handful of vectors), in indexes
  since manifest format 4 (:attr:`CollectionSpec.coarse`): the first stage scans
  these, and the ``pooled`` vectors score only the pages they bring.
- ``text_pages``, ``text_pooled`` and ``text_coarse``: the same for an index's second,
  text encoder (the ``text`` channel), present only in indexes built with one;
  its dimension is that encoder's.
- ``bm25``: a sparse vector of the page text's BM25 term weights; the engine
  multiplies in each term's IDF at query time (``Modifier.IDF``), so the IDF
  stays right as documents come and go.

Besides pages the collection holds vectorless bookkeeping points: one per fully
indexed document (the commit record of that document) and one manifest.
Qdrant types never leave a backend; callers see numpy arrays and plain dicts.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pagelens.pooling import pool_query
from pagelens.types import MultiVector, display_path

PAGES = "pages"
POOLED = "pooled"
TEXT_PAGES = "text_pages"
TEXT_POOLED = "text_pooled"
BM25 = "bm25"

# the slots of a hybrid request (which results a hit came from); the channel names
# users choose and their validation live in pagelens.search
DENSE = "dense"
TEXT = "text"
COARSE = "coarse"
TEXT_COARSE = "text_coarse"
# the (rerank, candidate) named vectors of each dense channel
DENSE_VECTORS = {DENSE: (PAGES, POOLED), TEXT: (TEXT_PAGES, TEXT_POOLED)}
# the coarse vectors of each dense channel, in indexes of manifest format 4 on
COARSE_VECTORS = {DENSE: COARSE, TEXT: TEXT_COARSE}

KIND_PAGE = "page"
KIND_DOCUMENT = "document"
KIND_MANIFEST = "manifest"
# written before a document's first page and removed once its commit record is: an
# interrupted run leaves one behind, and the next run completes or removes its pages
KIND_PENDING = "pending"

_NAMESPACE = uuid.UUID("6f1c2d2a-4b7e-5d0c-9a51-7e3f0c1a2b90")


def page_point_id(doc_sha256: str, page_number: int) -> str:
    """Deterministic point id of a page: re-indexing the same bytes upserts in place."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:{page_number}"))


def document_point_id(doc_sha256: str) -> str:
    """Point id of a document's commit record."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:document"))


def pending_point_id(doc_sha256: str) -> str:
    """Point id of a document's pending marker (see :data:`KIND_PENDING`)."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:pending"))


MANIFEST_POINT_ID = str(uuid.uuid5(_NAMESPACE, "manifest"))


def source_payload(source: str) -> dict[str, str]:
    r"""Payload fields of a source file's absolute path, lossless for any file name.

    A name that is not valid UTF-8 (Latin-1 names on old shares) reaches Python with
    lone surrogates, which no payload can hold: ``source`` keeps a readable form
    (each bad byte as ``\xNN``) and ``source_bytes`` the raw bytes, in hex.
    """
    shown = display_path(source)
    if shown == source:
        return {"source": source}
    return {"source": shown, "source_bytes": os.fsencode(source).hex()}


def source_from_payload(payload: Mapping[str, Any]) -> str:
    """Read back the source path :func:`source_payload` wrote, as the file system names it."""
    raw = payload.get("source_bytes")
    if raw:
        return os.fsdecode(bytes.fromhex(str(raw)))
    return str(payload.get("source", ""))


@dataclass(frozen=True)
class CollectionSpec:
    """How the collection is laid out; fixed when it is created."""

    dim: int
    # fp16 storage of the ``pages`` vectors: measured to change no metric (project
    # notes). The small ``pooled`` vectors stay float32: the engine scans them per
    # query, and float32 halved that scan's time (10 ms against 22 ms at 1k pages,
    # benchmarks/search_bench.py) for 16% more bytes per page.
    fp16: bool = True
    hnsw_m: int = 16  # graph degree for the ``pooled`` vectors
    hnsw_ef_construct: int = 100
    text_dim: int | None = None  # dimension of the ``text`` channel, if the index has one
    # one vector per page for the dense channel (single-vector encoders): ``pages`` is a
    # plain vector with an HNSW graph, and there is no ``pooled`` vector
    single: bool = False
    # the compact layout of indexes made since manifest format 2 (``fp16`` and the graph
    # settings above then describe nothing): rerank vectors in Qdrant's 8-bit TurboQuant
    # storage (a fixed random rotation, no training, so it suits an index that grows),
    # memory-mapped from disk with the payloads ("fine on disk"); candidate vectors as
    # float16 without an HNSW graph, scanned exactly ("coarse in RAM"). The graph cost
    # 424 s per 10k pages to build, doubled the footprint while building, and kept only
    # 0.83 of the exact top-10 (issue 11); a scan loses nothing.
    compact: bool = False
    # candidate vectors of the compact layout in Turbo8 too (manifest format 3 on), not
    # float16: half the bytes of what the first stage holds in RAM and scans, for 0.998
    # of the float16 scan's top-200 and the same scan time (benchmarks/README.md)
    turbo_candidates: bool = False
    # a third, coarse multi-vector per dense channel (manifest format 4 on), stored as
    # the candidate vectors are: the first stage scans it, so that the candidate
    # vectors score a few pages per hundred, not all (benchmarks/README.md)
    coarse: bool = False
    # the candidate and coarse vectors in Qdrant's 4-bit TurboQuant storage (manifest
    # format 5 on): the first stage only passes pages on to be scored again by finer
    # vectors, and at 4 bits it kept recall@10 within 0.001 of 8 bits', for half the
    # bytes it holds in RAM (benchmarks/README.md)
    turbo4_first_stage: bool = False
    # the candidate and coarse vectors memory-mapped from disk (manifest format 6 on),
    # as the rerank vectors are: the page cache holds what each question's scan reads,
    # all of them once it has run. Held "in RAM", the engine populates every storage
    # chunk whole: 32 MiB of offsets and 32 MiB of vectors for each first-stage vector
    # of each segment, however few pages it holds (measured: 128 MiB resident for a
    # segment of 4k pages against 17 MB of vectors), and the embedded store seals a
    # segment each few thousand pages (storage/edge.py)
    mapped_first_stage: bool = False

    def datatypes(self) -> tuple[str, str, str]:
        """Storage of (a single-vector channel, rerank, candidate) vectors.

        Named as both backends' enums name them, case aside: ``"float32"``,
        ``"float16"``, ``"turbo8"`` or ``"turbo4"``; each backend maps the names to
        its own enum.
        """
        plain = "float16" if self.fp16 else "float32"
        if not self.compact:
            return plain, plain, "float32"
        if self.turbo4_first_stage:
            return plain, "turbo8", "turbo4"
        return plain, "turbo8", "turbo8" if self.turbo_candidates else "float16"

    @property
    def candidate_graph_m(self) -> int:
        """HNSW degree of the candidate vectors' graph: none (0) in the compact layout."""
        return 0 if self.compact else self.hnsw_m

    @property
    def on_disk(self) -> bool | None:
        """Map rerank vectors and payloads from disk (compact layout), or leave it to the engine."""
        return True if self.compact else None

    @property
    def first_stage_on_disk(self) -> bool | None:
        """Map candidate and coarse vectors from disk (format 6 on), or hold them in RAM."""
        return True if self.mapped_first_stage else None


def dense_layout(spec: CollectionSpec) -> list[tuple[str, str, str | None, int]]:
    """(rerank, candidate, coarse vector or None, dimension) of each dense channel."""
    channels = [(DENSE, spec.dim)]
    if spec.text_dim is not None:
        channels.append((TEXT, spec.text_dim))
    return [
        (*DENSE_VECTORS[name], COARSE_VECTORS[name] if spec.coarse else None, dim)
        for name, dim in channels
    ]


@dataclass(frozen=True)
class SparseVector:
    """Term ids and weights (the ``bm25`` vector of a page or query)."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class PointRecord:
    """A point to upsert: vectors by name, and payload.

    ``vectors`` maps ``pages``/``pooled`` (and ``text_pages``/``text_pooled``) to
    float32 ``(n, dim)`` arrays and ``bm25`` to a :class:`SparseVector`.
    """

    id: str
    payload: Mapping[str, Any]
    vectors: Mapping[str, MultiVector | SparseVector] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredPoint:
    """A point as stored: its payload and its dense vectors (what ``pagelens check`` reads).

    ``vectors`` maps each dense named vector the point has (``pages``, ``pooled``,
    ``text_pages``, ``text_pooled``) to a float32 ``(n, dim)`` array; sparse
    vectors are left out.
    """

    id: str
    payload: Mapping[str, Any]
    vectors: Mapping[str, MultiVector] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredRecord:
    """A point returned by a query; ``channels`` names the channels that found it."""

    id: str
    score: float
    payload: Mapping[str, Any]
    channels: tuple[str, ...] = ()


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
    single: bool = False  # the dense channel holds one vector per page (``dense`` is (1, dim))


@dataclass(frozen=True)
class PayloadFilter:
    """Conditions on page payloads; all given conditions must hold.

    ``path_prefix`` matches a folder prefix of the document path (``"reports/2023"``
    matches ``reports/2023/q1.pdf``) or the exact document path.
    """

    kind: str | None = None
    doc_paths: tuple[str, ...] | None = None
    doc_sha256: tuple[str, ...] | None = None
    path_prefix: str | None = None
    # documents left out (search leaves out those not committed yet)
    exclude_doc_sha256: tuple[str, ...] | None = None


def path_prefixes(doc_path: str) -> list[str]:
    """Every folder prefix of a posix path, and the path itself.

    ``"a/b/c.pdf"`` gives ``["a", "a/b", "a/b/c.pdf"]``; stored in the payload so a
    prefix filter is a plain keyword match on every backend.
    """
    parts = doc_path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


FUSIONS = ("rrf", "dbsf")
FIRST_STAGES = ("exact", "hnsw")


def check_hybrid(query: HybridQuery) -> None:
    """Reject a hybrid query whose options contradict each other."""
    from pagelens.errors import PagelensError

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
    from pagelens.errors import PagelensError

    if first_stage not in FIRST_STAGES:
        raise PagelensError(f"first_stage must be one of {FIRST_STAGES}, got {first_stage!r}")


def dense_queries(query: HybridQuery) -> list[tuple[str, MultiVector]]:
    """List the dense channels a hybrid query uses, with their query vectors, in order."""
    given = ((DENSE, query.dense), (TEXT, query.text))
    return [(name, v) for name, v in given if v is not None]


def coarse_query_vectors(query: MultiVector, clusters: int | None) -> MultiVector:
    """Give the query vectors a coarse stage scans with (:attr:`HybridQuery.coarse_query`)."""
    return query if clusters is None else pool_query(query, clusters)


def channel_names(query: HybridQuery) -> list[str]:
    """Name the channels a hybrid query uses, in the order their prefetches are built."""
    names = [name for name, _ in dense_queries(query)]
    return names + [BM25] if query.sparse is not None else names


def channel_weights(query: HybridQuery) -> list[float] | None:
    """RRF weights in :func:`channel_names` order (1 where a channel is not named)."""
    if query.weights is None:
        return None
    return [float(query.weights.get(name, 1.0)) for name in channel_names(query)]


def annotate(
    fused: list[ScoredRecord], per_channel: dict[str, list[ScoredRecord]]
) -> list[ScoredRecord]:
    """Mark each fused record with the channels whose own results held it."""
    found = {name: {r.id for r in records} for name, records in per_channel.items()}
    return [
        ScoredRecord(r.id, r.score, r.payload, tuple(n for n, ids in found.items() if r.id in ids))
        for r in fused
    ]


HybridLayout = list[tuple[int, list[tuple[str, int]]]]


def plan_hybrid(
    queries: Sequence[HybridQuery], build: Callable[[HybridQuery], tuple[Any, list[Any]]]
) -> tuple[list[Any], HybridLayout]:
    """Lay out one batch of engine requests for hybrid queries.

    ``build(query)`` returns a backend's fused request and one request per channel
    (in :func:`channel_names` order); the batch holds them all, so one round trip
    answers the fusion and tells which channel found what.
    """
    requests: list[Any] = []
    layout: HybridLayout = []
    for query in queries:
        check_hybrid(query)
        fused, own = build(query)
        names = channel_names(query)
        start = len(requests)
        requests.append(fused)
        if len(names) == 1:  # the fused results are the channel's own: no second request
            layout.append((start, [(names[0], start)]))
            continue
        slots = []
        for name, request in zip(names, own, strict=True):
            slots.append((name, len(requests)))
            requests.append(request)
        layout.append((start, slots))
    return requests, layout


def hybrid_records(
    results: Sequence[list[ScoredRecord]], layout: HybridLayout
) -> list[list[ScoredRecord]]:
    """Fused records per query, each marked with the channels that found it."""
    return [annotate(results[start], {n: results[i] for n, i in slots}) for start, slots in layout]


@contextmanager
def engine_errors(location: object, operation: str) -> Iterator[None]:
    """Turn an engine's exception into a StoreError naming the index and the operation.

    Qdrant Edge raises plain ``Exception`` and qdrant-client a family of its own, so
    a backend wraps each call to its engine in this: the user reads which index
    failed, doing what, and why, instead of a traceback.
    """
    from pagelens.errors import PagelensError, StoreError

    try:
        yield
    except PagelensError:
        raise
    except Exception as exc:  # the engines raise plain exceptions of many types
        raise StoreError(
            f"{location}: cannot {operation}: {exc} (if the index files are damaged, "
            "`pagelens check` finds what is lost)"
        ) from exc


class Store(Protocol):
    """One Qdrant collection, wherever it lives."""

    def exists(self) -> bool:
        """Whether the collection has been created."""
        ...

    def create(self, spec: CollectionSpec) -> None:
        """Create the collection (and payload indexes); error if it exists."""
        ...

    def upsert(self, points: Sequence[PointRecord], *, durable: bool = True) -> None:
        """Insert or replace points; durable when this returns.

        ``durable=False`` skips making this write durable on its own: it is
        applied and visible at once, and persisted with the next durable write,
        :meth:`flush` or :meth:`close`; a crash before then may lose it. The
        embedded engine persists every segment on each durable write, so a
        writer of many small batches asks for durability only where order
        matters (a document's pages before its commit record).
        """
        ...

    def delete(self, where: PayloadFilter, *, durable: bool = True) -> None:
        """Delete every point matching ``where`` (``durable`` as for :meth:`upsert`)."""
        ...

    def flush(self) -> None:
        """Make every write so far durable."""
        ...

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        """Overwrite the given payload keys on every point matching ``where``."""
        ...

    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        """Payloads of every point matching ``where``."""
        ...

    def count(self, where: PayloadFilter) -> int:
        """Exact number of points matching ``where``."""
        ...

    def point_ids(self) -> Iterator[str]:
        """Ids of every point, read without payloads or vectors (so despite damage to those)."""
        ...

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        """Payloads and dense vectors of the points with these ids (unknown ids left out)."""
        ...

    def delete_points(self, ids: Sequence[str]) -> None:
        """Delete the points with these ids."""
        ...

    def rebuild(self, spec: CollectionSpec, ids: Sequence[str]) -> None:
        """Rewrite the collection with only the points with these ids, in new storage files."""
        ...

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
        """Top-``k`` pages per query by MaxSim on ``pages`` (``text_pages`` for ``text``).

        With ``candidates`` set, the first stage draws that many candidates by
        MaxSim on ``pooled`` (``text_pooled``), through HNSW or, with
        ``first_stage="exact"``, a scan of every page; only those are reranked.
        ``None`` scores every page exactly on the rerank vectors.
        """
        ...

    def hybrid(
        self, queries: Sequence[HybridQuery], *, k: int, where: PayloadFilter | None = None
    ) -> list[list[ScoredRecord]]:
        """Top-``k`` pages per query from the fusion of its channels.

        Each record's ``channels`` names the channels (``"dense"``, ``"text"``,
        ``"bm25"``) whose own top ``channel_limit`` held it.
        """
        ...

    def optimize(self) -> None:
        """Build pending indexes (HNSW on the candidate vectors) after a batch of writes."""
        ...

    def close(self) -> None:
        """Release the collection (files, locks, connections)."""
        ...
