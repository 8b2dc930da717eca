"""The model catalog and ``pagelens models``: every supported family, nothing downloaded."""

from __future__ import annotations

import doctest
import json

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.encoders import catalog as catalog_module
from pagelens.encoders.catalog import UNKNOWN, UNMEASURED, catalog, catalog_json
from pagelens.encoders.colpali import FAMILIES


def test_every_supported_family_has_an_entry_with_sourced_figures() -> None:
    entries = catalog(check_installed=False)
    assert [e.family for e in entries] == [f.name for f in FAMILIES]
    hub_ids = {m.hub_id for e in entries for m in e.models}
    for known in (
        "vidore/colpali-v1.3",
        "vidore/colqwen2-v1.0",
        "vidore/colqwen2.5-v0.2",
        "vidore/colSmol-256M",
        "ModernVBERT/colmodernvbert",
    ):
        assert known in hub_ids
    for entry in entries:
        assert entry.installed is None  # not checked
        assert entry.min_version
        for model in entry.models:
            assert model.parameters == UNKNOWN or model.parameters_source
            assert model.vectors_per_page == UNMEASURED or model.vectors_source
    assert catalog_module.KNOWN_MODELS.keys() <= {f.name for f in FAMILIES}


def test_installed_classes_are_checked() -> None:
    pytest.importorskip("colpali_engine")
    assert all(e.installed for e in catalog())


def test_a_family_missing_from_colpali_engine_is_shown_as_not_installed(monkeypatch) -> None:
    colpali_models = pytest.importorskip("colpali_engine.models")
    monkeypatch.delattr(colpali_models, "ColGemma3")
    installed = {e.family: e.installed for e in catalog()}
    assert installed["colgemma3"] is False and installed["colqwen2_5"] is True


def test_docstring_example_runs() -> None:
    result = doctest.testmod(catalog_module)
    assert result.attempted > 0 and result.failed == 0


def test_models_command_prints_a_table_and_json() -> None:
    runner = CliRunner()
    table = runner.invoke(app, ["models"])
    assert table.exit_code == 0, table.output
    for entry in catalog(check_installed=False):
        assert entry.family in table.output
    assert "vidore/colqwen2.5-v0.2" in table.output

    as_json = runner.invoke(app, ["models", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data == {"schema_version": 1, **json.loads(json.dumps(catalog_json(catalog())))}
    assert [f["family"] for f in data["families"]] == [f.name for f in FAMILIES]
