"""The ``pagelens`` command: a thin Typer layer over the Python API.

Each command parses its options, calls the library, and prints. The environment is
read here and nowhere else (``PAGELENS_INDEX``, ``PAGELENS_MODEL``,
``QDRANT_URL``, ``QDRANT_API_KEY``, ``PAGELENS_EVAL_CACHE``, ``PAGELENS_TEXT_CACHE``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from pagelens.encoders import DEFAULT_MODEL
from pagelens.errors import PagelensError
from pagelens.search import DEFAULT_CANDIDATES, DEFAULT_K
from pagelens.types import display_path
from pagelens.wire import (
    document_results,
    error_dict,
    page_results,
    parse_channels,
    parse_weights,
    search_response,
    snippet,
    tagged,
)

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Index folders of PDFs as page screenshots and search them with questions.",
)

DEFAULT_INDEX = "pagelens-index"

IndexOpt = Annotated[
    Path | None,
    typer.Option("--index", envvar="PAGELENS_INDEX", help="Embedded index folder."),
]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", envvar="QDRANT_URL", help="Qdrant server URL instead of a folder."),
]
ApiKeyOpt = Annotated[
    str | None, typer.Option("--api-key", envvar="QDRANT_API_KEY", help="Qdrant API key.")
]
CollectionOpt = Annotated[str, typer.Option("--collection", help="Collection on the server.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="PAGELENS_MODEL",
        help=f"Checkpoint folder or hub id (default: the index's own, else {DEFAULT_MODEL}).",
    ),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Items per forward pass.")]
ChannelsOpt = Annotated[
    str,
    typer.Option(
        "--channels", help="dense, text, bm25, or several (dense,text,bm25) for a hybrid."
    ),
]
FusionOpt = Annotated[
    str, typer.Option("--fusion", help="Hybrid fusion: dbsf (normalised scores) or rrf.")
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="RRF weights per channel: bm25=2 or dense=1,bm25=2 (1 for channels not named).",
    ),
]
FirstStageOpt = Annotated[
    str,
    typer.Option(
        "--first-stage",
        help="Candidates from: exact (a scan of every page's candidate vectors, loses "
        "nothing) or hnsw (their graph, in indexes of manifest format 1 only).",
    ),
]
TextModelOpt = Annotated[
    str | None,
    typer.Option(
        "--text-model",
        help="Second encoder, of page text, for the text channel (e.g. minilm); "
        "fixed when an index is created (default: the index's own).",
    ),
]
OcrOpt = Annotated[
    str,
    typer.Option("--ocr", help="With text: OCR pages without a text layer (auto, never, always)."),
]


class _NoFastPlaidNotice(logging.Filter):
    """Drop colpali-engine's import-time note that FastPlaid is not installed.

    It is logged on the root logger at every import, and pagelens never uses FastPlaid.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("FastPlaid is not installed")


def _setup_logging(verbose: bool, quiet: bool) -> None:
    if verbose and quiet:
        raise typer.BadParameter("--verbose and --quiet exclude each other")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if quiet or not sys.stderr.isatty():
        # read by huggingface_hub and transformers when they are first imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger().addFilter(_NoFastPlaidNotice())


VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Warnings only, no bars.")]


def _logging(verbose: bool, quiet: bool) -> None:
    """Apply ``-v``/``-q`` given after a subcommand (before it, ``main`` applied them)."""
    if verbose or quiet:
        _setup_logging(verbose, quiet)


def _version_callback(value: bool) -> None:
    if value:
        from pagelens.version import package_version

        typer.echo(f"pagelens {package_version()}")
        raise typer.Exit()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run as Ctrl-C does: with what was kept said


@app.callback()
def main(
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Index folders of PDFs and search them by question."""
    _setup_logging(verbose, quiet)
    signal.signal(signal.SIGTERM, _terminate)


def shown(text: str) -> str:
    r"""Escape what would act on a terminal or break a line: ``\n``, ``\t``, ESC...

    Human output only; ``--json`` keeps values as they are.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or unicodedata.category(c) == "Zs" else repr(c)[1:-1] for c in text
    )


@contextmanager
def _reporting(interrupted: str = "interrupted", *, as_json: bool = False) -> Iterator[None]:
    """Turn a PagelensError into ``error: ...`` and Ctrl-C or SIGTERM into a message.

    With ``as_json`` the error is also printed on stdout as the wire format's error
    object (``{"schema_version": 1, "error": "..."}``), for scripts.
    """
    try:
        yield
    except PagelensError as exc:
        if as_json:
            _echo_json(error_dict(str(exc)))
        _fail(exc)
    except KeyboardInterrupt:
        typer.secho(interrupted, err=True)
        raise typer.Exit(code=130) from None


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _progress() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {shown(str(exc))}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _named(option: str, value: object, variable: str) -> str:
    """``--url`` or, where the value came from the environment, the variable too."""
    from_env = os.environ.get(variable)
    return f"{option} (from {variable})" if from_env and from_env == str(value) else option


def _open(
    index: Path | None,
    url: str | None,
    api_key: str | None,
    collection: str,
    *,
    wait: float = 0.0,
    lock_now: bool = False,
    verify: bool = False,
    cluster: Any = None,
) -> Any:
    from pagelens.index import Index

    if index is not None and url is not None:
        raise PagelensError(
            f"{_named('--index', index, 'PAGELENS_INDEX')} and "
            f"{_named('--url', url, 'QDRANT_URL')} exclude each other: give one"
        )
    if cluster is not None:
        return _target(index, url, api_key, collection, cluster).open(lock_now=lock_now)
    if url is not None:
        return Index.open(url=url, api_key=api_key, collection=collection, verify=verify)
    path = index or Path(DEFAULT_INDEX)
    return Index.open(path, wait_s=wait, lock_now=lock_now, verify=verify)


@app.command("index")
def index_cmd(
    paths: Annotated[list[Path], typer.Argument(help="PDF files or folders (recursive).")],
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    model: ModelOpt = None,
    text_model: TextModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 4,
    dpi: Annotated[int, typer.Option("--dpi", min=10, help="Render resolution.")] = 150,
    max_pixels: Annotated[
        int, typer.Option("--max-pixels", help="Pixel cap per page.")
    ] = 4_000_000,
    pool_factor: Annotated[
        int | None,
        typer.Option("--pool-factor", min=1, help="Ward pool factor (1 = none; new index: 3)."),
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="Password of encrypted PDFs.")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds per poppler call.")] = 120.0,
    text: Annotated[
        bool | None,
        typer.Option(
            "--text/--no-text",
            help="Store page text and BM25 for hybrid search (new index: off; on for text models).",
        ),
    ] = None,
    ocr: OcrOpt = "auto",
    text_cache: Annotated[
        Path | None,
        typer.Option(
            "--text-cache",
            envvar="PAGELENS_TEXT_CACHE",
            help="Keep page texts and OCR here for other indexes of the same files.",
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="Remove documents whose files are gone.")
    ] = False,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    ray: RayOpt = False,
    ray_address: RayAddressOpt = None,
    shards: ShardsOpt = None,
    replicas: ReplicasOpt = None,
    write_consistency: WriteConsistencyOpt = None,
) -> None:
    """Index PDFs: render, encode, pool and store every page; skip unchanged files."""
    from pagelens.lens import Lens
    from pagelens.pipeline.render import RenderSettings
    from pagelens.pipeline.text import TextSettings

    _logging(verbose, quiet)
    interrupted = "interrupted: committed documents are kept; run again to resume"
    with _reporting(interrupted, as_json=as_json):
        text_settings = TextSettings(ocr=ocr)  # type: ignore[arg-type]  # it checks the value
        render = RenderSettings(
            dpi=dpi, max_pixels=max_pixels, password=password, timeout_s=timeout
        )
        cluster = _cluster(shards, replicas, write_consistency)
        if ray:
            from pagelens.pipeline import distributed

            report = distributed.index_paths_ray(
                _target(index, url, api_key, collection, cluster),
                paths,
                model=model,
                text_model=text_model,
                device=device,
                batch_size=batch_size,
                pool_factor=pool_factor,
                text=text,
                render=render,
                text_settings=text_settings,
                text_cache=text_cache,
                prune=prune,
                options=distributed.RayOptions(address=ray_address, progress=_progress()),
            )
            _show_index_report(report, as_json)
            return
        # the lock first: a second run on the same folder stops before any work (the
        # lens then finds the files before it loads a model)
        with _open(index, url, api_key, collection, lock_now=True, cluster=cluster) as idx:
            lens = Lens(
                idx,
                model=model,
                text_model=text_model,
                device=device,
                batch_size=batch_size,
                pool_factor=pool_factor,
                text=text,
            )
            report = lens.add(
                paths,
                render=render,
                text=text_settings,
                text_cache=text_cache,
                prune=prune,
                progress=_progress(),
            )
    _show_index_report(report, as_json)


RayOpt = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Run as a Ray Data pipeline (pip install 'pagelens[ray]'): on the cluster "
        "--ray-address names, else a local Ray.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        envvar="RAY_ADDRESS",
        help="With --ray: the Ray cluster to join (auto, 10.0.0.1:6379, ray://head:10001).",
    ),
]
ShardsOpt = Annotated[
    int | None,
    typer.Option("--shards", min=1, help="New server collection: shards (default: the server's)."),
]
ReplicasOpt = Annotated[
    int | None,
    typer.Option("--replicas", min=1, help="New server collection: copies of each shard."),
]
WriteConsistencyOpt = Annotated[
    int | None,
    typer.Option(
        "--write-consistency", min=1, help="New server collection: replicas that confirm a write."
    ),
]


def _cluster(shards: int | None, replicas: int | None, write_consistency: int | None) -> Any:
    """Gather the cluster options of a new server collection (``None``: none given)."""
    if shards is None and replicas is None and write_consistency is None:
        return None
    from pagelens.storage.server import ClusterSpec

    return ClusterSpec(shards, replicas, write_consistency)


def _target(
    index: Path | None, url: str | None, api_key: str | None, collection: str, cluster: Any
) -> Any:
    """Where a run writes, as every process of a distributed run opens it."""
    from pagelens.pipeline.distributed import IndexTarget

    if index is not None and url is not None:
        raise PagelensError(
            f"{_named('--index', index, 'PAGELENS_INDEX')} and "
            f"{_named('--url', url, 'QDRANT_URL')} exclude each other: give one"
        )
    if cluster is not None and url is None:
        raise PagelensError(
            "--shards, --replicas and --write-consistency set up a collection on a Qdrant "
            "server or cluster: give --url too"
        )
    if url is not None:
        return IndexTarget(url=url, api_key=api_key, collection=collection, cluster=cluster)
    return IndexTarget(path=str(index or Path(DEFAULT_INDEX)))


def _after_the_run(signum: int, frame: FrameType | None) -> None:
    """Say, on a signal once the run has ended, that it cost nothing; exit 128 + signum."""
    name = signal.Signals(signum).name
    os.write(
        2,
        f"{name} after the run had ended: every document was committed, nothing is lost\n".encode(),
    )
    os._exit(128 + signum)


def run_ended() -> None:
    """Answer Ctrl-C or SIGTERM from now on with :func:`_after_the_run`.

    Called once an indexing run's index is closed: what remains is printing its
    summary and the interpreter's teardown (thread and process pools joining), where
    a signal used to end the process silently (status -2 or -15).
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _after_the_run)


def _show_index_report(report: Any, as_json: bool) -> None:
    run_ended()  # the index is closed: what is left cannot lose anything
    if as_json:
        _echo_json(tagged({**asdict(report), "pages_per_second": report.pages_per_second}))
        return
    _print_index_report(report)


def _print_index_report(report: Any) -> None:
    typer.echo(
        f"indexed {len(report.indexed)} documents ({report.pages} pages, "
        f"{report.pages_per_second:.2f} pages/s), {len(report.unchanged)} unchanged, "
        f"{len(report.replaced)} replaced, {len(report.pruned)} pruned, "
        f"{len(report.skipped)} skipped, in {report.seconds:.1f} s"
    )
    s = report.stages
    typer.echo(
        f"  time: render wait {s.render:.1f} s, encode {s.encode:.1f} s, pool {s.pool:.1f} s, "
        f"store {s.store:.1f} s, optimize {s.optimize:.1f} s"
    )
    for skipped in report.skipped:
        typer.echo(f"  skipped {shown(skipped.path)}: {shown(skipped.cause)}")
    for error in report.page_errors:
        typer.echo(
            f"  page {error.page_number} of {shown(error.path)} kept without vectors: "
            f"{shown(error.cause)}"
        )
    for path in report.removed_incomplete:
        typer.echo(f"  removed the pages of {shown(path)}, left incomplete by an earlier run")


SearchChannelsOpt = Annotated[
    str | None,
    typer.Option(
        "--channels",
        help="dense, text, bm25, or several (dense,text,bm25) fused "
        "(default: every channel the index holds).",
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait", min=0, help="Seconds to wait while another process (an index run) holds it."
    ),
]


SHOWN_SNIPPET_CHARS = 120  # of a page's text, under a hit in the human output


@app.command("search")
def search_cmd(
    queries: Annotated[list[str], typer.Argument(help="One or more questions.")],
    k: Annotated[int, typer.Option("-k", min=1, help="Hits per question.")] = DEFAULT_K,
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    candidates: Annotated[
        int, typer.Option("--candidates", min=0, help="First-stage candidates; 0 = exact search.")
    ] = DEFAULT_CANDIDATES,
    doc: Annotated[list[str] | None, typer.Option("--doc", help="Only these documents.")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Only under this folder.")] = None,
    channels: SearchChannelsOpt = None,
    fusion: FusionOpt = "dbsf",
    weights: WeightsOpt = None,
    text_model: TextModelOpt = None,
    first_stage: FirstStageOpt = "exact",
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
    documents: Annotated[
        bool,
        typer.Option(
            "--documents", help="Rank documents by their best page (-k documents, 3 pages each)."
        ),
    ] = False,
) -> None:
    """Search the index with questions; print the best pages (or documents)."""
    from pagelens.lens import Lens
    from pagelens.search import SearchFilter, SearchOptions, check_queries, index_channels

    _logging(verbose, quiet)
    with _reporting(as_json=as_json):
        check_queries(queries)  # before any model is loaded
        options = SearchOptions(
            k=k,
            candidates=candidates or None,  # --candidates 0: exact search (candidates=None)
            channels=tuple(parse_channels(channels) or ()) if channels else None,
            fusion=fusion,
            weights=parse_weights(weights),
            first_stage=first_stage,
            filter=SearchFilter(tuple(doc) if doc else None, prefix) if doc or prefix else None,
        )
        with _open(index, url, api_key, collection, wait=wait) as idx:
            lens = Lens(idx, model=model, text_model=text_model, device=device)
            t0 = time.perf_counter()
            if documents:
                ranked = [lens.search_documents(q, k=k, options=options) for q in queries]
            else:
                results = lens.search(queries, options)
            ms = (time.perf_counter() - t0) * 1000
            chosen = list(options.channels or index_channels(idx))
    if as_json:
        found = document_results(queries, ranked) if documents else page_results(queries, results)
        _echo_json(search_response(found, channels=chosen, fusion=fusion, k=k, milliseconds=ms))
    elif documents:
        _print_documents(queries, ranked)
    else:
        _print_hits(queries, results, chosen, fusion)


def _print_hits(
    queries: list[str], results: list[list[Any]], chosen: list[str], fusion: str
) -> None:
    """Print each question's hits, with the start of the page's text."""
    typer.echo("channels: " + "+".join(chosen) + (f" ({fusion})" if len(chosen) > 1 else ""))
    for q, hits in zip(queries, results, strict=True):
        typer.echo(shown(q))
        for rank, h in enumerate(hits, 1):
            found = f"  [{'+'.join(h.channels)}]" if len(chosen) > 1 else ""
            typer.echo(
                f"  {rank:>2}. {h.score:8.3f}  {shown(h.doc_path)}  page {h.page_number}{found}"
            )
            if h.text:
                typer.echo(f"      {shown(snippet(h.text, limit=SHOWN_SNIPPET_CHARS) or '')}")


def _print_documents(queries: list[str], ranked: list[list[Any]]) -> None:
    """Print documents ranked by their best pages (``search --documents``)."""
    for q, docs in zip(queries, ranked, strict=True):
        typer.echo(shown(q))
        for rank, d in enumerate(docs, 1):
            pages = ", ".join(f"{h.page_number} ({h.score:.3f})" for h in d.pages)
            typer.echo(f"  {rank:>2}. {d.score:8.3f}  {shown(d.doc_path)}  pages {pages}")


@app.command("info")
def info_cmd(
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show the manifest, counts and bytes per page of an index."""
    _logging(verbose, quiet)
    with _reporting(as_json=as_json), _open(index, url, api_key, collection, wait=wait) as idx:
        info = idx.info()
    if as_json:
        _echo_json(tagged(info.to_dict()))
        return
    typer.echo(f"index:      {info.location}")
    if info.manifest is None:
        typer.echo("(empty: nothing indexed yet)")
        return
    enc, st = info.manifest.encoder, info.manifest.settings
    typer.echo(
        f"encoder:    {shown(enc.model_id)} ({enc.family}, revision {enc.revision}, dim {enc.dim})"
    )
    tenc = info.manifest.text_encoder
    if tenc is not None:
        typer.echo(
            f"text model: {tenc.model_id} ({tenc.family}, revision {tenc.revision}, "
            f"dim {tenc.dim}): the text channel, {info.text_vectors_per_page:.1f} vectors per page"
        )
    spec = info.manifest.collection_spec()
    factors = f"pool factor {st.pool_factor}, candidate factor {st.candidate_factor}"
    if spec.coarse:
        factors += f", coarse factor {st.coarse_factor}"
    typer.echo(f"pooling:    Ward, {factors}; {spec.describe()}")
    typer.echo(f"text:       {'page text + BM25 (hybrid search)' if st.text else 'no'}")
    typer.echo(f"documents:  {info.documents}")
    typer.echo(f"pages:      {info.pages}")
    typer.echo(
        f"vectors:    {info.vectors_per_page:.1f} per page (+{info.pooled_vectors_per_page:.1f} "
        "candidate vectors"
        + (f", +{info.coarse_vectors_per_page:.1f} coarse" if spec.coarse else "")
        + ")"
    )
    typer.echo(f"bytes:      {info.bytes_per_page / 1024:.1f} KiB per page of vector values")
    if info.disk_bytes_per_page is not None:
        typer.echo(f"on disk:    {info.disk_bytes_per_page / 1024:.1f} KiB per page, all included")
    typer.echo(f"built by:   pagelens {info.manifest.pagelens_version}, {info.manifest.created_at}")


@app.command("delete")
def delete_cmd(
    doc: Annotated[
        str,
        typer.Argument(
            help="Document path as `pagelens ls` shows it, its sha256, or the indexed file's "
            "absolute path."
        ),
    ],
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    wait: WaitOpt = 0.0,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Delete one document and its pages from the index."""
    _logging(verbose, quiet)
    with _reporting(), _open(index, url, api_key, collection, wait=wait) as idx:
        removed = idx.delete_document(doc)
    typer.echo(f"deleted {shown(display_path(doc))} ({removed} pages)")


@app.command("ls")
def ls_cmd(
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    wait: WaitOpt = 0.0,
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the documents of an index: pages, and the path as recorded (what delete takes)."""
    _logging(verbose, quiet)
    with _reporting(as_json=as_json), _open(index, url, api_key, collection, wait=wait) as idx:
        docs = idx.documents()
    if as_json:
        _echo_json(tagged({"documents": [d.to_dict() for d in docs]}))
        return
    for d in docs:
        failed = f"  ({d.failed_pages} without vectors)" if d.failed_pages else ""
        typer.echo(f"{d.page_count:>6}  {shown(d.doc_path)}{failed}")


@app.command("check")
def check_cmd(
    index: IndexOpt = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    collection: CollectionOpt = "pagelens",
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Remove damaged documents (the next `pagelens index` run indexes them again), "
            "orphan pages and unreadable points; rebuild a lost manifest.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check an index for damage: pages, vectors and manifest against the commit records.

    Exits with status 1 when problems are found (or remain after --repair).
    """
    from pagelens.storage.check import check_index, repair_index

    with _reporting(as_json=as_json), _open(index, url, api_key, collection, verify=True) as idx:
        repaired = repair_index(idx) if repair else None
        report = check_index(idx)
    if as_json:
        _echo_json(tagged({**report.to_dict(), "repair": repaired.to_dict() if repaired else None}))
    else:
        if repaired is not None:
            if repaired.manifest_rebuilt:
                typer.echo("rebuilt the manifest from the commit records")
            for path in repaired.requeued:
                typer.echo(
                    f"removed {shown(path)}: run `pagelens index` on its folder to index it again"
                )
            if repaired.orphans:
                typer.echo(f"removed the pages of {repaired.orphans} uncommitted documents")
        typer.echo(f"index:    {report.location}")
        typer.echo(f"checked:  {report.documents} documents, {report.pages} pages")
        if report.ok:
            typer.echo("healthy:  no problems found")
        for problem in report.problems:
            typer.echo(f"  {shown(problem.subject)}: {shown(problem.cause)}")
        if report.advice:
            typer.echo(f"to fix:   {report.advice}")
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("models")
def models_cmd(as_json: JsonOpt = False) -> None:
    """List the supported colpali-engine families and their known checkpoints."""
    from pagelens.encoders.catalog import catalog, catalog_json

    entries = catalog()
    out = catalog_json(entries)
    if as_json:
        _echo_json(tagged(out))
        return
    typer.echo(f"colpali-engine: {out['colpali_engine'] or 'not installed'}")
    typer.echo(f"{'family':<15} {'installed':<22} {'model':<34} {'params':<7} vectors/page")
    for e in entries:
        have = "yes" if e.installed else f"no (needs >={e.min_version})"
        for i, m in enumerate(e.models or [None]):
            first = (e.family, have) if i == 0 else ("", "")
            if m is None:
                typer.echo(f"{first[0]:<15} {first[1]:<22} {'none known':<34}")
                continue
            typer.echo(
                f"{first[0]:<15} {first[1]:<22} {m.hub_id:<34} {m.parameters:<7} "
                f"{m.vectors_per_page}"
            )


@app.command("serve")
def serve_cmd(
    index: IndexOpt = None,
    url: UrlOpt = None,
    qdrant_api_key: Annotated[
        str | None,
        typer.Option("--qdrant-api-key", envvar="QDRANT_API_KEY", help="Qdrant API key."),
    ] = None,
    collection: CollectionOpt = "pagelens",
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="PAGELENS_API_KEY",
            help="Key every API call must send (X-API-Key); needed off loopback.",
        ),
    ] = None,
    model: ModelOpt = None,
    text_model: TextModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 4,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Folder of rendered page images (default: temporary)."),
    ] = None,
    cache_mb: Annotated[
        int, typer.Option("--cache-mb", min=1, help="Size cap of that folder, in MiB.")
    ] = 256,
    verbose: VerboseOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Serve an index over HTTP: a search API, page images, similarity maps, jobs, a web page."""
    _logging(verbose, quiet)
    from pagelens.serve import serve

    with _reporting("stopped"):
        if index is not None and url is not None:
            raise PagelensError(
                f"{_named('--index', index, 'PAGELENS_INDEX')} and "
                f"{_named('--url', url, 'QDRANT_URL')} exclude each other: give one"
            )
        serve(
            None if url else (index or Path(DEFAULT_INDEX)),
            url=url,
            qdrant_api_key=qdrant_api_key,
            collection=collection,
            host=host,
            port=port,
            api_key=api_key,
            model=model,
            text_model=text_model,
            device=device,
            batch_size=batch_size,
            cache_dir=cache_dir,
            cache_bytes=cache_mb * 2**20,
            log_level="warning" if quiet else "info",
        )


eval_app = typer.Typer(no_args_is_help=True, help="Measure retrieval quality (ViDoRe-style).")
app.add_typer(eval_app, name="eval")


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PagelensError(f"{name} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise PagelensError(f"{name} needs at least one value")
    return values


@eval_app.command("run")
def eval_run_cmd(
    dataset: Annotated[str, typer.Argument(help="Local set folder, saved dataset, or hub name.")],
    model: ModelOpt = None,
    text_model: Annotated[
        str | None,
        typer.Option("--text-model", help="Second encoder, of page text: the text channel."),
    ] = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 4,
    fmt: Annotated[
        str | None, typer.Option("--format", help="vidore-v1, vidore-v2, vidore-v3 or pdf.")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Dataset split.")] = "test",
    language: Annotated[str | None, typer.Option("--language", help="Only this language.")] = None,
    limit_queries: Annotated[
        int | None, typer.Option("--limit-queries", min=1, help="Use the first N queries.")
    ] = None,
    pool_factor: Annotated[
        str, typer.Option("--pool-factor", help="One factor, or several (1,2,3,4) for a sweep.")
    ] = "3",
    candidate_factor: Annotated[
        int | None,
        typer.Option(
            "--candidate-factor", min=1, help="Ward factor of the candidate vectors (new index)."
        ),
    ] = None,
    candidates: Annotated[
        int, typer.Option("--candidates", min=0, help="First-stage candidates; 0 = exact.")
    ] = DEFAULT_CANDIDATES,
    scope: Annotated[str, typer.Option("--scope", help="corpus, document or both.")] = "both",
    breakdown: Annotated[
        list[str] | None,
        typer.Option(
            "--breakdown",
            help="Query field to break down by (default: fields of at most 20 repeated values).",
        ),
    ] = None,
    dpi: Annotated[int, typer.Option("--dpi", min=10, help="Render resolution (PDF sets).")] = 150,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            envvar="PAGELENS_EVAL_CACHE",
            help="Cached eval indexes (default ~/.cache/pagelens/eval).",
        ),
    ] = None,
    url: UrlOpt = None,
    api_key: ApiKeyOpt = None,
    channels: ChannelsOpt = "dense",
    fusion: FusionOpt = "dbsf",
    weights: WeightsOpt = None,
    first_stage: FirstStageOpt = "exact",
    text: Annotated[
        bool, typer.Option("--text/--no-text", help="Index page text and BM25 (PDF sets).")
    ] = False,
    ocr: OcrOpt = "auto",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build the index again.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for JSON, markdown, plots.")] = Path(
        "eval-results"
    ),
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite the files of an earlier, same-named run.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Index a dataset (or reuse its cached index), search its queries, score them.

    Files are named after the run: model, dataset and every setting not at its default.
    """
    from pagelens.eval.run import EvalRunSpec, run_eval

    interrupted = (
        "interrupted: the evaluation index keeps what was committed (in --cache-dir); "
        "run again to resume"
    )
    with _reporting(interrupted, as_json=as_json):
        run = run_eval(
            EvalRunSpec(
                dataset=dataset,
                model=model,
                text_model=text_model,
                device=device,
                batch_size=batch_size,
                format=fmt,
                split=split,
                language=language,
                max_queries=limit_queries,
                pool_factors=_ints(pool_factor, "--pool-factor"),
                candidate_factor=candidate_factor,
                text=text,
                dpi=dpi,
                ocr=ocr,
                scope=scope,
                breakdown_fields=breakdown,
                candidates=candidates or None,  # 0 on the command line: exact search
                channels=parse_channels(channels) or [],
                fusion=fusion,
                weights=parse_weights(weights),
                first_stage=first_stage,
                cache_dir=cache_dir,
                url=url,
                api_key=api_key,
                rebuild=rebuild,
                out=out,
                force=force,
                progress=_progress(),
            )
        )
    if as_json:
        typer.echo(json.dumps(run.payload, indent=2))
        return
    typer.echo(run.markdown)
    for path in run.written:
        typer.echo(f"wrote {path}")


@eval_app.command("compare")
def eval_compare_cmd(
    results: Annotated[
        list[Path], typer.Argument(help="Result JSON files; the first is the baseline.")
    ],
    metric: Annotated[list[str] | None, typer.Option("--metric", help="Metric key(s).")] = None,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="corpus and/or document.")
    ] = None,
    resamples: Annotated[int, typer.Option("--resamples", min=100)] = 10_000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.05,
    as_json: JsonOpt = False,
) -> None:
    """Side-by-side table of runs with a paired randomisation test per metric."""
    from pagelens.eval.report import CompareOptions, compare_files

    with _reporting(as_json=as_json):
        options = CompareOptions(
            metrics=metric, scopes=scope, n_resamples=resamples, seed=seed, alpha=alpha
        )
        comparison = compare_files(results, options)
    if as_json:
        typer.echo(json.dumps(comparison.to_dict(), indent=2))
        return
    typer.echo(comparison.to_markdown())


if __name__ == "__main__":  # pragma: no cover
    app()
