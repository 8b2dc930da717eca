"""Indexing throughput by stage, and peak memory, on one long PDF with a tiny model.

A tiny random-init ColQwen2.5 (``tests/tiny_models.py``: hidden size 32, pages shrunk to
at most 112x112 px) keeps the encoder cheap, so what is measured is pagelens' own
pipeline around it: rendering, the hand-off to the encoder, Ward pooling, Qdrant Edge
writes and the final optimize. Real-model encode cost is ``encoder_cost.py``'s subject.

Each run indexes one PDF made by concatenating real mmlongbench PDFs with ``qpdf``
(``--pages`` pages, and a short one of ``--short-pages``) into a fresh index, in a child
process whose peak RSS is read from ``wait4`` (``ru_maxrss``) and whose RSS is also
sampled over time, to show whether memory grows with the length of the document.
``pdftoppm`` runs in grandchildren and is not part of the child's RSS; its peak is
sampled separately.

    python -m benchmarks.index_bench --pages 1000 --short-pages 100
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    MMLONGBENCH_PDFS,
    ROOT,
    command_line,
    default_out,
    module_command,
    table,
    write_json,
)

# Documents concatenated, in this order, until the page count is reached: reports,
# papers, 10-Ks and slide decks (the photo-heavy brochures are left out: they render
# 5-10x slower and would make the run long without telling more about pagelens).
SOURCE_DOCS = (
    "3M_2018_10K.pdf",
    "bigdatatrends-120723191058-phpapp02_95.pdf",
    "PG_2021.03.04_US-Views-on-China_FINAL.pdf",
    "2305.13186v3.pdf",
    "ADOBE_2015_10K.pdf",
    "csewt7zsecmmbzjufbyx-signature-24d91a254426c21c3079384270e1f138dc43a271cfe15d6d520d68205855b2a3"
    "-poli-150306115347-conversion-gate01_95.pdf",
    "STEPBACK.pdf",
    "NETFLIX_2015_10K.pdf",
    "earthlinkweb-150213112111-conversion-gate02_95.pdf",
    "12-15-15-ISIS-and-terrorism-release-final.pdf",
    "BESTBUY_2023_10K.pdf",
    "nielsen2015musicbizpresentation-final-150526143534-lva1-app6891_95.pdf",
    "2312.04350v3.pdf",
    "stereo_headset.pdf",
    "obs-productdesc-en.pdf",
    "PIP_Seniors-and-Tech-Use_040314.pdf",
    "disciplined-agile-business-analysis-160218012713_95.pdf",
    "Independents-Report.pdf",
    "honor_watch_gs_pro.pdf",
    "reportq32015-151009093138-lva1-app6891_95.pdf",
)


def _page_count(pdf: Path) -> int:
    out = subprocess.run(["qpdf", "--show-npages", str(pdf)], capture_output=True, text=True)
    return int(out.stdout.strip())


def make_pdf(pdf_dir: Path, pages: int, out: Path) -> list[str]:
    """Concatenate whole source PDFs (the last one cut) into ``out`` with exactly ``pages``."""
    args: list[str] = []
    used: list[str] = []
    left = pages
    for name in SOURCE_DOCS:
        if left == 0:
            break
        n = _page_count(pdf_dir / name)
        take = min(n, left)
        args += [str(pdf_dir / name), f"1-{take}"]
        used.append(f"{name}:1-{take}")
        left -= take
    if left:
        raise SystemExit(f"the source documents hold {pages - left} pages, fewer than {pages}")
    # --warning-exit-0: some sources have recoverable xref damage that qpdf repairs
    cmd = ["qpdf", "--warning-exit-0", "--empty", "--pages", *args, "--", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got = _page_count(out)
    if got != pages:
        raise SystemExit(f"{out} has {got} pages, expected {pages}")
    return used


# -- child: index one PDF and print the report as JSON ------------------------------------
def child(pdf: Path, model: Path, index_dir: Path, threads: int) -> None:
    import torch

    from pagelens.encoders import load_encoder
    from pagelens.index import Index
    from pagelens.pipeline.job import index_paths
    from pagelens.pipeline.render import RenderSettings

    torch.set_num_threads(threads)
    encoder = load_encoder(str(model), device="cpu")
    with Index.open(index_dir) as index:
        report = index_paths(
            index, encoder, [pdf], render=RenderSettings(threads=threads), progress=False
        )
        info = index.info()
    if report.skipped:
        raise SystemExit(f"skipped: {report.skipped}")
    st = report.stages
    print(
        json.dumps(
            {
                "pages": report.pages,
                "seconds": report.seconds,
                "pages_per_second": report.pages_per_second,
                "stages": {
                    "render_wait": st.render,
                    "encode": st.encode,
                    "pool": st.pool,
                    "store": st.store,
                    "optimize": st.optimize,
                },
                "vectors_per_page": info.vectors_per_page,
                "pooled_vectors_per_page": info.pooled_vectors_per_page,
                "bytes_per_page_info": info.bytes_per_page,
            }
        )
    )


# -- parent: run the child, watch its memory ----------------------------------------------
def _tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, summed RSS of its descendants) in bytes; 0 when gone."""
    import psutil

    try:
        p = psutil.Process(pid)
        own = p.memory_info().rss
        kids = 0
        for c in p.children(recursive=True):
            try:
                # only exec'd poppler tools: a just-forked child shows its parent's RSS
                if c.name() in ("pdftoppm", "pdfinfo"):
                    kids += c.memory_info().rss
            except psutil.Error:
                pass
        return own, kids
    except psutil.Error:
        return 0, 0


class Watch:
    """Sample a process's RSS (and its poppler children's) every quarter second, in a thread."""

    def __init__(self, pid: int, t0: float) -> None:
        self.pid, self.t0 = pid, t0
        self.samples: list[tuple[float, int, int]] = []  # (seconds, own RSS, poppler RSS)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.is_set():
            own, kids = _tree_rss(self.pid)
            if own:
                self.samples.append((time.perf_counter() - self.t0, own, kids))
            self.done.wait(0.25)

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def summary(self, wall: float) -> dict[str, Any]:
        mb = 1 / 2**20
        rss = [s[1] for s in self.samples]
        # RSS at the end of each quarter of the run: flat means memory does not grow with length
        quarters = []
        for q in (0.25, 0.5, 0.75, 1.0):
            upto = [s[1] for s in self.samples if s[0] <= q * wall]
            quarters.append(max(upto) * mb if upto else 0.0)
        return {
            "sampled_peak_rss_mb": max(rss) * mb if rss else 0.0,
            "sampled_peak_rss_by_quarter_mb": quarters,
            "sampled_peak_poppler_rss_mb": max((s[2] for s in self.samples), default=0) * mb,
        }


def run_child(pdf: Path, model: Path, index_dir: Path, threads: int) -> dict[str, Any]:
    """Index ``pdf`` in a child process; its report, peak RSS (wait4) and sampled RSS."""
    cmd = module_command(
        __spec__.name, "--child", str(pdf), "--model", str(model), "--index", str(index_dir),
        "--threads", str(threads),
    )  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    watch = Watch(proc.pid, t0)
    # read the pipes in threads so a chatty child cannot block; wait4 gives its own rusage
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    watch.stop()
    for r in readers:
        r.join()
    if proc.returncode != 0:
        sys.stderr.write(b"".join(err_chunks).decode(errors="replace")[-4000:])
        raise SystemExit(f"child failed with exit status {proc.returncode}")
    report = json.loads(b"".join(out_chunks).decode().strip().splitlines()[-1])
    mb = 1 / 2**20
    return {
        **report,
        "child_wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux: kilobytes
        **watch.summary(wall),
        "index_disk_mb": sum(f.stat().st_size for f in index_dir.rglob("*") if f.is_file()) * mb,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdf-dir", type=Path, default=MMLONGBENCH_PDFS)
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--short-pages", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="render processes and torch threads")
    ap.add_argument("--out", type=Path, default=default_out("index"))
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child(args.child, args.model, args.index, args.threads)
        return 0

    from tests.tiny_models import build_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="index-bench-") as tmp_name:
        tmp = Path(tmp_name)
        model = build_tiny_checkpoint("colqwen2_5", tmp / "model")
        runs = {}
        for label, pages in (("short", args.short_pages), ("long", args.pages)):
            runs[label] = index_run(args.pdf_dir, pages, label, model, tmp, args.threads)
    print()
    print(runs_table(runs))
    write_json(
        args.out,
        "index",
        command_line(__spec__.name, argv),
        {
            "model": "tiny colqwen2_5 (tests/tiny_models.py), device cpu",
            "threads": args.threads,
            "runs": runs,
        },
    )
    return 0


def index_run(
    pdf_dir: Path, pages: int, label: str, model: Path, tmp: Path, threads: int
) -> dict[str, Any]:
    """Make a PDF of ``pages`` pages and index it in a child process."""
    pdf = tmp / f"{label}-{pages}p.pdf"
    sources = make_pdf(pdf_dir, pages, pdf)
    index_dir = tmp / f"index-{label}"
    print(f"indexing {pages} pages ({label}) ...", flush=True)
    res = run_child(pdf, model, index_dir, threads)
    res["sources"] = sources
    res["pdf_mb"] = pdf.stat().st_size / 2**20
    shutil.rmtree(index_dir)
    print(
        f"  {res['pages']} pages in {res['seconds']:.1f} s, "
        f"{res['pages_per_second']:.2f} pages/s, peak RSS {res['peak_rss_mb']:.0f} MB",
        flush=True,
    )
    return res


def runs_table(runs: dict[str, dict[str, Any]]) -> str:
    stage_names = ["render_wait", "encode", "pool", "store", "optimize"]
    rows = []
    for label, r in runs.items():
        st = r["stages"]
        rows.append(
            [
                label,
                r["pages"],
                r["pages_per_second"],
                *(1000 * st[s] / r["pages"] for s in stage_names),
                r["peak_rss_mb"],
                " / ".join(f"{q:.0f}" for q in r["sampled_peak_rss_by_quarter_mb"]),
                r["sampled_peak_poppler_rss_mb"],
            ]
        )
    headers = [
        "run",
        "pages",
        "pages/s",
        *(f"{s} ms/page" for s in stage_names),
        "peak RSS MB",
        "RSS by quarter MB",
        "poppler RSS MB",
    ]
    return table(headers, rows)


if __name__ == "__main__":
    raise SystemExit(main())
