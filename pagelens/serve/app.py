"""The HTTP API and the web page of ``pagelens serve`` (FastAPI), assembled.

Every endpoint goes through the library: :class:`~pagelens.lens.Lens` for search,
documents and page images, :func:`pagelens.pipeline.job.index_paths` for jobs. The
routes live in :mod:`pagelens.serve.routes` (one router per kind of thing served);
what they answer is the wire format of :mod:`pagelens.wire`. A bad request gets a
4xx with the wire's error object, ``{"schema_version": 1, "error": "..."}``, naming
the bad value; an unexpected failure a 500 with no traceback (it goes to the
server's log).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from pagelens.serve.errors import add_error_handlers
from pagelens.serve.jobs import JobManager
from pagelens.serve.locking import ServedLens
from pagelens.serve.pages import PageImages
from pagelens.serve.routes import documents, health, jobs, pages, search
from pagelens.serve.state import Limits, Served

__all__ = ["Limits", "create_app"]


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
    served = Served(
        lens=lens,
        jobs=JobManager(lens),
        images=PageImages(lens, cache_dir, max_bytes=cache_bytes),
        limits=limits or Limits(),
        api_key=api_key,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        served.jobs.close()
        served.lens.close()

    app = FastAPI(
        lifespan=lifespan,
        title="pagelens",
        summary="Search PDF pages by questions; see why they matched.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.served = served
    app.state.lens, app.state.jobs, app.state.images = lens, served.jobs, served.images
    add_error_handlers(app)
    _add_web_page(app)
    app.include_router(health.public)
    for module in (health, search, documents, pages, jobs):
        app.include_router(module.router)
    return app


def _add_web_page(app: FastAPI) -> None:
    """Serve the web page (``/``) and its files (``/static``), open to all."""
    static = resources.files("pagelens.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")
