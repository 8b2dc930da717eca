"""The stages that turn a document into stored pages: make, encode, pool, store.

Each is a plain function of its inputs, shared by the single-process job
(:mod:`pagelens.pipeline.job`: rendering in a thread, pooling in processes,
storing in a writer thread) and the Ray pipeline
(:mod:`pagelens.pipeline.distributed`: tasks and actors), so both build the same
index, point for point:

1. make: :func:`page_stream` renders a document's pages, with their text where
   the index keeps page text -> :class:`~pagelens.types.Page` objects;
2. encode: :func:`encode_batch` (:func:`encode` per encoder) -> per page a float32
   ``(n, dim)`` multi-vector, or the cause of its failure (a ``str``);
3. pool: :func:`pool_page` Ward-pools one page -> :class:`~pagelens.index.PageVectors`,
   and :func:`page_records` builds the :class:`~pagelens.index.StoredPage` records
   (:func:`stored_pages`: both at once), a failed page without vectors;
4. store: :func:`store_pages` writes records, durable once their document commits.

The commit, a document's commit record after all its pages, is the run's (see
:class:`pagelens.pipeline.run.RunState`). Two channels of vectors run through
the stages: ``dense``, the index's own encoder's, and ``text_channel``, the text
encoder's beside it (``None`` without one).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

import numpy as np

from pagelens.bm25 import bm25_documents
from pagelens.encoders.base import Encoder, reads_text
from pagelens.errors import PagelensError
from pagelens.index import Index, IndexSettings
from pagelens.pipeline.render import UNLOADABLE_PAGE, PdfInfo, render_pages
from pagelens.pipeline.run import RunSetup, StageTimes
from pagelens.pipeline.text import PageText, TextCache, extract_text
from pagelens.pooling import ward_pool
from pagelens.storage.layout import PageVectors, StoredPage
from pagelens.types import Document, MultiVector, Page

logger = logging.getLogger(__name__)

Encoded = dict[int, "MultiVector | str"]  # batch position -> vectors, or the failure's cause


# -- make --------------------------------------------------------------------------


def page_stream(
    how: RunSetup,
    doc: Document,
    info: PdfInfo,
    first: int,
    times: StageTimes,
    text_cache: TextCache | None,
) -> Iterator[Page]:
    """Make the pages of ``doc`` from ``first`` on: rendered, with text where it is kept.

    The make stage: ``info`` is the document's probe. Page text is extracted (or
    taken from ``text_cache``) when ``how.settings.text`` is on, its time added to
    ``times.text``; an encoder of page text gets pages with their text and no image.
    """
    render = replace(how.render, password=info.password)  # only where the document needs one
    if not how.settings.text:
        return render_pages(doc, info, render, first_page=first)
    t0 = time.perf_counter()
    texts = text_cache.get(doc.sha256, how.text_settings) if text_cache else None
    if texts is None or len(texts) != info.page_count:
        texts = extract_text(doc.source, info.page_count, how.text_settings, password=info.password)
        if text_cache is not None:
            text_cache.put(doc.sha256, how.text_settings, texts)
    times.text += time.perf_counter() - t0
    if reads_text(how.encoder):  # no image needed: the pages are their text
        return _text_pages(doc, info, texts, first)
    return (
        replace(p, text=texts[p.page_number - 1].text, text_source=texts[p.page_number - 1].source)
        for p in render_pages(doc, info, render, first_page=first)
    )


def _text_pages(
    doc: Document, info: PdfInfo, texts: Sequence[PageText], first: int
) -> Iterator[Page]:
    for t in texts[first - 1 :]:
        w_pt, h_pt = info.page_sizes_pt[t.page_number - 1]
        unloadable = (w_pt, h_pt) == (0.0, 0.0)
        yield Page(
            doc_sha256=doc.sha256,
            doc_path=doc.path,
            page_number=t.page_number,
            page_count=info.page_count,
            text=None if unloadable else t.text,
            text_source=None if unloadable else t.source,
            width_pt=w_pt,
            height_pt=h_pt,
            # the same rule as the rendered path's (render_pages)
            error=UNLOADABLE_PAGE if unloadable else None,
        )


# -- encode ------------------------------------------------------------------------


def encode(encoder: Encoder, pages: Sequence[Page]) -> list[MultiVector | str]:
    """Encode pages; a page the encoder fails on gets the cause instead of vectors.

    An encoder may raise on one page that it cannot take (an extreme aspect ratio,
    a processor limit): a batch that raises is encoded again page by page, so only
    that page is lost. A batch that runs out of memory (GPU or host) is split in
    halves and each half encoded again, down to one page; a page that still does not
    fit gets the cause. Vectors that are not finite, or not ``(n, dim)``, count as a
    failure too: they must never reach the store.
    """
    try:
        out: list[MultiVector | str] = list(encoder.encode_pages(pages))
    except Exception as exc:  # any adapter error; reported per page below
        oom = _out_of_memory(exc)
        if oom and len(pages) > 1:
            half = (len(pages) + 1) // 2
            logger.warning(
                "out of memory encoding %d pages; retrying as %d + %d",
                len(pages),
                half,
                len(pages) - half,
            )
            return encode(encoder, pages[:half]) + encode(encoder, pages[half:])
        if len(pages) > 1:
            return [v for page in pages for v in encode(encoder, [page])]
        what = "out of memory on one page" if oom else "encoder failed"
        return [f"{encoder.spec.family} {what}: {type(exc).__name__}: {exc}"]
    if len(out) != len(pages):
        raise PagelensError(
            f"encoder {encoder.spec.model_id!r} returned {len(out)} results for {len(pages)} pages"
        )
    dim = encoder.spec.dim
    for i, v in enumerate(out):
        if isinstance(v, str):
            continue
        if v.ndim != 2 or v.shape[1] != dim:
            out[i] = f"encoder returned vectors of shape {v.shape}, expected (n, {dim})"
        elif not np.isfinite(v).all():
            out[i] = "encoder returned vectors that are not finite (NaN or infinity)"
    return out


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out (torch's OutOfMemoryError, or the message).

    torch is not imported here: an encoder that raised torch's error has loaded it.
    """
    torch = sys.modules.get("torch")
    oom_class = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if isinstance(oom_class, type) and isinstance(exc, oom_class):
        return True
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def encode_batch(
    encoder: Encoder, text_encoder: Encoder | None, batch: Sequence[Page]
) -> tuple[Encoded, Encoded | None]:
    """Encode the pages of a batch that have no error yet, by each encoder.

    The encode stage: returns ``(dense, text_channel)``, what :func:`encode` gave
    for each page keyed by its batch position (pages of several one-page documents
    share a page number); ``text_channel`` is ``None`` without a text encoder.
    """
    good = [i for i, p in enumerate(batch) if p.error is None]
    pages = [batch[i] for i in good]
    dense = dict(zip(good, encode(encoder, pages), strict=True))
    text_channel = (
        dict(zip(good, encode(text_encoder, pages), strict=True))
        if text_encoder is not None
        else None
    )
    return dense, text_channel


def page_errors(
    batch: Sequence[Page],
    dense: Mapping[int, MultiVector | str],
    text_channel: Mapping[int, MultiVector | str] | None,
) -> dict[int, str | None]:
    """Each batch position's cause of failure (its own, or an encoder's), or ``None``."""
    text_channel = text_channel or {}
    return {
        i: _first_error(p.error, dense.get(i), text_channel.get(i)) for i, p in enumerate(batch)
    }


def _first_error(*found: str | MultiVector | None) -> str | None:
    """Pick the first cause among a page's own error and its encoders' results."""
    return next((f for f in found if isinstance(f, str)), None)


# -- pool --------------------------------------------------------------------------


def pool_factors(settings: IndexSettings) -> tuple[int, int, int]:
    """Return the pool factors of the rerank, candidate and coarse vectors, in that order."""
    return settings.pool_factor, settings.candidate_factor, settings.coarse_factor


def pool_page(
    vectors: MultiVector | str | None, factors: tuple[int, int, int], single: bool = False
) -> PageVectors:
    """Pool one page's vectors for storing: the rerank, candidate and coarse vectors.

    The pool stage: ``vectors`` is a page's ``(n, dim)`` output of :func:`encode`
    (never a failure's cause); ``factors`` come from :func:`pool_factors`. A plain
    function of its arguments, so that it can run in another process.
    """
    assert vectors is not None and not isinstance(vectors, str)  # failed pages are out
    if single:  # one vector per page: nothing to pool, no candidate vectors
        return PageVectors(vectors, vectors[:0], int(vectors.shape[0]))
    stored, candidates, coarse = ward_pool(vectors, list(factors))
    return PageVectors(stored, candidates, int(vectors.shape[0]), coarse)


def page_records(
    batch: Sequence[Page],
    errors: Mapping[int, str | None],
    dense: Mapping[int, PageVectors],
    text_channel: Mapping[int, PageVectors] | None,
    settings: IndexSettings,
    source: str = "",
) -> list[StoredPage]:
    """Build the records of a batch: failed pages (without vectors) first, then the others.

    ``errors`` is :func:`page_errors`' answer; ``dense`` and ``text_channel`` hold
    the :func:`pool_page` vectors of the pages without an error. With
    ``settings.text`` (the index keeps page text) each good page also gets the BM25
    vector of its text.
    """
    ok = [i for i, error in errors.items() if error is None]
    sparse = bm25_documents([batch[i].text or "" for i in ok]) if settings.text else None
    out = [StoredPage(p, source, error=errors[i]) for i, p in enumerate(batch) if errors[i]]
    for j, i in enumerate(ok):
        out.append(
            StoredPage(
                batch[i],
                source,
                dense=dense[i],
                text=text_channel[i] if text_channel is not None else None,
                sparse=sparse[j] if sparse is not None else None,
            )
        )
    return out


def stored_pages(
    batch: Sequence[Page],
    dense: Mapping[int, MultiVector | str],
    text_channel: Mapping[int, MultiVector | str],
    settings: IndexSettings,
    single: bool = False,
    source: str = "",
) -> list[StoredPage]:
    """Pool encoded pages into the records the index stores (no model, no store).

    ``dense`` and ``text_channel`` map positions in ``batch`` to what :func:`encode`
    gave (``text_channel`` is empty without a text encoder); a page with an error
    of its own, or one its encoders failed on, becomes a record without vectors,
    its cause kept. The distributed job builds its records with this; the
    single-process job pools in its processes, then calls :func:`page_records`.
    """
    errors = page_errors(batch, dense, text_channel)
    ok = [i for i, error in errors.items() if error is None]
    factors = pool_factors(settings)
    dense_vectors = {i: pool_page(dense[i], factors, single) for i in ok}
    text_vectors = {i: pool_page(text_channel[i], factors) for i in ok} if text_channel else None
    return page_records(batch, errors, dense_vectors, text_vectors, settings, source)


# -- store -------------------------------------------------------------------------


def store_pages(index: Index, records: Sequence[StoredPage]) -> None:
    """Store page records in one write, not yet durably.

    The store stage: the commit of their document (:meth:`Index.commit`) makes them
    durable before it writes the commit record, so a document costs the engine two
    flushes however many pages it has.
    """
    index.add_pages(records, durable=False)
