"""What the ledger of an embedded index costs: opening, and committing a document.

Two embedded indexes of the same synthetic pages (documents of 20 pages, random
unit vectors, pooled as a job pools them) are written side by side: one opened
with ``Index.open`` (with its ledger, ``INDEX/ledger.jsonl``), one as
``Index(EdgeStore(folder), ...)`` without one (what an index was before the
ledger). Each commit (``Index.commit_many`` of one document whose pages are
stored) is timed in both, wall and CPU; then each index is opened and closed ``--opens`` times.
The ledger's own append (one write and ``fsync``) is timed alone too.

The issue (#27) asks for at most 5% more to open and 2 ms more to commit.

    python -m benchmarks.ledger_bench --pages 2000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import command_line, default_out, median, repeat, table, write_json
from pagelens.encoders.base import EncoderSpec
from pagelens.index import Index, IndexSettings
from pagelens.pooling import ward_pool
from pagelens.storage.edge import EdgeStore
from pagelens.storage.layout import PageVectors, StoredPage
from pagelens.storage.ledger import Ledger, LedgerEntry
from pagelens.types import Document, Page

DOC_PAGES = 20


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=2000, help="pages of each index")
    ap.add_argument("--vectors", type=int, default=64, help="rerank vectors a page has")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--opens", type=int, default=20, help="opens timed per index")
    ap.add_argument("--appends", type=int, default=200, help="ledger appends timed alone")
    ap.add_argument("--folder", type=Path, default=None, help="where to write (a temp folder)")
    ap.add_argument("--out", type=Path, default=default_out("ledger"))
    return ap.parse_args(argv)


def _pages(d: int, args: argparse.Namespace, rng: np.random.Generator) -> list[StoredPage]:
    """One synthetic document's pages: random unit vectors, pooled as a job pools them."""
    out = []
    for n in range(1, DOC_PAGES + 1):
        v = rng.normal(size=(args.vectors, args.dim)).astype(np.float32)  # (vectors, dim)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        stored, cand, coarse = ward_pool(v, [3, 16, 48])
        page = Page(f"synthetic{d:06d}", f"doc{d}.pdf", n, DOC_PAGES)
        out.append(StoredPage(page, dense=PageVectors(stored, cand, v.shape[0], coarse)))
    return out


Times = dict[str, list[float]]  # seconds by index ("ledger", "none")


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all its threads) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def build(indexes: dict[str, Index], args: argparse.Namespace) -> tuple[Times, Times]:
    """Write the same documents into each index; (wall, CPU) seconds of each commit."""
    spec = EncoderSpec(model_id="synthetic", revision="1", dim=args.dim, family="synthetic")
    for index in indexes.values():
        index.prepare(spec, IndexSettings())
    commits: Times = {name: [] for name in indexes}
    cpu: Times = {name: [] for name in indexes}
    rng = np.random.default_rng(0)
    for d in range(max(1, args.pages // DOC_PAGES)):
        pages = _pages(d, args, rng)
        doc = Document(f"/synthetic/doc{d}.pdf", f"doc{d}.pdf", f"synthetic{d:06d}", 0)
        order = list(indexes.items())
        for name, index in order if d % 2 else order[::-1]:  # each first half the time
            index.begin_document(doc)
            index.add_pages(pages, durable=False)
            wall, used = _timed(lambda: index.commit_many([(doc, DOC_PAGES)]))  # noqa: B023
            commits[name].append(wall)
            cpu[name].append(used)
    for index in indexes.values():
        index.optimize()
    return commits, cpu


def opens(folders: dict[str, Path], times: int) -> tuple[Times, Times]:
    """(Wall, CPU) seconds of each open and close, alternating the indexes (the same load)."""

    def with_ledger() -> None:
        Index.open(folders["ledger"]).close()

    def without() -> None:
        Index(EdgeStore(folders["none"]), str(folders["none"])).close()

    out: Times = {"ledger": [], "none": []}
    cpu: Times = {"ledger": [], "none": []}
    for _ in range(times):
        for name, fn in (("ledger", with_ledger), ("none", without)):
            wall, used = _timed(fn)
            out[name].append(wall)
            cpu[name].append(used)
    return out, cpu


def ledger_work(folder: Path, times: int) -> list[float]:
    """Seconds of what opening adds for the ledger: reading it and three exact counts.

    Timed alone on an opened index, so less blurred by the engine's own load time
    than the difference of two opens on a busy machine.
    """
    from pagelens.storage.base import PayloadFilter

    index = Index.open(folder)
    kinds = ("document", "page", "pending")

    def work() -> None:
        Ledger.read(folder)
        for kind in kinds:
            index.store.count(PayloadFilter(kind=kind))

    try:
        return repeat(work, times)
    finally:
        index.close()


def appends(folder: Path, times: int) -> list[float]:
    """Seconds of the ledger's append of one committed document (a write and an fsync)."""
    ledger = Ledger.create(folder, None)
    out = []
    for i in range(times):
        entry = LedgerEntry(f"{i:064x}", f"doc{i}.pdf", DOC_PAGES, "/x")
        t0 = time.perf_counter()
        ledger.committed([entry])
        out.append(time.perf_counter() - t0)
    return out


def summary(
    commits: tuple[Times, Times],
    opened: tuple[Times, Times],
    work: list[float],
    alone: list[float],
) -> dict[str, Any]:
    ms = {k: median(v) * 1000 for k, v in commits[0].items()}
    open_ms = {k: median(v) * 1000 for k, v in opened[0].items()}
    return {
        "commit_cpu_ms_median": {k: median(v) * 1000 for k, v in commits[1].items()},
        "open_cpu_ms_median": {k: median(v) * 1000 for k, v in opened[1].items()},
        "commit_ms_median": ms,
        "commit_ms_added": ms["ledger"] - ms["none"],
        "open_ms_median": open_ms,
        "open_added_fraction": open_ms["ledger"] / open_ms["none"] - 1,
        "open_ledger_work_ms_median": median(work) * 1000,
        "open_ledger_work_fraction": median(work) * 1000 / open_ms["none"],
        "append_ms_median": median(alone) * 1000,
        "append_ms_p90": float(np.percentile(alone, 90)) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    root = Path(tempfile.mkdtemp(dir=args.folder, prefix="ledger-bench-"))
    try:
        folders = {"ledger": root / "ledger", "none": root / "none"}
        indexes = {
            "ledger": Index.open(folders["ledger"], lock_now=True),
            "none": Index(EdgeStore(folders["none"], lock_now=True), str(folders["none"])),
        }
        try:
            commits = build(indexes, args)
        finally:
            for index in indexes.values():
                index.close()
        opened = opens(folders, args.opens)
        work = ledger_work(folders["ledger"], args.opens)
        alone = appends(root, args.appends)
        results: dict[str, Any] = {
            "pages": (args.pages // DOC_PAGES) * DOC_PAGES,
            "vectors": args.vectors,
            "dim": args.dim,
            **summary(commits, opened, work, alone),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        [
            "commit (ms, median)",
            results["commit_ms_median"]["none"],
            results["commit_ms_median"]["ledger"],
        ],
        [
            "open + close (ms, median)",
            results["open_ms_median"]["none"],
            results["open_ms_median"]["ledger"],
        ],
        [
            "commit CPU (ms, median)",
            results["commit_cpu_ms_median"]["none"],
            results["commit_cpu_ms_median"]["ledger"],
        ],
        [
            "open + close CPU (ms, median)",
            results["open_cpu_ms_median"]["none"],
            results["open_cpu_ms_median"]["ledger"],
        ],
    ]
    print(table(["", "no ledger", "ledger"], rows))
    print(
        f"ledger append alone: {results['append_ms_median']:.3f} ms median, "
        f"{results['append_ms_p90']:.3f} ms p90; open {results['open_added_fraction']:+.1%}; "
        f"the ledger's work at open alone: {results['open_ledger_work_ms_median']:.2f} ms "
        f"({results['open_ledger_work_fraction']:.1%} of an open without it)"
    )
    write_json(args.out, "ledger", command_line(__spec__.name, argv), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
