"""The colpali-engine adapter: every multi-vector family of colpali-engine 0.3.18.

ColPali, ColQwen2, ColQwen2.5, ColQwen3, ColQwen3.5, ColGemma3, ColIdefics3 (ColSmol),
ColModernVBert; not ColQwen2.5-Omni (see the note under ``FAMILIES``). And the
single-vector twins BiPali, BiQwen2, BiQwen2.5, BiQwen3, BiQwen3.5, BiGemma3, BiIdefics3
and BiModernVBert (not BiPaliProj: see ``detect_family``): one
``(1, dim)`` vector per page and query (``EncoderSpec.single``).

Torch stays inside: pages and queries go in, float32 ``(n, dim)`` numpy arrays come out,
L2-normalised, with padding positions removed (ragged, one array per item).

The family is read from the checkpoint's ``config.json`` (``model_type``), or for a PEFT
adapter folder from its base model's config; never from the model's name.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pagelens import progress
from pagelens.encoders.attention import WINDOW_ATTENTION, use_window_attention
from pagelens.encoders.base import EncoderSpec
from pagelens.encoders.loading import (
    Checkpoint,
    read_model_config,
    resolve_checkpoint,
    resolve_device,
    resolve_dtype,
)
from pagelens.errors import EncoderError, MissingExtraError
from pagelens.types import MultiVector, Page

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

PageVectors = Literal["all", "image"]
PAGE_VECTORS: tuple[str, ...] = ("all", "image")
# What colpali-engine's process_queries appends (encode_queries calls it; kept for
# the benchmarks that time a query without the adapter).
N_QUERY_AUGMENTATION_TOKENS = 10


@dataclass(frozen=True)
class ColPaliFamily:
    """One colpali-engine model family and how to recognise its checkpoints."""

    name: str  # EncoderSpec.family
    model_type: str  # config.json "model_type" of the backbone
    model_class: str  # attribute of colpali_engine.models
    processor_class: str  # attribute of colpali_engine.models
    # The trained projection to ``dim`` (weights prefix); ``None`` for a Bi* model,
    # which pools the backbone's last hidden state and has no projection.
    head: str | None = "custom_text_proj"
    # A Bi* (single-vector) model: ``model(**inputs)`` is one pooled, L2-normalised
    # ``(batch, hidden_size)`` row per item; the checkpoint's architectures name the class.
    single: bool = False
    # The colpali-engine model wraps a ...ForConditionalGeneration whose LM head would
    # compute (batch, seq, vocab) logits that are thrown away: keep only one position.
    trim_logits: bool = False
    # The longest side over the shortest that the family's image processor takes
    # (Qwen2-VL's smart_resize refuses 200 and more); a page beyond it is padded.
    max_aspect_ratio: float | None = None
    # A colpali-engine release verified to ship model_class/processor_class: the one
    # pagelens is tested against (offline, no release history to check an earlier one).
    min_version: str = "0.3.18"


# A page beyond its family's aspect-ratio limit (a 14400 x 3 pt strip) is padded with
# white on its short side, the page at the top left, to this ratio: half the limit, so
# the processor's own rounding cannot cross it. Such a page holds little to read
# anyway; padding keeps the page in the index rather than losing it to an exception.
PADDED_ASPECT_SHARE = 0.5


FAMILIES: tuple[ColPaliFamily, ...] = (
    ColPaliFamily("colpali", "paligemma", "ColPali", "ColPaliProcessor", trim_logits=True),
    ColPaliFamily("colqwen2", "qwen2_vl", "ColQwen2", "ColQwen2Processor", max_aspect_ratio=200.0),
    ColPaliFamily(
        "colqwen2_5", "qwen2_5_vl", "ColQwen2_5", "ColQwen2_5_Processor", max_aspect_ratio=200.0
    ),
    ColPaliFamily("colqwen3", "qwen3_vl", "ColQwen3", "ColQwen3Processor", max_aspect_ratio=200.0),
    ColPaliFamily(
        "colqwen3_5", "qwen3_5", "ColQwen3_5", "ColQwen3_5Processor", max_aspect_ratio=200.0
    ),
    ColPaliFamily("colgemma3", "gemma3", "ColGemma3", "ColGemmaProcessor3"),
    ColPaliFamily("colidefics3", "idefics3", "ColIdefics3", "ColIdefics3Processor", head="linear"),
    ColPaliFamily("colmodernvbert", "modernvbert", "ColModernVBert", "ColModernVBertProcessor"),
    # Single-vector twins. Pooling is the model's own (colpali-engine 0.3.18 forward
    # defaults): mean over the attention mask for BiPali and BiModernVBert; the last
    # position (left-padded by the processor) for the Qwen, Gemma3 and Idefics3 ones.
    # BiGemma3 also keeps the first 2560 (Matryoshka) dimensions: all of gemma-3-4b's;
    # a wider backbone would fail the shape check in _forward_single, not go unseen.
    # BiPaliProcessor is ColPaliProcessor with a single-vector ``score``, but its
    # ``__init__(*args, **kwargs)`` hides the tokenizer from transformers 5's
    # ProcessorMixin (no ``tokenizer`` attribute): ColPaliProcessor processes the same.
    ColPaliFamily(
        "bipali",
        "paligemma",
        "BiPali",
        "ColPaliProcessor",
        head=None,
        single=True,
        trim_logits=True,
    ),
    ColPaliFamily(
        "biqwen2",
        "qwen2_vl",
        "BiQwen2",
        "BiQwen2Processor",
        head=None,
        single=True,
        max_aspect_ratio=200.0,
    ),
    ColPaliFamily(
        "biqwen2_5",
        "qwen2_5_vl",
        "BiQwen2_5",
        "BiQwen2_5_Processor",
        head=None,
        single=True,
        max_aspect_ratio=200.0,
    ),
    ColPaliFamily(
        "biqwen3",
        "qwen3_vl",
        "BiQwen3",
        "BiQwen3Processor",
        head=None,
        single=True,
        max_aspect_ratio=200.0,
    ),
    ColPaliFamily(
        "biqwen3_5",
        "qwen3_5",
        "BiQwen3_5",
        "BiQwen3_5Processor",
        head=None,
        single=True,
        max_aspect_ratio=200.0,
    ),
    ColPaliFamily("bigemma3", "gemma3", "BiGemma3", "BiGemmaProcessor3", head=None, single=True),
    ColPaliFamily(
        "biidefics3", "idefics3", "BiIdefics3", "BiIdefics3Processor", head=None, single=True
    ),
    ColPaliFamily(
        "bimodernvbert",
        "modernvbert",
        "BiModernVBert",
        "BiModernVBertProcessor",
        head=None,
        single=True,
    ),
)
# Left out: ColQwen2_5Omni (model_type "qwen2_5_omni_thinker"). colpali-engine 0.3.18's
# class cannot be constructed under transformers 5: Qwen2_5OmniThinkerForConditionalGeneration
# now keeps its vision tower at ``self.model.visual`` and assigns ``spatial_merge_size``
# in __init__, which ColQwen2_5Omni's property setter forwards to the missing
# ``self.visual`` (AttributeError), for a random-init model and a real checkpoint alike.
MODEL_TYPES: frozenset[str] = frozenset(f.model_type for f in FAMILIES)


def detect_family(config: Mapping[str, Any]) -> ColPaliFamily:
    """Return the family of a transformers config dict (by ``model_type``, then ``architectures``).

    A checkpoint whose ``architectures`` start with ``Bi`` is a single-vector twin: it
    gets the Bi* family whose model class it names.

    Raises:
        EncoderError: unknown ``model_type``, or a ``Bi*`` class pagelens does not support.

    """
    model_type = config.get("model_type")
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    single = any(a.startswith("Bi") for a in architectures)
    candidates = [f for f in FAMILIES if f.model_type == model_type]
    if not candidates:
        supported = ", ".join(
            f"{f.name} (model_type {f.model_type!r})" for f in FAMILIES if not f.single
        )
        raise EncoderError(
            f"unsupported checkpoint: config has model_type={model_type!r}, "
            f"architectures={architectures!r}; supported colpali-engine families: {supported}"
        )
    for family in candidates:
        if family.single == single and (not single or family.model_class in architectures):
            return family
    if single:
        known = ", ".join(f.model_class for f in FAMILIES if f.single)
        raise EncoderError(
            f"checkpoint architectures={architectures!r} is a single-vector (Bi*) model "
            f"pagelens does not support for model_type {model_type!r}; supported Bi* "
            f"classes: {known}"
        )
    raise EncoderError(f"no multi-vector colpali-engine family for model_type {model_type!r}")


class ColPaliEngineEncoder:
    """An :class:`~pagelens.encoders.base.Encoder` over a colpali-engine checkpoint.

    Build it with :meth:`from_pretrained` (or ``pagelens.encoders.load_encoder``).

    Args:
        page_vectors: ``"all"`` keeps every non-padding token of a page (what the
            models were trained with); ``"image"`` keeps only the image-patch tokens,
            dropping the text-prompt and special tokens that are (nearly) the same on
            every page.

    """

    def __init__(
        self,
        *,
        model: Any,
        processor: Any,
        spec: EncoderSpec,
        family: ColPaliFamily,
        device: str,
        dtype: torch.dtype,
        batch_size: int,
        page_vectors: PageVectors = "all",
    ) -> None:
        _check_options(batch_size, page_vectors)
        self._model = model
        self._processor = processor
        self._spec = spec
        self._family = family
        self._device = device
        self._dtype = dtype
        self.batch_size = batch_size
        self.page_vectors: PageVectors = page_vectors
        self.image_token_id: int = _image_token_id(model, processor)
        # Resize pages to the processor's pixel budget before it sees them, with its own
        # resize: the same pixel values for less CPU (see pre_resize_image).
        self.pre_resize = True

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 4,
        revision: str | None = None,
        page_vectors: PageVectors = "all",
    ) -> ColPaliEngineEncoder:
        """Load a colpali-engine checkpoint from a local folder or a hub id.

        Args:
            model: local checkpoint folder, or hub id (e.g. ``"vidore/colqwen2.5-v0.2"``).
            device: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda[:N]"``, ``"mps"``.
            dtype: ``None`` for the device default (bfloat16 on GPU, float32 on CPU), or
                ``"float32"``, ``"bfloat16"``, ``"float16"``.
            batch_size: pages or queries per forward pass (bounds memory).
            revision: hub branch, tag or commit (hub ids only).
            page_vectors: ``"all"`` or ``"image"`` (see the class docstring).

        """
        checkpoint = resolve_checkpoint(model, revision=revision)
        return cls.from_checkpoint(
            checkpoint, device=device, dtype=dtype, batch_size=batch_size, page_vectors=page_vectors
        )

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Checkpoint,
        *,
        device: str = "auto",
        dtype: str | None = None,
        batch_size: int = 4,
        page_vectors: PageVectors = "all",
    ) -> ColPaliEngineEncoder:
        """Load an already resolved :class:`Checkpoint` (see :meth:`from_pretrained`)."""
        _check_options(batch_size, page_vectors)
        model = checkpoint.model_id
        family = detect_family(read_model_config(checkpoint))
        if family.single and page_vectors != "all":
            raise EncoderError(
                f"page_vectors={page_vectors!r} keeps some tokens of a page, but {family.name} "
                "pools each page into one vector; use page_vectors='all'"
            )
        torch_device, default_dtype = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, default_dtype)
        model_cls, processor_cls = _colpali_classes(family)
        logger.info(
            "loading %s checkpoint %s (%s) on %s as %s",
            family.name,
            model,
            checkpoint.revision,
            torch_device,
            torch_dtype,
        )
        net = _load_model(model_cls, family, checkpoint, torch_device, torch_dtype)
        processor = _load_processor(processor_cls, checkpoint)
        spec = EncoderSpec(
            model_id=checkpoint.load_id,  # loads again from any working directory
            revision=checkpoint.revision,
            dim=_dim(net, family),
            family=family.name,
            page_vectors=page_vectors,
            given=model,
            single=family.single,
        )
        return cls(
            model=net,
            processor=processor,
            spec=spec,
            family=family,
            device=torch_device,
            dtype=torch_dtype,
            batch_size=batch_size,
            page_vectors=page_vectors,
        )

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        """One ``(n_i, dim)`` float32 array per page, in input order (``n_i == 1`` for Bi*)."""
        for page in pages:
            if page.image is None:
                raise EncoderError(
                    f"page {page.doc_path}#{page.page_number} has no image; "
                    f"{self._spec.family} encodes rendered page images"
                )
        out: list[MultiVector] = []
        limit = self._family.max_aspect_ratio
        for batch in _progress(_batches(pages, self.batch_size), len(pages), "encoding pages"):
            images = [_pad_to_aspect(p.image, limit) for p in batch if p.image is not None]
            if self.pre_resize:
                images = [pre_resize_image(image, self._processor) for image in images]
            inputs = self._processor.process_images(images)
            keep_image = self.page_vectors == "image"
            try:
                out.extend(self._forward(inputs, image_tokens_only=keep_image))
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                _release_cached_memory(exc)
                raise
        return out

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        """One ``(m_j, dim)`` float32 array per query text, in input order.

        Queries go through colpali-engine's own ``process_queries``: the family's prefix
        and augmentation tokens (or chat template, for ColGemma3), as in training.
        """
        out: list[MultiVector] = []
        for batch in _progress(_batches(texts, self.batch_size), len(texts), "encoding queries"):
            inputs = self._processor.process_queries(list(batch))
            out.extend(self._forward(inputs, image_tokens_only=False))
        return out

    # -- interpretability: what a similarity map needs -----------------------------

    def patch_grid(self, page: Page) -> tuple[MultiVector, tuple[int, int]]:
        """Encode one page unpooled and lay its image-patch vectors out on their grid.

        Returns ``(vectors, (rows, cols))``: ``vectors`` is float32 ``(rows * cols,
        dim)``, unit rows, in row-major grid order (row 0 is the top of the page), the
        same vectors :meth:`encode_pages` keeps with ``page_vectors="image"``. The grid
        spans the whole image the processor saw: the page (padded at its bottom or
        right only beyond the family's aspect-ratio limit, see ``_pad_to_aspect``).
        Tiled families (ColIdefics3, ColModernVBert) give their tiles side by side;
        the extra downscaled global view is left out.

        Raises:
            EncoderError: a single-vector (Bi*) model, a page without image, or a
                token layout that does not fill a grid.

        """
        if self._family.single:
            raise EncoderError(
                f"{self._family.name} pools each page into one vector: it has no patch grid"
            )
        if page.image is None:
            raise EncoderError(f"page {page.doc_path}#{page.page_number} has no image")
        image = _pad_to_aspect(page.image, self._family.max_aspect_ratio)
        inputs = self._processor.process_images([image])
        (vectors,) = self._forward(inputs, image_tokens_only=True)  # (n, dim), sequence order
        ids = inputs["input_ids"][0][inputs["attention_mask"][0].bool()].tolist()
        order = self._grid_order(image.size, inputs, ids, len(vectors))  # (rows, cols)
        rows, cols = order.shape
        return np.ascontiguousarray(vectors[order.reshape(-1)]), (int(rows), int(cols))

    def query_tokens(self, texts: Sequence[str]) -> list[list[tuple[str, bool]]]:
        """Name each vector :meth:`encode_queries` gives: ``(token, special)`` per row.

        ``special`` marks tokens the processor added (padding used as query
        augmentation, begin-of-sequence, chat markers), not words of the question.
        """
        tokenizer = self._processor.tokenizer
        special = set(tokenizer.all_special_ids)
        out: list[list[tuple[str, bool]]] = []
        for batch in _batches(texts, self.batch_size):
            inputs = self._processor.process_queries(list(batch))
            for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"], strict=True):
                kept = ids[mask.bool()].tolist()  # the rows _forward keeps
                names = tokenizer.convert_ids_to_tokens(kept)
                out.append(
                    [
                        (_readable(tokenizer, i, n), i in special)
                        for i, n in zip(kept, names, strict=True)
                    ]
                )
        return out

    def _grid_order(self, size: tuple[int, int], inputs: Any, ids: list[int], n: int) -> np.ndarray:
        """Index of each grid cell's vector among the ``n`` image tokens, ``(rows, cols)``."""
        family, processor = self._family.name, self._processor
        if "image_grid_thw" in inputs:  # Qwen: smart_resize'd, spatially merged patches
            merge = processor.image_processor.merge_size
            cols, rows = processor.get_n_patches(size, spatial_merge_size=merge)
        elif family == "colpali":  # PaliGemma: a fixed square, one token per patch
            patch = self._model.config.vision_config.patch_size
            cols, rows = processor.get_n_patches(size, patch_size=patch)
        elif any(_TILE.fullmatch(t or "") for t in processor.tokenizer.convert_ids_to_tokens(ids)):
            return self._tile_order(ids, n)
        else:  # one fixed-size view (Gemma3's pooled square)
            rows = cols = math.isqrt(n)
        if rows * cols != n:
            raise EncoderError(
                f"{family}: {n} image tokens do not fill a {rows} x {cols} patch grid"
            )
        return np.arange(n).reshape(rows, cols)

    def _tile_order(self, ids: list[int], n: int) -> np.ndarray:
        """Idefics3-style tiles (``<row_i_col_j>`` then its square of tokens): one grid."""
        names = self._processor.tokenizer.convert_ids_to_tokens(ids)
        tiles: dict[tuple[int, int], list[int]] = {}
        tile: tuple[int, int] | None = None
        k = 0  # index among the image tokens
        for token_id, name in zip(ids, names, strict=True):
            found = _TILE.fullmatch(name or "")
            if found:
                tile = (int(found[1]), int(found[2]))
            elif name == "<global-img>":
                tile = None  # the downscaled whole page: not part of the grid
            elif token_id == self.image_token_id:
                if tile is not None:
                    tiles.setdefault(tile, []).append(k)
                k += 1
        side = math.isqrt(len(next(iter(tiles.values()))))
        rows, cols = max(r for r, _ in tiles), max(c for _, c in tiles)
        if (
            k != n
            or any(len(v) != side * side for v in tiles.values())
            or len(tiles) != rows * cols
        ):
            raise EncoderError(f"{self._family.name}: image tokens do not form whole tiles")
        order = np.empty((rows * side, cols * side), dtype=np.int64)
        for (r, c), cells in tiles.items():
            block = np.asarray(cells).reshape(side, side)
            order[(r - 1) * side : r * side, (c - 1) * side : c * side] = block
        return order

    def _forward(self, inputs: Any, *, image_tokens_only: bool) -> list[MultiVector]:
        import torch

        tensors = {
            key: value.to(self._device, dtype=self._dtype)
            if value.is_floating_point()
            else value.to(self._device)
            for key, value in inputs.items()
            if key != "labels"  # PaliGemma's processor adds LM labels; no loss is wanted
        }
        if self._family.trim_logits:
            tensors["logits_to_keep"] = 1
        if self._family.single:
            return self._forward_single(tensors)
        with torch.inference_mode():
            embeddings = self._model(**tensors)  # (batch, seq, dim), padding rows zeroed
        keep = tensors["attention_mask"].bool()  # (batch, seq)
        if image_tokens_only:
            keep &= tensors["input_ids"] == self.image_token_id
        vectors = embeddings.float().cpu().numpy()  # (batch, seq, dim)
        keep_np = keep.cpu().numpy()
        out: list[MultiVector] = []
        for item_vectors, item_keep in zip(vectors, keep_np, strict=True):
            kept = item_vectors[item_keep]  # (n_i, dim)
            # Re-normalise in float32: bfloat16 outputs are only unit-norm to ~1e-2.
            norms = np.linalg.norm(kept, axis=1, keepdims=True)
            out.append(np.ascontiguousarray(kept / np.maximum(norms, 1e-12), dtype=np.float32))
        return out

    def _forward_single(self, tensors: dict[str, Any]) -> list[MultiVector]:
        """One ``(1, dim)`` unit vector per item: the Bi* model's own pooled output."""
        import torch

        with torch.inference_mode():
            pooled = self._model(**tensors)  # (batch, dim), pooled and L2-normalised
        if tuple(pooled.shape) != (len(tensors["input_ids"]), self._spec.dim):
            raise EncoderError(
                f"{self._family.model_class} returned shape {tuple(pooled.shape)}, expected "
                f"(batch, {self._spec.dim}): not a single-vector output"
            )
        vectors = pooled.float().cpu().numpy()  # (batch, dim)
        # Re-normalise in float32: bfloat16 outputs are only unit-norm to ~1e-2.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit = vectors / np.maximum(norms, 1e-12)
        return [np.ascontiguousarray(row[None, :], dtype=np.float32) for row in unit]


def _release_cached_memory(exc: BaseException) -> None:
    """After a GPU out-of-memory error, give the cached blocks back before the retry.

    The indexing job retries such a batch in halves (``pipeline.job._encode``); the
    failed batch's activations are freed only once the exception's frames are gone,
    and the allocator's cache is emptied here so the halves start from a clean pool.
    """
    import torch

    if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
        torch.cuda.empty_cache()


_TILE = re.compile(r"<row_(\d+)_col_(\d+)>")


def _readable(tokenizer: Any, token_id: int, name: str | None) -> str:
    """Return a token as text a person reads (``"Ġrevenue"`` -> ``" revenue"``)."""
    text = tokenizer.decode([token_id])
    return text if text else (name or "")


def similarity_maps(query: MultiVector, grid: MultiVector, shape: tuple[int, int]) -> np.ndarray:
    """Each query vector's similarity to each patch: float32 ``(m, rows, cols)``.

    ``query`` is ``(m, dim)``; ``grid`` the ``(rows * cols, dim)`` row-major vectors of
    :meth:`ColPaliEngineEncoder.patch_grid`. Computed by colpali-engine's own
    ``get_similarity_maps_from_embeddings`` (it lays patches out ``(cols, rows)``).
    """
    import torch

    try:  # the package's __init__ also imports its plotting helpers (matplotlib, seaborn)
        from colpali_engine.interpretability import get_similarity_maps_from_embeddings
    except ImportError as exc:
        raise MissingExtraError(exc.name or "colpali_engine.interpretability", "explain") from exc

    rows, cols = shape
    (maps,) = get_similarity_maps_from_embeddings(
        image_embeddings=torch.from_numpy(grid)[None],  # (1, rows * cols, dim)
        query_embeddings=torch.from_numpy(query)[None],  # (1, m, dim)
        n_patches=(cols, rows),
        image_mask=torch.ones((1, rows * cols), dtype=torch.bool),
    )  # (m, cols, rows)
    return np.ascontiguousarray(maps.permute(0, 2, 1).numpy(), dtype=np.float32)


def _dim(net: Any, family: ColPaliFamily) -> int:
    """Return the vector dimension: the projection's, or the backbone's hidden size for Bi*."""
    if family.single:
        return int(net.config.get_text_config().hidden_size)
    return int(net.dim)


def _image_token_id(model: Any, processor: Any) -> int:
    """Return the image-patch token id: the one the model replaces by image features.

    Read from the model's config: Gemma3's processor calls its begin-of-image token
    ``image_token_id`` (the one it expands), not the patch token.
    """
    config = getattr(model, "config", None)
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return int(processor.image_token_id)


def _pad_to_aspect(image: Image.Image, limit: float | None) -> Image.Image:
    """Pad ``image`` with white to ``limit * PADDED_ASPECT_SHARE`` when it exceeds ``limit``."""
    w, h = image.size
    if limit is None or max(w, h) < limit * min(w, h):
        return image
    from PIL import Image

    ratio = limit * PADDED_ASPECT_SHARE
    size = (w, max(h, math.ceil(w / ratio))) if w > h else (max(w, math.ceil(h / ratio)), h)
    padded = Image.new("RGB", size, "white")
    padded.paste(image.convert("RGB"), (0, 0))
    return padded


def pre_resize_image(image: Image.Image, processor: Any) -> Image.Image:
    """Resize a page to the size Qwen2-VL's image processor would, as it would.

    The processor (transformers' torchvision backend) turns a 150-dpi page into a
    tensor, then resizes it to ``smart_resize``'s size (multiples of patch x merge
    size, within its pixel budget) with ``torchvision``'s antialiased resize of the
    uint8 image. Doing that same resize first hands it an image already at that size
    (``smart_resize`` keeps it, the resize is then the identity), so the pixel values
    are the same, bit for bit (tests/test_colpali_encoder.py), while the processor's
    copies of the full page are saved (benchmarks/README.md). Other processors, or
    other settings, get the image unchanged.
    """
    ip: Any = getattr(processor, "image_processor", None)
    if type(ip).__name__ != "Qwen2VLImageProcessor" or not getattr(ip, "do_resize", False):
        return image
    import torch
    from torchvision.transforms.v2 import functional as tvf
    from transformers.image_utils import pil_torch_interpolation_mapping
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    interpolation = pil_torch_interpolation_mapping.get(ip.resample)
    if interpolation is None or image.mode != "RGB":
        return image
    height, width = smart_resize(
        image.height,
        image.width,
        factor=ip.patch_size * ip.merge_size,
        min_pixels=ip.size["shortest_edge"],
        max_pixels=ip.size["longest_edge"],
    )
    if (height, width) == (image.height, image.width):
        return image
    from PIL import Image

    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, h, w) uint8, a copy
    resized = tvf.resize(pixels, [height, width], interpolation=interpolation, antialias=True)
    return Image.fromarray(resized.permute(1, 2, 0).contiguous().numpy())


def _check_options(batch_size: int, page_vectors: str) -> None:
    if batch_size < 1:
        raise EncoderError(f"batch_size must be >= 1, got {batch_size}")
    if page_vectors not in PAGE_VECTORS:
        raise EncoderError(
            f"unknown page_vectors {page_vectors!r}; choose one of {', '.join(PAGE_VECTORS)}"
        )


def _colpali_classes(family: ColPaliFamily) -> tuple[Any, Any]:
    try:
        import colpali_engine.models as models
    except ImportError as exc:
        raise MissingExtraError("colpali_engine", "colpali") from exc
    try:
        return getattr(models, family.model_class), getattr(models, family.processor_class)
    except AttributeError as exc:
        raise EncoderError(
            f"colpali-engine {installed_colpali_version()} has no "
            f"{family.model_class}/{family.processor_class} for the {family.name} family; "
            f"upgrade to colpali-engine>={family.min_version}, which has them"
        ) from exc


def installed_colpali_version() -> str | None:
    """Return the installed colpali-engine version, or ``None`` when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("colpali-engine")
    except PackageNotFoundError:
        return None


def _load_model(
    model_cls: Any, family: ColPaliFamily, checkpoint: Checkpoint, device: str, dtype: torch.dtype
) -> Any:
    head = family.head
    options: dict[str, Any] = {"dtype": dtype, "device_map": device}
    if family.single:
        # BiQwen2/BiQwen2_5.from_pretrained read ``super()._checkpoint_conversion_mapping``,
        # which transformers 5's Qwen2(.5)-VL models no longer have (AttributeError): pass
        # the class's own mapping, or none, as ColQwen2_5.from_pretrained does.
        options["key_mapping"] = dict(getattr(model_cls, "_checkpoint_conversion_mapping", {}))
    try:
        if checkpoint.is_adapter:
            # transformers loads the base named in adapter_config.json, then the adapter
            # (with colpali-engine's key mapping); the base was resolved (cached) already.
            net = model_cls.from_pretrained(str(checkpoint.folder), **options)
            missing: list[str] = []
        else:
            net, info = model_cls.from_pretrained(
                str(checkpoint.folder), output_loading_info=True, **options
            )
            missing = list(info.get("missing_keys", []))
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise EncoderError(
            f"cannot load {model_cls.__name__} from {checkpoint.model_id!r}: {exc}"
        ) from exc
    fix_paligemma_attention(net)
    if use_window_attention(net):  # one attention call per window size, not per window
        logger.debug("vision tower of %s on %s", checkpoint.model_id, WINDOW_ATTENTION)
    if head is not None and any(key.startswith(head) for key in missing):
        raise EncoderError(
            f"{checkpoint.model_id!r} has no trained projection head ({head!r} missing): "
            f"it is a plain vision-language backbone, not a {model_cls.__name__} retriever"
        )
    return net.eval()


def fix_paligemma_attention(net: Any) -> None:
    """Make PaliGemma attend bidirectionally in padded batches too.

    PaliGemma (Gemma with ``use_bidirectional_attention``) runs full attention over
    image and text. In transformers 5 an unpadded input gets no mask and so runs
    bidirectionally, but a padded batch gets a materialised *causal* mask: a query's
    vectors would depend on what it was batched with. Marking the text config
    non-causal makes transformers build a bidirectional mask that still hides padding.
    """
    text_config = net.config.get_text_config()
    if net.config.model_type == "paligemma" and getattr(
        text_config, "use_bidirectional_attention", False
    ):
        text_config.is_causal = False


def _load_processor(processor_cls: Any, checkpoint: Checkpoint) -> Any:
    try:
        return processor_cls.from_pretrained(str(checkpoint.folder))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise EncoderError(
            f"cannot load {processor_cls.__name__} from {checkpoint.model_id!r}: {exc}"
        ) from exc


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _progress(batches: Iterator[Sequence[Any]], total: int, desc: str) -> Iterator[Sequence[Any]]:
    """Yield ``batches`` under a progress bar counted in items (:mod:`pagelens.progress`)."""
    with progress.bar(total, desc, "item", logger=logger) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))
