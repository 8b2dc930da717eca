"""evaluate() end to end: the real index, job and search, a fake colour encoder.

Pages are solid colours and queries name colours (tests/vidore_fixtures.py), so the
expected rankings can be worked out by hand.
"""

import dataclasses
import math
import os

import pytest

from pagelens.errors import PagelensError
from pagelens.eval.datasets import load_eval_set
from pagelens.eval.report import load_result, write_sweep
from pagelens.eval.run import EvalOptions, evaluate, index_key, sweep
from pagelens.index import IndexSettings
from pagelens.search import DEFAULT_CANDIDATES
from tests import vidore_fixtures as vf

L3 = math.log2(3)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    return {
        "v1": load_eval_set(vf.build_v1(root / "v1")),
        "v2": load_eval_set(vf.build_beir(root / "v2", version=2)),
        "v3": load_eval_set(vf.build_beir(root / "v3", version=3, layout="dict")),
        "pdf": load_eval_set(vf.build_pdf_set(root / "pdf")),
    }


def test_v1_scores_match_hand_ranking(sets, tmp_path):
    enc = vf.ColorEncoder()
    result = evaluate(sets["v1"], enc, EvalOptions(cache_dir=tmp_path, progress=False))
    assert list(result.scopes) == ["corpus"]  # v1 queries name no document
    pq = result.scopes["corpus"].per_query
    # "what is on the red page?" is judged on yellow (last row wins); for a red query
    # the pages rank red (1.0), purple (0.49), yellow (0.33), ... so yellow is third
    red_q = pq["what is on the red page?"]
    assert red_q["mrr_at_10"] == pytest.approx(1 / 3)
    assert red_q["ndcg_at_10"] == pytest.approx(0.5)  # 1 / log2(4)
    assert (red_q["recall_at_1"], red_q["recall_at_3"]) == (0.0, 1.0)
    for q in ("show me the green page", "find the blue page", "another red question"):
        assert pq[q]["ndcg_at_1"] == 1.0
    assert result.scopes["corpus"].metrics["mrr_at_10"] == pytest.approx((1 / 3 + 3) / 4)
    assert result.index.pages == 5 and result.index.documents == 5
    assert result.index.vectors_per_page > 0 and result.index.bytes_per_page > 0
    assert not result.index.reused and result.index.build_seconds is not None
    assert result.encoder["model_id"] == "fake/color"
    assert result.settings["pool_factor"] == 3 and result.settings["k"] == 10
    assert result.scopes["corpus"].ms_per_query > 0


@pytest.mark.parametrize("name", ["v2", "v3"])
def test_beir_sets_rank_every_query_first(sets, name, tmp_path):
    result = evaluate(
        sets[name], vf.ColorEncoder(), EvalOptions(cache_dir=tmp_path, progress=False)
    )
    corpus = result.scopes["corpus"]
    assert sorted(corpus.per_query) == ["10", "11", "12", "13"]
    # query 12: blue (grade 2) then cyan (grade 1): the ideal order
    assert corpus.per_query["12"]["ndcg_at_10"] == pytest.approx(1.0)
    assert corpus.metrics["ndcg_at_5"] == pytest.approx(1.0)
    groups = corpus.breakdowns["language"]
    assert {k: g.n for k, g in groups.items()} == {"english": 2, "french": 2}
    assert result.query_fields["11"]["language"] == "french"


def test_index_is_cached_by_corpus_encoder_and_settings(sets, tmp_path):
    enc = vf.ColorEncoder()
    cached = EvalOptions(cache_dir=tmp_path, progress=False)
    first = evaluate(sets["v2"], enc, cached)
    calls = enc.page_calls
    again = evaluate(sets["v2"], enc, cached)
    assert again.index.reused and again.index.build_seconds is None
    assert enc.page_calls == calls  # no page encoded the second time
    assert again.scopes["corpus"].per_query == first.scopes["corpus"].per_query
    other = IndexSettings(pool_factor=1)
    assert index_key(sets["v2"], enc, other) != index_key(sets["v2"], enc, IndexSettings())
    fresh = evaluate(sets["v2"], enc, dataclasses.replace(cached, settings=other))
    assert not fresh.index.reused and enc.page_calls > calls
    rebuilt = evaluate(sets["v2"], enc, dataclasses.replace(cached, rebuild=True))
    assert not rebuilt.index.reused


def test_pdf_set_both_scopes(sets, tmp_path):
    from pagelens.pipeline.render import RenderSettings

    result = evaluate(
        sets["pdf"],
        vf.ColorEncoder(),
        EvalOptions(cache_dir=tmp_path, render=RenderSettings(dpi=20), progress=False),
    )
    assert list(result.scopes) == ["corpus", "document"]
    assert result.index.pages == 6 and result.index.documents == 2
    doc = result.scopes["document"]
    # within its own document every query's colour is unique: all first
    assert doc.metrics["mrr_at_10"] == 1.0 and doc.n_queries == 4
    corpus = result.scopes["corpus"].per_query
    assert corpus["q2"]["mrr_at_10"] == 1.0 and corpus["q3"]["mrr_at_10"] == 1.0
    # alpha.pdf#1 and beta.pdf#2 are both red and tie exactly: each red query finds
    # its page first or second (the tie order is the store's business)
    assert corpus["q1"]["mrr_at_10"] in (0.5, 1.0) and corpus["q4"]["mrr_at_10"] in (0.5, 1.0)
    sources = result.scopes["document"].breakdowns["evidence_sources"]
    assert {k: g.n for k, g in sources.items()} == {"(none)": 1, "Chart": 2, "Table": 2}
    assert result.settings["render_dpi"] == 20


def test_document_scope_on_an_image_corpus_filters_by_page_ids(sets, tmp_path):
    s = sets["v2"]
    docs = {"10": "report_a", "11": "report_a", "12": "report_a", "13": "report_b"}
    s = dataclasses.replace(
        s, queries=tuple(dataclasses.replace(q, doc=docs[q.query_id]) for q in s.queries)
    )
    result = evaluate(
        s, vf.ColorEncoder(), EvalOptions(cache_dir=tmp_path, scopes=["document"], progress=False)
    )
    pq = result.scopes["document"].per_query
    # query 12's cyan page lies in report_b: out of reach within report_a
    assert pq["12"]["ndcg_at_10"] == pytest.approx(2 / (2 + 1 / L3))
    assert pq["12"]["recall_at_10"] == 0.5
    assert pq["13"]["ndcg_at_1"] == 1.0


def test_bad_options_are_named(sets, tmp_path):
    enc = vf.ColorEncoder()
    with pytest.raises(PagelensError, match="'document' scope"):
        evaluate(sets["v2"], enc, EvalOptions(cache_dir=tmp_path, scopes=["document"]))
    with pytest.raises(PagelensError, match=r"unknown scopes \['page'\]"):
        evaluate(sets["v2"], enc, EvalOptions(cache_dir=tmp_path, scopes=["page"]))
    with pytest.raises(PagelensError, match=r"breakdown fields \['topic'\]"):
        evaluate(sets["v2"], enc, EvalOptions(cache_dir=tmp_path, breakdown_fields=["topic"]))
    with pytest.raises(PagelensError, match="cache_dir or url"):
        evaluate(sets["v2"], enc, EvalOptions(cache_dir=tmp_path, url="http://localhost:6333"))


def test_without_cache_dir_the_index_is_temporary(sets):
    result = evaluate(sets["v1"], vf.ColorEncoder(), EvalOptions(progress=False))
    assert not result.index.reused
    import os

    assert not os.path.exists(result.index.location)


def test_sweep_over_pool_factors(sets, tmp_path):
    results = sweep(
        sets["v2"],
        vf.ColorEncoder(),
        EvalOptions(cache_dir=tmp_path, progress=False),
        pool_factors=[1, 2],
    )
    assert [r.label for r in results] == [
        "fake/color v2 pool_factor=1",
        "fake/color v2 pool_factor=2",
    ]
    assert results[0].index.vectors_per_page >= results[1].index.vectors_per_page
    written = write_sweep(results, tmp_path / "out")
    assert {p.name for p in written} >= {
        "fake_color_v2_sweep.md",
        "fake_color_v2_sweep.quality_vs_bytes.png",
    }
    assert load_result(tmp_path / "out" / "fake_color_v2_pool_factor=2.json") == results[1]


def test_an_interrupted_index_is_resumed(sets, tmp_path):
    from pagelens.index import Index
    from pagelens.pipeline.job import index_pages

    s = sets["v2"]
    enc = vf.ColorEncoder()
    folder = tmp_path / f"v2-{index_key(s, enc, IndexSettings())}"
    with Index.open(folder) as index:  # the first two pages only, as if interrupted
        pages = list(s.corpus.iter_pages(exclude={"2", "3", "4", "5"}))
        assert [p.doc_path for p in pages] == ["0", "1"]
        index_pages(index, enc, pages, settings=IndexSettings(), progress=False)
    result = evaluate(s, enc, EvalOptions(cache_dir=tmp_path, progress=False))
    assert result.index.location == str(folder)
    assert not result.index.reused and result.index.pages == 6
    assert result.scopes["corpus"].metrics["ndcg_at_5"] == pytest.approx(1.0)


def test_exact_search_gives_the_same_ranking_here(sets, tmp_path):
    enc = vf.ColorEncoder()
    approx = evaluate(sets["v1"], enc, EvalOptions(cache_dir=tmp_path, progress=False))
    exact = evaluate(
        sets["v1"], enc, EvalOptions(cache_dir=tmp_path, candidates=None, progress=False)
    )
    assert approx.settings["candidates"] == DEFAULT_CANDIDATES
    assert exact.settings["candidates"] is None
    assert exact.scopes["corpus"].per_query == approx.scopes["corpus"].per_query


def test_labels_name_model_dataset_and_every_setting_that_differs(sets, tmp_path):
    from pagelens.eval.run import run_label
    from pagelens.pipeline.render import RenderSettings
    from pagelens.pipeline.text import TextSettings
    from tests.fakes import FakeTextEncoder

    enc = vf.ColorEncoder()
    cached = EvalOptions(cache_dir=tmp_path, progress=False)
    base = evaluate(sets["v2"], enc, cached)
    assert base.label == "fake/color v2 pool_factor=3"  # every other setting at its default
    # runs the CLI names alike so far: their files overwrote each other
    exact = evaluate(sets["v2"], enc, dataclasses.replace(cached, candidates=None))
    other_set = evaluate(sets["v3"], enc, cached)
    fewer = evaluate(sets["v2"], enc, dataclasses.replace(cached, candidates=50))
    assert exact.label == "fake/color v2 pool_factor=3 exact"
    assert other_set.label == "fake/color v3 pool_factor=3"
    assert fewer.label == "fake/color v2 pool_factor=3 candidates=50"
    # every recorded setting, one at a time, on the record the label is made from
    variants = {
        "model": {"encoder": {**base.encoder, "model_id": "other/model"}},
        "text model": {"text_encoder": {**base.encoder, "model_id": "minilm"}},
        "dataset": {"dataset": {**base.dataset, "name": "v3"}},
        "queries": {"dataset": {**base.dataset, "selection": {"max_queries": 2}}},
        "language": {"dataset": {**base.dataset, "selection": {"language": "french"}}},
        "split": {"dataset": {**base.dataset, "selection": {"split": "dev"}}},
    }
    changes = {
        "candidates": 50,
        "channels": ["dense", "bm25"],
        "fusion": "rrf",
        "weights": {"bm25": 2.0},
        "first_stage": "hnsw",
        "pool_factor": 1,
        "candidate_factor": 8,
        "fp16": False,
        "text": True,
        "ocr": "always",
        "ocr_lang": "deu",
        "render_dpi": 75,
        "query_batch_size": 8,
        "a_setting_added_later": 1,
    }
    for name, value in changes.items():
        variants[name] = {"settings": {**base.settings, name: value}}
    labels = {name: run_label(dataclasses.replace(base, **v)) for name, v in variants.items()}
    labels["base"] = run_label(base)
    assert len(set(labels.values())) == len(labels), labels
    # the recorded settings come from the run: OCR where the index holds page text
    pdf = evaluate(
        sets["pdf"],
        enc,
        dataclasses.replace(
            cached,
            settings=IndexSettings(text=True),
            render=RenderSettings(dpi=20),
            text=TextSettings(ocr="never"),
            channels=("dense", "text"),
            fusion="rrf",
        ),
        text_encoder=FakeTextEncoder(dim=8),
    )
    assert pdf.label == (
        "fake/color text_model=fake-text pdf pool_factor=3 text channels=dense+text fusion=rrf "
        "render_dpi=20 ocr=never"
    )


def test_sweep_encodes_each_page_once(tmp_path):
    from pagelens.eval.datasets import load_eval_set
    from pagelens.eval.run import EvalOptions, sweep
    from tests.fakes import FakeEncoder
    from tests.vidore_fixtures import build_beir

    data = load_eval_set(build_beir(tmp_path / "v2", version=2))
    enc = FakeEncoder()
    results = sweep(
        data, enc, EvalOptions(scopes=["corpus"], progress=False), pool_factors=[1, 2, 4]
    )
    assert [r.label.split()[-1] for r in results] == [
        "pool_factor=1",
        "pool_factor=2",
        "pool_factor=4",
    ]
    assert enc.pages_seen == results[0].index.pages  # encoded once, pooled three ways


def test_text_channel_beside_the_visual_one(sets, tmp_path):
    from pagelens.pipeline.render import RenderSettings
    from pagelens.pipeline.text import TextSettings
    from tests.fakes import FakeTextEncoder

    enc, text_enc = vf.ColorEncoder(), FakeTextEncoder(dim=8)
    data, render, text = sets["pdf"], RenderSettings(dpi=20), TextSettings(ocr="never")
    plain = IndexSettings(text=True)
    assert index_key(data, enc, plain, render, text, text_enc) != index_key(
        data, enc, plain, render, text
    )
    results = sweep(
        data,
        enc,
        EvalOptions(
            cache_dir=tmp_path,
            render=render,
            text=text,
            channels=("dense", "text"),
            progress=False,
        ),
        pool_factors=[1, 2],
        text_encoder=text_enc,
    )
    assert text_enc.pages_seen == 6  # each page's text encoded once for the sweep
    assert len(list((tmp_path / "text").glob("*.json"))) == 2  # each PDF's text read once
    for result in results:
        assert result.text_encoder == dataclasses.asdict(text_enc.spec)
        assert result.settings["channels"] == ["dense", "text"]
        # colour pages carry no text (OCR off): the text channel finds nothing, and
        # the fusion is the visual ranking, every query first within its document
        assert result.scopes["document"].metrics["mrr_at_10"] == 1.0
    assert "+ text fake-text" in results[0].to_markdown()
    saved = load_result(write_sweep(results, tmp_path / "out")[0])
    assert saved.text_encoder == dataclasses.asdict(text_enc.spec)


def test_options_are_checked_once_when_made():
    with pytest.raises(PagelensError, match="query_batch_size must be a whole number >= 1"):
        EvalOptions(query_batch_size=0)
    options = EvalOptions(scopes=["corpus", "corpus"], channels=["dense"], cache_dir="~/x")
    assert options.scopes == ("corpus",) and options.channels == ("dense",)
    assert str(options.cache_dir) == os.path.expanduser("~/x")


def test_cache_folder_names_stay_as_they_were():
    # the folder of a cached evaluation index starts with this name: changing it
    # would orphan every index users have built
    from pagelens.eval.run import _slug

    assert _slug("mmlongbench-dev") == "mmlongbench-dev"
    assert _slug("vidore/esg reports_v2.1") == "vidore_esg_reports_v2.1"
    assert _slug("a,b=c+d" * 20) == ("a_b_c_d" * 20)[:60]


def test_run_spec_decides_what_the_cli_used_to(tmp_path):
    from pagelens.cli import DEFAULT_MODEL as CLI_DEFAULT
    from pagelens.encoders import DEFAULT_MODEL
    from pagelens.eval.run import DEFAULT_CACHE_DIR, EvalRunSpec

    assert CLI_DEFAULT == DEFAULT_MODEL
    spec = EvalRunSpec("set", pool_factors=[1, 2], scope="corpus", text=True)
    assert spec.pool_factors == (1, 2) and spec.options.scopes == ("corpus",)
    assert spec.options.settings.text and spec.options.cache_dir == DEFAULT_CACHE_DIR.expanduser()
    assert EvalRunSpec("set", url="http://localhost:6333").options.cache_dir is None
    assert EvalRunSpec("set", cache_dir=tmp_path).options.scopes is None
    with pytest.raises(PagelensError, match=r"scope must be one of \['both', 'corpus'"):
        EvalRunSpec("set", scope="page")
    with pytest.raises(PagelensError, match="at least one pool factor"):
        EvalRunSpec("set", pool_factors=[])
