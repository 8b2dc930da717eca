"""An encoder is what it computes, not the path it was typed as."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.encoders import load_encoder
from pagelens.encoders.base import EncoderSpec
from pagelens.errors import IndexMismatchError
from pagelens.index import Index, Manifest
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import search
from tests import pdf_factory as pf
from tests.tiny_models import build_tiny_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder holding models/tiny (a tiny ColQwen2.5) and pdfs/ with one PDF."""
    root = tmp_path_factory.mktemp("ws")
    build_tiny_checkpoint("colqwen2_5", root / "models" / "tiny")
    (root / "pdfs").mkdir()
    pf.text_pdf(root / "pdfs" / "a.pdf", 2, prefix="Revenue")
    return root


def test_an_index_built_with_a_relative_path_is_searched_from_anywhere(
    workspace, tmp_path, monkeypatch
):
    monkeypatch.chdir(workspace)
    idx = str(tmp_path / "idx")
    built = runner.invoke(
        app, ["-q", "index", "pdfs", "--index", idx, "--model", "models/tiny", "--dpi", "30"]
    )
    assert built.exit_code == 0, built.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = runner.invoke(app, ["-q", "search", "revenue", "--index", idx, "--json"])
    assert found.exit_code == 0, found.output
    assert json.loads(found.stdout)["results"][0]["hits"]
    absolute = str(workspace / "models" / "tiny")
    again = runner.invoke(
        app, ["-q", "search", "revenue", "--index", idx, "--model", absolute, "--json"]
    )
    assert again.exit_code == 0, again.output
    info = json.loads(runner.invoke(app, ["info", "--index", idx, "--json"]).stdout)
    encoder = info["manifest"]["encoder"]
    assert encoder["model_id"] == absolute and encoder["given"] == "models/tiny"


def test_page_vectors_are_part_of_the_identity(workspace, tmp_path):
    model = str(workspace / "models" / "tiny")
    everything = load_encoder(model, device="cpu")
    images_only = load_encoder(model, device="cpu", page_vectors="image")
    assert everything.spec.revision == images_only.spec.revision
    with Index.open(tmp_path / "idx") as index:
        index_paths(
            index, everything, [workspace / "pdfs"], render=RenderSettings(dpi=30), progress=False
        )
        with pytest.raises(IndexMismatchError) as err:
            search(index, images_only, ["revenue"], channels=["dense"])
    assert "page vectors all" in str(err.value) and "page vectors image" in str(err.value)


def test_a_manifest_from_before_page_vectors_still_matches():
    old = {  # what the release before this one wrote
        "kind": "manifest",
        "format": 1,
        "encoder": {"model_id": "./tiny", "revision": "local-abc", "dim": 128, "family": "x"},
        "text_encoder": None,
        "settings": {"pool_factor": 3, "candidate_factor": 16, "fp16": True, "text": False},
        "pagelens_version": "0.1.0",
        "created_at": "2026-11-30T00:00:00+00:00",
    }
    spec = Manifest.from_payload(old).encoder
    now = EncoderSpec("/abs/tiny", "local-abc", 128, "x", page_vectors="all", given="tiny")
    assert spec.same_vectors(now)
    assert not spec.same_vectors(EncoderSpec("/abs/tiny", "local-abd", 128, "x"))
