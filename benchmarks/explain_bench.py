"""How much of a real page the text channel's word boxes cover, and what explain() costs.

Indexes a few mmlongbench PDFs with MiniLM (text layer, OCR where a page has none),
then explains every page against its document's first question. For each page it
counts the page's wordpiece tokens (what MaxSim picks from) and how many of them lie
in a located word box (``pdftotext -bbox-layout`` or tesseract's, aligned to the
indexed text): a token outside every box can be picked by MaxSim but not shown. It
also counts the query tokens whose pick was shown, and times each call.

    python -m benchmarks.explain_bench [--docs A.pdf B.pdf ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pagelens
from benchmarks.common import MMLONGBENCH_PDFS, command_line, default_out, median, table, write_json
from pagelens.explain import token_words
from pagelens.pipeline.words import align_words, layer_words, ocr_words

DOCS = (
    "2303.05039v2.pdf",  # a paper: two columns
    "Independents-Report.pdf",  # a survey report: charts, tables
    "reportq32015-151009093138-lva1-app6891_95.pdf",  # a slide deck
)


def first_queries(queries: Path) -> dict[str, str]:
    """Each document's first question in a ``queries.jsonl`` (rows with ``doc`` and ``query``)."""
    out: dict[str, str] = {}
    for line in queries.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        out.setdefault(row["doc"], row["query"])
    return out


def coverage(lens: pagelens.Lens, payload: dict, source: str) -> tuple[int, int]:
    """(page tokens, page tokens inside a located word box), as explain() traces them."""
    text = str(payload.get("text") or "")
    if not text.strip():
        return 0, 0
    (spans,) = lens.encoder().token_spans([text])  # type: ignore[attr-defined]
    page = int(payload["page_number"])
    if payload.get("text_source") == "ocr":
        size = (float(payload["width_pt"]), float(payload["height_pt"]))
        words = ocr_words(source, page, page_size_pt=size)
    else:
        words = layer_words(source, page)
    located = token_words(spans, align_words(text, words))
    return len(spans), sum(w is not None for w in located)


def explain_document(
    lens: pagelens.Lens, doc: str, payloads: list[dict], query: str
) -> tuple[list, list[dict]]:
    """Explain every page of ``doc`` against ``query``: its table row, and a record per page."""
    pages = sorted((p for p in payloads if p["doc_path"] == doc), key=lambda p: p["page_number"])
    seconds, tokens, inside, shown, asked, ocr = [], 0, 0, 0, 0, 0
    raw = []
    for p in pages:
        t = time.perf_counter()
        e = lens.explain(doc, int(p["page_number"]), query)
        seconds.append(time.perf_counter() - t)
        n, k = coverage(lens, p, str(p["source"]))
        tokens, inside = tokens + n, inside + k
        shown += sum(m.box is not None for m in e.maps)
        asked += len(e.maps)
        ocr += e.words_from == "ocr"
        raw.append(
            {
                "doc": doc,
                "page": p["page_number"],
                "words_from": e.words_from,
                "page_tokens": n,
                "tokens_in_boxes": k,
                "query_tokens": len(e.maps),
                "query_tokens_shown": sum(m.box is not None for m in e.maps),
                "explain_s": seconds[-1],
            }
        )
    row = [
        doc[:28],
        len(pages),
        ocr,
        tokens,
        f"{inside / tokens:.1%}" if tokens else "-",
        f"{shown / asked:.1%}" if asked else "-",
        f"{median(seconds):.3f}",
        f"{max(seconds):.3f}",
    ]
    return row, raw


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    parser.add_argument("--docs", nargs="+", default=list(DOCS))
    parser.add_argument(
        "--queries", type=Path, default=None, help="queries.jsonl (default: beside --pdf-dir)"
    )
    parser.add_argument("--out", default=str(default_out("explain")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    queries = first_queries(args.queries or args.pdf_dir.parent / "queries.jsonl")
    rows, raw = [], []
    with tempfile.TemporaryDirectory() as tmp:
        with pagelens.open(Path(tmp) / "idx", model="minilm") as lens:
            t0 = time.perf_counter()
            lens.add([args.pdf_dir / d for d in args.docs], progress=False)
            index_s = time.perf_counter() - t0
            payloads = list(lens.index.pages())
            for doc in args.docs:
                row, records = explain_document(lens, doc, payloads, queries[doc])
                rows.append(row)
                raw += records
    headers = [
        "document",
        "pages",
        "OCR pages",
        "page tokens",
        "tokens in a box",
        "query picks shown",
        "median s/explain",
        "max s",
    ]
    print(f"indexing {len(args.docs)} documents with MiniLM: {index_s:.1f} s")
    print(table(headers, rows))
    results = {"index_s": index_s, "rows": rows, "pages": raw}
    write_json(args.out, "explain", command_line(__spec__.name, argv), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
