"""End-to-end indexing against the encoder alone, on a GPU: three full-size models.

For each model (random-init at full size, bfloat16, built on the GPU by
``encoder_cost.build``), over the carried real pages (PNGs rendered here at 150 dpi by
``encoder_cost.py --save-images``; the GPU machine has no poppler), cycled to
``--pages`` pages, in documents of 16 pages:

- encoder alone: ``ColPaliEngineEncoder.encode_pages`` in batches of 8;
- end to end: ``index_pages`` into a fresh embedded index (pool, store, commit and the
  final optimize), overlapped (pooling processes and the writer thread) and serial;
  page images are decoded from PNG, not rendered (no poppler there);
- for ColQwen2.5: the stock per-window vision attention against the batched one
  (pagelens.encoders.attention), encoder alone, and their vectors on the same pages
  (bf16: largest absolute difference, MaxSim of one page against itself);
- with and without the pre-resize (ColQwen2.5; the others' processors are untouched);
- peak GPU memory.

Each model runs in its own process with a timeout; the JSON is rewritten after each.

    python benchmarks/gpu/pipeline_gpu.py --images .gpu-pages --out $OUT/pipeline_gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder_cost import MODELS, build, load_images, make_encoder  # noqa: E402

DOC_PAGES = 16  # pages per document: a commit per 16 pages, as a short PDF has


def _pages(folder: Path, n: int, carried: int) -> list[Any]:
    """``n`` pages cycled from the ``carried`` ones, as documents of :data:`DOC_PAGES` pages."""
    base = load_images(folder, carried)
    out = []
    for i in range(n):
        p = base[i % len(base)]
        doc, number = divmod(i, DOC_PAGES)
        count = min(DOC_PAGES, n - doc * DOC_PAGES)
        out.append(
            replace(p, doc_sha256=f"{doc:064x}", doc_path=f"doc{doc}.pdf",
                    page_number=number + 1, page_count=count)
        )  # fmt: skip
    return out


def child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from pagelens.encoders import attention
    from pagelens.index import Index
    from pagelens.pipeline.job import index_pages
    from pagelens.pipeline.overlap import PipelineSettings

    torch.manual_seed(0)
    device, dtype = args.device, torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    model, proc, family = build(name, args.fraction, device=device)
    model = model.to(dtype).eval()
    enc = make_encoder(model, proc, family, name, device, dtype)
    enc.batch_size = 8
    out: dict[str, Any] = {"family": family, "build_s": time.perf_counter() - t0}
    pages = _pages(args.images, args.pages, args.carried)
    windowed = attention.use_window_attention(model)
    out["window_attention"] = windowed
    enc.encode_pages(pages[:8])  # warm-up: kernels, allocator
    sync()

    def encoder_alone(label: str) -> None:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        t = time.perf_counter()
        enc.encode_pages(pages)
        sync()
        seconds = time.perf_counter() - t
        out[label] = {"pages_per_s": len(pages) / seconds, "seconds": seconds}
        if cuda:
            out[label]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(f"  {name} {label}: {len(pages) / seconds:.1f} pages/s", file=sys.stderr, flush=True)

    def end_to_end(label: str, pipeline: PipelineSettings) -> None:
        with tempfile.TemporaryDirectory(prefix="pipeline-gpu-") as tmp:
            with Index.open(Path(tmp) / "idx") as index:
                sync()
                t = time.perf_counter()
                report = index_pages(
                    index, enc, pages, batch_size=8, progress=False, pipeline=pipeline
                )
                seconds = time.perf_counter() - t
        out[label] = {
            "pages_per_s": report.pages / seconds,
            "seconds": seconds,
            "stages": report.stages.__dict__,
            "page_errors": len(report.page_errors),
        }
        rate = report.pages / seconds
        print(f"  {name} {label}: {rate:.1f} pages/s", file=sys.stderr, flush=True)

    encoder_alone("encoder")
    end_to_end("end_to_end", PipelineSettings())
    end_to_end("end_to_end_serial", PipelineSettings(pool_workers=0))
    if hasattr(enc, "pre_resize") and family in ("colqwen2", "colqwen2_5"):
        enc.pre_resize = False
        encoder_alone("encoder_no_pre_resize")
        enc.pre_resize = True
    if windowed:
        sample = pages[:8]
        batched = enc.encode_pages(sample)
        attention.use_stock_attention(model)
        encoder_alone("encoder_stock_attention")
        stock = enc.encode_pages(sample)
        attention.use_window_attention(model)
        diffs = [float(np.abs(a - b).max()) for a, b in zip(stock, batched, strict=True)]
        maxsim = [
            (float((a @ b.T).max(axis=1).sum()), float((a @ a.T).max(axis=1).sum()))
            for a, b in zip(stock, batched, strict=True)
        ]
        out["window_vs_stock"] = {
            "max_abs_diff": max(diffs),
            "maxsim_rel_diff": max(abs(x - y) / y for x, y in maxsim),
        }
    out["overhead"] = 1 - out["end_to_end"]["pages_per_s"] / out["encoder"]["pages_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--carried", type=int, default=16, help="pages in --images")
    ap.add_argument("--pages", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fraction", type=float, default=1.0, help="depth (a CPU smoke run)")
    ap.add_argument("--timeout", type=float, default=140.0, help="seconds per model")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args)))
        return
    results: dict[str, Any] = {"command": " ".join(sys.argv), "pages": args.pages}
    for name in args.models:
        cmd = [sys.executable, __file__, "--child", name, *sys.argv[1:]]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        print(f"{name} ...", flush=True)
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=args.timeout
            )
            lines = proc.stdout.strip().splitlines()
            results[name] = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "failed": f"exit status {proc.returncode}"
            }
        except subprocess.TimeoutExpired:
            results[name] = {"failed": f"timed out after {args.timeout} s"}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    heads = ("encoder p/s", 12), ("end-to-end p/s", 15), ("serial p/s", 11), ("overhead", 9)
    print(f"{'model':<16} " + " ".join(f"{h:>{w}}" for h, w in heads))
    for name in args.models:
        r = results[name]
        if "failed" in r:
            print(f"{name:<16} FAILED: {r['failed']}")
            continue
        print(
            f"{name:<16} {r['encoder']['pages_per_s']:>12.1f} "
            f"{r['end_to_end']['pages_per_s']:>15.1f} "
            f"{r['end_to_end_serial']['pages_per_s']:>11.1f} {r['overhead']:>9.1%}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
