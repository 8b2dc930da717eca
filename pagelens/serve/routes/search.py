"""``/search`` and ``/search/documents``: pages, or documents, for questions."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from pagelens.search import SearchFilter, index_channels
from pagelens.serve.models import (
    DocumentSearchBody,
    DocumentSearchOut,
    FilterBody,
    SearchBody,
    SearchOut,
)
from pagelens.serve.state import Served, ServedDep, authorised, image_url
from pagelens.wire import (
    document_results,
    page_results,
    parse_channels,
    parse_weights,
    search_response,
)

router = APIRouter(dependencies=[Depends(authorised)], tags=["search"])

ChannelsParam = Annotated[str | None, Query(description="e.g. dense,bm25")]
WeightsParam = Annotated[str | None, Query(description="RRF weights: bm25=2,dense=1")]
DocParam = Annotated[list[str] | None, Query(description="Only these document paths.")]
PrefixParam = Annotated[str | None, Query(description="Only documents under it.")]


def _filter(doc: list[str] | None, prefix: str | None) -> FilterBody | None:
    return FilterBody(doc_paths=doc, path_prefix=prefix) if doc or prefix else None


def _search_filter(body: FilterBody | None) -> SearchFilter | None:
    if body is None or not (body.doc_paths or body.path_prefix):
        return None
    paths = tuple(body.doc_paths) if body.doc_paths else None
    return SearchFilter(doc_paths=paths, path_prefix=body.path_prefix)


def _timed(
    served: Served,
    body: SearchBody | DocumentSearchBody,
    queries: list[str],
    ks: list[int],
    call: Callable[..., Any],
) -> tuple[Any, tuple[str, ...], float]:
    """Check a search's limits, run ``call`` with its options; (result, channels, ms)."""
    served.limits.check_queries(queries)
    for k in ks:
        served.limits.check_k(k)
    channels = tuple(body.channels) if body.channels else None
    t0 = time.perf_counter()
    result = call(
        channels=channels,
        fusion=body.fusion,
        weights=body.weights,
        filter=_search_filter(body.filter),
    )
    ms = (time.perf_counter() - t0) * 1000
    return result, channels or index_channels(served.lens.index), ms


def run_search(served: Served, body: SearchBody) -> dict[str, Any]:
    """Answer a page search: the wire's search object, each hit with its image URL."""
    results, chosen, ms = _timed(
        served,
        body,
        body.queries,
        [body.k],
        lambda **options: served.lens.search(body.queries, k=body.k, **options),
    )
    found = page_results(body.queries, results)
    for hit in (h for row in found for h in row["hits"]):
        hit["image"] = image_url(hit["doc_sha256"], hit["page_number"])
    return search_response(found, channels=chosen, fusion=body.fusion, k=body.k, milliseconds=ms)


def run_document_search(served: Served, body: DocumentSearchBody) -> dict[str, Any]:
    """Rank documents by their best page: the wire's search object, of documents."""
    ranked, chosen, ms = _timed(
        served,
        body,
        [body.query],
        [body.k, body.per_document],
        lambda **options: served.lens.search_documents(
            body.query, k=body.k, per_document=body.per_document, **options
        ),
    )
    found = document_results([body.query], [ranked])
    for doc in found[0]["documents"]:
        for page in doc["pages"]:
            page["image"] = image_url(doc["doc_sha256"], page["page_number"])
    return search_response(found, channels=chosen, fusion=body.fusion, k=body.k, milliseconds=ms)


@router.get("/search", response_model=SearchOut)
def search_get(
    served: ServedDep,
    q: Annotated[list[str], Query(description="Question (repeat for several).")],
    k: Annotated[int, Query(ge=1)] = 10,
    channels: ChannelsParam = None,
    fusion: str = "dbsf",
    weights: WeightsParam = None,
    doc: DocParam = None,
    prefix: PrefixParam = None,
) -> dict[str, Any]:
    """Pages for one or more questions, best first."""
    parsed = parse_weights(weights)
    body = SearchBody(
        queries=q,
        k=k,
        channels=parse_channels(channels),
        fusion=fusion,
        weights=parsed,
        filter=_filter(doc, prefix),
    )
    return run_search(served, body)


@router.post("/search", response_model=SearchOut)
def search_post(served: ServedDep, body: SearchBody) -> dict[str, Any]:
    """Pages for one or more questions, best first."""
    return run_search(served, body)


@router.get("/search/documents", response_model=DocumentSearchOut)
def search_documents_get(
    served: ServedDep,
    q: Annotated[str, Query(description="One question.")],
    k: Annotated[int, Query(ge=1, description="Documents to return.")] = 10,
    per_document: Annotated[int, Query(ge=1)] = 3,
    channels: ChannelsParam = None,
    fusion: str = "dbsf",
    weights: WeightsParam = None,
    doc: DocParam = None,
    prefix: PrefixParam = None,
) -> dict[str, Any]:
    """Documents ranked by their best page (its score), with their best pages."""
    body = DocumentSearchBody(
        query=q,
        k=k,
        per_document=per_document,
        channels=parse_channels(channels),
        fusion=fusion,
        weights=parse_weights(weights),
        filter=_filter(doc, prefix),
    )
    return run_document_search(served, body)


@router.post("/search/documents", response_model=DocumentSearchOut)
def search_documents_post(served: ServedDep, body: DocumentSearchBody) -> dict[str, Any]:
    """Documents ranked by their best page (its score), with their best pages."""
    return run_document_search(served, body)
