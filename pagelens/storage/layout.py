"""The stored layout: what an index keeps, under which names, in which datatypes.

This module is the one owner of the stored format. Backends map its names to
their engine's enums; the index writes points through :func:`page_point`;
``pagelens check`` asks :meth:`CollectionSpec.expected_dims`; ``pagelens info``
prints :meth:`CollectionSpec.describe` and counts bytes with
:meth:`CollectionSpec.vector_bytes`. Adding a manifest format means a row in
:data:`FORMATS` (and a migration), nothing else.

Every collection holds, per dense channel, named multi-vectors compared with
MaxSim over dot products of L2-normalised vectors:

- ``pages``: the page vectors at the index's pool factor, used for the rerank.
  No HNSW graph (``m=0``): the rerank only scores a few hundred candidates.
- ``pooled``: the candidate vectors, a smaller Ward-pooled view of the page,
  which score the pages the coarse stage passes (every page in formats 1-3).
- ``coarse``: a still smaller Ward-pooled view (formats 4 on), scanned first.
- ``text_pages``, ``text_pooled``, ``text_coarse``: the same for an index's
  second, text encoder (the ``text`` channel), whose dimension is its own.
- ``bm25``: a sparse vector of the page text's BM25 term weights; the engine
  multiplies in each term's IDF at query time (``Modifier.IDF``).

Besides pages the collection holds vectorless bookkeeping points: one commit
record per fully indexed document, one pending mark per document being written,
and one manifest. The measured reasons behind each format's choices are in
benchmarks/README.md.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pagelens.storage.base import PointRecord, SparseVector
from pagelens.types import MultiVector, Page, display_path

# -- named vectors -----------------------------------------------------------------
PAGES = "pages"
POOLED = "pooled"
COARSE = "coarse"
TEXT_PAGES = "text_pages"
TEXT_POOLED = "text_pooled"
TEXT_COARSE = "text_coarse"
BM25 = "bm25"

# the dense channels: the index's own encoder, and a second, text encoder
DENSE = "dense"
TEXT = "text"


@dataclass(frozen=True)
class ChannelVectors:
    """The named vectors of one dense channel: rerank, candidate and coarse."""

    rerank: str
    candidates: str
    coarse: str


CHANNEL_VECTORS = {
    DENSE: ChannelVectors(PAGES, POOLED, COARSE),
    TEXT: ChannelVectors(TEXT_PAGES, TEXT_POOLED, TEXT_COARSE),
}

# -- points and payloads -----------------------------------------------------------
KIND_PAGE = "page"
KIND_DOCUMENT = "document"
KIND_MANIFEST = "manifest"
# written before a document's first page and removed once its commit record is: an
# interrupted run leaves one behind, and the next run completes or removes its pages
KIND_PENDING = "pending"

# payload fields with a keyword index (what filters match on)
KEYWORD_FIELDS = ("kind", "doc_path", "doc_sha256", "path_prefixes")

# per-page vector counts a page's payload holds and a commit record sums up
COUNTED = (
    "vectors",
    "pooled_vectors",
    "coarse_vectors",
    "text_vectors",
    "text_pooled_vectors",
    "text_coarse_vectors",
)

_NAMESPACE = uuid.UUID("6f1c2d2a-4b7e-5d0c-9a51-7e3f0c1a2b90")


def page_point_id(doc_sha256: str, page_number: int) -> str:
    """Deterministic point id of a page: re-indexing the same bytes upserts in place."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:{page_number}"))


def document_point_id(doc_sha256: str) -> str:
    """Point id of a document's commit record."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:document"))


def pending_point_id(doc_sha256: str) -> str:
    """Point id of a document's pending marker (see :data:`KIND_PENDING`)."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_sha256}:pending"))


MANIFEST_POINT_ID = str(uuid.uuid5(_NAMESPACE, "manifest"))


def source_payload(source: str) -> dict[str, str]:
    r"""Payload fields of a source file's absolute path, lossless for any file name.

    A name that is not valid UTF-8 (Latin-1 names on old shares) reaches Python with
    lone surrogates, which no payload can hold: ``source`` keeps a readable form
    (each bad byte as ``\xNN``) and ``source_bytes`` the raw bytes, in hex.
    """
    shown = display_path(source)
    if shown == source:
        return {"source": source}
    return {"source": shown, "source_bytes": os.fsencode(source).hex()}


def source_from_payload(payload: Mapping[str, Any]) -> str:
    """Read back the source path :func:`source_payload` wrote, as the file system names it."""
    raw = payload.get("source_bytes")
    if raw:
        return os.fsdecode(bytes.fromhex(str(raw)))
    return str(payload.get("source", ""))


def path_prefixes(doc_path: str) -> list[str]:
    """Every folder prefix of a posix path, and the path itself.

    ``"a/b/c.pdf"`` gives ``["a", "a/b", "a/b/c.pdf"]``; stored in the payload so a
    prefix filter is a plain keyword match on every backend.
    """
    parts = doc_path.strip("/").split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


# -- formats -----------------------------------------------------------------------
MANIFEST_FORMAT = 6  # what new indexes are written in
READABLE_FORMATS = (1, 2, 3, 4, 5, 6)

# bytes a vector value takes in each storage datatype
BYTES_PER_VALUE = {"float32": 4.0, "float16": 2.0, "turbo8": 1.0, "turbo4": 0.5}


@dataclass(frozen=True)
class FormatLayout:
    """How one manifest format stores the multi-vectors of a dense channel.

    Datatypes are named as both backends' enums name them, case aside
    (``"float32"``, ``"float16"``, ``"turbo8"``, ``"turbo4"``); ``None`` for the
    rerank vectors means the index's ``fp16`` setting decides (float16 or
    float32). ``on_disk`` ``None`` leaves the choice to the engine.
    """

    rerank: str | None
    first_stage: str  # candidate and coarse vectors
    candidate_graph: bool  # an HNSW graph on the candidate vectors
    coarse: bool  # a coarse multi-vector, scanned before the candidates
    rerank_on_disk: bool | None  # rerank vectors and payloads mapped from disk
    first_stage_on_disk: bool | None  # candidate and coarse vectors mapped from disk
    segmented: bool  # the embedded store seals a segment as the index grows
    words: str  # how ``pagelens info`` names the storage


# Each format is the one before it with what changed (and why: benchmarks/README.md).
_RERANK8 = "rerank vectors 8-bit (TurboQuant, on disk), candidates"
# 1: fp16 (or fp32) rerank vectors, float32 candidates with an HNSW graph
_FORMAT1 = FormatLayout(
    rerank=None,
    first_stage="float32",
    candidate_graph=True,
    coarse=False,
    rerank_on_disk=None,
    first_stage_on_disk=None,
    segmented=False,
    words="candidate graph",
)
# 2: the compact layout: 8-bit TurboQuant rerank vectors mapped from disk (with the
# payloads), fp16 candidates scanned exactly, no graph
_FORMAT2 = replace(
    _FORMAT1,
    rerank="turbo8",
    first_stage="float16",
    candidate_graph=False,
    rerank_on_disk=True,
    words=f"{_RERANK8} fp16 (RAM)",
)
_FORMAT3 = replace(_FORMAT2, first_stage="turbo8", words=f"{_RERANK8} 8-bit (RAM)")  # 8-bit
_FORMAT4 = replace(_FORMAT3, coarse=True)  # coarse vectors, scanned first
_FORMAT5 = replace(  # candidate and coarse vectors in 4 bits
    _FORMAT4, first_stage="turbo4", words=f"{_RERANK8} and coarse vectors 4-bit (RAM)"
)
_FORMAT6 = replace(  # those mapped from disk; the embedded store sealed as it grows
    _FORMAT5,
    first_stage_on_disk=True,
    segmented=True,
    words=f"{_RERANK8} and coarse vectors 4-bit (mapped from disk)",
)
FORMATS = {1: _FORMAT1, 2: _FORMAT2, 3: _FORMAT3, 4: _FORMAT4, 5: _FORMAT5, 6: _FORMAT6}
assert set(FORMATS) == set(READABLE_FORMATS)


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of the collection, as a backend creates it."""

    name: str
    dim: int
    datatype: str
    multi: bool  # a multi-vector compared by MaxSim, or one plain vector
    on_disk: bool | None
    hnsw_m: int  # 0: no graph
    hnsw_ef_construct: int


@dataclass(frozen=True)
class CollectionSpec:
    """How the collection is laid out; fixed when it is created (from the manifest).

    Attributes:
        dim: dimension of the ``dense`` channel's vectors.
        format: the manifest format (a row of :data:`FORMATS`).
        fp16: rerank vectors of format 1, and plain single vectors, in float16.
        text_dim: dimension of the ``text`` channel, if the index has one.
        single: one plain vector per page for the ``dense`` channel (single-vector
            encoders): ``pages`` is a plain vector with an HNSW graph, and there
            are no candidate or coarse vectors.

    """

    dim: int
    format: int = MANIFEST_FORMAT
    fp16: bool = True
    text_dim: int | None = None
    single: bool = False
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100

    @property
    def layout(self) -> FormatLayout:
        """Give the row of :data:`FORMATS` of this format."""
        return FORMATS[self.format]

    @property
    def coarse(self) -> bool:
        """Whether pages carry coarse vectors (formats 4 on)."""
        return self.layout.coarse

    @property
    def candidate_graph(self) -> bool:
        """Whether the candidate vectors carry an HNSW graph (format 1)."""
        return self.layout.candidate_graph

    @property
    def segmented(self) -> bool:
        """Whether the embedded store seals a segment as the index grows (format 6)."""
        return self.layout.segmented

    @property
    def payload_on_disk(self) -> bool | None:
        """Map payloads from disk (page text: read for hits only), or leave it to the engine."""
        return self.layout.rerank_on_disk

    def channels(self) -> list[tuple[str, ChannelVectors, int]]:
        """(channel, its named vectors, dimension) of each dense channel the index has."""
        out = [(DENSE, CHANNEL_VECTORS[DENSE], self.dim)]
        if self.text_dim is not None:
            out.append((TEXT, CHANNEL_VECTORS[TEXT], self.text_dim))
        return out

    def datatype(self, name: str) -> str:
        """Name the storage datatype of a named vector."""
        plain = "float16" if self.fp16 else "float32"
        if name == PAGES and self.single:
            return plain
        if name in (PAGES, TEXT_PAGES):
            return self.layout.rerank or plain
        return self.layout.first_stage

    def vectors(self) -> list[VectorSpec]:
        """Every dense named vector of the collection (``bm25`` is sparse, always there)."""
        layout, out = self.layout, []
        for channel, names, dim in self.channels():
            if channel == DENSE and self.single:  # one plain vector per page, with a graph
                out.append(self._vector(PAGES, dim, False, None, self.hnsw_m))
                continue
            out.append(self._vector(names.rerank, dim, True, layout.rerank_on_disk, 0))
            graph = self.hnsw_m if layout.candidate_graph else 0
            first = [names.candidates, names.coarse] if layout.coarse else [names.candidates]
            for name in first:
                out.append(self._vector(name, dim, True, layout.first_stage_on_disk, graph))
        return out

    def _vector(self, name: str, dim: int, multi: bool, on_disk: bool | None, m: int) -> VectorSpec:
        return VectorSpec(name, dim, self.datatype(name), multi, on_disk, m, self.hnsw_ef_construct)

    def expected_dims(self) -> dict[str, int]:
        """Dimension of each dense named vector a page may carry (what ``check`` verifies)."""
        return {v.name: v.dim for v in self.vectors()}

    def vector_bytes(self, counts: Mapping[str, int]) -> float:
        """Bytes of vector values for counts keyed as :data:`COUNTED` (a page's or a sum's)."""
        total = 0.0
        for channel, names, dim in self.channels():
            prefix = _prefix(channel)
            for key, name in (
                ("vectors", names.rerank),
                ("pooled_vectors", names.candidates),
                ("coarse_vectors", names.coarse),
            ):
                total += counts.get(prefix + key, 0) * BYTES_PER_VALUE[self.datatype(name)] * dim
        return total

    def describe(self) -> str:
        """Say how the vectors are stored, in words (``pagelens info``)."""
        if self.layout.candidate_graph:
            return f"{'fp16' if self.fp16 else 'fp32'}, candidate graph (format {self.format})"
        scan = "coarse scan first" if self.layout.coarse else "exact scan"
        return f"{self.layout.words}, {scan}"


# -- pages as points ---------------------------------------------------------------
@dataclass(frozen=True)
class PageVectors:
    """One channel's vectors of a page, as the index stores them."""

    stored: MultiVector  # (n, dim) rerank vectors, pooled at the index's pool factor
    candidates: MultiVector  # (m, dim) candidate vectors, pooled further
    raw: int  # vectors the encoder gave, before pooling
    coarse: MultiVector | None = None  # (c, dim) first-stage vectors, pooled further still


@dataclass(frozen=True)
class StoredPage:
    """A page ready to store: its vectors, or the reason it has none.

    ``dense`` is the index's own encoder's; ``text`` the text encoder's (indexes
    built with one); ``sparse`` the BM25 term weights of the page text. A page
    with an ``error`` (or ``page.error``) is stored without vectors, so that its
    document can still be committed whole.
    """

    page: Page
    source: str = ""  # the file the page came from (absolute path), if any
    dense: PageVectors | None = None
    text: PageVectors | None = None
    sparse: SparseVector | None = None
    error: str | None = None


def page_point(stored: StoredPage, spec: CollectionSpec | None) -> PointRecord:
    """Lay out one page as a point: payload keys and named vectors.

    ``spec`` is the collection's; ``None`` (an index without a manifest yet) lays
    the vectors out without coarse vectors.
    """
    single = spec is not None and spec.single
    coarse = spec is not None and spec.coarse
    page = stored.page
    error = stored.error or page.error
    payload: dict[str, Any] = {
        "kind": KIND_PAGE,
        "doc_path": page.doc_path,
        "doc_sha256": page.doc_sha256,
        "path_prefixes": path_prefixes(page.doc_path),
        "page_number": page.page_number,
        "page_count": page.page_count,
        "width_pt": page.width_pt,
        "height_pt": page.height_pt,
        **(source_payload(stored.source) if stored.source else {}),
    }
    point_id = page_point_id(page.doc_sha256, page.page_number)
    if error is not None:
        payload.update(error=error, raw_vectors=0, vectors=0, pooled_vectors=0)
        return PointRecord(point_id, payload)
    vectors: dict[str, MultiVector | SparseVector] = {}
    if stored.dense is not None:
        payload["raw_vectors"] = stored.dense.raw
        _count(DENSE, stored.dense, payload)
        if stored.dense.raw and single:
            vectors[PAGES] = stored.dense.stored.reshape(-1)  # (dim,): one plain vector
        elif stored.dense.raw:
            _lay_out(DENSE, stored.dense, coarse, payload, vectors)
    if stored.text is not None:
        _count(TEXT, stored.text, payload)
        if stored.text.stored.shape[0]:  # a page without text has no text-channel vectors
            _lay_out(TEXT, stored.text, coarse, payload, vectors)
    if page.text is not None:
        payload["text"] = page.text
        payload["text_source"] = page.text_source
    if stored.sparse is not None and stored.sparse.indices:
        vectors[BM25] = stored.sparse
    return PointRecord(point_id, payload, vectors)


def _prefix(channel: str) -> str:
    """Give the prefix of a channel's count keys in a payload (:data:`COUNTED`)."""
    return "text_" if channel == TEXT else ""


def _count(channel: str, page: PageVectors, payload: dict[str, Any]) -> None:
    payload[_prefix(channel) + "vectors"] = int(page.stored.shape[0])
    payload[_prefix(channel) + "pooled_vectors"] = int(page.candidates.shape[0])


def _lay_out(
    channel: str,
    page: PageVectors,
    coarse: bool,
    payload: dict[str, Any],
    vectors: dict[str, MultiVector | SparseVector],
) -> None:
    """Put one channel's multi-vectors of a page into the point."""
    names = CHANNEL_VECTORS[channel]
    vectors[names.rerank], vectors[names.candidates] = page.stored, page.candidates
    if coarse:  # the candidate vectors where none were pooled coarser
        coarse_vectors = page.candidates if page.coarse is None else page.coarse
        vectors[names.coarse] = coarse_vectors
        payload[_prefix(channel) + "coarse_vectors"] = len(coarse_vectors)
