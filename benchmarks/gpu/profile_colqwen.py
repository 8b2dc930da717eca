"""Where a ColQwen2.5-3B page batch spends its GPU time: vision tower vs language model.

Random-init full-size model from encoder_cost.py's real config, bfloat16 on a GPU, a
batch of 8 real pages (PNGs from ``--save-images``). Times the processor (CPU), the
vision tower alone and the whole forward, and counts attention calls and kernel
launches with torch.profiler. Run on a GPU machine:

    python -m benchmarks.gpu.profile_colqwen --images .gpu-pages --out $OUT/profile.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.encoder_cost import build, load_images


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--fraction", type=float, default=1.0, help="depth (a CPU smoke run)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import torch

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model, proc, _ = build("colqwen2.5-3b", args.fraction, device=args.device)
    model = model.to(dtype).eval()
    pages = load_images(args.images, args.batch)
    measured = profile(model, proc, pages, args.device, args.repeats)
    result = {"gpu": measured.pop("gpu"), "fraction": args.fraction, **measured}
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def profile(model: Any, proc: Any, pages: list[Any], device: str, repeats: int) -> dict[str, Any]:
    """Time the processor, the whole forward and the vision tower; profile both passes."""
    import torch

    cuda = device.startswith("cuda")
    dtype = next(model.parameters()).dtype
    t = time.perf_counter()
    inputs = proc.process_images([p.image for p in pages])
    preprocess_s = time.perf_counter() - t
    inputs = {
        k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in inputs.items()
    }

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(fn: Callable[[], Any]) -> float:
        with torch.inference_mode():
            fn()  # warm-up
            sync()
            t0 = time.perf_counter()
            for _ in range(repeats):
                fn()
            sync()
        return (time.perf_counter() - t0) / repeats

    def full() -> None:
        model(**inputs)

    # the processor pads each image's patches to one length; ColQwen2_5.forward unpads
    # them before the vision tower, and so does this call
    grid = inputs["image_grid_thw"]
    offsets = grid[:, 1] * grid[:, 2]
    patches = torch.cat(
        [seq[:n] for seq, n in zip(inputs["pixel_values"], offsets, strict=True)], dim=0
    )

    def vision() -> None:
        model.visual(patches, grid_thw=grid)

    result = {
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "batch": len(pages),
        "patches": int(patches.shape[0]),
        "sequence": list(inputs["input_ids"].shape),
        "preprocess_s": preprocess_s,
        "full_forward_s": timed(full),
        "vision_tower_s": timed(vision),
        "attn_implementation": model.config._attn_implementation,
    }
    result["language_model_s"] = result["full_forward_s"] - result["vision_tower_s"]
    for name, fn in (("full", full), ("vision", vision)):
        result.update(_kernels(name, fn, cuda, sync))
    return result


def _kernels(name: str, fn: Callable[[], Any], cuda: bool, sync: Any) -> dict[str, Any]:
    """Kernel launches, attention kernels, GPU busy time and the top kernels of one call."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    with torch.inference_mode(), profiler(activities=activities) as prof:
        fn()
        sync()
    events = prof.key_averages()
    kernels = sum(e.count for e in events if e.device_type.name == "CUDA")
    cuda_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    attention = sum(
        e.count for e in events if "attention" in e.key.lower() or "fmha" in e.key.lower()
    )
    return {
        f"{name}_kernel_launches": kernels,
        f"{name}_attention_kernels": attention,
        f"{name}_gpu_busy_s": cuda_us / 1e6,
        f"{name}_top_kernels": [
            (e.key[:80], e.count, round(e.self_device_time_total / 1e3, 2))
            for e in sorted(events, key=lambda e: -e.self_device_time_total)[:8]
        ],
    }


if __name__ == "__main__":
    raise SystemExit(main())
