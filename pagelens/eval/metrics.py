"""Retrieval metrics as the field reports them: pytrec_eval under mteb's keys.

What each key means (matching mteb's ``retrieval_metrics.calculate_retrieval_scores``,
which the ViDoRe leaderboards use):

- ``ndcg_at_k``: pytrec_eval ``ndcg_cut.k`` (graded gains, ideal DCG from the qrels).
- ``recall_at_k``: pytrec_eval ``recall.k`` (relevant retrieved in the top k / all
  relevant).
- ``map_at_10``: pytrec_eval ``map_cut.10``. mteb reports MAP only with a cut-off
  (``map_at_k``); it has no uncut ``map`` key. Runs here are 10 deep, so MAP@10 is
  also the MAP of the whole returned list.
- ``mrr_at_10``: mteb does *not* use pytrec_eval for MRR: it sorts each query's
  results, keeps the top 10 and takes ``1 / rank`` of the first document with a
  positive judgment (0 when none). pytrec_eval's ``recip_rank`` has no cut-off, so
  it equals mteb's MRR@10 only on a run truncated to 10; that is what is done here.

A run is given as ranked lists (best first), exactly the order search returned.
It reaches pytrec_eval with scores ``n, n-1, ..., 1`` so that trec_eval's own
tie-breaking (by document id) can never reorder what the system returned.

Queries are averaged with equal weight; a query with no positive judgment cannot
be scored and is rejected up front (:func:`score_run` names it).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pagelens.errors import MissingExtraError, PagelensError

Qrels = Mapping[str, Mapping[str, int]]
"""``query id -> {corpus id: relevance grade}``; grades > 0 are relevant."""

Run = Mapping[str, Sequence[str]]
"""``query id -> corpus ids``, best first."""

K_VALUES: tuple[int, ...] = (1, 3, 5, 10)
METRIC_KEYS: tuple[str, ...] = (
    *(f"ndcg_at_{k}" for k in K_VALUES),
    *(f"recall_at_{k}" for k in K_VALUES),
    "map_at_10",
    "mrr_at_10",
)
"""Every key :func:`score_run` returns, in report order."""

DEPTH = max(K_VALUES)
"""How many results per query the metrics look at."""

NONE_LABEL = "(none)"
"""Breakdown label of a query whose field is missing, ``None`` or an empty list."""


@dataclass(frozen=True)
class Scores:
    """Metrics of one run: the mean over queries and every query's own values."""

    metrics: dict[str, float]  # key -> mean over queries
    per_query: dict[str, dict[str, float]]  # query id -> key -> value

    @property
    def n_queries(self) -> int:
        return len(self.per_query)


def _pytrec_eval() -> Any:
    try:
        import pytrec_eval
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtraError("pytrec_eval", "eval") from exc
    return pytrec_eval


def _as_trec_run(ranked: Sequence[str], depth: int | None = None) -> dict[str, float]:
    """Ranked ids -> ``{id: score}`` with strictly decreasing scores; duplicates dropped."""
    unique = list(dict.fromkeys(ranked))
    if depth is not None:
        unique = unique[:depth]
    n = len(unique)
    return {doc: float(n - i) for i, doc in enumerate(unique)}


def score_run(qrels: Qrels, run: Run) -> Scores:
    """Score a run against qrels: every key of :data:`METRIC_KEYS`, per query and mean.

    Every query of ``qrels`` is scored; one missing from ``run`` (or with an empty
    list) retrieved nothing and scores 0. Ids in ``run`` that ``qrels`` lacks are an
    error, as is a query with no positive judgment (no metric is defined for it).
    """
    extra = sorted(set(run) - set(qrels))
    if extra:
        raise PagelensError(
            f"run has {len(extra)} query ids without qrels, e.g. {extra[:3]}; "
            "score only queries that have judgments"
        )
    no_positive = sorted(q for q, rels in qrels.items() if not any(g > 0 for g in rels.values()))
    if no_positive:
        raise PagelensError(
            f"{len(no_positive)} queries have no positive judgment, e.g. {no_positive[:3]}; "
            "drop them before scoring"
        )
    if not qrels:
        raise PagelensError("no queries to score: qrels is empty")

    pte = _pytrec_eval()
    trec_qrels = {q: {d: int(g) for d, g in rels.items()} for q, rels in qrels.items()}
    # pytrec_eval skips queries absent from the run; an empty ranking must score 0,
    # so such queries are filled in below instead of being passed as {}.
    full = {q: _as_trec_run(run.get(q, ())) for q in qrels}
    cut = {q: _as_trec_run(run.get(q, ()), DEPTH) for q in qrels}
    ks = ",".join(str(k) for k in K_VALUES)
    measures = {f"ndcg_cut.{ks}", f"recall.{ks}", "map_cut.10"}
    main = pte.RelevanceEvaluator(trec_qrels, measures).evaluate(
        {q: r for q, r in full.items() if r}
    )
    rr = pte.RelevanceEvaluator(trec_qrels, {"recip_rank"}).evaluate(
        {q: r for q, r in cut.items() if r}
    )

    per_query: dict[str, dict[str, float]] = {}
    for q in qrels:
        got = main.get(q)
        values: dict[str, float] = {}
        for k in K_VALUES:
            values[f"ndcg_at_{k}"] = float(got[f"ndcg_cut_{k}"]) if got else 0.0
        for k in K_VALUES:
            values[f"recall_at_{k}"] = float(got[f"recall_{k}"]) if got else 0.0
        values["map_at_10"] = float(got["map_cut_10"]) if got else 0.0
        values["mrr_at_10"] = float(rr[q]["recip_rank"]) if q in rr else 0.0
        per_query[q] = values
    return Scores(metrics=mean_metrics(per_query), per_query=per_query)


def mean_metrics(
    per_query: Mapping[str, Mapping[str, float]], ids: Iterable[str] | None = None
) -> dict[str, float]:
    """Mean of every metric over ``ids`` (all queries when ``None``); NaN when empty."""
    chosen = list(per_query) if ids is None else list(ids)
    keys = list(next(iter(per_query.values()))) if per_query else list(METRIC_KEYS)
    if not chosen:
        return {key: math.nan for key in keys}
    return {key: math.fsum(per_query[q][key] for q in chosen) / len(chosen) for key in keys}


def labels_of(value: Any) -> list[str]:
    """Return the breakdown labels of one query's field value.

    A list or tuple counts the query under each of its (distinct) items; a missing
    value, ``None`` or an empty list gives :data:`NONE_LABEL`.
    """
    if value is None:
        return [NONE_LABEL]
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value if v is not None]
        return list(dict.fromkeys(items)) or [NONE_LABEL]
    return [str(value)]


@dataclass(frozen=True)
class Group:
    """Mean metrics of the queries sharing one label."""

    n: int
    metrics: dict[str, float] = field(default_factory=dict)


def breakdown(
    per_query: Mapping[str, Mapping[str, float]], values: Mapping[str, Any]
) -> dict[str, Group]:
    """Mean metrics per value of one query field, sorted by label.

    Args:
        per_query: query id -> metric -> value (as in :class:`Scores`).
        values: query id -> that query's field value; a list value counts the query
            in each of its items (so group sizes can add up to more than the queries).
            Queries absent from ``values`` fall under :data:`NONE_LABEL`.

    """
    members: dict[str, list[str]] = defaultdict(list)
    for q in per_query:
        for label in labels_of(values.get(q)):
            members[label].append(q)
    return {
        label: Group(n=len(ids), metrics=mean_metrics(per_query, ids))
        for label, ids in sorted(members.items())
    }
