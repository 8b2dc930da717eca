"""Where one query's encoding time goes on a GPU: processor, transfer, forward, copy back.

Random-init full-size ColQwen2.5-3B (encoder_cost.py's real config), bfloat16, real
questions from ``benchmarks/gpu/queries.json``, one per call, as a search does:

    python benchmarks/gpu/query_latency.py --out $OUT/query_latency.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder_cost import QUERIES, build, make_encoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fraction", type=float, default=1.0, help="depth (a CPU smoke run)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from pagelens.encoders.colpali import N_QUERY_AUGMENTATION_TOKENS

    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model, proc, family = build("colqwen2.5-3b", args.fraction, device=args.device)
    model = model.to(dtype).eval()
    encoder = make_encoder(model, proc, family, "colqwen2.5-3b", args.device, dtype)
    encoder.batch_size = 1
    texts = [q["query"] for q in json.loads(QUERIES.read_text())["queries"]][: args.queries]
    encoder.encode_queries(texts[:2])  # warm-up
    names = ("processor", "to_device", "forward", "to_cpu")
    phases: dict[str, list[float]] = {k: [] for k in names}
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
    suffix = proc.query_augmentation_token * N_QUERY_AUGMENTATION_TOKENS
    lengths = [
        proc.process_texts([proc.query_prefix + t + suffix])["input_ids"].shape[1] for t in texts
    ]
    for text in texts:
        t0 = time.perf_counter()
        inputs = proc.process_texts([proc.query_prefix + text + suffix])
        t1 = time.perf_counter()
        tensors = {k: v.to(args.device) for k, v in inputs.items()}
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
    result = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "lengths": [int(n) for n in lengths],
        "encode_queries_ms": [[round(1000 * t, 2) for t in whole] for whole in passes],
        "encode_queries_median_ms": [1000 * statistics.median(whole) for whole in passes],
        "phases_median_ms": {k: 1000 * statistics.median(v) for k, v in phases.items()},
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
