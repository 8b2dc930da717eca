"""Build tests/fixtures/legacy/: small indexes written by earlier commits of pagelens.

Today's code must open and search every index an earlier release wrote (the manifest
formats in ``pagelens.index.READABLE_FORMATS``). Indexes that today's code makes and
stamps with an older format number test only what today's code thinks an old
release wrote; these fixtures are what the old code really wrote.

For each manifest format this takes the last commit that wrote it (``COMMITS``),
extracts that commit's tree with ``git archive`` into a temporary folder, and runs
this file again in a child process with ``PYTHONPATH`` set to that tree, so that the
child imports that commit's ``pagelens`` (it checks ``pagelens.__file__``). The
child builds two small embedded indexes through that commit's own
``pagelens.pipeline.job.index_pages``:

- ``format-N``: 5 pages of 2 documents, one page stored without vectors (it
  failed to load), with page text and BM25;
- ``format-N-text``: the same pages with a second, text encoder (a text channel).

Page vectors are deterministic random unit vectors (dim 16; the text channel's
are seeded by the page's words, dim 8). The child then reopens each index and
records, with that commit's own search, the answers to three questions: exact
search (``candidates=None``), the default staged search, a narrow staged search
(2 candidates, so the first stage decides), the fused search of every channel and
BM25 alone. Each index is packed as ``format-N[-text].tar.gz`` (its engine
preallocates files; packed, each is a few KB) beside a ``.json`` holding the
commit, the query vectors, the manifest, ``info()``, the commit records and the
recorded answers. tests/test_legacy_fixtures.py opens them with today's code.

The child runs in the current virtualenv: the old pagelens is run against today's
qdrant-edge-py, numpy and so on (no old dependency set is installed). A commit
whose code cannot run there is listed in ``SKIPPED`` with the reason.

Usage (from the repository root, in the project's virtualenv)::

    python scripts/make_legacy_fixtures.py            # every format
    python scripts/make_legacy_fixtures.py --formats 1 6

Regenerating rewrites the fixtures (the engine's files and the manifest's
``created_at`` differ from run to run; the recorded answers do not). When format
N + 1 becomes the one new indexes are written in, point ``COMMITS[N]`` at the last
commit that wrote format N, add N + 1, and run ``--formats N N+1``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "legacy"

# manifest format -> the last commit whose new indexes were written in it (found with
# `git log -S "MANIFEST_FORMAT = N" -- pagelens/index.py`: the parent of the commit
# that moved to format N + 1; for the newest format, a commit of it)
COMMITS = {
    # parent of c105bd5 "Compact stored layout (manifest format 2)"
    1: "a4462099eda2a955520f870272be6df17711c78d",
    # parent of 3b0bfe5 "Manifest format 3: candidate vectors in ... 8-bit TurboQuant"
    2: "9331c64243f2956f4a5cc3ecc145416f47f1db64",
    # parent of a247967 "Manifest format 4: a coarse multi-vector per page"
    3: "686c058016ba948ef415a06ae8faaa8a680fc4da",
    # parent of acfb625 "... manifest format 5 keeps candidate and coarse vectors in 4 bits"
    4: "b3280e134ecc956e05f810fdbee1bc6a92b1fbff",
    # parent of 065e157 "... format 6 maps the first stage"
    5: "001d376b79e1937c766a4700ab384c1f4cc6e71a",
    # format 6 is still today's: the commit the fixture was made at
    6: "d614605fb22a1df88670606109410cf65d6ea024",
}
# formats whose commit cannot run in today's virtualenv: format -> why (none so far)
SKIPPED: dict[int, str] = {}

VARIANTS = ("", "-text")  # format-N (dense + BM25) and format-N-text (+ a text channel)
DIM = 16
TEXT_DIM = 8
VECTORS_PER_PAGE = 12
K = 5
# (doc_path, page texts); a page text of None failed to load: stored without vectors
DOCS = (
    ("reports/alpha.pdf", ("alpha river budget harbour", "alpha ledger of the harbour")),
    ("notes/beta.pdf", ("beta orchard survey", "beta quarry budget survey", None)),
)
# (text, index of the page the question is about, in DOCS order of good pages)
QUESTIONS = (
    ("river budget", 0),
    ("harbour ledger", 1),
    ("quarry survey", 3),
)
FAILED = "page could not be loaded (a legacy fixture's failed page)"
# GNU tar: holes kept as holes, names sorted, no times or owners (see _pack)
TAR_OPTIONS = (
    "--sparse",
    "--sort=name",
    "--mtime=@0",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--format=gnu",
)


# --- the child: runs with an old commit's pagelens on sys.path ----------------------


def _unit(v: Any) -> Any:
    import numpy as np

    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def _word_vectors(text: str) -> Any:
    """One unit vector per word, seeded by the word: the fake text encoder's vectors."""
    import numpy as np

    rows = []
    for word in text.lower().split():
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        rows.append(np.random.default_rng(seed).normal(size=TEXT_DIM))
    return _unit(np.array(rows))


def _page_vectors() -> tuple[list[Any], list[Any]]:
    """Deterministic page and question vectors: pages mix a few shared topics."""
    import numpy as np

    rng = np.random.default_rng(2026)
    topics = _unit(rng.normal(size=(6, DIM)))
    good = [t for _, texts in DOCS for t in texts if t is not None]
    pages = []
    for _ in good:
        chosen = rng.choice(len(topics), size=VECTORS_PER_PAGE)
        pages.append(_unit(topics[chosen] + 0.3 * rng.normal(size=(VECTORS_PER_PAGE, DIM))))
    questions = []
    for _, about in QUESTIONS:
        rows = pages[about][rng.choice(VECTORS_PER_PAGE, size=4, replace=False)]
        questions.append(_unit(rows + 0.2 * rng.normal(size=rows.shape)))
    return pages, questions


class _TableEncoder:
    """The fixture's encoder: page and question vectors from a table, no weights."""

    def __init__(self, spec: Any, pages: dict[tuple[str, int], Any], queries: dict[str, Any]):
        self._spec, self._pages, self._queries = spec, pages, queries

    @property
    def spec(self) -> Any:
        return self._spec

    def encode_pages(self, pages: Any) -> list[Any]:
        return [self._pages[(p.doc_path, p.page_number)] for p in pages]

    def encode_queries(self, texts: Any) -> list[Any]:
        return [self._queries[t] for t in texts]


class _WordEncoder:
    """The fixture's text encoder: one word-seeded vector per word of the page text."""

    reads = "text"

    def __init__(self, spec: Any):
        self._spec = spec

    @property
    def spec(self) -> Any:
        return self._spec

    def encode_pages(self, pages: Any) -> list[Any]:
        return [_word_vectors(p.text) for p in pages]

    def encode_queries(self, texts: Any) -> list[Any]:
        return [_word_vectors(t) for t in texts]


def _settings(index_settings: Any) -> Any:
    """Small pool factors, so the few vectors of a page still pool into stages."""
    import dataclasses

    wanted = {"pool_factor": 2, "candidate_factor": 4, "coarse_factor": 8, "text": True}
    fields = {f.name for f in dataclasses.fields(index_settings)}
    return index_settings(**{k: v for k, v in wanted.items() if k in fields})


def _hits(rows: Any) -> list[list[list[Any]]]:
    """Each question's hits as [doc_path, page_number, score, channels that held it]."""
    return [
        [[h.doc_path, h.page_number, float(h.score), list(h.channels)] for h in row] for row in rows
    ]


def _dense_cases(fmt: int) -> list[dict[str, Any]]:
    """Search options to record: exact, the default, a narrow staged first stage."""
    # the engine prefetches max(candidates, k) pages: k = 2 lets 2 candidates decide
    cases: list[dict[str, Any]] = [
        {"k": K, "candidates": None},
        {"k": K},
        {"k": 2, "candidates": 2},
    ]
    if fmt == 1:  # format 1's candidate vectors carry an HNSW graph, walked when asked
        cases.append({"k": 2, "candidates": 2, "first_stage": "hnsw"})
    return cases


def _record_searches(index: Any, fmt: int, dense: Any, word: Any, text_channel: bool) -> list:
    from pagelens.search import search, search_vectors

    texts = [t for t, _ in QUESTIONS]
    out = []
    channels = ("dense", "text") if text_channel else ("dense",)
    for channel in channels:
        vectors = dense.encode_queries(texts) if channel == "dense" else word.encode_queries(texts)
        for options in _dense_cases(fmt):
            rows = search_vectors(index, vectors, channel=channel, **options)
            out.append(
                {
                    "call": "search_vectors",
                    "channel": channel,
                    "options": options,
                    "hits": _hits(rows),
                }
            )
    for options in ({"k": K}, {"k": K, "channels": ["bm25"]}):  # all channels fused; BM25
        given: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
        }
        rows = search(index, dense, texts, text_encoder=word if text_channel else None, **given)
        out.append({"call": "search", "options": options, "hits": _hits(rows)})
    return out


def _pages(page_type: Any, page_vectors: list[Any]) -> tuple[list[Any], dict[Any, Any]]:
    """Make the pages of ``DOCS`` (that commit's ``Page``); map the good ones to vectors."""
    pages, table, n = [], {}, 0
    for doc_path, texts in DOCS:
        sha = hashlib.sha256(doc_path.encode()).hexdigest()
        for number, text in enumerate(texts, 1):
            error = FAILED if text is None else None
            pages.append(page_type(sha, doc_path, number, len(texts), text=text, error=error))
            if text is not None:
                table[(doc_path, number)] = page_vectors[n]
                n += 1
    return pages, table


def build(fmt: int, tree: Path, folder: Path, text_channel: bool) -> dict[str, Any]:
    """Build one fixture index in ``folder`` with the pagelens under ``tree``; record it."""
    import dataclasses

    import numpy as np

    import pagelens
    from pagelens.encoders.base import EncoderSpec
    from pagelens.index import MANIFEST_FORMAT, Index, IndexSettings
    from pagelens.pipeline.job import index_pages
    from pagelens.types import Page

    where = Path(pagelens.__file__).resolve()
    if not where.is_relative_to(tree.resolve()):
        raise SystemExit(f"imported pagelens from {where}, not from the old tree {tree}")
    if fmt != MANIFEST_FORMAT:
        raise SystemExit(f"the commit for format {fmt} writes format {MANIFEST_FORMAT}")
    page_vectors, question_vectors = _page_vectors()
    pages, table = _pages(Page, page_vectors)
    queries = dict(zip((t for t, _ in QUESTIONS), question_vectors, strict=True))
    dense = _TableEncoder(EncoderSpec("legacy-fixture", "1", DIM, "fixture"), table, queries)
    word = _WordEncoder(EncoderSpec("legacy-fixture-words", "1", TEXT_DIM, "fixture-words"))
    settings = _settings(IndexSettings)
    with Index.open(folder) as index:
        index_pages(
            index,
            dense,
            pages,
            settings=settings,
            progress=False,
            text_encoder=word if text_channel else None,
        )
    with Index.open(folder) as index:  # opened afresh: answers from what is on disk
        assert index.manifest is not None and index.manifest.format == fmt
        info = index.info().to_dict()
        info.pop("location")
        info.pop("disk_bytes_per_page", None)  # the file system's, not the format's
        record = {
            "format": fmt,
            "pagelens_version": index.manifest.pagelens_version,
            "numpy": np.__version__,
            "qdrant_edge": _version("qdrant-edge-py"),
            "info": info,
            "documents": [dataclasses.asdict(r) for r in index.documents()],
            "pages": [
                {
                    "doc_path": p.doc_path,
                    "page_number": p.page_number,
                    "text": p.text,
                    "error": p.error,
                }
                for p in pages
            ],
            "queries": [
                {"text": t, "dense": q.tolist(), "text_vectors": _word_vectors(t).tolist()}
                for t, q in queries.items()
            ],
            "searches": _record_searches(index, fmt, dense, word, text_channel),
        }
    return record


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def child(args: argparse.Namespace) -> None:
    """Build one fixture (the child process) and write its record as JSON."""
    record = build(args.format, Path(args.tree), Path(args.folder), args.text_channel)
    Path(args.record).write_text(json.dumps(record))


# --- the parent: today's tree, no pagelens imported --------------------------------


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _extract(commit: str, tree: Path) -> None:
    """Write ``commit``'s files into ``tree`` (no worktree, nothing in the repository)."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")


def _pack(folder: Path, target: Path) -> None:
    """Pack an index folder as ``index/...`` in a tar.gz, its holes kept as holes.

    The engine preallocates its files sparse (about 290 MB apparent, under 1 MB
    written, for 5 pages): GNU tar's ``--sparse`` stores only the written parts,
    and Python's tarfile extracts them sparse again. Names are sorted and owners
    and times zeroed, so the archive depends only on the files.
    """
    tar = subprocess.run(
        ["tar", *TAR_OPTIONS, "-C", str(folder.parent), f"--transform=s,^{folder.name},index,"]
        + ["-cf", "-", folder.name],
        check=True,
        capture_output=True,
    ).stdout
    with gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as out:
        out.write(tar)


def make(fmt: int, out: Path) -> list[str]:
    """Build the fixtures of one format with its commit's code; return their names."""
    commit = COMMITS[fmt]
    subject = _git("log", "-1", "--format=%s", commit)
    made = []
    with tempfile.TemporaryDirectory(prefix=f"legacy-{fmt}-") as tmp:
        tree = Path(tmp) / "tree"
        _extract(commit, tree)
        for variant in VARIANTS:
            name = f"format-{fmt}{variant}"
            folder, record = Path(tmp) / name, Path(tmp) / f"{name}.json"
            env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
            command = [sys.executable, str(Path(__file__).resolve()), "--child"]
            command += ["--format", str(fmt), "--tree", str(tree)]
            command += ["--folder", str(folder), "--record", str(record)]
            if variant == "-text":
                command.append("--text-channel")
            subprocess.run(command, check=True, env=env, cwd=tmp)
            data = {"commit": commit, "subject": subject, **json.loads(record.read_text())}
            _pack(folder, out / f"{name}.tar.gz")
            (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
            made.append(name)
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", type=int, nargs="*", default=sorted(COMMITS))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--format", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    parser.add_argument("--text-channel", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for fmt in args.formats:
        if fmt in SKIPPED:
            print(f"format {fmt}: skipped: {SKIPPED[fmt]}")
            continue
        for name in make(fmt, args.out):
            size = (args.out / f"{name}.tar.gz").stat().st_size
            print(f"format {fmt}: {name}.tar.gz ({size / 1024:.1f} KiB) from {COMMITS[fmt][:12]}")


if __name__ == "__main__":
    main()
