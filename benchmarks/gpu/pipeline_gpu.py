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

    python -m benchmarks.gpu.pipeline_gpu --images .gpu-pages --out $OUT/pipeline_gpu.json
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

from benchmarks.common import ROOT, module_command
from benchmarks.encoder_cost import MODELS, build, load_images, make_encoder

DOC_PAGES = 16  # pages per document: a commit per 16 pages, as a short PDF has


def cycled_pages(folder: Path, n: int, carried: int) -> list[Any]:
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
    """Build ``name`` on the device and measure it over the carried pages."""
    import torch

    torch.manual_seed(0)
    device, dtype = args.device, torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    t0 = time.perf_counter()
    model, proc, family = build(name, args.fraction, device=device)
    model = model.to(dtype).eval()
    enc = make_encoder(model, proc, family, name, device, dtype)
    enc.batch_size = 8
    build_s = time.perf_counter() - t0
    pages = cycled_pages(args.images, args.pages, args.carried)
    return {"family": family, "build_s": build_s, **Measure(enc, model, pages, device).run()}


class Measure:
    """The encoder alone against end-to-end indexing, attention and pre-resize variants."""

    def __init__(self, enc: Any, model: Any, pages: list[Any], device: str) -> None:
        import torch

        self.torch, self.enc, self.model, self.pages = torch, enc, model, pages
        self.cuda = device.startswith("cuda")
        self.out: dict[str, Any] = {}

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def run(self) -> dict[str, Any]:
        from pagelens.encoders import attention
        from pagelens.pipeline.overlap import PipelineSettings

        enc, out = self.enc, self.out
        windowed = attention.use_window_attention(self.model)
        out["window_attention"] = windowed
        enc.encode_pages(self.pages[:8])  # warm-up: kernels, allocator
        self.sync()
        self.encoder_alone("encoder")
        self.end_to_end("end_to_end", PipelineSettings())
        self.end_to_end("end_to_end_serial", PipelineSettings(pool_workers=0))
        if hasattr(enc, "pre_resize") and enc.spec.family in ("colqwen2", "colqwen2_5"):
            enc.pre_resize = False
            self.encoder_alone("encoder_no_pre_resize")
            enc.pre_resize = True
        if windowed:
            self.window_against_stock()
        out["overhead"] = 1 - out["end_to_end"]["pages_per_s"] / out["encoder"]["pages_per_s"]
        return out

    def encoder_alone(self, label: str) -> None:
        torch, pages = self.torch, self.pages
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.sync()
        t = time.perf_counter()
        self.enc.encode_pages(pages)
        self.sync()
        seconds = time.perf_counter() - t
        self.out[label] = {"pages_per_s": len(pages) / seconds, "seconds": seconds}
        if self.cuda:
            self.out[label]["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        name = self.enc.spec.model_id
        print(f"  {name} {label}: {len(pages) / seconds:.1f} pages/s", file=sys.stderr, flush=True)

    def end_to_end(self, label: str, pipeline: Any) -> None:
        from pagelens.index import Index
        from pagelens.pipeline.job import index_pages

        with tempfile.TemporaryDirectory(prefix="pipeline-gpu-") as tmp:
            with Index.open(Path(tmp) / "idx") as index:
                self.sync()
                t = time.perf_counter()
                report = index_pages(
                    index, self.enc, self.pages, batch_size=8, progress=False, pipeline=pipeline
                )
                seconds = time.perf_counter() - t
        self.out[label] = {
            "pages_per_s": report.pages / seconds,
            "seconds": seconds,
            "stages": report.stages.__dict__,
            "page_errors": len(report.page_errors),
        }
        rate = report.pages / seconds
        print(
            f"  {self.enc.spec.model_id} {label}: {rate:.1f} pages/s", file=sys.stderr, flush=True
        )

    def window_against_stock(self) -> None:
        import numpy as np

        from pagelens.encoders import attention

        sample = self.pages[:8]
        batched = self.enc.encode_pages(sample)
        attention.use_stock_attention(self.model)
        self.encoder_alone("encoder_stock_attention")
        stock = self.enc.encode_pages(sample)
        attention.use_window_attention(self.model)
        diffs = [float(np.abs(a - b).max()) for a, b in zip(stock, batched, strict=True)]
        maxsim = [
            (float((a @ b.T).max(axis=1).sum()), float((a @ a.T).max(axis=1).sum()))
            for a, b in zip(stock, batched, strict=True)
        ]
        self.out["window_vs_stock"] = {
            "max_abs_diff": max(diffs),
            "maxsim_rel_diff": max(abs(x - y) / y for x, y in maxsim),
        }


def parse(argv: list[str] | None) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    given = sys.argv[1:] if argv is None else list(argv)
    results: dict[str, Any] = {
        "command": " ".join(["python", "-m", __spec__.name, *given]),
        "pages": args.pages,
    }
    for name in args.models:
        print(f"{name} ...", flush=True)
        results[name] = run_child(name, given, args.timeout)
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
    return 0


def run_child(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """Measure one model in its own process (from the checkout), within ``timeout``."""
    cmd = module_command(__spec__.name, "--child", name, *argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, text=True, env=env, timeout=timeout, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timed out after {timeout} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]))
    return {"failed": f"exit status {proc.returncode}"}


if __name__ == "__main__":
    raise SystemExit(main())
