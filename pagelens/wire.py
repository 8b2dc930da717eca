"""The wire format: one shape for a hit, a document, an error and search options.

``pagelens ... --json``, the HTTP API of ``pagelens serve`` and the records'
``to_dict()`` (:meth:`pagelens.types.Hit.to_dict`,
:meth:`pagelens.index.DocumentRecord.to_dict`,
:meth:`pagelens.aggregate.DocumentHit.to_dict`) use the same field names: those of
the Python attributes (``doc_path``, ``page_number``, ``score``, ``doc_sha256``,
``channels``, ``source``...). Every top-level JSON object the command line prints or
the server sends carries ``schema_version`` (:data:`SCHEMA_VERSION`), raised when a
field changes name or meaning.

Search options travel under the names of :class:`pagelens.search.SearchOptions`
(``k``, ``channels``, ``fusion``, ``weights``, ``filter`` with ``doc_paths`` and
``path_prefix``); on a command line or in a query string, channels and weights are
text (``dense,bm25``; ``bm25=2,dense=1``), read here by :func:`parse_channels` and
:func:`parse_weights`. An error is ``{"schema_version": 1, "error": "..."}``.

This module depends on no other module of pagelens but :mod:`pagelens.errors`, so
that every record can shape itself with it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pagelens.errors import PagelensError

SCHEMA_VERSION = 1
SNIPPET_CHARS = 240  # characters of page text a hit carries, around the question's word


class OptionError(PagelensError):
    """An option written wrong (weights that are not ``CHANNEL=NUMBER`` pairs...)."""


class _HitLike(Protocol):
    def to_dict(self, *, query: str | None = None) -> dict[str, Any]: ...


class _Shaped(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def tagged(body: Mapping[str, Any]) -> dict[str, Any]:
    """Return a top-level JSON object: ``body`` with ``schema_version`` first."""
    return {"schema_version": SCHEMA_VERSION, **body}


def error_dict(message: str) -> dict[str, Any]:
    """Return the JSON object of an error: ``{"schema_version": 1, "error": message}``."""
    return tagged({"error": message})


def parse_channels(text: str | None) -> list[str] | None:
    """Read ``dense,bm25`` as a list of channel names (``None``: none given).

    The names are checked where the options are (:class:`pagelens.search.SearchOptions`).
    """
    if not text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def parse_weights(text: str | None) -> dict[str, float] | None:
    """Read ``bm25=2`` or ``dense=1,bm25=2`` as RRF weights per channel (``None``: none).

    Raises:
        OptionError: a part that is not ``CHANNEL=NUMBER``, named.

    """
    if not text:
        return None
    out: dict[str, float] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        try:
            if not eq or not name.strip():
                raise ValueError(part)
            out[name.strip()] = float(value)
        except ValueError:
            raise OptionError(
                f"weights: {part!r} is not CHANNEL=NUMBER; give channel=number pairs like "
                f"dense=1,bm25=2 (got {text!r})"
            ) from None
    return out


def snippet(text: str | None, query: str | None = None, limit: int = SNIPPET_CHARS) -> str | None:
    """Cut a page's text to at most ``limit`` characters, on one line.

    The piece starts a little before the first place the page holds the query's
    longest word (3 letters or more), else at the start; ``…`` marks what was cut.
    ``None`` for a page without text.

    Examples:
        >>> snippet("Total  revenue   grew by 9% in 2020", limit=20)
        'Total revenue grew…'
        >>> snippet("a" * 30 + " revenue grew", query="revenue", limit=20)
        '…aaaaa revenue grew'

    """
    if text is None:
        return None
    flat = " ".join(text.split())
    start = 0
    for word in sorted(re.findall(r"\w{3,}", query or ""), key=len, reverse=True):
        found = flat.lower().find(word.lower())
        if found >= 0:
            start = max(0, found - limit // 3)
            break
    head = "…" if start else ""
    if len(flat) - start <= limit - len(head):
        return head + flat[start:]
    return head + flat[start : start + limit - len(head) - 1].rstrip() + "…"


def page_results(
    queries: Sequence[str], results: Sequence[Sequence[_HitLike]]
) -> list[dict[str, Any]]:
    """Return ``[{"query": q, "hits": [hit, ...]}, ...]``, each hit's snippet around ``q``."""
    return [
        {"query": q, "hits": [h.to_dict(query=q) for h in hits]}
        for q, hits in zip(queries, results, strict=True)
    ]


def document_results(
    queries: Sequence[str], results: Sequence[Sequence[_Shaped]]
) -> list[dict[str, Any]]:
    """Return ``[{"query": q, "documents": [document, ...]}, ...]`` (documents ranked)."""
    return [
        {"query": q, "documents": [d.to_dict() for d in docs]}
        for q, docs in zip(queries, results, strict=True)
    ]


def search_response(
    results: Sequence[Mapping[str, Any]],
    *,
    channels: Sequence[str],
    fusion: str,
    k: int,
    milliseconds: float,
) -> dict[str, Any]:
    """Return the JSON object of a search (``pagelens search --json``, ``POST /search``).

    ``results`` are :func:`page_results` or :func:`document_results`; ``channels``
    the channels searched, ``fusion`` and ``k`` the options it ran with,
    ``milliseconds`` how long it took.
    """
    return tagged(
        {
            "channels": list(channels),
            "fusion": fusion,
            "k": k,
            "milliseconds": round(milliseconds, 2),
            "results": list(results),
        }
    )
