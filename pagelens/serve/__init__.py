"""``pagelens serve``: one process owns an index and answers HTTP requests.

:func:`serve` opens the index, builds the app (:func:`pagelens.serve.app.create_app`)
and runs it with uvicorn. Needs the ``serve`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import TYPE_CHECKING

from pagelens.errors import MissingExtraError, PagelensError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from pagelens.serve.app import Limits


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) resolves to loopback addresses only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_exposure(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without an API key.

    Raises:
        PagelensError: ``host`` is not loopback and no ``api_key`` is set.

    """
    if api_key is not None and not api_key.strip():
        raise PagelensError("the API key is empty: give a secret, or leave it out")
    if api_key is None and not is_loopback(host):
        raise PagelensError(
            f"refusing to listen on {host!r} without an API key: anyone who can reach it "
            "could search, read page images and start indexing jobs. Give --api-key "
            "(or PAGELENS_API_KEY), or keep the default --host 127.0.0.1"
        )


def build_app(
    path: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    qdrant_api_key: str | None = None,
    collection: str = "pagelens",
    model: str | None = None,
    text_model: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
    api_key: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_bytes: int = 256 * 2**20,
    limits: Limits | None = None,
) -> FastAPI:
    """Open an index (a folder, or a Qdrant server at ``url``) and build its app."""
    try:
        from pagelens.serve.app import create_app
    except ImportError as exc:  # fastapi or uvicorn missing
        raise MissingExtraError(exc.name or "fastapi", "serve") from exc
    from pagelens.serve.locking import open_served

    lens = open_served(
        path,
        url=url,
        api_key=qdrant_api_key,
        collection=collection,
        model=model,
        text_model=text_model,
        device=device,
        batch_size=batch_size,
    )
    return create_app(
        lens,
        api_key=api_key,
        cache_dir=str(cache_dir) if cache_dir else None,
        cache_bytes=cache_bytes,
        limits=limits,
    )


def serve(
    path: str | os.PathLike[str] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    log_level: str = "info",
    **options: object,
) -> None:
    """Serve an index over HTTP until interrupted (see :func:`build_app` for ``options``).

    Raises:
        PagelensError: a non-loopback ``host`` without ``api_key``, or the index
            cannot be opened.

    """
    check_exposure(host, api_key)
    try:
        import uvicorn
    except ImportError as exc:
        raise MissingExtraError("uvicorn", "serve") from exc
    app = build_app(path, api_key=api_key, **options)  # type: ignore[arg-type]
    uvicorn.run(app, host=host, port=port, log_level=log_level)


__all__ = ["build_app", "check_exposure", "is_loopback", "serve"]
