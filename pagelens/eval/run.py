"""Evaluation runs: index a set through the user's API, search its queries, score.

What is measured is what ships: pages go in through
:func:`pagelens.pipeline.job.index_pages` (dataset images) or
:func:`~pagelens.pipeline.job.index_paths` (PDF sets), queries through
:func:`pagelens.search.search`, exactly as a user's calls.

Indexes are cached under ``cache_dir``, one folder per (corpus, encoder spec,
index settings, render settings); a later run with the same four reuses it. Page
texts (and their OCR) are kept in ``cache_dir/text`` for every index of the set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from pagelens.encoders.base import Encoder
from pagelens.errors import PagelensError
from pagelens.eval.datasets import EvalSet, ImageCorpus, PdfCorpus, Query, categorical_fields
from pagelens.eval.metrics import DEPTH, breakdown, score_run
from pagelens.eval.report import SCOPES, EvalResult, IndexStats, ScopeResult
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.job import index_pages, index_paths
from pagelens.pipeline.text import TextCache, TextSettings
from pagelens.search import DEFAULT_CANDIDATES, NoMatchError, SearchFilter, search
from pagelens.types import Hit
from pagelens.version import package_version

if TYPE_CHECKING:
    from pagelens.pipeline.render import RenderSettings

logger = logging.getLogger(__name__)


def index_key(
    eval_set: EvalSet,
    encoder: Encoder,
    settings: IndexSettings,
    render: RenderSettings | None = None,
    text: TextSettings | None = None,
    text_encoder: Encoder | None = None,
) -> str:
    """Return the cache key of an evaluation index: corpus, encoders, settings, rendering."""
    render_part: dict[str, Any] | None = None
    if render is not None and isinstance(eval_set.corpus, PdfCorpus):
        render_part = {"dpi": render.dpi, "max_pixels": render.max_pixels}
    if text is not None and isinstance(eval_set.corpus, PdfCorpus):
        render_part = {**(render_part or {}), "ocr": text.ocr, "ocr_lang": text.ocr_lang}
    blob = json.dumps(
        {
            "corpus": eval_set.corpus_fingerprint,
            "encoder": dataclasses.asdict(encoder.spec),
            "settings": dataclasses.asdict(settings),
            "render": render_part,
            # absent (not null) without one, so keys of earlier indexes still match
            **({"text_encoder": dataclasses.asdict(text_encoder.spec)} if text_encoder else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:60]


def _expected_docs(eval_set: EvalSet) -> set[str]:
    corpus = eval_set.corpus
    return set(corpus.ids) if isinstance(corpus, ImageCorpus) else set(corpus.documents)


@contextmanager
def _open_index(
    eval_set: EvalSet,
    encoder: Encoder,
    settings: IndexSettings,
    render: RenderSettings | None,
    *,
    text: TextSettings | None,
    text_encoder: Encoder | None,
    cache_dir: str | Path | None,
    url: str | None,
    api_key: str | None,
    rebuild: bool,
) -> Iterator[Index]:
    key = index_key(eval_set, encoder, settings, render, text, text_encoder)
    name = f"{_slug(eval_set.name)}-{key}"
    if url is not None:
        if cache_dir is not None:
            raise PagelensError("give cache_dir or url for the evaluation index, not both")
        index = Index.open(url=url, api_key=api_key, collection=f"pagelens-eval-{name}")
        try:
            if rebuild:
                for record in index.documents():
                    index.delete_sha(record.doc_sha256)
            yield index
        finally:
            index.close()
        return
    tmp = None
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="pagelens-eval-")
        folder = Path(tmp) / name
    else:
        folder = Path(cache_dir).expanduser() / name
        if rebuild and folder.exists():
            logger.info("rebuilding %s", folder)
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
    index = Index.open(folder)
    try:
        yield index
    finally:
        index.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _build(
    index: Index,
    eval_set: EvalSet,
    encoder: Encoder,
    settings: IndexSettings,
    render: RenderSettings | None,
    *,
    text: TextSettings | None = None,
    text_encoder: Encoder | None = None,
    text_cache: TextCache | None = None,
    progress: bool,
) -> tuple[bool, float | None]:
    """Index what is missing; returns (reused, build seconds)."""
    expected = _expected_docs(eval_set)
    done = {r.doc_path for r in index.documents()}
    stray = done - expected
    if stray:
        raise PagelensError(
            f"index {index.location} holds {len(stray)} documents not in {eval_set.name}, "
            f"e.g. {sorted(stray)[:3]}; rebuild it"
        )
    if done == expected:
        logger.info("reusing index %s (%s documents)", index.location, len(done))
        return True, None
    if done:
        logger.info(
            "resuming index %s: %s of %s documents", index.location, len(done), len(expected)
        )
    start = time.perf_counter()
    corpus = eval_set.corpus
    if isinstance(corpus, ImageCorpus):
        report = index_pages(
            index,
            encoder,
            corpus.iter_pages(exclude=done),
            settings=settings,
            total=len(expected - done),
            progress=progress,
            text_encoder=text_encoder,
        )
    else:
        report = index_paths(
            index,
            encoder,
            [corpus.root],
            settings=settings,
            render=render,
            text=text,
            text_encoder=text_encoder,
            text_cache=text_cache,
            progress=progress,
        )
    seconds = time.perf_counter() - start
    missing = expected - {r.doc_path for r in index.documents()}
    if missing:
        causes = "; ".join(f"{s.path}: {s.cause}" for s in report.skipped[:3])
        raise PagelensError(
            f"{len(missing)} documents of {eval_set.name} could not be indexed, "
            f"e.g. {sorted(missing)[:3]}" + (f" ({causes})" if causes else "; see the log")
        )
    return False, seconds


def _search_all(
    index: Index,
    encoder: Encoder,
    eval_set: EvalSet,
    jobs: Sequence[tuple[list[Query], SearchFilter | None]],
    *,
    batch_size: int,
    candidates: int | None,
    options: dict[str, Any],
    desc: str,
    progress: bool,
) -> tuple[dict[str, list[str]], float]:
    """Run every (queries, filter) job in batches; returns ranked corpus ids and seconds."""
    run: dict[str, list[str]] = {}
    seconds = 0.0
    total = sum(len(qs) for qs, _ in jobs)
    with tqdm(total=total, desc=desc, unit="query", disable=None if progress else True) as bar:
        for queries, where in jobs:
            for start in range(0, len(queries), batch_size):
                batch = queries[start : start + batch_size]
                t0 = time.perf_counter()
                try:
                    hits: list[list[Hit]] = search(
                        index,
                        encoder,
                        [q.text for q in batch],
                        k=DEPTH,
                        candidates=candidates,
                        filter=where,
                        **options,
                    )
                except NoMatchError:  # a document that could not be indexed: no hit
                    hits = [[] for _ in batch]
                seconds += time.perf_counter() - t0
                for q, found in zip(batch, hits, strict=True):
                    run[q.query_id] = [
                        eval_set.corpus.hit_id(h.doc_path, h.page_number) for h in found
                    ]
                bar.update(len(batch))
    return run, seconds


def _document_jobs(eval_set: EvalSet) -> tuple[list[tuple[list[Query], SearchFilter]], int]:
    """Group queries by their document, each group with its filter; count the skipped."""
    corpus = eval_set.corpus
    pages_of: dict[str, tuple[str, ...]]  # document -> the doc_paths a filter names
    if isinstance(corpus, PdfCorpus):
        pages_of = {d: (d,) for d in corpus.documents}
    else:
        grouped: dict[str, list[str]] = {}
        for cid in corpus.ids:
            if cid in corpus.docs:
                grouped.setdefault(corpus.docs[cid], []).append(cid)
        pages_of = {d: tuple(ids) for d, ids in grouped.items()}
    by_doc: dict[str, list[Query]] = {}
    skipped = 0
    for q in eval_set.queries:
        if q.doc is None or q.doc not in pages_of:
            skipped += 1
            continue
        by_doc.setdefault(q.doc, []).append(q)
    if skipped:
        logger.warning("within-document scope: %s queries name no indexed document", skipped)
    jobs = [(qs, SearchFilter(doc_paths=pages_of[d])) for d, qs in sorted(by_doc.items())]
    return jobs, skipped


def evaluate(
    eval_set: EvalSet,
    encoder: Encoder,
    *,
    settings: IndexSettings | None = None,
    render: RenderSettings | None = None,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    api_key: str | None = None,
    scopes: Sequence[str] | None = None,
    breakdown_fields: Sequence[str] | None = None,
    query_batch_size: int = 32,
    candidates: int | None = DEFAULT_CANDIDATES,
    channels: Sequence[str] = ("dense",),
    fusion: str = "dbsf",
    weights: Mapping[str, float] | None = None,
    text: TextSettings | None = None,
    text_encoder: Encoder | None = None,
    first_stage: str = "auto",
    rebuild: bool = False,
    label: str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Index ``eval_set`` with ``encoder`` (or reuse the cached index), search, score.

    Args:
        eval_set: from :func:`pagelens.eval.datasets.load_eval_set`.
        encoder: any :class:`~pagelens.encoders.base.Encoder`.
        settings: index settings (pool factor...); the defaults when ``None``.
        render: PDF rendering settings (PDF sets only).
        cache_dir: folder of cached evaluation indexes; ``None`` builds a temporary
            index and deletes it afterwards.
        url: build the index on this Qdrant server instead (one collection per
            cache key); excludes ``cache_dir``.
        api_key: the server's API key, if it has one.
        scopes: among ``("corpus", "document")``; ``None`` runs ``corpus`` and, when
            the set's queries name their document, ``document``.
        breakdown_fields: query fields to break metrics down by; ``None`` picks the
            categorical ones (see :func:`~pagelens.eval.datasets.categorical_fields`).
        query_batch_size: queries per search call.
        candidates: first-stage candidates per query, as in
            :func:`pagelens.search.search` (its default; ``None`` = exact search).
        channels: search channels, as in :func:`pagelens.search.search`
            (``"dense"``, ``"text"``, ``"bm25"``, several fused); the index is
            shared by runs that differ only in channels.
        fusion: ``"rrf"`` or ``"dbsf"`` for a hybrid.
        weights: RRF weight per channel, e.g. ``{"bm25": 2}``.
        text: page-text settings (OCR) for indexes with text (PDF sets only).
        text_encoder: a second encoder of page text, stored as the ``text``
            channel (see :func:`pagelens.pipeline.job.index_paths`).
        first_stage: ``"auto"``, ``"hnsw"`` or ``"exact"``, as in
            :func:`pagelens.search.search`.
        rebuild: drop the cached index and build it again.
        label: the run's name in tables and file names; by default
            :func:`run_label`: model, dataset and every setting not at its default.
        progress: show progress bars (they stay off when output is not a terminal).

    """
    settings = settings or IndexSettings()
    if query_batch_size < 1:
        raise PagelensError(f"query_batch_size must be at least 1, got {query_batch_size}")
    if scopes is None:
        wanted = ["corpus"] + (["document"] if eval_set.has_documents else [])
    else:
        wanted = list(dict.fromkeys(scopes))
        bad = [s for s in wanted if s not in SCOPES]
        if bad:
            raise PagelensError(f"unknown scopes {bad}; choose from {list(SCOPES)}")
        if "document" in wanted and not eval_set.has_documents:
            raise PagelensError(
                f"{eval_set.name} queries name no document: the 'document' scope needs a "
                "set whose queries have a 'doc' field (e.g. a PDF set); use scopes=['corpus']"
            )
    fields = (
        tuple(breakdown_fields)
        if breakdown_fields is not None
        else categorical_fields(eval_set.queries)
    )
    present = {k for q in eval_set.queries for k in q.fields}
    absent = [f for f in fields if f not in present]
    if absent:
        raise PagelensError(
            f"breakdown fields {absent} are not query fields of {eval_set.name}; "
            f"fields: {sorted(present)}"
        )

    with _open_index(
        eval_set,
        encoder,
        settings,
        render,
        text=text,
        text_encoder=text_encoder,
        cache_dir=cache_dir,
        url=url,
        api_key=api_key,
        rebuild=rebuild,
    ) as index:
        reused, build_seconds = _build(
            index,
            eval_set,
            encoder,
            settings,
            render,
            text=text,
            text_encoder=text_encoder,
            # page texts outlive one index: a sweep or another model reads them back
            text_cache=TextCache(Path(cache_dir).expanduser() / "text") if cache_dir else None,
            progress=progress,
        )
        options: dict[str, Any] = {
            "channels": tuple(channels),
            "fusion": fusion,
            "weights": weights,
            "text_encoder": text_encoder,
            "first_stage": first_stage,
        }
        info = index.info()
        if index.manifest is not None:  # what the index holds (a text encoder forces text)
            settings = index.manifest.settings
        # one untimed search first: one-time costs (lazy model or store set-up) are
        # not what a per-query latency should report
        search(
            index, encoder, [eval_set.queries[0].text], k=DEPTH, candidates=candidates, **options
        )
        results: dict[str, ScopeResult] = {}
        for scope in wanted:
            if scope == "corpus":
                jobs: list[tuple[list[Query], SearchFilter | None]] = [
                    (list(eval_set.queries), None)
                ]
                skipped = 0
            else:
                doc_jobs, skipped = _document_jobs(eval_set)
                jobs = list(doc_jobs)
            scored = [q for qs, _ in jobs for q in qs]
            if not scored:
                logger.warning("scope %s: no query to rank", scope)
                continue
            run, seconds = _search_all(
                index,
                encoder,
                eval_set,
                jobs,
                batch_size=query_batch_size,
                candidates=candidates,
                options=options,
                desc=f"search ({scope})",
                progress=progress,
            )
            scores = score_run({q.query_id: eval_set.qrels[q.query_id] for q in scored}, run)
            results[scope] = ScopeResult(
                scope=scope,
                metrics=scores.metrics,
                per_query=scores.per_query,
                breakdowns={
                    name: breakdown(
                        scores.per_query, {q.query_id: q.fields.get(name) for q in scored}
                    )
                    for name in fields
                },
                search_seconds=seconds,
                ms_per_query=1000.0 * seconds / len(scored),
                skipped_queries=skipped,
            )

    run_settings: dict[str, Any] = dataclasses.asdict(settings)
    run_settings.update(
        k=DEPTH,
        query_batch_size=query_batch_size,
        candidates=candidates,
        channels=list(channels),
        fusion=fusion,
        weights=dict(weights) if weights else None,
        first_stage=first_stage,
    )
    if render is not None and isinstance(eval_set.corpus, PdfCorpus):
        run_settings.update(render_dpi=render.dpi, render_max_pixels=render.max_pixels)
    if text is not None and settings.text and isinstance(eval_set.corpus, PdfCorpus):
        run_settings.update(ocr=text.ocr, ocr_lang=text.ocr_lang)  # what the page texts hold
    result = EvalResult(
        label="",
        dataset=eval_set.describe(),
        encoder=dataclasses.asdict(encoder.spec),
        text_encoder=dataclasses.asdict(text_encoder.spec) if text_encoder else None,
        settings=run_settings,
        index=IndexStats(
            pages=info.pages,
            documents=info.documents,
            vectors_per_page=info.vectors_per_page,
            bytes_per_page=info.bytes_per_page,
            reused=reused,
            build_seconds=build_seconds,
            location=info.location,
        ),
        scopes=results,
        query_fields={
            q.query_id: {name: q.fields.get(name) for name in fields} for q in eval_set.queries
        },
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pagelens_version=package_version(),
    )
    return dataclasses.replace(result, label=label or run_label(result))


def _setting_defaults() -> dict[str, Any]:
    """Each recorded run setting at its default: the values a label leaves out."""
    from pagelens.pipeline.render import RenderSettings

    params = inspect.signature(evaluate).parameters
    render, text = RenderSettings(), TextSettings()
    return {
        **dataclasses.asdict(IndexSettings()),
        "k": DEPTH,
        **{
            name: params[name].default
            for name in ("query_batch_size", "candidates", "fusion", "weights", "first_stage")
        },
        "channels": list(params["channels"].default),
        "render_dpi": render.dpi,
        "render_max_pixels": render.max_pixels,
        "ocr": text.ocr,
        "ocr_lang": text.ocr_lang,
    }


def _setting_token(name: str, value: Any) -> str:
    if name == "candidates" and value is None:
        return "exact"
    if isinstance(value, bool):
        return name if value else f"no_{name}"
    if isinstance(value, Mapping):
        return f"{name}=" + ",".join(f"{k}:{v:g}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return f"{name}=" + "+".join(str(v) for v in value)
    return f"{name}={value}"


def _model_name(model_id: str) -> str:
    """Shorten a local checkpoint folder to its name; keep a hub id whole."""
    if model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1:
        return Path(model_id).name or model_id
    return model_id


def run_label(result: EvalResult) -> str:
    """Name a run by what it measured: model, dataset and each setting not at its default.

    The tokens are the encoder's model id (a local folder by its name), ``text_model=``
    and the text encoder's, the dataset's name with its query selection (``split=``
    when not ``test``, ``language=``, ``max_queries=``), ``pool_factor=<n>`` always,
    then every other recorded setting whose value is not :func:`evaluate`'s default
    (``exact`` for ``candidates=None``, ``first_stage=``, ``channels=``, ``fusion=``,
    ``weights=``, ``text``, ``ocr=``, ``render_dpi=``...; a setting this function does
    not know is always shown). Two runs that differ in any of these get different
    labels (two local model folders of one name excepted), hence different result
    files (:func:`pagelens.eval.report.result_stem`) and compare columns.

    Example: ``"vidore/colqwen2.5-v0.2 mmlongbench-dev max_queries=20 pool_factor=3
    exact channels=dense+bm25 fusion=rrf"``.
    """
    tokens = [_model_name(str(result.encoder.get("model_id", "?")))]
    if result.text_encoder:
        tokens.append("text_model=" + _model_name(str(result.text_encoder.get("model_id", "?"))))
    tokens.append(str(result.dataset.get("name", "?")))
    selection = dict(result.dataset.get("selection") or {})
    if selection.get("split") == "test":
        del selection["split"]
    tokens += [_setting_token(k, v) for k, v in selection.items()]
    settings = dict(result.settings)
    if "pool_factor" in settings:
        tokens.append(_setting_token("pool_factor", settings.pop("pool_factor")))
    defaults = _setting_defaults()
    tokens += [
        _setting_token(name, value)
        for name, value in settings.items()
        if name not in defaults or value != defaults[name]
    ]
    return " ".join(tokens)


def sweep(
    eval_set: EvalSet,
    encoder: Encoder,
    *,
    pool_factors: Sequence[int],
    settings: IndexSettings | None = None,
    **kwargs: Any,
) -> list[EvalResult]:
    """:func:`evaluate` once per pool factor (other settings from ``settings``).

    Keyword arguments go to :func:`evaluate`; each run is labelled by :func:`run_label`
    (the labels differ in ``pool_factor=<n>``).
    """
    if not pool_factors:
        raise PagelensError("a sweep needs at least one pool factor")
    if "label" in kwargs:
        raise PagelensError("a sweep labels its runs itself; do not pass label")
    base = settings or IndexSettings()
    # Pool factors change only the pooling: encode each page once for the whole sweep.
    several = len(set(pool_factors)) > 1
    cached = _PageCache(encoder) if several else encoder
    if several and kwargs.get("text_encoder") is not None:
        kwargs["text_encoder"] = _PageCache(kwargs["text_encoder"])
    out = []
    for pf in dict.fromkeys(pool_factors):
        logger.info("sweep: pool_factor=%s", pf)
        out.append(
            evaluate(
                eval_set,
                cached,
                settings=dataclasses.replace(base, pool_factor=pf),
                **kwargs,
            )
        )
    return out


class _PageCache:
    """An encoder that remembers page vectors, keyed by page and content, for sweeps.

    Same spec as the encoder it wraps, so indexes and manifests are unchanged; a
    page's key holds its document hash, number and text, so pages whose text differs
    (another OCR setting) are encoded again. Memory: one float32 multi-vector per
    page of the corpus (about 1.5 GB for mmlongbench-dev's 1,712 pages with MiniLM).
    """

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder
        self._pages: dict[tuple[str, int, str | None], Any] = {}
        self.reads = getattr(encoder, "reads", "image")

    @property
    def spec(self) -> Any:
        return self._encoder.spec

    def encode_pages(self, pages: Sequence[Any]) -> list[Any]:
        keys = [(p.doc_sha256, p.page_number, p.text) for p in pages]
        missing = [p for p, key in zip(pages, keys, strict=True) if key not in self._pages]
        if missing:
            for page, vectors in zip(missing, self._encoder.encode_pages(missing), strict=True):
                self._pages[(page.doc_sha256, page.page_number, page.text)] = vectors
        return [self._pages[key] for key in keys]

    def encode_queries(self, texts: Sequence[str]) -> list[Any]:
        return self._encoder.encode_queries(texts)
