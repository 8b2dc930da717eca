import hashlib
import logging
import os
from pathlib import Path

import pytest

from pagelens.errors import InputError
from pagelens.pipeline.discover import Discovery, Skipped, discover
from tests import pdf_factory as pf


def _paths(d: Discovery) -> list[str]:
    return [doc.path for doc in d.documents]


def _causes(d: Discovery) -> dict[str, str]:
    return {s.path: s.cause for s in d.skipped}


def test_folder_is_walked_recursively_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a").mkdir()
    pf.text_pdf(tmp_path / "z.pdf", 1, prefix="z")
    pf.text_pdf(tmp_path / "b" / "deep" / "x.pdf", 1, prefix="x")
    pf.text_pdf(tmp_path / "a" / "y.pdf", 1, prefix="y")
    pf.text_pdf(tmp_path / "b" / "w.pdf", 1, prefix="w")

    found = discover([tmp_path])

    assert _paths(found) == ["a/y.pdf", "b/deep/x.pdf", "b/w.pdf", "z.pdf"]
    assert found.skipped == ()


def test_documents_carry_absolute_source_sha256_and_size(tmp_path: Path) -> None:
    pdf = pf.text_pdf(tmp_path / "doc.pdf", 2)
    data = pdf.read_bytes()

    (doc,) = discover([tmp_path]).documents

    assert doc.source == str(pdf.absolute())
    assert os.path.isabs(doc.source)
    assert doc.path == "doc.pdf"
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
    assert doc.size_bytes == len(data)


def test_file_argument_is_named_by_its_file_name(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pdf = pf.text_pdf(tmp_path / "sub" / "report.pdf", 1)

    (doc,) = discover([str(pdf)]).documents

    assert doc.path == "report.pdf"
    assert doc.source == str(pdf.absolute())


def test_pdf_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    pf.text_pdf(tmp_path / "scan.bin", 1)  # a PDF without the extension
    pf.not_a_pdf(tmp_path / "fake.pdf")  # a .pdf that is not one
    pf.not_a_pdf(tmp_path / "notes.txt")

    found = discover([tmp_path])

    assert _paths(found) == ["scan.bin"]
    assert _causes(found) == {
        "fake.pdf": "not a PDF (no %PDF- header)",
        "notes.txt": "not a PDF",
    }


def test_magic_may_follow_leading_junk_within_1024_bytes(tmp_path: Path) -> None:
    body = pf.pdf_bytes(["Page 1"])
    (tmp_path / "junk_ok.pdf").write_bytes(b"\0" * 500 + body)
    (tmp_path / "junk_too_far.pdf").write_bytes(b"\0" * 1024 + body)

    found = discover([tmp_path])

    assert _paths(found) == ["junk_ok.pdf"]
    assert _causes(found) == {"junk_too_far.pdf": "not a PDF (no %PDF- header)"}


def test_empty_file_is_skipped(tmp_path: Path) -> None:
    pf.empty_file(tmp_path / "empty.pdf")

    found = discover([tmp_path])

    assert found.documents == ()
    assert found.skipped == (Skipped("empty.pdf", "empty file"),)


def test_explicit_non_pdf_file_is_skipped_with_header_cause(tmp_path: Path) -> None:
    txt = pf.not_a_pdf(tmp_path / "readme.txt")

    found = discover([txt])

    assert found.skipped == (Skipped("readme.txt", "not a PDF (no %PDF- header)"),)


def test_stray_files_are_counted_but_not_logged_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(3):
        pf.not_a_pdf(tmp_path / f"note{i}.txt")
    pf.text_pdf(tmp_path / "doc.pdf", 1)

    with caplog.at_level(logging.INFO, logger="pagelens.pipeline.discover"):
        found = discover([tmp_path])

    assert len(found.skipped) == 3
    assert not any("note" in r.getMessage() for r in caplog.records)


def test_duplicate_content_is_kept_once_first_wins(tmp_path: Path) -> None:
    pf.text_pdf(tmp_path / "a.pdf", 2)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "b.pdf").write_bytes((tmp_path / "a.pdf").read_bytes())

    found = discover([tmp_path])

    assert _paths(found) == ["a.pdf"]
    assert found.skipped == (Skipped("copy/b.pdf", "duplicate of a.pdf"),)


def test_same_file_reached_twice_is_kept_once(tmp_path: Path) -> None:
    pdf = pf.text_pdf(tmp_path / "a.pdf", 1)

    found = discover([tmp_path, pdf])

    assert _paths(found) == ["a.pdf"]
    assert found.skipped == (Skipped("a.pdf", "duplicate of a.pdf"),)


def test_two_roots_keep_argument_order(tmp_path: Path) -> None:
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    pf.text_pdf(tmp_path / "second" / "a.pdf", 1, prefix="second")
    pf.text_pdf(tmp_path / "first" / "b.pdf", 1, prefix="first")

    found = discover([tmp_path / "second", tmp_path / "first"])

    assert _paths(found) == ["a.pdf", "b.pdf"]


def test_different_files_with_the_same_relative_path_keep_the_first(tmp_path: Path) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        pf.text_pdf(tmp_path / name / "report.pdf", 1, prefix=name)

    found = discover([tmp_path / "one", tmp_path / "two"])

    assert [d.source for d in found.documents] == [str(tmp_path / "one" / "report.pdf")]
    (skip,) = found.skipped
    assert skip.path == "report.pdf"
    assert str(tmp_path / "one" / "report.pdf") in skip.cause


def test_missing_path_raises_naming_it(tmp_path: Path) -> None:
    pf.text_pdf(tmp_path / "ok.pdf", 1)
    missing = tmp_path / "typo"

    with pytest.raises(InputError) as info:
        discover([tmp_path, missing])

    assert info.value.path == str(missing)
    assert info.value.cause == "no such file or directory"
    assert str(missing) in str(info.value)


def test_symlink_loop_is_not_followed_forever(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    pf.text_pdf(tmp_path / "sub" / "a.pdf", 1)
    os.symlink(tmp_path, tmp_path / "sub" / "loop")

    found = discover([tmp_path])

    assert _paths(found) == ["sub/a.pdf"]


def test_symlinked_folder_is_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    pf.text_pdf(outside / "a.pdf", 1)
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linked")

    found = discover([root])

    assert _paths(found) == ["linked/a.pdf"]


def test_fifo_is_skipped_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.pdf")

    found = discover([tmp_path])  # would block forever if the FIFO were opened

    assert found.skipped == (Skipped("pipe.pdf", "not a regular file"),)


def test_empty_folder_finds_nothing(tmp_path: Path) -> None:
    assert discover([tmp_path]) == Discovery(documents=(), skipped=())


def test_large_file_is_hashed_across_chunks(tmp_path: Path) -> None:
    data = pf.pdf_bytes(["Page 1"]) + b"%" + b"x" * (3 * (1 << 20) + 17)  # > 3 MiB
    (tmp_path / "big.pdf").write_bytes(data)

    (doc,) = discover([tmp_path]).documents

    assert doc.size_bytes == len(data)
    assert doc.sha256 == hashlib.sha256(data).hexdigest()
