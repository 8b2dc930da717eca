"""Bytes per page as an index stores them, for pool factors 1, 2, 3, 4 and 8.

How many vectors a page has comes from the real processors' settings applied to the
real page sizes of the mmlongbench PDFs rendered at ``--dpi``: no weights are needed,
because the count of visual tokens depends only on the image size and the processor's
resize rules (``smart_resize`` for ColQwen2.5, image splitting for ColIdefics3, a fixed
448 px square for ColPali). Pooling is then measured on random unit vectors of those
shapes: Ward pooling to ``ceil(n / factor)`` clusters gives the same *count* for any
values (distinct vectors), and the count times ``dim * 2`` bytes (fp16) is what is
stored. Every index also stores the candidate vectors (``candidate_factor`` = 16)
beside the rerank vectors; both are reported. Qdrant's own overhead (HNSW links on the
candidates, payload, ids) is not counted here.

The Ward time per page is measured at the median and p90 vector counts, for one call
of ``ward_pool(v, [factor, 16])`` (one linkage serves both, as in the indexing job).

    python -m benchmarks.bytes_bench
"""

from __future__ import annotations

import argparse
import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    MMLONGBENCH_PDFS,
    command_line,
    cpu_repeat,
    default_out,
    median,
    repeat,
    table,
    write_json,
)
from pagelens.pipeline.render import RenderSettings, page_dpi, probe
from pagelens.pooling import ward_pool
from pagelens.types import Document

DIM = 128  # ColPali, ColQwen2(.5) and ColSmol all project to 128
FACTORS = (1, 2, 3, 4, 8)
CANDIDATE_FACTOR = 16
BYTES_FP16 = 2

# Visual tokens per page, by processor settings. The counts below are image tokens
# only; with page_vectors="all" (the encoder default) the prompt's text tokens add
# about a dozen more vectors per page (~1-2%).
#
# ColQwen2.5 (vidore/colqwen2.5-v0.2): Qwen2-VL image processor, 14 px patches merged
# 2x2 -> one token per 28x28 px; the image is resized by smart_resize into
# [min_pixels, max_pixels]. max_pixels comes from the checkpoint's
# preprocessor_config.json, which could not be read offline, so three values are shown:
#   768 tokens   = 768*28*28   : colpali-engine's training setting
#                                (from_pretrained(..., max_num_visual_tokens=768))
#                                and the model cards' "768 image patches at most"
#   1280 tokens  = 1280*28*28  : transformers' Qwen2VLImageProcessor default
#   16384 tokens = 12845056    : Qwen2.5-VL-3B-Instruct's preprocessor_config.json
QWEN_SETTINGS = {
    "colqwen2.5 max 768 tokens": 768 * 28 * 28,
    "colqwen2.5 max 1280 tokens": 1280 * 28 * 28,
    "colqwen2.5 max 16384 tokens": 12845056,
}
QWEN_MIN_PIXELS = 56 * 56
# ColSmol-256M (SmolVLM-256M base, Idefics3 processor): resize so the longest edge is
# 2048 px, split into 512 px tiles plus one global image, 64 tokens per tile
# (SigLIP 16 px patches on 512 px = 32x32, pixel-shuffle scale_factor 4 -> 8x8).
# Values: SmolVLM-256M preprocessor_config.json (size.longest_edge 2048,
# max_image_size.longest_edge 512) and processor_config.json (image_seq_len 64).
SMOL_SIZE, SMOL_TILE, SMOL_TOKENS_PER_TILE = 2048, 512, 64
# ColPali v1.3 (PaliGemma-3B 448): every page is resized to 448x448 -> 32x32 = 1024.
COLPALI_TOKENS = 1024


def page_pixels(pdf_dir: Path, dpi: int) -> list[tuple[int, int]]:
    """(width, height) in pixels of every page of every PDF, as pagelens renders them."""
    settings = RenderSettings(dpi=dpi)
    sizes = []
    for path in sorted(pdf_dir.glob("*.pdf")):
        data = path.read_bytes()
        doc = Document(str(path), path.name, hashlib.sha256(data).hexdigest(), len(data))
        info = probe(doc, settings)
        for w_pt, h_pt in info.page_sizes_pt:
            if (w_pt, h_pt) == (0.0, 0.0):
                continue
            d = page_dpi(w_pt, h_pt, settings)
            sizes.append((math.ceil(w_pt * d / 72), math.ceil(h_pt * d / 72)))
    return sizes


def qwen_tokens(width: int, height: int, max_pixels: int) -> int:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=28, min_pixels=QWEN_MIN_PIXELS, max_pixels=max_pixels)
    return (h // 28) * (w // 28)


def smol_tokens(width: int, height: int) -> int:
    from transformers import Idefics3ImageProcessor

    proc = Idefics3ImageProcessor(
        size={"longest_edge": SMOL_SIZE},
        max_image_size={"longest_edge": SMOL_TILE},
        do_image_splitting=True,
    )
    tiles, _, _ = proc.get_number_of_image_patches(height, width, {})
    return max(tiles, 1) * SMOL_TOKENS_PER_TILE


def stats(values: list[int]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "p10": float(np.percentile(a, 10)),
        "median": float(np.median(a)),
        "p90": float(np.percentile(a, 90)),
        "max": float(a.max()),
    }


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)  # (n, 128)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def token_counts(sizes: list[tuple[int, int]]) -> dict[str, list[int]]:
    """Visual tokens of every page, per model / processor setting."""
    by_size = Counter(sizes)
    counts: dict[str, list[int]] = {}
    for name, max_pixels in QWEN_SETTINGS.items():
        per = {s: qwen_tokens(*s, max_pixels) for s in by_size}
        counts[name] = [per[s] for s in sizes]
    per = {s: smol_tokens(*s) for s in by_size}
    counts["colsmol-256m"] = [per[s] for s in sizes]
    counts["colpali-v1.3"] = [COLPALI_TOKENS] * len(sizes)
    return counts


def stored_bytes(model: str, ns: list[int], st: dict[str, float]) -> tuple[dict, list[list]]:
    """Bytes per page stored at each pool factor (with and without candidates), and rows."""
    cand = [math.ceil(n / CANDIDATE_FACTOR) * DIM * BYTES_FP16 for n in ns]
    per_factor = {}
    rows = []
    for f in FACTORS:
        stored = [math.ceil(n / f) * DIM * BYTES_FP16 for n in ns]
        per_factor[f] = {
            "rerank_bytes_mean": float(np.mean(stored)),
            "rerank_bytes_median": float(np.median(stored)),
            "with_candidates_bytes_mean": float(np.mean(stored) + np.mean(cand)),
            "with_candidates_bytes_median": float(np.median(np.add(stored, cand))),
        }
        rows.append(
            [
                model,
                f,
                f"{st['median']:.0f}",
                per_factor[f]["rerank_bytes_median"] / 1024,
                per_factor[f]["with_candidates_bytes_median"] / 1024,
                per_factor[f]["with_candidates_bytes_mean"] * 1e6 / 2**30,
            ]
        )
    entry = {
        "visual_tokens_per_page": st,
        "candidate_bytes_median": float(np.median(cand)),
        "factors": {str(f): v for f, v in per_factor.items()},
    }
    return entry, rows


def ward_times(
    st: dict[str, float], rng: np.random.Generator, repeats: int
) -> dict[str, dict[str, Any]]:
    """Ward time at the median and p90 sizes; the count check guards the bytes claim."""
    ward = {}
    for label in ("median", "p90"):
        n = int(st[label])
        v = unit_vectors(n, rng)
        got = ward_pool(v, [3, CANDIDATE_FACTOR])
        if [g.shape[0] for g in got] != [math.ceil(n / 3), math.ceil(n / CANDIDATE_FACTOR)]:
            raise SystemExit(f"ward_pool gave {[g.shape for g in got]} for n={n}")
        fn = lambda v=v: ward_pool(v, [3, CANDIDATE_FACTOR])  # noqa: E731
        secs = repeat(fn, repeats)
        cpu = cpu_repeat(fn, repeats)
        ward[label] = {
            "vectors": n,
            "wall_s_median": median(secs),
            "cpu_s_median": median(cpu),
            "wall_s": secs,
            "cpu_s": cpu,
        }
    return ward


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--dpi", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=7, help="Ward timings per size")
    ap.add_argument("--out", type=Path, default=default_out("bytes"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = page_pixels(args.pdf_dir, args.dpi)
    by_size = Counter(sizes)
    print(f"{len(sizes)} pages, {len(by_size)} distinct page sizes at {args.dpi} dpi")
    rng = np.random.default_rng(0)
    results: dict[str, object] = {}
    rows = []
    time_rows = []
    for model, ns in token_counts(sizes).items():
        st = stats(ns)
        entry, factor_rows = stored_bytes(model, ns, st)
        rows += factor_rows
        ward = ward_times(st, rng, args.repeats)
        for label, w in ward.items():
            time_rows.append(
                [model, label, w["vectors"], w["wall_s_median"] * 1000, w["cpu_s_median"] * 1000]
            )
        results[model] = {**entry, "ward_pool_time": ward}
    print_tables(rows, time_rows)
    write_json(
        args.out,
        "bytes",
        command_line(__spec__.name, argv),
        {
            "dpi": args.dpi,
            "pages": len(sizes),
            "dim": DIM,
            "dtype": "float16",
            "candidate_factor": CANDIDATE_FACTOR,
            "page_sizes_px": {f"{w}x{h}": c for (w, h), c in by_size.most_common()},
            "models": results,
        },
    )
    return 0


def print_tables(rows: list[list], time_rows: list[list]) -> None:
    print()
    print(
        table(
            [
                "model / processor",
                "factor",
                "vectors (median)",
                "rerank KiB/page (median)",
                "+candidates KiB/page (median)",
                "GiB per 1M pages (mean)",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            ["model / processor", "page", "vectors", "ward_pool([3,16]) wall ms", "CPU ms"],
            time_rows,
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
