"""Embedded backend: Qdrant Edge, Qdrant's engine in-process, persisted in a folder."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pagelens.errors import MissingExtraError, StoreError, check_whole
from pagelens.plan import Fusion, Request, Stage
from pagelens.storage.base import (
    PayloadFilter,
    PointRecord,
    ScoredRecord,
    SparseVector,
    StoredPoint,
    build_filter,
    check_open,
    engine_errors,
    paged,
    scored_records,
    stored_point,
    vector_list,
)
from pagelens.storage.layout import BM25, KEYWORD_FIELDS, CollectionSpec, VectorSpec
from pagelens.types import MultiVector

logger = logging.getLogger(__name__)
# how Qdrant Edge words a refusal to optimize for want of disk space
_NO_ROOM = "Not enough space available for optimization"

_SHARD = "qdrant-edge"
_LOCK = ".lock"
_CLEAN = ".clean-close"  # written by close(): the shard's files as they were left

# Qdrant Edge writes every point into one appendable segment, and a query scans a
# segment on one thread: the engine's search pool runs segments in parallel. So the
# store seals the appendable segment (optimize) each SEGMENT_POINTS points written,
# and a question scans the index on every core (collections of manifest format 6 on:
# CollectionSpec.segmented). MAX_SEGMENTS keeps the engine's
# merge optimizer from joining them back (it merges the smallest three once a
# shard holds more; 0, the engine's default, means one per CPU). An appendable
# segment of less than SEAL_MIN_KB of vectors stays appendable (Qdrant's default
# indexing threshold): a run that adds a few pages leaves no small segment behind.
SEGMENT_POINTS = 4096
MAX_SEGMENTS = 64
SEAL_MIN_KB = 10_000


def _edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise MissingExtraError("qdrant_edge", "all") from exc
    return qdrant_edge


def _fingerprint(shard: Path) -> list[list[Any]]:
    """(path, size, mtime) of every file of a shard, sorted."""
    out: list[list[Any]] = []
    for dirpath, _, files in os.walk(shard):
        for name in files:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            out.append([os.path.relpath(path, shard), st.st_size, st.st_mtime_ns])
    return sorted(out)


# The child process that loads a shard before this process does. A damaged id
# tracker makes the engine abort the whole process (a Rust allocation failure or
# panic: SIGABRT, exit status 134), which no ``except`` can catch; in a child, the
# abort becomes an exit status to report. It also lists every point id, which
# walks the id tracker once more. Other damage raises a plain exception, which the
# child ignores: this process meets it again and reports it as a StoreError.
_PROBE = """
import sys
import qdrant_edge as q
try:
    shard = q.EdgeShard.load(sys.argv[1])
    offset = None
    while True:
        request = q.ScrollRequest(offset=offset, limit=10000, with_payload=False, with_vector=False)
        _, offset = shard.scroll(request)
        if offset is None:
            break
    shard.close()
except Exception:
    pass
"""


def probe_shard(folder: Path) -> None:
    """Load the shard under ``folder`` in a child process; StoreError if the engine aborts.

    The probe costs about one more load of the shard, so a probed open costs
    about twice a plain one (README, "Checking and repairing an index"), while the
    clean-close test that decides whether to probe only lists the shard's files,
    sizes and times. So the probe runs only after an unclean close or a change to
    the files, and for ``check``.
    """
    env = {**os.environ, "RUST_BACKTRACE": "0"}
    t0 = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(folder / _SHARD)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    logger.debug("probed %s in %.2f s", folder, time.perf_counter() - t0)
    if result.returncode == 0:
        return
    lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
    noise = ("stack backtrace", "note:", "fatal runtime error", "Traceback")
    kept = [ln for ln in lines if not ln.startswith(noise) and not ln[0].isdigit()]
    rc = result.returncode
    status = f"signal {-rc}" if rc < 0 else f"exit {rc}"
    raise StoreError(
        f"{folder}: index files are damaged: the engine aborted loading them ({status}: "
        f"{' '.join(kept[:2])[:300] or 'no message'}); pagelens cannot repair this: restore "
        "a copy of the folder from before the damage, or index the documents into a new folder"
    )


# index folders this process holds the lock of: a second open in the same process
# would otherwise be told another process holds it
_HELD: set[str] = set()
_WAIT_STEP_S = 0.2


class EdgeStore:
    """A Qdrant Edge shard in ``folder/qdrant-edge``, guarded by an exclusive lock.

    One process at a time may open an index folder: a second gets a StoreError
    instead of two writers corrupting the shard, or waits up to ``wait_s`` seconds
    for the lock. With ``lock_now`` the lock is taken at once, creating the folder
    if needed, so that two indexing runs on a new folder find each other before any
    work; a folder this store created is removed on close if no index was made in it.

    A shard whose files are not as the last ``close()`` left them (no
    ``.clean-close`` record, or files changed since: a crash, a copy, damage) is
    first loaded in a child process (:func:`probe_shard`), so damage that aborts
    the engine becomes a StoreError; ``verify=True`` always probes (``pagelens
    check``). Damage that leaves sizes and times alone (bit rot) is only found by
    ``pagelens check``.

    ``segment_points``: seal the appendable segment each so many points written;
    0 never seals (one segment until ``optimize``); ``None``: :data:`SEGMENT_POINTS`.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        wait_s: float = 0.0,
        lock_now: bool = False,
        verify: bool = False,
        segment_points: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        if segment_points is not None:
            check_whole("segment_points (0: never seal)", segment_points, 0)
        self._segment_points = segment_points
        if self.folder.exists() and not self.folder.is_dir():
            raise StoreError(f"{self.folder}: index location exists and is not a folder")
        self._lock_file: Any = None
        self._shard: Any = None
        self._made_folder = False
        self._closed = False
        self._wait_s = wait_s
        self._unsealed = 0  # points written since the appendable segment was sealed
        self._seals = False  # the collection's spec says (create, bind)
        self._m = _edge()
        if lock_now or (self.folder / _SHARD).exists():
            self._lock()
        if (self.folder / _SHARD).exists():
            try:
                if verify or not self._closed_cleanly():
                    probe_shard(self.folder)
                (self.folder / _CLEAN).unlink(missing_ok=True)  # until close() writes it
                with engine_errors(self.folder, "open the index"):
                    self._shard = self._m.EdgeShard.load(str(self.folder / _SHARD))
            except StoreError:
                self.close()
                raise

    def _closed_cleanly(self) -> bool:
        """Whether the shard's files are as the last close() left them."""
        try:
            recorded = json.loads((self.folder / _CLEAN).read_text())
        except (OSError, ValueError):
            return False
        return bool(recorded == _fingerprint(self.folder / _SHARD))

    def _lock(self) -> None:
        """Take the folder's lock, waiting up to ``wait_s`` for another process."""
        key = str(self.folder.resolve())
        if key in _HELD:
            raise StoreError(
                f"{self.folder}: index is already open in this process; close the other "
                "Index (or use it) before opening the folder again"
            )
        if not self.folder.exists():
            self.folder.mkdir(parents=True)
            self._made_folder = True
        lock_file = open(self.folder / _LOCK, "a+")  # noqa: SIM115 - held until close()
        deadline = time.monotonic() + self._wait_s
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    lock_file.close()
                    waited = f" (waited {self._wait_s:g} s)" if self._wait_s else ""
                    raise StoreError(
                        f"{self.folder}: index is in use by another pagelens process{waited}; "
                        "wait for it to finish, or pass --wait SECONDS"
                    ) from exc
                time.sleep(_WAIT_STEP_S)
        self._lock_file = lock_file
        self._key = key
        _HELD.add(key)

    # -- lifecycle -----------------------------------------------------------------
    def exists(self) -> bool:
        check_open(self._closed, self.folder)
        return self._shard is not None

    def create(self, spec: CollectionSpec) -> None:
        check_open(self._closed, self.folder)
        if self._shard is not None:
            raise StoreError(f"{self.folder}: index already exists")
        if self._lock_file is None:
            self._lock()
        if (self.folder / _SHARD).exists():  # created by another process meanwhile
            raise StoreError(f"{self.folder}: index already exists")
        with engine_errors(self.folder, "create the index"):
            self._shard = self._create_shard(self.folder / _SHARD, spec)
        self._seals = spec.segmented

    def _create_shard(self, path: Path, spec: CollectionSpec) -> Any:
        m = self._m
        segments = MAX_SEGMENTS if spec.segmented else None  # see SEGMENT_POINTS
        config = m.EdgeConfig(
            vectors={v.name: self._vector_params(v) for v in spec.vectors()},
            sparse_vectors={BM25: m.EdgeSparseVectorParams(modifier=m.Modifier.Idf)},
            on_disk_payload=spec.payload_on_disk,
            optimizers=m.EdgeOptimizersConfig(
                default_segment_number=segments, indexing_threshold=SEAL_MIN_KB
            ),
        )
        shard = m.EdgeShard.create(str(path), config)
        for name in KEYWORD_FIELDS:
            shard.update(m.UpdateOperation.create_field_index(name, m.PayloadSchemaType.Keyword))
        return shard

    def _vector_params(self, v: VectorSpec) -> Any:
        """Qdrant Edge's parameters of one named vector of the layout."""
        m = self._m
        return m.EdgeVectorParams(
            size=v.dim,
            distance=m.Distance.Dot,
            on_disk=v.on_disk,
            datatype=getattr(m.VectorStorageDatatype, v.datatype.capitalize()),
            multivector_config=(
                m.MultiVectorConfig(comparator=m.MultiVectorComparator.MaxSim) if v.multi else None
            ),
            hnsw_config=m.HnswIndexConfig(
                m=v.hnsw_m,
                ef_construct=v.hnsw_ef_construct,
                full_scan_threshold=10_000,  # KB, Qdrant's default
            ),
        )

    def rebuild(self, spec: CollectionSpec, ids: Sequence[str]) -> None:
        """Copy the points with these ids into a fresh shard that replaces this one.

        For damage that deleting points cannot undo (a truncated or garbled
        storage file fails later writes too): the points kept are read back
        whole, vectors and payloads, and written into new files.
        """
        old = self._require()
        m = self._m
        fresh_path = self.folder / f"{_SHARD}.rebuild"
        damaged_path = self.folder / f"{_SHARD}.damaged"
        for leftover in (fresh_path, damaged_path):
            shutil.rmtree(leftover, ignore_errors=True)
        with engine_errors(self.folder, "rebuild the index"):
            fresh = self._create_shard(fresh_path, spec)
            try:
                unsealed = 0
                for start in range(0, len(ids), 256):
                    records = old.retrieve(list(ids[start : start + 256]), True, True)
                    points = [m.Point(str(r.id), r.vector or {}, r.payload or {}) for r in records]
                    if points:
                        fresh.update(m.UpdateOperation.upsert_points(points))
                    unsealed += len(points)
                    if spec.segmented and self._seals_at(unsealed):  # as upsert() leaves them
                        fresh.flush()
                        self._optimize(fresh)
                        unsealed = 0
                fresh.flush()
            finally:
                fresh.close()
            self._shard = None
            old.close()
        os.replace(self.folder / _SHARD, damaged_path)
        os.replace(fresh_path, self.folder / _SHARD)
        shutil.rmtree(damaged_path)
        with engine_errors(self.folder, "open the rebuilt index"):
            self._shard = m.EdgeShard.load(str(self.folder / _SHARD))
        self._seals, self._unsealed = spec.segmented, 0
        logger.info("%s: rebuilt with %d points", self.folder, len(ids))

    def close(self) -> None:
        self._closed = True
        try:
            if self._shard is not None:
                shard, self._shard = self._shard, None
                with engine_errors(self.folder, "close the index"):
                    shard.close()
                self._record_clean_close()
        finally:
            if self._lock_file is not None and not self._lock_file.closed:
                if self._made_folder and not (self.folder / _SHARD).exists():
                    # nothing was indexed: leave no folder behind (a mistyped run)
                    (self.folder / _LOCK).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.folder.rmdir()
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
                _HELD.discard(self._key)

    def _record_clean_close(self) -> None:
        try:
            clean = json.dumps(_fingerprint(self.folder / _SHARD))
            (self.folder / _CLEAN).write_text(clean)
        except OSError as exc:  # the next open probes the shard; nothing is lost
            logger.warning("%s: cannot record a clean close: %s", self.folder, exc)

    def _require(self) -> Any:
        check_open(self._closed, self.folder)
        if self._shard is None:
            raise StoreError(f"{self.folder}: no index here yet (run `pagelens index` first)")
        return self._shard

    # -- writes --------------------------------------------------------------------
    def upsert(self, points: Sequence[PointRecord], *, durable: bool = True) -> None:
        if not points:
            return
        m = self._m
        shard = self._require()
        edge_points = [
            m.Point(p.id, {name: self._vector(v) for name, v in p.vectors.items()}, dict(p.payload))
            for p in points
        ]
        with engine_errors(self.folder, "write points"):
            shard.update(m.UpdateOperation.upsert_points(edge_points))
            if durable:
                shard.flush()
        self._unsealed += len(points)
        if self._seals and self._seals_at(self._unsealed):
            self.optimize()

    def _seals_at(self, unsealed: int) -> bool:
        every = SEGMENT_POINTS if self._segment_points is None else self._segment_points
        return 0 < every <= unsealed

    def bind(self, spec: CollectionSpec) -> None:
        """Seal segments as the index grows where its format says so (SEGMENT_POINTS)."""
        self._seals = spec.segmented

    def _vector(self, v: MultiVector | SparseVector) -> Any:
        if isinstance(v, SparseVector):
            return self._m.SparseVector(list(v.indices), list(v.values))
        return vector_list(v)

    def delete(self, where: PayloadFilter, *, durable: bool = True) -> None:
        shard = self._require()
        with engine_errors(self.folder, "delete points"):
            shard.update(
                self._m.UpdateOperation.delete_points_by_filter(build_filter(self._m, where))
            )
            if durable:
                shard.flush()

    def flush(self) -> None:
        # the engine persists the write-ahead log and every segment, changed or not
        shard = self._require()
        with engine_errors(self.folder, "write to disk"):
            shard.flush()

    def delete_points(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        shard = self._require()
        with engine_errors(self.folder, "delete points"):
            shard.update(self._m.UpdateOperation.delete_points(list(ids)))
            shard.flush()

    def set_payload(self, where: PayloadFilter, payload: Mapping[str, Any]) -> None:
        shard = self._require()
        m = self._m
        flt = build_filter(m, where)
        with engine_errors(self.folder, "write payloads"):
            shard.update(m.UpdateOperation.set_payload_by_filter(flt, dict(payload)))
            shard.flush()

    def optimize(self) -> None:
        """Merge and compact what writes left in the engine's appendable segments.

        The engine refuses to optimize without free disk of about twice the index
        (benchmarks/README.md, "A cost model for 1M pages"). Every page is
        stored and searchable without it, so a refusal for room is a warning, not a
        failed run; the next run that writes pages tries again.
        """
        shard = self._require()
        self._unsealed = 0
        self._optimize(shard)

    def _optimize(self, shard: Any) -> None:
        """Optimize ``shard`` (this store's, or the one a rebuild fills): room, a warning."""
        try:
            shard.optimize()
        except Exception as exc:  # Qdrant Edge raises plain Exception
            if _NO_ROOM not in str(exc):
                with engine_errors(self.folder, "optimize the index"):
                    raise
            logger.warning(
                "%s: the index was not optimized (%s); every page is stored and searchable. "
                "Free disk space: the next indexing run that writes pages optimizes again",
                self.folder,
                exc,
            )

    # -- reads ---------------------------------------------------------------------
    def scroll(self, where: PayloadFilter) -> Iterator[dict[str, Any]]:
        for record in self._scroll(where, True, "read payloads"):
            yield dict(record.payload or {})

    def _scroll(self, where: PayloadFilter | None, payload: bool, doing: str) -> Iterator[Any]:
        m = self._m
        shard = self._require()
        flt = build_filter(m, where)

        def fetch(offset: Any) -> Any:
            request = m.ScrollRequest(
                offset=offset, limit=1000, filter=flt, with_payload=payload, with_vector=False
            )
            with engine_errors(self.folder, doing):
                return shard.scroll(request)

        yield from paged(fetch)

    def count(self, where: PayloadFilter) -> int:
        m = self._m
        shard = self._require()
        with engine_errors(self.folder, "count points"):
            return int(shard.count(m.CountRequest(filter=build_filter(m, where), exact=True)))

    def point_ids(self) -> Iterator[str]:
        for record in self._scroll(None, False, "list point ids"):
            yield str(record.id)

    def retrieve(self, ids: Sequence[str]) -> list[StoredPoint]:
        shard = self._require()
        with engine_errors(self.folder, "read points"):
            records = shard.retrieve(list(ids), True, True)
            return [stored_point(r.id, r.payload, r.vector) for r in records]

    def search(self, requests: Sequence[Request]) -> list[list[ScoredRecord]]:
        m = self._m
        batch = [self._request(r) for r in requests]
        shard = self._require()
        with engine_errors(self.folder, "search"):
            results = shard.query_batch(m.QueryBatchRequest(batch))
        return [scored_records(points) for points in results]

    def _request(self, request: Request) -> Any:
        """Qdrant Edge's request for one planned request (pagelens.plan)."""
        query, prefetches, flt, params = self._node(request.root)
        return self._m.QueryRequest(
            limit=request.root.limit,
            query=query,
            prefetches=prefetches,
            filter=flt,
            params=params,
            with_payload=request.with_payload,
        )

    def _node(self, node: Stage | Fusion) -> tuple[Any, list[Any] | None, Any, Any]:
        """(query, prefetches, filter, search params) of a planned stage or fusion."""
        m = self._m
        inputs = [self._prefetch(s) for s in node.inputs] or None
        if isinstance(node, Fusion):
            if node.method == "rrf":
                weights = list(node.weights) if node.weights is not None else None
                return m.Fusion.Rrf(k=node.rrf_k, weights=weights), inputs, None, None
            return m.Fusion.Dbsf(), inputs, None, None
        query = m.Query.Nearest(self._vector(node.vector), using=node.using)
        params = m.SearchParams(exact=True) if node.exact else None
        return query, inputs, build_filter(m, node.where), params

    def _prefetch(self, stage: Stage) -> Any:
        query, prefetches, flt, params = self._node(stage)
        return self._m.Prefetch(
            limit=stage.limit, query=query, prefetches=prefetches, filter=flt, params=params
        )
