"""CPU the pre-resize saves: Qwen2-VL's processor on 150-dpi pages, with and without it.

Real mmlongbench pages rendered at 150 dpi; the processor is a tiny ColQwen2.5
checkpoint's (``tests/tiny_models.py``) with its pixel budget set to each value asked
for (768 tokens of 28 x 28 px is colpali-engine's ColQwen2.5 setting). For each budget:
whether the processor's output is bit-identical with the pre-resize, and the CPU
milliseconds per page of the processor alone, of the pre-resize, and of both.

    python -m benchmarks.pre_resize_bench
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import MMLONGBENCH_PDFS, command_line, default_out, table, write_json
from benchmarks.encoder_cost import render
from pagelens.encoders import load_encoder
from pagelens.encoders.colpali import pre_resize_image


def cpu_ms(fn: Any, pages: int, rounds: int) -> float:
    fn()  # warm-up
    t = time.process_time()
    for _ in range(rounds):
        fn()
    return (time.process_time() - t) / rounds / pages * 1000


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--budgets", type=int, nargs="+", default=[768 * 28 * 28, 1280 * 28 * 28])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=default_out("pre_resize"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import torch

    from tests.tiny_models import build_tiny_checkpoint

    torch.set_num_threads(1)
    images = [p.image for p in render(args.pdf_dir, args.pages)]
    with tempfile.TemporaryDirectory() as tmp:
        enc = load_encoder(str(build_tiny_checkpoint("colqwen2_5", Path(tmp) / "m")), device="cpu")
    processor: Any = enc._processor  # type: ignore[attr-defined]
    rows, results = [], []
    for budget in args.budgets:
        processor.image_processor.size["longest_edge"] = budget
        small = [pre_resize_image(image, processor) for image in images]
        full, pre = processor.process_images(images), processor.process_images(small)
        same = all(torch.equal(full[k], pre[k]) for k in full)
        n = len(images)
        alone = cpu_ms(lambda: processor.process_images(images), n, args.rounds)
        resize = cpu_ms(lambda: [pre_resize_image(i, processor) for i in images], n, args.rounds)
        both = cpu_ms(
            lambda: processor.process_images([pre_resize_image(i, processor) for i in images]),
            n,
            args.rounds,
        )
        rows.append([budget, same, alone, resize, both, alone - both])
        results.append(
            {
                "max_pixels": budget,
                "identical": same,
                "processor_ms": alone,
                "pre_resize_ms": resize,
                "pre_resize_then_processor_ms": both,
                "sizes": [list(i.size) for i in images],
                "resized_sizes": [list(i.size) for i in small],
            }
        )
    print(f"{len(images)} pages at 150 dpi, CPU ms per page, 1 torch thread:")
    print(
        table(
            ["max_pixels", "identical", "processor", "pre-resize", "both", "saved"],
            rows,
        )
    )
    write_json(args.out, "pre_resize", command_line(__spec__.name, argv), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
