"""Evaluation results: the record of one run, JSON and markdown, sweeps, plots, comparisons.

A run's :class:`EvalResult` keeps every query's metric values so that two runs can
be compared query by query later (:func:`compare`), without re-running anything.

Significance: :func:`compare` uses a two-sided paired randomisation (sign-flip
permutation) test on the per-query differences. Per-query IR metrics are bounded,
skewed and heavily tied (recall@1 and MRR take few values), so the normality the
paired t-test leans on is doubtful on the few hundred queries of a ViDoRe set; the
randomisation test assumes only that, under the null hypothesis, the two systems'
values for a query are exchangeable. Smucker, Allan & Carterette (CIKM 2007) compared
the tests on TREC runs and recommend it. The paired t-test p-value is kept in the
JSON beside it for reference. No correction is made for testing many metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pagelens.errors import InputError, MissingExtraError, PagelensError
from pagelens.eval.metrics import METRIC_KEYS, Group

logger = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = ("corpus", "document")
"""``corpus``: rank every page; ``document``: rank only the pages of the query's document."""

BREAKDOWN_KEYS: tuple[str, ...] = ("ndcg_at_5", "ndcg_at_10", "recall_at_5", "recall_at_10")
SWEEP_KEYS: tuple[str, ...] = ("ndcg_at_5", "ndcg_at_10", "recall_at_10", "mrr_at_10")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ScopeResult:
    """Metrics of one scope of one run."""

    scope: str  # one of SCOPES
    metrics: dict[str, float]  # key -> mean over queries
    per_query: dict[str, dict[str, float]]  # query id -> key -> value
    breakdowns: dict[str, dict[str, Group]] = field(default_factory=dict)  # field -> label
    search_seconds: float = 0.0  # wall time of every search of this scope
    ms_per_query: float = 0.0  # search_seconds / queries, in milliseconds
    skipped_queries: int = 0  # queries this scope could not rank (no document named)

    @property
    def n_queries(self) -> int:
        return len(self.per_query)


@dataclass(frozen=True)
class IndexStats:
    """What the index held and what building it cost."""

    pages: int
    documents: int
    vectors_per_page: float  # mean
    bytes_per_page: float  # mean
    reused: bool  # taken from the cache, not built by this run
    build_seconds: float | None  # None when reused
    location: str  # folder or server collection


@dataclass(frozen=True)
class EvalResult:
    """One evaluation run: dataset, encoder, settings, index, metrics per scope."""

    label: str  # short name in tables (e.g. "pool_factor=3")
    dataset: dict[str, Any]  # EvalSet.describe()
    encoder: dict[str, Any]  # EncoderSpec as a dict
    settings: dict[str, Any]  # IndexSettings as a dict, plus k and query batch size
    index: IndexStats
    scopes: dict[str, ScopeResult]
    query_fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # qid -> field values
    created_at: str = ""
    pagelens_version: str = ""
    schema_version: int = SCHEMA_VERSION
    text_encoder: dict[str, Any] | None = None  # the text channel's EncoderSpec, if any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_json(self, path: str | Path) -> Path:
        """Write the result as JSON (``NaN`` for undefined means)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    def to_markdown(self) -> str:
        return result_markdown(self)


def check_choices(kind: str, values: Sequence[str], choices: Sequence[str]) -> None:
    """Raise a :class:`~pagelens.errors.PagelensError` naming values not among ``choices``."""
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise PagelensError(f"unknown {kind} {unknown}; choose from {list(choices)}")


def result_from_dict(data: Mapping[str, Any], *, where: str = "<dict>") -> EvalResult:
    """Validate a dict (as written by :meth:`EvalResult.save_json`) into a result."""
    from pydantic import TypeAdapter, ValidationError

    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(where, f"schema_version {version!r}; this pagelens reads {SCHEMA_VERSION}")
    try:
        return TypeAdapter(EvalResult).validate_python(dict(data))
    except ValidationError as exc:
        raise InputError(where, f"not a pagelens evaluation result: {exc}") from exc


def load_result(path: str | Path) -> EvalResult:
    """Read a result written by :meth:`EvalResult.save_json`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(str(path), "no such file") from exc
    except json.JSONDecodeError as exc:
        raise InputError(str(path), f"bad JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(str(path), "not a pagelens evaluation result (not a JSON object)")
    return result_from_dict(data, where=str(path))


# --------------------------------------------------------------------------- markdown


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _kib(n_bytes: float) -> str:
    return f"{n_bytes / 1024:.1f}"


def result_markdown(result: EvalResult, *, keys: Sequence[str] = METRIC_KEYS) -> str:
    """Render a markdown report: metrics per scope, index cost, timings, breakdowns."""
    ds, enc, idx = result.dataset, result.encoder, result.index
    model = str(enc.get("model_id", "?"))
    if result.text_encoder:
        model += f" + text {result.text_encoder.get('model_id', '?')}"
    out = [
        f"## {ds.get('name', '?')} · {model} · {result.label}",
        "",
        _table(
            ["scope", "queries", *keys, "ms/query"],
            [
                [s.scope, str(s.n_queries), *(_fmt(s.metrics.get(k)) for k in keys)]
                + [_fmt(s.ms_per_query, 1)]
                for s in result.scopes.values()
            ],
        ),
        "",
        (
            f"Index: {idx.pages} pages, {idx.documents} documents, "
            f"{idx.vectors_per_page:.1f} vectors/page, {_kib(idx.bytes_per_page)} KiB/page; "
            + ("reused from cache." if idx.reused else f"built in {_fmt(idx.build_seconds, 1)} s.")
        ),
        "Settings: " + ", ".join(f"{k}={v}" for k, v in sorted(result.settings.items())),
    ]
    skipped = {s.scope: s.skipped_queries for s in result.scopes.values() if s.skipped_queries}
    if skipped:
        out.append(f"Queries a scope could not rank: {skipped}.")
    for scope in result.scopes.values():
        for name, groups in scope.breakdowns.items():
            out += [
                "",
                f"### {scope.scope}: by {name}",
                "",
                _table(
                    [name, "n", *BREAKDOWN_KEYS],
                    [
                        [label, str(g.n), *(_fmt(g.metrics.get(k)) for k in BREAKDOWN_KEYS)]
                        for label, g in groups.items()
                    ],
                ),
            ]
    return "\n".join(out) + "\n"


_STEM_MAX = 120  # characters; longer stems are cut and end in a hash of the whole label


def clean_name(text: str, *, keep: str) -> str:
    """Make ``text`` safe in a file or folder name: letters, digits and ``keep`` stay.

    Every other character (spaces, slashes...) becomes ``_``; the length is unchanged.
    """
    return "".join(ch if ch.isalnum() or ch in keep else "_" for ch in text)


def file_stem(label: str) -> str:
    """Turn a run label into a file name stem: letters, digits and ``-_.,=+`` kept.

    Spaces and other characters become ``_``; a stem over 120 characters is cut and
    ends in a hash of the whole label, so that long labels stay distinct.
    """
    stem = clean_name(label, keep="-_.,=+").strip("_.")
    if len(stem) > _STEM_MAX:
        digest = hashlib.sha256(label.encode()).hexdigest()[:10]
        stem = f"{stem[: _STEM_MAX - 11]}-{digest}"
    return stem or "result"


def result_stem(result: EvalResult) -> str:
    """Name a result's files after its label (:func:`pagelens.eval.run.run_label`)."""
    return file_stem(result.label)


def _refuse_overwrite(paths: Sequence[Path], force: bool) -> None:
    if force:
        return
    for path in paths:
        if path.exists():
            raise PagelensError(
                f"{path} exists (written by an earlier run with the same settings); "
                "pass --force (force=True) to overwrite it, or write to another --out folder"
            )


def write_result(
    result: EvalResult, out_dir: str | Path, *, stem: str | None = None, force: bool = False
) -> list[Path]:
    """Write ``<stem>.json`` (everything, per-query values included) and ``<stem>.md``.

    ``stem`` defaults to :func:`result_stem`. Existing files are not overwritten
    unless ``force`` is true: a :class:`~pagelens.errors.PagelensError` names the first.
    """
    out_dir = Path(out_dir)
    stem = stem or result_stem(result)
    json_path, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    _refuse_overwrite([json_path, md], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    md.write_text(result_markdown(result), encoding="utf-8")
    return [result.save_json(json_path), md]


# --------------------------------------------------------------------------- sweeps


def sweep_markdown(results: Sequence[EvalResult], *, keys: Sequence[str] = SWEEP_KEYS) -> str:
    """One row per (setting, scope): quality beside vectors, bytes and latency per page."""
    rows = []
    for r in results:
        for s in r.scopes.values():
            rows.append(
                [
                    r.label,
                    s.scope,
                    f"{r.index.vectors_per_page:.1f}",
                    _kib(r.index.bytes_per_page),
                    _fmt(s.ms_per_query, 1),
                    *(_fmt(s.metrics.get(k)) for k in keys),
                ]
            )
    header = ["setting", "scope", "vectors/page", "KiB/page", "ms/query", *keys]
    return _table(header, rows) + "\n"


def _figure() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError("matplotlib", "eval") from exc
    return Figure(figsize=(6.0, 4.0), layout="constrained")


PLOT_NAMES: tuple[str, ...] = ("quality_vs_bytes.png", "quality_vs_latency.png")


def plot_sweep(
    results: Sequence[EvalResult],
    out_dir: str | Path,
    *,
    metric: str = "ndcg_at_5",
    prefix: str = "",
) -> list[Path]:
    """Write ``<prefix>quality_vs_bytes.png`` and ``<prefix>quality_vs_latency.png``.

    One line per scope. Uses matplotlib's object API (no pyplot, no global backend
    change).
    """
    if metric not in METRIC_KEYS:
        raise PagelensError(f"unknown metric {metric!r}; choose one of {list(METRIC_KEYS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scopes = [s for s in SCOPES if any(s in r.scopes for r in results)]
    shared = _shared_words(results)
    # each point is tagged with what sets it apart (e.g. pool_factor=2); the title
    # names what the runs share
    tags = [" ".join(w for w in r.label.split(" ") if w not in shared) for r in results]
    written = []
    for name, xlabel, xof in (
        (PLOT_NAMES[0], "KiB per page", lambda r, s: r.index.bytes_per_page / 1024),
        (PLOT_NAMES[1], "ms per query", lambda r, s: s.ms_per_query),
    ):
        fig = _figure()
        ax = fig.add_subplot()
        for scope in scopes:
            points = [
                (xof(r, r.scopes[scope]), r.scopes[scope].metrics[metric], tag)
                for r, tag in zip(results, tags, strict=True)
                if scope in r.scopes
            ]
            xs, ys, labels = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=scope)
            for x, y, label in points:
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend(title="scope")
        ax.set_title(" ".join(shared), fontsize=8, wrap=True)
        path = out_dir / f"{prefix}{name}"
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def sweep_stem(results: Sequence[EvalResult]) -> str:
    """Name a sweep's own files after what its runs share: their labels' common words.

    For a pool factor sweep that is the label without ``pool_factor=<n>``: model,
    dataset and the other settings, so that two sweeps differ in name as their runs do.
    """
    return file_stem(" ".join([*_shared_words(results), "sweep"]))


def _shared_words(results: Sequence[EvalResult]) -> list[str]:
    """Words of the first run's label that every run's label has, in order."""
    labels = [r.label.split(" ") for r in results]
    return [w for w in labels[0] if all(w in other for other in labels[1:])]


def write_sweep(
    results: Sequence[EvalResult],
    out_dir: str | Path,
    *,
    metric: str = "ndcg_at_5",
    force: bool = False,
) -> list[Path]:
    """Write a sweep: one JSON per setting, a markdown table and the two PNG plots.

    The JSON files are named by :func:`result_stem`, the table and plots
    ``<sweep_stem>.md`` and ``<sweep_stem>.quality_vs_*.png`` (:func:`sweep_stem`).
    Existing files are not overwritten unless ``force`` is true.
    """
    if not results:
        raise PagelensError("a sweep needs at least one result")
    stems = [result_stem(r) for r in results]
    if len(set(stems)) != len(stems):
        raise PagelensError(f"the runs of a sweep need distinct labels; got {stems}")
    out_dir = Path(out_dir)
    name = sweep_stem(results)
    json_paths = [out_dir / f"{stem}.json" for stem in stems]
    md = out_dir / f"{name}.md"
    _refuse_overwrite([*json_paths, md, *(out_dir / f"{name}.{p}" for p in PLOT_NAMES)], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [r.save_json(path) for r, path in zip(results, json_paths, strict=True)]
    md.write_text(sweep_markdown(results), encoding="utf-8")
    written.append(md)
    written += plot_sweep(results, out_dir, metric=metric, prefix=f"{name}.")
    return written


# --------------------------------------------------------------------------- compare


def paired_randomization_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value that ``mean(b - a)`` differs from 0, by random sign flips.

    Enumerates all ``2**n`` sign patterns when ``n <= 16`` (exact test); otherwise
    draws ``n_resamples`` and returns ``(hits + 1) / (n_resamples + 1)``.
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    if observed == 0.0:
        return 1.0
    tol = 1e-12 * max(1.0, observed)
    if n <= 16:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # (2^n, n)
        stats = np.abs(patterns @ d) / n
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(n_resamples, 2_000_000 // n))
    done = 0
    while done < n_resamples:
        m = min(chunk, n_resamples - done)
        signs = rng.integers(0, 2, size=(m, n), dtype=np.int8) * 2 - 1  # (m, n)
        hits += int(np.sum(np.abs(signs @ d) / n >= observed - tol))
        done += m
    return (hits + 1) / (n_resamples + 1)


def paired_t_test(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided paired t-test p-value (1.0 when every difference is 0)."""
    from scipy import stats

    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if d.size < 2:
        return math.nan
    if np.all(d == d[0]):
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(b, a).pvalue)


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one run against the baseline, on the queries both ranked."""

    scope: str
    metric: str
    baseline: float
    value: float
    delta: float  # value - baseline
    p_randomization: float
    p_ttest: float
    n_queries: int


@dataclass(frozen=True)
class Comparison:
    """Runs side by side, each tested against the first (the baseline)."""

    labels: tuple[str, ...]
    rows: tuple[tuple[MetricComparison, ...], ...]  # one tuple per non-baseline run
    alpha: float = 0.05
    test: str = "paired randomization (sign-flip), two-sided"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        return comparison_markdown(self)


@dataclass(frozen=True)
class CompareOptions:
    """What :func:`compare` tests and how: checked once, here.

    Attributes:
        metrics: metric keys to compare; ``None`` or empty: all of :data:`METRIC_KEYS`.
        scopes: scopes to compare; ``None``: every scope of the baseline.
        n_resamples: sign-flip resamples of the randomisation test (when not exact).
        seed: the resamples' random seed.
        alpha: the level a table marks with ``*``.

    """

    metrics: Sequence[str] | None = None
    scopes: Sequence[str] | None = None
    n_resamples: int = 10_000
    seed: int = 0
    alpha: float = 0.05

    def __post_init__(self) -> None:
        metrics = tuple(self.metrics) if self.metrics else METRIC_KEYS
        check_choices("metrics", metrics, METRIC_KEYS)
        object.__setattr__(self, "metrics", metrics)
        if self.scopes is not None:
            object.__setattr__(self, "scopes", tuple(self.scopes))


def _column_names(results: Sequence[EvalResult], labels: Sequence[str] | None) -> list[str]:
    names = list(labels) if labels is not None else [r.label for r in results]
    if len(names) != len(results):
        raise PagelensError(f"{len(names)} labels given for {len(results)} results")
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return names


def _check_same_set(base: EvalResult, other: EvalResult, base_name: str, name: str) -> None:
    base_set = base.dataset.get("corpus_fingerprint"), base.dataset.get("name")
    other_set = other.dataset.get("corpus_fingerprint"), other.dataset.get("name")
    if other_set != base_set:
        raise PagelensError(
            f"{name!r} evaluated dataset {other_set[1]!r} (corpus {other_set[0]}), "
            f"the baseline {base_name!r} evaluated {base_set[1]!r} (corpus {base_set[0]})"
        )


def _compare_scope(
    pa: Mapping[str, Mapping[str, float]],
    pb: Mapping[str, Mapping[str, float]],
    scope: str,
    names: tuple[str, str],
    options: CompareOptions,
) -> list[MetricComparison]:
    """Each metric of one scope, on the queries both runs ranked (``pa``: the baseline)."""
    shared = [q for q in pa if q in pb]
    if not shared:
        raise PagelensError(f"{names[0]!r} and {names[1]!r} share no query in scope {scope}")
    if len(shared) < max(len(pa), len(pb)):
        logger.warning(
            "%s vs %s (%s): %s of %s/%s queries paired",
            *names,
            scope,
            len(shared),
            len(pa),
            len(pb),
        )
    out = []
    for metric in options.metrics or METRIC_KEYS:
        a = np.array([pa[q][metric] for q in shared])
        b = np.array([pb[q][metric] for q in shared])
        out.append(
            MetricComparison(
                scope=scope,
                metric=metric,
                baseline=float(a.mean()),
                value=float(b.mean()),
                delta=float(b.mean() - a.mean()),
                p_randomization=paired_randomization_test(
                    a, b, n_resamples=options.n_resamples, seed=options.seed
                ),
                p_ttest=paired_t_test(a, b),
                n_queries=len(shared),
            )
        )
    return out


def compare(
    results: Sequence[EvalResult],
    options: CompareOptions | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> Comparison:
    """Compare runs with the first: per metric and scope, the delta and its p-values.

    Runs are paired query by query on the query ids both scored; a warning names how
    many were left unpaired. Runs over different datasets are rejected. ``labels``
    name the columns (by default the runs' labels).
    """
    if len(results) < 2:
        raise PagelensError(f"compare needs at least 2 results, got {len(results)}")
    options = options or CompareOptions()
    names = _column_names(results, labels)
    base = results[0]
    wanted = (
        options.scopes if options.scopes is not None else [s for s in SCOPES if s in base.scopes]
    )
    rows = []
    for other, name in zip(results[1:], names[1:], strict=True):
        _check_same_set(base, other, names[0], name)
        row = []
        for scope in wanted:
            if scope not in base.scopes or scope not in other.scopes:
                logger.warning("scope %s is missing from %s or %s", scope, names[0], name)
                continue
            pa, pb = base.scopes[scope].per_query, other.scopes[scope].per_query
            row += _compare_scope(pa, pb, scope, (names[0], name), options)
        rows.append(tuple(row))
    return Comparison(labels=tuple(names), rows=tuple(rows), alpha=options.alpha)


def compare_files(paths: Sequence[str | Path], options: CompareOptions | None = None) -> Comparison:
    """:func:`compare` on result JSON files (two or more; the first is the baseline).

    The columns are named by the results' labels; when two labels are equal (a run
    labelled by hand, or one file copied), by the file names, and when those are equal
    too, by the paths as given.
    """
    if len(paths) < 2:
        raise PagelensError("compare needs at least two result files")
    results = [load_result(p) for p in paths]
    for names in (
        [r.label for r in results],
        [Path(p).stem for p in paths],
        [str(p) for p in paths],
    ):
        if len(set(names)) == len(names):
            break
    return compare(results, options, labels=names)


def comparison_markdown(comparison: Comparison) -> str:
    """Side by side: baseline value, then each run's value, delta and p-value."""
    header = ["scope", "metric", comparison.labels[0]]
    for name in comparison.labels[1:]:
        header += [name, "Δ", "p"]
    by_key: dict[tuple[str, str], list[MetricComparison]] = {}
    for row in comparison.rows:
        for mc in row:
            by_key.setdefault((mc.scope, mc.metric), []).append(mc)
    lines = []
    for (scope, metric), mcs in by_key.items():
        cells = [scope, metric, _fmt(mcs[0].baseline)]
        for mc in mcs:
            star = "*" if mc.p_randomization < comparison.alpha else ""
            cells += [_fmt(mc.value), f"{mc.delta:+.3f}{star}", f"{mc.p_randomization:.3g}"]
        lines.append(cells)
    n = {mc.scope: mc.n_queries for row in comparison.rows for mc in row}
    note = (
        f"p: {comparison.test} test on per-query values against "
        f"{comparison.labels[0]!r}; * p < {comparison.alpha}; no correction for the "
        f"number of metrics. Paired queries: " + ", ".join(f"{s}={k}" for s, k in n.items()) + "."
    )
    return _table(header, lines) + "\n\n" + note + "\n"
