"""Errors of the HTTP API: every one is sent as the wire format's error object.

A bad request gets a 4xx with ``{"schema_version": 1, "error": "..."}`` naming the
bad value; an unexpected failure a 500 with no traceback (it goes to the server's
log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
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
from pagelens.serve.jobs import JobBusyError
from pagelens.wire import OptionError, error_dict

logger = logging.getLogger(__name__)


class ApiError(Exception):
    """An HTTP error with a status and a message, sent as the wire's error object."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def status_of(exc: PagelensError) -> int:
    """Return the HTTP status of a library error: what kind of request it refuses."""
    if isinstance(exc, (DocumentNotFoundError, PageNotFoundError)):
        return 404
    if isinstance(exc, SourceGoneError):
        return 410
    if isinstance(exc, (SourceChangedError, JobBusyError)):
        return 409
    if isinstance(exc, OptionError):
        return 422
    if isinstance(exc, (StoreError, EncoderError)):
        return 503
    return 400


def _error(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_dict(message), status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return _error(exc.message, exc.status)


def _pagelens_error(request: Request, exc: PagelensError) -> JSONResponse:
    return _error(str(exc), status_of(exc))


def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(_validation_message(exc), 422)


def _http(request: Request, exc: HTTPException) -> JSONResponse:
    return _error(str(exc.detail), exc.status_code, exc.headers)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    return _error(f"internal error ({type(exc).__name__}); the server log has the details", 500)


def add_error_handlers(app: FastAPI) -> None:
    """Send every error the app meets as the wire's error object, with its status."""
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(PagelensError)(_pagelens_error)
    app.exception_handler(RequestValidationError)(_invalid)
    app.exception_handler(HTTPException)(_http)
    app.exception_handler(Exception)(_unexpected)
