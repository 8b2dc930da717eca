"""The indexing job as a Ray Data pipeline: many CPUs render, many GPUs encode.

The same job as :func:`pagelens.pipeline.job.index_paths`, spread over a Ray
cluster (or the cores of one machine):

1. the driver discovers the files and applies the same rules (unchanged files
   skipped, moved ones re-pathed, an interrupted run's documents resumed or
   cleaned);
2. CPU tasks render the pages of each document (and extract its text where the
   index holds text);
3. an actor pool encodes them: one model per actor, on a GPU each where the
   cluster has GPUs, else on CPUs;
4. CPU tasks pool the vectors into the records the index stores;
5. the records are written in batches: to a Qdrant server by the workers
   themselves, each on its own connection; to an embedded folder (or
   qdrant-client's local mode, on disk) by one writer actor that owns it;
6. the driver writes a document's commit record once every one of its pages is
   acknowledged as stored.

The stage functions (:mod:`pagelens.pipeline.stages`) and the run's bookkeeping
(:class:`~pagelens.pipeline.run.RunState`) are the single-process job's own, so
the index is the same: the same point ids, payloads, manifest, skipped files and
page errors.
Crash safety is the same too: a document's pending mark is written before its
first page, and its commit record after its last; a re-run resumes it.

Memory stays bounded by Ray Data's streaming executor: each operator gets a
share of the object store, and an operator whose outputs are not consumed stops
being scheduled (backpressure), so pages in flight do not grow with the corpus.

Ray is an optional extra (``pip install 'pagelens[ray]'``), imported only here,
only when a run starts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from pagelens.encoders.base import Encoder, EncoderSpec, reads_text
from pagelens.errors import InputError, MissingExtraError, PagelensError, check_whole
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.discover import Discovery, discover
from pagelens.pipeline.job import check_found
from pagelens.pipeline.render import RenderSettings, probe
from pagelens.pipeline.run import (
    IndexReport,
    PageError,
    RunSetup,
    RunState,
    StageTimes,
    effective_settings,
)
from pagelens.pipeline.stages import encode_batch, page_stream, store_pages, stored_pages
from pagelens.pipeline.text import TextCache, TextSettings
from pagelens.storage.layout import StoredPage
from pagelens.storage.server import ClusterSpec
from pagelens.types import Document, MultiVector, Page

if TYPE_CHECKING:
    from pagelens.storage.store import Store

logger = logging.getLogger(__name__)

RENDER_TASK_MEMORY = 640 * 2**20  # bytes Ray reserves for one render task (measured: ~490 MiB)

EXTRA = "ray"
"""The extra that installs Ray: ``pip install 'pagelens[ray]'``."""


def _ray() -> Any:
    """Import Ray (and Ray Data), or say which extra installs it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the pipeline's engine
    except ImportError as exc:
        raise MissingExtraError("ray", EXTRA) from exc
    return ray


# -- what a run is given ----------------------------------------------------------------


@dataclass(frozen=True)
class IndexTarget:
    """Where a distributed run writes: how every process opens the same index.

    Exactly one of:

    - ``url``: a Qdrant server or cluster; workers write to it directly. ``cluster``
      sets the shards, replicas and write consistency of a new collection.
    - ``path``: an embedded folder (Qdrant Edge) on the driver's machine; one
      writer actor owns it.
    - ``client_path``: qdrant-client's local mode, kept in a folder on the
      driver's machine; one writer actor owns it.
    """

    path: str | None = None
    url: str | None = None
    api_key: str | None = None
    collection: str = "pagelens"
    client_path: str | None = None
    cluster: ClusterSpec | None = None
    wait_s: float = 60.0  # for a folder another process (a killed run's writer) still holds

    def __post_init__(self) -> None:
        given = [n for n in ("path", "url", "client_path") if getattr(self, n)]
        if len(given) != 1:
            raise PagelensError(
                f"give exactly one of path, url or client_path as an index target; "
                f"got {given or 'none'}"
            )
        if self.cluster is not None and self.url is None:
            raise PagelensError(
                "shards, replicas and write consistency apply to a Qdrant server or "
                "cluster (url), not to an embedded index"
            )
        if self.api_key and self.url is None:
            raise PagelensError("api_key is only meaningful with url")

    @property
    def direct(self) -> bool:
        """Whether workers write directly (a server), rather than through one writer."""
        return self.url is not None

    def open(self, *, lock_now: bool = False) -> Index:
        """Open the index here (a driver, a writer actor or a write worker)."""
        from pagelens.storage.server import ServerStore

        if self.path is not None:
            return Index.open(self.path, wait_s=self.wait_s, lock_now=lock_now)
        store: Store
        if self.url is not None:
            store = ServerStore(
                url=self.url, api_key=self.api_key, collection=self.collection, cluster=self.cluster
            )
            where = f"{self.url}#{self.collection}"
        else:
            assert self.client_path is not None  # __post_init__: exactly one is set
            store = ServerStore(path=self.client_path, collection=self.collection)
            where = f"{self.client_path}#{self.collection}"
        try:
            return Index(store, where)
        except PagelensError:
            store.close()
            raise


@dataclass(frozen=True)
class EncoderLoader:
    """How a worker loads an encoder: :func:`pagelens.encoders.load_encoder` arguments.

    Pickled to every encoding actor, which loads its own model.
    """

    model: str
    device: str = "auto"
    batch_size: int = 4

    def __call__(self) -> Encoder:
        from pagelens.encoders import load_encoder

        return load_encoder(self.model, device=self.device, batch_size=self.batch_size)


@dataclass(frozen=True)
class RayOptions:
    """How the work is spread over the Ray cluster.

    Attributes:
        address: the cluster to join (``ray.init(address=...)``): ``None`` starts
            a local Ray, or joins the one ``RAY_ADDRESS`` names; ``"auto"`` joins
            the one running on this machine; ``"ray://head:10001"`` a remote one.
            Ignored when Ray is already initialised in this process.
        encoders: encoding actors (one model each); ``None``: one per GPU, else one.
        gpus_per_encoder: GPUs per encoding actor; ``None``: 1 where the cluster
            has GPUs, else 0 (CPU actors).
        cpus_per_encoder: CPUs per encoding actor (its torch threads on CPU).
        encode_pages: pages per call to an encoding actor (its batch).
        write_pages: pages per write to the store.
        writers: concurrent write workers to a server (each its own connection).
        progress: Ray Data's progress bars.

    """

    address: str | None = None
    encoders: int | None = None
    gpus_per_encoder: float | None = None
    cpus_per_encoder: float = 1.0
    encode_pages: int = 8
    write_pages: int = 32
    writers: int = 2
    progress: bool = False

    def __post_init__(self) -> None:
        for name in ("encode_pages", "write_pages", "writers"):
            check_whole(name, getattr(self, name), 1)
        if self.encoders is not None:
            check_whole("encoders", self.encoders, 1)
        if self.gpus_per_encoder is not None and not self.gpus_per_encoder >= 0:
            raise PagelensError(f"gpus_per_encoder must be >= 0, got {self.gpus_per_encoder!r}")
        if not self.cpus_per_encoder > 0:
            raise PagelensError(f"cpus_per_encoder must be > 0, got {self.cpus_per_encoder!r}")


# -- what flows between the stages (one object per row, in the column "item") -----


@dataclass(frozen=True)
class _DocTask:
    """A document to index from page ``first`` on (later pages are missing)."""

    doc: Document
    first: int


@dataclass(frozen=True)
class _DocEnd:
    """The render stage's last word on a document: how many pages it sent, or why none."""

    doc_sha256: str
    page_count: int
    emitted: tuple[int, ...]  # page numbers sent down the pipeline
    cause: str | None  # the document cannot be indexed (skipped, as InputError says)
    render_s: float
    text_s: float


@dataclass(frozen=True)
class _Encoded:
    """A page (its image dropped) with what each encoder gave: vectors, or a cause."""

    page: Page
    source: str
    dense: MultiVector | str | None  # None: the page had an error before encoding
    text_channel: MultiVector | str | None  # the text encoder's (None: none, or that error)
    encode_s: float


@dataclass(frozen=True)
class _Pooled:
    record: StoredPage
    encode_s: float
    pool_s: float


@dataclass(frozen=True)
class _Written:
    """Pages acknowledged as stored: ``(doc sha256, page number, error or None)``."""

    pages: tuple[tuple[str, int, str | None], ...]
    encode_s: float
    pool_s: float
    store_s: float


def _items(batch: Mapping[str, Any]) -> list[Any]:
    return list(batch["item"])


def _column(items: Sequence[Any]) -> dict[str, np.ndarray]:
    out = np.empty(len(items), dtype=object)  # objects, never unpacked into an array
    out[:] = list(items)
    return {"item": out}


# -- the stages ---------------------------------------------------------------------


def _render(
    batch: Mapping[str, Any], how: RunSetup, text_cache: TextCache | None, pages_per_block: int
) -> Iterator[dict[str, np.ndarray]]:
    """Render the pages of each document, in blocks; end each document with a _DocEnd.

    The make stage, :func:`~pagelens.pipeline.stages.page_stream`, in a CPU task.
    """
    for task in _items(batch):
        doc, times = task.doc, StageTimes()
        t0 = time.perf_counter()
        emitted: list[int] = []
        block: list[Any] = []
        cause = None
        page_count = 0
        try:
            info = probe(doc, how.render)
            page_count = info.page_count
            for page in page_stream(how, doc, info, task.first, times, text_cache):
                block.append((page, doc.source))
                emitted.append(page.page_number)
                if len(block) == pages_per_block:
                    yield _column(block)
                    block = []
        except InputError as exc:  # the pages sent so far are removed once stored
            cause = exc.cause
        if block:
            yield _column(block)
        render_s = time.perf_counter() - t0 - times.text
        yield _column(
            [_DocEnd(doc.sha256, page_count, tuple(emitted), cause, render_s, times.text)]
        )


class _EncodeActor:
    """One model (and text model) per actor; encodes pages, passes other rows through.

    The encode stage, :func:`~pagelens.pipeline.stages.encode_batch`, in an actor.
    """

    def __init__(
        self, loader: Callable[[], Encoder], text_loader: Callable[[], Encoder] | None
    ) -> None:
        self.encoder = loader()
        self.text_encoder = text_loader() if text_loader is not None else None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        items = _items(batch)
        rows = [i for i, item in enumerate(items) if isinstance(item, tuple)]
        pages: list[Page] = [items[i][0] for i in rows]
        t0 = time.perf_counter()
        dense, text_channel = encode_batch(self.encoder, self.text_encoder, pages)
        text_channel = text_channel or {}
        share = (time.perf_counter() - t0) / max(len(pages), 1)
        out = list(items)
        for j, i in enumerate(rows):
            page, source = items[i]
            out[i] = _Encoded(
                replace(page, image=None), source, dense.get(j), text_channel.get(j), share
            )
        return _column(out)


def _pool(batch: Mapping[str, Any], settings: IndexSettings, single: bool) -> dict[str, np.ndarray]:
    """Pool encoded pages into StoredPage records (per document: one source each).

    The pool stage, :func:`~pagelens.pipeline.stages.stored_pages`, in a CPU task.
    """
    items = _items(batch)
    out = list(items)
    by_source: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if isinstance(item, _Encoded):
            by_source.setdefault(item.source, []).append(i)
    for source, where in by_source.items():
        t0 = time.perf_counter()
        encoded = [items[i] for i in where]
        dense = {j: e.dense for j, e in enumerate(encoded) if e.dense is not None}
        text_channel = {
            j: e.text_channel for j, e in enumerate(encoded) if e.text_channel is not None
        }
        pages = [e.page for e in encoded]
        records = stored_pages(pages, dense, text_channel, settings, single, source)
        share = (time.perf_counter() - t0) / len(where)
        # stored_pages lists failed pages first: match records to pages by page number
        by_page = {(r.page.doc_sha256, r.page.page_number): r for r in records}
        for i, e in zip(where, encoded, strict=True):
            record = by_page[(e.page.doc_sha256, e.page.page_number)]
            out[i] = _Pooled(record, e.encode_s, share)
    return _column(out)


def _acknowledge(records: Sequence[_Pooled], store_s: float) -> _Written:
    return _Written(
        tuple(
            (
                p.record.page.doc_sha256,
                p.record.page.page_number,
                p.record.error or p.record.page.error,
            )
            for p in records
        ),
        sum(p.encode_s for p in records),
        sum(p.pool_s for p in records),
        store_s,
    )


class _DirectWriter:
    """A write worker with its own connection to the server (``target.direct``)."""

    def __init__(self, target: IndexTarget) -> None:
        self.index = target.open()
        self.begun: set[str] = set()

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        items = _items(batch)
        records = [i for i in items if isinstance(i, _Pooled)]
        t0 = time.perf_counter()
        _write(self.index, [p.record for p in records], self.begun)
        done = _acknowledge(records, time.perf_counter() - t0)
        return _column([i for i in items if not isinstance(i, _Pooled)] + [done])


def _through_writer(batch: Mapping[str, Any], writer: Any) -> dict[str, np.ndarray]:
    """Hand records to the writer actor that owns the store; wait for its acknowledgement."""
    ray = _ray()
    items = _items(batch)
    records = [i for i in items if isinstance(i, _Pooled)]
    t0 = time.perf_counter()
    ray.get(writer.write.remote([p.record for p in records]))
    done = _acknowledge(records, time.perf_counter() - t0)
    return _column([i for i in items if not isinstance(i, _Pooled)] + [done])


def _write(index: Index, records: Sequence[StoredPage], begun: set[str]) -> None:
    """Mark each new document pending (before its first page), then store the pages.

    The store stage, :func:`~pagelens.pipeline.stages.store_pages`, in a write worker
    or the writer actor.
    """
    for record in records:
        page = record.page
        if page.doc_sha256 not in begun:
            index.begin_document(Document(record.source, page.doc_path, page.doc_sha256, 0))
            begun.add(page.doc_sha256)
    if records:
        store_pages(index, records)  # made durable by the document's commit


class _IndexOwner:
    """The one process that holds an embedded index (the writer actor's class)."""

    def __init__(self, target: IndexTarget) -> None:
        self.index = target.open(lock_now=True)
        self.begun: set[str] = set()

    def write(self, records: Sequence[StoredPage]) -> int:
        _write(self.index, records, self.begun)
        return len(records)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Run one :class:`Index` method here (or read one attribute) for the driver."""
        if name == "end_document" or name == "delete_sha":
            self.begun.discard(args[0])
        attr = getattr(self.index, name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def close(self) -> None:
        self.index.close()


class _RemoteIndex:
    """The driver's view of an index a writer actor owns: each call runs there."""

    def __init__(self, actor: Any, location: str) -> None:
        self._actor = actor
        self.location = location

    @property
    def manifest(self) -> Any:
        return self._call("manifest")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        ray = _ray()
        try:
            return ray.get(self._actor.call.remote(name, *args, **kwargs))
        except ray.exceptions.RayTaskError as exc:  # the Index's own error, as raised there
            if isinstance(exc.cause, PagelensError):
                raise exc.cause from None
            raise

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._call(name, *args, **kwargs)

    def close(self) -> None:
        ray = _ray()
        ray.get(self._actor.close.remote())
        ray.kill(self._actor)


# -- the driver ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Described:
    """An encoder as the driver knows it: what it computes, without its weights."""

    spec_: EncoderSpec
    reads: str

    @property
    def spec(self) -> EncoderSpec:
        return self.spec_

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        raise PagelensError("the driver does not encode: its encoding actors do")

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        raise PagelensError("the driver does not encode: its encoding actors do")


def _describe(loader: Callable[[], Encoder]) -> _Described:
    encoder = loader()
    return _Described(encoder.spec, "text" if reads_text(encoder) else "image")


@dataclass
class _Progress:
    """What the driver has heard of each document still in flight."""

    docs: dict[str, Document]
    ends: dict[str, _DocEnd] = field(default_factory=dict)
    stored: dict[str, set[int]] = field(default_factory=dict)
    failed: dict[str, list[PageError]] = field(default_factory=dict)


def index_paths_ray(
    target: IndexTarget,
    paths: Sequence[str | os.PathLike[str]] | Discovery,
    *,
    model: str | Callable[[], Encoder] | None = None,
    text_model: str | Callable[[], Encoder] | None = None,
    device: str = "auto",
    batch_size: int = 4,
    settings: IndexSettings | None = None,
    pool_factor: int | None = None,
    text: bool | None = None,
    render: RenderSettings | None = None,
    text_settings: TextSettings | None = None,
    text_cache: TextCache | str | os.PathLike[str] | None = None,
    prune: bool = False,
    options: RayOptions | None = None,
) -> IndexReport:
    """Index every PDF under ``paths`` on a Ray cluster: :func:`index_paths`, distributed.

    The result is the index :func:`~pagelens.pipeline.job.index_paths` builds from
    the same files, and the report the same (its ``stages`` count worker-seconds,
    summed over every worker).

    Args:
        target: where the index is (a server ``url``, or a folder on this machine).
        paths: PDF files or folders, or what :func:`discover` found in them. With a
            cluster of several machines, every machine must see the files at the
            same absolute paths (a shared file system).
        model: the page encoder: a hub id or folder each actor loads with
            ``device`` and ``batch_size``, or any picklable callable that returns an
            Encoder; ``None``: the index's own, else the default model.
        text_model: a second encoder, of page text (``"minilm"``); ``None``: the
            index's own text encoder, if it has one.
        device: where each actor's model runs (``"auto"``: its GPU, if it has one).
        batch_size: pages per forward pass in each actor.
        settings: pooling settings (``None``: the index's, else the defaults).
        pool_factor: replaces the pool factor of ``settings`` where given.
        text: replaces ``settings.text`` where given (page text and BM25).
        render: rendering settings.
        text_settings: page-text settings (OCR...), when the index holds text.
        text_cache: a folder of page texts shared with other indexes of the files.
        prune: remove indexed documents not found under ``paths``.
        options: how the work is spread (see :class:`RayOptions`).

    Raises:
        MissingExtraError: Ray is not installed (``pip install 'pagelens[ray]'``).
        NothingToIndexError: no PDF was found (and nothing is to be pruned).

    """
    start = time.perf_counter()
    options = options or RayOptions()
    ray = _ray()
    started = _start(ray, options)
    found = paths if isinstance(paths, Discovery) else discover(paths)
    index, owner = _open_for_driver(ray, target)
    try:
        check_found(found, index, prune=prune)
        loaders, encoder_resources, enc, text_enc = _encoders(
            ray, index, (model, text_model), device, batch_size, options
        )
        settings = _run_settings(index, (enc, text_enc), settings, pool_factor, text)
        index.prepare(enc.spec, settings, text_enc.spec if text_enc else None)
        render, text_settings = render or RenderSettings(), text_settings or TextSettings()
        how = RunSetup(enc, text_enc, settings, render, text_settings)
        cache = TextCache(text_cache) if isinstance(text_cache, (str, os.PathLike)) else text_cache
        run = RunState(index, how, cache, found)
        tasks = [_task(index, run, doc) for doc in found.documents if run.admit(doc)]
        if tasks:
            _run_pipeline(ray, target, owner, run, tasks, loaders, options, encoder_resources)
        if prune:
            run.prune()
        return run.report(start)
    finally:
        index.close()
        if started:
            ray.shutdown()


def _start(ray: Any, options: RayOptions) -> bool:
    """Start Ray here unless it runs already; whether this call started it."""
    if ray.is_initialized():
        return False
    ray.init(address=options.address, log_to_driver=False)
    return True


def _encoders(
    ray: Any,
    index: Index,
    models: tuple[str | Callable[[], Encoder] | None, str | Callable[[], Encoder] | None],
    device: str,
    batch_size: int,
    options: RayOptions,
) -> tuple[
    tuple[Callable[[], Encoder], Callable[[], Encoder] | None],
    dict[str, Any],
    Encoder,
    Encoder | None,
]:
    """Give the encoders' loaders and resources, and the encoders as an actor describes them."""
    model, text_model = models
    built = index.manifest
    loader = _loader(model, built.encoder.model_id if built else None, device, batch_size)
    built_text = built.text_encoder.model_id if built and built.text_encoder else None
    text_loader = (
        _loader(text_model, built_text, device, batch_size)
        if text_model is not None or built_text
        else None
    )
    encoder_resources = _encoder_resources(ray, options)
    described = ray.get(
        [
            ray.remote(_describe).options(**encoder_resources).remote(lo)
            for lo in (loader, text_loader)
            if lo is not None
        ]
    )
    enc = cast(Encoder, described[0])
    text_enc = cast(Encoder, described[1]) if text_loader is not None else None
    return (loader, text_loader), encoder_resources, enc, text_enc


def _run_settings(
    index: Index,
    encoders: tuple[Encoder, Encoder | None],
    settings: IndexSettings | None,
    pool_factor: int | None,
    text: bool | None,
) -> IndexSettings:
    """Give ``settings`` (or the index's) with the options given, made effective for the run."""
    given: dict[str, Any] = {"pool_factor": pool_factor, "text": text}
    changes = {k: v for k, v in given.items() if v is not None}
    if changes:
        built = index.manifest
        base = settings or (built.settings if built else IndexSettings())
        settings = replace(base, **changes)
    return effective_settings(index, encoders[0], settings, encoders[1])


def _loader(
    given: str | Callable[[], Encoder] | None, built: str | None, device: str, batch_size: int
) -> Callable[[], Encoder]:
    from pagelens.encoders import DEFAULT_MODEL

    if given is None or isinstance(given, str):
        return EncoderLoader(given or built or DEFAULT_MODEL, device, batch_size)
    return given


def _encoder_resources(ray: Any, options: RayOptions) -> dict[str, Any]:
    gpus = options.gpus_per_encoder
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    return {"num_gpus": gpus, "num_cpus": options.cpus_per_encoder}


def _open_for_driver(ray: Any, target: IndexTarget) -> tuple[Index, Any]:
    """Open the index for the driver: directly (a server), or through its writer actor.

    The writer actor is pinned to the driver's machine (the folder is there) and
    restarted by Ray if its process dies; it reopens the folder.
    """
    if target.direct:
        return target.open(), None
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    owner = (
        ray.remote(_IndexOwner)
        .options(num_cpus=0, max_restarts=3, max_task_retries=3, scheduling_strategy=here)
        .remote(target)
    )
    where = str(Path(target.path)) if target.path else f"{target.client_path}#{target.collection}"
    remote = _RemoteIndex(owner, where)
    remote.exists()  # the folder is opened (or its lock waited for) before any work
    return cast(Index, remote), owner


def _task(index: Index, run: RunState, doc: Document) -> _DocTask:
    """Plan one document: from its first page, or after the pages an earlier run stored."""
    pending_path = run.pending.get(doc.sha256)
    if pending_path is None:
        return _DocTask(doc, 1)
    if pending_path != doc.path:
        index.move_document(doc.sha256, doc)  # renamed while incomplete
    stored = index.stored_pages(doc.sha256)
    first = 1
    while first in stored:  # resume after the last contiguous stored page, as index_paths
        first += 1
    logger.info("%s: resuming at page %d", doc.path, first)
    return _DocTask(doc, first)


def _run_pipeline(
    ray: Any,
    target: IndexTarget,
    owner: Any,
    run: RunState,
    tasks: list[_DocTask],
    loaders: tuple[Callable[[], Encoder], Callable[[], Encoder] | None],
    options: RayOptions,
    encoder_resources: dict[str, Any],
) -> None:
    """Build the Ray Data pipeline, run it, and commit each document as it completes."""
    from ray.data import ActorPoolStrategy, DataContext

    how, text_cache, index = run.how, run.text_cache, run.index
    loader, text_loader = loaders

    context = DataContext.get_current()
    context.enable_progress_bars = options.progress
    context.enable_fallback_to_arrow_object_ext_type = True  # rows are Python objects
    encoders = options.encoders or max(1, int(ray.cluster_resources().get("GPU", 0)))
    if not encoder_resources["num_gpus"]:
        encoders = options.encoders or 1
    ds = ray.data.from_items([{"item": t} for t in tasks], override_num_blocks=len(tasks))
    ds = ds.map_batches(
        _render,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"how": how, "text_cache": text_cache, "pages_per_block": options.encode_pages},
        num_cpus=1,
        # a render task's working set (a block of pages); a request unlike the encoders'
        # also keeps Ray Data from fusing rendering into the encoding actors
        memory=RENDER_TASK_MEMORY,
    )
    ds = ds.map_batches(
        _EncodeActor,
        batch_size=options.encode_pages,
        batch_format="numpy",
        fn_constructor_kwargs={"loader": loader, "text_loader": text_loader},
        compute=ActorPoolStrategy(size=encoders),
        **encoder_resources,
    )
    ds = ds.map_batches(
        _pool,
        batch_size=options.encode_pages,
        batch_format="numpy",
        fn_kwargs={"settings": how.settings, "single": how.encoder.spec.single},
        num_cpus=1,
    )
    ds = _write_stage(ds, target, owner, options)
    progress = _Progress({t.doc.sha256: t.doc for t in tasks})
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for item in _items(batch):
            for sha in _heard(item, progress, run.times):
                _settle(index, run, progress, sha)
    if progress.docs:  # every document ends with a _DocEnd: this is a bug, never input
        raise PagelensError(
            f"the pipeline ended with {len(progress.docs)} documents unsettled: "
            + ", ".join(sorted(d.path for d in progress.docs.values())[:5])
        )


def _write_stage(ds: Any, target: IndexTarget, owner: Any, options: RayOptions) -> Any:
    """Add the storing stage: writer actors on a server, or the driver's one writer."""
    from ray.data import ActorPoolStrategy

    if target.direct:
        return ds.map_batches(
            _DirectWriter,
            batch_size=options.write_pages,
            batch_format="numpy",
            fn_constructor_kwargs={"target": target},
            compute=ActorPoolStrategy(size=options.writers),
            num_cpus=0.25,
        )
    return ds.map_batches(
        _through_writer,
        batch_size=options.write_pages,
        batch_format="numpy",
        fn_kwargs={"writer": owner},
        num_cpus=0.25,
    )


def _heard(item: Any, progress: _Progress, times: StageTimes) -> list[str]:
    """Record one row that reached the driver; return the documents it may complete."""
    if isinstance(item, _DocEnd):
        progress.ends[item.doc_sha256] = item
        times.render += item.render_s
        times.text += item.text_s
        return [item.doc_sha256]
    assert isinstance(item, _Written)
    times.encode += item.encode_s
    times.pool += item.pool_s
    times.store += item.store_s
    touched = []
    for sha, number, error in item.pages:
        progress.stored.setdefault(sha, set()).add(number)  # a set: a retried write counts once
        if error is not None:
            path = progress.docs[sha].path if sha in progress.docs else sha
            progress.failed.setdefault(sha, []).append(PageError(path, number, error))
        touched.append(sha)
    return touched


def _settle(index: Index, run: RunState, progress: _Progress, sha: str) -> None:
    """Commit (or skip) a document once every page it sent is stored."""
    end = progress.ends.get(sha)
    if end is None or sha not in progress.docs:
        return
    if not set(end.emitted) <= progress.stored.get(sha, set()):
        return
    doc = progress.docs.pop(sha)
    failed = sorted(
        {(e.page_number, e.cause): e for e in progress.failed.pop(sha, [])}.values(),
        key=lambda e: e.page_number,
    )
    try:
        if end.cause is not None:
            raise InputError(doc.path, end.cause)
        index.commit(doc, end.page_count)
    except InputError as exc:
        run.skip(doc, exc)
        return
    logger.info("committed %s (%d pages)", doc.path, end.page_count)
    run.settle(doc, len(end.emitted), failed)


__all__ = [
    "EXTRA",
    "EncoderLoader",
    "IndexTarget",
    "RayOptions",
    "index_paths_ray",
]
