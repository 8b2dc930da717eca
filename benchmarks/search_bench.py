"""Search latency and recall of two-stage search against exact MaxSim, at scale.

Synthetic but structured page vectors (so that pooling and candidates behave like
real pages, not like uniform noise): every page mixes vectors around a few
page-specific topic centres with vectors around shared "background" centres (blank
margins, common glyphs). Each query is drawn from one page's topics, plus noise.

Pages are stored as the index stores them: rerank vectors (``--vectors`` per page,
i.e. already pooled at the index's factor) and candidate vectors Ward-pooled from
them. Recall@10 is the share of the exact top-10 (MaxSim over every page's rerank
vectors, ``candidates=None``) that two-stage search returns. Each candidate count is
run with both first stages side by side: the candidate vectors' HNSW graph, and an
exact scan of them (``first_stage="exact"``).

    python -m benchmarks.search_bench --pages 1000 10000 --out benchmarks/results/search.json

``--real FILE.npz`` (made by ``python -m benchmarks.real_vectors``) resamples real pages
instead: each page is a contiguous run of real MiniLM token vectors taken at a random
offset of the concatenated corpus, projected to ``--dim`` dimensions by a fixed random
orthogonal matrix (none at 384), with small Gaussian noise (``--noise`` per unit
vector), re-normalised; the queries are the set's real questions, encoded the same
way and projected alike. Ground truth is exact MaxSim, as for synthetic pages.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import ROOT, module_command
from pagelens.index import Index, IndexSettings, Manifest
from pagelens.pipeline.job import COMMIT_GROUP, MARK_AHEAD
from pagelens.pooling import pool_query, ward_pool
from pagelens.search import COARSE_PER_CANDIDATE, COARSE_QUERY_VECTORS, search_vectors
from pagelens.storage.edge import SEGMENT_POINTS
from pagelens.storage.layout import PageVectors, StoredPage
from pagelens.types import Document, Hit, Page


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


class Corpus:
    """Pages and queries over a shared, Zipf-distributed vocabulary of topics.

    Every page draws a dozen topics (popular ones often, as words are) and its
    vectors scatter around them; a query takes most of its tokens from one page's
    topics and the rest at random (words that match nothing in particular). Pages
    share topics, so relevance is graded rather than one page against noise.
    """

    def __init__(
        self, seed: int, vectors: int, dim: int, vocabulary: int = 4000, topics: int = 12
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.vectors, self.dim = vectors, dim
        self.topics = topics
        self.centres = _unit(self.rng.normal(size=(vocabulary, dim)))
        popularity = 1.0 / np.arange(1, vocabulary + 1)
        self.popularity = popularity / popularity.sum()
        self.page_topics: list[np.ndarray] = []

    def page(self) -> np.ndarray:
        rng = self.rng
        topics = rng.choice(len(self.centres), size=self.topics, replace=False, p=self.popularity)
        self.page_topics.append(topics)
        mix = rng.dirichlet(np.ones(self.topics))
        chosen = rng.choice(topics, size=self.vectors, p=mix)
        noise = rng.normal(size=(self.vectors, self.dim)) * (0.5 / math.sqrt(self.dim))
        return _unit(self.centres[chosen] + noise)

    def query(self, page: int, tokens: int = 20, stray: float = 0.3) -> np.ndarray:
        rng = self.rng
        n_stray = int(tokens * stray)
        own = rng.choice(self.page_topics[page], size=tokens - n_stray)
        dim = self.dim
        t = self.centres[own] + rng.normal(size=(len(own), dim)) * (0.8 / math.sqrt(dim))
        g = rng.normal(size=(n_stray, dim))
        return _unit(np.concatenate([t, g]))


def _memory(folder: Path | None = None) -> dict[str, float]:
    """This process's resident memory, anonymous and file-backed apart (MiB, /proc).

    With ``folder``, the file-backed part is split by /proc/self/smaps into the
    index's own files (under ``folder/idx``) and everything else file-backed (the
    Python, numpy and engine libraries; the benchmark's own vector files).
    """
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    if folder is not None:
        inside, where = 0, str((folder / "idx").resolve()) + "/"
        path = ""
        for line in Path("/proc/self/smaps").read_text().splitlines():
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:  # a mapping's first line
                path = head[5] if len(head) > 5 else ""
            elif head and head[0] == "Rss:" and path.startswith(where):
                inside += int(head[1])
        fields["IndexFiles"] = inside / 1024
    return {f"{k}_mib": v for k, v in fields.items()}


class RealCorpus:
    """Pages resampled from real token vectors; the set's real questions as queries."""

    def __init__(
        self, path: Path, seed: int, vectors: int, dim: int, noise: float, folder: Path
    ) -> None:
        data = np.load(path)
        flat = data["vectors"].astype(np.float32)
        queries = data["query_vectors"].astype(np.float32)
        if dim != flat.shape[1]:
            rng = np.random.default_rng(12345)  # the projection is fixed, not per run
            basis, _ = np.linalg.qr(rng.normal(size=(flat.shape[1], flat.shape[1])))
            flat, queries = flat @ basis[:, :dim], queries @ basis[:, :dim]
        # held memory-mapped from a file, so that RssAnon counts the index's work alone
        held = folder / "real_vectors.npy"
        np.save(held, _unit(flat))
        del flat
        self.flat = np.load(held, mmap_mode="r")
        offsets = data["query_offsets"]
        self.queries = [
            _unit(queries[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True) if b > a
        ]
        self.rng = np.random.default_rng(seed)
        self.vectors, self.noise, self.dim = vectors, noise, dim

    def page(self) -> np.ndarray:
        start = int(self.rng.integers(0, len(self.flat) - self.vectors))
        run = self.flat[start : start + self.vectors]
        return _unit(run + self.rng.normal(size=run.shape) * (self.noise / math.sqrt(self.dim)))

    def query(self, page: int) -> np.ndarray:
        return self.queries[page % len(self.queries)]


class ScanAnchor:
    """The floor for an exact first stage: numpy/BLAS MaxSim over a memory-mapped matrix.

    Every page's candidate vectors (as pooled, in float32 so that no conversion
    stands between the disk and BLAS) go into one matrix on disk, a fixed number per page (a page
    with fewer repeats its last vector, which leaves MaxSim unchanged). A query is
    scored against all of them in chunks of pages (one BLAS matrix product each),
    then max over each page's vectors and sum over the query tokens; the top
    ``candidates`` pages are its first stage.
    """

    CHUNK = 4096  # pages per matrix product

    def __init__(self, path: Path, n_pages: int, per_page: int, dim: int) -> None:
        self.per_page = per_page
        self.matrix = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float32, shape=(n_pages, per_page, dim)
        )
        self.n = 0

    def add(self, cand: np.ndarray) -> None:
        k = min(len(cand), self.per_page)
        self.matrix[self.n, :k] = cand[:k]
        self.matrix[self.n, k:] = cand[k - 1]
        self.n += 1

    def top(self, query: np.ndarray, candidates: int) -> np.ndarray:
        scores = np.empty(self.n, dtype=np.float32)
        q = query.astype(np.float32)
        for a in range(0, self.n, self.CHUNK):
            block = self.matrix[a : a + self.CHUNK]
            sims = block.reshape(-1, block.shape[-1]) @ q.T  # (pages * per_page, tokens)
            per = sims.reshape(len(block), self.per_page, -1).max(axis=1)
            scores[a : a + len(block)] = per.sum(axis=1)
        c = min(candidates, self.n)
        return np.argpartition(-scores, c - 1)[:c]


class PlanAnchor:
    """pagelens's own three-stage plan run by torch's CPU kernels over memory-mapped matrices.

    The floor of today's plan when no engine stands between the vectors and the
    kernels: the same pages, stages and counts as ``search_vectors`` with its
    defaults, so what it costs is what scanning costs on this machine.

    - coarse: every page's coarse vectors, 8-bit (``round(127 x)``, the vectors
      being unit), scored by ``torch._int_mm`` (the fastest library kernel for
      this shape on this CPU: an ad-hoc probe at 100k pages x 15 vectors against
      8 query vectors took 41-48 ms for int8, 67 fp16, 75 bf16, 96-104 fp32 in torch
      and 176 in numpy's BLAS) against the question's tokens Ward-pooled into
      ``coarse_query`` summed vectors, also 8-bit; max over each page's
      vectors, sum over the query's; the top ``COARSE_PER_CANDIDATE x candidates``
      pages go on;
    - candidates: those pages' candidate vectors, 8-bit alike, against every
      query token; the top ``candidates`` go on;
    - rerank: those pages' rerank vectors, float16 as the index stores them, by
      torch's float16 product (8-bit rerank vectors kept only 0.965 of the exact
      top-10 at 2,000 pages, 20 questions; converting float16 to float32 cost more than the
      product: 11 ms in torch, 31 in numpy, for 300 pages), the top 10.

    A page with fewer vectors than the matrix holds repeats its last one, which
    leaves MaxSim unchanged. The matrices are written while the index is built and
    read through the page cache, as the index's own mapped files are.
    """

    CHUNK = 4096  # pages per coarse matrix product: its scores stay in the caches

    def __init__(
        self,
        folder: Path,
        n_pages: int,
        per_page: tuple[int, int, int],
        dim: int,
        coarse_query: int | None = COARSE_QUERY_VECTORS,
    ) -> None:
        import torch

        self.torch, self.dim, self.coarse_query = torch, dim, coarse_query
        self.coarse_n, self.cand_n, self.rerank_n = per_page
        shape = {"coarse": self.coarse_n, "candidates": self.cand_n, "rerank": self.rerank_n}
        dtype = {"coarse": np.int8, "candidates": np.int8, "rerank": np.float16}
        self.m = {
            k: np.lib.format.open_memmap(
                folder / f"plan_{k}.npy", mode="w+", dtype=dtype[k], shape=(n_pages, n, dim)
            )
            for k, n in shape.items()
        }
        self.n = 0

    def add(self, rerank: np.ndarray, cand: np.ndarray, coarse: np.ndarray) -> None:
        for name, v in (("coarse", coarse), ("candidates", cand), ("rerank", rerank)):
            row = self.m[name][self.n]
            k = min(len(v), len(row))
            # unit vectors: 8-bit values within [-127, 127]; float16 as the index stores
            row[:k] = np.rint(v[:k] * 127.0) if row.dtype == np.int8 else v[:k]
            row[k:] = row[k - 1]
        self.n += 1

    def _int8(self, q: np.ndarray) -> Any:
        """A query's vectors as an 8-bit (dim, columns) matrix, its own scale.

        Columns padded with zeros (which add nothing to a sum) to 8, or above 8 to
        a multiple of 32: the kernel's fast shapes here (an ad-hoc probe over 3,000
        pages x 48 vectors: 20 tokens padded to 24 took 4.2 ms, to 32 2.7 ms).
        """
        torch = self.torch
        cols = 8 if len(q) <= 8 else -(-len(q) // 32) * 32
        out = np.zeros((self.dim, cols), dtype=np.int8)
        out[:, : len(q)] = np.rint(q.T * (127.0 / max(float(np.abs(q).max()), 1e-9)))
        return torch.from_numpy(out)

    def _maxsim(self, pages: np.ndarray, name: str, q: Any) -> Any:
        """MaxSim of the given pages' 8-bit vectors against an 8-bit query matrix."""
        torch = self.torch
        block = torch.from_numpy(np.ascontiguousarray(self.m[name][pages]))
        per = block.shape[1]
        sims = torch._int_mm(block.view(-1, self.dim), q)
        return sims.view(len(pages), per, -1).amax(1).sum(1)

    def top(self, query: np.ndarray, candidates: int) -> list[int]:
        torch = self.torch
        n = self.n
        short = query if self.coarse_query is None else pool_query(query, self.coarse_query)
        coarse_q = self._int8(short)
        flat = torch.from_numpy(self.m["coarse"][:n].reshape(-1, self.dim))
        scores = torch.empty(n, dtype=torch.int32)
        for a in range(0, n, self.CHUNK):
            b = min(n, a + self.CHUNK)
            sims = torch._int_mm(flat[a * self.coarse_n : b * self.coarse_n], coarse_q)
            scores[a:b] = sims.view(b - a, self.coarse_n, -1).amax(1).sum(1)
        passed = min(n, COARSE_PER_CANDIDATE * candidates)
        pages = np.sort(torch.topk(scores, passed).indices.numpy())
        q = self._int8(query)
        cand = self._maxsim(pages, "candidates", q)
        pages = np.sort(pages[torch.topk(cand, min(candidates, len(pages))).indices.numpy()])
        block = torch.from_numpy(np.ascontiguousarray(self.m["rerank"][pages]))
        sims = block.view(-1, self.dim) @ torch.from_numpy(query.T.astype(np.float16))
        final = sims.view(len(pages), self.rerank_n, -1).amax(1).float().sum(1)
        return pages[torch.topk(final, min(10, len(pages))).indices.numpy()].tolist()


class Anchors:
    """The other systems the issue names, run beside pagelens on the same pages.

    - ``muvera``: fastembed's MUVERA fixed-dimensional encoding of each page's
      rerank vectors (its defaults: k_sim 5, dim_proj 16, r_reps 20, so 10,240
      dimensions), one plain vector per page in Qdrant Edge with its default HNSW
      graph (m 16, ef_construct 100); its top candidates are the first stage.
    - ``plaid``: fast-plaid's PLAID index (k-means centroids, 4-bit residuals) over
      every rerank vector of every page, on the CPU, with its default search.

    Both need packages pagelens does not: ``pip install fastembed fast-plaid``
    (a fast-plaid built for the installed torch: 1.7.0.290 for torch 2.9).
    """

    def __init__(
        self, folder: Path, names: Sequence[str], n_pages: int, per_page: int, dim: int
    ) -> None:
        self.folder, self.names = folder, names
        self.fde: Any = None
        self.tokens: Any = None
        if "muvera" in names:
            from fastembed.postprocess.muvera import Muvera

            self.muvera = Muvera(dim=dim)
            size = self.muvera.embedding_size
            self.fde = np.lib.format.open_memmap(
                folder / "fde.npy", mode="w+", dtype=np.float32, shape=(n_pages, size)
            )
        if "plaid" in names:
            self.tokens = np.lib.format.open_memmap(
                folder / "tokens.npy", mode="w+", dtype=np.float16, shape=(n_pages, per_page, dim)
            )
        self.n = 0

    def add(self, rerank: np.ndarray) -> None:
        if self.fde is not None:
            self.fde[self.n] = self.muvera.process_document(rerank)
        if self.tokens is not None:
            self.tokens[self.n] = rerank
        self.n += 1

    def run(self, queries, exact, candidates: list[int]) -> list[dict]:
        out = []
        if self.fde is not None:
            out += self._muvera(queries, exact, candidates)
        if self.tokens is not None:
            out += self._plaid(queries, exact)
        return out

    def _muvera(self, queries, exact, candidates: list[int]) -> list[dict]:
        import qdrant_edge as m

        size = self.fde.shape[1]
        config = m.EdgeConfig(
            vectors={
                "fde": m.EdgeVectorParams(
                    size=size,
                    distance=m.Distance.Dot,
                    hnsw_config=m.HnswIndexConfig(
                        m=16, ef_construct=100, full_scan_threshold=10_000
                    ),
                )
            }
        )
        shard = m.EdgeShard.create(str(self.folder / "muvera"), config)
        t0 = time.perf_counter()
        for a in range(0, self.n, 500):
            points = [
                m.Point(i, {"fde": self.fde[i].tolist()}, {})
                for i in range(a, min(self.n, a + 500))
            ]
            shard.update(m.UpdateOperation.upsert_points(points))
        shard.optimize()
        build_s = time.perf_counter() - t0
        fdes = [self.muvera.process_query(q).tolist() for q in queries]
        rows = []
        for c in candidates:
            lat, cpu, covered = [], [], []
            for f, ref in zip(fdes, exact, strict=False):
                request = m.QueryRequest(
                    limit=c, query=m.Query.Nearest(f, using="fde"), with_payload=False
                )
                found, wall, used = _timed(partial(shard.query, request))
                lat.append(wall)
                cpu.append(used)
                covered.append(_covered([int(p.id) for p in found], ref))
            rows.append(
                {
                    "anchor": f"MUVERA FDE ({size}-d) + HNSW (first stage only)",
                    "candidates": c,
                    "build_s": build_s,
                    **_latency(lat, cpu),
                    "recall_at_10_bound": float(np.mean(covered)),
                }
            )
        shard.close()
        return rows

    def _plaid(self, queries, exact) -> list[dict]:
        import torch
        from fast_plaid import search as fast_plaid

        t0 = time.perf_counter()
        index = fast_plaid.FastPlaid(index=str(self.folder / "plaid"), device="cpu")
        docs = [
            torch.from_numpy(np.asarray(self.tokens[i], dtype=np.float32)) for i in range(self.n)
        ]
        index.create(documents_embeddings=docs)
        build_s = time.perf_counter() - t0

        def top(q: np.ndarray) -> list[int]:
            found = index.search(
                queries_embeddings=torch.from_numpy(q[None]), top_k=10, show_progress=False
            )
            return [d for d, _ in found[0]]

        latency, recall = _run_anchor(top, queries, exact)
        return [
            {
                "anchor": "PLAID (fast-plaid, CPU, defaults; ends in its own top-10)",
                "candidates": 10,
                "build_s": build_s,
                **latency,
                "recall_at_10_bound": recall,
            }
        ]


def _covered(pages: list[int], ref) -> float:
    """The share of the exact top-10 among these page numbers."""
    ids = {f"doc{i // 20}.pdf#{i % 20 + 1}" for i in pages}
    return len(ids & {h.page_id for h in ref}) / max(1, len(ref))


def _run_anchor(top, queries, exact) -> tuple[dict, float]:
    """Time ``top(q)`` (page numbers) on each question: its latency, and the share of
    the exact top-10 among the pages it returns, averaged over the questions."""
    lat, cpu, covered = [], [], []
    for q, ref in zip(queries, exact, strict=False):
        pages, wall, used = _timed(partial(top, q))
        lat.append(wall)
        cpu.append(used)
        covered.append(_covered([int(p) for p in pages], ref))
    return _latency(lat, cpu), float(np.mean(covered))


def _latency(wall: list[float], cpu: list[float]) -> dict:
    return {
        "p50_ms": 1000 * float(np.percentile(wall, 50)),
        "p99_ms": 1000 * float(np.percentile(wall, 99)),
        "cpu_p50_ms": 1000 * float(np.percentile(cpu, 50)),
    }


@dataclass(frozen=True)
class Settings:
    """What every index of a run shares: the command line's knobs (see ``parse``)."""

    raw_vectors: int = 720  # encoder vectors per page before pooling
    pool_factor: int = 3
    candidate_factor: int = IndexSettings.candidate_factor
    coarse_factor: int = IndexSettings.coarse_factor
    candidates: tuple[int, ...] = (50, 100, 200, 400)
    first_stages: tuple[str, ...] = ("exact",)
    coarse_queries: tuple[int, ...] = (COARSE_QUERY_VECTORS or 0,)  # 0: every token
    queries: int = 100
    seed: int = 0
    dim: int = 128
    real: Path | None = None  # resample real vectors from this .npz
    noise: float = 0.1  # with ``real``: noise per vector
    anchors: tuple[str, ...] = ()
    keep: Path | None = None  # keep each index under this folder

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        given: dict[str, Any] = {f: getattr(args, f) for f in cls.__dataclass_fields__}
        fields: dict[str, Any] = {
            f: tuple(v) if isinstance(v, list) else v for f, v in given.items()
        }
        return cls(**fields)

    @property
    def index_settings(self) -> IndexSettings:
        return IndexSettings(
            pool_factor=self.pool_factor,
            candidate_factor=self.candidate_factor,
            coarse_factor=self.coarse_factor,
        )

    @property
    def stored(self) -> int:
        """Vectors per page as stored: raw vectors / pool factor."""
        return math.ceil(self.raw_vectors / self.pool_factor)

    @property
    def pooled_factors(self) -> tuple[int, int]:
        """The candidate and coarse factors over the stored vectors (pooled from those)."""
        return (
            max(1, round(self.candidate_factor / self.pool_factor)),
            max(1, round(self.coarse_factor / self.pool_factor)),
        )

    @property
    def coarse_query(self) -> int | None:
        """The coarse stage's query vectors outside the side-by-side rows: the first asked."""
        return self.coarse_queries[0] or None


@dataclass(frozen=True)
class Build:
    """One index of a run: what varies side by side between indexes."""

    pages: int
    layout: str = "compact"
    segment_points: int = SEGMENT_POINTS  # 0: one segment
    writes: str = "document"  # how documents are written: see _store_document
    anchors: bool = True  # the anchors run once per size, beside the first index

    @property
    def name(self) -> str:
        return f"{self.pages}-{self.layout}-{self.segment_points}-{self.writes}"


@dataclass
class Beside:
    """The anchors that run beside one index, fed every page as it is stored."""

    scan: ScanAnchor | None = None
    plan: PlanAnchor | None = None
    others: Anchors | None = None

    @classmethod
    def make(cls, folder: Path, n_pages: int, s: Settings) -> Beside:
        stored = s.stored
        cand_factor, coarse_factor = s.pooled_factors
        cand_n, coarse_n = math.ceil(stored / cand_factor), math.ceil(stored / coarse_factor)
        out = cls()
        if "scan" in s.anchors:
            out.scan = ScanAnchor(folder / "candidates.npy", n_pages, cand_n, s.dim)
        if {"muvera", "plaid"} & set(s.anchors):
            out.others = Anchors(folder, s.anchors, n_pages, stored, s.dim)
        if "plan" in s.anchors:
            per_page = (coarse_n, cand_n, stored)
            out.plan = PlanAnchor(folder, n_pages, per_page, s.dim, s.coarse_query)
        return out

    def add(self, rerank: np.ndarray, cand: np.ndarray, coarse: np.ndarray) -> None:
        if self.scan is not None:
            self.scan.add(cand)
        if self.others is not None:
            self.others.add(rerank)
        if self.plan is not None:
            self.plan.add(rerank, cand, coarse)

    def run(
        self, queries: list[np.ndarray], exact: list[list[Hit]], candidates: Sequence[int]
    ) -> list[dict]:
        """Every anchor on the same queries, against the same exact top-10."""
        anchors = []
        if self.scan is not None:
            for c in candidates:
                top = partial(self.scan.top, candidates=c)
                latency, covered = _run_anchor(top, queries, exact)
                anchors.append(
                    {
                        "anchor": "numpy scan (first stage only)",
                        "candidates": c,
                        **latency,
                        # the exact top-10 inside its candidates: recall@10 after a rerank
                        "recall_at_10_bound": covered,
                    }
                )
        if self.plan is not None:  # ends in its own top-10
            for c in candidates:
                latency, recall = _run_anchor(partial(self.plan.top, candidates=c), queries, exact)
                anchors.append(
                    {
                        "anchor": "pagelens's plan in torch over memory-mapped matrices (8-bit "
                        "coarse and candidates, float16 rerank; ends in its own top-10)",
                        "candidates": c,
                        **latency,
                        "recall_at_10": recall,
                        "recall_at_10_bound": recall,
                    }
                )
        if self.others is not None:
            anchors += self.others.run(queries, exact, list(candidates))
        return anchors


@dataclass
class Built:
    """What building one index took: seconds by stage, and memory at each quarter."""

    corpus: Corpus | RealCorpus
    pool_s: float = 0.0
    store_s: float = 0.0
    optimize_s: float = 0.0
    quarters: list[dict[str, float]] = field(default_factory=list)


def make_corpus(s: Settings, folder: Path) -> Corpus | RealCorpus:
    if s.real is not None:
        return RealCorpus(s.real, s.seed, s.stored, s.dim, s.noise, folder)
    return Corpus(s.seed, s.stored, s.dim)


def build(
    index: Index, corpus: Corpus | RealCorpus, b: Build, s: Settings, folder: Path, beside: Beside
) -> Built:
    """Store ``b.pages`` pages of ``corpus`` as documents of 20 pages, then optimize."""
    out = Built(corpus)
    n_pages = b.pages
    cand_factor, coarse_factor = s.pooled_factors
    doc: list[StoredPage] = []
    for i in range(n_pages):
        v = corpus.page()
        t0 = time.perf_counter()
        cand, coarse = ward_pool(v, [cand_factor, coarse_factor])
        out.pool_s += time.perf_counter() - t0
        beside.add(v, cand, coarse)
        page = Page(
            doc_sha256=f"synthetic{i // 20}",
            doc_path=f"doc{i // 20}.pdf",
            page_number=i % 20 + 1,
            page_count=20,
        )
        doc.append(StoredPage(page, dense=PageVectors(v, cand, v.shape[0], coarse)))
        if len(doc) == 20 or i == n_pages - 1:
            t0 = time.perf_counter()
            _store_document(index, i // 20, doc, math.ceil(n_pages / 20), b.writes)
            out.store_s += time.perf_counter() - t0
            doc = []
        if (i + 1) % max(1, n_pages // 4) == 0:  # every quarter of the run
            out.quarters.append(
                {"pages": i + 1, "pool_s": out.pool_s, "store_s": out.store_s, **_memory(folder)}
            )
            print(
                f"{i + 1} pages: pooling {out.pool_s:.0f} s, storing {out.store_s:.0f} s",
                flush=True,
            )
    t0 = time.perf_counter()
    index.optimize()
    out.optimize_s = time.perf_counter() - t0
    return out


def _doc(d: int) -> Document:
    return Document(f"/synthetic/doc{d}.pdf", f"doc{d}.pdf", f"synthetic{d}", 0)


def _store_document(
    index: Index, d: int, pages: list[StoredPage], n_docs: int, writes: str
) -> None:
    """Write a document's pages as an indexing job does: marks, batches of 8, commit.

    ``writes`` says which job:

    - ``"document"``: today's, its writer keeping up with the encoder: it marks
      ``MARK_AHEAD`` documents pending in one write, stores pages unflushed, and
      commits each document as it ends (2 flushes);
    - ``"grouped"``: today's, its writer behind: documents committed together,
      ``COMMIT_GROUP`` at a time (the last group at the end of the build);
    - ``"each"``: the previous release's, every write flushed (the mark, each
      batch of pages, the record, the mark's removal).
    """
    doc = _doc(d)
    each = writes == "each"
    if each:
        index.begin_document(doc)
    elif d % MARK_AHEAD == 0:
        index.begin_documents([_doc(k) for k in range(d, min(d + MARK_AHEAD, n_docs))])
    for b in range(0, len(pages), 8):  # the job's default encoder batch
        index.add_pages(pages[b : b + 8], durable=each)
    if writes != "grouped":
        index.commit(doc, len(pages))
    elif (d + 1) % COMMIT_GROUP == 0 or d == n_docs - 1:
        first = d - d % COMMIT_GROUP
        index.commit_many([(_doc(k), 20) for k in range(first, d)] + [(doc, len(pages))])
    if each:
        index.store.flush()  # the mark's removal, which the previous release flushed


def _prepare(index: Index, settings: IndexSettings, layout: str, dim: int) -> None:
    """Create the index in the layout asked for: today's, or an earlier manifest format's."""
    from pagelens.encoders.base import EncoderSpec

    spec = EncoderSpec("synthetic", "0", dim, "synthetic")
    if layout == "compact":
        index.prepare(spec, settings)
        return
    fmt = int(layout.removeprefix("format"))
    manifest = Manifest(spec, settings, "0.1.0", "2026-12-01T00:00:00+00:00", format=fmt)
    index.store.create(manifest.collection_spec())
    index.restore_manifest(manifest)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``fn()``, and its wall and CPU seconds (this process's: the engine's threads included)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def _segments(index: Index) -> int:
    """Segments of an embedded index, the appendable one included (the engine's count)."""
    store: Any = index.store
    return int(store._shard.info().segments_count)


def probe(folder: Path, candidates: int, coarse_query: int | None) -> dict[str, Any]:
    """Serve the kept queries from a fresh process: its memory and latency (run as a child).

    The process opens the index as ``pagelens serve`` or a script would, runs the
    default two-stage search for every query twice (the second round is the one
    timed: a warm server), and reports its own /proc figures. RssFile then counts
    only the index files that serving touches, not what building it mapped.
    """
    before = _memory(folder)
    t0 = time.perf_counter()
    index = Index.open(folder / "idx")
    opened = _memory(folder)
    open_s = time.perf_counter() - t0
    with np.load(folder / "queries.npz") as data:
        queries = [data[k] for k in sorted(data.files, key=int)]
    options: dict[str, Any] = {
        "k": 10,
        "candidates": candidates,
        "coarse_query_vectors": coarse_query,
    }
    for q in queries:  # first round: pages come in from disk as queries need them
        search_vectors(index, [q], **options)
    wall, cpu = [], []
    for q in queries:
        _, w, c = _timed(partial(search_vectors, index, [q], **options))
        wall.append(w)
        cpu.append(c)
    after = _memory(folder)
    index.close()
    return {
        "before_open": before,
        "after_open": opened,
        "open_s": open_s,
        "after_searches": after,
        **_latency(wall, cpu),
    }


def _fresh_probe(folder: Path, candidates: int, coarse_query: int | None) -> dict[str, Any]:
    cmd = module_command(
        __spec__.name, "--probe", str(folder), "--candidates", str(candidates),
        "--coarse-queries", str(coarse_query or 0),
    )  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _questions(
    corpus: Corpus | RealCorpus, n_pages: int, s: Settings
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The questions asked of an index, and what each is about (a page, or a real question)."""
    rng = np.random.default_rng(s.seed + 1)
    if isinstance(corpus, RealCorpus):  # the real questions, in a random order
        targets = rng.permutation(len(corpus.queries))[: s.queries]
    else:  # a question about a random page
        targets = rng.integers(0, n_pages, s.queries)
    return targets, [corpus.query(int(t)) for t in targets]


def _exact(
    index: Index, queries: list[np.ndarray]
) -> tuple[list[list[Hit]], list[float], list[float]]:
    """The oracle: every page's rerank vectors scored; its top-10s, wall and CPU seconds."""
    exact, t_exact, c_exact = [], [], []
    for q in queries:
        hits, wall, cpu = _timed(partial(search_vectors, index, [q], k=10, candidates=None))
        exact.append(hits[0])
        t_exact.append(wall)
        c_exact.append(cpu)
    return exact, t_exact, c_exact


def _two_stage(
    index: Index, queries: list[np.ndarray], exact: list[list[Hit]], s: Settings
) -> list[dict[str, Any]]:
    """Each candidate count, first stage and coarse query size, side by side: latency, recall."""
    rows = []
    # the coarse stage's query vectors, side by side where the index has the stage
    pooled = s.coarse_queries if index.has_coarse_vectors else (0,)
    for c, stage, cq in itertools.product(s.candidates, s.first_stages, pooled):
        if stage == "hnsw" and not index.has_candidate_graph:
            continue  # the compact layout has no graph to walk
        options: dict[str, Any] = {
            "k": 10,
            "candidates": c,
            "first_stage": stage,
            "coarse_query_vectors": cq or None,
        }
        lat, cpu, recall = [], [], []
        for q, ref in zip(queries, exact, strict=False):
            found, wall, used = _timed(partial(search_vectors, index, [q], **options))
            lat.append(wall)
            cpu.append(used)
            want = {h.page_id for h in ref}
            recall.append(len(want & {h.page_id for h in found[0]}) / len(want))
        rows.append(
            {
                "candidates": c,
                "first_stage": stage,
                "coarse_query_vectors": cq if index.has_coarse_vectors else None,
                "p50_ms": 1000 * float(np.percentile(lat, 50)),
                "p99_ms": 1000 * float(np.percentile(lat, 99)),
                "cpu_p50_ms": 1000 * float(np.percentile(cpu, 50)),
                "cpu_p99_ms": 1000 * float(np.percentile(cpu, 99)),
                "recall_at_10": float(np.mean(recall)),
            }
        )
    return rows


def _hit_rate(
    corpus: Corpus | RealCorpus, targets: np.ndarray, exact: list[list[Hit]]
) -> float | None:
    """The share of synthetic questions whose page is in the exact top-10."""
    if isinstance(corpus, RealCorpus):  # the real questions have no synthetic target page
        return None
    return float(
        np.mean(
            [
                any(h.page_id == f"doc{t // 20}.pdf#{t % 20 + 1}" for h in r[:10])
                for t, r in zip(targets, exact, strict=False)
            ]
        )
    )


def run(b: Build, s: Settings) -> dict[str, Any]:
    """Build one index beside its anchors, serve it from a fresh process, search it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if s.keep is not None:  # keep the index and queries, for --probe later
            folder = s.keep / b.name
            folder.mkdir(parents=True, exist_ok=False)
        index = Index.open(folder / "idx", segment_points=b.segment_points)
        _prepare(index, s.index_settings, b.layout, s.dim)
        beside = Beside.make(folder, b.pages, s) if b.anchors else Beside()
        t0 = time.perf_counter()
        built = build(index, make_corpus(s, folder), b, s, folder, beside)
        t_build = time.perf_counter() - t0  # includes making the corpus
        targets, queries = _questions(built.corpus, b.pages, s)
        named: dict[str, Any] = {str(i): q for i, q in enumerate(queries)}
        np.savez(folder / "queries.npz", **named)
        index.close()  # a fresh process serves it first: what a server started later holds
        fresh = _fresh_probe(folder, s.candidates[0], s.coarse_query)
        index = Index.open(folder / "idx", segment_points=b.segment_points)
        for q in queries:  # serving: the default two-stage search only, then its memory
            search_vectors(
                index, [q], k=10, candidates=s.candidates[0], coarse_query_vectors=s.coarse_query
            )
        serving = _memory(folder)  # before the exact oracle maps every rerank vector in
        exact, t_exact, c_exact = _exact(index, queries)
        rows = _two_stage(index, queries, exact, s)
        anchors = beside.run(queries, exact, s.candidates)
        info = index.info()
        segments = _segments(index)
        memory = _memory()
        hit_rate = _hit_rate(built.corpus, targets, exact)
        index.close()
    cand_factor, _ = s.pooled_factors
    return {
        "pages": b.pages,
        "layout": b.layout,
        "segment_points": b.segment_points,
        "segments": segments,
        "writes": b.writes,
        "stored_vectors_per_page": s.stored,
        "candidate_vectors_per_page": math.ceil(s.stored / cand_factor),
        "coarse_vectors_per_page": round(info.coarse_vectors_per_page, 1),
        "build_s": t_build,  # includes making the corpus
        "store_and_index_s": built.store_s + built.optimize_s,  # the build
        "pool_s": built.pool_s,
        "upsert_s": built.store_s,
        "optimize_s": built.optimize_s,
        "exact_p50_ms": 1000 * float(np.percentile(t_exact, 50)),
        "exact_p99_ms": 1000 * float(np.percentile(t_exact, 99)),
        "exact_cpu_p50_ms": 1000 * float(np.percentile(c_exact, 50)),
        "exact_target_in_top10": hit_rate,
        "memory_while_indexing": built.quarters,  # seconds so far, RssAnon/RssFile
        "memory_serving_two_stage": serving,
        "fresh_serving_process": fresh,
        "vector_bytes_per_page": info.bytes_per_page,
        "disk_bytes_per_page": info.disk_bytes_per_page,
        **memory,
        "two_stage": rows,
        "anchors": anchors,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pages", type=int, nargs="+", default=[1000, 10000])
    p.add_argument(
        "--raw-vectors", type=int, default=720, help="encoder vectors per page before pooling"
    )
    p.add_argument("--pool-factor", type=int, default=3)
    p.add_argument("--candidate-factor", type=int, default=IndexSettings.candidate_factor)
    p.add_argument("--coarse-factor", type=int, default=IndexSettings.coarse_factor)
    p.add_argument("--candidates", type=int, nargs="+", default=[50, 100, 200, 400])
    p.add_argument("--first-stages", nargs="+", default=["exact"], choices=["hnsw", "exact"])
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    _side_by_side(p)
    p.add_argument("--real", type=Path, default=None, help="resample real vectors (.npz)")
    p.add_argument("--dim", type=int, default=128, help="with --real: 128 (projected) or 384")
    p.add_argument("--noise", type=float, default=0.1, help="with --real: noise per vector")
    p.add_argument(
        "--anchors",
        nargs="*",
        default=[],
        choices=["scan", "plan", "muvera", "plaid"],
        help="run beside pagelens: scan (numpy/BLAS exact first stage over a memmap), "
        "plan (pagelens's stages in torch over memmaps), muvera (fastembed FDE + HNSW), "
        "plaid (fast-plaid); see ScanAnchor, PlanAnchor and Anchors",
    )
    p.add_argument("--keep", type=Path, default=None, help="keep each index under this folder")
    p.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)  # the child
    return p.parse_args(argv)


def _side_by_side(p: argparse.ArgumentParser) -> None:
    """The options that build an index each, side by side (or search one so)."""
    p.add_argument(
        "--layouts",
        nargs="+",
        default=["compact", "format3"],
        choices=["compact", "format5", "format4", "format3", "format1"],
        help="compact: today's (format 6: 4-bit candidate and coarse vectors mapped from "
        "disk); format5: the previous release's (those in RAM); format4: 8-bit, coarse "
        "scan first; format3: a scan of every page's candidates; format1: the HNSW graph",
    )
    p.add_argument(
        "--coarse-queries",
        type=int,
        nargs="+",
        default=[COARSE_QUERY_VECTORS or 0],
        help="query vectors the coarse stage scans with (the question's tokens Ward-pooled "
        "into so many; 0 = every token), side by side; the fresh process runs the first",
    )
    p.add_argument(
        "--segment-points",
        type=int,
        nargs="+",
        default=[SEGMENT_POINTS],
        help="points the embedded store writes before it seals a segment (0: one "
        "segment, as before), side by side: an index each",
    )
    p.add_argument(
        "--writes",
        nargs="+",
        default=["document"],
        choices=["document", "grouped", "each"],
        help="how documents are stored, side by side, an index each: as today's job "
        "writes them, committing each (document) or, its writer behind, 32 together "
        "(grouped); or every write flushed, as the previous release's job (each)",
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.probe is not None:  # a fresh serving process over a kept index
        print(json.dumps(probe(args.probe, args.candidates[0], args.coarse_queries[0] or None)))
        return 0
    s = Settings.from_args(args)
    first = (args.layouts[0], args.segment_points[0], args.writes[0])
    results = []
    runs = itertools.product(args.pages, args.layouts, args.segment_points, args.writes)
    for n, layout, seg, writes in runs:
        b = Build(n, layout, seg, writes, anchors=(layout, seg, writes) == first)
        r = run(b, s)
        results.append(r)
        report_build(r, s)
        report_searches(r, s)
    import os
    import platform

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


def report_build(r: dict[str, Any], s: Settings) -> None:
    """Print how one index was built, and its memory serving and indexing."""
    print(
        f"\n{r['pages']} pages, {r['segments']} segments (sealed each "
        f"{r['segment_points'] or 'never'} points), writes flushed as: {r['writes']}: "
        f"{r['stored_vectors_per_page']} rerank + "
        f"{r['candidate_vectors_per_page']} candidate + "
        f"{r['coarse_vectors_per_page']} coarse vectors/page; "
        f"storing + index building {r['store_and_index_s']:.0f} s (optimize "
        f"{r['optimize_s']:.1f} s; pooling {r['pool_s']:.0f} s apart); "
        f"exact p50 {r['exact_p50_ms']:.1f} ms, p99 {r['exact_p99_ms']:.1f} ms "
        f"(CPU p50 {r['exact_cpu_p50_ms']:.1f} ms); "
        f"{r['layout']}: {r['vector_bytes_per_page'] / 1024:.1f} KiB/page of vector values, "
        f"{(r['disk_bytes_per_page'] or 0) / 1024:.1f} KiB/page on disk; "
        f"RSS {r.get('VmRSS_mib', 0):.0f} MiB (anon {r.get('RssAnon_mib', 0):.0f}, "
        f"file {r.get('RssFile_mib', 0):.0f}) while searching"
    )
    fr = r["fresh_serving_process"]
    fa = fr["after_searches"]
    print(
        f"fresh serving process, after {s.queries} queries twice: "
        f"VmRSS {fa.get('VmRSS_mib', 0):.0f} MiB (RssAnon {fa.get('RssAnon_mib', 0):.0f}, "
        f"RssFile {fa.get('RssFile_mib', 0):.0f}, of it index files "
        f"{fa.get('IndexFiles_mib', 0):.0f}), peak VmHWM {fa.get('VmHWM_mib', 0):.0f} MiB; "
        f"open {fr['open_s']:.1f} s; two-stage p50 {fr['p50_ms']:.1f} ms, "
        f"p99 {fr['p99_ms']:.1f} ms (CPU p50 {fr['cpu_p50_ms']:.1f} ms)"
    )
    srv = r["memory_serving_two_stage"]
    print(
        f"serving two-stage searches: RssAnon {srv.get('RssAnon_mib', 0):.0f} MiB, "
        f"RssFile {srv.get('RssFile_mib', 0):.0f} MiB "
        f"(index files {srv.get('IndexFiles_mib', 0):.0f}; "
        "after every query once, in the building process)"
    )
    print(
        "while indexing, seconds storing so far, RssAnon / RssFile (of it index files) MiB "
        "at each quarter: "
        + ", ".join(
            f"{q['pages']}: {q.get('store_s', 0):.0f} s, {q.get('RssAnon_mib', 0):.0f} / "
            f"{q.get('RssFile_mib', 0):.0f} ({q.get('IndexFiles_mib', 0):.0f})"
            for q in r["memory_while_indexing"]
        )
    )


def report_searches(r: dict[str, Any], s: Settings) -> None:
    """Print the two-stage rows against exact search, and each anchor against pagelens."""
    print(
        f"{'candidates':>10} {'first stage':>11} {'coarse q':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU p50':>8} {'recall@10':>10} {'speed-up vs exact':>18}"
    )
    for row in r["two_stage"]:
        print(
            f"{row['candidates']:>10} {row['first_stage']:>11} "
            f"{row['coarse_query_vectors'] or '-'!s:>8} {row['p50_ms']:>8.1f} "
            f"{row['p99_ms']:>8.1f} {row['cpu_p50_ms']:>8.1f} {row['recall_at_10']:>10.3f} "
            f"{r['exact_p50_ms'] / row['p50_ms']:>17.1f}x"
        )
    for a in r["anchors"]:
        c = a["candidates"] if a["candidates"] in s.candidates else s.candidates[0]
        row = next(x for x in r["two_stage"] if x["candidates"] == c)
        print(
            f"anchor {a['anchor']}, {a['candidates']} candidates"
            + (f", built in {a['build_s']:.0f} s" if "build_s" in a else "")
            + f": p50 {a['p50_ms']:.1f} ms, "
            f"p99 {a['p99_ms']:.1f} ms (CPU {a['cpu_p50_ms']:.1f}); exact top-10 inside "
            f"{a['recall_at_10_bound']:.3f}; pagelens two-stage p50 / this p50: "
            f"{row['p50_ms'] / a['p50_ms']:.1f}x"
        )


if __name__ == "__main__":
    raise SystemExit(main())
