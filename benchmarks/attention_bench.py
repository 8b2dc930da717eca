"""Batched window attention against the stock per-window calls: a CPU sanity figure.

A tiny random-init ColQwen2.5 (``tests/tiny_models.py``) made deeper (``--depth`` vision
layers, all but one windowed) with a larger pixel budget, so that a page has many
windows; 8 synthetic pages of 150-dpi page shapes. Counts the attention calls per
forward and times ``encode_pages`` (CPU seconds) both ways, and the largest difference
of their vectors. The payoff is on a GPU (launch-bound); this only checks the direction.

    python benchmarks/attention_bench.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import command_line, default_out, table, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--max-pixels", type=int, default=448 * 448)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=default_out("attention"))
    args = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AttentionInterface

    from pagelens.encoders import attention, load_encoder
    from tests.tiny_models import build_tiny_checkpoint, tiny_pages

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_tiny_checkpoint("colqwen2_5", Path(tmp) / "base")
        deep = Path(tmp) / "deep"
        shutil.copytree(base, deep)
        config = json.loads((deep / "config.json").read_text())
        config["vision_config"].update(depth=args.depth, fullatt_block_indexes=[args.depth - 1])
        (deep / "config.json").write_text(json.dumps(config))
        proc = json.loads((deep / "processor_config.json").read_text())
        proc["image_processor"]["size"]["longest_edge"] = args.max_pixels
        (deep / "processor_config.json").write_text(json.dumps(proc))
        enc: Any = load_encoder(str(deep), device="cpu")
    enc.batch_size = 8
    net = enc._model
    pages = tiny_pages([(1275, 1650), (1650, 1275)] * 4)
    calls = {"n": 0}
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        return sdpa(*a, **k)

    results: dict[str, Any] = {}
    vectors = {}
    for name in ("stock", "batched"):
        if name == "stock":
            attention.use_stock_attention(net)
        else:
            attention.use_window_attention(net)
        enc.encode_pages(pages)  # warm-up
        torch.nn.functional.scaled_dot_product_attention = counting
        try:
            calls["n"] = 0
            vectors[name] = enc.encode_pages(pages)
            n_calls = calls["n"]
        finally:
            torch.nn.functional.scaled_dot_product_attention = sdpa
        t = time.process_time()
        for _ in range(args.rounds):
            enc.encode_pages(pages)
        cpu = (time.process_time() - t) / args.rounds / len(pages)
        results[name] = {"sdpa_calls_per_forward": n_calls, "cpu_s_per_page": cpu}
    AttentionInterface.register(attention.WINDOW_ATTENTION, attention.window_attention)
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(vectors["stock"], vectors["batched"], strict=True)
    )
    results["max_abs_diff"] = diff
    print(f"{len(pages)} pages, vision depth {args.depth}, max_pixels {args.max_pixels}:")
    print(
        table(
            ["attention", "SDPA calls per 8 pages", "CPU ms/page"],
            [[k, results[k]["sdpa_calls_per_forward"], results[k]["cpu_s_per_page"] * 1000]
             for k in ("stock", "batched")],
        )
    )  # fmt: skip
    print(f"largest vector difference: {diff:.2e}")
    write_json(args.out, "attention", command_line(), results)


if __name__ == "__main__":
    main()
