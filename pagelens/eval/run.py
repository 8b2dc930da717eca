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
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pagelens.encoders.base import Encoder, EncoderSpec
from pagelens.errors import PagelensError, check_whole
from pagelens.eval.datasets import (
    EvalSet,
    ImageCorpus,
    PdfCorpus,
    Query,
    categorical_fields,
    load_eval_set,
)
from pagelens.eval.metrics import DEPTH, breakdown, score_run
from pagelens.eval.report import (
    SCOPES,
    EvalResult,
    IndexStats,
    ScopeResult,
    check_choices,
    clean_name,
)
from pagelens.index import MANIFEST_FORMAT, Index, IndexSettings
from pagelens.pipeline.job import index_pages, index_paths
from pagelens.pipeline.text import TextCache, TextSettings
from pagelens.progress import bar as progress_bar
from pagelens.search import DEFAULT_CANDIDATES, NoMatchError, SearchFilter, search
from pagelens.types import Hit
from pagelens.version import package_version

if TYPE_CHECKING:
    from pagelens.pipeline.render import RenderSettings

logger = logging.getLogger(__name__)


def _spec_key(spec: EncoderSpec) -> dict[str, Any]:
    """Spell an encoder's part of a cache key as it was before specs had page vectors."""
    key: dict[str, Any] = {
        "model_id": spec.given or spec.model_id,
        "revision": spec.revision,
        "dim": spec.dim,
        "family": spec.family,
    }
    if spec.page_vectors != "all":
        key["page_vectors"] = spec.page_vectors
    return key


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
            "encoder": _spec_key(encoder.spec),
            "settings": dataclasses.asdict(settings),
            "render": render_part,
            # absent (not null) without one, so keys of earlier indexes still match
            **({"text_encoder": _spec_key(text_encoder.spec)} if text_encoder else {}),
            # the stored layout: an index cached before format 2 is not this one
            **({"format": MANIFEST_FORMAT} if MANIFEST_FORMAT > 1 else {}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalOptions:
    """How one evaluation run indexes, searches and scores: checked once, here.

    Attributes:
        settings: index settings (pool factor...).
        render: PDF rendering settings (PDF sets only); ``None``: the defaults.
        text: page-text settings (OCR) for indexes with text (PDF sets only).
        cache_dir: folder of cached evaluation indexes; ``None`` builds a temporary
            index and deletes it afterwards.
        url: build the index on this Qdrant server instead (one collection per
            cache key); excludes ``cache_dir``.
        api_key: the server's API key, if it has one.
        scopes: among :data:`~pagelens.eval.report.SCOPES`; ``None`` runs ``corpus``
            and, when the set's queries name their document, ``document``.
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
        first_stage: ``"exact"`` or ``"hnsw"``, as in
            :func:`pagelens.search.search`.
        rebuild: drop the cached index and build it again.
        label: the run's name in tables and file names; by default
            :func:`run_label`: model, dataset and every setting not at its default.
        progress: show progress bars (they stay off when output is not a terminal).

    Channels, fusion and first stage are checked by the search itself.

    """

    settings: IndexSettings = field(default_factory=IndexSettings)
    render: RenderSettings | None = None
    text: TextSettings | None = None
    cache_dir: str | Path | None = None
    url: str | None = None
    api_key: str | None = None
    scopes: Sequence[str] | None = None
    breakdown_fields: Sequence[str] | None = None
    query_batch_size: int = 32
    candidates: int | None = DEFAULT_CANDIDATES
    channels: Sequence[str] = ("dense",)
    fusion: str = "dbsf"
    weights: Mapping[str, float] | None = None
    first_stage: str = "exact"
    rebuild: bool = False
    label: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_whole("query_batch_size", self.query_batch_size, 1)
        if self.url is not None and self.cache_dir is not None:
            raise PagelensError("give cache_dir or url for the evaluation index, not both")
        if self.scopes is not None:
            scopes = tuple(dict.fromkeys(self.scopes))
            check_choices("scopes", scopes, SCOPES)
            object.__setattr__(self, "scopes", scopes)
        if self.breakdown_fields is not None:
            object.__setattr__(self, "breakdown_fields", tuple(self.breakdown_fields))
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "weights", dict(self.weights) if self.weights else None)
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())

    def search_options(self, text_encoder: Encoder | None) -> dict[str, Any]:
        """Return the keyword arguments of :func:`pagelens.search.search` this run uses."""
        return {
            "k": DEPTH,
            "candidates": self.candidates,
            "channels": tuple(self.channels),
            "fusion": self.fusion,
            "weights": self.weights,
            "text_encoder": text_encoder,
            "first_stage": self.first_stage,
        }


def _slug(text: str) -> str:
    """Name a set's cache folders (kept stable: it names users' cached indexes)."""
    return clean_name(text, keep="-_.")[:60]


def _expected_docs(eval_set: EvalSet) -> set[str]:
    corpus = eval_set.corpus
    return set(corpus.ids) if isinstance(corpus, ImageCorpus) else set(corpus.documents)


def _index_name(
    eval_set: EvalSet, encoder: Encoder, options: EvalOptions, text_encoder: Encoder | None
) -> str:
    key = index_key(eval_set, encoder, options.settings, options.render, options.text, text_encoder)
    return f"{_slug(eval_set.name)}-{key}"


@contextmanager
def _open_index(
    eval_set: EvalSet, encoder: Encoder, options: EvalOptions, text_encoder: Encoder | None
) -> Iterator[Index]:
    """Open the run's index: a server collection, a cached folder or a temporary one."""
    name = _index_name(eval_set, encoder, options, text_encoder)
    if options.url is not None:
        collection = f"pagelens-eval-{name}"
        with Index.open(url=options.url, api_key=options.api_key, collection=collection) as index:
            if options.rebuild:
                for record in index.documents():
                    index.delete_sha(record.doc_sha256)
            yield index
        return
    tmp = None
    if options.cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="pagelens-eval-")
        folder = Path(tmp) / name
    else:
        folder = Path(options.cache_dir) / name
        if options.rebuild and folder.exists():
            logger.info("rebuilding %s", folder)
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Index.open(folder) as index:
            yield index
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _done_docs(index: Index, eval_set: EvalSet) -> set[str]:
    """Return the set's documents the index holds already; refuse one holding others."""
    done = {r.doc_path for r in index.documents()}
    stray = done - _expected_docs(eval_set)
    if stray:
        raise PagelensError(
            f"index {index.location} holds {len(stray)} documents not in {eval_set.name}, "
            f"e.g. {sorted(stray)[:3]}; rebuild it"
        )
    return done


def _build(
    index: Index,
    eval_set: EvalSet,
    encoder: Encoder,
    options: EvalOptions,
    text_encoder: Encoder | None,
) -> tuple[bool, float | None]:
    """Index what is missing; returns (reused, build seconds)."""
    expected, done = _expected_docs(eval_set), _done_docs(index, eval_set)
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
            settings=options.settings,
            total=len(expected - done),
            progress=options.progress,
            text_encoder=text_encoder,
        )
    else:
        cache_dir = options.cache_dir
        report = index_paths(
            index,
            encoder,
            [corpus.root],
            settings=options.settings,
            render=options.render,
            text=options.text,
            text_encoder=text_encoder,
            # page texts outlive one index: a sweep or another model reads them back
            text_cache=TextCache(Path(cache_dir) / "text") if cache_dir else None,
            progress=options.progress,
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
    search_options: Mapping[str, Any],
    desc: str,
    progress: bool,
) -> tuple[dict[str, list[str]], float]:
    """Run every (queries, filter) job in batches; returns ranked corpus ids and seconds."""
    run: dict[str, list[str]] = {}
    seconds = 0.0
    total = sum(len(qs) for qs, _ in jobs)
    with progress_bar(total, desc, "query", enabled=progress, logger=logger) as bar:
        for queries, where in jobs:
            for start in range(0, len(queries), batch_size):
                batch = queries[start : start + batch_size]
                t0 = time.perf_counter()
                try:
                    hits: list[list[Hit]] = search(
                        index, encoder, [q.text for q in batch], filter=where, **search_options
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


def _scopes_for(eval_set: EvalSet, options: EvalOptions) -> list[str]:
    """Return the scopes to run: the options' or, by default, all the set allows."""
    if options.scopes is None:
        return ["corpus"] + (["document"] if eval_set.has_documents else [])
    if "document" in options.scopes and not eval_set.has_documents:
        raise PagelensError(
            f"{eval_set.name} queries name no document: the 'document' scope needs a "
            "set whose queries have a 'doc' field (e.g. a PDF set); use scopes=['corpus']"
        )
    return list(options.scopes)


def _fields_for(eval_set: EvalSet, options: EvalOptions) -> tuple[str, ...]:
    """Return the query fields to break metrics down by, checked against the set's."""
    fields = (
        tuple(options.breakdown_fields)
        if options.breakdown_fields is not None
        else categorical_fields(eval_set.queries)
    )
    present = {k for q in eval_set.queries for k in q.fields}
    absent = [f for f in fields if f not in present]
    if absent:
        raise PagelensError(
            f"breakdown fields {absent} are not query fields of {eval_set.name}; "
            f"fields: {sorted(present)}"
        )
    return fields


def _score_scope(
    index: Index,
    encoder: Encoder,
    eval_set: EvalSet,
    scope: str,
    fields: Sequence[str],
    options: EvalOptions,
    search_options: Mapping[str, Any],
) -> ScopeResult | None:
    """Search and score every query of one scope; ``None`` when it has none to rank."""
    jobs: list[tuple[list[Query], SearchFilter | None]]
    if scope == "corpus":
        jobs, skipped = [(list(eval_set.queries), None)], 0
    else:
        doc_jobs, skipped = _document_jobs(eval_set)
        jobs = list(doc_jobs)
    scored = [q for qs, _ in jobs for q in qs]
    if not scored:
        logger.warning("scope %s: no query to rank", scope)
        return None
    run, seconds = _search_all(
        index,
        encoder,
        eval_set,
        jobs,
        batch_size=options.query_batch_size,
        search_options=search_options,
        desc=f"search ({scope})",
        progress=options.progress,
    )
    scores = score_run({q.query_id: eval_set.qrels[q.query_id] for q in scored}, run)
    return ScopeResult(
        scope=scope,
        metrics=scores.metrics,
        per_query=scores.per_query,
        breakdowns={
            name: breakdown(scores.per_query, {q.query_id: q.fields.get(name) for q in scored})
            for name in fields
        },
        search_seconds=seconds,
        ms_per_query=1000.0 * seconds / len(scored),
        skipped_queries=skipped,
    )


def _recorded_settings(
    options: EvalOptions, settings: IndexSettings, eval_set: EvalSet
) -> dict[str, Any]:
    """Return the settings a result records: the index's, the search's, rendering, OCR."""
    out: dict[str, Any] = dataclasses.asdict(settings)
    out.update(
        k=DEPTH,
        query_batch_size=options.query_batch_size,
        candidates=options.candidates,
        channels=list(options.channels),
        fusion=options.fusion,
        weights=dict(options.weights) if options.weights else None,
        first_stage=options.first_stage,
    )
    pdf = isinstance(eval_set.corpus, PdfCorpus)
    if options.render is not None and pdf:
        out.update(render_dpi=options.render.dpi, render_max_pixels=options.render.max_pixels)
    if options.text is not None and settings.text and pdf:  # what the page texts hold
        out.update(ocr=options.text.ocr, ocr_lang=options.text.ocr_lang)
    return out


def _index_stats(index: Index, reused: bool, build_seconds: float | None) -> IndexStats:
    info = index.info()
    return IndexStats(
        pages=info.pages,
        documents=info.documents,
        vectors_per_page=info.vectors_per_page,
        bytes_per_page=info.bytes_per_page,
        reused=reused,
        build_seconds=build_seconds,
        location=info.location,
    )


def evaluate(
    eval_set: EvalSet,
    encoder: Encoder,
    options: EvalOptions | None = None,
    *,
    text_encoder: Encoder | None = None,
) -> EvalResult:
    """Index ``eval_set`` with ``encoder`` (or reuse the cached index), search, score.

    Args:
        eval_set: from :func:`pagelens.eval.datasets.load_eval_set`.
        encoder: any :class:`~pagelens.encoders.base.Encoder`.
        options: how to index, search and score; :class:`EvalOptions` ``()`` when ``None``.
        text_encoder: a second encoder of page text, stored as the ``text``
            channel (see :func:`pagelens.pipeline.job.index_paths`).

    """
    options = options or EvalOptions()
    wanted, fields = _scopes_for(eval_set, options), _fields_for(eval_set, options)
    search_options = options.search_options(text_encoder)
    with _open_index(eval_set, encoder, options, text_encoder) as index:
        reused, build_seconds = _build(index, eval_set, encoder, options, text_encoder)
        stats = _index_stats(index, reused, build_seconds)
        # what the index holds (a text encoder forces text)
        settings = index.manifest.settings if index.manifest is not None else options.settings
        # one untimed search first: one-time costs (lazy model or store set-up) are
        # not what a per-query latency should report
        search(index, encoder, [eval_set.queries[0].text], **search_options)
        scored = {
            scope: _score_scope(index, encoder, eval_set, scope, fields, options, search_options)
            for scope in wanted
        }
    result = EvalResult(
        label="",
        dataset=eval_set.describe(),
        encoder=dataclasses.asdict(encoder.spec),
        text_encoder=dataclasses.asdict(text_encoder.spec) if text_encoder else None,
        settings=_recorded_settings(options, settings, eval_set),
        index=stats,
        scopes={scope: s for scope, s in scored.items() if s is not None},
        query_fields={
            q.query_id: {name: q.fields.get(name) for name in fields} for q in eval_set.queries
        },
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        pagelens_version=package_version(),
    )
    return dataclasses.replace(result, label=options.label or run_label(result))


def _setting_defaults() -> dict[str, Any]:
    """Each recorded run setting at its default: the values a label leaves out."""
    from pagelens.pipeline.render import RenderSettings

    options, render, text = EvalOptions(), RenderSettings(), TextSettings()
    return {
        **dataclasses.asdict(IndexSettings()),
        "k": DEPTH,
        **{
            name: getattr(options, name)
            for name in ("query_batch_size", "candidates", "fusion", "weights", "first_stage")
        },
        "channels": list(options.channels),
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
    then every other recorded setting whose value is not its default in :class:`EvalOptions`
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
    options: EvalOptions | None = None,
    *,
    pool_factors: Sequence[int],
    text_encoder: Encoder | None = None,
) -> list[EvalResult]:
    """:func:`evaluate` once per pool factor (other settings from ``options.settings``).

    Each run is labelled by :func:`run_label` (the labels differ in ``pool_factor=<n>``).
    """
    options = options or EvalOptions()
    if not pool_factors:
        raise PagelensError("a sweep needs at least one pool factor")
    if options.label is not None:
        raise PagelensError("a sweep labels its runs itself; do not pass label")
    # Pool factors change only the pooling: encode each page once for the whole sweep.
    several = len(set(pool_factors)) > 1
    cached = _PageCache(encoder) if several else encoder
    if several and text_encoder is not None:
        text_encoder = _PageCache(text_encoder)
    out = []
    for pf in dict.fromkeys(pool_factors):
        logger.info("sweep: pool_factor=%s", pf)
        settings = dataclasses.replace(options.settings, pool_factor=pf)
        run_options = dataclasses.replace(options, settings=settings)
        out.append(evaluate(eval_set, cached, run_options, text_encoder=text_encoder))
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


# --------------------------------------------------------------------------- one call


@dataclass(frozen=True)
class EvalRunSpec:
    """Everything one ``pagelens eval run`` does: load, evaluate (or sweep), write.

    Attributes:
        dataset: a local set folder, a saved dataset or a Hub name
            (:func:`~pagelens.eval.datasets.load_eval_set`), read with ``format``,
            ``split``, ``language`` and ``max_queries``.
        model: the encoder's checkpoint; ``None``: :data:`~pagelens.encoders.DEFAULT_MODEL`.
        text_model: a second encoder, of page text (the ``text`` channel).
        device, batch_size: as in :func:`~pagelens.encoders.load_encoder`.
        pool_factors: one factor (one run), or several (a sweep).
        candidate_factor: Ward factor of the candidate vectors of a new index;
            ``None``: the :class:`~pagelens.index.IndexSettings` default.
        text: index page text and BM25 (PDF sets).
        dpi, ocr: rendering resolution and OCR mode (PDF sets).
        scope: ``"both"`` (every scope the set allows), ``"corpus"`` or ``"document"``.
        cache_dir: cached evaluation indexes; ``None``: :data:`DEFAULT_CACHE_DIR`,
            unless the index lives on a server (``url``).
        out, force: the folder for JSON, markdown and plots; overwrite earlier files.
        The rest: as in :class:`EvalOptions`.

    """

    dataset: str
    model: str | None = None
    text_model: str | None = None
    device: str = "auto"
    batch_size: int = 4
    format: str | None = None
    split: str = "test"
    language: str | None = None
    max_queries: int | None = None
    pool_factors: Sequence[int] = (3,)
    candidate_factor: int | None = None
    text: bool = False
    dpi: int = 150
    ocr: str = "auto"
    scope: str = "both"
    breakdown_fields: Sequence[str] | None = None
    candidates: int | None = DEFAULT_CANDIDATES
    channels: Sequence[str] = ("dense",)
    fusion: str = "dbsf"
    weights: Mapping[str, float] | None = None
    first_stage: str = "exact"
    cache_dir: str | Path | None = None
    url: str | None = None
    api_key: str | None = None
    rebuild: bool = False
    out: str | Path = "eval-results"
    force: bool = False
    progress: bool = True
    options: EvalOptions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.pool_factors:
            raise PagelensError("give at least one pool factor")
        object.__setattr__(self, "pool_factors", tuple(self.pool_factors))
        object.__setattr__(self, "options", self._options())

    def _options(self) -> EvalOptions:
        from pagelens.pipeline.render import RenderSettings

        if self.scope not in _SCOPE_CHOICES:
            raise PagelensError(
                f"scope must be one of {sorted(_SCOPE_CHOICES)}, got {self.scope!r}"
            )
        return EvalOptions(
            settings=IndexSettings(
                pool_factor=self.pool_factors[0],
                candidate_factor=self.candidate_factor or IndexSettings.candidate_factor,
                text=self.text,
            ),
            render=RenderSettings(dpi=self.dpi),
            text=TextSettings(ocr=self.ocr),  # type: ignore[arg-type]  # it checks the value
            cache_dir=None if self.url else self.cache_dir or DEFAULT_CACHE_DIR,
            url=self.url,
            api_key=self.api_key,
            scopes=_SCOPE_CHOICES[self.scope],
            breakdown_fields=self.breakdown_fields,
            candidates=self.candidates,
            channels=self.channels,
            fusion=self.fusion,
            weights=self.weights,
            first_stage=self.first_stage,
            rebuild=self.rebuild,
            progress=self.progress,
        )


DEFAULT_CACHE_DIR = Path("~/.cache/pagelens/eval")
"""Where :func:`run_eval` keeps evaluation indexes unless told otherwise."""

_SCOPE_CHOICES: dict[str, tuple[str, ...] | None] = {
    "both": None,
    "corpus": ("corpus",),
    "document": ("document",),
}


@dataclass(frozen=True)
class EvalRun:
    """What :func:`run_eval` did: its results, the files it wrote, a markdown table."""

    results: tuple[EvalResult, ...]  # one per pool factor
    written: tuple[Path, ...]
    markdown: str  # the run's report, or the sweep's table
    payload: Any  # the JSON written: one run's object, or a sweep's list of them


def run_eval(spec: EvalRunSpec) -> EvalRun:
    """Load the set and encoders, evaluate (a sweep for several pool factors), write.

    One pool factor writes :func:`~pagelens.eval.report.write_result`'s JSON and
    markdown; several write :func:`~pagelens.eval.report.write_sweep`'s files.
    """
    from pagelens.encoders import DEFAULT_MODEL, load_encoder
    from pagelens.eval.report import result_markdown, sweep_markdown, write_result, write_sweep

    eval_set = load_eval_set(
        spec.dataset,
        format=spec.format,
        split=spec.split,
        language=spec.language,
        max_queries=spec.max_queries,
    )
    encoder = load_encoder(
        spec.model or DEFAULT_MODEL, device=spec.device, batch_size=spec.batch_size
    )
    text_encoder = (
        load_encoder(spec.text_model, device=spec.device, batch_size=spec.batch_size)
        if spec.text_model
        else None
    )
    if len(spec.pool_factors) == 1:
        result = evaluate(eval_set, encoder, spec.options, text_encoder=text_encoder)
        written = write_result(result, spec.out, force=spec.force)
        payload = json.loads(written[0].read_text(encoding="utf-8"))
        return EvalRun((result,), tuple(written), result_markdown(result), payload)
    results = sweep(
        eval_set,
        encoder,
        spec.options,
        pool_factors=spec.pool_factors,
        text_encoder=text_encoder,
    )
    written = write_sweep(results, spec.out, force=spec.force)
    payload = [json.loads(p.read_text(encoding="utf-8")) for p in written if p.suffix == ".json"]
    return EvalRun(tuple(results), tuple(written), sweep_markdown(results), payload)
