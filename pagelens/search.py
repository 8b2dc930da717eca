"""Search: rank pages for a batch of questions.

The ``dense`` channel is MaxSim late interaction, in stages by default. In indexes
since manifest format 4, an exact scan of every page's ``coarse`` vectors (Ward,
coarse factor 48: about 16 per ColQwen2.5 page), scored with the question's tokens
Ward-pooled into 6 summed vectors, passes 10 x ``candidates`` pages to their
``pooled`` vectors (Ward, candidate factor 16), which pick ``candidates`` pages with
every token, and those are reranked by MaxSim on the stored page vectors
(``candidates=None`` scores every page on those, the oracle). Indexes of formats 2
and 3 scan every page's ``pooled`` vectors instead. The stages run at every index
size: no threshold switches a search to another plan behind the user's back. Indexes
of manifest format 1 also carry an HNSW graph on the pooled vectors, which
``first_stage="hnsw"`` walks when asked. An index built with a second, text
encoder has a ``text`` channel searched the same way over its own vectors. Where
the index holds page text, the ``bm25`` channel ranks by BM25, and several channels
are fused by the engine (reciprocal rank fusion, or Qdrant's normalised score
fusion ``dbsf``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pagelens.bm25 import bm25_queries
from pagelens.encoders.base import Encoder
from pagelens.errors import PagelensError, StoreError, check_whole
from pagelens.index import Index, hit_from_payload
from pagelens.plan import FIRST_STAGES, FUSIONS, HybridQuery
from pagelens.storage.base import PayloadFilter, SparseVector
from pagelens.storage.layout import BM25, DENSE, TEXT
from pagelens.types import Hit, MultiVector, display_path

CHANNELS = (DENSE, TEXT, BM25)
DEFAULT_K = 10
# pages the rerank scores (chosen for recall of the exact top-10 against CPU a
# question: benchmarks/README.md, "Format 5")
DEFAULT_CANDIDATES = 300
# pages the coarse scan passes to the candidate vectors, per candidate
# (benchmarks/README.md, "Format 4")
COARSE_PER_CANDIDATE = 10
# the coarse scan scores pages with the query's tokens Ward-pooled into this many
# summed vectors (pagelens.pooling.pool_query): its cost is pages x coarse vectors x
# query vectors. Fewer lost recall at 100k pages (benchmarks/README.md, "Format 5")
COARSE_QUERY_VECTORS = 6


@dataclass(frozen=True)
class SearchFilter:
    """Restrict a search to some documents.

    Attributes:
        doc_paths: only these documents (paths as indexed).
        path_prefix: only documents under this folder prefix (or this exact path).

    """

    doc_paths: tuple[str, ...] | None = None
    path_prefix: str | None = None

    def __post_init__(self) -> None:
        paths = self.doc_paths
        if paths is not None:
            if isinstance(paths, (str, bytes)) or not isinstance(paths, (list, tuple)):
                raise PagelensError(
                    f"doc_paths must be a list of document paths, got {paths!r} "
                    f"({type(paths).__name__}): write doc_paths=[{paths!r}] for one"
                )
            bad = [p for p in paths if not isinstance(p, str)]
            if bad:
                raise PagelensError(f"doc_paths must hold strings, got {bad!r}")
            object.__setattr__(self, "doc_paths", tuple(paths))
        prefix = self.path_prefix
        if prefix is not None and not isinstance(prefix, str):
            raise PagelensError(f"path_prefix must be a string, got {prefix!r}")


@dataclass(frozen=True)
class SearchOptions:
    """How a search ranks pages; validated once, here, for every channel and path.

    Attributes:
        k: hits per question.
        candidates: first-stage candidates of each dense channel; ``None`` scores
            every page exactly.
        channels: any of ``"dense"`` (MaxSim with the index's encoder), ``"text"``
            (MaxSim with its text encoder) and ``"bm25"``; several are fused by the
            engine, one is a fusion of one. ``None``: every channel the index holds
            (:func:`index_channels`); on mmlongbench-dev dense + BM25 beat dense
            alone (README, "Evaluation").
        fusion: ``"dbsf"`` (Qdrant's normalised score fusion: it beat RRF and either
            channel alone on mmlongbench-dev; README, "Evaluation") or ``"rrf"``.
        weights: RRF weight per channel, e.g. ``{"bm25": 2}`` (1 for a channel not
            named); Qdrant divides each channel's rank by its weight.
        channel_limit: results each channel brings to a fusion.
        first_stage: where candidates come from: ``"exact"`` (scans: of every
            page's coarse vectors, then of the pooled vectors of 10 x ``candidates``
            pages, in indexes since manifest format 4; of every page's pooled
            vectors in older ones) or ``"hnsw"`` (the pooled vectors' graph, in
            indexes of manifest format 1 only; it lost recall against the scan:
            benchmarks/README.md, "The compact layout against format 1").
        filter: restrict to some documents.
        coarse_query_vectors: query vectors the coarse stage scans with: the
            question's tokens Ward-pooled into so many; ``None``: every token.

    """

    k: int = DEFAULT_K
    candidates: int | None = DEFAULT_CANDIDATES
    channels: tuple[str, ...] | None = None
    fusion: str = "dbsf"
    weights: Mapping[str, float] | None = field(default=None, hash=False)
    channel_limit: int = 100
    first_stage: str = "exact"
    filter: SearchFilter | None = None
    coarse_query_vectors: int | None = COARSE_QUERY_VECTORS

    def __post_init__(self) -> None:
        check_whole("k", self.k, 1)
        if self.coarse_query_vectors is not None:
            check_whole("coarse_query_vectors (None for every token)", self.coarse_query_vectors, 1)
        if self.candidates is not None:
            check_whole("candidates (None for exact search)", self.candidates, 1)
        check_whole("channel_limit", self.channel_limit, 1)
        if self.channels is not None:
            if isinstance(self.channels, str):
                raise PagelensError(f"channels must be a list of names, got {self.channels!r}")
            chosen = tuple(dict.fromkeys(self.channels))
            if not chosen or any(c not in CHANNELS for c in chosen):
                raise PagelensError(f"channels must be among {CHANNELS}, got {self.channels!r}")
            object.__setattr__(self, "channels", chosen)
        if self.fusion not in FUSIONS:
            raise PagelensError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.first_stage not in FIRST_STAGES:
            raise PagelensError(
                f"first_stage must be one of {FIRST_STAGES}, got {self.first_stage!r}"
            )
        self._check_weights()
        if self.filter is not None and not isinstance(self.filter, SearchFilter):
            raise PagelensError(
                f"filter must be a SearchFilter or None, got {self.filter!r} "
                f"({type(self.filter).__name__}); for one document: "
                f"SearchFilter(doc_paths=[{self.filter!r}])"
            )

    def _check_weights(self) -> None:
        if self.weights is None:
            return
        if self.fusion != "rrf":
            raise PagelensError("channel weights apply to fusion='rrf' only")
        if self.channels is not None:
            unused = sorted(set(self.weights) - set(self.channels))
            if unused:
                raise PagelensError(f"weights name channels {unused} that this query does not use")
        if any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or not w >= 0
            for w in self.weights.values()
        ):
            raise PagelensError(f"weights must be non-negative numbers, got {dict(self.weights)}")


def merge_options(options: SearchOptions | None, overrides: Mapping[str, Any]) -> SearchOptions:
    """Make one options record of a record and keyword overrides (validated once)."""
    known = sorted(SearchOptions.__dataclass_fields__)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise PagelensError(f"unknown search options {unknown}; choose from {known}")
    if "channels" in overrides and overrides["channels"] is not None:
        overrides = {**overrides, "channels": tuple(overrides["channels"])}
    return replace(options or SearchOptions(), **overrides)


class NoMatchError(PagelensError):
    """A search filter names no page of the index."""


def _where(index: Index, filter: SearchFilter | None) -> PayloadFilter | None:
    """Build the page filter of a search; a filter that matches no page is an error.

    Raises:
        NoMatchError: ``filter`` names no indexed document (a typo, or a document
            that was skipped), so every query would silently get no hit.

    """
    if filter is None:
        return None
    paths = tuple(display_path(p) for p in filter.doc_paths) if filter.doc_paths else None
    prefix = display_path(filter.path_prefix) if filter.path_prefix else None
    where = PayloadFilter(doc_paths=paths, path_prefix=prefix)
    if index.count_pages(where) == 0:
        named = []
        if paths is not None:
            named.append(f"documents {list(paths)}")
        if prefix is not None:
            named.append(f"path prefix {prefix!r}")
        raise NoMatchError(
            f"no indexed page matches the filter ({' and '.join(named) or 'empty'}) in index "
            f"{index.location}: paths are as `pagelens info`/the index records them, "
            "relative to the folder that was indexed"
        )
    return where


def _first_stage(index: Index, opts: SearchOptions) -> str:
    """Check that the index can serve the first stage asked for."""
    if opts.first_stage == "hnsw" and not index.has_candidate_graph:
        raise PagelensError(
            f"{index.location}: first_stage='hnsw' needs a graph on the candidate vectors, "
            "and this index has none (indexes since manifest format 2 scan them exactly, "
            "which loses no candidate); leave first_stage at 'exact'"
        )
    return opts.first_stage


def check_queries(queries: object) -> list[str]:
    """Return ``queries`` as a list of question texts, or say which one is bad.

    Every channel and encoder gets the same rule: a query must be a ``str`` holding
    some non-space character, and valid Unicode (a command-line argument that was
    not valid UTF-8 reaches Python as lone surrogates).

    Raises:
        PagelensError: naming the query (by position and value) and what is wrong.

    """
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence):
        raise PagelensError(
            f"queries must be a list of strings, got {type(queries).__name__} {queries!r:.80}"
        )
    out = []
    for i, query in enumerate(queries, 1):
        if not isinstance(query, str):
            raise PagelensError(
                f"query {i} must be a string, got {type(query).__name__} {query!r:.80}"
            )
        if not query.strip():
            raise PagelensError(f"query {i} is empty ({query!r}): ask a question in words")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:
            raise PagelensError(
                f"query {i} is not valid UTF-8 text ({display_path(query)[:80]}): "
                "check the terminal's encoding"
            ) from None
        out.append(query)
    return out


def _encode_queries(encoder: Encoder, queries: list[str]) -> list[MultiVector]:
    """Encode queries; vectors that are empty or not finite never reach the store."""
    vectors = encoder.encode_queries(queries)
    for i, (query, v) in enumerate(zip(queries, vectors, strict=True), 1):
        if v.ndim != 2 or v.shape[0] == 0 or not np.isfinite(v).all():
            raise PagelensError(
                f"query {i} ({query!r:.80}): encoder {encoder.spec.model_id!r} gave no usable "
                f"vectors (shape {v.shape}, finite: {bool(np.isfinite(v).all())})"
            )
    return vectors


def index_channels(index: Index) -> tuple[str, ...]:
    """Name the channels an index holds: ``dense``, then ``text`` and ``bm25`` if built.

    Raises:
        PagelensError: the index is empty (nothing indexed yet).

    """
    manifest = index.manifest
    if manifest is None:
        raise PagelensError(
            f"index {index.location} is empty: nothing is indexed yet (run `pagelens index` first)"
        )
    held = [DENSE]
    if manifest.text_encoder is not None:
        held.append(TEXT)
    if manifest.settings.text:
        held.append(BM25)
    return tuple(held)


def _check_index(
    index: Index, opts: SearchOptions, encoder: Encoder | None, text_encoder: Encoder | None
) -> None:
    """Refuse channels the index lacks and encoders other than those it was built with."""
    channels = opts.channels or ()
    manifest = index.manifest
    if manifest is None:
        raise PagelensError(
            f"index {index.location} is empty: nothing is indexed yet (run `pagelens index` first)"
        )
    if DENSE in channels:
        if encoder is None:
            raise PagelensError(
                f"the dense channel needs the index's encoder {manifest.encoder.model_id!r}"
            )
        index.check_encoder(encoder.spec)
    if BM25 in channels and not manifest.settings.text:
        raise PagelensError(
            f"index {index.location} holds no page text, so no bm25 channel: "
            "index with --text (or a text encoder) to search it"
        )
    if TEXT in channels:
        if manifest.text_encoder is None:
            raise PagelensError(
                f"index {index.location} has no text channel: build an index with a text "
                "encoder (--text-model) to search one"
            )
        if text_encoder is None:
            raise PagelensError(
                f"the text channel needs the index's text encoder "
                f"{manifest.text_encoder.model_id!r} (text_encoder=)"
            )
        index.check_text_encoder(text_encoder.spec)


def search(
    index: Index,
    encoder: Encoder | None,
    queries: Sequence[str],
    options: SearchOptions | None = None,
    *,
    text_encoder: Encoder | None = None,
    **overrides: Any,
) -> list[list[Hit]]:
    """Answer a batch of questions with the pages that best match each.

    Args:
        index: the index to search.
        encoder: the encoder the index was built with (else IndexMismatchError);
            ``None`` when no ``dense`` channel is searched (a BM25-only search).
        queries: question texts.
        options: a :class:`SearchOptions` record; keyword ``overrides`` (``k=5``,
            ``channels=("dense", "bm25")``, any field of it) replace its fields.
        text_encoder: the index's text encoder (needed by the ``text`` channel).
        **overrides: fields of :class:`SearchOptions`, replacing those of ``options``.

    Returns:
        One ranked list of :class:`~pagelens.types.Hit` per question; each hit
        names the channels whose own results held it.

    Examples:
        >>> from pagelens.search import SearchOptions
        >>> SearchOptions(k=5, channels=("dense", "bm25")).fusion
        'dbsf'

    """
    opts = merge_options(options, overrides)
    queries = check_queries(queries)
    if opts.channels is None:
        opts = replace(opts, channels=index_channels(index))
    _check_index(index, opts, encoder, text_encoder)
    channels = opts.channels or ()
    none: list[None] = [None] * len(queries)
    dense = _encode_queries(encoder, queries) if encoder and DENSE in channels else none
    text = _encode_queries(text_encoder, queries) if text_encoder and TEXT in channels else none
    sparse = bm25_queries(queries) if BM25 in channels else none
    return _run(index, opts, list(zip(dense, text, sparse, strict=True)))


def search_vectors(
    index: Index,
    queries: Sequence[MultiVector],
    options: SearchOptions | None = None,
    *,
    channel: str = DENSE,
    **overrides: Any,
) -> list[list[Hit]]:
    """Rank pages for already-encoded queries (each float32 ``(m, dim)``).

    ``channel`` is ``"dense"`` (the index's encoder) or ``"text"`` (its text
    encoder); the other options are those of :func:`search`, through the same path.
    """
    if channel not in (DENSE, TEXT):
        raise PagelensError(f"channel must be {DENSE!r} or {TEXT!r}, got {channel!r}")
    opts = merge_options(options, {**overrides, "channels": (channel,)})
    rows = [(q, None, None) if channel == DENSE else (None, q, None) for q in queries]
    return _run(index, opts, rows)


_Row = tuple[MultiVector | None, MultiVector | None, SparseVector | None]


def _run(index: Index, opts: SearchOptions, rows: Sequence[_Row]) -> list[list[Hit]]:
    """Send one engine request per query (a fusion of its channels) and make hits."""
    if not rows:
        return []
    where = _where(index, opts.filter)
    # a document becomes searchable when it commits: the pages of one being written
    # now (or left half-written by an interrupted run) are not answers yet
    pending = tuple(index.pending_documents())
    if pending:
        where = replace(where or PayloadFilter(), exclude_doc_sha256=pending)
    stage = _first_stage(index, opts)
    coarse = None
    if opts.candidates is not None and stage == "exact" and index.has_coarse_vectors:
        coarse = COARSE_PER_CANDIDATE * opts.candidates
    several = len(opts.channels or ()) > 1
    single = index.manifest is not None and index.manifest.encoder.single
    requests = [
        HybridQuery(
            dense=d,
            sparse=s,
            text=t,
            candidates=opts.candidates,
            first_stage=stage,
            coarse=coarse,
            coarse_query=opts.coarse_query_vectors if coarse is not None else None,
            # one channel is its own result: it brings exactly k
            channel_limit=max(opts.channel_limit, opts.k) if several else opts.k,
            fusion=opts.fusion,
            weights=opts.weights,
            single=single,
        )
        for d, t, s in rows
    ]
    results = index.hybrid(requests, k=opts.k, where=where)
    try:
        return [
            [hit_from_payload(r.payload, score=r.score, channels=r.channels) for r in records]
            for records in results
        ]
    except StoreError as exc:
        raise StoreError(
            f"index {index.location}: {exc}: its files are damaged; run `pagelens check`"
        ) from exc
