import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import stats

from pagelens.errors import InputError, PagelensError
from pagelens.eval.metrics import METRIC_KEYS, Group, breakdown, mean_metrics
from pagelens.eval.report import (
    CompareOptions,
    EvalResult,
    IndexStats,
    ScopeResult,
    compare,
    compare_files,
    file_stem,
    load_result,
    paired_randomization_test,
    paired_t_test,
    result_markdown,
    sweep_markdown,
    write_result,
    write_sweep,
)


def _per_query(values: dict[str, float]) -> dict[str, dict[str, float]]:
    """Every metric of a query set to one value (enough to test the plumbing)."""
    return {q: dict.fromkeys(METRIC_KEYS, v) for q, v in values.items()}


def make_result(
    label: str,
    corpus: dict[str, float],
    document: dict[str, float] | None = None,
    *,
    pool_factor: int = 3,
    bytes_per_page: float = 4096.0,
    ms: float = 10.0,
    dataset: str = "toy",
) -> EvalResult:
    fields = {q: {"lang": "en" if i % 2 == 0 else "fr"} for i, q in enumerate(corpus)}
    scopes = {}
    for name, vals in (("corpus", corpus), ("document", document)):
        if vals is None:
            continue
        pq = _per_query(vals)
        scopes[name] = ScopeResult(
            scope=name,
            metrics=mean_metrics(pq),
            per_query=pq,
            breakdowns={"lang": breakdown(pq, {q: f["lang"] for q, f in fields.items()})},
            search_seconds=ms * len(vals) / 1000,
            ms_per_query=ms,
        )
    return EvalResult(
        label=label,
        dataset={"name": dataset, "format": "pdf", "corpus_fingerprint": "abc" + dataset},
        encoder={"model_id": "fake/color", "revision": "1", "dim": 16, "family": "fake"},
        settings={"pool_factor": pool_factor, "candidate_factor": 16, "fp16": True, "k": 10},
        index=IndexStats(
            pages=6,
            documents=2,
            vectors_per_page=12.0 / pool_factor,
            bytes_per_page=bytes_per_page,
            reused=False,
            build_seconds=1.5,
            location="/tmp/x",
        ),
        scopes=scopes,
        query_fields=fields,
        created_at="2025-01-01T00:00:00+00:00",
        pagelens_version="0.1.0",
    )


A = make_result("A", {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.5}, {"q1": 1.0, "q2": 1.0})


# --------------------------------------------------------------------------- JSON / markdown


def test_json_round_trip(tmp_path):
    path = A.save_json(tmp_path / "out" / "a.json")
    back = load_result(path)
    assert back == A
    assert isinstance(back.index, IndexStats)
    assert isinstance(back.scopes["corpus"].breakdowns["lang"]["en"], Group)
    data = json.loads(path.read_text())
    assert data["scopes"]["corpus"]["per_query"]["q3"]["ndcg_at_5"] == 0.5
    assert data["scopes"]["corpus"]["metrics"]["ndcg_at_5"] == 0.5


def test_write_result(tmp_path):
    written = write_result(A, tmp_path / "r", stem="toy")
    assert [p.name for p in written] == ["toy.json", "toy.md"]
    assert load_result(written[0]) == A
    assert written[1].read_text() == result_markdown(A)


def test_loading_rejects_what_is_not_a_result(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a pagelens evaluation result"):
        load_result(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"schema_version": 99}')
    with pytest.raises(InputError, match="schema_version 99"):
        load_result(tmp_path / "y.json")
    data = A.to_dict()
    del data["index"]
    (tmp_path / "z.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="index"):
        load_result(tmp_path / "z.json")
    with pytest.raises(InputError, match="no such file"):
        load_result(tmp_path / "missing.json")


def test_markdown_report():
    md = result_markdown(A)
    assert md.startswith("## toy · fake/color · A")
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| scope"))
    assert header.split(" | ")[2:4] == ["ndcg_at_1", "ndcg_at_3"]
    corpus_row = next(line for line in lines if line.startswith("| corpus"))
    assert corpus_row.startswith("| corpus | 4 | 0.500 |")
    assert "| document | 2 | 1.000 |" in md
    assert "6 pages, 2 documents, 4.0 vectors/page, 4.0 KiB/page; built in 1.5 s." in md
    assert "### corpus: by lang" in md
    assert "| en | 2 | 0.750 |" in md  # q1 (1.0) and q3 (0.5)
    assert "| fr | 2 | 0.250 |" in md


# --------------------------------------------------------------------------- significance


def test_randomization_test_exact_by_hand():
    # d = (1, 1, 1): of the 8 sign patterns only +++ and --- reach |mean| = 1
    assert paired_randomization_test([0, 0, 0], [1, 1, 1]) == pytest.approx(2 / 8)
    # d = (1, 0): every pattern gives |mean| = 0.5
    assert paired_randomization_test([0, 0], [1, 0]) == 1.0
    # d = (2, 1, 1): +++ and --- reach 4/3; so do no others (2-1-1=0, 2+1-1=2, ...)
    assert paired_randomization_test([0, 0, 0], [2, 1, 1]) == pytest.approx(2 / 8)
    assert paired_randomization_test([1, 2], [1, 2]) == 1.0
    assert math.isnan(paired_randomization_test([], []))


def test_randomization_test_sampled_and_seeded():
    rng = np.random.default_rng(3)
    a = rng.uniform(size=200)
    b = a + 0.3  # every query better: nothing beats the observed mean
    p = paired_randomization_test(a, b, n_resamples=999)
    assert p == pytest.approx(1 / 1000)
    noise = rng.normal(size=200) * 0.1
    p1 = paired_randomization_test(a, a + noise, n_resamples=2000, seed=7)
    p2 = paired_randomization_test(a, a + noise, n_resamples=2000, seed=7)
    assert p1 == p2 and 0.0 < p1 <= 1.0
    # the sampled test agrees with the t-test on a well-behaved sample (loosely)
    assert abs(p1 - stats.ttest_rel(a + noise, a).pvalue) < 0.1


def test_paired_t_test():
    a, b = [0.1, 0.5, 0.3, 0.9], [0.2, 0.4, 0.6, 1.0]
    assert paired_t_test(a, b) == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_t_test([1, 2], [1, 2]) == 1.0
    assert paired_t_test([1, 2], [2, 3]) == 0.0


# --------------------------------------------------------------------------- compare


def test_compare_pairs_queries_and_tests_each_metric():
    b = make_result("B", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 1.0}, {"q1": 1.0, "q2": 1.0})
    c = make_result("C", {"q1": 1.0, "q2": 0.0, "q3": 0.5, "q4": 0.5}, {"q1": 1.0, "q2": 1.0})
    cmp = compare([A, b, c])
    assert cmp.labels == ("A", "B", "C")
    assert len(cmp.rows) == 2
    by = {(m.scope, m.metric): m for m in cmp.rows[0]}
    m = by[("corpus", "ndcg_at_5")]
    assert (m.baseline, m.value, m.delta, m.n_queries) == (0.5, 1.0, 0.5, 4)
    # d = (0, 1, 0.5, 0.5): |sum| = 2 needs the three non-zero signs equal (2 ways),
    # the zero's sign is free (2 ways): 4 of the 16 patterns
    assert m.p_randomization == pytest.approx(4 / 16)
    same = {(x.scope, x.metric): x for x in cmp.rows[1]}
    assert same[("corpus", "mrr_at_10")].delta == 0.0
    assert same[("corpus", "mrr_at_10")].p_randomization == 1.0
    assert len(cmp.rows[0]) == 2 * len(METRIC_KEYS)

    md = cmp.to_markdown()
    assert md.splitlines()[0] == "| scope | metric | A | B | Δ | p | C | Δ | p |"
    assert "| corpus | ndcg_at_5 | 0.500 | 1.000 | +0.500 | 0.25 | 0.500 | +0.000 | 1 |" in md
    assert "paired randomization" in md and "corpus=4" in md


def test_compare_uses_shared_queries_only(caplog):
    b = make_result("B", {"q1": 0.0, "q2": 1.0, "q9": 1.0})
    cmp = compare([A, b], CompareOptions(metrics=["ndcg_at_10"]))
    (m,) = cmp.rows[0]
    assert m.n_queries == 2 and m.baseline == 0.5 and m.value == 0.5
    assert "2 of 4/3 queries paired" in caplog.text


def test_compare_refuses_other_datasets_and_bad_input():
    other = make_result("O", {"q1": 1.0}, dataset="other")
    with pytest.raises(PagelensError, match="evaluated dataset 'other'"):
        compare([A, other])
    with pytest.raises(PagelensError, match="at least 2"):
        compare([A])
    with pytest.raises(PagelensError, match="unknown metrics \\['ndcg@5'\\]"):
        compare([A, A], CompareOptions(metrics=["ndcg@5"]))


def test_compare_files_labels_by_file_name(tmp_path):
    pa = A.save_json(tmp_path / "base.json")
    pb = make_result("A", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 1.0}).save_json(
        tmp_path / "new.json"
    )
    cmp = compare_files([pa, pb], CompareOptions(metrics=["recall_at_1"]))
    assert cmp.labels == ("base", "new")  # equal labels: the file names tell them apart
    assert [m.scope for m in cmp.rows[0]] == ["corpus"]  # "document" missing from new


def test_compare_files_columns_are_labels_else_file_names_else_paths(tmp_path):
    b = make_result("B", {"q1": 1.0, "q2": 1.0, "q3": 1.0, "q4": 1.0})
    pa, pb = A.save_json(tmp_path / "x" / "run.json"), b.save_json(tmp_path / "y" / "run.json")
    assert compare_files([pa, pb], CompareOptions(metrics=["recall_at_1"])).labels == ("A", "B")
    # equal labels and equal file names: the paths
    pa2 = A.save_json(tmp_path / "z" / "run.json")
    cmp = compare_files([pa, pa2], CompareOptions(metrics=["recall_at_1"]))
    assert cmp.labels == (str(pa), str(pa2))


def test_file_stems_follow_labels_and_stay_distinct():
    labels = [
        "vidore/colqwen2.5-v0.2 mmlongbench-dev pool_factor=3",
        "vidore/colqwen2.5-v0.2 mmlongbench-dev pool_factor=3 exact",
        "minilm mmlongbench-dev pool_factor=3",
        "minilm mmlongbench-dev max_queries=20 pool_factor=3 channels=dense+bm25 weights=bm25:2",
        "minilm mmlongbench-dev max_queries=20 pool_factor=3 channels=dense+bm25 weights=bm25:3",
    ]
    stems = [file_stem(label) for label in labels]
    assert stems[0] == "vidore_colqwen2.5-v0.2_mmlongbench-dev_pool_factor=3"
    assert len(set(stems)) == len(stems)
    long = ["a" * 200 + " x", "a" * 200 + " y"]
    assert all(len(file_stem(label)) <= 120 for label in long)
    assert file_stem(long[0]) != file_stem(long[1])


def test_result_files_are_named_by_label_and_not_overwritten(tmp_path):
    b = make_result("B", {"q1": 1.0})
    assert [p.name for p in write_result(A, tmp_path)] == ["A.json", "A.md"]
    assert [p.name for p in write_result(b, tmp_path)] == ["B.json", "B.md"]
    with pytest.raises(PagelensError, match=r"A\.json exists.*--force"):
        write_result(A, tmp_path)
    again = dataclasses.replace(A, created_at="2026-01-01T00:00:00+00:00")
    write_result(again, tmp_path, force=True)
    assert load_result(tmp_path / "A.json") == again


# --------------------------------------------------------------------------- sweeps


def test_sweep_writes_rows_and_plots(tmp_path):
    results = [
        make_result(
            f"pool_factor={pf}",
            {"q1": 1.0, "q2": 1 / pf},
            {"q1": 1.0},
            pool_factor=pf,
            bytes_per_page=8192 / pf,
            ms=12.0 / pf,
        )
        for pf in (1, 2, 3, 4)
    ]
    md = sweep_markdown(results)
    rows = [line for line in md.splitlines() if line.startswith("| pool_factor")]
    assert len(rows) == 8  # 4 settings x 2 scopes
    assert (
        rows[0] == "| pool_factor=1 | corpus | 12.0 | 8.0 | 12.0 | 1.000 | 1.000 | 1.000 | 1.000 |"
    )
    written = write_sweep(results, tmp_path / "sweep")
    names = sorted(p.name for p in written)
    assert "sweep.md" in names and "sweep.quality_vs_bytes.png" in names
    assert "sweep.quality_vs_latency.png" in names
    assert sum(n.endswith(".json") for n in names) == 4
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert load_result(tmp_path / "sweep" / "pool_factor=1.json") == results[0]
    with pytest.raises(PagelensError, match="unknown metric"):
        write_sweep(results, tmp_path / "s2", metric="ndcg@5")
    with pytest.raises(PagelensError, match=r"pool_factor=1\.json exists.*--force"):
        write_sweep(results, tmp_path / "sweep")
    assert len(write_sweep(results, tmp_path / "sweep", force=True)) == 7


def test_two_sweeps_write_side_by_side(tmp_path):
    def run(model, pf):
        label = f"{model} toy pool_factor={pf}"
        return make_result(label, {"q1": 1.0, "q2": 1 / pf}, pool_factor=pf)

    first = write_sweep([run("m1", 1), run("m1", 2)], tmp_path)
    second = write_sweep([run("m2", 1), run("m2", 2)], tmp_path)
    assert not {p.name for p in first} & {p.name for p in second}
    assert "m1_toy_sweep.md" in {p.name for p in first}
