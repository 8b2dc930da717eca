"""Does the indexing pipeline keep a fast encoder busy? A stand-in encoder on real PDFs.

The stand-in (a test double, defined here only) sleeps a fixed time per page, as a GPU
would be busy, and returns 755 random 128-d vectors per page (a median ColQwen2.5 page),
so that pooling and storing cost what they cost with the real model. ``index_paths``
runs over real mmlongbench PDFs at 150 dpi into a fresh embedded index, serial (every
stage in the encoder's thread, batch after batch: the code path before the overlap) and
overlapped (pooling processes and a writer thread beside the encoder), side by side for
each stand-in speed. The stand-in's busy share is its sleep over the run's wall time.

Each CPU stage is also measured alone, in CPU seconds per page (this process and its
poppler children): render, text (pdftotext, for indexes with a text channel), Ward
pooling and storing. From those the rate at which 2, 8 and 16 cores saturate is
computed: (cores - 1) / (CPU seconds per page), one core being left to the encoder's
own thread, and capped by each stage's workers as they would be on that machine
(render processes: all cores but two, 2 to 16; pooling processes: cores - 1, at most 8;
the one writer thread).

    python -m benchmarks.pipeline_bench --ms 10 25 100
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import MMLONGBENCH_PDFS, command_line, default_out, table, write_json
from pagelens.encoders.base import EncoderSpec
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.cores import available_cores
from pagelens.pipeline.discover import discover
from pagelens.pipeline.job import index_paths
from pagelens.pipeline.overlap import MAX_POOL_WORKERS, PipelineSettings
from pagelens.pipeline.render import RenderSettings, probe, render_pages
from pagelens.pipeline.stages import pool_page
from pagelens.pipeline.text import TextSettings, extract_text
from pagelens.pooling import ward_pool
from pagelens.storage.layout import PageVectors, StoredPage
from pagelens.types import MultiVector, Page

# papers, a survey report, brochures, a consulting report: 114 pages
DOCS = (
    "2303.05039v2.pdf",
    "2310.07609v1.pdf",
    "05-03-18-political-release.pdf",
    "GPL-Graduate-Studies-Professional-Learning-Brochure-Jul-2021.pdf",
    "2023.findings-emnlp.248.pdf",
    "NUS-Business-School-BBA-Brochure-2024.pdf",
    "PWC_opportunity_of_lifetime.pdf",
)
VECTORS, DIM = 755, 128  # a median ColQwen2.5 page at 150 dpi (744 image tokens + 11)


def _bank(n: int = 8) -> list[MultiVector]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        v = rng.standard_normal((VECTORS, DIM)).astype(np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


class StandIn:
    """A stand-in encoder: busy (asleep, GIL released) ``seconds`` per page, as a GPU is."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.slept = 0.0
        self.pages = 0
        self._bank = _bank()
        self._spec = EncoderSpec(model_id="stand-in", revision="1", dim=DIM, family="stand-in")

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        t0 = time.perf_counter()
        time.sleep(self.seconds * len(pages))
        self.slept += time.perf_counter() - t0
        out = [self._bank[(p.page_number + self.pages) % len(self._bank)] for p in pages]
        self.pages += len(pages)
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        return [self._bank[0][:8] for _ in texts]


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its waited-for children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _pooled(vectors: MultiVector, factors: tuple[int, int, int]) -> PageVectors:
    """One page's rerank, candidate and coarse vectors, as the indexing job pools them."""
    stored, candidates, coarse = ward_pool(vectors, list(factors))
    return PageVectors(stored, candidates, int(vectors.shape[0]), coarse)


def stage_costs(paths: list[Path], render: RenderSettings, store_dir: Path) -> dict[str, Any]:
    """CPU seconds per page of each CPU stage, measured alone."""
    found = discover(paths)
    out: dict[str, Any] = {}
    pages: list[Page] = []
    c0, w0 = _cpu(), time.perf_counter()
    for doc in found.documents:
        info = probe(doc, render)
        for page in render_pages(doc, info, render):
            pages.append(page.__class__(**{**page.__dict__, "image": None}))  # drop pixels
    n = len(pages)
    out["pages"] = n
    out["render"] = {"cpu_s": (_cpu() - c0) / n, "wall_s": (time.perf_counter() - w0) / n}
    c0, w0 = _cpu(), time.perf_counter()
    for doc in found.documents:
        info = probe(doc, render)
        extract_text(doc.source, info.page_count, TextSettings(), password=info.password)
    out["text"] = {"cpu_s": (_cpu() - c0) / n, "wall_s": (time.perf_counter() - w0) / n}
    bank = _bank()
    settings = IndexSettings()
    factors = (settings.pool_factor, settings.candidate_factor, settings.coarse_factor)
    c0, w0 = _cpu(), time.perf_counter()
    pooled = [pool_page(bank[i % len(bank)], factors) for i in range(n)]
    out["pool"] = {"cpu_s": (_cpu() - c0) / n, "wall_s": (time.perf_counter() - w0) / n}
    with Index.open(store_dir) as index:
        index.prepare(StandIn(0).spec, settings, None)
        c0, w0 = _cpu(), time.perf_counter()
        for start in range(0, n, render.batch_pages):
            batch = pages[start : start + render.batch_pages]
            index.add_pages([StoredPage(p, dense=pooled[start + i]) for i, p in enumerate(batch)])
        out["store"] = {"cpu_s": (_cpu() - c0) / n, "wall_s": (time.perf_counter() - w0) / n}
    return out


def saturation(costs: dict[str, Any]) -> list[dict]:
    """Pages/s at which the CPU stages saturate 2, 8 and 16 cores (the encoder aside)."""
    cpu = {k: costs[k]["cpu_s"] for k in ("render", "pool", "store")}
    total = sum(cpu.values())
    rows = []
    for cores in (2, 8, 16):
        workers = min(MAX_POOL_WORKERS, cores - 1)
        render_threads = max(2, min(16, cores - 2))  # default_render_threads on that machine
        caps = {
            "cores": (cores - 1) / total,
            "render processes": render_threads / cpu["render"],
            "pooling processes": workers / cpu["pool"],
            "writer thread": 1 / cpu["store"],
        }
        limit = min(caps, key=lambda k: caps[k])
        rows.append({"cores": cores, "pages_per_s": caps[limit], "limit": limit, "caps": caps})
    return rows


def run(paths: list[Path], seconds: float, pipeline: PipelineSettings, render: RenderSettings):
    enc = StandIn(seconds)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        with Index.open(Path(tmp) / "idx") as index:
            c0, t0 = _cpu(), time.perf_counter()
            report = index_paths(
                index, enc, paths, render=render, pipeline=pipeline, progress=False
            )
            wall = time.perf_counter() - t0
            cpu = _cpu() - c0
    return {
        "ms_per_page": seconds * 1000,
        "overlapped": pipeline.overlapped,
        "pages": report.pages,
        "wall_s": wall,
        "pages_per_s": report.pages / wall,
        "stand_in_rate": 1 / seconds,
        "busy_share": enc.slept / wall,
        "cpu_s_per_page": cpu / report.pages,
        "stages": asdict(report.stages),
    }


def run_in_memory(pages: list[Page], seconds: float, pipeline: PipelineSettings) -> dict:
    """``index_pages`` over pages rendered beforehand: only pooling and storing compete."""
    from pagelens.pipeline.job import index_pages

    enc = StandIn(seconds)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        with Index.open(Path(tmp) / "idx") as index:
            t0 = time.perf_counter()
            report = index_pages(index, enc, pages, batch_size=8, pipeline=pipeline, progress=False)
            wall = time.perf_counter() - t0
    return {
        "ms_per_page": seconds * 1000,
        "overlapped": pipeline.overlapped,
        "pages": report.pages,
        "wall_s": wall,
        "pages_per_s": report.pages / wall,
        "busy_share": enc.slept / wall,
        "stages": asdict(report.stages),
    }


def in_memory(paths: list[Path], n: int, ms: list[float], render: RenderSettings) -> list[dict]:
    """The serial and overlapped runs on ``n`` pages held in memory (documents of 16 pages)."""
    from dataclasses import replace

    pages: list[Page] = []
    for doc in discover(paths).documents:
        for page in render_pages(doc, probe(doc, render), render):
            d, number = divmod(len(pages), 16)  # documents of 16 pages
            count = min(16, n - d * 16)
            pages.append(replace(page, doc_sha256=f"{d:064x}", page_number=number + 1,
                                 page_count=count, doc_path=f"{d}.pdf"))  # fmt: skip
            if len(pages) == n:
                break
        if len(pages) == n:
            break
    runs = []
    for m in ms:
        for pipeline in (PipelineSettings(pool_workers=0), PipelineSettings()):
            runs.append(run_in_memory(pages, m / 1000, pipeline))
    print(f"\nindex_pages over {len(pages)} pages already in memory (pooling and storing only):")
    rows = []
    for m in ms:
        s, o = (next(r for r in runs if r["ms_per_page"] == m and r["overlapped"] == k)
                for k in (False, True))  # fmt: skip
        rows.append([m, s["pages_per_s"], s["busy_share"], o["pages_per_s"], o["busy_share"]])
    print(
        table(
            ["stand-in ms/page", "serial pages/s", "serial busy", "overlapped pages/s",
             "overlapped busy"],
            rows,
        )
    )  # fmt: skip
    return runs


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--docs", nargs="+", default=list(DOCS))
    ap.add_argument("--ms", type=float, nargs="+", default=[10.0, 25.0, 100.0])
    ap.add_argument("--dpi", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--in-memory", type=int, default=48, help="pages; 0: skip that part")
    ap.add_argument("--in-memory-only", action="store_true")
    ap.add_argument("--out", type=Path, default=default_out("pipeline"))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    paths = [args.pdf_dir / d for d in args.docs]
    render = RenderSettings(dpi=args.dpi)
    command = command_line(__spec__.name, argv)
    if args.in_memory_only:
        runs = in_memory(paths, args.in_memory, args.ms, render)
        write_json(args.out, "pipeline_in_memory", command, {"runs": runs})
        return 0
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        costs = stage_costs(paths, render, Path(tmp) / "store")
    sat = saturation(costs)
    print_costs(costs, sat)
    runs = serial_against_overlapped(paths, args.ms, args.rounds, render)
    print(
        f"\nindex_paths over {costs['pages']} pages, stand-in encoder, {available_cores()} cores:"
    )
    print(rates_table(runs, args.ms))
    memory = in_memory(paths, args.in_memory, args.ms, render) if args.in_memory else []
    write_json(
        args.out,
        "pipeline",
        command,
        {
            "docs": args.docs,
            "dpi": args.dpi,
            "render_threads": render.threads,
            "pool_workers": PipelineSettings().workers(),
            "stage_costs": costs,
            "saturation": sat,
            "runs": runs,
            "in_memory_runs": memory,
        },
    )
    return 0


def print_costs(costs: dict[str, Any], sat: list[dict]) -> None:
    print(f"{costs['pages']} pages; CPU stages alone (this process + poppler children):")
    print(
        table(
            ["stage", "CPU ms/page", "wall ms/page"],
            [
                [k, costs[k]["cpu_s"] * 1000, costs[k]["wall_s"] * 1000]
                for k in ("render", "text", "pool", "store")
            ],
        )
    )
    print("\nsaturation (render + pool + store on cores - 1; text not counted):")
    print(
        table(
            ["cores", "pages/s", "limited by"],
            [[r["cores"], r["pages_per_s"], r["limit"]] for r in sat],
        )
    )


def serial_against_overlapped(
    paths: list[Path], ms: list[float], rounds: int, render: RenderSettings
) -> list[dict]:
    """``index_paths`` serial and overlapped for each stand-in speed, ``rounds`` times."""
    runs = []
    for _ in range(rounds):
        for m in ms:
            for pipeline in (PipelineSettings(pool_workers=0), PipelineSettings()):
                r = run(paths, m / 1000, pipeline, render)
                runs.append(r)
                mode = "overlapped" if r["overlapped"] else "serial"
                print(
                    f"  {m:g} ms/page {mode}: {r['pages_per_s']:.1f} pages/s, busy "
                    f"{r['busy_share']:.0%}",
                    flush=True,
                )
    return runs


def rates_table(runs: list[dict], ms: list[float]) -> str:
    rows = []
    for m in ms:
        serial = [r for r in runs if r["ms_per_page"] == m and not r["overlapped"]]
        over = [r for r in runs if r["ms_per_page"] == m and r["overlapped"]]
        s_rate = float(np.median([r["pages_per_s"] for r in serial]))
        o_rate = float(np.median([r["pages_per_s"] for r in over]))
        rows.append(
            [
                m,
                1000 / m,
                s_rate,
                float(np.median([r["busy_share"] for r in serial])),
                o_rate,
                float(np.median([r["busy_share"] for r in over])),
                o_rate / s_rate,
            ]
        )
    headers = [
        "stand-in ms/page",
        "stand-in pages/s",
        "serial pages/s",
        "serial busy",
        "overlapped pages/s",
        "overlapped busy",
        "overlapped / serial",
    ]
    return table(headers, rows)


if __name__ == "__main__":
    raise SystemExit(main())
