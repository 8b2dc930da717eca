"""Evaluation sets: ViDoRe v1/v2/v3 (Hugging Face ``datasets``) and local PDF sets.

Every loader returns an :class:`EvalSet`: queries, qrels and a corpus to index.

- ``vidore-v1`` (QA format, e.g. ``vidore/docvqa_test_subsampled``): one row per
  (query, page) with columns ``query``, ``image``, ``image_filename``. Handled as
  vidore-benchmark's ``ViDoReEvaluatorQA`` does, so numbers are comparable with the
  v1 leaderboard: queries are deduplicated (first occurrence kept, ``None`` dropped)
  and the query text is its id; a query's one relevant page is the
  ``image_filename`` of the *last* row carrying it; the corpus is one page per
  distinct ``image_filename`` (its first row's image).
- ``vidore-v2`` (BEIR, e.g. ``vidore/esg_reports_v2``): configs ``corpus``
  (``corpus-id``, ``image``), ``queries`` (``query-id``, ``query``), ``qrels``
  (``query-id``, ``corpus-id``, ``score``).
- ``vidore-v3`` (BEIR, e.g. ``vidore/vidore_v3_hr``): the same with underscore ids
  (``corpus_id``, ``query_id``) and extra columns (``markdown``, ``language``,
  ``doc_id``...).
- ``pdf``: a folder with ``pdfs/``, ``queries.jsonl`` (``query-id``, ``query``,
  optional ``doc`` and any other fields) and ``qrels.tsv`` (``query-id``,
  ``corpus-id``, ``score``), corpus ids being ``<pdf path under pdfs/>#<page from 1>``.

A ViDoRe set is read from the Hub by name or from a local ``save_to_disk`` copy: a
saved ``Dataset`` or ``DatasetDict`` of splits (v1), a saved ``DatasetDict`` with keys
``corpus``/``queries``/``qrels``, or a folder holding one saved dataset (or
``DatasetDict`` of splits) per config (v2/v3).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pagelens.errors import InputError, MissingExtraError, PagelensError
from pagelens.pipeline.discover import file_sha256
from pagelens.types import Page

logger = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("vidore-v1", "vidore-v2", "vidore-v3", "pdf")
BEIR_CONFIGS: tuple[str, ...] = ("corpus", "queries", "qrels")

_V1_COLUMNS = ("query", "image", "image_filename")
_BEIR_COLUMNS = {
    # format -> config -> required columns
    "vidore-v2": {
        "corpus": ("corpus-id", "image"),
        "queries": ("query-id", "query"),
        "qrels": ("query-id", "corpus-id", "score"),
    },
    "vidore-v3": {
        "corpus": ("corpus_id", "image"),
        "queries": ("query_id", "query"),
        "qrels": ("query_id", "corpus_id", "score"),
    },
}
_DOC_COLUMNS = {"vidore-v2": "doc-id", "vidore-v3": "doc_id"}
# Columns never copied into Query.fields (the text itself, ids, heavy payloads).
_SKIP_FIELDS = {"query", "query-id", "query_id", "image", "image_filename"}
_PDF_FILES = ("queries.jsonl", "qrels.tsv", "pdfs")


@dataclass(frozen=True)
class Query:
    """One evaluation query.

    ``doc`` names the document the query is about, when the set says so (it enables
    the within-document scope); ``fields`` holds the set's other query columns
    (``language``, ``evidence_sources``...) for breakdowns.
    """

    query_id: str
    text: str
    doc: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageCorpus:
    """Page images held in a ``datasets.Dataset``: one indexed page per corpus id.

    Each page is indexed as its own one-page document whose path is the corpus id,
    so a hit's ``doc_path`` is the corpus id.
    """

    dataset: Any  # datasets.Dataset holding the images
    ids: tuple[str, ...]  # corpus id of each page, in index order
    rows: tuple[int, ...]  # the dataset row of each id
    image_column: str = "image"
    docs: Mapping[str, str] = field(default_factory=dict)  # corpus id -> document id

    def __len__(self) -> int:
        return len(self.ids)

    def iter_pages(self, exclude: Collection[str] = ()) -> Iterator[Page]:
        """Pages to index, images decoded one at a time (RGB); ``exclude``: ids to skip."""
        keep = [(c, r) for c, r in zip(self.ids, self.rows, strict=True) if c not in exclude]
        if not keep:
            return
        ids = [c for c, _ in keep]
        images = self.dataset.select_columns([self.image_column]).select([r for _, r in keep])
        for corpus_id, row in zip(ids, images, strict=True):
            image = row[self.image_column]
            if image is None:
                raise InputError(corpus_id, f"column {self.image_column!r} holds no image")
            yield Page(
                doc_sha256=hashlib.sha256(corpus_id.encode()).hexdigest(),
                doc_path=corpus_id,
                page_number=1,
                page_count=1,
                image=image.convert("RGB"),
            )

    def hit_id(self, doc_path: str, page_number: int) -> str:
        """Return the corpus id a search hit stands for."""
        return doc_path


@dataclass(frozen=True)
class PdfCorpus:
    """A folder of PDFs indexed with that folder as root."""

    root: Path
    documents: tuple[str, ...]  # PDF paths relative to root, "/"-separated, sorted

    def __len__(self) -> int:
        return len(self.documents)

    def hit_id(self, doc_path: str, page_number: int) -> str:
        """Return the corpus id a search hit stands for: ``<doc path>#<page number>``."""
        return f"{doc_path}#{page_number}"


@dataclass(frozen=True)
class EvalSet:
    """Queries, their relevance judgments and the corpus they are judged against."""

    name: str
    format: str  # one of FORMATS
    source: str  # hub name or folder path, as given
    queries: tuple[Query, ...]
    qrels: Mapping[str, Mapping[str, int]]  # query id -> corpus id -> grade
    corpus: ImageCorpus | PdfCorpus
    corpus_fingerprint: str  # identifies what gets indexed (index cache key)
    dropped_queries: int = 0  # queries without any positive judgment, left out
    # how load_eval_set chose the queries, where given: split, language, max_queries
    selection: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_documents(self) -> bool:
        """Whether queries name their document (the within-document scope applies)."""
        return any(q.doc is not None for q in self.queries)

    def describe(self) -> dict[str, Any]:
        """Summarise the set for reports (JSON-able)."""
        return {
            "name": self.name,
            "format": self.format,
            "source": self.source,
            "queries": len(self.queries),
            "dropped_queries": self.dropped_queries,
            "corpus_kind": "images" if isinstance(self.corpus, ImageCorpus) else "pdfs",
            "corpus_items": len(self.corpus),  # pages (images) or PDF files
            "judgments": sum(len(r) for r in self.qrels.values()),
            "corpus_fingerprint": self.corpus_fingerprint,
            **({"selection": dict(self.selection)} if self.selection else {}),
        }


def categorical_fields(
    queries: Sequence[Query], *, max_values: int = 20, min_values: int = 2
) -> tuple[str, ...]:
    """Query fields worth a breakdown by default: categories, not free text.

    A field qualifies when every value is a string or a list of strings (``None``
    allowed), and its distinct values number at least ``min_values``, at most
    ``max_values`` and at most half the number of queries, so that each value covers
    two queries or more on average. A free-text field (an ``answer`` column) has about
    one value per query and is left out even on a 10-query subset, where its values
    are few; ask for it by name (``breakdown_fields``, ``--breakdown``) if wanted.
    """
    values: dict[str, set[str]] = {}
    bad: set[str] = set()
    for q in queries:
        for name, value in q.fields.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            if not all(isinstance(v, str) or v is None for v in items):
                bad.add(name)
                continue
            values.setdefault(name, set()).update(str(v) for v in items if v is not None)
    most = min(max_values, len(queries) // 2)
    return tuple(
        sorted(
            name
            for name, seen in values.items()
            if name not in bad and min_values <= len(seen) <= most
        )
    )


# --------------------------------------------------------------------------- loading


def load_eval_set(
    source: str | Path,
    *,
    format: str | None = None,
    split: str = "test",
    language: str | None = None,
    max_queries: int | None = None,
    revision: str | None = None,
) -> EvalSet:
    """Load an evaluation set from a local folder or the Hugging Face Hub.

    Args:
        source: a folder (a PDF set or a ``save_to_disk`` copy) or a Hub dataset name.
        format: one of :data:`FORMATS`; detected from the files or configs when ``None``.
        split: the split to read from ``DatasetDict`` copies and the Hub.
        language: keep only queries whose ``language`` column equals this value.
        max_queries: keep the first N queries (after deduplication and filtering).
        revision: Hub revision (branch, tag or commit).

    """
    if format is not None and format not in FORMATS:
        raise PagelensError(f"unknown dataset format {format!r}; choose one of {list(FORMATS)}")
    if max_queries is not None and max_queries < 1:
        raise PagelensError(f"max_queries must be at least 1, got {max_queries}")
    path = Path(source).expanduser()
    if path.is_dir():
        loaded = _load_local(path, format=format, split=split, language=language, limit=max_queries)
    elif path.exists():
        raise InputError(str(source), "is a file; give a dataset folder or a Hub dataset name")
    elif str(source).startswith((".", "/", "~")) or "\\" in str(source):
        raise InputError(str(source), "no such folder")
    else:
        loaded = _load_hub(
            str(source),
            format=format,
            split=split,
            language=language,
            limit=max_queries,
            revision=revision,
        )
    selection = {
        # a PDF set has no splits
        "split": None if loaded.format == "pdf" else split,
        "language": language,
        "max_queries": max_queries,
    }
    return dataclasses.replace(
        loaded, selection={k: v for k, v in selection.items() if v is not None}
    )


def _load_local(
    path: Path, *, format: str | None, split: str, language: str | None, limit: int | None
) -> EvalSet:
    source = str(path)
    if format == "pdf" or (format is None and all((path / n).exists() for n in _PDF_FILES)):
        return load_pdf_set(path, language=language, max_queries=limit)
    parts = _read_saved(path, split=split)
    if isinstance(parts, dict):
        return _from_beir(
            parts, name=path.name, source=source, format=format, language=language, limit=limit
        )
    if format not in (None, "vidore-v1"):
        raise InputError(
            source,
            f"holds a single dataset (QA layout) but format {format!r} needs configs "
            f"{list(BEIR_CONFIGS)}",
        )
    return _from_qa(parts, name=path.name, source=source, language=language, limit=limit)


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError("datasets", "eval") from exc
    return datasets


def _is_saved_dataset(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _is_saved_dict(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file()


def _pick_split(dd: Any, split: str, where: str) -> Any:
    if split not in dd:
        raise InputError(where, f"has no split {split!r}; splits: {sorted(dd)}")
    return dd[split]


def _read_saved(path: Path, *, split: str) -> Any:
    """Read a saved copy: one ``Dataset`` (QA) or ``{config: Dataset}`` (BEIR)."""
    ds = _datasets()
    if _is_saved_dataset(path):
        return ds.load_from_disk(str(path))
    if _is_saved_dict(path):
        dd = ds.load_from_disk(str(path))
        if set(BEIR_CONFIGS) <= set(dd):
            return {name: dd[name] for name in BEIR_CONFIGS}
        if any(name in dd for name in BEIR_CONFIGS):
            missing = [name for name in BEIR_CONFIGS if name not in dd]
            raise InputError(str(path), f"missing configs {missing}; found {sorted(dd)}")
        return _pick_split(dd, split, str(path))
    subdirs = {name: path / name for name in BEIR_CONFIGS}
    present = [n for n, p in subdirs.items() if _is_saved_dataset(p) or _is_saved_dict(p)]
    if present:
        missing = [n for n in BEIR_CONFIGS if n not in present]
        if missing:
            raise InputError(str(path), f"missing configs {missing}; found {present}")
        out = {}
        for name, sub in subdirs.items():
            loaded = ds.load_from_disk(str(sub))
            out[name] = _pick_split(loaded, split, str(sub)) if _is_saved_dict(sub) else loaded
        return out
    raise InputError(
        str(path),
        "is not an evaluation set: expected a PDF set (pdfs/, queries.jsonl, qrels.tsv), "
        "a save_to_disk Dataset or DatasetDict, or one saved dataset per config "
        f"({', '.join(BEIR_CONFIGS)})",
    )


def _hub_offline(datasets: Any) -> bool:
    return bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


def _load_hub(
    name: str,
    *,
    format: str | None,
    split: str,
    language: str | None,
    limit: int | None,
    revision: str | None,
) -> EvalSet:
    ds = _datasets()
    offline = _hub_offline(ds)
    hint = (
        "HF_HUB_OFFLINE is set and no cached copy was found; on a machine with access run "
        "datasets.load_dataset(...).save_to_disk(folder) per config and pass the folder"
        if offline
        else "check the name, your network and your Hugging Face token"
    )
    try:
        if format is None:
            configs = ds.get_dataset_config_names(name, revision=revision)
            beir = set(BEIR_CONFIGS) <= set(configs)
        else:
            beir = format != "vidore-v1"
        if beir:
            parts = {
                cfg: ds.load_dataset(name, cfg, split=split, revision=revision)
                for cfg in BEIR_CONFIGS
            }
        else:
            qa = ds.load_dataset(name, split=split, revision=revision)
    except (OSError, ValueError) as exc:
        # ConnectionError, FileNotFoundError and the hub's offline errors are OSErrors;
        # an unknown split or config is a ValueError.
        raise InputError(name, f"cannot load from the Hugging Face Hub ({exc}); {hint}") from exc
    if beir:
        return _from_beir(
            parts, name=name, source=name, format=format, language=language, limit=limit
        )
    return _from_qa(qa, name=name, source=name, language=language, limit=limit)


# --------------------------------------------------------------------------- formats


def _check_columns(ds: Any, required: Sequence[str], where: str, expected: str) -> None:
    missing = [c for c in required if c not in ds.column_names]
    if missing:
        raise InputError(
            where,
            f"missing columns {missing} for a {expected} set; found {sorted(ds.column_names)}",
        )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _light_columns(ds: Any, skip: set[str]) -> list[str]:
    """Columns that are plain values or lists of them (no images or other payloads)."""
    datasets = _datasets()
    out = []
    for name, feature in ds.features.items():
        if name in skip:
            continue
        inner = feature
        while isinstance(inner, (datasets.Sequence, datasets.LargeList, datasets.List)):
            inner = inner.feature
        if isinstance(inner, list):  # [Value(...)] list feature
            inner = inner[0] if inner else None
        if isinstance(inner, (datasets.Value, datasets.ClassLabel)):
            out.append(name)
    return out


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _limit(queries: list[Query], limit: int | None) -> list[Query]:
    return queries if limit is None else queries[:limit]


def _filter_language(rows: list[dict[str, Any]], language: str | None, where: str) -> list:
    if language is None:
        return rows
    if rows and "language" not in rows[0]:
        raise InputError(
            where, f"language={language!r} given but the queries have no 'language' column"
        )
    kept = [r for r in rows if r.get("language") == language]
    if not kept:
        seen = sorted({str(r.get("language")) for r in rows})
        raise InputError(where, f"no query has language {language!r}; languages: {seen}")
    return kept


def _from_qa(
    ds: Any, *, name: str, source: str, language: str | None, limit: int | None
) -> EvalSet:
    _check_columns(ds, _V1_COLUMNS, source, "ViDoRe v1 (QA)")
    field_cols = _light_columns(ds, _SKIP_FIELDS)
    texts = ds["query"]
    filenames = [str(f) for f in ds["image_filename"]]
    extra = ds.select_columns(field_cols).to_list() if field_cols else [{} for _ in texts]

    # Corpus: one page per distinct filename, its first row.
    first_row: dict[str, int] = {}
    for row, filename in enumerate(filenames):
        first_row.setdefault(filename, row)
    # Qrels: the last row of a query names its page (vidore-benchmark's mapping).
    last_file: dict[str, str] = {}
    for text, filename in zip(texts, filenames, strict=True):
        if text is not None:
            last_file[text] = filename
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text, fields in zip(texts, extra, strict=True):
        if text is None or text in seen:
            continue
        seen.add(text)
        rows.append({"query": text, **fields})
    rows = _filter_language(rows, language, source)
    queries = [
        Query(
            query_id=r["query"],
            text=r["query"],
            fields={k: _jsonable(v) for k, v in r.items() if k != "query"},
        )
        for r in rows
    ]
    queries = _limit(queries, limit)
    if not queries:
        raise InputError(source, "has no queries (every 'query' is empty)")
    qrels = {q.query_id: {last_file[q.query_id]: 1} for q in queries}
    ids = tuple(first_row)
    corpus = ImageCorpus(dataset=ds, ids=ids, rows=tuple(first_row[i] for i in ids))
    return EvalSet(
        name=name,
        format="vidore-v1",
        source=source,
        queries=tuple(queries),
        qrels=qrels,
        corpus=corpus,
        corpus_fingerprint=_fingerprint(
            "vidore-v1", getattr(ds, "_fingerprint", None), len(ds), ids
        ),
    )


def _beir_format(queries: Any, where: str) -> str:
    cols = set(queries.column_names)
    if "query-id" in cols:
        return "vidore-v2"
    if "query_id" in cols:
        return "vidore-v3"
    raise InputError(
        where,
        "config 'queries' has neither 'query-id' (ViDoRe v2) nor 'query_id' (ViDoRe v3); "
        f"missing columns ['query-id' or 'query_id']; found {sorted(cols)}",
    )


def _beir_columns(parts: Mapping[str, Any], source: str, format: str | None) -> str:
    """Return the set's BEIR format, its configs checked for that format's columns."""
    detected = _beir_format(parts["queries"], source)  # checks the id columns either way
    fmt = format or detected
    if fmt not in _BEIR_COLUMNS:
        raise InputError(source, f"holds BEIR configs {list(BEIR_CONFIGS)}, not a {fmt} set")
    for config, required in _BEIR_COLUMNS[fmt].items():
        _check_columns(parts[config], required, f"{source} [{config}]", fmt)
    return fmt


def _beir_corpus(corpus_ds: Any, fmt: str, source: str) -> ImageCorpus:
    cid = _BEIR_COLUMNS[fmt]["qrels"][1]
    ids = tuple(str(c) for c in corpus_ds[cid])
    dupes = [c for c, n in Counter(ids).items() if n > 1]
    if dupes:
        raise InputError(f"{source} [corpus]", f"duplicate corpus ids, e.g. {dupes[:3]}")
    doc_col = _DOC_COLUMNS[fmt]
    docs = (
        {c: str(d) for c, d in zip(ids, corpus_ds[doc_col], strict=True)}
        if doc_col in corpus_ds.column_names
        else {}
    )
    return ImageCorpus(dataset=corpus_ds, ids=ids, rows=tuple(range(len(ids))), docs=docs)


def _add_judgment(qrels: dict[str, dict[str, int]], qid: Any, cid: Any, score: Any) -> None:
    qrels.setdefault(str(qid), {})[str(cid)] = int(score)


def _judged_rows(
    rows: list[dict[str, Any]], qrels: Mapping[str, Mapping[str, int]], id_column: str
) -> tuple[list[dict[str, Any]], int]:
    """Return the rows whose query has a positive judgment, and how many were dropped."""
    kept = [r for r in rows if any(g > 0 for g in qrels.get(str(r[id_column]), {}).values())]
    return kept, len(rows) - len(kept)


def _kept_queries(
    queries: list[Query], dropped: int, limit: int | None, where: object
) -> list[Query]:
    """Log the dropped queries, keep the first ``limit``, refuse a set left with none."""
    if dropped:
        logger.warning("%s: %s queries have no positive judgment and are left out", where, dropped)
    queries = _limit(queries, limit)
    if not queries:
        raise InputError(str(where), "has no query with a positive judgment")
    return queries


def _beir_queries(
    parts: Mapping[str, Any], fmt: str, source: str, language: str | None, limit: int | None
) -> tuple[list[Query], dict[str, dict[str, int]], int]:
    """Return the judged queries (first ``limit``), every judgment, the dropped count."""
    qid, cid = _BEIR_COLUMNS[fmt]["qrels"][:2]
    qds = parts["queries"]
    field_cols = _light_columns(qds, _SKIP_FIELDS)
    rows = qds.select_columns([qid, "query", *field_cols]).to_list()
    rows = _filter_language(rows, language, f"{source} [queries]")
    seen: set[str] = set()
    for r in rows:
        if str(r[qid]) in seen:
            raise InputError(f"{source} [queries]", f"duplicate query id {str(r[qid])!r}")
        seen.add(str(r[qid]))
    qrels: dict[str, dict[str, int]] = {}
    for rel in parts["qrels"].select_columns([qid, cid, "score"]).to_list():
        _add_judgment(qrels, rel[qid], rel[cid], rel["score"])
    judged, dropped = _judged_rows(rows, qrels, qid)
    queries = [
        Query(
            query_id=str(r[qid]),
            text=str(r["query"]),
            fields={k: _jsonable(v) for k, v in r.items() if k not in (qid, "query")},
        )
        for r in judged
    ]
    return _kept_queries(queries, dropped, limit, source), qrels, dropped


def _from_beir(
    parts: Mapping[str, Any],
    *,
    name: str,
    source: str,
    format: str | None,
    language: str | None,
    limit: int | None,
) -> EvalSet:
    fmt = _beir_columns(parts, source, format)
    corpus = _beir_corpus(parts["corpus"], fmt, source)
    queries, qrels, dropped = _beir_queries(parts, fmt, source, language, limit)
    kept = [q.query_id for q in queries]
    id_set = set(corpus.ids)
    unknown = {c for q in kept for c in qrels[q] if c not in id_set}
    if unknown:
        logger.warning(
            "%s: %s judged corpus ids are not in the corpus, e.g. %s",
            source,
            len(unknown),
            sorted(unknown)[:3],
        )
    corpus_ds = parts["corpus"]
    return EvalSet(
        name=name,
        format=fmt,
        source=source,
        queries=tuple(queries),
        qrels={q: qrels[q] for q in kept},
        corpus=corpus,
        corpus_fingerprint=_fingerprint(
            fmt, getattr(corpus_ds, "_fingerprint", None), len(corpus_ds), corpus.ids
        ),
        dropped_queries=dropped,
    )


def _pdf_documents(pdf_root: Path) -> tuple[str, ...]:
    documents = tuple(
        sorted(
            p.relative_to(pdf_root).as_posix()
            for p in pdf_root.rglob("*")
            if p.is_file() and p.suffix.lower() == ".pdf"
        )
    )
    if not documents:
        raise InputError(str(pdf_root), "holds no PDF")
    return documents


def _read_query_lines(path: Path) -> list[dict[str, Any]]:
    """Read ``queries.jsonl``: one JSON object per line, each with an id and a text."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_no}", f"bad JSON: {exc}") from exc
            lacking = [c for c in ("query-id", "query") if c not in row]
            if lacking:
                raise InputError(
                    f"{path}:{line_no}", f"missing columns {lacking}; found {sorted(row)}"
                )
            rows.append(row)
    return rows


def _read_qrels_tsv(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        columns = reader.fieldnames or []
        lacking = [c for c in ("query-id", "corpus-id", "score") if c not in columns]
        if lacking:
            raise InputError(str(path), f"missing columns {lacking}; found {columns}")
        for rel in reader:
            _add_judgment(qrels, rel["query-id"], rel["corpus-id"], rel["score"])
    return qrels


def _pdf_query(row: Mapping[str, Any], known: Collection[str], root: Path) -> Query:
    """Make a PDF set's query; warn when the document it names is not in ``pdfs/``."""
    query_id, doc = str(row["query-id"]), row.get("doc")
    if doc is not None and doc not in known:
        logger.warning("%s: query %s is about %r, which is not in pdfs/", root, query_id, doc)
    return Query(
        query_id=query_id,
        text=str(row["query"]),
        doc=None if doc is None else str(doc),
        fields={k: v for k, v in row.items() if k not in ("query-id", "query")},
    )


def load_pdf_set(
    folder: str | Path, *, language: str | None = None, max_queries: int | None = None
) -> EvalSet:
    """Load a local PDF set (``pdfs/``, ``queries.jsonl``, ``qrels.tsv``).

    Each query's ``doc`` (when present) is the PDF it is about, relative to ``pdfs/``.
    """
    root = Path(folder).expanduser()
    missing = [n for n in _PDF_FILES if not (root / n).exists()]
    if missing:
        raise InputError(str(root), f"missing {missing} for a PDF set")
    pdf_root = root / "pdfs"
    documents = _pdf_documents(pdf_root)
    rows = _read_query_lines(root / "queries.jsonl")
    rows = _filter_language(rows, language, str(root / "queries.jsonl"))
    qrels = _read_qrels_tsv(root / "qrels.tsv")
    judged, dropped = _judged_rows(rows, qrels, "query-id")
    known = set(documents)
    queries = [_pdf_query(r, known, root) for r in judged]
    queries = _kept_queries(queries, dropped, max_queries, root)
    sizes = [(d, (pdf_root / d).stat().st_size, file_sha256(pdf_root / d)) for d in documents]
    return EvalSet(
        name=root.name,
        format="pdf",
        source=str(root),
        queries=tuple(queries),
        qrels={q.query_id: qrels[q.query_id] for q in queries},
        corpus=PdfCorpus(root=pdf_root, documents=documents),
        corpus_fingerprint=_fingerprint("pdf", sizes),
        dropped_queries=dropped,
    )
