"""Small offline evaluation sets in each ViDoRe format, plus a PDF set and a fake encoder.

Every page is a solid colour (real PIL images); every query names the colour of
the page it is about. :class:`ColorEncoder` embeds a page by its colour and a query
by the colour words it contains, so a search ranks the right page first and a test
knows exactly what to expect.

Builders write ``save_to_disk`` copies (the layouts ``pagelens.eval.datasets``
reads) and return the folder; ``*_parts`` functions return the in-memory datasets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pagelens.encoders.base import EncoderSpec
from pagelens.types import MultiVector, Page

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 20, 20),
    "green": (20, 200, 40),
    "blue": (30, 40, 220),
    "yellow": (240, 230, 30),
    "purple": (150, 30, 160),
    "cyan": (20, 220, 230),
}
SIZE = (24, 32)  # width, height in pixels


def color_image(name: str, size: tuple[int, int] = SIZE):
    from PIL import Image

    return Image.new("RGB", size, COLORS[name])


# --------------------------------------------------------------------------- v1 (QA)

# (query, page colour, answer_type); duplicates and None exercise the QA rules:
# - "what is on the red page?" appears twice, on red then on yellow: the last row wins;
# - the None query is a page without a question (still in the corpus);
# - red_0.png appears twice: one corpus page.
V1_ROWS: list[tuple[str | None, str, str]] = [
    ("what is on the red page?", "red", "extractive"),
    ("show me the green page", "green", "extractive"),
    ("find the blue page", "blue", "abstractive"),
    ("what is on the red page?", "yellow", "extractive"),
    (None, "purple", "extractive"),
    ("another red question", "red", "abstractive"),
]
V1_CORPUS = ("red_0.png", "green_0.png", "blue_0.png", "yellow_0.png", "purple_0.png")
V1_QRELS = {
    "what is on the red page?": {"yellow_0.png": 1},
    "show me the green page": {"green_0.png": 1},
    "find the blue page": {"blue_0.png": 1},
    "another red question": {"red_0.png": 1},
}


def v1_dataset():
    import datasets

    rows = {"query": [], "image": [], "image_filename": [], "answer": [], "answer_type": []}
    for query, color, answer_type in V1_ROWS:
        rows["query"].append(query)
        rows["image"].append(color_image(color))
        rows["image_filename"].append(f"{color}_0.png")
        rows["answer"].append(f"a {color} page")
        rows["answer_type"].append(answer_type)
    features = datasets.Features(
        {
            "query": datasets.Value("string"),
            "image": datasets.Image(),
            "image_filename": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(rows, features=features)


def build_v1(folder: Path, *, layout: str = "dataset") -> Path:
    """``layout``: ``dataset`` (a saved Dataset) or ``splits`` (a DatasetDict with ``test``)."""
    import datasets

    ds = v1_dataset()
    if layout == "dataset":
        ds.save_to_disk(str(folder))
    elif layout == "splits":
        datasets.DatasetDict({"test": ds}).save_to_disk(str(folder))
    else:
        raise ValueError(layout)
    return folder


# --------------------------------------------------------------------------- v2 / v3 (BEIR)

# corpus: (id, colour, document); two documents of three pages
BEIR_CORPUS: list[tuple[int, str, str]] = [
    (0, "red", "report_a"),
    (1, "green", "report_a"),
    (2, "blue", "report_a"),
    (3, "yellow", "report_b"),
    (4, "purple", "report_b"),
    (5, "cyan", "report_b"),
]
# queries: (id, text, language, query types)
BEIR_QUERIES: list[tuple[int, str, str, list[str]]] = [
    (10, "the red page please", "english", ["extractive"]),
    (11, "la page verte", "french", ["extractive", "numerical"]),
    (12, "blue page really blue or cyan", "english", ["multi-hop"]),
    (13, "la page jaune", "french", ["extractive"]),
    (14, "a question nobody judged", "english", ["extractive"]),  # no positive qrel
]
# qrels: (query id, corpus id, score); graded for query 12, a 0 for query 14
BEIR_QRELS: list[tuple[int, int, int]] = [
    (10, 0, 1),
    (11, 1, 1),
    (12, 2, 2),
    (12, 5, 1),
    (13, 3, 1),
    (14, 4, 0),
]
BEIR_EXPECTED_QRELS = {
    "10": {"0": 1},
    "11": {"1": 1},
    "12": {"2": 2, "5": 1},
    "13": {"3": 1},
}


def beir_parts(version: int) -> dict:
    """``{"corpus", "queries", "qrels"}`` datasets in the v2 (hyphen) or v3 (underscore) form."""
    import datasets

    sep = "-" if version == 2 else "_"
    qid, cid, did = f"query{sep}id", f"corpus{sep}id", f"doc{sep}id"
    corpus = {
        cid: [c for c, _, _ in BEIR_CORPUS],
        "image": [color_image(color) for _, color, _ in BEIR_CORPUS],
        did: [d for _, _, d in BEIR_CORPUS],
    }
    corpus_features = {
        cid: datasets.Value("int64"),
        "image": datasets.Image(),
        did: datasets.Value("string"),
    }
    queries = {
        qid: [q for q, _, _, _ in BEIR_QUERIES],
        "query": [t for _, t, _, _ in BEIR_QUERIES],
        "language": [lang for _, _, lang, _ in BEIR_QUERIES],
    }
    qrels = {
        qid: [q for q, _, _ in BEIR_QRELS],
        cid: [c for _, c, _ in BEIR_QRELS],
        "score": [s for _, _, s in BEIR_QRELS],
    }
    if version == 3:
        corpus["markdown"] = [f"# {color} page" for _, color, _ in BEIR_CORPUS]
        corpus["page_number_in_doc"] = [c % 3 for c, _, _ in BEIR_CORPUS]
        corpus_features["markdown"] = datasets.Value("string")
        corpus_features["page_number_in_doc"] = datasets.Value("int64")
        queries["query_types"] = [types for _, _, _, types in BEIR_QUERIES]
        queries["answer"] = [f"answer {q}" for q, _, _, _ in BEIR_QUERIES]
        qrels["content_type"] = [["Text"] for _ in BEIR_QRELS]
    return {
        "corpus": datasets.Dataset.from_dict(corpus, features=datasets.Features(corpus_features)),
        "queries": datasets.Dataset.from_dict(queries),
        "qrels": datasets.Dataset.from_dict(qrels),
    }


def build_beir(folder: Path, *, version: int, layout: str = "configs") -> Path:
    """Save a v2/v3 set.

    ``layout``: ``configs`` (one saved Dataset per config folder), ``config-splits``
    (one saved DatasetDict with a ``test`` split per config folder) or ``dict`` (one
    saved DatasetDict keyed by config).
    """
    import datasets

    parts = beir_parts(version)
    if layout == "configs":
        for name, ds in parts.items():
            ds.save_to_disk(str(folder / name))
    elif layout == "config-splits":
        for name, ds in parts.items():
            datasets.DatasetDict({"test": ds}).save_to_disk(str(folder / name))
    elif layout == "dict":
        datasets.DatasetDict(parts).save_to_disk(str(folder))
    else:
        raise ValueError(layout)
    return folder


# --------------------------------------------------------------------------- PDF set

# (file, page colours); corpus ids are "<file>#<page>"
PDF_DOCS: list[tuple[str, list[str]]] = [
    ("alpha.pdf", ["red", "green", "blue"]),
    ("beta.pdf", ["yellow", "red", "cyan"]),
]
# (query id, text, doc, evidence_sources, relevant corpus ids)
PDF_QUERIES: list[tuple[str, str, str, list[str], list[str]]] = [
    ("q1", "the red page of alpha", "alpha.pdf", ["Chart"], ["alpha.pdf#1"]),
    ("q2", "the green page", "alpha.pdf", ["Table", "Chart"], ["alpha.pdf#2"]),
    ("q3", "the cyan page", "beta.pdf", ["Table"], ["beta.pdf#3"]),
    ("q4", "the red page of beta", "beta.pdf", [], ["beta.pdf#2"]),
]


def build_pdf_set(folder: Path) -> Path:
    """A PDF set laid out as ``/work/shared/datasets/mmlongbench-dev``: colour pages."""
    import json

    pdfs = folder / "pdfs"
    pdfs.mkdir(parents=True)
    for name, colors in PDF_DOCS:
        images = [color_image(c, (200, 260)) for c in colors]
        images[0].save(pdfs / name, "PDF", resolution=72.0, save_all=True, append_images=images[1:])
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text, doc, sources, _ in PDF_QUERIES:
            row = {"query-id": qid, "query": text, "doc": doc, "evidence_sources": sources}
            fh.write(json.dumps(row) + "\n")
    with (folder / "qrels.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, _, _, _, rel in PDF_QUERIES:
            for cid in rel:
                fh.write(f"{qid}\t{cid}\t1\n")
    return folder


# --------------------------------------------------------------------------- fake encoder


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


class ColorEncoder:
    """A fake :class:`pagelens.encoders.base.Encoder`: colours in, colours out.

    A page is cut into a 2x2 grid; each cell's mean RGB (centred, plus a small
    constant) is one unit vector. A query gets one vector per colour word (that
    colour, embedded the same way) and one hashed unit vector per other word, in
    dimensions pages never use: other words add 0 to every page's score, so colour
    words alone decide the ranking.
    """

    dim = 16

    def __init__(self) -> None:
        self.page_calls = 0
        self.query_calls = 0

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(model_id="fake/color", revision="1", dim=self.dim, family="fake")

    def _color_vector(self, rgb: Sequence[float]) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float64)
        v[:3] = (np.asarray(rgb, dtype=np.float64) - 127.5) / 127.5
        v[3] = 0.05
        return _unit(v)

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        self.page_calls += 1
        out = []
        for page in pages:
            assert page.image is not None
            arr = np.asarray(page.image.convert("RGB"), dtype=np.float64)  # (h, w, 3)
            h, w = arr.shape[:2]
            cells = [
                arr[: h // 2, : w // 2],
                arr[: h // 2, w // 2 :],
                arr[h // 2 :, : w // 2],
                arr[h // 2 :, w // 2 :],
            ]
            out.append(np.stack([self._color_vector(c.reshape(-1, 3).mean(0)) for c in cells]))
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        self.query_calls += 1
        out = []
        for text in texts:
            vecs = []
            words = "".join(ch if ch.isalpha() else " " for ch in text.lower()).split()
            for word in words:
                word = {"verte": "green", "jaune": "yellow", "rouge": "red"}.get(word, word)
                if word in COLORS:
                    vecs.append(self._color_vector(COLORS[word]))
                else:
                    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
                    v = np.zeros(self.dim)
                    v[4:] = np.random.default_rng(seed).normal(size=self.dim - 4)
                    vecs.append(_unit(v))
            out.append(np.stack(vecs).astype(np.float32))
        return out
