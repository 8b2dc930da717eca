"""What every route of ``pagelens serve`` works with, and the caps on a request.

The app keeps one :class:`Served` in ``app.state.served``; a route asks for it as a
FastAPI dependency (:data:`ServedDep`), and every API router checks the API key
first (:func:`authorised`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pagelens.serve.errors import ApiError
from pagelens.serve.jobs import JobManager
from pagelens.serve.locking import ServedLens
from pagelens.serve.pages import PageImages


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

    def check_queries(self, queries: list[str]) -> None:
        """Refuse more questions, or longer ones, than a request may ask (422)."""
        if len(queries) > self.max_queries:
            raise ApiError(
                422, f"{len(queries)} queries in one request; at most {self.max_queries}"
            )
        for i, q in enumerate(queries, 1):
            if len(q) > self.max_query_chars:
                raise ApiError(
                    422, f"query {i} is {len(q)} characters long; at most {self.max_query_chars}"
                )

    def check_k(self, k: int) -> None:
        """Refuse a ``k`` (or ``per_document``) over the cap (422)."""
        if k > self.max_k:
            raise ApiError(422, f"k={k} is too large; at most {self.max_k}")

    def check_dpi(self, dpi: int) -> None:
        """Refuse a page image resolution out of range (422)."""
        if not self.min_dpi <= dpi <= self.max_dpi:
            raise ApiError(422, f"dpi={dpi} is out of range {self.min_dpi} to {self.max_dpi}")

    def check_page_size(self, limit: int) -> None:
        """Refuse a listing page over the cap (422)."""
        if limit > self.max_page_size:
            raise ApiError(422, f"limit={limit} is too large; at most {self.max_page_size}")

    def check_paths(self, paths: list[str]) -> None:
        """Refuse a job of more paths than the cap (422)."""
        if len(paths) > self.max_paths:
            raise ApiError(422, f"{len(paths)} paths; at most {self.max_paths} per job")


@dataclass(frozen=True)
class Served:
    """A served index: the lens, its indexing jobs, the page images, the caps, the key."""

    lens: ServedLens
    jobs: JobManager
    images: PageImages
    limits: Limits
    api_key: str | None = None


def served(request: Request) -> Served:
    """Return the app's :class:`Served` (a FastAPI dependency)."""
    found: Served = request.app.state.served
    return found


ServedDep = Annotated[Served, Depends(served)]


def authorised(request: Request) -> None:
    """Refuse a request without the server's API key (when it has one): 401."""
    api_key = served(request).api_key
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


def image_url(doc_sha256: str, page_number: int) -> str:
    """Return the URL of a page's image (``GET /pages/{doc}/{page}/image``)."""
    return f"/pages/{doc_sha256}/{page_number}/image"
