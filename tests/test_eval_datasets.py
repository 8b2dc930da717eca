import json
import shutil
import time

import pytest

from pagelens.errors import InputError, PagelensError
from pagelens.eval.datasets import (
    ImageCorpus,
    PdfCorpus,
    Query,
    categorical_fields,
    load_eval_set,
    load_pdf_set,
)
from tests import vidore_fixtures as vf

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every fixture layout, saved once for the module."""
    root = tmp_path_factory.mktemp("vidore")
    out = {
        "v1": vf.build_v1(root / "v1"),
        "v1-splits": vf.build_v1(root / "v1-splits", layout="splits"),
        "pdf": vf.build_pdf_set(root / "pdf"),
    }
    for version in (2, 3):
        for layout in ("configs", "config-splits", "dict"):
            out[f"v{version}-{layout}"] = vf.build_beir(
                root / f"v{version}-{layout}", version=version, layout=layout
            )
    return out


# --------------------------------------------------------------------------- v1


@pytest.mark.parametrize("layout", ["v1", "v1-splits"])
def test_v1_follows_the_vidore_qa_rules(saved, layout):
    s = load_eval_set(saved[layout])
    assert s.format == "vidore-v1"
    # deduplicated, None dropped, first occurrence order, text is the id
    assert [q.query_id for q in s.queries] == list(vf.V1_QRELS)
    assert all(q.text == q.query_id for q in s.queries)
    # relevance by image_filename; a repeated query takes its last row's page
    assert dict(s.qrels) == vf.V1_QRELS
    # one corpus page per distinct filename, the None-query page included
    assert isinstance(s.corpus, ImageCorpus)
    assert s.corpus.ids == vf.V1_CORPUS
    assert s.queries[0].fields == {"answer": "a red page", "answer_type": "extractive"}
    assert not s.has_documents


def test_v1_pages_are_real_images_with_the_corpus_id_as_path(saved):
    s = load_eval_set(saved["v1"])
    pages = list(s.corpus.iter_pages())
    assert [p.doc_path for p in pages] == list(vf.V1_CORPUS)
    assert all(p.page_number == 1 and p.page_count == 1 for p in pages)
    assert pages[0].image.mode == "RGB" and pages[0].image.size == vf.SIZE
    assert pages[0].image.getpixel((0, 0)) == vf.COLORS["red"]
    assert s.corpus.hit_id("blue_0.png", 1) == "blue_0.png"


def test_v1_max_queries_and_fingerprint(saved):
    a = load_eval_set(saved["v1"], max_queries=2)
    b = load_eval_set(saved["v1-splits"])
    assert len(a.queries) == 2 and set(a.qrels) == {q.query_id for q in a.queries}
    # the corpus (what gets indexed) is the same whatever the layout or query limit
    assert a.corpus_fingerprint == b.corpus_fingerprint


def test_v1_missing_columns_are_named(tmp_path):
    ds = vf.v1_dataset().remove_columns(["image_filename"])
    ds.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(InputError, match=r"missing columns \['image_filename'\]"):
        load_eval_set(tmp_path / "bad")


def test_v1_unknown_split_is_named(saved):
    with pytest.raises(InputError, match="no split 'dev'.*'test'"):
        load_eval_set(saved["v1-splits"], split="dev")


# --------------------------------------------------------------------------- v2 / v3


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("layout", ["configs", "config-splits", "dict"])
def test_beir_layouts_load_the_same_set(saved, version, layout):
    s = load_eval_set(saved[f"v{version}-{layout}"])
    assert s.format == f"vidore-v{version}"
    assert [q.query_id for q in s.queries] == ["10", "11", "12", "13"]
    assert dict(s.qrels) == vf.BEIR_EXPECTED_QRELS
    assert s.dropped_queries == 1  # query 14 has only a 0 judgment
    assert s.corpus.ids == ("0", "1", "2", "3", "4", "5")
    assert dict(s.corpus.docs) == {
        "0": "report_a",
        "1": "report_a",
        "2": "report_a",
        "3": "report_b",
        "4": "report_b",
        "5": "report_b",
    }
    assert s.queries[1].text == "la page verte"
    assert s.queries[1].fields["language"] == "french"


def test_v3_keeps_extra_query_columns_and_skips_heavy_ones(saved):
    s = load_eval_set(saved["v3-configs"])
    q = s.queries[1]
    assert q.fields == {
        "language": "french",
        "query_types": ["extractive", "numerical"],
        "answer": "answer 11",
    }
    # 4 queries: language (2 values) is a category; query_types (3) and answer (4) are not
    assert categorical_fields(s.queries) == ("language",)
    pages = list(s.corpus.iter_pages())
    assert pages[5].doc_path == "5" and pages[5].image.getpixel((3, 3)) == vf.COLORS["cyan"]


@pytest.mark.parametrize("version", [2, 3])
def test_language_filter(saved, version):
    s = load_eval_set(saved[f"v{version}-configs"], language="french")
    assert [q.query_id for q in s.queries] == ["11", "13"]
    assert set(s.qrels) == {"11", "13"}
    with pytest.raises(InputError, match=r"no query has language 'german'.*'english', 'french'"):
        load_eval_set(saved[f"v{version}-configs"], language="german")


def test_beir_missing_columns_are_named(tmp_path):
    parts = vf.beir_parts(3)
    parts["qrels"] = parts["qrels"].remove_columns(["score"])
    for name, ds in parts.items():
        ds.save_to_disk(str(tmp_path / name))
    with pytest.raises(InputError, match=r"\[qrels\].*missing columns \['score'\]"):
        load_eval_set(tmp_path)


def test_beir_without_query_id_is_named(tmp_path):
    parts = vf.beir_parts(2)
    parts["queries"] = parts["queries"].rename_column("query-id", "qid")
    datasets.DatasetDict(parts).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(InputError, match="neither 'query-id'.*nor 'query_id'"):
        load_eval_set(tmp_path / "d")


def test_beir_missing_config_is_named(tmp_path, saved):
    shutil.copytree(saved["v2-configs"], tmp_path / "s")
    shutil.rmtree(tmp_path / "s" / "qrels")
    with pytest.raises(InputError, match=r"missing configs \['qrels'\]"):
        load_eval_set(tmp_path / "s")


def test_format_mismatch_is_named(saved):
    with pytest.raises(InputError, match="QA layout"):
        load_eval_set(saved["v1"], format="vidore-v2")
    with pytest.raises(InputError, match="not a vidore-v1 set"):
        load_eval_set(saved["v3-dict"], format="vidore-v1")
    with pytest.raises(PagelensError, match="unknown dataset format 'v9'"):
        load_eval_set(saved["v1"], format="v9")


def test_a_folder_that_is_no_set_is_named(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="is not an evaluation set"):
        load_eval_set(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        load_eval_set(tmp_path / "nope")


# --------------------------------------------------------------------------- hub


def test_hub_loading_offline_fails_fast_with_a_clear_error(monkeypatch):
    assert datasets.config.HF_HUB_OFFLINE, "tests must run with HF_HUB_OFFLINE=1"
    start = time.perf_counter()
    with pytest.raises(InputError, match="HF_HUB_OFFLINE.*save_to_disk"):
        load_eval_set("vidore/docvqa_test_subsampled")
    with pytest.raises(InputError, match="vidore/vidore_v3_hr.*HF_HUB_OFFLINE"):
        load_eval_set("vidore/vidore_v3_hr", format="vidore-v3", language="english")
    assert time.perf_counter() - start < 10


class FakeHub:
    """Stands in for the Hub: serves fixture datasets by (name, config, split)."""

    def __init__(self):
        self.repos = {
            "vidore/docvqa_test_subsampled": {None: vf.v1_dataset()},
            "vidore/esg_reports_v2": dict(vf.beir_parts(2)),
            "vidore/vidore_v3_hr": dict(vf.beir_parts(3)),
        }
        self.calls = []

    def get_dataset_config_names(self, name, revision=None):
        return ["default"] if None in self.repos[name] else list(self.repos[name])

    def load_dataset(self, name, config=None, *, split, revision=None):
        self.calls.append((name, config, split, revision))
        if split != "test":
            raise ValueError(f"Unknown split {split!r}")
        return self.repos[name][config]


@pytest.mark.parametrize(
    ("name", "fmt", "n"),
    [
        ("vidore/docvqa_test_subsampled", "vidore-v1", 4),
        ("vidore/esg_reports_v2", "vidore-v2", 4),
        ("vidore/vidore_v3_hr", "vidore-v3", 4),
    ],
)
def test_hub_names_go_through_load_dataset(monkeypatch, name, fmt, n):
    hub = FakeHub()
    monkeypatch.setattr(datasets, "get_dataset_config_names", hub.get_dataset_config_names)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    s = load_eval_set(name, revision="abc")
    assert (s.format, len(s.queries), s.source, s.name) == (fmt, n, name, name)
    configs = [c for _, c, _, _ in hub.calls]
    assert configs == ([None] if fmt == "vidore-v1" else ["corpus", "queries", "qrels"])
    assert {r for *_, r in hub.calls} == {"abc"}
    with pytest.raises(InputError, match=f"{name}: cannot load.*Unknown split 'dev'"):
        load_eval_set(name, split="dev")


# --------------------------------------------------------------------------- PDF sets


def test_pdf_set(saved):
    s = load_eval_set(saved["pdf"])
    assert s.format == "pdf" and s.has_documents
    assert isinstance(s.corpus, PdfCorpus)
    assert s.corpus.documents == ("alpha.pdf", "beta.pdf")
    assert [q.query_id for q in s.queries] == ["q1", "q2", "q3", "q4"]
    assert s.queries[1].doc == "alpha.pdf"
    assert s.queries[1].fields["evidence_sources"] == ["Table", "Chart"]
    assert dict(s.qrels) == {
        "q1": {"alpha.pdf#1": 1},
        "q2": {"alpha.pdf#2": 1},
        "q3": {"beta.pdf#3": 1},
        "q4": {"beta.pdf#2": 1},
    }
    assert s.corpus.hit_id("beta.pdf", 3) == "beta.pdf#3"
    assert "evidence_sources" in categorical_fields(s.queries)


def _query(i, **fields):
    return Query(f"q{i}", f"question {i}", fields=fields)


def test_free_text_fields_are_not_broken_down_by_default():
    # 20 queries: the answers are 20 distinct strings (free text, one per query), the
    # document type 3 repeated values (a category)
    queries = [
        _query(i, answer=f"the answer is {i}", doc_type=("report", "slides", "paper")[i % 3])
        for i in range(20)
    ]
    assert categorical_fields(queries) == ("doc_type",)
    # few queries: a field is a category only if its values repeat (at most half as many)
    assert categorical_fields(queries[:4]) == ()
    assert categorical_fields(queries[:6]) == ("doc_type",)
    # too many distinct values, however many queries share them
    many = [_query(i, answer="x", topic=f"t{i % 21}") for i in range(100)]
    assert categorical_fields(many) == ()


def test_pdf_set_fingerprint_follows_the_pdf_bytes(tmp_path, saved):
    copy = shutil.copytree(saved["pdf"], tmp_path / "copy")
    a = load_pdf_set(copy).corpus_fingerprint
    assert load_pdf_set(copy, max_queries=1).corpus_fingerprint == a
    with (copy / "pdfs" / "beta.pdf").open("ab") as fh:
        fh.write(b"\n% appended\n")
    assert load_pdf_set(copy).corpus_fingerprint != a


def test_pdf_set_errors_name_the_problem(tmp_path, saved):
    copy = shutil.copytree(saved["pdf"], tmp_path / "copy")
    (copy / "qrels.tsv").write_text("qid\tcorpus-id\tscore\nq1\talpha.pdf#1\t1\n")
    with pytest.raises(InputError, match=r"missing columns \['query-id'\]"):
        load_pdf_set(copy)
    (copy / "qrels.tsv").unlink()
    with pytest.raises(InputError, match=r"missing \['qrels.tsv'\]"):
        load_pdf_set(copy)


def test_pdf_set_drops_queries_without_judgments(tmp_path, saved):
    copy = shutil.copytree(saved["pdf"], tmp_path / "copy")
    with (copy / "queries.jsonl").open("a") as fh:
        fh.write(json.dumps({"query-id": "q9", "query": "unjudged", "doc": "alpha.pdf"}) + "\n")
    s = load_pdf_set(copy)
    assert s.dropped_queries == 1 and "q9" not in s.qrels


MMLB = "/work/shared/datasets/mmlongbench-dev"


def test_mmlongbench_dev_loads_if_present():
    import os

    if not os.path.isdir(MMLB):
        pytest.skip("mmlongbench-dev is not on this machine")
    s = load_eval_set(MMLB)
    assert s.format == "pdf" and len(s.queries) == 303 and len(s.corpus) == 47
    assert all(q.doc in s.corpus.documents for q in s.queries)
    assert all(cid.split("#")[0] == q.doc for q in s.queries for cid in s.qrels[q.query_id])
    assert "evidence_sources" in categorical_fields(s.queries)
    # a 20-query subset: its 20 answers are free text, not a breakdown
    few = load_eval_set(MMLB, max_queries=20)
    assert "answer" not in categorical_fields(few.queries)
    assert "doc_type" in categorical_fields(few.queries)
