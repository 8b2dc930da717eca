"""Pooling and storing beside the encoder: a writer thread and pooling processes.

The indexing job hands each encoded batch to a :class:`Writer` and goes on encoding
the next one. Ward pooling (``scipy``'s linkage holds the GIL: two threads pool no
faster than one, see benchmarks/README.md) runs in worker processes; storing and
committing run in the writer's one thread, strictly in the order they were handed
over, so a document's commit record is still written only after all its pages are
stored, and the index has a single user while the writer is open.

Everything in flight is bounded by counts, never by the size of a document or of
the index (see :data:`MAX_BATCHES_IN_FLIGHT`). A failure in the writer stops it; the
encoder's thread re-raises it at its next hand-over, and the documents not yet
committed are resumed by the next run, as after a crash.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pagelens.errors import check_whole
from pagelens.pipeline.cores import available_cores

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Operations (an encoded batch to pool and store, a commit, a mark) waiting for the
# writer. It bounds what is in flight between the encoder and the store: at most
# this many batches of pages, with their images and vectors, plus the one being
# written, and so at most this many pending upserts (one per batch).
MAX_BATCHES_IN_FLIGHT = 4
# Pooling processes on a large machine: 8 Ward-pool about 150 pages/s of 744 vectors,
# beyond what one GPU encodes; more would only take cores from rendering.
MAX_POOL_WORKERS = 8


@dataclass(frozen=True)
class PipelineSettings:
    """How the indexing job overlaps its stages.

    Attributes:
        pool_workers: processes that Ward-pool pages beside the encoder; ``None``
            follows the cores (one fewer than there are, at most
            :data:`MAX_POOL_WORKERS`, at least one); ``0`` pools and stores in the
            encoder's own thread after each batch (the serial path).
        batches_in_flight: encoded batches that may wait for pooling and storing
            (see :data:`MAX_BATCHES_IN_FLIGHT`).

    """

    pool_workers: int | None = None
    batches_in_flight: int = MAX_BATCHES_IN_FLIGHT

    def __post_init__(self) -> None:
        if self.pool_workers is not None:
            check_whole("pool_workers", self.pool_workers, 0)
        check_whole("batches_in_flight", self.batches_in_flight, 1)

    @property
    def overlapped(self) -> bool:
        return self.pool_workers != 0

    def workers(self) -> int:
        """Return how many pooling processes to start (0 on the serial path)."""
        if self.pool_workers is not None:
            return self.pool_workers
        return max(1, min(MAX_POOL_WORKERS, available_cores() - 1))


class Sink(Protocol):
    """Where the job sends pooling and index writes: inline, or to a :class:`Writer`."""

    def pool(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...

    def submit(self, fn: Callable[..., object], *args: Any) -> None: ...

    def call(self, fn: Callable[..., T], *args: Any) -> T: ...

    def close(self, *, raise_error: bool = True) -> None: ...

    def idle(self) -> bool:
        """Whether nothing handed over waits to run (asked by the operation running)."""
        ...

    @property
    def waited(self) -> float: ...


class Inline:
    """The serial path: everything runs at once, in the caller's thread."""

    waited = 0.0

    def pool(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args))
        return future

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        fn(*args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def close(self, *, raise_error: bool = True) -> None:
        pass

    def idle(self) -> bool:
        return True


_STOP = object()


class Writer:
    """One thread that runs handed-over operations in order; pooling processes beside it.

    Closing it waits for every operation handed over (a handful, see
    :data:`MAX_BATCHES_IN_FLIGHT`), also when the caller is failing (Ctrl-C keeps
    what was encoded); after a failure of its own it drops the rest, and the
    documents not committed are resumed by the next run.
    """

    def __init__(self, *, workers: int, depth: int = MAX_BATCHES_IN_FLIGHT) -> None:
        check_whole("workers", workers, 1)
        check_whole("depth", depth, 1)
        self._workers = workers
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._executor: ProcessPoolExecutor | None = None
        for _ in range(workers):  # start the processes first, before this object's thread
            self.pool(_warm_up)
        self._thread = threading.Thread(target=self._run, name="pagelens-writer", daemon=True)
        self._thread.start()
        self.waited = 0.0  # seconds the caller was held back by a full queue

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.close(raise_error=exc is None)

    def pool(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` in a pooling process (``fn`` and its arguments must pickle)."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=_start_method(),
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return self._executor.submit(fn, *args)

    def submit(self, fn: Callable[..., object], *args: Any) -> None:
        """Queue ``fn(*args)`` after everything handed over before; wait while the queue is full."""
        self._put((fn, args, None))

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` after everything handed over before; return its result."""
        future: Future[T] = Future()
        self._put((fn, args, future))
        return future.result()

    def close(self, *, raise_error: bool = True) -> None:
        """Finish what is queued; stop the thread and the processes; re-raise a failure.

        With ``raise_error=False`` (the caller is failing already) a failure of the
        writer is logged instead.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self._error is not None:
            error, self._error = self._error, None
            if raise_error:
                raise error
            logger.warning("storing stopped too: %s: %s", type(error).__name__, error)

    def idle(self) -> bool:
        return self._queue.empty()

    def _put(self, item: tuple[Callable[..., object], tuple[Any, ...], Future[Any] | None]) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._abort.set()
            raise error
        t0 = time.perf_counter()
        self._queue.put(item)
        self.waited += time.perf_counter() - t0

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args, future = item
            if self._error is not None or self._abort.is_set():
                if future is not None:
                    future.set_exception(self._error or RuntimeError("writer stopped"))
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the caller, which re-raises it
                logger.debug("writer stopped by %r", exc)
                self._error = exc
                if future is not None:
                    future.set_exception(exc)
                continue
            if future is not None:
                future.set_result(result)


def _start_method() -> Any:
    """How pooling processes start: forked where the OS can, else spawned.

    Spawned (and forkserver) workers import the parent's ``__main__`` module again, so
    a user's script that calls the indexing job without an ``if __name__ ==
    "__main__":`` guard would run again in every worker. Forked workers run only Ward
    pooling (numpy and scipy): no torch, no CUDA, no Qdrant, none of the locks another
    thread of the parent might hold (the same bargain as torch's DataLoader workers).
    """
    import multiprocessing

    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")  # pragma: no cover - macOS, Windows


def _warm_up() -> None:
    import scipy.cluster.hierarchy  # noqa: F401

    import pagelens.pipeline.stages  # noqa: F401  # what pooling calls (pool_page)


def _release_inherited_locks() -> None:
    """Close what a forked worker inherited that holds an ``flock`` (an index's folder lock).

    An ``flock`` lasts while any process holds a descriptor of it: a worker must not
    keep the index locked after its parent is gone (``kill -9``). Linux lists a
    descriptor's locks in ``/proc/self/fdinfo``; elsewhere workers are spawned anyway.
    """
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fdinfo")]
    except OSError:  # pragma: no cover - no /proc
        return
    for fd in fds:
        if fd < 3:
            continue
        try:
            with open(f"/proc/self/fdinfo/{fd}", encoding="ascii", errors="replace") as info:
                locked = "FLOCK" in info.read()
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if locked:
            os.close(fd)


def _worker_init(parent: int) -> None:
    """Set up a pooling process: Ctrl-C is the parent's to handle; die with the parent.

    It also lets go of the index's lock, which a forked process inherits.

    ``kill -9`` of the parent skips every cleanup, and the worker would wait for work
    forever: it watches for its parent to be gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _release_inherited_locks()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
