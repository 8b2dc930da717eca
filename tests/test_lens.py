"""The front door: pagelens.open() and Lens, the README's example, the docstring examples."""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pagelens
from pagelens.cli import app
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _readme_python_example() -> str:
    """The first ```python block of the README's Python section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python section has no python block"
    return match.group(1)


def test_the_readme_example_runs_verbatim(tmp_path):
    (tmp_path / "pdfs").mkdir()
    pf.text_pdf(tmp_path / "pdfs" / "a.pdf", 2, prefix="Democrats voted in 2018")
    code = _readme_python_example()
    assert code.count("import ") == 1  # one import
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "a.pdf" in out.stdout


def test_docstring_examples_run():
    import pagelens.lens
    import pagelens.search

    for module in (pagelens.lens, pagelens.search):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted > 0 and result.failed == 0, module.__name__


class _Counting(FakeEncoder):
    loads = 0


def test_encoders_load_lazily_and_only_for_the_channels_used(tmp_path, monkeypatch):
    from pagelens import lens as lens_module

    loaded: list[str] = []

    def fake_load(name, **kwargs):
        loaded.append(name)
        return FakeEncoder(model_id=name)

    monkeypatch.setattr(lens_module, "load_encoder", fake_load)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 2, prefix="Alpha")
    with pagelens.open(tmp_path / "idx", model="fake-model", text=True) as lens:
        assert loaded == []  # opening loads nothing
        report = lens.add([folder], progress=False)
        assert report.indexed == ("a.pdf",) and loaded == ["fake-model"]
    loaded.clear()
    with pagelens.open(tmp_path / "idx") as lens:  # the model comes from the manifest
        assert lens.model == "fake-model"
        hits = lens.search(["alpha"], channels=["bm25"], k=2)
        assert loaded == [] and hits[0] and hits[0][0].channels == ("bm25",)
        hits = lens.search(["alpha"], k=2)  # every channel it holds: dense + bm25
        assert loaded == ["fake-model"] and hits[0]


def test_nothing_to_add_loads_no_model(tmp_path, monkeypatch):
    from pagelens import lens as lens_module

    monkeypatch.setattr(lens_module, "load_encoder", lambda *a, **k: pytest.fail("loaded"))
    (tmp_path / "empty").mkdir()
    with pagelens.open(tmp_path / "idx", model="x") as lens:
        with pytest.raises(pagelens.PagelensError, match="no PDFs found"):
            lens.add([tmp_path / "empty"])


def test_hits_carry_source_and_text_and_a_short_repr(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 1, prefix="Alpha " + "long text " * 50)
    with pagelens.open(tmp_path / "idx", model="minilm") as lens:
        lens.add([folder], progress=False)
        [[hit]] = lens.search(["alpha"], k=1)
    assert hit.source == str(folder / "a.pdf")
    assert hit.text is not None and hit.text.startswith("Alpha long text")
    assert "long text" not in repr(hit) and "a.pdf" in repr(hit)


def test_cli_ls_version_info_delete_and_flags_after_the_command(tmp_path):
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 2, prefix="Alpha")
    pf.text_pdf(folder / "b.pdf", 1, prefix="Beta")
    idx = str(tmp_path / "idx")
    result = runner.invoke(app, ["index", str(folder), "--index", idx, "--model", "minilm", "-q"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["--version"]).stdout.strip() == f"pagelens {pagelens.__version__}"
    listing = runner.invoke(app, ["ls", "--index", idx]).stdout.splitlines()
    assert listing == ["     2  a.pdf", "     1  b.pdf"]
    plain = runner.invoke(app, ["search", "alpha", "--index", idx, "-k", "1", "-q"]).stdout
    assert "      Alpha 1" in plain  # the page's text under the hit
    gone = runner.invoke(app, ["delete", str(folder / "b.pdf"), "--index", idx, "-q"])
    assert gone.exit_code == 0 and "(1 pages)" in gone.stdout
    none = runner.invoke(app, ["info", "--index", str(tmp_path / "typo")])
    assert none.exit_code == 1 and "no index at" in none.output
    assert not (tmp_path / "typo").exists()


def test_unknown_search_options_are_named(tmp_path):
    with pagelens.open(tmp_path / "idx", model="minilm") as lens:
        with pytest.raises(pagelens.PagelensError, match=r"unknown search options \['kk'\]"):
            lens.search(["q"], kk=3)


def _fake_lens(tmp_path, monkeypatch, loaded: list[str]) -> pagelens.Lens:
    """An index of a.pdf (2 pages) and b.pdf (1) built with the fake encoder, reopened."""
    from pagelens import lens as lens_module

    def fake_load(name, **kwargs):
        loaded.append(name)
        return FakeEncoder(model_id=name)

    monkeypatch.setattr(lens_module, "load_encoder", fake_load)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    pf.text_pdf(folder / "a.pdf", 2, prefix="Alpha")
    pf.text_pdf(folder / "b.pdf", 1, prefix="Beta")
    with pagelens.open(tmp_path / "idx", model="fake-model") as lens:
        lens.add([folder], progress=False)
    loaded.clear()
    return pagelens.open(tmp_path / "idx")


def test_find_document_by_recorded_path_sha256_or_absolute_file(tmp_path, monkeypatch):
    with _fake_lens(tmp_path, monkeypatch, []) as lens:
        index = lens.index
        record = index.find_document("a.pdf")
        assert (record.doc_path, record.page_count) == ("a.pdf", 2)
        assert index.find_document(record.doc_sha256) == record
        assert index.find_document(str((tmp_path / "pdfs" / "a.pdf").resolve())) == record
        for missing in ("c.pdf", "pdfs/a.pdf", str(tmp_path / "pdfs" / "c.pdf"), "0" * 64):
            with pytest.raises(pagelens.DocumentNotFoundError, match="no document .*pagelens ls"):
                index.find_document(missing)
        with pytest.raises(pagelens.DocumentNotFoundError, match="named by its path"):
            index.find_document("")
        payload = index.page(record, 2)
        assert (payload["doc_path"], payload["page_number"]) == ("a.pdf", 2)
        for page in (0, 3, True, "1"):
            with pytest.raises(pagelens.PageNotFoundError, match="pages 1 to 2"):
                index.page(record, page)  # type: ignore[arg-type]
        assert [p["page_number"] for p in index.document_pages(record)] == [1, 2]
        # delete names documents the same way, with the same error
        with pytest.raises(pagelens.DocumentNotFoundError, match="no document 'c.pdf'"):
            lens.delete("c.pdf")
        assert lens.delete(str(tmp_path / "pdfs" / "b.pdf")) == 1
        assert [d.doc_path for d in lens.documents()] == ["a.pdf"]


def test_one_function_makes_a_hit_of_a_stored_page(tmp_path, monkeypatch):
    from pagelens.index import hit_from_payload

    with _fake_lens(tmp_path, monkeypatch, []) as lens:
        [[found]] = lens.search(["alpha"], channels=["dense"], k=1)
        made = hit_from_payload(
            lens.index.page(lens.index.find_document(found.doc_path), found.page_number),
            score=found.score,
            channels=found.channels,
        )
    assert made == found and made.payload == found.payload
    assert made.source == str(tmp_path / "pdfs" / made.doc_path)


def test_a_bad_explain_request_loads_no_model(tmp_path, monkeypatch):
    loaded: list[str] = []
    with _fake_lens(tmp_path, monkeypatch, loaded) as lens:
        with pytest.raises(pagelens.DocumentNotFoundError):
            lens.explain("c.pdf", 1, "alpha")
        with pytest.raises(pagelens.PageNotFoundError):
            lens.explain("a.pdf", 3, "alpha")
        with pytest.raises(pagelens.PagelensError, match="no text channel"):
            lens.explain("a.pdf", 1, "alpha", channel="text")
        with pytest.raises(pagelens.PagelensError, match="empty"):
            lens.explain("a.pdf", 1, " ")
        assert loaded == []
