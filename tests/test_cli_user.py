"""What a new user hits on the command line: names, signals, typos, environment, noise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pagelens.cli import app, shown
from tests import pdf_factory as pf
from tests.tiny_models import build_tiny_checkpoint

runner = CliRunner()
ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("m") / "tiny"))


def _cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pagelens.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def _signal_while_loading(args: list[str], sig: int) -> tuple[int, str]:
    """Run ``pagelens -v ARGS``, send ``sig`` once the model loads; (exit status, stderr)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "pagelens.cli", "-v", *args]
    pipe = subprocess.PIPE
    child = subprocess.Popen(cmd, stderr=pipe, stdout=pipe, text=True, env=env)
    assert child.stderr is not None
    for line in child.stderr:  # the model is loading: the command's handlers are set
        if "loading colqwen2_5 checkpoint" in line:
            break
    child.send_signal(sig)
    _, err = child.communicate(timeout=120)
    return child.returncode, err


def test_shown_escapes_controls_and_keeps_text():
    assert shown("caf\\xe9 ünï 文書.pdf") == "caf\\xe9 ünï 文書.pdf"
    assert shown("new\nline\there") == "new\\nline\\there"
    assert shown("esc\x1b[31mred") == "esc\\x1b[31mred"


def test_skips_are_printed_once_names_escaped_and_raw_in_json(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    pf.empty_file(pdfs / "esc\x1b[31mred.pdf")
    pf.text_pdf(pdfs / "new\nline.pdf", 2, prefix="Alpha")
    idx = str(tmp_path / "idx")
    result = _cli("index", str(pdfs), "--index", idx, "--model", "minilm")
    assert result.returncode == 0, result.stderr
    both = result.stdout + result.stderr
    assert "\x1b" not in both and "esc\\x1b[31mred.pdf" in result.stdout
    assert both.count("esc\\x1b[31mred.pdf") == 1  # once, in the summary, not also logged
    assert both.count("indexed 1 documents") == 1
    hits = _cli("search", "alpha", "--index", idx)
    assert "new\\nline.pdf  page" in hits.stdout and "new\nline" not in hits.stdout
    raw = json.loads(_cli("search", "alpha", "--index", idx, "--json").stdout)
    assert raw["results"][0]["hits"][0]["doc_path"] == "new\nline.pdf"  # JSON keeps values raw


def test_a_mistyped_path_or_an_empty_folder_creates_no_index(tmp_path):
    idx = tmp_path / "idx"
    typo = runner.invoke(app, ["index", str(tmp_path / "pdfz"), "--index", str(idx)])
    assert typo.exit_code == 1 and "no such file or directory" in typo.output
    assert not idx.exists()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a pdf")
    empty = runner.invoke(app, ["index", str(tmp_path / "empty"), "--index", str(idx)])
    assert empty.exit_code == 1 and "no PDFs found" in empty.output
    assert not idx.exists()


def test_sigterm_ends_an_index_run_as_ctrl_c_does(tmp_path, model):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for i in range(6):
        pf.text_pdf(pdfs / f"d{i}.pdf", 8, prefix=f"Doc {i}")
    args = ["index", str(pdfs), "--index", str(tmp_path / "idx"), "--model", model]
    returncode, err = _signal_while_loading(args, signal.SIGTERM)
    assert returncode == 130, err[-2000:]
    assert "interrupted: committed documents are kept; run again to resume" in err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_the_run_ended_says_nothing_is_lost(sig):
    """Once the summary is due, a signal ends the teardown with a word, not silently."""
    code = (
        "import os, time\n"
        "from pagelens.cli import run_ended\n"
        "run_ended()\n"
        f"os.kill(os.getpid(), {int(sig)})\n"
        "time.sleep(30)\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 128 + sig, done.stderr
    name = signal.Signals(sig).name
    assert f"{name} after the run had ended: every document was committed" in done.stderr


def test_environment_variables_are_named_in_errors(tmp_path):
    result = runner.invoke(
        app,
        ["search", "q", "--index", str(tmp_path / "i")],
        env={"QDRANT_URL": "http://127.0.0.1:9"},
    )
    assert result.exit_code == 1
    assert "--index and --url (from QDRANT_URL) exclude each other" in result.output


def test_no_server_at_url_suggests_docker_compose():
    result = runner.invoke(app, ["info", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "docker compose up -d" in result.output


def test_search_uses_every_channel_the_index_holds_and_says_so(tmp_path):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    pf.text_pdf(pdfs / "a.pdf", 2, prefix="Revenue")
    idx = str(tmp_path / "idx")
    assert runner.invoke(app, ["-q", "index", str(pdfs), "--index", idx, "--model", "minilm"])
    plain = runner.invoke(app, ["-q", "search", "revenue", "--index", idx])
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.splitlines()[0] == "channels: dense+bm25 (dbsf)"
    assert "[dense+bm25]" in plain.stdout
    one = json.loads(
        runner.invoke(
            app, ["-q", "search", "revenue", "--index", idx, "--channels", "bm25", "--json"]
        ).stdout
    )
    assert one["channels"] == ["bm25"]


def test_colpali_engines_fastplaid_notice_is_not_printed(tmp_path, model):
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    pf.text_pdf(pdfs / "a.pdf", 1)
    result = _cli("index", str(pdfs), "--index", str(tmp_path / "idx"), "--model", model)
    assert result.returncode == 0, result.stderr
    assert "FastPlaid" not in result.stderr + result.stdout


def test_a_search_while_an_index_run_holds_the_folder_can_wait(tmp_path):
    from pagelens.storage.edge import EdgeStore
    from pagelens.storage.layout import CollectionSpec

    store = EdgeStore(tmp_path / "idx")
    store.create(CollectionSpec(dim=4))
    try:
        busy = _cli("info", "--index", str(tmp_path / "idx"), "--wait", "0.5")
        assert busy.returncode == 1
        assert "in use by another pagelens process (waited 0.5 s)" in busy.stderr
    finally:
        store.close()


def test_ctrl_c_during_eval_run_says_what_was_kept(tmp_path, model):
    from tests.vidore_fixtures import build_pdf_set

    data = build_pdf_set(tmp_path / "set")
    args = ["eval", "run", str(data), "--model", model]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]
    returncode, err = _signal_while_loading(args, signal.SIGINT)
    assert returncode == 130, err[-2000:]
    assert "interrupted: the evaluation index keeps what was committed" in err
