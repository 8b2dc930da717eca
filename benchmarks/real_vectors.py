"""Real MiniLM token vectors of a page-retrieval set, cached for the search benchmarks.

Every page of ``mmlongbench-dev`` (or any set in its layout: ``pdfs/``,
``queries.jsonl``, ``qrels.tsv``) is read as pagelens reads it (text layer, OCR
where the layer is missing) and encoded by the offline MiniLM encoder into its raw
token vectors, unpooled; its questions are encoded the same way. The result is one
``.npz`` file: what the search and memory benchmarks resample into 10k-300k pages.

    python -m benchmarks.real_vectors ../shared/datasets/mmlongbench-dev \
        --text-cache /tmp/evalrun/cache/text --out benchmarks/results/mmlongbench-minilm.npz

Arrays: ``vectors`` (float16, every page's token vectors, L2-normalised, concatenated),
``offsets`` (page i is ``vectors[offsets[i]:offsets[i+1]]``), ``page_ids``
(``<pdf>#<page>``), ``query_vectors``/``query_offsets``/``query_ids`` likewise, and
``qrels`` (``query-id``, ``corpus-id`` rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from pagelens.encoders import load_encoder
from pagelens.pipeline.text import TextCache, TextSettings, extract_text
from pagelens.types import Page


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _page_count(folder: Path) -> dict[str, int]:
    rows = (line.split("\t") for line in (folder / "pages.tsv").read_text().splitlines()[1:])
    return {doc: int(n) for doc, n in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-cache", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)

    encoder = load_encoder("minilm")
    settings = TextSettings(ocr="auto")
    cache = TextCache(args.text_cache) if args.text_cache else None
    counts = _page_count(args.dataset)
    page_ids: list[str] = []
    parts: list[np.ndarray] = []
    t0 = time.perf_counter()
    for doc in sorted(counts):
        pdf = args.dataset / "pdfs" / doc
        sha = _sha256(pdf)
        texts = cache.get(sha, settings) if cache else None
        if texts is None:
            texts = extract_text(str(pdf), counts[doc], settings)
            if cache:
                cache.put(sha, settings, texts)
        pages = [Page(sha, doc, t.page_number, counts[doc], text=t.text) for t in texts]
        for start in range(0, len(pages), args.batch):
            parts.extend(encoder.encode_pages(pages[start : start + args.batch]))
        page_ids.extend(f"{doc}#{t.page_number}" for t in texts)
        print(f"{doc}: {len(texts)} pages, {time.perf_counter() - t0:.0f} s", flush=True)
    queries = [json.loads(line) for line in (args.dataset / "queries.jsonl").open()]
    qvecs = encoder.encode_queries([q["query"] for q in queries])
    qrels = [
        line.split("\t")[:2] for line in (args.dataset / "qrels.tsv").read_text().splitlines()[1:]
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        args.out,
        vectors=np.concatenate(parts).astype(np.float16),
        offsets=np.cumsum([0] + [len(p) for p in parts]),
        page_ids=np.array(page_ids),
        query_vectors=np.concatenate(qvecs).astype(np.float16),
        query_offsets=np.cumsum([0] + [len(q) for q in qvecs]),
        query_ids=np.array([q["query-id"] for q in queries]),
        qrels=np.array(qrels),
    )
    print(f"{len(page_ids)} pages, {sum(len(p) for p in parts)} vectors -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
