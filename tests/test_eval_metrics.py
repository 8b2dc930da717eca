import math

import pytest

from pagelens.errors import PagelensError
from pagelens.eval.metrics import (
    METRIC_KEYS,
    NONE_LABEL,
    breakdown,
    labels_of,
    mean_metrics,
    score_run,
)

L3 = math.log2(3)
L5 = math.log2(5)

QRELS = {
    "qA": {"d1": 1, "d3": 1},
    "qB": {"d5": 2, "d6": 1, "d0": 0},  # graded; a judged-irrelevant page
    "qC": {"d9": 1},
    "qD": {"d8": 1},
}
RUN = {
    "qA": ["d2", "d1", "d4", "d3"],  # relevant at ranks 2 and 4
    "qB": ["d6", "d7", "d5"],  # gain 1 at rank 1, gain 2 at rank 3
    "qC": [],  # retrieved nothing
    "qD": ["d8"],  # perfect
}

# Hand computation (gain = grade, discount = log2(rank + 1), ideal DCG from the qrels):
EXPECTED = {
    "qA": {
        "ndcg_at_1": 0.0,
        "ndcg_at_3": (1 / L3) / (1 + 1 / L3),
        "ndcg_at_5": (1 / L3 + 1 / L5) / (1 + 1 / L3),
        "ndcg_at_10": (1 / L3 + 1 / L5) / (1 + 1 / L3),
        "recall_at_1": 0.0,
        "recall_at_3": 0.5,
        "recall_at_5": 1.0,
        "recall_at_10": 1.0,
        "map_at_10": (1 / 2 + 2 / 4) / 2,
        "mrr_at_10": 1 / 2,
    },
    "qB": {
        "ndcg_at_1": 1 / 2,
        "ndcg_at_3": (1 + 2 / 2) / (2 + 1 / L3),
        "ndcg_at_5": (1 + 2 / 2) / (2 + 1 / L3),
        "ndcg_at_10": (1 + 2 / 2) / (2 + 1 / L3),
        "recall_at_1": 0.5,
        "recall_at_3": 1.0,
        "recall_at_5": 1.0,
        "recall_at_10": 1.0,
        "map_at_10": (1 / 1 + 2 / 3) / 2,
        "mrr_at_10": 1.0,
    },
    "qC": dict.fromkeys(METRIC_KEYS, 0.0),
    "qD": dict.fromkeys(METRIC_KEYS, 1.0),
}


def test_keys_are_mteb_keys():
    assert METRIC_KEYS == (
        "ndcg_at_1",
        "ndcg_at_3",
        "ndcg_at_5",
        "ndcg_at_10",
        "recall_at_1",
        "recall_at_3",
        "recall_at_5",
        "recall_at_10",
        "map_at_10",
        "mrr_at_10",
    )


def test_per_query_values_match_hand_computation():
    scores = score_run(QRELS, RUN)
    assert scores.n_queries == 4
    for q, expected in EXPECTED.items():
        assert set(scores.per_query[q]) == set(METRIC_KEYS)
        for key, value in expected.items():
            assert scores.per_query[q][key] == pytest.approx(value, abs=1e-4), (q, key)


def test_means_are_unweighted_over_queries():
    scores = score_run(QRELS, RUN)
    for key in METRIC_KEYS:
        expected = sum(EXPECTED[q][key] for q in EXPECTED) / 4
        assert scores.metrics[key] == pytest.approx(expected, abs=1e-4), key
    assert scores.metrics["ndcg_at_1"] == pytest.approx(0.375)
    assert scores.metrics["mrr_at_10"] == pytest.approx((0.5 + 1 + 0 + 1) / 4)


def _mteb_mrr_at_10(qrels, run):
    """mteb's own MRR@k (retrieval_metrics.mrr): sort by score, first positive in top 10."""
    out = {}
    for q, ranked in run.items():
        rr = 0.0
        for rank, doc in enumerate(ranked[:10]):
            if qrels[q].get(doc, 0) > 0:
                rr = 1.0 / (rank + 1)
                break
        out[q] = rr
    return out


def test_mrr_matches_mteb_definition_and_is_cut_at_10():
    ranked = [f"x{i}" for i in range(10)] + ["hit"]  # first relevant at rank 11
    qrels = {"q": {"hit": 1}, "r": {"x3": 1}}
    run = {"q": ranked, "r": ranked}
    scores = score_run(qrels, run)
    mteb = _mteb_mrr_at_10(qrels, run)
    assert scores.per_query["q"]["mrr_at_10"] == mteb["q"] == 0.0  # uncut recip_rank: 1/11
    assert scores.per_query["r"]["mrr_at_10"] == pytest.approx(mteb["r"]) == pytest.approx(0.25)
    # everything else is cut at 10 too
    assert scores.per_query["q"]["recall_at_10"] == 0.0
    assert scores.per_query["q"]["map_at_10"] == 0.0
    assert scores.per_query["q"]["ndcg_at_10"] == 0.0


def test_returned_order_is_kept_whatever_the_ids():
    # trec_eval breaks score ties by document id; ranked lists must never be reordered.
    qrels = {"q": {"a": 1}}
    assert score_run(qrels, {"q": ["z", "a"]}).per_query["q"]["mrr_at_10"] == 0.5
    assert score_run(qrels, {"q": ["a", "z"]}).per_query["q"]["mrr_at_10"] == 1.0


def test_duplicate_ids_in_a_ranking_count_once():
    qrels = {"q": {"b": 1}}
    scores = score_run(qrels, {"q": ["a", "a", "b"]})
    assert scores.per_query["q"]["mrr_at_10"] == 0.5


def test_query_missing_from_run_scores_zero():
    scores = score_run({"q": {"a": 1}, "r": {"b": 1}}, {"r": ["b"]})
    assert scores.per_query["q"] == dict.fromkeys(METRIC_KEYS, 0.0)
    assert scores.metrics["ndcg_at_10"] == 0.5


def test_bad_inputs_are_named():
    with pytest.raises(PagelensError, match="without qrels"):
        score_run({"q": {"a": 1}}, {"q": ["a"], "stray": ["a"]})
    with pytest.raises(PagelensError, match="no positive judgment.*'q'"):
        score_run({"q": {"a": 0}}, {"q": ["a"]})
    with pytest.raises(PagelensError, match="empty"):
        score_run({}, {})


def test_labels_of():
    assert labels_of("english") == ["english"]
    assert labels_of(["Table", "Chart", "Table"]) == ["Table", "Chart"]
    assert labels_of([]) == [NONE_LABEL]
    assert labels_of(None) == [NONE_LABEL]
    assert labels_of(3) == ["3"]


def test_breakdown_counts_list_values_in_each_group():
    per_query = {
        "q1": {"m": 1.0},
        "q2": {"m": 0.0},
        "q3": {"m": 0.5},
        "q4": {"m": 0.25},
    }
    values = {"q1": ["Chart"], "q2": ["Table", "Chart"], "q3": ["Table"], "q4": []}
    groups = breakdown(per_query, values)
    assert list(groups) == [NONE_LABEL, "Chart", "Table"]
    assert groups["Chart"].n == 2 and groups["Chart"].metrics["m"] == 0.5
    assert groups["Table"].n == 2 and groups["Table"].metrics["m"] == 0.25
    assert groups[NONE_LABEL].n == 1 and groups[NONE_LABEL].metrics["m"] == 0.25


def test_breakdown_of_a_scalar_field_partitions_queries():
    per_query = {"a": {"m": 1.0}, "b": {"m": 0.0}, "c": {"m": 1.0}}
    groups = breakdown(per_query, {"a": "en", "b": "fr", "c": "en"})
    assert {k: (g.n, g.metrics["m"]) for k, g in groups.items()} == {
        "en": (2, 1.0),
        "fr": (1, 0.0),
    }


def test_mean_metrics_of_nothing_is_nan():
    out = mean_metrics({"a": {"m": 1.0}}, [])
    assert math.isnan(out["m"])
