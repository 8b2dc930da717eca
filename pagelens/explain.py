"""Similarity maps: which parts of a page matched which tokens of a question.

A page's MaxSim score is the sum, over the query's token vectors, of each one's
best similarity to a vector of the page. :func:`explain` shows where each of
those maxima lies:

* **visual encoders** (``kind="heatmap"``): the page is rendered again from its
  (sha256-checked) source, encoded *unpooled* by the index's encoder, and each
  query token gets its similarity to every image patch, laid out on the patch grid
  (colpali-engine's ``get_similarity_maps_from_embeddings``), with its best patch;
* **text encoders** (``kind="boxes"``; MiniLM as ``--model`` or ``--text-model``):
  the page's text as the index holds it is encoded again, each query token's best
  page token is traced back (tokenizer offsets) to the word holding it, and that
  word's box on the page comes from poppler's ``pdftotext -bbox-layout`` (or, for
  an OCR'd page, tesseract's word boxes).

The vectors are the encoder's own, not the index's: the index keeps Ward-pooled
vectors, which no longer belong to one patch or token. The scores are therefore
those of exact MaxSim over the unpooled page, close to (not equal to) a search's.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pagelens.encoders.base import reads_text
from pagelens.errors import EncoderError, PagelensError
from pagelens.index import Index, hit_from_payload
from pagelens.search import check_queries
from pagelens.storage.layout import DENSE, TEXT
from pagelens.types import Hit, Page

if TYPE_CHECKING:
    from pathlib import Path

    from pagelens.encoders.base import Encoder
    from pagelens.pipeline.words import Word

Kind = Literal["heatmap", "boxes"]


@dataclass(frozen=True)
class TokenMap:
    """Where one query token found its best match on the page.

    Attributes:
        token: the query token as text (``" revenue"``, ``"##ue"``).
        score: its best similarity on the page: its term of the MaxSim sum.
        special: a token the model's processor added (padding used as query
            augmentation, begin-of-sequence, chat markers), not a word of the question.
        best: heatmap: ``(row, col)`` of its best patch on the grid.
        similarity: heatmap: its similarity to every patch, ``rows`` lists of ``cols``.
        box: boxes: the index in :attr:`Explanation.boxes` of the word holding its
            best page token (``None`` if that token lies in no located word).
        match: boxes: that page token (a wordpiece).

    """

    token: str
    score: float
    special: bool = False
    best: tuple[int, int] | None = None
    similarity: list[list[float]] | None = field(default=None, repr=False)
    box: int | None = None
    match: str | None = None


@dataclass(frozen=True)
class WordBox:
    """A word of the page that a query token matched, and where it is.

    ``x0, y0, x1, y1`` are fractions of the page's width and height (origin at the
    top left), so the box fits a page image of any resolution. ``query_tokens``
    are the query tokens whose best page token lies in this word; ``score`` is the
    best of their scores.
    """

    word: str
    x0: float
    y0: float
    x1: float
    y1: float
    query_tokens: tuple[str, ...]
    score: float


@dataclass(frozen=True)
class Explanation:
    """Why a page matched a query: one :class:`TokenMap` per query token.

    ``kind`` is ``"heatmap"`` (visual encoders: ``grid`` is the page's patch grid,
    ``(rows, cols)``, spanning the whole page image, and each map holds a
    similarity per patch) or ``"boxes"`` (text encoders: ``boxes`` are the matched
    words; ``words_from`` says whether their boxes came from the text layer,
    ``"layer"``, or from OCR, ``"ocr"``). ``score`` is the sum of the maps' scores:
    exact MaxSim over the unpooled vectors shown (for a visual encoder, the image
    patches only: an index built with ``page_vectors="all"`` also scores the
    prompt tokens, so a search's score differs). A page without text, under a
    text encoder, has no maps and no boxes (and ``score`` 0).
    """

    doc_path: str  # the document's path as the index records it
    doc_sha256: str
    page_number: int
    channel: str  # "dense" or "text"
    kind: Kind
    query: str
    query_tokens: list[str]
    grid: tuple[int, int] | None
    maps: list[TokenMap]
    boxes: list[WordBox]
    score: float
    model: str
    words_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the explanation as plain data (``json.dumps`` takes it as it is)."""
        return asdict(self)


def explain(
    index: Index,
    encoder: Encoder | None,
    doc: str,
    page: int,
    query: str,
    *,
    channel: str | None = None,
    dpi: int | None = None,
) -> Explanation:
    """Show which parts of page ``page`` of ``doc`` matched which tokens of ``query``.

    Args:
        index: an open index.
        encoder: the channel's encoder, the one the index was built with: its
            encoder for ``"dense"``, its text encoder for ``"text"`` (``None``:
            the index has none; an error names what is missing).
        doc: the document's path as the index records it (``pagelens ls``), its
            sha256, or its file's absolute path.
        page: the page number, 1-based.
        query: the question.
        channel: ``"dense"`` (the index's encoder; the default) or ``"text"`` (its
            text encoder, in an index built with ``text_model``).
        dpi: resolution the page is rendered at for a visual encoder; the default is
            the indexing default (150), so that the model sees the page as it did then.

    :meth:`pagelens.lens.Lens.explain` loads the channel's encoder for you.

    Raises:
        DocumentNotFoundError: no such document in the index.
        PageNotFoundError: ``page`` is not a page of the document.
        SourceGoneError: the indexed file is no longer where it was (moved, deleted).
        SourceChangedError: the file holds other bytes than those indexed.
        EncoderError: an encoder that gives one vector per page (nothing to map).
        PagelensError: an empty query, a channel the index lacks, or an encoder
            other than the channel's.

    Examples:
        >>> import pagelens, tempfile
        >>> from pagelens.explain import explain
        >>> with pagelens.open(tempfile.mkdtemp(), model="minilm") as lens:
        ...     explain(lens.index, None, "report.pdf", 1, "revenue")
        Traceback (most recent call last):
        ...
        pagelens.errors.DocumentNotFoundError: no document 'report.pdf' in index ...

    """
    hit, channel = _locate(index, doc, page, query, channel)
    checked = _encoder(index, encoder, channel)
    if reads_text(checked):
        return _explain_text(checked, hit, query, channel)
    return _explain_visual(checked, hit, query, channel, dpi)


def check_request(
    index: Index, doc: str, page: int, query: str, *, channel: str | None = None
) -> str:
    """Check a request to explain, before any model loads; return its channel.

    Raises:
        PagelensError: as :func:`explain` does for an empty query, an unknown
            document or page, or a channel the index lacks.

    """
    return _locate(index, doc, page, query, channel)[1]


def _locate(index: Index, doc: str, page: int, query: str, channel: str | None) -> tuple[Hit, str]:
    """Return the page to explain (as a hit) and the channel, or say what is wrong."""
    check_queries([query])
    hit = hit_from_payload(index.page(index.find_document(doc), page))
    return hit, _channel(index, channel)


def _channel(index: Index, channel: str | None) -> str:
    manifest = index.manifest
    if manifest is None:
        raise PagelensError(f"index {index.location} is empty: nothing is indexed yet")
    chosen = channel or DENSE
    if chosen not in (DENSE, TEXT):
        raise PagelensError(f"channel must be {DENSE!r} or {TEXT!r}, got {channel!r}")
    if chosen == TEXT and manifest.text_encoder is None:
        raise PagelensError(
            f"index {index.location} has no text channel (it was built without --text-model)"
        )
    return chosen


def _encoder(index: Index, encoder: Encoder | None, channel: str) -> Encoder:
    """Return the channel's encoder, checked to be the one that built the index."""
    if encoder is None:
        raise PagelensError(f"the {channel} channel of index {index.location} needs its encoder")
    if channel == DENSE:
        index.check_encoder(encoder.spec)
    else:
        index.check_text_encoder(encoder.spec)
    return encoder


def _page(hit: Hit, **fields: Any) -> Page:
    return Page(
        doc_sha256=hit.doc_sha256,
        doc_path=hit.doc_path,
        page_number=hit.page_number,
        page_count=int(hit.payload.get("page_count", hit.page_number)),
        **fields,
    )


def _need(encoder: Encoder, method: str) -> Any:
    found = getattr(encoder, method, None)
    if found is None:
        raise EncoderError(
            f"encoder {encoder.spec.model_id!r} ({type(encoder).__name__}) cannot show what "
            f"matched: it has no {method}()"
        )
    return found


def _query(encoder: Encoder, query: str) -> tuple[np.ndarray, list[tuple[str, bool]]]:
    """Return the query's vectors ``(m, dim)`` and the token each row stands for."""
    (tokens,) = _need(encoder, "query_tokens")([query])
    (vectors,) = encoder.encode_queries([query])
    if len(tokens) != len(vectors):
        raise EncoderError(
            f"encoder {encoder.spec.model_id!r} named {len(tokens)} query tokens for "
            f"{len(vectors)} query vectors"
        )
    return vectors, tokens


def _explain_visual(
    encoder: Encoder, hit: Hit, query: str, channel: str, dpi: int | None
) -> Explanation:
    from pagelens.encoders.colpali import similarity_maps
    from pagelens.pipeline.images import page_image
    from pagelens.pipeline.render import RenderSettings

    patch_grid = _need(encoder, "patch_grid")
    image = page_image(hit, dpi=RenderSettings().dpi if dpi is None else dpi)  # checks sha256
    grid, shape = patch_grid(_page(hit, image=image))  # (rows * cols, dim), (rows, cols)
    vectors, tokens = _query(encoder, query)
    maps = similarity_maps(vectors, grid, shape)  # (m, rows, cols)
    out = []
    for (token, special), sims in zip(tokens, maps, strict=True):
        row, col = np.unravel_index(int(np.argmax(sims)), sims.shape)
        out.append(
            TokenMap(
                token=token,
                score=float(sims[row, col]),
                special=special,
                best=(int(row), int(col)),
                similarity=sims.tolist(),
            )
        )
    return Explanation(
        doc_path=hit.doc_path,
        doc_sha256=hit.doc_sha256,
        page_number=hit.page_number,
        channel=channel,
        kind="heatmap",
        query=query,
        query_tokens=[t for t, _ in tokens],
        grid=(int(shape[0]), int(shape[1])),
        maps=out,
        boxes=[],
        score=float(sum(m.score for m in out)),
        model=encoder.spec.model_id,
    )


def _explain_text(encoder: Encoder, hit: Hit, query: str, channel: str) -> Explanation:
    from pagelens.pipeline.images import source_file

    token_spans = _need(encoder, "token_spans")
    path = source_file(hit)  # checks the source's sha256, as for a page image
    text = str(hit.payload.get("text") or "")
    words_from = "ocr" if hit.payload.get("text_source") == "ocr" else "layer"
    vectors, tokens = _query(encoder, query)
    empty = Explanation(
        doc_path=hit.doc_path,
        doc_sha256=hit.doc_sha256,
        page_number=hit.page_number,
        channel=channel,
        kind="boxes",
        query=query,
        query_tokens=[t for t, _ in tokens],
        grid=None,
        maps=[],
        boxes=[],
        score=0.0,
        model=encoder.spec.model_id,
        words_from=words_from,
    )
    (page_vectors,) = encoder.encode_pages([_page(hit, text=text)])  # (n, dim)
    if not text.strip() or page_vectors.shape[0] == 0:
        return empty
    (spans,) = token_spans([text])
    if len(spans) != len(page_vectors):
        raise EncoderError(
            f"encoder {encoder.spec.model_id!r} gave {len(page_vectors)} page vectors for "
            f"{len(spans)} tokens"
        )
    words = _page_words(path, hit, words_from)
    sims = vectors @ page_vectors.T  # (m, n)
    maps, word_boxes = _matches(tokens, text, spans, words, sims)
    return replace(empty, maps=maps, boxes=word_boxes, score=float(sims.max(axis=1).sum()))


def _page_words(path: Path, hit: Hit, words_from: str) -> list[Word]:
    """Return the page's words with their boxes: from OCR, or from the text layer."""
    from pagelens.pipeline.words import layer_words, ocr_words

    if words_from == "ocr":
        size = (float(hit.payload.get("width_pt", 0)), float(hit.payload.get("height_pt", 0)))
        return ocr_words(str(path), hit.page_number, page_size_pt=size)
    return layer_words(str(path), hit.page_number)


def _matches(
    tokens: list[tuple[str, bool]],
    text: str,
    spans: list[tuple[int, int]],
    words: list[Word],
    sims: np.ndarray,
) -> tuple[list[TokenMap], list[WordBox]]:
    """Trace each query token's best page token (``sims``: ``(m, n)``) to its word."""
    from pagelens.pipeline.words import align_words

    word_of = token_words(spans, align_words(text, words))  # page token -> word index
    best = sims.argmax(axis=1)
    boxes: dict[int, list[int]] = {}  # word -> query tokens matched there
    for j, t in enumerate(best):
        w = word_of[int(t)]
        if w is not None:
            boxes.setdefault(w, []).append(j)
    scores = sims[np.arange(len(best)), best]
    ranked = sorted(boxes, key=lambda w: (-max(scores[j] for j in boxes[w]), w))
    place = {w: i for i, w in enumerate(ranked)}
    word_boxes = [
        WordBox(
            word=words[w].text,
            x0=words[w].x0,
            y0=words[w].y0,
            x1=words[w].x1,
            y1=words[w].y1,
            query_tokens=tuple(tokens[j][0] for j in boxes[w]),
            score=float(max(scores[j] for j in boxes[w])),
        )
        for w in ranked
    ]
    maps = []
    for j, ((token, special), t) in enumerate(zip(tokens, best, strict=True)):
        start, end = spans[int(t)]
        w = word_of[int(t)]
        maps.append(
            TokenMap(
                token=token,
                score=float(scores[j]),
                special=special,
                box=place[w] if w is not None else None,
                match=text[start:end],
            )
        )
    return maps, word_boxes


def token_words(
    token_spans: list[tuple[int, int]], word_spans: list[tuple[int, int] | None]
) -> list[int | None]:
    """Return the word (index in ``word_spans``) each token starts in, or ``None``."""
    located = [(span[0], span[1], i) for i, span in enumerate(word_spans) if span is not None]
    starts = [s for s, _, _ in located]
    out: list[int | None] = []
    for start, _ in token_spans:
        k = bisect.bisect_right(starts, start) - 1
        out.append(located[k][2] if k >= 0 and start < located[k][1] else None)
    return out
