"""Ray Data against the single-process job: pages/s with a tiny model (the engine's cost).

A tiny random-init ColQwen2.5 (``tests/tiny_models.py``) keeps the encoder cheap, so
what is measured is everything around it: rendering real pages at 150 dpi, pooling,
storing, and, for Ray, the engine's own overhead (starting workers, loading a model
per actor, moving pages through the object store, the driver's bookkeeping).

Each variant indexes two corpora into fresh embedded indexes (after one untimed warm-up
run), each run timed from the model load to the last commit: one page (the fixed cost
of a run) and ``--docs``
real mmlongbench PDFs cut to their first ``--pages-per-doc`` pages. The marginal rate
``(pages - 1) / (t_corpus - t_one_page)`` is the steady state; the end-to-end rate
includes the fixed cost. Ray runs on a local instance with this machine's CPUs (Ray's
own start, ``ray.init``, is timed apart). Per-stage seconds per page come from the
reports (worker-seconds, summed over workers, for Ray).

    python -m benchmarks.ray_bench --docs 6 --pages-per-doc 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import MMLONGBENCH_PDFS, ROOT, command_line, default_out, table, write_json

DOCS = (
    "3M_2018_10K.pdf",
    "PG_2021.03.04_US-Views-on-China_FINAL.pdf",
    "2305.13186v3.pdf",
    "NETFLIX_2015_10K.pdf",
    "2303.05039v2.pdf",
    "STEPBACK.pdf",
    "ADOBE_2015_10K.pdf",
    "BESTBUY_2023_10K.pdf",
)


def cut(source: Path, target: Path, pages: int) -> int:
    """Write the first ``pages`` pages of ``source`` to ``target``; return how many."""
    from pypdf import PdfReader, PdfWriter

    reader = PdfReader(str(source))
    writer = PdfWriter()
    for page in reader.pages[:pages]:
        writer.add_page(page)
    with target.open("wb") as f:
        writer.write(f)
    return min(pages, len(reader.pages))


def single(model: str, corpus: Path, folder: Path, batch_size: int) -> dict[str, Any]:
    from pagelens.encoders import load_encoder
    from pagelens.index import Index
    from pagelens.pipeline.job import index_paths

    start = time.perf_counter()
    encoder = load_encoder(model, device="cpu", batch_size=batch_size)
    with Index.open(folder) as index:
        report = index_paths(index, encoder, [corpus], progress=False)
    return _row(report, time.perf_counter() - start)


def distributed(model: str, corpus: Path, folder: Path, batch_size: int) -> dict[str, Any]:
    from pagelens.pipeline.distributed import (
        EncoderLoader,
        IndexTarget,
        RayOptions,
        index_paths_ray,
    )

    start = time.perf_counter()
    report = index_paths_ray(
        IndexTarget(path=str(folder)),
        [corpus],
        model=EncoderLoader(model, device="cpu", batch_size=batch_size),
        options=RayOptions(),
    )
    return _row(report, time.perf_counter() - start)


def _row(report: Any, seconds: float) -> dict[str, Any]:
    s = report.stages
    return {
        "pages": report.pages,
        "seconds": seconds,
        "stages_seconds": {
            "render": s.render,
            "encode": s.encode,
            "pool": s.pool,
            "store": s.store,
            "optimize": s.optimize,
        },
    }


VARIANTS: dict[str, Callable[[str, Path, Path, int], dict[str, Any]]] = {
    "single": single,
    "ray": distributed,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    parser.add_argument("--docs", type=int, default=6)
    parser.add_argument("--pages-per-doc", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="side by side"
    )
    parser.add_argument("--out", default=str(default_out("ray")))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from tests.tiny_models import build_tiny_checkpoint

    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        model = str(build_tiny_checkpoint("colqwen2_5", work / "tiny"))
        one, many = work / "one", work / "many"
        one.mkdir()
        many.mkdir()
        cut(args.pdf_dir / DOCS[0], one / "one.pdf", 1)
        pages = sum(
            cut(args.pdf_dir / name, many / name, args.pages_per_doc) for name in DOCS[: args.docs]
        )
        ray_init = _ray_init() if "ray" in args.variants else None
        runs = run_variants(args.variants, model, one, many, work, args.batch_size)
        if ray_init is not None:
            import ray

            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = summary(args.variants, pages, ray_init, runs)
    write_json(args.out, "ray", command_line(__spec__.name, argv), results)
    return 0


def _ray_init() -> float:
    """Start a local Ray with this machine's CPUs (workers import this checkout); seconds."""
    import ray

    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, runtime_env={"env_vars": env})
    return time.perf_counter() - t0


def run_variants(
    variants: list[str], model: str, one: Path, many: Path, work: Path, batch_size: int
) -> dict[str, dict[str, Any]]:
    """A warm-up run of each variant, then each on one page and on the corpus."""
    runs: dict[str, dict[str, Any]] = {}
    # the first run of each starts cold (workers import torch; pages of code load):
    # run it once untimed so the fixed cost measured is a run's own, not the first's
    for name in variants:
        warm = VARIANTS[name](model, one, work / f"index-{name}-warm-up", batch_size)
        runs[f"{name}/warm_up"] = warm
        print(name, "warm-up", f"{warm['seconds']:.1f} s", flush=True)
    for name in variants:
        for label, corpus in (("one_page", one), ("corpus", many)):
            folder = work / f"index-{name}-{label}"
            runs[f"{name}/{label}"] = VARIANTS[name](model, corpus, folder, batch_size)
            print(name, label, f"{runs[f'{name}/{label}']['seconds']:.1f} s", flush=True)
    return runs


def summary(
    variants: list[str], pages: int, ray_init: float | None, runs: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Fixed cost, end-to-end and marginal rates, stage seconds per page; print the table."""
    rows = []
    results: dict[str, Any] = {"pages": pages, "ray_init_seconds": ray_init, "runs": runs}
    for name in variants:
        small, big = runs[f"{name}/one_page"], runs[f"{name}/corpus"]
        marginal = (big["pages"] - small["pages"]) / max(big["seconds"] - small["seconds"], 1e-9)
        per_page = {k: v / big["pages"] for k, v in big["stages_seconds"].items()}
        results[name] = {
            "fixed_seconds": small["seconds"],
            "end_to_end_pages_per_second": big["pages"] / big["seconds"],
            "marginal_pages_per_second": marginal,
            "stage_seconds_per_page": per_page,
        }
        rows.append(
            [
                name,
                big["pages"],
                small["seconds"],
                big["seconds"],
                big["pages"] / big["seconds"],
                marginal,
                *(per_page[k] for k in ("render", "encode", "pool", "store")),
            ]
        )
    headers = [
        "variant",
        "pages",
        "1-page run s",
        "corpus run s",
        "pages/s (end to end)",
        "pages/s (marginal)",
        "render s/p",
        "encode s/p",
        "pool s/p",
        "store s/p",
    ]
    print(table(headers, rows))
    if {"single", "ray"} <= set(variants):
        ratio = (
            results["ray"]["marginal_pages_per_second"]
            / results["single"]["marginal_pages_per_second"]
        )
        results["ray_over_single_marginal"] = ratio
        print(f"ray.init: {ray_init:.1f} s; Ray / single-process, marginal pages/s: {ratio:.2f}")
    return results


if __name__ == "__main__":
    raise SystemExit(main())
