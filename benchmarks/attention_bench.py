"""Batched window attention against the stock per-window calls: a CPU sanity figure.

A tiny random-init ColQwen2.5 (``tests/tiny_models.py``) made deeper (``--depth`` vision
layers, all but one windowed) with a larger pixel budget, so that a page has many
windows; 8 synthetic pages of 150-dpi page shapes. Counts the attention calls per
forward and times ``encode_pages`` (CPU seconds) both ways, and the largest difference
of their vectors. The payoff is on a GPU (launch-bound); this only checks the direction.

    python -m benchmarks.attention_bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_line, default_out, table, write_json

PAGE_SHAPES = ((1275, 1650), (1650, 1275))  # 150-dpi letter pages, portrait and landscape


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--max-pixels", type=int, default=448 * 448)
    ap.add_argument("--pages", type=int, default=8, help="synthetic pages (shapes alternate)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=default_out("attention"))
    return ap.parse_args(argv)


def deep_encoder(depth: int, max_pixels: int) -> Any:
    """The tiny ColQwen2.5 with ``depth`` vision layers (the last one full) and a pixel budget."""
    from pagelens.encoders import load_encoder
    from tests.tiny_models import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_checkpoint("colqwen2_5", Path(tmp) / "base")
        deep = Path(tmp) / "deep"
        shutil.copytree(base, deep)
        config = json.loads((deep / "config.json").read_text())
        config["vision_config"].update(depth=depth, fullatt_block_indexes=[depth - 1])
        (deep / "config.json").write_text(json.dumps(config))
        proc = json.loads((deep / "processor_config.json").read_text())
        proc["image_processor"]["size"]["longest_edge"] = max_pixels
        (deep / "processor_config.json").write_text(json.dumps(proc))
        return load_encoder(str(deep), device="cpu")


def measure(enc: Any, pages: list[Any], rounds: int) -> tuple[dict[str, Any], list[Any]]:
    """SDPA calls in one ``encode_pages``, CPU seconds per page, and the vectors."""
    import torch

    calls = {"n": 0}
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        return sdpa(*a, **k)

    enc.encode_pages(pages)  # warm-up
    torch.nn.functional.scaled_dot_product_attention = counting
    try:
        vectors = enc.encode_pages(pages)
        n_calls = calls["n"]
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    t = time.process_time()
    for _ in range(rounds):
        enc.encode_pages(pages)
    cpu = (time.process_time() - t) / rounds / len(pages)
    return {"sdpa_calls_per_forward": n_calls, "cpu_s_per_page": cpu}, vectors


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import numpy as np
    import torch
    from transformers import AttentionInterface

    from pagelens.encoders import attention
    from tests.tiny_models import tiny_pages

    torch.set_num_threads(1)
    enc = deep_encoder(args.depth, args.max_pixels)
    enc.batch_size = 8
    net = enc._model
    pages = tiny_pages([PAGE_SHAPES[i % 2] for i in range(args.pages)])
    results: dict[str, Any] = {}
    vectors = {}
    for name in ("stock", "batched"):
        if name == "stock":
            attention.use_stock_attention(net)
        else:
            attention.use_window_attention(net)
        results[name], vectors[name] = measure(enc, pages, args.rounds)
    AttentionInterface.register(attention.WINDOW_ATTENTION, attention.window_attention)
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(vectors["stock"], vectors["batched"], strict=True)
    )
    results["max_abs_diff"] = diff
    print(f"{len(pages)} pages, vision depth {args.depth}, max_pixels {args.max_pixels}:")
    print(
        table(
            ["attention", f"SDPA calls per {len(pages)} pages", "CPU ms/page"],
            [[k, results[k]["sdpa_calls_per_forward"], results[k]["cpu_s_per_page"] * 1000]
             for k in ("stock", "batched")],
        )
    )  # fmt: skip
    print(f"largest vector difference: {diff:.2e}")
    write_json(args.out, "attention", command_line(__spec__.name, argv), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
