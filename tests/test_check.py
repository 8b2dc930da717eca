"""pagelens check: damaged copies of a small index, each found, refused or repaired.

A corruption generator damages a copy of one small embedded index in each way
seen in the field (byte flips and truncation in vector files, a lost segment, a
lost manifest, damaged payload and offset files, a damaged id tracker); each
test asserts that ``check`` names the damage (or opening fails with a clear
StoreError), and that ``--repair`` followed by re-indexing gives an index that
checks clean and searches sanely.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pagelens.errors import IndexMismatchError, PagelensError, StoreError
from pagelens.index import Index
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import search
from pagelens.storage import edge
from pagelens.storage.base import PayloadFilter, PointRecord
from pagelens.storage.check import NORM_RANGE, check_index, repair_index
from pagelens.storage.layout import MANIFEST_POINT_ID, PAGES
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=30, batch_pages=2)
DOCS = {"a.pdf": 3, "sub/b.pdf": 2}


def _pdfs(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    pf.text_pdf(root / "a.pdf", DOCS["a.pdf"], prefix="Alpha")
    pf.text_pdf(root / "sub" / "b.pdf", DOCS["sub/b.pdf"], prefix="Beta")
    return root


def _index(index: Index, pdfs: Path, encoder: FakeEncoder | None = None):
    return index_paths(index, encoder or FakeEncoder(), [pdfs], render=RENDER, progress=False)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small healthy embedded index (closed), and the PDFs it was built from."""
    root = tmp_path_factory.mktemp("pristine")
    pdfs = _pdfs(root / "pdfs")
    with Index.open(root / "index") as idx:
        _index(idx, pdfs)
    return root / "index", pdfs


@pytest.fixture
def copy(pristine, tmp_path):
    """A copy of the pristine index to damage (``cp -a`` keeps its files sparse)."""
    folder = tmp_path / "index"
    subprocess.run(["cp", "-a", str(pristine[0]), str(folder)], check=True)
    return folder


# -- the corruption generator -----------------------------------------------------
def _segment_files(folder: Path, pattern: str) -> list[Path]:
    files = sorted((folder / "qdrant-edge" / "segments").glob(f"*/{pattern}"))
    assert files, f"no {pattern} under {folder}: the engine's layout changed"
    return files


def _flip(path: Path, start: int, n: int) -> None:
    data = bytearray(path.read_bytes())
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _delete_manifest(folder: Path) -> None:
    store = edge.EdgeStore(folder)
    store.delete_points([MANIFEST_POINT_ID])
    store.close()


def damage(folder: Path, how: str) -> None:
    """Damage the index in ``folder`` in one of the ways of ``CORRUPTIONS``."""
    if how == "vector_flips":  # the first pages' rerank vectors, in place
        for f in _segment_files(folder, "vector_storage-pages/*vectors/chunk_0.mmap"):
            _flip(f, 0, 200)
    elif how == "vector_truncated":
        for f in _segment_files(folder, "vector_storage-pages/*vectors/chunk_0.mmap"):
            with open(f, "r+b") as fh:
                fh.truncate(100)
    elif how == "segment_lost":
        # What a lost segment folder takes depends on how the engine laid the points
        # out (and what its write-ahead log replays), so the points such a loss took
        # in the reported case are removed here directly: the manifest and every
        # page of one document, whose commit record stays behind.
        store = edge.EdgeStore(folder)
        pages = [
            p.id
            for p in store.retrieve(store.point_ids())
            if p.payload.get("doc_path") == "sub/b.pdf" and p.payload.get("kind") == "page"
        ]
        store.delete_points([MANIFEST_POINT_ID, *pages])
        store.close()
    elif how == "manifest_deleted":
        _delete_manifest(folder)
    elif how == "payload_damaged":
        for f in _segment_files(folder, "payload_storage/page_0.dat"):
            _flip(f, 0, 300)
    elif how == "offsets_damaged":
        for f in _segment_files(folder, "vector_storage-pages/*offsets/chunk_0.mmap"):
            _flip(f, 0, 64)
    elif how == "id_tracker_damaged":
        for f in _segment_files(folder, "mutable_id_tracker.mappings"):
            _flip(f, 20, 40)
    else:
        raise ValueError(how)


# what check reports for each: (problem subject, words in its cause)
REPAIRABLE = {
    "vector_flips": ("a.pdf", "norms"),
    "vector_truncated": ("a.pdf", "unreadable"),
    "segment_lost": ("manifest", "missing"),
    "manifest_deleted": ("manifest", "missing"),
    "payload_damaged": (None, "unreadable"),
    "offsets_damaged": ("a.pdf", "unreadable"),
}


def _check(folder: Path):
    with Index.open(folder, verify=True) as idx:
        return check_index(idx)


def _assert_healthy(folder: Path, pdfs: Path) -> None:
    """Re-index, then: check passes, every document is there, scores are sane."""
    with Index.open(folder) as idx:
        _index(idx, pdfs)
    report = _check(folder)
    assert report.ok, report.problems
    assert (report.documents, report.pages) == (len(DOCS), sum(DOCS.values()))
    with Index.open(folder) as idx:
        assert {d.doc_path for d in idx.documents()} == set(DOCS)
        hits = search(idx, FakeEncoder(), ["alpha page"], k=5)[0]
    # MaxSim of unit vectors: at most one per query token
    assert len(hits) == 5 and all(h.score <= 2.0 + 1e-3 for h in hits)


def test_a_healthy_index_checks_clean(copy):
    report = _check(copy)
    assert report.ok and report.repairable and report.advice == ""
    assert (report.documents, report.pages) == (2, 5)


@pytest.mark.parametrize("how", sorted(REPAIRABLE))
def test_check_finds_the_damage_and_repair_heals_it(copy, pristine, how):
    damage(copy, how)
    report = _check(copy)
    subject, words = REPAIRABLE[how]
    assert not report.ok and report.repairable
    assert any(
        (subject is None or p.subject == subject) and words in p.cause for p in report.problems
    ), report.problems
    assert "pagelens check --repair" in report.advice
    with Index.open(copy, verify=True) as idx:
        repaired = repair_index(idx)
    assert _check(copy).ok  # healthy, with fewer documents until they are indexed again
    with Index.open(copy) as idx:
        rerun = _index(idx, pristine[1])
    assert set(repaired.requeued) <= set(rerun.indexed)
    _assert_healthy(copy, pristine[1])


@pytest.mark.parametrize("how", sorted(REPAIRABLE))
def test_damage_without_check_is_a_clear_error_or_a_working_index(copy, how):
    """Opening, info and search: a PagelensError naming the index, never an engine's."""
    damage(copy, how)
    try:
        with Index.open(copy) as idx:
            idx.info()
            search(idx, FakeEncoder(), ["alpha"], k=3)
    except PagelensError as exc:
        assert str(copy) in str(exc)
        assert "pagelens check" in str(exc)


def test_flipped_vectors_were_silent_and_check_finds_them(copy):
    damage(copy, "vector_flips")
    with Index.open(copy) as idx:  # nothing stops a search...
        top = search(idx, FakeEncoder(), ["alpha"], k=1)[0][0]
    assert top.score > 2  # ...whose scores are impossible for unit vectors
    report = _check(copy)
    bad = [p for p in report.problems if p.kind == "document"]
    assert [p.subject for p in bad] == ["a.pdf"] and f"expected {NORM_RANGE[0]}" in bad[0].cause


def test_a_lost_manifest_refuses_another_encoder_until_repaired(copy, pristine):
    damage(copy, "manifest_deleted")
    with pytest.raises(StoreError, match="no manifest.*pagelens check --repair"):
        Index.open(copy)
    with Index.open(copy, verify=True) as idx:
        repaired = repair_index(idx)
    assert repaired.manifest_rebuilt and repaired.requeued == ()
    with Index.open(copy) as idx, pytest.raises(IndexMismatchError, match="fake"):
        _index(idx, pristine[1], FakeEncoder(dim=8, model_id="other"))
    with Index.open(copy) as idx:
        assert _index(idx, pristine[1]).indexed == ()  # nothing lost: all unchanged


def test_a_lost_manifest_without_copies_is_refused(copy):
    """Indexes written before commit records kept the manifest: rebuild refused."""
    with Index.open(copy) as idx:
        idx.store.set_payload(PayloadFilter(kind="document"), {"manifest": None})
    (copy / "ledger.jsonl").unlink()  # nor a ledger (test_ledger: its copy rebuilds it)
    damage(copy, "manifest_deleted")
    report = _check(copy)
    assert not report.repairable and "new folder" in report.advice
    assert "do not all keep a copy of it (indexes built before they did)" in report.advice
    with (
        Index.open(copy, verify=True) as idx,
        pytest.raises(PagelensError, match="cannot repair.*new folder"),
    ):
        repair_index(idx)


@pytest.mark.parametrize("records", ["unreadable", "damaged copies"])
def test_a_lost_manifest_with_damaged_records_says_so(copy, records):
    """Not "built before they did": this release built it, and its records are damaged."""
    with Index.open(copy) as idx:
        garbled = {"page_count": "three"} if records == "unreadable" else {"manifest": {"x": 1}}
        idx.store.set_payload(PayloadFilter(kind="document"), garbled)
    (copy / "ledger.jsonl").unlink()  # nor the ledger's copy of the manifest
    damage(copy, "manifest_deleted")
    report = _check(copy)
    assert not report.repairable and "built before" not in report.advice
    want = {
        "unreadable": "no commit record could be read to rebuild it from (2 points are damaged",
        "damaged copies": "2 commit records hold a damaged copy of it",
    }[records]
    assert want in report.advice


# -- the same bodies on every backend: damage written through the Store API ------
@pytest.fixture(params=["edge", "client"])
def index(request, tmp_path):
    pdfs = _pdfs(tmp_path / "pdfs")
    if request.param == "edge":
        idx = Index.open(tmp_path / "index", verify=True)
    else:
        idx = Index.open(location=":memory:", verify=True)
    _index(idx, pdfs)
    yield idx, pdfs
    idx.close()


def _sha(idx: Index, path: str) -> str:
    return next(r.doc_sha256 for r in idx.documents() if r.doc_path == path)


def test_store_damage_is_found_and_repaired_on_every_backend(index):
    idx, pdfs = index
    assert check_index(idx).ok
    # a.pdf: its first page's vectors scaled (not unit any more)
    page = next(p for p in idx.store.retrieve(list(idx.store.point_ids())) if PAGES in p.vectors)
    scaled = {name: v * 40 for name, v in page.vectors.items()}
    idx.store.upsert([PointRecord(page.id, page.payload, scaled)])
    damaged_doc = page.payload["doc_path"]
    other = next(d for d in DOCS if d != damaged_doc)
    # the other document: its commit record lost, so its pages are orphans
    idx.store.delete(PayloadFilter(kind="document", doc_sha256=(_sha(idx, other),)))
    report = check_index(idx)
    kinds = {(p.kind, p.subject) for p in report.problems}
    # an embedded index's ledger knows the record was lost; a server's cannot tell
    if idx.ledger is None:
        assert kinds == {("document", damaged_doc), ("orphan", other)}
    else:
        assert kinds == {("document", damaged_doc), ("lost", other)}
    repaired = repair_index(idx)
    if idx.ledger is None:
        assert repaired.requeued == (damaged_doc,) and repaired.orphans == 1
    else:
        assert sorted(repaired.requeued) == sorted(DOCS) and repaired.orphans == 0
    assert check_index(idx).ok and idx.documents() == []
    assert sorted(_index(idx, pdfs).indexed) == sorted(DOCS)
    report = check_index(idx)
    assert report.ok and report.pages == sum(DOCS.values())


def test_a_missing_page_is_found_on_every_backend(index):
    idx, _ = index
    sha = _sha(idx, "a.pdf")
    idx.store.delete(PayloadFilter(kind="page", doc_sha256=(sha,)))
    report = check_index(idx)
    assert [(p.subject, p.cause) for p in report.problems] == [
        ("a.pdf", "0 of 3 pages stored; missing pages 1, 2, 3")
    ]


# -- the id tracker: the engine aborts the process that loads it ------------------
def _run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


def test_a_damaged_id_tracker_aborts_the_engine(copy):
    """The damage is real: loading the shard in-process kills the process."""
    damage(copy, "id_tracker_damaged")
    result = _run_python(
        "import sys, qdrant_edge; qdrant_edge.EdgeShard.load(sys.argv[1])",
        str(copy / "qdrant-edge"),
    )
    assert result.returncode in (-6, 134), result.stderr[-500:]


@pytest.mark.parametrize("command", [["check"], ["check", "--repair"], ["info"]])
def test_a_damaged_id_tracker_is_a_clear_error(copy, command):
    damage(copy, "id_tracker_damaged")
    result = _run_python(
        "from pagelens.cli import app; app()", "-q", *command, "--index", str(copy)
    )
    assert result.returncode == 1, result.stderr[-500:]
    assert result.stderr.startswith(f"error: {copy}: index files are damaged")
    assert "new folder" in result.stderr and "Traceback" not in result.stderr


# -- when the probe runs -----------------------------------------------------------
@pytest.fixture
def probes(monkeypatch):
    """Count the child-process probes (a fake standing in for probe_shard)."""
    seen: list[Path] = []
    real = edge.probe_shard

    def counting(folder: Path) -> None:
        seen.append(folder)
        real(folder)

    monkeypatch.setattr(edge, "probe_shard", counting)
    return seen


def test_the_probe_runs_only_on_an_unclean_shard(copy, probes):
    Index.open(copy).close()
    assert probes == []  # closed cleanly, files untouched: no probe
    Index.open(copy, verify=True).close()
    assert len(probes) == 1  # check always probes
    (copy / ".clean-close").unlink()  # as after a crash
    Index.open(copy).close()
    assert len(probes) == 2
    Index.open(copy).close()
    assert len(probes) == 2
    config = copy / "qdrant-edge" / "edge_config.json"
    config.write_bytes(config.read_bytes() + b" ")  # a file changed since the close
    Index.open(copy).close()
    assert len(probes) == 3


def test_engine_errors_are_store_errors_naming_the_index(copy):
    damage(copy, "offsets_damaged")
    with Index.open(copy, verify=True) as idx, pytest.raises(StoreError) as info:
        idx.store.retrieve(list(idx.store.point_ids()))
    assert str(copy) in str(info.value) and "cannot read points" in str(info.value)


def test_no_index_is_no_clean_bill_of_health(tmp_path):
    with (
        Index.open(tmp_path / "nothing", verify=True) as idx,
        pytest.raises(PagelensError, match="no index at"),
    ):
        check_index(idx)


def test_a_server_collection_is_not_rebuilt():
    with Index.open(location=":memory:") as idx, pytest.raises(StoreError, match="snapshot"):
        idx.store.rebuild(None, [])  # type: ignore[arg-type]


def test_unit_vectors_pass_the_norm_test():
    """fp16 storage moves a unit vector's norm far less than NORM_RANGE allows."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1000, 128))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    norms = np.linalg.norm(v, axis=1)
    assert NORM_RANGE[0] < norms.min() and norms.max() < NORM_RANGE[1]


def test_an_interrupted_run_is_an_orphan_that_repair_removes_with_its_mark(tmp_path):
    pdfs = _pdfs(tmp_path / "pdfs")
    pf.text_pdf(pdfs / "long.pdf", 6, prefix="Long")

    class Dies(FakeEncoder):
        def encode_pages(self, pages):
            if self.pages_seen >= 6:  # a.pdf, then two of long.pdf's pages
                raise KeyboardInterrupt
            return super().encode_pages(pages)

    with Index.open(tmp_path / "idx") as idx, pytest.raises(KeyboardInterrupt):
        _index(idx, pdfs, Dies())
    report = _check(tmp_path / "idx")
    assert [(p.kind, p.subject) for p in report.problems] == [("orphan", "long.pdf")]
    with Index.open(tmp_path / "idx", verify=True) as idx:
        assert repair_index(idx).orphans == 1
        # the orphan's mark went with its pages; the job had marked the next document
        # too (MARK_AHEAD), which it never reached: no damage, the next run indexes it
        assert list(idx.pending_documents().values()) == ["sub/b.pdf"]
    assert _check(tmp_path / "idx").ok
    with Index.open(tmp_path / "idx") as idx:
        _index(idx, pdfs, FakeEncoder())
        assert idx.pending_documents() == {} and idx.info().documents == 3
