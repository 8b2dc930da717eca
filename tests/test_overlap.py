"""The overlapped indexing job: the same index as the serial path, crash-safe, OOM-proof."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pagelens.index import Index
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.overlap import PipelineSettings, Writer
from pagelens.pipeline.render import RenderSettings
from pagelens.pipeline.stages import encode
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=30, batch_pages=4)
SERIAL = PipelineSettings(pool_workers=0)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "pdfs"
    (root / "sub").mkdir(parents=True)
    pf.text_pdf(root / "a.pdf", 9, prefix="Alpha")
    pf.text_pdf(root / "sub" / "b.pdf", 2, prefix="Beta")
    pf.broken_page_pdf(root / "c.pdf", 3)
    pf.empty_file(root / "empty.pdf")
    return root


def _points(index):
    """Every point of an index: id -> (payload, vectors)."""
    ids = sorted(index.store.point_ids())
    return {p.id: (p.payload, p.vectors) for p in index.store.retrieve(ids)}


def test_overlapped_run_builds_the_same_index_as_the_serial_one(tmp_path, corpus):
    reports, points = [], []
    for name, pipeline in [
        ("serial", SERIAL),
        ("overlapped", PipelineSettings(pool_workers=2, batches_in_flight=1)),
    ]:
        with Index.open(tmp_path / name) as index:
            reports.append(
                index_paths(
                    index, FakeEncoder(), [corpus], render=RENDER, pipeline=pipeline, progress=False
                )
            )
            points.append(_points(index))
    serial, overlapped = reports
    assert sorted(serial.indexed) == sorted(overlapped.indexed) == ["a.pdf", "c.pdf", "sub/b.pdf"]
    assert serial.skipped == overlapped.skipped and len(serial.skipped) == 1
    assert serial.pages == overlapped.pages == 14
    assert serial.page_errors == overlapped.page_errors and len(serial.page_errors) == 1
    assert overlapped.stages.waited >= 0 and serial.stages.waited == 0
    a, b = points
    assert a.keys() == b.keys() and len(a) == 14 + 3 + 1  # pages, commit records, manifest
    for point_id, (payload, vectors) in a.items():
        other_payload, other_vectors = b[point_id]
        drop = {"created_at", "manifest"}  # the times the indexes were created
        assert {k: v for k, v in payload.items() if k not in drop} == {
            k: v for k, v in other_payload.items() if k not in drop
        }
        assert vectors.keys() == other_vectors.keys()
        for name, v in vectors.items():
            assert np.array_equal(v, other_vectors[name]), (point_id, name)


class _OutOfMemoryAbove(FakeEncoder):
    """Raises torch's own out-of-memory error for a batch above ``most`` pages."""

    def __init__(self, most, *, poison=None, error=torch.OutOfMemoryError):
        super().__init__()
        self.most, self.poison, self.error = most, poison, error
        self.calls: list[int] = []

    def encode_pages(self, pages):
        self.calls.append(len(pages))
        if len(pages) > self.most or any(p.page_number == self.poison for p in pages):
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().encode_pages(pages)


def _pages(tmp_path, n):
    from pagelens.pipeline.discover import discover
    from pagelens.pipeline.render import probe, render_pages

    pf.text_pdf(tmp_path / "p.pdf", n, prefix="Page")
    doc = discover([tmp_path / "p.pdf"]).documents[0]
    return list(render_pages(doc, probe(doc, RENDER), RENDER))


@pytest.mark.parametrize(
    "error", [torch.OutOfMemoryError, torch.cuda.OutOfMemoryError, RuntimeError, MemoryError]
)
def test_an_out_of_memory_batch_is_split_in_halves_down_to_what_fits(tmp_path, error):
    pages = _pages(tmp_path, 8)
    enc = _OutOfMemoryAbove(2, error=error)
    out = encode(enc, pages)
    assert enc.calls == [8, 4, 2, 2, 4, 2, 2]  # halves, not pages one by one
    assert all(not isinstance(v, str) for v in out)
    want = FakeEncoder().encode_pages(pages)
    assert all(np.array_equal(a, b) for a, b in zip(out, want, strict=True))


def test_a_page_that_does_not_fit_alone_is_a_page_error_and_the_run_goes_on(tmp_path, corpus):
    enc = _OutOfMemoryAbove(2, poison=3)
    with Index.open(tmp_path / "idx") as index:
        report = index_paths(index, enc, [corpus], render=RENDER, progress=False)
        assert sorted(report.indexed) == ["a.pdf", "c.pdf", "sub/b.pdf"]
        oom = [e for e in report.page_errors if "out of memory" in e.cause]
        assert {(e.path, e.page_number) for e in oom} == {("a.pdf", 3)}
        assert "OutOfMemoryError" in oom[0].cause and "2.00 GiB" in oom[0].cause
        assert max(enc.calls) == 4 and index.info().pages == 14


def test_a_failure_in_the_writer_reaches_the_caller(tmp_path):
    def boom():
        raise OSError("disk full")

    writer = Writer(workers=1, depth=1)
    writer.submit(boom)
    with pytest.raises(OSError, match="disk full"):
        for _ in range(5):  # raised at the next hand-over, or at close
            writer.submit(lambda: None)
        writer.close()
    writer.close()  # closing again is harmless


def test_the_writer_runs_in_order_and_answers_calls():
    done = []
    with Writer(workers=1, depth=2) as writer:
        for i in range(10):
            writer.submit(done.append, i)
        assert writer.call(len, done) == 10  # after everything handed over before
        assert writer.pool(pow, 2, 10).result() == 1024  # in a pooling process
    assert done == list(range(10))


def test_pipeline_settings_are_checked():
    from pagelens.errors import PagelensError

    with pytest.raises(PagelensError, match="pool_workers"):
        PipelineSettings(pool_workers=-1)
    with pytest.raises(PagelensError, match="batches_in_flight"):
        PipelineSettings(batches_in_flight=0)
    assert PipelineSettings().workers() >= 1 and SERIAL.workers() == 0


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.tiny_models import build_tiny_checkpoint

    return str(build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("m") / "tiny"))


def test_kill_9_during_overlapped_cli_index_loses_and_duplicates_nothing(tmp_path, model):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for i in range(5):
        pf.text_pdf(pdfs / f"d{i}.pdf", 4, prefix=f"Doc{i}")
    idx = str(tmp_path / "idx")
    cmd = [sys.executable, "-m", "pagelens.cli", "index", str(pdfs), "--index", idx]
    cmd += ["--model", model, "--dpi", "40", "-v"]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root, "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    committed = 0
    try:
        assert child.stderr is not None
        for line in child.stderr:
            committed += "committed d" in line
            if committed == 2:  # mid-run: two documents committed, three to go
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert committed == 2 and child.returncode == -signal.SIGKILL
    time.sleep(1.5)  # the pooling processes notice their parent is gone
    with Index.open(idx) as index:
        stored, committed_before = index.count_pages(), index.info().documents
        assert 8 <= stored < 20 and 2 <= committed_before < 5
    from pagelens.encoders import load_encoder

    enc = load_encoder(model, device="cpu")
    seen = []
    original = enc.encode_pages
    enc.encode_pages = lambda pages: seen.extend(pages) or original(pages)  # count, same vectors
    with Index.open(idx) as index:
        report = index_paths(index, enc, [pdfs], render=RenderSettings(dpi=40), progress=False)
        assert len(seen) == 20 - stored  # nothing stored before was encoded again
        assert index.info().documents == 5 and index.count_pages() == 20
        ids = sorted((p["doc_path"], p["page_number"]) for p in index.pages())
        assert len(ids) == len(set(ids)) == 20
        assert len(report.indexed) == 5 - committed_before and not report.page_errors


def test_a_script_without_a_main_guard_can_index(tmp_path, corpus):
    """Pooling workers do not run the caller's script again (they are forked, not spawned)."""
    script = tmp_path / "index_them.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "from pagelens.index import Index\n"
        "from pagelens.pipeline.job import index_paths\n"
        "from pagelens.pipeline.render import RenderSettings\n"
        "from tests.fakes import FakeEncoder\n"
        "print('script body ran', flush=True)\n"
        f"with Index.open({str(tmp_path / 'idx')!r}) as index:\n"
        f"    r = index_paths(index, FakeEncoder(), [{str(corpus)!r}],\n"
        "                    render=RenderSettings(dpi=30), progress=False)\n"
        "print('pages', r.pages, flush=True)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    assert out.count("script body ran") == 1 and "pages 14" in out
