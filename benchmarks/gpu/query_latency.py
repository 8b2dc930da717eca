"""Where one query's encoding time goes on a GPU: processor, transfer, forward, copy back.

Random-init full-size ColQwen2.5-3B (encoder_cost.py's real config), bfloat16, real
questions from ``benchmarks/gpu/queries.json``, one per call, as a search does:

    python -m benchmarks.gpu.query_latency --out $OUT/query_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.encoder_cost import QUERIES, build, make_encoder


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fraction", type=float, default=1.0, help="depth (a CPU smoke run)")
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import torch

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, proc, family = build("colqwen2.5-3b", args.fraction, device=args.device)
    model = model.to(dtype).eval()
    encoder = make_encoder(model, proc, family, "colqwen2.5-3b", args.device, dtype)
    texts = [q["query"] for q in json.loads(QUERIES.read_text())["queries"]][: args.queries]
    result = measure(encoder, model, proc, texts, args.device)
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def measure(encoder: Any, model: Any, proc: Any, texts: list[str], device: str) -> dict[str, Any]:
    """Time ``encode_queries`` one question a call, twice over, then its phases apart."""
    import torch

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    encoder.batch_size = 1
    encoder.encode_queries(texts[:2])  # warm-up
    # two passes over the same questions: the first meets each sequence length for the
    # first time, the second repeats lengths already seen
    passes: list[list[float]] = [[], []]
    for whole in passes:
        for text in texts:
            sync()
            t0 = time.perf_counter()
            encoder.encode_queries([text])
            sync()
            whole.append(time.perf_counter() - t0)
    phases, lengths = _phases(model, proc, texts, device, sync)
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "lengths": lengths,
        "encode_queries_ms": [[round(1000 * t, 2) for t in whole] for whole in passes],
        "encode_queries_median_ms": [1000 * statistics.median(whole) for whole in passes],
        "phases_median_ms": {k: 1000 * statistics.median(v) for k, v in phases.items()},
    }


def _phases(
    model: Any, proc: Any, texts: list[str], device: str, sync: Any
) -> tuple[dict[str, list[float]], list[int]]:
    """Seconds of each phase of one question's encoding, and its sequence length."""
    import torch

    from pagelens.encoders.colpali import N_QUERY_AUGMENTATION_TOKENS

    suffix = proc.query_augmentation_token * N_QUERY_AUGMENTATION_TOKENS
    lengths = [
        int(proc.process_texts([proc.query_prefix + t + suffix])["input_ids"].shape[1])
        for t in texts
    ]
    phases: dict[str, list[float]] = {
        k: [] for k in ("processor", "to_device", "forward", "to_cpu")
    }
    for text in texts:
        t0 = time.perf_counter()
        inputs = proc.process_texts([proc.query_prefix + text + suffix])
        t1 = time.perf_counter()
        tensors = {k: v.to(device) for k, v in inputs.items()}
        sync()
        t2 = time.perf_counter()
        with torch.inference_mode():
            out = model(**tensors)
        sync()
        t3 = time.perf_counter()
        out.float().cpu().numpy()
        t4 = time.perf_counter()
        for key, a, b in (
            ("processor", t0, t1),
            ("to_device", t1, t2),
            ("forward", t2, t3),
            ("to_cpu", t3, t4),
        ):
            phases[key].append(b - a)
    return phases, lengths


if __name__ == "__main__":
    raise SystemExit(main())
