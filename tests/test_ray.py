"""The indexing job on Ray Data: the same index as the single-process job, crash-safe.

One local Ray instance (2 CPUs) serves the module; the encoder is a tiny random-init
ColQwen2.5 checkpoint built offline, loaded by each encoding actor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

from pagelens.cli import app  # noqa: E402
from pagelens.encoders import load_encoder  # noqa: E402
from pagelens.errors import MissingExtraError, PagelensError  # noqa: E402
from pagelens.index import Index, IndexSettings  # noqa: E402
from pagelens.pipeline.distributed import (  # noqa: E402
    EncoderLoader,
    IndexTarget,
    RayOptions,
    index_paths_ray,
)
from pagelens.pipeline.job import index_paths  # noqa: E402
from pagelens.pipeline.render import RenderSettings  # noqa: E402
from pagelens.storage.layout import CHANNEL_VECTORS, CollectionSpec  # noqa: E402
from pagelens.storage.server import ClusterSpec, ServerStore  # noqa: E402
from tests import hostile  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402
from tests.fakes import FakeEncoder  # noqa: E402
from tests.tiny_models import build_tiny_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RENDER = RenderSettings(dpi=30, batch_pages=2)
SETTINGS = IndexSettings(text=True)  # page text and BM25 too: every stage runs
# rerank vectors are stored in 8 bits (TurboQuant) by the embedded engine and as given
# by qdrant-client's local mode. Across those two backends a
# unit vector's component differs by up to about 3e-3 (measured), within one by none.
STORED = 1e-2
# the first stage's candidate and coarse vectors are stored in 4 bits (manifest format
# 5) by the embedded engine: a unit vector's component comes back within 0.112 of its
# value (measured over 8,000 unit vectors of dim 16; 0.055 at dim 128)
FIRST_STAGE_STORED = 0.15
FIRST_STAGE = {n for c in CHANNEL_VECTORS.values() for n in (c.candidates, c.coarse)}


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module; workers import this checkout and stay offline."""
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(build_tiny_checkpoint("colqwen2_5", tmp_path_factory.mktemp("m") / "tiny"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A dozen PDFs and files: good ones, bad pages, files that must be skipped."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    pf.text_pdf(root / "a.pdf", 3, prefix="Alpha")
    pf.text_pdf(root / "b.pdf", 2, prefix="Beta")
    pf.text_pdf(root / "sub" / "c.pdf", 4, prefix="Gamma")
    pf.image_pdf(root / "sub" / "scan.pdf", 2)
    (root / "sliver.pdf").write_bytes(
        pf.pdf_bytes(["Tiny", "Normal"], sizes=[(14400.0, 3.0), pf.LETTER])
    )
    hostile.write_unloadable_pages(root)  # broken-middle, broken-last, broken-only
    hostile.write_encrypted(root)  # owner-only (indexes), locked (skipped)
    hostile.write_broken_files(root)  # empty, truncated, text.pdf: skipped
    return root


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, model):
    """The single-process job's index of the corpus, and its report."""
    folder = tmp_path_factory.mktemp("reference") / "index"
    encoder = load_encoder(model, device="cpu", batch_size=2)
    with Index.open(folder) as index:
        report = index_paths(
            index, encoder, [corpus], settings=SETTINGS, render=RENDER, progress=False
        )
    return folder, report


@pytest.fixture(scope="module")
def fake_reference(tmp_path_factory, corpus):
    """The single-process job's index of the corpus with the fake encoder (no weights)."""
    folder = tmp_path_factory.mktemp("fake-reference") / "index"
    with Index.open(folder) as index:
        report = index_paths(
            index, FakeEncoder(), [corpus], settings=SETTINGS, render=RENDER, progress=False
        )
    return folder, report


def _ray_index(target, corpus, model_or_loader, **kw):
    return index_paths_ray(
        target,
        [corpus],
        model=model_or_loader,
        settings=SETTINGS,
        render=RENDER,
        options=RayOptions(encode_pages=3, write_pages=4),
        **kw,
    )


def _loader(model):
    return EncoderLoader(model, device="cpu", batch_size=2)


def _points(folder, *, client=False):
    """Every point of an index (a folder, or qdrant-client's local mode): id -> point."""
    index = Index(ServerStore(path=str(folder)), "local") if client else Index.open(folder)
    try:
        ids = sorted(index.store.point_ids())
        return {p.id: (dict(p.payload), dict(p.vectors)) for p in index.store.retrieve(ids)}
    finally:
        index.close()


def _without_time(payload):
    """A payload without the manifest's creation time (the one field two runs differ in)."""
    out = dict(payload)
    for key in ("created_at",):
        out.pop(key, None)
    if isinstance(out.get("manifest"), dict):
        out["manifest"] = {k: v for k, v in out["manifest"].items() if k != "created_at"}
    return out


def _assert_same_index(folder, reference_folder, *, client=False):
    got, want = _points(folder, client=client), _points(reference_folder)
    assert sorted(got) == sorted(want)  # the same point ids: nothing lost, nothing extra
    for pid, (payload, vectors) in want.items():
        other_payload, other_vectors = got[pid]
        assert _without_time(other_payload) == _without_time(payload), pid
        assert sorted(other_vectors) == sorted(vectors), pid
        for name, v in vectors.items():
            assert other_vectors[name].shape == v.shape, (pid, name)
            atol = FIRST_STAGE_STORED if name in FIRST_STAGE else STORED
            np.testing.assert_allclose(other_vectors[name], v, atol=atol, err_msg=f"{pid} {name}")


def _assert_same_report(report, want):
    assert report.indexed == want.indexed
    assert report.skipped == want.skipped  # the same files, the same causes
    assert report.page_errors == want.page_errors
    assert report.pages == want.pages


@pytest.mark.slow  # a Ray run: workers start, a model loads per actor
def test_ray_index_equals_the_single_process_index(ray_local, tmp_path, corpus, model, reference):
    folder, want = reference
    report = _ray_index(IndexTarget(path=str(tmp_path / "index")), corpus, _loader(model))

    _assert_same_report(report, want)
    assert {s.path for s in report.skipped} >= {"locked.pdf", "empty.pdf", "broken-only.pdf"}
    assert report.page_errors  # broken pages kept without vectors, as single-process
    _assert_same_index(tmp_path / "index", folder)


class KillOnce:
    """Load an encoder whose process is killed (SIGKILL) at its first batch, once.

    The marker file says the kill happened, so the actor Ray restarts in its place
    encodes normally.
    """

    def __init__(self, loader, marker):
        self.loader, self.marker = loader, marker

    def __call__(self):
        encoder = self.loader()
        marker = self.marker

        class Killing:
            spec = encoder.spec

            def encode_pages(self, pages):
                if not os.path.exists(marker):
                    Path(marker).write_text(str(os.getpid()))
                    os.kill(os.getpid(), signal.SIGKILL)
                return encoder.encode_pages(pages)

            def encode_queries(self, texts):
                return encoder.encode_queries(texts)

        return Killing()


@pytest.mark.slow  # a Ray run: workers start, a model loads per actor
def test_a_worker_killed_mid_run_is_retried_and_the_index_completes(
    ray_local, tmp_path, corpus, fake_reference
):
    """Into qdrant-client's local mode (a folder), whose one writer actor owns it.

    The fake encoder (no weights to load) keeps the restarted actor quick.
    """
    folder, want = fake_reference
    marker = tmp_path / "killed"
    target = IndexTarget(client_path=str(tmp_path / "local"))
    report = _ray_index(target, corpus, KillOnce(FakeEncoder, str(marker)))
    assert marker.exists()  # an encoding actor was killed with SIGKILL mid-run
    _assert_same_report(report, want)
    _assert_same_index(tmp_path / "local", folder, client=True)


DRIVER = textwrap.dedent(
    """
    import logging, sys, time
    import ray
    from pagelens.pipeline.distributed import IndexTarget, RayOptions, index_paths_ray
    from pagelens.index import IndexSettings
    from pagelens.pipeline.render import RenderSettings
    from tests.fakes import FakeEncoder

    class Slow:
        def __init__(self, loader):
            self.loader = loader
        def __call__(self):
            encoder = self.loader()
            class Slowed:
                spec = encoder.spec
                def encode_pages(self, pages):
                    time.sleep(0.5 * len(pages))
                    return encoder.encode_pages(pages)
                def encode_queries(self, texts):
                    return encoder.encode_queries(texts)
            return Slowed()

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    address, folder, corpus = sys.argv[1:4]
    ray.init(address=address, log_to_driver=False)
    index_paths_ray(
        IndexTarget(path=folder), [corpus],
        model=Slow(FakeEncoder),
        settings=IndexSettings(text=True), render=RenderSettings(dpi=30, batch_pages=2),
        options=RayOptions(encode_pages=3, write_pages=4),
    )
    print("finished", flush=True)
    """
)


@pytest.mark.slow  # a Ray run: workers start, a model loads per actor
def test_the_driver_killed_then_a_rerun_completes_the_index(
    ray_local, tmp_path, corpus, fake_reference
):
    folder, want = fake_reference
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, str(script), ray_local, str(tmp_path / "index"), str(corpus)]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # kill it once a first document is committed, mid-run
        seen.append(line)
        if "committed" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert any("committed" in line for line in seen), "".join(seen[-20:])

    with Index.open(tmp_path / "index", wait_s=60) as index:  # its writer actor is gone
        committed = {r.doc_path for r in index.documents()}
        assert 0 < len(committed) < len(want.indexed)  # killed part way through
        pending = index.pending_documents()

    report = _ray_index(IndexTarget(path=str(tmp_path / "index")), corpus, FakeEncoder)
    assert sorted(report.unchanged) == sorted(committed)
    assert sorted(report.indexed + report.unchanged) == sorted(want.indexed)
    assert report.skipped == want.skipped
    _assert_same_index(tmp_path / "index", folder)  # nothing lost, nothing duplicated
    with Index.open(tmp_path / "index") as index:
        assert index.pending_documents() == {}  # every interrupted document settled
    assert pending or committed  # the kill left work to resume


def test_cli_ray_hands_the_run_to_index_paths_ray(monkeypatch, tmp_path):
    """The thin CLI layer: --ray routes the run, with its target and options, to Ray."""
    import pagelens.pipeline.distributed as distributed
    from pagelens.pipeline.job import IndexReport

    calls = []

    def record(target, paths, **kw):
        calls.append((target, paths, kw))
        return IndexReport(("a.pdf",), (), (), (), (), pages=2, seconds=1.0)

    monkeypatch.setattr(distributed, "index_paths_ray", record)
    url = "http://qdrant:6333"
    args = ["-q", "index", str(tmp_path), "--url", url, "--model", "m", "--ray", "--json"]
    cluster = ["--shards", "6", "--replicas", "2", "--write-consistency", "2"]
    result = CliRunner().invoke(app, [*args, "--ray-address", "auto", *cluster])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["indexed"] == ["a.pdf"]
    ((target, paths, kw),) = calls
    assert target == IndexTarget(url=url, cluster=ClusterSpec(6, 2, 2))
    assert paths == [tmp_path] and kw["model"] == "m"
    assert kw["options"] == RayOptions(address="auto", progress=False)  # -q: no bars


# -- without Ray running ----------------------------------------------------------------


class _FakeQdrant(BaseHTTPRequestHandler):
    """Answers qdrant-client's REST calls for creating a collection; records each body."""

    requests: list[tuple[str, str, dict]] = []

    def _answer(self, result):
        body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(("GET", self.path, {}))
        if self.path == "/":  # the client's version check reads the server's version
            body = json.dumps({"title": "qdrant", "version": "1.19.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._answer({"exists": False} if self.path.endswith("/exists") else {})

    def do_PUT(self):  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.requests.append(("PUT", self.path, body))
        index_op = {"operation_id": 0, "status": "completed"}
        self._answer(index_op if "/index" in self.path else True)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_qdrant():
    _FakeQdrant.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeQdrant)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FakeQdrant.requests
    server.shutdown()


def test_the_collection_request_carries_shards_replicas_and_write_consistency(fake_qdrant):
    url, requests = fake_qdrant
    target = IndexTarget(url=url, collection="pages", cluster=ClusterSpec(3, 2, 2))
    store = target.open().store
    store.create(CollectionSpec(dim=128, format=1))
    store.close()
    created = [
        body for method, path, body in requests if (method, path) == ("PUT", "/collections/pages")
    ]
    assert len(created) == 1
    body = created[0]
    assert (body["shard_number"], body["replication_factor"]) == (3, 2)
    assert body["write_consistency_factor"] == 2
    assert set(body["vectors"]) == {"pages", "pooled"}  # the same layout as one server


def test_without_cluster_options_the_server_chooses(fake_qdrant):
    url, requests = fake_qdrant
    store = ServerStore(url=url, collection="pages")
    store.create(CollectionSpec(dim=128, format=1))
    store.close()
    body = next(b for m, p, b in requests if (m, p) == ("PUT", "/collections/pages"))
    assert body.get("shard_number") is None and body.get("replication_factor") is None


def test_cluster_options_are_checked():
    with pytest.raises(PagelensError, match="write_consistency 3 exceeds the replicas"):
        ClusterSpec(shards=2, replicas=2, write_consistency=3)
    with pytest.raises(PagelensError, match="shards must be a whole number >= 1"):
        ClusterSpec(shards=0)
    with pytest.raises(PagelensError, match="Qdrant server or cluster"):
        IndexTarget(path="x", cluster=ClusterSpec(shards=2))
    with pytest.raises(PagelensError, match="exactly one of path, url or client_path"):
        IndexTarget(path="x", url="http://localhost:6333")


def test_cli_cluster_options_need_a_url(tmp_path):
    result = CliRunner().invoke(
        app, ["index", str(tmp_path), "--index", str(tmp_path / "i"), "--shards", "3"]
    )
    assert result.exit_code == 1
    assert "--shards, --replicas and --write-consistency" in result.output
    assert "--url" in result.output


def test_without_ray_the_error_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'pagelens\[ray\]'"):
        index_paths_ray(IndexTarget(path=str(tmp_path / "i")), [tmp_path])


def test_importing_pagelens_does_not_import_ray():
    modules = "pagelens, pagelens.cli, pagelens.pipeline.distributed"
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ray_options_are_checked():
    with pytest.raises(PagelensError, match="encode_pages must be a whole number >= 1"):
        RayOptions(encode_pages=0)
    with pytest.raises(PagelensError, match="cpus_per_encoder must be > 0"):
        RayOptions(cpus_per_encoder=0)


def test_compose_cluster_profile_is_three_nodes_pinned_like_the_single_node():
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    nodes = {name: s for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert len(nodes) == 3
    assert {s["image"] for s in nodes.values()} == {services["qdrant"]["image"]}
    assert ":latest" not in services["qdrant"]["image"]
    for node in nodes.values():
        assert node["environment"]["QDRANT__CLUSTER__ENABLED"] == "true"
        assert all(p.startswith("127.0.0.1:") for p in node["ports"])  # no key by default
    joining = [s for s in nodes.values() if "--bootstrap" in s["command"]]
    assert len(joining) == 2  # two nodes join the first
