"""The ledger beside an embedded index: damage the engine hides is found (issue #27).

A copy of one small embedded index (2 PDFs, FakeEncoder) is damaged as in the
issue: a segment folder deleted, the id tracker truncated (the engine then opens
empty, as if nothing had been indexed), pending marks brought back beside the
commit records that settled them (as a garbled write-ahead log replays them: every
search then came back empty). Each is refused on opening or settled with a
warning; ``check`` names the lost documents and ``--repair`` plus re-indexing
gives back the same answers as an undamaged twin. A crash between the engine's
commit and the ledger's line, a torn last line and an index without a ledger
(an earlier release's) are no damage.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pagelens.cli import app
from pagelens.errors import StoreError
from pagelens.index import Index
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.render import RenderSettings
from pagelens.search import search
from pagelens.storage import edge
from pagelens.storage.base import PayloadFilter, PointRecord
from pagelens.storage.check import check_index, repair_index
from pagelens.storage.layout import KIND_PENDING, pending_point_id
from pagelens.storage.ledger import COMPACT_FACTOR, LEDGER_NAME, Ledger, LedgerEntry
from tests import pdf_factory as pf
from tests.fakes import FakeEncoder

RENDER = RenderSettings(dpi=30, batch_pages=2)
DOCS = {"a.pdf": 3, "sub/b.pdf": 2}
QUESTIONS = ["alpha page", "beta page 2"]
LEGACY = Path(__file__).parent / "fixtures" / "legacy"
runner = CliRunner()


def make_pdfs(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    pf.text_pdf(root / "a.pdf", DOCS["a.pdf"], prefix="Alpha")
    pf.text_pdf(root / "sub" / "b.pdf", DOCS["sub/b.pdf"], prefix="Beta")
    return root


def index_into(index: Index, pdfs: Path):
    return index_paths(index, FakeEncoder(), [pdfs], render=RENDER, progress=False)


def answers(folder: Path) -> list[list[tuple[str, int, float]]]:
    """Every question's hits (path, page, score rounded): what an undamaged twin answers."""
    with Index.open(folder) as idx:
        found = search(idx, FakeEncoder(), QUESTIONS, k=5)
    return [[(h.doc_path, h.page_number, round(h.score, 4)) for h in hits] for hits in found]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A small healthy embedded index (closed), the PDFs it was built from, its answers."""
    root = tmp_path_factory.mktemp("pristine")
    pdfs = make_pdfs(root / "pdfs")
    with Index.open(root / "index") as idx:
        index_into(idx, pdfs)
    return root / "index", pdfs, answers(root / "index")


@pytest.fixture
def copy(pristine, tmp_path):
    folder = tmp_path / "index"
    subprocess.run(["cp", "-a", str(pristine[0]), str(folder)], check=True)
    return folder


def _segments(folder: Path) -> list[Path]:
    found = sorted((folder / "qdrant-edge" / "segments").iterdir())
    assert found, f"no segment under {folder}: the engine's layout changed"
    return found


def lose(folder: Path, how: str) -> None:
    """Damage the engine's files in one of the ways of issue #27 (the ledger untouched)."""
    if how == "segment_deleted":  # the only segment of so small an index: the appendable one
        for segment in _segments(folder):
            shutil.rmtree(segment)
    elif how in ("mappings_truncated", "versions_truncated"):
        name = "mutable_id_tracker." + how.split("_")[0]
        for segment in _segments(folder):
            with open(segment / name, "r+b") as fh:
                fh.truncate(0)
    elif how == "pages_lost":  # what a lost sealed segment takes of a bigger index
        store = edge.EdgeStore(folder)
        store.delete(PayloadFilter(kind="page", doc_paths=("sub/b.pdf",)))
        store.close()
    else:
        raise ValueError(how)


# what the engine still holds after each: (documents, pages)
LOSSES = {
    "segment_deleted": (0, 0),
    "mappings_truncated": (0, 0),
    "versions_truncated": (0, 0),
    "pages_lost": (2, 3),
}


# -- (a) documents lost with the engine's files --------------------------------------
@pytest.mark.parametrize("how", sorted(LOSSES))
def test_a_loss_is_refused_on_opening_naming_it(copy, how):
    lose(copy, how)
    docs, pages = LOSSES[how]
    with pytest.raises(StoreError) as info:
        Index.open(copy)
    message = str(info.value)
    assert message.startswith(f"index {copy}: the ledger records 2 documents and 5 pages; ")
    assert f"the engine holds {docs} and {pages}" in message
    assert "damaged or lost" in message and "pagelens check" in message
    if docs == 0:
        assert "(a.pdf, sub/b.pdf missing)" in message
    Index.open(copy, verify=True).close()  # a check opens it anyway


def test_the_cli_fails_on_a_lost_segment_and_check_names_the_documents(copy):
    lose(copy, "segment_deleted")
    for command in (["info"], ["search", "alpha"]):
        result = runner.invoke(app, ["-q", *command, "--index", str(copy)])
        assert result.exit_code == 1, result.output
        assert "the ledger records 2 documents and 5 pages" in result.output
        assert "nothing is indexed" not in result.output
    result = runner.invoke(app, ["-q", "check", "--index", str(copy)])
    assert result.exit_code == 1, result.output
    assert "lost: recorded in the ledger (3 pages" in result.stdout
    assert "pagelens check --repair" in result.stdout


@pytest.mark.parametrize("how", ["segment_deleted", "pages_lost"])
def test_repair_and_a_rerun_give_back_the_twins_answers(copy, pristine, how):
    lose(copy, how)
    with Index.open(copy, verify=True) as idx:
        report = check_index(idx)
        lost = sorted(p.subject for p in report.problems if p.kind in ("lost", "document"))
        assert lost == (sorted(DOCS) if how == "segment_deleted" else ["sub/b.pdf"])
        assert report.repairable and str(pristine[1] / "sub" / "b.pdf") in report.advice
        repaired = repair_index(idx)
    assert sorted(repaired.requeued) == lost
    with Index.open(copy, verify=True) as idx:
        assert check_index(idx).ok
    with Index.open(copy) as idx:
        assert sorted(index_into(idx, pristine[1]).indexed) == lost
    with Index.open(copy, verify=True) as idx:
        assert check_index(idx).ok
    assert answers(copy) == pristine[2]


def test_the_whole_engine_folder_lost_is_refused(copy):
    shutil.rmtree(copy / "qdrant-edge")
    with pytest.raises(StoreError, match=r"records 2 documents and 5 pages.*files are gone"):
        Index.open(copy)


# -- (b) pending marks brought back ------------------------------------------------------
def _resurrect_marks(folder: Path) -> None:
    """Write the documents' pending marks back, as a garbled write-ahead log replays them."""
    store = edge.EdgeStore(folder)
    docs = list(store.scroll(PayloadFilter(kind="document")))
    marks = [
        PointRecord(
            pending_point_id(d["doc_sha256"]),
            {"kind": KIND_PENDING, "doc_path": d["doc_path"], "doc_sha256": d["doc_sha256"]},
        )
        for d in docs
    ]
    store.upsert(marks)
    assert store.count(PayloadFilter(kind=KIND_PENDING)) == len(DOCS)
    store.close()


def test_pending_marks_the_ledger_settled_are_dropped_with_a_warning(copy, pristine, caplog):
    _resurrect_marks(copy)
    with caplog.at_level(logging.WARNING, logger="pagelens.index"):
        assert answers(copy) == pristine[2]  # not empty: the marks no longer hide them
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "dropped the pending marks of 2 committed documents" in warned[0]
    assert "a.pdf, sub/b.pdf" in warned[0]
    with Index.open(copy) as idx:
        assert idx.pending_documents() == {}
    with Index.open(copy, verify=True) as idx:
        assert check_index(idx).ok


def test_a_document_being_indexed_again_keeps_its_mark(copy, pristine):
    """A mark of a document the ledger no longer holds (deleted, being re-indexed) stays."""
    with Index.open(copy) as idx:
        sha = idx.find_document("a.pdf").doc_sha256
        idx.delete_sha(sha)  # the ledger's delete line first
        idx.store.upsert(
            [PointRecord(pending_point_id(sha), {"kind": KIND_PENDING, "doc_sha256": sha})]
        )
    with Index.open(copy) as idx:
        assert list(idx.pending_documents()) == [sha]


# -- (c) a crash between the engine's commit and the ledger's line: no damage ----------
def test_a_crash_before_the_ledger_line_is_reconciled_silently(tmp_path, monkeypatch, caplog):
    pdfs = make_pdfs(tmp_path / "pdfs")

    def killed(self, entries):  # the engine committed; the process dies before the line
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, Index.open(tmp_path / "index") as idx:
        patch.setattr(Ledger, "committed", killed)
        with pytest.raises(KeyboardInterrupt):
            index_into(idx, pdfs)
    before = Ledger.read(tmp_path / "index")
    assert before is not None and before.documents == {}
    with (
        caplog.at_level(logging.INFO, logger="pagelens.index"),
        Index.open(tmp_path / "index") as idx,
    ):
        committed = {r.doc_path for r in idx.documents()}
        assert committed  # the engine's first group
        assert idx.ledger is not None
        assert {e.doc_path for e in idx.ledger.documents.values()} == committed
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert sorted(index_into(idx, pdfs).indexed) == sorted(set(DOCS) - committed)
    after = Ledger.read(tmp_path / "index")
    assert after is not None and sorted(e.doc_path for e in after.documents.values()) == sorted(
        DOCS
    )
    with Index.open(tmp_path / "index", verify=True) as idx:
        assert check_index(idx).ok


def test_a_crash_between_the_delete_line_and_the_engine_is_reconciled(copy, monkeypatch):
    with monkeypatch.context() as patch, Index.open(copy) as idx:
        patch.setattr(edge.EdgeStore, "delete", lambda self, where, durable=True: _die())
        with pytest.raises(KeyboardInterrupt):
            idx.delete_document("a.pdf")
    with Index.open(copy) as idx:  # the engine is ahead: the document is still there
        assert [d.doc_path for d in idx.documents()] == sorted(DOCS)
        assert idx.ledger is not None and len(idx.ledger.documents) == 2
        idx.delete_document("a.pdf")
    with Index.open(copy) as idx:
        assert [d.doc_path for d in idx.documents()] == ["sub/b.pdf"]


def _die() -> None:
    raise KeyboardInterrupt


# -- (d) the journal read back tolerantly ------------------------------------------------
def test_a_torn_last_line_is_ignored_and_cut_off(copy, caplog):
    ledger_file = copy / LEDGER_NAME
    whole = ledger_file.read_bytes()
    with open(ledger_file, "ab") as fh:  # a crash mid-append: longer than the next line
        fh.write(b'0badc0de {"event":"commit","documents":[{"pages":3,"path":"' + b"x" * 300)
    with caplog.at_level(logging.WARNING), Index.open(copy) as idx:
        assert len(idx.documents()) == 2
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        idx.delete_document("a.pdf")  # appends after the last whole line
        idx.delete_document("sub/b.pdf")
    data = ledger_file.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n") and b"xxx" not in data
    ledger = Ledger.read(copy)
    assert ledger is not None and ledger.damage == [] and ledger.documents == {}


def test_a_damaged_line_is_refused_and_repair_writes_the_ledger_again(copy, pristine):
    ledger_file = copy / LEDGER_NAME
    lines = ledger_file.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"format":6', b'"format":7')  # a flipped byte, mid-file
    ledger_file.write_bytes(b"\n".join(lines))
    with pytest.raises(StoreError, match=r"ledger .* is damaged: line 2 .*check --repair"):
        Index.open(copy)
    with Index.open(copy, verify=True) as idx:
        report = check_index(idx)
        assert [(p.kind, p.subject) for p in report.problems] == [("ledger", "ledger")]
        repair_index(idx)
    assert answers(copy) == pristine[2]
    ledger = Ledger.read(copy)
    assert ledger is not None and ledger.damage == [] and len(ledger.documents) == 2


def test_the_journal_is_compacted_once_it_has_grown(tmp_path):
    ledger = Ledger.create(tmp_path, {"format": 6})
    live = LedgerEntry("k" * 64, "keep.pdf", 2, "/x/keep.pdf")
    ledger.committed([live])
    for i in range(COMPACT_FACTOR * 100):
        ledger.committed([LedgerEntry(f"{i:064x}", f"d{i}.pdf", 1)])
        ledger.deleted([f"{i:064x}"])
    ledger.moved(live.doc_sha256, "moved.pdf", "/y/moved.pdf")
    grown = (tmp_path / LEDGER_NAME).stat().st_size
    assert ledger.compact_if_grown()
    assert (tmp_path / LEDGER_NAME).stat().st_size < grown / 100
    again = Ledger.read(tmp_path)
    assert again is not None and again.damage == [] and again.manifest == {"format": 6}
    assert list(again.documents.values()) == [
        LedgerEntry(live.doc_sha256, "moved.pdf", 2, "/y/moved.pdf")
    ]
    assert not again.compact_if_grown()


# -- (e) an index without a ledger, (f) earlier releases' indexes -------------------------
def test_an_index_without_a_ledger_gets_one_from_its_commit_records(copy, caplog):
    (copy / LEDGER_NAME).unlink()
    with Index.open(copy, verify=True) as idx:  # a check writes nothing, finds nothing new
        assert idx.ledger is None and check_index(idx).ok
    assert not (copy / LEDGER_NAME).exists()
    with caplog.at_level(logging.INFO, logger="pagelens.index"):
        Index.open(copy).close()
    assert any(
        "recorded its 2 committed documents in a new ledger" in r.getMessage()
        for r in caplog.records
    )
    ledger = Ledger.read(copy)
    assert ledger is not None and sorted(e.doc_path for e in ledger.documents.values()) == sorted(
        DOCS
    )
    lose(copy, "segment_deleted")  # and now a loss is found
    with pytest.raises(StoreError, match="the ledger records 2 documents"):
        Index.open(copy)


@pytest.mark.parametrize(
    "name", sorted(p.name.removesuffix(".tar.gz") for p in LEGACY.glob("*.tar.gz"))
)
def test_an_earlier_release_index_gets_a_ledger_and_checks(name, tmp_path):
    with tarfile.open(LEGACY / f"{name}.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    folder = next(p.parent for p in tmp_path.rglob("qdrant-edge"))
    assert not (folder / LEDGER_NAME).exists()
    with Index.open(folder) as idx:
        info = idx.info()
        assert idx.ledger is not None and len(idx.ledger.documents) == info.documents == 2
        assert idx.ledger.pages == info.pages
    with Index.open(folder) as idx:  # the second open compares with the ledger it wrote
        assert len(idx.documents()) == 2
    with Index.open(folder, verify=True) as idx:
        assert check_index(idx).ok


def test_a_server_collection_has_no_ledger(tmp_path):
    with Index.open(location=":memory:") as idx:
        index_into(idx, make_pdfs(tmp_path / "pdfs"))
        assert idx.ledger is None and len(idx.documents()) == 2
        assert check_index(idx).ok


def test_the_ledgers_copy_rebuilds_a_manifest_no_commit_record_keeps(copy):
    with Index.open(copy) as idx:  # records from before they kept a copy
        idx.store.set_payload(PayloadFilter(kind="document"), {"manifest": None})
        manifest = idx.manifest
    store = edge.EdgeStore(copy)
    store.delete(PayloadFilter(kind="manifest"))
    store.close()
    with Index.open(copy, verify=True) as idx:
        assert check_index(idx).repairable
        assert repair_index(idx).manifest_rebuilt
    with Index.open(copy) as idx:
        assert idx.manifest == manifest and len(idx.documents()) == 2


def test_a_served_index_records_its_deletions_in_the_ledger(copy):
    """The server wraps the store in a lock: its index keeps the folder's ledger."""
    from pagelens.serve.locking import open_served

    served = open_served(copy)
    try:
        assert served.index.ledger is not None
        served.delete("a.pdf")
    finally:
        served.close()
    with Index.open(copy) as idx:  # no false alarm: the ledger saw the deletion
        assert [d.doc_path for d in idx.documents()] == ["sub/b.pdf"]
        assert idx.ledger is not None and len(idx.ledger.documents) == 1
