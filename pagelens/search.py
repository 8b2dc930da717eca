"""Search: rank pages for a batch of questions.

The ``dense`` channel is MaxSim late interaction, two-stage by default: the
``pooled`` vectors (Ward, pool factor 16) give ``candidates`` pages through their
HNSW graph, and those are reranked by exact MaxSim on the stored page vectors
(``candidates=None`` scores every page exactly). Where few pages are searched
(``first_stage="auto"``: up to :data:`EXACT_FIRST_STAGE_PAGES`), the candidates come
from a scan of every page's pooled vectors instead of the graph. An index built with a second,
text encoder has a ``text`` channel searched the same way over its own vectors.
Where the index holds page text, the ``bm25`` channel ranks by BM25, and several
channels are fused by the engine (reciprocal rank fusion, or Qdrant's normalised
score fusion ``dbsf``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pagelens.bm25 import bm25_queries
from pagelens.encoders.base import Encoder
from pagelens.errors import PagelensError, check_whole
from pagelens.index import Index
from pagelens.storage.base import (
    BM25,
    CHANNELS,
    DENSE,
    FIRST_STAGES,
    FUSIONS,
    KIND_PAGE,
    TEXT,
    HybridQuery,
    PayloadFilter,
)
from pagelens.types import Hit, MultiVector, display_path

DEFAULT_CANDIDATES = 200
# Up to this many pages (after the filter) "auto" draws candidates by an exact scan of
# the pooled vectors rather than their HNSW graph. Side by side on synthetic pages at
# 200 candidates (benchmarks/search_bench.py, README there): at 1k pages the scan kept
# the whole exact top-10 in the graph's time (40.3 vs 40.0 ms; the graph kept 98.9%),
# at 2k it took 18% longer for 100% against 96.6%, at 10k 1.8x as long (116.8 vs 64.8
# ms, against 83.2%).
EXACT_FIRST_STAGE_PAGES = 2000


@dataclass(frozen=True)
class SearchFilter:
    """Restrict a search to some documents.

    Attributes:
        doc_paths: only these documents (paths as indexed).
        path_prefix: only documents under this folder prefix (or this exact path).

    """

    doc_paths: tuple[str, ...] | None = None
    path_prefix: str | None = None


class NoMatchError(PagelensError):
    """A search filter names no page of the index."""


def _where(index: Index, filter: SearchFilter | None) -> PayloadFilter:
    """Build the page filter of a search; a filter that matches no page is an error.

    Raises:
        NoMatchError: ``filter`` names no indexed document (a typo, or a document
            that was skipped), so every query would silently get no hit.

    """
    if filter is None:
        return PayloadFilter(kind=KIND_PAGE)
    paths = tuple(display_path(p) for p in filter.doc_paths) if filter.doc_paths else None
    prefix = display_path(filter.path_prefix) if filter.path_prefix else None
    where = PayloadFilter(kind=KIND_PAGE, doc_paths=paths, path_prefix=prefix)
    if index.store.count(where) == 0:
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


def _first_stage(
    index: Index, first_stage: str, where: PayloadFilter, candidates: int | None
) -> str:
    """Resolve ``"auto"``: an exact scan for few pages, the HNSW graph for many."""
    if first_stage != "auto" and first_stage not in FIRST_STAGES:
        raise PagelensError(
            f"first_stage must be 'auto' or one of {FIRST_STAGES}, got {first_stage!r}"
        )
    if candidates is None:  # no first stage: every page is scored exactly
        return "hnsw"
    if first_stage == "auto":
        pages = index.store.count(where)
        return "exact" if pages <= EXACT_FIRST_STAGE_PAGES else "hnsw"
    return first_stage


def search_vectors(
    index: Index,
    queries: Sequence[MultiVector],
    *,
    k: int = 10,
    candidates: int | None = DEFAULT_CANDIDATES,
    filter: SearchFilter | None = None,
    channel: str = DENSE,
    first_stage: str = "auto",
) -> list[list[Hit]]:
    """Rank pages for already-encoded queries (each float32 ``(m, dim)``).

    ``channel`` is ``"dense"`` (the index's encoder) or ``"text"`` (its text encoder);
    ``first_stage`` as in :func:`search`.

    Returns:
        One list of at most ``k`` hits per query, best first.

    """
    _check_counts(k, candidates)
    if channel not in (DENSE, TEXT):
        raise PagelensError(f"channel must be {DENSE!r} or {TEXT!r}, got {channel!r}")
    if not queries:
        return []
    where = _where(index, filter)
    results = index.store.query(
        queries,
        k=k,
        candidates=candidates,
        where=where,
        channel=channel,
        first_stage=_first_stage(index, first_stage, where, candidates),
    )
    return [[_hit(r.payload, r.score, (channel,)) for r in records] for records in results]


def _check_counts(k: object, candidates: object) -> None:
    check_whole("k", k, 1)
    if candidates is not None:
        check_whole("candidates (None for exact search)", candidates, 1)


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


def _hit(payload: Mapping[str, Any], score: float, channels: tuple[str, ...]) -> Hit:
    return Hit(
        doc_path=str(payload["doc_path"]),
        page_number=int(payload["page_number"]),
        score=score,
        doc_sha256=str(payload["doc_sha256"]),
        payload=payload,
        channels=channels,
    )


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


def search(
    index: Index,
    encoder: Encoder,
    queries: Sequence[str],
    *,
    k: int = 10,
    candidates: int | None = DEFAULT_CANDIDATES,
    filter: SearchFilter | None = None,
    channels: Sequence[str] | None = None,
    fusion: str = "dbsf",
    weights: Mapping[str, float] | None = None,
    channel_limit: int = 100,
    text_encoder: Encoder | None = None,
    first_stage: str = "auto",
) -> list[list[Hit]]:
    """Answer a batch of questions with the pages that best match each.

    Args:
        index: an index built with ``encoder``.
        encoder: the same encoder the index was built with (else IndexMismatchError).
        queries: question texts.
        k: hits per question.
        candidates: first-stage candidates of each dense channel; ``None`` = exact.
        first_stage: where candidates come from: ``"hnsw"`` (the pooled vectors'
            graph), ``"exact"`` (a scan of every page's pooled vectors: slower on
            large indexes, loses nothing), or ``"auto"`` (exact up to
            :data:`EXACT_FIRST_STAGE_PAGES` pages after the filter, else hnsw).
        filter: restrict to some documents.
        channels: any of ``"dense"`` (MaxSim with ``encoder``), ``"text"``
            (MaxSim with the index's text encoder) and ``"bm25"``; several make a
            hybrid fused by the engine. BM25 needs an index built with text,
            ``text`` one built with a text encoder. ``None`` (the default): every
            channel the index holds (:func:`index_channels`), fused by ``fusion``:
            on mmlongbench-dev with MiniLM, dense + BM25 by DBSF gave nDCG@5
            0.473 / 0.601 (corpus / document) against 0.417 / 0.572 for dense alone.
        fusion: ``"dbsf"`` (Qdrant's normalised score fusion, the default: it beat
            RRF and either channel alone on mmlongbench-dev with MiniLM + BM25,
            nDCG@5 0.467/0.601 corpus/document against RRF's 0.435/0.587) or
            ``"rrf"``.
        weights: RRF weight per channel, e.g. ``{"dense": 1, "bm25": 2}`` (1 for a
            channel not named); Qdrant divides each channel's rank by its weight.
        channel_limit: results each channel brings to the fusion.
        text_encoder: the index's text encoder (needed by the ``text`` channel).

    Returns:
        One ranked list of :class:`~pagelens.types.Hit` per question; each hit
        names the channels whose own results held it.

    """
    queries = check_queries(queries)
    _check_counts(k, candidates)
    if channels is None:
        channels = index_channels(index)
    chosen = tuple(dict.fromkeys(channels))
    unknown = [c for c in chosen if c not in CHANNELS]
    if unknown or not chosen:
        raise PagelensError(f"channels must be among {CHANNELS}, got {tuple(channels)!r}")
    if fusion not in FUSIONS:
        raise PagelensError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    index.check_encoder(encoder.spec)
    if BM25 in chosen and not (index.manifest and index.manifest.settings.text):
        raise PagelensError(
            f"index {index.location} holds no page text, so no bm25 channel: "
            "index with --text (or a text encoder) to search it"
        )
    if TEXT in chosen:
        built = index.manifest.text_encoder if index.manifest else None
        if built is None:
            raise PagelensError(
                f"index {index.location} has no text channel: build an index with a text "
                "encoder (--text-model) to search one"
            )
        if text_encoder is None:
            raise PagelensError(
                f"the text channel needs the index's text encoder {built.model_id!r} "
                "(text_encoder=)"
            )
        index.check_text_encoder(text_encoder.spec)
    if len(chosen) == 1 and chosen[0] != BM25:
        model = encoder if chosen[0] == DENSE else text_encoder
        assert model is not None
        vectors = _encode_queries(model, queries)
        return search_vectors(
            index,
            vectors,
            k=k,
            candidates=candidates,
            filter=filter,
            channel=chosen[0],
            first_stage=first_stage,
        )
    where = _where(index, filter)
    dense_used = DENSE in chosen or TEXT in chosen
    stage = _first_stage(index, first_stage, where, candidates if dense_used else None)
    none: list[None] = [None] * len(queries)
    dense = _encode_queries(encoder, queries) if DENSE in chosen else none
    text = _encode_queries(text_encoder, queries) if text_encoder and TEXT in chosen else none
    sparse = bm25_queries(queries) if BM25 in chosen else none
    requests = [
        HybridQuery(
            dense=d,
            sparse=s,
            text=t,
            candidates=candidates,
            first_stage=stage,
            channel_limit=max(channel_limit, k),
            fusion=fusion,
            weights=weights,
        )
        for d, t, s in zip(dense, text, sparse, strict=True)
    ]
    results = index.store.hybrid(requests, k=k, where=where)
    return [[_hit(r.payload, r.score, r.channels) for r in records] for records in results]
