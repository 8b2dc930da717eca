"""The HTTP API and the web page of ``pagelens serve`` (FastAPI).

Every endpoint goes through the library: :class:`~pagelens.lens.Lens` for search,
documents and page images, :func:`pagelens.pipeline.job.index_paths` for jobs. A
bad request gets a 4xx with a JSON body ``{"error": "..."}`` naming the bad value;
an unexpected failure a 500 with no traceback (it goes to the server's log).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from pagelens.errors import (
    DocumentNotFoundError,
    EncoderError,
    PagelensError,
    PageNotFoundError,
    SourceChangedError,
    SourceGoneError,
    StoreError,
)
from pagelens.pipeline.text import TextSettings
from pagelens.search import CHANNELS, FUSIONS, SearchFilter, index_channels
from pagelens.serve.jobs import JobBusyError, JobManager
from pagelens.serve.locking import ServedLens
from pagelens.serve.pages import PageImages, page_hit
from pagelens.types import Hit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask for."""

    max_k: int = 100
    max_query_chars: int = 1000
    max_queries: int = 16  # questions per search request
    min_dpi: int = 20
    max_dpi: int = 300
    max_page_size: int = 500  # documents per GET /documents page
    max_paths: int = 100  # paths per POST /index


SNIPPET_CHARS = 240


class ApiError(Exception):
    """An HTTP error with a status and a message, sent as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- request and response records (pydantic at the I/O edge) ---------------------------
class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_paths: list[str] | None = Field(None, description="Only these documents (paths).")
    path_prefix: str | None = Field(None, description="Only documents under this folder.")


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queries: list[str] = Field(..., description="Questions, in words.", min_length=1)
    k: int = Field(10, ge=1, description="Hits per question.")
    channels: list[str] | None = Field(
        None, description=f"Any of {list(CHANNELS)}; none: every channel the index holds."
    )
    fusion: str = Field("dbsf", description=f"One of {list(FUSIONS)}.")
    weights: dict[str, float] | None = Field(None, description="RRF weight per channel.")
    filter: FilterBody | None = None


class DocumentSearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(..., description="One question.")
    k: int = Field(10, ge=1, description="Documents to return.")
    per_document: int = Field(3, ge=1, description="Best pages kept per document.")
    channels: list[str] | None = None
    fusion: str = "dbsf"
    weights: dict[str, float] | None = None
    filter: FilterBody | None = None


class IndexBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(..., description="Files or folders on the server's disk.")
    ocr: Literal["auto", "never", "always"] = Field(
        "auto", description="Where the index keeps page text: OCR pages without a text layer."
    )


class HitOut(BaseModel):
    doc: str = Field(..., description="Document id (sha256).")
    doc_path: str
    page: int
    score: float
    channels: list[str]
    snippet: str | None = None
    image: str = Field(..., description="URL of the page image.")


class QueryHits(BaseModel):
    query: str
    hits: list[HitOut]


class PageOut(BaseModel):
    page: int
    score: float
    channels: list[str]
    image: str


class DocumentOut(BaseModel):
    doc: str = Field(..., description="Document id (sha256).")
    doc_path: str
    score: float = Field(..., description="Its best page's score.")
    pages: list[PageOut]


class DocumentSearchOut(BaseModel):
    query: str
    channels: list[str]
    fusion: str
    milliseconds: float
    documents: list[DocumentOut]


class SearchOut(BaseModel):
    channels: list[str]
    fusion: str
    k: int
    milliseconds: float
    results: list[QueryHits]


def snippet(text: str | None, query: str, limit: int = SNIPPET_CHARS) -> str | None:
    """Cut a short piece of a page's text, around the first word of the query it holds."""
    if not text:
        return None
    flat = " ".join(text.split())
    start = 0
    for word in sorted(re.findall(r"\w{3,}", query), key=len, reverse=True):
        found = flat.lower().find(word.lower())
        if found >= 0:
            start = max(0, found - limit // 3)
            break
    piece = flat[start : start + limit]
    return ("…" if start else "") + piece + ("…" if start + limit < len(flat) else "")


def hit_out(hit: Hit, query: str) -> HitOut:
    return HitOut(
        doc=hit.doc_sha256,
        doc_path=hit.doc_path,
        page=hit.page_number,
        score=hit.score,
        channels=list(hit.channels),
        snippet=snippet(hit.text, query),
        image=f"/pages/{hit.doc_sha256}/{hit.page_number}/image",
    )


def _status(exc: PagelensError) -> int:
    if isinstance(exc, (DocumentNotFoundError, PageNotFoundError)):
        return 404
    if isinstance(exc, SourceGoneError):
        return 410
    if isinstance(exc, (SourceChangedError, JobBusyError)):
        return 409
    if isinstance(exc, (StoreError, EncoderError)):
        return 503
    return 400


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    lens: ServedLens,
    *,
    api_key: str | None = None,
    cache_dir: str | None = None,
    cache_bytes: int = 256 * 2**20,
    limits: Limits | None = None,
) -> FastAPI:
    """Build the FastAPI app over an opened, served index.

    Args:
        lens: the index (see :func:`pagelens.serve.locking.open_served`); the app
            owns it from here on and closes it on shutdown.
        api_key: when set, every API call must send it (``X-API-Key`` header or
            ``Authorization: Bearer``); ``/healthz``, the web page and the OpenAPI
            docs stay open.
        cache_dir: folder of rendered page images (``None``: a temporary folder).
        cache_bytes: that folder's size cap.
        limits: caps on k, query length, queries per request, dpi.

    """
    lim = limits or Limits()
    jobs = JobManager(lens)
    images = PageImages(lens, cache_dir, max_bytes=cache_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()
        lens.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pagelens",
        summary="Search PDF pages by questions; see why they matched.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.lens, app.state.jobs, app.state.images = lens, jobs, images

    # -- errors ----------------------------------------------------------------------
    @app.exception_handler(ApiError)
    def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(PagelensError)
    def _pagelens_error(request: Request, exc: PagelensError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(HTTPException)
    def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the server log has the details"},
            status_code=500,
        )

    # -- access ----------------------------------------------------------------------
    def authorised(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if given is None and bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if given is None:
            raise ApiError(401, "this server needs an API key: send it as X-API-Key")
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "wrong API key")

    api = APIRouter(dependencies=[Depends(authorised)])

    def check_queries(queries: list[str]) -> None:
        if len(queries) > lim.max_queries:
            raise ApiError(422, f"{len(queries)} queries in one request; at most {lim.max_queries}")
        for i, q in enumerate(queries, 1):
            if len(q) > lim.max_query_chars:
                raise ApiError(
                    422,
                    f"query {i} is {len(q)} characters long; at most {lim.max_query_chars}",
                )

    def check_k(k: int) -> None:
        if k > lim.max_k:
            raise ApiError(422, f"k={k} is too large; at most {lim.max_k}")

    def search_filter(body: FilterBody | None) -> SearchFilter | None:
        if body is None or not (body.doc_paths or body.path_prefix):
            return None
        paths = tuple(body.doc_paths) if body.doc_paths else None
        return SearchFilter(doc_paths=paths, path_prefix=body.path_prefix)

    def run_document_search(body: DocumentSearchBody) -> DocumentSearchOut:
        check_queries([body.query])
        check_k(body.k)
        check_k(body.per_document)
        channels = tuple(body.channels) if body.channels else None
        t0 = time.perf_counter()
        ranked = lens.search_documents(
            body.query,
            k=body.k,
            per_document=body.per_document,
            channels=channels,
            fusion=body.fusion,
            weights=body.weights,
            filter=search_filter(body.filter),
        )
        ms = (time.perf_counter() - t0) * 1000
        return DocumentSearchOut(
            query=body.query,
            channels=list(channels or index_channels(lens.index)),
            fusion=body.fusion,
            milliseconds=round(ms, 2),
            documents=[
                DocumentOut(
                    doc=d.doc_sha256,
                    doc_path=d.doc_path,
                    score=d.score,
                    pages=[
                        PageOut(
                            page=h.page_number,
                            score=h.score,
                            channels=list(h.channels),
                            image=f"/pages/{d.doc_sha256}/{h.page_number}/image",
                        )
                        for h in d.pages
                    ],
                )
                for d in ranked
            ],
        )

    def run_search(body: SearchBody) -> SearchOut:
        check_queries(body.queries)
        check_k(body.k)
        flt = search_filter(body.filter)
        channels = tuple(body.channels) if body.channels else None
        t0 = time.perf_counter()
        results = lens.search(
            body.queries,
            k=body.k,
            channels=channels,
            fusion=body.fusion,
            weights=body.weights,
            filter=flt,
        )
        ms = (time.perf_counter() - t0) * 1000
        return SearchOut(
            channels=list(channels or index_channels(lens.index)),
            fusion=body.fusion,
            k=body.k,
            milliseconds=round(ms, 2),
            results=[
                QueryHits(query=q, hits=[hit_out(h, q) for h in hits])
                for q, hits in zip(body.queries, results, strict=True)
            ],
        )

    # -- the web page ----------------------------------------------------------------
    static = resources.files("pagelens.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    # -- health ----------------------------------------------------------------------
    @app.get("/healthz", tags=["health"], summary="Liveness (no API key needed).")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/info", tags=["health"], summary="The index, its models and channels, limits.")
    def info() -> dict[str, Any]:
        from pagelens.version import package_version

        out: dict[str, Any] = {
            "pagelens_version": package_version(),
            "location": lens.index.location,
            "model": lens.model,
            "text_model": lens.text_model,
            "channels": [],
            "documents": 0,
            "pages": 0,
            "manifest": None,
        }
        if lens.index.exists():
            out.update(lens.info().to_dict())
        if lens.index.manifest is not None:
            out["channels"] = list(index_channels(lens.index))
        out["jobs_running"] = [j.id for j in jobs.all() if j.state in ("queued", "running")]
        out["image_cache_bytes"] = images.cached_bytes()
        out["limits"] = lim.__dict__
        return out

    # -- search ----------------------------------------------------------------------
    @api.get("/search", tags=["search"], response_model=SearchOut)
    def search_get(
        q: Annotated[list[str], Query(description="Question (repeat for several).")],
        k: Annotated[int, Query(ge=1)] = 10,
        channels: Annotated[str | None, Query(description="e.g. dense,bm25")] = None,
        fusion: str = "dbsf",
        weights: Annotated[str | None, Query(description="RRF weights: bm25=2,dense=1")] = None,
        doc: Annotated[list[str] | None, Query(description="Only these document paths.")] = None,
        prefix: Annotated[str | None, Query(description="Only documents under it.")] = None,
    ) -> SearchOut:
        parsed = _weights(weights)
        body = SearchBody(
            queries=q,
            k=k,
            channels=_channels(channels),
            fusion=fusion,
            weights=parsed,
            filter=FilterBody(doc_paths=doc, path_prefix=prefix) if doc or prefix else None,
        )
        return run_search(body)

    @api.post("/search", tags=["search"], response_model=SearchOut)
    def search_post(body: SearchBody) -> SearchOut:
        return run_search(body)

    @api.get("/search/documents", tags=["search"], response_model=DocumentSearchOut)
    def search_documents_get(
        q: Annotated[str, Query(description="One question.")],
        k: Annotated[int, Query(ge=1, description="Documents to return.")] = 10,
        per_document: Annotated[int, Query(ge=1)] = 3,
        channels: Annotated[str | None, Query(description="e.g. dense,bm25")] = None,
        fusion: str = "dbsf",
        weights: Annotated[str | None, Query(description="RRF weights: bm25=2,dense=1")] = None,
        doc: Annotated[list[str] | None, Query(description="Only these document paths.")] = None,
        prefix: Annotated[str | None, Query(description="Only documents under it.")] = None,
    ) -> DocumentSearchOut:
        """Documents ranked by their best page (its score), with their best pages."""
        return run_document_search(
            DocumentSearchBody(
                query=q,
                k=k,
                per_document=per_document,
                channels=_channels(channels),
                fusion=fusion,
                weights=_weights(weights),
                filter=FilterBody(doc_paths=doc, path_prefix=prefix) if doc or prefix else None,
            )
        )

    @api.post("/search/documents", tags=["search"], response_model=DocumentSearchOut)
    def search_documents_post(body: DocumentSearchBody) -> DocumentSearchOut:
        """Documents ranked by their best page (its score), with their best pages."""
        return run_document_search(body)

    # -- documents -------------------------------------------------------------------
    @api.get("/documents", tags=["documents"])
    def documents(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1)] = 50,
    ) -> dict[str, Any]:
        if limit > lim.max_page_size:
            raise ApiError(422, f"limit={limit} is too large; at most {lim.max_page_size}")
        records = lens.documents()
        return {
            "total": len(records),
            "offset": offset,
            "limit": limit,
            "documents": [_document(r) for r in records[offset : offset + limit]],
        }

    @api.get("/documents/{doc}", tags=["documents"])
    def document(doc: str) -> dict[str, Any]:
        record = lens.index.find_document(doc)
        pages = [
            {
                "page": int(p["page_number"]),
                "width_pt": p.get("width_pt"),
                "height_pt": p.get("height_pt"),
                "text_source": p.get("text_source"),
                "error": p.get("error"),
                "snippet": snippet(p.get("text"), ""),
                "image": f"/pages/{record.doc_sha256}/{int(p['page_number'])}/image",
            }
            for p in lens.index.document_pages(record)
        ]
        return {**_document(record), "pages": pages}

    @api.delete("/documents/{doc}", tags=["documents"])
    def delete_document(doc: str) -> dict[str, Any]:
        record = lens.index.find_document(doc)
        removed = lens.delete(record.doc_sha256)
        return {"deleted": record.doc_path, "doc": record.doc_sha256, "pages": removed}

    # -- pages -----------------------------------------------------------------------
    @api.get(
        "/pages/{doc}/{page}/image",
        tags=["pages"],
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
        summary="The page, rendered again from its checked source file (PNG).",
    )
    def page_image(doc: str, page: int, dpi: Annotated[int, Query(ge=1)] = 100) -> Response:
        if not lim.min_dpi <= dpi <= lim.max_dpi:
            raise ApiError(422, f"dpi={dpi} is out of range {lim.min_dpi} to {lim.max_dpi}")
        hit = page_hit(lens.index, doc, page)
        data = images.png(hit, dpi)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @api.get("/pages/{doc}/{page}/explain", tags=["pages"])
    def explain(
        doc: str,
        page: int,
        q: Annotated[str, Query(description="The question.")],
        channel: Annotated[
            str | None, Query(description="dense (the index's encoder) or text.")
        ] = None,
    ) -> dict[str, Any]:
        """Which parts of the page matched which query tokens, and how well.

        A visual encoder gives a heatmap per query token over the page's patch grid
        (``kind="heatmap"``); a text encoder the page words each token matched, with
        their boxes as fractions of the page (``kind="boxes"``).
        """
        check_queries([q])
        return lens.explain(doc, page, q, channel=channel).to_dict()

    # -- indexing jobs ---------------------------------------------------------------
    @api.post("/index", tags=["jobs"], status_code=202)
    def start_job(body: IndexBody) -> dict[str, Any]:
        if len(body.paths) > lim.max_paths:
            raise ApiError(422, f"{len(body.paths)} paths; at most {lim.max_paths} per job")
        return jobs.start(body.paths, text=TextSettings(ocr=body.ocr)).to_dict()

    @api.get("/jobs", tags=["jobs"])
    def list_jobs() -> dict[str, Any]:
        return {"jobs": [j.to_dict() for j in reversed(jobs.all())]}

    @api.get("/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (GET /jobs lists them)")
        return job.to_dict()

    @api.delete("/jobs/{job_id}", tags=["jobs"], status_code=202)
    def cancel_job(job_id: str) -> dict[str, Any]:
        job = jobs.cancel(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (GET /jobs lists them)")
        return job.to_dict()

    app.include_router(api)
    return app


def _weights(text: str | None) -> dict[str, float] | None:
    """Parse ``bm25=2,dense=1`` (RRF weights in a query string)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        try:
            if not eq:
                raise ValueError(part)
            out[name.strip()] = float(value)
        except ValueError:
            raise ApiError(422, f"weights: {part!r} is not CHANNEL=NUMBER (e.g. bm25=2)") from None
    return out


def _channels(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _document(record: Any) -> dict[str, Any]:
    return {
        "doc": record.doc_sha256,
        "doc_path": record.doc_path,
        "page_count": record.page_count,
        "failed_pages": record.failed_pages,
        "source": record.source,
    }
