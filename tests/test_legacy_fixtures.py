"""Indexes that earlier releases wrote, opened, searched and checked by today's code.

tests/fixtures/legacy/ holds, for every manifest format this pagelens reads, two
small embedded indexes written by the last commit that wrote that format (5 pages
of 2 documents, one page failed; page text and BM25; ``-text``: a text channel
too), each beside a JSON record of that commit's own answers to three questions
(scripts/make_legacy_fixtures.py made them; run it to regenerate). test_layout
stamps collections that today's code makes with an old format number; these are
the files the old code wrote, so drift from what a release really wrote shows here.

Each fixture is unpacked into the test's own folder (opening an index may write to
it) and must:

- open with its manifest, counts, vector sizes and commit records as its release
  reported them;
- answer the recorded questions as its release did: exact search
  (``candidates=None``), the default staged search, a narrow staged search whose
  first stage decides (2 candidates), format 1's HNSW graph walk, the text channel,
  every channel fused and BM25 alone;
- check healthy with ``pagelens check``.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pagelens.encoders.base import EncoderSpec
from pagelens.index import READABLE_FORMATS, Index
from pagelens.search import search, search_vectors
from pagelens.storage.check import check_index
from pagelens.types import Hit, MultiVector, Page

FIXTURES = Path(__file__).parent / "fixtures" / "legacy"
NAMES = sorted(p.name.removesuffix(".json") for p in FIXTURES.glob("format-*.json"))

# How far today's score of a page may be from the recorded one. The fixtures were
# recorded with the qdrant-edge-py their JSON names: that engine, reading the same
# stored values, must give the same scores (measured: identical; SAME_ENGINE_ATOL
# is float32 rounding). Another engine version may decode a stored datatype
# otherwise, within its precision: exact scores come from the rerank vectors,
# float16 in format 1 (these fixtures are fp16) and 8-bit TurboQuant since format 2,
# both channels alike (float16: 2^-11 of each value; turbo8: the 0.05 over a question
# that test_layout measured); BM25 vectors and the engine's IDF are float32.
SAME_ENGINE_ATOL = 1e-5
DATATYPE_ATOL = {"float16": 2e-3, "turbo8": 0.05, "float32": 1e-4}
ENGINE = version("qdrant-edge-py")


def _atol(record: dict[str, Any], bm25_only: bool = False) -> float:
    """The tolerance of a fixture's scores with the engine installed (see above)."""
    if record["qdrant_edge"] == ENGINE:
        return SAME_ENGINE_ATOL
    if bm25_only:
        return DATATYPE_ATOL["float32"]
    return DATATYPE_ATOL["float16" if record["format"] == 1 else "turbo8"]


def _record(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _unpack(name: str, where: Path) -> Path:
    """Unpack a fixture index (its engine files stay sparse) and return its folder."""
    with tarfile.open(FIXTURES / f"{name}.tar.gz") as tar:
        tar.extractall(where, filter="data")
    return where / "index"


@pytest.fixture(params=NAMES)
def legacy(request, tmp_path) -> tuple[dict[str, Any], Path]:
    """A fixture's record and its index, unpacked into this test's folder."""
    return _record(request.param), _unpack(request.param, tmp_path)


class _Replay:
    """An encoder that gives the recorded vectors of the fixture's questions."""

    def __init__(self, spec: EncoderSpec, vectors: dict[str, MultiVector]) -> None:
        self._spec, self._vectors = spec, vectors

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        raise AssertionError("a search encodes no pages")

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        return [self._vectors[t] for t in texts]


def _vectors(record: dict[str, Any], key: str) -> dict[str, MultiVector]:
    return {q["text"]: np.array(q[key], dtype=np.float32) for q in record["queries"]}


def _assert_answers(got: list[list[Hit]], want: list[list[list[Any]]], atol: float) -> None:
    """Today's hits are the recorded ones: the same pages, scores within ``atol``.

    The order is the recorded order, except that pages whose recorded scores are
    within ``atol`` of each other may trade places.
    """
    assert len(got) == len(want)
    for hits, rows in zip(got, want, strict=True):
        recorded = {(doc, page): (score, channels) for doc, page, score, channels in rows}
        assert len(hits) == len(rows), (hits, rows)
        assert {(h.doc_path, h.page_number) for h in hits} == set(recorded), (hits, rows)
        for hit, (_, _, score_here, _) in zip(hits, rows, strict=True):
            score, channels = recorded[(hit.doc_path, hit.page_number)]
            assert hit.score == pytest.approx(score, abs=atol), (hit, rows)
            assert score == pytest.approx(score_here, abs=atol), (hits, rows)  # a near tie
            assert sorted(hit.channels) == sorted(channels), (hit, rows)


def test_every_readable_format_has_fixtures_from_its_release():
    records = [_record(name) for name in NAMES]
    assert sorted({r["format"] for r in records}) == list(READABLE_FORMATS), (
        "every manifest format this pagelens reads needs fixtures written by a release "
        "of it: see scripts/make_legacy_fixtures.py"
    )
    for fmt in READABLE_FORMATS:
        assert {f"format-{fmt}", f"format-{fmt}-text"} <= set(NAMES)
    for name, record in zip(NAMES, records, strict=True):
        assert name.startswith(f"format-{record['format']}")
        assert len(record["commit"]) == 40
        assert record["info"]["manifest"]["format"] == record["format"]


def test_a_legacy_index_opens_as_its_release_reported_it(legacy):
    record, folder = legacy
    fmt = record["format"]
    with Index.open(folder) as index:
        manifest = index.manifest
        assert manifest is not None and manifest.format == fmt
        _assert_has(manifest.to_dict(), record["info"]["manifest"])
        assert index.has_candidate_graph == (fmt == 1)  # the compact layout came in 2
        assert index.has_coarse_vectors == (fmt >= 4)
        info = index.info().to_dict()
        for key, value in record["info"].items():
            if key != "manifest":
                assert info[key] == pytest.approx(value, rel=1e-9), key
        assert (info["documents"], info["pages"]) == (2, 5)
        documents = sorted(index.documents(), key=lambda r: r.doc_path)
        want = sorted(record["documents"], key=lambda r: r["doc_path"])
        assert len(documents) == len(want)
        for got, recorded in zip(documents, want, strict=True):
            _assert_has(asdict(got), recorded)
        assert sum(r.failed_pages for r in documents) == 1


def _assert_has(got: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Every field the release recorded reads back the same (today's may add fields)."""
    for key, value in recorded.items():
        if isinstance(value, dict):
            _assert_has(got[key], value)
        else:
            assert got[key] == value, (key, got[key], value)


def test_a_legacy_index_answers_as_its_release_did(legacy):
    record, folder = legacy
    texts = [q["text"] for q in record["queries"]]
    with Index.open(folder) as index:
        manifest = index.manifest
        assert manifest is not None
        vectors = {"dense": _vectors(record, "dense"), "text": _vectors(record, "text_vectors")}
        dense = _Replay(manifest.encoder, vectors["dense"])
        words = (
            _Replay(manifest.text_encoder, vectors["text"])
            if manifest.text_encoder is not None
            else None
        )
        channels = {s.get("channel") for s in record["searches"]}
        assert channels == ({"dense", "text"} if words else {"dense"}) | {None}  # None: search
        for searched in record["searches"]:
            options = dict(searched["options"])
            if searched["call"] == "search_vectors":
                channel = searched["channel"]
                questions = [vectors[channel][t] for t in texts]
                got = search_vectors(index, questions, channel=channel, **options)
                atol = _atol(record)
            else:
                bm25_only = options.get("channels") == ["bm25"]
                if "channels" in options:
                    options["channels"] = tuple(options["channels"])
                got = search(index, dense, texts, text_encoder=words, **options)
                atol = _atol(record, bm25_only)
                _assert_page_texts(got, record)
            _assert_answers(got, searched["hits"], atol)


def _assert_page_texts(got: list[list[Hit]], record: dict[str, Any]) -> None:
    """Hits carry the page text their release stored."""
    stored = {(p["doc_path"], p["page_number"]): p["text"] for p in record["pages"]}
    for hits in got:
        for hit in hits:
            assert hit.text == stored[(hit.doc_path, hit.page_number)]


def test_a_legacy_index_checks_healthy(legacy):
    record, folder = legacy
    with Index.open(folder, verify=True) as index:
        report = check_index(index)
        assert report.ok, report.problems
        assert (report.documents, report.pages) == (2, 5)
        assert report.manifest is not None and report.manifest.format == record["format"]
