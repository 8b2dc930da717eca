"""The records that cross the Store seam, and the helpers both backends share.

Points to write (:class:`PointRecord`), points read back (:class:`StoredPoint`,
:class:`ScoredRecord`), payload conditions (:class:`PayloadFilter`) and sparse
vectors; the :class:`~pagelens.storage.store.Store` protocol that takes them is
in :mod:`pagelens.storage.store`. Qdrant types never leave a backend; callers see
numpy arrays and plain dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pagelens.types import MultiVector


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


def vector_list(v: MultiVector) -> list[Any]:
    """Give a dense vector or multi-vector as the (nested) float lists both engines take."""
    return list(v.astype("float32").tolist())


def scored_records(points: Any) -> list[ScoredRecord]:
    """ScoredRecords of an engine's scored points (both engines name their fields alike)."""
    return [ScoredRecord(str(p.id), float(p.score), dict(p.payload or {})) for p in points]


def stored_point(id_: Any, payload: Any, vectors: Any) -> StoredPoint:
    """Make a StoredPoint of an engine record: dense (list) vectors as float32 arrays."""
    import numpy as np

    dense = {}
    for name, v in (vectors or {}).items():
        if isinstance(v, list) and v and not isinstance(v[0], list):  # one plain vector
            dense[name] = np.asarray(v, dtype=np.float32).reshape(1, -1)
        elif isinstance(v, list):  # multi-vectors; sparse ones are objects
            dense[name] = np.asarray(v, dtype=np.float32).reshape(len(v), -1)
    return StoredPoint(str(id_), dict(payload or {}), dense)


def paged(fetch: Callable[[Any], tuple[Sequence[Any], Any]]) -> Iterator[Any]:
    """Every record of a paged scroll: ``fetch(offset)`` gives a page and the next offset.

    Both engines page a scroll alike (a first call with no offset, the last page's
    next offset ``None``).
    """
    offset = None
    while True:
        records, offset = fetch(offset)
        yield from records
        if offset is None:
            return


def build_filter(m: Any, where: PayloadFilter | None) -> Any:
    """Translate a PayloadFilter with a Qdrant models namespace ``m``.

    Qdrant Edge and qdrant-client spell filters alike (``Filter``,
    ``FieldCondition``, ``MatchValue``, ``MatchAny``), so both backends build their
    filters with this one function: the same conditions on every backend.
    """
    if where is None:
        return None
    must = []
    if where.kind is not None:
        must.append(m.FieldCondition(key="kind", match=m.MatchValue(value=where.kind)))
    if where.doc_paths is not None:
        must.append(m.FieldCondition(key="doc_path", match=m.MatchAny(any=list(where.doc_paths))))
    if where.doc_sha256 is not None:
        must.append(
            m.FieldCondition(key="doc_sha256", match=m.MatchAny(any=list(where.doc_sha256)))
        )
    if where.path_prefix is not None:
        prefix = where.path_prefix.strip("/")
        must.append(m.FieldCondition(key="path_prefixes", match=m.MatchValue(value=prefix)))
    must_not = []
    if where.exclude_doc_sha256:
        excluded = list(where.exclude_doc_sha256)
        must_not.append(m.FieldCondition(key="doc_sha256", match=m.MatchAny(any=excluded)))
    if not must and not must_not:
        return None
    return m.Filter(must=must or None, must_not=must_not or None)


def check_open(closed: bool, location: object) -> None:
    """Refuse a call on a store that was closed, naming its index (both backends)."""
    from pagelens.errors import IndexClosedError

    if closed:
        raise IndexClosedError(
            f"{location}: the index is closed; open it again to use it "
            "(pagelens.open or Index.open)"
        )


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
