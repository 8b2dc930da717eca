"""Rendering speed: pagelens' ``render_pages`` against bare ``pdftoppm`` on the same pages.

Every variant renders the same whole documents at the same dpi to PPM in the same
temporary folder, and the variants run interleaved, round after round (the order
rotates), so that a busy machine slows them alike. Reported per variant: pages/s
(median over rounds) and CPU seconds per page (the process's own plus its children's,
which other load on the machine skews less than wall time). Ratios are taken within
each round and their median is reported.

Variants:

- ``pagelens``: ``probe`` + ``render_pages`` with ``RenderSettings(dpi, threads=2)``,
  every image loaded as RGB (what the indexing job consumes).
- ``pagelens-1t``: the same with ``threads=1``.
- ``pdftoppm-1p``: one ``pdftoppm`` process per document over all of its pages.
- ``pdftoppm-2p``: two ``pdftoppm`` processes per document, each over half the pages.
- ``pdftoppm-chunks-2p``: ``pdftoppm`` per chunk of ``--batch-pages`` pages, two at a
  time (pagelens' process layout without Python: isolates the per-process restart).
- ``pdftoppm-1p+load``: ``pdftoppm-1p`` then PIL loads every page (the pixel hand-off).
- ``pdf2image-2t``: ``pdf2image.convert_from_path(dpi, thread_count=2)``, a common
  alternative.

    python -m benchmarks.render_bench --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pagelens.pipeline.render
from benchmarks.common import (
    MMLONGBENCH_PDFS,
    command_line,
    default_out,
    median,
    table,
    write_json,
)
from pagelens.pipeline.render import RenderSettings, page_dpi, probe, render_pages
from pagelens.types import Document

# Whole documents, mixed: a text-and-chart report, a paper, two slide decks, an
# landscape report (203 pages together).
DEFAULT_DOCS = (
    "PG_2021.03.04_US-Views-on-China_FINAL.pdf",  # 40 p, survey report, letter
    "2305.13186v3.pdf",  # 27 p, research paper, A4
    "bigdatatrends-120723191058-phpapp02_95.pdf",  # 53 p, slides 4:3
    "csewt7zsecmmbzjufbyx-signature-24d91a254426c21c3079384270e1f138dc43a271cfe15d6d520d68205855b2a3"
    "-poli-150306115347-conversion-gate01_95.pdf",  # 65 p, slides 16:9
    "PWC_opportunity_of_lifetime.pdf",  # 18 p, landscape A4 report with photos
)
# Photo-heavy brochures cost ~1 CPU s per page at 150 dpi (5-10x the others), so they
# would dominate the totals; measure them apart with --docs.

VARIANTS = (
    "pagelens",
    "pagelens-1t",
    "pdftoppm-1p",
    "pdftoppm-2p",
    "pdftoppm-chunks-2p",
    "pdftoppm-1p+load",
    "pdf2image-2t",
)


def _document(path: Path) -> Document:
    data = path.read_bytes()
    return Document(
        source=str(path),
        path=path.name,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )


def _pdftoppm(pdf: Path, first: int, last: int, dpi: int, prefix: str) -> None:
    cmd = ["pdftoppm", "-r", str(dpi), "-f", str(first), "-l", str(last), str(pdf), prefix]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _load_all(folder: str) -> int:
    from PIL import Image

    n = 0
    for name in sorted(os.listdir(folder)):
        if name.endswith(".ppm"):
            with Image.open(os.path.join(folder, name)) as im:
                im.load()
            n += 1
    return n


class Bench:
    def __init__(self, docs: list[Path], dpi: int, batch_pages: int, tmp: str) -> None:
        self.paths = docs
        self.docs = [_document(p) for p in docs]
        self.dpi = dpi
        self.batch_pages = batch_pages
        self.tmp = tmp
        settings = RenderSettings(dpi=dpi)
        self.infos = [probe(d, settings) for d in self.docs]
        self.page_counts = [i.page_count for i in self.infos]
        # the pixel cap must not lower the dpi, else the variants would render different pixels
        for doc, info in zip(self.docs, self.infos, strict=True):
            dpis = {page_dpi(w, h, settings) for w, h in info.page_sizes_pt}
            if dpis != {float(dpi)}:
                raise SystemExit(
                    f"{doc.path}: max_pixels lowers the dpi to {dpis}; pick other docs"
                )

    def _scratch(self) -> str:
        return tempfile.mkdtemp(dir=self.tmp)

    # -- variants: each renders document i and returns the pages it produced ----------
    def pagelens(self, i: int, threads: int = 2) -> int:
        settings = RenderSettings(dpi=self.dpi, threads=threads, batch_pages=self.batch_pages)
        info = probe(self.docs[i], settings)  # part of what the job pays per document
        n = 0
        for page in render_pages(self.docs[i], info, settings):
            assert page.image is not None
            n += 1
        return n

    def pdftoppm_split(self, i: int, processes: int) -> int:
        folder = self._scratch()
        count = self.page_counts[i]
        bounds = [round(count * k / processes) for k in range(processes + 1)]
        ranges = [(a + 1, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        try:
            if len(ranges) == 1:
                _pdftoppm(self.paths[i], *ranges[0], self.dpi, f"{folder}/p")
            else:
                with ThreadPoolExecutor(len(ranges)) as pool:
                    jobs = [
                        pool.submit(_pdftoppm, self.paths[i], a, b, self.dpi, f"{folder}/p{k}")
                        for k, (a, b) in enumerate(ranges)
                    ]
                    for job in jobs:
                        job.result()
            return sum(1 for n in os.listdir(folder) if n.endswith(".ppm"))
        finally:
            shutil.rmtree(folder)

    def pdftoppm_chunks(self, i: int, processes: int = 2) -> int:
        folder = self._scratch()
        count = self.page_counts[i]
        chunks = [
            (a, min(a + self.batch_pages - 1, count)) for a in range(1, count + 1, self.batch_pages)
        ]
        try:
            with ThreadPoolExecutor(processes) as pool:
                jobs = [
                    pool.submit(_pdftoppm, self.paths[i], a, b, self.dpi, f"{folder}/c{a}")
                    for a, b in chunks
                ]
                for job in jobs:
                    job.result()
            return sum(1 for n in os.listdir(folder) if n.endswith(".ppm"))
        finally:
            shutil.rmtree(folder)

    def pdftoppm_load(self, i: int) -> int:
        folder = self._scratch()
        try:
            _pdftoppm(self.paths[i], 1, self.page_counts[i], self.dpi, f"{folder}/p")
            return _load_all(folder)
        finally:
            shutil.rmtree(folder)

    def pdf2image(self, i: int) -> int:
        from pdf2image import convert_from_path

        folder = self._scratch()
        try:
            images = convert_from_path(
                str(self.paths[i]), dpi=self.dpi, thread_count=2, output_folder=folder, fmt="ppm"
            )
            for im in images:
                im.load()
            n = len(images)
            del images
            return n
        finally:
            shutil.rmtree(folder)

    def runner(self, variant: str) -> Callable[[int], int]:
        return {
            "pagelens": lambda i: self.pagelens(i, 2),
            "pagelens-1t": lambda i: self.pagelens(i, 1),
            "pdftoppm-1p": lambda i: self.pdftoppm_split(i, 1),
            "pdftoppm-2p": lambda i: self.pdftoppm_split(i, 2),
            "pdftoppm-chunks-2p": lambda i: self.pdftoppm_chunks(i, 2),
            "pdftoppm-1p+load": self.pdftoppm_load,
            "pdf2image-2t": self.pdf2image,
        }[variant]


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measure(bench: Bench, variant: str) -> dict[str, object]:
    """Render every document once with ``variant``: wall and CPU seconds, per document too."""
    run = bench.runner(variant)
    per_doc = []
    pages = 0
    cpu0 = _cpu()
    t0 = time.perf_counter()
    for i in range(len(bench.docs)):
        t = time.perf_counter()
        n = run(i)
        per_doc.append(time.perf_counter() - t)
        if n != bench.page_counts[i]:
            raise SystemExit(f"{variant}: {bench.docs[i].path} gave {n} of {bench.page_counts[i]}")
        pages += n
    wall = time.perf_counter() - t0
    return {"pages": pages, "wall_s": wall, "cpu_s": _cpu() - cpu0, "per_doc_s": per_doc}


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--docs", nargs="+", default=list(DEFAULT_DOCS), help="file names in --pdf-dir")
    ap.add_argument("--dpi", type=int, default=150)
    ap.add_argument("--batch-pages", type=int, default=RenderSettings().batch_pages)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", type=Path, default=default_out("render"))
    return ap.parse_args(argv)


Round = dict[str, dict[str, Any]]  # variant -> what measure() gave in one round


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    paths = [args.pdf_dir / d for d in args.docs]
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        bench = Bench(paths, args.dpi, args.batch_pages, tmp)
        total = sum(bench.page_counts)
        print(f"{len(paths)} documents, {total} pages, {args.dpi} dpi, {args.rounds} rounds")
        rounds = run_rounds(bench, args.variants, args.rounds)
    summary = {}
    for v in args.variants:
        walls = [float(r[v]["wall_s"]) for r in rounds]
        cpus = [float(r[v]["cpu_s"]) for r in rounds]
        summary[v] = {
            "pages_per_s": total / median(walls),
            "cpu_s_per_page": median(cpus) / total,
            "wall_s": walls,
            "cpu_s": cpus,
        }
    ratios = ratios_of(rounds, set(summary))
    per_doc = {
        d.path: {
            "pages": n,
            **{v: n / median([float(r[v]["per_doc_s"][i]) for r in rounds]) for v in args.variants},
        }
        for i, (d, n) in enumerate(zip(bench.docs, bench.page_counts, strict=True))
    }
    print_tables(summary, ratios, per_doc, args.variants)
    write_json(
        args.out,
        "render",
        command_line(__spec__.name, argv),
        {
            # render.py is under active development: record which version was measured
            "render_py_sha256": hashlib.sha256(
                Path(pagelens.pipeline.render.__file__).read_bytes()
            ).hexdigest()[:16],
            "dpi": args.dpi,
            "batch_pages": args.batch_pages,
            "pages": total,
            "documents": per_doc,
            "variants": summary,
            "ratios": ratios,
            "rounds": rounds,
        },
    )
    return 0


def run_rounds(bench: Bench, variants: list[str], n: int) -> list[Round]:
    """A warm-up of each variant, then ``n`` rounds of all of them, the order rotating."""
    for variant in variants:  # warm-up: file cache, imports
        bench.runner(variant)(0)
    rounds: list[Round] = []
    for r in range(n):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        res = {}
        for variant in order:
            res[variant] = measure(bench, variant)
            print(
                f"  round {r + 1} {variant:20s} {res[variant]['wall_s']:7.2f} s wall "
                f"{res[variant]['cpu_s']:7.2f} s cpu",
                flush=True,
            )
        rounds.append(res)
    return rounds


def ratios_of(rounds: list[Round], measured: set[str]) -> dict[str, dict[str, float | None]]:
    """Speed and CPU efficiency of variant pairs: per round time(b) / time(a), then the median."""

    def ratio(a: str, b: str, key: str = "wall_s") -> float | None:
        if a not in measured or b not in measured:
            return None
        return median([float(r[b][key]) / float(r[a][key]) for r in rounds])

    return {
        f"{a} / {b}": {"speed": ratio(a, b), "cpu_efficiency": ratio(a, b, "cpu_s")}
        for a, b in [
            ("pagelens", "pdftoppm-1p"),
            ("pagelens", "pdftoppm-2p"),
            ("pagelens", "pdftoppm-chunks-2p"),
            ("pagelens", "pdf2image-2t"),
            ("pagelens-1t", "pdftoppm-1p"),
            ("pdftoppm-chunks-2p", "pdftoppm-2p"),
            ("pdftoppm-1p+load", "pdftoppm-1p"),
        ]
        if a in measured and b in measured
    }


def print_tables(
    summary: dict[str, dict[str, Any]],
    ratios: dict[str, dict[str, float | None]],
    per_doc: dict[str, dict[str, Any]],
    variants: list[str],
) -> None:
    print()
    print(
        table(
            ["variant", "pages/s", "CPU s/page", "wall s (rounds)"],
            [
                [
                    v,
                    s["pages_per_s"],
                    s["cpu_s_per_page"],
                    " ".join(f"{w:.1f}" for w in s["wall_s"]),
                ]
                for v, s in summary.items()
            ],
        )
    )
    print()
    print(
        table(
            ["ratio (median over rounds)", "speed", "CPU efficiency"],
            [[k, v["speed"], v["cpu_efficiency"]] for k, v in ratios.items()],
        )
    )
    print()
    print(
        table(
            ["document (pages/s)", "pages", *variants],
            [[k[:40], x["pages"], *(x[v] for v in variants)] for k, x in per_doc.items()],
        )
    )


if __name__ == "__main__":
    raise SystemExit(main())
